#!/usr/bin/env bash
# The main job on an embedded default: learn a BPE tokenizer from this project's own
# docs (text) and C sources (code), pack them into token shards, pretrain the `demo`
# Llama (GQA, ~2M parameters) on them, write an HF checkpoint that transformers
# loads as-is (with the tokenizer beside it), and generate from it.
# A few minutes on 2 cores.
#   scripts/demo.sh [extra `tinyllama train` options, e.g. --steps 1000, or --resume]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/demo
data=data/demo       # the token shards (prepare owns this directory)
tok=data/demo-tokenizer.model
corpus="README.md docs/*.md src/*/*.c src/*/*.h cli/*.c"
resume=0
for a in "$@"; do case $a in --resume | --resume=*) resume=1 ;; esac; done
mkdir -p data
if [ "$resume" = 1 ] && [ -f "$tok" ] && [ -f "$data/manifest.json" ]; then
    echo "== resuming: the tokenizer and shards of the interrupted run are kept"
else
    echo "== learning a 1024-piece BPE tokenizer (byte fallback, Llama settings) from the corpus"
    # shellcheck disable=SC2086
    ./build/tinyllama tokenizer train --input "$(ls $corpus | paste -sd, -)" --vocab-size 1024 \
        --output "$tok" --quiet
    echo "== packing the corpus into token shards"
    # shellcheck disable=SC2086
    ./build/tinyllama prepare --tokenizer "$tok" --seq-len 256 --val-fraction 0.05 \
        --out "$data" $corpus | tail -n 4
fi
echo "== training (Ctrl-C stops and checkpoints; scripts/demo.sh --resume continues)"
# a second demo starts over in the same directory unless it continues with --resume
fresh=(--overwrite)
[ "$resume" = 1 ] && fresh=()
./build/tinyllama train --preset demo --vocab-size 1024 --tokenizer "$tok" \
    --data "$data/train-00000.bin" --val-data "$data/val-00000.bin" \
    --batch 8 --seq-len 256 --steps 300 --lr 2e-3 --min-lr 2e-4 --warmup 20 --eval-every 50 \
    --ckpt-every 100 --out "$out" ${fresh[@]+"${fresh[@]}"} "$@"
ckpt="$out/$(cat "$out/latest")"
echo "== generating from $ckpt"
./build/tinyllama generate --model "$ckpt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1 --echo \
    "/* model.c - "
echo
./build/tinyllama plot "$out" --out "$out/plot.png"
echo "== done: HF checkpoint (config.json, model.safetensors, tokenizer.model) in $ckpt, log in $out/log.jsonl,"
echo "   its loss, learning rate and throughput drawn in $out/plot.png"

#!/usr/bin/env bash
# The main job on an embedded default: learn a BPE tokenizer from this project's own
# docs (text) and C sources (code), pack them into token shards, pretrain the `demo`
# Llama (GQA, ~2M parameters) on them, write an HF checkpoint that transformers
# loads as-is (with the tokenizer beside it), and generate from it.
# A few minutes on 2 cores.
#   scripts/demo.sh [extra `tinyllama train` options, e.g. --steps 1000, or --resume]
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/demo
data=data/demo
corpus="README.md docs/*.md src/*/*.c src/*/*.h cli/*.c"
mkdir -p "$data"
echo "== learning a 1024-piece BPE tokenizer (byte fallback, Llama settings) from the corpus"
# shellcheck disable=SC2086
./build/tinyllama tokenizer train --input "$(ls $corpus | paste -sd, -)" --vocab-size 1024 \
    --output "$data/tokenizer.model" --quiet
echo "== packing the corpus into token shards"
# shellcheck disable=SC2086
./build/tinyllama prepare --tokenizer "$data/tokenizer.model" --seq-len 256 --val-fraction 0.05 \
    --out "$data" $corpus | tail -n 4
echo "== training (Ctrl-C stops and checkpoints; scripts/demo.sh --resume continues)"
# a second demo starts over in the same directory unless it continues with --resume
fresh=(--overwrite)
for a in "$@"; do case $a in --resume | --resume=*) fresh=() ;; esac; done
./build/tinyllama train --preset demo --vocab-size 1024 --tokenizer "$data/tokenizer.model" \
    --data "$data/train-00000.bin" --val-data "$data/val-00000.bin" \
    --batch 8 --seq-len 256 --steps 300 --lr 2e-3 --min-lr 2e-4 --warmup 20 --eval-every 50 \
    --ckpt-every 100 --out "$out" ${fresh[@]+"${fresh[@]}"} "$@"
ckpt="$out/$(cat "$out/latest")"
echo "== generating from $ckpt"
./build/tinyllama generate --model "$ckpt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1 --echo \
    "/* model.c - "
echo
echo "== done: HF checkpoint (config.json, model.safetensors, tokenizer.model) in $ckpt, log in $out/log.jsonl"

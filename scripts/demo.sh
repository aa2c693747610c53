#!/usr/bin/env bash
# The main job on an embedded default: pretrain the `demo` Llama (1.7M parameters,
# GQA, byte-level vocabulary) on this project's own docs (text) and sources (code),
# then write an HF checkpoint that transformers loads as-is.  A few minutes on 2 cores.
#   scripts/demo.sh [extra `tinyllama train` options, e.g. --steps 1000]
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/demo
rm -rf data/demo
echo "== preparing the corpus: this repository's docs and C sources"
./build/tinyllama prepare --byte-level --seq-len 256 --val-fraction 0.05 --out data/demo \
    README.md docs/*.md src/*.c src/*.h cli/*.c
echo "== training (Ctrl-C stops and checkpoints; add --resume to continue)"
./build/tinyllama train --preset demo --data data/demo/train-00000.bin --val-data data/demo/val-00000.bin \
    --batch 8 --seq-len 256 --steps 200 --lr 2e-3 --min-lr 2e-4 --warmup 20 --eval-every 50 \
    --ckpt-every 100 --out "$out" "$@"
echo "== done: HF checkpoint in $out/$(cat "$out/latest"), log in $out/log.jsonl"

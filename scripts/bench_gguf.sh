#!/usr/bin/env bash
# Decode tokens/s of `tinyllama generate --model FILE.gguf` on TinyLlama-1.1B-shaped
# GGUF files with random weights (BF16, Q8_0, Q4_0; written once under /tmp by the
# gguf package, never committed), 2 threads by default; with LLAMA_BENCH=path/to/llama-bench
# (or --llama-bench) also llama.cpp's tg128 on the same files, interleaved, and the ratio.
# Needs python3 with gguf, numpy, sentencepiece.  Usage:
#   scripts/bench_gguf.sh [--threads N] [--gen N] [--types BF16,Q8_0,Q4_0] [--rounds N] [--llama-bench BIN] [--dir DIR]
# docs/inference.md records what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/tinyllama
python3 scripts/bench_gguf.py --bin ./build/tinyllama "$@"

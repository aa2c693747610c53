#!/usr/bin/env bash
# Decode (tg128) and prompt-pass (pp512) tokens/s of `tinyllama generate --model FILE.gguf` on
# TinyLlama-1.1B-shaped GGUF files with random weights (BF16, Q8_0, Q4_0, Q4_K_M and Q5_K_M mixes, F16;
# written once under /tmp by the gguf package, never committed), 2 threads by default; with
# LLAMA_BENCH=path/to/llama-bench (or --llama-bench BIN, or --build-llama) also llama.cpp's
# tg128 and pp512 on the same files, interleaved round by round, and the ratios; decode also
# against the memory-bandwidth bound (scripts/membw.c's read bandwidth with the same threads,
# measured each round, over the bytes of the matrices read per token).  Needs python3
# with gguf, numpy, sentencepiece.  Usage:
#   scripts/bench_gguf.sh [--build-llama] [--threads N] [--gen N] [--prompt N]
#                         [--types BF16,Q8_0,Q4_0,Q4_K_M,Q5_K_M,F16] [--rounds N] [--reps N] [--f32-activations]
#                         [--llama-bench BIN] [--dir DIR]
# --build-llama builds llama-bench (CPU only, -DGGML_NATIVE=ON) in /tmp/tl_llamacpp from the
# llama.cpp source that PyPI's llama-cpp-python sdist vendors (pip download; nothing is kept in
# the repository).  docs/inference.md records what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/tinyllama
args=()
for a in "$@"; do
    if [ "$a" = "--build-llama" ]; then
        L=/tmp/tl_llamacpp
        if [ ! -x "$L/build/bin/llama-bench" ]; then
            mkdir -p "$L"
            [ -n "$(ls "$L"/llama_cpp_python-*.tar.gz 2>/dev/null)" ] ||
                pip download llama-cpp-python --no-binary :all: --no-deps -d "$L" >&2
            tar xzf "$(ls "$L"/llama_cpp_python-*.tar.gz | tail -1)" -C "$L"
            src=$(ls -d "$L"/llama_cpp_python-*/vendor/llama.cpp | tail -1)
            cmake -S "$src" -B "$L/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
                -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
            cmake --build "$L/build" --target llama-bench -j"$(nproc)" >&2
        fi
        export LLAMA_BENCH="$L/build/bin/llama-bench"
    else
        args+=("$a")
    fi
done
# the memory-bandwidth bound: scripts/membw.c, measured between the runs
MEMBW=$(mktemp /tmp/tl_membw.XXXXXX)
trap 'rm -f "$MEMBW"' EXIT
gcc -O3 -march=native -fopenmp scripts/membw.c -o "$MEMBW"
python3 scripts/bench_gguf.py --bin ./build/tinyllama --membw "$MEMBW" "${args[@]}"

#!/usr/bin/env bash
# Inference benchmark: decode tokens/s of `tinyllama generate` on a random bf16
# model of TinyLlama-1.1B's shape, the fraction of the memory-bandwidth bound
# (bandwidth measured in the same run by scripts/membw.c), prompt GFLOP/s against
# the sgemm peak (scripts/sgemm_peak.c, same run), and PyTorch on the
# same model.  Needs python3 with torch + transformers.  Usage:
#   scripts/bench_infer.sh [--threads N] [--gen N] [--prompt N] [--kernel K] [--bf16-kernel K] [--no-torch] [--dir DIR]
# The model is written once under /tmp (override with --dir); see docs/inference.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/tinyllama
MEMBW=$(mktemp /tmp/tl_membw.XXXXXX)
SGEMM=$(mktemp /tmp/tl_sgemm.XXXXXX)
trap 'rm -f "$MEMBW" "$SGEMM"' EXIT
# a plain read loop: -ffast-math only lets the compiler vectorise the sum
gcc -O3 -march=native -ffast-math -fopenmp scripts/membw.c -o "$MEMBW"
BLAS_DIR=${BLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
gcc -O2 -fopenmp scripts/sgemm_peak.c -I/usr/include/x86_64-linux-gnu/openblas-openmp -L"$BLAS_DIR" \
    -Wl,-rpath,"$BLAS_DIR" -lopenblas -ldnnl -o "$SGEMM"
# OpenMP's wait policy: tinyllama sets a short spin (GOMP_SPINCOUNT=10000, src/core/threads.h)
# unless the environment chooses one; decode needs some spin (~150 parallel regions per
# token: sleeping at once, OMP_WAIT_POLICY=passive, cost 25-30% of decode speed here).
# A policy set in the environment applies to both programs.
python3 scripts/bench_infer.py --bin ./build/tinyllama --membw "$MEMBW" --sgemm "$SGEMM" "$@"

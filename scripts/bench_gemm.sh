#!/usr/bin/env bash
# fp32 GEMM microbenchmark: every backend of src/compute/gemm.h (scripts/bench_gemm.c)
# and PyTorch's matmul (when `import torch` works; PYTHON picks the interpreter)
# at TinyLlama-1.1B's products on a 512-token batch, 1 and 2 threads.  ROUNDS
# rounds alternate the C backends and PyTorch; the table gives each backend's
# median GFLOP/s and its ratio to the best median of the row.  On a shared
# machine the numbers are noisy: read the medians, not single runs.
#   scripts/bench_gemm.sh [ROUNDS] [SECONDS_PER_MEASUREMENT] [SHAPE SET]
# SHAPE SET: tinyllama-1.1b (default) or gqa-40m (a training step at batch 4 x 256).
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-0.3}
set=${3:-tinyllama-1.1b}
PYTHON=${PYTHON:-python3}
make -j"$(nproc)" build/libtinyllama.a >/dev/null
BIN=$(mktemp /tmp/tl_bench_gemm.XXXXXX)
LOG=$(mktemp /tmp/tl_bench_gemm_log.XXXXXX)
trap 'rm -f "$BIN" "$LOG"' EXIT
BLAS_DIR=${BLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
gcc -O2 -std=c11 -fopenmp -D_GNU_SOURCE $(for d in src/*/; do [ "$d" = src/cuda/ ] || printf -- "-I%s " "${d%/}"; done)-I/usr/include/x86_64-linux-gnu/openblas-openmp scripts/bench_gemm.c \
    build/libtinyllama.a -L"$BLAS_DIR" -Wl,-rpath,"$BLAS_DIR" -lopenblas -ldnnl -lcjson -lzstd -lz -lm -o "$BIN"
torch=1
"$PYTHON" -c 'import torch' 2>/dev/null || { torch=0; echo "(no PyTorch for $PYTHON: its column is left out)"; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|avx512_fp16|amx_bf16|amx_int8|avx512_vnni' | tr '\n' ' ')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-(unset)}"
for r in $(seq 0 $((rounds - 1))); do
    "$BIN" 1 "$secs" "$set" | sed "s/round=0/round=$r/" | tee -a "$LOG" | grep -v RESULT || true
    [ "$torch" = 1 ] && "$PYTHON" scripts/bench_gemm_torch.py "$r" "$secs" "$set" >>"$LOG"
done
awk '/^RESULT/ {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = f["threads"] SUBSEP f["shape"]; b = f["backend"]
    if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
    if (!(b in bseen)) { bseen[b] = 1; bord[++nb] = b }
    v[key, b, ++cnt[key, b]] = f["gflops"] + 0
}
function median(key, b,    n, i, j, t, a) {
    n = cnt[key, b]; if (!n) return -1
    for (i = 1; i <= n; i++) a[i] = v[key, b, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END {
    printf "\nmedian GFLOP/s (ratio to the best of the row)\n%-2s %-28s", "th", "shape"
    for (j = 1; j <= nb; j++) printf " %20s", bord[j]
    printf "\n"
    for (k = 1; k <= nk; k++) {
        split(order[k], p, SUBSEP); best = 0
        for (j = 1; j <= nb; j++) { m[j] = median(order[k], bord[j]); if (m[j] > best) best = m[j] }
        printf "%-2s %-28s", p[1], p[2]
        for (j = 1; j <= nb; j++) if (m[j] < 0) printf " %20s", "-"; else printf " %12.1f (%4.2f)", m[j], m[j] / best
        printf "\n"
    }
}' "$LOG"

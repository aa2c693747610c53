#!/usr/bin/env bash
# The one prepared GPU check (H100/H200 machine of the device tool; runs in a
# copy of the working tree).  Builds the CPU library and the CUDA build, runs
# every GPU test, the bf16 TinyLlama-1.1B seq-2048 benchmark and the PyTorch
# peer, each under its own time limit (~5 minutes in all), and writes
# $OUT/device-report.md plus the full logs.  A failing part does not stop the
# others.  Usage (from a session with device time; .device-debs from
# scripts/device-debs.sh, run here first, in case the machine lacks the libraries):
#     run(command="bash scripts/device-check.sh", carry=[".device-debs"], timeout_s=420)
# Then, if time is left, compute-sanitizer memcheck over the fp32 tests.
# Knobs (environment): BATCH (8), SEQ (2048), STEPS (5), PRESET (tinyllama-1.1b), SKIP_TORCH=1.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
REPORT=$OUT/device-report.md
BATCH=${BATCH:-8} SEQ=${SEQ:-2048} STEPS=${STEPS:-5} PRESET=${PRESET:-tinyllama-1.1b}
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
say() { echo "$*" | tee -a "$REPORT"; }
: >"$REPORT"
say "# device check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say ""
say '```'
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$REPORT"
(nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version) | tail -2 | tee -a "$REPORT"
say '```'

# ---- build dependencies: system ones, else the carried .deb files unpacked under /tmp/deps
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if [ -f /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ] && [ -f /usr/include/cjson/cJSON.h ] &&
    [ -f /usr/include/zstd.h ] && [ -f /usr/include/dnnl.h ]; then
    say "build deps: system"
elif ls .device-debs/*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/deps
    for f in .device-debs/*.deb; do dpkg -x "$f" /tmp/deps; done
    D=/tmp/deps/usr
    export BLAS_DIR=$D/lib/x86_64-linux-gnu/openblas-openmp
    export CFLAGS="-I$D/include -I$D/include/x86_64-linux-gnu/openblas-openmp -L$D/lib/x86_64-linux-gnu -Wl,-rpath,$D/lib/x86_64-linux-gnu"
    export LD_LIBRARY_PATH=$D/lib/x86_64-linux-gnu:$BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    say "build deps: unpacked from .device-debs into /tmp/deps"
else
    say "build deps: MISSING (no system OpenBLAS/oneDNN/cJSON/zstd headers and no .device-debs carried); trying anyway"
fi
command -v make >/dev/null || say "WARNING: make not found"
have_lib libgomp || say "note: libgomp not in ldconfig cache"

# ---- build (sm_90 only here: faster)
say ""
say "## build ($(el)s)"
ARCH="-gencode arch=compute_90,code=sm_90"
if timeout 150 make -j16 >"$OUT/build.log" 2>&1 && timeout 150 make -j16 cuda CUDA_ARCHS="$ARCH" >>"$OUT/build.log" 2>&1; then
    say "build ok ($(el)s)"
else
    say "BUILD FAILED ($(el)s); last lines:"
    say '```'
    tail -25 "$OUT/build.log" | tee -a "$REPORT"
    say '```'
fi

# ---- GPU tests
say ""
say "## GPU tests ($(el)s)"
if [ -x build/test_cuda ]; then
    timeout 90 build/test_cuda >"$OUT/test_cuda.log" 2>&1
    rc=$?
    say '```'
    cat "$OUT/test_cuda.log" | tail -60 | tee -a "$REPORT" >/dev/null
    tail -60 "$OUT/test_cuda.log"
    say '```'
    say "test_cuda exit $rc"
else
    say "no build/test_cuda"
fi

# ---- the training loop on the GPU engine: same run on cuda (fp32, bf16) and cpu, losses side by side
say ""
say "## train --device cuda vs cpu, demo preset, 20 steps ($(el)s)"
if [ -x build/tinyllama-cuda ]; then
    timeout 20 build/tinyllama prepare --byte-level --seq-len 128 --out /tmp/tl_tdata src/*/*.c src/*/*.h >/dev/null 2>&1
    common="--preset demo --data /tmp/tl_tdata/train-00000.bin --batch 8 --seq-len 128 --steps 20 --lr 2e-3 --warmup 2 --quiet"
    for dev in "cuda --precision fp32" "cuda --precision bf16" "cpu"; do
        tag=$(echo "$dev" | tr -d ' -' )
        timeout 60 build/tinyllama-cuda train $common --device $dev --out "/tmp/tl_run_$tag" >"$OUT/train_$tag.log" 2>&1
        say "- $dev: exit $?, losses $(grep -o '"loss": [0-9.]*' "/tmp/tl_run_$tag/log.jsonl" 2>/dev/null | awk '{printf "%.4f ", $2}')"
    done
    # the step path with ranks on the GPU engine, pass/fail: 2 ranks sharing the GPU (host-staged gradient
    # sum) against 1 rank with twice the accumulation, fp32 and bf16 (tests/cuda/cli_distributed.sh)
    timeout 120 bash tests/cuda/cli_distributed.sh build/tinyllama-cuda >"$OUT/dist_cuda.log" 2>&1
    rc=$?
    say '```'
    tail -6 "$OUT/dist_cuda.log" | tee -a "$REPORT"
    say '```'
    say "two-rank CUDA test exit $rc"
fi

# ---- our benchmark
say ""
say "## benchmark: $PRESET, batch $BATCH x seq $SEQ, bf16 ($(el)s)"
if [ -x build/tinyllama-cuda ]; then
    timeout 100 build/tinyllama-cuda bench --device cuda --preset "$PRESET" --batch "$BATCH" --seq-len "$SEQ" \
        --steps "$STEPS" --warmup 2 >"$OUT/bench_cuda.log" 2>&1
    rc=$?
    say '```'
    tail -12 "$OUT/bench_cuda.log" | tee -a "$REPORT"
    say '```'
    say "bench exit $rc"
fi

# ---- PyTorch peer (torch.compile + SDPA), same model, same card
say ""
say "## PyTorch peer ($(el)s)"
if [ "${SKIP_TORCH:-0}" != 1 ] && [ -x build/tinyllama-cuda ]; then
    left=$((290 - $(el)))
    [ $left -lt 60 ] && left=60
    PYTHONUNBUFFERED=1 timeout $left python3 scripts/bench_cuda_torch.py --preset "$PRESET" --batch "$BATCH" \
        --seq-len "$SEQ" --steps "$STEPS" >"$OUT/bench_torch.log" 2>&1
    rc=$?
    say '```'
    tail -8 "$OUT/bench_torch.log" | tee -a "$REPORT"
    say '```'
    say "torch exit $rc (limit ${left}s)"
fi

# ---- memcheck of the GPU tests' kernels, with whatever time is left (Firecracker machines run it)
say ""
say "## compute-sanitizer memcheck ($(el)s)"
left=$((300 - $(el)))
if [ $left -ge 30 ] && [ -x build/test_cuda ] && command -v compute-sanitizer >/dev/null; then
    timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 build/test_cuda _fp32 >"$OUT/memcheck.log" 2>&1
    rc=$?
    say '```'
    grep -E "ERROR SUMMARY|passed|Invalid|out of bounds" "$OUT/memcheck.log" | tail -12 | tee -a "$REPORT"
    say '```'
    say "memcheck exit $rc (limit ${left}s; 124 = ran out of time)"
else
    say "skipped (time left ${left}s, or no compute-sanitizer)"
fi

# ---- summary
say ""
say "## summary ($(el)s)"
ours=$(grep -o 'impl=tinyllama-cuda tokens_per_s=[0-9.]*' "$OUT/bench_cuda.log" 2>/dev/null | sed 's/.*=//')
theirs=$(grep -o 'impl=pytorch tokens_per_s=[0-9.]*' "$OUT/bench_torch.log" 2>/dev/null | sed 's/.*=//')
say "- tests: $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$OUT/test_cuda.log" 2>/dev/null || echo 'no summary')"
say "- two-rank CUDA test: $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$OUT/dist_cuda.log" 2>/dev/null || echo 'no summary')"
say "- tinyllama-cuda tokens/s: ${ours:-n/a}; $(grep -o 'MFU [0-9.]*%' "$OUT/bench_cuda.log" 2>/dev/null | head -1)"
say "- pytorch tokens/s: ${theirs:-n/a}"
if [ -n "${ours:-}" ] && [ -n "${theirs:-}" ]; then
    say "- ratio ours/pytorch: $(python3 -c "print(f'{$ours/$theirs:.3f}')")"
fi

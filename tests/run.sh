#!/usr/bin/env bash
# Runs every test suite: unit tests in the normal build and again under
# AddressSanitizer + UBSan, then the CLI tests against both binaries, the CUDA
# engine's tests where a GPU is present, then the fuzz targets for a few seconds
# each (scripts/fuzz.sh).
# Ends with one line "N passed, N failed" summing all of them.
set -u
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
echo "== building (normal and asan+ubsan)"
make -j"$jobs" >/tmp/tl_build.log 2>&1 || { cat /tmp/tl_build.log; echo "0 passed, 1 failed"; exit 1; }
make asan -j"$jobs" >/tmp/tl_build_asan.log 2>&1 || { cat /tmp/tl_build_asan.log; echo "0 passed, 1 failed"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0
failed=0
# suite NAME CMD...: runs CMD, showing its lines as they come (a long suite shows
# progress), and adds its closing "N passed, N failed" line to the totals.
suite() {
    local name=$1
    shift
    echo "== $name"
    local log rc start=$SECONDS
    log=$(mktemp)
    "$@" 2>&1 | tee "$log" | grep --line-buffered -v -E '^[0-9]+ passed, [0-9]+ failed$'
    rc=${PIPESTATUS[0]}
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$line" ]; then
        echo "$name: runner ended without a summary (exit $rc)"
        failed=$((failed + 1))
        return
    fi
    local p f
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed*}
    passed=$((passed + p))
    failed=$((failed + f))
    echo "   $name: $p passed, $f failed in $((SECONDS - start)) s (running total: $passed passed, $failed failed)"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$name: exited $rc although no test failed"
        failed=$((failed + 1))
    fi
}

suite "layers (docs/design.md)" python3 scripts/check_layers.py
suite "unit tests" ./build/test_unit
suite "unit tests (asan+ubsan)" ./build-asan/test_unit
for t in tests/cli_*.sh; do
    [ -e "$t" ] || continue
    suite "$(basename "$t")" bash "$t" ./build/tinyllama
    suite "$(basename "$t") (asan+ubsan)" bash "$t" ./build-asan/tinyllama
done
# the CUDA engine (docs/cuda.md) where a GPU is present: its build, its unit tests and its two-rank step
# path; elsewhere tests/cuda/cli_distributed.sh prints one "skip" line and counts nothing
if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "== building the CUDA engine (make cuda)"
    make -j"$jobs" cuda >/tmp/tl_build_cuda.log 2>&1 || tail -20 /tmp/tl_build_cuda.log
    suite "cuda unit tests" ./build/test_cuda
fi
suite "serve_openai.sh (the openai client)" bash tests/serve_openai.sh ./build/tinyllama
suite "cuda/cli_distributed.sh" bash tests/cuda/cli_distributed.sh ./build/tinyllama-cuda
suite "demo (scripts/demo.sh, shortened)" bash tests/demo_check.sh
# coverage-guided fuzzing of every parser of outside input, 6 s per target (docs/fuzzing.md):
# 17 targets in under two minutes
suite "fuzz (6 s per target)" scripts/fuzz.sh 6
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

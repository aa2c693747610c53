#!/usr/bin/env bash
# Builds the libFuzzer targets (make fuzz) and runs each for a bounded time on a
# copy of its seed corpus (fuzz/corpus/<target>/, with fuzz/<target>.dict when there
# is one).  Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default 10 s, all)
# Extra libFuzzer flags: FUZZ_ARGS="-jobs=4 -workers=4" scripts/fuzz.sh 600 config
# FUZZ_CORPUS=DIR keeps the grown corpora in DIR/<target>/ (seeded from fuzz/corpus/
# the first time) to continue in a later run; by default they are thrown away.
# Prints one line per target (ok / FAIL with the crash file kept under
# build-fuzz/artifacts/) and ends with "N passed, N failed".  docs/fuzzing.md.
set -u
cd "$(dirname "$0")/.."
secs=${1:-10}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/*.c; do targets+=("$(basename "$f" .c)"); done
fi
mkdir -p build-fuzz
if ! make -j"$(nproc 2>/dev/null || echo 2)" fuzz >build-fuzz/build.log 2>&1; then
    tail -n 20 build-fuzz/build.log
    echo "FAIL fuzz build (needs clang and libclang-rt-14-dev: scripts/setup.sh; log build-fuzz/build.log)"
    echo "0 passed, 1 failed"
    exit 1
fi
# scratch files of the targets on tmpfs when there is one: they are rewritten per input
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/tl-fuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
# the targets' scratch directories go inside it: a crashing target cannot remove its own
export TMPDIR=$work
mkdir -p build-fuzz/artifacts build-fuzz/logs
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# the libraries' own process-lifetime allocations (Fontconfig's cache, for run_log's plot)
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
passed=0
failed=0
for t in "${targets[@]}"; do
    bin=build-fuzz/$t
    if [ ! -x "$bin" ]; then
        echo "FAIL fuzz/$t (no such target)"
        failed=$((failed + 1))
        continue
    fi
    corpus=$(realpath -m "${FUZZ_CORPUS:-$work}/$t")
    if [ ! -d "$corpus" ]; then
        mkdir -p "$corpus"
        [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
    fi
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    log=$PWD/build-fuzz/logs/$t.log
    jobs_dir=$PWD/build-fuzz/logs/$t.jobs # with -jobs, libFuzzer writes each job's fuzz-N.log here
    rm -rf build-fuzz/artifacts/"$t"-* "$jobs_dir"
    mkdir -p "$jobs_dir"
    # -timeout: one input running 10 s is a hang; the outer timeout only guards the run itself
    # shellcheck disable=SC2086
    (cd "$jobs_dir" && timeout -k 10 $((secs * 2 + 60)) "$OLDPWD/$bin" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$OLDPWD/build-fuzz/artifacts/$t-" \
        "${dict[@]/-dict=/-dict=$OLDPWD/}" ${FUZZ_ARGS:-} "$corpus") >"$log" 2>&1
    rc=$?
    logs=("$log" "$jobs_dir"/fuzz-*.log)
    runs=$(cat "${logs[@]}" 2>/dev/null | grep -E '^stat::number_of_executed_units:' | awk '{s += $2} END {print s + 0}')
    # the coverage of each process at its end; the best of them
    cov=0 ft=0
    for l in "${logs[@]}"; do
        [ -f "$l" ] || continue
        last=$(grep -E ' cov: [0-9]+ ft: ' "$l" | tail -n 1)
        c=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
        f=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
        [ -n "$c" ] && [ "$c" -gt "$cov" ] && cov=$c
        [ -n "$f" ] && [ "$f" -gt "$ft" ] && ft=$f
    done
    crash=$(ls build-fuzz/artifacts/"$t"-* 2>/dev/null | head -n 1)
    if [ "$rc" -eq 0 ] && [ -z "$crash" ]; then
        echo "ok   fuzz/$t ($runs runs, cov $cov, ft $ft)"
        passed=$((passed + 1))
    else
        why=$(cat "${logs[@]}" 2>/dev/null | grep -m1 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)')
        echo "FAIL fuzz/$t (exit $rc; ${crash:-no crash file}; ${why:-see $log}; log ${log#"$PWD"/})"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

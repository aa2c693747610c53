#!/usr/bin/env bash
# CLI tests of the OpenMP wait policy: unless the environment names one, tinyllama
# runs itself again with a short GOMP_SPINCOUNT (cli/main.c), which libgomp reads only
# at load time.  /proc/PID/environ is the environment the running image was started
# with, so it shows whether that second start happened.
# Usage: tests/cli_omp.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
TOK=$FIX/tokenizer/small_bpe.model
T=$(mktemp -d /tmp/tl_cli_omp.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
# the spin the program chooses (src/core/threads.h)
SPIN=$(grep -o 'TL_OMP_SPIN_COUNT "[0-9]*"' "$HERE/../src/core/threads.h" | grep -o '[0-9][0-9]*')

# The started image's environment: tokenize waits on stdin (a fifo held open) meanwhile.
started_env() {
    mkfifo "$T/in"
    env "$@" "$BIN" tokenize --tokenizer "$TOK" <"$T/in" >/dev/null 2>&1 &
    local pid=$!
    exec 3>"$T/in"
    local i
    for i in $(seq 1 50); do # the second start replaces the first image under the same pid
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qE '^(GOMP_SPINCOUNT|OMP_WAIT_POLICY)=' && break
        sleep 0.1
    done
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -E '^(GOMP_SPINCOUNT|OMP_WAIT_POLICY)=' | sort >"$T/env"
    exec 3>&-
    wait "$pid"
    rm -f "$T/in"
}

started_env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY
check "no policy in the environment: runs itself again with GOMP_SPINCOUNT set" \
    "[ \"\$(cat '$T/env')\" = 'GOMP_SPINCOUNT=$SPIN' ]"
started_env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active
check "OMP_WAIT_POLICY in the environment is kept, no spin count added" \
    "[ \"\$(cat '$T/env')\" = 'OMP_WAIT_POLICY=active' ]"
started_env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=77
check "GOMP_SPINCOUNT in the environment is kept" "[ \"\$(cat '$T/env')\" = 'GOMP_SPINCOUNT=77' ]"

env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$BIN" info --cpu >"$T/cpu" 2>&1
check "info --cpu reports the spin count chosen" \
    "grep -q '^openmp wait: GOMP_SPINCOUNT=$SPIN (tinyllama' '$T/cpu'"
OMP_WAIT_POLICY=passive "$BIN" info --cpu >"$T/cpu" 2>&1
check "info --cpu reports a policy from the environment" \
    "grep -q '^openmp wait: OMP_WAIT_POLICY=passive (from the environment)' '$T/cpu'"
# the command's own exit status and output pass through the second start
out=$(printf 'hello' | env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$BIN" tokenize --tokenizer "$TOK")
want=$(printf 'hello' | GOMP_SPINCOUNT=$SPIN "$BIN" tokenize --tokenizer "$TOK")
check "output unchanged by the second start" '[ -n "$out" ] && [ "$out" = "$want" ]'
expect_fail "a usage error still fails after the second start" "unknown command" \
    env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$BIN" no-such-command
finish

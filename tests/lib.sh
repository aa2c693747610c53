# tests/lib.sh - helpers shared by the CLI test scripts (sourced; needs $T, a temp dir).
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
# expect_fail NAME PATTERN CMD...: non-zero exit and stderr matching PATTERN
expect_fail() {
    local name=$1 pat=$2
    shift 2
    if "$@" >"$T/out" 2>"$T/err"; then
        fail "$name (exit 0)"
    elif grep -q -E -- "$pat" "$T/err"; then
        ok "$name"
    else
        fail "$name (stderr: $(head -c 300 "$T/err"))"
    fi
}
# the closing line the test runner sums, and the exit status
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

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
# serve_start NAME ARGS...: runs `$BIN serve --port 0 ARGS` (log in $T/NAME.log), waits for the
# port it prints; sets PORT_<NAME> and PID_<NAME> and adds the pid to the caller's PIDS array
serve_start() {
    local name=$1
    shift
    "$BIN" serve --port 0 "$@" 2>"$T/$name.log" &
    local pid=$!
    PIDS+=("$pid")
    local port=""
    for _ in $(seq 1 300); do
        port=$(sed -n 's|.*http://[0-9.]*:\([0-9][0-9]*\).*|\1|p' "$T/$name.log")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    eval "PORT_$name=$port PID_$name=$pid"
    [ -n "$port" ]
}

# the closing line the test runner sums, and the exit status
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

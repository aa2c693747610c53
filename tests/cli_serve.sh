#!/usr/bin/env bash
# CLI tests of `tinyllama serve` on loopback: the OpenAI routes with curl, JSON
# fields read back with python3's json module, server-sent-event framing,
# errors that leave the server up, concurrent requests against the same
# requests served one at a time, the prefix cache, the API key and a clean
# stop on SIGTERM / SIGINT.  The model is the transformers fixture
# tests/fixtures/infer_gqa_f32 (with its tokenizer.model), whose greedy output
# `tinyllama generate` also gives.  Usage: tests/cli_serve.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
M="$FIX/infer_gqa_f32"
T=$(mktemp -d /tmp/tl_cli_serve.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
# jq-like: jget FILE 'python expression over d'
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }

# start NAME ARGS...: runs a server on a free port (--port 0), sets PORT_<NAME> and PID_<NAME>
start() {
    local name=$1
    shift
    "$BIN" serve --model "$M" --port 0 --threads 2 "$@" 2>"$T/$name.log" &
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
# post PORT PATH BODY OUT: HTTP status on stdout, body in OUT
post() { curl -s -o "$4" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$3" "http://127.0.0.1:$1$2"; }
get() { curl -s -o "$3" -w '%{http_code}' "http://127.0.0.1:$1$2"; }

check "serve --help" "'$BIN' serve --help | grep -q usage:"
expect_fail "serve without --model" "--model" "$BIN" serve
expect_fail "serve --port out of range" "port" "$BIN" serve --model "$M" --port 70000
expect_fail "serve --host not an address" "not an IPv4 address" "$BIN" serve --model "$M" --host nowhere --port 0

if ! start A --parallel 4 --ctx 96 --chunk 8; then
    fail "server starts (log: $(head -c 300 "$T/A.log"))"
    finish
    exit 1
fi
ok "server starts on a free port ($PORT_A)"
P=$PORT_A

# --- GET routes
check "GET /health: 200 {status: ok}" '[ "$(get $P /health $T/h.json)" = 200 ] && [ "$(jget $T/h.json "d[\"status\"]")" = ok ]'
check "GET /v1/models: a list naming the model" \
    '[ "$(get $P /v1/models $T/m.json)" = 200 ] && [ "$(jget $T/m.json "d[\"object\"], d[\"data\"][0][\"id\"]")" = "('"'"'list'"'"', '"'"'infer_gqa_f32'"'"')" ]'

# --- completions: greedy text equals `tinyllama generate --greedy`
want=$("$BIN" generate --model "$M" "Hello world" --max-tokens 10 --greedy --ignore-eos --no-stats 2>/dev/null)
code=$(post $P /v1/completions '{"prompt":"Hello world","max_tokens":10,"temperature":0}' "$T/c.json")
check "POST /v1/completions: 200, text_completion" '[ "$code" = 200 ] && [ "$(jget $T/c.json "d[\"object\"]")" = text_completion ]'
got=$(jget "$T/c.json" 'd["choices"][0]["text"]')
check "completion greedy text = tinyllama generate --greedy" '[ -n "$want" ] && [ "$got" = "$want" ]'
check "completion usage and finish_reason" \
    '[ "$(jget $T/c.json "(d[\"usage\"][\"completion_tokens\"], d[\"usage\"][\"total_tokens\"] - d[\"usage\"][\"prompt_tokens\"], d[\"choices\"][0][\"finish_reason\"])")" = "(10, 10, '"'"'length'"'"')" ]'

# --- stop strings cut the text before them, finish_reason stop
stop=$(printf '%s' "$want" | cut -c 4-6)
post $P /v1/completions "{\"prompt\":\"Hello world\",\"max_tokens\":10,\"temperature\":0,\"stop\":[$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$stop")]}" "$T/s.json" >/dev/null
cut_text=$(jget "$T/s.json" 'd["choices"][0]["text"]')
check "stop string: text ends before it, finish_reason stop" \
    '[ "$(jget $T/s.json "d[\"choices\"][0][\"finish_reason\"]")" = stop ] && [ "$cut_text" = "${want%%"$stop"*}" ]'

# --- sampling: a seed reproduces, another seed differs
body='{"prompt":"Hello world","max_tokens":16,"temperature":1.0,"top_k":50,"top_p":0.95,"min_p":0.01,"seed":SEED}'
post $P /v1/completions "${body/SEED/7}" "$T/r1.json" >/dev/null
post $P /v1/completions "${body/SEED/7}" "$T/r2.json" >/dev/null
post $P /v1/completions "${body/SEED/8}" "$T/r3.json" >/dev/null
t1=$(jget "$T/r1.json" 'd["choices"][0]["text"]')
check "seed reproduces a sample" '[ -n "$t1" ] && [ "$t1" = "$(jget $T/r2.json "d[\"choices\"][0][\"text\"]")" ]'
check "another seed, another sample" '[ "$t1" != "$(jget $T/r3.json "d[\"choices\"][0][\"text\"]")" ]'

# --- chat
chat='{"messages":[{"role":"system","content":"You are brief."},{"role":"user","content":"Hi there"}],"max_tokens":12,"temperature":0}'
code=$(post $P /v1/chat/completions "$chat" "$T/chat.json")
check "POST /v1/chat/completions: chat.completion, assistant message" \
    '[ "$code" = 200 ] && [ "$(jget $T/chat.json "d[\"object\"], d[\"choices\"][0][\"message\"][\"role\"]")" = "('"'"'chat.completion'"'"', '"'"'assistant'"'"')" ]'
reply=$(jget "$T/chat.json" 'd["choices"][0]["message"]["content"]')

# --- streaming: SSE framing, the deltas add up to the same reply
curl -sN -H 'Content-Type: application/json' -D "$T/sse.h" --data-binary "${chat%\}},\"stream\":true}" \
    "http://127.0.0.1:$P/v1/chat/completions" >"$T/sse.txt"
check "stream: Content-Type text/event-stream" "grep -qi '^content-type: text/event-stream' '$T/sse.h'"
python3 - "$T/sse.txt" "$T/sse.out" <<'PY' && ok "stream: every event is 'data: JSON', blank-line separated, ending in data: [DONE]" || fail "stream framing ($(head -c 300 "$T/sse.txt"))"
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
assert raw.endswith("\n\n"), "events end with a blank line"
events = raw[:-2].split("\n\n")
assert all(e.startswith("data: ") and "\n" not in e for e in events), "one data line per event"
assert events[-1] == "data: [DONE]", "ends with [DONE]"
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", "first chunk names the role"
assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
open(sys.argv[2], "w", encoding="utf-8").write("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))
PY
check "stream: the deltas make the non-streamed reply" '[ -n "$reply" ] && [ "$(cat $T/sse.out)" = "$reply" ]'
curl -sN --data-binary '{"prompt":"Hello world","max_tokens":5,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
    "http://127.0.0.1:$P/v1/completions" >"$T/sse2.txt"
check "stream with include_usage: a usage chunk before [DONE]" \
    "grep '^data: {' '$T/sse2.txt' | tail -1 | grep -q '\"usage\":{\"prompt_tokens\":[0-9]*,\"completion_tokens\":5'"

# --- bad requests: 4xx with an OpenAI error object naming the problem; the server stays up
bad() { # NAME STATUS PATTERN PATH BODY
    local code
    code=$(post $P "$4" "$5" "$T/e.json")
    local msg
    msg=$(jget "$T/e.json" 'd["error"]["message"]')
    if [ "$code" = "$2" ] && printf '%s' "$msg" | grep -q -- "$3"; then ok "$1"; else fail "$1 (HTTP $code: $(head -c 200 "$T/e.json"))"; fi
}
bad "malformed JSON -> 400" 400 "not valid JSON" /v1/completions '{"prompt": "a",'
printf '{"prompt":"\xff\xfe"}' >"$T/badutf8"
bad "invalid UTF-8 -> 400" 400 "not valid UTF-8" /v1/completions "@$T/badutf8"
bad "wrong field type -> 400" 400 "'max_tokens' must be an integer" /v1/completions '{"prompt":"a","max_tokens":"ten"}'
bad "negative max_tokens -> 400" 400 "'max_tokens' is -5" /v1/completions '{"prompt":"a","max_tokens":-5}'
bad "temperature out of range -> 400" 400 "'temperature' is 7" /v1/completions '{"prompt":"a","temperature":7}'
bad "chat without messages -> 400" 400 "'messages' is required" /v1/chat/completions '{"prompt":"a"}'
bad "chat ending with the assistant -> 400" 400 "last message must be a user" /v1/chat/completions \
    '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}'
long=$(python3 -c 'print("hello " * 200)')
bad "prompt longer than the context -> 400" 400 "context holds 96" /v1/completions "{\"prompt\":\"$long\"}"
check "the context error has code context_length_exceeded" '[ "$(jget $T/e.json "d[\"error\"][\"code\"]")" = context_length_exceeded ]'
head -c 1100000 /dev/zero | tr '\0' a | sed 's/^/{"prompt":"/; s/$/"}/' >"$T/big.json"
bad "body over the 1 MiB limit -> 413" 413 "larger than the" /v1/completions "@$T/big.json"
check "unknown route -> 404" '[ "$(get $P /v1/nothing $T/e.json)" = 404 ] && grep -q "no route" $T/e.json'
check "GET on a POST route -> 405" '[ "$(get $P /v1/completions $T/e.json)" = 405 ]'
check "unknown fields are ignored" '[ "$(post $P /v1/completions "{\"prompt\":\"a\",\"max_tokens\":2,\"frobnicate\":{\"x\":1}}" $T/u.json)" = 200 ]'
check "the server still answers after the bad requests" '[ "$(get $P /health $T/h.json)" = 200 ]'

# --- concurrent requests: each equals the same request served alone (continuous batching is batch-invariant)
prompts=("Hello world" "The quick brown fox" "Once upon a time there was" "To be or not to be" "A" "The rain in Spain"
    "It was the best of times, it was the worst of times" "Call me")
for i in "${!prompts[@]}"; do
    post $P /v1/completions "{\"prompt\":\"${prompts[$i]}\",\"max_tokens\":$((8 + i)),\"temperature\":0}" "$T/seq$i.json" >/dev/null
done
get $P /metrics "$T/met0.txt" >/dev/null
for i in "${!prompts[@]}"; do
    post $P /v1/completions "{\"prompt\":\"${prompts[$i]}\",\"max_tokens\":$((8 + i)),\"temperature\":0}" "$T/par$i.json" >/dev/null &
done
wait_ok=1
for j in $(jobs -p); do [ "$j" = "$PID_A" ] || wait "$j" || wait_ok=0; done
same=1
for i in "${!prompts[@]}"; do
    a=$(jget "$T/seq$i.json" 'd["choices"][0]["text"]')
    b=$(jget "$T/par$i.json" 'd["choices"][0]["text"]')
    [ -n "$a" ] && [ "$a" = "$b" ] || { same=0; echo "     prompt $i: alone '$a', concurrent '$b'"; }
done
check "8 concurrent requests: each answer = the same request alone" '[ $wait_ok = 1 ] && [ $same = 1 ]'
get $P /metrics "$T/met.txt" >/dev/null
metric() { sed -n "s/^$1 //p" "$2"; }
check "/metrics: Prometheus text with requests, tokens, queue, tokens/s, time to first token" \
    "grep -q '^# TYPE tinyllama_requests_total counter' '$T/met.txt' && grep -q '^tinyllama_completion_tokens_total [1-9]' '$T/met.txt' && grep -q '^tinyllama_decode_tokens_per_second [0-9]' '$T/met.txt' && grep -q '^tinyllama_time_to_first_token_seconds_count [1-9]' '$T/met.txt'"
check "/metrics after the load: no slot busy, nothing queued" \
    '[ "$(metric tinyllama_slots_busy $T/met.txt)" = 0 ] && [ "$(metric tinyllama_queue_depth $T/met.txt)" = 0 ]'
steps=$(( $(metric tinyllama_decode_steps_total $T/met.txt) - $(metric tinyllama_decode_steps_total $T/met0.txt) ))
rows=$(( $(metric tinyllama_decode_sequences_total $T/met.txt) - $(metric tinyllama_decode_sequences_total $T/met0.txt) ))
check "concurrent requests shared decode steps ($rows sequences in $steps steps)" '[ $rows -gt $steps ]'

# --- load: 32 clients x 5 requests, twice; every request answered, no slot leaked, memory flat
load() { # OUT: one HTTP status per request
    seq 1 160 | xargs -P 32 -I{} curl -s -o /dev/null -w '%{http_code}\n' -m 60 \
        --data-binary '{"prompt":"Load test {}","max_tokens":6,"temperature":0.5,"seed":{}}' \
        "http://127.0.0.1:$P/v1/completions" >"$1"
}
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$PID_A/status"; }
load "$T/load1.txt"
rss1=$(rss)
load "$T/load2.txt"
rss2=$(rss)
check "load: 320 requests from 32 clients all answered 200" \
    '[ "$(cat $T/load1.txt $T/load2.txt | grep -c "^200$")" = 320 ]'
get $P /metrics "$T/ml.txt" >/dev/null
check "load: no slot busy and nothing queued afterwards" \
    '[ "$(metric tinyllama_slots_busy $T/ml.txt)" = 0 ] && [ "$(metric tinyllama_queue_depth $T/ml.txt)" = 0 ] && [ "$(metric tinyllama_requests_total $T/ml.txt)" = "$(metric tinyllama_requests_finished_total $T/ml.txt)" ]'
# (bounded rather than equal: malloc's per-thread arenas grow with the peak of connection threads;
# leaks themselves are LeakSanitizer's job in the ASan run of this script, whose SIGTERM exit must be 0)
check "load: memory flat across the second 160 requests (RSS $rss1 -> $rss2 kB)" '[ -n "$rss1" ] && [ -n "$rss2" ] && [ $((rss2 - rss1)) -lt 32768 ]'

# --- prefix cache: a chat that goes on reuses the cached prefix, and answers as a server without the cache
turn1='{"messages":[{"role":"user","content":"Tell me about the sea"}],"max_tokens":8,"temperature":0}'
post $P /v1/chat/completions "$turn1" "$T/t1.json" >/dev/null
r1=$(jget "$T/t1.json" 'd["choices"][0]["message"]["content"]')
turn2=$(python3 -c 'import json,sys; print(json.dumps({"messages":[{"role":"user","content":"Tell me about the sea"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"And the sky?"}],"max_tokens":8,"temperature":0}))' "$r1")
get $P /metrics "$T/m1.txt" >/dev/null
post $P /v1/chat/completions "$turn2" "$T/t2.json" >/dev/null
get $P /metrics "$T/m2.txt" >/dev/null
reused=$(( $(metric tinyllama_prefix_cache_reused_tokens_total $T/m2.txt) - $(metric tinyllama_prefix_cache_reused_tokens_total $T/m1.txt) ))
check "continued chat: the first turn's tokens are not recomputed ($reused reused)" '[ $reused -ge 10 ]'

start B --parallel 2 --ctx 96 --chunk 8 --no-prefix-cache --api-key sekrit || fail "second server starts"
Q=$PORT_B
check "--api-key: /health needs no key" '[ "$(get $Q /health $T/h.json)" = 200 ]'
check "--api-key: other routes refuse a missing key with 401" '[ "$(get $Q /v1/models $T/e.json)" = 401 ] && grep -q "API key" $T/e.json'
code=$(curl -s -o "$T/t2b.json" -w '%{http_code}' -H 'Authorization: Bearer sekrit' --data-binary "$turn2" "http://127.0.0.1:$Q/v1/chat/completions")
check "continued chat: same reply without the prefix cache" \
    '[ "$code" = 200 ] && [ -n "$(jget $T/t2.json "d[\"choices\"][0][\"message\"][\"content\"]")" ] && [ "$(jget $T/t2.json "d[\"choices\"][0][\"message\"][\"content\"]")" = "$(jget $T/t2b.json "d[\"choices\"][0][\"message\"][\"content\"]")" ]'
curl -s -H 'Authorization: Bearer sekrit' "http://127.0.0.1:$Q/metrics" >"$T/mb.txt"
check "--no-prefix-cache reuses nothing" '[ "$(metric tinyllama_prefix_cache_reused_tokens_total $T/mb.txt)" = 0 ]'

# --- a client that goes away mid-stream: the server frees its slot and goes on
curl -sN --max-time 30 --data-binary '{"prompt":"Hello","max_tokens":80,"temperature":0,"stream":true}' \
    "http://127.0.0.1:$P/v1/completions" | head -c 200 >/dev/null
check "after a client left mid-stream the server answers" '[ "$(post $P /v1/completions "{\"prompt\":\"a\",\"max_tokens\":2}" $T/u.json)" = 200 ]'
# (the server learns of the departure at its next write, so the slot frees a few decode steps later:
# poll for it rather than race it, which under the sanitizers lost the race once in CI)
for _ in $(seq 1 100); do
    get $P /metrics "$T/met2.txt" >/dev/null
    [ "$(metric tinyllama_slots_busy $T/met2.txt)" = 0 ] && break
    sleep 0.1
done
check "after a client left mid-stream no slot is busy" '[ "$(metric tinyllama_slots_busy $T/met2.txt)" = 0 ]'

# --- SIGTERM while a stream is in flight: it still ends with [DONE] (the drain lets it finish)
curl -sN --data-binary '{"prompt":"Hello","max_tokens":80,"temperature":0,"stream":true}' \
    "http://127.0.0.1:$P/v1/completions" >"$T/drain.txt" &
cpid=$!
for _ in $(seq 1 100); do grep -q '^data: ' "$T/drain.txt" 2>/dev/null && break; sleep 0.05; done
# --- SIGTERM / SIGINT: clean exit, status 0
stops_cleanly() { # PID SIGNAL LOG
    kill -"$2" "$1"
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then return 1; fi
    wait "$1"
    local rc=$?
    [ $rc -eq 0 ] && grep -q "stopped" "$3"
}
check "SIGTERM: the server drains and exits 0" "stops_cleanly $PID_A TERM $T/A.log"
wait $cpid
check "the stream in flight at SIGTERM ended with data: [DONE]" "tail -c 15 '$T/drain.txt' | grep -q 'data: \[DONE\]'"
check "SIGINT: the server exits 0" "stops_cleanly $PID_B INT $T/B.log"
check "nothing listens on the port after the stop" "! curl -s -m 2 http://127.0.0.1:$P/health >/dev/null"
finish

#!/usr/bin/env bash
# CLI tests of speculative decoding (generate --draft): greedy output with a
# draft equals greedy output without one (a Q4_0 of the model as the draft,
# another model, the model itself), the acceptance stats, and refused drafts.
# Usage: tests/cli_spec.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
T=$(mktemp -d /tmp/tl_cli_spec.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
# one thread: tiny models, a shared machine
gen() { "$BIN" generate --threads 1 "$@"; }

M=$FIX/gguf/tiny256_BF16.gguf
"$BIN" quantize "$M" "$T/q4.gguf" Q4_0 >/dev/null 2>&1 || fail "quantize the draft"

# --- greedy: ids with the draft = ids without it, several prompts, k and a short context
for ctx in 0 24; do
    for prompt in "1 5 9 7" "1 20 2 11 4 4" "1 3"; do
        cargs=()
        [ "$ctx" -gt 0 ] && cargs=(--ctx "$ctx")
        want=$(gen --model "$M" --ids "$prompt" --greedy --max-tokens 40 --print-ids --no-stats "${cargs[@]}" 2>&1)
        for k in 1 4 6; do
            got=$(gen --model "$M" --ids "$prompt" --greedy --max-tokens 40 --print-ids --no-stats "${cargs[@]}" \
                --draft "$T/q4.gguf" --draft-k "$k" 2>&1)
            check "greedy with a Q4_0 draft = without (ids '$prompt', k $k, ctx $ctx)" '[ -n "$want" ] && [ "$got" = "$want" ]'
        done
    done
done

# --- text mode on an HF pair that shares a tokenizer (the draft disagrees often)
want=$(gen --model "$FIX/infer_gqa_f32" "Hello world" --greedy --max-tokens 30 --no-stats 2>&1)
got=$(gen --model "$FIX/infer_gqa_f32" "Hello world" --greedy --max-tokens 30 --draft "$FIX/infer_tied_bf16" \
    --draft-k 3 2>"$T/stats")
check "greedy text with another model as the draft = without" '[ -n "$want" ] && [ "$got" = "$want" ]'
check "stats: acceptance and tokens/s" "grep -Eq 'draft: [0-9]+ of [0-9]+ proposed tokens accepted \([0-9.]+%\), [0-9]+ verification passes, [0-9.]+ tokens per pass, [0-9.]+ tokens/s, k 3' '$T/stats'"

# --- the model as its own draft: every proposal accepted, greedy and sampled
gen --model "$M" --ids "1 5 9" --greedy --max-tokens 30 --ignore-eos --draft "$M" >/dev/null 2>"$T/self"
check "self draft, greedy: 100% accepted" "grep -q 'accepted (100.0%)' '$T/self'"
a=$(gen --model "$M" --ids "1 5 9" --temperature 0.8 --top-k 10 --top-p 0.9 --seed 3 --max-tokens 30 --print-ids \
    --ignore-eos --draft "$M" 2>"$T/self2")
b=$(gen --model "$M" --ids "1 5 9" --temperature 0.8 --top-k 10 --top-p 0.9 --seed 3 --max-tokens 30 --print-ids \
    --ignore-eos --draft "$M" 2>/dev/null)
check "self draft, sampled: 100% accepted" "grep -q 'accepted (100.0%)' '$T/self2'"
check "self draft, sampled: a seed reproduces the output" '[ -n "$a" ] && [ "$a" = "$b" ]'

# --- refused drafts
expect_fail "a draft with another vocabulary" "tests/fixtures/infer_tied_bf16|infer_tied_bf16: its vocabulary has 1000 tokens, the model's 32" \
    gen --model "$M" --ids "1 5" --draft "$FIX/infer_tied_bf16"
expect_fail "a draft that does not exist" "--draft: .*no-such-draft" gen --model "$M" --ids "1 5" --draft "$T/no-such-draft.gguf"
expect_fail "--draft-k 0" "--draft-k" gen --model "$M" --ids "1 5" --draft "$M" --draft-k 0
expect_fail "--draft-k 17" "--draft-k" gen --model "$M" --ids "1 5" --draft "$M" --draft-k 17
check "generate --help names --draft" "'$BIN' generate --help | grep -q -- '--draft-k'"

# --- serve --draft (one slot): greedy replies = generate's, the metrics count the drafts
H=$FIX/infer_gqa_f32
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | sed -n "s/^$2 //p"; }
# start NAME ARGS...: a server on a free port; sets PORT_<NAME> and PID_<NAME>
start() {
    local name=$1
    shift
    serve_start "$name" --threads 1 "$@"
}
complete() { # PORT BODY OUT
    curl -s -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$2" \
        "http://127.0.0.1:$1/v1/completions"
}
expect_fail "serve --draft with several slots" "--parallel 1" "$BIN" serve --model "$H" --draft "$FIX/infer_tied_bf16" --parallel 4 --port 0
expect_fail "serve --draft with another vocabulary" "vocabulary" "$BIN" serve --model "$H" --draft "$M" --parallel 1 --port 0
if start A --model "$H" --parallel 1 --draft "$FIX/infer_tied_bf16" --draft-k 3; then
    all=1
    for prompt in "Hello world" "The quick brown fox" "Once upon a time there was"; do
        want=$(gen --model "$H" "$prompt" --greedy --max-tokens 24 --no-stats 2>/dev/null)
        code=$(complete "$PORT_A" "{\"prompt\": \"$prompt\", \"max_tokens\": 24, \"temperature\": 0}" "$T/c.json")
        got=$(jget "$T/c.json" 'd["choices"][0]["text"]')
        [ "$code" = 200 ] && [ -n "$want" ] && [ "$got" = "$want" ] || { all=0; echo "  '$prompt': served '$got', generate '$want'"; }
    done
    check "serve --draft: greedy completions = generate --greedy" '[ $all = 1 ]'
    proposed=$(metric "$PORT_A" tinyllama_draft_tokens_proposed_total)
    accepted=$(metric "$PORT_A" tinyllama_draft_tokens_accepted_total)
    check "serve --draft: /metrics counts proposals ($accepted of $proposed accepted)" \
        '[ "${proposed:-0}" -gt 0 ] && [ "${accepted:--1}" -ge 0 ] && [ "$accepted" -le "$proposed" ]'
    s1=$(complete "$PORT_A" '{"prompt": "Hello", "max_tokens": 20, "temperature": 0.9, "top_k": 40, "seed": 5}' "$T/s1.json")
    s2=$(complete "$PORT_A" '{"prompt": "Hello", "max_tokens": 20, "temperature": 0.9, "top_k": 40, "seed": 5}' "$T/s2.json")
    check "serve --draft: a seed reproduces a sample" \
        '[ "$s1$s2" = 200200 ] && [ "$(jget "$T/s1.json" "d[\"choices\"][0][\"text\"]")" = "$(jget "$T/s2.json" "d[\"choices\"][0][\"text\"]")" ]'
    lp=$(complete "$PORT_A" '{"prompt": "Hello", "max_tokens": 4, "logprobs": 2}' "$T/lp.json")
    check "serve --draft: logprobs refused with 400 naming the draft" '[ "$lp" = 400 ] && grep -q -- "--draft" "$T/lp.json"'
    n2=$(complete "$PORT_A" '{"prompt": "Hello world", "max_tokens": 24, "temperature": 0, "n": 2}' "$T/n2.json")
    want=$(gen --model "$H" "Hello world" --greedy --max-tokens 24 --no-stats 2>/dev/null)
    check "serve --draft: n=2 greedy choices both = generate --greedy" \
        '[ "$n2" = 200 ] && [ "$(jget "$T/n2.json" "d[\"choices\"][0][\"text\"]")" = "$want" ] && [ "$(jget "$T/n2.json" "d[\"choices\"][1][\"text\"]")" = "$want" ]'
    kill -TERM "$PID_A"
    wait "$PID_A"
    check "serve --draft: SIGTERM exits 0" '[ $? = 0 ]'
else
    fail "serve --draft starts (log: $(head -c 300 "$T/A.log"))"
fi
if start B --model "$H" --parallel 1 --draft "$H"; then
    complete "$PORT_B" '{"prompt": "Hello world", "max_tokens": 30, "temperature": 0.8, "seed": 1}' "$T/b.json" >/dev/null
    proposed=$(metric "$PORT_B" tinyllama_draft_tokens_proposed_total)
    accepted=$(metric "$PORT_B" tinyllama_draft_tokens_accepted_total)
    check "serve, the model as its own draft: all $proposed proposals accepted" '[ "${proposed:-0}" -gt 0 ] && [ "$accepted" = "$proposed" ]'
    kill -TERM "$PID_B"
    wait "$PID_B"
else
    fail "serve with a self draft starts (log: $(head -c 300 "$T/B.log"))"
fi

finish

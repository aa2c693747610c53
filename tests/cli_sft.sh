#!/usr/bin/env bash
# CLI tests of fine-tuning: prepare --format chat (bad lines reported by line,
# counted, nothing dropped silently), train --sft.  Usage: tests/cli_sft.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
T=$(mktemp -d /tmp/tl_cli_sft.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
FIX=$(dirname "$0")/fixtures
TOK=$FIX/tokenizer/small_bpe.model

# --- prepare --format chat: good and bad lines, each bad one named with its line number
cat >"$T/chat.jsonl" <<'J'
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
{"conversations": [{"from": "human", "value": "What is a cat?"}, {"from": "gpt", "value": "A small animal."}]}
{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}
{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}
{"messages": [{"role": "user", "content": "only a question"}]}
{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "y"}]}
not json

{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
{"messages": [{"role": "user", "content": "a very long question that fills the whole sequence and more, so that no reply token fits"}, {"role": "assistant", "content": "z"}]}
J
"$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 48 --val-count 0 --out "$T/chat" "$T/chat.jsonl" \
    >"$T/prep" 2>"$T/prep.err"
rc=$?
want=(":3: messages\[0\]: role 'tool'" ":4: messages\[0\]: empty content" ":5: no assistant message"
       ":6: messages\[0\]: content is of another type" ":7: not a JSON object" ":9: messages\[1\]: a user message"
       ":10: .*no reply token within the first 49")
missing=""
for w in "${want[@]}"; do grep -q -- "$w" "$T/prep.err" || missing="$missing [$w]"; done
if [ $rc -eq 0 ] && [ -z "$missing" ] &&
    grep -q "^2 conversations .* 7 skipped, 1 malformed_json, 1 bad_role, 1 not_string, 1 empty_turn, 1 bad_order, 1 no_assistant, 1 too_long$" "$T/prep" &&
    grep -q '"kind":	"chat"' "$T/chat/manifest.json" && grep -q '"bad_role":	1' "$T/chat/manifest.json"; then
    ok "prepare --format chat: bad lines named and counted"
else
    fail "prepare --format chat (rc $rc, missing:$missing): $(cat "$T/prep" "$T/prep.err" | head -c 600)"
fi
expect_fail "prepare --strict on bad chat lines" "bad input found" \
    "$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 48 --val-count 0 --strict --out "$T/chat2" "$T/chat.jsonl"
expect_fail "prepare --format chat --byte-level" "needs a --tokenizer" \
    "$BIN" prepare --format chat --byte-level --out "$T/chat3" "$T/chat.jsonl"
expect_fail "prepare --chat-template unknown" "unknown chat template 'vicuna'" \
    "$BIN" prepare --format chat --chat-template vicuna --tokenizer "$TOK" --out "$T/chat4" "$T/chat.jsonl"

finish

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
trap 'rm -rf "$T"' EXIT
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

finish

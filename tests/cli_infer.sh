#!/usr/bin/env bash
# CLI tests of generate / chat / perplexity on the transformers fixtures
# (scripts/gen_infer_fixtures.py) and on a checkpoint written by our own
# training run.  Usage: tests/cli_infer.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
T=$(mktemp -d /tmp/tl_cli_infer.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
# ids written by transformers (scripts/gen_infer_fixtures.py)
ids_of() { sed -n "s/^$1 //p" "$FIX/infer_greedy.txt"; }

for cmd in generate chat perplexity; do
    check "$cmd --help" "'$BIN' $cmd --help | grep -q usage:"
done

# --- greedy ids equal transformers' (both fixtures)
for p in gqa_f32 tied_bf16; do
    M="$FIX/infer_$p"
    want=$(ids_of "$p.greedy" 2>/dev/null)
    if [ -z "$want" ]; then fail "greedy $p (no ids in infer_greedy.txt)"; continue; fi
    got=$("$BIN" generate --model "$M" --ids "$(ids_of "$p.prompt")" --print-ids --ignore-eos --max-tokens 14 \
        --no-stats 2>"$T/err")
    check "generate greedy ids = transformers ($p)" '[ "$got" = "$want" ]'
done

# --- every kernel this CPU runs gives transformers' greedy ids on the bf16 model
# (the 10-token prompt takes the batched pass: sgemm, or AMX tiles with amx and
# amx-exact);
# kernels it lacks are refused by name
for k in scalar avx2 avx512 avx512bf16 amx amx-exact; do
    got=$("$BIN" generate --model "$FIX/infer_tied_bf16" --ids "$(ids_of tied_bf16.prompt)" --print-ids \
        --ignore-eos --max-tokens 14 --no-stats --kernel $k 2>"$T/err")
    if grep -q "this CPU cannot run the $k kernels" "$T/err"; then
        echo "     (this CPU has no $k: refused as expected)"
        continue
    fi
    check "--kernel $k: greedy ids = transformers (tied_bf16)" '[ "$got" = "$(ids_of tied_bf16.greedy)" ]'
done

# --- the kernels generate picks: for bf16 weights those `info --cpu` names for them (avx512bf16,
# rounding activations to bf16, only where its dot products measure faster than fp32 FMAs and there
# is no AMX), with --f32-activations and for fp32 weights the exact ones
info=$("$BIN" info --cpu)
exact=$(echo "$info" | sed -n 's/^inference kernels: \([a-z0-9-]*\) .*/\1/p')
bf16=$(echo "$info" | sed -n 's/^inference kernels: .*, \([a-z0-9-]*\) for BF16 weights .*/\1/p')
bf16=${bf16:-$exact}
kernel_of() {
    "$BIN" generate --ids "$(ids_of tied_bf16.prompt)" --max-tokens 2 "$@" 2>&1 >/dev/null |
        sed -n 's/.* kernel \([a-z0-9-]*\), .*/\1/p'
}
echo "     (info --cpu: $exact, $bf16 for bf16 weights)"
check "generate on bf16 weights: the kernels info --cpu names for them" \
    '[ -n "$exact" ] && [ "$(kernel_of --model "$FIX/infer_tied_bf16")" = "$bf16" ]'
check "generate --kernel auto on bf16 weights: the same as without --kernel" \
    '[ "$(kernel_of --model "$FIX/infer_tied_bf16" --kernel auto)" = "$bf16" ]'
check "generate --f32-activations on bf16 weights: the exact kernels" \
    '[ "$(kernel_of --model "$FIX/infer_tied_bf16" --f32-activations)" = "$exact" ]'
check "generate on fp32 weights: the exact kernels" '[ "$(kernel_of --model "$FIX/infer_gqa_f32")" = "$exact" ]'

M="$FIX/infer_gqa_f32"
# --- text prompts: argument, file and stdin agree; seeds reproduce; stats reported
a=$("$BIN" generate --model "$M" "Hello world" --max-tokens 12 --temperature 0.9 --top-k 40 --seed 7 2>"$T/stats")
b=$(printf 'Hello world' >"$T/p.txt" && "$BIN" generate --model "$M" --prompt-file "$T/p.txt" --max-tokens 12 \
    --temperature 0.9 --top-k 40 --seed 7 2>/dev/null)
c=$(printf 'Hello world' | "$BIN" generate --model "$M" --max-tokens 12 --temperature 0.9 --top-k 40 --seed 7 2>/dev/null)
check "prompt from argument / file / stdin give the same sampled text" '[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ]'
d=$("$BIN" generate --model "$M" "Hello world" --max-tokens 12 --temperature 0.9 --top-k 40 --seed 8 2>/dev/null)
check "another seed gives another sample" '[ "$a" != "$d" ]'
check "stats line has prompt and generation tokens/s" "grep -Eq 'prompt: [0-9]+ tokens, [0-9.]+ tokens/s \\| generated: 12 tokens, [0-9.]+ tokens/s' '$T/stats'"
# --- --print-ids and text agree; stop strings cut the output
ids=$("$BIN" generate --model "$M" "Hello world" --max-tokens 12 --greedy --print-ids --no-stats)
txt=$("$BIN" generate --model "$M" "Hello world" --max-tokens 12 --greedy --no-stats)
dec=$(echo "$ids" | "$BIN" detokenize --tokenizer "$M/tokenizer.model" 2>/dev/null)
check "printed text = detokenized printed ids" '[ -n "$txt" ] && [ "$txt" = "$dec" ]'
stop=$(printf '%s' "$txt" | cut -c 5-8)
cut=$("$BIN" generate --model "$M" "Hello world" --max-tokens 12 --greedy --stop "$stop" 2>"$T/stats")
check "--stop cuts before the stop string" '[ "$cut" = "${txt%%"$stop"*}" ] && grep -q "stopped: stop string" "$T/stats"'
# --- sampling options are validated
expect_fail "bad top-p" "top-p must be in" "$BIN" generate --model "$M" --ids 1 --top-p 0
expect_fail "bad id" "outside the vocabulary" "$BIN" generate --model "$M" --ids "1 5000"
expect_fail "missing model" "config.json" "$BIN" generate --model "$T/nope" --ids 1
expect_fail "context overflow" "context full" "$BIN" generate --model "$M" --ctx 4 --ids "1 2 3 4 5"

# --- perplexity (the numbers themselves are checked against transformers in tests/test_infer.c)
out=$("$BIN" perplexity --model "$M" --text "$FIX/tokenizer/small_bpe.txt" --max-tokens 300 --window 32 --stride 16 2>/dev/null)
check "perplexity on text reports window/stride and a finite value" \
    "echo '$out' | grep -q 'window: 32, stride: 16' && echo '$out' | grep -Eq 'perplexity: [0-9]+\.[0-9]+'"

# --- chat: scripted through stdin, two turns, two reply lines
printf 'Hello!\n\nWhat is your name?\n' | "$BIN" chat --model "$M" --max-tokens 8 --seed 1 --system "Be brief." \
    >"$T/chat" 2>"$T/chat.err"
check "chat answers each stdin line" '[ "$(wc -l <"$T/chat")" -eq 2 ]'
# a tiny context forces dropping old turns instead of failing
printf 'one two three\nfour five six\nseven eight nine\n' | "$BIN" chat --model "$M" --ctx 48 --max-tokens 10 \
    --seed 1 >"$T/chat2" 2>"$T/chat2.err"
check "chat survives a conversation longer than the context" '[ $? -eq 0 ] && [ "$(wc -l <"$T/chat2")" -eq 3 ]'

# --- a checkpoint written by our own training run: generate, chat, perplexity on shards
for i in 1 2 3 4; do sed -n "$((i * 30)),$((i * 30 + 200))p" "$HERE/../src/infer/infer.c"; done >"$T/corpus.txt"
if "$BIN" prepare --byte-level --seq-len 32 --out "$T/data" "$T/corpus.txt" >/dev/null 2>&1 &&
    "$BIN" train --preset test --data "$T/data/train-00000.bin" --batch 2 --seq-len 32 --steps 4 --warmup 1 \
        --out "$T/run" --quiet --threads 2 >/dev/null 2>&1; then
    CK="$T/run/$(cat "$T/run/latest" 2>/dev/null)"
    [ -d "$CK" ] || CK=$(ls -d "$T"/run/step-* | tail -1)
    g=$("$BIN" generate --model "$CK" --ids "1 72 101" --max-tokens 5 --print-ids --ignore-eos --no-stats 2>"$T/err")
    check "generate on our own checkpoint" '[ "$(echo $g | wc -w)" -eq 5 ]'
    p=$("$BIN" perplexity --model "$CK" --shards "$T/data/train-00000.bin" --max-samples 3 2>"$T/err")
    check "perplexity on token shards of our checkpoint" "echo '$p' | grep -Eq 'perplexity: [0-9]+'"
    # our byte-level checkpoint has no tokenizer: chat must say so
    expect_fail "chat needs a tokenizer" "no tokenizer" "$BIN" chat --model "$CK"
else
    fail "train a checkpoint for the checks above"
fi

# --- eval: both scoring backends give lm-evaluation-harness's scores on the fixtures
EV="$FIX/eval"
ETOK="$HERE/../../shared/tokenizers/llama2/tokenizer.model"
for task in hellaswag boolq winogrande; do
    want=$(python3 -c "import json;t=json.load(open('$EV/expected.json'))['tasks']['$task'];print('%.6f %s'%(t['acc'],'%.6f'%t['acc_norm'] if 'acc_norm' in t else '-'))")
    for be in kv fp32; do
        if "$BIN" eval --model "$EV/model" --tokenizer "$ETOK" --task $task --data "$EV/$task.jsonl" --backend $be \
            --quiet --json "$T/ev.json" >/dev/null 2>"$T/err"; then
            got=$(python3 -c "import json;t=json.load(open('$T/ev.json'));print('%.6f %s'%(t['acc'],'%.6f'%t['acc_norm'] if 'acc_norm' in t else '-'))")
        else
            got="failed: $(head -c 200 "$T/err")"
        fi
        if [ "$want" = "$got" ]; then ok "eval $task --backend $be = lm-eval ($got)"; else fail "eval $task --backend $be: got '$got', lm-eval '$want'"; fi
    done
done
expect_fail "eval --backend bad" "must be kv or fp32" "$BIN" eval --model "$EV/model" --task boolq --data "$EV/boolq.jsonl" --backend gpu

finish

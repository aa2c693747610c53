#!/usr/bin/env bash
# CLI tests of `tinyllama eval` on the few-shot multiple-choice benchmarks (MMLU,
# CMMLU, C-Eval release directories in tests/fixtures/eval_mc, lm-eval's numbers
# from scripts/gen_eval_mc_fixtures.py).  Usage: tests/cli_eval.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
T=$(mktemp -d /tmp/tl_cli_eval.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"

MC="$FIX/eval_mc"
TOK="$HERE/../../shared/tokenizers/llama2/tokenizer.model"
# acc, acc_norm (or -) and the number of subjects, from a JSON result
summary='import json,sys;t=json.load(open(sys.argv[1]));t=t.get("tasks",{}).get(sys.argv[2],t);print("%.6f %s %d"%(t["acc"],"%.6f"%t["acc_norm"] if "acc_norm" in t else "-",len(t["subjects"])))'
for task in mmlu cmmlu ceval; do
    want=$(python3 -c "$summary" "$MC/expected.json" $task)
    for be in kv fp32; do
        if "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task $task --data "$MC/$task" --backend $be \
            --quiet --json "$T/ev.json" >"$T/out" 2>"$T/err"; then
            got=$(python3 -c "$summary" "$T/ev.json" $task)
        else
            got="failed: $(head -c 200 "$T/err")"
        fi
        if [ "$want" = "$got" ]; then ok "eval $task --backend $be = lm-eval ($got)"; else fail "eval $task --backend $be: got '$got', lm-eval '$want'"; fi
    done
done
"$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task mmlu --data "$MC/mmlu" --quiet >"$T/out" 2>&1
if grep -q "^| philosophy  *|     3 |" "$T/out" && grep -q "^| humanities  *|     3 |" "$T/out"; then
    ok "eval mmlu prints per-subject and per-category rows"
else fail "eval mmlu table: $(head -c 400 "$T/out")"; fi

# --limit is per subject; --samples names each question's subject; --fewshot 0
if "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task mmlu --data "$MC/mmlu" --limit 2 --fewshot 0 \
    --quiet --json "$T/l.json" --samples >/dev/null 2>"$T/err" &&
    python3 -c "import json;t=json.load(open('$T/l.json'));assert t['n']==8 and t['num_fewshot']==0 and len(t['samples'])==8 and t['samples'][2]['subject']=='college_medicine',t"; then
    ok "eval mmlu --limit 2 --fewshot 0 --samples"
else fail "eval mmlu --limit/--fewshot/--samples ($(head -c 300 "$T/err"))"; fi

# bad input: the file and line, exit 1; bad options: exit 2
mkdir -p "$T/bad/dev" "$T/bad/test"
cp "$MC/mmlu/dev/philosophy_dev.csv" "$T/bad/dev/"
printf 'q,a,b,c,d,A\nq,a,b,c,d,Z\n' >"$T/bad/test/philosophy_test.csv"
expect_fail "eval mmlu: an answer outside A-D names file and line" "philosophy_test.csv:2: answer \"Z\"" \
    "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task mmlu --data "$T/bad"
expect_fail "eval mmlu: a missing directory" "cannot open the test split" \
    "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task mmlu --data "$T/none"
expect_fail "eval --fewshot on a zero-shot task" "only for mmlu" \
    "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task boolq --data "$FIX/eval/boolq.jsonl" --fewshot 3
expect_fail "eval ceval --fewshot 9 (the dev split has 5)" "fewer than the 9 few-shot" \
    "$BIN" eval --model "$MC/model" --tokenizer "$TOK" --task ceval --data "$MC/ceval" --fewshot 9

# --- generation: BBH 3-shot exact match as lm-eval (tests/fixtures/eval_gen)
GEN="$FIX/eval_gen"
want=$(python3 -c 'import json,sys;t=json.load(open(sys.argv[1]))["tasks"]["bbh"];print("%.6f %d"%(t["exact_match"],len(t["subjects"])))' "$GEN/expected.json")
if "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task bbh --data "$GEN/bbh" --quiet --json "$T/b.json" --samples \
    >"$T/out" 2>"$T/err"; then
    got=$(python3 -c 'import json,sys;t=json.load(open(sys.argv[1]));print("%.6f %d"%(t["exact_match"],len(t["subjects"])))' "$T/b.json")
else got="failed: $(head -c 200 "$T/err")"; fi
if [ "$want" = "$got" ]; then ok "eval bbh = lm-eval ($got)"; else fail "eval bbh: got '$got', lm-eval '$want'"; fi
if "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task bbh --data "$GEN/bbh" --limit 1 --quiet --json "$T/b1.json" \
    >/dev/null 2>&1 && python3 -c 'import json,sys;t=json.load(open(sys.argv[1]));assert t["n"]==3,t' "$T/b1.json"; then
    ok "eval bbh --limit 1 (per task)"
else fail "eval bbh --limit 1"; fi
expect_fail "eval bbh --backend fp32 refused" "only --backend kv" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task bbh --data "$GEN/bbh" --backend fp32
expect_fail "eval humaneval --python relative refused" "absolute path" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task humaneval --data "$GEN/humaneval/HumanEval.jsonl.gz" --python python3
printf '{"task_id": "x", "prompt": "def f():\\n"' >"$T/he.jsonl"
expect_fail "eval humaneval: a truncated line names file and line" "he.jsonl:1: not a JSON object" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task humaneval --data "$T/he.jsonl"

finish

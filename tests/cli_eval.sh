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

# DROP (tests/fixtures/eval_drop, lm-eval's numbers from scripts/gen_drop_fixtures.py)
DROP="$FIX/eval_drop"
want=$(python3 -c 'import json,sys;t=json.load(open(sys.argv[1]));print("%.6f %.6f %d"%(t["f1"],t["em"],len(t["docs"])))' "$DROP/expected.json")
if "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task drop --data "$DROP/drop_dataset_dev.json" --quiet \
    --json "$T/d.json" --samples >"$T/out" 2>"$T/err"; then
    got=$(python3 -c 'import json,sys;t=json.load(open(sys.argv[1]));print("%.6f %.6f %d"%(t["f1"],t["em"],len(t["samples"])))' "$T/d.json")
    if [ "$want" = "$got" ]; then ok "eval drop = lm-eval (f1 em n: $got)"; else fail "eval drop: got '$got', lm-eval '$want'"; fi
else fail "eval drop ($(head -c 300 "$T/err"))"; fi
if "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task drop --data "$DROP" --limit 2 --quiet --json "$T/d2.json" \
    >/dev/null 2>&1 && [ "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["n"])' "$T/d2.json")" = 2 ]; then
    ok "eval drop --limit 2 (the release folder as --data)"
else fail "eval drop --limit 2"; fi
# bad input: FILE: the problem, exit 1
drop_bad() { # name pattern dev-file-content
    mkdir -p "$T/db"
    cp "$DROP/drop_dataset_train.json" "$T/db/"
    printf '%s' "$3" >"$T/db/drop_dataset_dev.json"
    expect_fail "eval drop: $1" "$2" "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task drop \
        --data "$T/db/drop_dataset_dev.json"
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task drop --data "$T/db/drop_dataset_dev.json" >/dev/null 2>&1
    [ $? -eq 1 ] && ok "eval drop: $1: exit 1" || fail "eval drop: $1: exit status not 1"
}
drop_bad "truncated JSON" "drop_dataset_dev.json: not JSON \(truncated\?\)" '{"p1": {"passage": "x", "qa_pairs": ['
drop_bad "non-UTF-8" "drop_dataset_dev.json: not valid UTF-8" "$(printf '{"p1": {"passage": "\xff", "qa_pairs": []}}')"
drop_bad "missing query_id" "drop_dataset_dev.json: passage \"p1\", qa_pairs\[0\]: \"query_id\" missing" \
    '{"p1": {"passage": "x", "qa_pairs": [{"question": "q", "answer": {}}]}}'
drop_bad "answer without spans" "qa_pairs\[0\]: answer \"spans\" missing" \
    '{"p1": {"passage": "x", "qa_pairs": [{"question": "q", "query_id": "a", "answer": {"number": "", "date": {"day": "", "month": "", "year": ""}}}]}}'
drop_bad "no qa_pairs" "passage \"p1\": \"qa_pairs\" missing" '{"p1": {"passage": "x"}}'
mkdir -p "$T/dn" && cp "$DROP/drop_dataset_dev.json" "$T/dn/"
expect_fail "eval drop: no training file beside the dev file" "dn/drop_dataset_train.json" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task drop --data "$T/dn/drop_dataset_dev.json"

finish

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
# requests decoded together give the completions of one request at a time
comps='import json,sys;print(json.dumps([s["completion"] for s in json.load(open(sys.argv[1]))["samples"]]))'
if "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task bbh --data "$GEN/bbh" --batch 1 --quiet --json "$T/b1s.json" \
    --samples >/dev/null 2>&1 && [ "$(python3 -c "$comps" "$T/b1s.json")" = "$(python3 -c "$comps" "$T/b.json")" ]; then
    ok "eval bbh --batch 1 = the default batch of 8, completion for completion"
else fail "eval bbh: --batch 1 and --batch 8 differ"; fi
# HumanEval sampling: a seed reproduces the completions whatever --batch; pass@k from
# the sandbox's outcomes (an interpreter that always fails, one that always passes)
he() { "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task humaneval --data "$GEN/humaneval/HumanEval.jsonl.gz" \
    --limit 1 --samples-per-task 3 --temperature 0.9 --quiet --samples "$@"; }
he_sum='import json,sys;t=json.load(open(sys.argv[1]));s=t["samples"][0]
print(t["samples_per_task"], [t.get("pass@%d"%k) for k in (1,2,3)], s["n_correct"], sorted(set(s["outcomes"])), len(set(s["completions"])) > 1)'
if he --seed 4 --batch 3 --python /bin/false --json "$T/h1.json" >/dev/null 2>"$T/err" &&
    he --seed 4 --batch 1 --python /bin/true --pass-at 1,2,3 --json "$T/h2.json" >"$T/out" 2>>"$T/err" &&
    he --seed 5 --batch 2 --python /bin/false --json "$T/h3.json" >/dev/null 2>>"$T/err"; then
    c1=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["samples"][0]["completions"])' "$T/h1.json")
    c2=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["samples"][0]["completions"])' "$T/h2.json")
    c3=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["samples"][0]["completions"])' "$T/h3.json")
    [ "$c1" = "$c2" ] && ok "eval humaneval sampling: --seed 4 gives the same completions with --batch 3 and 1" ||
        fail "eval humaneval sampling: --seed 4 not reproducible across --batch"
    [ "$c1" != "$c3" ] && ok "eval humaneval sampling: --seed 5 draws other completions" ||
        fail "eval humaneval sampling: --seed 4 and 5 drew the same"
    s1=$(python3 -c "$he_sum" "$T/h1.json") s2=$(python3 -c "$he_sum" "$T/h2.json")
    [ "$s1" = "3 [0, None, None] 0 ['failed'] True" ] && ok "eval humaneval: 3 samples all failing: pass@1 0 ($s1)" ||
        fail "eval humaneval failing samples: $s1"
    [ "$s2" = "3 [1, 1, 1] 3 ['passed'] True" ] && ok "eval humaneval: 3 samples all passing: pass@1..3 1 ($s2)" ||
        fail "eval humaneval passing samples: $s2"
    grep -q "^| humaneval  *|     1 | pass@3  *| *1.0000 |" "$T/out" && ok "eval humaneval prints pass@k rows" ||
        fail "eval humaneval pass@k rows: $(head -c 400 "$T/out")"
else fail "eval humaneval sampling ($(head -c 300 "$T/err"))"; fi
expect_fail "eval --samples-per-task on bbh refused" "are for humaneval" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task bbh --data "$GEN/bbh" --samples-per-task 2
expect_fail "eval humaneval: several greedy samples refused" "would repeat one greedy completion" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task humaneval --data "$GEN/humaneval/HumanEval.jsonl.gz" \
    --samples-per-task 2 --temperature 0
expect_fail "eval humaneval: pass@k with k above the samples refused" "--pass-at takes" \
    "$BIN" eval --model "$GEN/model" --tokenizer "$TOK" --task humaneval --data "$GEN/humaneval/HumanEval.jsonl.gz" \
    --samples-per-task 3 --pass-at 1,5
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

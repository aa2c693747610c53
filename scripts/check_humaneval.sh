#!/usr/bin/env bash
# Runs `tinyllama eval --task humaneval` on tests/fixtures/eval_gen (programs executed
# in the sandbox by the system's python3) and compares each problem's pass/fail and
# pass@1 with the oracle's (scripts/gen_eval_gen_fixtures.py ran the same programs as
# lm-eval's code_eval does).  Not part of the tests, which run no Python.
# Usage: scripts/check_humaneval.sh [path/to/tinyllama] [python]
set -u
BIN=${1:-./build/tinyllama}
PY=${2:-/usr/bin/python3}
FIX=tests/fixtures/eval_gen
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$BIN" eval --model $FIX/model --tokenizer ../shared/tokenizers/llama2/tokenizer.model --task humaneval \
    --data $FIX/humaneval/HumanEval.jsonl.gz --python "$PY" --json "$T/he.json" --samples --quiet || exit 1
python3 - "$T/he.json" $FIX/expected.json <<'PYEOF'
import json, sys
ours = json.load(open(sys.argv[1]))
exp = json.load(open(sys.argv[2]))["tasks"]["humaneval"]
bad = 0
for s, e in zip(ours["samples"], exp["docs"]):
    same = (s["pass@1"] == 1.0) == e["passed"] and s["completion"] == e["completion"]
    bad += not same
    print("%-4s %s: ours %s (%s), oracle %s" % ("ok" if same else "FAIL", e["task_id"], s["pass@1"], s["outcome"], e["passed"]))
print("pass@1 ours %.4f oracle %.4f; sandbox: %s" % (ours["pass@1"], exp["pass@1"], ours["sandbox"]))
sys.exit(1 if bad or abs(ours["pass@1"] - exp["pass@1"]) > 1e-12 else 0)
PYEOF

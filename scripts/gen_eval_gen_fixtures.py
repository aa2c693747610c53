#!/usr/bin/env python3
"""Writes the generation-task fixtures (BIG-Bench Hard 3-shot, HumanEval) that
tests/test_eval_gen.c checks against.

1. Small samples in the original release layouts (docs/eval.md):
   bbh/bbh/TASK.json ({"examples": [{"input", "target"}]}) and
   bbh/cot-prompts/TASK.txt (the release's chain-of-thought prompt files; the
   text of the three shots is rebuilt from the harness's own cot_fewshot task
   definitions, which were generated from those files, so the answer-only
   3-shot prompts derived from them are exactly the harness's bbh_fewshot ones);
   humaneval/HumanEval.jsonl.gz (task_id, prompt, canonical_solution, test,
   entry_point).
2. A random tiny Llama (vocab 32000, hidden 16, 2 layers, 2048 positions, BF16).
3. The oracle: lm-evaluation-harness (HF backend, batch size 1, greedy) on its own
   bbh_fewshot_* definitions and on the humaneval definition (restated here
   without its code_eval metric, which needs the network to load); the
   generated ids come from transformers' greedy generate on the same contexts.
   For BBH a second run scores targets set to some of the model's own answers,
   so that exact match is also exercised with hits.  HumanEval programs are run
   as code_eval runs them (prompt + completion + "\\n" + test + "\\ncheck(...)",
   a separate python process, 3 s).

Run from the repo root:   python3 scripts/gen_eval_gen_fixtures.py
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval_gen")
SPM = os.path.abspath(os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.model"))
TOK_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "clean_up_tokenization_spaces": False, "legacy": False,
    "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
}
BBH_TASKS = ["boolean_expressions", "date_understanding", "word_sorting"]
BBH_DOCS = {
    "boolean_expressions": [("True and not not ( not False ) is", "True"),
                            ("not True or ( False and True ) is", "False"),
                            ("( True ) and not False or True is", "True")],
    "date_understanding": [("Yesterday was 12/31/1929. What is the date today in MM/DD/YYYY?\nOptions:\n(A) 01/01/1930"
                            "\n(B) 01/08/1930\n(C) 12/31/1929", "(A)"),
                           ("Today is the palindrome day of 2020. What is the date one week from today?\nOptions:\n"
                            "(A) 02/09/2020\n(B) 02/02/2020", "(A)")],
    "word_sorting": [("Sort the following words alphabetically: List: naïve zebra apple", "apple naïve zebra"),
                     ("Sort the following words alphabetically: List: b a", "a b")],
}
HUMANEVAL = [
    {"task_id": "HumanEval/0", "entry_point": "add",
     "prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Return a + b.\n    >>> add(2, 3)\n    5\n    \"\"\"\n",
     "canonical_solution": "    return a + b\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"},
    # whatever the model writes lands inside a raw string the test closes: passes
    {"task_id": "HumanEval/1", "entry_point": "one",
     "prompt": "def one():\n    note = r'''",
     "canonical_solution": "'''\n    return 1\n",
     "test": "'''\n    return 1\n\n\ndef check(candidate):\n    assert candidate() == 1\n"},
    {"task_id": "HumanEval/2", "entry_point": "is_even",
     "prompt": "from typing import List\n\n\ndef is_even(n: int) -> bool:\n    \"\"\" Whether n is even (ünïcode).\n    \"\"\"\n",
     "canonical_solution": "    return n % 2 == 0\n",
     "test": "\n\ndef check(candidate):\n    assert candidate(4)\n    assert not candidate(3)\n"},
]


def write_bbh(base, tasks_dir, targets=None):
    os.makedirs(os.path.join(base, "bbh"), exist_ok=True)
    os.makedirs(os.path.join(base, "cot-prompts"), exist_ok=True)
    for t in BBH_TASKS:
        with open(os.path.join(tasks_dir, "bbh", "cot_fewshot", t + ".yaml"), encoding="utf-8") as f:
            cot = yaml.load(f, Loader=yaml.BaseLoader)
        shots = ["Q: %s\nA: Let's think step by step.\n%s" % (s["input"], s["target"])
                 for s in cot["fewshot_config"]["samples"]]
        assert cot["description"].endswith("\n\n")
        with open(os.path.join(base, "cot-prompts", t + ".txt"), "w", encoding="utf-8") as f:
            f.write("BIG-Bench Hard fixture: canary line as in the release\n-----\n")
            f.write(cot["description"][:-2] + "\n\n" + "\n\n".join(shots))
        docs = [{"input": i, "target": (targets or {}).get((t, k), tg)} for k, (i, tg) in enumerate(BBH_DOCS[t])]
        with open(os.path.join(base, "bbh", t + ".json"), "w", encoding="utf-8") as f:
            json.dump({"canary": "fixture", "examples": docs}, f, ensure_ascii=False, indent=4)


def make_model(out_dir):
    torch.manual_seed(2026)
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if p.ndim == 1 else 0.5 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)


def run_program(program):
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run([sys.executable, "-c", program], cwd=d, timeout=3.0, capture_output=True)
            return r.returncode == 0
        except subprocess.TimeoutExpired:
            return False


def main():
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    if os.path.isdir(FIX):
        shutil.rmtree(FIX)
    os.makedirs(os.path.join(FIX, "humaneval"))
    make_model(os.path.join(FIX, "model"))
    with gzip.open(os.path.join(FIX, "humaneval", "HumanEval.jsonl.gz"), "wt", encoding="utf-8") as f:
        for p in HUMANEVAL:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")

    tmp = tempfile.mkdtemp(prefix="tl_eval_gen_")
    try:
        hf_dir = os.path.join(tmp, "hf_model")
        shutil.copytree(os.path.join(FIX, "model"), hf_dir)
        shutil.copy(SPM, os.path.join(hf_dir, "tokenizer.model"))
        with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
            json.dump(TOK_CONFIG, f)
        lm = HFLM(pretrained=hf_dir, dtype="float32", batch_size=1, device="cpu")

        def run_bbh(data_dir, tdir):
            os.makedirs(tdir, exist_ok=True)
            for t in BBH_TASKS:
                data = os.path.join(tmp, "bbh_%s.jsonl" % t)
                with open(os.path.join(data_dir, "bbh", t + ".json"), encoding="utf-8") as f:
                    ex = json.load(f)["examples"]
                with open(data, "w", encoding="utf-8") as f:
                    for d in ex:
                        f.write(json.dumps(d, ensure_ascii=False) + "\n")
                with open(os.path.join(tdir, "local_bbh_%s.yaml" % t), "w") as f:
                    f.write("include: %s\n" % os.path.join(base, "bbh", "fewshot", t + ".yaml"))
                    f.write("task: local_bbh_%s\ntag: []\ndataset_path: json\ndataset_name: null\n" % t)
                    f.write("dataset_kwargs:\n  data_files:\n    test: %s\n" % data)
            with open(os.path.join(tdir, "local_bbh.yaml"), "w") as f:
                f.write("group: local_bbh\ntask:\n")
                for t in BBH_TASKS:
                    f.write("  - local_bbh_%s\n" % t)
                f.write("aggregate_metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
                        "    weight_by_size: true\n")
            tm = TaskManager(include_path=tdir)
            return lm_eval.simple_evaluate(model=lm, tasks=["local_bbh"], log_samples=True, task_manager=tm)

        bbh_dir = os.path.join(FIX, "bbh")
        write_bbh(bbh_dir, base)
        res = run_bbh(bbh_dir, os.path.join(tmp, "t1"))
        # targets of the first doc of each task := the model's own answer (a hit)
        targets = {}
        for t in BBH_TASKS:
            s = sorted(res["samples"]["local_bbh_" + t], key=lambda x: x["doc_id"])[0]
            if s["filtered_resps"][0]:
                targets[(t, 0)] = s["filtered_resps"][0]
        write_bbh(bbh_dir, base, targets)
        res = run_bbh(bbh_dir, os.path.join(tmp, "t2"))

        def gen_ids(ctx, max_gen):
            enc = lm.tokenizer(ctx, return_tensors="pt")["input_ids"]
            enc = enc[:, -(lm.max_length - max_gen):]
            out = lm.model.generate(input_ids=enc, max_length=enc.shape[1] + max_gen, do_sample=False,
                                    pad_token_id=lm.tokenizer.pad_token_id, use_cache=True)
            return enc[0].tolist(), out[0, enc.shape[1]:].tolist()

        expected = {"lm_eval_version": lm_eval.__version__, "max_length": lm.max_length, "tasks": {}}
        g = res["results"]["local_bbh"]
        entry = {"exact_match": g["exact_match,none"], "exact_match_stderr": g["exact_match_stderr,none"],
                 "subjects": {}}
        hits = 0
        for t in BBH_TASKS:
            r = res["results"]["local_bbh_" + t]
            docs = []
            for s in sorted(res["samples"]["local_bbh_" + t], key=lambda x: x["doc_id"]):
                ctx, kw = s["arguments"][0][0], s["arguments"][0][1]
                ctx_ids, ids = gen_ids(ctx, 256)
                docs.append({"context": ctx, "context_ids": ctx_ids, "gen_ids": ids, "until": kw["until"],
                             "response": s["resps"][0][0], "filtered": s["filtered_resps"][0],
                             "target": s["target"], "exact_match": s["exact_match"]})
                hits += s["exact_match"]
            entry["subjects"][t] = {"n": len(docs), "exact_match": r["exact_match,none"],
                                    "exact_match_stderr": r["exact_match_stderr,none"], "docs": docs}
        expected["tasks"]["bbh"] = entry
        print("bbh exact_match=%.4f (%d hits)" % (entry["exact_match"], hits))

        # humaneval: the harness's definition without the code_eval metric
        tdir = os.path.join(tmp, "t3")
        os.makedirs(tdir)
        with open(os.path.join(base, "humaneval", "humaneval.yaml")) as f:
            he = yaml.load(f, Loader=yaml.BaseLoader)
        data = os.path.join(tmp, "humaneval.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            for p in HUMANEVAL:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        until = he["generation_kwargs"]["until"]
        max_gen = int(he["generation_kwargs"]["max_gen_toks"])
        with open(os.path.join(tdir, "local_humaneval.yaml"), "w") as f:
            yaml.safe_dump({"task": "local_humaneval", "dataset_path": "json",
                            "dataset_kwargs": {"data_files": {"test": data}}, "test_split": "test",
                            "output_type": "generate_until", "doc_to_text": he["doc_to_text"],
                            "doc_to_target": he["doc_to_target"],
                            "generation_kwargs": {"until": until, "max_gen_toks": max_gen, "do_sample": False},
                            "repeats": 1, "num_fewshot": 0, "metric_list": [{"metric": "bypass"}]}, f)
        tm = TaskManager(include_path=tdir)
        res = lm_eval.simple_evaluate(model=lm, tasks=["local_humaneval"], log_samples=True, task_manager=tm)
        docs = []
        for s in sorted(res["samples"]["local_humaneval"], key=lambda x: x["doc_id"]):
            p = HUMANEVAL[s["doc_id"]]
            ctx, kw = s["arguments"][0][0], s["arguments"][0][1]
            ctx_ids, ids = gen_ids(ctx, max_gen)
            completion = s["resps"][0][0]
            program = p["prompt"] + completion + "\n" + s["target"]  # code_eval: candidate + "\n" + test case
            docs.append({"task_id": p["task_id"], "context": ctx, "context_ids": ctx_ids, "gen_ids": ids,
                         "until": kw["until"], "completion": completion, "program": program,
                         "passed": run_program(program)})
        expected["tasks"]["humaneval"] = {"docs": docs, "pass@1": sum(d["passed"] for d in docs) / len(docs)}
        print("humaneval pass@1=%.4f" % expected["tasks"]["humaneval"]["pass@1"],
              [d["passed"] for d in docs], [len(d["gen_ids"]) for d in docs])
        with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())

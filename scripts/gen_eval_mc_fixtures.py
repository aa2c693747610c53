#!/usr/bin/env python3
"""Writes the few-shot multiple-choice fixtures (MMLU, CMMLU, C-Eval) that
tests/test_eval_mc.c checks against.

1. Small samples in each benchmark's original release layout (CSV files per
   subject, see docs/eval.md), written here so that they exercise the CSV
   corner cases the releases contain: quoted fields with commas, quotes and
   newlines, questions with surrounding whitespace, non-ASCII text, numeric
   choices, and (MMLU's college_medicine) prompts longer than the model's context.
2. A random tiny Llama (vocab 32000, hidden 16, 2 layers, 256 positions, BF16).
3. The oracle: EleutherAI lm-evaluation-harness (PyPI `lm-eval`, HF backend)
   running its own task definitions (mmlu_*, cmmlu_*, ceval-valid_* and their
   groups) on those samples, converted to the HF hub datasets' field layout and
   given to the harness with `dataset_path: json`.  Prompts, few-shot
   selection, tokenization, scoring and group aggregation are the harness's.

Run from the repo root (needs torch, transformers, lm-eval 0.4.x, sentencepiece,
protobuf):   python3 scripts/gen_eval_mc_fixtures.py
"""
import csv
import json
import os
import shutil
import sys
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval_mc")
SPM = os.path.abspath(os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.model"))
TOK_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "clean_up_tokenization_spaces": False, "legacy": False,
    "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
}
L = "ABCD"


def q(i, subj, extra=""):
    return "Question %d about %s%s?" % (i, subj.replace("_", " "), extra)


# ---------------------------------------------------------------- sample data
def mmlu_rows(subj, n, split, long=False):
    rows = []
    for i in range(n):
        text = q(i, subj)
        if i == 0:
            text = "  " + text + "\n"  # doc_to_text strips the question
        if i == 1:
            text = 'Which is "right", a, b or c?\nThink.'  # quotes, commas, a newline
        if long:
            text = text + " " + " ".join("word%d" % k for k in range(60))
        choices = ["%d" % (i + 1), "choice, with comma", "naïve café", "x%d" % i]
        if i == 2:
            choices[3] = " padded "
        rows.append([text] + choices + [L[(i * 7 + len(subj) + (split == "test")) % 4]])
    return rows


def write_mmlu(base):
    subjects = ["abstract_algebra", "college_medicine", "philosophy", "us_foreign_policy"]
    for split, n in (("dev", 5), ("val", 2), ("test", 4)):
        os.makedirs(os.path.join(base, split), exist_ok=True)
        for s in subjects:
            rows = mmlu_rows(s, n, split, long=s == "college_medicine")
            if s == "philosophy" and split == "test":
                rows = rows[:3]  # unequal subject sizes: macro and micro averages differ
            with open(os.path.join(base, split, "%s_%s.csv" % (s, split)), "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)  # no header, as the release


def zh_rows(subj, n, split):
    rows = []
    for i in range(n):
        text = "关于%s的第%d个问题是什么？" % (subj, i)
        if i == 1:
            text = " 下列说法，哪个\"正确\"？\n（单选）"
        rows.append([text, "选项甲%d" % i, "乙, 丙", "123", "丁"])
        rows[-1].append(L[(i * 3 + len(subj) + len(split)) % 4])
    return rows


def write_cmmlu(base):
    for split, n in (("dev", 5), ("test", 3)):
        os.makedirs(os.path.join(base, split), exist_ok=True)
        for s in ["agronomy", "chinese_history"]:
            with open(os.path.join(base, split, s + ".csv"), "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
                for i, r in enumerate(zh_rows(s, n, split)):
                    w.writerow([i] + r)


def write_ceval(base):
    for split, n in (("dev", 5), ("val", 3), ("test", 2)):
        os.makedirs(os.path.join(base, split), exist_ok=True)
        for s in ["accountant", "high_school_physics"]:
            with open(os.path.join(base, split, "%s_%s.csv" % (s, split)), "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                head = ["id", "question", "A", "B", "C", "D"]
                if split != "test":
                    head.append("answer")
                if split == "dev":
                    head.append("explanation")
                w.writerow(head)
                for i, r in enumerate(zh_rows(s, n, split)):
                    row = [i] + r[:5]
                    if split != "test":
                        row.append(r[5])
                    if split == "dev":
                        row.append("1. 解析%d" % i)
                    w.writerow(row)


# ---------------------------------------------------------------- hub layout
def read_csv(path, header):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not header:
        return rows
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def hub_docs(task, base, split, subj):
    if task == "mmlu":
        rows = read_csv(os.path.join(base, split, "%s_%s.csv" % (subj, split)), False)
        return [{"question": r[0], "subject": subj, "choices": r[1:5], "answer": L.index(r[5])} for r in rows]
    if task == "cmmlu":
        rows = read_csv(os.path.join(base, split, subj + ".csv"), True)
        return [{k: r[k] for k in ("Question", "A", "B", "C", "D", "Answer")} for r in rows]
    rows = read_csv(os.path.join(base, split, "%s_%s.csv" % (subj, split)), True)
    # the hub's splits share one schema: the val split has an empty explanation
    return [dict({"explanation": ""}, **dict(r, id=int(r["id"]))) for r in rows]


def make_model(out_dir):
    torch.manual_seed(2025)
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
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


SUBJECTS = {"mmlu": ["abstract_algebra", "college_medicine", "philosophy", "us_foreign_policy"],
            "cmmlu": ["agronomy", "chinese_history"], "ceval": ["accountant", "high_school_physics"]}
EVAL_SPLIT = {"mmlu": "test", "cmmlu": "test", "ceval": "val"}
PREFIX = {"mmlu": "mmlu_", "cmmlu": "cmmlu_", "ceval": "ceval-valid_"}
YAML_DIR = {"mmlu": "mmlu/default", "cmmlu": "cmmlu", "ceval": "ceval"}


def main():
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if os.path.isdir(FIX):
        shutil.rmtree(FIX)
    write_mmlu(os.path.join(FIX, "mmlu"))
    write_cmmlu(os.path.join(FIX, "cmmlu"))
    write_ceval(os.path.join(FIX, "ceval"))
    make_model(os.path.join(FIX, "model"))

    tmp = tempfile.mkdtemp(prefix="tl_eval_mc_")
    try:
        hf_dir = os.path.join(tmp, "hf_model")
        shutil.copytree(os.path.join(FIX, "model"), hf_dir)
        shutil.copy(SPM, os.path.join(hf_dir, "tokenizer.model"))
        with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
            json.dump(TOK_CONFIG, f)
        base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
        tdir = os.path.join(tmp, "tasks")
        os.makedirs(tdir)
        names = {}
        for task, subjects in SUBJECTS.items():
            for s in subjects:
                files = {}
                for split in (EVAL_SPLIT[task], "dev"):
                    path = os.path.join(tmp, "%s_%s_%s.jsonl" % (task, s, split))
                    with open(path, "w", encoding="utf-8") as f:
                        for d in hub_docs(task, os.path.join(FIX, task), split, s):
                            f.write(json.dumps(d, ensure_ascii=False) + "\n")
                    files[split] = path
                name = "local_%s_%s" % (task, s)
                names[(task, s)] = name
                with open(os.path.join(tdir, name + ".yaml"), "w") as f:
                    f.write("include: %s\n" % os.path.join(base, YAML_DIR[task], PREFIX[task] + s + ".yaml"))
                    f.write("task: %s\ntag: []\ndataset_path: json\ndataset_name: null\n" % name)
                    f.write("dataset_kwargs:\n  data_files:\n    %s: %s\n    dev: %s\n"
                            % (EVAL_SPLIT[task], files[EVAL_SPLIT[task]], files["dev"]))
        # the groups, as the harness defines them, over the local subject tasks
        cats = {}
        for s in SUBJECTS["mmlu"]:
            import yaml
            with open(os.path.join(base, "mmlu/default/mmlu_%s.yaml" % s)) as f:
                cats.setdefault(yaml.safe_load(f)["tag"].replace("_tasks", ""), []).append(names[("mmlu", s)])
        groups = {}
        for cat, tasks in cats.items():
            groups["local_" + cat] = tasks
        groups["local_mmlu"] = sorted(groups)
        groups["local_cmmlu"] = [names[("cmmlu", s)] for s in SUBJECTS["cmmlu"]]
        groups["local_ceval"] = [names[("ceval", s)] for s in SUBJECTS["ceval"]]
        for g, tasks in groups.items():
            with open(os.path.join(tdir, g + ".yaml"), "w") as f:
                f.write("group: %s\ntask:\n" % g)
                for t in tasks:
                    f.write("  - %s\n" % t)
                f.write("aggregate_metric_list:\n")
                for m in (("acc",) if g != "local_cmmlu" and g != "local_ceval" else ("acc", "acc_norm")):
                    f.write("  - metric: %s\n    aggregation: mean\n    weight_by_size: true\n" % m)

        lm = HFLM(pretrained=hf_dir, dtype="float32", batch_size=4, device="cpu")
        tm = TaskManager(include_path=tdir)
        res = lm_eval.simple_evaluate(model=lm, tasks=["local_mmlu", "local_cmmlu", "local_ceval"],
                                      num_fewshot=5, log_samples=True, task_manager=tm)
        expected = {"lm_eval_version": lm_eval.__version__, "max_length": lm.max_length, "tasks": {}}
        for task, subjects in SUBJECTS.items():
            g = res["results"]["local_" + task]
            entry = {"acc": g["acc,none"], "acc_stderr": g["acc_stderr,none"], "subjects": {}}
            if "acc_norm,none" in g:
                entry["acc_norm"] = g["acc_norm,none"]
                entry["acc_norm_stderr"] = g["acc_norm_stderr,none"]
            if task == "mmlu":
                entry["categories"] = {c: {"acc": res["results"]["local_" + c]["acc,none"],
                                           "acc_stderr": res["results"]["local_" + c]["acc_stderr,none"]}
                                       for c in cats}
            for s in subjects:
                name = names[(task, s)]
                r = res["results"][name]
                docs = []
                for smp in sorted(res["samples"][name], key=lambda x: x["doc_id"]):
                    # the choices share one context: its ids are stored once per doc
                    ctx = smp["arguments"][0][0]
                    assert all(a[0] == ctx for a in smp["arguments"])
                    reqs = []
                    for (_, cont), resp in zip(smp["arguments"], smp["resps"]):
                        ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
                        ll, greedy = resp[0]
                        reqs.append({"continuation": cont, "continuation_ids": cont_ids,
                                     "ll": float(ll), "greedy": bool(greedy)})
                    docs.append({"doc_id": smp["doc_id"], "target": smp["target"], "acc": smp["acc"],
                                 "context": ctx, "context_ids": ctx_ids, "requests": reqs})
                entry["subjects"][s] = {"n": len(docs), "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                                        "docs": docs}
            expected["tasks"][task] = entry
            print("%-6s acc=%.4f stderr=%.4f" % (task, entry["acc"], entry["acc_stderr"]))
        with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the zero-shot evaluation fixtures that tests/test_eval.c checks against.

The oracle is EleutherAI lm-evaluation-harness (PyPI `lm-eval`, HF backend `HFLM`)
running its own task definitions (hellaswag, piqa, arc_easy, arc_challenge,
openbookqa, winogrande, boolq) on the small samples in tests/fixtures/eval/*.jsonl,
which are written in each dataset's original public release format.  Those
files are converted here to the field layout of the HF hub datasets the
harness's task YAMLs expect (as the hub's loaders do), and the harness is
pointed at them with `dataset_path: json`; prompts, preprocessing, request
construction, tokenization and scoring are all the harness's own.

Run from the repo root (needs torch, transformers, lm-eval, sentencepiece, protobuf):

    python3 scripts/gen_eval_fixtures.py

Outputs (checked in):
  tests/fixtures/eval/model/{config.json,model.safetensors}  - random tiny Llama, BF16,
      tied embeddings, vocab 32000 so the Llama 2 tokenizer
      (../shared/tokenizers/llama2/tokenizer.model, not copied) applies
  tests/fixtures/eval/expected.json  - per task: every request's context,
      continuation, token ids, log-likelihood and is_greedy; per-doc acc/acc_norm;
      the aggregate metrics and standard errors the harness reports.
"""
import json
import os
import shutil
import sys
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval")
SPM = os.path.abspath(os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.model"))
TASKS = ["hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq"]

# A Llama 2 style tokenizer directory, as model repos ship it (tokenizer_config.json
# selects LlamaTokenizer with add_bos_token); kept in a temp dir, never checked in.
TOK_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "clean_up_tokenization_spaces": False, "legacy": False,
    "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def to_hub_format(task, src_dir):
    """Original release records -> the HF hub dataset fields the task YAMLs read."""
    if task == "hellaswag":
        return [dict(d, label=str(d["label"])) for d in read_jsonl(os.path.join(src_dir, "hellaswag.jsonl"))]
    if task == "piqa":
        docs = read_jsonl(os.path.join(src_dir, "piqa.jsonl"))
        with open(os.path.join(src_dir, "piqa-labels.lst")) as f:
            labels = [int(x) for x in f.read().split()]
        return [dict(goal=d["goal"], sol1=d["sol1"], sol2=d["sol2"], label=l) for d, l in zip(docs, labels)]
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        out = []
        for d in read_jsonl(os.path.join(src_dir, task + ".jsonl")):
            q = d["question"]
            ch = {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}
            key = "question_stem" if task == "openbookqa" else "question"
            out.append({"id": d["id"], key: q["stem"], "choices": ch, "answerKey": d["answerKey"]})
        return out
    if task == "winogrande":
        return read_jsonl(os.path.join(src_dir, "winogrande.jsonl"))
    if task == "boolq":
        return [dict(question=d["question"], passage=d["passage"], idx=i, label=int(d["answer"]))
                for i, d in enumerate(read_jsonl(os.path.join(src_dir, "boolq.jsonl")))]
    raise ValueError(task)


def make_model(out_dir):
    torch.manual_seed(2024)
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=96,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # large enough that choices' log-likelihoods differ clearly
                p.copy_(0.5 * torch.randn_like(p))
    model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(out_dir, extra)):
            os.remove(os.path.join(out_dir, extra))


def main():
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model_dir = os.path.join(FIX, "model")
    make_model(model_dir)
    tmp = tempfile.mkdtemp(prefix="tl_eval_fix_")
    try:
        # the model as lm-eval sees it: our weights + the Llama 2 tokenizer
        hf_dir = os.path.join(tmp, "hf_model")
        shutil.copytree(model_dir, hf_dir)
        shutil.copy(SPM, os.path.join(hf_dir, "tokenizer.model"))
        with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
            json.dump(TOK_CONFIG, f)

        # task configs: the harness's own, with the data taken from local files
        tdir = os.path.join(tmp, "tasks")
        os.makedirs(tdir)
        base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
        yaml_of = {"hellaswag": "hellaswag/hellaswag.yaml", "piqa": "piqa/piqa.yaml",
                   "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                   "openbookqa": "openbookqa/openbookqa.yaml", "winogrande": "winogrande/default.yaml",
                   "boolq": "super_glue/boolq/default.yaml"}
        for task in TASKS:
            data = os.path.join(tmp, task + ".hub.jsonl")
            with open(data, "w", encoding="utf-8") as f:
                for d in to_hub_format(task, FIX):
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
            with open(os.path.join(tdir, "local_" + task + ".yaml"), "w") as f:
                f.write("include: %s\n" % os.path.join(base, yaml_of[task]))
                f.write("task: local_%s\ntag: []\ndataset_path: json\ndataset_name: null\n" % task)
                f.write("dataset_kwargs:\n  data_files:\n    validation: %s\n" % data)
                f.write("training_split: null\nvalidation_split: validation\ntest_split: null\n")

        lm = HFLM(pretrained=hf_dir, dtype="float32", batch_size=3, device="cpu")
        tm = TaskManager(include_path=tdir)
        res = lm_eval.simple_evaluate(model=lm, tasks=["local_" + t for t in TASKS], num_fewshot=0,
                                      log_samples=True, task_manager=tm)
        expected = {"lm_eval_version": lm_eval.__version__, "max_length": lm.max_length, "tasks": {}}
        min_margin = float("inf")
        for task in TASKS:
            name = "local_" + task
            r = res["results"][name]
            samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
            docs = []
            for s in samples:
                reqs = []
                for (ctx, cont), resp in zip(s["arguments"], s["resps"]):
                    ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
                    ll, greedy = resp[0]
                    reqs.append({"context": ctx, "continuation": cont, "context_ids": ctx_ids,
                                 "continuation_ids": cont_ids, "ll": float(ll), "greedy": bool(greedy)})
                lls = sorted(q["ll"] for q in reqs)
                min_margin = min(min_margin, lls[-1] - lls[-2])
                d = {"doc_id": s["doc_id"], "target": s["target"], "acc": s["acc"], "requests": reqs}
                if "acc_norm" in s:
                    d["acc_norm"] = s["acc_norm"]
                docs.append(d)
            entry = {"n": len(docs), "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"], "docs": docs}
            if "acc_norm,none" in r:
                entry["acc_norm"] = r["acc_norm,none"]
                entry["acc_norm_stderr"] = r["acc_norm_stderr,none"]
            expected["tasks"][task] = entry
            print("%-14s n=%d acc=%.4f acc_norm=%s" % (task, len(docs), entry["acc"], entry.get("acc_norm")))
        print("smallest gap between the two best log-likelihoods of a doc: %.5f" % min_margin)

        # tokenizer check texts: lm-eval's tokenizer on strings with odd spacing
        tok = lm.tokenizer
        texts = [" Hello  world ", "a   b    c", "  x", "\n hi", "x\t y", "café — naïve  ", "日本語 テキスト",
                 "😀 emoji", "The trophy  is too large.", "Question: why?  \nAnswer:   yes"]
        expected["tokenizer"] = [{"text": x, "ids": tok.encode(x)} for x in texts]
        with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, indent=1)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())

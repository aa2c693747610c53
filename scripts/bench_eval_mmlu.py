#!/usr/bin/env python3
"""MMLU 5-shot speed: `tinyllama eval --task mmlu` (KV-cache backend: each
subject's 5-shot prefix computed once) against lm-evaluation-harness's HF
backend (fp32, batch size --batch) on the same synthetic MMLU-layout directory
(--subjects subjects x --questions questions, 5 dev rows each, ~--words words
per question from tinyshakespeare) and a random bf16 Llama written once to
--dir (default hidden 512, 8 layers, vocab 32000; `--preset 1.1b` is
TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632).
Both in this command, one after the other; prints seconds, requests/s, the
ratio and whether the two agree on every prediction.

A full run (57 subjects, 14042 questions) is extrapolated from the measured
one: lm-eval's HF backend runs every question's whole prompt (its time is
per question); ours pays a subject's shared prefix once and then each
question's own tokens, so ours is run a second time with --limit at half the
questions and the two runs give the per-subject and per-question costs.

Needs torch, transformers, lm-eval.  From the repo root:
    OMP_WAIT_POLICY=passive python3 scripts/bench_eval_mmlu.py [--subjects 4] [--questions 10]
"""
import argparse
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("--bin", default="./build/tinyllama")
p.add_argument("--dir", default="/tmp/tl_bench_eval_model")
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--kv-heads", type=int, default=0, help="default hidden / 256")
p.add_argument("--intermediate", type=int, default=0, help="default hidden * 11 / 4")
p.add_argument("--preset", choices=["1.1b"], help="TinyLlama-1.1B's shape (overrides the above)")
p.add_argument("--subjects", type=int, default=4)
p.add_argument("--questions", type=int, default=10)
p.add_argument("--words", type=int, default=40)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--tokenizer", default="../shared/tokenizers/llama2/tokenizer.model")
p.add_argument("--corpus", default="../shared/corpora/tinyshakespeare.txt")
a = p.parse_args()
if a.preset == "1.1b":
    a.hidden, a.layers, a.kv_heads, a.intermediate = 2048, 22, 4, 5632
kv_heads = a.kv_heads or max(1, a.hidden // 256)
inter = a.intermediate or a.hidden * 11 // 4

import torch
from transformers import LlamaConfig, LlamaForCausalLM

if not os.path.exists(os.path.join(a.dir, "config.json")):
    print(f"writing a random bf16 model to {a.dir} ...", file=sys.stderr)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=a.hidden, intermediate_size=inter,
                      num_hidden_layers=a.layers, num_attention_heads=a.hidden // 64,
                      num_key_value_heads=kv_heads, max_position_embeddings=2048,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(a.dir, safe_serialization=True)

SUBJ = ["abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
        "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine"]
words = open(a.corpus, encoding="utf-8").read().split()
rng = random.Random(1)


def text(n):
    i = rng.randrange(len(words) - n)
    return " ".join(words[i:i + n])


tmp = tempfile.mkdtemp(prefix="tl_bench_mmlu_")
try:
    data = os.path.join(tmp, "mmlu")
    subjects = SUBJ[:a.subjects]
    for split, n in (("dev", 5), ("test", a.questions)):
        os.makedirs(os.path.join(data, split))
        for s in subjects:
            with open(os.path.join(data, split, "%s_%s.csv" % (s, split)), "w", newline="") as f:
                csv.writer(f).writerows([[text(a.words)] + [text(5) for _ in range(4)] + ["ABCD"[rng.randrange(4)]]
                                         for _ in range(n)])
    n_req = 4 * a.subjects * a.questions

    def child_cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def run_ours(limit):
        global ours_cpu
        t0, c0 = time.time(), child_cpu()
        out = os.path.join(tmp, "ours.json")
        subprocess.run([a.bin, "eval", "--model", a.dir, "--tokenizer", a.tokenizer, "--task", "mmlu", "--data", data,
                        "--json", out, "--samples", "--quiet", "--limit", str(limit),
                        "--threads", str(torch.get_num_threads())], check=True,
                       stdout=subprocess.DEVNULL)
        ours_cpu = child_cpu() - c0
        return time.time() - t0, json.load(open(out))

    half = max(1, a.questions // 2)
    half_s, _ = run_ours(half)
    ours_s, ours = run_ours(a.questions)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    hf = os.path.join(tmp, "hf")
    shutil.copytree(a.dir, hf)
    shutil.copy(a.tokenizer, os.path.join(hf, "tokenizer.model"))
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "legacy": False, "tokenizer_class": "LlamaTokenizer"}, f)
    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    tdir = os.path.join(tmp, "tasks")
    os.makedirs(tdir)
    names = []
    for s in subjects:
        files = {}
        for split in ("test", "dev"):
            pth = os.path.join(tmp, "%s_%s.jsonl" % (s, split))
            with open(os.path.join(data, split, "%s_%s.csv" % (s, split)), newline="") as f, open(pth, "w") as g:
                for r in csv.reader(f):
                    g.write(json.dumps({"question": r[0], "subject": s, "choices": r[1:5],
                                        "answer": "ABCD".index(r[5])}) + "\n")
            files[split] = pth
        names.append("local_" + s)
        with open(os.path.join(tdir, names[-1] + ".yaml"), "w") as f:
            f.write("include: %s\ntask: %s\ntag: []\ndataset_path: json\ndataset_name: null\n"
                    "dataset_kwargs:\n  data_files:\n    test: %s\n    dev: %s\n"
                    % (os.path.join(base, "mmlu/default/mmlu_%s.yaml" % s), names[-1], files["test"], files["dev"]))
    lm = HFLM(pretrained=hf, dtype="float32", batch_size=a.batch, device="cpu")
    t0, c0 = time.time(), time.process_time()
    res = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=5, log_samples=True,
                                  task_manager=TaskManager(include_path=tdir))
    ref_s, ref_cpu = time.time() - t0, time.process_time() - c0
    agree = 0
    for i, s in enumerate(subjects):
        smp = sorted(res["samples"]["local_" + s], key=lambda x: x["doc_id"])
        mine = [x for x in ours["samples"] if x["subject"] == s]
        for x, y in zip(smp, mine):
            lls = [r[0][0] for r in x["resps"]]
            agree += lls.index(max(lls)) == y["pred"]
    print(f"model: hidden {a.hidden}, {a.layers} layers; {a.subjects} subjects x {a.questions} questions, 5-shot, "
          f"{n_req} requests; threads: {torch.get_num_threads()} (both)")
    print(f"tinyllama eval (kv): {ours_s:.1f} s, {n_req / ours_s:.1f} requests/s (process start and loading included)")
    print(f"lm-eval HF (fp32, batch {a.batch}): {ref_s:.1f} s, {n_req / ref_s:.1f} requests/s (model load excluded)")
    print(f"CPU time (user + sys, all threads): ours {ours_cpu:.1f} s, lm-eval {ref_cpu:.1f} s, "
          f"{ref_cpu / ours_cpu:.2f}x; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"speedup {ref_s / ours_s:.2f}x; predictions agree on {agree}/{a.subjects * a.questions}")
    # full MMLU: 57 subjects, 14042 questions
    if a.questions > half:
        per_q = (ours_s - half_s) / (a.subjects * (a.questions - half))
        per_subj = (ours_s - per_q * a.subjects * a.questions) / a.subjects
        full_ours = 57 * per_subj + 14042 * per_q
        full_ref = ref_s / (a.subjects * a.questions) * 14042
        print(f"ours at --limit {half}: {half_s:.1f} s -> {per_subj:.1f} s per subject (prefix, load), "
              f"{per_q:.2f} s per question")
        print(f"full MMLU extrapolated: ours {full_ours / 3600:.2f} h, lm-eval HF {full_ref / 3600:.2f} h, "
              f"{full_ref / full_ours:.1f}x")
finally:
    shutil.rmtree(tmp)

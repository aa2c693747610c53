#!/usr/bin/env python3
"""Evaluation speed: `tinyllama eval` with the KV-cache backend (default) against
the fp32 full-forward backend on a synthetic HellaSwag-style set (long contexts
shared by 4 endings) and a random bf16 Llama (default: hidden 512, 8 layers,
vocab 32000, ~50M parameters), written once to --dir.  Also reports the largest
difference between the two backends' per-choice log-likelihoods.

Needs torch + transformers (only to write the random model).  Usage, from the repo root:

    OMP_WAIT_POLICY=passive python3 scripts/bench_eval.py [--docs 40] [--ctx-words 120]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser()
p.add_argument("--bin", default="./build/tinyllama")
p.add_argument("--dir", default="/tmp/tl_bench_eval_model")
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--docs", type=int, default=40)
p.add_argument("--ctx-words", type=int, default=120)
p.add_argument("--ending-words", type=int, default=20)
p.add_argument("--tokenizer", default="../shared/tokenizers/llama2/tokenizer.model")
p.add_argument("--corpus", default="../shared/corpora/tinyshakespeare.txt")
a = p.parse_args()

if not os.path.exists(os.path.join(a.dir, "config.json")):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"writing a random bf16 model to {a.dir} ...", file=sys.stderr)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=a.hidden, intermediate_size=a.hidden * 11 // 4,
                      num_hidden_layers=a.layers, num_attention_heads=a.hidden // 64,
                      num_key_value_heads=max(1, a.hidden // 256), max_position_embeddings=2048,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    LlamaForCausalLM(cfg).save_pretrained(a.dir, safe_serialization=True)

words = open(a.corpus, encoding="utf-8").read().split()
rng = random.Random(0)


def text(n):
    i = rng.randrange(len(words) - n)
    return " ".join(words[i:i + n])


tmp = tempfile.mkdtemp(prefix="tl_bench_eval_")
data = os.path.join(tmp, "hellaswag.jsonl")
with open(data, "w", encoding="utf-8") as f:
    for d in range(a.docs):
        f.write(json.dumps({"activity_label": "Reading", "ctx_a": text(a.ctx_words), "ctx_b": text(8),
                            "endings": [text(a.ending_words) for _ in range(4)], "label": d % 4}) + "\n")

res = {}
for be in ("kv", "fp32"):
    out = os.path.join(tmp, be + ".json")
    subprocess.run([a.bin, "eval", "--model", a.dir, "--tokenizer", a.tokenizer, "--task", "hellaswag",
                    "--data", data, "--backend", be, "--quiet", "--json", out, "--samples"],
                   check=True, stdout=subprocess.DEVNULL)
    res[be] = json.load(open(out))
    print(f"{be:5s}: {res[be]['seconds']:.2f} s for {res[be]['requests']} requests "
          f"({res[be]['requests'] / res[be]['seconds']:.1f} requests/s)")
diff = max(abs(x - y) for s, t in zip(res["kv"]["samples"], res["fp32"]["samples"])
           for x, y in zip(s["ll"], t["ll"]))
print(f"speedup {res['fp32']['seconds'] / res['kv']['seconds']:.2f}x; "
      f"max |ll(kv) - ll(fp32)| = {diff:.3g}; acc_norm {res['kv']['acc_norm']} vs {res['fp32']['acc_norm']}")

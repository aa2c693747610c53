#!/usr/bin/env python3
"""What rounding activations to bf16 costs on a model's BF16 weights, against transformers.

The model (an HF directory, any float dtype) is written as a BF16 GGUF file with
`tinyllama quantize`, so every program below multiplies the same bf16 weights.  The
oracle is transformers in fp32 on those weights (the exact products); beside it
transformers in bf16 (`torch_dtype=torch.bfloat16`, what an HF user runs), and ours
with the exact kernels (--f32-activations) and with the kernels that round the
activations to bf16 (--kernel avx512bf16: what generate, chat and serve pick for BF16
weights where it pays, `tinyllama info --cpu`).  Printed: the mean NLL per token over
disjoint windows (the windows of `tinyllama perplexity`), and how many of 64 greedy
ids after a prompt equal the oracle's.

  python3 scripts/check_bf16_rounding.py --model runs/demo/step-00000300 \\
      --text ../shared/corpora/botchan.txt --max-tokens 60000
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM
import sentencepiece as spm


def ours_nll(binary, gguf, text, max_tokens, window, extra):
    cmd = [binary, "perplexity", "--model", gguf, "--text", text, "--max-tokens", str(max_tokens),
           "--window", str(window), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(re.search(r"nll per token: ([0-9.]+)", r.stdout).group(1))


def ours_greedy(binary, gguf, prompt, n, extra):
    cmd = [binary, "generate", "--model", gguf, "--ids", " ".join(map(str, prompt)), "--max-tokens", str(n),
           "--greedy", "--ignore-eos", "--print-ids", "--no-stats", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [int(t) for t in r.stdout.split()]


def hf_nll(model, ids, window):
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(ids), window):
            w = torch.tensor([ids[b:b + window]])
            if w.shape[1] < 2:
                break
            logits = model(w).logits.float()[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum").item()
            count += w.shape[1] - 1
    return total / count


def hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def agree(a, b):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF model directory with tokenizer.model")
    ap.add_argument("--text", required=True)
    ap.add_argument("--max-tokens", type=int, default=60000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--bin", default="./build/tinyllama")
    ap.add_argument("--gen", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    with open(a.text, "rb") as f:  # bytes as `tinyllama perplexity` reads them (CRLF kept)
        ids = ([sp.bos_id()] + sp.encode(f.read().decode("utf-8")))[:a.max_tokens]
    prompt = ids[:32]

    with tempfile.TemporaryDirectory() as tmp:
        gguf = os.path.join(tmp, "model-bf16.gguf")
        subprocess.run([a.bin, "quantize", a.model, gguf, "BF16"], check=True, capture_output=True)
        exact, rounded = ["--f32-activations"], ["--kernel", "avx512bf16"]
        rows = [("ours, exact (--f32-activations)", ours_nll(a.bin, gguf, a.text, a.max_tokens, a.window, exact),
                 ours_greedy(a.bin, gguf, prompt, a.gen, exact)),
                ("ours, bf16-rounded (--kernel avx512bf16)",
                 ours_nll(a.bin, gguf, a.text, a.max_tokens, a.window, rounded),
                 ours_greedy(a.bin, gguf, prompt, a.gen, rounded)),
                ("ours, generate's default", None, ours_greedy(a.bin, gguf, prompt, a.gen, []))]

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # the file's weights: matrices rounded to bf16 once, norms kept fp32 as GGUF keeps them
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(p.to(torch.bfloat16).float())
    ref_nll, ref_ids = hf_nll(model, ids, a.window), hf_greedy(model, prompt, a.gen)
    model = model.to(torch.bfloat16)
    rows.insert(0, ("transformers, bf16", hf_nll(model, ids, a.window), hf_greedy(model, prompt, a.gen)))

    print(f"model {a.model}, {len(ids)} tokens of {a.text}, windows of {a.window}; oracle: transformers in fp32 "
          f"on the bf16 weights, nll per token {ref_nll:.6f} (perplexity {math.exp(ref_nll):.4f})")
    print("| run | nll per token | - oracle | greedy ids equal to the oracle's |")
    print("|---|---|---|---|")
    for name, nll, gen in rows:
        d = "-" if nll is None else f"{nll:.6f} | {nll - ref_nll:+.2e}"
        print(f"| {name} | {d if nll is not None else '- | -'} | {agree(gen, ref_ids)} of {a.gen} |")


if __name__ == "__main__":
    sys.exit(main())

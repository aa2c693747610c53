#!/usr/bin/env python3
"""Writes tests/fixtures/serve_logprobs.json, the oracle for the server's
`logprobs` (tests/test_serve.c, tests/cli_serve.sh): transformers'
LlamaForCausalLM on the fixture model tests/fixtures/infer_gqa_f32 decodes
"Hello world" greedily (full recompute each step, stopping at EOS) and records,
for every generated token, torch's log_softmax of the raw logits (float64) at
the chosen id and the 5 most likely ids with theirs.  The prompt is encoded by
sentencepiece itself (BOS first).

Run from the repo root:  /tmp/gemm-venv/bin/python scripts/gen_serve_logprobs_fixture.py
"""
import json
import os

import sentencepiece as spm
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "infer_gqa_f32")
OUT = os.path.join(ROOT, "tests", "fixtures", "serve_logprobs.json")
PROMPT, STEPS, TOP = "Hello world", 8, 5

sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
model = LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32, attn_implementation="eager").eval()
eos = json.load(open(os.path.join(MODEL, "generation_config.json"))).get("eos_token_id", sp.eos_id())
eos = set(eos if isinstance(eos, list) else [eos])
ids = [sp.bos_id()] + sp.encode(PROMPT)
prompt_ids = list(ids)
steps = []
with torch.no_grad():
    for _ in range(STEPS):
        logits = model(torch.tensor([ids])).logits[0, -1].double()
        lp = F.log_softmax(logits, dim=-1)
        top = torch.topk(lp, TOP)
        chosen = int(top.indices[0])
        if chosen in eos:
            break
        steps.append({"id": chosen, "logprob": float(lp[chosen]),
                      "top_ids": [int(i) for i in top.indices], "top_logprobs": [float(v) for v in top.values],
                      "token": sp.id_to_piece(chosen).replace("\u2581", " ")})
        ids.append(chosen)
json.dump({"prompt": PROMPT, "prompt_ids": prompt_ids, "steps": steps}, open(OUT, "w"))
print(f"wrote {OUT}: {len(steps)} steps")

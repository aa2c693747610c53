#!/usr/bin/env python3
"""How far PyTorch's own bf16 mixed precision (torch.autocast("cpu", bfloat16))
lands from its fp32 gradients on the model fixture of tests/test_model.c, in the
metric of tests/test_bf16.c (per tensor: max |difference| / max |fp32 value|):
the yardstick for the tolerance that test states for our bf16 step.  Prints the
loss difference and the worst and mean gradient error.  Run from the repo root:
    python3 scripts/check_bf16_grads.py  (needs torch, transformers, safetensors)"""
import os

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

FIX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
exp = load_file(os.path.join(FIX, "tiny_llama_expected.safetensors"))
tokens = exp["tokens"].long()
inp, tgt = tokens[:, :-1], tokens[:, 1:]


def step(autocast):
    model = LlamaForCausalLM.from_pretrained(os.path.join(FIX, "tiny_llama"), attn_implementation="eager").float()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=inp).logits
        V = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1))
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


l32, g32 = step(False)
l16, g16 = step(True)
errs = {n: ((g16[n] - g32[n]).abs().max() / g32[n].abs().max()).item() for n in g32}
worst = max(errs, key=errs.get)
print(f"loss fp32 {l32:.6f} autocast bf16 {l16:.6f} (relative {abs(l16 - l32) / l32:.2e})")
print(f"gradients: worst {errs[worst]:.3g} ({worst}), mean {sum(errs.values()) / len(errs):.3g} over {len(errs)} tensors")

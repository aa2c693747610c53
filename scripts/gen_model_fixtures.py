#!/usr/bin/env python3
"""Writes the model fixtures that tests/test_model.c checks our C code against.

The oracle is HF transformers' LlamaForCausalLM (eager attention, fp32) and
torch.optim.AdamW + clip_grad_norm_.  Run from the repo root:

    pip install torch transformers safetensors
    python3 scripts/gen_model_fixtures.py

Outputs (small, checked in):
  tests/fixtures/tiny_llama/{config.json,model.safetensors}  - random model, HF-written
  tests/fixtures/tiny_llama_expected.safetensors            - inputs and expected values
"""
import math
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

torch.manual_seed(1234)
torch.set_num_threads(1)
cfg = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=72, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, attn_implementation="eager",
)
model = LlamaForCausalLM(cfg).float()
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim == 1:  # norms: not all ones, so their gradients are exercised
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        else:            # larger than HF's 0.02 so activations are not trivially small
            p.copy_(0.08 * torch.randn_like(p))
model.save_pretrained(os.path.join(OUT, "tiny_llama"), safe_serialization=True)

B, T = 2, 16
V = cfg.vocab_size
exp = {}

def batch(gen):
    return torch.randint(0, V, (B, T + 1), generator=gen)

gen = torch.Generator().manual_seed(99)
tokens = batch(gen)
inp, tgt = tokens[:, :-1], tokens[:, 1:]
model.zero_grad()
logits = model(input_ids=inp).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
loss.backward()
exp["tokens"] = tokens.to(torch.int32).contiguous()
exp["logits"] = logits.detach().contiguous()
exp["loss"] = loss.detach().reshape(1)
for name, p in model.named_parameters():
    exp["grad." + name] = p.grad.detach().clone()

# A few AdamW steps with warmup + cosine and global-norm clipping, each on a fresh batch.
STEPS, WARMUP, DECAY_STEPS, LR, MIN_LR, CLIP = 4, 2, 4, 1e-2, 1e-3, 0.5
def lr_at(step):  # step counts from 0; the documented schedule of src/train/optimizer.c
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    if step >= DECAY_STEPS:
        return MIN_LR
    ratio = (step - WARMUP) / (DECAY_STEPS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)

# The same steps in float64 give the accuracy floor: Adam amplifies fp32 rounding
# on small gradients, so the test compares our error against torch fp32's.
import copy
model64 = copy.deepcopy(model).double()
opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                        foreach=False, fused=False)
opt64 = torch.optim.AdamW(model64.parameters(), lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                          foreach=False, fused=False)
step_tokens, losses, norms, lrs = [], [], [], []
for step in range(STEPS):
    tokens = batch(gen)
    step_tokens.append(tokens)
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    opt.zero_grad()
    logits = model(input_ids=tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    for g in opt64.param_groups:
        g["lr"] = lr_at(step)
    opt64.zero_grad()
    logits64 = model64(input_ids=tokens[:, :-1]).logits
    torch.nn.functional.cross_entropy(logits64.reshape(-1, V), tokens[:, 1:].reshape(-1)).backward()
    torch.nn.utils.clip_grad_norm_(model64.parameters(), CLIP)
    opt64.step()
    losses.append(loss.item()); norms.append(norm.item()); lrs.append(lr_at(step))
exp["adamw.tokens"] = torch.stack(step_tokens).to(torch.int32).contiguous()
exp["adamw.loss"] = torch.tensor(losses, dtype=torch.float32)
exp["adamw.grad_norm"] = torch.tensor(norms, dtype=torch.float32)
exp["adamw.lr"] = torch.tensor(lrs, dtype=torch.float32)
exp["adamw.settings"] = torch.tensor([STEPS, WARMUP, DECAY_STEPS, LR, MIN_LR, CLIP], dtype=torch.float64)
for (name, p), (_, p64) in zip(model.named_parameters(), model64.named_parameters()):
    exp["adamw.param." + name] = p.detach().clone()
    exp["adamw64.param." + name] = p64.detach().clone()
save_file(exp, os.path.join(OUT, "tiny_llama_expected.safetensors"), metadata={
    "generator": "scripts/gen_model_fixtures.py",
    "torch": torch.__version__,
})
print("wrote fixtures; loss", exp["loss"].item(), "adamw losses", losses, "norms", norms)

# A tied-embedding variant (lm_head shares embed_tokens): logits, loss and gradients.
torch.manual_seed(4321)
tcfg = LlamaConfig(**{**cfg.to_dict(), "tie_word_embeddings": True})
tcfg._attn_implementation = "eager"
tied = LlamaForCausalLM(tcfg).float()
with torch.no_grad():
    for name, p in tied.named_parameters():
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if p.ndim == 1 else 0.08 * torch.randn_like(p))
assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
tied.save_pretrained(os.path.join(OUT, "tiny_llama_tied"), safe_serialization=True)
texp = {}
tokens = batch(torch.Generator().manual_seed(7))
logits = tied(input_ids=tokens[:, :-1]).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
loss.backward()
texp["tokens"] = tokens.to(torch.int32).contiguous()
texp["logits"] = logits.detach().contiguous()
texp["loss"] = loss.detach().reshape(1)
for name, p in tied.named_parameters():  # the shared matrix appears once, as embed_tokens
    texp["grad." + name] = p.grad.detach().clone()
save_file(texp, os.path.join(OUT, "tiny_llama_tied_expected.safetensors"),
          metadata={"generator": "scripts/gen_model_fixtures.py", "torch": torch.__version__})
print("wrote tied fixtures; loss", loss.item())

# AdamW alone: given gradients (no model rounding in between), torch's fp32 update
# is reproduced to the last few ulps; this isolates the optimizer's arithmetic.
torch.manual_seed(99)
p0 = torch.randn(1000) * 0.1
p = p0.clone().requires_grad_(True)
aopt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False, fused=False)
grads_seq, lrs_seq = [], [3e-4, 1e-3, 5e-4]
for lr in lrs_seq:
    g = torch.randn(1000) * torch.logspace(-6, 0, 1000)  # magnitudes from 1e-6 to 1
    grads_seq.append(g)
    aopt.param_groups[0]["lr"] = lr
    p.grad = g.clone()
    aopt.step()
st = aopt.state[p]
save_file({"p0": p0, "grads": torch.stack(grads_seq), "lrs": torch.tensor(lrs_seq, dtype=torch.float64),
           "p": p.detach().clone(), "m": st["exp_avg"].clone(), "v": st["exp_avg_sq"].clone()},
          os.path.join(OUT, "adamw_expected.safetensors"), metadata={"generator": "scripts/gen_model_fixtures.py"})
print("wrote adamw fixture")

#!/usr/bin/env python3
"""The PyTorch peer of `tinyllama bench`: the same Llama config (HF transformers'
LlamaForCausalLM, fp32, SDPA attention), the same step (forward, backward,
clip_grad_norm_, AdamW) on random tokens, all threads.  With --autocast, the
forward (and so the backward) under torch.autocast("cpu", dtype=torch.bfloat16):
PyTorch's bf16 mixed precision, the peer of `tinyllama bench --precision bf16`.
Prints a RESULT line in the same format.  Used by scripts/bench_train.sh."""
import argparse
import resource
import sys
import time

import torch
from transformers import LlamaForCausalLM

from bench_common import preset_config

p = argparse.ArgumentParser()
p.add_argument("--preset", default="llama-24m")
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq-len", type=int, default=64)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--bin", default="./build/tinyllama")
p.add_argument("--autocast", action="store_true", help="bf16 autocast (fp32 master weights)")
a = p.parse_args()

cfg = preset_config(a.bin, a.preset)  # our own preset table: both sides build the same model
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
V = cfg.vocab_size
timed = 0.0
for step in range(a.steps + 2):
    x = torch.randint(0, V, (a.batch, a.seq_len))
    y = torch.randint(0, V, (a.batch, a.seq_len))
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step >= 2:
        timed += time.perf_counter() - t0
nonembed = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
tps = a.batch * a.seq_len * a.steps / timed
flops = 6 * nonembed + 12 * cfg.num_hidden_layers * cfg.hidden_size * a.seq_len
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
print(f"RESULT impl=pytorch precision={'bf16' if a.autocast else 'fp32'} tokens_per_s={tps:.1f} gflops={tps * flops / 1e9:.2f} "
      f"peak_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} loss={loss.item():.4f}")
sys.stdout.flush()

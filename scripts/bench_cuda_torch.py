#!/usr/bin/env python3
"""PyTorch peer of `tinyllama-cuda bench --device cuda`: the same Llama config
(HF LlamaForCausalLM from our own preset table), bf16 autocast over fp32 master
weights, scaled_dot_product_attention, torch.compile, fused AdamW + clipping, on
random tokens; prints a RESULT line in the same format.  FLOPs per token as ours:
6 x non-embedding params + 12 x layers x dim x seq."""
import argparse
import sys
import time

import torch
from transformers import LlamaForCausalLM

from bench_common import preset_config

p = argparse.ArgumentParser()
p.add_argument("--preset", default="tinyllama-1.1b")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq-len", type=int, default=2048)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--no-compile", action="store_true")
p.add_argument("--peak-tflops", type=float, default=989.4)
p.add_argument("--bin", default="./build/tinyllama-cuda")
a = p.parse_args()

cfg = preset_config(a.bin, a.preset)  # our own preset table: both sides build the same model
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = True
dev = "cuda"
model = LlamaForCausalLM(cfg).to(dev).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
V = cfg.vocab_size


def loss_fn(x, y):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))


step_loss = loss_fn if a.no_compile else torch.compile(loss_fn)
timed, loss = 0.0, None
t_start = time.perf_counter()
for step in range(a.steps + a.warmup):
    x = torch.randint(0, V, (a.batch, a.seq_len), device=dev)
    y = torch.randint(0, V, (a.batch, a.seq_len), device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = step_loss(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    torch.cuda.synchronize()
    if step >= a.warmup:
        timed += time.perf_counter() - t0
    else:
        print(f"warm-up step {step}: {time.perf_counter() - t0:.1f}s", flush=True)
nonembed = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
tps = a.batch * a.seq_len * a.steps / timed
flops = 6 * nonembed + 12 * cfg.num_hidden_layers * cfg.hidden_size * a.seq_len
tflops = tps * flops / 1e12
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, compile={not a.no_compile}, "
      f"peak memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB, total {time.perf_counter() - t_start:.0f}s")
print(f"RESULT impl=pytorch tokens_per_s={tps:.1f} tflops={tflops:.2f} mfu_datasheet={tflops / a.peak_tflops:.4f} "
      f"loss={loss.item():.4f}")
sys.stdout.flush()

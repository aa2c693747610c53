#!/usr/bin/env python3
"""Writes the inference fixtures that tests/test_infer.c and tests/cli_infer.sh
check our inference engine (src/infer/infer.c) against.

The oracle is HF transformers' LlamaForCausalLM (eager attention, fp32 math).
Two small random models, written by transformers' own save_pretrained:

  tests/fixtures/infer_gqa_f32/   GQA (6 query heads, 2 KV heads), untied lm_head,
                                  F32, saved *sharded* (index.json + 3 shards)
  tests/fixtures/infer_tied_bf16/ MQA (4 query heads, 1 KV head), tied embeddings,
                                  BF16 file

Both use vocab 1000 and carry tests/fixtures/tokenizer/small_bpe.model as their
tokenizer.model, so the CLI can be driven with text.  For the BF16 model the
expected values come from transformers running the *bf16-rounded weights
upcast to fp32* (our engine keeps bf16 weights but computes in fp32).

Expected values (tests/fixtures/infer_expected.safetensors), per model P:
  P.prompt        int32 [T0]        prompt ids (BOS first)
  P.greedy        int32 [G]         greedy continuation (argmax of each step's
                                    logits, full recompute, no EOS stop)
  P.logits        f32 [T0+G-1, V]   logits of the whole sequence prompt+greedy[:-1]
  P.ppl_tokens    int32 [N]         a token stream for perplexity
  P.ppl.W.S       f64 [2]           (nll sum, count) under the windowing of
                                    docs/inference.md with window W, stride S

Run from the repo root:  python3 scripts/gen_infer_fixtures.py
"""
import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "fixtures")
TOKENIZER = os.path.join(OUT, "tokenizer", "small_bpe.model")

torch.set_num_threads(1)
V = 1000


def make(seed, hidden, inter, layers, heads, kv, tied, scale=0.12):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # large enough that greedy decoding does not collapse onto one token
                p.copy_(scale * torch.randn_like(p))
    return model


def window_nll(model, ids, W, S):
    """HF-style strided perplexity: windows [begin, begin+W) for begin = 0, S, 2S...;
    each window scores only the targets not scored by an earlier window."""
    nll, count, prev_end = 0.0, 0, 0
    n = len(ids)
    begin = 0
    while True:
        end = min(begin + W, n)
        x = torch.tensor(ids[begin:end]).unsqueeze(0)
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
        # position t in the window predicts ids[begin+t+1]; score targets in [max(prev_end,begin+1), end)
        first = max(prev_end, begin + 1)
        for tgt in range(first, end):
            nll -= logp[tgt - begin - 1, ids[tgt]].item()
            count += 1
        prev_end = end
        if end == n:
            break
        begin += S
    return nll, count


def expected_for(prefix, model, exp, gen_seed):
    g = torch.Generator().manual_seed(gen_seed)
    prompt = [1] + torch.randint(3, V, (9,), generator=g).tolist()
    seq = list(prompt)
    G = 14
    with torch.no_grad():
        for _ in range(G):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            # a clear winner at every step, so fp32 rounding differences cannot flip it
            assert top2[0] - top2[1] > 1e-3, (prefix, len(seq), top2)
            seq.append(int(torch.argmax(logits)))
        full = model(input_ids=torch.tensor([seq[:-1]])).logits[0]
        # transformers' own generate must agree with the manual loop
        out = model.generate(torch.tensor([prompt]), max_new_tokens=G, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        assert out[0].tolist() == seq, (out[0].tolist(), seq)
    exp[prefix + ".prompt"] = torch.tensor(prompt, dtype=torch.int32)
    exp[prefix + ".greedy"] = torch.tensor(seq[len(prompt):], dtype=torch.int32)
    exp[prefix + ".logits"] = full.contiguous().float()
    ppl_ids = [1] + torch.randint(3, V, (69,), generator=g).tolist()
    exp[prefix + ".ppl_tokens"] = torch.tensor(ppl_ids, dtype=torch.int32)
    for W, S in [(32, 32), (32, 16), (128, 128)]:
        nll, count = window_nll(model, ppl_ids, W, S)
        exp[f"{prefix}.ppl.{W}.{S}"] = torch.tensor([nll, count], dtype=torch.float64)
    return seq


exp = {}

gqa = make(11, hidden=32, inter=80, layers=2, heads=8, kv=2, tied=False)
d = os.path.join(OUT, "infer_gqa_f32")
shutil.rmtree(d, ignore_errors=True)
gqa.save_pretrained(d, safe_serialization=True, max_shard_size="100KB")
shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.model"))
expected_for("gqa_f32", gqa, exp, 5)

tied = make(12, hidden=32, inter=64, layers=2, heads=4, kv=1, tied=True, scale=0.25).to(torch.bfloat16)
d = os.path.join(OUT, "infer_tied_bf16")
shutil.rmtree(d, ignore_errors=True)
tied.save_pretrained(d, safe_serialization=True)
shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.model"))
# the oracle: the bf16 file loaded in fp32 (fresh model, so RoPE's inv_freq is fp32 too)
oracle = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
expected_for("tied_bf16", oracle, exp, 6)

save_file(exp, os.path.join(OUT, "infer_expected.safetensors"), metadata={
    "generator": "scripts/gen_infer_fixtures.py",
    "torch": torch.__version__,
})
for k in sorted(exp):
    if ".ppl." in k:
        print(k, exp[k].tolist())
print("gqa greedy", exp["gqa_f32.greedy"].tolist())
print("tied greedy", exp["tied_bf16.greedy"].tolist())

# The prompt and greedy ids also as plain text, so shell tests need no Python packages.
with open(os.path.join(OUT, "infer_greedy.txt"), "w") as f:
    for p in ("gqa_f32", "tied_bf16"):
        for what in ("prompt", "greedy"):
            f.write(f"{p}.{what} " + " ".join(map(str, exp[f"{p}.{what}"].tolist())) + "\n")

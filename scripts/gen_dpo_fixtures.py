#!/usr/bin/env python3
"""Writes the DPO fixture that tests/test_sft.c checks our loss against: TRL's
DPOTrainer (sigmoid loss, and IPO) on one batch of preference pairs.

The policy is the random model of scripts/gen_sft_fixtures.py
(tests/fixtures/sft/model); the reference is that model with its weights
perturbed (so that the log-ratios, not only the gradient, are non-trivial);
TRL tokenizes the pairs (TinyLlama-Chat's template, as in gen_sft_fixtures.py),
collates the batch and computes the loss and its metrics; torch the gradients.
The fixture keeps TRL's batch (token ids and completion mask), the reference's
sequence log-probabilities, and per loss type the loss, the rewards TRL logs and
every parameter's gradient.  Run from the repo root after gen_sft_fixtures.py:

    pip install torch transformers trl sentencepiece protobuf safetensors
    python3 scripts/gen_dpo_fixtures.py

Outputs (small, checked in): tests/fixtures/dpo_expected.safetensors, and
tests/fixtures/dpo_trajectory.json: the losses of sft.TRAJ_STEPS optimizer steps of
DPOTrainer (sigmoid, the reference its starting model, both pairs as every
step's batch, the AdamW of gen_sft_fixtures.py) on that batch
"""
import json
import os
import shutil
import tempfile

import torch
from datasets import Dataset
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer

import gen_sft_fixtures as sft

FIX = sft.FIX
BETA = 0.1
PAIRS = [
    {"prompt": [{"role": "user", "content": "What is a cat?"}],
     "chosen": [{"role": "assistant", "content": "A small furry animal."}],
     "rejected": [{"role": "assistant", "content": "A kind of car, I think."}]},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
     "chosen": [{"role": "assistant", "content": "4"}],
     "rejected": [{"role": "assistant", "content": "Five, or so."}]},
]


def trajectory(tok, tmp, want_ids):
    """sft.TRAJ_STEPS steps of DPOTrainer from the fixture model; the loss of each step."""
    policy = LlamaForCausalLM.from_pretrained(os.path.join(FIX, "sft", "model"), dtype=torch.float32,
                                              attn_implementation="eager")
    o = sft.TRAJ_OPT
    opt = torch.optim.AdamW(policy.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                            weight_decay=o["weight_decay"], foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    losses = []

    class Recorder(DPOTrainer):
        # the pairs in file order, so that the batch is the fixture's
        def _get_train_sampler(self, *a, **kw):
            return torch.utils.data.SequentialSampler(self.train_dataset)

        # one call per step (one micro-batch, no evaluation); the batch must be the fixture's
        def compute_loss(self, model, inputs, *a, **kw):
            assert torch.equal(inputs["input_ids"].to(torch.int32), want_ids)
            loss = super().compute_loss(model, inputs, *a, **kw)
            losses.append(float(loss.detach()))
            return loss

    # ref_model None: TRL's reference is a frozen copy of the starting policy, as ours
    args = DPOConfig(output_dir=os.path.join(tmp, "traj"), beta=BETA, loss_type=["sigmoid"],
                     per_device_train_batch_size=len(PAIRS), gradient_accumulation_steps=1,
                     max_steps=sft.TRAJ_STEPS, max_grad_norm=o["clip"], report_to=[], use_cpu=True, bf16=False,
                     precompute_ref_log_probs=False, save_strategy="no", logging_steps=1, seed=21, data_seed=21)
    trainer = Recorder(model=policy, ref_model=None, args=args, train_dataset=Dataset.from_list(PAIRS),
                       processing_class=tok, optimizers=(opt, sched))
    trainer.train()
    assert len(losses) == sft.TRAJ_STEPS, losses
    return losses


def main():
    torch.manual_seed(21)
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    try:
        tok_dir = os.path.join(tmp, "tok")
        os.makedirs(tok_dir)
        shutil.copy(os.path.join(FIX, "tokenizer", "small_bpe.model"), os.path.join(tok_dir, "tokenizer.model"))
        with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                       "unk_token": "<unk>", "pad_token": "</s>", "clean_up_tokenization_spaces": False,
                       "legacy": True, "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
                       "chat_template": sft.TEMPLATE}, f)
        tok = AutoTokenizer.from_pretrained(tok_dir)
        out = {}
        for loss_type in ("sigmoid", "ipo"):
            policy = LlamaForCausalLM.from_pretrained(os.path.join(FIX, "sft", "model"), dtype=torch.float32,
                                                      attn_implementation="eager")
            ref = LlamaForCausalLM.from_pretrained(os.path.join(FIX, "sft", "model"), dtype=torch.float32,
                                                   attn_implementation="eager")
            g = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for p in ref.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            args = DPOConfig(output_dir=os.path.join(tmp, "run"), beta=BETA, loss_type=[loss_type],
                             per_device_train_batch_size=len(PAIRS), report_to=[], use_cpu=True, bf16=False,
                             precompute_ref_log_probs=False)
            trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(PAIRS),
                                 processing_class=tok)
            rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
            batch = trainer.data_collator(rows)
            policy.train()
            policy.zero_grad()
            loss = trainer.compute_loss(policy, batch)
            loss.backward()
            m = {k: v[-1] for k, v in trainer._metrics["train"].items()}
            if loss_type == "sigmoid":
                ids, cm = batch["input_ids"], batch["completion_mask"]
                with torch.no_grad():  # the reference's sequence log-probs, as TRL sums them
                    logits = ref(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
                    lp = torch.log_softmax(logits.double(), -1).gather(-1, ids[:, 1:, None])[..., 0]
                    ref_lp = (lp * cm[:, 1:]).sum(1)
                out["input_ids"] = ids.to(torch.int32)
                out["completion_mask"] = cm.to(torch.int32)
                out["ref_logps"] = ref_lp.float()
                print("keys", sorted(batch.keys()), "metrics", sorted(m))
            out[f"{loss_type}.loss"] = loss.detach().reshape(1).float()
            out[f"{loss_type}.rewards"] = torch.tensor([m["rewards/chosen"], m["rewards/rejected"],
                                                       m["rewards/accuracies"], m["rewards/margins"]])
            for name, p in policy.named_parameters():
                out[f"{loss_type}.grad.{name}"] = p.grad.detach().float().contiguous()
            print(loss_type, loss.item(), {k: m[k] for k in m if k.startswith("rewards")})
        save_file(out, os.path.join(FIX, "dpo_expected.safetensors"))
        losses = trajectory(tok, tmp, out["input_ids"])
        print("trajectory", losses)
        with open(os.path.join(FIX, "dpo_trajectory.json"), "w") as f:
            json.dump({"steps": sft.TRAJ_STEPS, "pairs": len(PAIRS), "beta": BETA, "opt": sft.TRAJ_OPT,
                       "losses": losses}, f, indent=1)
            f.write("\n")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

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

Output (small, checked in): tests/fixtures/dpo_expected.safetensors
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
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

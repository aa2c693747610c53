#!/usr/bin/env python3
"""Writes the supervised fine-tuning fixtures that tests/test_sft.c checks our C
code against (prepare --format chat, train --sft).

The oracle is transformers' apply_chat_template with return_assistant_tokens_mask
(TinyLlama-Chat's chat template, with {% generation %} markers around each reply
and its eos_token, as TRL requires for assistant-only loss) run through TRL's
SFTTrainer (assistant_only_loss=True): its tokenized dataset gives the token ids
and the mask, its collator the batch, its compute_loss the loss, and torch's
backward the gradients of a tiny random LlamaForCausalLM.  The tokenizer is
tests/fixtures/tokenizer/small_bpe.model as an HF LlamaTokenizer with
legacy=True: text after a special token gets the dummy prefix, as our encoder's
TL_ENC_PARSE_SPECIAL does.  Run from the repo root:

    pip install torch transformers trl sentencepiece protobuf safetensors
    python3 scripts/gen_sft_fixtures.py

Outputs (small, checked in):
  tests/fixtures/sft/convs.jsonl                 - the conversations (our input)
  tests/fixtures/sft/model/{config.json,model.safetensors} - the random model
  tests/fixtures/sft_expected.safetensors        - full_ids.I / full_mask.I (each conversation
      whole), input_ids / labels (TRL's batch: cut to SEQ + 1, padded), loss, grad.NAME
  tests/fixtures/sft_trajectory.json             - the losses of TRAJ_STEPS optimizer steps of
      SFTTrainer from the random model, the whole set as each step's batch, and the
      optimizer settings train --sft must use to follow them
"""
import json
import os
import shutil
import tempfile

import torch
from datasets import Dataset
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "sft")
SEQ = 63  # our --seq-len; samples (and TRL's max_length) hold SEQ + 1 tokens

# TinyLlama-1.1B-Chat-v1.0's template, each reply (with eos_token) wrapped in
# {% generation %} so that transformers can say which tokens are the assistant's,
# and led by bos_token: the conversation is encoded with BOS, as the alignment
# handbook's recipe that made TinyLlama-Chat did (render, then tokenize) and as
# `tinyllama chat` encodes its prompt
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n' }}"
    # (a newline after a block tag is trimmed, so the one after the reply is an expression)
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

# TinyLlama-1.1B-Chat-v1.0's own template: the one above must render the same text
ORIGINAL = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

CONVS = [
    {"messages": [{"role": "system", "content": "You are brief."},
                  {"role": "user", "content": "What is a cat?"},
                  {"role": "assistant", "content": "A small furry animal."}]},
    {"messages": [{"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": "Hello! How can I help?"},
                  {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": " 4, of course."}]},
    # longer than SEQ + 1 tokens: cut, the reply partly kept
    {"messages": [{"role": "user", "content": "Tell me about the sea."},
                  {"role": "assistant", "content": "The sea is wide and deep, and full of fish and whales; "
                                                   "ships sail on it from port to port."}]},
]


# our AdamW (src/train/optimizer.c) at a constant learning rate: weight decay on
# every tensor (HF's Trainer would exempt the norms, so the optimizer is given to it)
TRAJ_STEPS = 10
TRAJ_OPT = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "clip": 1.0}


def trajectory(tok, tmp):
    """TRAJ_STEPS steps of SFTTrainer; returns the loss of each step's batch."""
    model = LlamaForCausalLM.from_pretrained(os.path.join(OUT, "model"), dtype=torch.float32,
                                             attn_implementation="eager")
    o = TRAJ_OPT
    opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                            weight_decay=o["weight_decay"], foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    losses = []

    class Recorder(SFTTrainer):
        # every call is one whole step: one micro-batch, no evaluation
        def compute_loss(self, model, inputs, *a, **kw):
            loss = super().compute_loss(model, inputs, *a, **kw)
            losses.append(float(loss.detach()))
            return loss

    # the batch is the whole set, so the sampler's order changes nothing: the loss is
    # the mean over all the target tokens of the step
    args = SFTConfig(output_dir=os.path.join(tmp, "traj"), assistant_only_loss=True, max_length=SEQ + 1,
                     per_device_train_batch_size=len(CONVS), gradient_accumulation_steps=1,
                     max_steps=TRAJ_STEPS, max_grad_norm=o["clip"], report_to=[], use_cpu=True, bf16=False,
                     padding_free=False, dataset_num_proc=None, save_strategy="no", logging_steps=1,
                     seed=20, data_seed=20)
    trainer = Recorder(model=model, args=args, train_dataset=Dataset.from_list(CONVS), processing_class=tok,
                       optimizers=(opt, sched))
    trainer.train()
    assert len(losses) == TRAJ_STEPS, losses
    return losses


def main():
    torch.manual_seed(20)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "convs.jsonl"), "w") as f:
        for c in CONVS:
            f.write(json.dumps(c) + "\n")
    tmp = tempfile.mkdtemp()
    try:
        tok_dir = os.path.join(tmp, "tok")
        os.makedirs(tok_dir)
        shutil.copy(os.path.join(FIX, "tokenizer", "small_bpe.model"), os.path.join(tok_dir, "tokenizer.model"))
        with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                       "unk_token": "<unk>", "pad_token": "</s>", "clean_up_tokenization_spaces": False,
                       "legacy": True, "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
                       "chat_template": TEMPLATE}, f)
        tok = AutoTokenizer.from_pretrained(tok_dir)

        cfg = LlamaConfig(vocab_size=1000, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                          bos_token_id=1, eos_token_id=2, attn_implementation="eager")  # no pad_token_id: its embedding row would get no gradient
        model = LlamaForCausalLM(cfg).float()
        with torch.no_grad():
            for _, p in model.named_parameters():
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if p.ndim == 1 else 0.1 * torch.randn_like(p))
        model.save_pretrained(os.path.join(OUT, "model"), safe_serialization=True)

        args = SFTConfig(output_dir=os.path.join(tmp, "run"), assistant_only_loss=True, max_length=SEQ + 1,
                         per_device_train_batch_size=len(CONVS), report_to=[], use_cpu=True, bf16=False,
                         padding_free=False, dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(CONVS), processing_class=tok)
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        print({k: [len(r[k]) for r in rows] for k in rows[0]})
        # the whole conversations, as apply_chat_template gives them before TRL cuts them
        full = [tok.apply_chat_template(c["messages"], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True) for c in CONVS]
        print([len(f["input_ids"]) for f in full])
        for c in CONVS:
            ours = tok.apply_chat_template(c["messages"], tokenize=False)
            theirs = tok.bos_token + tok.apply_chat_template(c["messages"], tokenize=False, chat_template=ORIGINAL)
            assert ours == theirs, (ours, theirs)
        batch = trainer.data_collator(rows)
        model.train()
        model.zero_grad()
        # what the trainer's step does (no dropout in a Llama): mean loss over the label tokens
        loss = trainer.compute_loss(model, batch)
        loss.backward()

        assert len(rows) == len(CONVS)
        out = {"loss": loss.detach().reshape(1).float(),
               "labels": batch["labels"].to(torch.int32), "input_ids": batch["input_ids"].to(torch.int32)}
        for i, f in enumerate(full):
            out[f"full_ids.{i}"] = torch.tensor(f["input_ids"], dtype=torch.int32)
            out[f"full_mask.{i}"] = torch.tensor(f["assistant_masks"], dtype=torch.int32)
        for name, p in model.named_parameters():
            out["grad." + name] = p.grad.detach().float().contiguous()
        save_file(out, os.path.join(FIX, "sft_expected.safetensors"))
        print("loss", loss.item(), "ids", [len(r["input_ids"]) for r in rows])
        losses = trajectory(tok, tmp)
        print("trajectory", losses)
        with open(os.path.join(FIX, "sft_trajectory.json"), "w") as f:
            json.dump({"steps": TRAJ_STEPS, "batch": len(CONVS), "opt": TRAJ_OPT, "losses": losses}, f, indent=1)
            f.write("\n")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks that HF transformers rebuilds our checkpoints' tokenizer as the Llama
tokenizer: AutoTokenizer.from_pretrained(checkpoint) must add BOS and give the
ids `tinyllama tokenize --bos` gives, line by line.

Without tokenizer_config.json transformers 5 builds a generic tokenizer that
adds no BOS; tl_checkpoint_save now writes it and
special_tokens_map.json (src/formats/hf_tokenizer_files.c).

HF's Llama tokenizer is not SentencePiece: it does not split on whitespace
before merging, prepends "▁" only when the text does not start with a space,
and matches special-token strings ("<s>", "<unk>") written in the text.  Lines
where that changes the ids are reported as "HF-specific" (docs/eval.md; our
eval's --tokenization hf reproduces them); every other line must agree exactly.

Usage (from the repo root, after `make`):
  python3 scripts/check_hf_tokenizer.py                 # trains two tiny checkpoints
  python3 scripts/check_hf_tokenizer.py CHECKPOINT_DIR  # checks that one
Needs: pip install transformers sentencepiece tokenizers protobuf (no torch).
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "tinyllama")
SHARED = os.path.join(ROOT, "..", "shared")
LLAMA2 = os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.model")


def run(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw).stdout


def lines_to_check():
    out = []
    for name in ("tinyshakespeare.txt", "botchan.txt"):
        with open(os.path.join(SHARED, "corpora", name), encoding="utf-8") as f:
            out += [l for l in f.read().split("\n") if l][:1500]
    # what lm-eval feeds the tokenizer, and the usual trouble spots
    out += ["Question: What is the capital of France?\nAnswer: Paris", "The cat sat on the mat.",
            "  two leading spaces", " one leading space", "trailing space ", "double  space", "tab\there",
            "digits 12345 and 3.14159", "héllo wörld — ünïcode", "中文字符测试", "emoji 🤖🚀 here", "x <unk> y",
            "<s>starts with BOS text", "ends with EOS text</s>", "a\nb\n\nc", "a\r\nb", ""]
    return out


def hf_specific(line):
    """Lines where HF's Llama tokenizer is documented to differ from SentencePiece."""
    return (line.startswith(" ") or "  " in line or re.search(r"<unk>|<s>|</s>", line) is not None
            or "\t" in line or "\n " in line or " \n" in line)


def check(ckpt):
    from transformers import AutoTokenizer
    tok_file = os.path.join(ckpt, "tokenizer.model")
    if not os.path.exists(tok_file):
        tok_file = os.path.join(ckpt, "tokenizer.json")
    info = run("tokenizer", "info", "--tokenizer", tok_file)
    bos = int(re.search(r"^bos id: +(\d+)", info, re.M).group(1))
    t = AutoTokenizer.from_pretrained(ckpt)
    print(f"{ckpt}: {type(t).__name__}, bos {t.bos_token!r} = {t.bos_token_id} (ours {bos}), "
          f"eos {t.eos_token!r} = {t.eos_token_id}, unk {t.unk_token!r} = {t.unk_token_id}")
    problems = 0
    if "Llama" not in type(t).__name__:
        print("  FAIL: transformers did not build the Llama tokenizer")
        problems += 1
    if t.bos_token_id != bos:
        print("  FAIL: BOS differs")
        problems += 1
    lines = lines_to_check()
    # one sequence per input line: --lines splits on \n, so lines holding \n go one by one
    simple = [l for l in lines if "\n" not in l and "\r" not in l and l]
    ours = run("tokenize", "--tokenizer", tok_file, "--lines", "--bos", input="\n".join(simple) + "\n").split("\n")
    ours = dict(zip(simple, ([int(x) for x in o.split()] for o in ours)))
    for l in lines:
        if l not in ours:
            ours[l] = [int(x) for x in run("tokenize", "--tokenizer", tok_file, "--bos", input=l).split()]
    same = hf_only = 0
    for l in lines:
        hf = t(l)["input_ids"]
        if hf == ours[l]:
            same += 1
        elif hf_specific(l) and hf[:1] == ours[l][:1]:
            hf_only += 1
        else:
            problems += 1
            if problems <= 10:
                print(f"  FAIL {l!r}\n    hf   {hf}\n    ours {ours[l]}")
    print(f"  {len(lines)} lines: {same} identical, {hf_only} differ where HF's Llama tokenizer differs from "
          f"SentencePiece (leading/repeated spaces, special strings), {problems} problems")
    return problems


def train_checkpoint(work, tok, name, vocab):
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w") as f:
        for d in (os.path.join(ROOT, "docs"),):
            for n in sorted(os.listdir(d)):
                f.write(open(os.path.join(d, n), encoding="utf-8").read())
    data = os.path.join(work, name + "_data")
    run("prepare", "--tokenizer", tok, "--seq-len", "32", "--val-fraction", "0", "--quiet", "--out", data, corpus)
    out = os.path.join(work, name + "_run")
    run("train", "--preset", "test", "--vocab-size", str(vocab), "--data", os.path.join(data, "train-00000.bin"),
        "--tokenizer", tok, "--steps", "1", "--quiet", "--out", out)
    step = open(os.path.join(out, "latest")).read().strip()
    return os.path.join(out, step)


def main():
    if len(sys.argv) > 1:
        return 1 if sum(check(d) for d in sys.argv[1:]) else 0
    with tempfile.TemporaryDirectory() as work:
        trained = os.path.join(work, "trained.model")
        run("tokenizer", "train", "--input", os.path.join(SHARED, "corpora", "botchan.txt"), "--vocab-size", "1000",
            "--output", trained, "--quiet")
        problems = 0
        for name, tok, vocab in (("llama2", LLAMA2, 32000), ("trained", trained, 1000)):
            ckpt = train_checkpoint(work, tok, name, vocab)
            problems += check(ckpt)
    print("OK" if problems == 0 else f"{problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

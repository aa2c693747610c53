#!/usr/bin/env python3
"""Compares `tinyllama tokenizer train` with `spm_train --model_type=bpe` on the
same corpus, vocab size and Llama-style settings.  For each corpus the first 90%
of the lines are training text and the last 10% held out; both models are
applied to the held-out text with the real sentencepiece library and the
tokens per byte compared.  Also checks that sentencepiece loads our model and
that our encoder agrees with it on the held-out lines, and times both trainers.

    python3 scripts/compare_bpe_trainer.py [VOCAB ...]   (from the repo root, after make)
"""
import os
import subprocess
import sys
import tempfile
import time

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "tinyllama")
CORPORA = [os.path.join(ROOT, "..", "shared", "corpora", c) for c in ("tinyshakespeare.txt", "botchan.txt")]


def main():
    vocabs = [int(v) for v in sys.argv[1:]] or [1000, 2000, 4000]
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in CORPORA:
            lines = open(corpus, "rb").read().split(b"\n")
            cut = len(lines) * 9 // 10
            train, test = os.path.join(tmp, "train.txt"), lines[cut:]
            open(train, "wb").write(b"\n".join(lines[:cut]) + b"\n")
            test_bytes = sum(len(t) for t in test)
            for v in vocabs:
                t0 = time.time()
                r = subprocess.run(["spm_train", "--input=" + train, "--model_prefix=" + os.path.join(tmp, "spm"),
                                    "--vocab_size=%d" % v, "--model_type=bpe", "--byte_fallback=true",
                                    "--split_digits=true", "--allow_whitespace_only_pieces=true",
                                    "--remove_extra_whitespaces=false", "--normalization_rule_name=identity",
                                    "--character_coverage=0.9995", "--minloglevel=2"], capture_output=True)
                t_spm = time.time() - t0
                if r.returncode:
                    print("%s vocab %d: spm_train failed: %s" % (os.path.basename(corpus), v, r.stderr[-300:]))
                    continue
                ours = os.path.join(tmp, "ours.model")
                t0 = time.time()
                subprocess.run([BIN, "tokenizer", "train", "--input", train, "--vocab-size", str(v),
                                "--output", ours, "--quiet"], check=True)
                t_ours = time.time() - t0
                sp_ref = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "spm.model"))
                sp_ours = spm.SentencePieceProcessor(model_file=ours)  # must load in sentencepiece
                n_ref = sum(len(sp_ref.encode(t)) for t in test)
                want = [sp_ours.encode(t) for t in test]
                n_ours = sum(len(x) for x in want)
                got = subprocess.run([BIN, "tokenize", "--tokenizer", ours, "--lines", "--threads", "1"],
                                     input=b"\n".join(test) + b"\n", capture_output=True, check=True).stdout
                got = [[int(x) for x in ln.split()] for ln in got.decode().split("\n")[:len(test)]]
                agree = sum(a == b for a, b in zip(got, want))
                rel = (n_ours - n_ref) / n_ref * 100
                worst = max(worst, rel)
                print("%-20s vocab %5d: tokens/byte spm_train %.4f, ours %.4f (%+.2f%%); "
                      "train time spm %.2fs, ours %.2fs; our encoder = sentencepiece on %d/%d held-out lines"
                      % (os.path.basename(corpus), v, n_ref / test_bytes, n_ours / test_bytes, rel, t_spm, t_ours,
                         agree, len(test)))
    print("worst relative token count (ours vs spm_train): %+.2f%%" % worst)


if __name__ == "__main__":
    main()

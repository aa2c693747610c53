#!/usr/bin/env python3
"""The Python equivalent of `tinyllama prepare`, for scripts/bench_prepare.sh.

Does what TinyLlama's scripts/prepare_slimpajama.py does per file: read the
.jsonl(.zst) line by line, json.loads, SentencePiece-encode the text field,
append EOS, and pack the ids (numpy uint16) into samples of seq_len+1 tokens
written to one flat file (the tail that does not fill a sample is dropped, as
`tinyllama prepare` does).  Prints one JSON line of statistics.

.zst is read with the `zstandard` module when it is installed (as TinyLlama
did), otherwise through a `zstd -dc` pipe (decompression then runs in a
second process, which only helps this side of the comparison)."""
import argparse
import io
import json
import subprocess
import sys
import time

import numpy as np
import sentencepiece as spm


PIPES = []


def text_lines(path):
    if path.endswith(".zst"):
        try:
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
            how = "zstandard"
        except ImportError:
            proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE)
            PIPES.append(proc)
            raw = proc.stdout
            how = "zstd-pipe"
    else:
        raw = open(path, "rb")
        how = "plain"
    return how, io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--chunk-samples", type=int, default=1024)
    ap.add_argument("inputs", nargs="+")
    a = ap.parse_args()

    t0 = time.time()
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    eos = sp.eos_id()
    S = a.seq_len + 1
    buf = np.empty(a.chunk_samples * S, dtype=np.uint16)
    fill = 0
    docs = tokens = text_bytes = bad = 0
    how = ""
    with open(a.out, "wb") as out:
        for path in a.inputs:
            how, lines = text_lines(path)
            for line in lines:
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[a.text_field]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if not isinstance(text, str) or not text:
                    bad += 1
                    continue
                text_bytes += len(text.encode("utf-8"))
                ids = sp.encode(text)
                ids.append(eos)
                arr = np.asarray(ids, dtype=np.uint16)
                docs += 1
                tokens += len(arr)
                pos = 0
                while pos < len(arr):
                    take = min(len(arr) - pos, len(buf) - fill)
                    buf[fill:fill + take] = arr[pos:pos + take]
                    fill += take
                    pos += take
                    if fill == len(buf):
                        buf.tofile(out)
                        fill = 0
        whole = fill // S * S
        buf[:whole].tofile(out)
    for proc in PIPES:  # reap (so its CPU time is counted by whoever measures us)
        proc.wait()
    dt = time.time() - t0
    print(json.dumps({"documents": docs, "tokens": tokens, "text_bytes": text_bytes, "bad": bad,
                      "seconds": dt, "mb_per_s": text_bytes / 1e6 / dt, "zstd": how}))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Decode speed on GGUF files: `tinyllama generate --model FILE.gguf` and, when a
llama-bench binary is given, llama.cpp's tg128 on the same files, same threads.

The model is TinyLlama-1.1B's shape (22 layers, 2048 wide, 5632 hidden, 32 heads, 4 KV
heads, 32000 tokens) with random weights written by the `gguf` package, once per type,
under --dir (not committed): every matrix in the type (BF16, Q8_0, Q4_0), the norms F32,
the vocabulary of ../shared/tokenizers/llama2/tokenizer.model (llama.cpp needs one).
Random blocks are written directly (random quants, small finite scales), which is as
much work per token for either program as real weights.  See docs/inference.md.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
D, F, L, H, KV, V, CTX = 2048, 5632, 22, 32, 4, 32000, 2048
TYPES = {"BF16": T.BF16, "Q8_0": T.Q8_0, "Q4_0": T.Q4_0}


def blocks(rng, qt, rows, cols):
    """random rows of qt's bytes"""
    if qt == T.BF16:
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).view(np.uint32)
        return (w >> 16).astype(np.uint16).view(np.uint8)
    be, bb = gguf.GGML_QUANT_SIZES[qt]
    b = rng.integers(0, 256, size=(rows * cols // be, bb), dtype=np.uint8)
    d = np.full(len(b), 2e-4 if qt == T.Q8_0 else 4e-3, dtype=np.float16)
    b[:, 0:2] = d.reshape(-1, 1).view(np.uint8)
    return b.reshape(rows, cols // be * bb)


def write_model(path, qt, shared):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(shared, "tokenizers", "llama2", "tokenizer.model"))
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(CTX)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(D // H)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({T.BF16: 32, T.Q8_0: 7, T.Q4_0: 2}[qt])
    toks, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        toks.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(name, rows, cols):
        w.add_tensor(name, blocks(rng, qt, rows, cols), raw_dtype=qt)

    def norm(name):
        w.add_tensor(name, np.ones(D, dtype=np.float32))

    mat("token_embd.weight", V, D)
    for l in range(L):
        norm(f"blk.{l}.attn_norm.weight")
        mat(f"blk.{l}.attn_q.weight", D, D)
        mat(f"blk.{l}.attn_k.weight", KV * D // H, D)
        mat(f"blk.{l}.attn_v.weight", KV * D // H, D)
        mat(f"blk.{l}.attn_output.weight", D, D)
        norm(f"blk.{l}.ffn_norm.weight")
        mat(f"blk.{l}.ffn_gate.weight", F, D)
        mat(f"blk.{l}.ffn_up.weight", F, D)
        mat(f"blk.{l}.ffn_down.weight", D, F)
    norm("output_norm.weight")
    mat("output.weight", V, D)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ours(binary, path, threads, gen, kernel):
    cmd = [binary, "generate", "--model", path, "--ids", " ".join(str(i) for i in range(1, 9)), "--max-tokens",
           str(gen), "--greedy", "--ignore-eos", "--print-ids", "--threads", str(threads)]
    if kernel:
        cmd += ["--kernel", kernel]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"generated: \d+ tokens, ([0-9.]+) tokens/s", r.stderr)
    return float(m.group(1))


def llama(bench, path, threads, gen):
    r = subprocess.run([bench, "-m", path, "-t", str(threads), "-p", "0", "-n", str(gen), "-r", "3", "-o", "json"],
                       capture_output=True, text=True, check=True)
    return float(json.loads(r.stdout)[0]["avg_ts"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="./build/tinyllama")
    ap.add_argument("--dir", default="/tmp/tl_bench_gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--types", default="BF16,Q8_0,Q4_0")
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--rounds", type=int, default=2, help="runs per program and type, interleaved; best kept")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"))
    ap.add_argument("--shared", default=os.environ.get("TL_SHARED", os.path.join(HERE, "..", "..", "shared")))
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    print(f"{'type':6} {'file MB':>8} {'tinyllama tok/s':>16} {'GB/s':>6}" +
          (f" {'llama-bench tg tok/s':>21} {'ratio':>6}" if a.llama_bench else ""))
    for name in a.types.split(","):
        path = os.path.join(a.dir, f"tinyllama-1.1b-random-{name}.gguf")
        if not os.path.exists(path):
            print(f"writing {path}", file=sys.stderr)
            write_model(path + ".tmp", TYPES[name], a.shared)
            os.replace(path + ".tmp", path)
        size = os.path.getsize(path)
        # weights read per token: everything but the embedding table (one row of it)
        emb = V * D * {"BF16": 2, "Q8_0": 34 / 32, "Q4_0": 18 / 32}[name]
        ts, tl = [], []
        for _ in range(a.rounds):
            ts.append(ours(a.bin, path, a.threads, a.gen, a.kernel))
            if a.llama_bench:
                tl.append(llama(a.llama_bench, path, a.threads, a.gen))
        t = max(ts)
        line = f"{name:6} {size / 1e6:8.0f} {t:16.2f} {t * (size - emb) / 1e9:6.1f}"
        if a.llama_bench:
            line += f" {max(tl):21.2f} {t / max(tl):6.2f}"
        print(line + f"   (runs: ours {', '.join('%.2f' % x for x in ts)}" +
              (f"; llama.cpp {', '.join('%.2f' % x for x in tl)})" if tl else ")"), flush=True)


if __name__ == "__main__":
    main()

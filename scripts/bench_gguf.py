#!/usr/bin/env python3
"""Decode and prompt-pass speed on GGUF files: `tinyllama generate --model FILE.gguf` and,
when a llama-bench binary is given, llama.cpp's tg128 / pp512 on the same files, same threads.

The model is TinyLlama-1.1B's shape (22 layers, 2048 wide, 5632 hidden, 32 heads, 4 KV
heads, 32000 tokens) with random weights written by the `gguf` package, once per type,
under --dir (not committed): every matrix in the type (F16, BF16, Q8_0, Q4_0; Q4_K_M / Q5_K_M:
Q4_K / Q5_K and Q6_K placed as llama.cpp's mixes place them), the norms F32,
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
TYPES = {"F16": T.F16, "BF16": T.BF16, "Q8_0": T.Q8_0, "Q4_0": T.Q4_0, "Q4_K_M": "Q4_K_M", "Q5_K_M": "Q5_K_M"}
# llama.cpp's file_type numbers (general.file_type)
FILE_TYPE = {"F16": 1, "BF16": 32, "Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15, "Q5_K_M": 17}
# the K-quant mixes' base type
K_M_BASE = {"Q4_K_M": T.Q4_K, "Q5_K_M": T.Q5_K}


def k_m_type(mix, name, layer):
    """the block type llama.cpp's Q4_K_M / Q5_K_M mix gives a matrix: Q6_K for the output, and
    for attn_v / ffn_down in the first and last eighth of the layers and every third one between
    (llama-quant.cpp's use_more_bits, the same rule for both mixes); the mix's Q4_K / Q5_K
    everywhere else"""
    if name == "output.weight":
        return T.Q6_K
    more = layer is not None and (layer < L // 8 or layer >= 7 * L // 8 or (layer - L // 8) % 3 == 2)
    if more and (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight")):
        return T.Q6_K
    return K_M_BASE[mix]


def blocks(rng, qt, rows, cols):
    """random rows of qt's bytes (random quants, small finite scales where the block keeps them)"""
    if qt == T.BF16:
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).view(np.uint32)
        return (w >> 16).astype(np.uint16).view(np.uint8)
    if qt == T.F16:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16).view(np.uint8)
    be, bb = gguf.GGML_QUANT_SIZES[qt]
    b = rng.integers(0, 256, size=(rows * cols // be, bb), dtype=np.uint8)
    at, val = {T.Q8_0: ([0], 2e-4), T.Q4_0: ([0], 4e-3), T.Q4_K: ([0, 2], 2e-4), T.Q5_K: ([0, 2], 1e-4),
               T.Q6_K: ([208], 1e-4)}[qt]
    d = np.full(len(b), val, dtype=np.float16).reshape(-1, 1).view(np.uint8)
    for o in at:
        b[:, o:o + 2] = d
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
    w.add_file_type(FILE_TYPE[qt if isinstance(qt, str) else qt.name])
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
        m = re.match(r"blk\.(\d+)\.", name)
        t = k_m_type(qt, name, int(m.group(1)) if m else None) if qt in K_M_BASE else qt
        w.add_tensor(name, blocks(rng, t, rows, cols), raw_dtype=t)

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


def ours(binary, path, threads, gen, kernel, prompt=8, extra=()):
    """decode tokens/s after an 8-token prompt (gen > 0), or prompt-pass tokens/s of a
    prompt-token prompt (gen = 0: one token generated)"""
    ids = " ".join(str(100 + i % 30000) for i in range(prompt))
    cmd = [binary, "generate", "--model", path, "--ids", ids, "--max-tokens", str(max(gen, 1)), "--greedy",
           "--ignore-eos", "--print-ids", "--threads", str(threads), "--ctx", str(prompt + max(gen, 1) + 8),
           "--stats", *extra]
    if kernel:
        cmd += ["--kernel", kernel]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    if gen == 0:
        return float(re.search(r"prompt: \d+ tokens, ([0-9.]+) tokens/s", r.stderr).group(1))
    return float(re.search(r"generated: \d+ tokens, ([0-9.]+) tokens/s", r.stderr).group(1))


def llama(bench, path, threads, gen, prompt=0, reps=3):
    """llama-bench's tg<gen> (prompt 0) or pp<prompt> (gen 0) tokens/s, averaged over reps"""
    cmd = [bench, "-m", path, "-t", str(threads), "-p", str(prompt), "-n", str(gen), "-r", str(reps), "-o", "json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        # the llama.cpp build measured on 2026-12-06 (0c1e570, GGML_NATIVE on an AMX Xeon) crashes
        # in prompt processing with its repacked weights (the default); without repacking it runs
        print(f"llama-bench failed (exit {r.returncode}) on {path} pp{prompt} tg{gen}; again with --repack 0",
              file=sys.stderr)
        r = subprocess.run(cmd + ["--repack", "0"], capture_output=True, text=True)
        if r.returncode:  # reported, not fatal: the other runs still count
            print(f"llama-bench --repack 0 failed too (exit {r.returncode})", file=sys.stderr)
            return float("nan")
    return float(json.loads(r.stdout)[0]["avg_ts"])


def membw(binary, threads):
    """the better of membw's two read bandwidths (4 KiB and 2 MiB pages), GB/s, with threads threads"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r = subprocess.run([binary, "2048", "3"], capture_output=True, text=True, check=True, env=env)
    return max(float(v) for v in r.stdout.split())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="./build/tinyllama")
    ap.add_argument("--dir", default="/tmp/tl_bench_gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen", type=int, default=128, help="decode tokens (tg); 0: no decode runs")
    ap.add_argument("--prompt", type=int, default=512, help="prompt-pass tokens (pp); 0: no prompt runs")
    ap.add_argument("--types", default="BF16,Q8_0,Q4_0,Q4_K_M")
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--f32-activations", action="store_true", help="our exact fp32-activation kernels")
    ap.add_argument("--rounds", type=int, default=2, help="runs per program and type, interleaved; best kept")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions per run (-r)")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"))
    ap.add_argument("--membw", default=None, help="compiled scripts/membw.c: report decode against its bound")
    ap.add_argument("--shared", default=os.environ.get("TL_SHARED", os.path.join(HERE, "..", "..", "shared")))
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    extra = ["--f32-activations"] if a.f32_activations else []
    lb = a.llama_bench
    print(f"{'type':7} {'file MB':>8} {'test':>6} {'tinyllama tok/s':>16} {'GB/s':>6}" +
          (f" {'llama-bench tok/s':>18} {'ratio':>6}" if lb else ""))
    for name in a.types.split(","):
        path = os.path.join(a.dir, f"tinyllama-1.1b-random-{name}.gguf")
        if not os.path.exists(path):
            print(f"writing {path}", file=sys.stderr)
            write_model(path + ".tmp", TYPES[name], a.shared)
            os.replace(path + ".tmp", path)
        size = os.path.getsize(path)
        # weights read per token: everything but the embedding table (one row of it)
        emb = V * D * {"F16": 2, "BF16": 2, "Q8_0": 34 / 32, "Q4_0": 18 / 32, "Q4_K_M": 144 / 256,
                       "Q5_K_M": 176 / 256}[name]
        tests = ([("tg%d" % a.gen, a.gen, 8)] if a.gen else []) + ([("pp%d" % a.prompt, 0, a.prompt)] if a.prompt else [])
        runs = {t[0]: ([], []) for t in tests}
        bw = []
        for _ in range(a.rounds):  # interleaved: both programs see the same load
            if a.membw and a.gen:
                bw.append(membw(a.membw, a.threads))
            for label, gen, prompt in tests:
                runs[label][0].append(ours(a.bin, path, a.threads, gen, a.kernel, prompt, extra))
                if lb:
                    runs[label][1].append(llama(lb, path, a.threads, gen, 0 if gen else prompt, a.reps))
        load = "load average %.1f %.1f %.1f" % os.getloadavg()  # the machine is shared: say how busy it was
        for label, _, _ in tests:
            ts, tl = runs[label]
            tl = [x for x in tl if x == x] or [float("nan")]
            t = max(ts)
            gbs = f"{t * (size - emb) / 1e9:6.1f}" if label.startswith("tg") else f"{'':6}"
            line = f"{name:7} {size / 1e6:8.0f} {label:>6} {t:16.2f} {gbs}"
            if lb:
                line += f" {max(tl):18.2f} {t / max(tl):6.2f}"
            if bw and label.startswith("tg"):
                # bound: the best bandwidth measured, over the bytes read per token
                bound = max(bw) * 1e9 / (size - emb)
                line += f"   bound {bound:.2f} tok/s ({max(bw):.1f} GB/s), ours {100 * t / bound:.0f}% of it"
            print(line + f"   (runs: ours {', '.join('%.2f' % x for x in ts)}" +
                  (f"; llama.cpp {', '.join('%.2f' % x for x in tl)}" if tl else "") + f"; {load})", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the quantizer fixtures of tests/test_quantize.c into tests/fixtures/quantize/,
with ggml itself as the oracle: ggml_quantize_chunk of llama.cpp's libggml-base.so
(called through ctypes, no importance matrix: the reference quantizers that
llama-quantize uses), on random rows of several shapes of distribution.

  input.f32          ROWS x N fp32 (raw little-endian)
  <TYPE>.bin         the same rows quantized by ggml, for F32 F16 BF16 Q8_0 Q4_0 Q4_1
                     Q5_0 Q5_1 Q4_K Q5_K Q6_K
  mix_<FTYPE>.txt    the tensor types llama-quantize chose for FTYPE (Q4_K_M Q5_K_M Q4_0
                     Q8_0) on a 22-layer Llama (TinyLlama's depth; rows of 256, and of 288
                     for ffn_down, which is not a whole K-quant super-block) that the gguf
                     package wrote in F32: "name<TAB>type<TAB>n_dims<TAB>ne0" per tensor

For the types the `gguf` package can quantize (gguf.quants.quantize: F16 BF16 Q8_0
Q4_0 Q4_1 Q5_0 Q5_1) its blocks are checked equal to ggml's as well, so two
independent implementations agree on the fixture.

Usage: scripts/gen_quantize_fixtures.py [--lib /tmp/llamacpp/build/bin/libggml-base.so]
                                        [--llama-quantize /tmp/llamacpp/build/bin/llama-quantize]
Needs: pip install gguf numpy; a llama.cpp build (scripts/check_gguf_llamacpp.sh builds one).
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np

TYPES = {'F32': 0, 'F16': 1, 'Q4_0': 2, 'Q4_1': 3, 'Q5_0': 6, 'Q5_1': 7, 'Q8_0': 8,
         'Q4_K': 12, 'Q5_K': 13, 'Q6_K': 14, 'BF16': 30}
ROWS, N = 12, 512


def rows():
    rng = np.random.default_rng(17)
    x = np.empty((ROWS, N), dtype=np.float32)
    x[0] = rng.standard_normal(N) * 0.02              # weights-like
    x[1] = rng.standard_normal(N)                     # unit scale
    x[2] = rng.uniform(0, 1, N)                       # all positive (min > 0)
    x[3] = -rng.uniform(0, 3, N)                      # all negative
    x[4] = rng.standard_normal(N) * 0.02
    x[4][::37] *= 50                                  # outliers
    x[5] = 0                                          # zero blocks
    x[5][300:340] = rng.standard_normal(40)
    x[6] = 0.5                                        # constant
    x[7] = rng.standard_normal(N) * 1e-6              # tiny (f16 subnormal scales)
    x[8] = rng.laplace(0, 0.05, N)
    x[9] = np.round(rng.standard_normal(N) * 4) / 4   # many ties
    x[10] = rng.standard_normal(N) * 1e4              # large (f16 overflow region for F16)
    x[10][:8] = [65504, 65520, -70000, 1e-8, 6e-8, 3e-8, 2.9802322e-08, -0.0]
    x[11] = rng.standard_normal(N).astype(np.float32) * np.linspace(0.001, 2, N, dtype=np.float32)
    return x


def mix_fixtures(quantize, out):
    import gguf
    rng = np.random.default_rng(5)
    L, D, F, V = 22, 256, 288, 256
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'f32.gguf')
        w = gguf.GGUFWriter(src, 'llama')
        w.add_block_count(L)
        w.add_context_length(64)
        w.add_embedding_length(D)
        w.add_feed_forward_length(F)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(D // 4)
        w.add_file_type(0)
        w.add_tokenizer_model('llama')
        w.add_token_list([f'<t{i}>'.encode() for i in range(V)])
        w.add_token_scores([0.0] * V)
        w.add_token_types([1] * V)

        def t(name, *shape):  # shape as numpy: rows first
            w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
        t('token_embd.weight', V, D)
        for i in range(L):
            p = f'blk.{i}.'
            w.add_tensor(p + 'attn_norm.weight', np.ones(D, np.float32))
            t(p + 'attn_q.weight', D, D)
            t(p + 'attn_k.weight', D // 2, D)
            t(p + 'attn_v.weight', D // 2, D)
            t(p + 'attn_output.weight', D, D)
            w.add_tensor(p + 'ffn_norm.weight', np.ones(D, np.float32))
            t(p + 'ffn_gate.weight', F, D)
            t(p + 'ffn_up.weight', F, D)
            t(p + 'ffn_down.weight', D, F)
        w.add_tensor('output_norm.weight', np.ones(D, np.float32))
        t('output.weight', V, D)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        for ft in ('Q4_K_M', 'Q5_K_M', 'Q4_0', 'Q8_0'):
            dst = os.path.join(tmp, ft + '.gguf')
            subprocess.run([quantize, src, dst, ft], check=True, capture_output=True)
            r = gguf.GGUFReader(dst)
            with open(os.path.join(out, f'mix_{ft}.txt'), 'w') as f:
                for tt in r.tensors:
                    f.write(f'{tt.name}\t{tt.tensor_type.name}\t{len(tt.shape)}\t{int(tt.shape[0])}\n')
            print(f'mix_{ft}.txt: {len(r.tensors)} tensors')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', default='/tmp/llamacpp/build/bin/libggml-base.so')
    ap.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', 'tests', 'fixtures', 'quantize'))
    ap.add_argument('--llama-quantize', default='/tmp/llamacpp/build/bin/llama-quantize')
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    x = np.ascontiguousarray(rows())
    os.makedirs(a.out, exist_ok=True)
    x.tofile(os.path.join(a.out, 'input.f32'))
    try:
        import gguf.quants
        from gguf import GGMLQuantizationType as QT
    except ImportError:
        gguf = None
    for name, t in TYPES.items():
        size = lib.ggml_row_size(t, N) * ROWS
        buf = (ctypes.c_uint8 * size)()
        got = lib.ggml_quantize_chunk(t, x.ctypes.data, buf, 0, ROWS, N, None)
        assert got == size, (name, got, size)
        data = bytes(buf)
        with open(os.path.join(a.out, name + '.bin'), 'wb') as f:
            f.write(data)
        if gguf is not None and name in ('F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1'):
            try:
                py = gguf.quants.quantize(x, QT[name]).tobytes()
            except NotImplementedError:
                continue
            same = py == data
            print(f'{name}: gguf.quants.quantize {"equals" if same else "DIFFERS FROM"} ggml')
            if not same and name != 'BF16':  # gguf-py flushes bf16 subnormals, ggml does not
                sys.exit(f'{name}: the two oracles disagree')
        print(f'{name}: {size} bytes')
    mix_fixtures(a.llama_quantize, a.out)


if __name__ == '__main__':
    main()

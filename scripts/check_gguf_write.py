#!/usr/bin/env python3
"""The gguf package (llama.cpp's gguf-py) as the oracle of the GGUF files we write.

For an HF directory (default: tests/fixtures/infer_gqa_f32, and with --model also the
directory given), `tinyllama quantize` writes it in every type; then for each file:
  - GGUFReader reads every key and tensor (the layout, offsets and alignment are right);
  - the general.*/llama.* keys agree with config.json; tokenizer.ggml.tokens/scores/token_type
    equal the tokenizer.model's pieces/scores/types as `sentencepiece` reads them (llama.cpp's
    converter copies exactly these), padded with [PADn] pieces to the model's vocabulary;
  - every tensor, dequantized by gguf.quants.dequantize and with q/k rows put back in HF order
    (llama.cpp's converter permutation, re-implemented here), equals bit for bit our own
    dequantization (`tinyllama convert --to-hf`, F32 safetensors);
  - for the types gguf.quants can quantize (F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1), every tensor's
    blocks equal gguf.quants.quantize of the HF weights (permuted as the converter does).
Prints one line per check and "N passed, N failed".
Usage: scripts/check_gguf_write.py [--model DIR] [--bin build/tinyllama]
Needs: pip install gguf numpy sentencepiece
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGUFReader, GGMLQuantizationType as QT
import gguf.quants

TYPES = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K_M', 'Q5_K_M', 'Q6_K']
PY_QUANT = {'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1'}
HF_NAMES = {'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj', 'attn_v': 'self_attn.v_proj',
            'attn_output': 'self_attn.o_proj', 'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
            'ffn_down': 'mlp.down_proj', 'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm'}
passed = failed = 0


def check(name, cond, detail=''):
    global passed, failed
    if cond:
        passed += 1
        print(f'ok   {name}')
    else:
        failed += 1
        print(f'FAIL {name} {detail}')


def load_st(path):
    """safetensors (F32/BF16/F16) -> {name: float32 array}"""
    out = {}
    files = [path] if os.path.isfile(path) else None
    if files is None:
        idx = os.path.join(path, 'model.safetensors.index.json')
        if os.path.exists(idx):
            files = sorted({os.path.join(path, f) for f in json.load(open(idx))['weight_map'].values()})
        else:
            files = [os.path.join(path, 'model.safetensors')]
    for f in files:
        data = open(f, 'rb').read()
        (n,) = struct.unpack('<Q', data[:8])
        head = json.loads(data[8:8 + n])
        for name, info in head.items():
            if name == '__metadata__':
                continue
            a, b = info['data_offsets']
            raw = data[8 + n + a:8 + n + b]
            if info['dtype'] == 'F32':
                v = np.frombuffer(raw, np.float32)
            elif info['dtype'] == 'F16':
                v = np.frombuffer(raw, np.float16).astype(np.float32)
            elif info['dtype'] == 'BF16':
                v = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                sys.exit(f'{f}: {name}: dtype {info["dtype"]}')
            out[name] = v.reshape(info['shape'])
    return out


def permute(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def hf_name(name):
    if name == 'token_embd.weight':
        return 'model.embed_tokens.weight'
    if name == 'output_norm.weight':
        return 'model.norm.weight'
    if name == 'output.weight':
        return 'lm_head.weight'
    _, layer, role, _ = name.split('.')
    return f'model.layers.{layer}.{HF_NAMES[role]}.weight'


def field(r, key):
    f = r.fields[key]
    return f.contents()


def check_dir(bin_, model, tmp):
    import sentencepiece as spm
    cfg = json.load(open(os.path.join(model, 'config.json')))
    hf = load_st(model)
    n_head, n_kv = cfg['num_attention_heads'], cfg.get('num_key_value_heads', cfg['num_attention_heads'])
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model, 'tokenizer.model'))
    tag = os.path.basename(os.path.normpath(model))
    for t in TYPES:
        path = os.path.join(tmp, f'{tag}_{t}.gguf')
        subprocess.run([bin_, 'quantize', model, path, t, '--quiet'], check=True, stderr=subprocess.DEVNULL)
        r = GGUFReader(path)
        check(f'{tag} {t}: GGUFReader reads {len(r.fields)} keys and {len(r.tensors)} tensors', len(r.tensors) > 0)
        keys_ok = (field(r, 'general.architecture') == 'llama' and
                   field(r, 'llama.embedding_length') == cfg['hidden_size'] and
                   field(r, 'llama.feed_forward_length') == cfg['intermediate_size'] and
                   field(r, 'llama.block_count') == cfg['num_hidden_layers'] and
                   field(r, 'llama.attention.head_count') == n_head and
                   field(r, 'llama.attention.head_count_kv') == n_kv and
                   field(r, 'llama.context_length') == cfg['max_position_embeddings'] and
                   abs(field(r, 'llama.attention.layer_norm_rms_epsilon') - cfg['rms_norm_eps']) < 1e-12 and
                   field(r, 'general.alignment') == 32)
        check(f'{tag} {t}: general.* and llama.* keys agree with config.json', keys_ok)
        V = cfg['vocab_size']
        toks, scores, types = (field(r, k) for k in ('tokenizer.ggml.tokens', 'tokenizer.ggml.scores',
                                                    'tokenizer.ggml.token_type'))
        n = sp.get_piece_size()
        want_t = [sp.id_to_piece(i) for i in range(n)] + [f'[PAD{i}]' for i in range(1, V - n + 1)]
        want_s = [sp.get_score(i) for i in range(n)] + [-1000.0] * (V - n)

        def sptype(i):
            return 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
        want_y = [sptype(i) for i in range(n)] + [5] * (V - n)
        check(f'{tag} {t}: tokenizer.ggml.tokens/scores/token_type are sentencepiece\'s',
              list(toks) == want_t and np.array_equal(np.float32(scores), np.float32(want_s)) and list(types) == want_y and
              field(r, 'tokenizer.ggml.model') == 'llama' and field(r, 'tokenizer.ggml.bos_token_id') == sp.bos_id() and
              field(r, 'tokenizer.ggml.eos_token_id') == sp.eos_id() and field(r, 'tokenizer.ggml.unknown_token_id') == sp.unk_id())
        back = os.path.join(tmp, f'{tag}_{t}_hf')
        subprocess.run([bin_, 'convert', '--to-hf', path, '--out', back], check=True, stderr=subprocess.DEVNULL)
        ours = load_st(back)
        bad_deq, bad_q = [], []
        for tt in r.tensors:
            shape = tuple(int(x) for x in reversed(tt.shape))  # numpy order: rows first
            deq = gguf.quants.dequantize(tt.data, tt.tensor_type).reshape(shape).astype(np.float32)
            role = tt.name.split('.')[-2]
            h = n_head if role == 'attn_q' else n_kv if role == 'attn_k' else 0
            if h:
                deq = unpermute(deq, h)
            name = hf_name(tt.name)
            if not np.array_equal(deq.view(np.uint32), ours[name].reshape(shape).view(np.uint32)):
                bad_deq.append(tt.name)
            if t in PY_QUANT and tt.tensor_type.name in PY_QUANT:
                src = hf[name].astype(np.float32)
                if h:
                    src = permute(src, h)
                q = gguf.quants.quantize(src, tt.tensor_type)
                if q.tobytes() != bytes(tt.data.tobytes()):
                    bad_q.append(tt.name)
        check(f'{tag} {t}: gguf.quants.dequantize of every tensor equals ours bit for bit', not bad_deq, str(bad_deq[:3]))
        if t in PY_QUANT:
            check(f'{tag} {t}: the blocks equal gguf.quants.quantize of the HF weights', not bad_q, str(bad_q[:3]))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    ap.add_argument('--model', action='append', default=[])
    ap.add_argument('--bin', default=os.path.join(here, 'build', 'tinyllama'))
    a = ap.parse_args()
    models = [os.path.join(here, 'tests', 'fixtures', 'infer_gqa_f32')] + a.model
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            check_dir(a.bin, m, tmp)
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Writes the GGUF fixtures of tests/test_gguf.c into tests/fixtures/gguf/, with the
`gguf` package (llama.cpp's gguf-py) as the independent writer and dequantizer:

  quants.gguf + quants_<TYPE>.f32   one [256, 4] tensor per type (F32 F16 BF16 Q8_0 Q4_0
                                    Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K) and its fp32 values as
                                    gguf.quants.dequantize gives them (raw little-endian)
  tiny_llama.gguf                   a 1-layer Llama (llama.* keys, tokenizer.ggml.* of a
                                    tiny vocabulary, a chat template), its tensors in
                                    several types, plus metadata of every value type
                                    (nested arrays included)
  tiny_llama_kv.txt                 every key as written: "key<TAB>TYPE<TAB>value"
  tiny_llama_tensors.txt            every tensor as GGUFReader reads it back:
                                    "name<TAB>TYPE<TAB>ne0,ne1,..<TAB>absolute data offset"
  tiny_llama_{q,k}_hf.f32           attn_q / attn_k in HF row order (before the converter's
                                    permutation, which this script re-implements)
  tiny_llama_logits.f32             [8, 32] logits of tokens 1 7 18 19 20 3 25 9, from HF
                                    Llama's definition in numpy (float64) on those weights
  llama2_tokenizer.gguf.zst         tokenizer.ggml.* of ../shared/tokenizers/llama2/
                                    tokenizer.model, read with `sentencepiece` as llama.cpp's
                                    converter does (zstd-compressed: 700 KB raw)

Needs: pip install gguf numpy sentencepiece zstandard  (or the zstd command)
"""
import os
import struct
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "gguf")
SHARED = os.environ.get("TL_SHARED", os.path.join(HERE, "..", "..", "shared"))
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(1234)


def f16_bytes(x):
    return np.asarray(x, dtype=np.float16).reshape(-1, 1).view(np.uint8)


def random_k_blocks(qtype, n_blocks):
    """Random but valid blocks of a K-quant type that gguf-py can only dequantize:
    random bytes for quants and scales, finite random f16 super-block scales (a few of
    them subnormal, which the fp16 conversion must get exactly right)."""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    d = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
    dmin = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
    d[0] = np.float16(3e-6)  # subnormal in f16
    if qtype == T.Q6_K:  # ql qh scales d: d is last
        b[:, -2:] = f16_bytes(d)
    else:  # d dmin scales ...
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(dmin)
    return b


def quantized(qtype, data):
    """data (fp32, [rows, 256]) in qtype's bytes, shaped as the writer wants them."""
    if qtype == T.F32:
        return data
    if qtype == T.F16:
        return data.astype(np.float16)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        rows, cols = data.shape
        _, size = gguf.GGML_QUANT_SIZES[qtype]
        return random_k_blocks(qtype, rows * cols // 256).reshape(rows, cols // 256 * size)
    return gguf.quants.quantize(data, qtype)


# ---------------------------------------------------------------- quants.gguf
types = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]
w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), "none")
for qt in types:
    data = (rng.standard_normal((4, 256)) * 0.5).astype(np.float32)
    if qt == T.F16:  # special values: signed zero, f16 subnormals, the largest half
        data[0, :5] = [-0.0, 6e-8, -3e-5, 65504.0, 1e-4]
    q = quantized(qt, data)
    w.add_tensor(qt.name, q, raw_dtype=qt if qt not in (T.F32, T.F16) else None)
    expect = gguf.quants.dequantize(q.view(np.uint8) if qt not in (T.F32, T.F16) else q, qt)
    expect = np.asarray(expect, dtype=np.float32).reshape(4, 256)
    expect.astype("<f4").tofile(os.path.join(OUT, f"quants_{qt.name}.f32"))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# ---------------------------------------------------------------- tiny_llama.gguf
DIM, HIDDEN, HEADS, KV_HEADS, VOCAB, CTX = 32, 64, 4, 2, 32, 128
HD = DIM // HEADS


def permute(weights, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute: inside each head, the rows of the two
    rotary halves are interleaved (HF row j*hd/2+i goes to row 2*i+j)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(4)] + \
         ["\u2581" + c for c in "abcdefghij"] + list("abcdefghijklmno")
tokens = tokens[:VOCAB]
scores = [0.0, 0.0, 0.0] + [0.0] * 4 + [-float(i) for i in range(VOCAB - 7)]
toktypes = [2, 3, 3] + [1] * (VOCAB - 3)  # no byte pieces: 4 <0x..> as plain tokens here
CHAT_TEMPLATE = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
                 "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% endif %}\n{% endfor %}")

w = gguf.GGUFWriter(os.path.join(OUT, "tiny_llama.gguf"), "llama")
kv = []  # (key, type name, rendering) in the order written


def render(vtype, val, sub=None):
    if vtype == V.ARRAY:
        if sub is None:
            sub = V.get_type(val[0])
        inner = []
        for x in val:
            inner.append(render(sub, x))
        return f"{sub.name}[" + ",".join(inner) + "]"
    if vtype == V.BOOL:
        return "true" if val else "false"
    if vtype == V.FLOAT32:
        return "%.9g" % np.float32(val)
    if vtype == V.FLOAT64:
        return "%.17g" % val
    if vtype == V.STRING:
        return val.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return str(int(val))


def add(key, val, vtype, sub=None):
    w.add_key_value(key, val, vtype, sub_type=sub)
    kv.append((key, vtype.name, render(vtype, val, sub)))


kv.append(("general.architecture", "STRING", "llama"))  # the writer adds it first
add("general.name", "tiny llama \u00e9\u4e2d", V.STRING)
add("general.alignment", 64, V.UINT32)
add("llama.context_length", CTX, V.UINT32)
add("llama.embedding_length", DIM, V.UINT32)
add("llama.feed_forward_length", HIDDEN, V.UINT32)
add("llama.block_count", 1, V.UINT32)
add("llama.attention.head_count", HEADS, V.UINT32)
add("llama.attention.head_count_kv", KV_HEADS, V.UINT32)
add("llama.rope.freq_base", 500000.0, V.FLOAT32)
add("llama.attention.layer_norm_rms_epsilon", 1e-6, V.FLOAT32)
add("llama.rope.dimension_count", HD, V.UINT32)
add("llama.vocab_size", VOCAB, V.UINT32)
add("tokenizer.ggml.model", "llama", V.STRING)
add("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
add("tokenizer.ggml.scores", scores, V.ARRAY, V.FLOAT32)
add("tokenizer.ggml.token_type", toktypes, V.ARRAY, V.INT32)
add("tokenizer.ggml.bos_token_id", 1, V.UINT32)
add("tokenizer.ggml.eos_token_id", 2, V.UINT32)
add("tokenizer.ggml.unknown_token_id", 0, V.UINT32)
add("tokenizer.ggml.add_bos_token", True, V.BOOL)
add("tokenizer.ggml.add_eos_token", False, V.BOOL)
add("tokenizer.chat_template", CHAT_TEMPLATE, V.STRING)
# one key of every other value type, and nested arrays
add("test.u8", 200, V.UINT8)
add("test.i8", -100, V.INT8)
add("test.u16", 60000, V.UINT16)
add("test.i16", -30000, V.INT16)
add("test.i32", -2000000000, V.INT32)
add("test.u64", 18446744073709551615, V.UINT64)
add("test.i64", -9000000000000000000, V.INT64)
add("test.f64", 0.1, V.FLOAT64)
add("test.false", False, V.BOOL)
add("test.arr_u8", [1, 2, 255], V.ARRAY, V.UINT8)
add("test.arr_bool", [True, False, True], V.ARRAY, V.BOOL)
add("test.arr_f64", [1.5, -2.25], V.ARRAY, V.FLOAT64)
add("test.arr_i64", [-1, 2**40], V.ARRAY, V.INT64)
add("test.nested", [[1, 2, 3], [4], [5, 6]], V.ARRAY)
add("test.nested_str", [["a", "bc"], ["\u00fcber"]], V.ARRAY)
add("test.nested3", [[[1.0, 2.0]], [[3.0], [4.0, 5.0]]], V.ARRAY)

q_hf = (rng.standard_normal((HEADS * HD, DIM)) * 0.3).astype(np.float32)
k_hf = (rng.standard_normal((KV_HEADS * HD, DIM)) * 0.3).astype(np.float16).astype(np.float32)
q_hf.astype("<f4").tofile(os.path.join(OUT, "tiny_llama_q_hf.f32"))
k_hf.astype("<f4").tofile(os.path.join(OUT, "tiny_llama_k_hf.f32"))


def rnd(rows, cols):
    return (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32)


tensors = [
    ("token_embd.weight", rnd(VOCAB, DIM), T.Q8_0),
    ("blk.0.attn_norm.weight", 1 + rnd(1, DIM)[0] * 0.1, T.F32),
    ("blk.0.attn_q.weight", permute(q_hf, HEADS, HEADS), T.F32),
    ("blk.0.attn_k.weight", permute(k_hf, HEADS, KV_HEADS), T.F16),
    ("blk.0.attn_v.weight", rnd(KV_HEADS * HD, DIM), T.BF16),
    ("blk.0.attn_output.weight", rnd(DIM, DIM), T.Q4_0),
    ("blk.0.ffn_norm.weight", 1 + rnd(1, DIM)[0] * 0.1, T.F32),
    ("blk.0.ffn_gate.weight", rnd(HIDDEN, DIM), T.Q4_1),
    ("blk.0.ffn_up.weight", rnd(HIDDEN, DIM), T.Q5_0),
    ("blk.0.ffn_down.weight", rnd(DIM, HIDDEN), T.Q5_1),
    ("output_norm.weight", 1 + rnd(1, DIM)[0] * 0.1, T.F32),
    ("output.weight", rnd(VOCAB, DIM), T.Q8_0),
]
weights = {}  # the values as stored, dequantized by the package (GGUF row order)
for name, data, qt in tensors:
    if qt == T.F32:
        w.add_tensor(name, data)
        weights[name] = data
    elif qt == T.F16:
        w.add_tensor(name, data.astype(np.float16))
        weights[name] = data.astype(np.float16).astype(np.float32)
    else:
        q = gguf.quants.quantize(data, qt)
        w.add_tensor(name, q, raw_dtype=qt)
        weights[name] = np.asarray(gguf.quants.dequantize(q, qt), dtype=np.float32).reshape(data.shape)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

with open(os.path.join(OUT, "tiny_llama_kv.txt"), "w", encoding="utf-8", newline="\n") as f:
    for key, tname, r in kv:
        f.write(f"{key}\t{tname}\t{r}\n")

# logits of the model in HF layout, computed here from HF LlamaForCausalLM's
# definition in float64 (rotate_half RoPE on the HF q/k rows), for the test of the
# GGUF -> HF directory conversion
LOGIT_TOKENS = [1, 7, 18, 19, 20, 3, 25, 9]


def llama_logits(tok, weights=weights, q_hf=q_hf, k_hf=k_hf, DIM=DIM, HEADS=HEADS, KV_HEADS=KV_HEADS):
    HD = DIM // HEADS
    W = {k: v.astype(np.float64) for k, v in weights.items()}
    W["blk.0.attn_q.weight"] = q_hf.astype(np.float64)
    W["blk.0.attn_k.weight"] = k_hf.astype(np.float64)
    eps, theta, n = 1e-6, 500000.0, len(tok)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float64(np.float32(eps))) * g

    inv = 1.0 / theta ** (np.arange(0, HD, 2) / HD)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(x):  # [n, heads, HD]
        rot = np.concatenate([-x[..., HD // 2:], x[..., :HD // 2]], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    x = W["token_embd.weight"][tok]
    h = rms(x, W["blk.0.attn_norm.weight"])
    q = rope((h @ W["blk.0.attn_q.weight"].T).reshape(n, HEADS, HD))
    k = rope((h @ W["blk.0.attn_k.weight"].T).reshape(n, KV_HEADS, HD))
    v = (h @ W["blk.0.attn_v.weight"].T).reshape(n, KV_HEADS, HD)
    out = np.zeros((n, HEADS, HD))
    for hh in range(HEADS):
        kv = hh // (HEADS // KV_HEADS)
        sc = q[:, hh] @ k[:, kv].T / np.sqrt(HD)
        sc = np.where(np.tril(np.ones((n, n))) > 0, sc, -np.inf)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, hh] = p @ v[:, kv]
    x = x + out.reshape(n, DIM) @ W["blk.0.attn_output.weight"].T
    h = rms(x, W["blk.0.ffn_norm.weight"])
    gt, up = h @ W["blk.0.ffn_gate.weight"].T, h @ W["blk.0.ffn_up.weight"].T
    x = x + (gt / (1 + np.exp(-gt)) * up) @ W["blk.0.ffn_down.weight"].T
    return rms(x, W["output_norm.weight"]) @ W["output.weight"].T


llama_logits(LOGIT_TOKENS).astype("<f4").tofile(os.path.join(OUT, "tiny_llama_logits.f32"))

# the tensor table as the package's own reader sees it
reader = gguf.GGUFReader(os.path.join(OUT, "tiny_llama.gguf"))
assert len(reader.fields) == len(kv) + 3, (len(reader.fields), len(kv))  # + version, counts
with open(os.path.join(OUT, "tiny_llama_tensors.txt"), "w", newline="\n") as f:
    for t in reader.tensors:
        dims = ",".join(str(int(x)) for x in t.shape)
        f.write(f"{t.name}\t{t.tensor_type.name}\t{dims}\t{t.data_offset}\n")

# ---------------------------------------------------------------- llama2_tokenizer.gguf
import sentencepiece as spm  # noqa: E402

sp = spm.SentencePieceProcessor(model_file=os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.model"))
toks, scs, tts = [], [], []
for i in range(sp.vocab_size()):
    toks.append(sp.id_to_piece(i))
    scs.append(sp.get_score(i))
    tt = 1  # as convert_hf_to_gguf.py's _create_vocab_sentencepiece classifies them
    if sp.is_unknown(i):
        tt = 2
    elif sp.is_control(i):
        tt = 3
    elif sp.is_unused(i):
        tt = 5
    elif sp.is_byte(i):
        tt = 6
    tts.append(tt)
raw = os.path.join(OUT, "llama2_tokenizer.gguf")
w = gguf.GGUFWriter(raw, "llama")
w.add_tokenizer_model("llama")
w.add_token_list(toks)
w.add_token_scores(scs)
w.add_token_types(tts)
w.add_bos_token_id(sp.bos_id())
w.add_eos_token_id(sp.eos_id())
w.add_unk_token_id(sp.unk_id())
w.add_add_bos_token(True)
w.add_add_eos_token(False)
w.add_chat_template(CHAT_TEMPLATE)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
subprocess.run(["zstd", "-19", "-q", "-f", "--rm", raw, "-o", raw + ".zst"], check=True)

# ---------------------------------------------------------------- tiny256_<TYPE>.gguf
# The same kind of 1-layer model 256 wide (the K-quants' super-block), every matrix in
# one type, for the inference engine's end-to-end test (tests/test_infer_gguf.c):
#   tiny256_<TYPE>.gguf     the model (q/k permuted as llama.cpp's converter does)
#   tiny256_<TYPE>.logits   [8, 32] fp32 logits of LOGIT_TOKENS, float64 numpy on the
#                           weights as the package dequantizes them, HF row order
D2, HEADS2, KV2, HIDDEN2 = 256, 4, 2, 256
HD2 = D2 // HEADS2
K_SCALE = {T.Q4_K: 2e-4, T.Q5_K: 1e-4, T.Q6_K: 4e-5}  # weights of a few hundredths
# chat templates in the style of the three families `tinyllama chat` recognises (the
# others keep CHAT_TEMPLATE, which it must refuse without --chat-template)
TEMPLATES = {
    T.Q8_0: ("{% for message in messages %}{% if message['role'] == 'user' %}"
             "{{ '<|user|>\\n' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
             "{{ '<|system|>\\n' + message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}"
             "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}"
             "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"),
    T.Q4_0: ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
             " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
             "{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    T.Q4_K: ("{% for message in messages %}{% if message['role'] == 'user' %}"
             "{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
             "{{ ' '  + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"),
}


def k_blocks(qtype, rows, cols):
    """random valid K-quant rows (random_k_blocks with super-block scales made small)"""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(rows * cols // 256, size), dtype=np.uint8)
    d = (rng.standard_normal(len(b)) * K_SCALE[qtype]).astype(np.float16)
    dmin = (np.abs(rng.standard_normal(len(b))) * K_SCALE[qtype] * 4).astype(np.float16)
    if qtype == T.Q6_K:
        b[:, -2:] = f16_bytes(d)
    else:
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(dmin)
    return b.reshape(rows, cols // 256 * size)


for qt in [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]:
    w = gguf.GGUFWriter(os.path.join(OUT, f"tiny256_{qt.name}.gguf"), "llama")
    w.add_uint32("llama.context_length", CTX)
    w.add_uint32("llama.embedding_length", D2)
    w.add_uint32("llama.feed_forward_length", HIDDEN2)
    w.add_uint32("llama.block_count", 1)
    w.add_uint32("llama.attention.head_count", HEADS2)
    w.add_uint32("llama.attention.head_count_kv", KV2)
    w.add_float32("llama.rope.freq_base", 500000.0)  # as llama_logits assumes
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(toktypes)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template(TEMPLATES.get(qt, CHAT_TEMPLATE))
    shapes = [("token_embd.weight", VOCAB, D2), ("blk.0.attn_q.weight", D2, D2),
              ("blk.0.attn_k.weight", KV2 * HD2, D2), ("blk.0.attn_v.weight", KV2 * HD2, D2),
              ("blk.0.attn_output.weight", D2, D2), ("blk.0.ffn_gate.weight", HIDDEN2, D2),
              ("blk.0.ffn_up.weight", HIDDEN2, D2), ("blk.0.ffn_down.weight", D2, HIDDEN2),
              ("output.weight", VOCAB, D2)]
    deq = {}
    for name, rows, cols in shapes:
        if qt in K_SCALE:
            q = k_blocks(qt, rows, cols)
        else:
            data = (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32)
            q = data.astype(np.float16) if qt == T.F16 else gguf.quants.quantize(data, qt)
        if qt == T.F16:
            w.add_tensor(name, q)
            deq[name] = q.astype(np.float32)
        else:
            w.add_tensor(name, q, raw_dtype=qt)
            deq[name] = np.asarray(gguf.quants.dequantize(q, qt), dtype=np.float32).reshape(rows, cols)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        deq[name] = 1 + rnd(1, D2)[0] * 0.1
        w.add_tensor(name, deq[name])
    # the file holds q/k as the converter leaves them: what the engine must undo
    q_gg, k_gg = deq["blk.0.attn_q.weight"], deq["blk.0.attn_k.weight"]
    q_h = q_gg.reshape(HEADS2, HD2 // 2, 2, D2).swapaxes(1, 2).reshape(D2, D2)
    k_h = k_gg.reshape(KV2, HD2 // 2, 2, D2).swapaxes(1, 2).reshape(KV2 * HD2, D2)
    assert np.array_equal(permute(q_h, HEADS2, HEADS2), q_gg)
    assert np.array_equal(permute(k_h, HEADS2, KV2), k_gg)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    lg = llama_logits(LOGIT_TOKENS, deq, q_h, k_h, D2, HEADS2, KV2)
    lg.astype("<f4").tofile(os.path.join(OUT, f"tiny256_{qt.name}.logits"))
print("wrote", sorted(os.listdir(OUT)), file=sys.stderr)

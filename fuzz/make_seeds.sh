#!/usr/bin/env bash
# Writes the seed corpora fuzz/corpus/<target>/: a few valid files made with our
# own CLI (tokenizer.model, shards) or spelled out here byte by byte (safetensors,
# training state: python3 only packs the bytes the formats in docs/formats.md
# describe), and a few broken ones.  Usage: fuzz/make_seeds.sh [path/to/tinyllama]
# The committed corpora came from this script (plus regress_* files: inputs that found
# bugs, which it keeps); rerun it only to refresh them.  Never point a fuzzer at
# fuzz/corpus/ itself: it would add what it finds (scripts/fuzz.sh works on a copy).
set -eu
cd "$(dirname "$0")/.."
TL=${1:-build/tinyllama}
C=fuzz/corpus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# inputs that found bugs (regress_*) stay
find "$C" -type f ! -name 'regress_*' -delete 2>/dev/null || true
mkdir -p "$C"/{safetensors,st_index,config,tokenizer_model,tokenizer_json,shard,train_state,prepare_input,manifest,recipe,chat_record,serve_request,run_log}

# ---- safetensors, training state: spelled out
python3 - "$C" <<'EOF'
import json, struct, sys
C = sys.argv[1]
def st(path, tensors, meta=None, pad=True):
    hdr, data = {}, b""
    if meta: hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr).encode()
    if pad: h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
f32 = struct.pack("<4f", 1, 2, 3, 4)
st(f"{C}/safetensors/f32_two", [("a.weight", "F32", [2, 2], f32), ("b", "F32", [1], struct.pack("<f", 5))], {"format": "pt"})
st(f"{C}/safetensors/mixed", [("h", "F16", [2], b"\x00\x3c\x00\xc0"), ("bf", "BF16", [1, 2], b"\x80\x3f\x00\x40"),
                              ("i", "I64", [1], struct.pack("<q", -3)), ("j", "I32", [], struct.pack("<i", 7)),
                              ("d", "F64", [1], struct.pack("<d", 0.5)), ("e", "F32", [0, 3], b"")], pad=False)
h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
open(f"{C}/safetensors/bad_overlap", "wb").write(struct.pack("<Q", len(h)) + h + f32[:12])
raw = open(f"{C}/safetensors/f32_two", "rb").read()
open(f"{C}/safetensors/bad_truncated", "wb").write(raw[:-3])
open(f"{C}/safetensors/bad_header_len", "wb").write(struct.pack("<Q", 1 << 40) + raw[8:])

def fnv(h, b):
    for x in b: h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
    return h
def state(n, step=3):
    hdr = bytearray(128)
    hdr[0:8] = b"TLSTATE1"
    struct.pack_into("<QQQQQQ", hdr, 8, 1 | (128 << 32), n, step, 1000, 0, 5)
    struct.pack_into("<4Q", hdr, 56, 1, 2, 3, 4)
    struct.pack_into("<d", hdr, 88, 1.5)
    body = struct.pack(f"<{2 * n}f", *[0.25 * i for i in range(2 * n)])
    struct.pack_into("<Q", hdr, 96, fnv(fnv(0xcbf29ce484222325, hdr[:96]), body))
    return bytes(hdr) + body
# a mode byte first (fuzz/train_state.c: bit 0 repairs the checksum)
open(f"{C}/train_state/valid", "wb").write(b"\0" + state(4))
open(f"{C}/train_state/valid_repair", "wb").write(b"\1" + state(3))
open(f"{C}/train_state/bad_checksum", "wb").write(b"\0" + state(4)[:-1] + b"\x7f")
open(f"{C}/train_state/bad_size", "wb").write(b"\1" + state(4)[:-8])
open(f"{C}/train_state/bad_magic", "wb").write(b"\0TLSTATE2" + state(2)[8:])
EOF

# ---- sharded index: beside shards holding x, y (a-00001) and z (a-00002), fuzz/st_index.c
cat >"$C/st_index/valid" <<'EOF'
{"metadata": {"total_size": 48}, "weight_map": {"x": "a-00001.safetensors", "y": "a-00001.safetensors", "z": "a-00002.safetensors"}}
EOF
echo '{"weight_map": {"x": "a-00002.safetensors"}}' >"$C/st_index/bad_wrong_file"
echo '{"weight_map": {"x": "../a-00001.safetensors", "y": 3}}' >"$C/st_index/bad_path"
echo '{"weight_map": {"x": "a-00003.safetensors"}}' >"$C/st_index/bad_missing"
echo '{"weight_map": []' >"$C/st_index/bad_json"

# ---- completion request bodies (tinyllama serve)
S="$C/serve_request"
echo '{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":[{"type":"text","text":"caf\u00e9"}]}],"max_tokens":16,"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":42,"stop":["\n","END"],"stream":true,"stream_options":{"include_usage":true}}' >"$S/chat"
echo '{"prompt":"Once upon a time","max_tokens":8,"stop":"."}' >"$S/completion"
echo '{"prompt":["one"],"n":1,"logprobs":false,"unknown":{"x":[1,2]}}' >"$S/list_prompt"
echo '{"prompt":"x","max_tokens":-1}' >"$S/bad_max_tokens"
echo '{"messages":[{"role":"user","content":"\ud800"}]}' >"$S/bad_surrogate"
printf '{"prompt":"\xff"}' >"$S/bad_utf8"
echo '{"prompt":"x",' >"$S/bad_json"

# ---- config.json
cp tests/fixtures/tiny_llama/config.json "$C/config/hf_transformers5"
cat >"$C/config/ours" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_size": 64,
 "intermediate_size": 176, "max_position_embeddings": 128, "model_type": "llama", "num_attention_heads": 4,
 "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "torch_dtype": "float32", "vocab_size": 300}
EOF
echo '{"model_type": "mistral", "hidden_size": 64}' >"$C/config/bad_type"
echo '{"hidden_size": 60, "num_attention_heads": 7, "num_key_value_heads": 3, "vocab_size": -1}' >"$C/config/bad_sizes"
echo '{"hidden_size": 64,' >"$C/config/bad_json"

# ---- tokenizer.model: trained by our CLI, small vocabularies
printf 'the quick brown fox jumps over the lazy dog 123\ncaf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac <s> tabs\tand  spaces\n' >"$T/corpus.txt"
"$TL" tokenizer train --quiet --input "$T/corpus.txt" --vocab-size 300 --output "$C/tokenizer_model/bpe300.model"
"$TL" tokenizer train --quiet --input "$T/corpus.txt" --vocab-size 40 --no-byte-fallback --no-dummy-prefix \
    --character-coverage 1 --output "$C/tokenizer_model/nobytes.model" >/dev/null
head -c 200 "$C/tokenizer_model/nobytes.model" >"$C/tokenizer_model/bad_truncated"

# ---- tokenizer.json: a Llama-style BPE with byte fallback, and a Metaspace one
cat >"$C/tokenizer_json/prepend" <<'EOF'
{"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
 {"id": 2, "content": "</s>", "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
 "pre_tokenizer": null,
 "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": false, "fuse_unk": true,
  "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xC3>": 4, "<0xA9>": 5, "▁": 6, "h": 7, "e": 8, "l": 9, "o": 10,
            "▁h": 11, "ll": 12, "▁he": 13, "▁hell": 14, "▁hello": 15},
  "merges": ["▁ h", "l l", "▁h e", "▁he ll", "▁hell o"]}}
EOF
cat >"$C/tokenizer_json/metaspace" <<'EOF'
{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 5, "content": "<|user|>", "special": false}],
 "normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
 "model": {"type": "BPE", "unk_token": null, "byte_fallback": false,
  "vocab": {"<unk>": 0, "▁": 1, "a": 2, "b": 3, "▁a": 4}, "merges": [["▁", "a"]]}}
EOF
echo '{"model": {"type": "WordPiece", "vocab": {}}}' >"$C/tokenizer_json/bad_type"
echo '{"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
 "model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1, "b": 1}, "merges": ["a b"]}}' >"$C/tokenizer_json/bad_dup"
# byte fallback needs all 256 byte pieces
python3 - "$C/tokenizer_json/bytes" <<'EOF'
import json, sys
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256): vocab["<0x%02X>" % b] = 3 + b
for p in ["▁", "t", "h", "e", "▁t", "he", "▁the"]: vocab[p] = len(vocab)
tok = {"added_tokens": [{"id": i, "content": c, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
       "normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": False},
       "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                   {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
       "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "vocab": vocab,
                 "merges": ["▁ t", "h e", "▁t he"]}}
open(sys.argv[1], "w").write(json.dumps(tok, ensure_ascii=False, separators=(",", ":")))
EOF

# ---- shards: made by prepare; a mode byte first (fuzz/shard.c: bit 0 repairs the checksum)
printf 'one small document\n\nand another one, a little longer than the first\n' >"$T/docs.txt"
"$TL" prepare --quiet --byte-level --seq-len 8 --txt-docs paragraphs --val-count 1 --out "$T/sh" "$T/docs.txt" >/dev/null
{ printf '\0'; cat "$T/sh/train-00000.bin"; } >"$C/shard/train"
{ printf '\3'; cat "$T/sh/val-00000.bin"; } >"$C/shard/val_shuffled"
{ printf '\0'; head -c 70 "$T/sh/train-00000.bin"; } >"$C/shard/bad_truncated"
{ printf '\0'; head -c 32 "$T/sh/train-00000.bin"; printf '\377\377\377\377'; tail -c +37 "$T/sh/train-00000.bin"; } >"$C/shard/bad_checksum"

# ---- manifests of those shards (fuzz/manifest.c writes the same shards): the valid one,
# one listing a shard with another checksum, one naming no tokenizer, one that is not JSON
cp "$T/sh/manifest.json" "$C/manifest/valid"
python3 - "$T/sh/manifest.json" "$C/manifest/bad_shard_checksum" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
def first_shard(o):  # the first object that lists a shard's checksum, wherever the format keeps it
    if isinstance(o, dict):
        if "fnv1a64" in o and "samples" in o: return o
        for v in o.values():
            r = first_shard(v)
            if r: return r
    if isinstance(o, list):
        for v in o:
            r = first_shard(v)
            if r: return r
first_shard(m)["fnv1a64"] = "0000000000000000"
open(sys.argv[2], "w").write(json.dumps(m))
PY
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); m.pop('tokenizer'); print(json.dumps(m))" \
    "$T/sh/manifest.json" >"$C/manifest/bad_no_tokenizer"
head -c 200 "$T/sh/manifest.json" >"$C/manifest/bad_truncated"

# ---- prepare inputs: a mode byte first (fuzz/prepare_input.c)
P=$C/prepare_input
{ printf '\200'; printf '{"text": "hello world"}\n{"text": "caf\\u00e9 \\ud83d\\ude00"}\n\n{"title": "no text"}\nnot json\n'; } >"$P/jsonl_bytes"
{ printf '\000'; printf '{"text": "the quick brown fox"}\r\n{"text": ""}\n{"text": 3}\n'; } >"$P/jsonl_tok"
{ printf '\030'; printf '{"meta": {"text": "kept", "lang": "en"}}\n{"meta": {"text": "dropped", "lang": "xx"}}\n'; } >"$P/jsonl_dotted"
{ printf '\020'; printf 'para one\nstill one\n\n\npara two \377\376 bad utf8\n'; } >"$P/txt_paragraphs"
{ printf '\250'; printf 'a whole file, cut into tiny segments: the quick brown fox jumps over the lazy dog\n'; } >"$P/txt_tiny_limits"
{ printf '\101'; printf '{"text": "compressed by the harness"}\n'; } >"$P/jsonl_zst"
{ printf '\302'; printf '{"text": "gzipped by the harness"}\n'; } >"$P/jsonl_gz"
printf '{"text": "a real zstd stream"}\n{"text": "second line"}\n' | zstd -q -c >"$T/z"
{ printf '\203'; cat "$T/z"; } >"$P/raw_zst"
{ printf '\203'; head -c 20 "$T/z"; } >"$P/raw_zst_truncated"
printf 'plain text, gzipped\n' | gzip -c >"$T/g"
{ printf '\207'; cat "$T/g"; } >"$P/raw_gz"
{ printf '\207'; head -c 15 "$T/g"; } >"$P/raw_gz_truncated"

# ---- training recipes: the shipped ones, and broken ones
cp recipes/*.yaml "$C/recipe/"
printf 'phases:\n  - name: a\n    tokens: 100\n    bogus: 1\n' >"$C/recipe/bad_unknown_key"
printf 'phases:\n  - name: a\n    tokens: -100\n' >"$C/recipe/bad_negative"
printf 'seq_len: abc\nphases: []\n' >"$C/recipe/bad_type"
printf 'phases:\n  - name: a\n    tokens: 1K\n    sources:\n      - {name: x, path: p, weight: 0}\n' >"$C/recipe/bad_weights"
printf 'phases: [\n' >"$C/recipe/bad_yaml"

# ---- run logs (plot): a training run's log.jsonl as train writes it, and broken ones
L='{"step": %d, "loss": %s, "lr": 1.0e-03, "grad_norm": 1.5, "tokens_per_s": 900.0, "tokens": %d, "batch_tokens": 64, "elapsed": 0.1}\n'
{ printf "$L" 1 5.5 64; printf "$L" 2 5.1 128; printf '{"step": 2, "val_loss": 5.2, "val_ppl": 181.3}\n'
  printf '{"step": 3, "skipped": true, "loss": null, "grad_norm": null}\n'; printf "$L" 3 4.9 192
  printf '{"step": 3, "val_set": "code", "val_loss": 4.8, "val_ppl": 121.5}\n'; } >"$C/run_log/log.jsonl"
printf "$L" 1 5.5 64 | head -c 60 >"$C/run_log/bad_truncated"
printf "$L" 1 '"x"' 64 >"$C/run_log/bad_type"
printf '{"step": 1, "val_loss": 2}\n' >"$C/run_log/bad_val_first"

# ---- chat records (fuzz/chat_record.c): one `prepare --format chat` line each
R=$C/chat_record
printf '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}' >"$R/messages"
printf '{"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}, {"from": "human", "value": "R?"}, {"from": "gpt", "value": "B."}]}' >"$R/sharegpt"
printf '{"messages": [{"role": "tool", "content": "x"}]}' >"$R/bad_role"
printf '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": ""}]}' >"$R/bad_content"
printf '{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}' >"$R/bad_order"
printf '{"prompt": "What is a cat?", "chosen": "A small furry animal.", "rejected": "A kind of car."}' >"$R/pref"
printf '{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]}' >"$R/pref_ultrafeedback"
du -sh "$C"/* | sed 's/^/seeds: /'

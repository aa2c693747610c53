#!/usr/bin/env python3
"""Writes the tokenizer test fixtures under tests/fixtures/tokenizer/ from the
real SentencePiece library (the oracle).  Run from the repository root:

    python3 scripts/gen_tokenizer_fixtures.py

Needs python3-sentencepiece (or the pip package) and spm_train.  Every expected
id and decoded text in the fixtures comes from sentencepiece, never from our code.

Fixture format (one file per model, text lines, tab-separated):
  E  flags  hex(text)  ids...          encode; flags: 1 BOS, 2 EOS, 4 parse-special
  D  ids...  hex(text)                 decode
  C  corpus  mode  first  nlines  count  hash
       corpus chunk: lines [first, first+nlines) of ../shared/corpora/<corpus>;
       mode "lines": each line encoded alone (without its newline);
       mode "chunk": the lines joined with "\\n" (plus a final "\\n") encoded as one text;
       count = total ids, hash = FNV-1a 64 over the ids as little-endian int32,
       with -1 after each line's ids in "lines" mode.
For flag 4 (parse-special: control pieces in the text become their ids, the
text between them encoded segment by segment) the ids are the oracle's ids of
each segment joined with the control ids, since sentencepiece has no such mode.
"""
import os
import random
import struct
import subprocess
import sys
import tempfile

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SHARED = os.path.join(ROOT, "..", "shared")
LLAMA = os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.model")
CORPORA = ["tinyshakespeare.txt", "botchan.txt"]
CHUNK = 200  # lines per corpus chunk


def fnv_ids(ids):
    h = 0xCBF29CE484222325
    for b in b"".join(struct.pack("<i", i) for i in ids):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


HAND = [
    "I believe the meaning of life is", "Hello world", "\n", "Hello\nworld", "", " ", "  ",
    "   ", "\t", "\t\t x", "a  b   c    d", "  leading", "trailing  ", " \n \n ", "\r\n",
    "1234567890", "3.14159 and 2,718,281", "year 2024: 42 apples", "０１２３",  # fullwidth digits
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "<0x41>", "<0x0A>", "<pad>", "<<s>>", "</s ",
    "▁", "▁▁", "▁Hello", "a▁b", "▁ ▁",
    "日本語のテキストです。", "中文文本测试，你好世界！", "한국어 텍스트", "Привет, мир! Ёжик",
    "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Γειά σου Κόσμε", "שלום עולם",
    "ẞtraße naïve café résumé", "e\u0301 a\u0308 o\u0303\u0301", "Z\u0351\u0362a\u035d\u0360l\u0367g\u0350o",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵🇺🇸", "a😀b", "😀😀😀 😀",
    "\x00", "\x01\x02\x03", "a\x00b", "\x7f", "\x1b[31mred\x1b[0m", "\u200b\u200c\u200d", "\ufeffBOM",
    "\u2028\u2029", "\U0010FFFF", "\uFFFD", "\uE000 private", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𓀀𓀁",
    "def f(x):\n    return x ** 2\n", "if (a && b) { return c; }", "https://example.com/a?b=c&d=e",
    "ALL CAPS SENTENCE", "MiXeD cAsE", "don't won't it's", "--- *** ___ ...", "¡¿",
    "The quick brown fox jumps over the lazy dog.",
]
HAND_BYTES = [
    b"\xff", b"\xfe\xff", b"abc\xffdef", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xf0\x9f\x98",
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\x80\x80\x80", b"a\x80 b\xbf", b"\xef\xbf\xbd\xff", b" \xff ", b"\xff\xfe\xfd\xfc",
]

ATOMS = [
    "the", "The", " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", ",", ".", "!", "?", "'", '"', "-",
    "0", "1", "7", "42", "2024", "3.5", "hello", "world", "Shakespeare", "thou", "art", "ing", "tion",
    "日本", "語", "中文", "测试", "한국", "Привет", "мир", "مرحبا", "नमस्ते", "สวัสดี", "Ω", "λ",
    "😀", "👍🏽", "👨‍👩‍👧", "\u0301", "\u0308", "\u200d", "▁", "<s>", "</s>", "<0x41>", "<unk>",
    "\x00", "\x07", "\x1f", "\x7f", "é", "ß", "ñ", "ø", "€", "£", "→", "∑", "𝔘", "\U0001F600",
]


def rand_text(rng, vocab_pieces):
    kind = rng.random()
    parts = []
    for _ in range(rng.randint(1, 25)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(ATOMS))
        elif r < 0.75 and vocab_pieces:
            parts.append(rng.choice(vocab_pieces).replace("▁", " " if rng.random() < 0.8 else "▁"))
        elif r < 0.9:
            parts.append(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FF),
                                         rng.randint(0x370, 0x1FFF), rng.randint(0x3040, 0x9FFF),
                                         rng.randint(0xAC00, 0xD7A3), rng.randint(0x1F300, 0x1FAFF),
                                         rng.randint(0x10000, 0x10FFFF)])))
        else:
            parts.append(" " * rng.randint(1, 6))
    s = "".join(parts).encode("utf-8", "surrogatepass")
    if kind < 0.15:  # sprinkle invalid bytes
        b = bytearray(s)
        for _ in range(rng.randint(1, 4)):
            b.insert(rng.randint(0, len(b)), rng.randint(0x80, 0xFF))
        s = bytes(b)
    elif kind < 0.2:
        s = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 40)))
    return s


def control_split(sp, text):
    """parse-special expectation: control pieces (longest first) in text -> ids."""
    ctrls = sorted([(sp.id_to_piece(i).encode(), i) for i in range(sp.get_piece_size()) if sp.is_control(i)],
                   key=lambda x: -len(x[0]))
    out, seg, i = [], b"", 0
    while i < len(text):
        for p, cid in ctrls:
            if text.startswith(p, i):
                if seg:
                    out += sp.encode(seg)
                seg = b""
                out.append(cid)
                i += len(p)
                break
        else:
            seg += text[i:i + 1]
            i += 1
    if seg:
        out += sp.encode(seg)
    return out


def write_model_fixture(name, model_path, n_random, seed, corpora=True):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    rng = random.Random(seed)
    vocab_pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                    if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))]
    lines = ["# generated by scripts/gen_tokenizer_fixtures.py from sentencepiece %s; model %s"
             % (spm.__version__, os.path.basename(model_path))]
    cases = [(s.encode("utf-8", "surrogatepass"), 0) for s in HAND] + [(b, 0) for b in HAND_BYTES]
    cases += [(s.encode(), f) for s in ["Hello world", "", "<s>x"] for f in (1, 2, 3)]
    cases += [(rand_text(rng, vocab_pieces), 0) for _ in range(n_random)]
    specials = [b"<s>Hello</s>", b"<s>[INST] hi [/INST]", b"a</s></s>b", b"<s>", b"x<s", b" <s> ",
                b"<s><s>", b"</s>\n<s>"]
    n_e = 0
    for text, flags in cases:
        ids = sp.encode(text, add_bos=bool(flags & 1), add_eos=bool(flags & 2))
        lines.append("E\t%d\t%s\t%s" % (flags, text.hex(), " ".join(map(str, ids))))
        n_e += 1
    for text in specials:
        ids = control_split(sp, text)
        lines.append("E\t4\t%s\t%s" % (text.hex(), " ".join(map(str, ids))))
        n_e += 1
    # decode: ids of some cases, plus random id sequences heavy in byte / control / unk pieces
    n_d = 0
    byte_ids = [i for i in range(sp.get_piece_size()) if sp.is_byte(i)]
    special_ids = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    seqs = [sp.encode(t) for t, _ in cases[: len(HAND) + len(HAND_BYTES)]]
    for _ in range(n_random // 2):
        seq = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.35 and byte_ids:
                seq.append(rng.choice(byte_ids))
            elif r < 0.45:
                seq.append(rng.choice(special_ids))
            else:
                seq.append(rng.randrange(sp.get_piece_size()))
        seqs.append(seq)
    # utf-8 pieces split across byte tokens
    for ch in ["é", "日", "😀", "👍🏽"]:
        if byte_ids:
            seqs.append([sp.piece_to_id("<0x%02X>" % b) for b in ch.encode()])
            seqs.append([sp.piece_to_id("<0x%02X>" % b) for b in ch.encode()[:-1]])
    for seq in seqs:
        text = sp.decode(seq).encode("utf-8", "surrogatepass")
        lines.append("D\t%s\t%s" % (" ".join(map(str, seq)), text.hex()))
        n_d += 1
    n_c = 0
    if corpora:
        for corpus in CORPORA:
            with open(os.path.join(SHARED, "corpora", corpus), "rb") as f:
                all_lines = f.read().split(b"\n")
            if all_lines and all_lines[-1] == b"":
                all_lines.pop()
            for first in range(0, len(all_lines), CHUNK):
                chunk = all_lines[first:first + CHUNK]
                ids = []
                for ln in chunk:
                    ids += sp.encode(ln) + [-1]
                lines.append("C\t%s\tlines\t%d\t%d\t%d\t%016x" % (corpus, first, len(chunk),
                                                                 len(ids) - len(chunk), fnv_ids(ids)))
                ids = sp.encode(b"\n".join(chunk) + b"\n")
                lines.append("C\t%s\tchunk\t%d\t%d\t%d\t%016x" % (corpus, first, len(chunk), len(ids),
                                                                 fnv_ids(ids)))
                n_c += 2
    with open(os.path.join(FIX, name + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%s: %d encode cases, %d decode cases, %d corpus chunks" % (name, n_e, n_d, n_c))


def set_piece_types(model_bytes, mapping):
    """Rewrites ModelProto bytes so pieces with index in mapping get that type
    (a tiny protobuf editor: top-level field 1 messages only)."""
    def varint(b, i):
        r = s = 0
        while True:
            c = b[i]; i += 1; r |= (c & 0x7F) << s; s += 7
            if c < 0x80:
                return r, i

    def enc(v):
        out = bytearray()
        while True:
            c = v & 0x7F; v >>= 7
            out.append(c | (0x80 if v else 0))
            if not v:
                return bytes(out)

    out, i, idx = bytearray(), 0, 0
    while i < len(model_bytes):
        start = i
        key, i = varint(model_bytes, i)
        wt = key & 7
        if wt == 2:
            ln, j = varint(model_bytes, i)
            body = model_bytes[j:j + ln]
            i = j + ln
            if key >> 3 == 1:
                if idx in mapping:
                    # drop an existing type field (3) and append the new one
                    nb, k = bytearray(), 0
                    while k < len(body):
                        ks = k
                        kk, k = varint(body, k)
                        if kk & 7 == 0:
                            _, k = varint(body, k)
                        elif kk & 7 == 2:
                            l2, k = varint(body, k); k += l2
                        elif kk & 7 == 5:
                            k += 4
                        if kk >> 3 != 3:
                            nb += body[ks:k]
                    nb += bytes([0x18]) + enc(mapping[idx])
                    body = bytes(nb)
                idx += 1
            out += enc(key) + enc(len(body)) + body
        else:
            raise SystemExit("unexpected wire type at top level")
        del start
    return bytes(out)


def train_small_models():
    botchan = os.path.join(SHARED, "corpora", "botchan.txt")
    with tempfile.TemporaryDirectory() as tmp:
        # mixed training text: botchan + a multilingual sprinkle
        mixed = os.path.join(tmp, "mixed.txt")
        with open(botchan, "rb") as f, open(mixed, "wb") as g:
            g.write(f.read())
            rng = random.Random(7)
            for _ in range(300):
                g.write(" ".join(rng.choice(ATOMS[20:50]) for _ in range(8)).encode() + b"\n")
        common = ["--input=" + mixed, "--model_type=bpe", "--normalization_rule_name=identity",
                  "--num_threads=2", "--minloglevel=2"]
        subprocess.run(["spm_train", "--model_prefix=" + os.path.join(FIX, "small_bpe"), "--vocab_size=1000",
                        "--byte_fallback=true", "--split_digits=true", "--allow_whitespace_only_pieces=true",
                        "--remove_extra_whitespaces=false", "--character_coverage=0.9995"] + common,
                       check=True, stderr=subprocess.DEVNULL)
        subprocess.run(["spm_train", "--model_prefix=" + os.path.join(FIX, "small_bpe_unk"), "--vocab_size=600",
                        "--user_defined_symbols=<sep>,foo,▁▁", "--control_symbols=<ctl>,[INST]",
                        "--character_coverage=0.98"] + common, check=True, stderr=subprocess.DEVNULL)
        for p in ["small_bpe.vocab", "small_bpe_unk.vocab"]:
            os.remove(os.path.join(FIX, p))
    # a model with UNUSED pieces (resegmentation path): every 7th normal piece of small_bpe
    with open(os.path.join(FIX, "small_bpe.model"), "rb") as f:
        data = f.read()
    sp = spm.SentencePieceProcessor(model_proto=data)
    mapping = {i: 5 for i in range(300, sp.get_piece_size(), 7)
               if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))
               and len(sp.id_to_piece(i)) > 1}
    with open(os.path.join(FIX, "small_bpe_unused.model"), "wb") as f:
        f.write(set_piece_types(data, mapping))


def train_ours():
    """A model trained by our own trainer (build/tinyllama); expectations still
    come from sentencepiece loading that model."""
    botchan = os.path.join(SHARED, "corpora", "botchan.txt")
    with tempfile.TemporaryDirectory() as tmp:
        mixed = os.path.join(tmp, "mixed.txt")
        with open(botchan, "rb") as f, open(mixed, "wb") as g:
            g.write(f.read())
            rng = random.Random(11)
            for _ in range(300):
                g.write(" ".join(rng.choice(ATOMS) for _ in range(8)).encode() + b"\n")
        subprocess.run([os.path.join(ROOT, "build", "tinyllama"), "tokenizer", "train", "--input", mixed,
                        "--vocab-size", "1000", "--output", os.path.join(FIX, "ours_bpe.model"), "--quiet"],
                       check=True)


def main():
    os.makedirs(FIX, exist_ok=True)
    if "--no-train" not in sys.argv:
        train_small_models()
        train_ours()
    write_model_fixture("llama2", LLAMA, 1200, 1)
    write_model_fixture("small_bpe", os.path.join(FIX, "small_bpe.model"), 400, 2)
    write_model_fixture("ours_bpe", os.path.join(FIX, "ours_bpe.model"), 400, 5)
    write_model_fixture("small_bpe_unk", os.path.join(FIX, "small_bpe_unk.model"), 350, 3, corpora=False)
    write_model_fixture("small_bpe_unused", os.path.join(FIX, "small_bpe_unused.model"), 350, 4,
                        corpora=False)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# CLI tests of `tokenize`, `detokenize` and `tokenizer info` on the fixture
# tokenizers (the ids themselves are checked against SentencePiece in
# tests/test_tokenizer.c).  Usage: tests/cli_tokenize.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
TOK=$FIX/tokenizer/small_bpe.model
T=$(mktemp -d /tmp/tl_cli_tokenize.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

# --- detokenize: the last id may end the input without whitespace.  The
# allocator is told to fill new memory with '1' bytes (glibc: MALLOC_PERTURB_
# fills with its value ^ 0xff; ASan: malloc_fill_byte), so a parser that reads
# past the input sees more digits and fails or decodes another id.
want=$(printf '5 6 7\n' | "$BIN" detokenize --tokenizer "$TOK" 2>"$T/err")
got=$(printf '5 6 7' | MALLOC_PERTURB_=206 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}malloc_fill_byte=49:max_malloc_fill_size=1048576" \
    "$BIN" detokenize --tokenizer "$TOK" 2>"$T/err")
check "detokenize: last id without trailing whitespace" '[ -n "$want" ] && [ "$got" = "$want" ]'
got=$(printf '5 6 7\n8 9' | MALLOC_PERTURB_=206 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}malloc_fill_byte=49:max_malloc_fill_size=1048576" \
    "$BIN" detokenize --tokenizer "$TOK" --lines 2>"$T/err")
want=$(printf '5 6 7\n8 9\n' | "$BIN" detokenize --tokenizer "$TOK" --lines 2>/dev/null)
check "detokenize --lines: last line without newline" '[ "$got" = "$want" ] && [ "$(printf "%s\n" "$got" | wc -l)" = 2 ]'

# --- a checkpoint trained with a tokenizer carries the files transformers
# needs to rebuild it as the Llama tokenizer with BOS (AutoTokenizer itself is
# run by scripts/check_hf_tokenizer.py; here the fields)
cat "$HERE"/../docs/*.md >"$T/corpus.txt"
"$BIN" prepare --tokenizer "$TOK" --seq-len 16 --val-fraction 0 --quiet --out "$T/d" "$T/corpus.txt" >/dev/null 2>&1
if "$BIN" train --preset test --vocab-size 1000 --data "$T/d/train-00000.bin" --tokenizer "$TOK" --steps 1 --quiet \
    --out "$T/run" >"$T/out" 2>"$T/err"; then
    CK=$T/run/$(cat "$T/run/latest")
    check "checkpoint has tokenizer_config.json for transformers" \
        "python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(not (c[\"tokenizer_class\"]==\"LlamaTokenizer\" and c[\"add_bos_token\"] is True and c[\"add_eos_token\"] is False and c[\"bos_token\"]==\"<s>\" and c[\"model_max_length\"]==64))' '$CK/tokenizer_config.json'"
    check "checkpoint has special_tokens_map.json" \
        "python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m[\"bos_token\"][\"content\"]!=\"<s>\" or m[\"eos_token\"][\"content\"]!=\"</s>\")' '$CK/special_tokens_map.json'"
else
    fail "train with --tokenizer ($(head -c 300 "$T/err"))"
fi

# --- one name for the tokenizer option: --tokenizer, as prepare/train/eval;
# --model still works in these three commands, with a note
a=$(printf 'Hello world' | "$BIN" tokenize --tokenizer "$TOK" 2>"$T/err")
b=$(printf 'Hello world' | "$BIN" tokenize --model "$TOK" 2>"$T/err2")
check "tokenize --tokenizer" '[ -n "$a" ] && [ ! -s "$T/err" ]'
check "tokenize --model: same ids, deprecation note" '[ "$a" = "$b" ] && grep -q "deprecated" "$T/err2"'
a=$(printf '%s' "$b" | "$BIN" detokenize --tokenizer "$TOK" 2>/dev/null)
check "detokenize --tokenizer" '[ "$a" = "Hello world" ]'
a=$("$BIN" tokenizer info --tokenizer "$TOK" 2>/dev/null)
b=$("$BIN" tokenizer info --model "$TOK" 2>/dev/null)
check "tokenizer info --tokenizer (and --model)" 'echo "$a" | grep -q "vocab size: *1000" && [ "$a" = "$b" ]'
for c in tokenize detokenize "tokenizer info"; do
    # shellcheck disable=SC2086
    check "$c --help names --tokenizer" "'$BIN' $c --help | grep -q -- '--tokenizer FILE'"
    # shellcheck disable=SC2086
    expect_fail "$c without a tokenizer" "--tokenizer is required" "$BIN" $c
done

# --- --parse-special matches <unk> as HF's Llama tokenizer does (ids from HF
# tokenizers on the Llama 2 tokenizer.json fixture, scripts/gen_tokenizer_json_fixtures.py)
got=$(printf '<unk>' | "$BIN" tokenize --tokenizer "$TOK" --parse-special --pieces)
check "--parse-special: <unk> is the unknown piece" '[ "$got" = "<unk>" ]'
got=$(printf '<unk>' | "$BIN" tokenize --tokenizer "$TOK" --pieces)
check "without --parse-special: <unk> is text" '[ "$got" != "<unk>" ]'
if command -v zstd >/dev/null; then
    zstd -dc "$FIX/tokenizer/llama2_hf.json.zst" >"$T/llama2.json"
    got=$(printf 'x <unk> y' | "$BIN" tokenize --tokenizer "$T/llama2.json" --parse-special)
    check "--parse-special 'x <unk> y' = HF's ids" '[ "$got" = "921 29871 0 343" ]'
    got=$(printf 'a<unk>b</s>' | "$BIN" tokenize --tokenizer "$T/llama2.json" --parse-special)
    check "--parse-special 'a<unk>b</s>' = HF's ids" '[ "$got" = "263 0 29890 2" ]'
else
    echo "(no zstd: tokenizer.json cases skipped)"
fi

finish

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
want=$(printf '5 6 7\n' | "$BIN" detokenize --model "$TOK" 2>"$T/err")
got=$(printf '5 6 7' | MALLOC_PERTURB_=206 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}malloc_fill_byte=49:max_malloc_fill_size=1048576" \
    "$BIN" detokenize --model "$TOK" 2>"$T/err")
check "detokenize: last id without trailing whitespace" '[ -n "$want" ] && [ "$got" = "$want" ]'
got=$(printf '5 6 7\n8 9' | MALLOC_PERTURB_=206 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}malloc_fill_byte=49:max_malloc_fill_size=1048576" \
    "$BIN" detokenize --model "$TOK" --lines 2>"$T/err")
want=$(printf '5 6 7\n8 9\n' | "$BIN" detokenize --model "$TOK" --lines 2>/dev/null)
check "detokenize --lines: last line without newline" '[ "$got" = "$want" ] && [ "$(printf "%s\n" "$got" | wc -l)" = 2 ]'

finish

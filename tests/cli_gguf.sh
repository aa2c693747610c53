#!/usr/bin/env bash
# CLI tests of `info --gguf` and `convert --to-hf` on the GGUF fixtures (the reader itself is tested
# against the gguf package in tests/test_gguf.c).  Usage: tests/cli_gguf.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}/gguf
T=$(mktemp -d /tmp/tl_cli_gguf.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

out=$("$BIN" info --gguf "$FIX/tiny_llama.gguf" 2>"$T/err")
rc=$?
check "info --gguf: exit 0" '[ $rc -eq 0 ]'
check "info --gguf: header line" 'echo "$out" | grep -q "GGUF version 3, 39 metadata keys, 12 tensors, alignment 64"'
check "info --gguf: a key and its value" 'echo "$out" | grep -E -q "^  llama.attention.head_count_kv +UINT32 +2$"'
check "info --gguf: a tensor row" 'echo "$out" | grep -E -q "^  blk.0.attn_output.weight +Q4_0 +32 x 32 +7360 +576$"'
check "info --gguf: the vocabulary is cut short" 'echo "$out" | grep -q "STRING\[32\] \[\"<unk>\", \"<s>\", .*, \.\.\.\]"'
check "info --gguf: the Llama config" 'echo "$out" | grep -q "\"num_key_value_heads\":	2"'
full=$("$BIN" info --gguf "$FIX/tiny_llama.gguf" --full 2>/dev/null)
check "info --gguf --full: whole arrays" 'echo "$full" | grep -q "\"m\", \"n\", \"o\"\]"'
out=$("$BIN" info --gguf "$FIX/quants.gguf" 2>/dev/null)
check "info --gguf: not a Llama file still lists its tensors" \
    'echo "$out" | grep -E -q "^  Q6_K +Q6_K +256 x 4 " && echo "$out" | grep -q "not a Llama model this program reads: .*quants.gguf: general.architecture is .none."'

head -c 5000 "$FIX/tiny_llama.gguf" >"$T/cut.gguf"
expect_fail "info --gguf: a truncated file is refused naming it and the field" \
    "cut.gguf: tensor .blk.0.attn_q.weight.: data \[1216, \+4096\) runs past the end of the file" "$BIN" info --gguf "$T/cut.gguf"
expect_fail "info --gguf: not a GGUF file" "plain.txt: not a GGUF file" sh -c "echo hello >'$T/plain.txt'; '$BIN' info --gguf '$T/plain.txt'"
expect_fail "info --gguf: missing file" "nothere.gguf: cannot open" "$BIN" info --gguf "$T/nothere.gguf"
expect_fail "info: --gguf with --preset is a usage error" "exactly one of --preset, --config or --gguf" \
    "$BIN" info --gguf "$FIX/tiny_llama.gguf" --preset demo
expect_fail "info: --full without --gguf" "--full goes with --gguf" "$BIN" info --preset demo --full
"$BIN" info --help | grep -q -- "--gguf FILE" && ok "info --help lists --gguf" || fail "info --help lists --gguf"

# --- convert --to-hf: a directory the other commands load (its logits are checked
# against the script's reference in tests/test_gguf.c)
"$BIN" convert --to-hf "$FIX/tiny_llama.gguf" --out "$T/hf" 2>"$T/err"
rc=$?
check "convert --to-hf: exit 0 and the HF files" '[ $rc -eq 0 ] && (for f in config.json model.safetensors tokenizer.model tokenizer_config.json special_tokens_map.json; do [ -s "$T/hf/$f" ] || exit 1; done)'
check "convert --to-hf: info --config reads the config" \
    '"$BIN" info --config "$T/hf/config.json" 2>/dev/null | grep -q "\"num_key_value_heads\":	2"'
check "convert --to-hf: generate runs on the result" \
    '"$BIN" generate --model "$T/hf" "abc" --max-tokens 4 --temperature 0 >"$T/gen" 2>"$T/gerr" && [ -s "$T/gen" ]'
check "convert --to-hf: the chat template goes to tokenizer_config.json" 'grep -q "<|user|>" "$T/hf/tokenizer_config.json"'
mkdir -p "$T/empty"
"$BIN" convert --to-hf "$FIX/tiny_llama.gguf" --out "$T/empty" 2>/dev/null
check "convert --to-hf: into an empty directory" '[ -s "$T/empty/model.safetensors" ]'
before=$(ls -l "$T/hf" | md5sum)
expect_fail "convert --to-hf: an existing directory is refused" "hf already exists and is not an empty directory; nothing was written" \
    "$BIN" convert --to-hf "$FIX/tiny_llama.gguf" --out "$T/hf"
check "convert --to-hf: ... and left as it was" '[ "$(ls -l "$T/hf" | md5sum)" = "$before" ]'
expect_fail "convert --to-hf: a file that is not a Llama model" "quants.gguf: general.architecture is 'none'" \
    "$BIN" convert --to-hf "$FIX/quants.gguf" --out "$T/q"
check "convert --to-hf: a failure leaves nothing behind" '[ ! -e "$T/q" ] && [ -z "$(ls -d "$T"/q.tmp-* 2>/dev/null)" ]'
expect_fail "convert --to-hf: a truncated file" "cut.gguf: tensor" "$BIN" convert --to-hf "$T/cut.gguf" --out "$T/c"
expect_fail "convert: --out is required" "give --to-hf FILE.gguf and --out DIR" "$BIN" convert --to-hf "$FIX/tiny_llama.gguf"
finish

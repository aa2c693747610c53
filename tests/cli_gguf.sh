#!/usr/bin/env bash
# CLI tests of `info --gguf` and `convert --to-hf` on the GGUF fixtures (the reader itself is tested
# against the gguf package in tests/test_gguf.c), and of writing GGUF (`convert --to-gguf`, `quantize`).  Usage: tests/cli_gguf.sh path/to/tinyllama
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
# --- generate / perplexity / chat / eval with --model FILE.gguf, the tensors used in place: with
# --f32-activations the same greedy ids, perplexity and eval scores as the engine gives on the
# `convert --to-hf` copy (the logits themselves are checked against float64 numpy in
# tests/test_infer_gguf.c); by default (x rounded to int8 blocks) the same ids whichever kernel
# family runs the integer products, and perplexity / log-likelihoods close to the copy's
for q in Q8_0 Q4_0 Q4_K Q5_K Q6_K BF16; do
    "$BIN" convert --to-hf "$FIX/tiny256_$q.gguf" --out "$T/h_$q" >/dev/null 2>&1
    a=$("$BIN" generate --model "$FIX/tiny256_$q.gguf" "abc hij" --greedy --max-tokens 24 --ignore-eos --print-ids --no-stats --f32-activations 2>"$T/err")
    b=$("$BIN" generate --model "$T/h_$q" "abc hij" --greedy --max-tokens 24 --ignore-eos --print-ids --no-stats 2>/dev/null)
    check "generate --model tiny256_$q.gguf --f32-activations: the greedy ids of the HF copy" '[ -n "$a" ] && [ "$a" = "$b" ]'
    a=$("$BIN" generate --model "$FIX/tiny256_$q.gguf" "abc hij" --greedy --max-tokens 24 --ignore-eos --print-ids --no-stats 2>"$T/err")
    for k in scalar avx2 avx512; do
        c=$("$BIN" generate --kernel $k --model "$FIX/tiny256_$q.gguf" "abc hij" --greedy --max-tokens 24 --ignore-eos --print-ids --no-stats 2>/dev/null) || continue # a kernel this CPU lacks
        check "generate --model tiny256_$q.gguf --kernel $k: same ids" '[ -n "$a" ] && [ "$c" = "$a" ]'
    done
done
printf 'abc hij gfe kmo\nbad cafe hide\n' >"$T/ppl.txt"
pa=$("$BIN" perplexity --model "$FIX/tiny256_Q4_0.gguf" --text "$T/ppl.txt" --f32-activations 2>/dev/null | grep '^perplexity')
pb=$("$BIN" perplexity --model "$T/h_Q4_0" --text "$T/ppl.txt" 2>/dev/null | grep '^perplexity')
check "perplexity --model x.gguf --text --f32-activations: the HF copy's perplexity ($pa)" '[ -n "$pa" ] && [ "$pa" = "$pb" ]'
pi=$("$BIN" perplexity --model "$FIX/tiny256_Q4_0.gguf" --text "$T/ppl.txt" 2>/dev/null | grep '^perplexity')
check "perplexity --model x.gguf --text: int8 activations within 1% of the HF copy ($pi)" \
    'python3 -c "import sys; a, b = (float(s.split()[1]) for s in sys.argv[1:]); sys.exit(abs(a - b) > 0.01 * b)" "$pi" "$pb"'
for q in Q8_0 Q4_0 Q4_K; do # Zephyr, ChatML, Llama 2 templates
    printf 'abc\nhij\n' | "$BIN" chat --model "$FIX/tiny256_$q.gguf" --greedy --max-tokens 4 >"$T/chat" 2>"$T/err"
    check "chat --model tiny256_$q.gguf: the file's chat template is recognised" '[ $? -eq 0 ] && [ $(wc -l <"$T/chat") -eq 2 ]'
done
expect_fail "chat: an unrecognised chat template needs --chat-template" \
    "tiny256_Q6_K.gguf: the chat template .* is none of those this program knows .*--chat-template zephyr\|llama2\|chatml" \
    sh -c "echo abc | '$BIN' chat --model '$FIX/tiny256_Q6_K.gguf' --max-tokens 2"
check "chat --chat-template chatml overrides it" \
    'echo abc | "$BIN" chat --model "$FIX/tiny256_Q6_K.gguf" --chat-template chatml --greedy --max-tokens 2 >/dev/null 2>&1'
expect_fail "chat --chat-template: an unknown name" "unknown chat template 'jinja'" \
    sh -c "echo abc | '$BIN' chat --model '$FIX/tiny256_Q6_K.gguf' --chat-template jinja"
"$BIN" eval --model "$FIX/tiny256_Q8_0.gguf" --task boolq --data "$FIX/../eval/boolq.jsonl" --samples --quiet --json "$T/ea.json" --f32-activations >/dev/null 2>&1
"$BIN" eval --model "$T/h_Q8_0" --task boolq --data "$FIX/../eval/boolq.jsonl" --samples --quiet --json "$T/eb.json" >/dev/null 2>&1
"$BIN" eval --model "$FIX/tiny256_Q8_0.gguf" --task boolq --data "$FIX/../eval/boolq.jsonl" --samples --quiet --json "$T/ei.json" >/dev/null 2>&1
# (tol: absolute for --f32-activations; relative for int8 activations, which put this model's
# log-likelihoods 0.35% off on 2026-12-06)
ll_close() {
    python3 -c "
import json,sys
a,b=(json.load(open(f)) for f in sys.argv[1:3]); tol=float(sys.argv[3]); rel=sys.argv[4]=='rel'
la=[x for s in a[\"samples\"] for x in s[\"ll\"]]; lb=[x for s in b[\"samples\"] for x in s[\"ll\"]]
sys.exit(not (len(la)==len(lb)>0 and max(abs(x-y)-(tol*abs(y) if rel else tol) for x,y in zip(la,lb))<0 and (rel or a[\"acc\"]==b[\"acc\"])))" "$@"
}
check "eval --model x.gguf --f32-activations: the accuracy and log-likelihoods (within 1e-4) of the HF copy" \
    'll_close "$T/ea.json" "$T/eb.json" 1e-4 abs'
check "eval --model x.gguf: log-likelihoods within 2% of the HF copy's" 'll_close "$T/ei.json" "$T/eb.json" 0.02 rel'
expect_fail "eval --backend fp32 refuses a GGUF file" "use --backend kv" \
    "$BIN" eval --model "$FIX/tiny256_Q8_0.gguf" --task boolq --data "$FIX/../eval/boolq.jsonl" --backend fp32
expect_fail "generate: a GGUF file that is not a Llama model" "quants.gguf: general.architecture is 'none'" \
    "$BIN" generate --model "$FIX/quants.gguf" "abc"
expect_fail "generate: a truncated GGUF file" "cut.gguf: tensor" "$BIN" generate --model "$T/cut.gguf" "abc"
# --- writing GGUF: convert --to-gguf and quantize, read back by our reader
HF=$FIX/../infer_gqa_f32 # GQA, untied, tokenizer.model
gen_ids() { "$BIN" generate --model "$1" "hello world" --greedy --max-tokens 24 --ignore-eos --print-ids --no-stats 2>/dev/null; }
ref=$(gen_ids "$HF")
"$BIN" convert --to-gguf "$HF" --out "$T/w_F32.gguf" --type F32 2>"$T/err"
rc=$?
check "convert --to-gguf --type F32: exit 0, progress and a report" '[ $rc -eq 0 ] && grep -q "100%" "$T/err" && grep -q "wrote $T/w_F32.gguf" "$T/err"'
out=$("$BIN" info --gguf "$T/w_F32.gguf" 2>/dev/null)
check "convert --to-gguf: info --gguf reads the keys, the tokenizer and GGUF names" \
    'echo "$out" | grep -q "GGUF version 3, .* alignment 32" && echo "$out" | grep -E -q "^  general.file_type +UINT32 +0$" &&
     echo "$out" | grep -E -q "^  tokenizer.ggml.model +STRING +\"llama\"$" && echo "$out" | grep -E -q "^  blk.1.attn_v.weight +F32 +32 x 8 "'
check "convert --to-gguf F32: generate gives the HF directory's greedy ids" '[ -n "$ref" ] && [ "$(gen_ids "$T/w_F32.gguf")" = "$ref" ]'
"$BIN" convert --to-gguf "$HF" --out "$T/w_F16.gguf" 2>/dev/null
check "convert --to-gguf: F16 by default" '"$BIN" info --gguf "$T/w_F16.gguf" 2>/dev/null | grep -E -q "^  blk.0.attn_q.weight +F16 "'
"$BIN" convert --to-hf "$T/w_F32.gguf" --out "$T/w_back" 2>/dev/null
"$BIN" convert --to-gguf "$T/w_back" --out "$T/w_F32_again.gguf" --type F32 --quiet 2>/dev/null
check "convert --to-gguf, --to-hf, --to-gguf: the same file byte for byte" 'cmp -s "$T/w_F32.gguf" "$T/w_F32_again.gguf"'
check "convert --to-gguf then --to-hf: same greedy ids" '[ "$(gen_ids "$T/w_back")" = "$ref" ]'
printf 'hello world, the quick brown fox jumps over the lazy dog.\nanother line of text here\n' >"$T/w.txt"
ppl() { "$BIN" perplexity --model "$1" --text "$T/w.txt" 2>/dev/null | sed -n 's/^perplexity[^0-9]*\([0-9.]*\).*/\1/p'; }
p_ref=$(ppl "$HF")
check "F32 GGUF: the HF directory's perplexity exactly ($p_ref)" '[ -n "$p_ref" ] && [ "$(ppl "$T/w_F32.gguf")" = "$p_ref" ]'
# tolerances for a random 32-wide model (rows of 32 elements: one block per row)
for qt in Q8_0:0.01 BF16:0.01 Q5_K_M:0.04 Q4_0:0.08 Q4_K_M:0.08; do
    q=${qt%:*} tol=${qt#*:}
    "$BIN" quantize "$HF" "$T/w_$q.gguf" $q --quiet 2>"$T/err_$q"
    rc=$?
    p=$(ppl "$T/w_$q.gguf")
    check "quantize HF dir -> $q: perplexity within $tol of the HF directory's ($p vs $p_ref)" \
        '[ $rc -eq 0 ] && [ -n "$p" ] && awk -v a="$p" -v b="$p_ref" -v t=$tol "BEGIN { d = a - b; exit !(d < t * b && -d < t * b) }"'
done
check "quantize Q4_K_M: the K-quant mix with llama-quantize's fallbacks for rows of 32 and 80" \
    '"$BIN" info --gguf "$T/w_Q4_K_M.gguf" 2>/dev/null | grep -E -q "^  blk.1.attn_v.weight +Q8_0 " && grep -q "another type, as llama-quantize does" "$T/err_Q4_K_M"'
"$BIN" quantize "$T/w_F32.gguf" "$T/w_Q8_0_from_gguf.gguf" Q8_0 --quiet 2>/dev/null
check "quantize from a GGUF file: the same bytes as from the HF directory" 'cmp -s "$T/w_Q8_0.gguf" "$T/w_Q8_0_from_gguf.gguf"'
"$BIN" quantize "$T/w_Q8_0.gguf" "$T/w_Q4_0_from_q8.gguf" q4_0 --quiet --name again 2>/dev/null
check "quantize a quantized GGUF again (names are case-blind, --name)" \
    '"$BIN" info --gguf "$T/w_Q4_0_from_q8.gguf" 2>/dev/null | grep -E -q "^  general.name +STRING +\"again\"$" && [ -n "$(gen_ids "$T/w_Q4_0_from_q8.gguf")" ]'
expect_fail "quantize: an unknown type is named with the known ones" "unknown type 'Q3_K_S' \(one of F32 F16 BF16 Q8_0" \
    "$BIN" quantize "$HF" "$T/x.gguf" Q3_K_S
expect_fail "quantize: three positional arguments" "give IN OUT.gguf TYPE" "$BIN" quantize "$HF" "$T/x.gguf"
expect_fail "quantize: a missing input" "nothere: No such file" "$BIN" quantize "$T/nothere" "$T/x.gguf" Q8_0
expect_fail "quantize: an unwritable output names it; nothing is left" "nodir/x.gguf" \
    "$BIN" quantize "$HF" "$T/nodir/x.gguf" Q8_0 --quiet
check "quantize: ... and no temporary file" '[ ! -e "$T/x.gguf" ] && [ -z "$(ls "$T"/*.tmp.* 2>/dev/null)" ]'
mkdir -p "$T/jsononly" && cp "$HF"/*.safetensors "$HF"/*.json "$T/jsononly/" && echo '{}' >"$T/jsononly/tokenizer.json"
expect_fail "quantize: a tokenizer.json-only directory is refused clearly" "tokenizer.json but no tokenizer.model" \
    "$BIN" quantize "$T/jsononly" "$T/x.gguf" Q8_0 --quiet
expect_fail "quantize: a GGUF that is not a Llama model" "quants.gguf: general.architecture is 'none'" \
    "$BIN" quantize "$FIX/quants.gguf" "$T/x.gguf" Q8_0
expect_fail "convert --to-gguf: --out is required" "give --to-gguf DIR and --out FILE.gguf" "$BIN" convert --to-gguf "$HF"
"$BIN" quantize --help | grep -q "Q4_K_M" && ok "quantize --help lists the types" || fail "quantize --help lists the types"
"$BIN" convert --to-gguf --help | grep -q -- "--type TYPE" && ok "convert --to-gguf --help" || fail "convert --to-gguf --help"
finish

#!/usr/bin/env bash
# CLI tests of option handling shared by the commands: settings out of range
# are refused naming the option; the tokenizer option has one name everywhere.
# Usage: tests/cli_options.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${TL_FIXTURES:-$HERE/fixtures}
T=$(mktemp -d /tmp/tl_cli_options.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

# --- AdamW settings outside their range are refused before training starts
cat "$HERE"/../docs/*.md >"$T/corpus.txt"
"$BIN" prepare --byte-level --seq-len 16 --val-fraction 0 --quiet --out "$T/d" "$T/corpus.txt" >/dev/null 2>&1
D=$T/d/train-00000.bin
[ -f "$D" ] && ok "byte-level shards for the training cases" || fail "byte-level shards for the training cases"
for bad in "--beta1 2" "--beta1 1" "--beta2 -0.5" "--clip -1" "--eps 0" "--weight-decay -0.1" "--lr 0" \
    "--min-lr 1"; do
    # shellcheck disable=SC2086
    expect_fail "train $bad refused" "${bad%% *}" "$BIN" train --preset test --data "$D" --steps 2 --quiet $bad \
        --out "$T/run"
done
expect_fail "train --warmup > --decay-steps refused" "warmup" "$BIN" train --preset test --data "$D" --steps 2 \
    --quiet --warmup 10 --decay-steps 5 --out "$T/run2"
check "nothing written by the refused runs" '[ ! -e "$T/run/latest" ]'
if "$BIN" train --preset test --data "$D" --steps 2 --quiet --clip 0 --beta1 0 --weight-decay 0 \
    --out "$T/ok" >"$T/out" 2>"$T/err"; then ok "train accepts the edge values (--clip 0, --beta1 0)"
else fail "train accepts the edge values ($(head -c 300 "$T/err"))"; fi

# --- a checkpoint with one NaN weight is refused by every command that loads
# it, naming the tensor (the bits are patched by offset from the header)
cp -r "$FIX/infer_tied_bf16" "$T/nan"
python3 - "$T/nan/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    begin = hdr["model.layers.0.self_attn.k_proj.weight"]["data_offsets"][0]
    f.seek(8 + n + begin + 2 * 5)
    f.write(struct.pack("<H", 0x7fc0))  # bf16 NaN at element 5
PY
expect_fail "generate refuses a NaN weight" "model.layers.0.self_attn.k_proj.weight' holds NaN at element 5" \
    "$BIN" generate --model "$T/nan" "Hello" --max-tokens 4
expect_fail "perplexity refuses a NaN weight" "k_proj.weight' holds NaN" \
    "$BIN" perplexity --model "$T/nan" --text "$FIX/tokenizer/small_bpe.txt" --max-tokens 100
expect_fail "eval --backend fp32 refuses a NaN weight" "k_proj.weight' holds NaN" \
    "$BIN" eval --model "$T/nan" --task piqa --data "$FIX/eval/piqa.jsonl" \
    --labels "$FIX/eval/piqa-labels.lst" --backend fp32 --limit 2
expect_fail "train --init refuses a NaN weight" "k_proj.weight' holds NaN at element 5" \
    "$BIN" train --init "$T/nan" --data "$D" --steps 1 --quiet --out "$T/nan_run"
# ... and in a GGUF file: an F16 tensor's element 5 (the offset from our own tensor table)
G=$FIX/gguf/tiny_llama.gguf
off=$("$BIN" info --gguf "$G" | awk '/tensor data from byte/ {for (i = 1; i < NF; i++) if ($i == "byte") d = $(i + 1)}
    $1 == "blk.0.attn_k.weight" && $2 == "F16" {print d + $(NF - 1) + 2 * 5}')
cp "$G" "$T/nan.gguf"
[ -n "$off" ] && printf '\x00\x7e' | dd of="$T/nan.gguf" bs=1 seek="$off" conv=notrunc status=none # f16 NaN
expect_fail "generate refuses a NaN weight in a GGUF file" "blk.0.attn_k.weight' holds NaN at element 5" \
    "$BIN" generate --model "$T/nan.gguf" "Hello" --max-tokens 4

# --- eval takes --threads like the other commands; generate's and chat's help
# list --stats/--no-stats
E=$FIX/eval
if "$BIN" eval --model "$E/model" --tokenizer "$FIX/tokenizer/small_bpe.model" --task arc_easy \
    --data "$E/arc_easy.jsonl" --limit 2 --threads 1 --quiet >"$T/out" 2>"$T/err"; then ok "eval --threads 1"
else fail "eval --threads 1 ($(head -c 300 "$T/err"))"; fi
expect_fail "eval --threads 0 refused" "--threads" "$BIN" eval --model "$E/model" --task arc_easy \
    --data "$E/arc_easy.jsonl" --threads 0
check "eval --help lists --threads" "'$BIN' eval --help | grep -q -- '--threads N'"
for c in generate chat; do
    check "$c --help lists --stats and --no-stats" "'$BIN' $c --help | grep -q -- '--stats, --no-stats'"
done

# --- the GEMM backend: info --cpu reports it; TL_GEMM overrides it and a bad value stops every command
"$BIN" info --cpu >"$T/cpu" 2>&1
check "info --cpu names the CPU, OpenBLAS's core and the backend" \
    "grep -q '^cpu: ' '$T/cpu' && grep -q '^flags:' '$T/cpu' && grep -q '^openblas core: ' '$T/cpu' && grep -qE '^gemm backend: (openblas|onednn) \(.+\)' '$T/cpu'"
check "info --cpu lists every flag present or missing" \
    "for f in avx2 fma avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_int8 avx512_vnni; do grep -qw \$f '$T/cpu' || exit 1; done"
for b in openblas onednn; do
    check "TL_GEMM=$b chooses $b" "TL_GEMM=$b '$BIN' info --cpu | grep -q '^gemm backend: $b (TL_GEMM=$b)'"
done
expect_fail "TL_GEMM=bogus refused by info" "TL_GEMM.*'bogus'" env TL_GEMM=bogus "$BIN" info --cpu
expect_fail "TL_GEMM=bogus refused by train" "TL_GEMM.*'bogus'" env TL_GEMM=bogus "$BIN" train --preset test \
    --data "$D" --steps 1 --quiet --out "$T/gemm_bad"
check "nothing written by the refused run" '[ ! -e "$T/gemm_bad" ]'
expect_fail "info --cpu with a preset refused" "--cpu" "$BIN" info --cpu --preset test
# the bf16 products' backend: from the flags (AVX512-BF16 or AMX-BF16: oneDNN), or TL_GEMM_BF16
want=ref
grep -qwE 'avx512_bf16|amx_bf16' <(grep '^flags:' "$T/cpu") && want=onednn
check "info --cpu names the bf16 backend its flags pick ($want)" "grep -qE '^bf16 gemm backend: $want \(.+\)' '$T/cpu'"
for b in ref onednn; do
    check "TL_GEMM_BF16=$b chooses $b" "TL_GEMM_BF16=$b '$BIN' info --cpu | grep -q '^bf16 gemm backend: $b '"
done
expect_fail "TL_GEMM_BF16=bogus refused" "TL_GEMM_BF16.*'bogus'" env TL_GEMM_BF16=bogus "$BIN" info --cpu
# the bf16 dot-product rate, measured where the CPU has AVX512-BF16 (nowhere else)
if grep -qw avx512_bf16 <(grep '^flags:' "$T/cpu"); then
    check "info --cpu measures the bf16 dot-product rate" \
        "grep -qE '^bf16 dot products: [0-9]+\.[0-9]{2}x the fp32 FMAs' '$T/cpu'"
else
    check "info --cpu: no bf16 dot-product rate without AVX512-BF16" "! grep -q '^bf16 dot products' '$T/cpu'"
fi
# the inference kernels: the default --kernel (the one generate's stats name), and the quantized
# decode's integer kernels from the flags (AVX2 and up: the repacked types)
k=$(sed -n 's/^inference kernels: \([a-z0-9-]*\) .*/\1/p' "$T/cpu")
check "info --cpu names the inference kernels generate offers ($k)" \
    "[ -n '$k' ] && '$BIN' generate --help | grep -q -- ' $k'"
if grep -qw avx512_vnni <(grep '^flags:' "$T/cpu") && grep -qw avx512f <(grep '^flags:' "$T/cpu"); then
    check "info --cpu: AVX512-VNNI decode, the five repacked types" \
        "grep -qx 'quantized decode: avx512-vnni integer dot products, repacked at load: Q8_0 Q4_0 Q4_K Q5_K Q6_K' '$T/cpu'"
elif grep -qw avx2 <(grep '^flags:' "$T/cpu") && grep -qw fma <(grep '^flags:' "$T/cpu") &&
    grep -qw f16c <(grep '^flags:' "$T/cpu"); then
    check "info --cpu: AVX2 (or AVX-VNNI) decode, the five repacked types" \
        "grep -Eqx 'quantized decode: avx(2|-vnni) integer dot products, repacked at load: Q8_0 Q4_0 Q4_K Q5_K Q6_K' '$T/cpu'"
else
    check "info --cpu: no repacking without SIMD kernels" \
        "grep -q '^quantized decode: ' '$T/cpu' && ! grep -q 'repacked' '$T/cpu'"
fi
want="the decode kernels"
grep -qw amx_int8 <(grep '^flags:' "$T/cpu") && want="AMX-INT8 tiles"
check "info --cpu names the quantized prompt pass ($want)" "grep -q '^quantized prompt pass: $want' '$T/cpu'"
# with the repacked SIMD kernels (not AMX): from which token count each type's groups are unpacked
# once or paired (Q6_K's are on every such ISA)
if [ "$want" = "the decode kernels" ] && grep -q 'repacked at load' "$T/cpu"; then
    check "info --cpu: the prompt pass's unpacked groups, per type" \
        "grep -Eq '^quantized prompt pass: .*groups unpacked once or read in pairs: .*Q6_K from [0-9]+ tokens' '$T/cpu'"
fi
# the same training on either backend: equal losses to fp32 rounding
for b in openblas onednn; do
    TL_GEMM=$b "$BIN" train --preset test --data "$D" --steps 3 --quiet --out "$T/gemm_$b" >"$T/gemm_$b.out" 2>&1
done
check "train on both backends gives the same losses to fp32 rounding" \
    "paste <(grep -o '\"loss\": [0-9.]*' '$T/gemm_openblas/log.jsonl') <(grep -o '\"loss\": [0-9.]*' '$T/gemm_onednn/log.jsonl') | awk '{d=\$2-\$4; if (d<0) d=-d; if (d>1e-4*\$2) bad=1; n++} END {exit bad || n < 3}'"

finish

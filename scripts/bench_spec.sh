#!/usr/bin/env bash
# Speculative decoding benchmark: greedy decode tokens/s of `tinyllama generate`
# on a random bf16 model of TinyLlama-1.1B's shape, without a draft and with its
# own Q4_0 / Q8_0 GGUF files as drafts (`--draft`, k proposals per step), in
# the same run; the acceptance rate of each; and a check that every drafted
# run printed exactly the ids of the plain one.  Needs python3 with torch +
# transformers for the model (written once, as scripts/bench_infer.sh does).
#   scripts/bench_spec.sh [--threads N] [--gen N] [--dir DIR] [--ks "2 4 6"] [--drafts "Q4_0 Q8_0"] [--python PY]
# See docs/inference.md ("Speculative decoding").
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=/tmp/tl_bench_tinyllama_bf16
THREADS=$(nproc)
GEN=48
KS="2 4 6"
DRAFTS="Q4_0 Q8_0"
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
    --threads) THREADS=$2; shift 2 ;;
    --gen) GEN=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --ks) KS=$2; shift 2 ;;
    --drafts) DRAFTS=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
make -s build/tinyllama
BIN=./build/tinyllama
if [ ! -f "$DIR/config.json" ]; then
    echo "writing a random bf16 TinyLlama-1.1B-shaped model to $DIR ..." >&2
    "$PY" - "$DIR" <<'PYEOF'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                  num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
LlamaForCausalLM(cfg).save_pretrained(sys.argv[1], safe_serialization=True)
PYEOF
fi
for q in $DRAFTS; do
    [ -f "$DIR.$q.gguf" ] || "$BIN" quantize "$DIR" "$DIR.$q.gguf" "$q" >&2
done
OUT=$(mktemp -d /tmp/tl_bench_spec.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
PROMPT="1 450 4996 310 278 6790 1546 29892 278 1023 1473 338"
# run NAME ARGS...: greedy ids to $OUT/NAME.ids, the stats lines to $OUT/NAME.err
run() {
    local name=$1
    shift
    "$BIN" generate --model "$DIR" --ids "$PROMPT" --greedy --ignore-eos --max-tokens "$GEN" --print-ids \
        --threads "$THREADS" "$@" >"$OUT/$name.ids" 2>"$OUT/$name.err"
}
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS"
echo "flags: $(lscpu | sed -n 's/^Flags: *//p' | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|amx_bf16|avx512_vnni|avx_vnni)$' | tr '\n' ' ')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run plain
# decode tokens/s: the tokens after the first (which comes from the prompt pass) per second of the loop
plain_tps=$(sed -n 's/.*generated: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/p' "$OUT/plain.err")
echo
echo "| draft | k | accepted | tokens per target pass | decode tokens/s | speed-up | ids = plain |"
echo "|---|---|---|---|---|---|---|"
echo "| none | - | - | 1.00 | $plain_tps | 1.00x | - |"
for q in $DRAFTS; do
    for k in $KS; do
        run "$q-$k" --draft "$DIR.$q.gguf" --draft-k "$k"
        line=$(grep 'draft:' "$OUT/$q-$k.err")
        acc=$(echo "$line" | sed -n 's/.*accepted (\([0-9.]*%\)).*/\1/p')
        per=$(echo "$line" | sed -n 's/.* \([0-9.]*\) tokens per pass.*/\1/p')
        tps=$(echo "$line" | sed -n 's/.*pass, \([0-9.]*\) tokens\/s.*/\1/p')
        same=$(cmp -s "$OUT/plain.ids" "$OUT/$q-$k.ids" && echo yes || echo NO)
        echo "| $q | $k | $acc | $per | $tps | $(awk -v a="$tps" -v b="$plain_tps" 'BEGIN{printf "%.2fx", a/b}') | $same |"
    done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

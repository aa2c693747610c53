#!/usr/bin/env bash
# Fine-tuning throughput: train (pretraining on token shards) vs train --sft (masked
# chat shards) vs train --dpo (preference pairs) on the same random model and the
# same sequence length, interleaved in one run (REPS rounds of the three) so that a
# shared machine's load falls on all of them alike.  tokens/s is the trainer's own
# (every position of every sequence, padding included: the compute it does), the
# median over the steps after the first of each run; a DPO pair counts as its 2
# sequences.  DPO's reference (one forward pass per pair, once before step 1) is
# timed apart: the wall time of a 1-step DPO run less that of a 1-step SFT run
# (the same start-up and a step of about the same cost); recomputing it every
# step instead would cost that pass's share of one batch of pairs per step.
# Usage: [THREADS=1] scripts/bench_sft.sh [HIDDEN [LAYERS [SEQ [BATCH [STEPS [REPS]]]]]]
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}
H=${1:-256} L=${2:-4} SEQ=${3:-64} B=${4:-8} STEPS=${5:-12} REPS=${6:-3}
make -j2 >/dev/null
BIN=./build/tinyllama
TOK=tests/fixtures/tokenizer/small_bpe.model
CORPUS=${CORPUS:-../shared/corpora/tinyshakespeare.txt}
[ -f "$CORPUS" ] || CORPUS=/work/shared/corpora/tinyshakespeare.txt
T=$(mktemp -d /tmp/tl_bench_sft.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
$BIN info --cpu | sed 's/^/  /'
printf '{"vocab_size": 1000, "hidden_size": %d, "intermediate_size": %d, "num_hidden_layers": %d, "num_attention_heads": %d, "num_key_value_heads": %d, "max_position_embeddings": %d}' \
    "$H" $((H * 8 / 3 / 8 * 8)) "$L" $((H / 32)) $((H / 64 > 0 ? H / 64 : 1)) $((SEQ * 2)) >"$T/model.json"
echo "model: $(cat "$T/model.json"); batch $B x seq $SEQ, $STEPS steps a run, $REPS rounds"
# the same text three ways: plain tokens, conversations, pairs
scripts/make_chat_data.sh "$CORPUS" "$T" "${NCONV:-400}" 0 >/dev/null
$BIN prepare --tokenizer "$TOK" --seq-len "$SEQ" --val-count 0 --out "$T/plain" "$CORPUS" >/dev/null 2>&1
$BIN prepare --format chat --tokenizer "$TOK" --seq-len "$SEQ" --val-count 0 --out "$T/chat" "$T/chat.jsonl" >/dev/null 2>&1
$BIN prepare --format preference --tokenizer "$TOK" --seq-len "$SEQ" --val-count 0 --out "$T/pairs" "$T/pairs.jsonl" >/dev/null 2>&1
$BIN train --config "$T/model.json" --tokenizer "$TOK" --data "$T/plain" --steps 1 --batch "$B" --seq-len "$SEQ" \
    --out "$T/init" >/dev/null 2>&1
INIT=$(ls -d "$T"/init/step-* | tail -1)

# median tokens_per_s of a log's step lines after the first
med() {
    grep '"tokens_per_s"' "$1" | grep -v '"val_' | tail -n +2 | sed 's/.*"tokens_per_s": *\([0-9.e+]*\).*/\1/' |
        sort -g | awk '{v[NR] = $1} END {print NR ? (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) : 0}'
}
run() { # name, extra args...
    local name=$1
    shift
    rm -rf "$T/run"
    local t0 t1
    t0=$(date +%s.%N)
    $BIN train --init "$INIT" --tokenizer "$TOK" --batch "$B" --seq-len "$SEQ" --lr 1e-4 --warmup 0 --threads "$THREADS" \
        --out "$T/run" "$@" >/dev/null 2>"$T/err" || { cat "$T/err"; exit 1; }
    t1=$(date +%s.%N)
    [ -z "${KEEP:-}" ] || cp "$T/run/log.jsonl" "$T/log.$name"
    echo "$name $(med "$T/run/log.jsonl") $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" >>"$T/results"
}
for r in $(seq "$REPS"); do
    run pretrain --data "$T/plain" --steps "$STEPS"
    run sft --data "$T/chat" --sft --steps "$STEPS"
    # DPO: --batch counts pairs, so B/2 pairs are B sequences, as the others
    run dpo --data "$T/pairs" --dpo --beta 0.1 --steps "$STEPS" --batch $((B / 2))
    run dpo1 --data "$T/pairs" --dpo --beta 0.1 --steps 1 --batch $((B / 2))
    run sft1 --data "$T/chat" --sft --steps 1
done
awk -v B="$B" -v seq="$SEQ" -v npairs="$(grep -c . "$T/pairs.jsonl")" '
    { tps[$1] = tps[$1] " " $2; wall[$1] = wall[$1] " " $3 }
    function sorted(s, a,   n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n }
    function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function best(s,   a, n) { n = sorted(s, a); return a[n] }
    END {
        p = med(tps["pretrain"]); s = med(tps["sft"]); d = med(tps["dpo"])
        P = best(tps["pretrain"]); S = best(tps["sft"]); D = best(tps["dpo"])
        printf "tokens/s, each run the median of its steps after the first (rounds:%s |%s |%s)\n", tps["pretrain"], tps["sft"], tps["dpo"]
        printf "            median of rounds           best round\n"
        printf "  pretrain %8.0f                    %8.0f\n", p, P
        printf "  sft      %8.0f (%.3f x pretrain)   %8.0f (%.3f x pretrain)\n", s, s / p, S, S / P
        printf "  dpo      %8.0f (%.3f x pretrain)   %8.0f (%.3f x pretrain)\n", d, d / p, D, D / P
        ref = med(wall["dpo1"]) - med(wall["sft1"])
        step = B * seq / D   # seconds a DPO step (B sequences) at the best speed
        per = ref * (B / 2) / npairs
        printf "dpo reference: %.2f s once for %d pairs (%.4f s per batch of %d pairs); a DPO step %.4f s:\n", ref, npairs, per, B / 2, step
        printf "  recomputing the reference every step would make a step about %.0f%% slower\n", 100 * per / step
    }' "$T/results"

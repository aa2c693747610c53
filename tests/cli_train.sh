#!/usr/bin/env bash
# CLI tests of prepare/train/info: help texts, bad input, kill + resume bit-identity,
# continual pretraining from an HF directory.  Usage: tests/cli_train.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
T=$(mktemp -d /tmp/tl_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"

# --- help for every command
if "$BIN" --help | grep -q "usage: tinyllama"; then ok "top-level --help"; else fail "top-level --help"; fi
for cmd in $("$BIN" --help | awk '/^commands:/{f=1;next} f && !NF {exit} f {print $1}'); do
    if "$BIN" "$cmd" --help >"$T/h" 2>&1 && grep -q "usage:" "$T/h"; then ok "$cmd --help"; else fail "$cmd --help"; fi
done
expect_fail "unknown command" "unknown command" "$BIN" frobnicate
expect_fail "unknown option" "unknown option" "$BIN" train --data x --bogus

# --- a small corpus
for i in 1 2 3 4 5 6; do sed -n "$((i * 40)),$((i * 40 + 300))p" "$(dirname "$0")/../src/model/model.c"; done >"$T/corpus.txt"
if "$BIN" prepare --byte-level --seq-len 32 --out "$T/data" "$T/corpus.txt" >"$T/prep" 2>&1 &&
    [ -f "$T/data/train-00000.bin" ] && [ -f "$T/data/val-00000.bin" ]; then ok "prepare byte-level"; else fail "prepare byte-level"; fi
D="$T/data/train-00000.bin"
COMMON=(--preset test --data "$D" --batch 2 --seq-len 32 --steps 8 --lr 1e-3 --warmup 2 --quiet --threads 2)

# --- a directory means its training shards (--data) or validation shards (--val-data), and says which
ntrain=$(sed -n 's/^train: \([0-9]*\) samples.*/\1/p' "$T/prep")
"$BIN" train --preset test --data "$T/data" --val-data "$T/data/" --batch 2 --seq-len 32 --steps 1 --warmup 0 --quiet \
    --out "$T/rdir" 2>"$T/rdir.err"
if grep -q "^data: $T/data: 1 training shard (train-00000.bin)$" "$T/rdir.err" &&
    grep -q "^data: $ntrain training samples of 32 tokens in 1 shard" "$T/rdir.err"; then
    ok "--data DIR takes its training shards only"
else fail "--data DIR takes its training shards only (want $ntrain samples: $(grep data: "$T/rdir.err"))"; fi
if grep -q "^val-data: $T/data/: 1 validation shard (val-00000.bin)$" "$T/rdir.err"; then ok "--val-data DIR takes its validation shards"
else fail "--val-data DIR takes its validation shards ($(grep val-data "$T/rdir.err"))"; fi

# --- shards must belong to a complete manifest (a prepare killed midway, or of an older version, leaves none)
cp -r "$T/data" "$T/nomani" && rm "$T/nomani/manifest.json"
expect_fail "shard without a manifest refused" "nomani/train-00000.bin: no manifest.json in .*rerun tinyllama prepare" \
    "$BIN" train --preset test --data "$T/nomani/train-00000.bin" --steps 1 --out "$T/r0"
expect_fail "... also given as a directory" "no manifest.json" "$BIN" train --preset test --data "$T/nomani" --steps 1 --out "$T/r0"
head -c 4000 "$T/corpus.txt" >"$T/c2.txt"
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/other" "$T/c2.txt" >/dev/null 2>&1
cp -r "$T/data" "$T/mixed" && cp "$T/other/train-00000.bin" "$T/mixed/train-00000.bin"
expect_fail "shard of another run refused" "mixed/train-00000.bin: not the shard .*manifest.json lists.*rerun tinyllama prepare" \
    "$BIN" train --preset test --data "$T/mixed/train-00000.bin" --steps 1 --out "$T/r0"

# --- bad input
expect_fail "missing data file" "nope.bin: cannot open" "$BIN" train --data "$T/nope.bin" --out "$T/r0"
head -c 100 "$D" >"$T/trunc.bin"
expect_fail "truncated shard" "trunc.bin: .*truncated" "$BIN" train --data "$T/trunc.bin" --out "$T/r0"
echo '{"hidden_size": 64,' >"$T/bad.json"
expect_fail "malformed config.json" "bad.json: malformed JSON" "$BIN" train --config "$T/bad.json" --data "$D" --out "$T/r0"
"$BIN" info --preset test >/dev/null
printf '{"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}' >"$T/small.json"
expect_fail "shard vocab larger than model" "vocabulary of 259 tokens but the model has 100" \
    "$BIN" train --config "$T/small.json" --data "$D" --out "$T/r0"
expect_fail "seq-len longer than shards" "longer than the training shards" "$BIN" train "${COMMON[@]}" --seq-len 64 --out "$T/r0"
expect_fail "bad number" "--steps expects an integer" "$BIN" train --data "$D" --steps ten
mkdir -p "$T/badckpt" && echo "{}" >"$T/badckpt/training_state.bin"
expect_fail "resume from corrupt state" "training_state.bin|config.json" "$BIN" train "${COMMON[@]}" --resume "$T/badckpt" --out "$T/r0"

# --- uninterrupted run vs killed + resumed run: identical losses and weights
"$BIN" train "${COMMON[@]}" --steps 12 --out "$T/full" 2>"$T/full.err" || fail "uninterrupted run"
"$BIN" train "${COMMON[@]}" --steps 12 --ckpt-every 3 --out "$T/part" 2>/dev/null &
pid=$!
for _ in $(seq 1 400); do [ -f "$T/part/latest" ] && break; sleep 0.02; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -f "$T/part/latest" ]; then ok "checkpoint written before the kill"; else fail "checkpoint written before the kill"; fi
ls -d "$T"/part/.tmp-* >/dev/null 2>&1 && echo "     (a half-written temporary checkpoint was left, as a crash would)"
"$BIN" train "${COMMON[@]}" --steps 12 --ckpt-every 3 --out "$T/part" --resume 2>"$T/resume.err"
if grep -q "resuming from" "$T/resume.err"; then ok "resume found the checkpoint"; else fail "resume found the checkpoint ($(cat "$T/resume.err"))"; fi
if cmp -s "$T/full/step-00000012/model.safetensors" "$T/part/step-00000012/model.safetensors"; then
    ok "resumed weights bit-identical"
else
    fail "resumed weights bit-identical"
fi
losses() { grep -o '"step": [0-9]*, "loss": [0-9.]*' "$1"; }
if [ "$(losses "$T/full/log.jsonl")" = "$(losses "$T/part/log.jsonl")" ] && [ "$(losses "$T/full/log.jsonl" | wc -l)" -eq 12 ]; then
    ok "resumed losses identical, log has each step once"
else
    fail "resumed losses identical"
fi
# the 128-byte header holds wall-clock time; the AdamW moments follow it
cmp -s -i 128 "$T/full/step-00000012/training_state.bin" "$T/part/step-00000012/training_state.bin" &&
    ok "optimizer state bit-identical" || fail "optimizer state bit-identical"
expect_fail "resume with a different batch" "batch=2 but this run has batch=4" \
    "$BIN" train "${COMMON[@]}" --batch 4 --steps 14 --out "$T/part" --resume

# --- bf16 mixed precision on the CPU: exact resume within the mode, close to fp32, the
# emulated products (TL_GEMM_BF16=ref) equal to the hardware's but for summation order
"$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --out "$T/bfull" 2>"$T/bfull.err" || fail "bf16 run"
grep -q "^precision: bf16 mixed precision" "$T/bfull.err" && ok "bf16 run says its precision" ||
    fail "bf16 run says its precision ($(head -3 "$T/bfull.err"))"
"$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --ckpt-every 3 --out "$T/bpart" 2>/dev/null &
pid=$!
for _ in $(seq 1 400); do [ -f "$T/bpart/latest" ] && break; sleep 0.02; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --ckpt-every 3 --out "$T/bpart" --resume 2>/dev/null
if cmp -s "$T/bfull/step-00000012/model.safetensors" "$T/bpart/step-00000012/model.safetensors" &&
    cmp -s -i 128 "$T/bfull/step-00000012/training_state.bin" "$T/bpart/step-00000012/training_state.bin" &&
    [ "$(losses "$T/bfull/log.jsonl")" = "$(losses "$T/bpart/log.jsonl")" ]; then
    ok "bf16: resumed weights, optimizer state and losses bit-identical"
else fail "bf16: resumed run differs"; fi
cmp -s "$T/full/step-00000012/model.safetensors" "$T/bfull/step-00000012/model.safetensors" &&
    fail "bf16 weights equal fp32's: the products are not bf16" || ok "bf16 weights differ from fp32's"
# per step: |bf16 - fp32| / fp32 loss
rel() { paste <(losses "$1" | awk '{print $4}') <(losses "$2" | awk '{print $4}') |
    awk '{d = ($1 - $2) / $2; d = d < 0 ? -d : d; if (d > m) m = d} END {printf "%.6f", m}'; }
d=$(rel "$T/bfull/log.jsonl" "$T/full/log.jsonl")
awk -v d="$d" 'BEGIN {exit !(d < 0.01)}' && ok "bf16 losses within 1% of fp32's (worst $d)" ||
    fail "bf16 losses within 1% of fp32's (worst $d)"
TL_GEMM_BF16=ref "$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --out "$T/bref" 2>/dev/null
d=$(rel "$T/bref/log.jsonl" "$T/bfull/log.jsonl")
[ "$(losses "$T/bref/log.jsonl" | wc -l)" -eq 12 ] && awk -v d="$d" 'BEGIN {exit !(d < 1e-3)}' &&
    ok "bf16 emulated products track the hardware's (worst $d)" || fail "bf16 emulated products (worst $d)"
# 1 thread as 2: bit-identical where every product is oneDNN's (AVX-512 with bf16), else to rounding
"$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --threads 1 --out "$T/b1" 2>/dev/null
d=$(rel "$T/b1/log.jsonl" "$T/bfull/log.jsonl")
if "$BIN" info --cpu | grep -q '^gemm backend: onednn' && "$BIN" info --cpu | grep -q '^bf16 gemm backend: onednn'; then
    cmp -s "$T/b1/step-00000012/model.safetensors" "$T/bfull/step-00000012/model.safetensors" &&
        ok "bf16 on 1 thread bit-identical to 2" || fail "bf16 on 1 thread bit-identical to 2 (losses differ by $d)"
else
    [ "$(losses "$T/b1/log.jsonl" | wc -l)" -eq 12 ] && awk -v d="$d" 'BEGIN {exit !(d < 1e-3)}' &&
        ok "bf16 on 1 thread as on 2 to rounding (worst $d)" || fail "bf16 on 1 thread as on 2 (worst $d)"
fi
# ZeRO stages 1-3 (one process: sharded moments and gradient buckets, then the gather; stage 3 rounds
# each unit's bf16 copy as it is gathered): the same bits as stage 0
for z in 1 2 3; do
    "$BIN" train "${COMMON[@]}" --precision bf16 --steps 12 --zero $z --out "$T/bz$z" 2>/dev/null
    cmp -s "$T/bfull/step-00000012/model.safetensors" "$T/bz$z/step-00000012/model.safetensors" &&
        ok "bf16 at ZeRO stage $z as at stage 0" || fail "bf16 at ZeRO stage $z differs from stage 0"
done
expect_fail "--precision fp16 refused" "--precision must be bf16 or fp32" "$BIN" train "${COMMON[@]}" --precision fp16 --out "$T/r0"

# --- loss falls; validation; continual pretraining from the HF directory
"$BIN" train --preset test --data "$D" --val-data "$T/data/val-00000.bin" --batch 4 --seq-len 32 --steps 40 \
    --lr 3e-3 --eval-every 20 --eval-batches 2 --out "$T/learn" --quiet 2>"$T/learn.err"
first=$(grep -o '"loss": [0-9.]*' "$T/learn/log.jsonl" | head -3 | awk '{s+=$2} END {print s/NR}')
last=$(grep -o '"loss": [0-9.]*' "$T/learn/log.jsonl" | tail -3 | awk '{s+=$2} END {print s/NR}')
if awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a - 1.0)}'; then ok "loss falls ($first -> $last)"; else fail "loss falls ($first -> $last)"; fi
grep -q '"val_loss"' "$T/learn/log.jsonl" && grep -q "validation loss" "$T/learn.err" && ok "validation logged" || fail "validation logged"
"$BIN" train --init "$T/learn/step-00000040" --data "$D" --batch 4 --seq-len 32 --steps 2 --lr 1e-4 --warmup 0 \
    --out "$T/cont" --quiet 2>"$T/cont.err"
cont=$(grep -o '"loss": [0-9.]*' "$T/cont/log.jsonl" | head -1 | awk '{print $2}')
# the first loss after --init is a new batch's (the data starts over): nearer the trained model's loss
# than a fresh model's (the corpus is this repo's source, so the exact values move with it)
if awk -v a="$cont" -v f="$first" -v b="$last" 'BEGIN {exit !(a < (f + b) / 2)}'; then
    ok "--init continues from the checkpoint ($cont; fresh $first, trained $last)"
else fail "--init continues ($cont; fresh $first, trained $last)"; fi
rm -f "$T/learn/step-00000040/model.safetensors"
expect_fail "--init with missing weights" "no model.safetensors" "$BIN" train --init "$T/learn/step-00000040" --data "$D" --out "$T/r1"

# --- zero-shot benchmarks during training: with a negligible learning rate the scores
# equal lm-evaluation-harness's for the fixture model (tests/fixtures/eval/expected.json)
R=$(cd "$(dirname "$0")/.." && pwd)
TOK="$R/../shared/tokenizers/llama2/tokenizer.model"
EV="$R/tests/fixtures/eval"
printf 'Tiny models learn quickly.\n\nThey forget quickly too, unless one keeps training them on more text.\n' >"$T/small.txt"
for i in 1 2 3 4 5 6; do cat "$T/small.txt"; done >"$T/small6.txt"
"$BIN" prepare --tokenizer "$TOK" --seq-len 16 --val-fraction 0 --out "$T/ldata" "$T/small6.txt" >/dev/null 2>&1
"$BIN" train --init "$EV/model" --data "$T/ldata/train-00000.bin" --batch 1 --seq-len 16 --steps 1 --lr 1e-12 \
    --min-lr 0 --warmup 0 --bench "piqa:$EV/piqa.jsonl:$EV/piqa-labels.lst" --bench "arc_easy:$EV/arc_easy.jsonl" \
    --tokenizer "$TOK" --out "$T/bench" --quiet 2>"$T/bench.err"
if grep -q '"bench": "piqa", "n": 4, "acc": 0.500000, "acc_stderr": 0.288675, "acc_norm": 0.250000' "$T/bench/log.jsonl" &&
    grep -q "piqa acc 0.5000 acc_norm 0.2500" "$T/bench.err"; then
    ok "--bench scores as lm-eval during training"
else
    fail "--bench scores as lm-eval during training ($(grep bench "$T/bench/log.jsonl" | head -2) $(tail -2 "$T/bench.err"))"
fi
want=$(python3 -c "import json;t=json.load(open('$EV/expected.json'))['tasks']['arc_easy'];print('%.6f %.6f'%(t['acc'],t['acc_norm']))")
got=$(grep '"bench": "arc_easy"' "$T/bench/log.jsonl" | sed 's/.*"acc": \([0-9.]*\).*"acc_norm": \([0-9.]*\).*/\1 \2/')
if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "arc_easy during training = lm-eval ($got)"; else fail "arc_easy during training: got '$got', lm-eval '$want'"; fi
expect_fail "--bench without --tokenizer" "needs --tokenizer" "$BIN" train --data "$D" --bench "piqa:$EV/piqa.jsonl" --out "$T/r2"

finish

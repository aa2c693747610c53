#!/usr/bin/env bash
# CLI tests of `train --recipe`: the scaled-down TinyLlama v1.1 recipe (shortened) end to end,
# what it means (phases, the mixture's measured shares, the batch doubling, the learning rate
# as a function of tokens), exact resume inside and across phase boundaries, options that
# override the recipe, bad recipes.  Usage: tests/cli_recipe.sh path/to/tinyllama
set -u
BIN=$(realpath "${1:-./build/tinyllama}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${TL_SHARED:-$ROOT/../shared}
[ -d "$SHARED/corpora" ] || SHARED=/work/shared
T=$(mktemp -d /tmp/tl_recipe.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

# --- the two domains, byte-level, where the demo recipe looks for them
for c in shakespeare:tinyshakespeare botchan:botchan; do
    "$BIN" prepare --byte-level --seq-len 32 --quiet --out "data/${c%%:*}" "$SHARED/corpora/${c#*:}.txt" >/dev/null 2>&1 ||
        fail "prepare ${c#*:}"
done
# the demo recipe shortened 16x: the test model, 32-token sequences, micro-batches of 2, token counts / 16
awk '/preset:/ {sub(/demo/, "test")} /^seq_len:/ {$2 = 32} /^micro_batch:/ {$2 = 2}
     /tokens: [0-9]/ {match($0, /[0-9]+$/); $0 = substr($0, 1, RSTART - 1) substr($0, RSTART) / 16} {print}' \
    "$ROOT/recipes/tinyllama-v1.1-demo.yaml" >short.yaml
RUN=(--recipe short.yaml --threads 2 --quiet --eval-batches 2)
"$BIN" train "${RUN[@]}" --ckpt-every 1 --keep 0 --out full 2>full.err || fail "recipe run ($(tail -3 full.err))"
grep '"lr"' full/log.jsonl >steps.jsonl # the step lines (validation has lines of its own)
L=steps.jsonl
n=$(grep -c '"loss"' "$L")
# 4096 tokens of 256 per step, 3072 of 256, 2048 of 512
p=$(grep -o '"phase": "[a-z]*"' "$L" | uniq -c | awk '{printf "%s:%s ", $3, $1}')
if [ "$n" -eq 32 ] && [ "$p" = '"pretrain":16 "botchan":12 "cooldown":4 ' ]; then ok "three phases in one run ($p)"
else fail "three phases in one run ($n steps: $p)"; fi
grep -q '^phase cooldown: 4 steps of 512 tokens (accumulation 8)' full.err && ok "phases reported" || fail "phases reported ($(head -3 full.err))"
# the global batch doubles at the boundary; the token count grows by each step's batch
if awk -F'[:,}]' '{for (i = 1; i < NF; i++) { if ($i ~ /"tokens"$/) tok = $(i+1); if ($i ~ /"batch_tokens"$/) b = $(i+1) }
        if (tok != prev + b || b != (NR <= 28 ? 256 : 512)) exit 1; prev = tok}' "$L"; then
    ok "batch 256 -> 512 tokens at the cooldown, token count continuous"
else fail "batch doubles at the boundary"; fi
# the learning rate is the cosine of the tokens seen (warmup 512, decay over all 9216), worked out here
if awk -F'[:,}]' 'function lr(b, a) { if (b < 512) return 2e-3 * (a < 512 ? a : 512) / 512;
                                      return 2e-4 + 0.5 * (1 + cos(3.141592653589793 * (b - 512) / (9216 - 512))) * 1.8e-3 }
        {for (i = 1; i < NF; i++) { if ($i ~ /"tokens"$/) tok = $(i+1); if ($i ~ /"batch_tokens"$/) b = $(i+1); if ($i ~ /"lr"$/) got = $(i+1) }
         want = lr(tok - b, tok); d = got - want; if (d < 0) d = -d; if (d > 1e-6 * want) { print NR, got, want; exit 1 } }' "$L" >lr.err
then ok "learning rate = cosine of the tokens seen, continuous across the batch change"
else fail "learning rate by tokens ($(cat lr.err))"; fi
# the mixture's measured shares (samples counted as read) follow the ramp: botchan's share grows
# from 0 to 0.5 over the first 1024 tokens (32 samples) of its phase; within the mixture's +-2 samples
if awk -F'[:,}]' '{for (i = 1; i < NF; i++) { if ($i ~ /"botchan"$/) bo[$0 ~ /cooldown/ ? 3 : 2] += $(i+1); if ($i ~ /"shakespeare"$/) sh[$0 ~ /cooldown/ ? 3 : ($0 ~ /"phase": "botchan"/ ? 2 : 1)] += $(i+1) } }
        END { want2 = 32 * 0.25 + 64 * 0.5; printf "pretrain %d/%d, botchan phase %d/%d (want %g), cooldown %d/%d (want 32)\n", bo[1], sh[1] + bo[1], bo[2], sh[2] + bo[2], want2, bo[3], sh[3] + bo[3]
              d2 = bo[2] - want2; d3 = bo[3] - 32; exit !(bo[1] == 0 && sh[1] == 128 && sh[2] + bo[2] == 96 && d2 * d2 <= 4 && d3 * d3 <= 4 && sh[3] + bo[3] == 64) }' "$L" >shares; then
    ok "measured mixture follows the recipe ($(cat shares))"
else fail "measured mixture ($(cat shares))"; fi
# validation on each domain (the recipe's validation sets), every 4 steps, logged apart
vs=$(grep -o '"step": [0-9]*, "val_set": "[a-z]*"' full/log.jsonl | awk '{print $2 $4}' | tr -d '",' | tr '\n' ' ')
want=$(for s in 4 8 12 16 20 24 28 32; do printf '%sshakespeare %sbotchan ' $s $s; done)
if [ "$vs" = "$want" ] && grep -q "step 32: validation loss on botchan" full.err; then ok "validation per domain every 4 steps"
else fail "validation per domain ($vs)"; fi

losses() { grep -o '"step": [0-9]*, "loss": [0-9.]*\|"step": [0-9]*, "val_set": "[a-z]*", "val_loss": [0-9.]*' "$1"; }
# --- exact resume: mid-phase, at the end of a phase, just after a boundary, inside the ramp, after the batch grew
for s in 5 16 17 19 30; do
    "$BIN" train "${RUN[@]}" --resume "full/$(printf step-%08d $s)" --out "r$s" 2>"r$s.err"
    if cmp -s full/step-00000032/model.safetensors "r$s/step-00000032/model.safetensors" &&
        cmp -s -i 128 full/step-00000032/training_state.bin "r$s/step-00000032/training_state.bin" &&
        [ "$(losses "r$s/log.jsonl")" = "$(losses full/log.jsonl | awk -v s=$s '$2 + 0 > s')" ]; then
        ok "resume from step $s: weights, optimizer state, losses and validation losses bit-identical"
    else fail "resume from step $s ($(tail -2 "r$s.err"))"; fi
done
# killed at a random point (SIGKILL, checkpoints every 2 steps), then --resume
"$BIN" train "${RUN[@]}" --ckpt-every 2 --out part 2>/dev/null &
pid=$!
for _ in $(seq 1 400); do [ -f part/latest ] && break; sleep 0.01; done
sleep "0.0$((RANDOM % 10))"
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"$BIN" train "${RUN[@]}" --ckpt-every 2 --out part --resume 2>part.err
if cmp -s full/step-00000032/model.safetensors part/step-00000032/model.safetensors &&
    [ "$(losses part/log.jsonl)" = "$(losses full/log.jsonl)" ]; then
    ok "killed and resumed: bit-identical ($(grep -o 'resuming from.*' part.err || echo 'finished before the kill'))"
else fail "killed and resumed ($(tail -2 part.err))"; fi
expect_fail "resume with another recipe refused" "step-00000016: the checkpoint was trained with [a-z_]*=.*resume with the same setting" \
    "$BIN" train --recipe "$ROOT/recipes/tinyllama-v1.1-demo.yaml" --preset test --seq-len 32 --batch 2 --threads 2 --quiet \
    --resume full/step-00000016 --out rbad

sed 's/ramp_tokens: 1024/ramp_tokens: 512/' short.yaml >other.yaml
expect_fail "resume with another ramp refused" "the checkpoint was trained with phases=" \
    "$BIN" train --recipe other.yaml --threads 2 --quiet --resume full/step-00000016 --out rbad2

# --- 2 MPI ranks: the same mixture read (the ranks' draws together are the 1-rank stream), exact resume
if command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
    export OMPI_MCA_mca_base_component_disable_dlclose=1 ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
    MPI=(mpirun --allow-run-as-root --oversubscribe -np 2 "$BIN" train --recipe short.yaml --threads 1 --quiet --eval-batches 2)
    "${MPI[@]}" --ckpt-every 1 --keep 0 --out m2 >m2.out 2>&1 || fail "2 ranks ($(tail -c 300 m2.out))"
    mixes() { grep '"lr"' "$1" | grep -o '"step": [0-9]*\|"mix": {[^}]*}' | paste -d' ' - -; }
    if [ "$(mixes m2/log.jsonl | wc -l)" -eq 32 ] && [ "$(mixes m2/log.jsonl)" = "$(mixes full/log.jsonl)" ]; then
        ok "2 ranks read the 1-rank mixture, step by step, across the batch growth"
    else fail "2 ranks read the 1-rank mixture ($(mixes m2/log.jsonl | head -3))"; fi
    "${MPI[@]}" --resume m2/step-00000017 --out m2r >m2r.out 2>&1
    if cmp -s m2/step-00000032/model.safetensors m2r/step-00000032/model.safetensors &&
        cmp -s -i 128 m2/step-00000032/training_state.bin m2r/step-00000032/training_state.bin; then
        ok "2 ranks: resume just after a phase boundary bit-identical"
    else fail "2 ranks: resume after a boundary ($(tail -c 300 m2r.out))"; fi
    # 3 ranks x 2 x 32 = 192 tokens do not divide the first phase's 256: refused before the model is
    # opened (--init names nothing: opening the model first would fail on that instead) or anything written
    expect_fail "a batch the 3 ranks do not divide is refused before the model" \
        "short.yaml:[0-9]*: phases\[0\] \(pretrain\).batch_tokens: 256 tokens is not a multiple of ranks x micro_batch x seq_len = 3 x 2 x 32" \
        mpirun --allow-run-as-root --oversubscribe -np 3 "$BIN" train --recipe short.yaml --threads 1 --init "$T/no-model" --out m3
    [ ! -e m3 ] && ok "... and nothing written" || fail "a refused 3-rank run wrote m3"
else
    fail "mpirun not found: install Open MPI (scripts/setup.sh)"
fi

# --- options override the recipe
"$BIN" train "${RUN[@]}" --lr 4e-3 --steps 3 --out over 2>over.err
if [ "$(grep -c '"loss"' over/log.jsonl)" -eq 3 ] && grep -q '"step": 1, .*"lr": 2.000000e-03' over/log.jsonl; then
    ok "--steps stops early, --lr replaces the peak"
else fail "options override ($(head -c 300 over/log.jsonl; tail -2 over.err))"; fi
"$BIN" train "${RUN[@]}" --batch-tokens 128 --steps 2 --out bt 2>bt.err
grep -q '"batch_tokens": 128' bt/log.jsonl && ok "--batch-tokens replaces the phases' batch" || fail "--batch-tokens ($(tail -2 bt.err))"

# --- bad recipes: the file, the line, the phase and the key, before any training
bad() { printf '%b' "$2" >"$1.yaml"; }
bad unknown 'micro_batch: 2\nphases:\n  - name: p\n    tokens: 64\n    toknes: 3\n'
expect_fail "unknown key" "unknown.yaml:5: phases\[0\] \(p\): unknown key 'toknes'" "$BIN" train --recipe unknown.yaml
bad negative 'phases:\n  - name: p\n    tokens: -64\n'
expect_fail "negative length" "negative.yaml:3: phases\[0\] \(p\).tokens: must be a whole number >= 1" "$BIN" train --recipe negative.yaml
bad type 'seq_len: [32]\nphases: []\n'
expect_fail "wrong type" "type.yaml:1: seq_len: must be a number" "$BIN" train --recipe type.yaml
bad weights 'phases:\n  - name: p\n    tokens: 64\n    batch_tokens: 64\n    sources:\n      - {name: a, path: data/botchan, weight: 0}\n'
expect_fail "weights summing to zero" "weights.yaml:6: phases\[0\] \(p\).sources: the weights must sum to a positive number" \
    "$BIN" train --recipe weights.yaml --preset test
bad missing 'seq_len: 32\nphases:\n  - name: p\n    tokens: 64\n    batch_tokens: 64\n    sources:\n      - {name: a, path: data/nope, weight: 1}\n'
expect_fail "source that does not exist" "missing.yaml:3: phases\[0\] \(p\).sources: source 'a': data/nope: cannot open" \
    "$BIN" train --recipe missing.yaml --preset test --batch 2 --out rm
expect_fail "batch the micro-batches do not divide" "short.yaml:[0-9]*: phases\[0\] \(pretrain\).batch_tokens: 256 tokens is not a multiple of ranks x micro_batch x seq_len = 1 x 3 x 32" \
    "$BIN" train "${RUN[@]}" --batch 3 --out rdiv
expect_fail "data options with a recipe" "declares the data of each phase" "$BIN" train "${RUN[@]}" --data data/botchan
# fine-tuning reads one data set at one batch (its buffers are sized by it): not with phases
for f in sft dpo ipo; do
    expect_fail "--$f with a recipe refused" "short.yaml: --$f does not run with a recipe" "$BIN" train "${RUN[@]}" --$f --out "r$f"
done
# chat data as a phase's source would be read as plain text: refused by the trainer
printf '{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, how are you?"}]}\n%.0s' \
    $(seq 20) >chat.jsonl
"$BIN" prepare --format chat --tokenizer "$ROOT/tests/fixtures/tokenizer/small_bpe.model" --seq-len 32 --val-count 0 \
    --quiet --out data/chat chat.jsonl >/dev/null 2>&1 || fail "prepare --format chat"
bad chatsrc 'seq_len: 32\nmicro_batch: 2\nphases:\n  - name: p\n    tokens: 64\n    batch_tokens: 64\n    sources:\n      - {name: c, path: data/chat, weight: 1}\n'
expect_fail "chat data as a phase's source refused" "phase p: source c holds chat data with a loss mask" \
    "$BIN" train --recipe chatsrc.yaml --preset test --vocab-size 1000 --out rchat
[ ! -e rm ] && [ ! -e rdiv ] && [ ! -e rsft ] && [ ! -e rdpo ] && [ ! -e rchat ] && ok "nothing written for a refused recipe" || fail "nothing written for a refused recipe"
# the shipped full-size recipes parse; what stops them here is their data (not on this machine)
for r in tinyllama-v1.0 tinyllama-v1.1-math-code tinyllama-v1.1-chinese; do
    expect_fail "recipes/$r.yaml reads; needs its data" "$r.yaml:[0-9]*: phases\[0\] \(pretrain\).sources: source 'slimpajama': data/slimpajama: cannot open" \
        "$BIN" train --recipe "$ROOT/recipes/$r.yaml" --preset test --seq-len 32 --batch 1 --out "rs-$r"
done
# --- loss spikes: a phase at lr 30 throws the weights; the spikes are skipped, and after 3 in a row
# the run stops naming the step and the last good checkpoint; the detector's window survives a resume
cat >spike.yaml <<'EOR'
model: {preset: test}
micro_batch: 2
seq_len: 32
loss_spikes: {z: 4, window: 20, max_skips: 3}
optimizer: {lr: 1e-3, min_lr: 1e-4}
phases:
  - {name: calm, tokens: 1920, batch_tokens: 64, sources: [{name: shakespeare, path: data/shakespeare, weight: 1}]}
  - {name: wild, tokens: 640, lr: 30}
EOR
expect_fail "loss spikes skipped, the run stops after 3 in a row" \
    "step 34: 3 steps in a row skipped \(the last: loss spike .*\); stopping. The last good checkpoint is sp/step-00000030" \
    "$BIN" train --recipe spike.yaml --threads 2 --quiet --ckpt-every 10 --keep 0 --out sp
[ "$(grep -c '"reason": "spike"' sp/log.jsonl)" -eq 3 ] && ok "spikes logged" || fail "spikes logged ($(grep -c skipped sp/log.jsonl))"
"$BIN" train --recipe spike.yaml --threads 2 --quiet --ckpt-every 10 --resume sp/step-00000020 --out sp2 >/dev/null 2>&1
if [ "$(grep '"skipped"' sp2/log.jsonl)" = "$(grep '"skipped"' sp/log.jsonl)" ] && [ -n "$(grep '"skipped"' sp2/log.jsonl)" ]; then
    ok "resumed: the same spikes with the same z-scores (the window was restored)"
else fail "spike window across a resume"; fi

# TensorBoard: an event file beside log.jsonl (scripts/check_tensorboard.py reads it with TensorBoard)
ev=$(ls full/events.out.tfevents.* 2>/dev/null | head -1)
if [ -n "$ev" ] && grep -qa "brain.Event:2" "$ev" && grep -qa "train/lr" "$ev"; then ok "TensorBoard event file written"
else fail "TensorBoard event file written"; fi
finish

#!/usr/bin/env bash
# CLI tests of `train --recipe`: the scaled-down TinyLlama v1.1 recipe end to end and what it means
# (phases, the mixture's measured shares following the ramp, the batch doubling, the learning rate
# as a function of tokens, validation per domain, and the new domain learned faster in its phase),
# exact resume inside and across phase boundaries, options that override the recipe, bad recipes.
# Usage: tests/cli_recipe.sh path/to/tinyllama
# TL_RECIPE_PLOT=FILE.png also keeps the demo run's plot there (docs/img/ has one made so).
set -u
BIN=$(realpath "${1:-./build/tinyllama}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${TL_SHARED:-$ROOT/../shared}
[ -d "$SHARED/corpora" ] || SHARED=/work/shared
PLOT_OUT=${TL_RECIPE_PLOT:+$(realpath -m "$TL_RECIPE_PLOT")}
T=$(mktemp -d /tmp/tl_recipe.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

# --- the two domains, byte-level, where the demo recipe looks for them: English prose and this
# repository's C code (files named explicitly are read as plain text, one document each)
"$BIN" prepare --byte-level --seq-len 32 --quiet --out data/prose "$SHARED/corpora/tinyshakespeare.txt" >/dev/null 2>&1 ||
    fail "prepare prose"
"$BIN" prepare --byte-level --seq-len 32 --quiet --out data/code "$ROOT"/src/*/*.c >/dev/null 2>&1 || fail "prepare code"
# the recipe at test scale: the test model, 32-token sequences, micro-batches of 2; lengths / div, batches / 16
scale() {
    awk -v div="$1" '/preset:/ {sub(/demo/, "test")} /^seq_len:/ {$2 = 32} /^micro_batch:/ {$2 = 2}
        /tokens: [0-9]/ {d = /batch_tokens:/ ? 16 : div; match($0, /[0-9]+$/); $0 = substr($0, 1, RSTART - 1) substr($0, RSTART) / d}
        {print}' "$ROOT/recipes/tinyllama-v1.1-demo.yaml"
}
num() { grep -o "\"$1\": [-0-9.e+]*" | awk '{print $2}'; } # a number field of a log line

# --- the demo recipe, lengths / 4: 96 steps of prose, 48 with code ramped in, 16 of cooldown (1.5 s;
# one thread: a shared machine's cores make OpenMP's waits slow)
scale 4 >demo.yaml
"$BIN" train --recipe demo.yaml --threads 1 --quiet --out demo 2>demo.err || fail "demo recipe run ($(tail -3 demo.err))"
grep '"lr"' demo/log.jsonl >steps.jsonl # the step lines (validation has lines of its own)
L=steps.jsonl
n=$(grep -c '"loss"' "$L")
p=$(grep -o '"phase": "[a-z]*"' "$L" | uniq -c | awk '{printf "%s:%s ", $3, $1}')
if [ "$n" -eq 160 ] && [ "$p" = '"pretrain":96 "code":48 "cooldown":16 ' ]; then ok "three phases in one run ($p)"
else fail "three phases in one run ($n steps: $p)"; fi
grep -q '^phase cooldown: 16 steps of 512 tokens (accumulation 8)' demo.err && ok "phases reported" || fail "phases reported ($(head -3 demo.err))"
# the global batch doubles at the boundary; the token count grows by each step's batch
if awk -F'[:,}]' '{for (i = 1; i < NF; i++) { if ($i ~ /"tokens"$/) tok = $(i+1); if ($i ~ /"batch_tokens"$/) b = $(i+1) }
        if (tok != prev + b || b != (NR <= 144 ? 256 : 512)) exit 1; prev = tok}' "$L"; then
    ok "batch 256 -> 512 tokens at the cooldown, token count continuous"
else fail "batch doubles at the boundary"; fi
# the learning rate is the cosine of the tokens seen (warmup 2048, decay over all 45056), worked out here
if awk -F'[:,}]' 'function lr(b, a) { if (b < 2048) return 2e-3 * (a < 2048 ? a : 2048) / 2048;
                                      return 2e-4 + 0.5 * (1 + cos(3.141592653589793 * (b - 2048) / (45056 - 2048))) * 1.8e-3 }
        {for (i = 1; i < NF; i++) { if ($i ~ /"tokens"$/) tok = $(i+1); if ($i ~ /"batch_tokens"$/) b = $(i+1); if ($i ~ /"lr"$/) got = $(i+1) }
         want = lr(tok - b, tok); d = got - want; if (d < 0) d = -d; if (d > 1e-6 * want) { print NR, got, want; exit 1 } }' "$L" >lr.err
then ok "learning rate = cosine of the tokens seen, continuous across the batch change"
else fail "learning rate by tokens ($(cat lr.err))"; fi
# the mixture's measured shares (samples counted as read, per step) follow the recipe: no code in the
# first phase; in the second, code's share ramps 0 -> 0.75 over its first 128 samples (4096 tokens), so
# after k samples 0.75 k^2 / 256 are due (k <= 128), then 48 + 0.75 (k - 128); 0.75 in the cooldown.
# At every step the count read is within 1% of the phase's samples of what is due.
if awk -F'[:,}]' 'function due(k) { return k <= 128 ? 0.75 * k * k / 256 : 48 + 0.75 * (k - 128) }
        {c = s = 0; for (i = 1; i < NF; i++) { if ($i ~ /"code"$/) c = $(i+1); if ($i ~ /"prose"$/) s = $(i+1) }
         ph = $0 ~ /"phase": "pretrain"/ ? 1 : $0 ~ /"phase": "code"/ ? 2 : 3; code[ph] += c; all[ph] += c + s
         want = ph == 1 ? 0 : ph == 2 ? due(all[2]) : 0.75 * all[3]; size = ph == 1 ? 768 : ph == 2 ? 384 : 256
         d = code[ph] - want; if (d < 0) d = -d; if (d > worst[ph]) worst[ph] = d; if (d > 0.01 * size) bad = bad " step " NR }
        END { printf "code: pretrain %d/%d, code phase %d/%d (due 240), cooldown %d/%d (due 192); worst %.1f, %.1f, %.1f samples%s\n",
                     code[1], all[1], code[2], all[2], code[3], all[3], worst[1], worst[2], worst[3], bad
              exit !(bad == "" && all[1] == 768 && all[2] == 384 && all[3] == 256) }' "$L" >shares; then
    ok "measured mixture follows the ramp within 1% at every step ($(cat shares))"
else fail "measured mixture ($(cat shares))"; fi
# validation on each domain (a source's and a phase's validation sets), every 4 steps, logged apart
vs=$(grep -o '"step": [0-9]*, "val_set": "[a-z]*"' demo/log.jsonl | awk '{print $2 $4}' | tr -d '",' | tr '\n' ' ')
want=$(for s in $(seq 4 4 160); do printf '%sprose %scode ' "$s" "$s"; done)
if [ "$vs" = "$want" ] && grep -q "step 160: validation loss on code" demo.err; then ok "validation per domain every 4 steps"
else fail "validation per domain ($(echo "$vs" | head -c 200))"; fi
ev=$(ls demo/events.out.tfevents.* 2>/dev/null | head -1)
[ -n "$ev" ] && grep -qa "val/prose/loss" "$ev" && grep -qa "val/code/loss" "$ev" && ok "TensorBoard: a validation curve per domain" ||
    fail "TensorBoard: a validation curve per domain"
# what the continual phase means: the new domain's validation loss falls faster during it than during
# the first phase. Per token, the first phase from its first evaluation (step 4: before it, loss is at
# the random model's) to its end (step 96), against the code phase (96 -> 144); and over equal spans,
# the 48 steps before the boundary against the 48 after, where a model that only reads prose no longer
# gets better at code. Ten seeds by hand (docs/training.md): phase rates 1.23x-1.94x apart, equal spans
# 0.84-1.18 nats apart. The prose set shows the other side: it stops falling when prose becomes a quarter.
val() { grep "\"step\": $1, \"val_set\": \"$2\"" demo/log.jsonl | num val_loss; }
c4=$(val 4 code) c48=$(val 48 code) c96=$(val 96 code) c144=$(val 144 code) p96=$(val 96 prose) p144=$(val 144 prose)
if awk -v c4="$c4" -v c48="$c48" -v c96="$c96" -v c144="$c144" -v p96="$p96" -v p144="$p144" 'BEGIN {
        r1 = (c4 - c96) / (96 - 4); r2 = (c96 - c144) / 48   # per step of 256 tokens, both phases
        printf "code loss %.3f -> %.3f -> %.3f: %.4f per step in pretraining, %.4f in the code phase; last 48 steps of pretraining %+.3f, code phase %+.3f; prose in the code phase %+.3f",
               c4, c96, c144, r1, r2, c96 - c48, c144 - c96, p144 - p96
        exit !(c4 > 0 && r2 > r1 && (c96 - c144) - (c48 - c96) > 0.5 && c96 - c144 > p96 - p144 + 0.5) }' >effect; then
    ok "the new domain's validation loss falls faster in its phase ($(cat effect))"
else fail "the new domain's validation loss falls faster in its phase ($(cat effect))"; fi
# the plot of the run: training loss, each domain's validation loss, learning rate, throughput
if "$BIN" plot demo --out demo.png >/dev/null 2>plot.err && [ "$(head -c 8 demo.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    ok "tinyllama plot draws the run"
    [ -z "$PLOT_OUT" ] || cp demo.png "$PLOT_OUT"
else fail "tinyllama plot ($(cat plot.err))"; fi

# --- the recipe at a sixteenth (24 + 12 + 4 steps) for the mechanics: resume, ranks, overrides
scale 16 >short.yaml
RUN=(--recipe short.yaml --threads 2 --quiet --eval-batches 2)
"$BIN" train "${RUN[@]}" --ckpt-every 1 --keep 0 --out full 2>full.err || fail "recipe run ($(tail -3 full.err))"
vs=$(grep -o '"step": [0-9]*, "val_set": "[a-z]*"' full/log.jsonl | awk '{print $2 $4}' | tr -d '",' | tr '\n' ' ')
[ "$(grep -c '"lr"' full/log.jsonl)" -eq 40 ] && [ "$vs" = "$(for s in $(seq 4 4 40); do printf '%sprose %scode ' "$s" "$s"; done)" ] &&
    ok "the recipe at a sixteenth: 40 steps, validated per domain" || fail "the recipe at a sixteenth ($(tail -2 full.err))"
# the recipe's seed is the run's (as --seed gives it), unless --seed overrides it
sed 's/^seed: 3407/seed: 5/' short.yaml >seed5.yaml
"$BIN" train --recipe seed5.yaml --threads 2 --quiet --steps 2 --eval-every 0 --out seed5 2>/dev/null
"$BIN" train "${RUN[@]}" --seed 5 --steps 2 --eval-every 0 --out seed5o 2>/dev/null
l5=$(num loss <seed5/log.jsonl) l5o=$(num loss <seed5o/log.jsonl) l0=$(grep '"lr"' full/log.jsonl | head -2 | num loss)
[ -n "$l5" ] && [ "$l5" = "$l5o" ] && [ "$l5" != "$l0" ] && ok "the recipe's seed is used (--seed 5 gives the same run)" ||
    fail "recipe seed ($l5 / $l5o / $l0)"

losses() { grep -o '"step": [0-9]*, "loss": [0-9.]*\|"step": [0-9]*, "val_set": "[a-z]*", "val_loss": [0-9.]*' "$1"; }
# --- exact resume: mid-phase, at the end of a phase, just after a boundary, inside the ramp, after the batch grew
for s in 5 24 25 27 38; do
    "$BIN" train "${RUN[@]}" --resume "full/$(printf step-%08d $s)" --out "r$s" 2>"r$s.err"
    if cmp -s full/step-00000040/model.safetensors "r$s/step-00000040/model.safetensors" &&
        cmp -s -i 128 full/step-00000040/training_state.bin "r$s/step-00000040/training_state.bin" &&
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
if cmp -s full/step-00000040/model.safetensors part/step-00000040/model.safetensors &&
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
    if [ "$(mixes m2/log.jsonl | wc -l)" -eq 40 ] && [ "$(mixes m2/log.jsonl)" = "$(mixes full/log.jsonl)" ]; then
        ok "2 ranks read the 1-rank mixture, step by step, across the batch growth"
    else fail "2 ranks read the 1-rank mixture ($(mixes m2/log.jsonl | head -3))"; fi
    "${MPI[@]}" --resume m2/step-00000025 --out m2r >m2r.out 2>&1
    if cmp -s m2/step-00000040/model.safetensors m2r/step-00000040/model.safetensors &&
        cmp -s -i 128 m2/step-00000040/training_state.bin m2r/step-00000040/training_state.bin; then
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
bad weights 'phases:\n  - name: p\n    tokens: 64\n    batch_tokens: 64\n    sources:\n      - {name: a, path: data/code, weight: 0}\n'
expect_fail "weights summing to zero" "weights.yaml:6: phases\[0\] \(p\).sources: the weights must sum to a positive number" \
    "$BIN" train --recipe weights.yaml --preset test
bad missing 'seq_len: 32\nphases:\n  - name: p\n    tokens: 64\n    batch_tokens: 64\n    sources:\n      - {name: a, path: data/nope, weight: 1}\n'
expect_fail "source that does not exist" "missing.yaml:3: phases\[0\] \(p\).sources: source 'a': data/nope: cannot open" \
    "$BIN" train --recipe missing.yaml --preset test --batch 2 --out rm
expect_fail "batch the micro-batches do not divide" "short.yaml:[0-9]*: phases\[0\] \(pretrain\).batch_tokens: 256 tokens is not a multiple of ranks x micro_batch x seq_len = 1 x 3 x 32" \
    "$BIN" train "${RUN[@]}" --batch 3 --out rdiv
expect_fail "data options with a recipe" "declares the data of each phase" "$BIN" train "${RUN[@]}" --data data/code
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
  - {name: calm, tokens: 1920, batch_tokens: 64, sources: [{name: prose, path: data/prose, weight: 1}]}
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

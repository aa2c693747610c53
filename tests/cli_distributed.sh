#!/usr/bin/env bash
# CLI tests of data-parallel training under MPI (docs/distributed.md): 2 ranks at
# every ZeRO stage against 1 rank with the accumulation doubled, stages against
# each other (bit for bit), resume 2 -> 1 -> 2 ranks, a killed rank and a hung
# rank ending the job with the last checkpoint intact, non-finite steps skipped
# on every rank.  Usage: tests/cli_distributed.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
UNIT=$(dirname "$BIN")/test_unit
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/tl_dist.XXXXXX)
trap 'rm -rf "$T"' EXIT
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

if ! command -v mpirun >/dev/null; then
    fail "mpirun not found: install Open MPI (scripts/setup.sh installs openmpi-bin libopenmpi-dev)"
    echo "$passed passed, $failed failed"
    exit 1
fi
# root in a container with 2 cores: allow both, and more ranks than cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# no network interfaces needed for one node; keep Open MPI quiet about them
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
# ASan builds: keep Open MPI's plugins loaded and unwind fully, so that Open MPI's own
# allocations kept until exit carry its library names (suppressed in tests/lsan.supp)
export OMPI_MCA_mca_base_component_disable_dlclose=1 ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
MPI=(mpirun --allow-run-as-root --oversubscribe)

# Built without MPI: the trainer must refuse a multi-rank launch instead of running N copies.
if ! "$BIN" train --help | grep -q -- "--zero"; then
    fail "train --help lists --zero"
fi

# --- the communicator's collectives on 2 and 3 real ranks (bit-exact rank-order sums, timeouts)
for np in 2 3; do
    if "${MPI[@]}" -np $np "$UNIT" distributed/ >"$T/unit$np" 2>&1 &&
        [ "$(grep -c -E '^[1-9][0-9]* passed, 0 failed' "$T/unit$np")" = "$np" ] && ! grep -q '^FAIL' "$T/unit$np"; then
        ok "collectives on $np ranks"
    else
        fail "collectives on $np ranks: $(grep -v '^ok' "$T/unit$np" | head -c 600)"
    fi
done

# --- data
for i in 1 2 3 4 5 6; do sed -n "$((i * 40)),$((i * 40 + 300))p" "$HERE/../src/model/model.c"; done >"$T/corpus.txt"
"$BIN" prepare --byte-level --seq-len 32 --out "$T/data" "$T/corpus.txt" >/dev/null 2>&1 || fail "prepare"
D="$T/data/train-00000.bin"
# ~400K parameters: 7 blocks of 65536, so every rank owns a real slice (the `test` preset fits in one
# block, which would leave rank 1 with nothing to shard); 2 layers with 2 KV heads
printf '{"vocab_size": 259, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}' >"$T/model.json"
COMMON=(--config "$T/model.json" --data "$D" --batch 1 --seq-len 32 --lr 1e-3 --warmup 2 --decay-steps 12 --quiet --threads 1)

losses() { grep -o '"loss": [-0-9.e]*' "$1" | cut -d' ' -f2; }
vals() { grep -o '"val_loss": [-0-9.e]*' "$1" | cut -d' ' -f2; }
# close_losses A B: same number of steps, each within 1e-4
close_losses() {
    paste <(losses "$1") <(losses "$2") | awk 'NF != 2 {bad = 1} NF == 2 {d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; if (d > 1e-4) bad = 1; n++}
        END {printf "%d steps, max |dloss| %.2e", n, m; exit (bad || n == 0)}'
}
# close_weights A B: max |dw| <= 1e-5
close_weights() {
    local r
    r=$(python3 "$HERE/../scripts/st_diff.py" "$1" "$2") || { echo "$r"; return 1; }
    echo "$r"
    awk -v s="$r" 'BEGIN {split(s, a, " "); exit !(a[2] + 0 <= 1e-5)}'
}

# (training_state.bin's 128-byte header holds wall-clock time: moments are compared after it)
# --- 1 rank x accumulation 2 vs 2 ranks x accumulation 1, every ZeRO stage
# validation every 3 steps on 3 micro-batches: split 2 + 1 between the ranks (stage 3 adds a filler pass)
VAL=(--val-data "$T/data/val-00000.bin" --eval-every 3 --eval-batches 3)
"$BIN" train "${COMMON[@]}" "${VAL[@]}" --steps 6 --batch-tokens 64 --out "$T/one" 2>"$T/one.err" || fail "1-rank reference run"
W1="$T/one/step-00000006/model.safetensors"
for z in 0 1 2 3; do
    if ! "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${VAL[@]}" --steps 6 --batch-tokens 64 --zero "$z" --out "$T/z$z" \
        >"$T/z$z.out" 2>&1; then
        fail "2 ranks ZeRO $z ran ($(tail -c 400 "$T/z$z.out"))"
        continue
    fi
    W="$T/z$z/step-00000006/model.safetensors"
    if m=$(close_losses "$T/one/log.jsonl" "$T/z$z/log.jsonl") && w=$(close_weights "$W1" "$W") &&
        [ "$(vals "$T/z$z/log.jsonl" | wc -l)" = 2 ] &&
        v=$(paste <(vals "$T/one/log.jsonl") <(vals "$T/z$z/log.jsonl") | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d} END {printf "val %.1e", m; exit !(NR == 2 && m <= 1e-4)}'); then
        m="$m, $v"
        ok "2 ranks ZeRO $z = 1 rank x 2 accumulation ($m; weights $w)"
    else
        fail "2 ranks ZeRO $z = 1 rank x 2 accumulation ($m; weights ${w:-?})"
    fi
    if [ "$z" != 0 ]; then
        if cmp -s "$T/z0/step-00000006/model.safetensors" "$W" &&
            cmp -s -i 128 "$T/z0/step-00000006/training_state.bin" "$T/z$z/step-00000006/training_state.bin" &&
            [ "$(losses "$T/z0/log.jsonl")" = "$(losses "$T/z$z/log.jsonl")" ] &&
            [ "$(vals "$T/z0/log.jsonl")" = "$(vals "$T/z$z/log.jsonl")" ]; then
            ok "ZeRO $z bit-identical to ZeRO 0 (weights, moments, losses, validation)"
        else
            fail "ZeRO $z bit-identical to ZeRO 0"
        fi
    fi
done

# same_run A B: bit-identical weights, moments (after the 128-byte header), losses and validation losses at step S
same_run() {
    cmp -s "$1/step-0000000$3/model.safetensors" "$2/step-0000000$3/model.safetensors" &&
        cmp -s -i 128 "$1/step-0000000$3/training_state.bin" "$2/step-0000000$3/training_state.bin" &&
        [ "$(losses "$1/log.jsonl")" = "$(losses "$2/log.jsonl")" ] && [ "$(vals "$1/log.jsonl")" = "$(vals "$2/log.jsonl")" ]
}

# --- bf16 mixed precision on 2 ranks: stage 3 (each unit's bf16 copy rounded as it is gathered,
# the other ranks' pages of both copies released) the same bits as stage 0
for z in 0 3; do
    "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${VAL[@]}" --steps 6 --batch-tokens 64 --zero "$z" --precision bf16 \
        --out "$T/b$z" >"$T/b$z.out" 2>&1 || fail "2 ranks bf16 ZeRO $z ran ($(tail -c 400 "$T/b$z.out"))"
done
if same_run "$T/b0" "$T/b3" 6 && ! cmp -s "$T/b0/step-00000006/model.safetensors" "$T/z0/step-00000006/model.safetensors"; then
    ok "2 ranks bf16: ZeRO 3 bit-identical to ZeRO 0 (and not fp32's weights)"
else
    fail "2 ranks bf16: ZeRO 3 bit-identical to ZeRO 0"
fi

# --- stages 2-3 reducing on a communication thread (--overlap): the same arithmetic, bit for bit
for z in 2 3; do
    if "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${VAL[@]}" --steps 6 --batch-tokens 64 --zero "$z" --overlap \
        --out "$T/o$z" >"$T/o$z.out" 2>&1 && same_run "$T/z$z" "$T/o$z" 6; then
        ok "ZeRO $z --overlap bit-identical to ZeRO $z (weights, moments, losses, validation)"
    else
        fail "ZeRO $z --overlap bit-identical to ZeRO $z ($(tail -c 400 "$T/o$z.out"))"
    fi
done

# --- accumulation 2 on each rank: stages 2-3 reduce every micro-batch (the sum over micro-batches of the
# rank sums), stages 0-1 once per step (the rank sum of each rank's micro-batch sum): the same terms added
# in another order, so 2-3 match 0 within rounding (docs/distributed.md) and each other bit for bit
A2=(--steps 6 --batch-tokens 128)
for run in "0" "2" "3" "2 --overlap"; do
    name=a$(echo "$run" | tr -d ' -')
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${VAL[@]}" "${A2[@]}" --zero $run --out "$T/$name" >"$T/$name.out" 2>&1 ||
        fail "2 ranks x accumulation 2, ZeRO $run ran ($(tail -c 400 "$T/$name.out"))"
done
for other in a3 a2overlap; do
    if same_run "$T/a2" "$T/$other" 6; then
        ok "accumulation 2: $other bit-identical to ZeRO 2"
    else
        fail "accumulation 2: $other bit-identical to ZeRO 2"
    fi
done
if m=$(close_losses "$T/a0/log.jsonl" "$T/a2/log.jsonl") &&
    w=$(close_weights "$T/a0/step-00000006/model.safetensors" "$T/a2/step-00000006/model.safetensors"); then
    ok "accumulation 2: ZeRO 2 = ZeRO 0 within rounding ($m; weights $w)"
else
    fail "accumulation 2: ZeRO 2 = ZeRO 0 within rounding (${m:-}; weights ${w:-?})"
fi

# --- a weighted mixture, shuffled: 2 ranks read disjoint draws that together are the 1-rank stream
V="$T/data/val-00000.bin"
MIX=(--config "$T/model.json" --source a=0.7:"$D" --source b=0.3:"$V" --batch 1 --seq-len 32 --lr 1e-3 --warmup 2 --quiet --threads 1
    --steps 4 --batch-tokens 128)
"$BIN" train "${MIX[@]}" --out "$T/mix1" 2>"$T/mix1.err" || fail "mixture 1 rank ($(cat "$T/mix1.err"))"
if "${MPI[@]}" -np 2 "$BIN" train "${MIX[@]}" --zero 2 --out "$T/mix2" >"$T/mix2.out" 2>&1 &&
    m=$(close_losses "$T/mix1/log.jsonl" "$T/mix2/log.jsonl") &&
    w=$(close_weights "$T/mix1/step-00000004/model.safetensors" "$T/mix2/step-00000004/model.safetensors"); then
    ok "mixture: 2 ranks = 1 rank ($m; weights $w)"
else
    fail "mixture: 2 ranks = 1 rank (${m:-}; $(tail -c 300 "$T/mix2.out"))"
fi

# --- resume across rank counts: 2 ranks to step 4, 1 rank (accum 2) to step 8, 2 ranks to 12
R=(--steps 12 --batch-tokens 64 --ckpt-every 4 --keep 0)
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${R[@]}" --zero 1 --out "$T/ref" >"$T/ref.out" 2>&1 || fail "2-rank 12-step run"
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${R[@]}" --steps 4 --zero 1 --out "$T/a" >"$T/a.out" 2>&1
"$BIN" train "${COMMON[@]}" "${R[@]}" --steps 8 --resume "$T/a/step-00000004" --out "$T/b" 2>"$T/b.err" ||
    fail "resume 2 -> 1 rank ($(cat "$T/b.err"))"
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${R[@]}" --zero 3 --resume "$T/b/step-00000008" --out "$T/c" >"$T/c.out" 2>&1 ||
    fail "resume 1 -> 2 ranks ($(tail -c 400 "$T/c.out"))"
cat "$T/a/log.jsonl" "$T/b/log.jsonl" "$T/c/log.jsonl" | grep '"loss"' >"$T/abc.jsonl"
if m=$(close_losses "$T/ref/log.jsonl" "$T/abc.jsonl") &&
    w=$(close_weights "$T/ref/step-00000012/model.safetensors" "$T/c/step-00000012/model.safetensors"); then
    ok "resume 2 -> 1 -> 2 ranks = uninterrupted 2 ranks ($m; weights $w)"
else
    fail "resume 2 -> 1 -> 2 ranks = uninterrupted ($m; weights ${w:-?})"
fi
"$BIN" train "${COMMON[@]}" "${R[@]}" --batch-tokens 96 --resume "$T/a/step-00000004" --out "$T/bad" >/dev/null 2>"$T/bad.err"
if grep -q "sequences_per_step=2 but this run has sequences_per_step=3" "$T/bad.err"; then
    ok "resume refuses another global batch"
else
    fail "resume refuses another global batch ($(cat "$T/bad.err"))"
fi

# rank_pid MPIRUN_PID RANK: the pid of that rank (a child of mpirun, by its environment)
rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
# wait_for FILE: up to 20 s
wait_for() { for _ in $(seq 1 400); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1; }

# --- a killed rank: the job ends, naming it; the last checkpoint resumes bit-identically
K=(--steps 40 --batch-tokens 64 --ckpt-every 2 --keep 0 --zero 2)
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${K[@]}" --out "$T/kref" >/dev/null 2>&1 || fail "2-rank 40-step run"
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${K[@]}" --out "$T/kill" >"$T/kill.out" 2>&1 &
mp=$!
wait_for "$T/kill/step-00000002/training_state.bin"
victim=$(rank_pid "$mp" 1)
[ -n "$victim" ] && kill -9 "$victim"
start=$(date +%s)
wait "$mp"
rc=$?
sed 's/^/     | /' "$T/kill.out" | grep -i -m 3 "rank 1"
if [ -n "$victim" ] && [ "$rc" != 0 ] && grep -q -i "rank 1" "$T/kill.out" && [ $(($(date +%s) - start)) -lt 20 ]; then
    ok "killed rank 1: job stopped (exit $rc) naming it"
else
    fail "killed rank 1 (pid ${victim:-?}, exit $rc): $(tail -c 400 "$T/kill.out")"
fi
last=$(cat "$T/kill/latest" 2>/dev/null)
if [ -n "$last" ] && "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" "${K[@]}" --resume "$T/kill" --out "$T/kill" \
    >"$T/kres.out" 2>&1 && cmp -s "$T/kref/step-00000040/model.safetensors" "$T/kill/step-00000040/model.safetensors" &&
    cmp -s -i 128 "$T/kref/step-00000040/training_state.bin" "$T/kill/step-00000040/training_state.bin"; then
    ok "last checkpoint ($last) intact: 2-rank resume bit-identical to the uninterrupted run"
else
    fail "resume after the killed rank ($last): $(tail -c 400 "$T/kres.out")"
fi

# A job whose rank 1 is stopped (SIGSTOP) once FILE exists: the others must time out naming it
# and the job end within 30 s.  Sets victim (to be killed by the caller).  Args: label file out-file
# mpirun-args...
expect_hang_named() {
    local label=$1 file=$2 out=$3 mp start rc
    shift 3
    "${MPI[@]}" "$@" >"$out" 2>&1 &
    mp=$!
    wait_for "$file"
    [ "$label" = "hung rank 1" ] || sleep 0.5
    victim=$(rank_pid "$mp" 1)
    [ -n "$victim" ] && kill -STOP "$victim"
    start=$(date +%s)
    for _ in $(seq 1 300); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$mp" 2>/dev/null; then
        kill -9 "$mp" "$victim" 2>/dev/null
        fail "$label: the job did not stop within 30 s"
        return
    fi
    wait "$mp"
    rc=$?
    if [ "$rc" != 0 ] && grep -q "timed out after 2 s waiting for rank 1" "$out"; then
        grep -m 1 "timed out" "$out" | sed 's/^/     | /'
        ok "$label: timeout named it, job stopped in $(($(date +%s) - start)) s (exit $rc)"
    else
        fail "$label (exit $rc): $(tail -c 400 "$out")"
    fi
}

# --- a hung rank (stopped): the others time out naming it, the job ends, the checkpoint is intact
expect_hang_named "hung rank 1" "$T/hang/step-00000002/training_state.bin" "$T/hang.out" -np 2 "$BIN" train \
    "${COMMON[@]}" --steps 100000 --batch-tokens 64 --ckpt-every 2 --comm-timeout 2 --out "$T/hang"
[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null
last=$(cat "$T/hang/latest" 2>/dev/null)
n=${last#step-}
n=$((10#${n:-0} + 1))
if [ -n "$last" ] && "$BIN" train "${COMMON[@]}" --steps "$n" --batch-tokens 64 --resume "$T/hang" --out "$T/hang" \
    2>"$T/hres.err"; then
    ok "checkpoint $last intact after the hang (resumed on 1 rank)"
else
    fail "checkpoint after the hang ($last): $(cat "$T/hres.err")"
fi

# --- a hung rank while the communication thread reduces (stage 2 --overlap): the timeout still names it
# (no checkpoints: rank 1 stops while training, when rank 0's thread is most likely reducing)
expect_hang_named "hung rank 1 (--zero 2 --overlap)" "$T/hang2/log.jsonl" "$T/hang2.out" -np 2 "$BIN" train \
    "${COMMON[@]}" --steps 100000 --batch-tokens 128 --comm-timeout 2 --zero 2 --overlap --out "$T/hang2"
[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null

# --- non-finite gradients: a learning rate that overflows the weights; every rank skips the same steps
"${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" --steps 4 --batch-tokens 64 --lr 1e38 --min-lr 1e38 --zero 3 \
    --comm-timeout 20 --out "$T/nan" >"$T/nan.out" 2>&1
rc=$?
skipped=$(grep -c '"skipped": true' "$T/nan/log.jsonl" 2>/dev/null)
if [ "$rc" = 0 ] && [ "${skipped:-0}" -ge 1 ]; then
    ok "non-finite steps skipped on all ranks ($skipped of 4, job completed)"
else
    fail "non-finite steps (exit $rc, skipped ${skipped:-0}): $(tail -c 300 "$T/nan.out")"
fi

# --- bad settings
# Slurm's variables without PMI support in MPI: refused instead of N copies each training alone
if SLURM_NTASKS=2 SLURM_PROCID=0 "$BIN" train "${COMMON[@]}" --steps 1 --out "$T/x" >/dev/null 2>"$T/x.err"; then
    fail "srun without PMI refused (exit 0)"
elif grep -q "MPI sees 1 rank.*srun --mpi=pmix" "$T/x.err"; then
    ok "srun without PMI refused"
else
    fail "srun without PMI refused: $(cat "$T/x.err")"
fi
if "${MPI[@]}" -np 2 "$BIN" train "${COMMON[@]}" --steps 2 --batch-tokens 96 --out "$T/x" >"$T/x.out" 2>&1; then
    fail "global batch not divisible among ranks (exit 0)"
elif grep -q "not a multiple of ranks x batch x seq-len = 2 x 32" "$T/x.out"; then
    ok "global batch not divisible among ranks"
else
    fail "global batch not divisible among ranks: $(tail -c 300 "$T/x.out")"
fi
if "$BIN" train "${COMMON[@]}" --zero 1 --overlap --out "$T/x" >/dev/null 2>"$T/x.err"; then
    fail "--overlap without --zero 2|3 rejected (exit 0)"
elif grep -q -- "--overlap needs --zero 2 or 3" "$T/x.err"; then
    ok "--overlap without --zero 2|3 rejected"
else
    fail "--overlap without --zero 2|3 rejected: $(cat "$T/x.err")"
fi
if "$BIN" train "${COMMON[@]}" --zero 4 --out "$T/x" >/dev/null 2>"$T/x.err"; then
    fail "--zero 4 rejected (exit 0)"
elif grep -q -- "--zero" "$T/x.err"; then
    ok "--zero 4 rejected"
else
    fail "--zero 4 rejected: $(cat "$T/x.err")"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

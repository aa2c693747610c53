#!/usr/bin/env bash
# Data-parallel throughput and memory on this machine: 1 rank (all cores) against
# N MPI ranks (cores split among them) at each ZeRO stage, same global batch.
# Reports training tokens/s (median over the steps after the first) and each
# rank's peak resident memory (/usr/bin/time's max RSS).  Stages 2-3 run twice:
# reducing on the main thread, and with --overlap (a communication thread).  Each configuration runs
# `reps` times, interleaved, and the fastest run is reported with all runs (the cores may be shared with other work).
#   scripts/bench_distributed.sh [preset] [ranks] [batch] [seq_len] [steps] [reps] [accum]
# accum: micro-batches per rank per step (stages 2-3 reduce each one; 0-1 once per step)
set -eu
cd "$(dirname "$0")/.."
preset=${1:-llama-24m}
ranks=${2:-2}
batch=${3:-4}
seq=${4:-128}
steps=${5:-8}
reps=${6:-2}
accum=${7:-1}
make -j"$(nproc)" >/dev/null
command -v mpirun >/dev/null || { echo "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found (apt-get install time)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cores=$(nproc)
per=$((cores / ranks))
[ "$per" -ge 1 ] || per=1
T=$(mktemp -d /tmp/tl_bench_dist.XXXXXX)
trap 'rm -rf "$T"' EXIT
cat src/*/*.c src/*/*.h cli/*.c >"$T/corpus.txt"
./build/tinyllama prepare --byte-level --seq-len "$seq" --out "$T/data" "$T/corpus.txt" >/dev/null 2>&1
global=$((batch * seq * ranks * accum)) # tokens per optimizer step, the same in every run
ARGS=(--preset "$preset" --data "$T/data/train-00000.bin" --batch "$batch" --seq-len "$seq" --batch-tokens "$global"
    --steps "$steps" --warmup 1 --quiet)
median_tps() { grep -o '"tokens_per_s": [0-9.]*' "$1" | cut -d' ' -f2 | tail -n +2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $cores cores; $(date -u +%Y-%m-%d)"
echo "model $preset ($(./build/tinyllama info --preset "$preset" | tail -1)); global batch $global tokens/step; $steps steps"
# one run of configuration $1 ("one" or a ZeRO stage, optionally "S --overlap"): prints "tok/s mem"
run_one() {
    rm -rf "$T/out" "$T"/mem.*
    if [ "$1" = one ]; then
        /usr/bin/time -f %M -o "$T/mem.one" ./build/tinyllama train "${ARGS[@]}" --threads "$cores" --out "$T/out" 2>/dev/null
    else
        local z=${1%% *} extra=()
        [ "$1" = "$z" ] || extra=(--overlap)
        mpirun --allow-run-as-root --oversubscribe -np "$ranks" bash -c \
            '/usr/bin/time -f %M -o "$0/mem.r$OMPI_COMM_WORLD_RANK" "$@" 2>/dev/null' "$T" \
            ./build/tinyllama train "${ARGS[@]}" --threads "$per" --zero "$z" "${extra[@]}" --out "$T/out"
    fi
    echo "$(median_tps "$T/out/log.jsonl") $(for f in $(ls "$T"/mem.* | sort -V); do echo $(($(cat "$f") / 1024)); done | paste -sd/ -)"
}
configs=(one 0 1 2 "2 --overlap" 3 "3 --overlap")
declare -A best mem all
# repetitions are the outer loop, so that other work on the machine hits every configuration alike
for rep in $(seq 1 "$reps"); do
    for c in "${configs[@]}"; do
        read -r tps m < <(run_one "$c")
        all[$c]="${all[$c]:-}${all[$c]:+ }$tps"
        if awk -v a="$tps" -v b="${best[$c]:-0}" 'BEGIN {exit !(a > b)}'; then best[$c]=$tps; mem[$c]=$m; fi
    done
done
for c in "${configs[@]}"; do
    if [ "$c" = one ]; then label="1 rank x $cores threads"; else label="$ranks ranks x $per threads, ZeRO $c"; fi
    printf '%-36s best %8s tok/s  (runs: %s)  peak RSS %s MB\n' "$label" "${best[$c]}" "${all[$c]}" "${mem[$c]}"
done

#!/usr/bin/env bash
# Speed on a shared machine: training steps (tinyllama bench, llama-24m 4x64) and a
# prompt pass + decode (tinyllama generate on a random tinyllama-120m checkpoint) with
# every thread count, on an idle machine and beside one busy process (`yes`), and the
# thread count the default picks in each case (src/core/threads.c), under each OpenMP spin
# count in SPINS (GOMP_SPINCOUNT; default "300000 10000 0": libgomp's own default, the
# program's, and sleeping at once; cli/main.c).  Rounds alternate the cases so drifts in
# the host's speed hit all of them alike.
#   [SPINS="..."] scripts/bench_threads.sh [ROUNDS]      (default 3; prints medians)
set -eu
cd "$(dirname "$0")/.."
make -j"$(nproc)" >/dev/null
rounds=${1:-3}
spins=${SPINS:-300000 10000 0}
B=./build/tinyllama
W=$(mktemp -d /tmp/tl_bthreads.XXXXXX)
busy_pid=""
stop_busy() { [ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null; busy_pid=""; }
trap 'stop_busy; rm -rf "$W"' EXIT
ncpu=$(nproc)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $ncpu cores; $(date -u '+%Y-%m-%d %H:%M UTC')"

# a tinyllama-120m checkpoint after one step on botchan.txt, with the Llama 2 tokenizer beside it
TOK=../shared/tokenizers/llama2/tokenizer.model
$B prepare --quiet --tokenizer "$TOK" --seq-len 256 --out "$W/d" ../shared/corpora/botchan.txt >/dev/null
$B train --quiet --preset tinyllama-120m --tokenizer "$TOK" --data "$W/d" --steps 1 --batch 1 --seq-len 256 \
    --threads "$ncpu" --out "$W/r" 2>/dev/null
M="$W/r/step-00000001"
prompt=$(head -c 2000 ../shared/corpora/botchan.txt | tr '\n' ' ')

train_tps() { GOMP_SPINCOUNT=$spin $B bench --preset llama-24m --batch 4 --seq-len 64 --steps 6 --threads "$1" 2>/dev/null |
    grep RESULT | tr ' ' '\n' | grep '^tokens_per_s=' | cut -d= -f2; }
# generate --stats prints the prompt and decode rates
gen_stats() { GOMP_SPINCOUNT=$spin $B generate --model "$M" --max-tokens 24 --threads "$1" --stats "$prompt" 2>&1 >/dev/null; }
auto_threads() { $B generate --model "$M" --max-tokens 1 "x" 2>&1 >/dev/null |
    grep -o '[0-9]* of [0-9]* threads' | cut -d' ' -f1; }

declare -A res
for r in $(seq 1 "$rounds"); do
    for load in idle busy; do
        [ "$load" = busy ] && { yes >/dev/null & busy_pid=$!; sleep 0.5; }
        a=$(auto_threads)
        res[$load,auto]+="${a:-$ncpu} "
        for spin in $spins; do
            for t in $(seq 1 "$ncpu"); do
                k=$load,$spin,$t
                res[$k,train]+="$(train_tps "$t") "
                s=$(gen_stats "$t")
                res[$k,prompt]+="$(printf '%s\n' "$s" | grep -o 'prompt: [^|]*' | grep -o '[0-9.]* tokens/s' | cut -d' ' -f1) "
                res[$k,decode]+="$(printf '%s\n' "$s" | grep -o 'generated: [^|]*' | grep -o '[0-9.]* tokens/s' | cut -d' ' -f1) "
            done
        done
        stop_busy
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
printf '\n%-6s %-8s %-8s %s\n' load spin threads "train tok/s | prompt tok/s | decode tok/s (medians of $rounds)"
for load in idle busy; do
    for spin in $spins; do
        for t in $(seq 1 "$ncpu"); do
            k=$load,$spin,$t
            printf '%-6s %-8s %-8s %s | %s | %s\n' "$load" "$spin" "$t" "$(echo "${res[$k,train]}" | median)" \
                "$(echo "${res[$k,prompt]}" | median)" "$(echo "${res[$k,decode]}" | median)"
        done
    done
    echo "$load: the default picked $(echo "${res[$load,auto]}" | median) thread(s)"
done

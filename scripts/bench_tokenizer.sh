#!/bin/sh
# bench_tokenizer.sh - single-thread encode speed: spm_encode vs `tinyllama tokenize`
# on the same text, same model, one run; checks the ids are identical and prints
# the speed ratio.  Usage (from the repo root, after `make`):
#   scripts/bench_tokenizer.sh [MODEL] [TEXT] [REPEAT]
# Defaults: ../shared/tokenizers/llama2/tokenizer.model, ../shared/corpora/tinyshakespeare.txt
# concatenated with botchan.txt, repeated 4 times.
set -eu
MODEL=${1:-../shared/tokenizers/llama2/tokenizer.model}
TEXT=${2:-}
REPEAT=${3:-4}
BIN=${TINYLLAMA:-./build/tinyllama}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -z "$TEXT" ]; then
    i=0
    while [ "$i" -lt "$REPEAT" ]; do
        cat ../shared/corpora/tinyshakespeare.txt ../shared/corpora/botchan.txt >> "$TMP/in.txt"
        i=$((i + 1))
    done
else
    i=0
    while [ "$i" -lt "$REPEAT" ]; do cat "$TEXT" >> "$TMP/in.txt"; i=$((i + 1)); done
fi
BYTES=$(wc -c < "$TMP/in.txt")
now() { date +%s.%N; }
t0=$(now)
OMP_NUM_THREADS=1 spm_encode --model="$MODEL" --output_format=id < "$TMP/in.txt" > "$TMP/spm.ids"
t1=$(now)
"$BIN" tokenize --tokenizer "$MODEL" --lines --threads 1 < "$TMP/in.txt" > "$TMP/ours.ids"
t2=$(now)
"$BIN" tokenize --tokenizer "$MODEL" --lines < "$TMP/in.txt" > "$TMP/ours_mt.ids"
t3=$(now)
if cmp -s "$TMP/spm.ids" "$TMP/ours.ids" && cmp -s "$TMP/spm.ids" "$TMP/ours_mt.ids"; then
    SAME=identical
else
    SAME=DIFFERENT
fi
awk -v b="$BYTES" -v a="$t0" -v s="$t1" -v o="$t2" -v m="$t3" -v same="$SAME" -v nl="$(wc -l < "$TMP/spm.ids")" 'BEGIN {
    ts = s - a; to = o - s; tm = m - o;
    printf "input: %.2f MB, %d lines\n", b / 1e6, nl;
    printf "spm_encode:             %6.2f s  %7.2f MB/s\n", ts, b / 1e6 / ts;
    printf "tinyllama (1 thread):   %6.2f s  %7.2f MB/s\n", to, b / 1e6 / to;
    printf "tinyllama (all threads):%6.2f s  %7.2f MB/s\n", tm, b / 1e6 / tm;
    printf "ids: %s\n", same;
    printf "speed ratio (1 thread vs spm_encode): %.2fx\n", ts / to;
}'
[ "$SAME" = identical ]

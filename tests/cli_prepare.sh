#!/usr/bin/env bash
# CLI tests of `prepare` and `train --source`: the real Llama tokenizer on .jsonl.zst,
# bad input reported (and --strict), idempotent re-runs, usage errors, a mixture run.
# Usage: tests/cli_prepare.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
SHARED=${TL_SHARED:-$(dirname "$0")/../../shared}
TOK=$SHARED/tokenizers/llama2/tokenizer.model
T=$(mktemp -d /tmp/tl_cli_prep.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"

# --- inputs: SlimPajama-like jsonl.zst with one GitHub document and some bad lines
{
    printf '{"text": "Hello world", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n'
    printf '{"text": "def f(): pass", "meta": {"redpajama_set_name": "RedPajamaGithub"}}\n'
    printf 'this is not json\n'
    printf '{"title": "no text"}\n'
    for i in $(seq 1 60); do
        printf '{"text": "Document %d: I believe the meaning of life is %d.\\nSecond line.", "meta": {"redpajama_set_name": "RedPajamaBook"}}\n' "$i" "$i"
    done
} >"$T/sp.jsonl"
zstd -q -f "$T/sp.jsonl" -o "$T/sp.jsonl.zst"

if [ -f "$TOK" ]; then
    if "$BIN" prepare --tokenizer "$TOK" --seq-len 16 --val-fraction 0.1 --exclude-meta redpajama_set_name=RedPajamaGithub \
        --out "$T/sp" "$T/sp.jsonl.zst" >"$T/out" 2>"$T/err"; then ok "prepare jsonl.zst with the Llama tokenizer"
    else fail "prepare jsonl.zst with the Llama tokenizer ($(head -c 300 "$T/err"))"; fi
    if grep -q "1 malformed JSON line" "$T/err" && grep -q "1 without a text field" "$T/err"; then ok "bad lines reported"
    else fail "bad lines reported ($(cat "$T/err"))"; fi
    if grep -q "1 documents excluded by filters" "$T/out" && grep -q "^61 documents" "$T/out"; then ok "filter and document count"
    else fail "filter and document count ($(cat "$T/out"))"; fi
    if [ -f "$T/sp/manifest.json" ] && [ -f "$T/sp/train-00000.bin" ] && [ -f "$T/sp/val-00000.bin" ]; then ok "shards and manifest"
    else fail "shards and manifest"; fi
    if grep -q '"fnv1a64":	"e991b1aaf0272522"' "$T/sp/manifest.json"; then ok "manifest names the tokenizer"
    else fail "manifest names the tokenizer"; fi
    # "Hello world" -> 15043 3186, then EOS 2: the first tokens of the training stream
    first=$(od -An -tu2 -j64 -N6 "$T/sp/train-00000.bin" | tr -s ' ' | sed 's/^ //')
    if [ "$first" = "15043 3186 2" ]; then ok "first document's tokens"; else fail "first document's tokens ($first)"; fi
    cp "$T/sp/manifest.json" "$T/m1"
    cp "$T/sp/train-00000.bin" "$T/s1"
    "$BIN" prepare --tokenizer "$TOK" --seq-len 16 --val-fraction 0.1 --threads 1 --quiet \
        --exclude-meta redpajama_set_name=RedPajamaGithub --out "$T/sp" "$T/sp.jsonl.zst" >/dev/null 2>&1
    if cmp -s "$T/m1" "$T/sp/manifest.json" && cmp -s "$T/s1" "$T/sp/train-00000.bin"; then ok "re-run (1 thread) is byte-identical"
    else fail "re-run (1 thread) is byte-identical"; fi
    expect_fail "--strict fails on bad input" "bad input found" "$BIN" prepare --tokenizer "$TOK" --seq-len 16 --strict \
        --quiet --out "$T/sp2" "$T/sp.jsonl.zst"
    # the manifest names the tokenizer; train checks the shards against --tokenizer and each other
    "$BIN" prepare --byte-level --seq-len 16 --quiet --out "$T/bl" "$T/sp.jsonl" >/dev/null 2>&1
    TR=(--preset test --vocab-size 32000 --batch 1 --seq-len 16 --steps 1 --warmup 0 --quiet)
    if "$BIN" train "${TR[@]}" --data "$T/sp" --val-data "$T/sp" --tokenizer "$TOK" --out "$T/rtok" >"$T/out" 2>&1; then
        ok "train with the tokenizer the data was prepared with"
    else fail "train with the tokenizer the data was prepared with ($(tail -2 "$T/out"))"; fi
    expect_fail "train refuses data of another tokenizer" "different tokenizers: .*bl/manifest.json names byte-level .*tokenizer.model names tokenizer.model" \
        "$BIN" train "${TR[@]}" --data "$T/bl" --tokenizer "$TOK" --out "$T/rtok2"
    expect_fail "train refuses validation data of another tokenizer" "different tokenizers" \
        "$BIN" train "${TR[@]}" --data "$T/sp" --val-data "$T/bl" --out "$T/rtok3"
    expect_fail "mixture sources of different tokenizers refused" "sources 'a' and 'b'.*different tokenizers" \
        "$BIN" train "${TR[@]}" --source "a=0.5:$T/sp" --source "b=0.5:$T/bl" --out "$T/rtok4"
    expect_fail "mixture source of another tokenizer than --tokenizer refused" "different tokenizers" \
        "$BIN" train "${TR[@]}" --source "a=0.5:$T/bl" --tokenizer "$TOK" --out "$T/rtok5"
else
    echo "(no $TOK: tokenizer cases skipped)"
fi

# --- nothing lost: a run whose input gives nothing, a killed run, a directory with other files
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/keep" "$T/sp.jsonl" >/dev/null 2>&1
cp -r "$T/keep" "$T/keep.copy"
printf '{"title": "no text"}\n{"title": "none either"}\n' >"$T/notext.jsonl"
expect_fail "prepare whose input gives no document fails" "gave 0 documents .*2 without a string field 'text'.*left as it was" \
    "$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/keep" "$T/notext.jsonl"
if diff -r "$T/keep" "$T/keep.copy" >/dev/null && ! ls -d "$T"/keep.prepare-* >/dev/null 2>&1; then
    ok "... and leaves the old data set as it was"
else fail "... and leaves the old data set as it was ($(ls "$T/keep"))"; fi
if "$BIN" prepare --byte-level --seq-len 32 --quiet --allow-empty --out "$T/empty" "$T/notext.jsonl" >/dev/null 2>&1 &&
    [ -f "$T/empty/manifest.json" ]; then ok "--allow-empty writes an empty data set"
else fail "--allow-empty writes an empty data set"; fi
# killed while reading its input (a pipe that does not end): the old data set stays whole
mkfifo "$T/pipe.txt"
exec 3<>"$T/pipe.txt"
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/keep" "$T/pipe.txt" >/dev/null 2>&1 &
pid=$!
head -c 20000 "$T/sp.jsonl" >&3
for _ in $(seq 1 250); do [ -d "$T/keep.prepare-new" ] && break; sleep 0.02; done
sleep 0.2
{ kill -9 "$pid" && wait "$pid"; } 2>/dev/null
exec 3>&-
if diff -r "$T/keep" "$T/keep.copy" >/dev/null; then ok "prepare killed midway leaves the old data set whole"
else fail "prepare killed midway leaves the old data set whole ($(ls "$T/keep"))"; fi
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/keep" "$T/sp.jsonl" >/dev/null 2>&1
if diff -r "$T/keep" "$T/keep.copy" >/dev/null && ! ls -d "$T"/keep.prepare-* >/dev/null 2>&1; then
    ok "the next run removes what the killed one left"
else fail "the next run removes what the killed one left ($(ls -d "$T"/keep*))"; fi
mkdir -p "$T/mine" && echo "my notes" >"$T/mine/notes.txt"
expect_fail "prepare refuses a directory holding other files" "mine: holds 'notes.txt'" \
    "$BIN" prepare --byte-level --quiet --out "$T/mine" "$T/sp.jsonl"
if [ "$(cat "$T/mine/notes.txt")" = "my notes" ] && [ ! -e "$T/mine/manifest.json" ]; then ok "... and leaves it alone"
else fail "... and leaves it alone"; fi

# --- --val-count 0 holds nothing out (not the default 5%)
if "$BIN" prepare --byte-level --seq-len 32 --val-count 0 --out "$T/noval" "$T/sp.jsonl" >"$T/out" 2>&1 &&
    [ -f "$T/noval/train-00000.bin" ] && [ ! -e "$T/noval/val-00000.bin" ] && grep -q "val: 0 samples" "$T/out"; then
    ok "--val-count 0: no validation split"
else fail "--val-count 0: no validation split ($(grep val: "$T/out"))"; fi

# --- usage errors
expect_fail "no vocabulary" "choose a vocabulary" "$BIN" prepare --out "$T/x" "$T/sp.jsonl"
expect_fail "missing input" "No such file" "$BIN" prepare --byte-level --out "$T/x" "$T/nope.jsonl"
expect_fail "bad --split-by" "split-by" "$BIN" prepare --byte-level --split-by lines --out "$T/x" "$T/sp.jsonl"
expect_fail "bad --exclude" "KEY=VALUE" "$BIN" prepare --byte-level --exclude novalue --out "$T/x" "$T/sp.jsonl"
head -c $(($(stat -c %s "$T/sp.jsonl.zst") - 20)) "$T/sp.jsonl.zst" >"$T/cut.jsonl.zst"
if "$BIN" prepare --byte-level --quiet --allow-empty --out "$T/cut" "$T/cut.jsonl.zst" >"$T/out" 2>"$T/err" && grep -q "truncated" "$T/err" \
    && grep -q '"truncated":	true' "$T/cut/manifest.json"; then ok "truncated zstd reported"
else fail "truncated zstd reported ($(cat "$T/err"))"; fi

# --- a two-source mixture trains and resumes
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/a" "$T/sp.jsonl" >/dev/null 2>&1
printf 'abcdefghij%.0s' $(seq 1 200) >"$T/b.txt"
"$BIN" prepare --byte-level --seq-len 32 --quiet --out "$T/b" "$T/b.txt" >/dev/null 2>&1
if "$BIN" train --preset test --source "a=0.7:$T/a/train-*.bin" --source "b=0.3:$T/b/train-*.bin" --batch 2 --seq-len 32 \
    --steps 4 --warmup 1 --ckpt-every 2 --out "$T/run" --quiet >"$T/out" 2>&1 && grep -q "source a: weight 0.700000" "$T/out"; then
    ok "train on a --source mixture"
else fail "train on a --source mixture ($(tail -3 "$T/out"))"; fi
if "$BIN" train --preset test --source "a=0.7:$T/a" --source "b=0.3:$T/b" --batch 2 --seq-len 32 --steps 2 --warmup 1 \
    --out "$T/run2" --quiet >"$T/out" 2>&1 && grep -q "source a: weight 0.700000 (start 0.700000), [0-9]* samples of 32 tokens in 1 shard" "$T/out"; then
    ok "--source a prepare output directory (its train shards)"
else fail "--source a prepare output directory ($(tail -3 "$T/out"))"; fi
expect_fail "resume with other weights refused" "mixture" "$BIN" train --preset test --source "a=0.5:$T/a/train-*.bin" \
    --source "b=0.5:$T/b/train-*.bin" --batch 2 --seq-len 32 --steps 6 --out "$T/run" --resume --quiet
expect_fail "--data and --source together" "either --data or --source" "$BIN" train --data "$T/a" --source "a=1:$T/a"
expect_fail "--source without weight" "give a weight" "$BIN" train --source "mine:$T/a"

finish

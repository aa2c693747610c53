#!/usr/bin/env bash
# CLI tests of what `train` promises after mistakes, crashes, full disks and corrupt
# files (docs/reliability.md): a run directory is never mixed with another run, a
# complete checkpoint is always found, corrupt checkpoints are detected, the log
# never holds a torn line, validation counts each sample once, interrupted runs
# exit 130.  Usage: tests/cli_train_safety.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
T=$(mktemp -d /tmp/tl_safety.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"

for i in 1 2 3 4 5 6; do sed -n "$((i * 40)),$((i * 40 + 300))p" "$(dirname "$0")/../src/model/model.c"; done >"$T/corpus.txt"
"$BIN" prepare --byte-level --seq-len 32 --out "$T/data" "$T/corpus.txt" >/dev/null 2>&1 || fail "prepare"
D="$T/data/train-00000.bin"
# the schedule does not depend on --steps, so runs of different lengths share their steps
COMMON=(--preset test --data "$D" --batch 2 --seq-len 32 --lr 1e-3 --warmup 2 --decay-steps 8 --quiet --threads 2)
weights() { cmp -s "$1/model.safetensors" "$2/model.safetensors"; }

# --- the reference: 8 uninterrupted steps
"$BIN" train "${COMMON[@]}" --steps 8 --out "$T/full" 2>/dev/null || fail "uninterrupted run"

# --- 1. a new run into a directory that holds a run is refused; nothing of it is touched
"$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 2 --out "$T/a" 2>/dev/null
before=$(cd "$T/a" && find . -type f | sort | xargs md5sum)
expect_fail "new run into an existing run directory" "already holds a training run.*--resume.*--overwrite" \
    "$BIN" train "${COMMON[@]}" --steps 2 --ckpt-every 1 --keep 1 --out "$T/a"
if [ "$before" = "$(cd "$T/a" && find . -type f | sort | xargs md5sum)" ]; then
    ok "the refused run changed nothing"
else
    fail "the refused run changed the directory"
fi
# --overwrite: a new run; only its own checkpoints are pruned, the other run's stay
if "$BIN" train "${COMMON[@]}" --steps 2 --ckpt-every 1 --keep 1 --overwrite --out "$T/a" 2>"$T/ow.err" &&
    [ "$(cat "$T/a/latest")" = "step-00000002" ] && [ ! -e "$T/a/step-00000001" ] && [ -d "$T/a/step-00000004" ] &&
    [ "$(grep -c '"loss"' "$T/a/log.jsonl")" -eq 2 ]; then
    ok "--overwrite starts a new run and keeps the other run's checkpoints"
else
    fail "--overwrite ($(ls -a "$T/a" | tr '\n' ' '); $(cat "$T/ow.err"))"
fi
"$BIN" train "${COMMON[@]}" --steps 3 --ckpt-every 1 --keep 1 --out "$T/a" --resume 2>"$T/ow2.err" &&
    [ "$(cat "$T/a/latest")" = "step-00000003" ] && [ -d "$T/a/step-00000004" ] &&
    ok "a resumed --overwrite run prunes its own checkpoints only" ||
    fail "resume after --overwrite ($(cat "$T/ow2.err"))"
expect_fail "--resume with --overwrite" "not both" "$BIN" train "${COMMON[@]}" --steps 3 --out "$T/a" --resume --overwrite

# --overwrite where the other run's checkpoints are older than the new run's newest: the ones
# at steps the new run does not write stay (one at a step it writes is replaced, then its own)
"$BIN" train "${COMMON[@]}" --steps 3 --ckpt-every 1 --out "$T/a2" 2>/dev/null
if "$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 2 --keep 1 --overwrite --out "$T/a2" 2>"$T/a2.err" &&
    [ -d "$T/a2/step-00000001" ] && [ ! -e "$T/a2/step-00000002" ] && [ -d "$T/a2/step-00000003" ] &&
    [ -d "$T/a2/step-00000004" ]; then
    ok "--overwrite --keep 1 prunes its own older checkpoints, not the other run's"
else
    fail "--overwrite --keep 1 with the other run's older checkpoints ($(ls "$T/a2" | tr '\n' ' '); $(cat "$T/a2.err"))"
fi

# --- 2. a kill between the two renames of a re-saved checkpoint: latest names a
# directory that is gone, a complete copy is beside it
"$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 2 --keep 0 --out "$T/b" 2>/dev/null
mv "$T/b/step-00000004" "$T/b/.old-step-00000004"
if "$BIN" train "${COMMON[@]}" --steps 8 --ckpt-every 2 --keep 0 --out "$T/b" --resume 2>"$T/b.err" &&
    grep -q "warning: .*latest names step-00000004, which does not exist.*\.old-step-00000004" "$T/b.err" &&
    weights "$T/full/step-00000008" "$T/b/step-00000008"; then
    ok "resume falls back to the complete copy a crash left, bit-identically"
else
    fail "resume after a crash between renames ($(cat "$T/b.err"))"
fi

# re-saving the checkpoint `latest` names is one atomic exchange: a shim kills the process
# where a replacement by two renames would leave `latest` naming nothing (the step moved
# aside to .old-step-*); an atomic re-save never gets there
cat >"$T/shim.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
int rename(const char *from, const char *to) {
    if (strstr(to, "/.old-step-")) kill(getpid(), SIGKILL);
    int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    return real(from, to);
}
EOF
if cc -shared -fPIC -o "$T/shim.so" "$T/shim.c" -ldl 2>"$T/shim.err"; then
    "$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 2 --keep 0 --out "$T/x" 2>/dev/null
    cp "$T/x/step-00000004/model.safetensors" "$T/x4.safetensors"
    if LD_PRELOAD="$T/shim.so" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        "$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 2 --keep 0 --out "$T/x" --resume "$T/x/step-00000002" \
        2>"$T/x.err" && [ "$(cat "$T/x/latest")" = step-00000004 ] && cmp -s "$T/x4.safetensors" "$T/x/step-00000004/model.safetensors" &&
        [ ! -e "$T/x/.old-step-00000004" ]; then
        ok "re-saving the step latest names: exchanged in one step, never moved aside"
    else
        fail "re-saving the step latest names ($(tail -3 "$T/x.err"); $(ls -a "$T/x" | tr '\n' ' '))"
    fi
else
    fail "building the rename shim ($(cat "$T/shim.err"))"
fi

# --- 6. a bit flip in the newest checkpoint's weights is detected; resume takes the
# previous verified checkpoint and still ends bit-identical
"$BIN" train "${COMMON[@]}" --steps 6 --ckpt-every 2 --keep 2 --out "$T/c" 2>/dev/null
python3 - "$T/c/step-00000006/model.safetensors" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[-10] ^= 0x20
open(p, 'wb').write(b)
EOF
expect_fail "a corrupt checkpoint named directly is refused" "model.safetensors: checksum mismatch" \
    "$BIN" train "${COMMON[@]}" --steps 8 --out "$T/c" --resume "$T/c/step-00000006"
if "$BIN" train "${COMMON[@]}" --steps 8 --ckpt-every 2 --keep 2 --out "$T/c" --resume 2>"$T/c.err" &&
    grep -q "checksum mismatch.*newest complete checkpoint.*step-00000004" "$T/c.err" &&
    weights "$T/full/step-00000008" "$T/c/step-00000008"; then
    ok "a bit flip is detected and the run resumes from the last good checkpoint, bit-identically"
else
    fail "bit flip on resume ($(cat "$T/c.err"))"
fi
[ -f "$T/c/step-00000008/checksums.json" ] && grep -q '"model.safetensors"' "$T/c/step-00000008/checksums.json" &&
    ok "checkpoints carry checksums.json" || fail "checkpoints carry checksums.json"

# a resume past corrupt checkpoints keeps the verified one it continues from: the corrupt
# later ones do not count toward --keep (they are replaced when the run gets there)
flip() {
    python3 - "$1" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[-10] ^= 0x20
open(p, 'wb').write(b)
EOF
}
"$BIN" train "${COMMON[@]}" --steps 6 --ckpt-every 2 --keep 3 --out "$T/g" 2>/dev/null
flip "$T/g/step-00000004/model.safetensors"
flip "$T/g/step-00000006/model.safetensors"
if "$BIN" train "${COMMON[@]}" --steps 3 --ckpt-every 1 --keep 2 --out "$T/g" --resume 2>"$T/g.err" &&
    grep -q "checksum mismatch.*newest complete checkpoint.*step-00000002" "$T/g.err" &&
    [ -d "$T/g/step-00000002" ] && [ -d "$T/g/step-00000003" ]; then
    ok "a resume past corrupt checkpoints keeps the verified one it started from (--keep 2)"
else
    fail "resume past corrupt checkpoints with --keep 2 ($(ls "$T/g" | tr '\n' ' '); $(cat "$T/g.err"))"
fi
if "$BIN" train "${COMMON[@]}" --steps 8 --ckpt-every 1 --keep 2 --out "$T/g" --resume 2>"$T/g2.err" &&
    weights "$T/full/step-00000008" "$T/g/step-00000008" &&
    [ "$(cd "$T/g" && echo step-*)" = "step-00000007 step-00000008" ]; then
    ok "... and the run ends bit-identical, its checkpoints pruned to --keep 2"
else
    fail "continuing after the fallback ($(ls "$T/g" | tr '\n' ' '); $(cat "$T/g2.err"))"
fi

# --- 13. --resume with another model or another thread count
expect_fail "--resume with a different --preset" "different model than --preset demo" \
    "$BIN" train "${COMMON[@]}" --preset demo --steps 8 --out "$T/c" --resume
"$BIN" train "${COMMON[@]}" --steps 9 --threads 1 --out "$T/c" --resume 2>"$T/th.err" &&
    grep -q "warning: .*2 threads, this run has 1.*--threads 2" "$T/th.err" &&
    ok "--resume with another --threads warns that rounding differs" || fail "--threads on resume ($(cat "$T/th.err"))"

# --- 5. a full disk while logging: a loud warning, a failing exit, never a torn line
if "$BIN" train "${COMMON[@]}" --steps 3 --out "$T/d" --log /dev/full 2>"$T/d.err"; then
    fail "log on a full disk (exit 0)"
elif grep -q "warning: /dev/full: write failed: No space left" "$T/d.err" && grep -q "log misses lines" "$T/d.err" &&
    [ -f "$T/d/step-00000003/model.safetensors" ]; then
    ok "log on a full disk: warned, checkpoint written, non-zero exit"
else
    fail "log on a full disk ($(cat "$T/d.err"))"
fi
# a file size limit cuts a write short: the partial line is taken back
python3 -c "
line = '{\"step\": 0, \"note\": \"' + 'x' * 80 + '\"}\n'
open('$T/e.log', 'w').write(line * (8192 // len(line)))"
(trap '' XFSZ; ulimit -f 8; exec "$BIN" train "${COMMON[@]}" --steps 2 --out "$T/e" --log "$T/e.log") 2>"$T/e.err"
if grep -q "warning: .*e.log: write failed" "$T/e.err" && [ "$(tail -c 1 "$T/e.log" | od -An -c | tr -d ' ')" = '\n' ] &&
    python3 -c "import json; [json.loads(l) for l in open('$T/e.log')]"; then
    ok "a short log write leaves no torn line"
else
    fail "short log write ($(tail -c 200 "$T/e.log"); $(cat "$T/e.err"))"
fi

# --- a full disk while checkpointing: the run fails, the previous checkpoint stays complete and named
"$BIN" train "${COMMON[@]}" --steps 2 --ckpt-every 1 --out "$T/f" 2>/dev/null
size=$(du -k "$T/f/step-00000002/model.safetensors" | cut -f1)
# room for the log lines but not for a third checkpoint's weights
if (trap '' XFSZ; ulimit -f $((size / 2)); exec "$BIN" train "${COMMON[@]}" --steps 4 --ckpt-every 1 --out "$T/f" --resume) \
    2>"$T/f.err"; then
    fail "checkpoint on a full disk (exit 0)"
elif grep -q "write failed" "$T/f.err" && [ "$(cat "$T/f/latest")" = "step-00000002" ] &&
    "$BIN" train "${COMMON[@]}" --steps 8 --ckpt-every 1 --out "$T/f" --resume 2>/dev/null &&
    weights "$T/full/step-00000008" "$T/f/step-00000008"; then
    ok "checkpoint on a full disk: fails, latest still complete, the run resumes bit-identically"
else
    fail "checkpoint on a full disk ($(cat "$T/f.err"); latest $(cat "$T/f/latest"))"
fi

# --- prepare on a full disk: the data set it would replace is untouched
cp -r "$T/data" "$T/data.before"
yes 'a line of text that makes the new data set larger than the old one' | head -c 3000000 >"$T/big.txt"
if (trap '' XFSZ; ulimit -f 512; exec "$BIN" prepare --byte-level --seq-len 32 --out "$T/data" "$T/big.txt") \
    >/dev/null 2>"$T/p.err"; then
    fail "prepare on a full disk (exit 0)"
elif diff -r "$T/data" "$T/data.before" >/dev/null && "$BIN" train "${COMMON[@]}" --steps 1 --out "$T/p2" 2>/dev/null; then
    ok "prepare on a full disk: fails and leaves the old data set as it was"
else
    fail "prepare on a full disk ($(cat "$T/p.err"); $(diff -r "$T/data" "$T/data.before" | head -3))"
fi

# --- 9. validation evaluates each sample once: equal to perplexity on the same shard
head -c 100 "$T/corpus.txt" >"$T/v.txt"
"$BIN" prepare --byte-level --seq-len 32 --val-fraction 0 --out "$T/vdata" "$T/v.txt" >/dev/null 2>&1
"$BIN" train "${COMMON[@]}" --steps 2 --val-data "$T/vdata/train-00000.bin" --eval-every 2 --eval-batches 8 \
    --out "$T/v" 2>/dev/null
got=$(grep -o '"val_loss": [0-9.]*' "$T/v/log.jsonl" | tail -1 | awk '{print $2}')
want=$("$BIN" perplexity --model "$T/v/step-00000002" --shards "$T/vdata/train-00000.bin" 2>/dev/null |
    awk '/nll per token/ {print $4}')
if [ -n "$got" ] && [ -n "$want" ] && awk -v a="$got" -v b="$want" 'BEGIN {d = a - b; exit !(d < 2e-5 && d > -2e-5)}'; then
    ok "validation loss = perplexity's nll on the same shard ($got, $want)"
else
    fail "validation loss $got vs perplexity $want"
fi

# --- perplexity on a `prepare` directory scores its held-out shards only (as --val-data does)
pd=$("$BIN" perplexity --model "$T/v/step-00000002" --shards "$T/data" 2>"$T/pd.err" | awk '/nll per token/ {print $4}')
pv=$("$BIN" perplexity --model "$T/v/step-00000002" --shards "$T/data/val-00000.bin" 2>/dev/null | awk '/nll per token/ {print $4}')
if [ -n "$pd" ] && [ "$pd" = "$pv" ] && grep -q "validation shard" "$T/pd.err"; then
    ok "perplexity --shards DIR takes the validation shards ($pd)"
else
    fail "perplexity --shards DIR: $pd, its val shard: $pv ($(cat "$T/pd.err"))"
fi

# --- 15. Ctrl-C: a checkpoint, then exit 130 (SIGTERM: 143)
for sig in INT:130 TERM:143; do
    "$BIN" train "${COMMON[@]}" --steps 100000 --out "$T/s$sig" 2>"$T/s$sig.err" &
    pid=$!
    for _ in $(seq 1 500); do grep -q '"loss"' "$T/s$sig/log.jsonl" 2>/dev/null && break; sleep 0.02; done
    kill -"${sig%%:*}" "$pid"
    wait "$pid"
    rc=$?
    if [ "$rc" -eq "${sig##*:}" ] && [ -f "$T/s$sig/latest" ]; then
        ok "SIG${sig%%:*}: checkpoint, exit $rc"
    else
        fail "SIG${sig%%:*}: exit $rc, latest: $(cat "$T/s$sig/latest" 2>&1); stderr: $(tail -5 "$T/s$sig.err")"
    fi
done

finish

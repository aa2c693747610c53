#!/usr/bin/env bash
# CLI tests of watching a run: `tinyllama plot` (PNG and SVG of one or more runs' log.jsonl,
# bad logs refused with file:line) and train's progress line (plain lines in a log, one
# redrawn line on a terminal, model FLOP/s and MFU).  Usage: tests/cli_watch.sh path/to/tinyllama
set -u
BIN=$(realpath "${1:-./build/tinyllama}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${TL_SHARED:-$ROOT/../shared}
[ -d "$SHARED/corpora" ] || SHARED=/work/shared
T=$(mktemp -d /tmp/tl_watch.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

"$BIN" prepare --byte-level --seq-len 32 --quiet --out data "$SHARED/corpora/tinyshakespeare.txt" >/dev/null 2>&1 ||
    fail "prepare"
RUN=(--preset test --data data --val-data data/ --batch 2 --seq-len 32 --warmup 2 --eval-batches 2 --threads 2)
"$BIN" train "${RUN[@]}" --steps 12 --eval-every 4 --out r1 2>r1.err || fail "run 1 ($(tail -3 r1.err))"
"$BIN" train "${RUN[@]}" --steps 8 --eval-every 4 --lr 1e-3 --quiet --out r2 2>/dev/null || fail "run 2"

# --- the progress line off a terminal: one plain line per print, no carriage return
if [ "$(grep -c '^step [0-9]*/12 | ' r1.err)" -ge 2 ] && ! grep -q $'\r' r1.err && grep -q '^step 12/12 | ' r1.err; then
    ok "off a terminal the progress is plain lines"
else fail "plain progress lines ($(head -c 400 r1.err))"; fi
# model FLOP/s = tokens/s x (6 x the non-embedding parameters + 12 x layers x dim x seq), from the model line
read -r P L D V < <(sed -n 's/^model: \([0-9]*\) parameters (\([0-9]*\) layers, dim \([0-9]*\),.* vocab \([0-9]*\)).*/\1 \2 \3 \4/p' r1.err)
if [ -n "${P:-}" ] && grep '^step [0-9]*/' r1.err | awk -v f=$((6 * (P - V * D) + 12 * L * D * 32)) -F' [|] ' '
        { tps = $(NF - 2); sub(/ tok\/s/, "", tps); g = $(NF - 1); sub(/ GFLOP\/s.*/, "", g)
          want = tps * f / 1e9; if (want == 0 || (g - want) / want > 0.02 || (want - g) / want > 0.02) exit 1; n++ }
        END { exit n < 2 }'; then
    ok "the progress line's GFLOP/s is tokens/s x (6N + attention)"
else fail "GFLOP/s ($(grep '^step [0-9]*/' r1.err | head -2))"; fi
if command -v script >/dev/null; then
    # on a terminal (script gives the command a pseudo-terminal): one line redrawn with \r, and the MFU
    script -qc "'$BIN' train ${RUN[*]} --steps 6 --peak-tflops 0.25 --out r3" /dev/null >tty.out 2>&1 </dev/null
    n_redraw=$(grep -o $'\r\033\\[Kstep [0-9]*/6 ' tty.out | wc -l)
    mfu_ok=$(tr '\r' '\n' <tty.out | awk -F' [|] ' '/^.\[Kstep / { g = $(NF - 1); m = g; sub(/ GFLOP\/s.*/, "", g)
        sub(/.*MFU /, "", m); sub(/%.*/, "", m); want = 100 * g / 250; d = m - want
        if (d > 0.01 + want / 100 || -d > 0.01 + want / 100) bad = 1; n++ } END { print (n == 6 && !bad) }')
    if [ "$n_redraw" -eq 6 ] && [ "$(grep -c '^step [0-9]*/' tty.out)" -eq 0 ] && [ "$mfu_ok" = 1 ]; then
        ok "on a terminal one line is redrawn, with the MFU over --peak-tflops"
    else fail "terminal progress ($n_redraw redraws, mfu $mfu_ok: $(tail -c 400 tty.out | cat -v))"; fi
else
    echo "skip terminal progress line (no \`script\`, util-linux)"
fi
expect_fail "--peak-tflops below zero refused" "peak-tflops must be positive" "$BIN" train "${RUN[@]}" --steps 1 --peak-tflops -2 --out r4

# --- plot: a valid PNG (signature, IHDR, image data that inflates to the IHDR's size and is not blank)
png_check='
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
i, idat, ihdr = 8, b"", None
while i < len(b):
    n, kind = struct.unpack(">I4s", b[i:i + 8]); data = b[i + 8:i + 8 + n]
    assert zlib.crc32(kind + data) == struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0], "crc"
    if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", data)
    if kind == b"IDAT": idat += data
    i += 12 + n
w, h, depth, color = ihdr[:4]
px = {2: 3, 6: 4}[color] * depth // 8
raw = zlib.decompress(idat)
assert len(raw) == h * (1 + w * px), "image data size"
assert w >= 400 and h >= 300, "size"
assert len(set(raw)) > 8, "blank"
print(w, h)'
if "$BIN" plot r1 r2 --out two.png 2>plot.err && size=$(python3 -c "$png_check" two.png 2>&1); then
    ok "plot of two runs is a valid PNG ($size)"
else fail "plot PNG (${size:-} $(cat plot.err))"; fi
if "$BIN" plot r1 2>/dev/null && [ -f r1/plot.png ] && python3 -c "$png_check" r1/plot.png >/dev/null &&
    ! cmp -s r1/plot.png two.png; then
    ok "one run's plot goes to RUN/plot.png and differs from the plot of two"
else fail "plot of one run"; fi
svg_check='
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
assert r.tag.endswith("svg"), r.tag
print(sum(1 for e in r.iter() if e.tag.endswith("path")))'
if "$BIN" plot r1 r2/log.jsonl --out two.svg 2>/dev/null && n=$(python3 -c "$svg_check" two.svg 2>&1) && [ "$n" -gt 10 ]; then
    ok "plot as SVG parses as XML ($n paths)"
else fail "plot SVG (${n:-})"; fi

# --- bad input: named with the file and line
cp r1/log.jsonl bad.jsonl && echo '{"step": 13, "loss": 1.0, "lr":' >>bad.jsonl
expect_fail "a malformed line is refused with file:line" "bad.jsonl:$(wc -l <bad.jsonl): not a JSON object" "$BIN" plot bad.jsonl --out x.png
head -3 r1/log.jsonl >bad2.jsonl && echo '{"step": 4, "loss": "low", "lr": 1, "tokens_per_s": 1, "tokens": 9}' >>bad2.jsonl
expect_fail "a non-number loss is refused" 'bad2.jsonl:4: "loss" is not a finite number' "$BIN" plot bad2.jsonl --out x.png
head -3 r1/log.jsonl >bad4.jsonl && echo '{"step": 4, "loss": 1, "lr": 1, "tokens_per_s": 1, "tokens": 9, "phase": 2}' >>bad4.jsonl
expect_fail "a phase that is not a name is refused" 'bad4.jsonl:4: "phase" is not a name' "$BIN" plot bad4.jsonl --out x.png
echo '{"step": 1, "val_loss": 2.0}' >bad3.jsonl
expect_fail "a log without steps is refused" "bad3.jsonl.*(before any step|no training steps)" "$BIN" plot bad3.jsonl --out x.png
expect_fail "a missing run is named" "nowhere/log.jsonl|nowhere" "$BIN" plot nowhere --out x.png
expect_fail "an unknown picture format is refused" "must end with .png or .svg" "$BIN" plot r1 --out x.jpg
expect_fail "an unwritable picture is named" "nodir/x.png: cannot write the plot" "$BIN" plot r1 --out nodir/x.png
expect_fail "no run given" "no run given" "$BIN" plot
[ ! -e x.png ] && [ ! -e x.jpg ] && ok "nothing written on refusal" || fail "a refused plot wrote a file"
finish

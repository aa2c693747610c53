#!/usr/bin/env bash
# The README's first command, shortened: scripts/demo.sh with 12 steps, run twice (the
# second run starts over in the same directories), then continued with --resume.
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/tl_demo.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/lib.sh
short=(--steps 12 --warmup 2 --decay-steps 18 --eval-every 6 --ckpt-every 6 --threads 2)
if bash scripts/demo.sh "${short[@]}" >"$T/1.out" 2>&1 && grep -q "== done" "$T/1.out" &&
    [ -f runs/demo/step-00000012/tokenizer.model ] && [ -f runs/demo/step-00000012/checksums.json ] &&
    [ "$(head -c 8 runs/demo/plot.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    ok "demo runs end to end and draws its plot"
else
    fail "demo ($(tail -5 "$T/1.out"))"
fi
if bash scripts/demo.sh "${short[@]}" >"$T/2.out" 2>&1 && grep -q "== done" "$T/2.out" &&
    [ "$(grep -c '"loss"' runs/demo/log.jsonl)" -eq 12 ]; then
    ok "a second demo starts over in the same directories"
else
    fail "second demo ($(tail -5 "$T/2.out"))"
fi
if bash scripts/demo.sh --steps 18 --warmup 2 --decay-steps 18 --eval-every 6 --ckpt-every 6 --resume >"$T/3.out" 2>&1 &&
    grep -q "resuming from runs/demo/step-00000012" "$T/3.out" && [ -f runs/demo/step-00000018/model.safetensors ] &&
    [ "$(grep -c '"loss"' runs/demo/log.jsonl)" -eq 18 ]; then
    ok "scripts/demo.sh --resume continues the run"
else
    fail "demo --resume ($(tail -5 "$T/3.out"))"
fi
finish

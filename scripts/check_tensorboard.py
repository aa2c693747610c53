#!/usr/bin/env python3
"""Checks the TensorBoard event files of training runs with TensorBoard's own reader
(EventAccumulator): every scalar of log.jsonl (loss, lr, grad norm, tokens/s, batch,
tokens, validation loss) must be there, once per step, with the log's value (to float32
and the log's 6 printed digits).  A resumed run must read as one run (TensorBoard drops
the points an interrupted run wrote past its checkpoint).

    pip install tensorboard
    python3 scripts/check_tensorboard.py RUN_DIR [RUN_DIR...]
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FIELDS = {"train/loss": "loss", "train/lr": "lr", "train/grad_norm": "grad_norm", "train/tokens_per_s": "tokens_per_s",
          "train/batch_tokens": "batch_tokens", "train/tokens": "tokens"}

bad = 0
for run in sys.argv[1:]:
    ea = EventAccumulator(run, size_guidance={"scalars": 0})
    ea.Reload()
    want = {}
    for line in open(f"{run}/log.jsonl"):
        r = json.loads(line)
        if "loss" in r and "lr" in r:
            for tag, key in FIELDS.items():
                if key in r:
                    want.setdefault(tag, {})[r["step"]] = r[key]
        if "val_loss" in r:
            want.setdefault("val/loss", {})[r["step"]] = r["val_loss"]
    for tag, steps in want.items():
        got = [(e.step, e.value) for e in ea.Scalars(tag)] if tag in ea.Tags()["scalars"] else []
        if [s for s, _ in got] != sorted(steps):
            print(f"FAIL {run} {tag}: steps {[s for s, _ in got][:20]} vs the log's {sorted(steps)[:20]}")
            bad += 1
            continue
        worst = max(abs(v - steps[s]) / max(abs(steps[s]), 1e-30) for s, v in got)
        # the log's rounding (tokens/s %.1f, loss and norm %.6f, lr %.6e) plus float32's (6e-8 relative)
        half_unit = {"train/tokens_per_s": 0.05, "train/loss": 5e-7, "train/grad_norm": 5e-7, "val/loss": 5e-7}.get(tag, 0)
        ok = all(abs(v - steps[s]) <= half_unit + 1e-6 * abs(steps[s]) for s, v in got)
        print(f"{'ok  ' if ok else 'FAIL'} {run} {tag}: {len(got)} steps, largest relative difference {worst:.2e}")
        bad += not ok
print(f"{'all agree' if not bad else f'{bad} disagreements'}")
sys.exit(1 if bad else 0)

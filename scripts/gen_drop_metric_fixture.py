#!/usr/bin/env python3
"""Writes tests/fixtures/eval_drop/metric.json: the DROP answer normalisation,
exact match and F1 computed by lm-evaluation-harness's own drop task functions
(lm_eval/tasks/drop/utils.py: _normalize, get_metrics, process_results) on
hand-picked and random prediction/answer pairs, and random.Random(1234).sample
draws, which pick the harness's shots.  tests/test_eval_gen.c checks our C
against it.

Run from the repo root with lm-eval 0.4.x installed:
    python3 scripts/gen_drop_metric_fixture.py
"""
import json
import os
import random

from lm_eval.tasks.drop import utils as drop

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval_drop", "metric.json")

# pieces that exercise every step: articles, punctuation, numbers in all of
# float()'s spellings, hyphens, case, whitespace other than spaces, UTF-8
WORDS = ["the", "The", "a", "an", "An", "and", "theatre", "Anna", "apple", "A.", "the-end", "1", "1.0", "01",
         "2,000", "2000", "3.50", "1e5", "1E16", "1e-5", "0.0001", "-7", "+8", "1_000", "inf", "NaN", "Infinity",
         "-", "--", "12-13", "1,2", "$5", "5%", "touchdowns", "Touchdown", "yards.", "yards", "(b)", "don't",
         "U.S.", "naïve", "café", "\t", "x\ty", "1\n", "", " ", "4th", "0", "0.5", ".5", "5.", "1e400", "100",
         "1e16", "123456789012345678", "0.1", "1/2", "_", "a_b"]


def rand_span(rnd):
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 4)))


def main():
    rnd = random.Random(7)
    norm = sorted(set(WORDS + ["The  quick-brown fox.", "  An apple a day ", "Super Bowl XLV", "1-2 yards",
                               "the 1.50 dollars", "3 touchdowns!", "tHe ThE", "a-an-the", "x the y"]))
    normalize = [{"s": s, "norm": drop._normalize(s)} for s in norm]
    normalize += [{"s": s, "norm": drop._normalize(s)} for s in (rand_span(rnd) for _ in range(300))]
    pairs = [(["Tom Brady"], ["tom brady"]), (["2"], ["2.0"]), (["2 yards"], ["3 yards"]), (["Seattle"], ["the Seattle"]),
             (["1999"], ["3 May 1999"]), (["x", "y"], ["y", "x"]), (["x"], ["x", "y"]), (["a b", "c"], ["b", "c d"]),
             ([""], ["x"]), (["x"], [""]), ([""], [""]), (["4 and 5"], ["4", "5"]), (["John"], ["Jon", "John", "Jim"])]
    for _ in range(600):
        p = [rand_span(rnd) for _ in range(rnd.choice([1, 1, 1, 2, 3]))]
        g = [rand_span(rnd) for _ in range(rnd.choice([1, 1, 2, 3, 4]))]
        if rnd.random() < 0.3:  # overlaps make the F1 interesting
            p[0] = g[0] + " " + rnd.choice(WORDS)
        pairs.append((p, g))
    metrics = []
    for p, g in pairs:
        em, f1 = drop.get_metrics(p, g)
        metrics.append({"pred": p, "gold": g, "em": float(em), "f1": float(f1)})
    # process_results: one prediction, several gold answers (tuples), blanks skipped
    docs = []
    for _ in range(200):
        golds = [tuple(rand_span(rnd) for _ in range(rnd.choice([1, 1, 2]))) for _ in range(rnd.randint(1, 3))]
        pred = rand_span(rnd)
        if rnd.random() < 0.4:
            pred = golds[0][0]
        r = drop.process_results({"answers": golds}, [pred])
        docs.append({"pred": pred, "answers": [list(g) for g in golds], "em": float(r["em"]), "f1": float(r["f1"])})
    samples = []
    for n in [3, 4, 10, 21, 22, 30, 100, 1000, 123457]:
        r = random.Random(1234)
        samples.append({"seed": 1234, "n": n, "k": 3, "draws": [r.sample(range(n), 3) for _ in range(5)]})
    r = random.Random(99)
    samples.append({"seed": 99, "n": 50, "k": 8, "draws": [r.sample(range(50), 8) for _ in range(3)]})
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"normalize": normalize, "metrics": metrics, "docs": docs, "samples": samples}, f,
                  ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {OUT}: {len(normalize)} normalisations, {len(metrics)} metric pairs, {len(docs)} docs")


if __name__ == "__main__":
    main()

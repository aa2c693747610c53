#!/usr/bin/env python3
"""Serving benchmark: aggregate decode tokens/s of `tinyllama serve` with 1, 4, 8
and 16 concurrent streaming clients (each asks for --gen tokens greedily from
its own prompt), and time to first token with a long shared system prompt, the
second request against the first (the prefix cache).  With --llama-server BIN,
llama.cpp's server runs the same measurements on the same GGUF file with the
same slots (--parallel), per-slot context and threads, the two servers taking
turns round by round (never at the same time), and the table gives the ratios.
Plain HTTP (urllib) to /v1/completions, each server started here on a free
loopback port and stopped before the other starts.

Usage: python3 scripts/bench_serve.py --model DIR|FILE.gguf [--bin build/tinyllama] [--gen 16]
       [--clients 1,4,8,16] [--threads N] [--system-tokens 1000] [--rounds 1]
       [--llama-server /tmp/llamacpp/build/bin/llama-server] [--generate]
Prints markdown tables for docs/serving.md."""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
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
p.add_argument("--ctx", type=int, default=1536, help="positions per slot")
p.add_argument("--rounds", type=int, default=1)
p.add_argument("--llama-server", help="llama.cpp's llama-server binary: measure it too, on the same file")
p.add_argument("--generate", action="store_true", help="also `tinyllama generate`'s single-sequence tokens/s")
a = p.parse_args()
clients = [int(x) for x in a.clients.split(",")]
P = max(clients)
# a SIGTERM (e.g. from `timeout`) still stops the server this script started
signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind):
    """Starts a server; returns (process, base URL, log file)."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")
    port = free_port()
    if kind == "ours":
        cmd = [a.bin, "serve", "--model", a.model, "--port", str(port), "--parallel", str(P), "--ctx", str(a.ctx),
               "--threads", str(a.threads)]
    else:  # llama.cpp's -c is the context of all slots together
        cmd = [a.llama_server, "-m", a.model, "--host", "127.0.0.1", "--port", str(port), "--parallel", str(P),
               "-c", str(P * a.ctx), "-t", str(a.threads), "-tb", str(a.threads), "--no-webui",
               # its AMX Q4_0 path (ggml_backend_amx_mul_mat) segfaults on this machine; repacking off avoids it
               "--no-repack"]
    srv = subprocess.Popen(cmd, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if srv.poll() is not None:
            break
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return srv, base, log
        except OSError:
            pass
        time.sleep(0.25)
    log.seek(0)
    srv.kill()
    sys.exit(f"{kind} server did not start: " + log.read()[-2000:])


def stream(base, body):
    """Returns (seconds to the first content, seconds to the end, completion tokens)."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if "error" in ch:
                raise RuntimeError(f"the stream ended in an error: {ch['error']}")
            c = ch.get("choices")
            if first is None and c and (c[0].get("text") or c[0].get("finish_reason")):
                first = time.perf_counter() - t0
            if ch.get("usage"):
                tokens = ch["usage"]["completion_tokens"]
    return first, time.perf_counter() - t0, tokens


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def measure(kind, rnd):
    srv, base, log = start(kind)
    out = {"tps": {}, "load": []}
    try:
        stream(base, {"prompt": "warm up", "max_tokens": 2, "temperature": 0})
        for n in clients:
            # distinct prompts per round and server so that no cache holds them
            prompts = [f"Round {rnd} request {i} of {n} ({kind}): once upon a time" for i in range(n)]
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                res = list(pool.map(lambda q: stream(base, {"prompt": q, "max_tokens": a.gen, "temperature": 0,
                                                            "ignore_eos": True}), prompts))
            wall = time.perf_counter() - t0
            toks = sum(r[2] for r in res)
            out["tps"][n] = toks / wall
            out["load"].append(loadavg())
            print(f"round {rnd} {kind}: {n} clients, {toks} tokens in {wall:.2f} s, load {loadavg()}",
                  file=sys.stderr)
        system = " ".join(f"Rule {i}: answer politely." for i in range(a.system_tokens // 9))  # ~9 tokens each
        ttft = []
        for q in ("What is the capital of France?", "Name a colour."):
            body = {"prompt": f"{system} ({kind} round {rnd})\nQuestion: {q}\nAnswer:", "max_tokens": 2,
                    "temperature": 0}
            ttft.append(stream(base, body)[0])
        out["ttft"] = ttft
        print(f"round {rnd} {kind}: TTFT first {ttft[0]:.2f} s, second {ttft[1]:.2f} s", file=sys.stderr)
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=120)
        except subprocess.TimeoutExpired:
            srv.kill()
    return out


def generate_tps():
    g = subprocess.run([a.bin, "generate", "--model", a.model, "Request 0 of 1: once upon a time", "--max-tokens",
                        str(a.gen), "--greedy", "--ignore-eos", "--threads", str(a.threads)],
                       capture_output=True, text=True)
    gm = re.search(r"generated: \d+ tokens, ([0-9.]+) tokens/s", g.stderr)
    return float(gm.group(1)) if gm else float("nan")


kinds = ["ours"] + (["llama"] if a.llama_server else [])
results = {k: [] for k in kinds}
load0 = loadavg()
for rnd in range(a.rounds):
    for k in (kinds if rnd % 2 == 0 else kinds[::-1]):  # alternate who goes first
        results[k].append(measure(k, rnd))


def best(k, n):  # the best round: the machine is shared, slower rounds measure the others' load
    return max(r["tps"][n] for r in results[k])


name = {"ours": "tinyllama serve", "llama": "llama-server"}
print(f"load average before: {load0}, after: {loadavg()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
      f"{a.threads} threads, --parallel {P}, "
      f"{a.ctx} positions per slot, {a.gen} tokens per client, best of {a.rounds} round(s)\n")
head = "| clients | " + " | ".join(f"{name[k]} tokens/s | vs 1 client" for k in kinds)
head += " | ours / llama-server |" if a.llama_server else " |"
print(head)
print("|---" * (1 + 2 * len(kinds) + (1 if a.llama_server else 0)) + "|")
for n in clients:
    row = f"| {n} | " + " | ".join(f"{best(k, n):.2f} | {best(k, n) / best(k, clients[0]):.2f}x" for k in kinds)
    row += f" | {best('ours', n) / best('llama', n):.2f}x |" if a.llama_server else " |"
    print(row)
print("\n| server | TTFT first (s) | TTFT second (s) | first / second |")
print("|---|---|---|---|")
for k in kinds:
    f = min(r["ttft"][0] for r in results[k])
    s = min(r["ttft"][1] for r in results[k])
    print(f"| {name[k]} | {f:.2f} | {s:.2f} | {f / s:.1f}x |")
if a.generate:
    print(f"\n`tinyllama generate` (one sequence, single-token decode), same machine: {generate_tps():.2f} tokens/s")

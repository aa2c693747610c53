#!/usr/bin/env python3
"""Checks `tinyllama serve` with the official `openai` Python client (PyPI), the
independent oracle of the wire format: it starts the server on a free loopback
port, then runs chat, completions and streaming (with usage), stop strings,
seeds, logprobs (chat and legacy forms, also streamed; values against
transformers' log_softmax in tests/fixtures/serve_logprobs.json), n > 1 choices
(also streamed), an error the client must raise as BadRequestError, and
concurrent streams, printing "ok"/"FAIL" lines and "N passed, N failed".

Usage: python3 scripts/check_serve_openai.py [path/to/tinyllama] [MODEL]
(needs `pip install openai`; MODEL defaults to tests/fixtures/infer_gqa_f32)."""
import concurrent.futures
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import openai

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "tinyllama")
model = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "tests", "fixtures", "infer_gqa_f32")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"check_serve_openai.{os.getpid()}.log"), "w+")
srv = subprocess.Popen([binary, "serve", "--model", model, "--port", "0", "--parallel", "4", "--ctx", "128",
                        "--api-key", "k-test"], stderr=log)
port = None
for _ in range(300):
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
    sys.exit("the server did not start: " + log.read())

client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k-test", max_retries=0, timeout=60)
try:
    ids = [m.id for m in client.models.list().data]
    check("models.list names the model", ids == [os.path.basename(model.rstrip("/"))], ids)

    want = subprocess.run([binary, "generate", "--model", model, "Hello world", "--max-tokens", "10", "--greedy",
                           "--ignore-eos", "--no-stats"], capture_output=True, text=True).stdout
    want = want[:-1] if want.endswith("\n") else want  # generate ends its output with a newline
    c = client.completions.create(model="x", prompt="Hello world", max_tokens=10, temperature=0)
    check("completions.create: greedy text = tinyllama generate --greedy", c.choices[0].text == want,
          (c.choices[0].text, want))
    check("completions.create: usage and finish_reason",
          c.usage.completion_tokens == 10 and c.usage.total_tokens == c.usage.prompt_tokens + 10
          and c.choices[0].finish_reason == "length", c)

    msgs = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hi there"}]
    r = client.chat.completions.create(model="x", messages=msgs, max_tokens=12, temperature=0)
    text = r.choices[0].message.content
    check("chat.completions.create: an assistant message", r.choices[0].message.role == "assistant" and text, r)
    parts, finish, roles = [], None, []
    for ch in client.chat.completions.create(model="x", messages=msgs, max_tokens=12, temperature=0, stream=True):
        if ch.choices:
            d = ch.choices[0].delta
            roles.append(d.role)
            parts.append(d.content or "")
            finish = ch.choices[0].finish_reason or finish
    check("chat stream: deltas join to the non-streamed reply", "".join(parts) == text, ("".join(parts), text))
    check("chat stream: role first, finish_reason last", roles[0] == "assistant" and finish == r.choices[0].finish_reason)

    usage = None
    parts = []
    for ch in client.completions.create(model="x", prompt="Hello world", max_tokens=10, temperature=0, stream=True,
                                        stream_options={"include_usage": True}):
        if ch.choices:
            parts.append(ch.choices[0].text)
        if ch.usage:
            usage = ch.usage
    check("completions stream: text = the non-streamed one", "".join(parts) == want)
    check("completions stream: include_usage gives the usage", usage is not None and usage.completion_tokens == 10)

    stop = want[3:6]
    s = client.completions.create(model="x", prompt="Hello world", max_tokens=10, temperature=0, stop=[stop])
    check("stop string: text ends before it", s.choices[0].text == want.split(stop)[0]
          and s.choices[0].finish_reason == "stop", (s.choices[0].text, stop))

    a, b, d = (client.completions.create(model="x", prompt="Hello world", max_tokens=16, temperature=1.0, top_p=0.95,
                                         seed=sd).choices[0].text for sd in (7, 7, 8))
    check("seed reproduces a sample, another seed differs", a == b and a != d, (a, b, d))

    fx = json.load(open(os.path.join(root, "tests", "fixtures", "serve_logprobs.json")))
    lc = client.completions.create(model="x", prompt=fx["prompt"], max_tokens=len(fx["steps"]), temperature=0,
                                   logprobs=5)
    lp = lc.choices[0].logprobs
    check("completions logprobs=5: tokens and token_logprobs = transformers' log_softmax (1e-4)",
          lp.tokens == [st["token"] for st in fx["steps"]]
          and all(abs(x - st["logprob"]) < 1e-4 for x, st in zip(lp.token_logprobs, fx["steps"], strict=True)),
          (lp.tokens, lp.token_logprobs))
    check("completions logprobs=5: top_logprobs led by the greedy token, 5 each",
          all(len(t) == 5 and max(t.values()) == v for t, v in zip(lp.top_logprobs, lp.token_logprobs)))
    cr = client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0, logprobs=True,
                                        top_logprobs=4)
    content = cr.choices[0].logprobs.content
    check("chat logprobs: one entry per token, sorted top_logprobs led by the greedy token, mass <= 1",
          len(content) == cr.usage.completion_tokens and all(
              len(e.top_logprobs) == 4 and e.top_logprobs[0].logprob == e.logprob
              and all(x.logprob >= y.logprob for x, y in zip(e.top_logprobs, e.top_logprobs[1:]))
              and sum(math.exp(x.logprob) for x in e.top_logprobs) <= 1 for e in content), content)
    sl = [e for ch in client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0,
                                                       logprobs=True, top_logprobs=4, stream=True)
          if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    # (the second request reuses the cached prompt, split elsewhere: equal up to float rounding)
    check("chat stream logprobs: the chunks carry the same entries",
          [e.token for e in sl] == [e.token for e in content]
          and all(abs(x.logprob - y.logprob) < 1e-4 for x, y in zip(sl, content)), (sl, content))

    nc = client.completions.create(model="x", prompt="Hello world", max_tokens=8, temperature=1.0, seed=11, n=3)
    singles = [client.completions.create(model="x", prompt="Hello world", max_tokens=8, temperature=1.0,
                                         seed=11 + i) for i in range(3)]
    check("n=3 with a seed: choice i = the request with seed+i, usage counts all",
          [c.index for c in nc.choices] == [0, 1, 2]
          and [c.text for c in nc.choices] == [s.choices[0].text for s in singles]
          and nc.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles), nc)
    texts = {}
    for ch in client.chat.completions.create(model="x", messages=msgs, max_tokens=6, temperature=0, n=6,
                                             stream=True):
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    check("chat stream n=6 (more than --parallel 4): six indexed choices, each the greedy reply",
          sorted(texts) == list(range(6)) and all(t == texts[0] for t in texts.values())
          and texts[0] == client.chat.completions.create(model="x", messages=msgs, max_tokens=6,
                                                         temperature=0).choices[0].message.content, texts)

    try:
        client.completions.create(model="x", prompt="Hello", temperature=5)
        check("temperature 5: BadRequestError", False, "no error")
    except openai.BadRequestError as e:
        check("temperature 5: BadRequestError naming the field", "temperature" in str(e), str(e))
    try:
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
        check("a wrong API key: AuthenticationError", False, "no error")
    except openai.AuthenticationError:
        check("a wrong API key: AuthenticationError", True)

    prompts = [f"Story number {i}:" for i in range(16)]
    alone = [client.completions.create(model="x", prompt=p, max_tokens=12, temperature=0).choices[0].text
             for p in prompts]

    def streamed(p):
        return "".join(ch.choices[0].text for ch in client.completions.create(
            model="x", prompt=p, max_tokens=12, temperature=0, stream=True) if ch.choices)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(streamed, prompts))
    check("16 concurrent streams: each = the same request alone", together == alone)
finally:
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait(timeout=60)
    check("SIGTERM: exit status 0", rc == 0, rc)
    log.close()
    os.unlink(log.name)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)

#!/usr/bin/env bash
# bench_prepare.sh - throughput of `tinyllama prepare` against a Python equivalent
# (scripts/prepare_py.py: json + sentencepiece + numpy, as TinyLlama's scripts).
#
# Builds a SlimPajama-like corpus (.jsonl.zst, documents of log-normal length cut
# from the shared corpora, with meta.redpajama_set_name) of about MB megabytes of
# text, then runs decompress + parse + tokenize + pack on it:
#   - tinyllama prepare with 1 thread and with all cores,
#   - the Python script (one process),
# checks that both produce the same token stream, and prints MB/s of raw text:
# per wall-clock second and per CPU second (user + system time, i.e. per core,
# which stays meaningful on a machine shared with other work), and the ratio.
#
# usage: scripts/bench_prepare.sh [MB]      (default 32; env TL_SHARED, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-32}
SHARED=${TL_SHARED:-../shared}
TOK=$SHARED/tokenizers/llama2/tokenizer.model
WORK=${BENCH_DIR:-/tmp/tl_bench_prepare}
mkdir -p "$WORK"
[ -x build/tinyllama ] || make -j"$(nproc)" build/tinyllama >/dev/null
python3 -c 'import sentencepiece, numpy' 2>/dev/null || { echo "needs python3 with sentencepiece and numpy" >&2; exit 1; }

python3 - "$SHARED" "$WORK" "$MB" <<'PY'
import json, os, random, subprocess, sys
shared, work, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = os.path.join(work, f"corpus-{mb}MB.jsonl")
if not os.path.exists(out + ".zst"):
    random.seed(0)
    texts = [open(os.path.join(shared, "corpora", f), encoding="utf-8", errors="replace").read()
             for f in ("tinyshakespeare.txt", "botchan.txt")]
    sets = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaBook", "RedPajamaWikipedia", "RedPajamaArXiv"]
    total = 0
    with open(out, "w", encoding="utf-8") as f:
        while total < mb * 1_000_000:
            src = texts[0] if random.random() < 0.7 else texts[1]
            n = max(50, min(int(random.lognormvariate(8, 1.2)), 200_000, len(src) - 1))
            off = random.randrange(0, len(src) - n)
            text = src[off:off + n]
            f.write(json.dumps({"text": text, "meta": {"redpajama_set_name": random.choice(sets)}}) + "\n")
            total += len(text.encode())
    subprocess.run(["zstd", "-q", "-f", "--rm", "-3", out, "-o", out + ".zst"], check=True)
PY
CORPUS=$WORK/corpus-${MB}MB.jsonl.zst
NCPU=$(nproc)

python3 - "$TOK" "$WORK" "$CORPUS" "$NCPU" <<'PY'
import json, os, resource, shutil, subprocess, sys, time
import numpy as np
tok, work, corpus, ncpu = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def run(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return p.stdout, wall, cpu

rows = []
text_bytes = None
ours_tokens = None
for threads in sorted({1, ncpu}):
    out = os.path.join(work, f"c{threads}")
    shutil.rmtree(out, ignore_errors=True)
    _, wall, cpu = run(["build/tinyllama", "prepare", "--tokenizer", tok, "--out", out, "--threads", str(threads),
                        "--val-fraction", "0", "--seq-len", "2048", "--quiet", corpus])
    man = json.load(open(os.path.join(out, "manifest.json")))
    text_bytes = man["total"]["text_bytes"]
    toks = np.concatenate([np.fromfile(os.path.join(out, s["file"]), dtype=np.uint16, offset=64)
                           for s in man["splits"]["train"]["shards"]])
    if ours_tokens is None:
        ours_tokens = toks
    elif not np.array_equal(ours_tokens, toks):
        sys.exit("different output at different thread counts!")
    rows.append((f"tinyllama prepare, {threads} thread(s)", wall, cpu, threads))

pyout = os.path.join(work, "py.bin")
stdout, wall, cpu = run([sys.executable, "scripts/prepare_py.py", "--tokenizer", tok, "--out", pyout, corpus])
py = json.loads(stdout)
py_tokens = np.fromfile(pyout, dtype=np.uint16)
rows.append((f"python sentencepiece+numpy ({py['zstd']})", wall, cpu, 1))
same = py["text_bytes"] == text_bytes and np.array_equal(py_tokens, ours_tokens)

mb = text_bytes / 1e6
print(f"corpus: {corpus} ({os.path.getsize(corpus)/1e6:.1f} MB zst, {mb:.1f} MB of text), {ncpu} cores")
print(f"{'':44s} {'wall s':>8s} {'cpu s':>8s} {'MB/s':>8s} {'MB/s/core':>10s} {'MB/cpu-s':>9s}")
for name, wall, cpu, thr in rows:
    print(f"{name:44s} {wall:8.2f} {cpu:8.2f} {mb/wall:8.2f} {mb/wall/thr:10.2f} {mb/cpu:9.2f}")
ours1 = rows[0]
pyrow = rows[-1]
print(f"ratio (1 thread vs python, wall):        {pyrow[1]/ours1[1]:.1f}x")
print(f"ratio (per CPU second vs python):        {(mb/ours1[2])/(mb/pyrow[2]):.1f}x")
if len(rows) == 3:
    print(f"ratio (all {ncpu} cores vs python, wall):     {pyrow[1]/rows[1][1]:.1f}x")
print("token streams identical to python sentencepiece:", "yes" if same else "NO")
sys.exit(0 if same else 1)
PY

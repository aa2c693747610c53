#!/usr/bin/env bash
# Training throughput: tinyllama vs PyTorch (transformers LlamaForCausalLM) on the
# same config, batch and machine, in one run.  Needs `pip install torch transformers`.
#   scripts/bench_train.sh [preset] [batch] [seq_len] [steps]
set -eu
cd "$(dirname "$0")/.."
preset=${1:-llama-24m}
batch=${2:-4}
seq=${3:-64}
steps=${4:-10}
make -j"$(nproc)" >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u +%Y-%m-%d)"
ours=$(./build/tinyllama bench --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" | tee /dev/stderr | grep RESULT)
theirs=$(python3 scripts/bench_train_torch.py --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" 2>/dev/null | tee /dev/stderr | grep RESULT)
get() { printf '%s\n' "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
a=$(get "$ours" tokens_per_s)
b=$(get "$theirs" tokens_per_s)
printf 'preset %s batch %s seq %s: tinyllama %s tok/s, pytorch %s tok/s, ratio %.2fx; peak memory %s MB vs %s MB\n' \
    "$preset" "$batch" "$seq" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{print a/b}')" \
    "$(get "$ours" peak_mb)" "$(get "$theirs" peak_mb)"

#!/usr/bin/env bash
# Training throughput: tinyllama vs PyTorch (transformers LlamaForCausalLM) on the
# same config, batch and machine, in one run, with the fp32 sgemm peak measured in
# the same run (scripts/sgemm_peak.c) so that GFLOP/s read as a fraction of it.
# Needs `pip install torch transformers` (PY=path/to/python picks the interpreter).
#   scripts/bench_train.sh                               the four configs of docs/benchmarks.md
#   scripts/bench_train.sh PRESET [BATCH] [SEQ] [STEPS]  one config
#   scripts/bench_train.sh --bf16 [PRESET BATCH SEQ STEPS]
#       bf16 mixed precision: ours fp32 and bf16 (--precision) against PyTorch fp32 and
#       PyTorch under torch.autocast("cpu", dtype=torch.bfloat16), in ROUNDS (default 2)
#       interleaved rounds, best of each, with the load average before every round
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BF16=0
if [ "${1:-}" = --bf16 ]; then
    BF16=1
    shift
fi
make -j"$(nproc)" >/dev/null
SGEMM=$(mktemp /tmp/tl_sgemm.XXXXXX)
trap 'rm -f "$SGEMM"' EXIT
BLAS_DIR=${BLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
gcc -O2 -fopenmp scripts/sgemm_peak.c -I/usr/include/x86_64-linux-gnu/openblas-openmp -L"$BLAS_DIR" \
    -Wl,-rpath,"$BLAS_DIR" -lopenblas -ldnnl -o "$SGEMM"
peak=$("$SGEMM" 2048 5 2>/dev/null)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "sgemm peak (2048^3, $(nproc) threads): $peak GFLOP/s (the better of OpenBLAS and oneDNN; every backend: scripts/bench_gemm.sh)"
./build/tinyllama info --cpu | sed 's/^/  /'

get() { printf '%s\n' "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
summary=()
one() {
    local preset=$1 batch=$2 seq=$3 steps=$4 out ours theirs a b
    out=$(./build/tinyllama bench --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps")
    printf '%s\n' "$out"
    ours=$(printf '%s\n' "$out" | grep RESULT)
    out=$("$PY" scripts/bench_train_torch.py --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" 2>/dev/null)
    printf '%s\n' "$out"
    theirs=$(printf '%s\n' "$out" | grep RESULT)
    a=$(get "$ours" tokens_per_s)
    b=$(get "$theirs" tokens_per_s)
    summary+=("$(awk -v p="$preset" -v bs="$batch x $seq" -v a="$a" -v b="$b" -v ga="$(get "$ours" gflops)" \
        -v gb="$(get "$theirs" gflops)" -v pk="$peak" -v ma="$(get "$ours" peak_mb)" -v mb="$(get "$theirs" peak_mb)" \
        'BEGIN{printf "%-15s %-8s %8.1f %8.1f %6.2fx %6.1f%% %6.1f%% %8.0f %8.0f", p, bs, a, b, a/b, 100*ga/pk, 100*gb/pk, ma, mb}')")
}
# --bf16: each config's four runs interleaved, ROUNDS times; the best tokens/s of each
load() { cut -d' ' -f1 /proc/loadavg; }
mixed() {
    local preset=$1 batch=$2 seq=$3 steps=$4 r v out tps loads="" b1=0 b2=0 b3=0 b4=0
    for r in $(seq 1 "${ROUNDS:-2}"); do
        loads="$loads $(load)"
        for v in 1 2 3 4; do
            case $v in
            1) out=$(./build/tinyllama bench --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" --precision fp32) ;;
            2) out=$(./build/tinyllama bench --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" --precision bf16) ;;
            3) out=$("$PY" scripts/bench_train_torch.py --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" 2>/dev/null) ;;
            4) out=$("$PY" scripts/bench_train_torch.py --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$steps" --autocast 2>/dev/null) ;;
            esac
            printf '%s\n' "$out" | grep -E 'RESULT|threads'
            tps=$(get "$(printf '%s\n' "$out" | grep RESULT)" tokens_per_s)
            eval "b$v=\$(awk -v a=\"\$b$v\" -v b=\"$tps\" 'BEGIN{print (b > a ? b : a)}')"
        done
    done
    summary+=("$(awk -v p="$preset" -v bs="$batch x $seq" -v a="$b1" -v b="$b2" -v c="$b3" -v d="$b4" -v l="$loads" \
        'BEGIN{printf "%-15s %-8s %8.1f %8.1f %8.1f %8.1f %7.2fx %7.2fx %7.2fx  %s", p, bs, a, b, c, d, b/a, a/c, b/d, l}')")
}
if [ "$BF16" = 1 ]; then
    if [ $# -gt 0 ]; then
        mixed "$1" "${2:-4}" "${3:-64}" "${4:-10}"
    else
        mixed llama-24m 4 64 10
        mixed llama-24m 8 256 6
        mixed gqa-40m 4 256 6
        mixed tinyllama-120m 4 256 4
    fi
    printf '\n%-15s %-8s %8s %8s %8s %8s %8s %8s %8s  %s\n' config batch "fp32" "bf16" "pt fp32" "pt bf16" \
        "bf16/fp32" "fp32/pt" "bf16/pt" "load avg per round"
    printf '%s\n' "${summary[@]}"
    exit 0
fi
if [ $# -gt 0 ]; then
    one "$1" "${2:-4}" "${3:-64}" "${4:-10}"
else
    one llama-24m 4 64 10
    one llama-24m 8 256 6
    one gqa-40m 4 256 6
    one tinyllama-120m 4 256 4
fi
printf '\n%-15s %-8s %8s %8s %7s %7s %7s %8s %8s\n' config batch ours pytorch ratio "peak%" "pt peak%" "our MB" "pt MB"
printf '%s\n' "${summary[@]}"

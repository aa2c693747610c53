#!/usr/bin/env bash
# llama.cpp as the oracle of the GGUF files we write, and the other way round:
#   1. a small model trained here (or --model DIR, an HF directory with tokenizer.model) is
#      written by `tinyllama quantize` in every type; llama.cpp's greedy ids over N tokens
#      (a 40-line C helper built against libllama, prompt given as ids) must equal ours
#      (`tinyllama generate --ids --greedy`) on the same file;
#   2. llama-quantize quantizes our F32 file to Q4_K_M, Q8_0 (and Q4_0, Q5_K_M): the tensor
#      data must be byte-identical to ours (gguf package), and those files generate here with
#      the ids llama.cpp gives on them;
#   3. perplexity on held-out text (ours: tinyllama perplexity; theirs: llama-perplexity) of
#      our files and llama-quantize's.
# Prints one line per check and "N passed, N failed".
# Usage: scripts/check_gguf_llamacpp.sh [--model DIR] [--gen N] [--steps N] [--build] [--no-ppl] [--prompt TEXT]
#   --prompt  the prompt text (default "/* gguf_write.c - write"; 16 tokens or more take the
#             AMX-INT8 prompt pass where it runs)
#   --build   build llama-quantize, llama-perplexity and libllama in /tmp/llamacpp/build first
# Needs: a llama.cpp build in $LLAMA_BUILD (default /tmp/llamacpp/build; sources in
# $LLAMA_SRC), pip install gguf numpy.
set -uo pipefail
cd "$(dirname "$0")/.."
LLAMA_BUILD=${LLAMA_BUILD:-/tmp/llamacpp/build}
LLAMA_SRC=${LLAMA_SRC:-/tmp/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp}
W=${W:-/tmp/tl_check_llamacpp}
model="" gen=64 steps=150 build=0 ppl=1 text="/* gguf_write.c - write"
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift ;;
    --gen) gen=$2; shift ;;
    --steps) steps=$2; shift ;;
    --build) build=1 ;;
    --no-ppl) ppl=0 ;;
    --prompt) text=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=./build/tinyllama
[ -x "$BIN" ] || make -j2 >/dev/null
if [ $build = 1 ]; then
    cmake --build "$LLAMA_BUILD" --target llama-quantize llama-perplexity llama -j2 >/dev/null || exit 1
fi
mkdir -p "$W"
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# the greedy helper: prompt ids in, N greedy ids out (no sampling library, no tokenizer)
cat >"$W/greedy.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "llama.h"
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void)l; (void)t; (void)u; }
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: greedy MODEL N ID...\n"); return 2; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = 0; /* no repacking: this build's AMX kernels die with SIGILL (tilezero) */
    struct llama_model *m = llama_model_load_from_file(argv[1], mp);
    if (!m) { fprintf(stderr, "%s: llama.cpp cannot load it\n", argv[1]); return 1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512; cp.n_batch = 512; cp.n_threads = cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m)), n = atoi(argv[2]), np = argc - 3;
    llama_token *toks = malloc(sizeof(llama_token) * (size_t)(np + n));
    for (int i = 0; i < np; i++) toks[i] = atoi(argv[3 + i]);
    struct llama_batch b = llama_batch_get_one(toks, np);
    for (int k = 0; k < n; k++) {
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
        const float *lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) if (lg[v] > lg[best]) best = v;
        toks[np + k] = best;
        printf(k ? " %d" : "%d", best);
        b = llama_batch_get_one(&toks[np + k], 1);
    }
    printf("\n");
    return 0;
}
C
gcc -O2 -o "$W/greedy" "$W/greedy.c" -I"$LLAMA_SRC/include" -I"$LLAMA_SRC/ggml/include" \
    -L"$LLAMA_BUILD/bin" -lllama -Wl,-rpath,"$LLAMA_BUILD/bin" || { echo "cannot build the llama.cpp helper"; exit 1; }

# the model: trained here on this project's docs and sources (rows of 256: every K-quant
# used without fallback), held-out text = the last 5% of the same files
if [ -z "$model" ]; then
    model=$W/model
    if [ ! -f "$model/config.json" ]; then
        corpus="README.md docs/*.md src/*/*.c src/*/*.h cli/*.c"
        # shellcheck disable=SC2086
        $BIN tokenizer train --input "$(ls $corpus | paste -sd, -)" --vocab-size 1024 --output "$W/tok.model" --quiet
        # shellcheck disable=SC2086
        $BIN prepare --tokenizer "$W/tok.model" --seq-len 256 --val-fraction 0.05 --out "$W/data" $corpus >/dev/null
        cat >"$W/config.json" <<'J'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2}
J
        $BIN train --config "$W/config.json" --tokenizer "$W/tok.model" --data "$W/data/train-00000.bin" \
            --val-data "$W/data/val-00000.bin" --batch 8 --seq-len 256 --steps "$steps" --lr 2e-3 --min-lr 2e-4 \
            --warmup 20 --eval-every 1000 --ckpt-every "$steps" --out "$W/run" --overwrite --quiet >/dev/null
        cp -r "$W/run/$(cat "$W/run/latest")" "$model"
    fi
fi
tail -c 20000 docs/formats.md >"$W/heldout.txt"
prompt=$($BIN tokenize --tokenizer "$model/tokenizer.model" --bos <<<"$text" 2>/dev/null | tr '\n' ' ')
[ -n "$prompt" ] || prompt="1 2 3"
ours() { $BIN generate --model "$1" --ids "$prompt" --greedy --max-tokens "$gen" --ignore-eos --print-ids --no-stats --threads 2 2>/dev/null | tr -s ' \n' ' ' | sed 's/ $//'; }
theirs() { "$W/greedy" "$1" "$gen" $prompt 2>/dev/null | tr -s ' \n' ' ' | sed 's/ $//'; }
ppl_ours() { [ $ppl = 1 ] || return 0; $BIN perplexity --model "$1" --text "$W/heldout.txt" --threads 2 2>/dev/null | sed -n 's/^perplexity[^0-9]*\([0-9.]*\).*/\1/p'; }
ppl_theirs() { [ $ppl = 1 ] || return 0; "$LLAMA_BUILD/bin/llama-perplexity" -m "$1" -f "$W/heldout.txt" -c 256 -t 2 --no-repack 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
same_prefix() { # how many leading ids agree
    python3 -c "import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); n=0
while n < min(len(a),len(b)) and a[n]==b[n]: n+=1
print(n)" "$1" "$2"
}

echo "model: $model; prompt ids: $prompt; $gen greedy tokens"
# each runtime's own F32 run, to tell a near tie that one runtime's arithmetic tips (the other
# runtime then still follows F32) from a wrong file (both leave F32 early)
$BIN quantize "$model" "$W/ours_F32.gguf" F32 --quiet --threads 2 2>/dev/null
f32_ours=$(ours "$W/ours_F32.gguf") f32_theirs=$(theirs "$W/ours_F32.gguf")
printf '%-24s %9s %9s %9s %12s %12s\n' file "ids agree" "ours=F32" "llama=F32" "ppl (ours)" "ppl (llama)" >"$W/table.txt"
for t in F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_M Q5_K_M Q6_K; do
    f=$W/ours_$t.gguf
    $BIN quantize "$model" "$f" $t --quiet --threads 2 2>/dev/null || { fail "quantize $t"; continue; }
    a=$(ours "$f") b=$(theirs "$f")
    n=$(same_prefix "$a" "$b")
    if [ -n "$b" ] && [ "$a" = "$b" ]; then ok "ours $t: llama.cpp's greedy ids equal ours over $gen tokens"
    else fail "ours $t: llama.cpp's greedy ids equal ours ($n of $gen agree; ours: $a; llama.cpp: $b)"; fi
    printf '%-24s %9s %9s %9s %12s %12s\n' "ours_$t" "$n/$gen" "$(same_prefix "$a" "$f32_ours")" "$(same_prefix "$b" "$f32_theirs")" \
        "$(ppl_ours "$f")" "$(ppl_theirs "$f")" >>"$W/table.txt"
done
for t in Q4_K_M Q8_0 Q4_0 Q5_K_M; do
    f=$W/llama_$t.gguf
    "$LLAMA_BUILD/bin/llama-quantize" "$W/ours_F32.gguf" "$f" $t >/dev/null 2>&1 || { fail "llama-quantize $t"; continue; }
    if python3 - "$W/ours_$t.gguf" "$f" <<'PY'
import sys
from gguf import GGUFReader
a, b = (GGUFReader(p) for p in sys.argv[1:])
ta = {t.name: t for t in a.tensors}
bad = [t.name for t in b.tensors if t.name not in ta or ta[t.name].tensor_type != t.tensor_type
       or bytes(ta[t.name].data.tobytes()) != bytes(t.data.tobytes())]
sys.exit(1 if bad or len(ta) != len(b.tensors) else 0)
PY
    then ok "llama-quantize $t: every tensor's type and bytes equal ours"
    else fail "llama-quantize $t: every tensor's type and bytes equal ours"; fi
    a=$(ours "$f") b=$(theirs "$f")
    n=$(same_prefix "$a" "$b")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "llama-quantize $t: generates here with llama.cpp's greedy ids"
    else fail "llama-quantize $t: generates here with llama.cpp's greedy ids ($n of $gen agree)"; fi
    printf '%-24s %9s %9s %9s %12s %12s\n' "llama-quantize_$t" "$n/$gen" "$(same_prefix "$a" "$f32_ours")" \
        "$(same_prefix "$b" "$f32_theirs")" "$(ppl_ours "$f")" "$(ppl_theirs "$f")" >>"$W/table.txt"
done
cat "$W/table.txt"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]

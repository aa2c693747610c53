#!/usr/bin/env bash
# CLI tests of fine-tuning: prepare --format chat (bad lines reported by line,
# counted, nothing dropped silently), train --sft.  Usage: tests/cli_sft.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
T=$(mktemp -d /tmp/tl_cli_sft.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"
FIX=$(dirname "$0")/fixtures
TOK=$FIX/tokenizer/small_bpe.model

# --- prepare --format chat: good and bad lines, each bad one named with its line number
cat >"$T/chat.jsonl" <<'J'
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
{"conversations": [{"from": "human", "value": "What is a cat?"}, {"from": "gpt", "value": "A small animal."}]}
{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}
{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}
{"messages": [{"role": "user", "content": "only a question"}]}
{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "y"}]}
not json

{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
{"messages": [{"role": "user", "content": "a very long question that fills the whole sequence and more, so that no reply token fits"}, {"role": "assistant", "content": "z"}]}
J
"$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 48 --val-count 0 --out "$T/chat" "$T/chat.jsonl" \
    >"$T/prep" 2>"$T/prep.err"
rc=$?
want=(":3: messages\[0\]: role 'tool'" ":4: messages\[0\]: empty content" ":5: no assistant message"
       ":6: messages\[0\]: content is of another type" ":7: not a JSON object" ":9: messages\[1\]: a user message"
       ":10: .*no reply token within the first 49")
missing=""
for w in "${want[@]}"; do grep -q -- "$w" "$T/prep.err" || missing="$missing [$w]"; done
if [ $rc -eq 0 ] && [ -z "$missing" ] &&
    grep -q "^2 conversations .* 7 skipped, 1 malformed_json, 1 bad_role, 1 not_string, 1 empty_turn, 1 bad_order, 1 no_assistant, 1 too_long$" "$T/prep" &&
    grep -q '"kind":	"chat"' "$T/chat/manifest.json" && grep -q '"bad_role":	1' "$T/chat/manifest.json"; then
    ok "prepare --format chat: bad lines named and counted"
else
    fail "prepare --format chat (rc $rc, missing:$missing): $(cat "$T/prep" "$T/prep.err" | head -c 600)"
fi
expect_fail "prepare --strict on bad chat lines" "bad input found" \
    "$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 48 --val-count 0 --strict --out "$T/chat2" "$T/chat.jsonl"
printf 'plain text for a plain data set, long enough for a sample or two of bytes\n%.0s' 1 2 3 4 >"$T/plain.txt"
"$BIN" prepare --byte-level --seq-len 32 --val-count 0 --out "$T/plain" "$T/plain.txt" >/dev/null 2>&1
expect_fail "prepare --format chat --byte-level" "needs a --tokenizer" \
    "$BIN" prepare --format chat --byte-level --out "$T/chat3" "$T/chat.jsonl"
expect_fail "prepare --chat-template unknown" "unknown chat template 'vicuna'" \
    "$BIN" prepare --format chat --chat-template vicuna --tokenizer "$TOK" --out "$T/chat4" "$T/chat.jsonl"

# --- train --sft: from the fixture's tiny model on its conversations (TRL-checked in test_sft.c)
"$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 63 --val-count 1 --out "$T/sft" \
    "$FIX/sft/convs.jsonl" "$FIX/sft/convs.jsonl" >/dev/null 2>&1 || fail "prepare the fixture conversations"
INIT=(--init "$FIX/sft/model")
COMMON=(--tokenizer "$TOK" --data "$T/sft" --val-data "$T/sft" --sft --sequential
        --lr 1e-2 --warmup 0 --steps 4 --eval-every 2 --quiet --threads 1)
losses() { grep -o '"loss": [-0-9.e]*' "$1" | cut -d' ' -f2; }
vals() { grep -o '"val_loss": [-0-9.e]*' "$1" | cut -d' ' -f2; }
if "$BIN" train "${INIT[@]}" "${COMMON[@]}" --batch 1 --batch-tokens 126 --ckpt-every 2 --out "$T/run" >"$T/run.out" 2>&1 &&
    [ "$(losses "$T/run/log.jsonl" | wc -l)" = 4 ] && [ "$(vals "$T/run/log.jsonl" | wc -l)" = 2 ] &&
    [ -f "$T/run/step-00000004/model.safetensors" ]; then
    ok "train --sft with accumulation and validation"
else
    fail "train --sft: $(tail -c 600 "$T/run.out")"
fi
# the held-out conversation's loss (replies only) falls
if vals "$T/run/log.jsonl" | awk 'NR == 1 {a = $1} NR == 2 {b = $1} END {exit !(b < a)}'; then
    ok "train --sft lowers the held-out reply loss"
else
    fail "train --sft held-out loss: $(vals "$T/run/log.jsonl" | tr '\n' ' ')"
fi
# resume from step 2 continues bit-identically
rm -rf "$T/run2" && cp -r "$T/run" "$T/run2" && rm -rf "$T/run2/step-00000004" && ln -sfn step-00000002 "$T/run2/latest"
if "$BIN" train "${COMMON[@]}" --batch 1 --batch-tokens 126 --ckpt-every 2 --out "$T/run2" --resume >"$T/run2.out" 2>&1 &&
    cmp -s "$T/run/step-00000004/model.safetensors" "$T/run2/step-00000004/model.safetensors"; then
    ok "train --sft resume is bit-identical"
else
    fail "train --sft resume: $(tail -c 600 "$T/run2.out")"
fi
# bf16 mixed precision: bf16 products from the first step on (its first loss is not fp32's) and close to fp32
"$BIN" train "${INIT[@]}" "${COMMON[@]}" --batch 1 --batch-tokens 126 --precision bf16 --out "$T/bf" >"$T/bf.out" 2>&1
if paste <(losses "$T/run/log.jsonl") <(losses "$T/bf/log.jsonl") |
    awk 'NR == 1 && $1 == $2 {exit 1} {d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > m) m = d} END {exit !(NR == 4 && m < 0.01)}'; then
    ok "train --sft --precision bf16: bf16 from step 1, within 1% of fp32"
else
    fail "train --sft --precision bf16: $(losses "$T/bf/log.jsonl" | tr '\n' ' ') vs $(losses "$T/run/log.jsonl" | tr '\n' ' ')"
fi
expect_fail "chat data without --sft" "train on them with --sft" \
    "$BIN" train --init "$FIX/sft/model" --tokenizer "$TOK" --data "$T/sft" --steps 1 --quiet --out "$T/x1"
expect_fail "--sft on plain token data" "no loss mask" \
    "$BIN" train --preset test --data "$T/plain" --sft --steps 1 --quiet --out "$T/x2"
expect_fail "--sft with another sequence length" "must be the chat shards'" \
    "$BIN" train "${INIT[@]}" "${COMMON[@]}" --seq-len 32 --out "$T/x3"

# --- prepare --format preference and train --dpo
cat >"$T/pref.jsonl" <<'J'
{"prompt": "What is a cat?", "chosen": "A small furry animal.", "rejected": "A kind of car."}
{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": "Go away."}
{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}
{"prompt": "x", "chosen": "same", "rejected": "same"}
{"prompt": "x", "chosen": "a"}
J
"$BIN" prepare --format preference --tokenizer "$TOK" --seq-len 40 --val-count 1 --out "$T/pref" "$T/pref.jsonl" \
    >"$T/pp" 2>"$T/pp.err"
if grep -q ":4: chosen and rejected are the same reply" "$T/pp.err" && grep -q ':5: no "rejected" reply' "$T/pp.err" &&
    grep -q "^3 pairs .* 2 skipped, 1 no_assistant, 1 same_pair$" "$T/pp" && grep -q '"kind":	"preference"' "$T/pref/manifest.json"; then
    ok "prepare --format preference: bad pairs named and counted"
else
    fail "prepare --format preference: $(cat "$T/pp" "$T/pp.err" | head -c 600)"
fi
DPO=(--tokenizer "$TOK" --data "$T/pref" --val-data "$T/pref" --dpo --beta 0.1 --batch 1 --batch-tokens 80 --lr 1e-2
     --warmup 0 --steps 4 --eval-every 2 --ckpt-every 2 --sequential --quiet --threads 1)
if "$BIN" train "${INIT[@]}" "${DPO[@]}" --out "$T/dpo" >"$T/dpo.out" 2>&1 && [ -f "$T/dpo/dpo_reference.bin" ] &&
    [ "$(grep -c '"rewards/accuracies"' "$T/dpo/log.jsonl")" = 4 ] && grep -q '"val_rewards/accuracies"' "$T/dpo/log.jsonl" &&
    head -1 "$T/dpo/log.jsonl" | grep -q '"loss": 0.693147'; then
    ok "train --dpo: loss log(2) at the reference, rewards logged"
else
    fail "train --dpo: $(tail -c 600 "$T/dpo.out")"
fi
rm -rf "$T/dpo2" && cp -r "$T/dpo" "$T/dpo2" && rm -rf "$T/dpo2/step-00000004" && ln -sfn step-00000002 "$T/dpo2/latest"
if "$BIN" train "${DPO[@]}" --out "$T/dpo2" --resume >"$T/dpo2.out" 2>&1 &&
    cmp -s "$T/dpo/step-00000004/model.safetensors" "$T/dpo2/step-00000004/model.safetensors"; then
    ok "train --dpo resume (cached reference) is bit-identical"
else
    fail "train --dpo resume: $(tail -c 600 "$T/dpo2.out")"
fi
rm -f "$T/dpo2/dpo_reference.bin"
expect_fail "train --dpo resume without the reference" "dpo_reference.bin" "$BIN" train "${DPO[@]}" --out "$T/dpo2" --resume
expect_fail "preference pairs without --dpo" "with --dpo" \
    "$BIN" train "${INIT[@]}" --tokenizer "$TOK" --data "$T/pref" --steps 1 --quiet --out "$T/x4"

# --- the scaled-down chat recipe (docs/finetuning.md): synthetic conversations from the shared corpus,
# SFT of a small random model lowers the held-out reply loss, DPO against it raises the held-out reward
# accuracy above chance, and the result chats
CORPUS=${TL_SHARED:-$(dirname "$0")/../../shared}/corpora/tinyshakespeare.txt
if [ -f "$CORPUS" ] && bash "$(dirname "$0")/../scripts/make_chat_data.sh" "$CORPUS" "$T/demo" 600 64 >/dev/null; then
    printf '{"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}' >"$T/demo/model.json"
    "$BIN" prepare --format chat --tokenizer "$TOK" --seq-len 72 --val-count 64 --out "$T/demo/chat" \
        "$T/demo/chat_val.jsonl" "$T/demo/chat.jsonl" >/dev/null 2>&1
    "$BIN" prepare --format preference --tokenizer "$TOK" --seq-len 72 --val-count 64 --out "$T/demo/pairs" \
        "$T/demo/pairs_val.jsonl" "$T/demo/pairs.jsonl" >/dev/null 2>&1
    "$BIN" train --config "$T/demo/model.json" --tokenizer "$TOK" --data "$T/demo/chat" --val-data "$T/demo/chat" --sft \
        --batch 8 --steps 120 --lr 1e-2 --warmup 6 --eval-every 10 --eval-batches 8 --quiet --out "$T/demo/sft" >"$T/demo/sft.out" 2>&1
    v=$(vals "$T/demo/sft/log.jsonl" | tr '\n' ' ')
    if echo "$v" | awk 'NF == 12 && $12 < 0.9 * $1 {ok = 1} END {exit !ok}'; then
        ok "chat recipe: SFT lowers the held-out reply loss ($(echo "$v" | awk '{print $1 " at step 10 -> " $NF}'))"
    else
        fail "chat recipe SFT: held-out losses $v $(tail -c 300 "$T/demo/sft.out")"
    fi
    "$BIN" train --init "$T/demo/sft/step-00000120" --tokenizer "$TOK" --data "$T/demo/pairs" --val-data "$T/demo/pairs" \
        --dpo --beta 0.1 --batch 4 --steps 15 --lr 1e-3 --warmup 3 --eval-every 15 --eval-batches 16 --quiet \
        --out "$T/demo/dpo" >"$T/demo/dpo.out" 2>&1
    acc=$(grep -o '"val_rewards/accuracies": [0-9.]*' "$T/demo/dpo/log.jsonl" | tail -1 | cut -d' ' -f2)
    if awk -v a="${acc:-0}" 'BEGIN {exit !(a > 0.75)}'; then
        ok "chat recipe: DPO raises the held-out reward accuracy above chance ($acc)"
    else
        fail "chat recipe DPO: held-out reward accuracy ${acc:-none} $(tail -c 300 "$T/demo/dpo.out")"
    fi
    if printf 'Say it again: Speak, speak.\n' | "$BIN" chat --model "$T/demo/dpo/step-00000015" --greedy --max-tokens 24 \
        >"$T/demo/chat.out" 2>"$T/demo/chat.err" && [ -s "$T/demo/chat.out" ]; then
        ok "chat recipe: the checkpoint chats ($(head -c 60 "$T/demo/chat.out" | tr '\n' ' '))"
    else
        fail "chat recipe chat: $(tail -c 300 "$T/demo/chat.err")"
    fi
else
    fail "chat recipe: no corpus at $CORPUS (TL_SHARED)"
fi

# --- MPI: 2 ranks of 1 sequence give the loss of 1 rank with 2 (the mean over the replies' tokens)
if command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
    export OMPI_MCA_mca_base_component_disable_dlclose=1
    "$BIN" train "${INIT[@]}" "${COMMON[@]}" --batch 2 --out "$T/one" >/dev/null 2>&1
    for z in 0 2; do
        mpirun --allow-run-as-root --oversubscribe -np 2 "$BIN" train "${INIT[@]}" "${COMMON[@]}" --batch 1 --batch-tokens 126 \
            --zero $z --out "$T/two$z" >"$T/two$z.out" 2>&1
        if paste <(losses "$T/one/log.jsonl") <(losses "$T/two$z/log.jsonl") |
            awk 'NF != 2 {bad = 1} NF == 2 {d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4) bad = 1; n++} END {exit bad || n != 4}'; then
            ok "train --sft on 2 ranks (zero $z) = 1 rank"
        else
            fail "train --sft on 2 ranks (zero $z): $(paste <(losses "$T/one/log.jsonl") <(losses "$T/two$z/log.jsonl") | tr '\n' ' ') $(tail -c 300 "$T/two$z.out")"
        fi
    done
    # DPO: the reference computed by both ranks, the pairs' losses and rewards summed over them
    DPO2=(--tokenizer "$TOK" --data "$T/pref" --val-data "$T/pref" --dpo --lr 1e-2 --warmup 0 --steps 3
          --eval-every 3 --sequential --quiet --threads 1)
    "$BIN" train "${INIT[@]}" "${DPO2[@]}" --batch 2 --out "$T/done" >/dev/null 2>&1
    mpirun --allow-run-as-root --oversubscribe -np 2 "$BIN" train "${INIT[@]}" "${DPO2[@]}" --batch 1 \
        --batch-tokens 80 --out "$T/dtwo" >"$T/dtwo.out" 2>&1
    if paste <(losses "$T/done/log.jsonl") <(losses "$T/dtwo/log.jsonl") |
        awk 'NF != 2 {bad = 1} NF == 2 {d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4) bad = 1; n++} END {exit bad || n != 3}' &&
        cmp -s "$T/done/dpo_reference.bin" "$T/dtwo/dpo_reference.bin"; then
        ok "train --dpo on 2 ranks = 1 rank"
    else
        fail "train --dpo on 2 ranks: $(paste <(losses "$T/done/log.jsonl") <(losses "$T/dtwo/log.jsonl") | tr '\n' ' ') $(tail -c 300 "$T/dtwo.out")"
    fi
fi

finish

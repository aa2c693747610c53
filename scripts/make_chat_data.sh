#!/usr/bin/env bash
# Makes a small synthetic chat data set from a text corpus, for the scaled-down
# chat recipe (docs/finetuning.md, tests/cli_sft.sh): each short plain line of
# the corpus becomes a conversation where the user asks the assistant to say it
# again, and a preference pair whose chosen reply is the line and whose rejected
# reply is an unhelpful refusal.  The first N_VAL lines'
# conversations and pairs go to the held-out files.
# Usage: scripts/make_chat_data.sh CORPUS OUT_DIR [N [N_VAL]]
#   writes OUT_DIR/{chat,chat_val,pairs,pairs_val}.jsonl (default N 600, N_VAL 64)
set -eu
corpus=$1 out=$2 n=${3:-600} nval=${4:-64}
mkdir -p "$out"
# short lines of letters, spaces and plain punctuation only: nothing to escape in JSON
grep -E "^[A-Za-z][A-Za-z ,.;:!?'-]{11,38}$" "$corpus" | awk '!seen[$0]++' | head -n $((n + nval + 1)) |
    awk -v out="$out" -v nval="$nval" '
    { line[NR] = $0 }
    END {
        for (i = 1; i < NR; i++) {
            sfx = i <= nval ? "_val" : ""
            q = "Say it again: " line[i]
            printf "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", \"content\": \"%s\"}]}\n",
                q, line[i] > (out "/chat" sfx ".jsonl")
            printf "{\"prompt\": \"%s\", \"chosen\": \"%s\", \"rejected\": \"I would rather not say that.\"}\n", q, line[i] > (out "/pairs" sfx ".jsonl")
        }
    }'
wc -l "$out"/*.jsonl | sed 's/^/make_chat_data: /'

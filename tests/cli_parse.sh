#!/usr/bin/env bash
# CLI tests of the option tables (cli/cli_util.c: cli_parse): every option of
# every command is accepted, named in its --help, and a bad value, a missing
# value or an unknown option is refused (exit 2) naming it.
# Usage: tests/cli_parse.sh path/to/tinyllama
set -u
BIN=${1:-./build/tinyllama}
T=$(mktemp -d /tmp/tl_cli_parse.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.sh"

# known CMD VALUE_OPTS FLAG_OPTS: each value option without its value says it
# needs one (so it is known); each flag followed by an unknown option gets as
# far as that one; --help names them all.  CMD may be two words.
known() {
    local cmd=$1 vals=$2 flags=$3 o bad=0 missing=""
    # shellcheck disable=SC2086
    "$BIN" $cmd --help >"$T/help" 2>&1 || bad=1
    for o in $vals $flags; do
        grep -qE -- "(^|[^a-z-])$o([^a-z-]|\$)" "$T/help" || missing="$missing $o"
    done
    [ $bad = 0 ] && [ -z "$missing" ] && ok "$cmd --help names every option" ||
        fail "$cmd --help names every option (missing:$missing)"
    missing=""
    for o in $vals; do
        # shellcheck disable=SC2086
        "$BIN" $cmd $o >/dev/null 2>"$T/err"
        [ $? = 2 ] && grep -q -- "option $o needs a value" "$T/err" || missing="$missing $o"
    done
    for o in $flags; do
        # shellcheck disable=SC2086
        "$BIN" $cmd $o --no-such-option >/dev/null 2>"$T/err"
        [ $? = 2 ] && grep -q -- "unknown option '--no-such-option'" "$T/err" || missing="$missing $o"
    done
    [ -z "$missing" ] && ok "$cmd takes each of its options" || fail "$cmd takes each of its options (not:$missing)"
    # shellcheck disable=SC2086
    expect_fail "$cmd refuses an unknown option" "unknown option '--bogus'" "$BIN" $cmd --bogus
}

GEN_VALS="--model --kernel --max-tokens --ctx --threads --seed --temperature --top-k --top-p --min-p
    --repetition-penalty --stop"
GEN_FLAGS="--greedy --ignore-eos --stats --no-stats"
known bench "--device --preset --config --batch --seq-len --steps --threads --warmup" ""
known convert "--to-hf --to-gguf --out" ""
known plot "--out" ""
known info "--preset --config --zero-memory --gguf" "--cpu --full"
known tokenize "--tokenizer --model --threads" "--lines --bos --eos --parse-special --pieces"
known detokenize "--tokenizer --model" "--lines"
known "tokenizer info" "--tokenizer --model" ""
known "tokenizer train" "--input --vocab-size --output --character-coverage --max-piece-length --max-sentences" \
    "--no-byte-fallback --no-split-digits --no-dummy-prefix --quiet"
known prepare "--tokenizer --out --text-field --chat-template --exclude --exclude-meta --format --txt-docs --split-by --seq-len
    --shard-samples --threads --val-count --max-doc-bytes --segment-bytes --val-fraction" \
    "--byte-level --bos --no-eos --strict --allow-empty --no-word-cache --quiet"
known generate "$GEN_VALS --prompt-file --ids" "$GEN_FLAGS --no-bos --print-ids --echo"
known chat "$GEN_VALS --system --chat-template" "$GEN_FLAGS"
known perplexity "--model --text --kernel --shards --window --stride --max-tokens --max-samples --threads" "--no-bos"
known eval "--model --task --data --labels --tokenizer --tokenization --backend --json --limit --batch-tokens --batch
    --samples-per-task --temperature --top-p --seed --pass-at
    --threads" "--samples --quiet"

# --- values out of range or of the wrong kind, named with the option
expect_fail "bench --batch 0" "--batch expects an integer in \[1, 65536\], got '0'" "$BIN" bench --batch 0
expect_fail "bench --gpu needs the CUDA engine" "unknown option '--gpu'" "$BIN" bench --gpu 1
expect_fail "tokenize --threads 0" "--threads expects an integer in \[1, 1024\], got '0'" "$BIN" tokenize \
    --tokenizer x --threads 0
expect_fail "tokenizer train --character-coverage 2" "--character-coverage must be in \(0, 1\]" "$BIN" tokenizer \
    train --character-coverage 2
expect_fail "tokenizer train --max-piece-length 65" "--max-piece-length expects an integer in \[1, 64\]" "$BIN" \
    tokenizer train --max-piece-length 65
expect_fail "prepare --exclude without =" "--exclude expects KEY=VALUE, got 'foo'" "$BIN" prepare --exclude foo
expect_fail "prepare --exclude-meta without =" "--exclude-meta expects KEY=VALUE, got '=x'" "$BIN" prepare \
    --exclude-meta =x
expect_fail "prepare --val-fraction 1" "--val-fraction must be in \[0, 1\)" "$BIN" prepare --val-fraction 1
expect_fail "prepare --split-by" "--split-by must be documents or samples" "$BIN" prepare --split-by lines
expect_fail "prepare --format" "--format must be jsonl, txt, chat or preference" "$BIN" prepare --format csv
expect_fail "prepare --txt-docs" "--txt-docs must be file or paragraphs" "$BIN" prepare --txt-docs lines
expect_fail "prepare: -x is an unknown option, not an input" "unknown option '-x'" "$BIN" prepare --byte-level \
    --out "$T/p" -x
expect_fail "generate --seed x" "--seed expects a non-negative integer, got 'x'" "$BIN" generate --seed x
expect_fail "generate --stop ''" "--stop needs a non-empty string" "$BIN" generate --stop ""
expect_fail "generate --top-k -1" "--top-k expects an integer in \[0, 1073741824\], got '-1'" "$BIN" generate \
    --top-k -1
expect_fail "generate --temperature x" "--temperature expects a number, got 'x'" "$BIN" generate --temperature x
expect_fail "generate: two prompts" "more than one prompt argument" "$BIN" generate --model m a b
expect_fail "generate: a flag takes no value" "unknown option '--greedy=1'" "$BIN" generate --greedy=1
expect_fail "chat: no prompt argument" "unknown option 'hi'" "$BIN" chat --model m hi
expect_fail "info --cpu with another option" "--cpu takes no other option" "$BIN" info --cpu --full

finish

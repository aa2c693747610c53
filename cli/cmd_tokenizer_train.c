/* cmd_tokenizer_train.c - `tinyllama tokenizer train`: learn a BPE vocabulary
 * (Llama-style settings) and write a SentencePiece tokenizer.model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static void help(void) {
    printf("usage: tinyllama tokenizer train --input FILE[,FILE...] --vocab-size N --output X.model\n"
           "                                 [--character-coverage F] [--max-piece-length N]\n"
           "                                 [--no-byte-fallback] [--no-split-digits]\n"
           "                                 [--no-dummy-prefix] [--max-sentences N] [--quiet]\n\n"
           "Learns a BPE vocabulary from text files (one sentence per line) and writes a\n"
           "standard SentencePiece model that sentencepiece itself can load.  Defaults are\n"
           "Llama's: byte fallback, split digits, dummy prefix, whitespace-only pieces\n"
           "allowed, identity normalization, no extra-whitespace removal.\n\n"
           "  --input FILES            comma-separated text files (or repeat --input)\n"
           "  --vocab-size N           total pieces, including <unk> <s> </s> and 256 byte pieces\n"
           "  --output FILE            the tokenizer.model to write (atomically)\n"
           "  --character-coverage F   share of character occurrences kept as pieces (0.9995)\n"
           "  --max-piece-length N     longest piece in characters (16)\n"
           "  --max-sentences N        use only the first N lines (default all)\n"
           "  --quiet                  no progress output\n");
}

static void on_progress(void *user, const char *msg) {
    (void)user;
    fprintf(stderr, "tokenizer train: %s\n", msg);
}

int cmd_tokenizer_train(int argc, char **argv) {
    tl_bpe_train_opts o;
    tl_bpe_train_default_opts(&o);
    o.vocab_size = 0;
    const char *inputs[256];
    size_t n_inputs = 0;
    const char *output = NULL, *val = NULL;
    char *input_copies[256];
    size_t n_copies = 0;
    int bad = 0, quiet = 0, rc = 2;
    for (int i = 1; i < argc; i++) {
        long v;
        double d;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            rc = 0;
            goto out;
        } else if (cli_opt(argc, argv, &i, "--input", &val, &bad)) {
            if (bad) goto out;
            char *copy = strdup(val);
            if (!copy || n_copies == 256) {
                free(copy);
                cli_error("tokenizer train", "too many inputs");
                goto out;
            }
            input_copies[n_copies++] = copy;
            for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
                if (n_inputs == 256) {
                    cli_error("tokenizer train", "too many input files (256 max)");
                    goto out;
                }
                inputs[n_inputs++] = tok;
            }
        } else if (cli_opt(argc, argv, &i, "--vocab-size", &val, &bad)) {
            if (bad || cli_parse_int("tokenizer train", "--vocab-size", val, 1, 1 << 22, &v)) goto out;
            o.vocab_size = (int)v;
        } else if (cli_opt(argc, argv, &i, "--output", &output, &bad)) {
            if (bad) goto out;
        } else if (cli_opt(argc, argv, &i, "--character-coverage", &val, &bad)) {
            if (bad || cli_parse_double("tokenizer train", "--character-coverage", val, &d)) goto out;
            if (d <= 0 || d > 1) {
                cli_error("tokenizer train", "--character-coverage must be in (0, 1]");
                goto out;
            }
            o.character_coverage = d;
        } else if (cli_opt(argc, argv, &i, "--max-piece-length", &val, &bad)) {
            if (bad || cli_parse_int("tokenizer train", "--max-piece-length", val, 1, 64, &v)) goto out;
            o.max_piece_length = (int)v;
        } else if (cli_opt(argc, argv, &i, "--max-sentences", &val, &bad)) {
            if (bad || cli_parse_int("tokenizer train", "--max-sentences", val, 1, 1L << 40, &v)) goto out;
            o.max_sentences = (size_t)v;
        } else if (!strcmp(argv[i], "--no-byte-fallback")) {
            o.byte_fallback = 0;
        } else if (!strcmp(argv[i], "--no-split-digits")) {
            o.split_digits = 0;
        } else if (!strcmp(argv[i], "--no-dummy-prefix")) {
            o.add_dummy_prefix = 0;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else {
            cli_error("tokenizer train", "unknown option '%s' (see --help)", argv[i]);
            goto out;
        }
    }
    if (!n_inputs || !output || !o.vocab_size) {
        cli_error("tokenizer train", "--input, --vocab-size and --output are required (see --help)");
        goto out;
    }
    if (!quiet) o.progress = on_progress;
    tl_error err;
    if (tl_bpe_train(inputs, n_inputs, &o, output, &err)) {
        cli_error("tokenizer train", "%s", err.msg);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n_copies; i++) free(input_copies[i]);
    return rc;
}

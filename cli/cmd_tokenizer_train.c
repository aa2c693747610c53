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

/* The --input files: each value a comma-separated list, split into copies. */
typedef struct {
    const char *files[256];
    size_t n;
    char *copies[256];
    size_t n_copies;
} input_list;

static int add_inputs(const char *cmd, const char *val, void *dst) {
    input_list *in = dst;
    char *copy = strdup(val);
    if (!copy || in->n_copies == 256) {
        free(copy);
        cli_error(cmd, "too many inputs");
        return -1;
    }
    in->copies[in->n_copies++] = copy;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        if (in->n == 256) {
            cli_error(cmd, "too many input files (256 max)");
            return -1;
        }
        in->files[in->n++] = tok;
    }
    return 0;
}

static int parse_coverage(const char *cmd, const char *val, void *dst) {
    double d;
    if (cli_parse_double(cmd, "--character-coverage", val, &d)) return -1;
    if (d <= 0 || d > 1) {
        cli_error(cmd, "--character-coverage must be in (0, 1]");
        return -1;
    }
    *(double *)dst = d;
    return 0;
}

int cmd_tokenizer_train(int argc, char **argv) {
    tl_bpe_train_opts o;
    tl_bpe_train_default_opts(&o);
    input_list in = {.n = 0};
    const char *output = NULL;
    long vocab = 0, max_piece = o.max_piece_length, max_sentences = (long)o.max_sentences;
    int no_byte_fallback = 0, no_split_digits = 0, no_dummy_prefix = 0, quiet = 0, rc = 2;
    const cli_option opts[] = {
        CLI_OPT_CALL("--input", add_inputs, &in, 0),
        CLI_OPT_INT("--vocab-size", &vocab, 1, 1 << 22),
        CLI_OPT_STR("--output", &output),
        CLI_OPT_CALL("--character-coverage", parse_coverage, &o.character_coverage, 0),
        CLI_OPT_INT("--max-piece-length", &max_piece, 1, 64),
        CLI_OPT_INT("--max-sentences", &max_sentences, 1, 1L << 40),
        CLI_OPT_FLAG("--no-byte-fallback", &no_byte_fallback),
        CLI_OPT_FLAG("--no-split-digits", &no_split_digits),
        CLI_OPT_FLAG("--no-dummy-prefix", &no_dummy_prefix),
        CLI_OPT_FLAG("--quiet", &quiet),
    };
    int prc = cli_parse("tokenizer train", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        rc = 0;
        goto out;
    }
    if (prc) goto out;
    o.vocab_size = (int)vocab;
    o.max_piece_length = (int)max_piece;
    o.max_sentences = (size_t)max_sentences;
    if (no_byte_fallback) o.byte_fallback = 0;
    if (no_split_digits) o.split_digits = 0;
    if (no_dummy_prefix) o.add_dummy_prefix = 0;
    const char *const *inputs = in.files;
    const size_t n_inputs = in.n;
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
    for (size_t i = 0; i < in.n_copies; i++) free(in.copies[i]);
    return rc;
}

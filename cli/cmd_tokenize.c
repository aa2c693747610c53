/* cmd_tokenize.c - `tinyllama tokenize`, `tinyllama detokenize` and
 * `tinyllama tokenizer info|train`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

/* Reads all of stdin, NUL-terminated (detokenize's strtol stops at the NUL
 * instead of running into the unread rest of the buffer). */
static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, stdin);
        n += r;
        if (r == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Prints ids space-separated plus a newline (hand-formatted: printf per id is
 * a large share of the run time of `tokenize --lines`). */
static void print_ids(FILE *f, const int *ids, size_t n) {
    char buf[4096];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o > sizeof buf - 16) {
            fwrite(buf, 1, o, f);
            o = 0;
        }
        if (i) buf[o++] = ' ';
        long v = ids[i];
        if (v < 0) {
            buf[o++] = '-';
            v = -v;
        }
        char tmp[24];
        int k = 0;
        do {
            tmp[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (k) buf[o++] = tmp[--k];
    }
    buf[o++] = '\n';
    fwrite(buf, 1, o, f);
}

/* --model FILE: the old name of --tokenizer FILE here (deprecated, still
 * accepted, with a note on stderr). */
static int deprecated_model(const char *cmd, const char *val, void *dst) {
    fprintf(stderr, "tinyllama %s: --model is deprecated here, use --tokenizer\n", cmd);
    *(const char **)dst = val;
    return 0;
}
#define TOKENIZER_OPTS(path) CLI_OPT_STR("--tokenizer", path), CLI_OPT_CALL("--model", deprecated_model, path, 0)

static void tokenize_help(void) {
    printf("usage: tinyllama tokenize --tokenizer FILE [--lines] [--bos] [--eos] [--parse-special]\n"
           "                          [--pieces] [--threads N]\n\n"
           "Reads text on stdin and prints token ids (space-separated).\n\n"
           "  --tokenizer FILE  tokenizer.model (SentencePiece) or tokenizer.json (HF)\n"
           "                    (--model FILE: the old name, deprecated)\n"
           "  --lines           encode each input line separately (without its newline)\n"
           "                    and print one line of ids per input line, like spm_encode\n"
           "  --bos, --eos      add the BOS / EOS id to each sequence\n"
           "  --parse-special   special pieces written in the text (\"<s>\", \"</s>\", \"<unk>\")\n"
           "                    become their ids, as HF transformers does (off by default, as\n"
           "                    in SentencePiece)\n"
           "  --pieces          print pieces instead of ids\n"
           "  --threads N       threads for --lines (default: all)\n");
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    int lines = 0, bos = 0, eos = 0, special = 0, pieces = 0;
    long nthreads = 0;
    const cli_option opts[] = {
        TOKENIZER_OPTS(&model),
        CLI_OPT_INT("--threads", &nthreads, 1, 1024),
        CLI_OPT_FLAG("--lines", &lines),
        CLI_OPT_FLAG("--bos", &bos),
        CLI_OPT_FLAG("--eos", &eos),
        CLI_OPT_FLAG("--parse-special", &special),
        CLI_OPT_FLAG("--pieces", &pieces),
    };
    int prc = cli_parse("tokenize", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        tokenize_help();
        return 0;
    }
    if (prc) return prc;
    if (!model) {
        cli_error("tokenize", "--tokenizer is required (see --help)");
        return 2;
    }
    const int flags = (bos ? TL_ENC_BOS : 0) | (eos ? TL_ENC_EOS : 0) | (special ? TL_ENC_PARSE_SPECIAL : 0);
    tl_error err;
    tl_tokenizer *t = tl_tokenizer_load(model, &err);
    if (!t) {
        cli_error("tokenize", "%s", err.msg);
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    if (!text) {
        cli_error("tokenize", "cannot read stdin: %s", strerror(errno));
        tl_tokenizer_free(t);
        return 1;
    }
    int rc = 0;
    size_t count = 1;
    const char **texts = NULL;
    size_t *lens = NULL;
    if (lines) {
        count = 0;
        for (size_t i = 0; i < len; i++)
            if (text[i] == '\n') count++;
        if (len && text[len - 1] != '\n') count++;
    }
    texts = malloc((count ? count : 1) * sizeof *texts);
    lens = malloc((count ? count : 1) * sizeof *lens);
    int **ids = calloc(count ? count : 1, sizeof *ids);
    size_t *ns = calloc(count ? count : 1, sizeof *ns);
    if (!texts || !lens || !ids || !ns) {
        cli_error("tokenize", "out of memory");
        rc = 1;
        goto done;
    }
    if (lines) {
        size_t k = 0, start = 0;
        for (size_t i = 0; i <= len && k < count; i++) {
            if (i == len || text[i] == '\n') {
                if (i == len && i == start) break;
                texts[k] = text + start;
                lens[k] = i - start;
                k++;
                start = i + 1;
            }
        }
    } else {
        texts[0] = text;
        lens[0] = len;
    }
    if (tl_tokenizer_encode_batch(t, texts, lens, count, flags, (int)nthreads, ids, ns, &err)) {
        cli_error("tokenize", "%s", err.msg);
        rc = 1;
        goto done;
    }
    for (size_t k = 0; k < count; k++) {
        if (pieces) {
            for (size_t i = 0; i < ns[k]; i++)
                printf(i ? " %s" : "%s", tl_tokenizer_piece(t, ids[k][i]));
            putchar('\n');
        } else {
            print_ids(stdout, ids[k], ns[k]);
        }
        free(ids[k]);
    }
done:
    free(texts);
    free(lens);
    free(ids);
    free(ns);
    free(text);
    tl_tokenizer_free(t);
    if (fflush(stdout) != 0) return 1;
    return rc;
}

static void detokenize_help(void) {
    printf("usage: tinyllama detokenize --tokenizer FILE [--lines]\n\n"
           "Reads token ids (whitespace-separated integers) on stdin and prints the text.\n\n"
           "  --tokenizer FILE  tokenizer.model or tokenizer.json (--model FILE: the old\n"
           "                    name, deprecated)\n"
           "  --lines           each input line is one sequence; print one text line per line\n"
           "                    (default: all ids form one sequence, printed as is)\n");
}

static int decode_and_print(const tl_tokenizer *t, const int *ids, size_t n, int newline) {
    char *out;
    size_t olen;
    tl_error err;
    if (tl_tokenizer_decode(t, ids, n, &out, &olen, &err)) {
        cli_error("detokenize", "%s", err.msg);
        return 1;
    }
    fwrite(out, 1, olen, stdout);
    if (newline) putchar('\n');
    free(out);
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int lines = 0;
    const cli_option opts[] = {
        TOKENIZER_OPTS(&model),
        CLI_OPT_FLAG("--lines", &lines),
    };
    int prc = cli_parse("detokenize", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        detokenize_help();
        return 0;
    }
    if (prc) return prc;
    if (!model) {
        cli_error("detokenize", "--tokenizer is required (see --help)");
        return 2;
    }
    tl_error err;
    tl_tokenizer *t = tl_tokenizer_load(model, &err);
    if (!t) {
        cli_error("detokenize", "%s", err.msg);
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    if (!text) {
        cli_error("detokenize", "cannot read stdin");
        tl_tokenizer_free(t);
        return 1;
    }
    int rc = 0;
    size_t cap = 1024, n = 0;
    int *ids = malloc(cap * sizeof *ids);
    size_t i = 0;
    while (ids && i <= len && rc == 0) {
        if (i == len || text[i] == '\n') {
            if (lines && !(i == len && (len == 0 || text[len - 1] == '\n'))) {
                rc = decode_and_print(t, ids, n, 1);
                n = 0;
            }
            i++;
            continue;
        }
        if (text[i] == ' ' || text[i] == '\t' || text[i] == '\r') {
            i++;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(text + i, &end, 10);
        if (end == text + i || errno || v < 0 || v > 0x7fffffff ||
            (end < text + len && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) {
            cli_error("detokenize", "bad id at byte %zu of the input", i);
            rc = 2;
            break;
        }
        if (n == cap) {
            int *ni = realloc(ids, cap * 2 * sizeof *ids);
            if (!ni) break;
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int)v;
        i = (size_t)(end - text);
    }
    if (!ids) {
        cli_error("detokenize", "out of memory");
        rc = 1;
    } else if (!lines && rc == 0) {
        rc = decode_and_print(t, ids, n, 0);
    }
    free(ids);
    free(text);
    tl_tokenizer_free(t);
    if (fflush(stdout) != 0) return 1;
    return rc;
}

static void tokenizer_help(void) {
    printf("usage: tinyllama tokenizer info --tokenizer FILE\n"
           "       tinyllama tokenizer train --input FILES --vocab-size N --output X.model [...]\n\n"
           "  info    vocabulary size, special ids, settings and identity hash\n"
           "  train   learn a BPE vocabulary (see `tinyllama tokenizer train --help`)\n");
}

static int tokenizer_info(int argc, char **argv) {
    const char *model = NULL;
    const cli_option opts[] = {TOKENIZER_OPTS(&model)};
    int prc = cli_parse("tokenizer info", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        printf("usage: tinyllama tokenizer info --tokenizer FILE\n\n"
               "Prints vocabulary size, special ids, normalizer and trainer settings\n"
               "and the identity hash (FNV-1a 64 of the file).  --model FILE is the\n"
               "option's old name (deprecated).\n");
        return 0;
    }
    if (prc) return prc;
    if (!model) {
        cli_error("tokenizer info", "--tokenizer is required");
        return 2;
    }
    tl_error err;
    tl_tokenizer *t = tl_tokenizer_load(model, &err);
    if (!t) {
        cli_error("tokenizer info", "%s", err.msg);
        return 1;
    }
    tl_tokenizer_info in;
    tl_tokenizer_get_info(t, &in);
    printf("file:                     %s\n", model);
    printf("format:                   %s\n", in.format);
    printf("model type:               BPE\n");
    printf("vocab size:               %d\n", tl_tokenizer_vocab_size(t));
    int ids[4] = {tl_tokenizer_unk_id(t), tl_tokenizer_bos_id(t), tl_tokenizer_eos_id(t),
                  tl_tokenizer_pad_id(t)};
    const char *names[4] = {"unk", "bos", "eos", "pad"};
    for (int k = 0; k < 4; k++) {
        if (ids[k] >= 0)
            printf("%s id:                   %d %s\n", names[k], ids[k], tl_tokenizer_piece(t, ids[k]));
        else
            printf("%s id:                   (none)\n", names[k]);
    }
    printf("control pieces:           %d\n", in.n_control);
    printf("user-defined pieces:      %d\n", in.n_user_defined);
    printf("byte pieces:              %d\n", in.n_byte);
    printf("unused pieces:            %d\n", in.n_unused);
    printf("byte fallback:            %s\n", in.byte_fallback ? "yes" : "no");
    printf("split digits:             %s\n", in.split_digits ? "yes" : "no");
    printf("normalizer:               %s\n", in.normalizer_name[0] ? in.normalizer_name : "(unnamed)");
    printf("add dummy prefix:         %s\n", in.add_dummy_prefix ? "yes" : "no");
    printf("remove extra whitespaces: %s\n", in.remove_extra_whitespaces ? "yes" : "no");
    printf("escape whitespaces:       %s\n", in.escape_whitespaces ? "yes" : "no");
    printf("identity (fnv1a64):       %s\n", tl_tokenizer_hash_hex(t));
    tl_tokenizer_free(t);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        tokenizer_help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "info")) return tokenizer_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return cmd_tokenizer_train(argc - 1, argv + 1);
    cli_error("tokenizer", "unknown subcommand '%s' (info, train)", argv[1]);
    return 2;
}

/* cmd_prepare.c - `tinyllama prepare`: text files -> packed token shards.
 * Byte-level vocabulary: id = byte + 3 (ids 0..2 are unk/bos/eos, matching the
 * layout of Llama's byte-fallback pieces <0x00>..<0xFF> at 3..258); EOS (2)
 * ends every document.  Each input file is one document. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "data.h"

#define BYTE_VOCAB 259
#define BYTE_EOS 2

static void help(void) {
    printf("usage: tinyllama prepare --byte-level --out DIR [options] FILE...\n\n"
           "Packs text files into token shards for `tinyllama train` (format: docs/formats.md).\n"
           "Writes DIR/train-NNNNN.bin and, with a validation split, DIR/val-NNNNN.bin.\n\n"
           "  --byte-level         byte vocabulary of 259 ids (byte + 3; 0 unk, 1 bos, 2 eos)\n"
           "  --out DIR            output directory (created)\n"
           "  --seq-len N          tokens per training sequence; samples hold N+1 (default 256)\n"
           "  --val-fraction X     fraction of samples held out for validation (default 0.05)\n"
           "  --shard-samples N    samples per shard file (default 65536)\n");
}

typedef struct {
    int *ids;
    size_t n, cap;
} idvec;

static int push(idvec *v, int id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 1 << 16;
        int *p = realloc(v->ids, cap * sizeof *p);
        if (!p) return -1;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

static int write_shards(const char *dir, const char *prefix, const int *ids, size_t n_samples, int seq_len,
                        long per_shard) {
    tl_error err;
    for (size_t s0 = 0, k = 0; s0 < n_samples; s0 += (size_t)per_shard, k++) {
        size_t cnt = n_samples - s0 < (size_t)per_shard ? n_samples - s0 : (size_t)per_shard;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s-%05zu.bin", dir, prefix, k);
        tl_shard_writer w;
        if (tl_shard_writer_open(&w, path, seq_len, BYTE_VOCAB, &err) ||
            tl_shard_writer_add(&w, ids + s0 * (size_t)(seq_len + 1), cnt * (size_t)(seq_len + 1), &err) ||
            tl_shard_writer_close(&w, NULL, &err)) {
            if (w.f) tl_shard_writer_abort(&w);
            cli_error("prepare", "%s", err.msg);
            return -1;
        }
        printf("wrote %s (%zu samples)\n", path, cnt);
    }
    return 0;
}

int cmd_prepare(int argc, char **argv) {
    const char *out = NULL;
    long seq_len = 256, per_shard = 65536;
    double val_fraction = 0.05;
    int byte_level = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    int n_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            free(files);
            return 0;
        } else if (!strcmp(argv[i], "--byte-level")) {
            byte_level = 1;
        } else if (cli_opt(argc, argv, &i, "--out", &v, &bad)) {
            if (bad) goto usage;
            out = v;
        } else if (cli_opt(argc, argv, &i, "--seq-len", &v, &bad)) {
            if (bad || cli_parse_int("prepare", "--seq-len", v, 1, 1 << 20, &seq_len)) goto usage;
        } else if (cli_opt(argc, argv, &i, "--shard-samples", &v, &bad)) {
            if (bad || cli_parse_int("prepare", "--shard-samples", v, 1, 1L << 40, &per_shard)) goto usage;
        } else if (cli_opt(argc, argv, &i, "--val-fraction", &v, &bad)) {
            if (bad || cli_parse_double("prepare", "--val-fraction", v, &val_fraction)) goto usage;
            if (val_fraction < 0 || val_fraction >= 1) {
                cli_error("prepare", "--val-fraction must be in [0, 1)");
                goto usage;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("prepare", "unknown option '%s' (see --help)", argv[i]);
            goto usage;
        } else {
            files[n_files++] = argv[i];
        }
    }
    if (!byte_level) {
        cli_error("prepare", "choose a vocabulary: --byte-level");
        goto usage;
    }
    if (!out || n_files == 0) {
        cli_error("prepare", "need --out DIR and at least one input file");
        goto usage;
    }
    tl_error merr;
    if (tl_mkdir_p(out, &merr)) {
        cli_error("prepare", "%s", merr.msg);
        free(files);
        return 1;
    }
    idvec v = {0};
    size_t bytes = 0;
    for (int f = 0; f < n_files; f++) {
        tl_error err;
        char *text;
        size_t len;
        if (tl_read_file(files[f], (size_t)1 << 32, &text, &len, &err)) {
            cli_error("prepare", "%s", err.msg);
            free(v.ids);
            free(files);
            return 1;
        }
        for (size_t i = 0; i < len; i++)
            if (push(&v, (unsigned char)text[i] + 3)) goto oom;
        if (push(&v, BYTE_EOS)) goto oom;
        bytes += len;
        free(text);
    }
    size_t sample = (size_t)seq_len + 1, n_samples = v.n / sample;
    if (n_samples < 1) {
        cli_error("prepare", "only %zu tokens: not enough for one sample of %zu", v.n, sample);
        free(v.ids);
        free(files);
        return 1;
    }
    size_t n_val = (size_t)(val_fraction * (double)n_samples + 0.999999);
    if (val_fraction > 0 && n_val >= n_samples) n_val = n_samples - 1;
    int rc = write_shards(out, "train", v.ids, n_samples - n_val, (int)seq_len, per_shard);
    if (!rc && n_val) rc = write_shards(out, "val", v.ids + (n_samples - n_val) * sample, n_val, (int)seq_len, per_shard);
    if (!rc)
        printf("%d documents, %zu bytes -> %zu tokens; %zu training and %zu validation samples of %zu tokens "
               "(%zu tail tokens dropped)\n",
               n_files, bytes, v.n, n_samples - n_val, n_val, sample, v.n - n_samples * sample);
    free(v.ids);
    free(files);
    return rc ? 1 : 0;
oom:
    cli_error("prepare", "out of memory");
    free(v.ids);
    free(files);
    return 1;
usage:
    free(files);
    return 2;
}

/* cmd_convert.c - `tinyllama convert --to-hf FILE.gguf --out DIR`: a Llama
 * GGUF file as an HF directory that every other command (and transformers)
 * reads.  The directory is built beside DIR and renamed into place only when
 * complete, so a failure leaves nothing behind and never touches DIR. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "gguf.h"

static void help(void) {
    printf("usage: tinyllama convert --to-hf FILE.gguf --out DIR\n"
           "       tinyllama convert --to-gguf DIR --out FILE.gguf [--type TYPE]  (see convert --to-gguf --help)\n\n"
           "Writes a Llama GGUF file (llama.cpp) as an HF directory: config.json, model.safetensors\n"
           "(F32: every tensor dequantized, q/k rows back in HF order), tokenizer.model rebuilt from\n"
           "tokenizer.ggml.*, tokenizer_config.json with the chat template (docs/formats.md).\n\n"
           "  --to-hf FILE      the GGUF file to read (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K)\n"
           "  --out DIR         the directory to create; it must not exist or be empty\n");
}

/* DIR holds only plain files written by the conversion: remove them and it. */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < sizeof p)
            unlink(p);
    closedir(d);
    rmdir(dir);
}

/* 1 if path is a directory with nothing in it */
static int empty_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

int cmd_convert(int argc, char **argv) {
    for (int i = 1; i < argc; i++) /* the other direction: cli/cmd_quantize.c */
        if (!strcmp(argv[i], "--to-gguf") || !strncmp(argv[i], "--to-gguf=", 10)) return cli_convert_to_gguf(argc, argv);
    const char *in = NULL, *out = NULL;
    const cli_option opts[] = {
        CLI_OPT_STR("--to-hf", &in),
        CLI_OPT_STR("--out", &out),
    };
    int prc = cli_parse("convert", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        return 0;
    }
    if (prc) return prc;
    if (!in || !out) {
        cli_error("convert", "give --to-hf FILE.gguf and --out DIR (see --help)");
        return 2;
    }
    struct stat sb;
    int exists = stat(out, &sb) == 0;
    if (exists && !(S_ISDIR(sb.st_mode) && empty_dir(out))) {
        cli_error("convert", "%s already exists and is not an empty directory; nothing was written", out);
        return 1;
    }
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid()) >= sizeof tmp) {
        cli_error("convert", "%s: path too long", out);
        return 1;
    }
    tl_error err;
    tl_gguf *g = tl_gguf_open(in, &err);
    if (!g) {
        cli_error("convert", "%s", err.msg);
        return 1;
    }
    fprintf(stderr, "converting %s (%zu tensors) to %s\n", in, tl_gguf_n_tensors(g), out);
    int rc = tl_gguf_to_hf_dir(g, tmp, &err);
    tl_gguf_close(g);
    if (rc) {
        remove_flat_dir(tmp);
        cli_error("convert", "%s", err.msg);
        return 1;
    }
    if ((exists && rmdir(out) != 0) || rename(tmp, out) != 0) {
        cli_error("convert", "cannot put %s in place of %s: %s", tmp, out, strerror(errno));
        remove_flat_dir(tmp);
        return 1;
    }
    fprintf(stderr, "wrote %s\n", out);
    return 0;
}

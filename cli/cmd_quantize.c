/* cmd_quantize.c - `tinyllama quantize IN OUT.gguf TYPE` and `tinyllama
 * convert --to-gguf DIR --out OUT.gguf [--type TYPE]`: an HF directory or a
 * GGUF file written as a Llama GGUF (src/formats/gguf_write.c), its rows
 * quantized in parallel, with a progress bar on stderr. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "gguf_write.h"

typedef struct {
    int tty, quiet;
    double t0;
    int last; /* percent last shown */
} progress_state;

static void progress(void *ctx, size_t done, size_t total) {
    progress_state *p = ctx;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (p->quiet || pct == p->last) return;
    p->last = pct;
    double el = tl_now() - p->t0;
    if (p->tty) {
        int fill = pct * 30 / 100;
        fprintf(stderr, "\r\033[K[%.*s%*s] %3d%%  %.1fs", fill, "##############################", 30 - fill, "", pct,
                el);
        if (done >= total) fputc('\n', stderr);
    } else if (pct % 25 == 0) {
        fprintf(stderr, "%3d%%  %.1fs\n", pct, el);
    }
}

static int run(const char *cmd, const char *in, const char *out, const char *type, const char *name, int quiet) {
    const tl_gguf_ftype *ft = tl_gguf_ftype_find(type);
    if (!ft) {
        cli_error(cmd, "unknown type '%s' (one of %s)", type, tl_gguf_ftype_names());
        return 2;
    }
    progress_state ps = {.tty = isatty(2), .quiet = quiet, .t0 = tl_now(), .last = -1};
    tl_gguf_llama_opts o = {.name = name, .progress = progress, .progress_ctx = &ps};
    tl_error err;
    int has_tok = 0;
    if (!quiet) fprintf(stderr, "writing %s as %s (%s)\n", in, out, ft->name);
    if (tl_gguf_convert(in, out, ft, &o, &has_tok, &err)) {
        if (ps.tty && !quiet && ps.last >= 0) fputc('\n', stderr);
        cli_error(cmd, "%s; nothing was written to %s", err.msg, out);
        return 1;
    }
    if (!has_tok)
        fprintf(stderr, "note: %s has no tokenizer.model, so %s carries no tokenizer (llama.cpp needs one)\n", in, out);
    if (o.fallbacks)
        fprintf(stderr, "note: %d tensor(s) have rows that do not divide into the blocks of %s and were written in "
                "another type, as llama-quantize does\n", o.fallbacks, ft->name);
    if (!quiet) fprintf(stderr, "wrote %s in %.1fs\n", out, tl_now() - ps.t0);
    return 0;
}

static void quantize_help(void) {
    printf("usage: tinyllama quantize IN OUT.gguf TYPE [--threads N] [--name NAME] [--quiet]\n\n"
           "Writes IN (an HF model directory, or a Llama GGUF file) as the GGUF file OUT in TYPE, one of\n"
           "  %s\n"
           "with llama.cpp's per-tensor choices (docs/formats.md): norms stay F32; in a quantized file the\n"
           "output projection gets Q6_K (Q8_0 files keep Q8_0); Q4_K_M and Q5_K_M give attn_v and ffn_down\n"
           "Q6_K in the first and last eighth of the layers and every third layer between.  The blocks\n"
           "equal llama-quantize's for the same weights.  The tokenizer (tokenizer.model, or the GGUF's)\n"
           "and the chat template go into the file's metadata.  OUT is written atomically.\n\n"
           "  --threads N   threads quantizing rows (default: the cores other processes leave free)\n"
           "  --name NAME   general.name (default: the input GGUF's, else \"tinyllama\")\n"
           "  --quiet       no progress bar\n",
           tl_gguf_ftype_names());
}

int cmd_quantize(int argc, char **argv) {
    const char *CMD = "quantize", *name = NULL, *pos[3];
    long threads = 0;
    int quiet = 0, n_pos = 0;
    const cli_option opts[] = {
        CLI_OPT_INT("--threads", &threads, 1, 1024),
        CLI_OPT_STR("--name", &name),
        CLI_OPT_FLAG("--quiet", &quiet),
    };
    int prc = cli_parse(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 3, &n_pos);
    if (prc == CLI_HELP) {
        quantize_help();
        return 0;
    }
    if (prc) return prc;
    if (n_pos != 3) {
        cli_error(CMD, "give IN OUT.gguf TYPE (see --help)");
        return 2;
    }
    cli_threads(CMD, threads);
    return run(CMD, pos[0], pos[1], pos[2], name, quiet);
}

static void to_gguf_help(void) {
    printf("usage: tinyllama convert --to-gguf DIR --out FILE.gguf [--type TYPE] [--threads N] [--name NAME]\n\n"
           "Writes an HF model directory as a Llama GGUF file for llama.cpp: llama.* and general.* keys,\n"
           "the tokenizer (tokenizer.model) and chat template (tokenizer_config.json), tensors under GGUF\n"
           "names with q/k rows in llama.cpp's order (docs/formats.md).\n\n"
           "  --to-gguf DIR   the HF directory (config.json, *.safetensors, tokenizer.model)\n"
           "  --out FILE      the GGUF file to write (atomically)\n"
           "  --type TYPE     F16 (default, as llama.cpp's converter), or any of\n"
           "                  %s (see `tinyllama quantize --help`)\n"
           "  --threads N     threads (default: the cores other processes leave free)\n"
           "  --name NAME     general.name (default \"tinyllama\")\n"
           "  --quiet         no progress bar\n",
           tl_gguf_ftype_names());
}

int cli_convert_to_gguf(int argc, char **argv) {
    const char *CMD = "convert", *in = NULL, *out = NULL, *type = "F16", *name = NULL;
    long threads = 0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) /* before parsing: "--to-gguf --help" would read --help as DIR */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            to_gguf_help();
            return 0;
        }
    const cli_option opts[] = {
        CLI_OPT_STR("--to-gguf", &in),   CLI_OPT_STR("--out", &out),         CLI_OPT_STR("--type", &type),
        CLI_OPT_STR("--name", &name),    CLI_OPT_INT("--threads", &threads, 1, 1024),
        CLI_OPT_FLAG("--quiet", &quiet),
    };
    int prc = cli_parse(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        to_gguf_help();
        return 0;
    }
    if (prc) return prc;
    if (!in || !out) {
        cli_error(CMD, "give --to-gguf DIR and --out FILE.gguf (see --help)");
        return 2;
    }
    cli_threads(CMD, threads);
    return run(CMD, in, out, type, name, quiet);
}

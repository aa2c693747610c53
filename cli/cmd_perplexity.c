/* cmd_perplexity.c - `tinyllama perplexity`: a model's perplexity on a text
 * file or on token shards, with the windowing of tl_infer_nll (docs/inference.md). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "infer.h"
#include "ops.h"
#include "tokenizer.h"

static void perplexity_help(void) {
    printf("usage: tinyllama perplexity --model DIR (--text FILE | --shards PATH...) [options]\n\n"
           "Prints the mean negative log-likelihood per token and its exponential, the perplexity.\n\n"
           "Windowing: the token stream is cut into windows [b, b+W) for b = 0, S, 2S, ... (the last\n"
           "one ends at the end of the stream).  Each window is run from an empty KV cache and scores\n"
           "only targets no earlier window scored: with S = W (the default) the windows are disjoint;\n"
           "with S < W every target after the first window sees at least W-S tokens of context\n"
           "(slower, lower perplexity).  The first token of the stream is never a target.  This is\n"
           "the strided scheme of the HF perplexity guide.\n\n"
           "  --model DIR        HF model directory\n"
           "  --text FILE        a text file, tokenized whole with BOS in front (--no-bos to omit)\n"
           "  --shards PATH      token shards (files, directories or globs; repeatable; a directory\n"
           "                     means its validation shards, val-*.bin); every\n"
           "                     sample (seq_len+1 tokens) is its own stream, windowed as above\n"
           "  --window W         window length (default: the model's context, at most the sample\n"
           "                     length for shards)\n"
           "  --stride S         stride between windows (default: W)\n"
           "  --max-tokens N     use only the first N tokens of the text\n"
           "  --max-samples N    use only the first N shard samples\n"
           "  --threads N        threads (default: the cores other processes leave free)\n"
           "  --kernel NAME      kernels, e.g. amx (see `tinyllama generate --help`)\n"
           "  --f32-activations  quantized GGUF or bf16 weights: fp32 activations (see\n"
           "                     `tinyllama generate --help`)\n");
}

int cmd_perplexity(int argc, char **argv) {
    const char *CMD = "perplexity";
    const char *model = NULL, *text_path = NULL, *kernel = NULL;
    const char *shards[64];
    int n_shards = 0, no_bos = 0, f32_act = 0;
    long window = 0, stride = 0, max_tokens = 0, max_samples = 0, threads = 0;
    const cli_option opts[] = {
        CLI_OPT_STR("--model", &model),
        CLI_OPT_STR("--text", &text_path),
        CLI_OPT_STR("--kernel", &kernel),
        CLI_OPT_LIST("--shards", shards, 64, &n_shards, "at most 64 --shards"),
        CLI_OPT_INT("--window", &window, 2, 1L << 24),
        CLI_OPT_INT("--stride", &stride, 1, 1L << 24),
        CLI_OPT_INT("--max-tokens", &max_tokens, 2, 1L << 40),
        CLI_OPT_INT("--max-samples", &max_samples, 1, 1L << 40),
        CLI_OPT_INT("--threads", &threads, 1, 1024),
        CLI_OPT_FLAG("--no-bos", &no_bos),
        CLI_OPT_FLAG("--f32-activations", &f32_act),
    };
    int prc = cli_parse(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        perplexity_help();
        return 0;
    }
    if (prc) return prc;
    if (!model || (!text_path) == (n_shards == 0)) {
        cli_error(CMD, "--model and exactly one of --text / --shards are required (see --help)");
        return 2;
    }
    cli_threads(CMD, threads);
    tl_error err;
    tl_infer_model m;
    if (tl_infer_load(&m, model, &err)) {
        cli_error(CMD, "%s", err.msg);
        return 1;
    }
    tl_infer_set_f32_activations(&m, f32_act);
    if (kernel) {
        int k = tl_kernel_parse(kernel);
        if (k < 0 || tl_infer_set_kernel(&m, (tl_kernel)k, &err)) {
            cli_error(CMD, k < 0 ? "unknown --kernel '%s'" : "%s", k < 0 ? kernel : err.msg);
            tl_infer_free(&m);
            return 2;
        }
    }
    int rc = 1;
    tl_infer_state s;
    memset(&s, 0, sizeof s);
    int *ids = NULL;
    tl_dataset ds;
    int ds_open = 0;
    double nll = 0.0, t0 = tl_now();
    long count = 0;
    if (!window) window = m.cfg.max_seq_len;
    if (text_path) {
        if (!m.tok) {
            cli_error(CMD, "%s has no tokenizer.model or tokenizer.json (use --shards)", model);
            goto done;
        }
        char *text = NULL;
        size_t len, n;
        if (tl_read_file(text_path, (size_t)1 << 34, &text, &len, &err) ||
            tl_tokenizer_encode(m.tok, text, len, no_bos ? 0 : TL_ENC_BOS, &ids, &n, &err)) {
            free(text);
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        free(text);
        if (max_tokens && (size_t)max_tokens < n) n = (size_t)max_tokens;
        if ((size_t)window > n) window = (long)n;
        if (window < 2) {
            cli_error(CMD, "%s: fewer than 2 tokens", text_path);
            goto done;
        }
        if (!stride) stride = window;
        if (tl_infer_state_init(&s, &m, (int)window, &err) ||
            tl_infer_nll(&s, ids, n, (int)window, (int)stride, &nll, &count, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
    } else {
        /* a `prepare` directory means its held-out (val-*) shards, as --val-data does in train */
        const tl_dataset_opts dopts = {.split = "val"};
        if (tl_dataset_open_ex(&ds, shards, n_shards, &dopts, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        ds_open = 1;
        if (ds.taken) fprintf(stderr, "shards: %s\n", ds.taken);
        if (tl_dataset_check_vocab(&ds, m.cfg.vocab_size, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        int L = ds.seq_len + 1;
        if (window > L) window = L;
        if (!stride) stride = window;
        uint64_t ns = ds.n_samples;
        if (max_samples && (uint64_t)max_samples < ns) ns = (uint64_t)max_samples;
        ids = malloc(sizeof(int) * (size_t)L);
        if (!ids || tl_infer_state_init(&s, &m, (int)window, &err)) {
            cli_error(CMD, "%s", ids ? err.msg : "out of memory");
            goto done;
        }
        for (uint64_t i = 0; i < ns; i++) {
            tl_dataset_get(&ds, i, ids);
            if (tl_infer_nll(&s, ids, (size_t)L, (int)window, (int)stride, &nll, &count, &err)) {
                cli_error(CMD, "%s", err.msg);
                goto done;
            }
        }
    }
    {
        double secs = tl_now() - t0, mean = count ? nll / (double)count : 0.0;
        printf("tokens scored: %ld\nwindow: %ld, stride: %ld\nnll per token: %.6f\nperplexity: %.4f\n", count, window,
               stride, mean, exp(mean));
        fprintf(stderr, "[%.1f s, %.1f scored tokens/s]\n", secs, count / (secs > 0 ? secs : 1e-9));
        rc = 0;
    }
done:
    if (ds_open) tl_dataset_close(&ds);
    free(ids);
    tl_infer_state_free(&s);
    tl_infer_free(&m);
    return rc;
}

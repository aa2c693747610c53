/* cmd_serve.c - `tinyllama serve`: the OpenAI-compatible HTTP server
 * (src/serve/server.h) until SIGINT or SIGTERM, which drain it. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "infer.h"
#include "server.h"
#include "speculative.h"

static void serve_help(void) {
    printf("usage: tinyllama serve --model DIR|FILE.gguf [options]\n\n"
           "Serves the model over the OpenAI HTTP API (docs/serving.md): POST /v1/chat/completions,\n"
           "POST /v1/completions, GET /v1/models, GET /health, GET /metrics.  Requests share the\n"
           "model with continuous batching: up to --parallel sequences advance together, one pass\n"
           "over the weights per token step.  SIGINT or SIGTERM stops it: new requests get 503,\n"
           "requests in flight may finish (--drain seconds).\n\n"
           "  --model PATH       HF model directory or GGUF file (with a tokenizer)\n"
           "  --host ADDR        IPv4 address to listen on (default 127.0.0.1, loopback only)\n"
           "  --port N           TCP port (default 8080; 0: any free port, printed at start)\n"
           "  --parallel N       slots: requests decoded together (default 4)\n"
           "  --ctx N            context per slot in tokens (default: the model's)\n"
           "  --chunk N          prompt tokens a slot runs per step (default 128)\n"
           "  --no-prefix-cache  always recompute prompts (default: reuse a slot's cached prefix)\n"
           "  --api-key KEY      require `Authorization: Bearer KEY` on every route but /health\n"
           "  --alias NAME       the model name /v1/models reports (default: the path's last part)\n"
           "  --drain SECONDS    how long requests in flight may take to finish at shutdown (default 30)\n"
           "  --timeout SECONDS  idle connection timeout (default 60)\n"
           "  --threads N        threads (default: the cores other processes leave free)\n"
           "  --f32-activations  quantized GGUF or bf16 weights: fp32 activations (exact, slower;\n"
           "                     see `tinyllama generate --help`)\n"
           "  --draft PATH       speculative decoding: this smaller model (same vocabulary) proposes\n"
           "                     tokens the model verifies several at a time; only with --parallel 1\n"
           "                     (then prompts and steps run as `generate` runs them, so greedy\n"
           "                     replies equal `generate`'s); /metrics counts proposed and accepted\n"
           "  --draft-k N        tokens the draft proposes per step (default 4, at most 16)\n");
}

int cmd_serve(int argc, char **argv) {
    const char *CMD = "serve";
    const char *model = NULL, *host = "127.0.0.1", *api_key = NULL, *alias = NULL, *draft = NULL;
    long port = 8080, parallel = 4, ctx = 0, chunk = 128, threads = 0, drain = 30, timeout = 60, draft_k = 4;
    int no_prefix = 0, f32_act = 0;
    const cli_option opts[] = {
        CLI_OPT_STR("--model", &model),
        CLI_OPT_STR("--host", &host),
        CLI_OPT_INT("--port", &port, 0, 65535),
        CLI_OPT_INT("--parallel", &parallel, 1, 256),
        CLI_OPT_INT("--ctx", &ctx, 2, 1L << 24),
        CLI_OPT_INT("--chunk", &chunk, 1, 1L << 16),
        CLI_OPT_FLAG("--no-prefix-cache", &no_prefix),
        CLI_OPT_STR("--api-key", &api_key),
        CLI_OPT_STR("--alias", &alias),
        CLI_OPT_INT("--drain", &drain, 0, 3600),
        CLI_OPT_INT("--timeout", &timeout, 1, 86400),
        CLI_OPT_INT("--threads", &threads, 1, 1024),
        CLI_OPT_FLAG("--f32-activations", &f32_act),
        CLI_OPT_STR("--draft", &draft),
        CLI_OPT_INT("--draft-k", &draft_k, 1, TL_SPEC_MAX_K),
    };
    int prc = cli_parse(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        serve_help();
        return 0;
    }
    if (prc) return prc;
    if (!model) {
        cli_error(CMD, "--model DIR|FILE.gguf is required");
        return 2;
    }
    if (draft && parallel != 1) {
        cli_error(CMD, "--draft runs with one slot: give --parallel 1 (speculative decoding is not batched across "
                       "requests)");
        return 2;
    }
    /* the signals go to sigwait below: blocked before any thread starts (OpenMP's
     * included), so every thread inherits the mask and none is interrupted */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    cli_threads(CMD, threads);
    tl_error err;
    tl_infer_model m;
    if (tl_infer_load(&m, model, &err)) {
        cli_error(CMD, "%s", err.msg);
        return 1;
    }
    if (!m.tok) {
        cli_error(CMD, "%s: no tokenizer (tokenizer.model or tokenizer.json beside the weights); serving needs one",
                  model);
        tl_infer_free(&m);
        return 1;
    }
    tl_infer_model dm;
    if (draft && tl_infer_load(&dm, draft, &err)) {
        cli_error(CMD, "--draft: %s", err.msg);
        tl_infer_free(&m);
        return 1;
    }
    if (draft && tl_spec_check_vocab(&m, &dm, draft, &err)) {
        cli_error(CMD, "%s", err.msg);
        tl_infer_free(&dm);
        tl_infer_free(&m);
        return 1;
    }
    /* the kernels and activations as `generate` picks them, so greedy replies equal its */
    tl_infer_model *const models[2] = {&m, draft ? &dm : NULL};
    for (int i = 0; i < 2 && models[i]; i++) {
        tl_infer_set_f32_activations(models[i], f32_act);
        tl_infer_prefer_bf16_rounding(models[i]);
    }
    tl_server_opts so = {.host = host,
                         .port = (int)port,
                         .parallel = (int)parallel,
                         .ctx = (int)ctx,
                         .chunk = (int)chunk,
                         .prefix_cache = !no_prefix,
                         .model_id = alias,
                         .api_key = api_key,
                         .timeout_s = (int)timeout,
                         .draft = draft ? &dm : NULL,
                         .draft_k = (int)draft_k};
    tl_server *srv;
    if (tl_server_start(&srv, &m, &so, &err)) {
        cli_error(CMD, "%s", err.msg);
        if (draft) tl_infer_free(&dm);
        tl_infer_free(&m);
        return 1;
    }
    fprintf(stderr, "tinyllama serve: %s on http://%s:%d (%ld slots of %s tokens, kernel %s)\n", model, host,
            tl_server_port(srv), parallel, ctx ? "--ctx" : "the model's context", tl_kernel_name(m.kernel));
    fflush(stderr);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "tinyllama serve: %s: finishing the requests in flight (up to %ld s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", drain);
    tl_server_stop(srv, (double)drain);
    if (draft) tl_infer_free(&dm);
    tl_infer_free(&m);
    fprintf(stderr, "tinyllama serve: stopped\n");
    return 0;
}

/* cmd_bench.c - `tinyllama bench`: training throughput of a model config on
 * random tokens (forward + backward + AdamW, the full step), for comparing
 * against scripts/bench_train_torch.py in scripts/bench_train.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "model.h"
#include "ops.h"
#include "optimizer.h"
#include "rng.h"

#ifdef TL_WITH_CUDA
int cmd_bench_cuda(int argc, char **argv); /* cli/cuda/cmd_bench_cuda.c */
#endif

static void help(void) {
    printf("usage: tinyllama bench [--preset NAME | --config FILE] [options]\n\n"
           "Times full training steps (forward, backward, AdamW) on random tokens and prints\n"
           "tokens/s, achieved GFLOP/s (6 x non-embedding params + attention per token, see\n"
           "docs/benchmarks.md) and peak memory.\n\n"
           "  --preset NAME     model preset (default llama-24m)\n"
           "  --config FILE     an HF config.json instead\n"
           "  --batch N         sequences per step (default 4)\n"
           "  --seq-len N       tokens per sequence (default 64)\n"
           "  --steps N         timed steps (default 10, after 2 warm-up steps)\n"
           "  --threads N       threads (default: all cores)\n");
}

int cmd_bench(int argc, char **argv) {
#ifdef TL_WITH_CUDA
    /* the CUDA build: `bench --device cuda` runs the GPU benchmark */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--device") && !strcmp(argv[i + 1], "cuda")) return cmd_bench_cuda(argc, argv);
#endif
    cli_bench_opts o = {"llama-24m", NULL, 4, 64, 10};
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        } else if (cli_bench_opt(argc, argv, &i, &o, &bad)) {
            if (bad) return 2;
        } else if (cli_opt(argc, argv, &i, "--threads", &v, &bad)) {
            if (bad || cli_parse_int("bench", "--threads", v, 1, 4096, &threads)) return 2;
        } else {
            cli_error("bench", "unknown option '%s' (see --help)", argv[i]);
            return 2;
        }
    }
    if (threads) tl_set_threads((int)threads);
    const char *preset = o.preset, *config = o.config;
    const long batch = o.batch, seq = o.seq, steps = o.steps;
    tl_config cfg;
    tl_error err;
    tl_model m;
    if ((config ? tl_config_load_json(config, &cfg, &err) : tl_config_preset(preset, &cfg, &err)) ||
        tl_model_create(&m, &cfg, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    tl_model_init_weights(&m, 1);
    tl_acts *a = tl_acts_create(&cfg, (int)batch, (int)seq, &err);
    if (!a) {
        cli_error("bench", "%s", err.msg);
        tl_model_free(&m);
        return 1;
    }
    size_t n = m.n_params, N = (size_t)(batch * seq);
    float *g = tl_alloc(n * sizeof(float)), *mo = tl_alloc(n * sizeof(float)), *ve = tl_alloc(n * sizeof(float));
    int *in = malloc(N * sizeof(int)), *tg = malloc(N * sizeof(int));
    if (!g || !mo || !ve || !in || !tg) {
        cli_error("bench", "out of memory");
        return 1;
    }
    tl_rng r;
    tl_rng_seed(&r, 7);
    tl_adamw_config oc = tl_adamw_defaults();
    double timed = 0, loss = 0;
    for (long s = 0; s < steps + 2; s++) {
        for (size_t i = 0; i < N; i++) {
            in[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
            tg[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
        }
        double t0 = tl_now();
        memset(g, 0, n * sizeof(float));
        if (tl_model_forward_backward(&m, a, g, in, tg, 1.0f, &loss, &err)) {
            cli_error("bench", "%s", err.msg);
            return 1;
        }
        double norm = tl_grad_norm(g, n);
        tl_clip_grads(g, n, norm, oc.clip);
        tl_adamw_update(m.params, g, mo, ve, n, 1e-4, &oc, s + 1);
        if (s >= 2) timed += tl_now() - t0;
    }
    double tps = (double)N * (double)steps / timed;
    double gflops = tps * tl_config_train_flops_per_token(&cfg, (int)seq) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model %s: %zu params (%zu non-embedding), batch %ld x seq %ld, %d threads\n", config ? config : preset, n,
           tl_config_num_nonembed_params(&cfg), batch, seq, tl_get_threads());
    printf("RESULT impl=tinyllama tokens_per_s=%.1f gflops=%.2f peak_mb=%.1f loss=%.4f\n", tps, gflops,
           (double)ru.ru_maxrss / 1024.0, loss);
    tl_free(g);
    tl_free(mo);
    tl_free(ve);
    free(in);
    free(tg);
    tl_acts_free(a);
    tl_model_free(&m);
    return 0;
}

/* cmd_bench.c - `tinyllama bench`: training throughput of a model config on
 * random tokens (forward + backward + grad norm + clipped AdamW, the full step,
 * through the engine interface of src/train/engine.h), for comparing against
 * scripts/bench_train_torch.py (CPU, scripts/bench_train.sh) and
 * scripts/bench_cuda_torch.py (`--device cuda`, with MFU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "engine.h"
#include "model.h"
#include "ops.h"
#include "optimizer.h"
#include "rng.h"

static void help(void) {
    printf("usage: tinyllama bench [--preset NAME | --config FILE] [options]\n\n"
           "Times full training steps (forward, backward, AdamW) on random tokens and prints\n"
           "tokens/s, achieved GFLOP/s (6 x non-embedding params + attention per token, see\n"
           "docs/benchmarks.md) and peak memory; on a GPU, TFLOP/s and MFU.\n\n"
           "  --device NAME     cpu (default) or cuda (the CUDA build, `make cuda`)\n"
           "  --preset NAME     model preset (default llama-24m; cuda: tinyllama-1.1b)\n"
           "  --config FILE     an HF config.json instead\n"
           "  --batch N         sequences per step (default 4; cuda: 8)\n"
           "  --seq-len N       tokens per sequence (default 64; cuda: 2048)\n"
           "  --steps N         timed steps (default 10; cuda: 5), after --warmup steps\n"
           "  --warmup N        untimed steps first (default 2)\n"
           "  --threads N       threads (default: all cores)\n"
           "  --precision P     bf16 mixed precision or fp32 (default: cpu fp32, cuda bf16)\n"
           "cuda:\n"
           "  --recompute       recompute SwiGLU activations in the backward pass\n"
           "  --gpu N           CUDA device ordinal (default 0)\n"
           "  --peak-tflops X   datasheet dense bf16 peak (default: by device name; H100/H200 SXM 989)\n"
           "  --no-gemm-peak    skip measuring the cuBLASLt bf16 peak (8192^3 products)\n");
}

static int parse_precision(const char *cmd, const char *v, void *dst) {
    if (strcmp(v, "bf16") && strcmp(v, "fp32")) {
        cli_error(cmd, "--precision must be bf16 or fp32");
        return -1;
    }
    ((tl_engine_opts *)dst)->fp32 = !strcmp(v, "fp32");
    ((tl_engine_opts *)dst)->bf16 = !strcmp(v, "bf16");
    return 0;
}

int cmd_bench(int argc, char **argv) {
    const char *device = "cpu";
    for (int i = 1; i + 1 < argc; i++) /* the device picks the defaults of the other options */
        if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    const tl_engine_kind *kind = tl_engine_find(device);
    if (!kind) {
        cli_error("bench", "--device %s: this build has no such engine (cpu%s)", device,
                  tl_engine_find("cuda") ? ", cuda" : "; cuda needs `make cuda`");
        return 2;
    }
    const int gpu_engine = kind->describe != NULL; /* a device with its own memory and MFU report */
    const char *preset = gpu_engine ? "tinyllama-1.1b" : "llama-24m", *config = NULL;
    long batch = gpu_engine ? 8 : 4, seq = gpu_engine ? 2048 : 64, steps = gpu_engine ? 5 : 10;
    long threads = 0, warmup = 2, gpu = 0;
    int no_gemm_peak = 0;
    double peak = 0;
    tl_engine_opts eo = {0};
    const cli_option opts[] = {
        CLI_OPT_STR("--device", &device),
        CLI_OPT_STR("--preset", &preset),
        CLI_OPT_STR("--config", &config),
        CLI_OPT_INT("--batch", &batch, 1, 1 << 16),
        CLI_OPT_INT("--seq-len", &seq, 1, 1 << 20),
        CLI_OPT_INT("--steps", &steps, 1, 1 << 20),
        CLI_OPT_INT("--threads", &threads, 1, 4096),
        CLI_OPT_INT("--warmup", &warmup, 0, 1 << 20),
        CLI_OPT_CALL("--precision", parse_precision, &eo, 0),
        /* the device's own options, taken only when it has them */
        CLI_OPT_INT("--gpu", &gpu, 0, 1024),
        CLI_OPT_DOUBLE("--peak-tflops", &peak),
        CLI_OPT_FLAG("--recompute", &eo.recompute),
        CLI_OPT_FLAG("--no-gemm-peak", &no_gemm_peak),
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]) - (gpu_engine ? 0 : 4);
    int prc = cli_parse("bench", argc, argv, opts, n_opts, NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        return 0;
    }
    if (prc) return prc;
    const int measure_peak = !no_gemm_peak;
    eo.device = (int)gpu;
    if (threads) tl_set_threads((int)threads);
    tl_config cfg;
    tl_error err = {{0}};
    tl_model m;
    char desc[256] = "";
    if (gpu_engine && kind->describe((int)gpu, desc, sizeof desc, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    if (peak <= 0) peak = cli_datasheet_peak(desc);
    if ((config ? tl_config_load_json(config, &cfg, &err) : tl_config_preset(preset, &cfg, &err)) ||
        tl_model_create(&m, &cfg, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    double t_init = tl_now();
    tl_model_init_weights(&m, 1);
    t_init = tl_now() - t_init;
    double measured = 0;
    if (gpu_engine && measure_peak && kind->matmul_peak && kind->matmul_peak((int)gpu, &measured, &err)) {
        cli_error("bench", "measuring the GEMM peak: %s", err.msg);
        measured = 0;
    }
    size_t n = m.n_params, N = (size_t)(batch * seq);
    float *mo = tl_alloc(n * sizeof(float)), *ve = tl_alloc(n * sizeof(float)); /* AdamW moments, zero */
    int *in = malloc(N * sizeof(int)), *tg = malloc(N * sizeof(int));
    tl_engine *e = NULL;
    if (!mo || !ve || !in || !tg) {
        tl_fail(&err, "out of memory");
    } else {
        memset(mo, 0, n * sizeof(float));
        memset(ve, 0, n * sizeof(float));
        e = kind->create(&m, mo, ve, (int)batch, (int)seq, NULL, &eo, &err);
    }
    int rc = e ? 0 : -1;
    tl_rng r;
    tl_rng_seed(&r, 7);
    tl_adamw_config oc = tl_adamw_defaults();
    double timed = 0, loss = 0, norm = 0, first_loss = 0, phase[4] = {0};
    for (long s = 0; s < steps + warmup && !rc; s++) {
        for (size_t i = 0; i < N; i++) {
            in[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
            tg[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
        }
        /* one process: reduce_grads does nothing, as in the training loop; each phase timed */
        double t[5];
        t[0] = tl_now();
        rc = e->ops->zero_grads(e, &err);
        t[1] = tl_now();
        rc = rc || e->ops->forward_backward(e, in, tg, 1.0f, &loss, &err) || e->ops->reduce_grads(e, &err);
        t[2] = tl_now();
        rc = rc || e->ops->grad_norm(e, &norm, &err);
        t[3] = tl_now();
        rc = rc || e->ops->update(e, &oc, 1e-4, s + 1, norm, &err) || (e->ops->sync && e->ops->sync(e, &err));
        t[4] = tl_now();
        if (s == 0) first_loss = loss;
        if (s >= warmup) {
            timed += t[4] - t[0];
            for (int k = 0; k < 4; k++) phase[k] += t[k + 1] - t[k];
        }
    }
    if (rc) cli_error("bench", "%s", err.msg);
    double fpt = tl_config_train_flops_per_token(&cfg, (int)seq);
    double tps = (double)N * (double)steps / timed;
    if (!rc && !gpu_engine) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("model %s: %zu params (%zu non-embedding), batch %ld x seq %ld, %d threads, %s\n",
               config ? config : preset, n, tl_config_num_nonembed_params(&cfg), batch, seq, tl_get_threads(),
               eo.bf16 ? "bf16 mixed precision" : "fp32");
        printf("RESULT impl=tinyllama precision=%s tokens_per_s=%.1f gflops=%.2f peak_mb=%.1f loss=%.4f\n",
               eo.bf16 ? "bf16" : "fp32", tps, tps * fpt / 1e9, (double)ru.ru_maxrss / 1024.0, loss);
        printf("step %.1f ms: zero_grads %.1f, forward_backward %.1f, grad_norm %.1f, clip + update %.1f\n",
               1e3 * timed / steps, 1e3 * phase[0] / steps, 1e3 * phase[1] / steps, 1e3 * phase[2] / steps,
               1e3 * phase[3] / steps);
    } else if (!rc) {
        double tflops = tps * fpt / 1e12;
        printf("device: %s\n", desc);
        printf("model %s: %zu params (%zu non-embedding), batch %ld x seq %ld, %s%s, GPU memory %.1f GB, "
               "host init %.1fs\n",
               config ? config : preset, n, tl_config_num_nonembed_params(&cfg), batch, seq,
               eo.fp32 ? "fp32" : "bf16 mixed precision", eo.recompute ? ", recompute" : "",
               (double)e->ops->memory_bytes(e) / 1e9, t_init);
        printf("FLOPs per token: %.3f GFLOP (6 x %zu + 12 x %d x %d x %ld)\n", fpt / 1e9,
               tl_config_num_nonembed_params(&cfg), cfg.n_layers, cfg.dim, seq);
        printf("step %.1f ms, loss %.4f (first step %.4f), grad norm %.3f\n", 1e3 * timed / steps, loss, first_loss,
               norm);
        printf("achieved %.1f TFLOP/s; datasheet peak %.1f -> MFU %.1f%%; measured cuBLASLt bf16 peak %.1f -> %.1f%%\n",
               tflops, peak, peak > 0 ? 100 * tflops / peak : 0.0, measured,
               measured > 0 ? 100 * tflops / measured : 0.0);
        printf("RESULT impl=tinyllama-cuda tokens_per_s=%.1f tflops=%.2f mfu_datasheet=%.4f mfu_measured=%.4f "
               "gemm_peak_tflops=%.1f loss=%.4f\n",
               tps, tflops, peak > 0 ? tflops / peak : 0.0, measured > 0 ? tflops / measured : 0.0, measured, loss);
    }
    if (e) e->ops->free(e);
    tl_free(mo);
    tl_free(ve);
    free(in);
    free(tg);
    tl_model_free(&m);
    return rc ? 1 : 0;
}

/* cmd_bench_cuda.c - `tinyllama-cuda bench --device cuda`: GPU training
 * throughput (forward, backward, grad norm, clipped AdamW: the full step) on
 * random tokens, with MFU against the datasheet peak and against a measured
 * cuBLASLt bf16 matrix-product peak.  Built only into build/tinyllama-cuda. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuda_engine.h"
#include "model.h"
#include "optimizer.h"
#include "rng.h"

int cmd_bench_cuda(int argc, char **argv);

static void help(void) {
    printf("usage: tinyllama-cuda bench --device cuda [--preset NAME | --config FILE] [options]\n\n"
           "Times full training steps on the GPU and prints tokens/s and MFU.  FLOPs per token:\n"
           "6 x non-embedding params + 12 x layers x dim x seq (~7.3 GFLOP for tinyllama-1.1b at 2048).\n\n"
           "  --preset NAME        model preset (default tinyllama-1.1b)\n"
           "  --config FILE        an HF config.json instead\n"
           "  --batch N            sequences per micro-batch (default 8)\n"
           "  --seq-len N          tokens per sequence (default 2048)\n"
           "  --steps N            timed steps (default 5, after --warmup steps)\n"
           "  --warmup N           untimed steps first (default 2)\n"
           "  --precision P        bf16 (default) or fp32\n"
           "  --recompute          recompute SwiGLU activations in the backward pass\n"
           "  --gpu N              CUDA device ordinal (default 0)\n"
           "  --peak-tflops X      datasheet dense bf16 peak (default: by device name; H100/H200 SXM 989)\n"
           "  --no-gemm-peak       skip measuring the cuBLASLt bf16 peak (8192^3 products)\n");
}

/* Dense bf16 datasheet peak (TFLOP/s) from the device name; 0 if unknown. */
static double datasheet_peak(const char *desc) {
    if (strstr(desc, "H200") || strstr(desc, "H100 80GB HBM3") || strstr(desc, "H100 SXM")) return 989.4;
    if (strstr(desc, "H100 PCIe") || strstr(desc, "H100")) return 756.0;
    if (strstr(desc, "A100")) return 312.0;
    if (strstr(desc, "L40S")) return 362.0;
    return 0.0;
}

/* Times bf16 8192^3 products through the same cuBLASLt path as the engine. */
static int gemm_peak(double *tflops, tl_error *err) {
    const int n = 8192;
    size_t e = (size_t)n * n;
    float *h = malloc(e * sizeof(float));
    if (!h) return tl_fail(err, "out of memory");
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < e; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        h[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    void *a = tl_cuda_malloc(e * 2, err), *b = a ? tl_cuda_malloc(e * 2, err) : NULL;
    void *c = b ? tl_cuda_malloc(e * 2, err) : NULL;
    tl_cuda_gemm *g = c ? tl_cuda_gemm_create(err) : NULL;
    int rc = -1;
    if (g && !tl_cuda_upload(a, h, e, TL_CUDA_BF16, err) && !tl_cuda_upload(b, h, e, TL_CUDA_BF16, err)) {
        rc = 0;
        for (int i = 0; i < 3 && !rc; i++)
            rc = tl_cuda_linear_forward(g, TL_CUDA_BF16, TL_CUDA_BF16, c, a, b, n, n, n, 0.0f, NULL, err);
        rc = rc ? rc : tl_cuda_sync(err);
        double t0 = tl_now();
        const int reps = 20;
        for (int i = 0; i < reps && !rc; i++)
            rc = tl_cuda_linear_forward(g, TL_CUDA_BF16, TL_CUDA_BF16, c, a, b, n, n, n, 0.0f, NULL, err);
        rc = rc ? rc : tl_cuda_sync(err);
        if (!rc) *tflops = 2.0 * n * (double)n * n * reps / (tl_now() - t0) / 1e12;
    }
    tl_cuda_gemm_free(g);
    tl_cuda_free(a), tl_cuda_free(b), tl_cuda_free(c);
    free(h);
    return rc;
}

int cmd_bench_cuda(int argc, char **argv) {
    cli_bench_opts bo = {"tinyllama-1.1b", NULL, 8, 2048, 5};
    long warmup = 2, gpu = 0;
    int precision = TL_CUDA_BF16, recompute = 0, measure_peak = 1;
    double peak = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        } else if (cli_opt(argc, argv, &i, "--device", &v, &bad)) {
            if (bad) return 2;
            if (strcmp(v, "cuda")) {
                cli_error("bench", "--device must be cuda here");
                return 2;
            }
        } else if (cli_bench_opt(argc, argv, &i, &bo, &bad)) {
            if (bad) return 2;
        } else if (cli_opt(argc, argv, &i, "--warmup", &v, &bad)) {
            if (bad || cli_parse_int("bench", "--warmup", v, 0, 1 << 20, &warmup)) return 2;
        } else if (cli_opt(argc, argv, &i, "--gpu", &v, &bad)) {
            if (bad || cli_parse_int("bench", "--gpu", v, 0, 1024, &gpu)) return 2;
        } else if (cli_opt(argc, argv, &i, "--precision", &v, &bad)) {
            if (bad) return 2;
            if (!strcmp(v, "bf16")) precision = TL_CUDA_BF16;
            else if (!strcmp(v, "fp32")) precision = TL_CUDA_F32;
            else {
                cli_error("bench", "--precision must be bf16 or fp32");
                return 2;
            }
        } else if (cli_opt(argc, argv, &i, "--peak-tflops", &v, &bad)) {
            if (bad || cli_parse_double("bench", "--peak-tflops", v, &peak)) return 2;
        } else if (!strcmp(argv[i], "--recompute")) {
            recompute = 1;
        } else if (!strcmp(argv[i], "--no-gemm-peak")) {
            measure_peak = 0;
        } else {
            cli_error("bench", "unknown option '%s' (see --help)", argv[i]);
            return 2;
        }
    }
    const char *preset = bo.preset, *config = bo.config;
    const long batch = bo.batch, seq = bo.seq, steps = bo.steps;
    tl_error err = {{0}};
    int ndev = 0;
    if (tl_cuda_device_count(&ndev, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    char desc[256] = "";
    if (tl_cuda_device_describe((int)gpu, desc, sizeof desc, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    if (peak <= 0) peak = datasheet_peak(desc);
    tl_config cfg;
    tl_model m;
    if ((config ? tl_config_load_json(config, &cfg, &err) : tl_config_preset(preset, &cfg, &err)) ||
        tl_model_create(&m, &cfg, &err)) {
        cli_error("bench", "%s", err.msg);
        return 1;
    }
    double t_init = tl_now();
    tl_model_init_weights(&m, 1);
    t_init = tl_now() - t_init;
    double measured = 0;
    if (measure_peak && gemm_peak(&measured, &err)) {
        cli_error("bench", "measuring the GEMM peak: %s", err.msg);
        measured = 0;
    }
    tl_cuda_opts o = tl_cuda_opts_default();
    o.precision = precision, o.recompute = recompute, o.device = (int)gpu;
    tl_cuda_engine *e = tl_cuda_engine_create(&m, (int)batch, (int)seq, &o, &err);
    if (!e) {
        cli_error("bench", "%s", err.msg);
        tl_model_free(&m);
        return 1;
    }
    size_t N = (size_t)(batch * seq);
    int *in = malloc(N * sizeof(int)), *tg = malloc(N * sizeof(int));
    if (!in || !tg) {
        cli_error("bench", "out of memory");
        return 1;
    }
    tl_rng r;
    tl_rng_seed(&r, 7);
    tl_adamw_config oc = tl_adamw_defaults();
    double timed = 0, loss = 0, norm = 0, first_loss = 0;
    int rc = 0;
    for (long s = 0; s < steps + warmup && !rc; s++) {
        for (size_t i = 0; i < N; i++) {
            in[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
            tg[i] = (int)tl_rng_below(&r, (uint64_t)cfg.vocab_size);
        }
        double t0 = tl_now();
        rc = tl_cuda_engine_zero_grads(e, &err) || tl_cuda_engine_forward_backward(e, in, tg, 1.0f, &loss, &err) ||
             tl_cuda_engine_grad_norm(e, &norm, &err) || tl_cuda_engine_adamw(e, &oc, 1e-4, s + 1, norm, &err) ||
             tl_cuda_engine_sync(e, &err);
        if (s == 0) first_loss = loss;
        if (s >= warmup) timed += tl_now() - t0;
    }
    if (rc) {
        cli_error("bench", "%s", err.msg);
        tl_cuda_engine_free(e);
        tl_model_free(&m);
        return 1;
    }
    double fpt = tl_config_train_flops_per_token(&cfg, (int)seq);
    double tps = (double)N * (double)steps / timed, tflops = tps * fpt / 1e12;
    printf("device: %s\n", desc);
    printf("model %s: %zu params (%zu non-embedding), batch %ld x seq %ld, %s%s, GPU memory %.1f GB, "
           "host init %.1fs\n",
           config ? config : preset, m.n_params, tl_config_num_nonembed_params(&cfg), batch, seq,
           precision == TL_CUDA_BF16 ? "bf16 mixed precision" : "fp32", recompute ? ", recompute" : "",
           (double)tl_cuda_engine_memory_bytes(e) / 1e9, t_init);
    printf("FLOPs per token: %.3f GFLOP (6 x %zu + 12 x %d x %d x %ld)\n", fpt / 1e9,
           tl_config_num_nonembed_params(&cfg), cfg.n_layers, cfg.dim, seq);
    printf("step %.1f ms, loss %.4f (first step %.4f), grad norm %.3f\n", 1e3 * timed / steps, loss, first_loss, norm);
    printf("achieved %.1f TFLOP/s; datasheet peak %.1f -> MFU %.1f%%; measured cuBLASLt bf16 peak %.1f -> %.1f%%\n",
           tflops, peak, peak > 0 ? 100 * tflops / peak : 0.0, measured, measured > 0 ? 100 * tflops / measured : 0.0);
    printf("RESULT impl=tinyllama-cuda tokens_per_s=%.1f tflops=%.2f mfu_datasheet=%.4f mfu_measured=%.4f "
           "gemm_peak_tflops=%.1f loss=%.4f\n",
           tps, tflops, peak > 0 ? tflops / peak : 0.0, measured > 0 ? tflops / measured : 0.0, measured, loss);
    free(in);
    free(tg);
    tl_cuda_engine_free(e);
    tl_model_free(&m);
    return 0;
}

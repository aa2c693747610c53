/* cmd_info.c - `tinyllama info`: print a model configuration and its size, or
 * (--cpu) the CPU, its flags and the matrix-product library chosen for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "distributed.h"
#include "config.h"
#include "gemm.h"
#include "gemm_quant.h"
#include "matvec.h"
#include "matvec_quant.h"
#include "quant.h"
#include "threads.h"

static void help(void) {
    printf("usage: tinyllama info (--preset NAME | --config config.json | --gguf FILE [--full])\n"
           "       tinyllama info --cpu\n\n"
           "Prints the model configuration and parameter count; with --cpu the CPU, the instruction-set\n"
           "flags the kernels dispatch on, OpenBLAS's kernel family and the fp32 GEMM backend chosen and\n"
           "why (TL_GEMM=openblas|onednn overrides it; docs/dependencies.md).\n\n"
           "  --preset NAME     a built-in preset:");
    for (const char *const *p = tl_config_preset_names(); *p; p++) printf(" %s", *p);
    printf("\n  --config FILE     an HF config.json\n"
           "  --gguf FILE       a GGUF file (llama.cpp): its metadata, its tensor table and the Llama\n"
           "                    configuration read from it; --full prints whole arrays and strings\n"
           "  --zero-memory N[,N...]  also the bytes per rank of parameters, gradients and AdamW state at\n"
           "                    each ZeRO stage on N ranks, as `train --zero` allocates them (docs/distributed.md)\n");
}

/* Per-rank memory of each ZeRO stage on each rank count (rank 0: the largest shard),
 * from the plan the trainer allocates by (tl_zero_memory_plan). */
static int zero_table(const tl_config *cfg, const char *list) {
    const double GB = 1e9;
    for (const char *p = list; *p;) {
        char *end;
        long w = strtol(p, &end, 10);
        if (end == p || w < 1 || w > 1 << 20 || (*end && *end != ',')) {
            cli_error("info", "--zero-memory expects rank counts like 8,16,64, got '%s'", list);
            return 2;
        }
        p = *end ? end + 1 : end;
        printf("\nZeRO memory per rank on %ld ranks (GB = 1e9 bytes; fp32 parameters, gradients, AdamW m+v;\n"
               "activations come on top and do not depend on the stage):\n", w);
        printf("  stage  params(rest)  params(peak)   grads  adam m+v  comm scratch  peak total  rest total  saved (peak/rest)\n");
        tl_zero_memory z0;
        tl_zero_memory_plan(cfg, (int)w, 0, 0, 0, &z0);
        for (int st = 0; st < 4; st++) {
            tl_zero_memory z;
            tl_zero_memory_plan(cfg, (int)w, 0, st, 0, &z);
            /* at rest (between steps): stage 3 has handed the other ranks' parameter pages back */
            size_t rest0 = z0.params + z0.grads + z0.opt_state + z0.scratch;
            size_t rest = z.params + z.grads + z.opt_state + z.scratch;
            printf("  %5d  %12.3f  %12.3f  %6.3f  %8.3f  %12.3f  %10.3f  %10.3f  %7.3f / %6.3f\n", st, z.params / GB,
                   z.params_peak / GB, z.grads / GB, z.opt_state / GB, z.scratch / GB, z.total_peak / GB, rest / GB,
                   ((double)z0.total_peak - (double)z.total_peak) / GB, ((double)rest0 - (double)rest) / GB);
        }
        tl_zero_memory z2, z2o;
        tl_zero_memory_plan(cfg, (int)w, 0, 2, 0, &z2);
        tl_zero_memory_plan(cfg, (int)w, 0, 2, 1, &z2o);
        printf("  stages 2-3 grads: the rank's slice %.3f + unit buckets %.3f; with --overlap %.3f of buckets\n",
               (z2.grads - z2.grad_buckets) / GB, z2.grad_buckets / GB, z2o.grad_buckets / GB);
    }
    return 0;
}

static int cpu_info(void) {
    tl_cpu_info c;
    tl_cpu_detect(&c);
    printf("cpu: %s (%s, family %d model %d stepping %d)\n", c.model[0] ? c.model : "?", c.vendor, c.family,
           c.model_id, c.stepping);
    const struct {
        const char *name;
        bool on;
    } f[] = {{"avx2", c.avx2},           {"fma", c.fma},
             {"avx512f", c.avx512f},     {"avx512bw", c.avx512bw},
             {"avx512vl", c.avx512vl},   {"avx512_vnni", c.avx512_vnni},
             {"avx512_bf16", c.avx512_bf16}, {"avx512_fp16", c.avx512_fp16},
             {"amx_bf16", c.amx_bf16},   {"amx_int8", c.amx_int8}};
    printf("flags:");
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (f[i].on) printf(" %s", f[i].name);
    printf("\nmissing:");
    int none = 1;
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!f[i].on) printf(" %s", f[i].name), none = 0;
    printf("%s\n", none ? " (none)" : "");
    const tl_gemm_choice *g = tl_gemm_active();
    const char *env = getenv("OPENBLAS_CORETYPE");
    printf("openblas core: %s", tl_gemm_openblas_corename());
    if (env)
        printf(" (OPENBLAS_CORETYPE=%s)\n", env);
    else if (g->openblas_core)
        printf(" (forced from the flags; its own detection said %s)\n", g->openblas_detected);
    else
        printf(" (its own detection)\n");
    printf("gemm backend: %s (%s)\n", tl_gemm_backend_name(g->backend), g->why);
    const tl_gemm_bf16_backend b = tl_gemm_bf16_active();
    const char *bwhy = getenv("TL_GEMM_BF16") && b != tl_gemm_bf16_choose(&c) ? "TL_GEMM_BF16"
                       : b == TL_GEMM_BF16_ONEDNN ? "AVX512-BF16 or AMX-BF16: oneDNN's bf16 matmul"
                                                  : "no bf16 instructions: bf16 products emulated, no speed-up";
    printf("bf16 gemm backend: %s (%s)\n", tl_gemm_bf16_name(b), bwhy);
    const double rate = tl_bf16_dot_rate();
    if (rate > 0.0)
        printf("bf16 dot products: %.2fx the fp32 FMAs' arithmetic per second (vdpbf16ps, measured now; %s)\n", rate,
               c.amx_bf16   ? "AMX-BF16 does the products"
               : rate < TL_BF16_DOT_RATE_PAYS ? "without AMX, bf16 products cannot beat fp32 ones on this core: train in fp32"
                            : "without AMX, bf16 products can run up to this much faster than fp32 ones");
    /* the inference kernels: what generate, chat, serve, eval and perplexity pick by default */
    const tl_kernel k = tl_kernel_best(), kb = tl_kernel_best_bf16();
    const tl_q8_isa q = tl_q8_isa_for(k);
    if (kb == k)
        printf("inference kernels: %s (the default --kernel, for fp32, F16 and BF16 weights)\n", tl_kernel_name(k));
    else
        printf("inference kernels: %s (the default --kernel for fp32 and F16 weights), %s for BF16 weights "
               "(activations rounded to bf16; --f32-activations keeps %s)\n",
               tl_kernel_name(k), tl_kernel_name(kb), tl_kernel_name(k));
    printf("quantized decode: %s integer dot products", tl_q8_isa_name(q));
    const uint32_t types[] = {TL_GGML_Q8_0, TL_GGML_Q4_0, TL_GGML_Q4_1, TL_GGML_Q5_0,
                              TL_GGML_Q5_1, TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};
    if (tl_q8_repacks()) {
        /* the types a GGUF file's matrices are repacked from at load (any 16-row, 256-column one will do) */
        printf(", repacked at load:");
        for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
            const tl_wmat w = {.dtype = TL_DT_I32, .rows = 16, .cols = 256, .quant = types[i]};
            if (tl_q8_packable(&w)) printf(" %s", tl_ggml_type_name(types[i]));
        }
    }
    printf("\nquantized prompt pass: %s",
           tl_q8_amx_usable() ? "AMX-INT8 tiles" : "the decode kernels, 4 tokens per weight load");
    if (!tl_q8_amx_usable() && tl_q8_repacks()) {
        /* from how many tokens each type's groups are unpacked once / paired (0: never) */
        int any = 0;
        for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
            const int from = tl_q8_pair_from(q, types[i]);
            if (from)
                printf("%s %s from %d tokens", any++ ? "," : "; groups unpacked once or read in pairs:",
                       tl_ggml_type_name(types[i]), from);
        }
    }
    printf("\n");
    const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT"), *mark = getenv(TL_OMP_SPIN_MARK);
    if (spin && mark && !strcmp(spin, mark) && !policy)
        printf("openmp wait: GOMP_SPINCOUNT=%s (tinyllama's choice; OMP_WAIT_POLICY or GOMP_SPINCOUNT overrides)\n",
               spin);
    else if (policy || spin)
        printf("openmp wait: %s%s%s%s%s (from the environment)\n", policy ? "OMP_WAIT_POLICY=" : "",
               policy ? policy : "", policy && spin ? " " : "", spin ? "GOMP_SPINCOUNT=" : "", spin ? spin : "");
    else
        printf("openmp wait: libgomp's default spin (running itself again with GOMP_SPINCOUNT failed)\n");
    return 0;
}

int cmd_info(int argc, char **argv) {
    const char *preset = NULL, *config = NULL, *zero_memory = NULL, *gguf = NULL;
    int full = 0, cpu = 0;
    const cli_option opts[] = {
        CLI_OPT_FLAG("--cpu", &cpu),
        CLI_OPT_STR("--preset", &preset),
        CLI_OPT_STR("--config", &config),
        CLI_OPT_STR("--zero-memory", &zero_memory),
        CLI_OPT_STR("--gguf", &gguf),
        CLI_OPT_FLAG("--full", &full),
    };
    int prc = cli_parse("info", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        return 0;
    }
    if (prc) return prc;
    if (cpu) {
        if (preset || config || zero_memory || gguf || full) {
            cli_error("info", "--cpu takes no other option");
            return 2;
        }
        return cpu_info();
    }
    if (!!preset + !!config + !!gguf != 1) {
        cli_error("info", "give exactly one of --preset, --config or --gguf (or --cpu)");
        return 2;
    }
    if (full && !gguf) {
        cli_error("info", "--full goes with --gguf");
        return 2;
    }
    if (gguf) {
        if (zero_memory) {
            cli_error("info", "--zero-memory goes with --preset or --config");
            return 2;
        }
        return cli_info_gguf(gguf, full);
    }
    tl_config cfg;
    tl_error err;
    if (preset ? tl_config_preset(preset, &cfg, &err) : tl_config_load_json(config, &cfg, &err)) {
        cli_error("info", "%s", err.msg);
        return 1;
    }
    char *json = tl_config_to_json(&cfg);
    printf("%s\n", json);
    free(json);
    printf("parameters: %zu (non-embedding %zu)\n", tl_config_num_params(&cfg),
           tl_config_num_nonembed_params(&cfg));
    if (zero_memory) return zero_table(&cfg, zero_memory);
    return 0;
}

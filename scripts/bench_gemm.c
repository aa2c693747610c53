/* bench_gemm.c - GFLOP/s of every fp32 GEMM backend (src/compute/gemm.h) at the
 * products TinyLlama-1.1B runs on a 512-token batch, on 1 and 2 threads.
 * Backends are interleaved shape by shape so that a neighbour's load hits them
 * alike: OpenBLAS with the kernels it picks itself, OpenBLAS with the kernel
 * family the CPU's flags allow (OPENBLAS_CORETYPE, re-initialised in process),
 * oneDNN as tl_sgemm_on runs it, oneDNN's matmul primitive and dnnl_sgemm at
 * every shape (the two that tl_sgemm_matmul_wins chooses between).  Prints one
 * line per measurement:
 *   RESULT round=R threads=T shape=NAME backend=B gflops=G
 * Usage: bench_gemm [rounds] [seconds per measurement] [shape set]   (scripts/bench_gemm.sh)
 * Shape sets: tinyllama-1.1b (default, above) and gqa-40m (a training step's
 * products at batch 4 x 256: d 512, kv 256, ffn 1376, the output layer's
 * 256-row chunk over a 32000 vocabulary, attention's 64-row blocks of 256). */
#include "gemm.h"
#include "ops.h"

#include <dnnl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);

typedef struct {
    const char *name;
    bool ta, tb;
    int M, N, K;
} shape;

/* T = 512 tokens, d = 2048, kv = 256, ffn = 5632, head dim 64, row block 64 */
static const shape shapes[] = {
    {"fwd_qo_512x2048x2048_NT", 0, 1, 512, 2048, 2048},
    {"fwd_kv_512x256x2048_NT", 0, 1, 512, 256, 2048},
    {"fwd_gateup_512x5632x2048_NT", 0, 1, 512, 5632, 2048},
    {"fwd_down_512x2048x5632_NT", 0, 1, 512, 2048, 5632},
    {"dx_qo_512x2048x2048_NN", 0, 0, 512, 2048, 2048},
    {"dx_gateup_512x2048x5632_NN", 0, 0, 512, 2048, 5632},
    {"dx_down_512x5632x2048_NN", 0, 0, 512, 5632, 2048},
    {"dW_qo_2048x2048x512_TN", 1, 0, 2048, 2048, 512},
    {"dW_kv_256x2048x512_TN", 1, 0, 256, 2048, 512},
    {"dW_gateup_5632x2048x512_TN", 1, 0, 5632, 2048, 512},
    {"dW_down_2048x5632x512_TN", 1, 0, 2048, 5632, 512},
    {"attn_qk_64x512x64_NT", 0, 1, 64, 512, 64},
    {"attn_pv_64x64x512_NN", 0, 0, 64, 64, 512},
    {"attn_dk_512x64x64_TN", 1, 0, 512, 64, 64},
    {"square_2048_NN", 0, 0, 2048, 2048, 2048},
};

/* N = 1024 tokens (4 x 256), d = 512, kv = 256, ffn = 1376, head dim 64 */
static const shape shapes_gqa[] = {
    {"fwd_qo_1024x512x512_NT", 0, 1, 1024, 512, 512},
    {"fwd_kv_1024x256x512_NT", 0, 1, 1024, 256, 512},
    {"fwd_gateup_1024x1376x512_NT", 0, 1, 1024, 1376, 512},
    {"fwd_down_1024x512x1376_NT", 0, 1, 1024, 512, 1376},
    {"dx_qo_1024x512x512_NN", 0, 0, 1024, 512, 512},
    {"dx_kv_1024x512x256_NN", 0, 0, 1024, 512, 256},
    {"dx_gateup_1024x512x1376_NN", 0, 0, 1024, 512, 1376},
    {"dx_down_1024x1376x512_NN", 0, 0, 1024, 1376, 512},
    {"dW_qo_512x512x1024_TN", 1, 0, 512, 512, 1024},
    {"dW_kv_256x512x1024_TN", 1, 0, 256, 512, 1024},
    {"dW_gateup_1376x512x1024_TN", 1, 0, 1376, 512, 1024},
    {"dW_down_512x1376x1024_TN", 1, 0, 512, 1376, 1024},
    {"head_fwd_256x32000x512_NT", 0, 1, 256, 32000, 512},
    {"head_dx_256x512x32000_NN", 0, 0, 256, 512, 32000},
    {"head_dW_32000x512x256_TN", 1, 0, 32000, 512, 256},
    {"attn_qk_64x256x64_NT", 0, 1, 64, 256, 64},
    {"attn_pv_64x64x256_NN", 0, 0, 64, 64, 256},
    {"attn_dk_256x64x64_TN", 1, 0, 256, 64, 64},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_core(const char *core) {
    if (core)
        setenv("OPENBLAS_CORETYPE", core, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
}

/* The measured columns: OpenBLAS (its own kernel family, then the forced one:
 * set_core switches between them), tl_sgemm_on's oneDNN backend (dnnl_sgemm,
 * or the matmul primitive where tl_sgemm_matmul_wins), the primitive at every
 * shape, and dnnl_sgemm at every shape (to re-measure tl_sgemm_matmul_wins) */
enum { OPENBLAS_OWN, OPENBLAS_FORCED, ONEDNN, ONEDNN_MATMUL, DNNL_SGEMM, NCOLS };

static void product(int b, const shape *s, const float *A, int lda, const float *B, int ldb, float *C) {
    if (b == ONEDNN_MATMUL && !tl_sgemm_matmul(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N))
        return;
    if (b == DNNL_SGEMM && dnnl_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, 1.0f, A, lda, B, ldb,
                                      0.0f, C, s->N) == dnnl_success)
        return;
    tl_sgemm_on(b <= OPENBLAS_FORCED ? TL_GEMM_OPENBLAS : TL_GEMM_ONEDNN, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda,
                B, ldb, 0.0f, C, s->N);
}

static double run(int b, const shape *s, const float *A, const float *B, float *C, double secs) {
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    product(b, s, A, lda, B, ldb, C); /* warm-up */
    int n = 0;
    double t0 = now(), t;
    do {
        product(b, s, A, lda, B, ldb, C);
        n++;
    } while ((t = now() - t0) < secs);
    return 2.0 * s->M * s->N * (double)s->K * n / t / 1e9;
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 3;
    const double secs = argc > 2 ? atof(argv[2]) : 0.3;
    const bool gqa = argc > 3 && !strcmp(argv[3], "gqa-40m");
    const shape *const set = gqa ? shapes_gqa : shapes;
    const size_t nset = gqa ? sizeof shapes_gqa / sizeof *shapes_gqa : sizeof shapes / sizeof *shapes;
    const char *user_core = getenv("OPENBLAS_CORETYPE");
    char own[64];
    snprintf(own, sizeof own, "%s", openblas_get_corename());
    tl_cpu_info cpu;
    tl_cpu_detect(&cpu);
    tl_gemm_choice ch;
    tl_gemm_choose(&cpu, own, NULL, &ch, NULL);
    /* the kernel family the flags allow, forced even when OpenBLAS picked it */
    const char *forced = ch.openblas_core ? ch.openblas_core : own;
    printf("cpu: %s (%s family %d model %d)\n", cpu.model, cpu.vendor, cpu.family, cpu.model_id);
    printf("openblas own core: %s%s; forced: %s\n", own, user_core ? " (OPENBLAS_CORETYPE set)" : "", forced);
    size_t mx = 0;
    for (size_t i = 0; i < nset; i++) {
        size_t a = (size_t)set[i].M * set[i].K, b = (size_t)set[i].K * set[i].N, c = (size_t)set[i].M * set[i].N;
        if (a > mx) mx = a;
        if (b > mx) mx = b;
        if (c > mx) mx = c;
    }
    float *A = malloc(mx * sizeof(float)), *B = malloc(mx * sizeof(float)), *C = malloc(mx * sizeof(float));
    if (!A || !B || !C) return 1;
    for (size_t i = 0; i < mx; i++) A[i] = (float)(i % 13) * 0.01f, B[i] = (float)(i % 7) * 0.02f, C[i] = 0;
    static const char *const names[NCOLS] = {"openblas-own", "openblas-forced", "onednn", "onednn-matmul",
                                             "dnnl-sgemm"};
    for (int r = 0; r < rounds; r++)
        for (int th = 1; th <= 2; th++) {
            tl_set_threads(th);
            for (size_t i = 0; i < nset; i++)
                for (int k = 0; k < NCOLS; k++) {
                    /* rotate the order each round so no backend always runs first */
                    const int j = (k + r) % NCOLS;
                    if (j <= OPENBLAS_FORCED) set_core(j == OPENBLAS_OWN ? user_core : forced);
                    double g = run(j, &set[i], A, B, C, secs);
                    printf("RESULT round=%d threads=%d shape=%s backend=%s gflops=%.1f\n", r, th, set[i].name,
                           names[j], g);
                    fflush(stdout);
                }
        }
    free(A);
    free(B);
    free(C);
    return 0;
}

/* test_gemm.c - every GEMM backend against a double-precision product, and the
 * backend choice as a function of the CPU's flags. */
#include "gemm.h"
#include "harness.h"
#include "ops.h"
#include "rng.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* C = alpha op(A) op(B) + beta C on backend b, checked element by element against
 * the same product in double: the error may be a few fp32 roundings of each
 * term's magnitude.  Strides are padded and the padding must stay untouched;
 * beta 0 must overwrite a C full of NaN. */
static int check_product(tl_test_ctx *t, tl_gemm_backend b, bool ta, bool tb, int M, int N, int K, float alpha,
                         float beta, tl_rng *g) {
    const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    const size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(sizeof(float) * (na + 1)), *B = malloc(sizeof(float) * (nb + 1)),
          *C = malloc(sizeof(float) * (nc + 1)), *C0 = malloc(sizeof(float) * (nc + 1));
    for (size_t i = 0; i < na; i++) A[i] = (float)tl_rng_normal(g);
    for (size_t i = 0; i < nb; i++) B[i] = (float)tl_rng_normal(g);
    for (size_t i = 0; i < nc; i++) C0[i] = beta == 0.0f ? NAN : (float)tl_rng_normal(g);
    memcpy(C, C0, sizeof(float) * nc);
    tl_sgemm_on(b, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int bad = 0;
    for (int i = 0; i < M && !bad; i++) {
        for (int j = ldc - 2; j < ldc; j++)
            if (memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float))) bad = 1;
        for (int j = 0; j < N && !bad; j++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                const double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const double x = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * x;
                mag += fabs(a * x);
            }
            const double c0 = beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j];
            const double ref = alpha * s + beta * c0, tol = 4 * 1.2e-7 * (K + 2) * (fabs(alpha) * mag + fabs(beta * c0)) + 1e-30;
            const double got = C[(size_t)i * ldc + j];
            if (!(fabs(got - ref) <= tol)) {
                CHECK_MSG(0, "%s %c%c M=%d N=%d K=%d alpha=%g beta=%g: C[%d,%d] = %.9g, expected %.9g (tol %.3g)",
                          tl_gemm_backend_name(b), ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, beta, i, j, got,
                          ref, tol);
                bad = 1;
            }
        }
    }
    if (bad) CHECK_MSG(0, "%s: product or padding wrong (see above)", tl_gemm_backend_name(b));
    free(A);
    free(B);
    free(C);
    free(C0);
    return bad;
}

static void test_backends_match_double(tl_test_ctx *t) {
    static const int shapes[][3] = {{37, 53, 71}, {1, 129, 3}, {130, 1, 257}, {64, 64, 1}, {5, 7, 0}, {300, 17, 40}};
    tl_rng g;
    tl_rng_seed(&g, 23);
    int saved = tl_get_threads();
    for (int th = 1; th <= 2; th++) {
        tl_set_threads(th);
        for (int b = 0; b < TL_GEMM_NBACKENDS; b++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                for (int tr = 0; tr < 4; tr++) {
                    const float beta = tr == 1 ? 1.5f : tr == 3 ? 1.0f : 0.0f, alpha = tr & 1 ? 0.75f : 1.0f;
                    check_product(t, (tl_gemm_backend)b, tr & 1, tr >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                                  alpha, beta, &g);
                }
    }
    tl_set_threads(saved);
}

/* Attention calls the products from inside a parallel region, one per thread. */
static void test_backends_inside_parallel_region(tl_test_ctx *t) {
    int saved = tl_get_threads();
    tl_set_threads(2);
    for (int b = 0; b < TL_GEMM_NBACKENDS; b++) {
        int bad = 0;
#pragma omp parallel reduction(+ : bad)
        {
            tl_test_ctx local = {t->name, 0};
            tl_rng g;
            tl_rng_seed(&g, 100 + (uint64_t)omp_get_thread_num());
            bad += check_product(&local, (tl_gemm_backend)b, omp_get_thread_num() & 1, 1, 64, 96, 64, 0.125f, 1.0f,
                                 &g);
            bad += local.failures;
        }
        CHECK_MSG(!bad, "%s inside a parallel region", tl_gemm_backend_name((tl_gemm_backend)b));
    }
    tl_set_threads(saved);
}

/* The output layer's wide products and the forward products of few rows or few
 * outputs go to oneDNN's matmul primitive: right against double with alpha, beta
 * and padded strides, and the same bits on 1, 2 and 3 threads (training's results
 * must not depend on the thread count; a primitive may split long sums K among
 * threads where M x N is small, which would break that). */
static void test_matmul_wide(tl_test_ctx *t) {
    static const int shapes[][5] = {/* ta, tb, M, N, K */ {0, 1, 33, 8200, 40},  {1, 0, 8200, 37, 29},
                                    {0, 1, 16, 64, 5632},  {0, 1, 70, 300, 1100}, {0, 1, 1030, 256, 520}};
    tl_rng g;
    tl_rng_seed(&g, 41);
    int saved = tl_get_threads();
    CHECK(tl_sgemm_matmul_wins(false, true, 256, 32000, 288) && tl_sgemm_matmul_wins(true, false, 32000, 512, 256));
    CHECK(tl_sgemm_matmul_wins(false, true, 512, 5632, 2048) && tl_sgemm_matmul_wins(false, true, 2048, 512, 512));
    CHECK(!tl_sgemm_matmul_wins(false, false, 256, 512, 2048) && !tl_sgemm_matmul_wins(false, true, 1024, 1376, 512));
    CHECK(!tl_sgemm_matmul_wins(false, true, 256, 768, 288) && !tl_sgemm_matmul_wins(true, false, 2048, 2048, 512));
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const bool ta = shapes[s][0], tb = shapes[s][1];
        const int M = shapes[s][2], N = shapes[s][3], K = shapes[s][4];
        for (int tr = 0; tr < 2; tr++) {
            tl_set_threads(2);
            check_product(t, TL_GEMM_ONEDNN, ta, tb, M, N, K, tr ? 0.5f : 1.0f, tr ? 1.0f : 0.0f, &g);
        }
        const int lda = ta ? M : K, ldb = tb ? K : N;
        const size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
        float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb), *C[3];
        for (size_t i = 0; i < na; i++) A[i] = (float)tl_rng_normal(&g);
        for (size_t i = 0; i < nb; i++) B[i] = (float)tl_rng_normal(&g);
        for (int th = 1; th <= 3; th++) {
            C[th - 1] = malloc(sizeof(float) * nc);
            for (size_t i = 0; i < nc; i++) C[th - 1][i] = (float)(i % 5);
            tl_set_threads(th);
            CHECK(tl_sgemm_matmul(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C[th - 1], N) == 0);
        }
        for (int th = 2; th <= 3; th++)
            CHECK_MSG(!memcmp(C[0], C[th - 1], sizeof(float) * nc), "%c%c %dx%dx%d: 1 and %d threads differ",
                      ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, th);
        free(A);
        free(B);
        for (int th = 0; th < 3; th++) free(C[th]);
    }
    tl_set_threads(saved);
}

static tl_cpu_info flags(int level) {
    tl_cpu_info c;
    memset(&c, 0, sizeof c);
    c.sse3 = true;
    c.avx = level >= 1;
    c.avx2 = c.fma = c.f16c = level >= 2;
    c.avx512f = c.avx512dq = c.avx512bw = c.avx512vl = level >= 3;
    c.avx512_vnni = c.avx512_bf16 = c.avx512_fp16 = level >= 4;
    c.amx_tile = c.amx_bf16 = c.amx_int8 = level >= 5;
    return c;
}

static void test_choice_by_flags(tl_test_ctx *t) {
    tl_gemm_choice ch;
    tl_error err;
    /* SSE only: OpenBLAS as it is */
    tl_cpu_info c = flags(0);
    CHECK(tl_gemm_choose(&c, "Prescott", NULL, &ch, &err) == 0);
    CHECK(ch.backend == TL_GEMM_OPENBLAS && ch.openblas_core == NULL);
    /* AVX without AVX2: OpenBLAS lifted from Prescott to the AVX kernels */
    c = flags(1);
    CHECK(tl_gemm_choose(&c, "Prescott", NULL, &ch, &err) == 0);
    CHECK(ch.backend == TL_GEMM_OPENBLAS && ch.openblas_core && !strcmp(ch.openblas_core, "Sandybridge"));
    /* AVX2+FMA (e.g. an EPYC OpenBLAS knows as Zen: its own pick stays) */
    c = flags(2);
    CHECK(tl_gemm_choose(&c, "Zen", NULL, &ch, &err) == 0);
    CHECK(ch.backend == TL_GEMM_OPENBLAS && ch.openblas_core == NULL);
    CHECK(tl_gemm_choose(&c, "Prescott", NULL, &ch, &err) == 0);
    CHECK(ch.openblas_core && !strcmp(ch.openblas_core, "Haswell"));
    /* AVX-512 on a model OpenBLAS does not know (e.g. a family 6 model 207 Xeon): SkylakeX kernels */
    for (int lv = 3; lv <= 5; lv++) {
        c = flags(lv);
        CHECK(tl_gemm_choose(&c, "Prescott", NULL, &ch, &err) == 0);
        CHECK(ch.backend == TL_GEMM_ONEDNN && ch.openblas_core && !strcmp(ch.openblas_core, "SkylakeX"));
        CHECK(tl_gemm_choose(&c, "Cooperlake", NULL, &ch, &err) == 0);
        CHECK(ch.openblas_core == NULL);
    }
    /* AVX512F without BW/VL (Knights Landing): the AVX2 level */
    c = flags(2);
    c.avx512f = true;
    CHECK(tl_gemm_choose(&c, "Prescott", NULL, &ch, &err) == 0);
    CHECK(ch.backend == TL_GEMM_OPENBLAS && ch.openblas_core && !strcmp(ch.openblas_core, "Haswell"));
    /* an override wins; a bad one is named */
    c = flags(4);
    CHECK(tl_gemm_choose(&c, "SkylakeX", "openblas", &ch, &err) == 0 && ch.backend == TL_GEMM_OPENBLAS);
    CHECK(strstr(ch.why, "TL_GEMM") != NULL);
    c = flags(0);
    CHECK(tl_gemm_choose(&c, "Prescott", "onednn", &ch, &err) == 0 && ch.backend == TL_GEMM_ONEDNN);
    CHECK(tl_gemm_choose(&c, "Prescott", "mkl", &ch, &err) != 0);
    CHECK(strstr(err.msg, "'mkl'") != NULL);
}

/* The detected flags are consistent: each level implies the one below it. */
static void test_detect_consistent(tl_test_ctx *t) {
    tl_cpu_info c;
    tl_cpu_detect(&c);
    CHECK(!c.avx2 || c.avx);
    CHECK(!c.avx512f || c.avx2);
    CHECK(!c.avx512_bf16 || c.avx512f);
    CHECK(!c.amx_bf16 || c.amx_tile);
#if defined(__AVX2__)
    CHECK(c.avx2);
#endif
    CHECK(c.avx2 == (bool)__builtin_cpu_supports("avx2"));
    CHECK(c.avx512f == (bool)__builtin_cpu_supports("avx512f"));
    CHECK(c.fma == (bool)__builtin_cpu_supports("fma"));
    const tl_gemm_choice *a = tl_gemm_active();
    CHECK(a->backend >= 0 && a->backend < TL_GEMM_NBACKENDS && a->why[0]);
}

/* Forcing OpenBLAS's kernel family takes effect in this process, changes no
 * result beyond rounding, and leaves the environment alone. */
static void test_openblas_force(tl_test_ctx *t) {
    const tl_gemm_choice *a = tl_gemm_active(); /* the process's own forcing first */
    char before[64];
    snprintf(before, sizeof before, "%s", tl_gemm_openblas_corename());
    const char *env = getenv("OPENBLAS_CORETYPE");
    tl_rng g;
    tl_rng_seed(&g, 5);
    CHECK(tl_gemm_openblas_force("Prescott") == 0);
    CHECK(!strcmp(tl_gemm_openblas_corename(), "Prescott"));
    check_product(t, TL_GEMM_OPENBLAS, false, true, 67, 45, 129, 1.0f, 0.0f, &g);
    tl_cpu_info c;
    tl_cpu_detect(&c);
    if (c.avx2 && c.fma) {
        CHECK(tl_gemm_openblas_force("Haswell") == 0);
        CHECK(!strcmp(tl_gemm_openblas_corename(), "Haswell"));
        check_product(t, TL_GEMM_OPENBLAS, true, false, 67, 45, 129, 1.0f, 1.0f, &g);
    }
    char cur[64];
    snprintf(cur, sizeof cur, "%s", tl_gemm_openblas_corename());
    CHECK(tl_gemm_openblas_force("NoSuchCore") != 0);
    CHECK(!strcmp(tl_gemm_openblas_corename(), cur)); /* not left on OpenBLAS's Prescott fallback */
    CHECK(getenv("OPENBLAS_CORETYPE") == env || (env && !strcmp(getenv("OPENBLAS_CORETYPE"), env)));
    /* back to what the process runs: the active choice's family, else OpenBLAS's own */
    tl_gemm_openblas_force(a->openblas_core ? a->openblas_core : env);
    CHECK(!strcmp(tl_gemm_openblas_corename(), before));
}

const tl_test tests_gemm[] = {
    {"gemm/openblas_force", test_openblas_force},
    {"gemm/backends_match_double", test_backends_match_double},
    {"gemm/backends_inside_parallel_region", test_backends_inside_parallel_region},
    {"gemm/matmul_wide", test_matmul_wide},
    {"gemm/choice_by_flags", test_choice_by_flags},
    {"gemm/detect_consistent", test_detect_consistent},
    {NULL, NULL},
};

/* gemm_bf16.c - bf16 matrix products with fp32 sums (see gemm.h): oneDNN's
 * matmul primitive where the CPU has bf16 instructions, else the reference.
 *
 * oneDNN has no bf16 GEMM call in its C API (only sgemm and the int8 ones), so
 * every product describes its operands (bf16 A and B, fp32 C, transposes as
 * strides) as a matmul primitive (onednn_matmul.c, shared with the fp32
 * products that run on it), kept for the shape's next use. */
#include "gemm.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "onednn_matmul.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TL_BF16_X86 1
#endif

bool tl_cpu_has_bf16(const tl_cpu_info *cpu) { return cpu->avx512_bf16 || cpu->amx_bf16; }

tl_gemm_bf16_backend tl_gemm_bf16_choose(const tl_cpu_info *cpu) {
    return tl_cpu_has_bf16(cpu) ? TL_GEMM_BF16_ONEDNN : TL_GEMM_BF16_REF;
}

const char *tl_gemm_bf16_name(tl_gemm_bf16_backend b) { return b == TL_GEMM_BF16_ONEDNN ? "onednn" : "ref"; }

static pthread_once_t once = PTHREAD_ONCE_INIT;
static tl_gemm_bf16_backend active;
static bool vec_round; /* AVX512-BF16 conversions */
static char bad_env[64]; /* an unrecognised TL_GEMM_BF16 */

static void init_once(void) {
    tl_cpu_info cpu;
    tl_cpu_detect(&cpu);
    active = tl_gemm_bf16_choose(&cpu);
    vec_round = cpu.avx512_bf16;
    const char *env = getenv("TL_GEMM_BF16");
    if (env && !strcmp(env, "ref"))
        active = TL_GEMM_BF16_REF;
    else if (env && !strcmp(env, "onednn"))
        active = TL_GEMM_BF16_ONEDNN;
    else if (env && *env)
        snprintf(bad_env, sizeof bad_env, "%s", env);
}

int tl_gemm_bf16_init(tl_error *err) {
    pthread_once(&once, init_once);
    if (bad_env[0]) return tl_fail(err, "TL_GEMM_BF16: unknown bf16 GEMM backend '%s' (expected ref or onednn)", bad_env);
    return 0;
}

tl_gemm_bf16_backend tl_gemm_bf16_active(void) {
    pthread_once(&once, init_once);
    return active;
}

/* ------------------------------------------------------------------ rounding */

static uint16_t round1(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* zero or subnormal: signed zero */
    return tl_f32_to_bf16(f);
}

#ifdef TL_BF16_X86
__attribute__((target("avx512f,avx512bf16"))) static void round_vec(const float *x, size_t n, uint16_t *out) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = round1(x[i]);
}
#endif

static void round_run(const float *x, size_t n, uint16_t *out) {
#ifdef TL_BF16_X86
    if (vec_round) {
        round_vec(x, n, out);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = round1(x[i]);
}

void tl_round_bf16_here(const float *x, size_t n, uint16_t *out) {
    pthread_once(&once, init_once);
    round_run(x, n, out);
}

void tl_round_bf16(const float *x, size_t n, uint16_t *out) {
    pthread_once(&once, init_once);
    /* chunks of a fixed size: the split never changes a value, only who writes it */
    const size_t chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
    if (nc <= 1 || omp_in_parallel()) { /* no region (a nested one costs a team's set-up) */
        round_run(x, n, out);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nc; c++) {
        const size_t lo = c * chunk, len = n - lo < chunk ? n - lo : chunk;
        round_run(x + lo, len, out + lo);
    }
}

/* ----------------------------------------------------------------- reference */

/* A [rows, cols] bf16 block (row stride ld) widened into a packed fp32 one. */
static float *widen(const uint16_t *s, int rows, int cols, int ld) {
    float *d = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    if (!d) return NULL;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) d[(size_t)r * cols + c] = tl_bf16_to_f32(s[(size_t)r * ld + c]);
    return d;
}

static void gemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    float *a = widen(A, ar, ac, lda), *b = widen(B, br, bc, ldb);
    if (a && b) {
        /* products of bf16 values are exact in fp32: only the order of the sums can differ from hardware */
        tl_sgemm(ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
    } else { /* out of memory: the same sums, one at a time */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = 0;
                for (int k = 0; k < K; k++)
                    s += tl_bf16_to_f32(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                         tl_bf16_to_f32(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                float *c = C + (size_t)i * ldc + j;
                *c = alpha * s + (beta == 0.0f ? 0.0f : beta * *c);
            }
    }
    free(a);
    free(b);
}

/* ------------------------------------------------------------------- oneDNN */

static int gemm_onednn(int batch, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                       size_t sa, const uint16_t *B, int ldb, size_t sb, float beta, float *C, int ldc, size_t sc) {
    const tl_matmul_shape s = {.bf16 = true, .ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                               .ldc = ldc, .batch = batch, .sa = sa, .sb = sb, .sc = sc, .alpha = alpha, .beta = beta};
    return tl_onednn_matmul(&s, A, B, C);
}

void tl_gemm_bf16_on(tl_gemm_bf16_backend b, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A,
                     int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    pthread_once(&once, init_once);
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    /* oneDNN refusing the arguments leaves C untouched: the reference then */
    if (b == TL_GEMM_BF16_ONEDNN && !gemm_onednn(1, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0))
        return;
    gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc) {
    tl_gemm_bf16_on(tl_gemm_bf16_active(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_gemm_bf16_batch_on(tl_gemm_bf16_backend b, int batch, bool ta, bool tb, int M, int N, int K, float alpha,
                           const uint16_t *A, int lda, size_t sa, const uint16_t *B, int ldb, size_t sb, float beta,
                           float *C, int ldc, size_t sc) {
    pthread_once(&once, init_once);
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (batch > 1 && K > 0 && b == TL_GEMM_BF16_ONEDNN &&
        !gemm_onednn(batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc))
        return;
    for (int i = 0; i < batch; i++)
        tl_gemm_bf16_on(b, ta, tb, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

void tl_gemm_bf16_batch(int batch, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                        size_t sa, const uint16_t *B, int ldb, size_t sb, float beta, float *C, int ldc, size_t sc) {
    tl_gemm_bf16_batch_on(tl_gemm_bf16_active(), batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc,
                          sc);
}

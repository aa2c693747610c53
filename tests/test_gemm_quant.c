/* test_gemm_quant.c - the prompt pass's tile kernel for quantized weights
 * (gemm_quant.h: AMX-INT8) against the portable C int8 kernel of
 * matvec_quant_i8.c, and which kernel tl_q8_gemm takes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_quant.h"
#include "gguf.h"
#include "harness.h"
#include "matvec_quant.h"
#include "rng.h"

static const uint32_t TYPES[] = {TL_GGML_Q8_0, TL_GGML_Q4_0, TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};

/* random block bytes, the f16 scales finite (2^-12 .. 2^-2, either sign) */
static void fill_blocks(tl_rng *r, uint32_t type, uint8_t *b, size_t n_blocks) {
    uint32_t be, bb;
    tl_ggml_type_block(type, &be, &bb);
    for (size_t i = 0; i < n_blocks * bb; i++) b[i] = (uint8_t)tl_rng_below(r, 256);
    for (size_t k = 0; k < n_blocks; k++) {
        uint8_t *p = b + k * bb;
        const int nscales = type == TL_GGML_Q4_K || type == TL_GGML_Q5_K ? 2 : 1;
        uint8_t *s = type == TL_GGML_Q6_K ? p + bb - 2 : p;
        for (int j = 0; j < nscales; j++) {
            uint16_t h = (uint16_t)(tl_rng_below(r, 2) << 15 | (3 + tl_rng_below(r, 10)) << 10 | tl_rng_below(r, 1024));
            memcpy(s + 2 * j, &h, 2);
        }
    }
}

/* y from the C kernel: rows of W against each token of x rounded as the
 * products round it, then beta y added as tl_q8_gemm adds it */
static void reference(const tl_wmat *W, const float *x, int n, float *y, float beta) {
    const size_t rb = tl_quant_row_bytes(W->quant, W->cols), xs = tl_q8_bytes(W->quant, W->cols);
    uint8_t *xq = malloc(xs);
    for (int t = 0; t < n; t++) {
        tl_q8_quantize(W->quant, x + (size_t)t * W->cols, W->cols, xq);
        for (int r = 0; r < W->rows; r++) {
            float v, *yy = y + (size_t)t * W->rows + r;
            tl_q8_dot(TL_Q8_C, W->quant, (const uint8_t *)W->data + (size_t)r * rb, xq, 0, 1, W->cols, &v, 0);
            *yy = beta == 0 ? v : v + beta * *yy;
        }
    }
    free(xq);
}

/* Every tile type, 37 rows (two full 16-row tiles and a part one) and 1280
 * columns (5 super-blocks, 40 blocks of 32), 1, 16 and 35 tokens (a part
 * token group), x with blocks of different magnitudes and an all-zero block:
 * the tile kernel equals the C kernel bit for bit (the same integer sums, the
 * same fp32 operations per row and token in the same order), with beta 0 and
 * 1.  A NaN in one token's x makes that token's outputs NaN and no other's. */
static void test_q8_amx_equals_c(tl_test_ctx *t) {
    enum { R = 37, C = 1280, NMAX = 35 };
    static const int ns[] = {1, 16, 35};
    tl_rng r;
    tl_rng_seed(&r, 41);
    float *x = malloc(sizeof(float) * C * NMAX), *y = malloc(sizeof(float) * R * NMAX),
          *want = malloc(sizeof(float) * R * NMAX);
    uint8_t *mat = malloc(tl_quant_row_bytes(TL_GGML_Q8_0, C) * R);
    for (size_t ti = 0; ti < sizeof TYPES / sizeof TYPES[0]; ti++) {
        const uint32_t type = TYPES[ti];
        uint32_t be, bb;
        tl_ggml_type_block(type, &be, &bb);
        const size_t rb = tl_quant_row_bytes(type, C);
        fill_blocks(&r, type, mat, rb * R / bb);
        const tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0};
        CHECK(tl_q8_amx_type(type));
        if (!tl_q8_amx_usable()) {
            CHECK_MSG(tl_q8_gemm_amx(&W, x, 16, y, 0) == -1, "no AMX-INT8: the tile kernel must refuse");
            continue;
        }
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int n = ns[ni];
            for (int i = 0; i < C * n; i++) x[i] = (float)(tl_rng_normal(&r) * (1 + (i / 32) % 7));
            memset(x + C + 64, 0, sizeof(float) * 32 * (n > 1));
            for (int i = 0; i < R * n; i++) y[i] = want[i] = (float)tl_rng_normal(&r);
            reference(&W, x, n, want, 1.0f);
            CHECK(tl_q8_gemm_amx(&W, x, n, y, 1.0f) == 0);
            CHECK_MSG(!memcmp(y, want, sizeof(float) * (size_t)(R * n)), "%s, %d tokens, beta 1: tiles against C",
                      tl_ggml_type_name(type), n);
            reference(&W, x, n, want, 0.0f);
            CHECK(tl_q8_gemm_amx(&W, x, n, y, 0.0f) == 0);
            int bad = -1;
            for (int i = 0; i < R * n && bad < 0; i++)
                if (memcmp(&y[i], &want[i], sizeof(float))) bad = i;
            CHECK_MSG(bad < 0, "%s, %d tokens: token %d row %d: tiles %.9g, C %.9g", tl_ggml_type_name(type), n,
                      bad / R, bad % R, bad < 0 ? 0 : y[bad], bad < 0 ? 0 : want[bad]);
        }
        x[C + 5] = NAN; /* token 1 */
        CHECK(tl_q8_gemm_amx(&W, x, 16, y, 0.0f) == 0);
        int nan_ok = 1;
        for (int i = 0; i < R * 16; i++) nan_ok &= !!isnan(y[i]) == (i / R == 1);
        CHECK_MSG(nan_ok, "%s: a NaN in token 1's x gives NaN for token 1 only", tl_ggml_type_name(type));
    }
    free(x);
    free(y);
    free(want);
    free(mat);
}

/* tl_q8_gemm takes the tiles for the AMX families from 16 tokens on (the
 * results of test_q8_amx_equals_c), and the VNNI/AVX2/C kernels otherwise:
 * below 16 tokens, and for --kernel avx512 / avx2 / scalar (each token then
 * gets what tl_q8_dot gives it with that family's ISA). */
static void test_q8_gemm_dispatch(tl_test_ctx *t) {
    enum { R = 48, C = 512, N = 20 };
    tl_rng r;
    tl_rng_seed(&r, 43);
    float *x = malloc(sizeof(float) * C * N), *y = malloc(sizeof(float) * R * N), *want = malloc(sizeof(float) * R * N);
    uint8_t *mat = malloc(tl_quant_row_bytes(TL_GGML_Q8_0, C) * R), *xq = malloc(tl_q8_bytes(TL_GGML_Q8_0, C));
    for (int i = 0; i < C * N; i++) x[i] = (float)tl_rng_normal(&r);
    for (size_t ti = 0; ti < 2; ti++) { /* Q8_0, Q4_0: the kernels' sums differ in the last bits */
        const uint32_t type = TYPES[ti];
        uint32_t be, bb;
        tl_ggml_type_block(type, &be, &bb);
        const size_t rb = tl_quant_row_bytes(type, C);
        fill_blocks(&r, type, mat, rb * R / bb);
        const tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0};
        for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k)) continue;
            const tl_kernel kb = k == TL_KERNEL_AUTO ? tl_kernel_best() : (tl_kernel)k;
            const int tiles = (kb == TL_KERNEL_AMX || kb == TL_KERNEL_AMX_EXACT) && tl_q8_amx_usable();
            for (int n = 15; n <= N; n += N - 15) {
                if (tiles && n >= 16) {
                    CHECK(tl_q8_gemm_amx(&W, x, n, want, 0.0f) == 0);
                } else {
                    const tl_q8_isa isa = tl_q8_isa_for((tl_kernel)k);
                    for (int i = 0; i < n; i++) {
                        tl_q8_quantize(type, x + (size_t)i * C, C, xq);
                        for (int j = 0; j < R; j++)
                            tl_q8_dot(isa, type, mat + rb * (size_t)j, xq, 0, 1, C, want + (size_t)i * R + j, 0);
                    }
                }
                CHECK(tl_q8_gemm((tl_kernel)k, &W, x, n, y, 0.0f) == 0);
                CHECK_MSG(!memcmp(y, want, sizeof(float) * (size_t)(R * n)), "%s kernel %s, %d tokens: %s",
                          tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), n,
                          tiles && n >= 16 ? "not the tile kernel" : "not the per-token kernel");
            }
        }
    }
    free(x);
    free(y);
    free(want);
    free(mat);
    free(xq);
}

/* Several matrices sharing x in one call (Q/K/V of a Q4_K_M file: Q4_K and
 * Q6_K; with Q8_0 and Q4_0 beside them x is rounded for both block
 * families): each y_j equals the C kernel's bit for bit.  tl_q8_gemm_multi
 * declines (-1) for the non-AMX families, below 16 tokens, with fp32
 * activations asked for, and for matrices of different widths. */
static void test_q8_amx_multi(tl_test_ctx *t) {
    enum { C = 512, N = 33, K = 4 };
    static const uint32_t types[K] = {TL_GGML_Q4_K, TL_GGML_Q6_K, TL_GGML_Q8_0, TL_GGML_Q4_0};
    static const int rows[K] = {37, 20, 48, 5};
    tl_rng r;
    tl_rng_seed(&r, 47);
    float *x = malloc(sizeof(float) * C * N), *y[K], *want[K];
    uint8_t *mat[K];
    tl_wmat W[K];
    const tl_wmat *Wp[K];
    for (int i = 0; i < C * N; i++) x[i] = (float)(tl_rng_normal(&r) * (1 + i % 5));
    for (int j = 0; j < K; j++) {
        uint32_t be, bb;
        tl_ggml_type_block(types[j], &be, &bb);
        const size_t rb = tl_quant_row_bytes(types[j], C);
        mat[j] = malloc(rb * (size_t)rows[j]);
        fill_blocks(&r, types[j], mat[j], rb * (size_t)rows[j] / bb);
        W[j] = (tl_wmat){TL_DT_I32, mat[j], rows[j], C, types[j], 0, 0, 0};
        Wp[j] = &W[j];
        y[j] = malloc(sizeof(float) * (size_t)(rows[j] * N));
        want[j] = malloc(sizeof(float) * (size_t)(rows[j] * N));
        reference(&W[j], x, N, want[j], 0.0f);
    }
    if (tl_q8_amx_usable()) {
        CHECK(tl_q8_gemm_multi(TL_KERNEL_AMX_EXACT, Wp, y, K, x, N) == 0);
        for (int j = 0; j < K; j++)
            CHECK_MSG(!memcmp(y[j], want[j], sizeof(float) * (size_t)(rows[j] * N)), "matrix %d (%s) of %d", j,
                      tl_ggml_type_name(types[j]), K);
        CHECK(tl_q8_gemm_multi(TL_KERNEL_AMX, Wp + 1, y + 1, 2, x, N) == 0);
        CHECK(!memcmp(y[2], want[2], sizeof(float) * (size_t)(rows[2] * N)));
    }
    CHECK(tl_q8_gemm_multi(TL_KERNEL_AVX512, Wp, y, K, x, N) == -1);
    CHECK(tl_q8_gemm_multi(TL_KERNEL_SCALAR, Wp, y, K, x, N) == -1);
    CHECK(tl_q8_gemm_multi(TL_KERNEL_AMX_EXACT, Wp, y, K, x, 15) == -1);
    W[1].f32_act = 1;
    CHECK(tl_q8_gemm_multi(TL_KERNEL_AMX_EXACT, Wp, y, K, x, N) == -1);
    W[1].f32_act = 0;
    W[2].cols = 256;
    CHECK(tl_q8_gemm_multi(TL_KERNEL_AMX_EXACT, Wp, y, K, x, N) == -1);
    for (int j = 0; j < K; j++) free(mat[j]), free(y[j]), free(want[j]);
    free(x);
}

const tl_test tests_gemm_quant[] = {
    {"q8_amx_equals_c", test_q8_amx_equals_c},
    {"q8_gemm_dispatch", test_q8_gemm_dispatch},
    {"q8_amx_multi", test_q8_amx_multi},
    {NULL, NULL},
};

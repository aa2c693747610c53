/* test_infer_gguf.c - running GGUF files: the quantized mat-vec kernels of every
 * ISA against "dequantize (tl_gguf_dequant_row, itself bit-exact with the gguf
 * package), then a double-precision dot", and whole models of every tensor type
 * against logits the gguf package + numpy computed in float64
 * (scripts/gen_gguf_fixtures.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "harness.h"
#include "infer.h"
#include "matvec_quant.h"
#include "matvec_quant_i8.h"
#include "repack_check.h"
#include "rng.h"

static const uint32_t QTYPES[] = {TL_GGML_Q8_0, TL_GGML_Q4_0, TL_GGML_Q4_1, TL_GGML_Q5_0,
                                  TL_GGML_Q5_1, TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};
#define N_QTYPES (sizeof QTYPES / sizeof QTYPES[0])

/* a random finite half of magnitude 2^-12 .. 2^-2, either sign */
static void put_f16(tl_rng *r, uint8_t *p) {
    uint16_t h = (uint16_t)(tl_rng_below(r, 2) << 15 | (3 + tl_rng_below(r, 10)) << 10 | tl_rng_below(r, 1024));
    memcpy(p, &h, 2);
}

/* Random bytes for n_blocks blocks of type, with finite random scales where
 * the layout keeps them (random bytes there could be inf/NaN). */
static void random_blocks(tl_rng *r, uint32_t type, uint8_t *b, size_t n_blocks) {
    uint32_t be, bb;
    tl_ggml_type_block(type, &be, &bb);
    for (size_t i = 0; i < n_blocks * bb; i++) b[i] = (uint8_t)tl_rng_below(r, 256);
    for (size_t k = 0; k < n_blocks; k++) {
        uint8_t *p = b + k * bb;
        if (type == TL_GGML_Q6_K) {
            put_f16(r, p + bb - 2);
        } else {
            put_f16(r, p);
            if (type != TL_GGML_Q8_0 && type != TL_GGML_Q4_0 && type != TL_GGML_Q5_0) put_f16(r, p + 2);
        }
    }
}

/* Every kernel family on this CPU, every block type, several row lengths
 * (odd numbers of blocks, one block, long rows): within 2e-5 of sum |w x| of
 * the reference (fp32 summation in another order; the block scale applied per
 * block).  Then whole matrices through tl_wmat_matvec (the threaded row split)
 * and tl_wmat_row_f32 (bit-exact with the dequantization). */
static void test_quant_dot_kernels(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 17);
    static const int lens32[] = {32, 96, 160, 288, 1056, 5632};
    static const int lensK[] = {256, 768, 1280, 5632};
    enum { MAXN = 5632 };
    uint8_t *blocks = malloc(MAXN / 32 * 34 + 64);
    float *x = malloc(sizeof(float) * MAXN), *w = malloc(sizeof(float) * MAXN);
    for (int i = 0; i < MAXN; i++) x[i] = (float)tl_rng_normal(&r);
    int checked = 0;
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        const uint32_t type = QTYPES[ti];
        uint32_t be, bb;
        tl_ggml_type_block(type, &be, &bb);
        const int *lens = be == 256 ? lensK : lens32;
        const int nl = be == 256 ? 4 : 6;
        for (int li = 0; li < nl; li++) {
            const int n = lens[li];
            random_blocks(&r, type, blocks, (size_t)n / be);
            tl_gguf_dequant_row(type, blocks, w, (size_t)n);
            double ref = 0, mag = 0;
            for (int i = 0; i < n; i++) ref += (double)w[i] * x[i], mag += fabs((double)w[i] * x[i]);
            for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
                if (!tl_kernel_supported((tl_kernel)k)) continue;
                float y = tl_quant_dot((tl_kernel)k, type, blocks, x, n);
                CHECK_MSG(fabs(y - ref) <= 2e-5 * mag, "%s kernel %s n=%d: %.9g, reference %.9g (sum|wx| %g)",
                          tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), n, y, ref, mag);
                checked++;
            }
        }
        /* a [37, 1280] matrix (rows not a multiple of 8) through the threaded mat-vec */
        const int R = 37, C = 1280;
        const size_t rb = tl_quant_row_bytes(type, C);
        uint8_t *mat = malloc(rb * R);
        float *y = malloc(sizeof(float) * R), *row = malloc(sizeof(float) * C);
        random_blocks(&r, type, mat, rb * R / bb);
        tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 1, 0};
        CHECK(tl_wmat_row_bytes(&W) == rb);
        for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k)) continue;
            tl_wmat_matvec((tl_kernel)k, &W, x, y);
            for (int i = 0; i < R; i++) {
                tl_gguf_dequant_row(type, mat + rb * (size_t)i, w, C);
                double ref = 0, mag = 0;
                for (int j = 0; j < C; j++) ref += (double)w[j] * x[j], mag += fabs((double)w[j] * x[j]);
                CHECK_MSG(fabs(y[i] - ref) <= 2e-5 * mag, "%s matvec %s row %d: %.9g vs %.9g",
                          tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), i, y[i], ref);
            }
        }
        tl_wmat_row_f32(&W, 36, row);
        tl_gguf_dequant_row(type, mat + rb * 36, w, C);
        CHECK(!memcmp(row, w, sizeof(float) * C));
        free(mat);
        free(y);
        free(row);
    }
    CHECK(checked >= (int)N_QTYPES * 4 * 2);
    free(blocks);
    free(x);
    free(w);
}

static const uint32_t Q8TYPES[] = {TL_GGML_Q8_0, TL_GGML_Q4_0, TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};

/* x's value as rounded by tl_q8_quantize (layout: matvec_quant_i8.h) */
static double q8_value(uint32_t type, const uint8_t *xq, int n, int i) {
    const float *d = (const float *)(const void *)(xq + n);
    return (double)d[i / (type == TL_GGML_Q8_0 || type == TL_GGML_Q4_0 ? 32 : 256)] * ((const int8_t *)xq)[i];
}

/* int8 activations.  The rounding: every element within half a step (d / 2)
 * of x, d = max|x| / 127 per block, the stored sums those of q.  The portable
 * C kernel: within 1e-5 of sum |w x^| of "dequantized row times rounded x" in
 * double (a block's integer sum is exact; the rest is fp32 summation).  Every
 * SIMD kernel on this CPU, for 1 to 5 tokens at once: the K-quants equal to
 * the C kernel bit for bit (the same integer sums, the same fp32 operations),
 * Q8_0/Q4_0 within 1e-5 of sum |w x^| (the per-block terms summed in
 * another order).  A non-finite x gives NaN. */
/* tl_q8_quantize's AVX-512 code against the portable C code, byte for byte
 * (scales, int8 values and block sums), on both layouts: random blocks of
 * every magnitude, a zero block, blocks with an infinity and a NaN, values
 * that land exactly on +-k.5 (ties round away from zero), -0.0 and subnormals. */
static void test_q8_quantize_isa(tl_test_ctx *t) {
    if (!tl_q8_isa_supported(TL_Q8_AVX512VNNI)) return;
    tl_rng r;
    tl_rng_seed(&r, 41);
    static const uint32_t types[] = {TL_GGML_Q4_0, TL_GGML_Q8_0, TL_GGML_Q4_K, TL_GGML_Q6_K};
    static const int lens[] = {256, 2048, 5632};
    enum { MAXN = 5632 };
    float *x = malloc(sizeof(float) * MAXN);
    uint8_t *a = malloc(2 * MAXN), *b = malloc(2 * MAXN);
    int compared = 0;
    for (int rep = 0; rep < 4; rep++)
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                const int n = lens[li];
                for (int i = 0; i < n; i++) x[i] = (float)(tl_rng_normal(&r) * pow(10.0, (i / 32) % 9 - 4));
                memset(x + 32, 0, sizeof(float) * 32);        /* a zero block */
                for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) + 0.5f; /* amax 15.5: id not 1, ties elsewhere */
                for (int i = 96; i < 128; i++) x[i] = (float)((i % 255) - 127) * (i & 1 ? 1.0f : -1.0f);
                x[97] = 127.0f;                              /* amax 127: id 1, x itself rounded */
                for (int i = 99; i < 128; i += 4) x[i] = (float)(i - 112) + 0.5f; /* exact ties */
                x[128] = -0.0f;
                x[129] = 1e-42f;                             /* subnormal */
                if (n > 256) {
                    x[300] = INFINITY;                       /* block with an infinity: q 0, d NaN */
                    x[600] = NAN;
                    x[1000] = -INFINITY;
                }
                const size_t bytes = tl_q8_bytes(types[ti], n);
                memset(a, 0xa5, bytes);
                memset(b, 0x5a, bytes);
                tl_q8_quantize_isa(TL_Q8_C, types[ti], x, n, a);
                tl_q8_quantize_isa(TL_Q8_AVX512VNNI, types[ti], x, n, b);
                CHECK_MSG(!memcmp(a, b, bytes), "type %u n %d: the AVX-512 rounding differs from C", types[ti], n);
                compared++;
            }
    CHECK(compared == 48);
    free(x);
    free(a);
    free(b);
}

static void test_q8_kernels(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 23);
    static const int lens32[] = {32, 96, 160, 288, 320, 352, 1056, 5632};
    static const int lensK[] = {256, 768, 1280, 5632};
    enum { MAXN = 5632, NT = 5 };
    uint8_t *blocks = malloc(MAXN / 32 * 34 + 64);
    float *x = malloc(sizeof(float) * MAXN * NT), *w = malloc(sizeof(float) * MAXN);
    const size_t xs = MAXN * 2;
    uint8_t *xq = malloc(xs * NT);
    int checked = 0;
    float ref[NT], got[NT];
    for (size_t ti = 0; ti < sizeof Q8TYPES / sizeof Q8TYPES[0]; ti++) {
        const uint32_t type = Q8TYPES[ti];
        uint32_t be, bb;
        tl_ggml_type_block(type, &be, &bb);
        const int *lens = be == 256 ? lensK : lens32;
        const int nl = be == 256 ? 4 : 8;
        for (int li = 0; li < nl; li++) {
            const int n = lens[li];
            for (int j = 0; j < n * NT; j++) x[j] = (float)(tl_rng_normal(&r) * (1 + (j / 32) % 7));
            if (li == 1) memset(x + 32, 0, sizeof(float) * 32); /* an all-zero block: d = 0 */
            random_blocks(&r, type, blocks, (size_t)n / be);
            tl_gguf_dequant_row(type, blocks, w, (size_t)n);
            CHECK(tl_q8_bytes(type, n) <= xs);
            double mag[NT];
            for (int j = 0; j < NT; j++) {
                const float *xj = x + (size_t)j * n;
                uint8_t *qj = xq + (size_t)j * xs;
                tl_q8_quantize(type, xj, n, qj);
                const float *d = (const float *)(const void *)(qj + n);
                int ok = 1;
                for (int i = 0; i < n; i++) {
                    const int blk = be == 256 ? 256 : 32, b0 = i / blk * blk;
                    float amax = 0;
                    for (int m = b0; m < b0 + blk; m++) amax = fabsf(xj[m]) > amax ? fabsf(xj[m]) : amax;
                    ok &= d[i / blk] == amax / 127 && fabs(q8_value(type, qj, n, i) - xj[i]) <= amax / 254 * 1.0001;
                }
                if (be == 256) {
                    const int16_t *bs = (const int16_t *)(const void *)(d + n / 256);
                    for (int g = 0; g < n / 16; g++) {
                        int s = 0;
                        for (int i = 0; i < 16; i++) s += ((const int8_t *)qj)[16 * g + i];
                        ok &= bs[g] == s;
                    }
                } else {
                    const int32_t *sm = (const int32_t *)(const void *)(d + n / 32);
                    for (int g = 0; g < n / 32; g++) {
                        int s = 0;
                        for (int i = 0; i < 32; i++) s += ((const int8_t *)qj)[32 * g + i];
                        ok &= sm[g] == s;
                    }
                }
                CHECK_MSG(ok, "%s n=%d: the rounding of x", tl_ggml_type_name(type), n);
                double e = 0;
                mag[j] = 0;
                for (int i = 0; i < n; i++) {
                    double p = (double)w[i] * q8_value(type, qj, n, i);
                    e += p, mag[j] += fabs(p);
                }
                tl_q8_dot(TL_Q8_C, type, blocks, qj, 0, 1, n, &ref[j], 0);
                CHECK_MSG(fabs(ref[j] - e) <= 1e-5 * mag[j], "%s n=%d: C kernel %.9g, double %.9g",
                          tl_ggml_type_name(type), n, ref[j], e);
            }
            for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
                if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
                for (int nt = 1; nt <= NT; nt++) {
                    tl_q8_dot((tl_q8_isa)i, type, blocks, xq, xs, nt, n, got, 1);
                    for (int j = 0; j < nt; j++) {
                        const int same = be == 256 ? !memcmp(&got[j], &ref[j], sizeof(float))
                                                   : fabs(got[j] - ref[j]) <= 1e-5 * mag[j];
                        CHECK_MSG(same, "%s %s n=%d tokens %d/%d: %.9g, C %.9g", tl_ggml_type_name(type),
                                  tl_q8_isa_name((tl_q8_isa)i), n, j, nt, got[j], ref[j]);
                    }
                    checked++;
                }
            }
        }
        /* a NaN or an infinity in x: NaN, whichever ISA */
        const int n = be == 256 ? 512 : 64;
        for (int j = 0; j < n; j++) x[j] = 1;
        x[n - 3] = NAN;
        tl_q8_quantize(type, x, n, xq);
        for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
            if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
            tl_q8_dot((tl_q8_isa)i, type, blocks, xq, 0, 1, n, got, 1);
            CHECK_MSG(isnan(got[0]), "%s %s: %g from a NaN", tl_ggml_type_name(type), tl_q8_isa_name((tl_q8_isa)i),
                      got[0]);
        }
    }
    CHECK(checked >= 5 * 4 * NT * 2); /* C and at least one SIMD ISA on x86 */
    CHECK(tl_q8_isa_for(TL_KERNEL_SCALAR) == TL_Q8_C);
    free(blocks);
    free(x);
    free(w);
    free(xq);
}

/* Whole matrices with int8 activations: the threaded mat-vec (x rounded once
 * per product) equals tl_q8_dot row by row, and the batched product
 * (tl_wmat_gemm_k: 4 tokens per weight load, rows split across threads)
 * equals the mat-vec of each token bit for bit, with beta 0 and 1.  Also
 * the mixed case of one product over a Q4_K and a Q6_K matrix (Q4_K_M's
 * Q/K/V) and a Q8_0 one. */
static void test_q8_matvec_gemm(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 29);
    enum { R = 37, C = 1280, N = 7 };
    float *x = malloc(sizeof(float) * C * N), *y = malloc(sizeof(float) * R * N), *yv = malloc(sizeof(float) * R * N);
    uint8_t *xq = malloc(tl_q8_bytes(TL_GGML_Q4_K, C) + tl_q8_bytes(TL_GGML_Q8_0, C));
    for (int i = 0; i < C * N; i++) x[i] = (float)tl_rng_normal(&r);
    uint8_t *mats[3] = {NULL, NULL, NULL};
    tl_wmat W[3];
    static const uint32_t types[3] = {TL_GGML_Q4_K, TL_GGML_Q6_K, TL_GGML_Q8_0};
    for (size_t ti = 0; ti < sizeof Q8TYPES / sizeof Q8TYPES[0]; ti++) {
        const uint32_t type = Q8TYPES[ti];
        uint32_t be, bb;
        tl_ggml_type_block(type, &be, &bb);
        const size_t rb = tl_quant_row_bytes(type, C);
        uint8_t *mat = malloc(rb * R);
        random_blocks(&r, type, mat, rb * R / bb);
        tl_wmat M = {TL_DT_I32, mat, R, C, type, 0, 0, 0};
        for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k)) continue;
            const tl_q8_isa isa = tl_q8_isa_for((tl_kernel)k);
            int ok = 1;
            for (int i = 0; i < N; i++) {
                tl_wmat_matvec((tl_kernel)k, &M, x + (size_t)i * C, yv + (size_t)i * R);
                tl_q8_quantize(type, x + (size_t)i * C, C, xq);
                for (int j = 0; j < R; j++) {
                    float v;
                    tl_q8_dot(isa, type, mat + rb * (size_t)j, xq, 0, 1, C, &v, 0);
                    ok &= !memcmp(&v, yv + (size_t)i * R + j, sizeof v);
                }
            }
            CHECK_MSG(ok, "%s %s: mat-vec against tl_q8_dot", tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k));
            for (int i = 0; i < R * N; i++) y[i] = 0.5f;
            tl_wmat_gemm_k((tl_kernel)k, &M, x, N, y, 1.0f, NULL, 0);
            for (int i = 0; i < R * N; i++) ok &= y[i] == yv[i] + 0.5f;
            tl_wmat_gemm_k((tl_kernel)k, &M, x, N, y, 0.0f, NULL, 0);
            CHECK_MSG(ok && !memcmp(y, yv, sizeof(float) * R * N), "%s %s: gemm against mat-vec",
                      tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k));
        }
        for (int j = 0; j < 3; j++)
            if (type == types[j]) mats[j] = mat, W[j] = M;
        if (type != types[0] && type != types[1] && type != types[2]) free(mat);
    }
    float *ys[3] = {y, y + R, y + 2 * R};
    const tl_wmat *Wp[3] = {&W[0], &W[1], &W[2]};
    tl_wmat_matvec_multi(TL_KERNEL_AUTO, Wp, ys, 3, x);
    for (int j = 0; j < 3; j++) {
        tl_wmat_matvec(TL_KERNEL_AUTO, &W[j], x, yv);
        CHECK_MSG(!memcmp(ys[j], yv, sizeof(float) * R), "multi mat-vec, matrix %d", j);
    }
    for (int j = 0; j < 3; j++) free(mats[j]);
    free(x);
    free(y);
    free(yv);
    free(xq);
}

/* The repacked kernels at the extremes of their integer sums.  Q4_0: nibbles
 * all 15 (the high ones enter a chain as 16 times their value, shifted back per
 * block), all 0, only high or only low ones; Q8_0: all -128 (stored unsigned as
 * 0; the 256-bit kernels' |w| = 128), all 127, mixed.  Against x rounded to
 * +-127 in whole blocks of one sign or of mixed signs: every ISA equals the C
 * kernel on the file's rows bit for bit. */
static void test_q8_packed_extremes(tl_test_ctx *t) {
    enum { R = 16, C = 256, NB = C / 32 };
    static const uint8_t fill4[R] = {0xff, 0x00, 0xf0, 0x0f, 0xff, 0x88, 0x7f, 0xf7,
                                     0xff, 0x00, 0xf0, 0x0f, 0x1e, 0xe1, 0x80, 0x08};
    static const uint8_t fill8[R] = {0x80, 0x7f, 0x81, 0x00, 0x80, 0x7f, 0xff, 0x01,
                                     0x80, 0x80, 0x7f, 0x7f, 0x80, 0x01, 0xc0, 0x40};
    for (int ty = 0; ty < 2; ty++) {
        const uint32_t type = ty ? TL_GGML_Q8_0 : TL_GGML_Q4_0;
        const size_t rb = tl_quant_row_bytes(type, C), bb = ty ? 34 : 18;
        uint8_t mat[R * NB * 34];
        uint8_t *pk = tl_alloc(sizeof mat);
        for (int r = 0; r < R; r++)
            for (int k = 0; k < NB; k++) {
                uint8_t *b = mat + rb * (size_t)r + bb * (size_t)k;
                b[0] = 0x00, b[1] = r < 8 ? 0x3c : 0xbc; /* d = 1 or -1 */
                memset(b + 2, ty ? fill8[r] : fill4[r], bb - 2);
                if (ty && r == 14) b[2 + k % 32] = 0x80; /* one -128 among others */
            }
        tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0};
        tl_q8_pack(&W, pk);
        tl_wmat P = W;
        P.data = pk;
        P.packed = 1;
        float x[C], ref[R], y[R];
        _Alignas(64) uint8_t xq[4096];
        for (int v = 0; v < 3; v++) {
            for (int i = 0; i < C; i++) {
                const int k = i / 32;
                /* blocks all +1, all -1, signs alternating, low half one sign and high half the other */
                const float s = k % 4 == 0 ? 1 : k % 4 == 1 ? -1 : k % 4 == 2 ? (i % 2 ? -1 : 1) : (i % 32 < 16 ? 1 : -1);
                x[i] = v == 0 ? s : v == 1 ? -s : s * (float)(1 + i % 7);
            }
            tl_q8_quantize(type, x, C, xq);
            for (int j = 0; j < R; j++) tl_q8_dot(TL_Q8_C, type, mat + rb * (size_t)j, xq, 0, 1, C, ref + j, 0);
            for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
                if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
                tl_q8_rows_packed((tl_q8_isa)i, &P, xq, y, 0, R);
                CHECK_MSG(!memcmp(y, ref, sizeof y), "%s %s, x pattern %d: repacked at the extremes (row 0: %g, want %g)",
                          tl_ggml_type_name(type), tl_q8_isa_name((tl_q8_isa)i), v, y[0], ref[0]);
            }
        }
        tl_free(pk);
    }
}

/* Q8_0 / Q4_0 matrices repacked for decode (tl_q8_pack): every row comes back
 * byte for byte (tl_q8_unpack_row) and as the same floats (tl_wmat_row_f32);
 * with int8 activations every ISA's product of the repacked matrix (mat-vec
 * through tl_wmat_matvec and tl_q8_rows_packed, the batched product with beta
 * 0 and 1) equals the portable C kernel on the file's rows bit for bit; with
 * fp32 activations it equals the unpacked matrix's product bit for bit; a NaN
 * in x gives NaN.  Shapes that cannot be repacked are refused. */
static void test_q8_packed(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 31);
    enum { R = 48, N = 70 }; /* 70 tokens: the AMX-INT8 tiles too (64 and more for repacked weights), with a part token group */
    static const int cols[] = {64, 320, 1280, 5632};
    static const uint32_t types[] = {TL_GGML_Q8_0, TL_GGML_Q4_0};
    float *x = malloc(sizeof(float) * 5632 * N), *y = malloc(sizeof(float) * R * N);
    float *ref = malloc(sizeof(float) * R * N), *row = malloc(sizeof(float) * 5632 * 2);
    const size_t xs = (tl_q8_bytes(TL_GGML_Q8_0, 5632) + 63) & ~(size_t)63;
    uint8_t *xq = malloc(xs * N), *back = malloc(5632 / 32 * 34);
    int simd = 0;
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++) {
            const uint32_t type = types[ti];
            const int C = cols[ci];
            const size_t rb = tl_quant_row_bytes(type, C);
            uint8_t *mat = malloc(rb * R), *pk = tl_alloc(rb * R);
            random_blocks(&r, type, mat, rb * R / (type == TL_GGML_Q8_0 ? 34 : 18));
            for (int i = 0; i < C * N; i++) x[i] = (float)(tl_rng_normal(&r) * (1 + (i / 32) % 5));
            memset(x + 32, 0, sizeof(float) * 32); /* an all-zero block of x: d = 0 */
            tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0}, P;
            int ok = tl_test_repack_rows(t, &W, pk, &P, back, row);
            CHECK_MSG(ok, "%s C=%d: rows back from the repacked layout", tl_ggml_type_name(type), C);
            for (int i = 0; i < N; i++) {
                tl_q8_quantize(type, x + (size_t)i * C, C, xq + (size_t)i * xs);
                for (int j = 0; j < R; j++)
                    tl_q8_dot(TL_Q8_C, type, mat + rb * (size_t)j, xq + (size_t)i * xs, 0, 1, C, ref + (size_t)i * R + j, 0);
            }
            for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
                if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
                simd += i == TL_Q8_AVX512VNNI;
                ok = 1;
                for (int j = 0; j < N; j++) {
                    tl_q8_rows_packed((tl_q8_isa)i, &P, xq + (size_t)j * xs, y + (size_t)j * R, 0, R);
                    ok &= !memcmp(y + (size_t)j * R, ref + (size_t)j * R, sizeof(float) * R);
                }
                CHECK_MSG(ok, "%s %s C=%d: repacked rows against the C kernel", tl_ggml_type_name(type),
                          tl_q8_isa_name((tl_q8_isa)i), C);
            }
            for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
                if (!tl_kernel_supported((tl_kernel)k)) continue;
                ok = 1;
                for (int j = 0; j < N; j++) {
                    tl_wmat_matvec((tl_kernel)k, &P, x + (size_t)j * C, y);
                    ok &= !memcmp(y, ref + (size_t)j * R, sizeof(float) * R);
                }
                CHECK_MSG(ok, "%s %s C=%d: repacked mat-vec", tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                for (int j = 0; j < R * N; j++) y[j] = 0.5f;
                tl_wmat_gemm_k((tl_kernel)k, &P, x, N, y, 1.0f, NULL, 0);
                for (int j = 0; j < R * N; j++) ok &= y[j] == ref[j] + 0.5f;
                tl_wmat_gemm_k((tl_kernel)k, &P, x, N, y, 0.0f, NULL, 0);
                ok &= !memcmp(y, ref, sizeof(float) * R * N);
                for (int nt = 3; nt <= 9; nt += 3) { /* below and above the group pairs' token counts */
                    tl_wmat_gemm_k((tl_kernel)k, &P, x, nt, y, 0.0f, NULL, 0);
                    ok &= !memcmp(y, ref, sizeof(float) * R * (size_t)nt);
                }
                CHECK_MSG(ok, "%s %s C=%d: repacked gemm", tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                W.f32_act = P.f32_act = 1;
                tl_wmat_matvec((tl_kernel)k, &W, x, row);
                tl_wmat_matvec((tl_kernel)k, &P, x, y);
                CHECK_MSG(!memcmp(y, row, sizeof(float) * R), "%s %s C=%d: repacked, fp32 x",
                          tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                W.f32_act = P.f32_act = 0;
            }
            x[C - 3] = NAN;
            tl_wmat_matvec(TL_KERNEL_AUTO, &P, x, y);
            for (int j = 0; j < R; j++) CHECK_MSG(isnan(y[j]), "%s C=%d: %g from a NaN", tl_ggml_type_name(type), C, y[j]);
            free(mat);
            tl_free(pk);
        }
    CHECK(!tl_q8_isa_supported(TL_Q8_AVX512VNNI) || simd == 8);
    uint8_t dummy[64];
    const tl_wmat odd_rows = {TL_DT_I32, dummy, 40, 64, TL_GGML_Q8_0, 0, 0, 0},
                  odd_blocks = {TL_DT_I32, dummy, 16, 96, TL_GGML_Q4_0, 0, 0, 0},
                  q5_1 = {TL_DT_I32, dummy, 16, 256, TL_GGML_Q5_1, 0, 0, 0}; /* the K-quants: test_kpack.c */
    CHECK(!tl_q8_packable(&odd_rows) && !tl_q8_packable(&odd_blocks) && !tl_q8_packable(&q5_1));
    free(x);
    free(y);
    free(ref);
    free(row);
    free(xq);
    free(back);
}

/* tl_wmat_unpermute_out puts GGUF's interleaved rows of each head back in HF
 * order: stored row 2j + c of a head is HF row c * hd/2 + j. */
static void test_unpermute_out(tl_test_ctx *t) {
    enum { H = 3, HD = 8, N = 2 };
    float y[N * H * HD];
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++)
            for (int s = 0; s < HD; s++) { /* value = the HF row index it belongs to */
                int hf = (s % 2) * (HD / 2) + s / 2;
                y[i * H * HD + h * HD + s] = (float)(1000 * i + h * HD + hf);
            }
    tl_wmat W = {TL_DT_F32, NULL, H * HD, 4, 0, H, 0, 0};
    tl_wmat_unpermute_out(&W, y, N);
    int ok = 1;
    for (int i = 0; i < N; i++)
        for (int r = 0; r < H * HD; r++) ok &= y[i * H * HD + r] == (float)(1000 * i + r);
    CHECK(ok);
    W.perm_heads = 0; /* HF matrices: untouched */
    y[0] = 5;
    tl_wmat_unpermute_out(&W, y, N);
    CHECK(y[0] == 5);
}

static float *read_f32(tl_test_ctx *t, const char *name, size_t want) {
    char p[512], *buf;
    size_t len;
    tl_error e;
    snprintf(p, sizeof p, "%s/gguf/%s", tl_test_fixture_dir(), name);
    if (tl_read_file(p, 1u << 26, &buf, &len, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return NULL;
    }
    if (len != want * sizeof(float)) {
        CHECK_MSG(0, "%s: %zu bytes, expected %zu", p, len, want * sizeof(float));
        free(buf);
        return NULL;
    }
    return (float *)(void *)buf;
}

/* logits of the 8 fixture tokens from m, batched (the prompt pass: dequantized
 * tiles, or AMX for BF16) and one token at a time (the decode kernels) */
static void check_model(tl_test_ctx *t, tl_infer_model *m, const float *want, const char *what, double tol) {
    static const int toks[8] = {1, 7, 18, 19, 20, 3, 25, 9};
    tl_infer_state s;
    tl_error e;
    if (tl_infer_state_init(&s, m, 16, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    float all[8 * 32], step[8 * 32];
    CHECK(tl_infer_forward(&s, toks, 8, all, &e) == 0);
    tl_infer_truncate(&s, 0);
    for (int i = 0; i < 8; i++) {
        CHECK(tl_infer_forward(&s, toks + i, 1, NULL, &e) == 0);
        memcpy(step + i * 32, s.logits, sizeof(float) * 32);
    }
    double eb = tl_test_rel_err(all, want, 8 * 32), es = tl_test_rel_err(step, want, 8 * 32);
    CHECK_MSG(eb < tol && es < tol, "%s (kernel %s): logits' relative error %g batched, %g decoded (tolerance %g)",
              what, tl_kernel_name(m->kernel), eb, es, tol);
    tl_infer_state_free(&s);
}

/* Whole models: the mixed-type tiny_llama.gguf (F32 q, F16 k, BF16 v, Q4_0..Q8_0)
 * and tiny256_<TYPE>.gguf (every matrix of one type), under every kernel family:
 * with fp32 activations within 1e-4 (relative to the largest logit) of the
 * float64 reference.  A q/k row order left in GGUF's layout, or a kernel
 * reading a block wrong, is off by far more.  With int8 activations (the
 * default) within 5e-2: rounding x to 8 bits per block puts these random
 * 1-layer models 0.2-3% off (measured 2026-12-06: Q6_K 2.9%, Q8_0 and Q5_K 2.3%,
 * Q4_0 1.1%, the mixed file 1.6%, Q4_K 0.2%); test_q8_kernels bounds the
 * kernels themselves much tighter. */
static void test_gguf_models_logits(tl_test_ctx *t) {
    static const char *const names[] = {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
    for (int f = -1; f < (int)(sizeof names / sizeof names[0]); f++) {
        char model[512], lg[64];
        if (f < 0) {
            snprintf(model, sizeof model, "%s/gguf/tiny_llama.gguf", tl_test_fixture_dir());
            snprintf(lg, sizeof lg, "tiny_llama_logits.f32");
        } else {
            snprintf(model, sizeof model, "%s/gguf/tiny256_%s.gguf", tl_test_fixture_dir(), names[f]);
            snprintf(lg, sizeof lg, "tiny256_%s.logits", names[f]);
        }
        float *want = read_f32(t, lg, 8 * 32);
        tl_infer_model m;
        tl_error e;
        if (!want || tl_infer_load(&m, model, &e)) {
            CHECK_MSG(0, "%s: %s", model, want ? e.msg : "no logits");
            free(want);
            continue;
        }
        CHECK(m.tok != NULL && m.chat_template != NULL && m.gguf != NULL);
        for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k) || tl_kernel_rounds_bf16((tl_kernel)k)) continue;
            tl_infer_set_kernel(&m, (tl_kernel)k, &e);
            tl_infer_set_f32_activations(&m, 1);
            check_model(t, &m, want, model, 1e-4);
            tl_infer_set_f32_activations(&m, 0);
            check_model(t, &m, want, model, 5e-2);
        }
        tl_infer_free(&m);
        free(want);
    }
}

/* The same GGUF run in place and through `convert --to-hf` (dequantized to an
 * F32 HF directory, q/k rows reordered there) gives the same logits. */
static void test_gguf_in_place_vs_hf_dir(tl_test_ctx *t) {
    char model[512], dir[512];
    snprintf(model, sizeof model, "%s/gguf/tiny256_Q4_K.gguf", tl_test_fixture_dir());
    snprintf(dir, sizeof dir, "%s/tiny256_q4k_hf", tl_test_tmpdir());
    tl_error e;
    tl_gguf *g = tl_gguf_open(model, &e);
    CHECK_MSG(g && tl_gguf_to_hf_dir(g, dir, &e) == 0, "%s", e.msg);
    tl_gguf_close(g);
    tl_infer_model a, b;
    if (tl_infer_load(&a, model, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    if (tl_infer_load(&b, dir, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        tl_infer_free(&a);
        return;
    }
    tl_infer_set_f32_activations(&a, 1); /* the same products as the F32 copy's, up to summation order */
    CHECK(b.gguf == NULL && b.layers[0].wq.perm_heads == 0 && a.layers[0].wq.perm_heads == 4 &&
          a.layers[0].wk.perm_heads == 2 && a.layers[0].wq.quant == TL_GGML_Q4_K);
    CHECK(a.decode_bytes < b.decode_bytes / 6); /* 4.5 bits against 32 */
    tl_infer_state sa, sb;
    static const int toks[8] = {1, 7, 18, 19, 20, 3, 25, 9};
    if (!tl_infer_state_init(&sa, &a, 16, &e) && !tl_infer_state_init(&sb, &b, 16, &e)) {
        float la[8 * 32], lb[8 * 32];
        CHECK(tl_infer_forward(&sa, toks, 8, la, &e) == 0 && tl_infer_forward(&sb, toks, 8, lb, &e) == 0);
        CHECK_MSG(tl_test_rel_err(la, lb, 8 * 32) < 1e-5, "in place vs HF dir: %g", tl_test_rel_err(la, lb, 8 * 32));
        tl_infer_state_free(&sa);
        tl_infer_state_free(&sb);
    }
    tl_infer_free(&a);
    tl_infer_free(&b);
}

/* Files the engine must refuse with the file and the tensor named. */
static void test_gguf_infer_refusals(tl_test_ctx *t) {
    char model[512];
    tl_infer_model m;
    tl_error e;
    snprintf(model, sizeof model, "%s/gguf/quants.gguf", tl_test_fixture_dir());
    CHECK(tl_infer_load(&m, model, &e) == -1 && strstr(e.msg, "quants.gguf") && strstr(e.msg, "architecture"));
    snprintf(model, sizeof model, "%s/gguf/tiny_llama_kv.txt", tl_test_fixture_dir());
    CHECK(tl_infer_load(&m, model, &e) == -1 && strstr(e.msg, "tiny_llama_kv.txt"));
}

/* Templates recognised by their text (fragments of the published ones), and the
 * three formats rendered as their model cards write them. */
static void test_chat_templates(tl_test_ctx *t) {
    CHECK(tl_chat_template_detect("{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}") ==
          TL_CHAT_ZEPHYR);
    CHECK(tl_chat_template_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}") == TL_CHAT_LLAMA2);
    CHECK(tl_chat_template_detect("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}") ==
          TL_CHAT_CHATML);
    CHECK(tl_chat_template_detect("{{ '<|user|>\\n' + message['content'] }}") == TL_CHAT_UNKNOWN);
    CHECK(tl_chat_template_detect("{% for m in messages %}{{ m['content'] }}{% endfor %}") == TL_CHAT_UNKNOWN);
    tl_chat_format f;
    tl_error e;
    CHECK(tl_chat_format_choose(NULL, NULL, "m", &f, &e) == 0 && f == TL_CHAT_ZEPHYR);
    CHECK(tl_chat_format_choose("chatml", "{{ x }}", "m", &f, &e) == 0 && f == TL_CHAT_CHATML);
    CHECK(tl_chat_format_choose("tinyllama", NULL, "m", &f, &e) == 0 && f == TL_CHAT_ZEPHYR);
    CHECK(tl_chat_format_choose(NULL, "{{ x }}", "my.gguf", &f, &e) == -1 && strstr(e.msg, "my.gguf") &&
          strstr(e.msg, "--chat-template"));
    CHECK(tl_chat_format_choose("jinja", NULL, "m", &f, &e) == -1 && strstr(e.msg, "'jinja'"));
    char u1[] = "Hi", a1[] = "Hello!", u2[] = "Joke?";
    tl_chat_turn turns[2] = {{u1, a1}, {u2, NULL}};
    static const char *const want[3] = {
        "<|system|>\nBe kind.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nJoke?</s>\n<|assistant|>\n",
        "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Joke? [/INST]",
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nJoke?<|im_end|>\n<|im_start|>assistant\n"};
    for (int i = 0; i < 3; i++) {
        size_t len;
        char *s = tl_chat_render((tl_chat_format)(TL_CHAT_ZEPHYR + i), "Be kind.", turns, 0, 2, &len);
        CHECK_MSG(s && len == strlen(want[i]) && !memcmp(s, want[i], len), "%s: got '%s'",
                  tl_chat_format_name((tl_chat_format)(TL_CHAT_ZEPHYR + i)), s ? s : "(null)");
        free(s);
    }
    size_t len; /* dropping the oldest turn: Llama 2's system prompt moves to the first one kept */
    char *s = tl_chat_render(TL_CHAT_LLAMA2, "S", turns, 1, 2, &len);
    CHECK(s && !strcmp(s, "[INST] <<SYS>>\nS\n<</SYS>>\n\nJoke? [/INST]"));
    free(s);
}

const tl_test tests_infer_gguf[] = {
    {"chat_templates", test_chat_templates},
    {"quant_dot_kernels", test_quant_dot_kernels},
    {"q8_quantize_isa", test_q8_quantize_isa},
    {"q8_kernels", test_q8_kernels},
    {"q8_matvec_gemm", test_q8_matvec_gemm},
    {"q8_packed", test_q8_packed},
    {"q8_packed_extremes", test_q8_packed_extremes},
    {"unpermute_out", test_unpermute_out},
    {"gguf_models_logits", test_gguf_models_logits},
    {"gguf_in_place_vs_hf_dir", test_gguf_in_place_vs_hf_dir},
    {"gguf_infer_refusals", test_gguf_infer_refusals},
    {NULL, NULL},
};

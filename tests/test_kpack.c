/* test_kpack.c - Q4_K, Q5_K and Q6_K matrices repacked for decode
 * (matvec_quant_kpack.h): the layout gives every row back, and every kernel on
 * it (portable C, AVX2, AVX-VNNI and AVX512-VNNI where the CPU has them) gives the bits of the
 * portable C kernel on the file's rows, through every path that takes a
 * repacked matrix (mat-vec, the prompt pass's batched product and tiles, fp32
 * activations). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gguf.h"
#include "harness.h"
#include "matvec_quant.h"
#include "matvec_quant_kpack.h"
#include "repack_check.h"
#include "rng.h"

/* random block bytes, the f16 scales finite (2^-12 .. 2^-2, either sign);
 * extreme: every quant, scale and min at its largest (the top bits of the
 * 6-bit scales set, the largest integer sums) */
/* An R x C matrix of type in file order (malloc) and room for it repacked
 * (tl_alloc: aligned); returns the row bytes. */
static size_t matrix_pair(uint32_t type, int R, int C, uint8_t **mat, uint8_t **pk) {
    const size_t rb = tl_quant_row_bytes(type, C);
    *mat = malloc(rb * (size_t)R);
    *pk = tl_alloc(rb * (size_t)R);
    return rb;
}

static void fill(tl_rng *r, uint32_t type, uint8_t *b, size_t n_blocks, int extreme) {
    const size_t bb = tl_quant_row_bytes(type, 256);
    for (size_t i = 0; i < n_blocks * bb; i++) b[i] = extreme ? 0xff : (uint8_t)tl_rng_below(r, 256);
    for (size_t k = 0; k < n_blocks; k++) {
        uint8_t *p = b + k * bb;
        if (extreme && type == TL_GGML_Q6_K) memset(p + 192, 0x80, 16); /* scale -128 */
        const int ns = type == TL_GGML_Q6_K ? 1 : 2;
        uint8_t *s = type == TL_GGML_Q6_K ? p + bb - 2 : p;
        for (int j = 0; j < ns; j++) {
            uint16_t h = (uint16_t)(tl_rng_below(r, 2) << 15 | (3 + tl_rng_below(r, 10)) << 10 | tl_rng_below(r, 1024));
            memcpy(s + 2 * j, &h, 2);
        }
    }
}

static void test_kq_packed(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 47);
    /* 70 tokens: the batched product in groups of 4 with a part group, and
     * the AMX-INT8 tiles (64 and more for repacked weights) where present */
    enum { R = 48, N = 70, CMAX = 5632 };
    static const int cols[] = {256, 2048, 5632};
    static const uint32_t types[] = {TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};
    float *x = malloc(sizeof(float) * CMAX * N), *y = malloc(sizeof(float) * R * N);
    float *ref = malloc(sizeof(float) * R * N), *row = malloc(sizeof(float) * CMAX * 2);
    const size_t xs = (tl_q8_bytes(TL_GGML_Q4_K, CMAX) + 63) & ~(size_t)63;
    uint8_t *xq = malloc(xs * N), *back = malloc(CMAX / 256 * 210);
    int simd = 0;
    for (int extreme = 0; extreme < 2; extreme++)
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++) {
                const uint32_t type = types[ti];
                const int C = cols[ci];
                uint8_t *mat, *pk;
                const size_t rb = matrix_pair(type, R, C, &mat, &pk);
                fill(&r, type, mat, (size_t)R * (size_t)C / 256, extreme);
                for (int i = 0; i < C * N; i++)
                    x[i] = extreme ? 3.0f : (float)(tl_rng_normal(&r) * (1 + (i / 256) % 5));
                if (!extreme) memset(x + 256 * (C / 256 - 1), 0, sizeof(float) * 256); /* a zero block: d = 0 */
                tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0}, P;
                int ok = tl_test_repack_rows(t, &W, pk, &P, back, row);
                CHECK_MSG(ok, "%s C=%d: rows back from the repacked layout", tl_ggml_type_name(type), C);
                for (int i = 0; i < N; i++) {
                    tl_q8_quantize(type, x + (size_t)i * C, C, xq + (size_t)i * xs);
                    for (int j = 0; j < R; j++)
                        tl_q8_dot(TL_Q8_C, type, mat + rb * (size_t)j, xq + (size_t)i * xs, 0, 1, C,
                                  ref + (size_t)i * R + j, 0);
                }
                for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
                    if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
                    simd += i == TL_Q8_AVX512VNNI;
                    ok = 1;
                    /* each group with 1..5 tokens at a time (the kernel's token loop, 4 at
                     * a time and the rest), xs apart */
                    for (int g = 0; g < R / 16; g++)
                        for (int nt = 1; nt <= 5; nt++) {
                            float o[5 * 16];
                            tl_kq_packed_dot((tl_q8_isa)i, type, pk + (size_t)g * 16 * rb, xq + xs, xs, nt, C, o, 16);
                            for (int j = 0; j < nt; j++)
                                ok &= !memcmp(o + 16 * j, ref + (size_t)(1 + j) * R + 16 * g, sizeof(float) * 16);
                        }
                    for (int j = 0; j < N; j++) {
                        tl_q8_rows_packed((tl_q8_isa)i, &P, xq + (size_t)j * xs, y + (size_t)j * R, 0, R);
                        ok &= !memcmp(y + (size_t)j * R, ref + (size_t)j * R, sizeof(float) * R);
                    }
                    CHECK_MSG(ok, "%s %s C=%d extreme=%d: repacked rows against the C kernel on the file's rows",
                              tl_ggml_type_name(type), tl_q8_isa_name((tl_q8_isa)i), C, extreme);
                }
                for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++) {
                    if (!tl_kernel_supported((tl_kernel)k)) continue;
                    ok = 1;
                    /* the rows each thread takes depend on the thread count, the bits must not */
                    const int threads = omp_get_max_threads();
                    for (int nth = 1; nth <= 3; nth += 2) {
                        omp_set_num_threads(nth);
                        for (int j = 0; j < N; j += 7) {
                            tl_wmat_matvec((tl_kernel)k, &P, x + (size_t)j * C, y);
                            ok &= !memcmp(y, ref + (size_t)j * R, sizeof(float) * R);
                        }
                    }
                    omp_set_num_threads(threads);
                    CHECK_MSG(ok, "%s %s C=%d: repacked mat-vec", tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                    for (int j = 0; j < R * N; j++) y[j] = 0.5f;
                    tl_wmat_gemm_k((tl_kernel)k, &P, x, N, y, 1.0f, NULL, 0);
                    for (int j = 0; j < R * N; j++) ok &= y[j] == ref[j] + 0.5f;
                    tl_wmat_gemm_k((tl_kernel)k, &P, x, N, y, 0.0f, NULL, 0);
                    ok &= !memcmp(y, ref, sizeof(float) * R * N);
                    tl_wmat_gemm_k((tl_kernel)k, &P, x, 9, y, 0.0f, NULL, 0); /* below the tiles' token count */
                    CHECK_MSG(ok && !memcmp(y, ref, sizeof(float) * R * 9), "%s %s C=%d: repacked gemm",
                              tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                    W.f32_act = P.f32_act = 1;
                    tl_wmat_matvec((tl_kernel)k, &W, x, row);
                    tl_wmat_matvec((tl_kernel)k, &P, x, y);
                    CHECK_MSG(!memcmp(y, row, sizeof(float) * R), "%s %s C=%d: repacked, fp32 x",
                              tl_ggml_type_name(type), tl_kernel_name((tl_kernel)k), C);
                    W.f32_act = P.f32_act = 0;
                }
                x[C - 3] = NAN;
                tl_wmat_matvec(TL_KERNEL_AUTO, &P, x, y);
                for (int j = 0; j < R; j++)
                    CHECK_MSG(isnan(y[j]), "%s C=%d: %g from a NaN", tl_ggml_type_name(type), C, y[j]);
                free(mat);
                tl_free(pk);
            }
    CHECK(!tl_q8_isa_supported(TL_Q8_AVX512VNNI) || simd == 18);
    uint8_t dummy[64];
    const tl_wmat odd_rows = {TL_DT_I32, dummy, 40, 256, TL_GGML_Q4_K, 0, 0, 0},
                  part_block = {TL_DT_I32, dummy, 16, 320, TL_GGML_Q6_K, 0, 0, 0},
                  too_wide = {TL_DT_I32, dummy, 16, 12544, TL_GGML_Q5_K, 0, 0, 0},
                  q5_1 = {TL_DT_I32, dummy, 16, 256, TL_GGML_Q5_1, 0, 0, 0}; /* no repacked layout */
    CHECK(!tl_q8_packable(&odd_rows) && !tl_q8_packable(&part_block) && !tl_q8_packable(&too_wide) &&
          !tl_q8_packable(&q5_1));
    free(x);
    free(y);
    free(ref);
    free(row);
    free(xq);
    free(back);
}

/* weight bytes for the ISA test: 0 random, 1 every byte 0xff (quants 15 / 31 /
 * 63, the largest scales and mins; Q6_K's scales -128), 2 every quant 0 with
 * the largest scales and mins (Q6_K's 127), 3 every quant byte 0x00 or 0xff at
 * random (Q6_K values 0 and 63 side by side) */
static void fill_mode(tl_rng *r, uint32_t type, uint8_t *b, size_t n_blocks, int mode) {
    fill(r, type, b, n_blocks, mode == 1);
    if (mode < 2) return;
    const size_t bb = tl_quant_row_bytes(type, 256);
    for (size_t k = 0; k < n_blocks; k++) {
        uint8_t *p = b + k * bb;
        const size_t q0 = type == TL_GGML_Q6_K ? 0 : 16, q1 = type == TL_GGML_Q6_K ? 192 : bb;
        for (size_t i = q0; i < q1; i++) p[i] = mode == 2 ? 0 : tl_rng_below(r, 2) ? 0xff : 0;
        if (type == TL_GGML_Q6_K)
            memset(p + 192, 127, 16);
        else
            memset(p + 4, 0xff, 12);
    }
}

/* Every ISA's kernel on the repacked layout against the portable one bit for
 * bit (and that against the C kernel on the file's rows), 1-4 tokens, two
 * 16-row groups, widths up to the largest repacked, on the values that bound
 * the 256-bit kernels' int16 sums: the largest quants against activations of
 * +127 or -127 throughout; the prompt pass's unpacked groups as well. */
static void test_kq_isa(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 48);
    enum { R = 32, NT = 4, CMAX = 12288 };
    static const int cols[] = {256, 768, 4096, 12288};
    static const uint32_t types[] = {TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};
    const size_t xs = (tl_q8_bytes(TL_GGML_Q4_K, CMAX) + 63) & ~(size_t)63;
    float *x = malloc(sizeof(float) * CMAX), *ref = malloc(sizeof(float) * R * NT);
    uint8_t *xq = malloc(xs * NT), *u = tl_alloc(2 * tl_kq_unpacked_bytes(TL_GGML_Q6_K, CMAX));
    int runs[TL_Q8_N] = {0}, unpacked = 0;
    enum { NC = sizeof cols / sizeof cols[0] };
    for (size_t tc = 0; tc < NC * (sizeof types / sizeof types[0]); tc++) { /* every type at every width */
        const uint32_t type = types[tc / NC];
        const int C = cols[tc % NC];
        uint8_t *mat, *pk;
        const size_t rb = matrix_pair(type, R, C, &mat, &pk);
        for (int wm = 0; wm < 4; wm++) {
            fill_mode(&r, type, mat, (size_t)R * (size_t)C / 256, wm);
            tl_wmat W = {TL_DT_I32, mat, R, C, type, 0, 0, 0};
            tl_kq_pack(&W, pk);
            for (int xm = 0; xm < 4; xm++) {
                /* token j: random, or +-3 (x rounded to +-127): all +, all -, or either */
                for (int j = 0; j < NT; j++) {
                    for (int i = 0; i < C; i++) {
                        const int sg = xm == 1 ? 1 : xm == 2 ? -1 : tl_rng_below(&r, 2) ? 1 : -1;
                        x[i] = xm ? 3.0f * (float)sg : (float)tl_rng_normal(&r);
                    }
                    tl_q8_quantize(type, x, C, xq + (size_t)j * xs);
                    for (int row = 0; row < R; row++)
                        tl_q8_dot(TL_Q8_C, type, mat + rb * (size_t)row, xq + (size_t)j * xs, 0, 1, C,
                                  ref + (size_t)j * R + row, 0);
                }
                for (int i = TL_Q8_C; i < TL_Q8_N; i++) {
                    if (!tl_q8_isa_supported((tl_q8_isa)i)) continue;
                    int ok = 1;
                    for (int g = 0; g < R / 16; g++)
                        for (int nt = 1; nt <= NT; nt++) {
                            float o[NT * 16], c[NT * 16];
                            tl_kq_packed_dot((tl_q8_isa)i, type, pk + (size_t)g * 16 * rb, xq, xs, nt, C, o, 16);
                            tl_kq_packed_dot(TL_Q8_C, type, pk + (size_t)g * 16 * rb, xq, xs, nt, C, c, 16);
                            ok &= !memcmp(o, c, sizeof(float) * 16 * (size_t)nt);
                            for (int j = 0; j < nt; j++)
                                ok &= !memcmp(c + 16 * j, ref + (size_t)j * R + 16 * g, sizeof(float) * 16);
                            if (tl_kq_unpack_from((tl_q8_isa)i, type)) { /* the prompt pass's unpacked group */
                                tl_kq_unpack((tl_q8_isa)i, type, pk + (size_t)g * 16 * rb, C, u);
                                tl_kq_unpacked_dot((tl_q8_isa)i, type, u, xq, xs, nt, C, o, 16);
                                ok &= !memcmp(o, c, sizeof(float) * 16 * (size_t)nt);
                                unpacked++;
                            }
                        }
                    if (tl_kq_unpack_from((tl_q8_isa)i, type)) { /* both groups at once */
                        float o[NT * 32];
                        tl_kq_unpack((tl_q8_isa)i, type, pk, C, u);
                        tl_kq_unpack((tl_q8_isa)i, type, pk + 16 * rb, C, u + tl_kq_unpacked_bytes(type, C));
                        tl_kq_unpacked_dot2((tl_q8_isa)i, type, u, u + tl_kq_unpacked_bytes(type, C), xq, xs, NT, C, o,
                                            32);
                        ok &= !memcmp(o, ref, sizeof o);
                    }
                    runs[i] += ok;
                    CHECK_MSG(ok, "%s %s C=%d weights %d x %d: the ISA's repacked kernel against the portable one",
                              tl_ggml_type_name(type), tl_q8_isa_name((tl_q8_isa)i), C, wm, xm);
                }
            }
        }
        free(mat);
        tl_free(pk);
    }
    for (int i = TL_Q8_C; i < TL_Q8_N; i++)
        CHECK_MSG(!tl_q8_isa_supported((tl_q8_isa)i) || runs[i] == 3 * 4 * 4 * 4, "%s: %d of 192 passed",
                  tl_q8_isa_name((tl_q8_isa)i), runs[i]);
    int cases = 0; /* (ISA, type) pairs with unpacked kernels */
    for (int i = TL_Q8_C; i < TL_Q8_N; i++)
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            cases += tl_q8_isa_supported((tl_q8_isa)i) && tl_kq_unpack_from((tl_q8_isa)i, types[ti]) > 0;
    CHECK_MSG(unpacked == cases * 4 * 4 * 4 * 2 * NT && (cases > 0 || !tl_q8_isa_supported(TL_Q8_AVX2)),
              "the unpacked prompt kernels ran %d times in %d (ISA, type) cases", unpacked, cases);
    tl_free(u);
    free(x);
    free(ref);
    free(xq);
}

const tl_test tests_kpack[] = {
    {"kq_packed", test_kq_packed},
    {"kq_isa", test_kq_isa},
    {NULL, NULL},
};

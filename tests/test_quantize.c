/* test_quantize.c - fp32 rows to ggml blocks, against the blocks ggml's own
 * quantizer (ggml_quantize_chunk of libggml-base) wrote for the same rows
 * (scripts/gen_quantize_fixtures.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "harness.h"
#include "quant.h"
#include "quantize.h"

enum { ROWS = 12, N = 512 };

static char *read_fx(tl_test_ctx *t, const char *name, size_t *len) {
    char p[512], *buf;
    tl_error e;
    snprintf(p, sizeof p, "%s/quantize/%s", tl_test_fixture_dir(), name);
    if (tl_read_file(p, 1u << 24, &buf, len, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return NULL;
    }
    return buf;
}

/* Every type, every row (normal, positive, negative, outliers, zero and constant
 * blocks, tiny and huge values, ties): our blocks equal ggml's byte for byte. */
static void test_quantize_matches_ggml(tl_test_ctx *t) {
    static const uint32_t types[] = {TL_GGML_F32,  TL_GGML_F16,  TL_GGML_BF16, TL_GGML_Q8_0,
                                     TL_GGML_Q4_0, TL_GGML_Q4_1, TL_GGML_Q5_0, TL_GGML_Q5_1,
                                     TL_GGML_Q4_K, TL_GGML_Q5_K, TL_GGML_Q6_K};
    size_t len;
    float *x = (float *)read_fx(t, "input.f32", &len);
    if (!x) return;
    CHECK(len == sizeof(float) * ROWS * N);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const char *name = tl_ggml_type_name(types[k]);
        char fn[64];
        snprintf(fn, sizeof fn, "%s.bin", name);
        size_t elen;
        uint8_t *expect = (uint8_t *)read_fx(t, fn, &elen);
        if (!expect) continue;
        size_t rb = tl_quantize_row_bytes(types[k], N);
        CHECK_MSG(rb * ROWS == elen, "%s: row bytes %zu, fixture %zu", name, rb, elen);
        uint8_t *got = malloc(rb);
        uint32_t be, bb;
        tl_ggml_type_block(types[k], &be, &bb);
        for (int r = 0; r < ROWS && rb * ROWS == elen; r++) {
            CHECK(tl_quantize_row(types[k], x + (size_t)r * N, got, N) == 0);
            if (memcmp(got, expect + r * rb, rb)) {
                size_t i = 0;
                while (got[i] == expect[r * rb + i]) i++;
                CHECK_MSG(0, "%s row %d: block %zu (byte %zu) differs from ggml's", name, r, i / bb, i % bb);
            }
        }
        free(got);
        free(expect);
    }
    free(x);
}

/* Quantizing then dequantizing stays close to the input (a sanity bound for each
 * type's bits), and a type or length the writer cannot take is refused. */
static void test_quantize_roundtrip_and_refusals(tl_test_ctx *t) {
    static const struct {
        uint32_t type;
        double tol; /* max error; the row's absmax is 1 (Q4_0/Q5_0 clip the top level: d)  */
    } cases[] = {{TL_GGML_Q8_0, 0.01}, {TL_GGML_Q4_0, 0.13}, {TL_GGML_Q4_1, 0.1}, {TL_GGML_Q5_0, 0.065},
                 {TL_GGML_Q5_1, 0.05}, {TL_GGML_Q4_K, 0.1}, {TL_GGML_Q5_K, 0.05}, {TL_GGML_Q6_K, 0.03}};
    float x[512], y[512];
    uint8_t buf[2048];
    uint32_t s = 1;
    for (int i = 0; i < 512; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((int)(s >> 8) % 2001 - 1000) / 1000.0f;
    }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CHECK(tl_quantize_row(cases[k].type, x, buf, 512) == 0);
        tl_gguf_dequant_row(cases[k].type, buf, y, 512);
        double worst = 0;
        for (int i = 0; i < 512; i++) worst = fmax(worst, fabs((double)y[i] - x[i]));
        CHECK_MSG(worst <= cases[k].tol, "%s: max error %g", tl_ggml_type_name(cases[k].type), worst);
    }
    CHECK(tl_quantize_row(TL_GGML_Q4_K, x, buf, 128) == -1); /* not a whole super-block */
    CHECK(tl_quantize_row(TL_GGML_Q8_0, x, buf, 48) == -1);
    CHECK(tl_quantize_row(10 /* Q2_K */, x, buf, 256) == -1);
    CHECK(tl_quantize_row(99, x, buf, 256) == -1);
    CHECK(tl_quantize_row_bytes(TL_GGML_Q6_K, 512) == 420);
    CHECK(tl_quantize_supported(TL_GGML_BF16) && !tl_quantize_supported(11));
    CHECK(tl_f32_to_f16(1.0f) == 0x3c00 && tl_f32_to_f16(-2.0f) == 0xc000 && tl_f32_to_f16(65520.0f) == 0x7c00);
}

const tl_test tests_quantize[] = {
    {"quantize_matches_ggml", test_quantize_matches_ggml},
    {"quantize_roundtrip_and_refusals", test_quantize_roundtrip_and_refusals},
    {NULL, NULL},
};

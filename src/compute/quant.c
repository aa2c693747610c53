/* quant.c - ggml block types (the tensor types of GGUF files) to fp32.
 *
 * Each block type is decoded from its byte layout (ggml-common.h documents
 * them); the arithmetic is done in the same order as ggml's reference
 * dequantize_row_* (scale * sub-scale first, then times the quant, then minus
 * the minimum), so the results are bitwise equal to ggml's and to the gguf
 * Python package's.  The build uses -std=c11, which keeps GCC from contracting
 * a*b-c into an FMA that would round differently. */
#include <string.h>

#include "dtype.h"
#include "quant.h"

#define QK_K 256

static uint16_t u16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Q4_0: f16 d, 16 bytes: element i (< 16) is the low nibble of byte i, element
 * i + 16 the high nibble; value (q - 8) * d. */
static void deq_q4_0(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 18, y += 32) {
        float d = tl_f16_to_f32(u16le(b));
        const uint8_t *qs = b + 2;
        for (int i = 0; i < 16; i++) {
            y[i] = (float)((qs[i] & 0x0f) - 8) * d;
            y[i + 16] = (float)((qs[i] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: f16 d, f16 m, nibbles as Q4_0; value q * d + m. */
static void deq_q4_1(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 20, y += 32) {
        float d = tl_f16_to_f32(u16le(b)), m = tl_f16_to_f32(u16le(b + 2));
        const uint8_t *qs = b + 4;
        for (int i = 0; i < 16; i++) {
            y[i] = (float)(qs[i] & 0x0f) * d + m;
            y[i + 16] = (float)(qs[i] >> 4) * d + m;
        }
    }
}

/* Q5_0: f16 d, u32 qh (bit i: fifth bit of element i), nibbles as Q4_0; value (q - 16) * d. */
static void deq_q5_0(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 22, y += 32) {
        float d = tl_f16_to_f32(u16le(b));
        uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        const uint8_t *qs = b + 6;
        for (int i = 0; i < 16; i++) {
            int lo = (qs[i] & 0x0f) | (int)((qh >> i) & 1) << 4;
            int hi = (qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            y[i] = (float)(lo - 16) * d;
            y[i + 16] = (float)(hi - 16) * d;
        }
    }
}

/* Q5_1: f16 d, f16 m, u32 qh, nibbles; value q * d + m. */
static void deq_q5_1(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 24, y += 32) {
        float d = tl_f16_to_f32(u16le(b)), m = tl_f16_to_f32(u16le(b + 2));
        uint32_t qh = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
        const uint8_t *qs = b + 8;
        for (int i = 0; i < 16; i++) {
            int lo = (qs[i] & 0x0f) | (int)((qh >> i) & 1) << 4;
            int hi = (qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            y[i] = (float)lo * d + m;
            y[i + 16] = (float)hi * d + m;
        }
    }
}

/* Q8_0: f16 d, 32 int8; value q * d. */
static void deq_q8_0(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 34, y += 32) {
        float d = tl_f16_to_f32(u16le(b));
        for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)b[2 + i] * d;
    }
}

/* Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
 * Each 32-byte run of nibbles holds two sub-blocks of 32: low nibbles first.
 * value (d * scale) * q - (dmin * min). */
static void deq_q4_k(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 144) {
        float d = tl_f16_to_f32(u16le(b)), dmin = tl_f16_to_f32(u16le(b + 2));
        const uint8_t *sc = b + 4, *qs = b + 16;
        for (int j = 0; j < 8; j += 2, qs += 32) {
            int s0, m0, s1, m1;
            tl_k_scale_min(sc, j, &s0, &m0);
            tl_k_scale_min(sc, j + 1, &s1, &m1);
            float d0 = d * s0, dm0 = dmin * m0, d1 = d * s1, dm1 = dmin * m1;
            for (int i = 0; i < 32; i++) *y++ = d0 * (float)(qs[i] & 0x0f) - dm0;
            for (int i = 0; i < 32; i++) *y++ = d1 * (float)(qs[i] >> 4) - dm1;
        }
    }
}

/* Q5_K: as Q4_K plus 32 bytes qh after the scales: bit j of qh[i] is the fifth
 * bit of element i of sub-block j. */
static void deq_q5_k(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 176) {
        float d = tl_f16_to_f32(u16le(b)), dmin = tl_f16_to_f32(u16le(b + 2));
        const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;
        for (int j = 0; j < 8; j += 2, qs += 32) {
            int s0, m0, s1, m1;
            tl_k_scale_min(sc, j, &s0, &m0);
            tl_k_scale_min(sc, j + 1, &s1, &m1);
            float d0 = d * s0, dm0 = dmin * m0, d1 = d * s1, dm1 = dmin * m1;
            for (int i = 0; i < 32; i++)
                *y++ = d0 * (float)((qs[i] & 0x0f) | ((qh[i] >> j) & 1) << 4) - dm0;
            for (int i = 0; i < 32; i++)
                *y++ = d1 * (float)((qs[i] >> 4) | ((qh[i] >> (j + 1)) & 1) << 4) - dm1;
        }
    }
}

/* Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales
 * (one per 16 elements), f16 d last.  Per half of 128 elements: 64 bytes of ql
 * and 32 of qh; element 32*r + i takes ql[i + 32*(r&1)] nibble r>>1 and the
 * 2 bits of qh[i] at shift 2*r; value (d * scale) * (q - 32). */
static void deq_q6_k(const uint8_t *b, float *y, size_t nb) {
    for (size_t k = 0; k < nb; k++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = tl_f16_to_f32(u16le(b + 208));
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8) {
            for (int r = 0; r < 4; r++)
                for (int i = 0; i < 32; i++) {
                    int lo = (ql[i + 32 * (r & 1)] >> (4 * (r >> 1))) & 0x0f;
                    int hi = (qh[i] >> (2 * r)) & 3;
                    float ds = d * (float)sc[2 * r + i / 16];
                    *y++ = ds * (float)((lo | hi << 4) - 32);
                }
        }
    }
}

/* ggml types: name, elements per block, bytes per block (ggml.c's type traits). */
typedef struct {
    const char *name;
    uint32_t blck, size;
} ggml_type_info;
static const ggml_type_info ggml_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 40},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},
};

const char *tl_ggml_type_name(uint32_t type) {
    return type < sizeof ggml_types / sizeof ggml_types[0] ? ggml_types[type].name : NULL;
}

int tl_ggml_type_block(uint32_t type, uint32_t *elems, uint32_t *bytes) {
    if (!tl_ggml_type_name(type)) return 0;
    *elems = ggml_types[type].blck;
    *bytes = ggml_types[type].size;
    return 1;
}

int tl_ggml_type_dequantizable(uint32_t type) {
    switch (type) {
    case TL_GGML_F32: case TL_GGML_F16: case TL_GGML_BF16: case TL_GGML_Q8_0: case TL_GGML_Q4_0:
    case TL_GGML_Q4_1: case TL_GGML_Q5_0: case TL_GGML_Q5_1: case TL_GGML_Q4_K: case TL_GGML_Q5_K:
    case TL_GGML_Q6_K:
        return 1;
    default:
        return 0;
    }
}

void tl_gguf_dequant_row(uint32_t type, const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    switch (type) {
    case TL_GGML_F32:
        memcpy(dst, src, n * 4);
        break;
    case TL_GGML_F16:
        for (size_t i = 0; i < n; i++) dst[i] = tl_f16_to_f32(u16le(b + 2 * i));
        break;
    case TL_GGML_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = tl_bf16_to_f32(u16le(b + 2 * i));
        break;
    case TL_GGML_Q4_0: deq_q4_0(b, dst, n / 32); break;
    case TL_GGML_Q4_1: deq_q4_1(b, dst, n / 32); break;
    case TL_GGML_Q5_0: deq_q5_0(b, dst, n / 32); break;
    case TL_GGML_Q5_1: deq_q5_1(b, dst, n / 32); break;
    case TL_GGML_Q8_0: deq_q8_0(b, dst, n / 32); break;
    case TL_GGML_Q4_K: deq_q4_k(b, dst, n / QK_K); break;
    case TL_GGML_Q5_K: deq_q5_k(b, dst, n / QK_K); break;
    case TL_GGML_Q6_K: deq_q6_k(b, dst, n / QK_K); break;
    default: break;
    }
}


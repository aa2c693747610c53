/* quantize.c - fp32 rows to ggml block types.
 *
 * Each quantizer follows the math of ggml's reference quantizer for the type
 * (ggml-quants.c, quantize_row_*_ref): the same search for scales, the same
 * rounding (round-half-away for Q8_0, truncation after +0.5 for Q4_0..Q5_1, the
 * 1.5*2^23 trick of nearest_int for the K-quants) and the same order of float
 * operations, so the blocks are bitwise llama-quantize's.  The build's -std=c11
 * keeps GCC from fusing a*b+c into an FMA, which would change the sums. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "quant.h"
#include "quantize.h"

#define QK_K 256

uint16_t tl_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    uint32_t exp = u >> 23;
    if (exp >= 143) return sign | 0x7c00u; /* >= 2^16 (and infinity) */
    if (exp >= 113) {                      /* a normal half */
        uint32_t mant = u & 0x7fffffu, h = ((exp - 112) << 10) | (mant >> 13), rem = mant & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry may reach infinity: right */
        return (uint16_t)(sign | h);
    }
    if (exp < 102) return sign; /* below 2^-25: rounds to zero */
    /* a subnormal half counts units of 2^-24 */
    uint32_t mant = (u & 0x7fffffu) | 0x800000u, shift = 126 - exp;
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* round to nearest (ties to even) through the float's mantissa, valid for |f| < 2^22 */
static int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* the signed maximum of a block: the element of largest magnitude (the first one on ties) */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* Q4_0 / Q5_0: d = max / -(2^(bits-1)), q = trunc(x/d + 2^(bits-1) + 0.5) clamped to the top */
static void q4_0(const float *x, uint8_t *b, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32, b += 18) {
        const float d = signed_absmax(x, 32) / -8, id = d ? 1.0f / d : 0.0f;
        put16(b, tl_f32_to_f16(d));
        for (int j = 0; j < 16; j++) {
            uint8_t lo = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
            uint8_t hi = (uint8_t)imin(15, (int8_t)(x[j + 16] * id + 8.5f));
            b[2 + j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void q5_0(const float *x, uint8_t *b, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32, b += 22) {
        const float d = signed_absmax(x, 32) / -16, id = d ? 1.0f / d : 0.0f;
        put16(b, tl_f32_to_f16(d));
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t lo = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
            uint8_t hi = (uint8_t)imin(31, (int8_t)(x[j + 16] * id + 16.5f));
            b[6 + j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++) b[2 + k] = (uint8_t)(qh >> 8 * k);
    }
}

/* Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), m = min, q = trunc((x - min)/d + 0.5) */
static void min_max(const float *x, int n, float *mn, float *mx) {
    *mn = FLT_MAX;
    *mx = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

static void q4_1(const float *x, uint8_t *b, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32, b += 20) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        const float d = (mx - mn) / 15, id = d ? 1.0f / d : 0.0f;
        put16(b, tl_f32_to_f16(d));
        put16(b + 2, tl_f32_to_f16(mn));
        for (int j = 0; j < 16; j++) {
            uint8_t lo = (uint8_t)imin(15, (int8_t)((x[j] - mn) * id + 0.5f));
            uint8_t hi = (uint8_t)imin(15, (int8_t)((x[j + 16] - mn) * id + 0.5f));
            b[4 + j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void q5_1(const float *x, uint8_t *b, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32, b += 24) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        const float d = (mx - mn) / 31, id = d ? 1.0f / d : 0.0f;
        put16(b, tl_f32_to_f16(d));
        put16(b + 2, tl_f32_to_f16(mn));
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t lo = (uint8_t)((x[j] - mn) * id + 0.5f);
            uint8_t hi = (uint8_t)((x[j + 16] - mn) * id + 0.5f);
            b[8 + j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            qh |= (uint32_t)((lo >> 4) & 1) << j | (uint32_t)((hi >> 4) & 1) << (j + 16);
        }
        for (int k = 0; k < 4; k++) b[4 + k] = (uint8_t)(qh >> 8 * k);
    }
}

/* Q8_0: d = absmax / 127, q = roundf(x / d) */
static void q8_0(const float *x, uint8_t *b, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32, b += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        put16(b, tl_f32_to_f16(d));
        for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* ---- K-quants ---- */

/* Scale and minimum of one sub-block with L in [0, nmax], x ~ scale * L - the_min:
 * start from the min/max fit, then try nstep+1 slightly different scales, each
 * with the least-squares (weighted) scale and offset for its levels, keeping the
 * one of least weighted squared error.  A positive minimum is clamped to 0. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                           uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *the_min = -mn;
        return 0.f;
    }
    float iscale = nmax / (mx - mn), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)imax(0, imin(nmax, nearest_int(iscale * (x[i] - mn))));
        float diff = scale * L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - mn))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float s = (sum_w * sum_xl - sum_x * sum_l) / D, m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (m > 0) {
                m = 0;
                s = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = s * Laux[i] + m - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = s;
                mn = m;
            }
        }
    }
    *the_min = -mn;
    return scale;
}

/* Q4_K (bits 4, nmax 15) and Q5_K (bits 5, nmax 31): 8 sub-blocks of 32, each
 * with its fitted scale and minimum, stored as 6-bit multiples of the
 * super-block's d and dmin (f16); the levels are then recomputed against the
 * stored (rounded) scales. */
static void k_quant_4_5(const float *x, uint8_t *b, size_t nb, int bits) {
    const int nmax = (1 << bits) - 1;
    const size_t bsize = bits == 4 ? 144 : 176;
    uint8_t L[QK_K], Laux[32];
    float w[32], mins[8], scales[8];
    for (size_t i = 0; i < nb; i++, x += QK_K, b += bsize) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = bits == 4 ? fit_scale_min(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20)
                                  : fit_scale_min(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        uint8_t *sc = b + 4;
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; j++) {
            uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]), lm = (uint8_t)nearest_int(inv_min * mins[j]);
            if (ls > 63) ls = 63;
            if (lm > 63) lm = 63;
            if (j < 4) {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else { /* low nibbles in bytes 8-11, top 2 bits in the spare bits of bytes 0-7 */
                sc[j + 4] = (uint8_t)((ls & 0x0f) | (lm & 0x0f) << 4);
                sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
                sc[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        uint16_t dh = tl_f32_to_f16(max_scale / 63.f), dminh = tl_f32_to_f16(max_min / 63.f);
        put16(b, dh);
        put16(b + 2, dminh);
        for (int j = 0; j < 8; j++) {
            uint8_t s, m;
            if (j < 4) {
                s = sc[j] & 63;
                m = sc[j + 4] & 63;
            } else {
                s = (uint8_t)((sc[j + 4] & 0x0f) | (sc[j - 4] >> 6) << 4);
                m = (uint8_t)((sc[j + 4] >> 4) | (sc[j] >> 6) << 4);
            }
            const float d = tl_f16_to_f32(dh) * s;
            if (!d) continue; /* the fitted levels stay */
            const float dm = tl_f16_to_f32(dminh) * m;
            for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + l] + dm) / d)));
        }
        if (bits == 4) {
            uint8_t *q = b + 16;
            for (int j = 0; j < QK_K; j += 64, q += 32)
                for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
        } else {
            uint8_t *qh = b + 16, *ql = b + 48;
            memset(qh, 0, 32);
            for (int n = 0, bit = 0; n < QK_K; n += 64, bit += 2, ql += 32)
                for (int j = 0; j < 32; j++) {
                    int l1 = L[n + j], l2 = L[n + j + 32];
                    if (l1 > 15) {
                        l1 -= 16;
                        qh[j] |= (uint8_t)(1u << bit);
                    }
                    if (l2 > 15) {
                        l2 -= 16;
                        qh[j] |= (uint8_t)(2u << bit);
                    }
                    ql[j] = (uint8_t)(l1 | l2 << 4);
                }
        }
    }
}

/* Symmetric levels L - nmax in [-nmax, nmax-1] for a block of n (Q6_K: 16
 * elements, nmax 32): starting from the absmax fit, try 18 nearby scales and keep
 * the one whose least-squares scale (weights x^2) explains the most. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales relative to the f16 d; levels
 * 0..63 split into 4 low bits (ql) and 2 high bits (qh). */
static void q6_k(const float *x, uint8_t *b, size_t nb) {
    int8_t L[QK_K];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += QK_K, b += 210) {
        float max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < 16; ib++) {
            scales[ib] = fit_scale_sym(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs) {
                max_abs = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        memset(b, 0, 210);
        if (max_abs < 1e-15f) continue; /* all zero: d = 0 */
        int8_t *sc = (int8_t *)(b + 192);
        float iscale = -128.f / max_scale;
        uint16_t dh = tl_f32_to_f16(1 / iscale);
        put16(b + 208, dh);
        for (int ib = 0; ib < 16; ib++) sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; j++) {
            float d = tl_f16_to_f32(dh) * sc[j];
            if (!d) continue;
            for (int l = 0; l < 16; l++) L[16 * j + l] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + l] / d))) + 32);
        }
        uint8_t *ql = b, *qh = b + 128;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                const uint8_t *u = (const uint8_t *)L + j + l;
                ql[l] = (uint8_t)((u[0] & 0x0f) | (u[64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((u[32] & 0x0f) | (u[96] & 0x0f) << 4);
                qh[l] = (uint8_t)((u[0] >> 4) | (u[32] >> 4) << 2 | (u[64] >> 4) << 4 | (u[96] >> 4) << 6);
            }
    }
}

int tl_quantize_supported(uint32_t type) { return tl_ggml_type_dequantizable(type); }

size_t tl_quantize_row_bytes(uint32_t type, size_t n) {
    uint32_t be, bb;
    if (!tl_quantize_supported(type) || !tl_ggml_type_block(type, &be, &bb) || n % be) return 0;
    return n / be * bb;
}

int tl_quantize_row(uint32_t type, const float *src, void *dst, size_t n) {
    if (!tl_quantize_row_bytes(type, n)) return -1;
    uint8_t *b = dst;
    switch (type) {
    case TL_GGML_F32: memcpy(dst, src, n * 4); break;
    case TL_GGML_F16:
        for (size_t i = 0; i < n; i++) put16(b + 2 * i, tl_f32_to_f16(src[i]));
        break;
    case TL_GGML_BF16:
        for (size_t i = 0; i < n; i++) put16(b + 2 * i, tl_f32_to_bf16(src[i]));
        break;
    case TL_GGML_Q4_0: q4_0(src, b, n / 32); break;
    case TL_GGML_Q4_1: q4_1(src, b, n / 32); break;
    case TL_GGML_Q5_0: q5_0(src, b, n / 32); break;
    case TL_GGML_Q5_1: q5_1(src, b, n / 32); break;
    case TL_GGML_Q8_0: q8_0(src, b, n / 32); break;
    case TL_GGML_Q4_K: k_quant_4_5(src, b, n / QK_K, 4); break;
    case TL_GGML_Q5_K: k_quant_4_5(src, b, n / QK_K, 5); break;
    case TL_GGML_Q6_K: q6_k(src, b, n / QK_K); break;
    default: return -1;
    }
    return 0;
}

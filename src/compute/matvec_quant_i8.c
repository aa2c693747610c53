/* matvec_quant_i8.c - products of quantized weights with activations rounded
 * to int8 blocks (matvec_quant.h): the rounding, the portable C kernels that
 * define the results (the SIMD ones in matvec_quant_x86.c give the same
 * integer sums), the choice of ISA, and the batched product of the prompt pass. */
#include "matvec_quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "gemm_quant.h"
#include "matvec_quant_i8.h"
#include "matvec_quant_kpack.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#define TL_X86 1
#endif

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int tl_q8_type(uint32_t type) {
    return type == TL_GGML_Q8_0 || type == TL_GGML_Q4_0 || type == TL_GGML_Q4_K || type == TL_GGML_Q5_K ||
           type == TL_GGML_Q6_K;
}

static int kquant(uint32_t type) { return type == TL_GGML_Q4_K || type == TL_GGML_Q5_K || type == TL_GGML_Q6_K; }

size_t tl_q8_bytes(uint32_t type, int n) {
    return kquant(type) ? (size_t)n + (size_t)n / 256 * 4 + (size_t)n / 16 * 2 : (size_t)n + (size_t)n / 32 * 8;
}

/* rounds m elements with one scale; returns the scale (NaN if any is not finite) */
static float round_block(const float *x, int m, int8_t *q) {
    float amax = 0;
    int bad = 0;
    for (int i = 0; i < m; i++) {
        float a = fabsf(x[i]);
        bad |= !(a <= FLT_MAX);
        amax = a > amax ? a : amax;
    }
    if (bad) {
        memset(q, 0, (size_t)m);
        return NAN;
    }
    const float d = amax / 127, id = amax > 0 ? 127 / amax : 0;
    for (int i = 0; i < m; i++) {
        float v = x[i] * id; /* |v| <= 127 (up to rounding of id: clamped) */
        int r = (int)(v + (v >= 0 ? 0.5f : -0.5f));
        q[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
    return d;
}

static void quantize_c(uint32_t type, const float *x, int n, void *xq) {
    int8_t *q = xq;
    float *d = (float *)(void *)(q + n);
    if (kquant(type)) {
        int16_t *bs = (int16_t *)(void *)(d + n / 256);
        for (int k = 0; k < n / 256; k++) {
            d[k] = round_block(x + 256 * k, 256, q + 256 * k);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int i = 0; i < 16; i++) s += q[256 * k + 16 * g + i];
                bs[16 * k + g] = (int16_t)s;
            }
        }
    } else {
        int32_t *s = (int32_t *)(void *)(d + n / 32);
        for (int k = 0; k < n / 32; k++) {
            d[k] = round_block(x + 32 * k, 32, q + 32 * k);
            int t = 0;
            for (int i = 0; i < 32; i++) t += q[32 * k + i];
            s[k] = t;
        }
    }
}

void tl_q8_quantize_isa(tl_q8_isa i, uint32_t type, const float *x, int n, void *xq) {
#ifdef TL_X86
    if (i == TL_Q8_AVX512VNNI) {
        tl_q8_quantize_avx512(kquant(type), x, n, xq);
        return;
    }
#endif
    (void)i;
    quantize_c(type, x, n, xq);
}

/* every ISA gives the same bytes: the fastest the CPU has, whatever the kernel family */
void tl_q8_quantize(uint32_t type, const float *x, int n, void *xq) {
    tl_q8_quantize_isa(tl_q8_isa_supported(TL_Q8_AVX512VNNI) ? TL_Q8_AVX512VNNI : TL_Q8_C, type, x, n, xq);
}

/* ------------------------------------------------------------ portable C */

/* Q8_0: f16 d, 32 int8; per block (d_w d_x) * integer sum. */
static float c_q8_0(const uint8_t *b, const uint8_t *xq, int n) {
    const int8_t *q = (const int8_t *)xq;
    const float *xd = (const float *)(const void *)(xq + n);
    float acc = 0;
    for (int k = 0; k < n / 32; k++, b += 34, q += 32) {
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += (int8_t)b[2 + i] * q[i];
        acc += tl_f16_to_f32(ld16(b)) * xd[k] * (float)isum;
    }
    return acc;
}

/* Q4_0: f16 d, element i the low nibble of byte i, i + 16 its high nibble, minus 8. */
static float c_q4_0(const uint8_t *b, const uint8_t *xq, int n) {
    const int8_t *q = (const int8_t *)xq;
    const float *xd = (const float *)(const void *)(xq + n);
    float acc = 0;
    for (int k = 0; k < n / 32; k++, b += 18, q += 32) {
        int isum = 0;
        for (int i = 0; i < 16; i++) isum += ((b[2 + i] & 15) - 8) * q[i] + ((b[2 + i] >> 4) - 8) * q[i + 16];
        acc += tl_f16_to_f32(ld16(b)) * xd[k] * (float)isum;
    }
    return acc;
}

/* Q4_K / Q5_K (qh: NULL for Q4_K): per super-block the integer sums
 * isum = sum_j sc_j sum_i q x and msum = sum_j m_j sum_i x, then
 * d_x (d isum - dmin msum). */
static float c_q45_k(const uint8_t *b, const uint8_t *xq, int n, int five) {
    const int8_t *q = (const int8_t *)xq;
    const float *xd = (const float *)(const void *)(xq + n);
    const int16_t *bs = (const int16_t *)(const void *)(xd + n / 256);
    const size_t bb = five ? 176 : 144;
    float acc = 0;
    for (int k = 0; k < n / 256; k++, b += bb, q += 256, bs += 16) {
        const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            int sc, mn, s = 0;
            tl_k_scale_min(b + 4, j, &sc, &mn);
            const uint8_t *p = qs + 32 * (j / 2);
            for (int i = 0; i < 32; i++) {
                int v = (j & 1 ? p[i] >> 4 : p[i] & 15) | (five ? ((qh[i] >> j) & 1) << 4 : 0);
                s += v * q[32 * j + i];
            }
            isum += sc * s;
            msum += mn * (bs[2 * j] + bs[2 * j + 1]);
        }
        acc += xd[k] * (tl_f16_to_f32(ld16(b)) * (float)isum - tl_f16_to_f32(ld16(b + 2)) * (float)msum);
    }
    return acc;
}

/* Q6_K: per super-block isum = sum_g sc_g (sum_i q x - 32 sum_i x) over the 16
 * groups of 16, then d_x (d isum). */
static float c_q6_k(const uint8_t *b, const uint8_t *xq, int n) {
    const int8_t *q = (const int8_t *)xq;
    const float *xd = (const float *)(const void *)(xq + n);
    const int16_t *bs = (const int16_t *)(const void *)(xd + n / 256);
    float acc = 0;
    for (int k = 0; k < n / 256; k++, b += 210, q += 256, bs += 16) {
        const int8_t *sc = (const int8_t *)(b + 192);
        int isum = 0;
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
            for (int r = 0; r < 4; r++)
                for (int g = 0; g < 2; g++) {
                    int s = 0;
                    for (int i = 16 * g; i < 16 * g + 16; i++) {
                        int v = ((ql[i + 32 * (r & 1)] >> (4 * (r >> 1))) & 15) | ((qh[i] >> (2 * r)) & 3) << 4;
                        s += v * q[128 * half + 32 * r + i];
                    }
                    const int grp = 8 * half + 2 * r + g;
                    isum += sc[grp] * (s - 32 * bs[grp]);
                }
        }
        acc += xd[k] * (tl_f16_to_f32(ld16(b + 208)) * (float)isum);
    }
    return acc;
}

static void c_dot(uint32_t type, const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out,
                  size_t os) {
    for (int t = 0; t < nt; t++, xq += xs, out += os) switch (type) {
        case TL_GGML_Q8_0: *out = c_q8_0(b, xq, n); break;
        case TL_GGML_Q4_0: *out = c_q4_0(b, xq, n); break;
        case TL_GGML_Q4_K: *out = c_q45_k(b, xq, n, 0); break;
        case TL_GGML_Q5_K: *out = c_q45_k(b, xq, n, 1); break;
        default: *out = c_q6_k(b, xq, n); break;
        }
}

/* ---------------------------------------------------------------- choice */

const char *tl_q8_isa_name(tl_q8_isa i) {
    static const char *const names[TL_Q8_N] = {"c", "avx2", "avx-vnni", "avx512-vnni"};
    return (unsigned)i < TL_Q8_N ? names[i] : "?";
}

int tl_q8_isa_supported(tl_q8_isa i) {
#ifdef TL_X86
#ifdef TL_EMULATE_AVX2
    /* a build that decodes as an AVX2-only CPU would (docs/inference.md: the
     * AVX2 kernels measured on a larger CPU against llama.cpp's AVX2 build) */
    if (i == TL_Q8_AVXVNNI || i == TL_Q8_AVX512VNNI) return 0;
#endif
    __builtin_cpu_init();
    const int avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    switch (i) {
    case TL_Q8_C: return 1;
    case TL_Q8_AVX2: return avx2;
    case TL_Q8_AVXVNNI: return avx2 && __builtin_cpu_supports("avxvnni");
    case TL_Q8_AVX512VNNI:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return i == TL_Q8_C;
#endif
}

tl_q8_isa tl_q8_isa_for(tl_kernel k) {
    if (k == TL_KERNEL_AUTO) k = tl_kernel_best();
    if (k == TL_KERNEL_SCALAR) return TL_Q8_C;
    if (k != TL_KERNEL_AVX2 && tl_q8_isa_supported(TL_Q8_AVX512VNNI)) return TL_Q8_AVX512VNNI;
    if (tl_q8_isa_supported(TL_Q8_AVXVNNI)) return TL_Q8_AVXVNNI;
    if (tl_q8_isa_supported(TL_Q8_AVX2)) return TL_Q8_AVX2;
    return TL_Q8_C;
}

void tl_q8_dot(tl_q8_isa i, uint32_t type, const void *row, const void *xq, size_t xstride, int nt, int n,
               float *out, size_t ostride) {
    tl_q8_fn f = NULL;
#ifdef TL_X86
    if (i == TL_Q8_AVX512VNNI) f = tl_q8_avx512vnni_fn(type);
    if (i == TL_Q8_AVXVNNI) f = tl_q8_avxvnni_fn(type);
    if (i == TL_Q8_AVX2) f = tl_q8_avx2_fn(type);
#else
    (void)i;
#endif
    for (int t = 0; t < nt; t += 4) {
        int m = nt - t < 4 ? nt - t : 4;
        const uint8_t *x = (const uint8_t *)xq + (size_t)t * xstride;
        if (f)
            f(row, x, xstride, m, n, out + (size_t)t * ostride, ostride);
        else
            c_dot(type, row, x, xstride, m, n, out + (size_t)t * ostride, ostride);
    }
}

/* ------------------------------------------------------ repacked weights */

/* quant bytes of one 32-element block of one row, and of a block pair of a 16-row group */
static size_t pk_qbytes(uint32_t type) { return type == TL_GGML_Q4_0 ? 16 : 32; }
static size_t pk_pair_bytes(uint32_t type) { return 64 + 2 * 16 * pk_qbytes(type); }

int tl_q8_repacks(void) { return tl_q8_isa_for(TL_KERNEL_AUTO) != TL_Q8_C; }

int tl_q8_packable(const tl_wmat *W) {
    if (tl_kq_type(W->quant)) return tl_kq_packable(W); /* Q4_K, Q5_K, Q6_K: matvec_quant_kpack.c */
    return (W->quant == TL_GGML_Q8_0 || W->quant == TL_GGML_Q4_0) && !W->packed && W->rows % 16 == 0 &&
           W->cols % 64 == 0 && W->cols <= 12288;
}

/* Where row r's block k lies in the repacked bytes: its f16 scale at *sc, its
 * 4-byte quant chunk j at *q + 64 j. */
static void pk_where(uint32_t type, int nb, int r, int k, size_t *sc, size_t *q) {
    const size_t pb = pk_pair_bytes(type), o = (size_t)(r / 16) * ((size_t)nb / 2 * pb) + (size_t)(k / 2) * pb;
    *sc = o + 32 * (size_t)(k % 2) + 2 * (size_t)(r % 16);
    *q = o + 64 + (size_t)(k % 2) * 16 * pk_qbytes(type) + 4 * (size_t)(r % 16);
}

/* one block moved between the file's layout and the repacked one (to_file:
 * from the repacked bytes at sc, q into the file's block at to; else the
 * file's block at from into to + sc, to + q), the quants XORed with flip
 * (Q8_0: signed <-> unsigned) */
static void pk_move(uint8_t *to, const uint8_t *from, int to_file, size_t sc, size_t q, size_t qb, uint8_t flip) {
    const uint32_t f4 = flip * 0x01010101u;
    uint32_t v;
    if (to_file) {
        memcpy(to, from + sc, 2);
        for (size_t j = 0; j < qb; j += 4) {
            memcpy(&v, from + q + 16 * j, 4);
            v ^= f4;
            memcpy(to + 2 + j, &v, 4);
        }
    } else {
        memcpy(to + sc, from, 2);
        for (size_t j = 0; j < qb; j += 4) {
            memcpy(&v, from + 2 + j, 4);
            v ^= f4;
            memcpy(to + q + 16 * j, &v, 4);
        }
    }
}

void tl_q8_pack(const tl_wmat *W, void *dst) {
    if (tl_kq_type(W->quant)) {
        tl_kq_pack(W, dst);
        return;
    }
    const uint32_t t = W->quant;
    const int nb = W->cols / 32;
    const size_t rb = tl_quant_row_bytes(t, W->cols), qb = pk_qbytes(t);
    const uint8_t flip = t == TL_GGML_Q8_0 ? 0x80 : 0; /* Q8_0 stored unsigned for vpdpbusd */
    const uint8_t *src = W->data;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < W->rows; r++)
        for (int k = 0; k < nb; k++) {
            size_t sc, q;
            pk_where(t, nb, r, k, &sc, &q);
            pk_move(dst, src + (size_t)r * rb + (size_t)k * (2 + qb), 0, sc, q, qb, flip);
        }
}

void tl_q8_unpack_row(const tl_wmat *W, int r, void *dst) {
    if (tl_kq_type(W->quant)) {
        tl_kq_unpack_row(W, r, dst);
        return;
    }
    const uint32_t t = W->quant;
    const int nb = W->cols / 32;
    const size_t qb = pk_qbytes(t);
    for (int k = 0; k < nb; k++) {
        size_t sc, q;
        pk_where(t, nb, r, k, &sc, &q);
        pk_move((uint8_t *)dst + (size_t)k * (2 + qb), W->data, 1, sc, q, qb, t == TL_GGML_Q8_0 ? 0x80 : 0);
    }
}

/* The portable kernel on the repacked layout: per row the integer sum of each
 * block, then acc += (d_w d_x) isum, as c_q8_0 / c_q4_0 on the file's rows. */
static void c_packed(uint32_t type, const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out,
                     size_t os) {
    const int nb = n / 32, four = type == TL_GGML_Q4_0;
    const size_t qb = pk_qbytes(type), pb = pk_pair_bytes(type);
    for (int t = 0; t < nt; t++) {
        const int8_t *x = (const int8_t *)(xq + (size_t)t * xs);
        const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
        for (int r = 0; r < 16; r++) {
            float acc = 0;
            for (int k = 0; k < nb; k++) {
                const uint8_t *pair = b + (size_t)(k / 2) * pb, *q = pair + 64 + (size_t)(k % 2) * 16 * qb;
                int isum = 0;
                for (size_t i = 0; i < qb; i++) {
                    const int v = q[(i / 4) * 64 + 4 * (size_t)r + i % 4];
                    if (four)
                        isum += ((v & 15) - 8) * x[32 * k + (int)i] + ((v >> 4) - 8) * x[32 * k + (int)i + 16];
                    else
                        isum += (v - 128) * x[32 * k + (int)i];
                }
                acc += tl_f16_to_f32(ld16(pair + 32 * (k % 2) + 2 * r)) * xd[k] * (float)isum;
            }
            out[(size_t)t * os + (size_t)r] = acc;
        }
    }
}

static void packed_dot(tl_q8_isa i, uint32_t type, const uint8_t *group, const uint8_t *xq, size_t xs, int nt, int n,
                       float *out, size_t os) {
    if (tl_kq_type(type)) {
        tl_kq_packed_dot(i, type, group, xq, xs, nt, n, out, os);
        return;
    }
    tl_q8_packed_fn f = NULL;
#ifdef TL_X86
    if (i == TL_Q8_AVX512VNNI) f = tl_q8_avx512vnni_packed_fn(type);
    if (i == TL_Q8_AVXVNNI) f = tl_q8_avxvnni_packed_fn(type);
    if (i == TL_Q8_AVX2) f = tl_q8_avx2_packed_fn(type);
#else
    (void)i;
#endif
    for (int t = 0; t < nt; t += 4) {
        const int m = nt - t < 4 ? nt - t : 4;
        if (f)
            f(group, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
        else
            c_packed(type, group, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
    }
}

void tl_q8_rows_packed(tl_q8_isa i, const tl_wmat *W, const void *xq, float *y, int r0, int r1) {
    const size_t gb = 16 * tl_quant_row_bytes(W->quant, W->cols);
    for (int r = r0; r < r1; r += 16)
        packed_dot(i, W->quant, (const uint8_t *)W->data + (size_t)(r / 16) * gb, xq, 0, 1, W->cols, y + r, 0);
}

/* The prompt pass takes repacked groups two at a time where the kernels
 * share each activation broadcast between them (measured faster from a
 * token count per ISA and type): the K-quants unpacked (tl_kq_unpack),
 * Q8_0's groups as they are and Q4_0's unpacked into Q8_0's layout
 * (AVX512-VNNI).  tl_q8_pair_from: 0 where one group at a time. */
int tl_q8_pair_from(tl_q8_isa i, uint32_t type) {
    if (tl_kq_type(type)) return tl_kq_unpack_from(i, type);
#ifdef TL_X86
    /* as tl_kq_unpack_from measured them: Q8_0 level at 4 tokens and faster
     * from 8, Q4_0 (unpacked first) slower at 8, mixed at 16, faster from 32 */
    if (i == TL_Q8_AVX512VNNI) return type == TL_GGML_Q8_0 ? 8 : type == TL_GGML_Q4_0 ? 32 : 0;
#endif
    return 0;
}

/* scratch bytes per group for pair_unpack (0: the groups are read in place);
 * Q4_0's unpacked group is a Q8_0 group */
static size_t pair_bytes(uint32_t type, int n) {
    return tl_kq_type(type)       ? tl_kq_unpacked_bytes(type, n)
           : type == TL_GGML_Q4_0 ? 16 * tl_quant_row_bytes(TL_GGML_Q8_0, n)
                                  : 0;
}

static void pair_unpack(tl_q8_isa i, uint32_t type, const uint8_t *b, int n, uint8_t *dst) {
    if (tl_kq_type(type)) {
        tl_kq_unpack(i, type, b, n, dst);
        return;
    }
#ifdef TL_X86
    tl_q8_unpack4_512(b, n, dst);
#endif
}

/* groups g0 (and g1, where two) at tokens xt: out[t * 32 + r] */
static void pair_dot(tl_q8_isa i, uint32_t type, const uint8_t *g0, const uint8_t *g1, const uint8_t *xt, size_t xs,
                     int nt, int n, float *out) {
    if (tl_kq_type(type)) {
        if (g1)
            tl_kq_unpacked_dot2(i, type, g0, g1, xt, xs, nt, n, out, 32);
        else
            tl_kq_unpacked_dot(i, type, g0, xt, xs, nt, n, out, 32);
        return;
    }
#ifdef TL_X86
    if (g1)
        tl_q8_pair_512(g0, g1, xt, xs, nt, n, out, 32);
    else /* Q4_0 unpacked is a Q8_0 group */
        packed_dot(i, TL_GGML_Q8_0, g0, xt, xs, nt, n, out, 32);
#endif
}

/* The prompt pass on repacked weights: each group's bytes are loaded once
 * per 4 tokens, or, from tl_q8_pair_from's token count, unpacked once (or read
 * in place) and taken two groups at a time; without memory for all rounded
 * tokens, one at a time on the stack (tl_q8_packable bounds its size). */
static void gemm_packed(tl_kernel k, const tl_wmat *W, const float *x, int n, float *y, float beta) {
    const int in = W->cols, out = W->rows;
    const size_t xs = (tl_q8_bytes(W->quant, in) + 63) & ~(size_t)63, gb = 16 * tl_quant_row_bytes(W->quant, in);
    const tl_q8_isa isa = tl_q8_isa_for(k);
    uint8_t *xq = tl_alloc(xs * (size_t)n);
    const int step = xq ? n : 1;
    for (int t0 = 0; t0 < n; t0 += step) {
        const int nt = n - t0 < step ? n - t0 : step;
        _Alignas(64) uint8_t one[16384];
        uint8_t *q = xq ? xq : one;
        const int from = tl_q8_pair_from(isa, W->quant), pair = from && nt >= from, gw = pair ? 2 : 1;
        const int groups = out / 16;
        const size_t ub = pair ? pair_bytes(W->quant, in) : 0;
#pragma omp parallel
        {
            /* no scratch (allocation failed): the packed kernel, the same bits */
            uint8_t *u = ub ? tl_alloc(2 * ub) : NULL;
            const int paired = pair && (u || !ub);
#pragma omp for schedule(static)
            for (int t = 0; t < nt; t++) tl_q8_quantize(W->quant, x + (size_t)(t0 + t) * in, in, q + (size_t)t * xs);
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < (groups + gw - 1) / gw; i++) {
                const int g0 = i * gw, ng = groups - g0 < gw ? groups - g0 : gw;
                const uint8_t *grp = (const uint8_t *)W->data + (size_t)g0 * gb, *src[2] = {grp, grp + gb};
                if (paired && ub)
                    for (int h = 0; h < ng; h++)
                        pair_unpack(isa, W->quant, grp + h * gb, in, u + h * ub), src[h] = u + h * ub;
                for (int t = 0; t < nt; t += 4) {
                    const int m = nt - t < 4 ? nt - t : 4;
                    const uint8_t *xt = q + (size_t)t * xs;
                    float v[4 * 32];
                    if (paired)
                        pair_dot(isa, W->quant, src[0], ng == 2 ? src[1] : NULL, xt, xs, m, in, v);
                    else
                        for (int h = 0; h < ng; h++)
                            packed_dot(isa, W->quant, grp + h * gb, xt, xs, m, in, v + 16 * h, 32);
                    for (int j = 0; j < m; j++)
                        for (int r = 0; r < 16 * ng; r++) {
                            float *yy = y + (size_t)(t0 + t + j) * out + 16 * g0 + r;
                            *yy = beta == 0 ? v[32 * j + r] : v[32 * j + r] + beta * *yy;
                        }
                }
            }
            tl_free(u);
        }
    }
    tl_free(xq);
}

/* --------------------------------------------------------- prompt pass */

/* Rows per work item: a few KiB of weights stay in L1/L2 while every group of
 * 4 tokens passes over them. */
#define GEMM_ROWS 16

int tl_q8_gemm(tl_kernel k, const tl_wmat *W, const float *x, int n, float *y, float beta) {
    if (tl_q8_tiles_take(k, &W, 1, n) && !tl_q8_gemm_amx(W, x, n, y, beta)) return 0;
    if (W->packed) return gemm_packed(k, W, x, n, y, beta), 0;
    const int in = W->cols, out = W->rows;
    const size_t xs = (tl_q8_bytes(W->quant, in) + 63) & ~(size_t)63;
    uint8_t *xq = tl_alloc(xs * (size_t)n);
    if (!xq) return -1;
    const tl_q8_isa isa = tl_q8_isa_for(k);
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int t = 0; t < n; t++) tl_q8_quantize(W->quant, x + (size_t)t * in, in, xq + (size_t)t * xs);
        const size_t rb = tl_quant_row_bytes(W->quant, in);
        const uint8_t *base = W->data;
#pragma omp for schedule(dynamic, 1)
        for (int r0 = 0; r0 < out; r0 += GEMM_ROWS) {
            const int r1 = r0 + GEMM_ROWS < out ? r0 + GEMM_ROWS : out;
            for (int t = 0; t < n; t += 4) {
                const int nt = n - t < 4 ? n - t : 4;
                for (int r = r0; r < r1; r++) {
                    float v[4];
                    tl_q8_dot(isa, W->quant, base + (size_t)r * rb, xq + (size_t)t * xs, xs, nt, in, v, 1);
                    for (int j = 0; j < nt; j++) {
                        float *yy = y + (size_t)(t + j) * out + r;
                        *yy = beta == 0 ? v[j] : v[j] + beta * *yy;
                    }
                }
            }
        }
    }
    tl_free(xq);
    return 0;
}

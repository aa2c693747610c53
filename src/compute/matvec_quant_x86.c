/* matvec_quant_x86.c - the SIMD int8-activation kernels (matvec_quant_i8.h):
 * AVX2 and AVX-VNNI (256 bits, one source: matvec_quant_avx2.inc) and
 * AVX512-VNNI (512 bits).  Compiled with target attributes, reached only
 * when the CPU has them (tl_q8_isa_supported).  Each kernel takes up to 4
 * tokens, so the prompt pass loads and unpacks a weight block once per 4. */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "matvec_quant_i8.h"
#include "q8_round_x86.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* software prefetch distance in bytes, as for the fp32-activation kernels (matvec_quant.c) */
#define QPF 3072

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* the eight scales (sc) and mins (mn) of a Q4_K/Q5_K super-block as bytes,
 * four at a time in 32-bit words (quant.h's tl_k_scale_min: bytes 0-3 scales 0-3,
 * 4-7 mins 0-3, 8-11 the low 4 bits of scales/mins 4-7, their top 2 bits in
 * the top bits of bytes 0-7) */
static inline void k_scales8(const uint8_t *s, uint64_t *sc, uint64_t *mn) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t s_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    const uint32_t s_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4;
    *sc = s_lo | (uint64_t)s_hi << 32;
    *mn = m_lo | (uint64_t)m_hi << 32;
}

/* ------------------------------------------------------- AVX2, AVX-VNNI */

#define TGT "avx2,fma,f16c"
#define SFX(f) f##_avx2
#define ENTRY tl_q8_avx2_fn
#define PENTRY tl_q8_avx2_packed_fn
#define DPBUSD(acc, u, s) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define DPWSSD(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#define Q8_VNNI 0
#include "matvec_quant_avx2.inc"
#undef Q8_VNNI
#undef TGT
#undef SFX
#undef ENTRY
#undef PENTRY
#undef DPBUSD
#undef DPWSSD

#define TGT "avx2,fma,f16c,avxvnni"
#define SFX(f) f##_avxvnni
#define ENTRY tl_q8_avxvnni_fn
#define PENTRY tl_q8_avxvnni_packed_fn
#define DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define DPWSSD(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#define Q8_VNNI 1
#include "matvec_quant_avx2.inc"
#undef Q8_VNNI
#undef TGT
#undef SFX
#undef ENTRY
#undef PENTRY
#undef DPBUSD
#undef DPWSSD

/* ----------------------------------------------------------- AVX512-VNNI */

#define T512 "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c"

__attribute__((target(T512))) static inline float hsum8_512(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Q8_0 / Q4_0 (four): two blocks per register, |w| times x with w's sign
 * (a mask from w's sign bits); an odd last block in a 256-bit register. */
__attribute__((target(T512), always_inline)) static inline void q32_512_n(const uint8_t *b, const uint8_t *xq,
                                                                          size_t xs, int n, float *out, size_t os,
                                                                          const int four, const int NT) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m512i eight = _mm512_set1_epi8(8);
    const size_t bb = four ? 18 : 34;
    const int nb = n / 32;
    __m512 acc[4];
    __m256 acc1[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps(), acc1[t] = _mm256_setzero_ps();
    int k = 0;
    /* Eight blocks per step: their eight f16 scales converted at once and each
     * pair's spread over its lanes by a permute; the weights taken unsigned
     * (Q4_0's nibbles as they are, Q8_0's bytes + 128) and the offset (8 or
     * 128 times the block's sum of x) started in lane 0 of the block's lanes. */
    const __m512i pidx0 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (; k + 8 <= nb; k += 8, b += 8 * bb) {
        _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QPF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QPF + 128, _MM_HINT_T0);
        if (!four) {
            _mm_prefetch((const char *)b + QPF + 192, _MM_HINT_T0);
            _mm_prefetch((const char *)b + QPF + 256, _MM_HINT_T0);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_set_epi16((short)ld16(b + 7 * bb), (short)ld16(b + 6 * bb),
                                                        (short)ld16(b + 5 * bb), (short)ld16(b + 4 * bb),
                                                        (short)ld16(b + 3 * bb), (short)ld16(b + 2 * bb),
                                                        (short)ld16(b + bb), (short)ld16(b)));
        __m512 sv[4];
        __m512i corr[4];
        for (int t = 0; t < NT; t++) {
            const uint8_t *x = xq + (size_t)t * xs;
            const float *dx = (const float *)(const void *)(x + n);
            const __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)((const int32_t *)(dx + nb) + k));
            sv[t] = _mm512_castps256_ps512(_mm256_mul_ps(dw, _mm256_loadu_ps(dx + k)));
            corr[t] = _mm512_castsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sx, four ? 3 : 7)));
        }
        for (int p = 0; p < 4; p++) {
            const uint8_t *bp = b + 2 * p * bb;
            __m512i w;
            if (four) {
                const __m256i q = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(const void *)(bp + 20)),
                                                   _mm_loadu_si128((const __m128i *)(const void *)(bp + 2)));
                const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, m4)),
                                                     _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), 1);
                w = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
            } else {
                w = _mm512_xor_si512(
                    _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(bp + 2))),
                                       _mm256_loadu_si256((const __m256i *)(const void *)(bp + 2 + bb)), 1),
                    flip);
            }
            const __m512i idx = _mm512_add_epi32(pidx0, _mm512_set1_epi32(2 * p));
            for (int t = 0; t < NT; t++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(xq + (size_t)t * xs + 32 * (k + 2 * p)));
                const __m512i pv = _mm512_dpbusd_epi32(_mm512_maskz_permutexvar_epi32(0x0101, idx, corr[t]), w, xv);
                acc[t] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, sv[t]), _mm512_cvtepi32_ps(pv), acc[t]);
            }
        }
    }
    for (; k + 2 <= nb; k += 2, b += 2 * bb) {
        _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        if (!four) _mm_prefetch((const char *)b + QPF + 64, _MM_HINT_T0);
        __m512i w;
        if (four) {
            const __m256i q = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(const void *)(b + 20)),
                                               _mm_loadu_si128((const __m128i *)(const void *)(b + 2)));
            /* 128-bit lanes lo0 lo1 hi0 hi1, put in element order lo0 hi0 lo1 hi1 */
            const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, m4)),
                                                 _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), 1);
            w = _mm512_sub_epi8(_mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0)), eight);
        } else {
            w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(b + 2))),
                                   _mm256_loadu_si256((const __m256i *)(const void *)(b + 2 + bb)), 1);
        }
        const __m512i aw = _mm512_abs_epi8(w);
        const __mmask64 neg = _mm512_movepi8_mask(w);
        const float dw0 = _cvtsh_ss(ld16(b)), dw1 = _cvtsh_ss(ld16(b + bb));
        for (int t = 0; t < NT; t++) {
            const uint8_t *x = xq + (size_t)t * xs;
            const float *dx = (const float *)(const void *)(x + n);
            const __m512i xv = _mm512_loadu_si512((const void *)(x + 32 * k));
            const __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
            const __m512 s = _mm512_insertf32x8(_mm512_set1_ps(dw0 * dx[k]), _mm256_set1_ps(dw1 * dx[k + 1]), 1);
            acc[t] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[t]);
        }
    }
    if (k < nb) {
        __m256i w;
        if (four) {
            const __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(b + 2));
            w = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4),
                                _mm256_set1_epi8(8));
        } else {
            w = _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
        }
        const __m256i aw = _mm256_sign_epi8(w, w);
        const float dw = _cvtsh_ss(ld16(b));
        for (int t = 0; t < NT; t++) {
            const uint8_t *x = xq + (size_t)t * xs;
            const float *dx = (const float *)(const void *)(x + n);
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x + 32 * k));
            const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xv, w));
            acc1[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[k]), _mm256_cvtepi32_ps(p), acc1[t]);
        }
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * os] = _mm512_reduce_add_ps(acc[t]) + hsum8_512(acc1[t]);
}

/* Q4_K / Q5_K: a sub-block pair (64 elements) per register, products
 * pair-summed to int16 (vpmaddubsw) and scaled into int32 (vpdpwssd). */
__attribute__((target(T512), always_inline)) static inline void q45k_512_n(const uint8_t *b, const uint8_t *xq,
                                                                           size_t xs, int n, float *out, size_t os,
                                                                           const int five, const int NT) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    /* int16 lane l: 0 for the low sub-block (lanes 0-15), 1 for the high one */
    const __m512i half16 = _mm512_srli_epi16(
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9,
                         8, 7, 6, 5, 4, 3, 2, 1, 0),
        4);
    const size_t bb = five ? 176 : 144;
    float acc[4] = {0, 0, 0, 0};
    for (int k = 0; k < n / 256; k++, b += bb) {
        for (int l = 0; l < (int)bb; l += 64) _mm_prefetch((const char *)b + QPF + l, _MM_HINT_T0);
        uint64_t sc8, mn8;
        k_scales8(b + 4, &sc8, &mn8);
        /* the scales as int16, each pair's spread over its register by vpermw */
        const __m512i scz = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
        /* the mins as int16, each twice (m0 m0 m1 m1 ...), against the sums per 16 */
        const __m128i mnb = _mm_cvtsi64_si128((long long)mn8);
        const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mnb, mnb));
        const uint8_t *qs = b + (five ? 48 : 16);
        __m256i hq = five ? _mm256_loadu_si256((const __m256i *)(const void *)(b + 16)) : _mm256_setzero_si256();
        __m512i ia[4];
        for (int t = 0; t < NT; t++) ia[t] = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * p));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hq, one), 4));
                hq = _mm256_srli_epi16(hq, 1);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hq, one), 4));
                hq = _mm256_srli_epi16(hq, 1);
            }
            const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            const __m512i s = _mm512_permutexvar_epi16(_mm512_add_epi16(half16, _mm512_set1_epi16((short)(2 * p))), scz);
            for (int t = 0; t < NT; t++) {
                const uint8_t *x = xq + (size_t)t * xs + 256 * k + 64 * p;
                ia[t] = _mm512_dpwssd_epi32(ia[t], _mm512_maddubs_epi16(w, _mm512_loadu_si512((const void *)x)), s);
            }
        }
        const float d = _cvtsh_ss(ld16(b)), dmin = _cvtsh_ss(ld16(b + 2));
        for (int t = 0; t < NT; t++) {
            const uint8_t *x = xq + (size_t)t * xs;
            const float *xd = (const float *)(const void *)(x + n);
            const int16_t *bs = (const int16_t *)(const void *)(xd + n / 256) + 16 * k;
            /* msum's terms m_j (bs[2j] + bs[2j+1]) by vpmaddwd, then both sums reduced together */
            const __m256i m8 =
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)bs), mn16);
            const __m256i i8 = _mm256_add_epi32(_mm512_castsi512_si256(ia[t]), _mm512_extracti64x4_epi64(ia[t], 1));
            __m256i h = _mm256_hadd_epi32(i8, m8);
            h = _mm256_hadd_epi32(h, h);
            const __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            const int isum = _mm_cvtsi128_si32(r), msum = _mm_extract_epi32(r, 1);
            acc[t] += xd[k] * (d * (float)isum - dmin * (float)msum);
        }
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * os] = acc[t];
}

/* Q6_K: per half (128 elements) two registers: runs 0-1 (low nibbles of all
 * 64 ql bytes, qh bits 0-3) and runs 2-3 (high nibbles, bits 4-7); the
 * scales spread to 8 int16 lanes each by vpermw. */
__attribute__((target(T512), always_inline)) static inline void q6k_512_n(const uint8_t *b, const uint8_t *xq,
                                                                          size_t xs, int n, float *out, size_t os,
                                                                          const int NT) {
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    /* lane l of a 32-lane int16 register takes scale l / 8 (+ 4 per register) */
    const __m512i idx0 = _mm512_srli_epi16(
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9,
                         8, 7, 6, 5, 4, 3, 2, 1, 0),
        3);
    float acc[4] = {0, 0, 0, 0};
    for (int k = 0; k < n / 256; k++, b += 210) {
        for (int l = 0; l < 210; l += 64) _mm_prefetch((const char *)b + QPF + l, _MM_HINT_T0);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(b + 192)));
        const __m512i scz = _mm512_castsi256_si512(sc16);
        __m512i ia[4];
        for (int t = 0; t < NT; t++) ia[t] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i L = _mm512_loadu_si512((const void *)(b + 64 * h));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + 128 + 32 * h));
            const __m512i H = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            const __m512i w0 = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_slli_epi16(_mm512_and_si512(H, m3), 4));
            const __m512i w1 =
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(H, 4), m3), 4));
            const __m512i s0 = _mm512_permutexvar_epi16(_mm512_add_epi16(idx0, _mm512_set1_epi16((short)(8 * h))), scz);
            const __m512i s1 =
                _mm512_permutexvar_epi16(_mm512_add_epi16(idx0, _mm512_set1_epi16((short)(8 * h + 4))), scz);
            for (int t = 0; t < NT; t++) {
                const uint8_t *x = xq + (size_t)t * xs + 256 * k + 128 * h;
                ia[t] = _mm512_dpwssd_epi32(ia[t], _mm512_maddubs_epi16(w0, _mm512_loadu_si512((const void *)x)), s0);
                ia[t] = _mm512_dpwssd_epi32(ia[t], _mm512_maddubs_epi16(w1, _mm512_loadu_si512((const void *)(x + 64))),
                                            s1);
            }
        }
        const float d = _cvtsh_ss(ld16(b + 208));
        for (int t = 0; t < NT; t++) {
            const uint8_t *x = xq + (size_t)t * xs;
            const float *xd = (const float *)(const void *)(x + n);
            const __m256i bs =
                _mm256_loadu_si256((const __m256i *)(const void *)((const int16_t *)(xd + n / 256) + 16 * k));
            const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
            const __m512i tot = _mm512_sub_epi32(ia[t], _mm512_zextsi256_si512(off));
            acc[t] += xd[k] * (d * (float)_mm512_reduce_add_epi32(tot));
        }
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * os] = acc[t];
}

#define DEF512(name, body)                                                                                           \
    __attribute__((target(T512))) static void name(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n,  \
                                                   float *out, size_t os) {                                         \
        NT_SWITCH(body)                                                                                              \
    }
#define B_Q8_0(N) q32_512_n(b, xq, xs, n, out, os, 0, N)
#define B_Q4_0(N) q32_512_n(b, xq, xs, n, out, os, 1, N)
#define B_Q4_K(N) q45k_512_n(b, xq, xs, n, out, os, 0, N)
#define B_Q5_K(N) q45k_512_n(b, xq, xs, n, out, os, 1, N)
#define B_Q6_K(N) q6k_512_n(b, xq, xs, n, out, os, N)
DEF512(q8_0_512, B_Q8_0)
DEF512(q4_0_512, B_Q4_0)
DEF512(q4_k_512, B_Q4_K)
DEF512(q5_k_512, B_Q5_K)
DEF512(q6_k_512, B_Q6_K)

tl_q8_fn tl_q8_avx512vnni_fn(uint32_t type) {
    switch (type) {
    case TL_GGML_Q8_0: return q8_0_512;
    case TL_GGML_Q4_0: return q4_0_512;
    case TL_GGML_Q4_K: return q4_k_512;
    case TL_GGML_Q5_K: return q5_k_512;
    case TL_GGML_Q6_K: return q6_k_512;
    default: return NULL;
    }
}

/* Repacked Q8_0 / Q4_0 (matvec_quant.h): lane r of every register is row r of
 * the group, so x's 4 bytes meet 16 rows in one vpdpbusd (broadcast from
 * memory), the 16 scales are one conversion and the sums need no reduction.
 * The integer sum starts at the weights' offset (8 or 128 times x's sum);
 * then per row (d_w d_x) isum is added block by block, as the C kernel does.
 * Q4_0's high nibbles are only masked, not shifted: they enter their own
 * chain as 16 times their value, which an exact shift takes back (|16 q x|
 * summed over a block stays far below 2^31), one instruction less per 64
 * bytes of a kernel that is otherwise bound by its unpacking. */
__attribute__((target(T512), always_inline)) static inline void p32_512_n(const uint8_t *b, const uint8_t *xq,
                                                                          size_t xs, int n, float *out, size_t os,
                                                                          const int four, const int NT) {
    const __m512i m4 = _mm512_set1_epi8(15), m4h = _mm512_set1_epi8((char)0xf0);
    const int nb = n / 32;
    const size_t pb = four ? 576 : 1088, qb = four ? 256 : 512;
    __m512 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int k = 0; k < nb; k += 2, b += pb) {
        for (size_t l = 0; l < pb; l += 64) _mm_prefetch((const char *)b + TL_PACKED_PF + l, TL_PACKED_PF_HINT);
        const __m512i dh = _mm512_loadu_si512((const void *)b);
        const __m512 dw[2] = {_mm512_cvtph_ps(_mm512_castsi512_si256(dh)),
                              _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dh, 1))};
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = b + 64 + (size_t)h * qb;
            /* Q4_0: chunks 0-3 the low nibbles (x's bytes 0-15), 4-7 the high ones times 16 (bytes 16-31) */
            __m512i w[8];
            if (four) {
                for (int j = 0; j < 4; j++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(q + 64 * j));
                    w[j] = _mm512_and_si512(v, m4);
                    w[4 + j] = _mm512_and_si512(v, m4h);
                }
            } else {
                for (int j = 0; j < 8; j++) w[j] = _mm512_loadu_si512((const void *)(q + 64 * j));
            }
            for (int t = 0; t < NT; t++) {
                const uint8_t *x = xq + (size_t)t * xs;
                const float *dx = (const float *)(const void *)(x + n);
                const int32_t *sx = (const int32_t *)(const void *)(dx + nb);
                const uint8_t *xk = x + 32 * (k + h);
                /* two chains of four: chunks 0-3 and 4-7 */
                __m512i i0 = _mm512_set1_epi32(-(four ? 8 : 128) * sx[k + h]), i1 = _mm512_setzero_si512();
                for (int j = 0; j < 4; j++) {
                    int32_t x0, x1;
                    memcpy(&x0, xk + 4 * j, 4);
                    memcpy(&x1, xk + 16 + 4 * j, 4);
                    i0 = _mm512_dpbusd_epi32(i0, w[j], _mm512_set1_epi32(x0));
                    i1 = _mm512_dpbusd_epi32(i1, w[4 + j], _mm512_set1_epi32(x1));
                }
                const __m512i isum = _mm512_add_epi32(i0, four ? _mm512_srai_epi32(i1, 4) : i1);
                const __m512 s = _mm512_mul_ps(dw[h], _mm512_set1_ps(dx[k + h]));
                acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum)));
            }
        }
    }
    for (int t = 0; t < NT; t++) _mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

/* The prompt pass on two groups at once (32 rows, Q8_0's repacked layout):
 * each of x's 4-byte broadcasts feeds both groups' lines, 16 chains (2
 * groups x 4 tokens x chunks 0-3 / 4-7) instead of 8, the same integer sums
 * and fp32 operations per row as p32_512_n.  Q4_0 reaches it through
 * tl_q8_unpack4_512, its nibbles as Q8_0 bytes. */
__attribute__((target(T512), always_inline)) static inline void p8_pair_n(const uint8_t *b0, const uint8_t *b1,
                                                                          const uint8_t *xq, size_t xs, int n,
                                                                          float *out, size_t os, const int NT) {
    const int nb = n / 32;
    __m512 acc[2][4];
    for (int t = 0; t < NT; t++) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    for (int k = 0; k < nb; k += 2, b0 += 1088, b1 += 1088) {
        const uint8_t *bg[2] = {b0, b1};
        __m512 dw[2][2];
        for (int g = 0; g < 2; g++) {
            const __m512i dh = _mm512_loadu_si512((const void *)bg[g]);
            dw[g][0] = _mm512_cvtph_ps(_mm512_castsi512_si256(dh));
            dw[g][1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dh, 1));
        }
        for (int h = 0; h < 2; h++) {
            __m512i i0[2][4], i1[2][4];
            for (int t = 0; t < NT; t++) {
                const int32_t *sx = (const int32_t *)(const void *)(xq + (size_t)t * xs + n + 4 * (size_t)nb);
                i0[0][t] = i0[1][t] = _mm512_set1_epi32(-128 * sx[k + h]);
                i1[0][t] = i1[1][t] = _mm512_setzero_si512();
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const __m512i w00 = _mm512_loadu_si512((const void *)(b0 + 64 + 512 * h + 64 * j)),
                              w01 = _mm512_loadu_si512((const void *)(b0 + 64 + 512 * h + 64 * (4 + j))),
                              w10 = _mm512_loadu_si512((const void *)(b1 + 64 + 512 * h + 64 * j)),
                              w11 = _mm512_loadu_si512((const void *)(b1 + 64 + 512 * h + 64 * (4 + j)));
                for (int t = 0; t < NT; t++) {
                    const uint8_t *xk = xq + (size_t)t * xs + 32 * (k + h);
                    int32_t x0, x1;
                    memcpy(&x0, xk + 4 * j, 4);
                    memcpy(&x1, xk + 16 + 4 * j, 4);
                    const __m512i bx0 = _mm512_set1_epi32(x0), bx1 = _mm512_set1_epi32(x1);
                    i0[0][t] = _mm512_dpbusd_epi32(i0[0][t], w00, bx0);
                    i0[1][t] = _mm512_dpbusd_epi32(i0[1][t], w10, bx0);
                    i1[0][t] = _mm512_dpbusd_epi32(i1[0][t], w01, bx1);
                    i1[1][t] = _mm512_dpbusd_epi32(i1[1][t], w11, bx1);
                }
            }
            for (int t = 0; t < NT; t++) {
                const float *dx = (const float *)(const void *)(xq + (size_t)t * xs + n);
                for (int g = 0; g < 2; g++) {
                    const __m512i isum = _mm512_add_epi32(i0[g][t], i1[g][t]);
                    const __m512 s = _mm512_mul_ps(dw[g][h], _mm512_set1_ps(dx[k + h]));
                    acc[g][t] = _mm512_add_ps(acc[g][t], _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum)));
                }
            }
        }
    }
    for (int t = 0; t < NT; t++) {
        _mm512_storeu_ps(out + (size_t)t * os, acc[0][t]);
        _mm512_storeu_ps(out + (size_t)t * os + 16, acc[1][t]);
    }
}

#define B_PAIR(N) p8_pair_n(b0, b1, xq, xs, n, out, os, N)
__attribute__((target(T512))) static void p8_pair_512(const uint8_t *b0, const uint8_t *b1, const uint8_t *xq,
                                                      size_t xs, int nt, int n, float *out, size_t os) {
    NT_SWITCH(B_PAIR)
}

void tl_q8_pair_512(const uint8_t *b0, const uint8_t *b1, const uint8_t *xq, size_t xs, int nt, int n, float *out,
                    size_t os) {
    for (int t = 0; t < nt; t += 4) {
        const int m = nt - t < 4 ? nt - t : 4;
        p8_pair_512(b0, b1, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
    }
}

/* A repacked Q4_0 group (n columns) as Q8_0's layout: the scales as they
 * are, each nibble q as the byte q - 8 + 128 (chunks 0-3 the low nibbles,
 * 4-7 the high ones, as p32_512_n reads them). */
__attribute__((target(T512))) void tl_q8_unpack4_512(const uint8_t *b, int n, uint8_t *dst) {
    const __m512i m4 = _mm512_set1_epi8(15), off = _mm512_set1_epi8(120);
    for (int k = 0; k < n / 32; k += 2, b += 576, dst += 1088) {
        for (int l = 0; l < 576; l += 64) _mm_prefetch((const char *)b + TL_PACKED_PF + l, TL_PACKED_PF_HINT);
        memcpy(dst, b, 64);
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) {
                const __m512i v = _mm512_loadu_si512((const void *)(b + 64 + 256 * h + 64 * j));
                _mm512_storeu_si512((void *)(dst + 64 + 512 * h + 64 * j),
                                    _mm512_add_epi8(_mm512_and_si512(v, m4), off));
                _mm512_storeu_si512((void *)(dst + 64 + 512 * h + 64 * (4 + j)),
                                    _mm512_add_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), off));
            }
    }
}

/* tl_q8_quantize 16 elements at a time with the portable code's fp32
 * operations per element (d = amax / 127, q = trunc(x (127 / amax) +- 0.5)
 * clamped to +-127; a block with a NaN or an infinity: q = 0, d = NaN), so
 * the same bytes: it runs on one thread before each decode product, where the
 * compiler's SSE2 code took ~2 ns per element (~0.5 ms of a TinyLlama token). */
__attribute__((target(T512))) void tl_q8_quantize_avx512(int kq, const float *x, int n, void *xq) {
    const int bl = kq ? 256 : 32;
    int8_t *q = xq;
    float *d = (float *)(void *)(q + n);
    int16_t *bs = (int16_t *)(void *)(d + n / 256);
    int32_t *s32 = (int32_t *)(void *)(d + n / 32);
    for (int b0 = 0, k = 0; b0 < n; b0 += bl, k++) {
        float id;
        __mmask16 keep;
        d[k] = tl_q8_block_scale_avx512(x + b0, bl, &id, &keep);
        int32_t sum = 0;
        for (int i = b0; i < b0 + bl; i += 16) {
            const __m512i qi = tl_q8_round16_avx512(x + i, id, keep);
            _mm_storeu_si128((__m128i *)(void *)(q + i), _mm512_cvtepi32_epi8(qi));
            const int qs = _mm512_reduce_add_epi32(qi);
            if (kq)
                bs[i / 16] = (int16_t)qs;
            else
                sum += qs;
        }
        if (!kq) s32[k] = sum;
    }
}

#define B_P8_0(N) p32_512_n(b, xq, xs, n, out, os, 0, N)
#define B_P4_0(N) p32_512_n(b, xq, xs, n, out, os, 1, N)
DEF512(p8_0_512, B_P8_0)
DEF512(p4_0_512, B_P4_0)

tl_q8_packed_fn tl_q8_avx512vnni_packed_fn(uint32_t type) {
    return type == TL_GGML_Q8_0 ? p8_0_512 : type == TL_GGML_Q4_0 ? p4_0_512 : NULL;
}

#endif /* x86 */

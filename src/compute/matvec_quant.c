/* matvec_quant.c - dot products of fp32 activations with rows of GGUF blocks
 * (matvec_quant.h says what is exact).  The ISA versions are compiled with
 * target attributes and only reached when the CPU has them, as in matvec.c. */
#include "matvec_quant.h"

#include <string.h>

#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#define TL_X86 1
#include <immintrin.h>
#endif

/* Software prefetch distance in bytes of the SIMD kernels: as for the BF16
 * kernel (matvec.c), this Intel core's hardware prefetchers leave one weight
 * stream per thread latency-bound; without it Q4_0 decode read ~4 GB/s per
 * thread against BF16's ~8 (2026-12-06, the Xeon VM). */
#define QPF 3072

int tl_quant_supported(uint32_t type) {
    switch (type) {
    case TL_GGML_Q8_0: case TL_GGML_Q4_0: case TL_GGML_Q4_1: case TL_GGML_Q5_0: case TL_GGML_Q5_1:
    case TL_GGML_Q4_K: case TL_GGML_Q5_K: case TL_GGML_Q6_K:
        return 1;
    default:
        return 0;
    }
}

size_t tl_quant_row_bytes(uint32_t type, int cols) {
    uint32_t be = 1, bb = 0;
    tl_ggml_type_block(type, &be, &bb);
    return (size_t)cols / be * bb;
}

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ------------------------------------------------------------ portable C */

/* Q8_0 block: f16 d, 32 int8 q; value d * q. */
static float dot_q8_0_c(const uint8_t *b, const float *x, int n) {
    float acc = 0;
    for (int k = 0; k < n; k += 32, b += 34, x += 32) {
        float s = 0;
        for (int i = 0; i < 32; i++) s += (float)(int8_t)b[2 + i] * x[i];
        acc += tl_f16_to_f32(ld16(b)) * s;
    }
    return acc;
}

/* Q4_0 block: f16 d, 16 bytes: element i the low nibble of byte i, element
 * i + 16 its high nibble; value d * (q - 8). */
static float dot_q4_0_c(const uint8_t *b, const float *x, int n) {
    float acc = 0;
    for (int k = 0; k < n; k += 32, b += 18, x += 32) {
        float s = 0;
        for (int i = 0; i < 16; i++)
            s += (float)((b[2 + i] & 15) - 8) * x[i] + (float)((b[2 + i] >> 4) - 8) * x[i + 16];
        acc += tl_f16_to_f32(ld16(b)) * s;
    }
    return acc;
}

/* Any dequantizable type: 256 elements (a K-quant super-block, or eight
 * 32-element blocks) at a time through a stack buffer. */
static float dot_generic(uint32_t type, const uint8_t *b, const float *x, int n, tl_kernel k) {
    uint32_t be, bb;
    tl_ggml_type_block(type, &be, &bb);
    float buf[256], acc = 0;
    for (int i = 0; i < n; i += 256) {
        int m = n - i < 256 ? n - i : 256; /* a multiple of be: n is, and 256 is */
        tl_gguf_dequant_row(type, b, buf, (size_t)m);
        acc += tl_dot_f32(k, buf, x + i, m);
        b += (size_t)m / be * bb;
    }
    return acc;
}

#ifdef TL_X86
/* ------------------------------------------------------------ AVX2 + FMA */

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* eight int8 to fp32 */
__attribute__((target("avx2,fma"))) static inline __m256 i8x8(__m128i v) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

__attribute__((target("avx2,fma,f16c"))) static float dot_q8_0_avx2(const uint8_t *b, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 32, b += 34, x += 32) {
        _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        const __m128i q0 = _mm_loadu_si128((const __m128i *)(const void *)(b + 2));
        const __m128i q1 = _mm_loadu_si128((const __m128i *)(const void *)(b + 18));
        __m256 s = _mm256_mul_ps(i8x8(q0), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8(q1), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(ld16(b))), s, acc);
    }
    return hsum8(acc);
}

__attribute__((target("avx2,fma,f16c"))) static float dot_q4_0_avx2(const uint8_t *b, const float *x, int n) {
    const __m128i m4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 32, b += 18, x += 32) {
        if (!(k & 63)) _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        const __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(b + 2));
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);
        __m256 s = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(ld16(b))), s, acc);
    }
    return hsum8(acc);
}


/* --------------------------------------------------------------- AVX-512 */

/* sixteen int8 to fp32 */
__attribute__((target("avx512f"))) static inline __m512 i8x16(__m128i v) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
}

/* Two blocks per iteration: independent chains hide the FMA latency. */
__attribute__((target("avx512f,f16c"))) static float dot_q8_0_avx512(const uint8_t *b, const float *x, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int k = 0;
    for (; k + 64 <= n; k += 64, b += 68, x += 64) {
        _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QPF + 64, _MM_HINT_T0);
        __m512 s0 = _mm512_mul_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 2))), _mm512_loadu_ps(x));
        s0 = _mm512_fmadd_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 18))), _mm512_loadu_ps(x + 16),
                             s0);
        __m512 s1 = _mm512_mul_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 36))),
                                  _mm512_loadu_ps(x + 32));
        s1 = _mm512_fmadd_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 52))), _mm512_loadu_ps(x + 48),
                             s1);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b))), s0, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b + 34))), s1, a1);
    }
    for (; k < n; k += 32, b += 34, x += 32) {
        __m512 s = _mm512_mul_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 2))), _mm512_loadu_ps(x));
        s = _mm512_fmadd_ps(i8x16(_mm_loadu_si128((const __m128i *)(const void *)(b + 18))), _mm512_loadu_ps(x + 16), s);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b))), s, a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

__attribute__((target("avx512f,f16c"))) static inline __m512 q4_0_block512(const uint8_t *b, const float *x) {
    const __m128i m4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    const __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(b + 2));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);
    __m512 s = _mm512_mul_ps(i8x16(lo), _mm512_loadu_ps(x));
    return _mm512_fmadd_ps(i8x16(hi), _mm512_loadu_ps(x + 16), s);
}

__attribute__((target("avx512f,f16c"))) static float dot_q4_0_avx512(const uint8_t *b, const float *x, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int k = 0;
    for (; k + 64 <= n; k += 64, b += 36, x += 64) {
        _mm_prefetch((const char *)b + QPF, _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b))), q4_0_block512(b, x), a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b + 18))), q4_0_block512(b + 18, x + 32), a1);
    }
    for (; k < n; k += 32, b += 18, x += 32)
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16(b))), q4_0_block512(b, x), a0);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* sixteen uint8 to fp32 */
__attribute__((target("avx512f"))) static inline __m512 u8x16(__m128i v) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
}

/* Q4_K: per 32-element sub-block j, value (d sc_j) q - (dmin m_j), so its dot
 * is (d sc_j) sum(q x) - (dmin m_j) sum(x); the sums stay vectors. */
__attribute__((target("avx512f,f16c"))) static float dot_q4_k_avx512(const uint8_t *b, const float *x, int n) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int k = 0; k < n; k += 256, b += 144, x += 256) {
        const float d = _cvtsh_ss(ld16(b)), dmin = _cvtsh_ss(ld16(b + 2));
        const uint8_t *sc = b + 4, *qs = b + 16;
        const float *xj = x;
        for (int j = 0; j < 8; j += 2, qs += 32, xj += 64) {
            if (!(j & 2)) _mm_prefetch((const char *)qs + QPF, _MM_HINT_T0);
            int s0, m0, s1, m1;
            tl_k_scale_min(sc, j, &s0, &m0);
            tl_k_scale_min(sc, j + 1, &s1, &m1);
            const __m128i a = _mm_loadu_si128((const __m128i *)(const void *)qs);
            const __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(qs + 16));
            const __m512 x0 = _mm512_loadu_ps(xj), x1 = _mm512_loadu_ps(xj + 16);
            const __m512 x2 = _mm512_loadu_ps(xj + 32), x3 = _mm512_loadu_ps(xj + 48);
            __m512 lo = _mm512_mul_ps(u8x16(_mm_and_si128(a, m4)), x0);
            lo = _mm512_fmadd_ps(u8x16(_mm_and_si128(c, m4)), x1, lo);
            __m512 hi = _mm512_mul_ps(u8x16(_mm_and_si128(_mm_srli_epi16(a, 4), m4)), x2);
            hi = _mm512_fmadd_ps(u8x16(_mm_and_si128(_mm_srli_epi16(c, 4), m4)), x3, hi);
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s0), lo, acc0);
            acc0 = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m0), _mm512_add_ps(x0, x1), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s1), hi, acc1);
            acc1 = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m1), _mm512_add_ps(x2, x3), acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Q6_K: each half of a super-block (128 elements) has 64 bytes of low nibbles,
 * 32 bytes of 2-bit high parts and 8 int8 scales of 16 elements each; element
 * 32 r + i (r = 0..3, i < 32) takes the low nibble of ql[i + 32 (r & 1)] (r < 2)
 * or its high nibble (r >= 2) and bits 2r..2r+1 of qh[i]; value d sc (q - 32). */
__attribute__((target("avx512f,f16c"))) static float dot_q6_k_avx512(const uint8_t *b, const float *x, int n) {
    const __m128i m4 = _mm_set1_epi8(15), m2 = _mm_set1_epi8(3), off = _mm_set1_epi8(32);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int k = 0; k < n; k += 256, b += 210) {
        const float d = _cvtsh_ss(ld16(b + 208));
        for (int l = 0; l < 210; l += 64) _mm_prefetch((const char *)b + QPF + l, _MM_HINT_T0);
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, x += 128)
            for (int c = 0; c < 32; c += 16) {
                const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(qh + c));
                const __m128i l0 = _mm_loadu_si128((const __m128i *)(const void *)(ql + c));
                const __m128i l1 = _mm_loadu_si128((const __m128i *)(const void *)(ql + 32 + c));
                const __m128i lo[4] = {_mm_and_si128(l0, m4), _mm_and_si128(l1, m4),
                                       _mm_and_si128(_mm_srli_epi16(l0, 4), m4),
                                       _mm_and_si128(_mm_srli_epi16(l1, 4), m4)};
                const __m128i hi[4] = {_mm_slli_epi16(_mm_and_si128(h, m2), 4),
                                       _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 2), m2), 4),
                                       _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 4), m2), 4),
                                       _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 6), m2), 4)};
                for (int r = 0; r < 4; r++) {
                    const __m128i q = _mm_sub_epi8(_mm_or_si128(lo[r], hi[r]), off);
                    const __m512 p = _mm512_mul_ps(i8x16(q), _mm512_loadu_ps(x + 32 * r + c));
                    const __m512 s = _mm512_set1_ps(d * (float)sc[2 * r + c / 16]);
                    if (r & 1)
                        acc1 = _mm512_fmadd_ps(s, p, acc1);
                    else
                        acc0 = _mm512_fmadd_ps(s, p, acc0);
                }
            }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

#endif /* TL_X86 */

/* The ISA a kernel family runs quantized products on: 2 AVX-512, 1 AVX2, 0 C. */
static int isa(tl_kernel k) {
    if (k == TL_KERNEL_AUTO) k = tl_kernel_best();
    switch (k) {
    case TL_KERNEL_AVX512:
    case TL_KERNEL_AVX512BF16:
    case TL_KERNEL_AMX:
    case TL_KERNEL_AMX_EXACT: return tl_kernel_supported(TL_KERNEL_AVX512) ? 2 : 0;
    case TL_KERNEL_AVX2: return tl_kernel_supported(TL_KERNEL_AVX2) ? 1 : 0;
    default: return 0;
    }
}

typedef float (*qdot_fn)(const uint8_t *b, const float *x, int n);

static float dot_isa(int i, uint32_t type, const uint8_t *b, const float *x, int n) {
#ifdef TL_X86
    static const qdot_fn q8[3] = {dot_q8_0_c, dot_q8_0_avx2, dot_q8_0_avx512};
    static const qdot_fn q4[3] = {dot_q4_0_c, dot_q4_0_avx2, dot_q4_0_avx512};
#else
    static const qdot_fn q8[1] = {dot_q8_0_c};
    static const qdot_fn q4[1] = {dot_q4_0_c};
    i = 0;
#endif
    if (type == TL_GGML_Q8_0) return q8[i](b, x, n);
    if (type == TL_GGML_Q4_0) return q4[i](b, x, n);
#ifdef TL_X86
    if (i == 2 && type == TL_GGML_Q4_K) return dot_q4_k_avx512(b, x, n);
    if (i == 2 && type == TL_GGML_Q6_K) return dot_q6_k_avx512(b, x, n);
#endif
    static const tl_kernel f32[3] = {TL_KERNEL_SCALAR, TL_KERNEL_AVX2, TL_KERNEL_AVX512};
    return dot_generic(type, b, x, n, f32[i]);
}

float tl_quant_dot(tl_kernel k, uint32_t type, const void *row, const float *x, int n) {
    return dot_isa(isa(k), type, row, x, n);
}

void tl_quant_rows(tl_kernel k, const tl_wmat *W, const float *x, float *y, int r0, int r1) {
    const int i = isa(k);
    const size_t rb = tl_quant_row_bytes(W->quant, W->cols);
    const uint8_t *base = W->data;
    if (W->packed) { /* each row put back in file order first (tl_q8_packable bounds it) */
        _Alignas(64) uint8_t row[16384];
        for (int r = r0; r < r1; r++) {
            tl_q8_unpack_row(W, r, row);
            y[r] = dot_isa(i, W->quant, row, x, W->cols);
        }
        return;
    }
    for (int r = r0; r < r1; r++) y[r] = dot_isa(i, W->quant, base + (size_t)r * rb, x, W->cols);
}

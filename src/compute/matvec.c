/* matvec.c - y = W x for weights in their file dtype (F32/BF16/F16), the hot
 * loop of single-token decode.  One dot-product kernel per (ISA, dtype); the ISA
 * versions are compiled with target attributes and only called after
 * __builtin_cpu_supports says the CPU has them, so the binary runs anywhere.
 * Every kernel accumulates in fp32 (AVX512BF16 also rounds x to bf16). */
#include <omp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "gemm_amx.h"
#include "quant.h"
#include "matvec.h"
#include "matvec_quant.h"

#if defined(__x86_64__) || defined(__i386__)
#define TL_X86 1
#include <immintrin.h>
#endif

/* ------------------------------------------------------------- kernel names */

const char *tl_kernel_name(tl_kernel k) {
    switch (k) {
    case TL_KERNEL_AUTO: return "auto";
    case TL_KERNEL_SCALAR: return "scalar";
    case TL_KERNEL_AVX2: return "avx2";
    case TL_KERNEL_AVX512: return "avx512";
    case TL_KERNEL_AVX512BF16: return "avx512bf16";
    case TL_KERNEL_AMX: return "amx";
    case TL_KERNEL_AMX_EXACT: return "amx-exact";
    }
    return "?";
}

int tl_kernel_parse(const char *name) {
    for (int k = TL_KERNEL_AUTO; k <= TL_KERNEL_LAST; k++)
        if (!strcmp(name, tl_kernel_name((tl_kernel)k))) return k;
    return -1;
}

int tl_kernel_supported(tl_kernel k) {
#ifdef TL_X86
    __builtin_cpu_init();
    switch (k) {
    case TL_KERNEL_AUTO:
    case TL_KERNEL_SCALAR: return 1;
    case TL_KERNEL_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case TL_KERNEL_AVX512: return __builtin_cpu_supports("avx512f");
    case TL_KERNEL_AVX512BF16: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    case TL_KERNEL_AMX:
    case TL_KERNEL_AMX_EXACT: return tl_amx_usable();
    }
    return 0;
#else
    return k == TL_KERNEL_AUTO || k == TL_KERNEL_SCALAR;
#endif
}

int tl_kernel_rounds_bf16(tl_kernel k) { return k == TL_KERNEL_AVX512BF16 || k == TL_KERNEL_AMX; }

tl_kernel tl_kernel_best(void) {
    if (tl_kernel_supported(TL_KERNEL_AMX_EXACT)) return TL_KERNEL_AMX_EXACT;
    if (tl_kernel_supported(TL_KERNEL_AVX512)) return TL_KERNEL_AVX512;
    if (tl_kernel_supported(TL_KERNEL_AVX2)) return TL_KERNEL_AVX2;
    return TL_KERNEL_SCALAR;
}

tl_kernel tl_kernel_best_bf16(void) {
    const tl_kernel k = tl_kernel_best();
    /* AMX does exact products faster than bf16 dot products would round them */
    if (k == TL_KERNEL_AMX_EXACT || !tl_kernel_supported(TL_KERNEL_AVX512BF16)) return k;
    if (tl_gemm_bf16_active() != TL_GEMM_BF16_ONEDNN || tl_bf16_dot_rate() < TL_BF16_DOT_RATE_PAYS) return k;
    return TL_KERNEL_AVX512BF16;
}

/* ----------------------------------------------------------- scalar kernels */

/* Loads through memcpy: mapped tensors need not be aligned to their element size. */
static inline float ld_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}
static inline uint16_t ld_u16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

static float dot_f32_scalar(const void *w, const float *x, int n) {
    const uint8_t *p = w;
    float a[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) a[j] += ld_f32(p + 4 * (size_t)(i + j)) * x[i + j];
    for (; i < n; i++) a[0] += ld_f32(p + 4 * (size_t)i) * x[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

static float dot_bf16_scalar(const void *w, const float *x, int n) {
    const uint8_t *p = w;
    float a[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) a[j] += tl_bf16_to_f32(ld_u16(p + 2 * (size_t)(i + j))) * x[i + j];
    for (; i < n; i++) a[0] += tl_bf16_to_f32(ld_u16(p + 2 * (size_t)i)) * x[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

static float dot_f16_scalar(const void *w, const float *x, int n) {
    const uint8_t *p = w;
    float a = 0;
    for (int i = 0; i < n; i++) a += tl_f16_to_f32(ld_u16(p + 2 * (size_t)i)) * x[i];
    return a;
}

#ifdef TL_X86
/* --------------------------------------------------------------- AVX2 + FMA */

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_f32_avx2(const void *w, const float *x, int n) {
    const float *p = w;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    const uint8_t *b = w;
    for (; i < n; i++) s += ld_f32(b + 4 * (size_t)i) * x[i];
    return s;
}

__attribute__((target("avx2,fma"))) static inline __m256 bf16x8(const void *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma"))) static float dot_bf16_avx2(const void *w, const float *x, int n) {
    const uint16_t *p = w;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(bf16x8(p + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(bf16x8(p + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(bf16x8(p + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(bf16x8(p + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(bf16x8(p + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    const uint8_t *b = w;
    for (; i < n; i++) s += tl_bf16_to_f32(ld_u16(b + 2 * (size_t)i)) * x[i];
    return s;
}

__attribute__((target("avx2,fma,f16c"))) static float dot_f16_avx2(const void *w, const float *x, int n) {
    const uint16_t *p = w;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i))), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i + 8))),
                             _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    const uint8_t *b = w;
    for (; i < n; i++) s += tl_f16_to_f32(ld_u16(b + 2 * (size_t)i)) * x[i];
    return s;
}

/* Eight rows at once: each x vector is loaded once for eight weight rows, and
 * eight independent streams keep more cache-line fetches in flight, which is
 * what decode (memory-bound) needs.  The row tails (cols % 8) are scalar. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 load8(const uint8_t *p, tl_dtype dt) {
    if (dt == TL_DT_F32) return _mm256_loadu_ps((const float *)(const void *)p);
    if (dt == TL_DT_BF16) return bf16x8(p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void dot8_avx2(const uint8_t *w, size_t rb,
                                                                                    const float *x, int n,
                                                                                    float *y, tl_dtype dt) {
    const size_t es = dt == TL_DT_F32 ? 4 : 2;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        const uint8_t *p = w + es * (size_t)i;
        a0 = _mm256_fmadd_ps(load8(p, dt), xv, a0);
        a1 = _mm256_fmadd_ps(load8(p + rb, dt), xv, a1);
        a2 = _mm256_fmadd_ps(load8(p + 2 * rb, dt), xv, a2);
        a3 = _mm256_fmadd_ps(load8(p + 3 * rb, dt), xv, a3);
        a4 = _mm256_fmadd_ps(load8(p + 4 * rb, dt), xv, a4);
        a5 = _mm256_fmadd_ps(load8(p + 5 * rb, dt), xv, a5);
        a6 = _mm256_fmadd_ps(load8(p + 6 * rb, dt), xv, a6);
        a7 = _mm256_fmadd_ps(load8(p + 7 * rb, dt), xv, a7);
    }
    y[0] = hsum256(a0), y[1] = hsum256(a1), y[2] = hsum256(a2), y[3] = hsum256(a3);
    y[4] = hsum256(a4), y[5] = hsum256(a5), y[6] = hsum256(a6), y[7] = hsum256(a7);
    if (i < n) {
        for (int r = 0; r < 8; r++) {
            const uint8_t *p = w + (size_t)r * rb + es * (size_t)i;
            y[r] += dt == TL_DT_F32    ? dot_f32_scalar(p, x + i, n - i)
                    : dt == TL_DT_BF16 ? dot_bf16_scalar(p, x + i, n - i)
                                       : dot_f16_scalar(p, x + i, n - i);
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) static void dot8_f32_avx2(const uint8_t *w, size_t rb, const float *x,
                                                                  int n, float *y) {
    dot8_avx2(w, rb, x, n, y, TL_DT_F32);
}
__attribute__((target("avx2,fma,f16c"))) static void dot8_bf16_avx2(const uint8_t *w, size_t rb, const float *x,
                                                                   int n, float *y) {
    dot8_avx2(w, rb, x, n, y, TL_DT_BF16);
}
__attribute__((target("avx2,fma,f16c"))) static void dot8_f16_avx2(const uint8_t *w, size_t rb, const float *x,
                                                                  int n, float *y) {
    dot8_avx2(w, rb, x, n, y, TL_DT_F16);
}

/* ------------------------------------------------------------------ AVX-512 */

__attribute__((target("avx512f"))) static float dot_f32_avx512(const void *w, const float *x, int n) {
    const float *p = w;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    const uint8_t *b = w;
    for (; i < n; i++) s += ld_f32(b + 4 * (size_t)i) * x[i];
    return s;
}

__attribute__((target("avx512f"))) static inline __m512 bf16x16(const void *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx512f"))) static float dot_bf16_avx512(const void *w, const float *x, int n) {
    const uint16_t *p = w;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(bf16x16(p + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(bf16x16(p + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(bf16x16(p + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(bf16x16(p + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(bf16x16(p + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    const uint8_t *b = w;
    for (; i < n; i++) s += tl_bf16_to_f32(ld_u16(b + 2 * (size_t)i)) * x[i];
    return s;
}

__attribute__((target("avx512f"))) static float dot_f16_avx512(const void *w, const float *x, int n) {
    const uint16_t *p = w;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i))), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i + 16))),
                             _mm512_loadu_ps(x + i + 16), a1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    const uint8_t *b = w;
    for (; i < n; i++) s += tl_f16_to_f32(ld_u16(b + 2 * (size_t)i)) * x[i];
    return s;
}

/* Software prefetch distance of the even/odd kernels (every weight line).  On
 * the Xeon VM (AMX generation, 2026-12-03, 2 threads, interleaved runs) decode
 * went from 13.6-13.7 tokens/s without to 14.6-14.9 at 512 B, 14.8-15.2 at
 * 2 KiB, 15.4-15.5 at 3 KiB and 13.8 at 4 KiB (a page ahead: the same L1 set
 * as the line being read); 3 KiB beat 2 KiB in 4 of 4 later pairs (+1-4%).
 * On Zen 4 prefetching made no difference. */
#define EO_PREFETCH 3072

/* BF16 rows without a widening shuffle: each 32-bit lane of a row holds two
 * bf16 values, the even one in its low half and the odd one in its high half.
 * (lane << 16) is the even value as fp32 and (lane & 0xffff0000) the odd one,
 * so with x split into its even (xe) and odd (xo) elements a 64-byte row slice
 * costs one load, a shift, an and and two FMAs, all off the shuffle port.  On
 * Zen 4 this streams a 4 KiB row as fast as a plain read loop, where the
 * vpmovzxwd version ran ~25% slower (docs/inference.md).  Exact: every
 * product is of the same fp32 values as the other kernels'. */
__attribute__((target("avx512f"), always_inline)) static inline void
dotn_bf16_avx512_eo(const void *w, const float *const *xe, const float *const *xo, const float *const *x, int n,
                    float *const *out, int r, const int NI) {
    const uint16_t *p = w;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 a0[4], a1[4], a2[4], a3[4];
    for (int t = 0; t < NI; t++) a0[t] = a1[t] = a2[t] = a3[t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH + 64, _MM_HINT_T0);
        const __m512i w0 = _mm512_loadu_si512(p + i), w1 = _mm512_loadu_si512(p + i + 32);
        const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)),
                     o0 = _mm512_castsi512_ps(_mm512_and_si512(w0, hi)),
                     e1 = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)),
                     o1 = _mm512_castsi512_ps(_mm512_and_si512(w1, hi));
        for (int t = 0; t < NI; t++) {
            a0[t] = _mm512_fmadd_ps(e0, _mm512_loadu_ps(xe[t] + i / 2), a0[t]);
            a1[t] = _mm512_fmadd_ps(o0, _mm512_loadu_ps(xo[t] + i / 2), a1[t]);
            a2[t] = _mm512_fmadd_ps(e1, _mm512_loadu_ps(xe[t] + i / 2 + 16), a2[t]);
            a3[t] = _mm512_fmadd_ps(o1, _mm512_loadu_ps(xo[t] + i / 2 + 16), a3[t]);
        }
    }
    if (i + 32 <= n) {
        const __m512i w0 = _mm512_loadu_si512(p + i);
        const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)),
                     o0 = _mm512_castsi512_ps(_mm512_and_si512(w0, hi));
        for (int t = 0; t < NI; t++) {
            a0[t] = _mm512_fmadd_ps(e0, _mm512_loadu_ps(xe[t] + i / 2), a0[t]);
            a1[t] = _mm512_fmadd_ps(o0, _mm512_loadu_ps(xo[t] + i / 2), a1[t]);
        }
        i += 32;
    }
    const uint8_t *b = w;
    for (int t = 0; t < NI; t++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0[t], a1[t]), _mm512_add_ps(a2[t], a3[t])));
        for (int j = i; j < n; j++) s += tl_bf16_to_f32(ld_u16(b + 2 * (size_t)j)) * x[t][j];
        out[t][r] = s;
    }
}
__attribute__((target("avx512f"))) static float dot_bf16_avx512_eo(const void *w, const float *xe, const float *xo,
                                                                   const float *x, int n) {
    float y, *o = &y;
    dotn_bf16_avx512_eo(w, &xe, &xo, &x, n, &o, 0, 1);
    return y;
}
/* Four inputs at once (the batched step, speculative decoding's verification):
 * each weight line loaded and split once for the four; each input's
 * operations those of the one-input kernel, so each result is its bits. */
__attribute__((target("avx512f"))) static void dot4_bf16_avx512_eo(const void *w, const float *const *xe,
                                                                   const float *const *xo, const float *const *x, int n,
                                                                   float *const *out, int r) {
    dotn_bf16_avx512_eo(w, xe, xo, x, n, out, r, 4);
}

/* Eight rows of the above at once, for long rows: once xe and xo outgrow the
 * L1 cache next to the weight stream (4 n bytes, e.g. 22 KiB for the 5632-wide
 * down projection), reloading them for every row halved the streaming rate;
 * eight rows share each x load (measured 35-38 GB/s against 19-23 for single
 * rows on Zen 4, where single rows win for 2048-wide rows: 40-43 against 33). */
__attribute__((target("avx512f"))) static void dot8_bf16_avx512_eo(const uint8_t *w, size_t rb, const float *xe,
                                                                    const float *xo, const float *x, int n, float *y) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int i = 0;
#define TL_EO_ROW(a, r)                                                                                  \
    do {                                                                                                 \
        _mm_prefetch((const char *)p + (r) * rb + EO_PREFETCH, _MM_HINT_T0);                             \
        const __m512i v = _mm512_loadu_si512(p + (r) * rb);                                              \
        a = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e, a);                        \
        a = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), o, a);                         \
    } while (0)
    for (; i + 32 <= n; i += 32) {
        const __m512 e = _mm512_loadu_ps(xe + i / 2), o = _mm512_loadu_ps(xo + i / 2);
        const uint8_t *p = w + 2 * (size_t)i;
        TL_EO_ROW(a0, 0);
        TL_EO_ROW(a1, 1);
        TL_EO_ROW(a2, 2);
        TL_EO_ROW(a3, 3);
        TL_EO_ROW(a4, 4);
        TL_EO_ROW(a5, 5);
        TL_EO_ROW(a6, 6);
        TL_EO_ROW(a7, 7);
    }
#undef TL_EO_ROW
    y[0] = _mm512_reduce_add_ps(a0), y[1] = _mm512_reduce_add_ps(a1), y[2] = _mm512_reduce_add_ps(a2);
    y[3] = _mm512_reduce_add_ps(a3), y[4] = _mm512_reduce_add_ps(a4), y[5] = _mm512_reduce_add_ps(a5);
    y[6] = _mm512_reduce_add_ps(a6), y[7] = _mm512_reduce_add_ps(a7);
    if (i < n)
        for (int r = 0; r < 8; r++) y[r] += dot_bf16_scalar(w + (size_t)r * rb + 2 * (size_t)i, x + i, n - i);
}

/* Row width above which the eight-row kernel is used (xe + xo: 12 KiB). */
#define EO_SINGLE_ROW_MAX_COLS 3072

/* AVX512-BF16 dot products of a row with NI (1, 2 or 4) inputs, each held
 * already rounded to bf16 in xb (n rounded up to 32, zero padded).  Each weight
 * line is loaded once for all of them, and their 4 NI sums are independent
 * chains (two per input left vdpbf16ps's latency exposed); each input's
 * operations are the same whatever NI is, so are its result's bits. */
__attribute__((target("avx512f,avx512bf16"), always_inline)) static inline void
dotn_bf16_avx512bf16(const void *w, const uint16_t *const *xb, const float *const *x, int n, float *const *out, int r,
                     const int NI) {
    const uint16_t *p = w;
    __m512 a[4][4];
    for (int t = 0; t < NI; t++) a[t][0] = a[t][1] = a[t][2] = a[t][3] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 128 <= n; i += 128) {
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + EO_PREFETCH + 192, _MM_HINT_T0);
        __m512bh wv[4];
        for (int c = 0; c < 4; c++) wv[c] = (__m512bh)_mm512_loadu_si512(p + i + 32 * c);
        for (int t = 0; t < NI; t++)
            for (int c = 0; c < 4; c++)
                a[t][c] = _mm512_dpbf16_ps(a[t][c], wv[c], (__m512bh)_mm512_loadu_si512(xb[t] + i + 32 * c));
    }
    for (; i + 32 <= n; i += 32) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(p + i);
        for (int t = 0; t < NI; t++) a[t][0] = _mm512_dpbf16_ps(a[t][0], w0, (__m512bh)_mm512_loadu_si512(xb[t] + i));
    }
    const uint8_t *b = w;
    for (int t = 0; t < NI; t++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[t][0], a[t][1]), _mm512_add_ps(a[t][2], a[t][3])));
        for (int j = i; j < n; j++) s += tl_bf16_to_f32(ld_u16(b + 2 * (size_t)j)) * x[t][j];
        out[t][r] = s;
    }
}
__attribute__((target("avx512f,avx512bf16"))) static float dot_bf16_avx512bf16(const void *w, const uint16_t *xb,
                                                                               const float *x, int n) {
    float y, *o = &y;
    dotn_bf16_avx512bf16(w, &xb, &x, n, &o, 0, 1);
    return y;
}
__attribute__((target("avx512f,avx512bf16"))) static void
dot4_bf16_avx512bf16(const void *w, const uint16_t *const *xb, const float *const *x, int n, float *const *out, int r) {
    dotn_bf16_avx512bf16(w, xb, x, n, out, r, 4);
}
__attribute__((target("avx512f,avx512bf16"))) static void
dot2_bf16_avx512bf16(const void *w, const uint16_t *const *xb, const float *const *x, int n, float *const *out, int r) {
    dotn_bf16_avx512bf16(w, xb, x, n, out, r, 2);
}
#endif /* TL_X86 */

typedef float (*dot_fn)(const void *w, const float *x, int n);

static dot_fn pick(tl_kernel k, tl_dtype dt) {
#ifdef TL_X86
    if (k == TL_KERNEL_AVX512 || k == TL_KERNEL_AVX512BF16)
        return dt == TL_DT_F32 ? dot_f32_avx512 : dt == TL_DT_BF16 ? dot_bf16_avx512 : dot_f16_avx512;
    if (k == TL_KERNEL_AVX2)
        return dt == TL_DT_F32 ? dot_f32_avx2 : dt == TL_DT_BF16 ? dot_bf16_avx2 : dot_f16_avx2;
#else
    (void)k;
#endif
    return dt == TL_DT_F32 ? dot_f32_scalar : dt == TL_DT_BF16 ? dot_bf16_scalar : dot_f16_scalar;
}

float tl_dot_f32(tl_kernel k, const float *w, const float *x, int n) { return pick(k, TL_DT_F32)(w, x, n); }

size_t tl_wmat_row_bytes(const tl_wmat *W) {
    return W->quant ? tl_quant_row_bytes(W->quant, W->cols) : (size_t)W->cols * tl_dtype_size(W->dtype);
}
static size_t row_bytes(const tl_wmat *W) { return tl_wmat_row_bytes(W); }

int tl_wmat_movable(const tl_wmat *W) { return !W->quant && W->dtype == TL_DT_BF16 && W->rows > 0 && W->cols > 0; }

void tl_wmat_move_to(tl_wmat *W, void *dst) {
    const size_t bytes = (size_t)W->rows * row_bytes(W), chunk = (size_t)2 << 20;
    const uint8_t *src = W->data;
    /* chunk by chunk on every thread (a 2 MiB page is zeroed on its first
     * touch), each chunk's map pages dropped once copied, so that the resident
     * size never exceeds the file's by more than a few chunks */
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < (bytes + chunk - 1) / chunk; c++) {
        const size_t o = c * chunk, n = bytes - o < chunk ? bytes - o : chunk;
        memcpy((uint8_t *)dst + o, src + o, n);
        tl_release_pages(src + o, n); /* a read-only map: the file still holds them */
    }
    tl_release_pages(src, bytes); /* the pages that straddled two chunks */
    W->data = dst;
}

void tl_wmat_row_f32(const tl_wmat *W, int r, float *out) {
    const uint8_t *p = (const uint8_t *)W->data + (size_t)r * row_bytes(W);
    const int n = W->cols;
    if (W->packed) {
        uint8_t row[16384]; /* tl_q8_packable bounds a row */
        tl_q8_unpack_row(W, r, row);
        tl_gguf_dequant_row(W->quant, row, out, (size_t)n);
    } else if (W->quant) {
        tl_gguf_dequant_row(W->quant, p, out, (size_t)n);
    } else if (W->dtype == TL_DT_F32) {
        memcpy(out, p, sizeof(float) * (size_t)n);
    } else if (W->dtype == TL_DT_BF16) {
        for (int i = 0; i < n; i++) { /* a shift per element: vectorises */
            uint32_t u = (uint32_t)ld_u16(p + 2 * (size_t)i) << 16;
            memcpy(out + i, &u, 4);
        }
    } else {
        for (int i = 0; i < n; i++) out[i] = tl_f16_to_f32(ld_u16(p + 2 * (size_t)i));
    }
}

typedef void (*dot8_fn)(const uint8_t *w, size_t rb, const float *x, int n, float *y);

static dot8_fn pick8(tl_kernel k, tl_dtype dt) {
#ifdef TL_X86
    if (k == TL_KERNEL_AVX2) return dt == TL_DT_F32 ? dot8_f32_avx2 : dt == TL_DT_BF16 ? dot8_bf16_avx2 : dot8_f16_avx2;
#else
    (void)dt;
#endif
    (void)k;
    return NULL;
}

/* Bytes of weights per work item of the file-order and F32/F16 kernels:
 * each item is one sequential stream, so larger items keep the hardware
 * prefetcher going (1 MiB measured 5-8% faster than 64 rows of 4 KiB on
 * Zen 4). */
#define BLOCK_BYTES (1u << 20)
/* ... and of decode's repacked (16-row groups) and BF16 matrices (8 rows,
 * the eight-row kernel), whose kernels prefetch their own stream: small
 * items, so that the threads finish a product together (the split below
 * keeps each thread's items one stream) */
#define SMALL_BYTES (64u << 10)

/* Rows per work item of a matrix: a multiple of 8 (the eight-row kernels), of
 * 16 for repacked weights (their 16-row groups). */
static int block_rows(const tl_wmat *M) {
    if (M->packed || (!M->quant && M->dtype == TL_DT_BF16)) {
        const size_t g = M->packed ? 16 : 8, r = SMALL_BYTES / row_bytes(M) / g * g;
        return r < g ? (int)g : (int)r;
    }
    const size_t g = 8, r = BLOCK_BYTES / row_bytes(M) / g * g;
    return r < g ? (int)g : r > (size_t)M->rows ? (M->rows + (int)g - 1) / (int)g * (int)g : (int)r;
}

/* What a product needs of one input x, prepared once for all the matrices
 * that share it: x rounded to int8 blocks (one layout for the 32-element
 * types, one for the K-quants), to bf16 (the AVX512BF16 kernel), or split into
 * its even and odd elements (the AVX-512 bf16 kernel). */
typedef struct {
    const float *x;
    uint8_t *xq[2];
    uint16_t *xb;
    float *xe; /* x's even elements, then its odd ones (xo = xe + n/2) */
} mv_input;

static void rows_product(tl_kernel k, tl_q8_isa q8isa, const tl_wmat *M, const mv_input *in, int r0, int r1,
                         float *out) {
    const uint8_t *base = M->data;
    const size_t rb = row_bytes(M);
    const int n = M->cols;
    const float *x = in->x;
    int r = r0;
    if (M->quant) {
        const uint8_t *xm = M->f32_act || !tl_q8_type(M->quant)
                                ? NULL
                                : in->xq[M->quant == TL_GGML_Q8_0 || M->quant == TL_GGML_Q4_0 ? 0 : 1];
        if (xm && M->packed)
            tl_q8_rows_packed(q8isa, M, xm, out, r0, r1);
        else if (xm)
            for (; r < r1; r++) tl_q8_dot(q8isa, M->quant, base + (size_t)r * rb, xm, 0, 1, n, out + r, 0);
        else
            tl_quant_rows(k, M, x, out, r0, r1);
        return;
    }
#ifdef TL_X86
    if (in->xb && M->dtype == TL_DT_BF16) {
        for (; r < r1; r++) out[r] = dot_bf16_avx512bf16(base + (size_t)r * rb, in->xb, x, n);
        return;
    }
    if (in->xe && M->dtype == TL_DT_BF16) {
        if (n > EO_SINGLE_ROW_MAX_COLS)
            for (; r + 8 <= r1; r += 8)
                dot8_bf16_avx512_eo(base + (size_t)r * rb, rb, in->xe, in->xe + n / 2, x, n, out + r);
        for (; r < r1; r++) out[r] = dot_bf16_avx512_eo(base + (size_t)r * rb, in->xe, in->xe + n / 2, x, n);
        return;
    }
#endif
    dot8_fn dot8 = pick8(k, M->dtype);
    if (dot8)
        for (; r + 8 <= r1; r += 8) dot8(base + (size_t)r * rb, rb, x, n, out + r);
    dot_fn dot = pick(k == TL_KERNEL_AVX512BF16 ? TL_KERNEL_AVX512 : k, M->dtype);
    for (; r < r1; r++) out[r] = dot(base + (size_t)r * rb, x, n);
}

/* Rows of a work item run for every input before the next rows: a multiple
 * of 8 (so the eight-row kernels see the same rows as with one input) small
 * enough to stay in L2 while the inputs pass over them (128-352 KiB of bf16
 * TinyLlama-1.1B rows). */
#define SUB_ROWS 32

/* Work items split between the threads by two-ended stealing: each thread
 * owns a contiguous range of items (one forward stream through the weights,
 * as a static split) and takes them from its front; a thread that runs out
 * takes items from the back of the others' ranges.  Threads that stream at
 * different speeds then finish together, where a static split (or OpenMP's
 * guided schedule, whose first chunk is half the items) leaves the faster
 * one waiting, and small dynamic items cut every stream into pieces.  One
 * 64-bit word per range, front in the low half and end in the high half, so
 * both ends move by compare-and-swap without ever taking an item twice. */
#define MAX_RANGES 256
typedef struct {
    _Alignas(64) _Atomic uint64_t fb;
} item_range;

static int take_front(item_range *r) {
    uint64_t v = atomic_load_explicit(&r->fb, memory_order_relaxed);
    for (;;) {
        const uint32_t f = (uint32_t)v, e = (uint32_t)(v >> 32);
        if (f >= e) return -1;
        if (atomic_compare_exchange_weak_explicit(&r->fb, &v, (uint64_t)e << 32 | (f + 1), memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)f;
    }
}

static int take_back(item_range *r) {
    uint64_t v = atomic_load_explicit(&r->fb, memory_order_relaxed);
    for (;;) {
        const uint32_t f = (uint32_t)v, e = (uint32_t)(v >> 32);
        if (f >= e) return -1;
        if (atomic_compare_exchange_weak_explicit(&r->fb, &v, (uint64_t)(e - 1) << 32 | f, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)e - 1;
    }
}

#ifdef TL_X86
/* Rows s..e-1 of M for the four inputs in[0..3] (y: the first one's output)
 * by the multi-input BF16 kernels, each result the bits of the one-input
 * kernel; 0 (nothing done) unless M is BF16 and the inputs were prepared for
 * them.  Split exactly into even and odd elements: four inputs per weight
 * load up to EO_SINGLE_ROW_MAX_COLS columns (past that the eight-row kernel
 * shares x instead).  Rounded to bf16: four per weight load up to that width
 * (where the four stay in L1 beside a row), two at a time past it (four
 * measured no faster than one there).  On 2 threads of a Zen 5, 16 inputs
 * of 2048 columns: exact 1.3x, rounded 1.6x one input at a time; 5632
 * columns rounded 1.2x. */
static int rows_bf16x4(const tl_wmat *M, const mv_input *in, int s, int e, float *y) {
    if (M->quant || M->dtype != TL_DT_BF16) return 0;
    const uint16_t *xb[4];
    const float *x[4], *xe[4], *xo[4];
    float *o[4];
    int rounded = 1, split = M->cols <= EO_SINGLE_ROW_MAX_COLS;
    for (int q = 0; q < 4; q++) {
        rounded &= in[q].xb != NULL, split &= in[q].xe != NULL;
        xb[q] = in[q].xb, x[q] = in[q].x, o[q] = y + (size_t)q * (size_t)M->rows;
        xe[q] = in[q].xe, xo[q] = in[q].xe ? in[q].xe + M->cols / 2 : NULL;
    }
    const size_t rb = row_bytes(M);
    if (split) { /* the exact even/odd kernel */
        for (int r = s; r < e; r++)
            dot4_bf16_avx512_eo((const uint8_t *)M->data + (size_t)r * rb, xe, xo, x, M->cols, o, r);
        return 1;
    }
    if (!rounded) return 0;
    if (M->cols <= EO_SINGLE_ROW_MAX_COLS)
        for (int r = s; r < e; r++)
            dot4_bf16_avx512bf16((const uint8_t *)M->data + (size_t)r * rb, xb, x, M->cols, o, r);
    else
        for (int h = 0; h < 4; h += 2)
            for (int r = s; r < e; r++)
                dot2_bf16_avx512bf16((const uint8_t *)M->data + (size_t)r * rb, xb + h, x + h, M->cols, o + h, r);
    return 1;
}
#endif

/* The parallel loop over the weights: y_j[t] = W_j x_t for nx prepared inputs. */
static void run_products(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const mv_input *in,
                         int nx) {
    const int n = W[0]->cols;
    int first[9], brows[8]; /* first block of each matrix; count <= 8 */
    size_t elems = 0;
    first[0] = 0;
    for (int j = 0; j < count; j++) {
        brows[j] = block_rows(W[j]);
        first[j + 1] = first[j] + (W[j]->rows + brows[j] - 1) / brows[j];
        elems += (size_t)W[j]->rows * (size_t)n;
    }
    const int nblocks = first[count], serial = elems * (size_t)nx < 32768;
    const tl_q8_isa q8isa = tl_q8_isa_for(k);
    const int nth = serial ? 1 : omp_get_max_threads() < MAX_RANGES ? omp_get_max_threads() : MAX_RANGES;
    item_range rg[MAX_RANGES];
    for (int t = 0; t < nth; t++) {
        const uint64_t f = (uint64_t)((int64_t)nblocks * t / nth), e = (uint64_t)((int64_t)nblocks * (t + 1) / nth);
        atomic_init(&rg[t].fb, e << 32 | f);
    }
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        /* every range is visited: a team smaller than nth (a nested region)
         * takes the missing threads' ranges too */
        const int t = omp_get_thread_num();
        for (int u = t, b; u < t + nth; u++)
            while ((b = u == t ? take_front(&rg[t]) : take_back(&rg[u % nth])) >= 0) {
                int j = 0;
                while (b >= first[j + 1]) j++;
                const tl_wmat *M = W[j];
                const int r0 = (b - first[j]) * brows[j], r1 = r0 + brows[j] < M->rows ? r0 + brows[j] : M->rows;
                if (nx == 1) {
                    rows_product(k, q8isa, M, in, r0, r1, y[j]);
                    continue;
                }
                for (int s = r0; s < r1; s += SUB_ROWS) {
                    const int e = s + SUB_ROWS < r1 ? s + SUB_ROWS : r1;
                    int i = 0;
#ifdef TL_X86
                    while (i + 4 <= nx && rows_bf16x4(M, &in[i], s, e, y[j] + (size_t)i * M->rows)) i += 4;
#endif
                    for (; i < nx; i++) rows_product(k, q8isa, M, &in[i], s, e, y[j] + (size_t)i * M->rows);
                }
            }
    }
}

/* Prepares x for the matrices W (count of them) with kernel *k into in,
 * taking memory from the caller's buffers when they are large enough (stack:
 * pass NULL otherwise).  Returns 0, or -1 when memory for a preparation the
 * single-input product would have made is missing (then it may fall back to
 * another, slower kernel: *k may change, and only a one-input call may go
 * on with it). */
static int prepare_input(tl_kernel *k, const tl_wmat *const *W, int count, const float *x, mv_input *in,
                         uint8_t (*q8stack)[8192], uint16_t *bstack, size_t bstack_n, float *estack, size_t estack_n) {
    const int n = W[0]->cols;
    int rc = 0;
    memset(in, 0, sizeof *in);
    in->x = x;
    for (int j = 0; j < count; j++) {
        const uint32_t qt = W[j]->quant;
        if (!qt || W[j]->f32_act || !tl_q8_type(qt)) continue;
        const int c = qt == TL_GGML_Q8_0 || qt == TL_GGML_Q4_0 ? 0 : 1;
        if (in->xq[c]) continue;
        const size_t bytes = tl_q8_bytes(qt, n);
        in->xq[c] = q8stack && bytes <= sizeof q8stack[c] ? q8stack[c] : tl_alloc(bytes);
        if (in->xq[c])
            tl_q8_quantize(qt, x, n, in->xq[c]);
        else
            rc = -1; /* (no memory: the fp32 kernels) */
    }
#ifdef TL_X86
    if (*k == TL_KERNEL_AVX512BF16) {
        /* x rounded to bf16 once, zero-padded to a multiple of 32 */
        int np = (n + 31) & ~31;
        in->xb = bstack && (size_t)np <= bstack_n ? bstack : tl_alloc(sizeof(uint16_t) * (size_t)np);
        if (in->xb) {
            for (int i = 0; i < n; i++) in->xb[i] = tl_f32_to_bf16(x[i]);
            for (int i = n; i < np; i++) in->xb[i] = 0;
        } else {
            *k = TL_KERNEL_AVX512; /* no memory for the rounded copy: exact kernel */
            rc = -1;
        }
    }
    int any_bf16 = 0;
    for (int j = 0; j < count; j++) any_bf16 |= W[j]->dtype == TL_DT_BF16;
    if (*k == TL_KERNEL_AVX512 && any_bf16) {
        const int h = n / 2;
        in->xe = estack && 2 * (size_t)h <= estack_n ? estack : tl_alloc(sizeof(float) * 2 * (size_t)h);
        if (in->xe)
            for (int i = 0; i < h; i++) in->xe[i] = x[2 * i], in->xe[h + i] = x[2 * i + 1];
        /* (no memory: the widening kernel, same results) */
    }
#else
    (void)bstack, (void)bstack_n, (void)estack, (void)estack_n;
#endif
    return rc;
}

static void release_input(mv_input *in, uint8_t (*q8stack)[8192], uint16_t *bstack, float *estack) {
    for (int c = 0; c < 2; c++)
        if (in->xq[c] && (!q8stack || in->xq[c] != q8stack[c])) tl_free(in->xq[c]);
    if (in->xb && in->xb != bstack) tl_free(in->xb);
    if (in->xe && in->xe != estack) tl_free(in->xe);
}

/* AMX is for batches; its decode is the exact AVX-512 kernel, which streams
 * faster than VDPBF16PS (15.0-15.3 against 13.9-14.0 tokens/s on the Xeon VM) */
static tl_kernel decode_kernel(tl_kernel k) {
    return k == TL_KERNEL_AMX || k == TL_KERNEL_AMX_EXACT ? TL_KERNEL_AVX512 : k;
}

/* y_j = W_j x for count matrices of the same width in one parallel region (one
 * fork/join for Q, K and V, or for gate and up). */
void tl_wmat_matvec_multi(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x) {
    k = decode_kernel(k);
    if (count > 8) {
        for (int j = 0; j < count; j += 8) tl_wmat_matvec_multi(k, W + j, y + j, count - j < 8 ? count - j : 8, x);
        return;
    }
    _Alignas(64) uint8_t q8stack[2][8192];
    uint16_t stackbuf[4096];
    float eobuf[6144];
    mv_input in;
    prepare_input(&k, W, count, x, &in, q8stack, stackbuf, 4096, eobuf, 6144);
    run_products(k, W, y, count, &in, 1);
    release_input(&in, q8stack, stackbuf, eobuf);
}

void tl_wmat_matvec_rows(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x, int nx) {
    k = decode_kernel(k);
    const int n = W[0]->cols;
    if (count > 8) {
        for (int j = 0; j < count; j += 8)
            tl_wmat_matvec_rows(k, W + j, y + j, count - j < 8 ? count - j : 8, x, nx);
        return;
    }
    mv_input *in = nx > 1 ? calloc((size_t)nx, sizeof *in) : NULL;
    int ok = in != NULL;
    tl_kernel k1 = k;
    for (int t = 0; t < nx && ok; t++)
        if (prepare_input(&k1, W, count, x + (size_t)t * n, &in[t], NULL, NULL, 0, NULL, 0)) ok = 0;
    if (ok) run_products(k, W, y, count, in, nx);
    for (int t = 0; in && t < nx; t++) release_input(&in[t], NULL, NULL, NULL);
    free(in);
    if (ok) return;
    /* one input, or no memory for the inputs' preparations: one product per input, the same results */
    for (int t = 0; t < nx; t++) {
        float *yt[8];
        for (int j = 0; j < count; j++) yt[j] = y[j] + (size_t)t * W[j]->rows;
        tl_wmat_matvec_multi(k, W, yt, count, x + (size_t)t * n);
    }
}

void tl_wmat_matvec(tl_kernel k, const tl_wmat *W, const float *x, float *y) {
    tl_wmat_matvec_multi(k, &W, &y, 1, x);
}

void tl_wmat_unpermute_out(const tl_wmat *W, float *y, int n) {
    if (W->perm_heads <= 0) return;
    const int hd = W->rows / W->perm_heads, half = hd / 2;
    float tmp[1024]; /* head_dim <= 1024: checked when loading */
    for (int i = 0; i < n; i++)
        for (int h = 0; h < W->perm_heads; h++) {
            float *v = y + (size_t)i * W->rows + (size_t)h * hd;
            /* stored row 2j + c is HF row c * hd/2 + j */
            for (int j = 0; j < half; j++) tmp[j] = v[2 * j], tmp[half + j] = v[2 * j + 1];
            memcpy(v, tmp, sizeof(float) * (size_t)hd);
        }
}

void tl_wmat_gemm(const tl_wmat *W, const float *x, int n, float *y, float beta, float *tile, size_t tile_floats) {
    tl_wmat_gemm_k(TL_KERNEL_AUTO, W, x, n, y, beta, tile, tile_floats);
}

void tl_wmat_gemm_k(tl_kernel k, const tl_wmat *W, const float *x, int n, float *y, float beta, float *tile,
                    size_t tile_floats) {
    const int in = W->cols, out = W->rows;
    if (!W->quant && W->dtype == TL_DT_F32 && ((uintptr_t)W->data & 3u) == 0) {
        tl_sgemm_prefer_matmul(false, true, n, out, in, 1.0f, x, in, (const float *)W->data, in, beta, y, out);
        return;
    }
    if (W->quant && !W->f32_act && tl_q8_type(W->quant)) {
        if (!tl_q8_gemm(k, W, x, n, y, beta)) return;
        if (!tile) { /* no memory for the rounded x, and no tile: row by row in fp32 */
            const size_t rb = row_bytes(W);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < out; r++)
                for (int i = 0; i < n; i++) {
                    float v = tl_quant_dot(k, W->quant, (const uint8_t *)W->data + (size_t)r * rb, x + (size_t)i * in,
                                           in),
                          *yy = y + (size_t)i * out + r;
                    *yy = beta == 0 ? v : v + beta * *yy;
                }
            return;
        }
    }
    int R = (int)(tile_floats / (size_t)in);
    if (R > out) R = out;
    for (int r0 = 0; r0 < out; r0 += R) {
        int rows = out - r0 < R ? out - r0 : R;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) tl_wmat_row_f32(W, r0 + r, tile + (size_t)r * in);
        tl_sgemm_prefer_matmul(false, true, n, rows, in, 1.0f, x, in, tile, in, beta, y + r0, out);
    }
}

/* vec.c - exp/max/scale kernels for softmax rows.
 *
 * exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two
 * parts so r is exact), p the degree-7 Taylor polynomial (truncation error
 * 5e-9 relative on |r| <= ln2/2, below rounding).  The same arithmetic runs in the
 * scalar fallback, the AVX2+FMA path (8 lanes) and the AVX-512F path (16 lanes), so
 * all of them give identical results.  Sums keep the 8-lane order everywhere: lane
 * j adds elements j, j+8, j+16, ... in turn over the whole multiple-of-8 part, then
 * the lanes are summed in double, then the rest of the row; the AVX-512 path feeds
 * the two halves of each 16-vector into one 8-lane accumulator, low half first.
 * tl_vec_max (every path) returns the first element equal to the maximum,
 * ignoring NaNs unless x[0] is one. */
#include "vec.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TL_X86 1
#endif

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define EXP_HI 88.0f /* exp(88) < FLT_MAX with n <= 127; softmax inputs are <= 0 anyway */
#define EXP_LO -87.3365478515625f /* below this exp underflows to denormals: flush to 0 */

static const float C[8] = {1.0f, 1.0f, 0.5f, 1.6666667e-1f, 4.1666668e-2f, 8.3333338e-3f, 1.3888889e-3f,
                           1.9841270e-4f};

float tl_vec_expf(float x) {
    if (x > EXP_HI) return INFINITY;
    if (x < EXP_LO) return 0.0f;
    if (x != x) return x;
    float n = nearbyintf(x * LOG2E);
    float r = fmaf(n, -LN2_HI, x);
    r = fmaf(n, -LN2_LO, r);
    float p = C[7];
    for (int i = 6; i >= 0; i--) p = fmaf(p, r, C[i]);
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

static float max_c(const float *x, size_t n) {
    float m = x[0];
    for (size_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static double exp_sum_c(float *x, size_t n, float shift) {
    float lanes[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            x[i + j] = tl_vec_expf(x[i + j] - shift);
            lanes[j] += x[i + j];
        }
    double s = 0;
    for (int j = 0; j < 8; j++) s += lanes[j];
    for (; i < n; i++) {
        x[i] = tl_vec_expf(x[i] - shift);
        s += x[i];
    }
    return s;
}

static void scale_c(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static inline float sigmoid1(float x) { return 1.0f / (1.0f + tl_vec_expf(-x)); }

static void swiglu_fwd_c(float *h, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = g[i] * sigmoid1(g[i]) * u[i];
}

static void swiglu_bwd_c(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = sigmoid1(g[i]), d = dh[i];
        du[i] = d * (g[i] * s);
        dg[i] = d * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

#ifdef TL_X86
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(EXP_HI), lo = _mm256_set1_ps(EXP_LO);
    __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ), under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
    __m256 p = _mm256_set1_ps(C[7]);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[6]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[5]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[4]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[3]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[2]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[1]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C[0]));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    res = _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), over);
    res = _mm256_andnot_ps(under, res);
    /* NaN in, NaN out */
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(res, x, nan);
}

/* The scalar rule, as max_avx512 below: lanes start at x[0], max_ps(v, m) keeps
 * m when v is NaN, and a zero maximum is the row's first zero. */
__attribute__((target("avx2,fma"))) static float max_avx2(const float *x, size_t n) {
    if (n < 8 || x[0] != x[0]) return max_c(x, n);
    __m256 m = _mm256_set1_ps(x[0]);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float r = max_c(lanes, 8);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    if (r == 0.0f)
        for (i = 0;; i++)
            if (x[i] == 0.0f) return x[i];
    return r;
}

__attribute__((target("avx2,fma"))) static double exp_sum_avx2(float *x, size_t n, float shift) {
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    double s = 0;
    for (int j = 0; j < 8; j++) s += lanes[j];
    for (; i < n; i++) {
        x[i] = tl_vec_expf(x[i] - shift);
        s += x[i];
    }
    return s;
}

__attribute__((target("avx2,fma"))) static inline __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/* the same operation order as the scalar versions, so both paths agree bit for bit */
__attribute__((target("avx2,fma"))) static void swiglu_fwd_avx2(float *h, const float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(gv, sigmoid8(gv)), _mm256_loadu_ps(u + i)));
    }
    swiglu_fwd_c(h + i, g + i, u + i, n - i);
}

__attribute__((target("avx2,fma"))) static void swiglu_bwd_avx2(float *dg, float *du, const float *dh, const float *g,
                                                                 const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), s = sigmoid8(gv), d = _mm256_loadu_ps(dh + i);
        _mm256_storeu_ps(du + i, _mm256_mul_ps(d, _mm256_mul_ps(gv, s)));
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), s);
        __m256 f = _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, s)));
        _mm256_storeu_ps(dg + i, _mm256_mul_ps(t, f));
    }
    swiglu_bwd_c(dg + i, du + i, dh + i, g + i, u + i, n - i);
}

__attribute__((target("avx2,fma"))) static void scale_avx2(float *x, size_t n, float s) {
    __m256 v = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
    for (; i < n; i++) x[i] *= s;
}
/* AVX-512F: the AVX2 arithmetic 16 lanes wide; tails run as one masked vector. */
__attribute__((target("avx512f"))) static inline __m512 exp16(__m512 x) {
    const __m512 hi = _mm512_set1_ps(EXP_HI), lo = _mm512_set1_ps(EXP_LO);
    __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    __m512 p = _mm512_set1_ps(C[7]);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[6]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[5]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[4]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[3]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[2]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[1]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C[0]));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 res = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    res = _mm512_mask_mov_ps(res, over, _mm512_set1_ps(INFINITY));
    res = _mm512_mask_mov_ps(res, under, _mm512_setzero_ps());
    return _mm512_mask_mov_ps(res, nan, x); /* NaN in, NaN out */
}

__attribute__((target("avx512f"))) static inline __mmask16 tail_mask(size_t k) {
    return (__mmask16)((1u << k) - 1u); /* k < 16 */
}

/* max_ps(v, m) = v > m ? v : m, the scalar update; with every lane starting at x[0]
 * (not NaN) no NaN ever enters, so the lanes and accumulators may be combined in any
 * order.  The value is then exact; only a zero can have two encodings, and for a zero
 * maximum the first zero of the row is what the scalar loop returns. */
__attribute__((target("avx512f"))) static float max_avx512(const float *x, size_t n) {
    if (x[0] != x[0]) return x[0];
    __m512 m0 = _mm512_set1_ps(x[0]), m1 = m0, m2 = m0, m3 = m0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
        m2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), m2);
        m3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), m3);
    }
    for (; i + 16 <= n; i += 16) m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        m0 = _mm512_mask_max_ps(m0, k, _mm512_maskz_loadu_ps(k, x + i), m0);
    }
    m0 = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
    float lanes[16];
    _mm512_storeu_ps(lanes, m0);
    float r = max_c(lanes, 16);
    if (r == 0.0f)
        for (i = 0;; i++)
            if (x[i] == 0.0f) return x[i];
    return r;
}

__attribute__((target("avx512f"))) static double exp_sum_avx512(float *x, size_t n, float shift) {
    /* acc is the 8-lane accumulator of the AVX2 path: each 16-vector adds its low
     * half (elements i..i+7) and then its high half (i+8..i+15) */
    __m256 acc = _mm256_setzero_ps();
    __m512 sh = _mm512_set1_ps(shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
        acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    }
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh));
        _mm512_mask_storeu_ps(x + i, k, e);
        if (n - i >= 8) {
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
            i += 8;
        }
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    double s = 0;
    for (int j = 0; j < 8; j++) s += lanes[j];
    for (; i < n; i++) s += x[i]; /* the last n % 8, already exponentiated above */
    return s;
}

__attribute__((target("avx512f"))) static inline __m512 sigmoid16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

__attribute__((target("avx512f"))) static inline __m512 swiglu_fwd16(__m512 gv, __m512 uv) {
    return _mm512_mul_ps(_mm512_mul_ps(gv, sigmoid16(gv)), uv);
}

__attribute__((target("avx512f"))) static void swiglu_fwd_avx512(float *h, const float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(h + i, swiglu_fwd16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(h + i, k, swiglu_fwd16(_mm512_maskz_loadu_ps(k, g + i), _mm512_maskz_loadu_ps(k, u + i)));
    }
}

__attribute__((target("avx512f"))) static inline void swiglu_bwd16(__m512 *dgv, __m512 *duv, __m512 d, __m512 gv,
                                                                    __m512 uv) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 s = sigmoid16(gv);
    *duv = _mm512_mul_ps(d, _mm512_mul_ps(gv, s));
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(d, uv), s);
    __m512 f = _mm512_add_ps(one, _mm512_mul_ps(gv, _mm512_sub_ps(one, s)));
    *dgv = _mm512_mul_ps(t, f);
}

__attribute__((target("avx512f"))) static void swiglu_bwd_avx512(float *dg, float *du, const float *dh, const float *g,
                                                                  const float *u, size_t n) {
    size_t i = 0;
    __m512 a, b;
    for (; i + 16 <= n; i += 16) {
        swiglu_bwd16(&a, &b, _mm512_loadu_ps(dh + i), _mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i));
        _mm512_storeu_ps(dg + i, a);
        _mm512_storeu_ps(du + i, b);
    }
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        swiglu_bwd16(&a, &b, _mm512_maskz_loadu_ps(k, dh + i), _mm512_maskz_loadu_ps(k, g + i),
                     _mm512_maskz_loadu_ps(k, u + i));
        _mm512_mask_storeu_ps(dg + i, k, a);
        _mm512_mask_storeu_ps(du + i, k, b);
    }
}

__attribute__((target("avx512f"))) static void scale_avx512(float *x, size_t n, float s) {
    __m512 v = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), v));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), v));
    }
}
#endif

int tl_vec_has_avx2(void) {
#ifdef TL_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int tl_vec_has_avx512(void) {
#ifdef TL_X86
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

float tl_vec_max(const float *x, size_t n) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) return max_avx512(x, n);
    if (tl_vec_has_avx2()) return max_avx2(x, n);
#endif
    return max_c(x, n);
}

double tl_vec_exp_sum(float *x, size_t n, float shift) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) return exp_sum_avx512(x, n, shift);
    if (tl_vec_has_avx2()) return exp_sum_avx2(x, n, shift);
#endif
    return exp_sum_c(x, n, shift);
}

void tl_vec_scale(float *x, size_t n, float s) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) {
        scale_avx512(x, n, s);
        return;
    }
    if (tl_vec_has_avx2()) {
        scale_avx2(x, n, s);
        return;
    }
#endif
    scale_c(x, n, s);
}

void tl_vec_swiglu_forward(float *h, const float *g, const float *u, size_t n) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) {
        swiglu_fwd_avx512(h, g, u, n);
        return;
    }
    if (tl_vec_has_avx2()) {
        swiglu_fwd_avx2(h, g, u, n);
        return;
    }
#endif
    swiglu_fwd_c(h, g, u, n);
}

void tl_vec_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) {
        swiglu_bwd_avx512(dg, du, dh, g, u, n);
        return;
    }
    if (tl_vec_has_avx2()) {
        swiglu_bwd_avx2(dg, du, dh, g, u, n);
        return;
    }
#endif
    swiglu_bwd_c(dg, du, dh, g, u, n);
}

double tl_vec_exp_sum_portable(float *x, size_t n, float shift) { return exp_sum_c(x, n, shift); }
void tl_vec_swiglu_forward_portable(float *h, const float *g, const float *u, size_t n) { swiglu_fwd_c(h, g, u, n); }
void tl_vec_swiglu_backward_portable(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    swiglu_bwd_c(dg, du, dh, g, u, n);
}

static const tl_vec_kernels kernels_portable = {"portable", max_c, exp_sum_c, scale_c, swiglu_fwd_c, swiglu_bwd_c};
#ifdef TL_X86
static const tl_vec_kernels kernels_avx2 = {"avx2", max_avx2, exp_sum_avx2, scale_avx2, swiglu_fwd_avx2,
                                            swiglu_bwd_avx2};
static const tl_vec_kernels kernels_avx512 = {"avx512", max_avx512, exp_sum_avx512, scale_avx512, swiglu_fwd_avx512,
                                              swiglu_bwd_avx512};
#endif

const tl_vec_kernels *tl_vec_kernels_for(tl_vec_isa isa) {
    switch (isa) {
    case TL_VEC_ISA_PORTABLE: return &kernels_portable;
#ifdef TL_X86
    case TL_VEC_ISA_AVX2: return tl_vec_has_avx2() ? &kernels_avx2 : NULL;
    case TL_VEC_ISA_AVX512: return tl_vec_has_avx512() ? &kernels_avx512 : NULL;
#else
    case TL_VEC_ISA_AVX2:
    case TL_VEC_ISA_AVX512: return NULL;
#endif
    }
    return NULL;
}

float tl_vec_dot_lanes(const float *a, const float *b, const float *c, size_t n) {
    float part[16] = {0}, sum = 0.0f;
    size_t i = 0;
    if (c) {
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) part[j] += a[i + j] * b[i + j] * c[i + j];
    } else {
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) part[j] += a[i + j] * b[i + j];
    }
    for (int j = 0; j < 16; j++) sum += part[j];
    for (; i < n; i++) sum += c ? a[i] * b[i] * c[i] : a[i] * b[i];
    return sum;
}

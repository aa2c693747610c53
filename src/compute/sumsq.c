/* sumsq.c - the gradient norm's sum of squares (see sumsq.h).  A single double
 * add chain ran at one element per add latency (~100 ms for 24M gradients, a
 * fifth of a small model's step); 32 independent lanes run at memory speed. */
#include "sumsq.h"

#include "vec.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TL_X86 1
#endif

enum { LANES = 32 };

static double finish(const double *lanes, const float *x, size_t i, size_t n) {
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += lanes[j];
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

double tl_sumsq_portable(const float *x, size_t n) {
    double lanes[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) lanes[j] += (double)x[i + j] * (double)x[i + j];
    return finish(lanes, x, i, n);
}

#ifdef TL_X86
__attribute__((target("avx2,fma"))) static double sumsq_avx2(const float *x, size_t n) {
    __m256d acc[8];
    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < 8; k++) {
            __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
            acc[k] = _mm256_fmadd_pd(v, v, acc[k]);
        }
    double lanes[LANES];
    for (int k = 0; k < 8; k++) _mm256_storeu_pd(lanes + 4 * k, acc[k]);
    return finish(lanes, x, i, n);
}

__attribute__((target("avx512f"))) static double sumsq_avx512(const float *x, size_t n) {
    __m512d acc[4];
    for (int k = 0; k < 4; k++) acc[k] = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < 4; k++) {
            __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * k));
            acc[k] = _mm512_fmadd_pd(v, v, acc[k]);
        }
    double lanes[LANES];
    for (int k = 0; k < 4; k++) _mm512_storeu_pd(lanes + 8 * k, acc[k]);
    return finish(lanes, x, i, n);
}
#endif

double tl_sumsq(const float *x, size_t n) {
#ifdef TL_X86
    if (tl_vec_has_avx512()) return sumsq_avx512(x, n);
    if (tl_vec_has_avx2()) return sumsq_avx2(x, n);
#endif
    return tl_sumsq_portable(x, n);
}

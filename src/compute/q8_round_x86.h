/* q8_round_x86.h - tl_q8_quantize's rounding of one block in AVX-512, shared by
 * the decode rounding (matvec_quant_x86.c) and the AMX prompt pass's token
 * packing (gemm_quant_amx.c), which write it in different layouts.  The same
 * fp32 operations per element as the portable code, so the same bytes:
 * d = amax / 127, q = trunc(x (127 / amax) +- 0.5) clamped to +-127; a block
 * with a NaN or an infinity: q = 0, d = NaN.  Internal to src/compute. */
#ifndef TL_Q8_ROUND_X86_H
#define TL_Q8_ROUND_X86_H

#if defined(__x86_64__)
#include <float.h>
#include <immintrin.h>
#include <math.h>

/* The scale of block x[0, bl) (bl a multiple of 16): returns d, sets *id to the
 * multiplier and *keep to the lanes that keep their values (none for a block
 * with a NaN or an infinity). */
__attribute__((target("avx512f,avx512dq"))) static inline float tl_q8_block_scale_avx512(const float *x, int bl, float *id,
                                                                                __mmask16 *keep) {
    const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), big = _mm512_set1_ps(FLT_MAX);
    __m512 amax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int i = 0; i < bl; i += 16) {
        const __m512 a = _mm512_and_ps(_mm512_loadu_ps(x + i), absm);
        bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ); /* not <= FLT_MAX: inf or NaN */
        amax = _mm512_max_ps(amax, a);
    }
    const float am = _mm512_reduce_max_ps(amax);
    *id = bad ? 0 : am > 0 ? 127 / am : 0;
    *keep = bad ? 0 : 0xffff;
    return bad ? NAN : am / 127;
}

/* x[0, 16) times id, rounded half away from zero, clamped to +-127, zero
 * outside keep: sixteen int32 lanes. */
__attribute__((target("avx512f,avx512dq"))) static inline __m512i tl_q8_round16_avx512(const float *x, float id,
                                                                              __mmask16 keep) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_set1_ps(id));
    const __mmask16 pos = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
    const __m512i q = _mm512_cvttps_epi32(_mm512_add_ps(v, _mm512_mask_blend_ps(pos, _mm512_set1_ps(-0.5f),
                                                                                _mm512_set1_ps(0.5f))));
    return _mm512_maskz_mov_epi32(keep, _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)),
                                                         _mm512_set1_epi32(127)));
}
#endif

#endif

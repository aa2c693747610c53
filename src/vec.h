/* vec.h - vectorised row kernels (softmax pieces) with run-time CPU dispatch:
 * AVX2+FMA where the CPU has it, portable C elsewhere.  Results agree with the
 * C library's expf to within 2 ulp (tests/test_ops.c checks it). */
#ifndef TL_VEC_H
#define TL_VEC_H

#include <stddef.h>

/* max of x[0..n), n >= 1 */
float tl_vec_max(const float *x, size_t n);
/* x[i] = exp(x[i] - shift); returns the sum (accumulated in fixed lane order) */
double tl_vec_exp_sum(float *x, size_t n, float shift);
/* x[i] *= s */
void tl_vec_scale(float *x, size_t n, float s);
/* SwiGLU over n elements: h = silu(g) * u, and its backward (dg, du from dh) */
void tl_vec_swiglu_forward(float *h, const float *g, const float *u, size_t n);
void tl_vec_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
/* exp for one float, the same approximation as the vector path */
float tl_vec_expf(float x);
/* The portable paths, always available (tests compare them with the dispatched ones). */
double tl_vec_exp_sum_portable(float *x, size_t n, float shift);
void tl_vec_swiglu_forward_portable(float *h, const float *g, const float *u, size_t n);
void tl_vec_swiglu_backward_portable(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
/* 1 if the AVX2 path is in use */
int tl_vec_has_avx2(void);

#endif

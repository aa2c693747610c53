/* vec.h - vectorised row kernels (softmax pieces) with run-time CPU dispatch:
 * AVX-512F where the CPU has it, else AVX2+FMA, else portable C (the ISA paths
 * are compiled with target attributes, so the binary runs on any x86-64).  All
 * paths give bit-identical results (same arithmetic, same summation order).
 * exp agrees with the C library's expf to within 2 ulp (tests/test_ops.c checks
 * both). */
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
/* sum_i a_i b_i, or sum_i a_i b_i c_i when c is not NULL, in 16 lane sums
 * combined in a fixed order (one add chain does not vectorise and waits an
 * add latency per element); the same bits whatever the compiler picks */
float tl_vec_dot_lanes(const float *a, const float *b, const float *c, size_t n);
/* exp for one float, the same approximation as the vector path */
float tl_vec_expf(float x);
/* The portable paths, always available (tests compare them with the dispatched ones). */
double tl_vec_exp_sum_portable(float *x, size_t n, float shift);
void tl_vec_swiglu_forward_portable(float *h, const float *g, const float *u, size_t n);
void tl_vec_swiglu_backward_portable(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
/* 1 if the CPU has AVX2+FMA / AVX-512F (the dispatch above takes the widest) */
int tl_vec_has_avx2(void);
int tl_vec_has_avx512(void);

/* One path's kernels, for tests and benchmarks that compare the paths (everything
 * else calls the dispatched functions above).  tl_vec_kernels_for returns NULL when
 * this CPU or build lacks the ISA; the tables are constant. */
typedef enum { TL_VEC_ISA_PORTABLE, TL_VEC_ISA_AVX2, TL_VEC_ISA_AVX512 } tl_vec_isa;
typedef struct {
    const char *name;
    float (*max)(const float *x, size_t n);
    double (*exp_sum)(float *x, size_t n, float shift);
    void (*scale)(float *x, size_t n, float s);
    void (*swiglu_forward)(float *h, const float *g, const float *u, size_t n);
    void (*swiglu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
} tl_vec_kernels;
const tl_vec_kernels *tl_vec_kernels_for(tl_vec_isa isa);

#endif

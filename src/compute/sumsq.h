/* sumsq.h - sum of squares of a float array in double (the gradient norm), with
 * run-time CPU dispatch.  Every path adds in the same order: 32 lanes, lane j
 * taking elements j, j+32, j+64, ... of the multiple-of-32 part, then the lanes
 * 0..31 in turn, then the rest in order.  Each square of a float is exact in
 * double, so a fused multiply-add rounds as a multiply and an add do, and all
 * paths give bit-identical results. */
#ifndef TL_SUMSQ_H
#define TL_SUMSQ_H

#include <stddef.h>

/* sum of (double)x[i]^2 over i < n */
double tl_sumsq(const float *x, size_t n);
/* The portable path (tests compare it with the dispatched one). */
double tl_sumsq_portable(const float *x, size_t n);

#endif

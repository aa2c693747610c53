/* ops_bf16.h - the linear layer in bf16 mixed precision, as PyTorch's CPU
 * autocast runs nn.Linear: the weights come as a bf16 copy, the activations and
 * the output gradients are rounded to bf16 on the way into the product, and the
 * sums, outputs and weight gradients stay fp32 (docs/training.md).  Shapes as
 * tl_linear_forward / tl_linear_backward in ops.h. */
#ifndef TL_OPS_BF16_H
#define TL_OPS_BF16_H

#include <stddef.h>
#include <stdint.h>

/* y[N,out] (=|+=) bf16(x)[N,in] W[out,in]^T; xs: scratch of N*in bf16. */
void tl_linear_forward_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int accumulate,
                            uint16_t *xs);

/* The same with the activation already rounded (xs: N*in bf16), for an input
 * that several products read or the backward pass reads again: rounded once.
 * Backward: dW[out,in] += bf16(dy)^T xs;  dx[N,in] (=|+=) bf16(dy) W (dx or dW
 * may be NULL); dys: scratch of N*out bf16. */
void tl_linear_forward_bf16_rounded(float *y, const uint16_t *xs, const uint16_t *W, int N, int in, int out,
                                    int accumulate);
void tl_linear_backward_bf16_rounded(float *dx, float *dW, const float *dy, const uint16_t *xs, const uint16_t *W,
                                     int N, int in, int out, int accumulate_dx, uint16_t *dys);

/* The backward with the output gradient rounded too (dys: N*out bf16), by its
 * producer; dyt, when not NULL, is the same gradient token-minor ([out, N]), which
 * the weight gradient's product then reads as a plain operand (oneDNN's AMX kernels
 * run the transposed view at ~0.6-0.8 of the plain one's speed; docs/benchmarks.md). */
void tl_linear_backward_bf16_both(float *dx, float *dW, const uint16_t *dys, const uint16_t *dyt, const uint16_t *xs,
                                  const uint16_t *W, int N, int in, int out, int accumulate_dx);
/* The output layer's gradient in bf16 is stored in slices of the vocabulary,
 * slice-major: the slice of columns [v0, v0 + w) (w = TL_OUT_SLICE, or what is
 * left) of a [rows, V] gradient is a row-major [rows, w] block at dys + v0 * rows. */
#define TL_OUT_SLICE 2048

/* The output layer's backward from the gradient dys [N, V] in slices (above) and
 * the rounded input xs [N, D]: dW[V,D] += dys^T xs; dx[N,D] = dys W, summed slice
 * after slice (the order of its sums depends on V only).  dyt, when not NULL, is
 * the gradient token-minor in the same slices (slice [v0, v0 + w) a row-major
 * [w, N] block at dyt + v0 * N), read by dW's products. */
void tl_output_backward_bf16(float *dx, float *dW, const uint16_t *dys, const uint16_t *dyt, const uint16_t *xs,
                             const uint16_t *W, int N, int D, int V);

/* Producers that also round their output to bf16 (yb, hb, ...) while it is in
 * cache, for the products that read it: the fp32 outputs are tl_rmsnorm_forward's,
 * tl_swiglu_forward's and tl_swiglu_backward's (ops.h) bit for bit, and the bf16
 * copies tl_round_bf16's of them.  y, h, dg and du may be NULL: only the bf16
 * copies are written (the training step reads no other). */
void tl_rmsnorm_forward_bf16(float *y, uint16_t *yb, float *rstd, const float *x, const float *w, int N, int D,
                             float eps);
void tl_swiglu_forward_bf16(float *h, uint16_t *hb, const float *g, const float *u, size_t n);
void tl_swiglu_backward_bf16(float *dg, float *du, uint16_t *dgb, uint16_t *dub, const float *dh, const float *g,
                             const float *u, size_t n);
/* tl_swiglu_backward_bf16's two rounded gradients (dgb, dub [N, F], the same bits)
 * and their token-minor copies dgt, dut [F, N], written while each block of rows is
 * in cache. */
void tl_swiglu_backward_bf16_t(uint16_t *dgb, uint16_t *dub, uint16_t *dgt, uint16_t *dut, const float *dh,
                               const float *g, const float *u, int N, int F);
/* tl_cross_entropy_rows (ops.h) followed by output.c's scaling of each row by
 * row_w[r] (when row_w is not NULL, the rows' scale is then 1) and the rounding of
 * the gradient to bf16, in one pass per row: loss[rows] as tl_cross_entropy_rows,
 * dys [rows, V] in slices (above) the bf16 of the fp32 path's gradient, and when
 * dyt is not NULL its token-minor copy (tl_output_backward_bf16's dyt); logits is
 * left overwritten. */
void tl_cross_entropy_rows_bf16(float *logits, float *loss, const int *targets, int rows, int V, float scale,
                                const float *row_w, uint16_t *dys, uint16_t *dyt);

#endif

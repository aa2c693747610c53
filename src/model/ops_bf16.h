/* ops_bf16.h - the linear layer in bf16 mixed precision, as PyTorch's CPU
 * autocast runs nn.Linear: the weights come as a bf16 copy, the activations and
 * the output gradients are rounded to bf16 on the way into the product, and the
 * sums, outputs and weight gradients stay fp32 (docs/training.md).  Shapes as
 * tl_linear_forward / tl_linear_backward in ops.h. */
#ifndef TL_OPS_BF16_H
#define TL_OPS_BF16_H

#include <stdint.h>

/* y[N,out] (=|+=) bf16(x)[N,in] W[out,in]^T; xs: scratch of N*in bf16. */
void tl_linear_forward_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int accumulate,
                            uint16_t *xs);

/* dW[out,in] += bf16(dy)^T bf16(x);  dx[N,in] (=|+=) bf16(dy) W (dx may be NULL);
 * dys, xs: scratch of N*out and N*in bf16. */
void tl_linear_backward_bf16(float *dx, float *dW, const float *dy, const float *x, const uint16_t *W, int N, int in,
                             int out, int accumulate_dx, uint16_t *dys, uint16_t *xs);

/* The same two with the activation already rounded (xs: N*in bf16), for an input
 * that several products read or the backward pass reads again: rounded once. */
void tl_linear_forward_bf16_rounded(float *y, const uint16_t *xs, const uint16_t *W, int N, int in, int out,
                                    int accumulate);
void tl_linear_backward_bf16_rounded(float *dx, float *dW, const float *dy, const uint16_t *xs, const uint16_t *W,
                                     int N, int in, int out, int accumulate_dx, uint16_t *dys);

#endif

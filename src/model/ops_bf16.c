/* ops_bf16.c - the linear layer in bf16 mixed precision (see ops_bf16.h). */
#include "ops_bf16.h"

#include <stddef.h>

#include "gemm.h"

void tl_linear_forward_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int accumulate,
                            uint16_t *xs) {
    tl_round_bf16(x, (size_t)N * in, xs);
    tl_gemm_bf16(false, true, N, out, in, 1.0f, xs, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
}

void tl_linear_backward_bf16(float *dx, float *dW, const float *dy, const float *x, const uint16_t *W, int N, int in,
                             int out, int accumulate_dx, uint16_t *dys, uint16_t *xs) {
    tl_round_bf16(dy, (size_t)N * out, dys);
    if (dW) {
        tl_round_bf16(x, (size_t)N * in, xs);
        tl_gemm_bf16(true, false, out, in, N, 1.0f, dys, out, xs, in, 1.0f, dW, in);
    }
    if (dx) tl_gemm_bf16(false, false, N, in, out, 1.0f, dys, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

void tl_linear_forward_bf16_rounded(float *y, const uint16_t *xs, const uint16_t *W, int N, int in, int out,
                                    int accumulate) {
    tl_gemm_bf16(false, true, N, out, in, 1.0f, xs, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
}

void tl_linear_backward_bf16_rounded(float *dx, float *dW, const float *dy, const uint16_t *xs, const uint16_t *W,
                                     int N, int in, int out, int accumulate_dx, uint16_t *dys) {
    tl_round_bf16(dy, (size_t)N * out, dys);
    if (dW) tl_gemm_bf16(true, false, out, in, N, 1.0f, dys, out, xs, in, 1.0f, dW, in);
    if (dx) tl_gemm_bf16(false, false, N, in, out, 1.0f, dys, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

/* output.c - the fused, chunked output layer and cross-entropy (output.h). */
#include "output.h"

#include <stddef.h>

#include "ops.h"
#include "ops_bf16.h"
#include "vec.h"

double tl_output_loss(const tl_output *o, const float *h, int N, const int *targets, float scale,
                      const float *row_w, float *row_loss, float *dh, float *dW) {
    const int D = o->D, V = o->V;
    for (int r0 = 0; r0 < N; r0 += o->chunk) {
        const int rows = N - r0 < o->chunk ? N - r0 : o->chunk;
        const float *hc = h + (size_t)r0 * D;
        if (o->W_bf16)
            tl_linear_forward_bf16(o->logits, hc, o->W_bf16, rows, D, V, 0, o->xs);
        else
            tl_linear_forward(o->logits, hc, o->W, rows, D, V, 0);
        if (o->W_bf16 && dW) { /* the gradient straight to bf16, the products' input: no fp32 pass over it */
            tl_cross_entropy_rows_bf16(o->logits, row_loss + r0, targets + r0, rows, V, scale,
                                       row_w ? row_w + r0 : NULL, o->dys, o->dyt);
            tl_output_backward_bf16(dh + (size_t)r0 * D, dW, o->dys, o->dyt, o->xs, o->W_bf16, rows, D, V);
            continue;
        }
        tl_cross_entropy_rows(o->logits, row_loss + r0, targets + r0, rows, V, row_w ? 1.0f : scale);
        if (!dW) continue;
        if (row_w) {
#pragma omp parallel for schedule(static)
            for (int r = 0; r < rows; r++) tl_vec_scale(o->logits + (size_t)r * V, (size_t)V, row_w[r0 + r]);
        }
        /* while the chunk's gradient is warm in the cache: dh = dlogits W, dW += dlogits^T h */
        tl_linear_backward(dh + (size_t)r0 * D, dW, o->logits, hc, o->W, rows, D, V, 0);
    }
    double sum = 0.0;
    for (int n = 0; n < N; n++) sum += row_w ? (double)row_w[n] * row_loss[n] : row_loss[n];
    return sum;
}

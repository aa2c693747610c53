/* output.h - the output layer (lm_head) and its cross-entropy, fused and chunked.
 *
 * The rows of the final hidden state go through in chunks: a chunk's logits
 * [chunk, V] are formed, turned in place into the loss and d(loss)/d(logits), and
 * used at once for the chunk's input gradient (dlogits W) and the weight gradient
 * (dW += dlogits^T h), so the N x V logits never exist at once.  The chunk trades
 * memory against the efficiency of the three products: with V = 32,000 and D = 288,
 * 256 rows ran the head fastest on an AVX-512 Xeon (one thread; 64 rows: ~17% slower,
 * 32: ~60% slower; docs/benchmarks.md), so the model uses 256 (bf16: 1,024, model.c). */
#ifndef TL_OUTPUT_H
#define TL_OUTPUT_H

#include <stdint.h>

typedef struct {
    const float *W;         /* [V, D] */
    const uint16_t *W_bf16; /* W's bf16 copy: bf16 mixed-precision products (ops_bf16.h); NULL: fp32 */
    uint16_t *xs, *dys;     /* with W_bf16: scratch of chunk*D and chunk*V bf16 (the gradient, in slices: ops_bf16.h) */
    uint16_t *dyt;          /* with W_bf16: NULL, or chunk*V bf16 for the gradient token-minor (ops_bf16.h) */
    float *logits;          /* scratch of chunk*V floats */
    int D, V, chunk;
} tl_output;

/* Cross-entropy of next-token targets[N] (< 0: ignored, loss 0) over the logits
 * h[N, D] W^T, each row's into row_loss[N].  With dW (then also dh), adds the
 * gradient of sum_r w_r CE_r into dW [V, D] and writes dh [N, D] = its gradient
 * with respect to h, where w_r = row_w[r], or scale when row_w is NULL.  Returns
 * sum_r CE_r, or with row_w sum_r row_w[r] CE_r, in double. */
double tl_output_loss(const tl_output *o, const float *h, int N, const int *targets, float scale,
                      const float *row_w, float *row_loss, float *dh, float *dW);

#endif

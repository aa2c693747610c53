/* attention_bf16.h - causal GQA attention with bf16 products, as PyTorch's CPU
 * autocast runs it: q, k, v, the probabilities and the output gradient are
 * rounded to bf16 on their way into the products, which sum in fp32; the
 * scores, the softmax and its gradient stay fp32 (docs/training.md).
 *
 * Shapes and results as tl_attention_forward / tl_attention_backward
 * (attention.h), probs included: fp32 [B, H, T, T], zero past each causal limit. */
#ifndef TL_ATTENTION_BF16_H
#define TL_ATTENTION_BF16_H

#include <stddef.h>
#include <stdint.h>

/* The scratch the two calls need (bytes, 64-byte aligned memory). */
size_t tl_attention_bf16_scratch(int B, int T, int H, int KV, int hd);

/* The bf16 operands the forward rounds (q, k, v head-major and the
 * probabilities) that the backward reads again: elements of a layer's `kept`. */
size_t tl_attention_bf16_kept(int B, int T, int H, int KV, int hd);

/* RoPE folded in: the rotary tables (tl_rope_tables, positions 0..T-1 within
 * each sequence). */
typedef struct {
    const float *cos, *sin;
} tl_rope;

/* out_bf16 (NULL: none): out's bf16 copy, rounded as it is written (out NULL:
 * only the copy is written).  kept (NULL:
 * none) receives the rounded operands for the backward.  With rope, q and k are
 * the projections before RoPE, which is applied on their way to bf16 (the same
 * bits as tl_rope_forward first; q and k are not written). */
void tl_attention_forward_bf16(float *out, uint16_t *out_bf16, float *probs, const float *q, const float *k,
                               const float *v, int B, int T, int H, int KV, int hd, const tl_rope *rope,
                               void *scratch, uint16_t *kept);

/* With kept (the forward's, for the same q, k, v and probs), q, k and v are not
 * read and nothing is rounded again: the same bits as without it.  With rope (as
 * the forward's), dq and dk come out as tl_rope_backward would leave them: the
 * gradients of the projections before RoPE.  dq, dk, dv may be NULL (not
 * written); dq_bf16, dk_bf16, dv_bf16 (NULL: none) receive their bf16 copies. */
void tl_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                const float *q, const float *k, const float *v, int B, int T, int H, int KV, int hd,
                                const tl_rope *rope, void *scratch, const uint16_t *kept, uint16_t *dq_bf16,
                                uint16_t *dk_bf16, uint16_t *dv_bf16);

#endif

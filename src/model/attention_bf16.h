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

/* out_bf16 (NULL: none): out's bf16 copy, rounded as it is written.  kept (NULL:
 * none) receives the rounded operands for the backward. */
void tl_attention_forward_bf16(float *out, uint16_t *out_bf16, float *probs, const float *q, const float *k,
                               const float *v, int B, int T, int H, int KV, int hd, void *scratch, uint16_t *kept);

/* With kept (the forward's, for the same q, k, v and probs), q, k and v are not
 * read and nothing is rounded again: the same bits as without it. */
void tl_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                const float *q, const float *k, const float *v, int B, int T, int H, int KV, int hd,
                                void *scratch, const uint16_t *kept);

#endif

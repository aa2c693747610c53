/* attention.h - causal grouped-query self-attention (CPU reference).
 *
 * q: [B*T, H*hd], k/v: [B*T, KV*hd] (rows b*T + t), query head h reads KV head
 * h / (H/KV) as HF's repeat_kv does, without materialising the repeats.
 * probs: [B, H, T, T] softmax(q k^T / sqrt(hd)) with the causal mask, kept
 * for the backward pass; out: [B*T, H*hd]. */
#ifndef TL_ATTENTION_H
#define TL_ATTENTION_H

#include <stddef.h>

void tl_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KV, int hd);

/* Queries are processed in blocks of this many rows (skipping most of the causal
 * triangle; the scratch of the cached variant is sized by it). */
#define TL_ATTN_ROWS 64

/* Attention of n new queries q [n, H*hd] at positions p0..p0+n-1 over a KV cache
 * kc/vc [p0+n, KV*hd] (inference), on at most nthreads threads; scratch holds
 * nthreads * TL_ATTN_ROWS * (p0+n) floats. */
void tl_attention_forward_cached(float *out, float *scratch, const float *q, const float *kc, const float *vc,
                                 int p0, int n, int H, int KV, int hd, int nthreads);

/* Softmax of row p[0..T) over columns [0, t] (scaled scores), zeros after. */
void tl_attention_softmax_row(float *p, int t, int T);

/* dq: [B*T, H*hd] (overwritten); dk, dv: [B*T, KV*hd] (overwritten). */
void tl_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                           int hd);

#endif

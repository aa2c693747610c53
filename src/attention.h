/* attention.h - causal grouped-query self-attention (CPU reference).
 *
 * q: [B*T, H*hd], k/v: [B*T, KV*hd] (rows b*T + t), query head h reads KV head
 * h / (H/KV) as HF's repeat_kv does, without materialising the repeats.
 * probs: [B, H, T, T] softmax(q k^T / sqrt(hd)) with the causal mask, kept
 * for the backward pass; out: [B*T, H*hd]. */
#ifndef TL_ATTENTION_H
#define TL_ATTENTION_H

void tl_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KV, int hd);

/* dq: [B*T, H*hd] (overwritten); dk, dv: [B*T, KV*hd] (overwritten). */
void tl_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                           int hd);

#endif

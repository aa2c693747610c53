/* attention_amx.h - causal GQA attention over a KV cache on AMX tiles (inference). */
#ifndef TL_ATTENTION_AMX_H
#define TL_ATTENTION_AMX_H

#include <stddef.h>

/* Attention of n new queries, as tl_attention_forward_cached (attention.h), with
 * bf16 products on AMX tiles (the `amx` kernel's prompt pass): q, the cached keys and values, and the
 * probabilities are rounded to bf16 for the two products, which sum in fp32;
 * the scores and softmax stay fp32.  scratch: tl_attention_amx_scratch_bytes
 * (max_ctx >= p0+n, the same nthreads) bytes, 64-byte aligned.  Needs hd a
 * multiple of 32 (returns -1, nothing done, otherwise).  Only where
 * tl_amx_usable(). */
size_t tl_attention_amx_scratch_bytes(int max_ctx, int KV, int hd, int nthreads);
int tl_attention_forward_cached_amx(float *out, void *scratch, int max_ctx, const float *q, const float *kc,
                                    const float *vc, int p0, int n, int H, int KV, int hd, int nthreads);

#endif

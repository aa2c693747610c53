/* infer_batch.h - one decode step for B sessions of the same model at once
 * (continuous batching, src/serve/): every layer's products run as one pass
 * over the weights, each stored row read from memory once and dotted with the
 * B activations while it is in cache, so a step costs about one sequence's
 * weight traffic however many sequences share it.  Each session keeps its own
 * KV cache and position; attention runs per session.
 *
 * Batch invariance: a session's result does not depend on which other
 * sessions share the step, bit for bit - every output element is the same
 * dot product (row converted to fp32, then the fp32 row kernel) whatever B is.
 * Against tl_infer_forward's single-token decode it agrees to float rounding
 * only (that one dots quantized/bf16 rows without converting them first). */
#ifndef TL_INFER_BATCH_H
#define TL_INFER_BATCH_H

#include "infer.h"

typedef struct {
    const tl_infer_model *m;
    int max_b;                /* sequences per step */
    int max_rows;             /* tokens per step, all sequences together */
    int n_rowbuf;             /* per-thread fp32 row buffers */
    float *x, *h, *q, *k, *v, *ao, *g, *u; /* [max_rows, ...] */
    float *last;              /* [max_b, D]: the last row of each sequence */
    float *rowbuf;            /* [n_rowbuf, widest input] */
    float *logits;            /* [max_b, V] */
    float *acc;               /* [max_rows, D]: products added to x */
} tl_infer_batch;

/* Room for max_b sequences and max_rows tokens per step (max_rows >= max_b). */
int tl_infer_batch_init(tl_infer_batch *b, const tl_infer_model *m, int max_b, int max_rows, tl_error *err);
void tl_infer_batch_free(tl_infer_batch *b);

/* Runs ids[i] through session s[i] (i < n <= max_b; distinct sessions of b's
 * model) at its next position, appending to its KV cache and leaving its
 * logits in s[i]->logits.  Fails with nothing changed if an id is outside the
 * vocabulary or a cache is full. */
int tl_infer_decode_batch(tl_infer_batch *b, tl_infer_state *const *s, const int *ids, int n, tl_error *err);
/* The same with counts[i] >= 1 tokens for session i (ids holds them one
 * sequence after the other; at most max_rows in all): short prompts or prompt
 * tails join the decode step as extra rows of the same products, and each
 * session's logits are those of its last token.  Attention runs per session
 * over its counts[i] new rows, so a session's result depends on how its own
 * tokens are split into steps (float rounding), never on the other sessions. */
int tl_infer_step_batch(tl_infer_batch *b, tl_infer_state *const *s, const int *ids, const int *counts, int n,
                        tl_error *err);

/* out[n, W->rows] = x[n, W->cols] W^T, as the batched step computes it (tests). */
void tl_infer_batch_linear(tl_infer_batch *b, const tl_wmat *W, const float *x, int n, float *out);

#endif

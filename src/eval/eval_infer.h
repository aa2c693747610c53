/* eval_infer.h - the KV-cache scoring backend for tl_eval_run_backend (eval.h),
 * running on the inference engine (infer.h: weights mapped in their file dtype).
 *
 * Each context is prefilled once: the cache keeps the tokens of the previous
 * context, a request reuses the longest common prefix of its (truncated) context
 * with them, and only the rest of its context is run; the logits of the last
 * context token (which score the first continuation token) are kept.  The
 * continuations (minus their last token, never fed) of all requests sharing
 * the context then run together as one batch of rows (up to 256 per pass), each
 * row attending to the cached context and to its own choice's earlier rows; the
 * cache itself is not extended.  A one-token continuation (BoolQ's " no" /
 * " yes") needs no pass at all.  The state persists across loglik calls, so a
 * context split between two calls is still computed once.  Scores (log-softmax
 * sums in double, greedy flags) and the harness's left truncation to
 * max_length + 1 tokens are those of the fp32
 * model backend. */
#ifndef TL_EVAL_INFER_H
#define TL_EVAL_INFER_H

#include "eval.h"
#include "infer.h"

typedef struct tl_eval_infer_backend tl_eval_infer_backend;

/* The model must outlive the backend; its cache holds max_seq_len positions. */
tl_eval_infer_backend *tl_eval_infer_backend_create(const tl_infer_model *m, tl_error *err);
void tl_eval_infer_backend_free(tl_eval_infer_backend *b);
tl_eval_backend tl_eval_infer_backend_iface(tl_eval_infer_backend *b);

/* Continuation rows per batched pass (default and rows <= 0: 256); a longer
 * single continuation still runs in one pass. */
void tl_eval_infer_backend_set_rows(tl_eval_infer_backend *b, int rows);

/* Counters since creation: tokens run through the model, and tokens the fp32
 * backend would have run (every request's full input), for reporting reuse. */
void tl_eval_infer_backend_stats(const tl_eval_infer_backend *b, long *tokens_run, long *tokens_full);

#endif

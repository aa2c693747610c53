/* eval_infer.c - KV-cache scoring backend for zero-shot evaluation (see
 * eval_infer.h): shared contexts are prefilled once, continuations run as one
 * chunk from the cached context. */
#include "eval_infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tl_eval_infer_backend {
    const tl_infer_model *m;
    tl_infer_state st;
    int *cached;      /* [max_ctx] token ids in the cache, st.pos of them valid */
    int *input;       /* [max_ctx] the current request's input tokens */
    float *saved;     /* [V] logits at position saved_pos */
    int saved_pos;    /* -1: none; valid while cached[0..saved_pos] is unchanged */
    float *lg;        /* [lg_rows, V] logits of a continuation chunk */
    double *part;     /* [lg_rows] per-token log-probabilities */
    int *pg;          /* [lg_rows] per-token argmax flags */
    int lg_rows;
    long tokens_run, tokens_full;
};

tl_eval_infer_backend *tl_eval_infer_backend_create(const tl_infer_model *m, tl_error *err) {
    tl_eval_infer_backend *b = calloc(1, sizeof *b);
    if (!b) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    b->m = m;
    b->saved_pos = -1;
    if (tl_infer_state_init(&b->st, m, m->cfg.max_seq_len, err)) {
        free(b);
        return NULL;
    }
    b->cached = malloc(sizeof(int) * (size_t)b->st.max_ctx);
    b->input = malloc(sizeof(int) * (size_t)b->st.max_ctx);
    b->saved = tl_alloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    if (!b->cached || !b->input || !b->saved) {
        tl_eval_infer_backend_free(b);
        tl_fail(err, "out of memory");
        return NULL;
    }
    return b;
}

void tl_eval_infer_backend_free(tl_eval_infer_backend *b) {
    if (!b) return;
    tl_infer_state_free(&b->st);
    free(b->cached);
    free(b->input);
    tl_free(b->saved);
    tl_free(b->lg);
    free(b->part);
    free(b->pg);
    free(b);
}

void tl_eval_infer_backend_stats(const tl_eval_infer_backend *b, long *tokens_run, long *tokens_full) {
    *tokens_run = b->tokens_run;
    *tokens_full = b->tokens_full;
}

/* log softmax(row)[target] (double sums, as the fp32 backend) and whether target
 * is the first maximum. */
static double score_row(const float *row, int V, int target, int *is_argmax) {
    int arg = 0;
    float mx = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > mx) mx = row[v], arg = v;
    double se = 0;
    for (int v = 0; v < V; v++) se += exp((double)row[v] - mx);
    *is_argmax = arg == target;
    return (double)row[target] - mx - log(se);
}

/* Runs ids[0..n) at the cache's end, keeping cached[] in step. */
static int run(tl_eval_infer_backend *b, const int *ids, int n, float *all_logits, tl_error *err) {
    int p0 = b->st.pos;
    if (tl_infer_forward(&b->st, ids, n, all_logits, err)) return -1;
    memcpy(b->cached + p0, ids, sizeof(int) * (size_t)n);
    b->tokens_run += n;
    return 0;
}

static int score_request(tl_eval_infer_backend *b, const tl_eval_request *q, double *ll, int *greedy,
                         tl_error *err) {
    const int L = b->st.max_ctx, V = b->m->cfg.vocab_size;
    if (q->n_cont < 1) return tl_fail(err, "a request has no continuation tokens");
    if (q->n_cont > L)
        return tl_fail(err, "a continuation of %d tokens exceeds the model's context of %d", q->n_cont, L);
    /* the harness's input: (ctx + cont)[-(L+1):][:-1]; continuation token c is
     * scored by the logits at input position len - n_cont + c */
    const int total = q->n_ctx + q->n_cont, skip = total > L + 1 ? total - (L + 1) : 0;
    const int len = (total > L + 1 ? L + 1 : total) - 1, ctx_end = q->n_ctx - skip;
    if (ctx_end < 1) return tl_fail(err, "a request has no context tokens (BOS missing?)");
    for (int j = 0; j < len; j++) {
        int idx = skip + j;
        b->input[j] = idx < q->n_ctx ? q->ctx_ids[idx] : q->cont_ids[idx - q->n_ctx];
    }
    b->tokens_full += len;
    /* reuse the longest cached prefix of the context */
    int lcp = 0;
    while (lcp < ctx_end && lcp < b->st.pos && b->cached[lcp] == b->input[lcp]) lcp++;
    if (b->saved_pos >= lcp) b->saved_pos = -1; /* its tokens are about to change */
    if (!(lcp == ctx_end && b->saved_pos == ctx_end - 1)) {
        if (lcp == ctx_end) lcp--; /* rerun the last context token for its logits */
        tl_infer_truncate(&b->st, lcp);
        if (run(b, b->input + lcp, ctx_end - lcp, NULL, err)) return -1;
        memcpy(b->saved, b->st.logits, sizeof(float) * (size_t)V);
        b->saved_pos = ctx_end - 1;
    }
    tl_infer_truncate(&b->st, ctx_end);
    int g;
    double sum = score_row(b->saved, V, q->cont_ids[0], &g);
    int all_greedy = g;
    const int rest = q->n_cont - 1; /* continuation tokens fed to score the others */
    if (rest > 0) {
        if (rest > b->lg_rows) {
            tl_free(b->lg);
            free(b->part);
            free(b->pg);
            b->lg = tl_alloc(sizeof(float) * (size_t)rest * (size_t)V);
            b->part = malloc(sizeof(double) * (size_t)rest);
            b->pg = malloc(sizeof(int) * (size_t)rest);
            b->lg_rows = b->lg && b->part && b->pg ? rest : 0;
            if (!b->lg_rows) return tl_fail(err, "out of memory for %d rows of logits", rest);
        }
        if (run(b, b->input + ctx_end, rest, b->lg, err)) return -1;
        double *part = b->part;
        int *pg = b->pg;
#pragma omp parallel for schedule(static) if (rest > 1)
        for (int c = 0; c < rest; c++) part[c] = score_row(b->lg + (size_t)c * V, V, q->cont_ids[c + 1], &pg[c]);
        for (int c = 0; c < rest; c++) { /* in token order, as the fp32 backend sums */
            sum += part[c];
            if (!pg[c]) all_greedy = 0;
        }
    }
    *ll = sum;
    *greedy = all_greedy;
    return 0;
}

static int infer_loglik(void *self, const tl_eval_request *reqs, int n, double *ll, int *greedy, tl_error *err) {
    tl_eval_infer_backend *b = self;
    for (int i = 0; i < n; i++)
        if (score_request(b, &reqs[i], &ll[i], &greedy[i], err)) {
            /* a failed forward leaves the cache as it was, but be safe: start over */
            tl_infer_truncate(&b->st, 0);
            b->saved_pos = -1;
            return -1;
        }
    return 0;
}

tl_eval_backend tl_eval_infer_backend_iface(tl_eval_infer_backend *b) {
    tl_eval_backend be = {b, infer_loglik};
    return be;
}

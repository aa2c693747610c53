/* eval_infer.c - KV-cache scoring backend for zero-shot evaluation (see
 * eval_infer.h): shared contexts are prefilled once with the engine; the
 * continuations of all choices of a context then run together in one batched
 * pass (fork_pass) whose rows attend to the cached context and to their own
 * choice's earlier rows. */
#include "eval_infer.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define ROW_CAP 256          /* continuation rows per batched pass (more for one long continuation) */
#define TILE_CAP (16u << 20) /* floats of fp32 weight tile for non-F32 weights */

struct tl_eval_infer_backend {
    const tl_infer_model *m;
    tl_infer_state st;
    int *cached;      /* [max_ctx] token ids in the cache, st.pos of them valid */
    float *saved;     /* [V] logits at position saved_pos */
    int saved_pos;    /* -1: none; valid while cached[0..saved_pos] is unchanged */
    float *lg;        /* [lg_rows, V] logits of a continuation chunk */
    double *part;     /* [lg_rows] per-token log-probabilities */
    int *pg;          /* [lg_rows] per-token argmax flags */
    int lg_rows;
    /* the batched continuation pass: rows of several choices after one context */
    int rows_cap;
    int row_limit;                         /* rows per pass (ROW_CAP) */
    float *x, *h, *q, *k, *v, *ao, *g, *u; /* [rows_cap, ...] */
    int *row_tok, *row_seg;                /* token and first row of its choice */
    float *scores;                         /* [threads, max_ctx] */
    int n_threads;
    float *tile;
    size_t tile_floats;
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
    b->row_limit = ROW_CAP;
    if (tl_infer_state_init(&b->st, m, m->cfg.max_seq_len, err)) {
        free(b);
        return NULL;
    }
    b->cached = malloc(sizeof(int) * (size_t)b->st.max_ctx);
    b->saved = tl_alloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    b->n_threads = omp_get_max_threads();
    b->scores = tl_alloc(sizeof(float) * (size_t)b->n_threads * (size_t)b->st.max_ctx);
    if (!b->cached || !b->saved || !b->scores) {
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
    tl_free(b->saved);
    tl_free(b->lg);
    free(b->part);
    free(b->pg);
    float *bufs[] = {b->x, b->h, b->q, b->k, b->v, b->ao, b->g, b->u, b->scores, b->tile};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tl_free(bufs[i]);
    free(b->row_tok);
    free(b->row_seg);
    free(b);
}

void tl_eval_infer_backend_set_rows(tl_eval_infer_backend *b, int rows) {
    b->row_limit = rows > 0 ? rows : ROW_CAP;
}

void tl_eval_infer_backend_stats(const tl_eval_infer_backend *b, long *tokens_run, long *tokens_full) {
    *tokens_run = b->tokens_run;
    *tokens_full = b->tokens_full;
}


/* Runs ids[0..n) at the cache's end, keeping cached[] in step. */
static int run(tl_eval_infer_backend *b, const int *ids, int n, float *all_logits, tl_error *err) {
    int p0 = b->st.pos;
    if (tl_infer_forward(&b->st, ids, n, all_logits, err)) return -1;
    memcpy(b->cached + p0, ids, sizeof(int) * (size_t)n);
    b->tokens_run += n;
    return 0;
}

/* Room for R rows in the batched pass and its logits. */
static int ensure_rows(tl_eval_infer_backend *b, int R, tl_error *err) {
    const tl_config *c = &b->m->cfg;
    const size_t V = (size_t)c->vocab_size;
    if (R > b->lg_rows) {
        tl_free(b->lg);
        free(b->part);
        free(b->pg);
        b->lg = tl_alloc(sizeof(float) * (size_t)R * V);
        b->part = malloc(sizeof(double) * (size_t)R);
        b->pg = malloc(sizeof(int) * (size_t)R);
        b->lg_rows = b->lg && b->part && b->pg ? R : 0;
        if (!b->lg_rows) return tl_fail(err, "out of memory for %d rows of logits", R);
    }
    if (R <= b->rows_cap) return 0;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, hd = (size_t)tl_config_head_dim(c),
                 QD = (size_t)c->n_heads * hd, KD = (size_t)c->n_kv_heads * hd, n = (size_t)R;
    float **bufs[] = {&b->x, &b->h, &b->q, &b->k, &b->v, &b->ao, &b->g, &b->u};
    const size_t sizes[] = {D, D, QD, KD, KD, QD, F, F};
    b->rows_cap = 0;
    int ok = 1;
    for (size_t i = 0; i < 8; i++) {
        tl_free(*bufs[i]);
        *bufs[i] = tl_alloc(sizeof(float) * n * sizes[i]);
        ok = ok && *bufs[i];
    }
    free(b->row_tok);
    free(b->row_seg);
    b->row_tok = malloc(sizeof(int) * n);
    b->row_seg = malloc(sizeof(int) * n);
    if (!ok || !b->row_tok || !b->row_seg) return tl_fail(err, "out of memory for a %d-row eval batch", R);
    b->rows_cap = R;
    return 0;
}

/* y[n, W->rows] (=|+=) x[n, W->cols] W^T, non-F32 weights converted a tile at a time. */
static int lin(tl_eval_infer_backend *b, const tl_wmat *W, const float *x, int n, float *y, int accumulate,
               tl_error *err) {
    const int in = W->cols, out = W->rows;
    const float beta = accumulate ? 1.0f : 0.0f;
    if (!(W->dtype == TL_DT_F32 && ((uintptr_t)W->data & 3u) == 0) && !b->tile) {
        size_t want = (size_t)out * (size_t)in;
        b->tile_floats = want < TILE_CAP ? want : TILE_CAP;
        if (b->tile_floats < (size_t)in) b->tile_floats = (size_t)in;
        if (!(b->tile = tl_alloc(sizeof(float) * b->tile_floats)))
            return tl_fail(err, "out of memory for a weight tile");
    }
    if (b->tile && b->tile_floats < (size_t)in) return tl_fail(err, "weight tile too small");
    tl_wmat_gemm(W, x, n, y, beta, b->tile, b->tile_floats);
    return 0;
}

/* The batched continuation pass: R rows (row_tok, row_seg filled), each choice's
 * rows at positions P, P+1, ... after the cached context [0, P); a row attends to
 * the context and to its own choice's rows up to itself.  The cache is not
 * changed.  Logits of every row go to b->lg. */
static int fork_pass(tl_eval_infer_backend *b, int P, int R, tl_error *err) {
    const tl_infer_model *m = b->m;
    const tl_config *c = &m->cfg;
    const int D = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, hd = tl_config_head_dim(c),
              QD = H * hd, KD = KV * hd, group = H / KV, max_ctx = b->st.max_ctx;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int r = 0; r < R; r++) tl_wmat_row_f32(&m->embed, b->row_tok[r], b->x + (size_t)r * D);
    for (int l = 0; l < c->n_layers; l++) {
        const tl_infer_layer *w = &m->layers[l];
        const float *kc = b->st.k_cache + (size_t)l * max_ctx * KD, *vc = b->st.v_cache + (size_t)l * max_ctx * KD;
        tl_rmsnorm_forward(b->h, NULL, b->x, w->attn_norm, R, D, c->norm_eps);
        if (lin(b, &w->wq, b->h, R, b->q, 0, err) || lin(b, &w->wk, b->h, R, b->k, 0, err) ||
            lin(b, &w->wv, b->h, R, b->v, 0, err))
            return -1;
        tl_wmat_unpermute_out(&w->wq, b->q, R); /* GGUF q/k rows: back to HF order (infer.h) */
        tl_wmat_unpermute_out(&w->wk, b->k, R);
        for (int r0 = 0; r0 < R;) { /* each choice's rows from position P */
            int r1 = r0;
            while (r1 < R && b->row_seg[r1] == r0) r1++;
            tl_rope_forward(b->q + (size_t)r0 * QD, m->rope_cos, m->rope_sin, r1 - r0, r1 - r0, P, H, hd);
            tl_rope_forward(b->k + (size_t)r0 * KD, m->rope_cos, m->rope_sin, r1 - r0, r1 - r0, P, KV, hd);
            r0 = r1;
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(b->n_threads)
        for (int wi = 0; wi < R * H; wi++) {
            const int r = wi / H, hh = wi % H, kvh = hh / group, seg = b->row_seg[r], own = r - seg + 1;
            const float *q = b->q + (size_t)r * QD + (size_t)hh * hd;
            float *o = b->ao + (size_t)r * QD + (size_t)hh * hd;
            float *sc = b->scores + (size_t)omp_get_thread_num() * max_ctx;
            float mx = -INFINITY;
            for (int j = 0; j < P + own; j++) {
                const float *kr = j < P ? kc + (size_t)j * KD : b->k + (size_t)(seg + j - P) * KD;
                kr += (size_t)kvh * hd;
                float d = 0.0f;
                for (int e = 0; e < hd; e++) d += q[e] * kr[e];
                d *= scale;
                sc[j] = d;
                if (d > mx) mx = d;
            }
            float sum = 0.0f;
            for (int j = 0; j < P + own; j++) {
                sc[j] = expf(sc[j] - mx);
                sum += sc[j];
            }
            const float inv = 1.0f / sum;
            for (int e = 0; e < hd; e++) o[e] = 0.0f;
            for (int j = 0; j < P + own; j++) {
                const float *vr = j < P ? vc + (size_t)j * KD : b->v + (size_t)(seg + j - P) * KD;
                vr += (size_t)kvh * hd;
                const float p = sc[j] * inv;
                for (int e = 0; e < hd; e++) o[e] += p * vr[e];
            }
        }
        if (lin(b, &w->wo, b->ao, R, b->x, 1, err)) return -1;
        tl_rmsnorm_forward(b->h, NULL, b->x, w->mlp_norm, R, D, c->norm_eps);
        if (lin(b, &w->w_gate, b->h, R, b->g, 0, err) || lin(b, &w->w_up, b->h, R, b->u, 0, err)) return -1;
        const size_t nf = (size_t)R * F;
#pragma omp parallel for schedule(static) if (nf > 65536)
        for (size_t i = 0; i < nf; i++) {
            float gv = b->g[i];
            b->g[i] = gv / (1.0f + expf(-gv)) * b->u[i];
        }
        if (lin(b, &w->w_down, b->g, R, b->x, 1, err)) return -1;
    }
    tl_rmsnorm_forward(b->h, NULL, b->x, m->final_norm, R, D, c->norm_eps);
    b->tokens_run += R;
    return lin(b, &m->lm_head, b->h, R, b->lg, 0, err);
}

/* The harness's input for a request: (ctx + cont)[-(L+1):][:-1]; continuation
 * token c is scored by the logits at input position len - n_cont + c, the
 * context is input[0, ctx_end). */
typedef struct {
    int skip, len, ctx_end;
} req_shape;

static int shape_of(const tl_eval_request *q, int L, req_shape *sh, tl_error *err) {
    if (q->n_cont < 1) return tl_fail(err, "a request has no continuation tokens");
    if (q->n_cont > L)
        return tl_fail(err, "a continuation of %d tokens exceeds the model's context of %d", q->n_cont, L);
    const int total = q->n_ctx + q->n_cont;
    sh->skip = total > L + 1 ? total - (L + 1) : 0;
    sh->len = (total > L + 1 ? L + 1 : total) - 1;
    sh->ctx_end = q->n_ctx - sh->skip;
    if (sh->ctx_end < 1) return tl_fail(err, "a request has no context tokens (BOS missing?)");
    return 0;
}

/* Whether two requests have the same truncated context. */
static int same_context(const tl_eval_request *a, const req_shape *sa, const tl_eval_request *q,
                        const req_shape *sq) {
    return sa->ctx_end == sq->ctx_end &&
           !memcmp(a->ctx_ids + sa->skip, q->ctx_ids + sq->skip, sizeof(int) * (size_t)sa->ctx_end);
}

/* Puts request q's context into the cache (reusing its longest cached prefix)
 * and its last position's logits into b->saved. */
static int prefill(tl_eval_infer_backend *b, const tl_eval_request *q, const req_shape *sh, tl_error *err) {
    const int V = b->m->cfg.vocab_size, ctx_end = sh->ctx_end;
    const int *ctx = q->ctx_ids + sh->skip;
    int lcp = 0;
    while (lcp < ctx_end && lcp < b->st.pos && b->cached[lcp] == ctx[lcp]) lcp++;
    if (b->saved_pos >= lcp) b->saved_pos = -1; /* its tokens are about to change */
    if (!(lcp == ctx_end && b->saved_pos == ctx_end - 1)) {
        if (lcp == ctx_end) lcp--; /* rerun the last context token for its logits */
        tl_infer_truncate(&b->st, lcp);
        if (run(b, ctx + lcp, ctx_end - lcp, NULL, err)) return -1;
        memcpy(b->saved, b->st.logits, sizeof(float) * (size_t)V);
        b->saved_pos = ctx_end - 1;
    }
    tl_infer_truncate(&b->st, ctx_end);
    return 0;
}

/* Scores requests [i0, i1) that share one context. */
static int score_group(tl_eval_infer_backend *b, const tl_eval_request *reqs, const req_shape *sh, int i0, int i1,
                       double *ll, int *greedy, tl_error *err) {
    const int V = b->m->cfg.vocab_size;
    if (prefill(b, &reqs[i0], &sh[i0], err)) return -1;
    for (int i = i0; i < i1; i++) {
        b->tokens_full += sh[i].len;
        ll[i] = tl_eval_score_row(b->saved, V, reqs[i].cont_ids[0], &greedy[i]);
    }
    const int P = sh[i0].ctx_end;
    for (int a = i0; a < i1;) {
        /* the next requests with more than one continuation token, up to ROW_CAP rows */
        int R = 0, e = a;
        while (e < i1 && (R == 0 || R + reqs[e].n_cont - 1 <= b->row_limit)) R += reqs[e++].n_cont - 1;
        if (R > 0) {
            if (ensure_rows(b, R, err)) return -1;
            int r = 0;
            for (int i = a; i < e; i++)
                for (int j = 0; j < reqs[i].n_cont - 1; j++, r++) {
                    b->row_tok[r] = reqs[i].cont_ids[j];
                    b->row_seg[r] = r - j;
                }
            for (int t = 0; t < R; t++)
                if (b->row_tok[t] < 0 || b->row_tok[t] >= V)
                    return tl_fail(err, "token id %d is outside the vocabulary [0, %d)", b->row_tok[t], V);
            if (fork_pass(b, P, R, err)) return -1;
            double *part = b->part;
            int *pg = b->pg;
#pragma omp parallel for schedule(static) if (R > 1)
            for (int t = 0; t < R; t++) {
                const int seg = b->row_seg[t];
                int i = a, rr = 0; /* the request of row t and its offset */
                while (rr + reqs[i].n_cont - 1 <= seg) rr += reqs[i++].n_cont - 1;
                part[t] = tl_eval_score_row(b->lg + (size_t)t * V, V, reqs[i].cont_ids[t - seg + 1], &pg[t]);
            }
            r = 0;
            for (int i = a; i < e; i++) /* in token order, as the fp32 backend sums */
                for (int j = 0; j < reqs[i].n_cont - 1; j++, r++) {
                    ll[i] += part[r];
                    if (!pg[r]) greedy[i] = 0;
                }
        }
        a = e;
    }
    return 0;
}

static int infer_loglik(void *self, const tl_eval_request *reqs, int n, double *ll, int *greedy, tl_error *err) {
    tl_eval_infer_backend *b = self;
    const int L = b->st.max_ctx;
    req_shape *sh = malloc(sizeof *sh * (size_t)(n > 0 ? n : 1));
    if (!sh) return tl_fail(err, "out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = shape_of(&reqs[i], L, &sh[i], err);
    for (int i0 = 0; i0 < n && !rc;) {
        int i1 = i0 + 1;
        while (i1 < n && same_context(&reqs[i0], &sh[i0], &reqs[i1], &sh[i1])) i1++;
        rc = score_group(b, reqs, sh, i0, i1, ll, greedy, err);
        i0 = i1;
    }
    if (rc) { /* a failed forward leaves the cache as it was, but be safe: start over */
        tl_infer_truncate(&b->st, 0);
        b->saved_pos = -1;
    }
    free(sh);
    return rc;
}

tl_eval_backend tl_eval_infer_backend_iface(tl_eval_infer_backend *b) {
    tl_eval_backend be = {b, infer_loglik};
    return be;
}

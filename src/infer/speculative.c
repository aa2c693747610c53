/* speculative.c - speculative decoding (speculative.h). */
#include "speculative.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* ---------------------------------------------------------------- the accept step */

double tl_spec_accept_prob(float p, float q) {
    if (q <= 0.0f) return p > 0.0f ? 1.0 : 0.0;
    double a = (double)p / (double)q;
    return a < 1.0 ? a : 1.0;
}

int tl_spec_residual(const float *p, const float *q, int V, float *r) {
    double total = 0.0;
    for (int i = 0; i < V; i++) {
        float d = p[i] - q[i];
        r[i] = d > 0.0f ? d : 0.0f;
        total += r[i];
    }
    if (total <= 0.0) {
        memcpy(r, p, sizeof(float) * (size_t)V);
        return 1;
    }
    for (int i = 0; i < V; i++) r[i] = (float)(r[i] / total);
    return 0;
}

int tl_spec_draw(const float *w, int V, double u) {
    double total = 0.0;
    int last = -1;
    for (int i = 0; i < V; i++)
        if (w[i] > 0.0f) total += w[i], last = i;
    const double target = u * total;
    double acc = 0.0;
    for (int i = 0; i < V; i++) {
        if (w[i] <= 0.0f) continue;
        acc += w[i];
        if (acc > target) return i;
    }
    return last < 0 ? 0 : last; /* rounding left u * total at the very top */
}

int tl_spec_verify(const float *p, const float *q, const int *draft, int k, int V, tl_rng *rng, float *scratch,
                   int *next) {
    for (int i = 0; i < k; i++) {
        const float *pi = p + (size_t)i * V, *qi = q + (size_t)i * V;
        const int d = draft[i];
        /* u < a accepts with probability a exactly; a == 1 always, a == 0 never */
        if (tl_rng_uniform(rng) < tl_spec_accept_prob(pi[d], qi[d])) continue;
        tl_spec_residual(pi, qi, V, scratch);
        *next = tl_spec_draw(scratch, V, tl_rng_uniform(rng));
        return i;
    }
    *next = tl_spec_draw(p + (size_t)k * V, V, tl_rng_uniform(rng));
    return k;
}

/* ---------------------------------------------------------------- the decoder */

int tl_spec_check_vocab(const tl_infer_model *target, const tl_infer_model *draft, const char *draft_name,
                        tl_error *err) {
    const int V = target->cfg.vocab_size;
    if (draft->cfg.vocab_size != V)
        return tl_fail(err, "draft %s: its vocabulary has %d tokens, the model's %d; a draft must share the model's "
                            "vocabulary",
                       draft_name, draft->cfg.vocab_size, V);
    if (target->tok && draft->tok) {
        const int n = tl_tokenizer_vocab_size(target->tok);
        if (tl_tokenizer_vocab_size(draft->tok) != n)
            return tl_fail(err, "draft %s: its tokenizer has %d pieces, the model's %d; a draft must share the "
                                "model's vocabulary",
                           draft_name, tl_tokenizer_vocab_size(draft->tok), n);
        for (int i = 0; i < n; i++)
            if (strcmp(tl_tokenizer_piece(target->tok, i), tl_tokenizer_piece(draft->tok, i)) != 0)
                return tl_fail(err, "draft %s: token %d is '%s' there but '%s' in the model; a draft must share the "
                                    "model's vocabulary",
                               draft_name, i, tl_tokenizer_piece(draft->tok, i), tl_tokenizer_piece(target->tok, i));
    }
    return 0;
}

int tl_spec_init(tl_spec *sp, tl_infer_state *draft, const tl_sampler_opts *so, int k, tl_error *err) {
    memset(sp, 0, sizeof *sp);
    if (k < 1 || k > TL_SPEC_MAX_K) return tl_fail(err, "draft tokens per step %d: must be in [1, %d]", k, TL_SPEC_MAX_K);
    const int V = draft->m->cfg.vocab_size;
    sp->draft = draft;
    sp->k = k;
    sp->V = V;
    if (tl_sampler_init(&sp->dsp, so, V, 0, err)) return -1;
    sp->p = tl_alloc(sizeof(float) * (size_t)(k + 1) * (size_t)V);
    sp->q = tl_alloc(sizeof(float) * (size_t)k * (size_t)V);
    sp->logits = tl_alloc(sizeof(float) * (size_t)(k + 1) * (size_t)V);
    sp->dlogits = tl_alloc(sizeof(float) * (size_t)V);
    if (!sp->p || !sp->q || !sp->logits || !sp->dlogits) {
        tl_spec_free(sp);
        return tl_fail(err, "out of memory for speculative decoding (%d tokens per step)", k);
    }
    return 0;
}

void tl_spec_free(tl_spec *sp) {
    tl_sampler_free(&sp->dsp);
    tl_free(sp->p);
    tl_free(sp->q);
    tl_free(sp->logits);
    tl_free(sp->dlogits);
    free(sp->hist);
    memset(sp, 0, sizeof *sp);
}

void tl_spec_set_sampling(tl_spec *sp, const tl_sampler_opts *so) { sp->dsp.o = *so; }

/* The history hist[0..n) copied with room for k proposals after it. */
static int history_copy(tl_spec *sp, const int *hist, int n, int k) {
    if (n + k > sp->hist_cap) {
        int cap = (n + k) * 2;
        int *nh = realloc(sp->hist, sizeof(int) * (size_t)cap);
        if (!nh) return -1;
        sp->hist = nh;
        sp->hist_cap = cap;
    }
    memcpy(sp->hist, hist, sizeof(int) * (size_t)n);
    return 0;
}

int tl_spec_step(tl_spec *sp, tl_infer_state *s, tl_sampler *tsp, const int *hist, int n, int max_new, int *out,
                 tl_error *err) {
    tl_infer_state *ds = sp->draft;
    const int V = sp->V;
    if (n < 1 || s->pos != n - 1 || ds->pos > n - 1)
        return tl_fail(err, "speculative step: the caches hold %d and %d of %d tokens", s->pos, ds->pos, n);
    if (s->pos >= s->max_ctx) return tl_fail(err, "context full: %d tokens", s->pos);
    /* proposals: at most k, max_new - 1 (the step adds one token of the
     * target's), what the target's cache holds beside the pending token, and
     * what the draft's holds once it has caught up */
    int k = sp->k;
    if (k > max_new - 1) k = max_new - 1;
    if (k > s->max_ctx - s->pos - 1) k = s->max_ctx - s->pos - 1;
    if (k > ds->max_ctx - n + 1) k = ds->max_ctx - n + 1;
    if (k < 0) k = 0;
    if (history_copy(sp, hist, n, k)) return tl_fail(err, "out of memory");
    int draft[TL_SPEC_MAX_K];
    if (k > 0) {
        /* the draft catches up with the context (the prompt, the last accepted tokens) */
        if (tl_infer_forward(ds, hist + ds->pos, n - ds->pos, NULL, err)) return -1;
        for (int j = 0; j < k; j++) {
            float *qj = sp->q + (size_t)j * V;
            memcpy(sp->dlogits, ds->logits, sizeof(float) * (size_t)V);
            tl_sampler_probs(&sp->dsp, sp->dlogits, sp->hist, n + j, qj);
            draft[j] = tl_spec_draw(qj, V, tl_rng_uniform(&tsp->rng));
            sp->hist[n + j] = draft[j];
            if (j + 1 < k && tl_infer_forward(ds, &draft[j], 1, NULL, err)) return -1;
        }
    }
    /* the target runs the pending token and the proposals, each row as its own decode step */
    int rows[TL_SPEC_MAX_K + 1];
    rows[0] = hist[n - 1];
    memcpy(rows + 1, draft, sizeof(int) * (size_t)k);
    if (tl_infer_decode_rows(s, rows, k + 1, sp->logits, err)) return -1;
    for (int i = 0; i <= k; i++)
        tl_sampler_probs(tsp, sp->logits + (size_t)i * V, sp->hist, n + i, sp->p + (size_t)i * V);
    int next;
    const int a = tl_spec_verify(sp->p, sp->q, draft, k, V, &tsp->rng, sp->dlogits, &next);
    memcpy(out, draft, sizeof(int) * (size_t)a);
    out[a] = next;
    /* forget the rejected positions: the target keeps the pending token and the
     * accepted proposals; the draft ran all but the last proposal */
    tl_infer_truncate(s, n + a);
    tl_infer_truncate(ds, n + a);
    sp->proposed += k;
    sp->accepted += a;
    sp->steps++;
    return a + 1;
}

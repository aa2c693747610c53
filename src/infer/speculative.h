/* speculative.h - speculative decoding: a small draft model with the target's
 * vocabulary proposes k tokens one at a time on its own KV cache; the target
 * runs the last accepted token and the k proposals in one pass
 * (tl_infer_decode_rows: each weight matrix read once for the k+1 rows) and
 * keeps the longest prefix the standard rejection scheme accepts, plus one
 * token of its own; both caches then forget the rejected positions.
 *
 * The accepted tokens follow the target's distribution exactly: proposal d
 * (drawn from the draft's q) is accepted with probability min(1, p(d)/q(d));
 * the first rejected one is replaced by a draw from normalize(max(0, p - q));
 * when all k are accepted a bonus token is drawn from the target's p after
 * them.  p and q are the sampler's final distributions (tl_sampler_probs:
 * repetition penalty, temperature, top-k, top-p, min-p), the same settings for
 * both.  Greedy decoding is the one-hot case: a proposal is kept iff it is the
 * target's argmax, and since the verification rows are bit for bit the
 * single-token decode's, the output equals decoding without a draft. */
#ifndef TL_SPECULATIVE_H
#define TL_SPECULATIVE_H

#include "common.h"
#include "infer.h"
#include "rng.h"
#include "sampler.h"

#define TL_SPEC_MAX_K 16

/* ---- the accept / resample step (pure) ---- */

/* min(1, p/q): the probability that a proposal the draft gave probability q
 * and the target p is kept (q = 0: kept iff p > 0). */
double tl_spec_accept_prob(float p, float q);
/* r = normalize(max(0, p - q)) over V tokens, the distribution a rejected
 * proposal is replaced from.  Returns 0, or 1 when p - q has no positive mass
 * (p == q, where nothing is rejected): then r = p. */
int tl_spec_residual(const float *p, const float *q, int V, float *r);
/* The token a uniform u in [0, 1) picks from weights w[V] (>= 0, not all 0;
 * need not sum to 1): the smallest i with w[0] + ... + w[i] > u * sum(w),
 * zero-weight tokens never. */
int tl_spec_draw(const float *w, int V, double u);
/* Verifies k proposals draft[0..k): p [k+1, V] are the target's distributions
 * after the context + draft[0..i) (row k: after all of them), q [k, V] the
 * draft's ones that draft[i] was drawn from.  Returns the number a of accepted
 * proposals (0..k) and sets *next to the token that follows them (resampled
 * from the residual, or the bonus from p[k] when a == k).  Uniforms from rng;
 * scratch holds V floats. */
int tl_spec_verify(const float *p, const float *q, const int *draft, int k, int V, tl_rng *rng, float *scratch,
                   int *next);

/* ---- a single-sequence decoder with a draft (generate.h's loop drives it) ---- */

typedef struct {
    tl_infer_state *draft; /* the draft's session (borrowed) */
    tl_sampler dsp;        /* the draft's distributions (the target sampler's settings; its rng unused) */
    int k;                 /* proposals per step */
    int V;
    float *p, *q;          /* [k+1, V], [k, V] distributions */
    float *logits;         /* [k+1, V] the target's verification logits */
    float *dlogits;        /* [V] a copy of the draft's logits (the penalty writes into it) */
    int *hist;             /* the history with the proposals appended */
    int hist_cap;
    long proposed, accepted; /* proposals made and kept so far */
    int steps;               /* target verification passes */
} tl_spec;

/* Checks that the models share the vocabulary (same size; same pieces when both
 * have a tokenizer), naming draft_name otherwise. */
int tl_spec_check_vocab(const tl_infer_model *target, const tl_infer_model *draft, const char *draft_name,
                        tl_error *err);
/* draft is borrowed and must belong to a model that passes tl_spec_check_vocab;
 * so are the sampler settings (those of the target's sampler). */
int tl_spec_init(tl_spec *sp, tl_infer_state *draft, const tl_sampler_opts *so, int k, tl_error *err);
void tl_spec_free(tl_spec *sp);
/* New sampler settings for the draft's distributions (a server's next request). */
void tl_spec_set_sampling(tl_spec *sp, const tl_sampler_opts *so);

/* One step.  hist[0..n) is the context; the target's cache s holds hist[0..n-1)
 * (the last token is run here), the draft's cache a prefix of hist (what it
 * lacks is run first).  Proposes up to max_new - 1 tokens (fewer where either
 * cache lacks room; none when the draft cannot be used), verifies them with
 * the target, writes the a accepted ones plus the next token to out (returns
 * their number, 1..k+1) and leaves the target's cache holding hist[0..n) and
 * the a accepted tokens, the draft's at most that.  Uniforms from rng (the
 * target sampler's; tsp gives p).  -1 on an error (err). */
int tl_spec_step(tl_spec *sp, tl_infer_state *s, tl_sampler *tsp, const int *hist, int n, int max_new, int *out,
                 tl_error *err);

#endif

/* sampler.h - choosing the next token from logits: greedy, or sampling with
 * temperature, top-k, top-p (nucleus) and min-p, after an optional repetition
 * penalty.  The order follows transformers' generate: repetition penalty ->
 * temperature -> top-k -> top-p -> min-p -> draw.  Seeded (src/core/rng.h), so a
 * seed reproduces a generation exactly. */
#ifndef TL_SAMPLER_H
#define TL_SAMPLER_H

#include <stdint.h>

#include "common.h"
#include "rng.h"

typedef struct {
    float temperature;        /* 0: greedy (argmax) */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off; > 1 discourages tokens already in the context (HF/CTRL style) */
} tl_sampler_opts;

/* temperature 0 (greedy), no filters. */
void tl_sampler_default_opts(tl_sampler_opts *o);
/* Checks ranges (temperature >= 0, top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, penalty > 0). */
int tl_sampler_check_opts(const tl_sampler_opts *o, tl_error *err);

typedef struct {
    tl_sampler_opts o;
    int vocab;
    tl_rng rng;
    float *probs; /* [vocab] */
    int *idx, *tmp; /* [vocab] candidate ids, sort scratch */
    float *dense;   /* [vocab] the distribution of the last draw */
    unsigned char *seen; /* [vocab] repetition-penalty marks */
} tl_sampler;

int tl_sampler_init(tl_sampler *s, const tl_sampler_opts *o, int vocab, uint64_t seed, tl_error *err);
void tl_sampler_free(tl_sampler *s);

/* Applies the repetition penalty for the ids in history (in place on logits):
 * a penalised logit l becomes l / penalty if l > 0, else l * penalty. */
void tl_sampler_penalize(const tl_sampler *s, float *logits, const int *history, int n_history);

/* The distribution the sampler draws from, after the penalty and every filter
 * (filtered-out tokens get probability 0; the rest sum to 1).  In greedy mode
 * it is one-hot on the argmax.  logits are modified (penalty applied). */
void tl_sampler_probs(tl_sampler *s, float *logits, const int *history, int n_history, float *probs);

/* Picks the next token (logits are modified).  Greedy ties go to the lowest id. */
int tl_sampler_sample(tl_sampler *s, float *logits, const int *history, int n_history);

#endif

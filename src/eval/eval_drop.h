/* eval_drop.h - DROP scored as lm-evaluation-harness's drop task scores it
 * (the official DROP evaluation: answer normalisation, bag-of-words F1 with a
 * number check and an optimal span alignment, exact match of span sets), and
 * Python's random.Random(seed).sample, which picks each question's shots. */
#ifndef TL_EVAL_DROP_H
#define TL_EVAL_DROP_H

#include <stdint.h>

#include "common.h"

/* A gold answer: its spans (a number or a date is one span). */
typedef struct {
    int n;
    char **spans;
} tl_drop_answer;

/* The official normalisation of one span (malloc'ed; NULL when out of memory). */
char *tl_drop_normalize(const char *s);
/* get_metrics(predicted spans, gold spans): exact match and F1 (rounded to 2
 * places as the harness rounds).  -1 when out of memory. */
int tl_drop_metrics(const char *const *pred, int n_pred, const char *const *gold, int n_gold, double *em,
                    double *f1);
/* process_results: the maxima over the gold answers whose first span is not
 * blank, for the one predicted string. */
int tl_drop_score(const char *pred, const tl_drop_answer *gold, int n_gold, double *em, double *f1);

/* Python's random.Random (MT19937, seeded from a non-negative integer). */
typedef struct {
    uint32_t mt[624];
    int idx;
} tl_pyrandom;
void tl_pyrandom_seed(tl_pyrandom *r, uint32_t seed);
uint32_t tl_pyrandom_u32(tl_pyrandom *r);
/* random.sample(range(n), k) into out[k]; 0 <= k <= n; -1 when out of memory. */
int tl_pyrandom_sample(tl_pyrandom *r, int n, int k, int *out);

#endif

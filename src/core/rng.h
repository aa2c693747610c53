/* rng.h - a small seedable PRNG (xoshiro256**) with normal samples.
 * State is explicit (no globals) so it can be saved in a training checkpoint. */
#ifndef TL_RNG_H
#define TL_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} tl_rng;

void tl_rng_seed(tl_rng *r, uint64_t seed);
uint64_t tl_rng_u64(tl_rng *r);
/* Uniform in [0, n) without modulo bias. */
uint64_t tl_rng_below(tl_rng *r, uint64_t n);
/* Uniform double in [0, 1). */
double tl_rng_uniform(tl_rng *r);
/* Standard normal (Box-Muller). */
double tl_rng_normal(tl_rng *r);

#endif

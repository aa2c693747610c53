/* mixture.h - a training stream mixed from several named token-shard sources.
 *
 * Each source is a tl_dataset (its own shards, its own seeded shuffle per
 * epoch, wrapping around independently) with a sampling weight; weights may
 * move linearly from a start value to a final value over the first `ramp`
 * draws (TinyLlama v1.1 ramped a new domain in over its first 6B tokens).
 *
 * Which source each draw reads is decided without replaying anything: source s
 * has its i-th sample "due" at the time its cumulative weight W_s(t) reaches
 * i + u (u a seeded pseudo-random offset in (0, 1)), and draw g is the g-th due
 * sample overall (ties by source order).  Counting due samples up to a time is
 * a closed formula in exact integer arithmetic, so draw g is located by a short
 * binary search: O(1) in the training progress.  Consequences:
 *   - deterministic given the seed; any position is reached in O(1) (resume);
 *   - every prefix of n draws holds n * (weight) samples of each source, within
 *     +-2 (much tighter than independent random choices, with the same mean);
 *   - draws g -> (source, i-th sample of that source) is a bijection, and data
 *     parallel rank r of N takes draws r, r+N, r+2N, ...: no two ranks read the
 *     same sample of a source epoch. */
#ifndef TL_MIXTURE_H
#define TL_MIXTURE_H

#include <stdint.h>

#include "common.h"
#include "data.h"

#define TL_MIX_MAX_SOURCES 16

typedef struct {
    char name[64];
    tl_dataset ds;
    double weight, start_weight; /* as given (normalized when the mixture is finished) */
    uint32_t w0, w1;             /* start and final weight, fixed point: all sources sum to 2^24 */
    uint64_t key;                /* seeds the due-time offsets and the shuffle */
    uint64_t offset;             /* samples of this source read before the mixture starts (a later phase of
                                  * a run continues a source where an earlier one left it); set after finish */
} tl_mix_source;

typedef struct {
    int n;
    tl_mix_source src[TL_MIX_MAX_SOURCES];
    uint64_t seed;
    int shuffle;
    int rank, world;
    uint64_t ramp;     /* global draws over which weights move from start to final (0: final from the start) */
    int seq_len;       /* shortest of the sources */
    int vocab_size;    /* largest of the sources */
    int finished;
    tl_dataset_opts open_opts; /* how sources open (tl_dataset_open_ex); zero after init */
    /* position: draws made by this rank */
    uint64_t pos;
    int *buf;
} tl_mixture;

void tl_mixture_init(tl_mixture *m);
/* Adds a source from shard paths (files, directories, globs, as tl_dataset_open_ex
 * with m->open_opts).
 * start_weight < 0: same as weight. */
int tl_mixture_add(tl_mixture *m, const char *name, double weight, double start_weight, const char *const *paths,
                   int n_paths, tl_error *err);
/* Normalizes the weights and fixes the order; must precede seek/next.  Fails
 * when the sources' manifests name different tokenizers. */
int tl_mixture_finish(tl_mixture *m, uint64_t seed, int shuffle, int rank, int world, uint64_t ramp_draws,
                      tl_error *err);
void tl_mixture_close(tl_mixture *m);

int tl_mixture_seek(tl_mixture *m, uint64_t pos, tl_error *err);
/* Fills B samples of T+1 tokens and advances; sources (may be NULL) gets the
 * source index of each. */
int tl_mixture_next(tl_mixture *m, int B, int T, int *tokens, int *sources, tl_error *err);
/* Global draw g: which source, and the how-manieth sample of that source (epoch = i / its size),
 * not counting its offset. */
void tl_mixture_locate(const tl_mixture *m, uint64_t g, int *source, uint64_t *i);
/* How many of the first g global draws read source s (exact). */
uint64_t tl_mixture_count(const tl_mixture *m, int s, uint64_t g);
/* Weight of source s at global draw g (normalized, for logs). */
double tl_mixture_weight_at(const tl_mixture *m, int s, uint64_t g);
/* Expected number of draws of source s among the first g (exact cumulative weight). */
double tl_mixture_expected(const tl_mixture *m, int s, uint64_t g);
/* The settings that decide the stream, as a JSON object text (malloc'ed). */
char *tl_mixture_describe(const tl_mixture *m);

/* TinyLlama's weights for known source names (slimpajama 0.693584, starcoder
 * 0.306416); -1 if the name is not known. */
double tl_mixture_default_weight(const char *name);

#endif

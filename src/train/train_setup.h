/* train_setup.h - turns what a user asked for (a global batch in tokens, a
 * number of steps, optimizer settings, options left out) into the options of
 * the training loop (train.h).  Every training default lives here or in
 * tl_adamw_defaults (optimizer.h), so the CLI and any other front end agree. */
#ifndef TL_TRAIN_SETUP_H
#define TL_TRAIN_SETUP_H

#include "train.h"

/* A training request; -1 means "not given: use the default". */
typedef struct {
    long batch;        /* sequences per micro-batch (default 8) */
    long seq_len;      /* tokens per sequence; resolved by the caller from the data before tl_train_setup */
    long batch_tokens; /* the global batch in tokens (0: one micro-batch per rank per step) */
    int world;         /* ranks of the job (default 1) */
    long steps;        /* optimizer steps (default 1000) */
    long warmup;       /* -1: min(tl_adamw_defaults().warmup_steps (2000), steps / 10) */
    long decay_steps;  /* -1: steps */
    tl_adamw_config opt; /* lr, betas, eps, weight decay, clip (tl_adamw_defaults); its
                          * warmup_steps / decay_steps are replaced by the two above */
    uint64_t seed;     /* default 3407, TinyLlama's */
    int sequential;    /* read samples in file order instead of a seeded shuffle */
    int has_val;       /* validation data is given */
    long eval_every;   /* -1: 100 with validation data; always 0 without */
    long eval_batches; /* default 8 */
    long ckpt_every;   /* default 0: only at the end */
    long keep;         /* default 3 (0 keeps all) */
    long bench_every;  /* -1: eval_every as given when > 0, else 100 */
    double spike_z;    /* loss spikes (train.h): default 0, off */
    long spike_window; /* default 100 */
    long max_skips;    /* default 0: never stop */
} tl_train_request;

tl_train_request tl_train_request_defaults(void);

/* Checks what can be checked before the data is open: the optimizer settings and
 * the schedule once its defaults are applied.  On error *field (when not NULL)
 * names the bad request field ("lr", "min_lr", "beta1", "beta2", "eps",
 * "weight_decay", "clip", "warmup", "decay_steps"), so a caller can name its option. */
int tl_train_request_check(const tl_train_request *rq, const char **field, tl_error *err);

/* Fills the numeric fields of *o from rq (the pointers, engine and distributed
 * fields are left as they are): accumulation = batch_tokens / (world x batch x
 * seq_len), which must divide exactly (field "batch_tokens"), warmup, decay and
 * the validation and benchmark cadence.  Runs tl_train_request_check first. */
int tl_train_setup(const tl_train_request *rq, tl_train_opts *o, const char **field, tl_error *err);

#endif

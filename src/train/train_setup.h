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

/* The model a run trains. */
typedef struct {
    const char *resume_dir;      /* a checkpoint to continue, its model (NULL or "": none) */
    const char *init;            /* else an HF checkpoint to start from (continual pretraining) */
    const char *preset, *config; /* else a new model from a preset or a config.json (neither: preset "demo");
                                  * with resume_dir they must describe the checkpoint's model */
    long vocab_size;             /* > 0: a new model's vocabulary; a checkpoint's must be this */
    uint64_t seed;               /* a new model's initial weights */
} tl_train_model_request;

/* Loads or creates the model of rq into *m.  Returns 0; 1 when rq contradicts
 * the checkpoint (nothing is kept; *field is "preset", "config" or "vocab_size"
 * and err says how: the first difference, the checkpoint's value first,
 * "hidden_size 64 vs 128", or "the checkpoint's 32000"); -1 on an error (err). */
int tl_train_model_open(tl_model *m, const tl_train_model_request *rq, const char **field, tl_error *err);

/* ---- the data of a run ---- */
typedef struct {
    const char *name;
    double weight, start; /* start < 0: the final weight from the start */
    const char *path;     /* as a --data path */
} tl_train_source;

typedef struct {
    const char *const *data; /* training shards: files, globs, directories (their train-*.bin) */
    int n_data;
    const tl_train_source *sources; /* or a mixture of named sources (data unused) */
    int n_sources;
    const char *const *val;  /* validation shards; a directory means its val-*.bin */
    int n_val;
    long ramp_tokens;        /* a mixture's move from start to final weights, in training tokens */
    const tl_data_tokenizer *tokenizer; /* the one the data must be prepared with; NULL: any (one for all) */
    int phases;              /* a recipe's phases bring the training data (tl_recipe_open): only val is opened */
} tl_train_data_request;

typedef struct {
    tl_dataset train;  /* without a mixture */
    tl_mixture mix;    /* with sources */
    tl_dataset val;    /* with validation shards */
    int mixture, has_val;
    int seq_len;       /* the samples' length (a mixture: its shortest source's) */
    int train_open;
} tl_train_data;

/* Opens the data of a run: every shard must be listed in a complete `prepare`
 * manifest, and all were prepared with one tokenizer (r->tokenizer when given).
 * A mixture is finished for this rank with rq's seed, order, ranks and sequence
 * length (0: the shortest source's, at most max_seq_len).  On failure nothing
 * stays open. */
int tl_train_data_open(tl_train_data *d, const tl_train_data_request *r, const tl_train_request *rq, int rank,
                       long max_seq_len, tl_error *err);
void tl_train_data_close(tl_train_data *d);

/* The identity of the tokenizer file a run's data was prepared with (for
 * tl_train_data_request.tokenizer).  Returns 0; 1 when its pieces do not fit a
 * model vocabulary of vocab_size (err says so); -1 when it cannot be loaded. */
int tl_train_tokenizer_identify(const char *path, int vocab_size, tl_data_tokenizer *id, tl_error *err);

/* A zero-shot benchmark scored during training (task by name, e.g. "piqa"; labels:
 * piqa's label file, else NULL): its first limit examples (0: all), tokenized as
 * lm-evaluation-harness does with an HF tokenizer, as the scores are compared with it. */
tl_eval_task *tl_train_bench_load(const char *task, const char *data, const char *labels, long limit,
                                  const tl_tokenizer *tok, tl_error *err);

/* The engine a run steps on: device by name, NULL for tl_engine_default() (a
 * GPU when there is one), with eo (borrowed until the run ends).  Sets o's engine
 * fields and returns the kind; NULL when this build has no such engine. */
const tl_engine_kind *tl_train_use_engine(tl_train_opts *o, const char *device, const tl_engine_opts *eo);

/* How many threads a run uses. */
typedef enum {
    TL_THREADS_GIVEN,      /* *n: the count asked for, or the resumed checkpoint's */
    TL_THREADS_FREE_CORES, /* one process: the cores other processes leave free (threads.h) */
    TL_THREADS_ALL,        /* a rank of a job: every core, as the launcher placed it */
} tl_threads_rule;
/* requested > 0 wins; a resumed run (resume_dir, else NULL or "") keeps the
 * count its checkpoint was written with, since the rounding, and so the
 * bit-identity with an uninterrupted run, depends on it. */
tl_threads_rule tl_train_threads(long requested, const char *resume_dir, int world, long *n);

/* The tokens per training sequence: requested when > 0, else the data's,
 * at most the model's context. */
long tl_train_seq_len(long requested, long data_seq_len, long max_seq_len);

/* A mixture's ramp (ramp_tokens of training) in samples of the length training
 * reads: seq_len as asked (0: the shortest source's), at most the model's context. */
uint64_t tl_train_ramp_samples(long ramp_tokens, long seq_len, long shortest_source, long max_seq_len);

#endif

/* recipe.h - a training recipe file (YAML): the model, the optimizer, the
 * learning-rate schedule in tokens and a list of phases, each with its length
 * and global batch in tokens and its data mixture, run as one training run.
 * docs/training.md describes the keys.
 *
 * A recipe fills a tl_train_request (train_setup.h) before the command line is
 * applied, so every option still overrides it; tl_recipe_setup then turns the
 * phases into the trainer's (steps, accumulation, one mixture each). */
#ifndef TL_RECIPE_H
#define TL_RECIPE_H

#include "mixture.h"
#include "train.h"
#include "train_setup.h"

#define TL_RECIPE_MAX_PHASES 16
#define TL_RECIPE_MAX_VAL_SETS 8 /* as many as `tinyllama plot` draws */

typedef struct {
    char name[64];
    char path[1024];
    double weight, start_weight; /* start_weight < 0: weight from the start */
} tl_recipe_source;

typedef struct {
    char name[64];
    double tokens;       /* length of the phase */
    double batch_tokens; /* its global batch; 0: the previous phase's */
    double ramp_tokens;  /* the sources move from start_weight to weight over this many tokens */
    double lr;           /* > 0: a constant learning rate in this phase instead of the schedule */
    int n_sources;       /* 0: the previous phase's sources at their final weights */
    tl_recipe_source src[TL_MIX_MAX_SOURCES];
    int line;            /* where it starts in the file (1-based) */
} tl_recipe_phase;

typedef struct {
    char file[1024];
    char preset[64], config[1024], init[1024]; /* the model (at most one given) */
    long vocab_size;                           /* 0: the model's */
    tl_lr_schedule sched;                      /* decay 0: the end of the last phase */
    int warmup_given;                          /* sched.warmup was given */
    int n_phases;
    tl_recipe_phase phase[TL_RECIPE_MAX_PHASES];
    /* validation sets, one per domain, from the validation list, the phases and the
     * sources: all evaluated at every eval_every from the first step, logged apart */
    int n_val;
    struct {
        char name[64], path[1024];
        char key[400]; /* where the file names it, for messages */
        int line;
    } val[TL_RECIPE_MAX_VAL_SETS];
} tl_recipe;

/* Parses recipe text (file names it in messages) into r, and writes the request
 * settings it holds (micro-batch, sequence length, seed, optimizer) into rq,
 * leaving the others as they are; rq->steps becomes 0 ("the phases'").  Errors
 * name the file, the line and the key: unknown keys, wrong types, negative
 * lengths, weights that do not sum to a positive number. */
int tl_recipe_parse(const char *text, size_t len, const char *file, tl_recipe *r, tl_train_request *rq, tl_error *err);
int tl_recipe_load(const char *path, tl_recipe *r, tl_train_request *rq, tl_error *err);

/* The phases of a run, ready for the trainer (train.h's tl_train_phase) */
typedef struct {
    int n;
    tl_train_phase phase[TL_RECIPE_MAX_PHASES];
    tl_mixture mix[TL_RECIPE_MAX_PHASES];
    int n_val; /* the validation sets, opened (their shards as a `prepare` directory's val-*.bin) */
    tl_dataset val[TL_RECIPE_MAX_VAL_SETS];
    tl_dataset *val_ptr[TL_RECIPE_MAX_VAL_SETS];
    const char *val_name[TL_RECIPE_MAX_VAL_SETS];
} tl_recipe_run;

/* Opens every phase's sources (shards as tl_dataset_open_ex with open_opts),
 * resolves accumulation per phase (its batch_tokens over world x batch x seq_len,
 * exactly), steps per phase (its tokens over its batch, rounded up) and the
 * schedule, and fills o as tl_train_setup does plus its phases.  rq->steps > 0
 * (given on the command line) stops the run early; rq->batch_tokens > 0 replaces
 * every phase's batch; rq->warmup / decay_steps >= 0 are steps of the first phase's
 * batch.  Every error names the file, the phase and the key.  run must stay alive
 * and in place while the trainer uses it; tl_recipe_run_close frees it. */
/* The check of tl_recipe_setup that needs no data and no model: every phase's global
 * batch must be a multiple of ranks (rq->world) x micro-batch x sequence length (x 1
 * while rq->seq_len is still 0, the model's), so a batch the rank count does not
 * divide is refused before anything is built.  The error names the file, line,
 * phase and key. */
int tl_recipe_check_batch(const tl_recipe *r, const tl_train_request *rq, tl_error *err);
int tl_recipe_setup(const tl_recipe *r, const tl_train_request *rq, const tl_dataset_opts *open_opts, int rank,
                    tl_recipe_run *run, tl_train_opts *o, const char **field, tl_error *err);
void tl_recipe_run_close(tl_recipe_run *run);

/* tl_recipe_setup for a run whose other data d holds (tl_train_data_open with
 * phases set: its validation shards): every phase's sources must be prepared with
 * tokenizer (NULL: any, one for all) and d's validation shards' tokenizer.  On
 * failure nothing of run stays open. */
int tl_recipe_open(const tl_recipe *r, const tl_train_request *rq, const tl_train_data *d,
                   const tl_data_tokenizer *tokenizer, int rank, tl_recipe_run *run, tl_train_opts *o,
                   const char **field, tl_error *err);

#endif

/* train.h - the pretraining loop: gradient accumulation to a global batch in
 * tokens, AdamW with warmup + cosine, clipping, validation, JSONL logging and
 * atomic checkpoints with exact resume. */
#ifndef TL_TRAIN_H
#define TL_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "checkpoint.h"
#include "data.h"
#include "distributed.h"
#include "engine.h"
#include "eval.h"
#include "mixture.h"
#include "model.h"
#include "optimizer.h"

/* One phase of a run (recipe.h makes them): its steps, its accumulation (the
 * global batch may grow at a phase boundary) and its data. */
typedef struct {
    const char *name;
    long steps;          /* optimizer steps of the phase */
    int accum;           /* micro-batches per rank per step */
    tl_mixture *mixture; /* finished with this rank / world */
    double lr;           /* > 0: a constant learning rate instead of the schedule */
} tl_train_phase;

typedef struct {
    int batch;          /* sequences per micro-batch */
    int seq_len;        /* tokens per sequence (<= shard seq_len) */
    int accum;          /* micro-batches per optimizer step */
    long steps;         /* total optimizer steps */
    tl_adamw_config opt;
    /* the learning rate by tokens seen; by_tokens 0: warmup + cosine from opt's
     * warmup_steps / decay_steps times the (fixed) global batch */
    tl_lr_schedule sched;
    int by_tokens;
    uint64_t seed;      /* data order (weights are seeded by the caller) */
    int shuffle;        /* 0: file order, for step-by-step comparisons */
    long eval_every;    /* 0: never */
    int eval_batches;
    long ckpt_every;    /* 0: only at the end */
    int keep;           /* checkpoints of this run kept (0: all); other runs' are never removed */
    int overwrite;      /* a new run may start in an out_dir that holds another run */
    const char *out_dir;
    const char *log_path; /* JSONL; NULL: out_dir/log.jsonl */
    const char *tokenizer; /* copied into each checkpoint (may be NULL) */
    /* zero-shot benchmarks (src/eval/eval.h) scored every bench_every steps and at the end */
    const tl_eval_task *const *bench;
    int n_bench;
    long bench_every;
    /* supervised fine-tuning (docs/finetuning.md): train (and val) are masked chat
     * shards and the loss is the mean over the target tokens of the whole step's
     * batch, every rank's micro-batches weighted by their counts of targets; the
     * sequence length must be the shards' */
    int sft;
    /* DPO (docs/finetuning.md): train (and val) are preference pairs (prepare --format
     * preference); batch counts pairs (the engine runs 2 x batch sequences) and seq_len
     * is a conversation's.  The reference is the starting model: its log-probabilities
     * of every pair are computed once before the first step and kept in
     * out_dir/dpo_reference.bin (a resume reads them from there).  dpo_ipo: the IPO loss
     * on mean log-probabilities instead of the sigmoid loss. */
    int dpo, dpo_ipo;
    double dpo_beta;
    tl_engine_factory engine; /* NULL: the CPU engine */
    void *engine_user;
    /* mixture: if set (finished, see mixture.h), training samples come from it
     * instead of the train dataset (which may then be NULL); its position is
     * saved as data_index (data_epoch 0) */
    tl_mixture *mixture;
    /* ---- distributed (docs/distributed.md) ----
     * comm: the job's ranks (NULL: one process).  With N ranks each reads a
     * disjoint 1/N of every step's samples (rank r takes global samples r, r+N,
     * ...; a mixture must be finished with the same rank/world), so N ranks with
     * accum a see the samples of 1 rank with accum N*a.  zero: ZeRO stage 0-3
     * (1: AdamW moments sharded; 2: also gradients reduce-scattered; 3: also
     * parameters sharded, gathered before use).  The step is the same loop for
     * every engine and rank count (src/train/engine.h); the CUDA engine takes stage 0
     * only, summing gradients on the host.  Stages 2-3 keep only the rank's
     * slice of the gradient plus per-unit buckets (src/dist/grad_shard.h), reduced after
     * each unit's backward; overlap: on a communication thread, while the next unit
     * computes (needs a comm made with tl_comm_create_ex(..., threads = 1)). */
    tl_comm *comm;
    int zero;
    int overlap;
    /* ---- end distributed ---- */
    /* phases: if n_phases > 0 the run is their sequence (accum and mixture are the
     * phases'; steps may stop it earlier than their sum); the data position saved
     * is the position in the phase of the next step */
    const tl_train_phase *phases;
    int n_phases;
    /* named validation sets (a recipe's, one per domain), each evaluated as val at
     * every eval_every and logged on its own ({"val_set": name, "val_loss": ...}) */
    /* loss spikes: a step whose loss is more than spike_z standard deviations above the
     * mean of the last spike_window updated steps' (0: 100) is skipped like a non-finite
     * one; max_skips > 0 stops the run after that many skipped steps in a row, naming
     * the step and the last good checkpoint.  spike_z 0: no spike detection. */
    double spike_z;
    int spike_window, max_skips;
    tl_dataset *const *val_sets;
    const char *const *val_names;
    int n_val_sets;
} tl_train_opts;

/* TL_EV_WARN: something the user should know that does not stop the run (path
 * holds the message): a resume that cannot be bit-identical, a failed log write. */
typedef enum { TL_EV_STEP, TL_EV_EVAL, TL_EV_CKPT, TL_EV_SKIP, TL_EV_BENCH, TL_EV_WARN } tl_event_kind;

typedef struct {
    tl_event_kind kind;
    long step, steps;
    double loss, lr, grad_norm, tokens_per_s, elapsed, eta;
    double tokens, batch_tokens; /* TL_EV_STEP: tokens seen, the step's global batch */
    const char *phase;           /* TL_EV_STEP: the phase's name (NULL without phases) */
    double val_loss;
    const char *path; /* checkpoint written; TL_EV_WARN: the message */
    const char *task; /* TL_EV_BENCH: task name, n docs, acc, acc_norm (NAN if none) */
    int n;
    double acc, acc_norm;
} tl_train_event;

typedef void (*tl_train_cb)(const tl_train_event *ev, void *user);

/* ---- DPO's loss (the trainer's, public for tests and tools) ----
 * n_pairs pairs as 2 x n_pairs sequences of T rows (pair b: sequence 2b chosen,
 * 2b+1 rejected); row_loss and targets of those rows (a target < 0 is not part of
 * the reply).  A sequence's log-prob is minus the sum of its reply's row losses;
 * ref[2b], ref[2b+1] the reference's.  With the log-ratios rc, rr (policy minus
 * reference), adds to *st the sums over the pairs of the loss (sigmoid: -log
 * sigmoid(beta (rc - rr)); IPO, as TRL: (rc/n_c - rr/n_r - 1/(2 beta))^2 with the
 * replies' token counts), the rewards beta x (logp - ref) of chosen and rejected, the
 * pairs whose chosen reward is higher, and the reward margins.  row_weight (may
 * be NULL): each row's d(loss x scale)/d(row loss), for the backward. */
typedef struct {
    double loss, chosen, rejected, acc, margin, n;
} tl_dpo_stats;
void tl_dpo_pairs(const float *row_loss, const int *targets, int n_pairs, int T, const double *ref, double beta,
                  int ipo, double scale, float *row_weight, tl_dpo_stats *st);

typedef struct tl_trainer tl_trainer;

/* The trainer borrows model and datasets (val may be NULL; train may be NULL
 * with opts->mixture). */
tl_trainer *tl_trainer_create(tl_model *m, tl_dataset *train, tl_dataset *val, const tl_train_opts *o,
                              tl_error *err);
void tl_trainer_free(tl_trainer *t);
/* Restores weights, optimizer state and data position from a checkpoint (and its
 * run_id, so the run's own checkpoints are the ones pruned). */
int tl_trainer_resume(tl_trainer *t, const char *ckpt_dir, tl_error *err);
long tl_trainer_step(const tl_trainer *t);
/* Runs until opts.steps or *stop becomes non-zero (then checkpoints and returns).
 * Refuses to start a new (not resumed) run in an out_dir that holds another run
 * unless opts.overwrite.  Log lines that could not be written make it fail at the end. */
int tl_trainer_run(tl_trainer *t, tl_train_cb cb, void *user, volatile sig_atomic_t *stop, tl_error *err);
/* Mean validation loss over the first opts.eval_batches micro-batches of val,
 * each sample at most once (a smaller set is evaluated whole, once). */
int tl_trainer_eval(tl_trainer *t, double *loss, tl_error *err);
/* The same on another validation set. */
int tl_trainer_eval_on(tl_trainer *t, tl_dataset *val, double *loss, tl_error *err);
size_t tl_trainer_memory_bytes(const tl_trainer *t);

#endif

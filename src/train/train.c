/* train.c - the training loop. */
#include "train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "tfevents.h"

struct tl_trainer {
    tl_model *m;
    tl_dataset *train, *val;
    tl_train_opts o;
    tl_engine *eng;
    tl_train_state st;
    int *tokens, *inputs, *targets;
    /* sft: the step's micro-batches, read before the first forward (their target counts
     * weight them), as tokens with masks and as inputs/targets */
    int *sft_tokens, *sft_inputs, *sft_targets;
    uint8_t *sft_mask;
    long *sft_count;
    /* dpo: a micro-batch of pairs as 2 x batch sequences, per-row losses and weights,
     * the pairs' sample numbers, and the reference log-probs [2 per sample] */
    int *dpo_tokens, *dpo_in, *dpo_tg;
    uint8_t *dpo_mask;
    float *dpo_rl, *dpo_rw;
    uint64_t *dpo_idx;
    double *ref, *vref;
    char log_path[4096];
    int log_fd;          /* -1: not open (ranks other than 0) */
    char *log_pending;   /* lines not yet written (a failed write is retried) */
    size_t log_len, log_cap;
    int log_failing;     /* the last write failed (warned once until it recovers) */
    tl_tfevents tb;      /* TensorBoard's copy of the scalars (fd -1: none; a failure warns and stops it) */
    char run_id[40];     /* names this run's checkpoints (kept across resumes) */
    char session[40];    /* names this process's checkpoints (pruning after a resume: tl_checkpoint_save) */
    long resumed_from;   /* the step of the checkpoint resumed from (0: a new run) */
    int resumed;
    char warning[1300];  /* reported as TL_EV_WARN when the run starts */
    /* ---- the job's ranks (docs/distributed.md); one process is a job of one ---- */
    tl_comm *comm;     /* the job's ranks (a single-rank one when the options had none) */
    tl_comm *own_comm; /* created here: freed with the trainer */
    int rank, world, zero;
    size_t lo, hi;     /* this rank's shard of the flat parameter block (stages 1-3: of the moments) */
    uint64_t dpos;     /* samples this rank has read (strided dataset reading, world > 1) */
    tl_lr_schedule sched; /* in tokens (resolved from steps when the options give steps) */
    /* ---- phases: the one of the next step, and the mixture it reads ---- */
    int phase;
    tl_mixture *mix;
    int *src_of;        /* the source of each sample of a micro-batch (mixtures) */
    /* ---- loss spikes: the recent losses, skips in a row (both saved in train_args.json) ---- */
    tl_loss_window lw;
    int skips_in_a_row;
    char last_ckpt[4200]; /* the newest checkpoint written or resumed from */
    double mix_count[TL_MIX_MAX_SOURCES]; /* samples of each source in this step (logged) */
};

/* The phase of 0-based step `step` (the last one past their end). */
static int phase_of(const tl_train_opts *o, long step) {
    int p = 0;
    for (long end = 0; p < o->n_phases; p++) {
        end += o->phases[p].steps;
        if (step < end) break;
    }
    return p < o->n_phases ? p : o->n_phases - 1;
}

static void set_phase(tl_trainer *t) {
    if (!t->o.n_phases) {
        t->mix = t->o.mixture;
        return;
    }
    t->phase = phase_of(&t->o, (long)t->st.step);
    t->mix = t->o.phases[t->phase].mixture;
}

/* Global tokens of step `step` (0-based). */
static double step_tokens(const tl_trainer *t, long step) {
    int accum = t->o.n_phases ? t->o.phases[phase_of(&t->o, step)].accum : t->o.accum;
    return (double)t->o.batch * t->o.seq_len * accum * t->world * (t->o.dpo ? 2 : 1); /* a DPO pair: 2 sequences */
}

/* The job: ranks, stage and this rank's shard (decided before anything is allocated). */
static int job_setup(tl_trainer *t, tl_error *err) {
    const tl_train_opts *o = &t->o;
    t->comm = o->comm;
    if (!t->comm) {
        t->comm = t->own_comm = tl_comm_single();
        if (!t->comm) return tl_fail(err, "out of memory");
    }
    t->zero = o->zero;
    const tl_engine_job job = {.comm = t->comm, .zero = o->zero}; /* the engine gets the same place */
    if (tl_engine_job_place(&job, t->m->n_params, &t->rank, &t->world, &t->lo, &t->hi, err)) return -1;
    if (o->mixture && (o->mixture->world != t->world || o->mixture->rank != t->rank))
        return tl_fail(err, "the data mixture was set up for rank %d of %d but this is rank %d of %d", o->mixture->rank,
                       o->mixture->world, t->rank, t->world);
    for (int p = 0; p < o->n_phases; p++) {
        const tl_mixture *x = o->phases[p].mixture;
        if (x->world != t->world || x->rank != t->rank)
            return tl_fail(err, "phase %s: its data mixture was set up for rank %d of %d but this is rank %d of %d",
                           o->phases[p].name, x->rank, x->world, t->rank, t->world);
    }
    return 0;
}

tl_trainer *tl_trainer_create(tl_model *m, tl_dataset *train, tl_dataset *val, const tl_train_opts *o,
                              tl_error *err) {
    if (o->batch < 1 || o->seq_len < 1 || o->accum < 1 || o->steps < 1) {
        tl_fail(err, "batch, sequence length, accumulation and steps must be positive");
        return NULL;
    }
    for (int p = 0; p < o->n_phases; p++) { /* phases: each checked as a mixture */
        const tl_train_phase *ph = &o->phases[p];
        if (ph->steps < 1 || ph->accum < 1 || !ph->mixture || !ph->mixture->finished) {
            tl_fail(err, "phase %s: steps and accumulation must be positive, its mixture finished", ph->name);
            return NULL;
        }
        if (o->seq_len > ph->mixture->seq_len) {
            tl_fail(err, "phase %s: sequence length %d is longer than its sources' %d", ph->name, o->seq_len,
                    ph->mixture->seq_len);
            return NULL;
        }
        for (int i = 0; i < ph->mixture->n; i++) {
            if (tl_dataset_check_vocab(&ph->mixture->src[i].ds, m->cfg.vocab_size, err)) return NULL;
            if (ph->mixture->src[i].ds.masked) { /* chat data or pairs: read as plain text they would train wrongly */
                tl_fail(err, "phase %s: source %s holds %s with a loss mask: recipes pretrain on plain shards", ph->name,
                        ph->mixture->src[i].name, ph->mixture->src[i].ds.pairs ? "preference pairs" : "chat data");
                return NULL;
            }
        }
    }
    if (o->n_phases && (o->sft || o->dpo)) { /* their buffers and losses assume one batch and one dataset */
        tl_fail(err, "--sft / --dpo do not run with recipe phases");
        return NULL;
    }
    /* ---- mixture (src/data/mixture.h): stands in for the train dataset ---- */
    if (o->n_phases) {
        /* checked above */
    } else if (o->mixture) {
        if (!o->mixture->finished) {
            tl_fail(err, "the data mixture is not finished");
            return NULL;
        }
        if (o->seq_len > o->mixture->seq_len) {
            tl_fail(err, "sequence length %d is longer than the mixture sources' %d", o->seq_len, o->mixture->seq_len);
            return NULL;
        }
        for (int i = 0; i < o->mixture->n; i++) {
            if (tl_dataset_check_vocab(&o->mixture->src[i].ds, m->cfg.vocab_size, err)) return NULL;
            if (o->mixture->src[i].ds.masked) { /* sft */
                tl_fail(err, "mixture source %s holds chat data with a loss mask: train on it alone with --sft",
                        o->mixture->src[i].name);
                return NULL;
            }
        }
    } else if (!train) {
        tl_fail(err, "no training data");
        return NULL;
    } else
    /* ---- end mixture ---- */
    if (o->seq_len > train->seq_len) {
        tl_fail(err, "sequence length %d is longer than the training shards' %d", o->seq_len, train->seq_len);
        return NULL;
    }
    for (int v = 0; v < o->n_val_sets; v++) {
        if (o->seq_len > o->val_sets[v]->seq_len) {
            tl_fail(err, "validation set %s: sequence length %d is longer than its shards' %d", o->val_names[v], o->seq_len,
                    o->val_sets[v]->seq_len);
            return NULL;
        }
        if (tl_dataset_check_vocab(o->val_sets[v], m->cfg.vocab_size, err)) return NULL;
    }
    if (val && o->seq_len > val->seq_len) {
        tl_fail(err, "sequence length %d is longer than the validation shards' %d", o->seq_len, val->seq_len);
        return NULL;
    }
    /* ---- sft: masked chat data, trained only with --sft ---- */
    if (o->sft && (o->mixture || !train || !train->masked)) {
        tl_fail(err, "--sft trains on chat data (prepare --format chat): %s",
                o->mixture ? "not on a --source mixture" : "the training shards hold no loss mask");
        return NULL;
    }
    if (o->sft && (o->seq_len != train->seq_len || (val && val->seq_len != train->seq_len))) {
        tl_fail(err, "--sft: the sequence length (%d) must be the chat shards' (%d%s%d): a sample is one conversation",
                o->seq_len, train->seq_len, val ? ", validation " : "", val ? val->seq_len : 0);
        return NULL;
    }
    if (o->sft && val && !val->masked) {
        tl_fail(err, "--sft: the validation shards hold no loss mask (give the chat data set's val split)");
        return NULL;
    }
    if (!o->sft && !o->dpo && ((train && train->masked && !train->pairs) || (val && val->masked && !val->pairs))) {
        tl_fail(err, "the %s shards hold chat data with a loss mask: train on them with --sft",
                train && train->masked ? "training" : "validation");
        return NULL;
    }
    if (o->dpo && (o->mixture || !train || !train->pairs || (val && !val->pairs) ||
                   o->seq_len != (train->seq_len + 1) / 2 - 1 || (val && val->seq_len != train->seq_len) || o->sft ||
                   !(o->dpo_beta > 0))) {
        tl_fail(err, "--dpo trains on preference pairs (prepare --format preference) with beta > 0, at their sequence "
                     "length (%d), not with --sft or a mixture",
                train && train->pairs ? (train->seq_len + 1) / 2 - 1 : 0);
        return NULL;
    }
    if (!o->dpo && ((train && train->pairs) || (val && val->pairs))) {
        tl_fail(err, "the shards hold preference pairs: train on them with --dpo");
        return NULL;
    }
    /* ---- end sft ---- */
    if ((train && tl_dataset_check_vocab(train, m->cfg.vocab_size, err)) ||
        (val && tl_dataset_check_vocab(val, m->cfg.vocab_size, err)))
        return NULL;
    if (tl_adamw_config_validate(&o->opt, NULL, err)) return NULL;
    if (o->by_tokens && tl_lr_schedule_validate(&o->sched, NULL, err)) return NULL;
    if (o->opt.warmup_steps < 0 || o->opt.decay_steps < o->opt.warmup_steps) {
        tl_fail(err, "decay steps (%ld) must be at least the warmup steps (%ld)", o->opt.decay_steps, o->opt.warmup_steps);
        return NULL;
    }
    tl_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    t->m = m;
    t->log_fd = -1;
    t->tb.fd = -1;
    tl_loss_window_init(&t->lw, o->spike_window > 0 ? o->spike_window : 100);
    t->train = train;
    t->val = val;
    t->o = *o;
    if (o->by_tokens) {
        t->sched = o->sched;
    } else { /* steps of a fixed global batch */
        const double tps = (double)o->batch * o->seq_len * o->accum * (o->comm ? tl_comm_world(o->comm) : 1) *
                           (o->dpo ? 2 : 1);
        t->sched = (tl_lr_schedule){.kind = TL_SCHED_COSINE, .warmup = (double)o->opt.warmup_steps * tps,
                                    .decay = (double)o->opt.decay_steps * tps};
    }
    size_t n = m->n_params, B = (size_t)o->batch, T = (size_t)o->seq_len;
    if (job_setup(t, err)) {
        tl_trainer_free(t);
        return NULL;
    }
    size_t n_opt = t->zero >= 1 ? t->hi - t->lo : n; /* ZeRO 1+ keeps only this rank's slice of the moments */
    if (n_opt == 0) n_opt = 1; /* a rank with an empty shard */
    t->st.m = tl_alloc(n_opt * sizeof(float));
    t->st.v = tl_alloc(n_opt * sizeof(float));
    t->st.n_params = n;
    t->tokens = malloc(sizeof(int) * B * (T + 1));
    t->inputs = malloc(sizeof(int) * B * T);
    t->targets = malloc(sizeof(int) * B * T);
    t->src_of = malloc(sizeof(int) * B);
    if (o->dpo) {
        const size_t R = 2 * B * T; /* rows of a micro-batch: chosen and rejected of each pair */
        t->dpo_tokens = malloc(sizeof(int) * 2 * B * (T + 1));
        t->dpo_mask = malloc(2 * B * (T + 1));
        t->dpo_in = malloc(sizeof(int) * R);
        t->dpo_tg = malloc(sizeof(int) * R);
        t->dpo_rl = malloc(sizeof(float) * R);
        t->dpo_rw = malloc(sizeof(float) * R);
        t->dpo_idx = malloc(sizeof(uint64_t) * B);
        if (!t->dpo_tokens || !t->dpo_mask || !t->dpo_in || !t->dpo_tg || !t->dpo_rl || !t->dpo_rw || !t->dpo_idx) {
            tl_fail(err, "out of memory for the DPO batch");
            tl_trainer_free(t);
            return NULL;
        }
    }
    if (o->sft) {
        const size_t A = (size_t)o->accum;
        t->sft_tokens = malloc(sizeof(int) * A * B * (T + 1));
        t->sft_mask = malloc(A * B * (T + 1));
        t->sft_inputs = malloc(sizeof(int) * A * B * T);
        t->sft_targets = malloc(sizeof(int) * A * B * T);
        t->sft_count = malloc(sizeof(long) * A);
        if (!t->sft_tokens || !t->sft_mask || !t->sft_inputs || !t->sft_targets || !t->sft_count) {
            tl_fail(err, "out of memory for the fine-tuning batch");
            tl_trainer_free(t);
            return NULL;
        }
    }
    if (!t->st.m || !t->st.v || !t->tokens || !t->inputs || !t->targets || !t->src_of) {
        tl_fail(err, "out of memory allocating training state for %zu parameters", n);
        tl_trainer_free(t);
        return NULL;
    }
    const tl_engine_job job = {.comm = t->comm, .zero = t->zero, .overlap = o->overlap};
    t->eng = (o->engine ? o->engine : tl_engine_cpu_create)(m, t->st.m, t->st.v, o->dpo ? 2 * o->batch : o->batch,
                                                            o->seq_len, &job, o->engine_user, err);
    if (!t->eng) {
        tl_trainer_free(t);
        return NULL;
    }
    if (o->dpo && (!t->eng->ops->row_losses || !t->eng->ops->forward_backward_rows)) {
        tl_fail(err, "--dpo: the %s engine has no per-sequence losses (use the CPU engine)", t->eng->ops->name);
        tl_trainer_free(t);
        return NULL;
    }
    for (int p = 0; p < o->n_phases; p++) tl_mixture_seek(o->phases[p].mixture, 0, NULL);
    set_phase(t);
    if (o->n_phases) {
    } else if (o->mixture) { /* mixture */
        tl_mixture_seek(o->mixture, 0, NULL);
    } else {
        tl_dataset_set_order(train, o->shuffle, o->seed);
        tl_dataset_seek(train, 0, 0, NULL);
    }
    tl_rng_seed(&t->st.rng, o->seed);
    /* any value unlikely to repeat: it only tells this run's checkpoints from others' */
    snprintf(t->run_id, sizeof t->run_id, "%08lx%08lx", (unsigned long)getpid(),
             (unsigned long)((uint64_t)(tl_now() * 1e6) ^ (uint64_t)(uintptr_t)t));
    snprintf(t->session, sizeof t->session, "%s", t->run_id); /* a resume takes the checkpoint's run_id only */
    if (o->log_path)
        snprintf(t->log_path, sizeof t->log_path, "%s", o->log_path);
    else
        snprintf(t->log_path, sizeof t->log_path, "%s/log.jsonl", o->out_dir);
    return t;
}

void tl_trainer_free(tl_trainer *t) {
    if (!t) return;
    if (t->log_fd >= 0) close(t->log_fd);
    tl_tfevents_close(&t->tb);
    free(t->log_pending);
    if (t->eng) t->eng->ops->free(t->eng);
    tl_free(t->st.m);
    tl_free(t->st.v);
    free(t->tokens);
    free(t->inputs);
    free(t->targets);
    free(t->src_of);
    free(t->sft_tokens);
    free(t->sft_mask);
    free(t->sft_inputs);
    free(t->sft_targets);
    free(t->sft_count);
    free(t->dpo_tokens);
    free(t->dpo_mask);
    free(t->dpo_in);
    free(t->dpo_tg);
    free(t->dpo_rl);
    free(t->dpo_rw);
    free(t->dpo_idx);
    free(t->ref);
    free(t->vref);
    tl_comm_free(t->own_comm);
    free(t);
}

long tl_trainer_step(const tl_trainer *t) { return (long)t->st.step; }

size_t tl_trainer_memory_bytes(const tl_trainer *t) {
    if (t->world > 1 || t->zero > 0) { /* the ZeRO plan (src/dist/distributed.h) with the engine's own sizes */
        tl_zero_memory z;
        tl_zero_memory_plan(&t->m->cfg, t->world, t->rank, t->zero, t->zero >= 2 && t->o.overlap && t->world > 1, &z);
        return t->eng->ops->memory_bytes(t->eng) + z.params_peak + z.opt_state + z.scratch;
    }
    return t->eng->ops->memory_bytes(t->eng) + 3 * t->m->n_params * sizeof(float);
}

/* The settings that decide which samples each step sees: a resumed run must
 * use the same ones to continue bit-identically. */
static char *args_json(const tl_trainer *t) {
    const tl_train_opts *o = &t->o;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "batch", o->batch);
    cJSON_AddNumberToObject(r, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(r, "accum", o->accum);
    cJSON_AddNumberToObject(r, "steps", (double)o->steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(r, "seed", seed);
    cJSON_AddBoolToObject(r, "shuffle", o->shuffle);
    cJSON_AddNumberToObject(r, "lr", o->opt.lr);
    cJSON_AddNumberToObject(r, "min_lr", o->opt.min_lr);
    cJSON_AddNumberToObject(r, "warmup_steps", (double)o->opt.warmup_steps);
    cJSON_AddNumberToObject(r, "decay_steps", (double)o->opt.decay_steps);
    cJSON_AddNumberToObject(r, "beta1", o->opt.beta1);
    cJSON_AddNumberToObject(r, "beta2", o->opt.beta2);
    cJSON_AddNumberToObject(r, "eps", o->opt.eps);
    cJSON_AddNumberToObject(r, "weight_decay", o->opt.weight_decay);
    cJSON_AddNumberToObject(r, "clip", o->opt.clip);
    cJSON_AddStringToObject(r, "run_id", t->run_id);
    cJSON_AddStringToObject(r, "session", t->session);
    cJSON_AddNumberToObject(r, "resumed_from", (double)t->resumed_from);
    if (o->spike_z > 0) { /* the spike detector's state, for an exact resume (oldest loss first) */
        cJSON *w = cJSON_AddArrayToObject(r, "loss_window");
        for (int i = 0; i < t->lw.n; i++) cJSON_AddItemToArray(w, cJSON_CreateNumber(t->lw.v[(t->lw.head + i) % t->lw.cap]));
        cJSON_AddNumberToObject(r, "skips_in_a_row", t->skips_in_a_row);
    }
    cJSON_AddNumberToObject(r, "threads", tl_get_threads()); /* rounding depends on it */
    /* distributed: the global batch decides the data of a step; ranks and stage do not */
    cJSON_AddNumberToObject(r, "world", t->world);
    cJSON_AddNumberToObject(r, "zero", t->zero);
    cJSON_AddNumberToObject(r, "sequences_per_step", (double)o->batch * o->accum * t->world);
    if (o->sft) cJSON_AddBoolToObject(r, "sft", 1); /* absent: pretraining (older checkpoints too) */
    if (o->dpo) {
        char d[64];
        snprintf(d, sizeof d, "%s beta=%g", o->dpo_ipo ? "ipo" : "sigmoid", o->dpo_beta);
        cJSON_AddStringToObject(r, "dpo", d);
    }
    if (o->n_phases) { /* phases: each one's length, batch and stream */
        cJSON *arr = cJSON_AddArrayToObject(r, "phases");
        double total = 0;
        for (int p = 0; p < o->n_phases; p++) {
            const tl_train_phase *ph = &o->phases[p];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", ph->name ? ph->name : "");
            cJSON_AddNumberToObject(x, "steps", (double)ph->steps);
            cJSON_AddNumberToObject(x, "accum", ph->accum);
            cJSON_AddNumberToObject(x, "lr", ph->lr);
            char *mix = tl_mixture_describe(ph->mixture);
            cJSON_AddItemToObject(x, "mixture", cJSON_Parse(mix));
            free(mix);
            cJSON_AddItemToArray(arr, x);
            for (int i = 0; i < ph->mixture->n; i++) total += (double)ph->mixture->src[i].ds.n_samples;
        }
        cJSON_AddNumberToObject(r, "train_samples", total);
    } else if (o->mixture) { /* mixture: its sources, weights and sizes decide the stream */
        char *mix = tl_mixture_describe(o->mixture);
        cJSON_AddItemToObject(r, "mixture", cJSON_Parse(mix));
        free(mix);
        double total = 0;
        for (int i = 0; i < o->mixture->n; i++) total += (double)o->mixture->src[i].ds.n_samples;
        cJSON_AddNumberToObject(r, "train_samples", total);
    } else {
        cJSON_AddNumberToObject(r, "train_samples", (double)t->train->n_samples);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

static int check_resume_args(tl_trainer *t, const char *dir, tl_error *err) {
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/train_args.json", dir);
    if (tl_read_file(path, 1 << 20, &text, &len, err)) return -1;
    cJSON *saved = cJSON_Parse(text);
    free(text);
    char *mine_s = args_json(t);
    cJSON *mine = cJSON_Parse(mine_s);
    free(mine_s);
    int rc = 0;
    if (!saved) rc = tl_fail(err, "%s: malformed JSON", path);
    /* distributed: a checkpoint may be resumed on another number of ranks with the same
     * sequences per step (older checkpoints: batch x accum); the mixture's rank/world differ */
    if (saved && !cJSON_GetObjectItemCaseSensitive(saved, "sequences_per_step")) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(saved, "batch"), *a = cJSON_GetObjectItemCaseSensitive(saved, "accum");
        if (cJSON_IsNumber(b) && cJSON_IsNumber(a))
            cJSON_AddNumberToObject(saved, "sequences_per_step", b->valuedouble * a->valuedouble);
    }
    for (int k = 0; k < 2; k++) {
        cJSON *mix = cJSON_GetObjectItemCaseSensitive(k ? mine : saved, "mixture");
        cJSON_DeleteItemFromObjectCaseSensitive(mix, "rank");
        cJSON_DeleteItemFromObjectCaseSensitive(mix, "world");
        const cJSON *ph;
        cJSON_ArrayForEach(ph, cJSON_GetObjectItemCaseSensitive(k ? mine : saved, "phases")) {
            cJSON *pm = cJSON_GetObjectItemCaseSensitive(ph, "mixture");
            cJSON_DeleteItemFromObjectCaseSensitive(pm, "rank");
            cJSON_DeleteItemFromObjectCaseSensitive(pm, "world");
        }
    }
    static const char *const keys[] = {"batch", "seq_len", "sequences_per_step", "seed", "shuffle", "train_samples",
                                       "mixture", "phases", "sft", "dpo"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !rc; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(saved, keys[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(mine, keys[i]);
        if (i >= 6 && !a && !b) continue; /* neither run used it (a mixture, phases, sft, dpo) */
        if (!a || !b || !cJSON_Compare(a, b, 1)) {
            char *as = a ? cJSON_PrintUnformatted(a) : NULL, *bs = b ? cJSON_PrintUnformatted(b) : NULL;
            rc = tl_fail(err, "%s: the checkpoint was trained with %s=%s but this run has %s=%s; resume with the same "
                              "setting (it decides which data each step sees)",
                         dir, keys[i], as ? as : "(missing)", keys[i], bs ? bs : "(missing)");
            free(as);
            free(bs);
        }
    }
    if (!rc) {
        /* the checkpoints this run writes from here on belong to the same run */
        const cJSON *lw = cJSON_GetObjectItemCaseSensitive(saved, "loss_window"), *x;
        cJSON_ArrayForEach(x, lw) if (cJSON_IsNumber(x)) tl_loss_window_push(&t->lw, x->valuedouble);
        const cJSON *sk = cJSON_GetObjectItemCaseSensitive(saved, "skips_in_a_row");
        if (cJSON_IsNumber(sk)) t->skips_in_a_row = sk->valueint;
        snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", dir);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(saved, "run_id");
        if (cJSON_IsString(id) && strlen(id->valuestring) < sizeof t->run_id)
            snprintf(t->run_id, sizeof t->run_id, "%s", id->valuestring);
        /* the thread count changes summation order (BLAS partitioning, reductions):
         * allowed, but the run is then no longer bit-identical to an uninterrupted one */
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(saved, "threads");
        if (cJSON_IsNumber(th) && th->valueint != tl_get_threads())
            snprintf(t->warning, sizeof t->warning,
                     "%s was trained with %d threads, this run has %d: it continues correctly, but rounding differs "
                     "from an uninterrupted run (resume with --threads %d for bit-identical results)",
                     dir, th->valueint, tl_get_threads(), th->valueint);
        t->resumed = 1;
    }
    cJSON_Delete(saved);
    cJSON_Delete(mine);
    return rc;
}

/* Drops log lines of steps after the checkpoint (written by the interrupted run). */
static void truncate_log(const char *path, long step) {
    char *text;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 30, &text, &len, NULL)) return;
    char *out = malloc(len + 1);
    size_t pos = 0;
    for (char *line = text; out && line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t l = nl ? (size_t)(nl - line) + 1 : (size_t)(text + len - line);
        char *sp = strstr(line, "\"step\":");
        long s = sp && sp < line + l ? strtol(sp + 7, NULL, 10) : 0;
        if (nl && s <= step) {
            memcpy(out + pos, line, l);
            pos += l;
        }
        line += l;
    }
    if (out) tl_write_file_atomic(path, out, pos, NULL);
    free(out);
    free(text);
}

/* ---- data position, resume and checkpoints, for any number of ranks ---- */

/* Rank r of N reads global samples r, r+N, r+2N, ... of the (shuffled) stream. */
static int next_batch(tl_trainer *t, int B, int T, int *tokens, uint8_t *mask, uint64_t *idx, tl_error *err) {
    if (t->mix) { /* rank-aware itself */
        if (tl_mixture_next(t->mix, B, T, tokens, t->src_of, err)) return -1;
        for (int b = 0; b < B; b++) t->mix_count[t->src_of[b]]++;
        return 0;
    }
    if (t->world == 1) return tl_dataset_next_ex(t->train, B, T, tokens, mask, idx, err);
    const uint64_t ns = t->train->n_samples;
    for (int b = 0; b < B; b++) {
        uint64_t g = t->dpos * (uint64_t)t->world + (uint64_t)t->rank;
        if (tl_dataset_seek(t->train, g / ns, g % ns, err) ||
            tl_dataset_next_ex(t->train, 1, T, tokens + (size_t)b * (size_t)(T + 1),
                               mask ? mask + (size_t)b * (size_t)(T + 1) : NULL, idx ? idx + b : NULL, err))
            return -1;
        t->dpos++;
    }
    return 0;
}

/* The job's data position in the checkpoint's single-process terms: global samples
 * read (every rank has read the same number at a step boundary). */
static void save_position(tl_trainer *t) {
    if (t->mix) {
        t->st.data_epoch = 0;
        t->st.data_index = t->mix->pos * (uint64_t)t->world;
    } else if (t->world == 1) {
        t->st.data_epoch = t->train->epoch;
        t->st.data_index = t->train->index;
    } else {
        uint64_t g = t->dpos * (uint64_t)t->world, ns = t->train->n_samples;
        t->st.data_epoch = g / ns;
        t->st.data_index = g % ns;
    }
}

static int seek_position(tl_trainer *t, tl_error *err) {
    const uint64_t W = (uint64_t)t->world;
    set_phase(t);
    if (t->mix) {
        if (t->st.data_index % W)
            return tl_fail(err, "the checkpoint's %llu samples read do not divide among %d ranks",
                           (unsigned long long)t->st.data_index, t->world);
        return tl_mixture_seek(t->mix, t->st.data_index / W, err);
    }
    if (t->world == 1) return tl_dataset_seek(t->train, t->st.data_epoch, t->st.data_index, err);
    if (t->st.data_index >= t->train->n_samples)
        return tl_fail(err, "data position %llu is past the %llu samples of the data set (different data?)",
                       (unsigned long long)t->st.data_index, (unsigned long long)t->train->n_samples);
    uint64_t g = t->st.data_epoch * t->train->n_samples + t->st.data_index;
    if (g % W)
        return tl_fail(err, "the checkpoint's %llu samples read do not divide among %d ranks", (unsigned long long)g,
                       t->world);
    t->dpos = g / W;
    return 0;
}

static int check_resume_args(tl_trainer *t, const char *dir, tl_error *err);
static void truncate_log(const char *path, long step);

/* Every rank reads the HF weights (the directory must be visible to all, as for
 * --init); rank 0 reads training_state.bin and hands each rank its slice. */
int tl_trainer_resume(tl_trainer *t, const char *ckpt_dir, tl_error *err) {
    char path[4200];
    const size_t n = t->m->n_params;
    int rc = check_resume_args(t, ckpt_dir, err);
    if (!rc) rc = tl_model_load_hf_weights(ckpt_dir, t->m, err);
    if (tl_comm_agree(t->comm, rc, err)) return -1;
    float *fm = NULL, *fv = NULL;
    rc = 0;
    if (t->rank == 0) {
        tl_train_state s = t->st;
        if (t->zero >= 1) {
            fm = tl_alloc(n * sizeof(float));
            fv = tl_alloc(n * sizeof(float));
            if (!fm || !fv) rc = tl_fail(err, "out of memory for the optimizer state of %zu parameters", n);
            s.m = fm;
            s.v = fv;
        }
        snprintf(path, sizeof path, "%s/training_state.bin", ckpt_dir);
        if (!rc) rc = tl_train_state_load(path, &s, err);
        if (!rc) {
            float *keep_m = t->st.m, *keep_v = t->st.v;
            t->st = s;
            t->st.m = keep_m;
            t->st.v = keep_v;
        }
    }
    if (!tl_comm_agree(t->comm, rc, err)) {
        /* the scalar state travels as bytes; the moment pointers are each rank's own */
        tl_train_state s = t->st;
        rc = tl_comm_bcast(t->comm, &s, sizeof s, 0, err);
        if (!rc) {
            s.m = t->st.m;
            s.v = t->st.v;
            t->st = s;
        }
        if (!rc && t->zero >= 1) {
            rc = tl_comm_scatter_f32(t->comm, fm, t->st.m, n, TL_SHARD_ALIGN, 0, err);
            if (!rc) rc = tl_comm_scatter_f32(t->comm, fv, t->st.v, n, TL_SHARD_ALIGN, 0, err);
        } else if (!rc) {
            rc = tl_comm_bcast(t->comm, t->st.m, n * sizeof(float), 0, err);
            if (!rc) rc = tl_comm_bcast(t->comm, t->st.v, n * sizeof(float), 0, err);
        }
    } else {
        rc = -1;
    }
    tl_free(fm);
    tl_free(fv);
    if (rc) return tl_wrap(err, "%s", ckpt_dir);
    if (t->eng->ops->push(t->eng, err)) return tl_wrap(err, "%s", ckpt_dir);
    if (seek_position(t, err)) return tl_wrap(err, "%s", ckpt_dir);
    if (t->rank == 0) truncate_log(t->log_path, (long)t->st.step);
    t->resumed_from = (long)t->st.step;
    return 0;
}

/* Rank 0 writes the checkpoint: the whole parameter block and the moments
 * gathered from their owners into one training_state.bin (the single-process
 * format, so any number of ranks can resume from it). */
static int checkpoint(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err) {
    char saved[4200] = "";
    const size_t n = t->m->n_params;
    const tl_engine_ops *E = t->eng->ops;
    set_phase(t); /* the position saved is the next step's: at a phase boundary, the start of the next phase */
    save_position(t);
    if (E->pull(t->eng, err)) return tl_wrap(err, "checkpoint");
    /* stage 3: only rank 0 needs the whole block (it writes it), the others keep their slice */
    if (E->gather_params(t->eng, 1, err))
        return tl_wrap(err, "checkpoint at step %ld: gathering parameters", (long)t->st.step);
    float *fm = NULL, *fv = NULL;
    int rc = 0;
    if (t->zero >= 1 && t->rank == 0) {
        fm = tl_alloc(n * sizeof(float));
        fv = tl_alloc(n * sizeof(float));
        if (!fm || !fv) rc = tl_fail(err, "out of memory gathering the optimizer state of %zu parameters", n);
    }
    if (t->zero >= 1) {
        if (tl_comm_agree(t->comm, rc, err)) rc = -1;
        if (!rc) rc = tl_comm_gather_f32(t->comm, t->st.m, fm, n, TL_SHARD_ALIGN, 0, err);
        if (!rc) rc = tl_comm_gather_f32(t->comm, t->st.v, fv, n, TL_SHARD_ALIGN, 0, err);
    }
    int local = 0;
    if (!rc && t->rank == 0) {
        tl_train_state s = t->st;
        if (t->zero >= 1) {
            s.m = fm;
            s.v = fv;
        }
        s.n_params = n;
        char *args = args_json(t);
        local = tl_checkpoint_save(t->o.out_dir, t->m, &s, args, t->o.tokenizer, t->o.keep, saved, sizeof saved, err);
        free(args);
    }
    tl_free(fm);
    tl_free(fv);
    if (E->release_params(t->eng, err)) rc = -1;
    if (rc) return -1;
    if (tl_comm_agree(t->comm, local, err)) return tl_wrap(err, "checkpoint at step %ld", (long)t->st.step);
    if (saved[0]) snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", saved);
    if (cb) {
        tl_train_event ev = {.kind = TL_EV_CKPT, .step = (long)t->st.step, .steps = t->o.steps, .path = saved};
        cb(&ev, user);
    }
    return 0;
}

static int dpo_pass(tl_trainer *t, tl_dataset *ds, const double *ref, double *out, tl_dpo_stats *st, uint64_t limit,
                    tl_error *err);

int tl_trainer_eval(tl_trainer *t, double *loss, tl_error *err) { return tl_trainer_eval_on(t, t->val, loss, err); }

int tl_trainer_eval_on(tl_trainer *t, tl_dataset *val, double *loss, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len;
    if (t->o.dpo) { /* the DPO loss of the held-out pairs (against the reference, once it is computed) */
        tl_dpo_stats vs = {0};
        if (!t->vref || val != t->val) /* the reference log-probs are those of the run's own held-out pairs */
            return tl_fail(err, "validation: the DPO reference is computed when the run starts, for --val-data only");
        if (dpo_pass(t, t->val, t->vref, NULL, &vs, (uint64_t)t->o.eval_batches * (uint64_t)B, err)) return -1;
        *loss = vs.n ? vs.loss / vs.n : NAN;
        return 0;
    }
    double sum = 0;
    long count = 0;
    /* each validation sample at most once: eval_batches micro-batches, fewer when
     * the set is smaller; the rows of a last partial batch past the end are padding
     * (target -1: not counted) */
    uint64_t want = (uint64_t)t->o.eval_batches * (uint64_t)B;
    const uint64_t total = want < val->n_samples ? want : val->n_samples;
    const int n_batches = (int)((total + (uint64_t)B - 1) / (uint64_t)B);
    /* distributed: rank r evaluates micro-batches r, r+N, ...; sums are combined below.
     * Stage 3 gathers layer by layer inside the passes, which every rank must run
     * together: in a last round with fewer batches than ranks, the ranks without one
     * evaluate a batch again and drop the result. */
    int *buf = malloc((sizeof(int) + 1) * (size_t)(val->seq_len + 1));
    if (!buf) return tl_fail(err, "out of memory");
    uint8_t *vmask = (uint8_t *)(buf + val->seq_len + 1); /* sft: only the replies are scored */
    const int W = t->world, R = t->rank;
    const int rounds = (n_batches + W - 1) / W, passes = t->zero == 3 ? rounds * W : n_batches;
    for (int i = 0; i < passes; i++) {
        int spare = i >= n_batches; /* stage 3's filler pass */
        if (i % W != R) continue;   /* distributed: another rank's micro-batch */
        uint64_t first = spare ? 0 : (uint64_t)i * (uint64_t)B;
        for (int b = 0; b < B; b++) {
            uint64_t k = first + (uint64_t)b;
            if (k < total) tl_dataset_get_mask(val, k, buf, vmask);
            for (int s = 0; s < T; s++) {
                t->inputs[b * T + s] = k < total ? buf[s] : 0;
                t->targets[b * T + s] = k < total && vmask[s + 1] ? buf[s + 1] : -1;
            }
        }
        double ls;
        long c;
        if (t->eng->ops->loss(t->eng, t->inputs, t->targets, &ls, &c, err)) {
            free(buf);
            return tl_wrap(err, "validation");
        }
        if (spare) continue;
        sum += ls;
        count += c;
    }
    free(buf);
    if (t->world > 1) { /* the ranks' sums */
        double sc[2] = {sum, (double)count};
        if (tl_comm_allreduce_f64(t->comm, sc, 2, err)) return tl_wrap(err, "validation");
        sum = sc[0];
        count = (long)sc[1];
    }
    *loss = count ? sum / (double)count : NAN;
    return 0;
}

/* Writes the pending log lines with one write at the end of the file.  A short
 * or failed write (full disk, file size limit) is cut back to the last whole
 * line, so the log never holds a torn line, and the lines stay pending. */
static int log_flush(tl_trainer *t, tl_error *err) {
    if (t->log_fd < 0 || !t->log_len) return 0;
    off_t end = lseek(t->log_fd, 0, SEEK_END);
    ssize_t w;
    do w = write(t->log_fd, t->log_pending, t->log_len);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)t->log_len) {
        t->log_len = 0;
        return 0;
    }
    int e = w < 0 ? errno : ENOSPC;
    if (w > 0 && end >= 0 && ftruncate(t->log_fd, end) != 0) e = errno;
    return tl_fail(err, "%s: write failed: %s", t->log_path, strerror(e));
}

/* Appends one JSONL line to the log.  A failed write is reported once as a
 * warning and retried at the next line; only if 1 MiB piles up unwritten is it
 * an error that stops the run. */
static int log_line(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int log_line(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err, const char *fmt, ...) {
    if (t->log_fd < 0) return 0;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return tl_fail(err, "%s: log line too long", t->log_path);
    if (t->log_len + (size_t)n > t->log_cap) {
        size_t cap = t->log_cap ? 2 * t->log_cap : 4096;
        while (cap < t->log_len + (size_t)n) cap *= 2;
        char *p = realloc(t->log_pending, cap);
        if (!p) return tl_fail(err, "out of memory");
        t->log_pending = p;
        t->log_cap = cap;
    }
    memcpy(t->log_pending + t->log_len, line, (size_t)n);
    t->log_len += (size_t)n;
    tl_error e;
    if (!log_flush(t, &e)) {
        if (t->log_failing && cb) {
            tl_train_event ev = {.kind = TL_EV_WARN, .step = (long)t->st.step, .steps = t->o.steps,
                                 .path = "the log is written again; the lines held back were added"};
            cb(&ev, user);
        }
        t->log_failing = 0;
        return 0;
    }
    if (t->log_len > (1u << 20))
        return tl_fail(err, "%s; 1 MiB of log lines could not be written, stopping", e.msg);
    if (!t->log_failing && cb) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s; training goes on, the lines are held back and written when it works again",
                 e.msg);
        tl_train_event ev = {.kind = TL_EV_WARN, .step = (long)t->st.step, .steps = t->o.steps, .path = msg};
        cb(&ev, user);
    }
    t->log_failing = 1;
    return 0;
}

/* Seconds since the epoch (TensorBoard's wall_time; tl_now is monotonic). */
static double wall_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Scalars for TensorBoard (rank 0).  The JSONL log is the record: a failed write
 * here is reported once and ends the event file, the run goes on. */
static void tb_scalars(tl_trainer *t, tl_train_cb cb, void *user, long step, int n, const char *const *tags,
                       const double *values) {
    if (t->tb.fd < 0) return;
    tl_error e;
    double now = wall_time_now();
    for (int i = 0; i < n; i++)
        if (tl_tfevents_scalar(&t->tb, tags[i], step, now, (float)values[i], &e)) {
            tl_tfevents_close(&t->tb);
            if (cb) {
                char msg[1200];
                snprintf(msg, sizeof msg, "%s; no more TensorBoard events (log.jsonl has every step)", e.msg);
                tl_train_event ev = {.kind = TL_EV_WARN, .step = step, .steps = t->o.steps, .path = msg};
                cb(&ev, user);
            }
            return;
        }
}

/* Zero-shot benchmarks on the current weights (scored on the host fp32 model). */
static int run_benchmarks(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err) {
    /* distributed: scored by rank 0 alone (the others wait at the next collective) */
    if (t->eng->ops->gather_params(t->eng, 0, err)) return tl_wrap(err, "benchmarks");
    if (t->rank != 0) return 0;
    if (t->eng->ops->pull(t->eng, err)) return tl_wrap(err, "benchmarks");
    for (int i = 0; i < t->o.n_bench; i++) {
        const tl_eval_task *task = t->o.bench[i];
        tl_eval_opts eo = {0};
        tl_eval_result r;
        if (tl_eval_run(task, t->m, &eo, &r, err)) return tl_wrap(err, "benchmark %s", tl_task_name(task->kind));
        const char *name = tl_task_name(task->kind);
        int lrc;
        if (r.has_acc_norm)
            lrc = log_line(t, cb, user, err, "{\"step\": %llu, \"bench\": \"%s\", \"n\": %d, \"acc\": %.6f, \"acc_stderr\": %.6f, "
                        "\"acc_norm\": %.6f, \"acc_norm_stderr\": %.6f}\n",
                     (unsigned long long)t->st.step, name, r.n, r.acc, r.acc_stderr, r.acc_norm, r.acc_norm_stderr);
        else
            lrc = log_line(t, cb, user, err, "{\"step\": %llu, \"bench\": \"%s\", \"n\": %d, \"acc\": %.6f, \"acc_stderr\": %.6f}\n",
                     (unsigned long long)t->st.step, name, r.n, r.acc, r.acc_stderr);
        if (lrc) {
            tl_eval_result_free(&r);
            return -1;
        }
        if (cb) {
            tl_train_event ev = {.kind = TL_EV_BENCH, .step = (long)t->st.step, .steps = t->o.steps, .task = name,
                                 .n = r.n, .acc = r.acc, .acc_norm = r.has_acc_norm ? r.acc_norm : NAN};
            cb(&ev, user);
        }
        tl_eval_result_free(&r);
    }
    return 0;
}

/* ---- DPO ----
 * A micro-batch of B pairs runs as 2B sequences (pair b: 2b chosen, 2b+1 rejected,
 * each L+1 tokens, contiguous in the pair sample).  A sequence's log-probability is
 * minus the sum of its rows' cross-entropies over the reply's tokens (IPO: their
 * mean); the loss's derivative by it becomes a weight on each of those rows. */

typedef tl_dpo_stats dpo_stats;

void tl_dpo_pairs(const float *row_loss, const int *targets, int n_pairs, int T, const double *ref, double beta,
                  int ipo, double scale, float *row_weight, tl_dpo_stats *st) {
    for (int b = 0; b < n_pairs; b++) {
        double lp[2], cnt[2];
        for (int k = 0; k < 2; k++) {
            const size_t r0 = (size_t)(2 * b + k) * (size_t)T;
            double sum = 0, c = 0;
            for (int s = 0; s < T; s++)
                if (targets[r0 + s] >= 0) sum -= row_loss[r0 + s], c++;
            cnt[k] = c > 0 ? c : 1;
            lp[k] = sum;
        }
        const double rc = lp[0] - ref[2 * b], rr = lp[1] - ref[2 * b + 1];
        double loss, dl; /* dl: d loss / d (rc - rr); IPO: d loss / d (rc/count_c - rr/count_r) */
        if (ipo) {
            const double d = rc / cnt[0] - rr / cnt[1] - 1.0 / (2.0 * beta);
            loss = d * d;
            dl = 2.0 * d;
        } else {
            const double z = beta * (rc - rr); /* -log sigmoid(z), stably */
            loss = z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z));
            dl = -beta / (1.0 + exp(z));
        }
        st->loss += loss;
        st->chosen += beta * rc;
        st->rejected += beta * rr;
        st->acc += rc > rr;
        st->margin += beta * (rc - rr);
        st->n++;
        if (!row_weight) continue;
        for (int k = 0; k < 2; k++) { /* d loss / d row loss = -(d loss / d logp) (/ count for IPO) */
            const double w = -(k ? -dl : dl) * scale / (ipo ? cnt[k] : 1.0);
            const size_t r0 = (size_t)(2 * b + k) * (size_t)T;
            for (int s = 0; s < T; s++) row_weight[r0 + s] = targets[r0 + s] >= 0 ? (float)w : 0.0f;
        }
    }
}

/* Per-pair loss and statistics of the micro-batch in t->dpo_in/dpo_tg against the
 * reference log-probs ref[2 x sample] of samples idx; with weights, the rows'
 * weights for the backward (scaled by 1/pairs: the loss is the mean over the
 * global batch). */
static int dpo_micro(tl_trainer *t, const uint64_t *idx, const double *ref, int n_pairs, double pairs, int weights,
                     dpo_stats *st, tl_error *err) {
    const int T = t->o.seq_len;
    if (t->eng->ops->row_losses(t->eng, t->dpo_in, t->dpo_tg, t->dpo_rl, err)) return -1;
    for (int b = 0; b < n_pairs; b++) {
        const double r[2] = {ref[2 * idx[b]], ref[2 * idx[b] + 1]};
        tl_dpo_pairs(t->dpo_rl + (size_t)2 * b * T, t->dpo_tg + (size_t)2 * b * T, 1, T, r, t->o.dpo_beta,
                     t->o.dpo_ipo, 1.0 / pairs, weights ? t->dpo_rw + (size_t)2 * b * T : NULL, st);
    }
    if (weights) /* rows of pairs past n_pairs (none in training) */
        memset(t->dpo_rw + (size_t)2 * n_pairs * T, 0, sizeof(float) * (size_t)2 * (t->o.batch - n_pairs) * T);
    return 0;
}

static int dpo_step(tl_trainer *t, double *loss, dpo_stats *st, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len, accum = t->o.accum;
    const double pairs = (double)B * accum * t->world;
    memset(st, 0, sizeof *st);
    for (int a = 0; a < accum; a++) {
        /* a pair sample is 2(T+1) tokens: read B of them, then view them as 2B sequences */
        if (next_batch(t, B, 2 * T + 1, t->dpo_tokens, t->dpo_mask, t->dpo_idx, err)) return -1;
        tl_batch_targets(t->dpo_tokens, t->dpo_mask, 2 * B, T, t->dpo_in, t->dpo_tg);
        double l;
        if (dpo_micro(t, t->dpo_idx, t->ref, B, pairs, 1, st, err) ||
            t->eng->ops->forward_backward_rows(t->eng, t->dpo_in, t->dpo_tg, t->dpo_rw, &l, err))
            return tl_wrap(err, "step %ld", (long)t->st.step + 1);
    }
    if (t->world > 1 && tl_comm_allreduce_f64(t->comm, &st->loss, 6, err))
        return tl_wrap(err, "step %ld: DPO statistics", (long)t->st.step + 1);
    *loss = st->loss / st->n;
    return 0;
}

/* Runs every sample of ds (in file order, rank r taking micro-batches r, r+N, ...;
 * stage 3's filler passes as in tl_trainer_eval) through dpo_micro: with ref NULL,
 * fills out[2 x sample] with the current model's log-probs (the reference); else
 * sums the statistics against ref. */
static int dpo_pass(tl_trainer *t, tl_dataset *ds, const double *ref, double *out, dpo_stats *st, uint64_t limit,
                    tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len, W = t->world, R = t->rank;
    const uint64_t total = limit && limit < ds->n_samples ? limit : ds->n_samples;
    const int n_batches = (int)((total + (uint64_t)B - 1) / (uint64_t)B);
    const int rounds = (n_batches + W - 1) / W, passes = t->zero == 3 ? rounds * W : n_batches;
    uint8_t *mk = t->dpo_mask;
    double *zero_ref = ref ? NULL : calloc(2 * (size_t)ds->n_samples, sizeof(double));
    if (!ref && !zero_ref) return tl_fail(err, "out of memory");
    if (out) memset(out, 0, 2 * (size_t)ds->n_samples * sizeof(double));
    dpo_stats local = {0};
    int rc = 0;
    for (int i = 0; i < passes && !rc; i++) {
        if (i % W != R) continue;
        const int spare = i >= n_batches;
        int n = 0;
        for (int b = 0; b < B; b++) {
            uint64_t k = spare ? 0 : (uint64_t)i * (uint64_t)B + (uint64_t)b;
            if (k >= total) k = 0; /* a last partial batch: filled, not counted */
            else if (!spare) n = b + 1;
            t->dpo_idx[b] = k;
            tl_dataset_get_mask(ds, k, t->dpo_tokens + (size_t)b * (2 * T + 2), mk + (size_t)b * (2 * T + 2));
        }
        tl_batch_targets(t->dpo_tokens, mk, 2 * B, T, t->dpo_in, t->dpo_tg);
        dpo_stats s = {0};
        rc = dpo_micro(t, t->dpo_idx, ref ? ref : zero_ref, spare ? 0 : n, 1, 0, &s, err);
        if (!rc && !ref && out) { /* the sequences' log-probs, from the rows */
            for (int b = 0; b < n; b++)
                for (int k = 0; k < 2; k++) {
                    const size_t r0 = (size_t)(2 * b + k) * (size_t)T;
                    double sum = 0;
                    for (int q = 0; q < T; q++)
                        if (t->dpo_tg[r0 + q] >= 0) sum -= t->dpo_rl[r0 + q];
                    out[2 * t->dpo_idx[b] + k] = sum;
                }
        }
        local.loss += s.loss, local.chosen += s.chosen, local.rejected += s.rejected;
        local.acc += s.acc, local.margin += s.margin, local.n += s.n;
    }
    free(zero_ref);
    if (rc) return -1;
    if (W > 1) {
        if (out && tl_comm_allreduce_f64(t->comm, out, 2 * (size_t)ds->n_samples, err)) return -1;
        if (tl_comm_allreduce_f64(t->comm, &local.loss, 6, err)) return -1;
    }
    if (st) *st = local;
    return 0;
}

/* The reference log-probs: computed by the starting model before the first step
 * and kept in out_dir/dpo_reference.bin (FNV-1a 64 checked), which a resume reads. */
#define DPO_REF_MAGIC "TLDPOREF"
static int dpo_reference(tl_trainer *t, tl_error *err) {
    const uint64_t nt = t->train->n_samples, nv = t->val ? t->val->n_samples : 0;
    const size_t bytes = 24 + 16 * (size_t)(nt + nv) + 8;
    t->ref = calloc(2 * (size_t)nt, sizeof(double));
    t->vref = calloc(2 * (size_t)(nv ? nv : 1), sizeof(double));
    if (!t->ref || !t->vref) return tl_fail(err, "out of memory for the reference log-probs");
    char path[4200];
    snprintf(path, sizeof path, "%s/dpo_reference.bin", t->o.out_dir);
    int rc = 0;
    if (t->resumed) { /* every rank reads the file rank 0 wrote */
        char *buf;
        size_t len;
        rc = tl_read_file(path, bytes + 1, &buf, &len, err);
        if (rc) return tl_wrap(err, "resuming DPO needs the starting model's log-probs");
        uint64_t h = 0xcbf29ce484222325ULL, n1, n2, sum;
        memcpy(&n1, buf + 8, 8);
        memcpy(&n2, buf + 16, 8);
        for (size_t i = 0; i + 8 < len; i++) h = (h ^ (uint8_t)buf[i]) * 0x100000001b3ULL;
        if (len == bytes) memcpy(&sum, buf + len - 8, 8);
        if (len != bytes || memcmp(buf, DPO_REF_MAGIC, 8) || n1 != nt || n2 != nv || sum != h)
            rc = tl_fail(err, "%s: not the reference log-probs of this data (%llu + %llu pairs), or damaged", path,
                         (unsigned long long)nt, (unsigned long long)nv);
        else {
            memcpy(t->ref, buf + 24, 16 * (size_t)nt);
            memcpy(t->vref, buf + 24 + 16 * (size_t)nt, 16 * (size_t)nv);
        }
        free(buf);
        return rc;
    }
    if (dpo_pass(t, t->train, NULL, t->ref, NULL, 0, err) ||
        (t->val && dpo_pass(t, t->val, NULL, t->vref, NULL, 0, err)))
        return tl_wrap(err, "DPO reference log-probs");
    if (t->rank == 0) {
        char *buf = malloc(bytes);
        if (!buf) return tl_fail(err, "out of memory");
        memcpy(buf, DPO_REF_MAGIC, 8);
        memcpy(buf + 8, &nt, 8);
        memcpy(buf + 16, &nv, 8);
        memcpy(buf + 24, t->ref, 16 * (size_t)nt);
        memcpy(buf + 24 + 16 * (size_t)nt, t->vref, 16 * (size_t)nv);
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i + 8 < bytes; i++) h = (h ^ (uint8_t)buf[i]) * 0x100000001b3ULL;
        memcpy(buf + bytes - 8, &h, 8);
        rc = tl_write_file_atomic(path, buf, bytes, err);
        free(buf);
    }
    return tl_comm_agree(t->comm, rc, err);
}

/* The micro-batches of one fine-tuning step.  Each micro-batch's loss is the
 * mean over its own targets, so weighting it (and its gradient) by its share of
 * the targets of the whole step, over all ranks, makes the sum the mean over
 * every target token of the global batch, however the samples fall into
 * micro-batches and ranks.  *loss: that mean (the same on every rank). */
static int sft_step(tl_trainer *t, double *loss, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len, accum = t->o.accum;
    const size_t S = (size_t)B * (size_t)(T + 1), N = (size_t)B * (size_t)T;
    double total = 0, sum = 0;
    for (int a = 0; a < accum; a++) {
        if (next_batch(t, B, T, t->sft_tokens + a * S, t->sft_mask + a * S, NULL, err)) return -1;
        t->sft_count[a] = tl_batch_targets(t->sft_tokens + a * S, t->sft_mask + a * S, B, T, t->sft_inputs + a * N,
                                           t->sft_targets + a * N);
        total += (double)t->sft_count[a];
    }
    if (t->world > 1 && tl_comm_allreduce_f64(t->comm, &total, 1, err))
        return tl_wrap(err, "step %ld: target count", (long)t->st.step + 1);
    for (int a = 0; a < accum; a++) {
        /* every sample has a target (a reply token within its sequence), so no count is 0 */
        double l, w = (double)t->sft_count[a] / total;
        if (t->eng->ops->forward_backward(t->eng, t->sft_inputs + a * N, t->sft_targets + a * N, (float)w, &l, err))
            return tl_wrap(err, "step %ld", (long)t->st.step + 1);
        sum += l * w;
    }
    if (t->world > 1 && tl_comm_allreduce_f64(t->comm, &sum, 1, err))
        return tl_wrap(err, "step %ld: loss", (long)t->st.step + 1);
    *loss = sum;
    return 0;
}

int tl_trainer_run(tl_trainer *t, tl_train_cb cb, void *user, volatile sig_atomic_t *stop, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len;
    if (t->rank != 0) { /* distributed: rank 0 logs and reports */
        cb = NULL;
    } else {
        /* a new run never mixes into another run's directory */
        char what[512];
        if (!t->resumed && !t->o.overwrite && tl_run_dir_in_use(t->o.out_dir, what, sizeof what))
            return tl_fail(err, "%s already holds a training run (%s): continue it with --resume, choose another "
                                "--out, or pass --overwrite to start a new run there (the log restarts; the other "
                                "run's checkpoints stay and are never pruned)",
                           t->o.out_dir, what);
        if (tl_mkdir_p(t->o.out_dir, err)) return tl_wrap(err, "run directory");
        int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (!t->resumed && t->o.overwrite ? O_TRUNC : 0);
        if (t->log_fd < 0 && (t->log_fd = open(t->log_path, flags, 0644)) < 0)
            return tl_fail(err, "%s: cannot open the log: %s", t->log_path, strerror(errno));
        if (t->warning[0] && cb) {
            tl_train_event ev = {.kind = TL_EV_WARN, .step = (long)t->st.step, .steps = t->o.steps, .path = t->warning};
            cb(&ev, user);
        }
        /* TensorBoard: a new event file per start; a resumed run first drops the later
         * points of the run it continues (TensorBoard purges them at a session start) */
        tl_error e;
        if (t->tb.fd < 0 && (tl_tfevents_open(&t->tb, t->o.out_dir, t->run_id, wall_time_now(), &e) ||
                             (t->resumed && tl_tfevents_restart(&t->tb, (long)t->st.step + 1, wall_time_now(), &e)))) {
            tl_tfevents_close(&t->tb);
            if (cb) {
                tl_train_event ev = {.kind = TL_EV_WARN, .step = (long)t->st.step, .steps = t->o.steps, .path = e.msg};
                cb(&ev, user);
            }
        }
    }
    if (t->o.dpo && !t->ref && dpo_reference(t, err)) return -1; /* before the first step changes the model */
    double run_start = tl_now(), elapsed0 = t->st.elapsed;
    long start_step = (long)t->st.step;
    const double tokens0 = (double)t->st.tokens_seen;
    double tokens_end = tokens0; /* for the ETA: the batch may grow */
    for (long s = start_step; s < t->o.steps; s++) tokens_end += step_tokens(t, s);
    while ((long)t->st.step < t->o.steps) {
        if (t->world > 1 && stop) { /* a stop seen by any rank stops all at the same step */
            double any = *stop ? 1 : 0;
            if (tl_comm_allreduce_f64(t->comm, &any, 1, err)) return -1;
            if (any > 0) *stop = 1;
        }
        if (stop && *stop) break;
        double t0 = tl_now();
        set_phase(t);
        const tl_train_phase *ph = t->o.n_phases ? &t->o.phases[t->phase] : NULL;
        const int accum = ph ? ph->accum : t->o.accum;
        const double tokens_per_step = step_tokens(t, (long)t->st.step); /* distributed: the global batch */
        const tl_engine_ops *E = t->eng->ops;
        double loss = 0, norm;
        /* the step: this rank's micro-batches, then the sum, norm and update over the job */
        if (E->zero_grads(t->eng, err)) return -1;
        memset(t->mix_count, 0, sizeof t->mix_count);
        const float scale = 1.0f / (float)(accum * t->world); /* the ranks' sum is the mean over the global batch */
        dpo_stats ds = {0};
        if (t->o.dpo) {
            if (dpo_step(t, &loss, &ds, err)) return -1;
        } else if (t->o.sft) { /* the mean over the step's target tokens: sft_step */
            if (sft_step(t, &loss, err)) return -1;
        } else
        for (int a = 0; a < accum; a++) {
            if (next_batch(t, B, T, t->tokens, NULL, NULL, err)) return -1;
            for (int b = 0; b < B; b++)
                for (int s = 0; s < T; s++) {
                    t->inputs[b * T + s] = t->tokens[b * (T + 1) + s];
                    t->targets[b * T + s] = t->tokens[b * (T + 1) + s + 1];
                }
            double l;
            if (E->forward_backward(t->eng, t->inputs, t->targets, scale, &l, err))
                return tl_wrap(err, "step %ld", (long)t->st.step + 1);
            loss += l / accum;
        }
        if (t->world > 1 && !t->o.sft && !t->o.dpo) {
            if (tl_comm_allreduce_f64(t->comm, &loss, 1, err)) return tl_wrap(err, "step %ld: loss", (long)t->st.step + 1);
            loss /= t->world;
        }
        if (t->world > 1 && t->mix && tl_comm_allreduce_f64(t->comm, t->mix_count, t->mix->n, err)) /* the job's samples */
            return tl_wrap(err, "step %ld: mixture counts", (long)t->st.step + 1);
        if (E->reduce_grads(t->eng, err)) return tl_wrap(err, "step %ld: gradients", (long)t->st.step + 1);
        if (E->grad_norm(t->eng, &norm, err)) return tl_wrap(err, "step %ld", (long)t->st.step + 1);
        long step = (long)t->st.step;
        const double before = (double)t->st.tokens_seen;
        double lr = ph && ph->lr > 0 ? ph->lr : tl_lr_at_tokens(&t->o.opt, &t->sched, before, before + tokens_per_step);
        t->st.step++;
        t->st.tokens_seen += (uint64_t)tokens_per_step;
        /* a loss far above the recent ones (every rank has the same loss: the same decision) */
        const int finite = isfinite(norm) && isfinite(loss);
        const double z = finite && t->o.spike_z > 0 ? tl_loss_window_z(&t->lw, loss) : 0;
        if (!finite || (t->o.spike_z > 0 && z > t->o.spike_z)) {
            /* a non-finite gradient would poison the moments, a spike would throw the weights: skip the update */
            int lrc = finite ? log_line(t, cb, user, err,
                                        "{\"step\": %ld, \"skipped\": true, \"loss\": %.6f, \"grad_norm\": %.6f, "
                                        "\"reason\": \"spike\", \"z\": %.2f}\n", step + 1, loss, norm, z)
                             : log_line(t, cb, user, err, "{\"step\": %ld, \"skipped\": true, \"loss\": %s, \"grad_norm\": %s}\n",
                                        step + 1, isfinite(loss) ? "0" : "null", "null");
            if (lrc) return -1;
            char why[96];
            if (finite) snprintf(why, sizeof why, "loss spike (%.4f, z-score %.1f)", loss, z);
            else snprintf(why, sizeof why, "non-finite gradient");
            if (cb) {
                tl_train_event ev = {.kind = TL_EV_SKIP, .step = step + 1, .steps = t->o.steps, .loss = loss, .path = why};
                cb(&ev, user);
            }
            if (t->o.max_skips > 0 && ++t->skips_in_a_row >= t->o.max_skips) {
                log_flush(t, NULL);
                return tl_fail(err, "step %ld: %d steps in a row skipped (the last: %s); stopping. The last good "
                                    "checkpoint is %s",
                               step + 1, t->skips_in_a_row, why,
                               t->last_ckpt[0] ? t->last_ckpt : "none (none was written yet)");
            }
        } else {
            if (E->update(t->eng, &t->o.opt, lr, step + 1, norm, err)) return -1;
            t->skips_in_a_row = 0;
            if (t->o.spike_z > 0) tl_loss_window_push(&t->lw, loss);
        }
        double dt = tl_now() - t0;
        t->st.elapsed = elapsed0 + (tl_now() - run_start);
        double rate = ((double)t->st.tokens_seen - tokens0) / (tl_now() - run_start); /* tokens per second */
        tl_train_event ev = {.kind = TL_EV_STEP, .step = (long)t->st.step, .steps = t->o.steps, .loss = loss,
                             .lr = lr, .grad_norm = norm, .tokens_per_s = tokens_per_step / dt,
                             .elapsed = t->st.elapsed,
                             .eta = rate > 0 ? (tokens_end - (double)t->st.tokens_seen) / rate : 0,
                             .tokens = (double)t->st.tokens_seen, .batch_tokens = tokens_per_step,
                             .phase = ph ? ph->name : NULL};
        /* the phase, and the samples each source gave (the measured mixture) */
        char phase_field[1400] = "";
        if (ph) snprintf(phase_field, sizeof phase_field, ", \"phase\": \"%s\"", ph->name);
        for (int k = 0; t->mix && k < t->mix->n; k++) {
            size_t l = strlen(phase_field);
            snprintf(phase_field + l, sizeof phase_field - l, "%s\"%s\": %.0f%s", k ? ", " : ", \"mix\": {",
                     t->mix->src[k].name, t->mix_count[k], k == t->mix->n - 1 ? "}" : "");
        }
        if (log_line(t, cb, user, err,
                     "{\"step\": %ld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, "
                     "\"tokens\": %llu, \"batch_tokens\": %.0f, \"elapsed\": %.3f%s}\n",
                     ev.step, loss, lr, norm, ev.tokens_per_s, (unsigned long long)t->st.tokens_seen, tokens_per_step,
                     ev.elapsed, phase_field))
            return -1;
        if (t->o.dpo && /* as TRL logs them: means over the step's pairs */
            log_line(t, cb, user, err,
                     "{\"step\": %ld, \"rewards/chosen\": %.6f, \"rewards/rejected\": %.6f, \"rewards/accuracies\": %.6f, "
                     "\"rewards/margins\": %.6f}\n",
                     ev.step, ds.chosen / ds.n, ds.rejected / ds.n, ds.acc / ds.n, ds.margin / ds.n))
            return -1;
        if (cb) cb(&ev, user);
        static const char *const tags[] = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
                                           "train/batch_tokens", "train/tokens"};
        const double vals[] = {loss, lr, norm, ev.tokens_per_s, tokens_per_step, ev.tokens};
        tb_scalars(t, cb, user, ev.step, 6, tags, vals);

        int last = (long)t->st.step == t->o.steps;
        if (t->o.dpo && t->val && t->o.eval_every > 0 && ((long)t->st.step % t->o.eval_every == 0 || last)) {
            dpo_stats vs = {0};
            if (dpo_pass(t, t->val, t->vref, NULL, &vs, (uint64_t)t->o.eval_batches * (uint64_t)t->o.batch, err))
                return tl_wrap(err, "validation");
            if (log_line(t, cb, user, err,
                         "{\"step\": %ld, \"val_loss\": %.6f, \"val_rewards/accuracies\": %.6f, "
                         "\"val_rewards/margins\": %.6f}\n",
                         ev.step, vs.loss / vs.n, vs.acc / vs.n, vs.margin / vs.n))
                return -1;
            if (cb) {
                tl_train_event ee = {.kind = TL_EV_EVAL, .step = ev.step, .steps = t->o.steps, .val_loss = vs.loss / vs.n};
                cb(&ee, user);
            }
        } else if (t->val && t->o.eval_every > 0 && ((long)t->st.step % t->o.eval_every == 0 || last)) {
            double vl;
            if (tl_trainer_eval(t, &vl, err)) return -1;
            if (log_line(t, cb, user, err, "{\"step\": %ld, \"val_loss\": %.6f, \"val_ppl\": %.4f}\n", ev.step, vl,
                         exp(vl)))
                return -1;
            if (cb) {
                tl_train_event ee = {.kind = TL_EV_EVAL, .step = ev.step, .steps = t->o.steps, .val_loss = vl};
                cb(&ee, user);
            }
            static const char *const vtag[] = {"val/loss"};
            tb_scalars(t, cb, user, ev.step, 1, vtag, &vl);
        }
        for (int v = 0; t->o.eval_every > 0 && v < t->o.n_val_sets; v++) /* per domain */
            if ((long)t->st.step % t->o.eval_every == 0 || last) {
                double vl;
                if (tl_trainer_eval_on(t, t->o.val_sets[v], &vl, err)) return tl_wrap(err, "validation set %s", t->o.val_names[v]);
                if (log_line(t, cb, user, err, "{\"step\": %ld, \"val_set\": \"%s\", \"val_loss\": %.6f, \"val_ppl\": %.4f}\n",
                             ev.step, t->o.val_names[v], vl, exp(vl)))
                    return -1;
                if (cb) {
                    tl_train_event ee = {.kind = TL_EV_EVAL, .step = ev.step, .steps = t->o.steps, .val_loss = vl,
                                         .task = t->o.val_names[v]};
                    cb(&ee, user);
                }
                char tag[96];
                snprintf(tag, sizeof tag, "val/%s/loss", t->o.val_names[v]);
                const char *const tags1[] = {tag};
                tb_scalars(t, cb, user, ev.step, 1, tags1, &vl);
            }
        if (t->o.n_bench && ((t->o.bench_every > 0 && (long)t->st.step % t->o.bench_every == 0) || last))
            if (run_benchmarks(t, cb, user, err)) return -1;
        if ((t->o.ckpt_every > 0 && (long)t->st.step % t->o.ckpt_every == 0) || last)
            if (checkpoint(t, cb, user, err)) return -1;
    }
    if (stop && *stop && (long)t->st.step < t->o.steps && (long)t->st.step > start_step)
        if (checkpoint(t, cb, user, err)) return -1;
    if (log_flush(t, err)) return tl_wrap(err, "the log misses lines of this run");
    return 0;
}

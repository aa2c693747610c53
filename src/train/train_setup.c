/* train_setup.c - training defaults and what follows from a request (train_setup.h). */
#include "train_setup.h"

#include <string.h>

#include "tokenizer.h"

tl_train_request tl_train_request_defaults(void) {
    tl_train_request rq = {.batch = 8, .world = 1, .steps = 1000, .warmup = -1, .decay_steps = -1,
                           .opt = tl_adamw_defaults(), .seed = 3407, .eval_every = -1, .eval_batches = 8,
                           .keep = 3, .bench_every = -1, .spike_window = 100};
    return rq;
}

/* The optimizer settings of the request with its schedule resolved. */
static tl_adamw_config resolved_opt(const tl_train_request *rq) {
    tl_adamw_config c = rq->opt;
    /* a run shorter than TinyLlama's warms up over a tenth of it */
    long cap = tl_adamw_defaults().warmup_steps;
    c.warmup_steps = rq->warmup >= 0 ? rq->warmup : (rq->steps / 10 < cap ? rq->steps / 10 : cap);
    c.decay_steps = rq->decay_steps >= 0 ? rq->decay_steps : rq->steps;
    return c;
}

int tl_train_request_check(const tl_train_request *rq, const char **field, tl_error *err) {
    if (field) *field = NULL;
    tl_adamw_config c = resolved_opt(rq);
    if (c.decay_steps < c.warmup_steps) { /* said with the defaults that produced it */
        if (field) *field = rq->decay_steps >= 0 ? "decay_steps" : "warmup"; /* the one given */
        return tl_fail(err, "decay steps (%ld%s) must be at least the warmup steps (%ld%s)", c.decay_steps,
                       rq->decay_steps >= 0 ? "" : ", the number of steps", c.warmup_steps,
                       rq->warmup >= 0 ? "" : ", the default");
    }
    const char *f = NULL;
    if (tl_adamw_config_validate(&c, &f, err)) {
        if (field) *field = f && !strcmp(f, "warmup_steps") ? "warmup" : f;
        return -1;
    }
    return 0;
}

int tl_train_setup(const tl_train_request *rq, tl_train_opts *o, const char **field, tl_error *err) {
    if (tl_train_request_check(rq, field, err)) return -1;
    if (rq->batch < 1 || rq->seq_len < 1 || rq->world < 1 || rq->steps < 1 || rq->batch_tokens < 0) {
        if (field) *field = rq->batch < 1 ? "batch" : rq->seq_len < 1 ? "seq_len" : rq->world < 1 ? "world"
                          : rq->steps < 1 ? "steps" : "batch_tokens";
        return tl_fail(err, "batch (%ld), seq_len (%ld), world (%d) and steps (%ld) must be >= 1, batch_tokens (%ld) >= 0",
                       rq->batch, rq->seq_len, rq->world, rq->steps, rq->batch_tokens);
    }
    long micro_tokens = rq->batch * rq->seq_len, accum = 1;
    if (rq->batch_tokens) { /* the global batch: world x batch x seq_len x accumulation */
        if (rq->batch_tokens % (micro_tokens * rq->world)) {
            if (field) *field = "batch_tokens";
            return tl_fail(err, "a batch of %ld tokens is not a multiple of ranks x batch x seq-len = %d x %ld", rq->batch_tokens,
                           rq->world, micro_tokens);
        }
        accum = rq->batch_tokens / (micro_tokens * rq->world);
    }
    o->batch = (int)rq->batch;
    o->seq_len = (int)rq->seq_len;
    o->accum = (int)accum;
    o->steps = rq->steps;
    o->opt = resolved_opt(rq);
    o->seed = rq->seed;
    o->shuffle = !rq->sequential;
    o->eval_every = rq->has_val ? (rq->eval_every >= 0 ? rq->eval_every : 100) : 0;
    o->eval_batches = (int)rq->eval_batches;
    o->ckpt_every = rq->ckpt_every;
    o->keep = (int)rq->keep;
    if (!(rq->spike_z >= 0) || rq->spike_window < 1 || rq->spike_window > TL_LOSS_WINDOW_MAX || rq->max_skips < 0) {
        if (field) *field = !(rq->spike_z >= 0) ? "spike_z" : rq->max_skips < 0 ? "max_skips" : "spike_window";
        return tl_fail(err, "spike z-score (%g) must be >= 0, its window (%ld) in [1, %d], max skips (%ld) >= 0",
                       rq->spike_z, rq->spike_window, TL_LOSS_WINDOW_MAX, rq->max_skips);
    }
    o->spike_z = rq->spike_z;
    o->spike_window = (int)rq->spike_window;
    o->max_skips = (int)rq->max_skips;
    o->bench_every = rq->bench_every > 0 ? rq->bench_every : (rq->eval_every > 0 ? rq->eval_every : 100);
    return 0;
}

tl_threads_rule tl_train_threads(long requested, const char *resume_dir, int world, long *n) {
    *n = requested > 0 ? requested : 0;
    if (!*n && resume_dir && resume_dir[0]) *n = tl_checkpoint_threads(resume_dir);
    if (*n > 0) return TL_THREADS_GIVEN;
    return world > 1 ? TL_THREADS_ALL : TL_THREADS_FREE_CORES;
}

long tl_train_seq_len(long requested, long data_seq_len, long max_seq_len) {
    if (requested > 0) return requested;
    return data_seq_len < max_seq_len ? data_seq_len : max_seq_len;
}

uint64_t tl_train_ramp_samples(long ramp_tokens, long seq_len, long shortest_source, long max_seq_len) {
    long sl = seq_len > 0 ? seq_len : shortest_source;
    if (sl > max_seq_len) sl = max_seq_len;
    if (sl < 1) sl = 1;
    return (uint64_t)(ramp_tokens / sl);
}

int tl_train_model_open(tl_model *m, const tl_train_model_request *rq, const char **field, tl_error *err) {
    if (field) *field = NULL;
    const int resume = rq->resume_dir && rq->resume_dir[0];
    tl_config cfg;
    if (resume) {
        if (tl_model_load_hf(rq->resume_dir, m, err)) return -1; /* the configuration from the checkpoint */
        if (rq->preset || rq->config) {
            char diff[256];
            if (rq->config ? tl_config_load_json(rq->config, &cfg, err) : tl_config_preset(rq->preset, &cfg, err)) {
                tl_model_free(m);
                return -1;
            }
            cfg.vocab_size = m->cfg.vocab_size; /* a vocabulary size asked for applied when the run began */
            if (tl_config_diff(&m->cfg, &cfg, diff, sizeof diff)) {
                if (field) *field = rq->config ? "config" : "preset";
                tl_fail(err, "%s", diff);
                tl_model_free(m);
                return 1;
            }
        }
    } else if (rq->init) {
        if (tl_model_load_hf(rq->init, m, err)) return -1;
    } else {
        if (rq->config ? tl_config_load_json(rq->config, &cfg, err)
                       : tl_config_preset(rq->preset ? rq->preset : "demo", &cfg, err))
            return -1;
        if (rq->vocab_size > 0) cfg.vocab_size = (int)rq->vocab_size;
        if (tl_model_create(m, &cfg, err)) return -1;
        tl_model_init_weights(m, rq->seed);
        return 0;
    }
    if (rq->vocab_size > 0 && rq->vocab_size != m->cfg.vocab_size) {
        if (field) *field = "vocab_size";
        tl_fail(err, "the checkpoint's %d", m->cfg.vocab_size);
        tl_model_free(m);
        return 1;
    }
    return 0;
}

int tl_train_tokenizer_identify(const char *path, int vocab_size, tl_data_tokenizer *id, tl_error *err) {
    tl_tokenizer *tk = tl_tokenizer_load(path, err);
    if (!tk) return -1;
    int tv = tl_tokenizer_vocab_size(tk);
    tl_data_tokenizer_of(tk, path, id);
    tl_tokenizer_free(tk);
    if (tv > vocab_size) {
        tl_fail(err, "%s: %d pieces do not fit the model's vocabulary of %d", path, tv, vocab_size);
        return 1;
    }
    return 0;
}

int tl_train_data_open(tl_train_data *d, const tl_train_data_request *r, const tl_train_request *rq, int rank,
                       long max_seq_len, tl_error *err) {
    memset(d, 0, sizeof *d);
    tl_mixture_init(&d->mix);
    d->mixture = r->n_sources > 0;
    /* shards must belong to a complete `prepare` manifest; a directory means its split */
    const tl_dataset_opts train_opts = {.split = "train", .verify = 1}, val_opts = {.split = "val", .verify = 1};
    d->mix.open_opts = train_opts;
    int rc = 0;
    if (d->mixture) {
        for (int k = 0; k < r->n_sources && !rc; k++) {
            const char *p[1] = {r->sources[k].path};
            rc = tl_mixture_add(&d->mix, r->sources[k].name, r->sources[k].weight, r->sources[k].start, p, 1, err);
        }
        long shortest = d->mix.n ? d->mix.src[0].ds.seq_len : 1; /* the sources are open: their lengths are known */
        for (int k = 0; k < d->mix.n; k++)
            if (d->mix.src[k].ds.seq_len < shortest) shortest = d->mix.src[k].ds.seq_len;
        uint64_t ramp = tl_train_ramp_samples(r->ramp_tokens, rq->seq_len, shortest, max_seq_len);
        if (!rc) rc = tl_mixture_finish(&d->mix, rq->seed, !rq->sequential, rank, rq->world, ramp, err);
    } else if (!r->phases) {
        rc = tl_dataset_open_ex(&d->train, r->data, r->n_data, &train_opts, err);
        d->train_open = !rc;
    }
    if (!rc && r->n_val) {
        rc = tl_dataset_open_ex(&d->val, r->val, r->n_val, &val_opts, err);
        d->has_val = !rc;
    }
    tl_data_tokenizer any = {.hash = ""}; /* origin "": not known, so any tokenizer passes */
    const tl_data_tokenizer *want = r->tokenizer ? r->tokenizer : &any;
    for (int k = 0; k < (d->mixture ? d->mix.n : r->phases ? 0 : 1) && !rc; k++) { /* all made with one tokenizer, the one given */
        const tl_data_tokenizer *t = d->mixture ? &d->mix.src[k].ds.tok : &d->train.tok;
        rc = tl_data_tokenizer_check(t, want, err) || (d->has_val && tl_data_tokenizer_check(t, &d->val.tok, err));
    }
    if (rc) {
        tl_train_data_close(d);
        return -1;
    }
    d->seq_len = d->mixture ? d->mix.seq_len : d->train.seq_len;
    return 0;
}

void tl_train_data_close(tl_train_data *d) {
    if (d->has_val) tl_dataset_close(&d->val);
    if (d->train_open) tl_dataset_close(&d->train);
    tl_mixture_close(&d->mix);
    d->has_val = d->train_open = 0;
}

tl_eval_task *tl_train_bench_load(const char *task, const char *data, const char *labels, long limit,
                                  const tl_tokenizer *tok, tl_error *err) {
    tl_task_kind kind;
    if (tl_task_from_name(task, &kind, err)) return NULL;
    return tl_eval_task_load(kind, data, labels, limit, tok, TL_EVAL_TOK_HF, err);
}

const tl_engine_kind *tl_train_use_engine(tl_train_opts *o, const char *device, const tl_engine_opts *eo) {
    const tl_engine_kind *kind = device ? tl_engine_find(device) : tl_engine_default();
    if (!kind) return NULL;
    const int cpu = !strcmp(kind->name, "cpu"); /* the CPU engine is the trainer's own (a NULL factory) */
    o->engine = cpu ? NULL : kind->create;
    o->engine_user = (void *)eo; /* the CPU engine reads bf16 */
    return kind;
}

/* train_setup.c - training defaults and what follows from a request (train_setup.h). */
#include "train_setup.h"

#include <string.h>

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

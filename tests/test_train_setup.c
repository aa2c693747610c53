/* test_train_setup.c - the training defaults and what follows from a request:
 * accumulation from the global batch, warmup and decay, evaluation cadence. */
#include <string.h>

#include "harness.h"
#include "train_setup.h"

static tl_train_request req(long batch, long seq_len, long batch_tokens, int world, long steps) {
    tl_train_request rq = tl_train_request_defaults();
    rq.batch = batch, rq.seq_len = seq_len, rq.batch_tokens = batch_tokens, rq.world = world, rq.steps = steps;
    return rq;
}

static void test_defaults(tl_test_ctx *t) {
    /* the defaults train --help promises and TinyLlama's optimizer settings */
    tl_train_request rq = tl_train_request_defaults();
    CHECK(rq.batch == 8 && rq.steps == 1000 && rq.seed == 3407 && rq.world == 1);
    CHECK(rq.eval_batches == 8 && rq.keep == 3 && rq.ckpt_every == 0 && rq.batch_tokens == 0);
    CHECK(rq.opt.lr == 4e-4 && rq.opt.min_lr == 4e-5 && rq.opt.beta1 == 0.9 && rq.opt.beta2 == 0.95);
    CHECK(rq.opt.eps == 1e-8 && rq.opt.weight_decay == 0.1 && rq.opt.clip == 1.0);
    rq.seq_len = 256;
    tl_train_opts o;
    memset(&o, 0, sizeof o);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0);
    CHECK(o.batch == 8 && o.seq_len == 256 && o.accum == 1 && o.steps == 1000 && o.seed == 3407 && o.shuffle == 1);
    CHECK(o.opt.lr == 4e-4 && o.opt.clip == 1.0);
    CHECK(o.keep == 3 && o.eval_batches == 8 && o.ckpt_every == 0);
}

static void test_accumulation(tl_test_ctx *t) {
    tl_train_opts o;
    /* one micro-batch per step without --batch-tokens, on any number of ranks */
    tl_train_request rq = req(4, 64, 0, 3, 10);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.accum == 1);
    /* 2048 tokens = 1 rank x 4 x 64 x 8 */
    rq = req(4, 64, 2048, 1, 10);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.accum == 8);
    /* the global batch is shared by the ranks: 2048 = 4 ranks x 4 x 64 x 2 */
    rq = req(4, 64, 2048, 4, 10);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.accum == 2);
    /* exactly one micro-batch per rank */
    rq = req(4, 64, 1024, 4, 10);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.accum == 1);
}

static void test_accumulation_must_divide(tl_test_ctx *t) {
    tl_train_opts o;
    tl_error err;
    const char *field = NULL;
    /* 96 tokens on 2 ranks of 1 x 32: 96 / 64 is not whole */
    tl_train_request rq = req(1, 32, 96, 2, 10);
    CHECK(tl_train_setup(&rq, &o, &field, &err) == -1);
    CHECK(field && !strcmp(field, "batch_tokens"));
    CHECK_MSG(strstr(err.msg, "96") && strstr(err.msg, "not a multiple of ranks x batch x seq-len = 2 x 32"), "%s",
              err.msg);
    /* smaller than one micro-batch of every rank */
    rq = req(4, 64, 128, 1, 10);
    CHECK(tl_train_setup(&rq, &o, &field, &err) == -1 && field && !strcmp(field, "batch_tokens"));
    /* a seq_len the caller did not resolve */
    rq = req(4, 0, 0, 1, 10);
    CHECK(tl_train_setup(&rq, &o, &field, &err) == -1 && field && !strcmp(field, "seq_len"));
}

static void test_warmup_and_decay(tl_test_ctx *t) {
    tl_train_opts o;
    /* default warmup: a tenth of the steps, at most 2000; decay: the steps */
    tl_train_request rq = req(1, 8, 0, 1, 1000);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 100 && o.opt.decay_steps == 1000);
    rq = req(1, 8, 0, 1, 20000);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 2000 && o.opt.decay_steps == 20000);
    rq = req(1, 8, 0, 1, 50000);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 2000);
    rq = req(1, 8, 0, 1, 9); /* 9 / 10 rounds down to no warmup */
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 0 && o.opt.decay_steps == 9);
    /* given values win, 0 included */
    rq = req(1, 8, 0, 1, 1000);
    rq.warmup = 0, rq.decay_steps = 300;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 0 && o.opt.decay_steps == 300);
    rq.warmup = 7, rq.decay_steps = -1;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.opt.warmup_steps == 7 && o.opt.decay_steps == 1000);
}

static void test_schedule_refused(tl_test_ctx *t) {
    tl_error err;
    const char *field = NULL;
    /* decay before the end of warmup, given or defaulted */
    tl_train_request rq = req(1, 8, 0, 1, 2);
    rq.warmup = 10, rq.decay_steps = 5;
    CHECK(tl_train_request_check(&rq, &field, &err) == -1 && field && !strcmp(field, "decay_steps"));
    CHECK_MSG(strstr(err.msg, "warmup"), "%s", err.msg);
    rq.decay_steps = -1; /* decays over the 2 steps, warms up over 10: the warmup given is the one to blame */
    CHECK(tl_train_request_check(&rq, &field, &err) == -1 && field && !strcmp(field, "warmup"));
    rq.warmup = 2;
    CHECK(tl_train_request_check(&rq, &field, &err) == 0 && field == NULL);
    /* optimizer settings are checked with their field named */
    rq = req(1, 8, 0, 1, 10);
    rq.opt.beta2 = 1.0;
    CHECK(tl_train_request_check(&rq, &field, &err) == -1 && field && !strcmp(field, "beta2"));
    rq = req(1, 8, 0, 1, 10);
    rq.opt.min_lr = 1;
    CHECK(tl_train_request_check(&rq, &field, &err) == -1 && field && !strcmp(field, "min_lr"));
    /* setup refuses what check refuses */
    tl_train_opts o;
    rq = req(1, 8, 0, 1, 10);
    rq.opt.lr = 0;
    CHECK(tl_train_setup(&rq, &o, &field, &err) == -1 && field && !strcmp(field, "lr"));
}

/* The token schedules against values worked out by hand (lr 1e-3, min_lr 1e-4). */
static void test_lr_by_tokens(tl_test_ctx *t) {
    tl_adamw_config c = tl_adamw_defaults();
    c.lr = 1e-3, c.min_lr = 1e-4;
    tl_lr_schedule cos_s = {.kind = TL_SCHED_COSINE, .warmup = 1000, .decay = 5000};
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 0, 250), 2.5e-4, 0, 1e-12);   /* 250 / 1000 of the warmup */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 750, 1000), 1e-3, 0, 1e-12);  /* its last step reaches lr */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 900, 1300), 1e-3, 0, 1e-12);  /* a batch across its end: no overshoot */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 1000, 1100), 1e-3, 0, 1e-12); /* cos 0 */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 2000, 2100), 8.68198051533946e-4, 0, 1e-12); /* cos(pi/4) */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 3000, 3100), 5.5e-4, 0, 1e-12);               /* cos(pi/2) */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 5000, 5100), 1e-4, 0, 1e-12);
    CHECK_CLOSE(tl_lr_at_tokens(&c, &cos_s, 9000, 9100), 1e-4, 0, 1e-12);
    /* after the warmup the rate depends on the tokens only, not on the step's batch */
    CHECK(tl_lr_at_tokens(&c, &cos_s, 2345, 2445) == tl_lr_at_tokens(&c, &cos_s, 2345, 6345));
    tl_lr_schedule wsd = {.kind = TL_SCHED_WSD, .warmup = 1000, .decay = 10000, .cooldown = 4000};
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 500, 600), 6e-4, 0, 1e-12);
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 3000, 3100), 1e-3, 0, 1e-12);  /* stable */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 6000, 6100), 1e-3, 0, 1e-12);  /* the cooldown starts at 6000 */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 8000, 8100), 5.5e-4, 0, 1e-12); /* linear, halfway */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 9000, 9100), 3.25e-4, 0, 1e-12);
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 10000, 10100), 1e-4, 0, 1e-12);
    wsd.shape = TL_COOLDOWN_SQRT;
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 7000, 7100), 5.5e-4, 0, 1e-12);                /* 1 - sqrt(1/4) */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 8000, 8100), 3.63603896932107e-4, 0, 1e-12);  /* 1 - sqrt(1/2) */
    CHECK_CLOSE(tl_lr_at_tokens(&c, &wsd, 12000, 12100), 1e-4, 0, 1e-12);
    /* a fixed batch gives the step schedule bit for bit (exact resume of older runs) */
    c.warmup_steps = 200, c.decay_steps = 2500;
    const double tps = 24576; /* 3 x 8 x 1024: not a power of two */
    tl_lr_schedule st = {.kind = TL_SCHED_COSINE, .warmup = 200 * tps, .decay = 2500 * tps};
    int same = 1;
    for (long s = 0; s < 3000; s++) same &= tl_lr_at(&c, s) == tl_lr_at_tokens(&c, &st, (double)s * tps, (double)(s + 1) * tps);
    CHECK(same);
    /* refused schedules name the setting */
    const char *field = NULL;
    tl_error err;
    tl_lr_schedule bad = {.kind = TL_SCHED_WSD, .warmup = 100, .decay = 50};
    CHECK(tl_lr_schedule_validate(&bad, &field, &err) == -1 && field && !strcmp(field, "decay"));
    bad.decay = 1000, bad.cooldown = 901;
    CHECK(tl_lr_schedule_validate(&bad, &field, &err) == -1 && field && !strcmp(field, "cooldown"));
    bad.cooldown = 900;
    CHECK(tl_lr_schedule_validate(&bad, &field, &err) == 0 && field == NULL);
    bad.warmup = -1;
    CHECK(tl_lr_schedule_validate(&bad, &field, &err) == -1 && field && !strcmp(field, "warmup"));
}

/* The spike detector's z-score against values worked out by hand. */
static void test_loss_window(tl_test_ctx *t) {
    tl_loss_window w;
    tl_loss_window_init(&w, 5);
    for (int i = 1; i <= 4; i++) tl_loss_window_push(&w, i);
    CHECK(tl_loss_window_z(&w, 100) == 0); /* fewer than min(window, 8) losses: no judgement */
    tl_loss_window_push(&w, 5);            /* 1..5: mean 3, standard deviation sqrt(2) */
    CHECK_CLOSE(tl_loss_window_z(&w, 10), 4.949747468305833, 0, 1e-12);
    CHECK_CLOSE(tl_loss_window_z(&w, 2), -0.7071067811865476, 0, 1e-12);
    tl_loss_window_push(&w, 6); /* the oldest leaves: 2..6, mean 4 */
    CHECK_CLOSE(tl_loss_window_z(&w, 6), 1.414213562373095, 0, 1e-12);
    tl_loss_window_init(&w, 8);
    for (int i = 0; i < 8; i++) tl_loss_window_push(&w, 3.0);
    CHECK(tl_loss_window_z(&w, 50) == 0); /* all equal: no spread to measure against */
    /* the request refuses bad settings by name */
    tl_train_request rq = req(1, 8, 0, 1, 10);
    tl_train_opts o;
    const char *field = NULL;
    rq.spike_z = -1;
    CHECK(tl_train_setup(&rq, &o, &field, NULL) == -1 && field && !strcmp(field, "spike_z"));
    rq.spike_z = 6, rq.max_skips = 3;
    CHECK(tl_train_setup(&rq, &o, &field, NULL) == 0 && o.spike_z == 6 && o.spike_window == 100 && o.max_skips == 3);
}

static void test_eval_and_bench_cadence(tl_test_ctx *t) {
    tl_train_opts o;
    /* validation every 100 steps when there is validation data, never without */
    tl_train_request rq = req(1, 8, 0, 1, 10);
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 0 && o.bench_every == 100);
    rq.has_val = 1;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 100 && o.bench_every == 100);
    /* --eval-every also paces the benchmarks, even without validation data */
    rq.eval_every = 25;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 25 && o.bench_every == 25);
    rq.has_val = 0;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 0 && o.bench_every == 25);
    /* --eval-every 0 turns validation off; benchmarks keep their default */
    rq.has_val = 1, rq.eval_every = 0;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 0 && o.bench_every == 100);
    /* --bench-every wins */
    rq.eval_every = 25, rq.bench_every = 7;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.eval_every == 25 && o.bench_every == 7);
    /* --sequential reads in file order */
    rq.sequential = 1;
    CHECK(tl_train_setup(&rq, &o, NULL, NULL) == 0 && o.shuffle == 0);
}

const tl_test tests_train_setup[] = {
    {"train_setup/defaults", test_defaults},
    {"train_setup/accumulation", test_accumulation},
    {"train_setup/accumulation_must_divide", test_accumulation_must_divide},
    {"train_setup/warmup_and_decay", test_warmup_and_decay},
    {"train_setup/schedule_refused", test_schedule_refused},
    {"train_setup/eval_and_bench_cadence", test_eval_and_bench_cadence},
    {"train_setup/lr_by_tokens", test_lr_by_tokens},
    {"train_setup/loss_window", test_loss_window},
    {NULL, NULL},
};

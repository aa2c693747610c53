/* test_train_setup.c - the training defaults and what follows from a request:
 * accumulation from the global batch, warmup and decay, evaluation cadence. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "prepare.h"
#include "tokenizer.h"
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

static void test_threads(tl_test_ctx *t) {
    /* a checkpoint written by a run on 3 threads (its train_args.json, as the trainer writes it) */
    char ck[512], path[600];
    snprintf(ck, sizeof ck, "%s/threads_ckpt", tl_test_tmpdir());
    mkdir(ck, 0755);
    snprintf(path, sizeof path, "%s/train_args.json", ck);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("{\"threads\": 3, \"batch\": 2}\n", f);
    fclose(f);
    long n = -7;
    /* asked for: always that */
    CHECK(tl_train_threads(5, ck, 1, &n) == TL_THREADS_GIVEN && n == 5);
    CHECK(tl_train_threads(5, NULL, 4, &n) == TL_THREADS_GIVEN && n == 5);
    /* resumed: the checkpoint's count, in a job too */
    CHECK(tl_train_threads(0, ck, 1, &n) == TL_THREADS_GIVEN && n == 3);
    CHECK(tl_train_threads(0, ck, 2, &n) == TL_THREADS_GIVEN && n == 3);
    /* a new run: the free cores alone, all cores as a rank of a job */
    CHECK(tl_train_threads(0, NULL, 1, &n) == TL_THREADS_FREE_CORES && n == 0);
    CHECK(tl_train_threads(0, "", 1, &n) == TL_THREADS_FREE_CORES);
    CHECK(tl_train_threads(0, NULL, 2, &n) == TL_THREADS_ALL && n == 0);
    /* a checkpoint without the count (an older run): as a new run */
    f = fopen(path, "w");
    if (f) fputs("{\"batch\": 2}\n", f), fclose(f);
    CHECK(tl_train_threads(0, ck, 1, &n) == TL_THREADS_FREE_CORES);
    remove(path);
    rmdir(ck);
}

static void test_seq_len_and_ramp(tl_test_ctx *t) {
    /* asked for wins; else the data's, at most the model's context */
    CHECK(tl_train_seq_len(32, 128, 64) == 32);
    CHECK(tl_train_seq_len(0, 128, 64) == 64);
    CHECK(tl_train_seq_len(0, 48, 64) == 48);
    /* the ramp in samples of the length training reads */
    CHECK(tl_train_ramp_samples(1000, 10, 50, 64) == 100);
    CHECK(tl_train_ramp_samples(1000, 0, 50, 64) == 20);  /* the shortest source's length */
    CHECK(tl_train_ramp_samples(1000, 0, 500, 100) == 10); /* at most the context */
    CHECK(tl_train_ramp_samples(0, 0, 50, 64) == 0);
}

static void test_model_open(tl_test_ctx *t) {
    tl_error err;
    const char *field = "x";
    tl_model m;
    tl_config demo, test_cfg;
    CHECK(tl_config_preset("demo", &demo, &err) == 0 && tl_config_preset("test", &test_cfg, &err) == 0);
    /* nothing named: a new model of the demo preset, its weights from the seed */
    tl_train_model_request rq = {.seed = 5};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 0 && field == NULL);
    CHECK(tl_config_diff(&m.cfg, &demo, NULL, 0) == 0);
    tl_model_free(&m);
    /* a preset with its vocabulary replaced */
    rq = (tl_train_model_request){.preset = "test", .vocab_size = 300, .seed = 5};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 0 && m.cfg.vocab_size == 300 &&
          m.cfg.dim == test_cfg.dim);
    float w0 = m.params[0];
    tl_model_free(&m);
    rq.seed = 6; /* another seed, other weights */
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 0 && m.params[0] != w0);
    /* a checkpoint of it: resume and init load it */
    char ck[512];
    snprintf(ck, sizeof ck, "%s/model_open_ckpt", tl_test_tmpdir());
    CHECK(tl_model_save_hf(ck, &m, &err) == 0);
    float w1 = m.params[0];
    tl_model_free(&m);
    rq = (tl_train_model_request){.resume_dir = ck, .preset = "test"}; /* its preset: fine, vocabulary aside */
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 0 && m.cfg.vocab_size == 300 && m.params[0] == w1);
    tl_model_free(&m);
    rq = (tl_train_model_request){.init = ck, .vocab_size = 300};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 0 && m.params[0] == w1);
    tl_model_free(&m);
    /* contradictions: another preset, another vocabulary */
    rq = (tl_train_model_request){.resume_dir = ck, .preset = "demo"};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 1 && field && !strcmp(field, "preset"));
    CHECK_MSG(strstr(err.msg, " vs "), "%s", err.msg);
    rq = (tl_train_model_request){.resume_dir = ck, .vocab_size = 301};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 1 && field && !strcmp(field, "vocab_size"));
    CHECK_MSG(strstr(err.msg, "300"), "%s", err.msg);
    rq = (tl_train_model_request){.init = ck, .vocab_size = 301};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == 1 && field && !strcmp(field, "vocab_size"));
    /* errors */
    rq = (tl_train_model_request){.preset = "no-such-preset"};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == -1);
    rq = (tl_train_model_request){.resume_dir = "/nonexistent/ckpt"};
    CHECK(tl_train_model_open(&m, &rq, &field, &err) == -1);
}

/* A byte-level data set of samples of seq_len + 1 tokens in dir (train-* and val-*). */
static int byte_data(tl_test_ctx *t, const char *dir, int seq_len) {
    char txt[600];
    snprintf(txt, sizeof txt, "%s.txt", dir);
    FILE *f = fopen(txt, "w");
    if (!f) return -1;
    for (int i = 0; i < 200; i++) fprintf(f, "line %d of a small corpus for the data tests\n", i);
    fclose(f);
    tl_prepare_opts o;
    tl_prepare_default_opts(&o);
    const char *in[1] = {txt};
    o.byte_level = 1, o.seq_len = seq_len, o.val_fraction = 0.1, o.split_by = TL_SPLIT_SAMPLES;
    o.out_dir = dir, o.inputs = in, o.n_inputs = 1, o.progress_every = 1e9;
    tl_prepare_result r;
    tl_error e;
    int rc = tl_prepare_run(&o, &r, &e);
    CHECK_MSG(rc == 0, "prepare %s: %s", dir, e.msg);
    if (!rc) tl_prepare_result_free(&r);
    return rc;
}

static void test_data_open(tl_test_ctx *t) {
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/data_a", tl_test_tmpdir());
    snprintf(b, sizeof b, "%s/data_b", tl_test_tmpdir());
    if (byte_data(t, a, 16) || byte_data(t, b, 32)) return;
    tl_error err;
    tl_train_request rq = req(2, 0, 0, 1, 10);
    tl_train_data d;
    /* a directory: its training shards; as validation data: its val-* shards */
    const char *paths[1] = {a};
    tl_train_data_request r = {.data = paths, .n_data = 1, .val = paths, .n_val = 1};
    CHECK_MSG(tl_train_data_open(&d, &r, &rq, 0, 64, &err) == 0, "%s", err.msg);
    CHECK(!d.mixture && d.has_val && d.seq_len == 16 && d.train.n_samples > d.val.n_samples && d.val.n_samples > 0);
    tl_train_data_close(&d);
    /* a mixture: its shortest source's samples; the ramp counted in samples of that length */
    tl_train_source src[2] = {{"a", 0.25, 0.75, a}, {"b", 0.75, -1, b}};
    r = (tl_train_data_request){.sources = src, .n_sources = 2, .ramp_tokens = 1600};
    CHECK_MSG(tl_train_data_open(&d, &r, &rq, 0, 64, &err) == 0, "%s", err.msg);
    CHECK(d.mixture && !d.has_val && d.seq_len == 16 && d.mix.n == 2 && d.mix.ramp == 100);
    tl_train_data_close(&d);
    rq.seq_len = 8; /* training reads 8 tokens of each sample */
    CHECK(tl_train_data_open(&d, &r, &rq, 0, 64, &err) == 0 && d.mix.ramp == 200);
    tl_train_data_close(&d);
    /* data prepared with another tokenizer than the one given is refused */
    char tok[600];
    snprintf(tok, sizeof tok, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    tl_data_tokenizer id;
    CHECK_MSG(tl_train_tokenizer_identify(tok, 1 << 20, &id, &err) == 0, "%s", err.msg);
    r = (tl_train_data_request){.data = paths, .n_data = 1, .tokenizer = &id};
    CHECK(tl_train_data_open(&d, &r, &rq, 0, 64, &err) == -1);
    CHECK_MSG(strstr(err.msg, "small_bpe") && strstr(err.msg, "byte-level"), "%s", err.msg);
    /* missing data */
    const char *none[1] = {"/nonexistent/shards"};
    r = (tl_train_data_request){.data = none, .n_data = 1};
    CHECK(tl_train_data_open(&d, &r, &rq, 0, 64, &err) == -1);
}

static void test_tokenizer_identify(tl_test_ctx *t) {
    char tok[600];
    snprintf(tok, sizeof tok, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    tl_error err;
    tl_tokenizer *tk = tl_tokenizer_load(tok, &err);
    CHECK(tk != NULL);
    if (!tk) return;
    int n = tl_tokenizer_vocab_size(tk);
    tl_tokenizer_free(tk);
    tl_data_tokenizer id;
    /* the pieces must fit the model's vocabulary, exactly filling it is fine */
    CHECK(tl_train_tokenizer_identify(tok, n, &id, &err) == 0 && id.vocab_size == n);
    CHECK(tl_train_tokenizer_identify(tok, n - 1, &id, &err) == 1);
    CHECK_MSG(strstr(err.msg, "do not fit"), "%s", err.msg);
    CHECK(tl_train_tokenizer_identify("/nonexistent/tokenizer.model", n, &id, &err) == -1);
}

static void test_bench_load(tl_test_ctx *t) {
    char tp[600], data[600], labels[600];
    snprintf(tp, sizeof tp, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    snprintf(data, sizeof data, "%s/eval/piqa.jsonl", tl_test_fixture_dir());
    snprintf(labels, sizeof labels, "%s/eval/piqa-labels.lst", tl_test_fixture_dir());
    tl_error err;
    tl_tokenizer *tok = tl_tokenizer_load(tp, &err);
    CHECK(tok != NULL);
    if (!tok) return;
    /* training scores as lm-evaluation-harness does with HF tokenizers */
    tl_eval_task *a = tl_train_bench_load("piqa", data, labels, 3, tok, &err);
    CHECK_MSG(a != NULL, "%s", err.msg);
    if (a) CHECK(a->kind == TL_TASK_PIQA && a->n_docs == 3 && a->tok_mode == TL_EVAL_TOK_HF);
    tl_eval_task_free(a);
    CHECK(tl_train_bench_load("no_such_task", data, NULL, 0, tok, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "no_such_task"), "%s", err.msg);
    CHECK(tl_train_bench_load("piqa", data, NULL, 0, tok, &err) == NULL); /* piqa needs its labels */
    tl_tokenizer_free(tok);
}

static void test_use_engine(tl_test_ctx *t) {
    tl_train_opts o;
    memset(&o, 0, sizeof o);
    tl_engine_opts eo = {.fp32 = 1};
    /* the CPU engine is the trainer's own: no factory, the options (its precision) passed on */
    const tl_engine_kind *k = tl_train_use_engine(&o, "cpu", &eo);
    CHECK(k && !strcmp(k->name, "cpu") && o.engine == NULL && o.engine_user == &eo);
    CHECK(tl_train_use_engine(&o, "no-such-engine", &eo) == NULL);
    /* none named: the build's default, a GPU engine with its options when there is one */
    k = tl_train_use_engine(&o, NULL, &eo);
    CHECK(k == tl_engine_default());
    if (k && strcmp(k->name, "cpu")) CHECK(o.engine == k->create && o.engine_user == &eo);
    /* a CUDA build: naming it sets its factory; back to the CPU one clears it */
    const tl_engine_kind *cuda = tl_engine_find("cuda");
    if (cuda) {
        CHECK(tl_train_use_engine(&o, "cuda", &eo) == cuda && o.engine == cuda->create && o.engine_user == &eo);
        CHECK(tl_train_use_engine(&o, "cpu", &eo) && o.engine == NULL);
    }
}

const tl_test tests_train_setup[] = {
    {"train_setup/use_engine", test_use_engine},
    {"train_setup/bench_load", test_bench_load},
    {"train_setup/data_open", test_data_open},
    {"train_setup/tokenizer_identify", test_tokenizer_identify},
    {"train_setup/model_open", test_model_open},
    {"train_setup/threads", test_threads},
    {"train_setup/seq_len_and_ramp", test_seq_len_and_ramp},
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

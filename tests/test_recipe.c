/* test_recipe.c - training recipe files: what a recipe sets, the errors that name
 * the file, line and key, and the phases it turns into (steps, accumulation, data). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "harness.h"
#include "recipe.h"

static const char GOOD[] =
    "# a comment\n"
    "model: {preset: test, vocab_size: 300}\n"
    "micro_batch: 2\n"
    "seq_len: 4\n"
    "seed: 11\n"
    "optimizer:\n"
    "  lr: 2e-3\n"
    "  min_lr: 1e-4\n"
    "  clip: 0.5\n"
    "schedule:\n"
    "  kind: wsd\n"
    "  warmup_tokens: 16\n"
    "  cooldown_tokens: 1K\n"
    "  cooldown: 1-sqrt\n"
    "phases:\n"
    "  - name: base\n"
    "    tokens: 1.5T\n"
    "    batch_tokens: 16\n"
    "    sources:\n"
    "      - {name: a, path: A, weight: 1}\n"
    "  - name: domain\n"
    "    tokens: 6B\n"
    "    ramp_tokens: 40\n"
    "    lr: 5e-4\n"
    "    sources:\n"
    "      - {name: a, path: A, weight: 3}\n"
    "      - {name: b, path: B, weight: 1, start_weight: 0}\n"
    "  - tokens: 64\n"
    "    batch_tokens: 32\n";

static void test_parse(tl_test_ctx *t) {
    tl_recipe r;
    tl_train_request rq = tl_train_request_defaults();
    tl_error err;
    int rc = tl_recipe_parse(GOOD, sizeof GOOD - 1, "good.yaml", &r, &rq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    CHECK(!strcmp(r.preset, "test") && r.vocab_size == 300 && !r.config[0] && !r.init[0]);
    CHECK(rq.batch == 2 && rq.seq_len == 4 && rq.seed == 11 && rq.steps == 0);
    CHECK(rq.opt.lr == 2e-3 && rq.opt.min_lr == 1e-4 && rq.opt.clip == 0.5 && rq.opt.beta2 == 0.95); /* the rest: defaults */
    CHECK(r.sched.kind == TL_SCHED_WSD && r.sched.warmup == 16 && r.sched.cooldown == 1000 &&
          r.sched.shape == TL_COOLDOWN_SQRT && r.warmup_given && r.sched.decay == 0);
    CHECK(r.n_phases == 3);
    CHECK(!strcmp(r.phase[0].name, "base") && r.phase[0].tokens == 1.5e12 && r.phase[0].batch_tokens == 16);
    CHECK(r.phase[0].n_sources == 1 && !strcmp(r.phase[0].src[0].path, "A") && r.phase[0].src[0].start_weight < 0);
    CHECK(r.phase[1].tokens == 6e9 && r.phase[1].ramp_tokens == 40 && r.phase[1].lr == 5e-4 && r.phase[1].batch_tokens == 0);
    CHECK(r.phase[1].n_sources == 2 && r.phase[1].src[1].weight == 1 && r.phase[1].src[1].start_weight == 0);
    CHECK(!strcmp(r.phase[2].name, "phase3") && r.phase[2].n_sources == 0 && r.phase[2].line == 28);
    static const char VAL[] = "eval_every: 4\neval_batches: 3\nvalidation:\n  - {name: a, path: VA}\n  - {name: b, path: VB}\n"
                              "phases: [{tokens: 8, sources: [{name: a, path: A, weight: 1}]}]\n";
    rq = tl_train_request_defaults();
    rc = tl_recipe_parse(VAL, sizeof VAL - 1, "val.yaml", &r, &rq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(rc || (rq.eval_every == 4 && rq.eval_batches == 3 && r.n_val == 2 && !strcmp(r.val[1].name, "b") &&
                 !strcmp(r.val[1].path, "VB")));
    /* sets named by a phase and by a source join the list; a name given again with its path is one set */
    static const char PV[] = "validation: [{name: a, path: VA}]\n"
                             "phases:\n"
                             "  - tokens: 8\n"
                             "    sources: [{name: a, path: A, weight: 1, validation: VA}]\n"
                             "  - tokens: 8\n"
                             "    validation: {c: VC}\n"
                             "    sources:\n"
                             "      - {name: a, path: A, weight: 1}\n"
                             "      - {name: b, path: B, weight: 1, validation: VB}\n"
                             "  - {tokens: 8, validation: {b: VB}}\n";
    rq = tl_train_request_defaults();
    rc = tl_recipe_parse(PV, sizeof PV - 1, "pv.yaml", &r, &rq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_MSG(rc || (r.n_val == 3 && !strcmp(r.val[0].name, "a") && !strcmp(r.val[0].path, "VA") &&
                     !strcmp(r.val[1].name, "b") && !strcmp(r.val[1].path, "VB") && r.val[1].line == 9 &&
                     !strcmp(r.val[1].key, "phases[1] (phase2).sources[1].validation") &&
                     !strcmp(r.val[2].name, "c") && !strcmp(r.val[2].path, "VC") && r.val[2].line == 6),
              "%d sets", r.n_val);
}

/* Each bad recipe is refused with FILE:LINE: KEY and the reason; the request stays as it was. */
static void test_refused(tl_test_ctx *t) {
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"phases:\n  - tokens: 10\n    sources: [{name: a, path: A, weight: 1}]\n    bogus: 1\n",
         "r.yaml:4: phases[0]: unknown key 'bogus'"},
        {"phases:\n  - tokens: -10\n", "r.yaml:2: phases[0] (phase1).tokens: must be a whole number >= 1"},
        {"seq_len: ten\nphases: []\n", "r.yaml:1: seq_len: must be a number, got 'ten'"},
        {"seq_len: [1]\n", "r.yaml:1: seq_len: must be a number"},
        {"phases:\n  - tokens: 8\n    sources:\n      - {name: a, path: A, weight: 0}\n",
         "r.yaml:4: phases[0] (phase1).sources: the weights must sum to a positive number"},
        {"phases:\n  - tokens: 8\n    sources:\n      - {name: a, path: A, weight: -1}\n",
         "r.yaml:4: phases[0] (phase1).sources[0].weight: must not be negative"},
        {"phases:\n  - tokens: 8\n    sources:\n      - {name: a, weight: 1}\n",
         "phases[0] (phase1).sources[0].path: missing"},
        {"phases:\n  - tokens: 8\n", "r.yaml:2: phases[0] (phase1): the first phase must list its sources"},
        {"optimizer: {lr: 1e-3, min_lr: 1}\nphases: []\n", "r.yaml:1: optimizer.min_lr: min_lr must be in"},
        {"schedule: {kind: step}\n", "r.yaml:1: schedule.kind: must be cosine or wsd"},
        {"schedule: {cooldown_tokens: 5}\n", "schedule: cooldown and cooldown_tokens belong to kind: wsd"},
        {"phases: [\n", "r.yaml:2:1: not valid YAML"},
        {"model: {preset: a, config: b}\n", "model: give at most one of preset, config, init"},
        {"micro_batch: 2\nmicro_batch: 3\n", "r.yaml:2: recipe: key 'micro_batch' given twice"},
        {"", "r.yaml: empty recipe"},
        {"validation: [{name: a, path: A}, {name: a, path: B}]\n", "r.yaml:1: validation[1].name: given twice"},
        {"validation: {name: a}\n", "r.yaml:1: validation: must be a list"},
        {"phases:\n  - name: 'a b'\n", "phases[0] (a b).name: use letters"},
        {"schedule: {warmup_tokens: 100}\nphases:\n  - tokens: 50\n    sources: [{name: a, path: A, weight: 1}]\n",
         "r.yaml:1: schedule.decay_tokens: schedule decay must be at least the warmup"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1, validation: VX}]\n    validation: {a: VY}\n",
         "r.yaml:4: phases[0] (phase1).validation.a: validation set 'a' is VY here but VX at line 3"},
        {"validation: [{name: a, path: VX}]\nphases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1, validation: V}]\n",
         "r.yaml:4: phases[0] (phase1).sources[0].validation: validation set 'a' is V here but VX at line 1"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1}]\n    validation: [VA]\n",
         "r.yaml:4: phases[0] (phase1).validation: must be a mapping of name: path"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1}]\n    validation: {a b: V}\n",
         "r.yaml:4: phases[0] (phase1).validation.a b: validation set 'a b': use letters"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1}]\n    validation: {a: [V]}\n",
         "r.yaml:4: phases[0] (phase1).validation.a: must be a non-empty string"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1}]\n    validation: {a: V, a: V}\n",
         "r.yaml:4: phases[0] (phase1).validation: validation set 'a' given twice"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1, validation: {x: V}}]\n",
         "r.yaml:3: phases[0] (phase1).sources[0].validation: must be a non-empty string"},
        {"phases:\n  - tokens: 8\n    sources: [{name: a, path: A, weight: 1}]\n"
         "    validation: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}\n",
         "r.yaml:4: phases[0] (phase1).validation.i: at most 8 validation sets in a recipe"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_recipe r;
        tl_train_request rq = tl_train_request_defaults();
        tl_error err;
        err.msg[0] = 0;
        int rc = tl_recipe_parse(bad[i].text, strlen(bad[i].text), "r.yaml", &r, &rq, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, bad[i].want), "recipe %zu: want '%s', got '%s'", i, bad[i].want,
                  rc ? err.msg : "(accepted)");
        CHECK(rq.batch == 8 && rq.steps == 1000);
    }
}

/* n samples of 4 tokens [tag, i, 0, 0] in DIR/shard-00000.bin */
static void make_shard(const char *dir, int tag, int n) {
    mkdir(dir, 0755);
    char path[600];
    snprintf(path, sizeof path, "%s/shard-00000.bin", dir);
    tl_shard_writer w;
    tl_error e;
    if (tl_shard_writer_open(&w, path, 3, 1000, &e)) return;
    for (int i = 0; i < n; i++) {
        int tok[4] = {tag, i, 0, 0};
        tl_shard_writer_add(&w, tok, 4, &e);
    }
    tl_shard_writer_close(&w, NULL, &e);
}

/* Phases become steps (tokens / batch, rounded up), accumulation (batch / micro-batch
 * tokens) and mixtures; a source taken over continues after the samples read before. */
static void test_setup(tl_test_ctx *t) {
    char a[512], b[512], text[4096];
    snprintf(a, sizeof a, "%s/recipe_a", tl_test_tmpdir());
    snprintf(b, sizeof b, "%s/recipe_b", tl_test_tmpdir());
    make_shard(a, 1, 500);
    make_shard(b, 2, 500);
    snprintf(text, sizeof text,
             "micro_batch: 2\nseq_len: 3\nschedule: {warmup_tokens: 6}\nphases:\n"
             "  - {name: one, tokens: 60, batch_tokens: 6, sources: [{name: a, path: %s, weight: 1}]}\n"
             "  - name: two\n    tokens: 61\n    ramp_tokens: 30\n    sources:\n"
             "      - {name: a, path: %s, weight: 1}\n      - {name: b, path: %s, weight: 1, start_weight: 0}\n"
             "  - {name: three, tokens: 48, batch_tokens: 24}\n",
             a, a, b);
    tl_recipe r;
    tl_train_request rq = tl_train_request_defaults();
    tl_error err;
    int rc = tl_recipe_parse(text, strlen(text), "s.yaml", &r, &rq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    static tl_recipe_run run;
    tl_train_opts o;
    memset(&o, 0, sizeof o);
    const tl_dataset_opts dopts = {0};
    rc = tl_recipe_setup(&r, &rq, &dopts, 0, &run, &o, NULL, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    CHECK(run.n == 3 && o.n_phases == 3 && o.phases == run.phase && o.by_tokens && o.mixture == NULL);
    CHECK(run.phase[0].steps == 10 && run.phase[0].accum == 1);  /* 60 / 6 */
    CHECK(run.phase[1].steps == 11 && run.phase[1].accum == 1);  /* 61 / 6, rounded up; the batch carries over */
    CHECK(run.phase[2].steps == 2 && run.phase[2].accum == 4);   /* 24 / (2 x 3) */
    CHECK(o.steps == 23 && o.accum == 1 && o.batch == 2 && o.seq_len == 3);
    CHECK(o.sched.warmup == 6 && o.sched.decay == 60 + 66 + 48); /* decay: the tokens the steps read */
    CHECK(run.mix[1].ramp == 10 && run.mix[2].ramp == 0);       /* 30 tokens of 3-token samples */
    /* phase two's a continues after phase one's 20 samples; phase three's after both phases' */
    CHECK(run.mix[0].src[0].offset == 0 && run.mix[1].src[0].offset == 20 && run.mix[1].src[1].offset == 0);
    uint64_t a2 = tl_mixture_count(&run.mix[1], 0, 22), b2 = tl_mixture_count(&run.mix[1], 1, 22);
    CHECK(a2 + b2 == 22 && b2 > 0);
    CHECK(run.mix[2].src[0].offset == 20 + a2 && run.mix[2].src[1].offset == b2);
    tl_recipe_run_close(&run);
    /* --steps stops early, --batch-tokens replaces every phase's batch */
    rq.steps = 5, rq.batch_tokens = 12;
    rc = tl_recipe_setup(&r, &rq, &dopts, 0, &run, &o, NULL, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(o.steps == 5 && run.phase[0].accum == 2 && run.phase[2].accum == 2 && run.phase[0].steps == 5);
    tl_recipe_run_close(&run);
    /* a batch that the ranks do not divide names the phase and the key */
    rq.steps = 0, rq.batch_tokens = 0, rq.world = 4;
    const char *field = NULL;
    CHECK(tl_recipe_setup(&r, &rq, &dopts, 0, &run, &o, &field, &err) == -1 && field && !strcmp(field, "batch_tokens"));
    CHECK_MSG(strstr(err.msg, "s.yaml:5: phases[0] (one).batch_tokens: 6 tokens is not a multiple"), "%s", err.msg);
    /* the validation sets of every phase and source, all given to the trainer; one that cannot be opened
     * is named by its place in the file */
    snprintf(text, sizeof text,
             "micro_batch: 2\nseq_len: 3\nphases:\n"
             "  - {name: one, tokens: 12, batch_tokens: 6, sources: [{name: a, path: %s, weight: 1}],\n"
             "     validation: {va: %s/shard-00000.bin}}\n"
             "  - name: two\n    tokens: 12\n    sources:\n"
             "      - {name: b, path: %s, weight: 1, validation: %s/shard-00000.bin}\n",
             a, a, b, b);
    rq = tl_train_request_defaults();
    rc = tl_recipe_parse(text, strlen(text), "v.yaml", &r, &rq, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    rc = tl_recipe_setup(&r, &rq, &dopts, 0, &run, &o, NULL, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    CHECK(o.n_val_sets == 2 && !strcmp(o.val_names[0], "va") && !strcmp(o.val_names[1], "b"));
    CHECK(o.val_sets[0]->n_samples == 500 && o.val_sets[1]->n_samples == 500);
    tl_recipe_run_close(&run);
    snprintf(r.val[1].path, sizeof r.val[1].path, "%s/none", b);
    CHECK(tl_recipe_setup(&r, &rq, &dopts, 0, &run, &o, NULL, &err) == -1);
    CHECK_MSG(strstr(err.msg, "v.yaml:9: phases[1] (two).sources[0].validation: validation set 'b': ") &&
                  strstr(err.msg, "none"), "%s", err.msg);
}

const tl_test tests_recipe[] = {
    {"recipe/parse", test_parse},
    {"recipe/refused", test_refused},
    {"recipe/setup", test_setup},
    {NULL, NULL},
};

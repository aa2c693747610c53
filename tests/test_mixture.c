/* test_mixture.c - the weighted source mixture: proportions, determinism, rank
 * disjointness, epochs, O(1) resume, weight ramps, and training resume. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "harness.h"
#include "mixture.h"
#include "train.h"

/* Writes n samples of 4 tokens [tag, k % 1000, k / 1000, 7] into DIR/shard-0000i.bin,
 * split over `shards` files, so every sample names its source and number. */
static const char *make_source(const char *name, int tag, int n, int shards) {
    static char dirs[8][512];
    static int k;
    char *dir = dirs[k++ % 8];
    snprintf(dir, sizeof dirs[0], "%s/mix_%s", tl_test_tmpdir(), name);
    mkdir(dir, 0755);
    int per = (n + shards - 1) / shards;
    for (int s = 0, i = 0; s < shards; s++) {
        char path[600];
        snprintf(path, sizeof path, "%s/shard-%05d.bin", dir, s);
        tl_shard_writer w;
        tl_error e;
        if (tl_shard_writer_open(&w, path, 3, 1000, &e)) return dir;
        for (int j = 0; j < per && i < n; j++, i++) {
            int tok[4] = {tag, i % 1000, i / 1000, 7};
            tl_shard_writer_add(&w, tok, 4, &e);
        }
        tl_shard_writer_close(&w, NULL, &e);
    }
    return dir;
}

typedef struct {
    const char *name;
    int tag, n, shards;
    double w, start;
} src_spec;

static int open_mix(tl_test_ctx *t, tl_mixture *m, const src_spec *sp, int n, uint64_t seed, int rank, int world,
                    uint64_t ramp) {
    tl_mixture_init(m);
    tl_error e;
    for (int i = 0; i < n; i++) {
        const char *dir = make_source(sp[i].name, sp[i].tag, sp[i].n, sp[i].shards);
        const char *p[1] = {dir};
        if (tl_mixture_add(m, sp[i].name, sp[i].w, sp[i].start, p, 1, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            tl_mixture_close(m);
            return -1;
        }
    }
    int rc = tl_mixture_finish(m, seed, 1, rank, world, ramp, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    return rc;
}

/* Draws n samples; ids[i] = tag * 1000000 + sample number. */
static int draw(tl_test_ctx *t, tl_mixture *m, int n, long *ids) {
    int tok[4 * 16];
    tl_error e;
    for (int i = 0; i < n;) {
        int b = n - i < 16 ? n - i : 16;
        if (tl_mixture_next(m, b, 3, tok, NULL, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            return -1;
        }
        for (int j = 0; j < b; j++) ids[i + j] = (long)tok[4 * j] * 1000000 + tok[4 * j + 1] + 1000L * tok[4 * j + 2];
        i += b;
    }
    return 0;
}

static const src_spec TINY[2] = {{"slimpajama", 1, 3000, 3, 0.693584, -1}, {"starcoder", 2, 1500, 1, 0.306416, -1}};

/* Each prefix of the stream holds each source's share within 1 + (number of
 * sources) samples: far inside the binomial spread of independent draws
 * (about 46 samples for 10000 draws at 0.69), stated in mixture.h. */
static void test_proportions(tl_test_ctx *t) {
    tl_mixture m;
    if (open_mix(t, &m, TINY, 2, 3407, 0, 1, 0)) return;
    enum { N = 10000 };
    long *ids = malloc(sizeof(long) * N);
    if (!draw(t, &m, N, ids)) {
        long count = 0, worst = 0;
        for (int i = 0; i < N; i++) {
            count += ids[i] / 1000000 == 1;
            double dev = (double)count - 0.693584 * (i + 1);
            if (dev < 0) dev = -dev;
            if (dev > worst) worst = (long)(dev + 0.999);
        }
        CHECK_MSG(worst <= 3, "largest deviation from the weighted share: %ld samples", worst);
        /* not a fixed pattern: the run lengths of the big source vary */
        int runs[8] = {0}, run = 0;
        for (int i = 0; i < N; i++) {
            if (ids[i] / 1000000 == 1) run++;
            else {
                if (run < 8) runs[run]++;
                run = 0;
            }
        }
        int kinds = 0;
        for (int r = 0; r < 8; r++) kinds += runs[r] > 10;
        CHECK_MSG(kinds >= 3, "only %d distinct run lengths: the interleave looks periodic", kinds);
    }
    free(ids);
    tl_mixture_close(&m);
    /* three sources with other weights */
    src_spec three[3] = {{"a", 1, 2000, 1, 5, -1}, {"b", 2, 2000, 2, 3, -1}, {"c", 3, 2000, 1, 2, -1}};
    if (open_mix(t, &m, three, 3, 1, 0, 1, 0)) return;
    ids = malloc(sizeof(long) * 3000);
    if (!draw(t, &m, 3000, ids)) {
        long c[4] = {0};
        for (int i = 0; i < 3000; i++) c[ids[i] / 1000000]++;
        CHECK_MSG(labs(c[1] - 1500) <= 4 && labs(c[2] - 900) <= 4 && labs(c[3] - 600) <= 4, "%ld %ld %ld", c[1], c[2],
                  c[3]);
    }
    free(ids);
    tl_mixture_close(&m);
}

static void test_deterministic_and_seeded(tl_test_ctx *t) {
    tl_mixture a, b, c;
    if (open_mix(t, &a, TINY, 2, 42, 0, 1, 0) || open_mix(t, &b, TINY, 2, 42, 0, 1, 0) ||
        open_mix(t, &c, TINY, 2, 43, 0, 1, 0))
        return;
    long x[500], y[500], z[500];
    if (!draw(t, &a, 500, x) && !draw(t, &b, 500, y) && !draw(t, &c, 500, z)) {
        CHECK(memcmp(x, y, sizeof x) == 0);
        CHECK(memcmp(x, z, sizeof x) != 0);
    }
    tl_mixture_close(&a);
    tl_mixture_close(&b);
    tl_mixture_close(&c);
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* 4 ranks never read the same sample, and together read what one rank reads alone. */
static void test_rank_disjoint(tl_test_ctx *t) {
    enum { PER = 800, WORLD = 4 };
    long *all = malloc(sizeof(long) * PER * WORLD), *solo = malloc(sizeof(long) * PER * WORLD);
    for (int r = 0; r < WORLD; r++) {
        tl_mixture m;
        if (open_mix(t, &m, TINY, 2, 9, r, WORLD, 0)) goto out;
        draw(t, &m, PER, all + r * PER);
        tl_mixture_close(&m);
    }
    tl_mixture m;
    if (open_mix(t, &m, TINY, 2, 9, 0, 1, 0)) goto out;
    draw(t, &m, PER * WORLD, solo);
    tl_mixture_close(&m);
    /* rank r's i-th sample is the solo stream's (i*WORLD + r)-th */
    int same = 1;
    for (int r = 0; r < WORLD; r++)
        for (int i = 0; i < PER; i++) same &= all[r * PER + i] == solo[i * WORLD + r];
    CHECK(same);
    qsort(all, PER * WORLD, sizeof *all, cmp_long);
    int dup = 0;
    for (int i = 1; i < PER * WORLD; i++) dup += all[i] == all[i - 1];
    CHECK_MSG(dup == 0, "%d samples read by two ranks", dup); /* 3200 draws: no source wrapped */
out:
    free(all);
    free(solo);
}

/* A small source wraps around: each epoch reads each of its samples exactly once,
 * in a different order. */
static void test_epochs(tl_test_ctx *t) {
    src_spec sp[2] = {{"big", 1, 5000, 2, 0.5, -1}, {"small", 2, 7, 1, 0.5, -1}};
    tl_mixture m;
    if (open_mix(t, &m, sp, 2, 5, 0, 1, 0)) return;
    long ids[200], small[100];
    int ns = 0;
    if (!draw(t, &m, 200, ids)) {
        for (int i = 0; i < 200 && ns < 100; i++)
            if (ids[i] / 1000000 == 2) small[ns++] = ids[i] % 1000000;
        CHECK(ns >= 70);
        int ok = 1, differ = 0;
        for (int e = 0; (e + 1) * 7 <= ns; e++) {
            int seen[7] = {0};
            for (int j = 0; j < 7; j++) seen[small[e * 7 + j]]++;
            for (int j = 0; j < 7; j++) ok &= seen[j] == 1;
            if (e) differ |= memcmp(small + e * 7, small, 7 * sizeof(long)) != 0;
        }
        CHECK_MSG(ok, "an epoch of the small source did not read each sample once");
        CHECK(differ);
    }
    tl_mixture_close(&m);
}

/* Seeking to a position continues exactly like the uninterrupted stream (also per rank). */
static void test_resume_equals_uninterrupted(tl_test_ctx *t) {
    for (int world = 1; world <= 2; world++) {
        tl_mixture a, b;
        int rank = world - 1;
        if (open_mix(t, &a, TINY, 2, 77, rank, world, 100)) return;
        long x[120], y[80];
        draw(t, &a, 120, x);
        if (open_mix(t, &b, TINY, 2, 77, rank, world, 100)) return;
        tl_error e;
        CHECK(tl_mixture_seek(&b, 40, &e) == 0);
        draw(t, &b, 80, y);
        CHECK_MSG(memcmp(x + 40, y, sizeof y) == 0, "world %d: resumed stream differs", world);
        tl_mixture_close(&a);
        tl_mixture_close(&b);
    }
}

/* Weights moving linearly from (1, 0) to (0.5, 0.5) over 1000 draws: the new
 * source's count follows the integral of its weight (250 after 1000 draws). */
static void test_ramp(tl_test_ctx *t) {
    src_spec sp[2] = {{"old", 1, 5000, 1, 0.5, 1.0}, {"new", 2, 5000, 1, 0.5, 0.0}};
    tl_mixture m;
    if (open_mix(t, &m, sp, 2, 3, 0, 1, 1000)) return;
    enum { N = 3000 };
    long *ids = malloc(sizeof(long) * N);
    if (!draw(t, &m, N, ids)) {
        long c = 0, worst = 0;
        long at[4] = {0};
        for (int i = 0; i < N; i++) {
            c += ids[i] / 1000000 == 2;
            double dev = (double)c - tl_mixture_expected(&m, 1, (uint64_t)i + 1);
            if (dev < 0) dev = -dev;
            if (dev > worst) worst = (long)(dev + 0.999);
            if (i + 1 == 100) at[0] = c;
            if (i + 1 == 1000) at[1] = c;
            if (i + 1 == 3000) at[2] = c;
        }
        CHECK_MSG(worst <= 3, "largest deviation from the ramped share: %ld", worst);
        CHECK_MSG(at[0] <= 6, "%ld of the new source in the first 100 draws (expected 2.5)", at[0]);
        CHECK_MSG(labs(at[1] - 250) <= 3, "%ld after 1000 draws (expected 250)", at[1]);
        CHECK_MSG(labs(at[2] - 1250) <= 3, "%ld after 3000 draws (expected 1250)", at[2]);
        CHECK_CLOSE(tl_mixture_weight_at(&m, 1, 500), 0.25, 1e-6, 0);
        CHECK_CLOSE(tl_mixture_weight_at(&m, 1, 5000), 0.5, 1e-6, 0);
    }
    free(ids);
    tl_mixture_close(&m);
}

/* Draws -> (source, i) is a bijection that takes each source's samples in order. */
static void test_locate_bijection(tl_test_ctx *t) {
    src_spec sp[3] = {{"a", 1, 100, 1, 0.2, 0.6}, {"b", 2, 100, 1, 0.5, 0.1}, {"c", 3, 100, 1, 0.3, 0.3}};
    tl_mixture m;
    if (open_mix(t, &m, sp, 3, 11, 0, 1, 500)) return;
    uint64_t next[3] = {0};
    int ok = 1;
    for (uint64_t g = 0; g < 5000; g++) {
        int s;
        uint64_t i;
        tl_mixture_locate(&m, g, &s, &i);
        ok &= s >= 0 && s < 3 && i == next[s];
        if (s >= 0 && s < 3) next[s]++;
    }
    CHECK_MSG(ok, "a source's samples were skipped or repeated");
    tl_mixture_close(&m);
}

/* tl_mixture_count is the number of each source among the first g draws, counted
 * here by locating every draw; an offset makes the draws read later samples. */
static void test_count_and_offset(tl_test_ctx *t) {
    src_spec sp[3] = {{"a", 1, 400, 1, 0.2, 0.6}, {"b", 2, 400, 1, 0.5, 0.1}, {"c", 3, 400, 1, 0.3, 0.3}};
    tl_mixture m;
    if (open_mix(t, &m, sp, 3, 5, 0, 1, 300)) return;
    uint64_t seen[3] = {0};
    int ok = 1;
    for (uint64_t g = 0; g <= 1000; g++) {
        for (int k = 0; k < 3; k++) ok &= tl_mixture_count(&m, k, g) == seen[k];
        int s;
        uint64_t i;
        tl_mixture_locate(&m, g, &s, &i);
        seen[s]++;
    }
    CHECK_MSG(ok, "tl_mixture_count differs from counting the located draws");
    long plain[40], shifted[40];
    tl_mixture_seek(&m, 0, NULL);
    draw(t, &m, 40, plain);
    m.src[1].offset = 7;
    tl_mixture_seek(&m, 0, NULL);
    draw(t, &m, 40, shifted);
    int same = 1;
    for (int i = 0; i < 40; i++) {
        if (plain[i] / 1000000 != 2) same &= plain[i] == shifted[i];
        else same &= shifted[i] / 1000000 == 2 && shifted[i] != plain[i];
    }
    CHECK_MSG(same, "an offset of source b changed other sources or left b's samples as they were");
    tl_mixture_close(&m);
}

static void test_bad_settings(tl_test_ctx *t) {
    tl_mixture m;
    tl_mixture_init(&m);
    tl_error e;
    CHECK(tl_mixture_finish(&m, 1, 1, 0, 1, 0, &e) == -1); /* no sources */
    const char *dir = make_source("solo", 1, 10, 1);
    const char *p[1] = {dir};
    CHECK(tl_mixture_add(&m, "x", -1, -1, p, 1, &e) == -1);
    CHECK(tl_mixture_add(&m, "x", 1, -1, p, 1, &e) == 0);
    CHECK(tl_mixture_add(&m, "x", 1, -1, p, 1, &e) == -1 && strstr(e.msg, "twice"));
    CHECK(tl_mixture_add(&m, "y\"z", 1, -1, p, 1, &e) == -1 && strstr(e.msg, "letters, digits"));
    const char *none[1] = {"/nonexistent/shards"};
    CHECK(tl_mixture_add(&m, "y", 1, -1, none, 1, &e) == -1 && strstr(e.msg, "'y'"));
    CHECK(tl_mixture_finish(&m, 1, 1, 2, 2, 0, &e) == -1); /* rank out of range */
    CHECK(tl_mixture_finish(&m, 1, 1, 0, 1, 0, &e) == 0);
    int tok[8];
    CHECK(tl_mixture_next(&m, 1, 5, tok, NULL, &e) == -1); /* longer than the shards */
    CHECK(tl_mixture_default_weight("SlimPajama") > 0.69 && tl_mixture_default_weight("other") < 0);
    tl_mixture_close(&m);
}

/* Training on a mixture (or a plain dataset): 4 steps in one go == 2 steps,
 * checkpoint, resume, 2 steps. */
static void train_resume(tl_test_ctx *t, int use_mix) {
    tl_config cfg = {.vocab_size = 1000, .dim = 16, .hidden_dim = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                     .max_seq_len = 8, .rope_theta = 10000.f, .norm_eps = 1e-5f, .tied = 0, .bos_id = 1, .eos_id = 2};
    float *final[2] = {NULL, NULL};
    size_t n_params = 0;
    for (int run = 0; run < 2; run++) {
        char out[600];
        snprintf(out, sizeof out, "%s/mixrun%d_%d", tl_test_tmpdir(), use_mix, run);
        for (int phase = 0; phase < (run ? 2 : 1); phase++) {
            tl_model model;
            tl_error e;
            if (tl_model_create(&model, &cfg, &e)) {
                CHECK_MSG(0, "%s", e.msg);
                return;
            }
            tl_model_init_weights(&model, 1);
            tl_mixture m;
            if (open_mix(t, &m, TINY, 2, 5, 0, 1, 10)) {
                tl_model_free(&model);
                return;
            }
            tl_dataset *plain = use_mix ? NULL : &m.src[0].ds; /* the first source's shards on their own */
            tl_train_opts o = {.batch = 2, .seq_len = 3, .accum = 1, .steps = run && !phase ? 2 : 4,
                               .opt = tl_adamw_defaults(), .seed = 5, .shuffle = 1, .out_dir = out, .keep = 0,
                               .mixture = use_mix ? &m : NULL};
            o.opt.warmup_steps = 1;
            o.opt.decay_steps = 4;
            tl_trainer *tr = tl_trainer_create(&model, plain, NULL, &o, &e);
            CHECK_MSG(tr != NULL, "%s", e.msg);
            int rc = tr ? 0 : -1;
            if (!rc && phase) {
                char ck[700];
                snprintf(ck, sizeof ck, "%s/step-00000002", out);
                rc = tl_trainer_resume(tr, ck, &e);
                CHECK_MSG(rc == 0, "%s", e.msg);
                CHECK(use_mix ? m.pos == 4 : plain->index == 4); /* 2 steps x batch 2 */
            }
            if (!rc) {
                rc = tl_trainer_run(tr, NULL, NULL, NULL, &e);
                CHECK_MSG(rc == 0, "%s", e.msg);
            }
            if (!rc && o.steps == 4) {
                n_params = model.n_params;
                final[run] = malloc(sizeof(float) * n_params);
                memcpy(final[run], model.params, sizeof(float) * n_params);
            }
            tl_trainer_free(tr);
            tl_mixture_close(&m);
            tl_model_free(&model);
        }
    }
    CHECK(final[0] && final[1] && memcmp(final[0], final[1], sizeof(float) * n_params) == 0);
    free(final[0]);
    free(final[1]);
}

static void test_train_resume_with_mixture(tl_test_ctx *t) { train_resume(t, 1); }
static void test_train_resume_plain_data(tl_test_ctx *t) { train_resume(t, 0); }

const tl_test tests_mixture[] = {
    {"data/mixture_count_and_offset", test_count_and_offset},
    {"data/mixture_proportions", test_proportions},
    {"data/mixture_deterministic_seeded", test_deterministic_and_seeded},
    {"data/mixture_rank_disjoint", test_rank_disjoint},
    {"data/mixture_epochs", test_epochs},
    {"data/mixture_resume", test_resume_equals_uninterrupted},
    {"data/mixture_ramp", test_ramp},
    {"data/mixture_locate_bijection", test_locate_bijection},
    {"data/mixture_bad_settings", test_bad_settings},
    {"data/mixture_train_resume", test_train_resume_with_mixture},
    {"data/train_resume_plain_data", test_train_resume_plain_data},
    {NULL, NULL},
};

/* test_distributed.c - sharding arithmetic, ZeRO memory plan, and the
 * communicator's collectives.  Run alone, the collectives are those of a single
 * rank; tests/cli_distributed.sh also runs this suite under `mpirun -np 2` (and 3),
 * where every rank checks the deterministic sums bit for bit. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "distributed.h"
#include "engine.h"
#include "grad_shard.h"
#include "harness.h"
#include "sumsq.h"
#include "model.h"
#include "optimizer.h"

/* The suite's communicator: MPI can be initialised once per process, so the tests
 * share one (with MPI_THREAD_MULTIPLE, for the communication-thread test), finalised at exit. */
static tl_comm *suite_comm_ptr;
static void suite_comm_free(void) { tl_comm_free(suite_comm_ptr); }
static tl_comm *suite_comm(tl_error *err) {
    if (!suite_comm_ptr && !tl_comm_create_ex(&suite_comm_ptr, 0, 1, err)) atexit(suite_comm_free);
    return suite_comm_ptr;
}

static void test_shard_ranges(tl_test_ctx *t) {
    static const size_t ns[] = {0, 1, 7, 64, 65, 1000, 65536 * 3 + 5};
    static const size_t aligns[] = {1, 4, 64, TL_SHARD_ALIGN};
    for (size_t a = 0; a < sizeof aligns / sizeof *aligns; a++)
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
            for (int w = 1; w <= 9; w++) {
                size_t n = ns[k], al = aligns[a], expect = 0, minb = (size_t)-1, maxb = 0;
                for (int r = 0; r < w; r++) {
                    size_t lo, hi;
                    tl_shard_range(n, w, al, r, &lo, &hi);
                    CHECK_MSG(lo == expect, "n=%zu w=%d r=%d: lo %zu, expected %zu", n, w, r, lo, expect);
                    CHECK(hi >= lo && hi <= n);
                    CHECK_MSG(lo % al == 0 || lo == n, "n=%zu align %zu: lo %zu not aligned", n, al, lo);
                    size_t blocks = (hi - lo + al - 1) / al;
                    if (blocks < minb) minb = blocks;
                    if (blocks > maxb) maxb = blocks;
                    expect = hi;
                }
                CHECK_MSG(expect == n, "n=%zu w=%d: shards cover %zu", n, w, expect);
                CHECK_MSG(maxb - minb <= 1 || n % al, "n=%zu w=%d: unbalanced %zu..%zu blocks", n, w, minb, maxb);
            }
    /* TinyLlama-1.1B on 8 ranks: shards of 2^16-multiples, within one block */
    size_t n = 1100048384, lo, hi;
    tl_shard_range(n, 8, TL_SHARD_ALIGN, 7, &lo, &hi);
    CHECK(hi == n);
    CHECK(lo % TL_SHARD_ALIGN == 0);
    CHECK(hi - lo <= n / 8 + TL_SHARD_ALIGN);
}

static void test_zero_memory_plan(tl_test_ctx *t) {
    const size_t n = 1100048384, f = 4;
    tl_config cfg;
    CHECK(tl_config_preset("tinyllama-1.1b", &cfg, NULL) == 0);
    CHECK(tl_config_num_params(&cfg) == n);
    const size_t U = tl_zero_largest_unit(&cfg);
    CHECK(U == 2048 + (size_t)32000 * 2048); /* final norm + lm_head */
    tl_zero_memory z0, z1, z2, z3, z2o;
    tl_zero_memory_plan(&cfg, 8, 0, 0, 0, &z0);
    tl_zero_memory_plan(&cfg, 8, 0, 1, 0, &z1);
    tl_zero_memory_plan(&cfg, 8, 0, 2, 0, &z2);
    tl_zero_memory_plan(&cfg, 8, 0, 3, 0, &z3);
    tl_zero_memory_plan(&cfg, 8, 0, 2, 1, &z2o);
    size_t lo, hi;
    tl_shard_range(n, 8, TL_SHARD_ALIGN, 0, &lo, &hi);
    size_t shard = hi - lo;
    CHECK(z0.opt_state == 2 * n * f && z0.params == n * f && z0.grads == n * f);
    CHECK(z1.opt_state == 2 * shard * f && z1.params == n * f && z1.grads == n * f);
    /* stages 2-3: the slice + one bucket of the largest unit (untied: the head), two with overlap */
    CHECK(z2.grads == (shard + U) * f && z2.grad_buckets == U * f && z2.opt_state == 2 * shard * f);
    CHECK(z3.grads == z2.grads);
    CHECK(z0.scratch <= ((size_t)1 << 24) * f + 8 * TL_SHARD_ALIGN * f);
    tl_zero_memory z64;
    tl_zero_memory_plan(&cfg, 64, 0, 1, 0, &z64);
    CHECK(z64.scratch <= ((size_t)1 << 24) * f);
    CHECK(z3.params == shard * f && z3.params_peak == (shard + U) * f);
    CHECK(z3.total_peak < z2.total_peak);
    CHECK(z2.total_peak < z1.total_peak);
    CHECK(z1.total_peak < z0.total_peak);
    tl_zero_memory one;
    tl_zero_memory_plan(&cfg, 1, 0, 3, 0, &one);
    CHECK(one.scratch == 0 && one.params == n * f && one.opt_state == 2 * n * f);
    /* with the thread: the ring holds the head and the last layer at once */
    tl_grad_buckets b;
    tl_grad_bucket_plan(&cfg, 1, &b);
    /* a layer: 2 norms, q and o 2048x2048, k and v 256x2048, gate/up/down 5632x2048 */
    const size_t layer = 2 * 2048 + 2 * (size_t)2048 * 2048 + 2 * (size_t)256 * 2048 + 3 * (size_t)5632 * 2048;
    CHECK(b.embed == 0 && b.ring == U + layer && z2o.grad_buckets == b.ring * f);
    /* tied: the embedding's bucket lives through the backward beside the ring */
    cfg.tied = 1;
    tl_grad_bucket_plan(&cfg, 0, &b);
    CHECK(b.embed == (size_t)32000 * 2048 && b.ring == layer);
}

static void test_block_norm(tl_test_ctx *t) {
    const size_t n = 3 * TL_SHARD_ALIGN + 1234;
    float *g = tl_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = (float)((int)(i * 2654435761u % 2001) - 1000) * 1e-3f;
    size_t nb = tl_shard_blocks(0, n);
    CHECK(nb == 4);
    double all[4], parts[4];
    tl_grad_sumsq_blocks(g, 0, n, all);
    /* the same blocks computed as two shards (a 2-rank split) */
    size_t lo, hi;
    tl_shard_range(n, 2, TL_SHARD_ALIGN, 1, &lo, &hi);
    CHECK(lo == 2 * TL_SHARD_ALIGN);
    tl_grad_sumsq_blocks(g, 0, lo, parts);
    tl_grad_sumsq_blocks(g, lo, hi, parts + tl_shard_blocks(0, lo));
    CHECK(memcmp(all, parts, sizeof all) == 0);
    /* blocks in order, each summed in tl_sumsq's lane order (its portable path) */
    double seq = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t a = b * TL_SHARD_ALIGN, e = n < a + TL_SHARD_ALIGN ? n : a + TL_SHARD_ALIGN;
        seq += tl_sumsq_portable(g + a, e - a);
    }
    CHECK(tl_blocks_norm(all, nb) == sqrt(seq));
    CHECK_CLOSE(tl_blocks_norm(all, nb), tl_grad_norm(g, n), 0, 1e-12);
    g[n - 1] = NAN;
    tl_grad_sumsq_blocks(g, lo, hi, parts + 2);
    CHECK(!isfinite(tl_blocks_norm(parts, nb)));
    tl_free(g);
}

/* Rank q's deterministic contribution to element i. */
static float contrib(int q, size_t i) { return (float)(((i * 7919u + (size_t)q * 104729u) % 1000003u)) * 1e-4f + 0.1f * (float)q; }

static void test_collectives(tl_test_ctx *t) {
    tl_comm *c;
    tl_error err;
    int r, w;
    tl_launch_env(&r, &w);
    if (!(c = suite_comm(&err))) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int me = tl_comm_rank(c), W = tl_comm_world(c);
    CHECK(me == r && W == w);
    tl_comm_set_timeout(c, 60);
    const size_t n = 2 * TL_SHARD_ALIGN + 777;
    float *buf = tl_alloc(n * sizeof(float)), *expect = tl_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float s = contrib(0, i);
        for (int q = 1; q < W; q++) s += contrib(q, i);
        expect[i] = s;
        buf[i] = contrib(me, i);
    }
    /* all-reduce: rank-order sums, bit for bit */
    CHECK_MSG(!tl_comm_allreduce_f32(c, buf, n, &err), "%s", err.msg);
    CHECK(memcmp(buf, expect, n * sizeof(float)) == 0);

    /* reduce-scatter in place into the aligned shard */
    for (size_t i = 0; i < n; i++) buf[i] = contrib(me, i);
    size_t lo, hi;
    tl_shard_range(n, W, TL_SHARD_ALIGN, me, &lo, &hi);
    CHECK_MSG(!tl_comm_reduce_scatter_f32(c, buf, n, TL_SHARD_ALIGN, buf + lo, &err), "%s", err.msg);
    CHECK(memcmp(buf + lo, expect + lo, (hi - lo) * sizeof(float)) == 0);
    /* all-gather the reduced shards: everyone has the full sum */
    CHECK_MSG(!tl_comm_allgather_f32(c, buf, n, TL_SHARD_ALIGN, &err), "%s", err.msg);
    CHECK(memcmp(buf, expect, n * sizeof(float)) == 0);

    /* gather to rank 0 / scatter back */
    float *full = me == 0 ? tl_alloc(n * sizeof(float)) : NULL, *shard = tl_alloc((hi - lo + 1) * sizeof(float));
    for (size_t i = lo; i < hi; i++) shard[i - lo] = (float)i;
    CHECK_MSG(!tl_comm_gather_f32(c, shard, full, n, TL_SHARD_ALIGN, 0, &err), "%s", err.msg);
    if (me == 0) {
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= full[i] == (float)i;
        CHECK(ok);
        for (size_t i = 0; i < n; i++) full[i] = -(float)i;
    }
    CHECK_MSG(!tl_comm_scatter_f32(c, full, shard, n, TL_SHARD_ALIGN, 0, &err), "%s", err.msg);
    int ok = 1;
    for (size_t i = lo; i < hi; i++) ok &= shard[i - lo] == -(float)i;
    CHECK(ok);

    /* doubles, bytes, broadcast, agreement */
    double d[2] = {me + 0.5, 1};
    CHECK(!tl_comm_allreduce_f64(c, d, 2, &err));
    CHECK(d[1] == W && d[0] == (double)W * (W - 1) / 2 + 0.5 * W);
    char word[32] = "";
    if (me == W - 1) snprintf(word, sizeof word, "from %d", me);
    CHECK(!tl_comm_bcast(c, word, sizeof word, W - 1, &err));
    char want[64];
    snprintf(want, sizeof want, "from %d", W - 1);
    CHECK(!strcmp(word, want));
    CHECK(!tl_comm_agree(c, 0, &err));
    tl_error e2;
    int rc = me == W - 1 ? tl_fail(&e2, "disk full") : 0;
    CHECK(tl_comm_agree(c, rc, &e2) == -1);
    snprintf(want, sizeof want, "rank %d: ", W - 1);
    /* one rank: its own message as it was */
    CHECK_MSG((W == 1 || !strncmp(e2.msg, want, strlen(want))) && strstr(e2.msg, "disk full"), "message: %s", e2.msg);
    CHECK(!tl_comm_barrier(c, &err));

    /* a rank that does not come: the others time out naming it */
    if (W > 1) {
        tl_comm_set_timeout(c, 0.5);
        if (me == W - 1) {
            usleep(1500 * 1000);
            tl_comm_barrier(c, &err); /* completes the peers' abandoned messages */
        } else {
            CHECK(tl_comm_barrier(c, &err) == -1);
            char name[64];
            snprintf(name, sizeof name, "rank %d", W - 1);
            CHECK_MSG(strstr(err.msg, "timed out") && strstr(err.msg, name), "message: %s", err.msg);
        }
        if (me != W - 1) { /* after a timeout the communicator refuses further collectives */
            CHECK(tl_comm_barrier(c, &err) == -1);
            CHECK_MSG(strstr(err.msg, "out of step"), "message: %s", err.msg);
        }
    }
    tl_free(buf);
    tl_free(expect);
    tl_free(full);
    tl_free(shard);
}

/* ZeRO-2 gradients (grad_shard.h): on every rank count the slice after two
 * micro-batches equals reducing each micro-batch's whole-block gradient (computed
 * without the hook) and adding the reductions in order, bit for bit, with and
 * without the communication thread; and the gradient storage allocated is the
 * slice plus the buckets of the largest unit(s), not the whole block. */
static void test_zero2_grads(tl_test_ctx *t) {
    tl_error err;
    tl_comm *c = suite_comm(&err);
    if (!c) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_comm_set_timeout(c, 60);
    const int me = tl_comm_rank(c), W = tl_comm_world(c), B = 2, T = 16, accum = 2;
    for (int tied = 0; tied < 2; tied++)
        for (int overlap = 0; overlap < 2; overlap++) {
            tl_config cfg;
            tl_model m;
            tl_config_preset("test", &cfg, NULL);
            /* ~650K parameters in 4 layers: 10-11 blocks of 65536, so on 2-3 ranks layers straddle the
             * shard boundaries and a slice plus a layer's bucket is less than the whole block */
            cfg.dim = 128;
            cfg.hidden_dim = 256;
            cfg.n_layers = 4;
            cfg.tied = tied;
            if (tl_model_create(&m, &cfg, &err)) {
                CHECK_MSG(0, "%s", err.msg);
                return;
            }
            tl_model_init_weights(&m, 7);
            const size_t n = m.n_params;
            size_t lo, hi;
            tl_shard_range(n, W, TL_SHARD_ALIGN, me, &lo, &hi);
            tl_acts *a = tl_acts_create(&cfg, B, T, &err);
            float *full = tl_alloc(n * sizeof(float)), *expect = tl_alloc((hi - lo + 1) * sizeof(float));
            int tok[2][2 * 16], tgt[2][2 * 16];
            for (int k = 0; k < accum; k++)
                for (int i = 0; i < B * T; i++) {
                    tok[k][i] = (i * 31 + k * 7 + me * 13) % cfg.vocab_size;
                    tgt[k][i] = (i * 17 + k * 5 + me * 3 + 1) % cfg.vocab_size;
                }
            /* reference: each micro-batch's whole gradient, reduce-scattered, summed in order */
            double l;
            for (int k = 0; k < accum && a; k++) {
                memset(full, 0, n * sizeof(float));
                CHECK(!tl_model_forward_backward(&m, a, full, tok[k], tgt[k], 0.5f, &l, &err));
                CHECK_MSG(!tl_comm_reduce_scatter_f32(c, full, n, TL_SHARD_ALIGN, full + lo, &err), "%s", err.msg);
                for (size_t i = 0; i < hi - lo; i++) expect[i] = k ? expect[i] + full[lo + i] : full[lo + i];
            }
            tl_grad_shard *gs = a ? tl_grad_shard_create(&m, c, overlap, &err) : NULL;
            CHECK_MSG(gs, "%s", err.msg);
            for (int k = 0; k < accum && gs; k++) {
                tl_grad_shard_next(gs, k == 0);
                /* no block given: the hook's buckets are the only gradient storage */
                CHECK_MSG(!tl_model_forward_backward(&m, a, NULL, tok[k], tgt[k], 0.5f, &l, &err), "%s", err.msg);
            }
            if (gs) {
                CHECK_MSG(!tl_grad_shard_flush(gs, &err), "%s", err.msg);
                CHECK_MSG(memcmp(tl_grad_shard_slice(gs), expect, (hi - lo) * sizeof(float)) == 0,
                          "tied %d overlap %d: slice differs from the reduced whole-block gradients", tied, overlap);
                CHECK(tl_grad_shard_overlaps(gs) == (overlap && W > 1));
                /* storage: the slice + a bucket of the largest unit (tied: the embedding's own + the
                 * largest other); with the thread, of the largest two units in a row of the backward
                 * (head, layers L..1, embedding).  Sizes from the model's unit ranges. */
                size_t emb = 0, one = 0, two = 0, prev = 0;
                for (int u = cfg.n_layers + 1; u >= 0; u--) {
                    size_t ul, uh;
                    tl_model_unit_range(&m, u, &ul, &uh);
                    if (tied && u == 0) {
                        emb = uh - ul;
                        continue;
                    }
                    if (uh - ul > one) one = uh - ul;
                    if (prev + uh - ul > two) two = prev + uh - ul;
                    prev = uh - ul;
                }
                size_t want = (hi - lo + emb + (overlap && W > 1 ? two : one)) * sizeof(float);
                CHECK_MSG(tl_grad_shard_bytes(gs) == want, "tied %d overlap %d: %zu bytes of gradients, expected %zu",
                          tied, overlap, tl_grad_shard_bytes(gs), want);
                if (W > 1 && !overlap)
                    CHECK_MSG(tl_grad_shard_bytes(gs) < n * sizeof(float), "%zu bytes of gradients, the whole block is %zu",
                              tl_grad_shard_bytes(gs), n * sizeof(float));
                tl_zero_memory z;
                tl_zero_memory_plan(&cfg, W, me, 2, overlap, &z);
                CHECK(z.grads == tl_grad_shard_bytes(gs));
            }
            tl_grad_shard_free(gs);
            CHECK(m.grads_hook == NULL);
            /* the engine at stage 2 keeps no block: acts plus the slice and buckets of the plan */
            tl_engine_job job = {.comm = c, .zero = 2};
            tl_engine *e = tl_engine_cpu_create(&m, NULL, NULL, B, T, &job, NULL, &err);
            tl_zero_memory z2;
            tl_zero_memory_plan(&cfg, W, me, 2, 0, &z2);
            CHECK_MSG(e && e->ops->memory_bytes(e) == tl_acts_bytes(a) + z2.grads && m.grads_hook && e->lo == lo &&
                          e->hi == hi,
                      "%s", e ? "memory or shard differ" : err.msg);
            if (e) e->ops->free(e);
            CHECK(m.grads_hook == NULL);
            tl_free(full);
            tl_free(expect);
            tl_acts_free(a);
            tl_model_free(&m);
        }
}

/* A rank that does not come while the communication thread reduces: the other
 * ranks' backward or flush fails with the thread's timeout; rank 0 (which owns this
 * small model's whole block, so it waits on every rank) names it.  (With 3 ranks
 * rank 1 may instead name rank 0, which stopped answering after its own timeout.) */
static void test_zero2_thread_timeout(tl_test_ctx *t) {
    tl_error err;
    tl_comm *c = suite_comm(&err);
    if (!c) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int me = tl_comm_rank(c), W = tl_comm_world(c), B = 1, T = 8;
    if (W == 1) return; /* nothing to wait for */
    tl_config cfg;
    tl_model m;
    tl_config_preset("test", &cfg, NULL);
    if (tl_model_create(&m, &cfg, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_model_init_weights(&m, 3);
    tl_acts *a = tl_acts_create(&cfg, B, T, &err);
    int tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    tl_comm_set_timeout(c, 0.5); /* the thread's communicator inherits it */
    tl_grad_shard *gs = a ? tl_grad_shard_create(&m, c, 1, &err) : NULL;
    tl_comm_set_timeout(c, 60);
    CHECK_MSG(gs, "%s", err.msg);
    if (gs) {
        double l;
        tl_grad_shard_next(gs, 1);
        if (me == W - 1) usleep(1500 * 1000);
        int rc = tl_model_forward_backward(&m, a, NULL, tok, tgt, 1.0f, &l, &err);
        if (!rc) rc = tl_grad_shard_flush(gs, &err);
        if (me != W - 1) {
            char name[64];
            snprintf(name, sizeof name, "waiting for rank %d", W - 1);
            CHECK_MSG(rc == -1 && strstr(err.msg, "timed out") && (me != 0 || strstr(err.msg, name)), "message: %s",
                      rc ? err.msg : "");
        }
    }
    tl_grad_shard_free(gs);
    tl_acts_free(a);
    tl_model_free(&m);
}

/* The params hook's units tile the flat block in order, and the largest matches the sizing. */
static void test_param_units(tl_test_ctx *t) {
    static const char *const presets[] = {"test", "gqa-40m", "test"};
    for (int k = 0; k < 3; k++) {
        tl_config cfg;
        tl_model m;
        tl_error err;
        int bad = tl_config_preset(presets[k], &cfg, &err);
        cfg.tied = k == 2; /* the head unit then reads the embedding too */
        if (bad || tl_model_create(&m, &cfg, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        size_t end = 0, biggest = 0;
        for (int u = 0; u <= cfg.n_layers + 1; u++) {
            size_t lo, hi;
            tl_model_unit_range(&m, u, &lo, &hi);
            CHECK_MSG(lo == end && hi > lo, "%s unit %d: [%zu, %zu) after %zu", presets[k], u, lo, hi, end);
            size_t sz = hi - lo;
            if (cfg.tied && u == cfg.n_layers + 1) sz += (size_t)cfg.vocab_size * cfg.dim;
            if (sz > biggest) biggest = sz;
            end = hi;
        }
        CHECK(end == m.n_params);
        CHECK_MSG(biggest == tl_zero_largest_unit(&cfg), "%s: largest unit %zu, sizing says %zu", presets[k], biggest,
                  tl_zero_largest_unit(&cfg));
        tl_model_free(&m);
    }
}

const tl_test tests_distributed[] = {
    {"distributed/param_units", test_param_units},
    {"distributed/shard_ranges", test_shard_ranges},
    {"distributed/zero_memory_plan", test_zero_memory_plan},
    {"distributed/block_norm", test_block_norm},
    {"distributed/zero2_grads", test_zero2_grads},
    {"distributed/zero2_thread_timeout", test_zero2_thread_timeout},
    {"distributed/collectives", test_collectives}, /* last: it ends by breaking the communicator (timeout) */
    {NULL, NULL},
};

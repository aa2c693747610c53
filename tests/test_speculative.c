/* test_speculative.c - speculative decoding (src/infer/speculative.c): the
 * verification pass against the single-token decode (bit for bit), the
 * accept / resample step against the target's distribution (exactly, over every
 * draft token, and empirically with a chi-square over whole sequences), and
 * greedy generation with a draft against generation without one. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "generate.h"
#include "gguf_write.h"
#include "harness.h"
#include "infer.h"
#include "matvec.h"
#include "quantize.h"
#include "rng.h"
#include "sampler.h"
#include "speculative.h"

static void fixture(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", tl_test_fixture_dir(), name); }

/* ---------------------------------------------------------------- the verification pass */

/* tl_wmat_matvec_rows on wide synthetic matrices (the eight-row and
 * even/odd-split kernels past 3072 columns, tails): every input's output equals
 * its own tl_wmat_matvec_multi bit for bit, for every kernel the CPU runs. */
static void test_spec_matvec_rows_exact(tl_test_ctx *t) {
    const tl_dtype dts[] = {TL_DT_F32, TL_DT_BF16, TL_DT_F16};
    const int widths[] = {4133, 256, 40};
    const int rows = 45, nx = 5;
    tl_rng r;
    tl_rng_seed(&r, 7);
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        const int cols = widths[wi];
        float *x = malloc(sizeof(float) * (size_t)nx * cols);
        for (int i = 0; i < nx * cols; i++) x[i] = (float)tl_rng_normal(&r);
        for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
            const size_t es = tl_dtype_size(dts[d]);
            uint8_t *w[2];
            tl_wmat W[2];
            for (int j = 0; j < 2; j++) {
                w[j] = malloc(es * (size_t)rows * cols);
                for (size_t i = 0; i < (size_t)rows * cols; i++) {
                    float v = (float)tl_rng_normal(&r) * 0.05f;
                    if (dts[d] == TL_DT_F32) memcpy(w[j] + 4 * i, &v, 4);
                    else {
                        uint16_t h = dts[d] == TL_DT_BF16 ? tl_f32_to_bf16(v) : tl_f32_to_f16(v);
                        memcpy(w[j] + 2 * i, &h, 2);
                    }
                }
                W[j] = (tl_wmat){.dtype = dts[d], .data = w[j], .rows = rows - 3 * j, .cols = cols};
            }
            for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
                if (!tl_kernel_supported((tl_kernel)k)) continue;
                float *y0 = malloc(sizeof(float) * (size_t)nx * rows), *y1 = malloc(sizeof(float) * (size_t)nx * rows);
                float *ref0 = malloc(sizeof(float) * rows), *ref1 = malloc(sizeof(float) * rows);
                const tl_wmat *Ws[2] = {&W[0], &W[1]};
                float *ys[2] = {y0, y1};
                tl_wmat_matvec_rows((tl_kernel)k, Ws, ys, 2, x, nx);
                int same = 1;
                for (int i = 0; i < nx; i++) {
                    float *refs[2] = {ref0, ref1};
                    tl_wmat_matvec_multi((tl_kernel)k, Ws, refs, 2, x + (size_t)i * cols);
                    same &= memcmp(ref0, y0 + (size_t)i * W[0].rows, sizeof(float) * W[0].rows) == 0;
                    same &= memcmp(ref1, y1 + (size_t)i * W[1].rows, sizeof(float) * W[1].rows) == 0;
                }
                CHECK_MSG(same, "%s, %d columns, %s kernels: a row of the batch differs from its own mat-vec",
                          tl_dtype_name(dts[d]), cols, tl_kernel_name((tl_kernel)k));
                free(y0), free(y1), free(ref0), free(ref1);
            }
            free(w[0]), free(w[1]);
        }
        free(x);
    }
}

/* A model: 5 tokens through tl_infer_decode_rows against the same 5 fed one at
 * a time to tl_infer_forward after the same prompt: every row's logits and the
 * KV cache equal bit for bit, for every kernel family the CPU runs. */
static void check_rows_model(tl_test_ctx *t, const char *path) {
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load_weights_only(&m, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int V = m.cfg.vocab_size, N = 5;
    const int prompt[6] = {1, 7 % V, 21 % V, 13 % V, 30 % V, 2}, next[5] = {3 % V, 17 % V, 5 % V, 29 % V, 11 % V};
    for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
        if (tl_infer_set_kernel(&m, (tl_kernel)k, &err)) continue; /* this CPU lacks it */
        tl_infer_state a, b;
        CHECK(tl_infer_state_init(&a, &m, 64, &err) == 0 && tl_infer_state_init(&b, &m, 64, &err) == 0);
        CHECK(tl_infer_forward(&a, prompt, 6, NULL, &err) == 0 && tl_infer_forward(&b, prompt, 6, NULL, &err) == 0);
        float *rows = malloc(sizeof(float) * (size_t)N * V);
        CHECK(tl_infer_decode_rows(&b, next, N, rows, &err) == 0);
        int same = 1;
        for (int i = 0; i < N; i++) {
            CHECK(tl_infer_forward(&a, &next[i], 1, NULL, &err) == 0);
            same &= memcmp(a.logits, rows + (size_t)i * V, sizeof(float) * (size_t)V) == 0;
        }
        same &= memcmp(a.logits, b.logits, sizeof(float) * (size_t)V) == 0 && a.pos == b.pos;
        const size_t kd = (size_t)m.cfg.n_kv_heads * (size_t)tl_config_head_dim(&m.cfg);
        for (int l = 0; l < m.cfg.n_layers; l++) {
            const size_t off = (size_t)l * 64 * kd, len = sizeof(float) * (size_t)a.pos * kd;
            same &= memcmp(a.k_cache + off, b.k_cache + off, len) == 0 && memcmp(a.v_cache + off, b.v_cache + off, len) == 0;
        }
        CHECK_MSG(same, "%s, %s kernels: the verification rows differ from single-token decode", path,
                  tl_kernel_name(m.kernel));
        free(rows);
        tl_infer_state_free(&a);
        tl_infer_state_free(&b);
    }
    tl_infer_free(&m);
}

/* The model-level tests run on one thread: the arithmetic does not depend
 * on the thread count (spec_matvec_rows_exact runs the threaded products),
 * and tiny models on an oversubscribed machine spend their time in OpenMP
 * barriers otherwise. */
static void test_spec_decode_rows_exact(tl_test_ctx *t) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const char *models[] = {"infer_gqa_f32", "infer_tied_bf16", "gguf/tiny256_BF16.gguf", "gguf/tiny256_F16.gguf",
                            "gguf/tiny256_Q4_0.gguf", "gguf/tiny256_Q4_1.gguf", "gguf/tiny256_Q8_0.gguf",
                            "gguf/tiny256_Q6_K.gguf"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char p[1024];
        fixture(p, sizeof p, models[i]);
        check_rows_model(t, p);
    }
    omp_set_num_threads(threads);
}

/* ---------------------------------------------------------------- the accept step */

/* A random distribution over V tokens with some zeros. */
static void random_dist(tl_rng *r, float *p, int V, int zeros) {
    double s = 0;
    for (int i = 0; i < V; i++) {
        p[i] = tl_rng_below(r, 4) < (uint64_t)zeros ? 0.0f : (float)(0.05 + tl_rng_uniform(r));
        s += p[i];
    }
    if (s == 0) p[tl_rng_below(r, (uint64_t)V)] = 1.0f, s = 1;
    for (int i = 0; i < V; i++) p[i] = (float)(p[i] / s);
}

/* The law of the first token a step emits, summed exactly over the draft's
 * proposal d: q(d) [a(d) [d = x] + (1 - a(d)) r(x)], against p(x). */
static double first_token_error(const float *p, const float *q, int V) {
    float r[16];
    tl_spec_residual(p, q, V, r);
    double worst = 0;
    for (int x = 0; x < V; x++) {
        double px = 0;
        for (int d = 0; d < V; d++) {
            double a = tl_spec_accept_prob(p[d], q[d]);
            px += q[d] * (a * (d == x) + (1 - a) * r[x]);
        }
        if (fabs(px - p[x]) > worst) worst = fabs(px - p[x]);
    }
    return worst;
}

static void test_spec_accept_exact(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 11);
    float p[16], q[16];
    double worst = 0;
    /* random pairs: disjoint supports, zeros on either side, equal ones */
    for (int trial = 0; trial < 2000; trial++) {
        const int V = 2 + (int)tl_rng_below(&r, 7);
        random_dist(&r, p, V, (int)tl_rng_below(&r, 3));
        if (trial % 10 == 0) memcpy(q, p, sizeof p);
        else random_dist(&r, q, V, (int)tl_rng_below(&r, 3));
        double e = first_token_error(p, q, V);
        if (e > worst) worst = e;
    }
    /* the sampler's distributions, one set of settings for both (as the decoder uses them) */
    const tl_sampler_opts settings[] = {{1.0f, 0, 1.0f, 0.0f, 1.0f}, {0.7f, 3, 1.0f, 0.0f, 1.0f},
                                        {1.3f, 0, 0.8f, 0.0f, 1.0f}, {0.9f, 0, 1.0f, 0.2f, 1.0f},
                                        {0.8f, 5, 0.9f, 0.05f, 1.3f}, {0.0f, 0, 1.0f, 0.0f, 1.0f}};
    for (size_t si = 0; si < sizeof settings / sizeof settings[0]; si++) {
        tl_sampler a, b;
        tl_error err;
        const int V = 12, hist[3] = {1, 4, 4};
        CHECK(tl_sampler_init(&a, &settings[si], V, 1, &err) == 0 && tl_sampler_init(&b, &settings[si], V, 2, &err) == 0);
        for (int trial = 0; trial < 200; trial++) {
            float lp[12], lq[12];
            for (int i = 0; i < V; i++) lp[i] = (float)(2 * tl_rng_normal(&r)), lq[i] = (float)(2 * tl_rng_normal(&r));
            tl_sampler_probs(&a, lp, hist, 3, p);
            tl_sampler_probs(&b, lq, hist, 3, q);
            double e = first_token_error(p, q, V);
            if (e > worst) worst = e;
        }
        tl_sampler_free(&a);
        tl_sampler_free(&b);
    }
    CHECK_MSG(worst < 1e-6, "the first emitted token's law differs from the target's by %g", worst);
    /* the residual: the mass where p exceeds q, nothing elsewhere; p == q gives p */
    const float pp[4] = {0.5f, 0.3f, 0.2f, 0.0f}, qq[4] = {0.2f, 0.3f, 0.1f, 0.4f};
    float rr[4];
    CHECK(tl_spec_residual(pp, qq, 4, rr) == 0);
    CHECK_CLOSE(rr[0], 0.75, 1e-6, 0);
    CHECK_CLOSE(rr[2], 0.25, 1e-6, 0);
    CHECK(rr[1] == 0.0f && rr[3] == 0.0f);
    CHECK(tl_spec_residual(pp, pp, 4, rr) == 1 && !memcmp(rr, pp, sizeof pp));
    CHECK(tl_spec_accept_prob(0.2f, 0.4f) == 0.5 && tl_spec_accept_prob(0.4f, 0.2f) == 1.0);
    CHECK(tl_spec_accept_prob(0.0f, 0.4f) == 0.0 && tl_spec_accept_prob(0.1f, 0.0f) == 1.0);
    /* the draw: the share of [0, 1) that picks each token is its weight, zero weights never */
    const float w[5] = {0.0f, 2.0f, 0.0f, 1.0f, 5.0f};
    int count[5] = {0};
    const int G = 80000;
    for (int g = 0; g < G; g++) count[tl_spec_draw(w, 5, (g + 0.5) / G)]++;
    CHECK(count[0] == 0 && count[2] == 0);
    CHECK_CLOSE(count[1], G * 2.0 / 8, 1, 0);
    CHECK_CLOSE(count[3], G * 1.0 / 8, 1, 0);
    CHECK_CLOSE(count[4], G * 5.0 / 8, 1, 0);
    CHECK(tl_spec_draw(w, 5, 0.0) == 1 && tl_spec_draw(w, 5, 0.9999999) == 4);
}

/* Greedy (one-hot p and q): a proposal is kept iff it is the target's argmax,
 * the first other one is replaced by the argmax, all kept gives p[k]'s argmax. */
static void test_spec_accept_greedy(tl_test_ctx *t) {
    const int V = 4, k = 3;
    float p[4 * 4] = {0}, q[3 * 4] = {0}, scratch[4];
    const int targ[4] = {2, 1, 3, 0};
    for (int i = 0; i <= k; i++) p[i * V + targ[i]] = 1.0f;
    tl_rng r;
    tl_rng_seed(&r, 3);
    int drafts[3] = {2, 1, 0}, next;
    for (int j = 0; j < k; j++) q[j * V + drafts[j]] = 1.0f;
    for (int rep = 0; rep < 100; rep++) {
        CHECK(tl_spec_verify(p, q, drafts, k, V, &r, scratch, &next) == 2 && next == 3);
    }
    memset(q, 0, sizeof q);
    int all[3] = {2, 1, 3};
    for (int j = 0; j < k; j++) q[j * V + all[j]] = 1.0f;
    CHECK(tl_spec_verify(p, q, all, k, V, &r, scratch, &next) == 3 && next == 0);
    CHECK(tl_spec_verify(p, q, all, 0, V, &r, scratch, &next) == 0 && next == 2);
}

/* Empirical: a target and a draft that are first-order Markov chains over 4
 * tokens (zeros included, the draft far from the target).  Whole generations
 * of 3 tokens by repeated steps (k proposals each) are counted in 64 cells;
 * the counts fit the target's chain (chi-square below its 1e-6 tail) and do
 * not fit the draft's (the check can fail). */
static double chi_square(const long *count, const double *expect, int cells, long n) {
    double x2 = 0;
    for (int c = 0; c < cells; c++) {
        double e = expect[c] * (double)n;
        if (e > 0) x2 += (count[c] - e) * (count[c] - e) / e;
        else if (count[c]) return INFINITY;
    }
    return x2;
}

static void test_spec_verify_chisq(tl_test_ctx *t) {
    enum { V = 4, L = 3 };
    static const float P[V][V] = {{0.1f, 0.6f, 0.3f, 0.0f}, {0.25f, 0.25f, 0.25f, 0.25f},
                                  {0.0f, 0.0f, 0.2f, 0.8f}, {0.5f, 0.0f, 0.0f, 0.5f}};
    static const float Q[V][V] = {{0.7f, 0.1f, 0.1f, 0.1f}, {0.0f, 0.5f, 0.0f, 0.5f},
                                  {0.3f, 0.3f, 0.3f, 0.1f}, {0.1f, 0.1f, 0.7f, 0.1f}};
    double expect_p[64], expect_q[64];
    const int ctx = 1;
    for (int c = 0; c < 64; c++) {
        int a = c / 16, b = c / 4 % 4, d = c % 4;
        expect_p[c] = (double)P[ctx][a] * P[a][b] * P[b][d];
        expect_q[c] = (double)Q[ctx][a] * Q[a][b] * Q[b][d];
    }
    tl_rng r;
    tl_rng_seed(&r, 2026);
    const long N = 100000;
    for (int k = 1; k <= 4; k++) {
        long count[64] = {0};
        long proposed = 0, accepted = 0;
        for (long n = 0; n < N; n++) {
            int seq[L + TL_SPEC_MAX_K + 1], len = 0, last = ctx;
            while (len < L) {
                float p[(TL_SPEC_MAX_K + 1) * V], q[TL_SPEC_MAX_K * V], scratch[V];
                int draft[TL_SPEC_MAX_K], prev = last, next;
                for (int j = 0; j < k; j++) {
                    memcpy(q + j * V, Q[prev], sizeof(float) * V);
                    draft[j] = tl_spec_draw(q + j * V, V, tl_rng_uniform(&r));
                    prev = draft[j];
                }
                memcpy(p, P[last], sizeof(float) * V);
                for (int j = 0; j < k; j++) memcpy(p + (j + 1) * V, P[draft[j]], sizeof(float) * V);
                int a = tl_spec_verify(p, q, draft, k, V, &r, scratch, &next);
                for (int j = 0; j < a; j++) seq[len++] = draft[j];
                seq[len++] = next;
                last = next;
                proposed += k;
                accepted += a;
            }
            count[seq[0] * 16 + seq[1] * 4 + seq[2]]++;
        }
        double x2 = chi_square(count, expect_p, 64, N), x2q = chi_square(count, expect_q, 64, N);
        /* at most 37 cells have mass (36 degrees of freedom): P(chi2_36 > 95) < 1e-6 */
        CHECK_MSG(x2 < 95, "k %d: chi-square %.1f against the target's law", k, x2);
        CHECK_MSG(x2q > 1000, "k %d: chi-square %.1f against the draft's law: the check has no power", k, x2q);
        CHECK(accepted > 0 && accepted < proposed);
    }
}

/* ---------------------------------------------------------------- whole generations */

typedef struct {
    int ids[512];
    int n;
} collected;

static void collect(int id, void *user) {
    collected *c = user;
    if (c->n < 512) c->ids[c->n++] = id;
}

/* Generates from prompt with target (and draft when non-NULL, k proposals per
 * step); the ids produced and the end go to out / *why. */
static int run_gen(tl_test_ctx *t, tl_infer_model *target, tl_infer_model *draft, int k, const tl_sampler_opts *so,
                   uint64_t seed, const int *prompt, int n_prompt, int ctx, long max_tokens, collected *out,
                   tl_gen_end *why, tl_gen_stats *st) {
    tl_infer_state s, ds;
    tl_sampler sp;
    tl_spec spec;
    tl_error err;
    int rc = tl_infer_state_init(&s, target, ctx, &err) || tl_sampler_init(&sp, so, target->cfg.vocab_size, seed, &err);
    if (!rc && draft)
        rc = tl_infer_state_init(&ds, draft, ctx, &err) || tl_spec_init(&spec, &ds, so, k, &err);
    CHECK_MSG(!rc, "%s", err.msg);
    if (rc) return -1;
    int *ids = malloc(sizeof(int) * (size_t)n_prompt);
    memcpy(ids, prompt, sizeof(int) * (size_t)n_prompt);
    tl_gen_history h = {ids, n_prompt, n_prompt};
    out->n = 0;
    tl_gen_opts o = {.max_tokens = max_tokens, .on_token = collect, .user = out, .spec = draft ? &spec : NULL};
    rc = tl_generate(&s, &sp, &o, &h, 0, why, st, &err);
    CHECK_MSG(rc == 0 && *why != TL_GEN_ERROR, "generate: %s", err.msg);
    free(h.ids);
    if (draft) {
        tl_spec_free(&spec);
        tl_infer_state_free(&ds);
    }
    tl_sampler_free(&sp);
    tl_infer_state_free(&s);
    return rc;
}

static int load(tl_test_ctx *t, tl_infer_model *m, const char *path) {
    tl_error err;
    if (tl_infer_load(m, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* Greedy output with a draft equals greedy output without one, id for id and
 * in how it ends, over prompts, k, context limits and three drafts: the
 * target's Q4_0 (agrees often), another model (rarely), the target itself
 * (always: every proposal accepted). */
static void check_greedy_pair(tl_test_ctx *t, tl_infer_model *target, tl_infer_model *draft, int self) {
    const int V = target->cfg.vocab_size;
    const int prompts[3][5] = {{1, 5, 9, 7, 3}, {1, 20, 2, 11, 4}, {1, 3, 3, 3, 3}};
    const int ks[] = {1, 2, 4, 5, 8};
    const int ctxs[] = {0, 23};
    tl_sampler_opts so;
    tl_sampler_default_opts(&so);
    long proposed = 0, accepted = 0;
    for (int pi = 0; pi < 3; pi++) {
        int prompt[5];
        for (int i = 0; i < 5; i++) prompt[i] = prompts[pi][i] % V;
        for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
            collected plain, spec;
            tl_gen_end why0, why1;
            tl_gen_stats st;
            if (run_gen(t, target, NULL, 0, &so, 1, prompt, 5, ctxs[ci], 40, &plain, &why0, &st)) return;
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                if (run_gen(t, target, draft, ks[ki], &so, 1, prompt, 5, ctxs[ci], 40, &spec, &why1, &st)) return;
                CHECK_MSG(spec.n == plain.n && !memcmp(spec.ids, plain.ids, sizeof(int) * (size_t)plain.n) &&
                              why0 == why1,
                          "prompt %d, ctx %d, k %d: %d ids (%s) with the draft, %d (%s) without", pi, ctxs[ci],
                          ks[ki], spec.n, tl_gen_end_name(why1), plain.n, tl_gen_end_name(why0));
                proposed += st.n_draft_proposed;
                accepted += st.n_draft_accepted;
            }
        }
    }
    CHECK(proposed > 0);
    if (self) CHECK_MSG(accepted == proposed, "the target as its own draft: %ld of %ld accepted", accepted, proposed);
    else CHECK_MSG(accepted < proposed, "another draft: all %ld proposals accepted", proposed);
}

static void greedy_equal(tl_test_ctx *t);
static void test_spec_greedy_equal(tl_test_ctx *t) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    greedy_equal(t);
    omp_set_num_threads(threads);
}

static void greedy_equal(tl_test_ctx *t) {
    char tp[1024], dp[1024], q4[1024], other[1024];
    fixture(tp, sizeof tp, "gguf/tiny256_BF16.gguf");
    fixture(other, sizeof other, "gguf/tiny256_F16.gguf"); /* another random model, same 32 pieces */
    snprintf(q4, sizeof q4, "%s/spec_tiny256_Q4_0.gguf", tl_test_tmpdir());
    tl_error err;
    tl_gguf_llama_opts go = {0};
    int has_tok;
    if (tl_gguf_convert(tp, q4, tl_gguf_ftype_find("Q4_0"), &go, &has_tok, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_infer_model target, d1, d2;
    if (load(t, &target, tp)) return;
    if (!load(t, &d1, q4)) {
        CHECK(tl_spec_check_vocab(&target, &d1, q4, &err) == 0);
        check_greedy_pair(t, &target, &d1, 0);
        tl_infer_free(&d1);
    }
    if (!load(t, &d2, other)) {
        check_greedy_pair(t, &target, &d2, 0);
        tl_infer_free(&d2);
    }
    check_greedy_pair(t, &target, &target, 1);
    /* an HF pair with one tokenizer: F32 GQA target, a tied BF16 draft */
    tl_infer_model ht, hd;
    fixture(tp, sizeof tp, "infer_gqa_f32");
    fixture(dp, sizeof dp, "infer_tied_bf16");
    if (!load(t, &ht, tp)) {
        if (!load(t, &hd, dp)) {
            CHECK(tl_spec_check_vocab(&ht, &hd, dp, &err) == 0);
            check_greedy_pair(t, &ht, &hd, 0);
            /* another vocabulary is refused, naming the draft */
            CHECK(tl_spec_check_vocab(&ht, &target, "tiny256.gguf", &err) != 0 && strstr(err.msg, "tiny256.gguf") &&
                  strstr(err.msg, "vocabulary"));
            tl_infer_free(&hd);
        }
        tl_infer_free(&ht);
    }
    tl_infer_free(&target);
}

/* Sampling with the target as its own draft: p and q are the same
 * distributions (the verification rows equal the draft's decode bit for bit,
 * one sampler setting for both), so every proposal is accepted whatever the
 * temperature, top-k, top-p, min-p and penalty; a seed reproduces the output. */
static void sampling_self(tl_test_ctx *t);
static void test_spec_sampling_self(tl_test_ctx *t) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    sampling_self(t);
    omp_set_num_threads(threads);
}

static void sampling_self(tl_test_ctx *t) {
    char tp[1024];
    fixture(tp, sizeof tp, "gguf/tiny256_BF16.gguf");
    tl_infer_model m;
    if (load(t, &m, tp)) return;
    const tl_sampler_opts settings[] = {{1.0f, 0, 1.0f, 0.0f, 1.0f}, {0.8f, 5, 0.9f, 0.05f, 1.2f}};
    const int prompt[3] = {1, 5, 9};
    for (size_t si = 0; si < 2; si++) {
        collected a, b;
        tl_gen_end why;
        tl_gen_stats st;
        if (run_gen(t, &m, &m, 4, &settings[si], 42, prompt, 3, 0, 60, &a, &why, &st)) break;
        CHECK_MSG(st.n_draft_proposed > 0 && st.n_draft_accepted == st.n_draft_proposed,
                  "settings %zu: %ld of %ld accepted", si, st.n_draft_accepted, st.n_draft_proposed);
        if (run_gen(t, &m, &m, 4, &settings[si], 42, prompt, 3, 0, 60, &b, &why, &st)) break;
        CHECK(a.n == b.n && !memcmp(a.ids, b.ids, sizeof(int) * (size_t)a.n));
    }
    tl_infer_free(&m);
}

const tl_test tests_speculative[] = {
    {"spec_matvec_rows_exact", test_spec_matvec_rows_exact},
    {"spec_decode_rows_exact", test_spec_decode_rows_exact},
    {"spec_accept_exact", test_spec_accept_exact},
    {"spec_accept_greedy", test_spec_accept_greedy},
    {"spec_verify_chisq", test_spec_verify_chisq},
    {"spec_greedy_equal", test_spec_greedy_equal},
    {"spec_sampling_self", test_spec_sampling_self},
    {NULL, NULL},
};

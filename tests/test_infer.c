/* test_infer.c - the inference engine against HF transformers (fixtures written
 * by scripts/gen_infer_fixtures.py): logits of the batched prompt pass and of
 * KV-cache decode steps, greedy ids, windowed perplexity; the KV-cache path
 * against the training model's full recompute; every mat-vec kernel the CPU has;
 * the sampler's filters and seeding; and refusal of malformed checkpoints.
 *
 * Tolerances: logits are compared as max|ours - expected| / max|expected|.
 * Against transformers (fp32, different summation order): 1e-4.  KV cache vs
 * our own full recompute: 1e-5.  Perplexity NLL sums: relative 1e-5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attention.h"
#include "attention_amx.h"
#include "checkpoint.h"
#include "gemm.h"
#include "gemm_amx.h"
#include "harness.h"
#include "infer.h"
#include "model.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "sampler.h"

static const char *const MODELS[] = {"gqa_f32", "tied_bf16"};
static const char *const DIRS[] = {"infer_gqa_f32", "infer_tied_bf16"};

typedef struct {
    tl_safetensors exp;
    tl_infer_model m;
    int *prompt, *greedy, *ppl;
    int n_prompt, n_greedy, n_ppl;
    float *logits; /* [n_prompt + n_greedy - 1, V] */
    int ok;
} fixture;

static int *read_ids(tl_test_ctx *t, fixture *f, const char *name, int *n) {
    const tl_st_tensor *e = tl_st_find(&f->exp, name);
    CHECK_MSG(e != NULL, "fixture lacks %s", name);
    if (!e) return NULL;
    int *ids = malloc(sizeof(int) * e->numel);
    tl_error err;
    if (tl_st_read_i32(&f->exp, e, ids, e->numel, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(ids);
        return NULL;
    }
    *n = (int)e->numel;
    return ids;
}

static void fixture_close(fixture *f) {
    if (f->m.layers) tl_infer_free(&f->m);
    if (f->exp.map) tl_st_close(&f->exp);
    free(f->prompt);
    free(f->greedy);
    free(f->ppl);
    free(f->logits);
    memset(f, 0, sizeof *f);
}

static void fixture_open(tl_test_ctx *t, fixture *f, int which) {
    memset(f, 0, sizeof *f);
    char path[600];
    tl_error err;
    snprintf(path, sizeof path, "%s/infer_expected.safetensors", tl_test_fixture_dir());
    if (tl_st_open(&f->exp, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/%s", tl_test_fixture_dir(), DIRS[which]);
    if (tl_infer_load(&f->m, path, &err)) {
        CHECK_MSG(0, "load: %s", err.msg);
        fixture_close(f);
        return;
    }
    char name[128];
    snprintf(name, sizeof name, "%s.prompt", MODELS[which]);
    f->prompt = read_ids(t, f, name, &f->n_prompt);
    snprintf(name, sizeof name, "%s.greedy", MODELS[which]);
    f->greedy = read_ids(t, f, name, &f->n_greedy);
    snprintf(name, sizeof name, "%s.ppl_tokens", MODELS[which]);
    f->ppl = read_ids(t, f, name, &f->n_ppl);
    snprintf(name, sizeof name, "%s.logits", MODELS[which]);
    const tl_st_tensor *e = tl_st_find(&f->exp, name);
    if (!f->prompt || !f->greedy || !f->ppl || !e) {
        CHECK_MSG(e != NULL, "fixture lacks %s", name);
        fixture_close(f);
        return;
    }
    size_t want = (size_t)(f->n_prompt + f->n_greedy - 1) * (size_t)f->m.cfg.vocab_size;
    CHECK(e->numel == want);
    f->logits = malloc(sizeof(float) * e->numel);
    if (e->numel != want || tl_st_read_f32(&f->exp, e, f->logits, e->numel, &err)) {
        fixture_close(f);
        return;
    }
    f->ok = 1;
}

/* the whole sequence prompt + greedy[:-1] */
static int *full_sequence(const fixture *f, int *n) {
    *n = f->n_prompt + f->n_greedy - 1;
    int *seq = malloc(sizeof(int) * (size_t)*n);
    memcpy(seq, f->prompt, sizeof(int) * (size_t)f->n_prompt);
    memcpy(seq + f->n_prompt, f->greedy, sizeof(int) * (size_t)(f->n_greedy - 1));
    return seq;
}

/* Batched pass over the whole sequence, and prompt pass + one decode step per
 * token, both against transformers' logits; for every kernel this CPU has. */
static void check_logits(tl_test_ctx *t, int which) {
    fixture f;
    fixture_open(t, &f, which);
    if (!f.ok) return;
    const int V = f.m.cfg.vocab_size;
    int n;
    int *seq = full_sequence(&f, &n);
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    tl_infer_state s;
    tl_error err;
    CHECK_MSG(tl_infer_state_init(&s, &f.m, 0, &err) == 0, "%s", err.msg);
    for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
        if (!tl_kernel_supported((tl_kernel)k)) continue;
        tl_infer_set_kernel(&f.m, (tl_kernel)k, &err);
        /* bf16 activations (amx also in attention): ~2% of the largest logit on this tiny model */
        double tol = tl_kernel_rounds_bf16((tl_kernel)k) ? 3e-2 : 1e-4;
        tl_infer_truncate(&s, 0);
        CHECK_MSG(tl_infer_forward(&s, seq, n, lg, &err) == 0, "%s", err.msg);
        double e1 = tl_test_rel_err(lg, f.logits, (size_t)n * V);
        CHECK_MSG(e1 <= tol, "%s/%s batched: rel err %.3g > %.3g", MODELS[which], tl_kernel_name(k), e1, tol);
        /* prompt in one pass, then KV-cache decode */
        tl_infer_truncate(&s, 0);
        CHECK(tl_infer_forward(&s, seq, f.n_prompt, NULL, &err) == 0);
        double e2 = tl_test_rel_err(s.logits, f.logits + (size_t)(f.n_prompt - 1) * V, V);
        for (int i = f.n_prompt; i < n; i++) {
            CHECK(tl_infer_forward(&s, seq + i, 1, NULL, &err) == 0);
            e2 = fmax(e2, tl_test_rel_err(s.logits, f.logits + (size_t)i * V, V));
        }
        CHECK_MSG(e2 <= tol, "%s/%s decode: rel err %.3g > %.3g", MODELS[which], tl_kernel_name(k), e2, tol);
        CHECK(s.pos == n);
    }
    tl_infer_state_free(&s);
    free(lg);
    free(seq);
    fixture_close(&f);
}

static void test_infer_logits_gqa_f32(tl_test_ctx *t) { check_logits(t, 0); }
static void test_infer_logits_tied_bf16(tl_test_ctx *t) { check_logits(t, 1); }

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void check_greedy(tl_test_ctx *t, int which) {
    fixture f;
    fixture_open(t, &f, which);
    if (!f.ok) return;
    tl_infer_state s;
    tl_sampler sp;
    tl_sampler_opts o;
    tl_error err;
    tl_sampler_default_opts(&o);
    CHECK(tl_infer_state_init(&s, &f.m, 0, &err) == 0);
    CHECK(tl_sampler_init(&sp, &o, f.m.cfg.vocab_size, 1, &err) == 0);
    CHECK(tl_infer_forward(&s, f.prompt, f.n_prompt, NULL, &err) == 0);
    for (int i = 0; i < f.n_greedy; i++) {
        int id = tl_sampler_sample(&sp, s.logits, NULL, 0);
        CHECK_MSG(id == f.greedy[i], "%s step %d: got %d, transformers %d", MODELS[which], i, id, f.greedy[i]);
        if (id != f.greedy[i]) break;
        if (i + 1 < f.n_greedy) CHECK(tl_infer_forward(&s, &id, 1, NULL, &err) == 0);
    }
    tl_sampler_free(&sp);
    tl_infer_state_free(&s);
    fixture_close(&f);
}

static void test_infer_greedy_gqa_f32(tl_test_ctx *t) { check_greedy(t, 0); }
static void test_infer_greedy_tied_bf16(tl_test_ctx *t) { check_greedy(t, 1); }

/* The KV-cache path (odd chunk sizes, prompt split across calls, single-token
 * steps) against the training model's full recompute of the same sequence. */
static void check_kv_vs_full(tl_test_ctx *t, int which) {
    fixture f;
    fixture_open(t, &f, which);
    if (!f.ok) return;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tl_test_fixture_dir(), DIRS[which]);
    tl_model ref;
    tl_error err;
    if (tl_model_load_hf(dir, &ref, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        fixture_close(&f);
        return;
    }
    const int V = f.m.cfg.vocab_size;
    int n;
    int *seq = full_sequence(&f, &n);
    tl_acts *a = tl_acts_create(&ref.cfg, 1, n, &err);
    float *full = malloc(sizeof(float) * (size_t)n * V), *inc = malloc(sizeof(float) * (size_t)n * V);
    CHECK(a && tl_model_logits(&ref, a, seq, full, &err) == 0);
    tl_infer_state s;
    CHECK(tl_infer_state_init(&s, &f.m, 0, &err) == 0);
    s.chunk = 3; /* forces several batched chunks */
    /* pieces: 7 tokens (batched), 2 (mat-vec rows), then 1 at a time */
    int p = 0, sizes[] = {7, 2};
    for (int i = 0; i < 2; i++) {
        CHECK(tl_infer_forward(&s, seq + p, sizes[i], inc + (size_t)p * V, &err) == 0);
        p += sizes[i];
    }
    for (; p < n; p++) {
        CHECK(tl_infer_forward(&s, seq + p, 1, NULL, &err) == 0);
        memcpy(inc + (size_t)p * V, s.logits, sizeof(float) * V);
    }
    double e = tl_test_rel_err(inc, full, (size_t)n * V);
    CHECK_MSG(e <= 1e-5, "%s: KV cache vs full recompute rel err %.3g", MODELS[which], e);
    for (int i = 0; i < n; i++) CHECK(argmax(inc + (size_t)i * V, V) == argmax(full + (size_t)i * V, V));
    /* truncating and re-running the tail reproduces the same logits */
    tl_infer_truncate(&s, 5);
    CHECK(tl_infer_forward(&s, seq + 5, n - 5, NULL, &err) == 0);
    CHECK(tl_test_rel_err(s.logits, full + (size_t)(n - 1) * V, V) <= 1e-5);
    /* overflow and bad ids are refused without touching the cache */
    int bad = V;
    CHECK(tl_infer_forward(&s, &bad, 1, NULL, &err) != 0 && strstr(err.msg, "outside the vocabulary"));
    CHECK(s.pos == n);
    tl_infer_state small;
    CHECK(tl_infer_state_init(&small, &f.m, 4, &err) == 0);
    CHECK(tl_infer_forward(&small, seq, 5, NULL, &err) != 0 && strstr(err.msg, "context full"));
    CHECK(small.pos == 0);
    tl_infer_state_free(&small);
    tl_infer_state_free(&s);
    free(full);
    free(inc);
    free(seq);
    tl_acts_free(a);
    tl_model_free(&ref);
    fixture_close(&f);
}

static void test_infer_kv_vs_full_gqa_f32(tl_test_ctx *t) { check_kv_vs_full(t, 0); }
static void test_infer_kv_vs_full_tied_bf16(tl_test_ctx *t) { check_kv_vs_full(t, 1); }

/* Generation's default kernels: for BF16 weights the bf16-rounding ones only
 * where the CPU has AVX512-BF16 dot products measured faster than its FMAs,
 * oneDNN's bf16 matmul and no AMX; fp32 weights keep the exact ones. */
static void test_infer_bf16_default(tl_test_ctx *t) {
    const tl_kernel best = tl_kernel_best(), kb = tl_kernel_best_bf16();
    if (kb == TL_KERNEL_AVX512BF16)
        CHECK(best != TL_KERNEL_AMX_EXACT && tl_gemm_bf16_active() == TL_GEMM_BF16_ONEDNN &&
              tl_bf16_dot_rate() >= TL_BF16_DOT_RATE_PAYS - 0.2); /* measured again: a margin for noise */
    else
        CHECK(kb == best &&
              (best == TL_KERNEL_AMX_EXACT || !tl_kernel_supported(TL_KERNEL_AVX512BF16) ||
               tl_gemm_bf16_active() != TL_GEMM_BF16_ONEDNN || tl_bf16_dot_rate() < TL_BF16_DOT_RATE_PAYS + 0.2));
    for (int which = 0; which < 2; which++) {
        fixture f;
        fixture_open(t, &f, which);
        if (!f.ok) return;
        CHECK(f.m.kernel == best); /* loading picks the exact kernels */
        tl_infer_set_f32_activations(&f.m, 1); /* fp32 activations asked for: the exact kernels stay */
        tl_infer_prefer_bf16_rounding(&f.m);
        CHECK(f.m.kernel == best);
        tl_infer_set_f32_activations(&f.m, 0);
        tl_infer_prefer_bf16_rounding(&f.m);
        CHECK_MSG(f.m.kernel == (which == 1 ? kb : best), "%s: %s", MODELS[which], tl_kernel_name(f.m.kernel));
        fixture_close(&f);
    }
}

static void test_infer_perplexity(tl_test_ctx *t) {
    for (int which = 0; which < 2; which++) {
        fixture f;
        fixture_open(t, &f, which);
        if (!f.ok) return;
        static const int ws[][2] = {{32, 32}, {32, 16}, {128, 128}};
        tl_infer_state s;
        tl_error err;
        CHECK(tl_infer_state_init(&s, &f.m, 0, &err) == 0);
        s.chunk = 5;
        for (int i = 0; i < 3; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s.ppl.%d.%d", MODELS[which], ws[i][0], ws[i][1]);
            const tl_st_tensor *e = tl_st_find(&f.exp, name);
            CHECK_MSG(e != NULL, "fixture lacks %s", name);
            if (!e) continue;
            float ev[2];
            CHECK(tl_st_read_f32(&f.exp, e, ev, 2, &err) == 0);
            double nll = 0;
            long count = 0;
            CHECK_MSG(tl_infer_nll(&s, f.ppl, (size_t)f.n_ppl, ws[i][0], ws[i][1], &nll, &count, &err) == 0, "%s",
                      err.msg);
            CHECK_MSG(count == (long)ev[1], "%s: count %ld, expected %g", name, count, ev[1]);
            CHECK_CLOSE(nll, ev[0], 0, 1e-5);
        }
        tl_infer_state_free(&s);
        fixture_close(&f);
    }
}

/* Every supported kernel and dtype against a double-precision reference, with
 * row lengths that exercise the vector tails (and, past 3072 columns, the
 * eight-row AVX-512 BF16 kernel), a row count that leaves partial groups of
 * eight rows, and matrices of more than one 1 MiB work item; the multi-matrix
 * call must give the same bits as one call per matrix. */
static void test_infer_matvec_kernels(tl_test_ctx *t) {
    static const int cols[] = {1, 7, 37, 64, 100, 257, 1030, 3100, 5633};
    tl_rng r;
    tl_rng_seed(&r, 7);
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++) {
        const int R = 150, C = cols[ci];
        float *w32 = malloc(sizeof(float) * R * C), *x = malloc(sizeof(float) * C), *y = malloc(sizeof(float) * R);
        float *ym = malloc(sizeof(float) * 3 * R);
        uint16_t *wb = malloc(2u * R * C), *wh = malloc(2u * R * C + 1);
        for (int i = 0; i < R * C; i++) {
            float v = (float)tl_rng_normal(&r);
            wb[i] = tl_f32_to_bf16(v);
            w32[i] = tl_bf16_to_f32(wb[i]); /* exactly representable in bf16 and f16 range */
        }
        /* f16 of the same values via a simple exact conversion of bf16-rounded data is not exact, so
         * build f16 weights from small integers / 64, which f16 represents exactly */
        float *wf = malloc(sizeof(float) * R * C);
        for (int i = 0; i < R * C; i++) {
            int q = (int)tl_rng_below(&r, 257) - 128;
            wf[i] = (float)q / 64.0f;
            /* f16: sign, exponent, mantissa */
            float a = fabsf(wf[i]);
            uint16_t h = 0;
            if (a > 0) {
                int ex;
                float mant = frexpf(a, &ex); /* a = mant * 2^ex, mant in [0.5, 1) */
                h = (uint16_t)(((ex - 1 + 15) << 10) | (uint16_t)((mant * 2.0f - 1.0f) * 1024.0f));
            }
            if (wf[i] < 0) h |= 0x8000;
            wh[i] = h;
        }
        for (int i = 0; i < C; i++) x[i] = (float)tl_rng_normal(&r);
        struct {
            tl_dtype dt;
            const void *data;
            const float *ref;
        } cases[] = {{TL_DT_F32, w32, w32}, {TL_DT_BF16, wb, w32}, {TL_DT_F16, wh, wf}};
        for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k)) continue;
            for (int c = 0; c < 3; c++) {
                tl_wmat W = {cases[c].dt, cases[c].data, R, C, 0, 0, 0, 0};
                tl_wmat_matvec((tl_kernel)k, &W, x, y);
                double worst = 0;
                for (int i = 0; i < R; i++) {
                    double ref = 0, mag = 0;
                    for (int j = 0; j < C; j++) {
                        ref += (double)cases[c].ref[(size_t)i * C + j] * x[j];
                        mag += fabs((double)cases[c].ref[(size_t)i * C + j] * x[j]);
                    }
                    worst = fmax(worst, fabs(y[i] - ref) / (mag + 1e-30));
                }
                double tol = (tl_kernel_rounds_bf16((tl_kernel)k) && cases[c].dt == TL_DT_BF16) ? 1e-2 : 1e-5;
                CHECK_MSG(worst <= tol, "kernel %s dtype %s cols %d: rel err %.3g", tl_kernel_name(k),
                          tl_dtype_name(cases[c].dt), C, worst);
            }
            /* the three dtypes in one region (rows 150, 101 and 9) against separate calls */
            tl_wmat M[3] = {{TL_DT_F32, w32, R, C, 0, 0, 0, 0}, {TL_DT_BF16, wb, 101, C, 0, 0, 0, 0}, {TL_DT_F16, wh, 9, C, 0, 0, 0, 0}};
            const tl_wmat *Mp[3] = {&M[0], &M[1], &M[2]};
            float *outs[3] = {ym, ym + R, ym + 2 * R};
            tl_wmat_matvec_multi((tl_kernel)k, Mp, outs, 3, x);
            for (int c = 0; c < 3; c++) {
                tl_wmat_matvec((tl_kernel)k, &M[c], x, y);
                CHECK_MSG(!memcmp(y, outs[c], sizeof(float) * (size_t)M[c].rows), "kernel %s: multi-matrix %d differs",
                          tl_kernel_name(k), c);
            }
        }
        /* the f16 decoder used by the scalar path agrees with our hand encoding */
        for (int i = 0; i < R * C; i++) CHECK(tl_f16_to_f32(wh[i]) == wf[i]);
        free(w32);
        free(x);
        free(y);
        free(ym);
        free(wb);
        free(wh);
        free(wf);
    }
}

/* ------------------------------------------------------------------ sampler */

/* The AMX batched product against a double-precision sum: with one part, over
 * the same bf16 values (x rounded to nearest even, as the amx kernel
 * promises); with three (amx-exact), over the unrounded fp32 x, to fp32
 * accuracy.  Shapes with partial 32-row blocks, columns past a multiple of 32,
 * token counts that leave partial 16- and 32-token panels, several row groups;
 * padded row strides for x, W and y; = and += modes. */
static void test_infer_amx_gemm(tl_test_ctx *t) {
    if (!tl_amx_usable()) {
        fprintf(stderr, "  infer_amx_gemm: this CPU (or OS) has no AMX-BF16: the AMX product was not run\n");
        return;
    }
    static const int shapes[][3] = {/* rows, cols, n */
                                    {32, 32, 5},   {8, 40, 7},     {48, 80, 70},   {96, 64, 16},
                                    {64, 2080, 33}, {256, 2048, 100}, {2080, 96, 40}, {1056, 5632, 9}};
    tl_rng r;
    tl_rng_seed(&r, 11);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int R = shapes[si][0], C = shapes[si][1], n = shapes[si][2];
        const size_t ldw = (size_t)C + 3, ldx = (size_t)C + 5, ldy = (size_t)R + 7;
        uint16_t *w = malloc(2 * (size_t)R * ldw);
        float *x = malloc(sizeof(float) * (size_t)n * ldx), *y = malloc(sizeof(float) * (size_t)n * ldy);
        float *y0 = malloc(sizeof(float) * (size_t)n * ldy);
        void *pack = tl_alloc(3 * tl_amx_pack_bytes(n, C));
        for (size_t i = 0; i < (size_t)R * ldw; i++) w[i] = tl_f32_to_bf16((float)tl_rng_normal(&r));
        for (size_t i = 0; i < (size_t)n * ldx; i++) x[i] = (float)tl_rng_normal(&r);
        for (size_t i = 0; i < (size_t)n * ldy; i++) y0[i] = (float)tl_rng_normal(&r);
        for (int parts = 1; parts <= 3; parts += 2) {
            tl_amx_pack(x, ldx, n, C, parts, pack);
            for (int acc = 0; acc < 2; acc++) {
                memcpy(y, y0, sizeof(float) * (size_t)n * ldy);
                tl_amx_gemm(w, ldw, R, C, pack, parts, n, y, ldy, acc);
                double worst = 0;
                int pad_ok = 1;
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < R; j++) {
                        double ref = acc ? y0[(size_t)i * ldy + j] : 0, mag = fabs(ref);
                        for (int k = 0; k < C; k++) {
                            const float xv = x[(size_t)i * ldx + k];
                            double p = (double)tl_bf16_to_f32(w[(size_t)j * ldw + k]) *
                                       (parts == 1 ? tl_bf16_to_f32(tl_f32_to_bf16(xv)) : xv);
                            ref += p;
                            mag += fabs(p);
                        }
                        worst = fmax(worst, fabs(y[(size_t)i * ldy + j] - ref) / (mag + 1e-30));
                    }
                    for (size_t j = (size_t)R; j < ldy; j++) pad_ok &= y[(size_t)i * ldy + j] == y0[(size_t)i * ldy + j];
                }
                CHECK_MSG(worst <= 1e-6, "parts %d rows %d cols %d n %d%s: rel err %.3g", parts, R, C, n,
                          acc ? " (+=)" : "", worst);
                CHECK_MSG(pad_ok, "parts %d rows %d cols %d n %d: wrote past the rows of y", parts, R, C, n);
            }
        }
        free(w);
        free(x);
        free(y);
        free(y0);
        tl_free(pack);
    }
}

/* The fused gate/up/SwiGLU (straight into the packed input of the down
 * projection) is bit-identical to two products, the SwiGLU and packing, with
 * one part and with three. */
static void test_infer_amx_swiglu(tl_test_ctx *t) {
    if (!tl_amx_usable()) {
        fprintf(stderr, "  infer_amx_swiglu: this CPU (or OS) has no AMX-BF16: not run\n");
        return;
    }
    static const int shapes[][3] = {{96, 64, 37}, {32, 32, 1}, {1056, 2048, 70}}; /* F, D, n */
    tl_rng r;
    tl_rng_seed(&r, 13);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int F = shapes[si][0], D = shapes[si][1], n = shapes[si][2];
        uint16_t *wg = malloc(2 * (size_t)F * D), *wu = malloc(2 * (size_t)F * D);
        float *x = malloc(sizeof(float) * (size_t)n * D), *g = malloc(sizeof(float) * (size_t)n * F);
        float *u = malloc(sizeof(float) * (size_t)n * F);
        const size_t hb = 3 * tl_amx_pack_bytes(n, F);
        void *xp = tl_alloc(3 * tl_amx_pack_bytes(n, D)), *h1 = tl_alloc(hb), *h2 = tl_alloc(hb);
        for (size_t i = 0; i < (size_t)F * D; i++) {
            wg[i] = tl_f32_to_bf16((float)tl_rng_normal(&r) * 0.2f);
            wu[i] = tl_f32_to_bf16((float)tl_rng_normal(&r) * 0.2f);
        }
        for (size_t i = 0; i < (size_t)n * D; i++) x[i] = (float)tl_rng_normal(&r);
        for (int parts = 1; parts <= 3; parts += 2) {
            tl_amx_pack(x, (size_t)D, n, D, parts, xp);
            tl_amx_gemm(wg, (size_t)D, F, D, xp, parts, n, g, (size_t)F, 0);
            tl_amx_gemm(wu, (size_t)D, F, D, xp, parts, n, u, (size_t)F, 0);
            tl_swiglu_forward(g, g, u, (size_t)n * F);
            memset(h1, 0, hb);
            tl_amx_pack(g, (size_t)F, n, F, parts, h1);
            memset(h2, 0, hb);
            CHECK(tl_amx_swiglu(wg, wu, (size_t)D, F, D, xp, parts, n, h2) == 0);
            CHECK_MSG(!memcmp(h1, h2, hb), "parts %d F %d D %d n %d: fused SwiGLU differs", parts, F, D, n);
        }
        free(wg);
        free(wu);
        free(x);
        free(g);
        free(u);
        tl_free(xp);
        tl_free(h1);
        tl_free(h2);
    }
    CHECK(tl_amx_swiglu(NULL, NULL, 40, 48, 40, NULL, 1, 3, NULL) == -1); /* not multiples of 32 */
}

/* AMX attention (queries, keys, values and probabilities rounded to bf16) over a
 * cache, in pieces of 70, 3, 41 and 76 rows (partial 64-row blocks, cache lengths
 * off multiples of 32), against attention in double precision from the
 * definition on the unrounded inputs; head sizes 64 and 128, and 40 refused. */
static void test_infer_amx_attention(tl_test_ctx *t) {
    if (!tl_amx_usable()) {
        fprintf(stderr, "  infer_amx_attention: this CPU (or OS) has no AMX-BF16: not run\n");
        return;
    }
    enum { T = 190, H = 4, KV = 2 };
    static const int hds[] = {64, 128};
    tl_rng g;
    tl_rng_seed(&g, 43);
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
        const int HD = hds[hi], QS = H * HD, KS = KV * HD;
        float *q = malloc(sizeof(float) * T * QS), *k = malloc(sizeof(float) * T * KS);
        float *v = malloc(sizeof(float) * T * KS), *o = malloc(sizeof(float) * T * QS);
        void *scratch = tl_alloc(tl_attention_amx_scratch_bytes(T, KV, HD, 2));
        for (int i = 0; i < T * QS; i++) q[i] = (float)tl_rng_normal(&g);
        for (int i = 0; i < T * KS; i++) k[i] = (float)tl_rng_normal(&g), v[i] = (float)tl_rng_normal(&g);
        const int pieces[] = {70, 3, 41, 76};
        int p0 = 0;
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
            CHECK(tl_attention_forward_cached_amx(o + (size_t)p0 * QS, scratch, T, q + (size_t)p0 * QS, k, v, p0,
                                                  pieces[i], H, KV, HD, 2) == 0);
            p0 += pieces[i];
        }
        const double worst = tl_test_attention_err(o, q, k, v, T, H, KV, HD);
        /* bf16 keeps 8 bits: ~0.4% per rounding of O(1) values */
        CHECK_MSG(worst < 2e-2, "head size %d: AMX attention differs from the definition by %.3g", HD, worst);
        free(q);
        free(k);
        free(v);
        free(o);
        tl_free(scratch);
    }
    CHECK(tl_attention_forward_cached_amx(NULL, NULL, 64, NULL, NULL, NULL, 0, 8, 4, 2, 40, 2) == -1);
}

static void test_infer_sampler_filters(tl_test_ctx *t) {
    enum { V = 8 };
    /* softmax of these logits at temperature 1 */
    const float base[V] = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 2.5f, -2.0f};
    double p[V], z = 0;
    for (int i = 0; i < V; i++) z += exp(base[i]);
    for (int i = 0; i < V; i++) p[i] = exp(base[i]) / z;
    /* descending order: 3 (.40), 6 (.24), 0 (.15), 1 (.05), 2, 5, 4, 7 */
    tl_sampler s;
    tl_sampler_opts o;
    tl_error err;
    float lg[V], probs[V];
    tl_sampler_default_opts(&o);
    o.temperature = 1.0f;
    /* no filters: the softmax itself */
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&s, lg, NULL, 0, probs);
    for (int i = 0; i < V; i++) CHECK_CLOSE(probs[i], p[i], 1e-6, 1e-5);
    tl_sampler_free(&s);
    /* top-k 3 keeps {3, 6, 0} renormalised */
    o.top_k = 3;
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&s, lg, NULL, 0, probs);
    double k3 = p[3] + p[6] + p[0];
    for (int i = 0; i < V; i++) CHECK_CLOSE(probs[i], (i == 3 || i == 6 || i == 0) ? p[i] / k3 : 0.0, 1e-6, 1e-5);
    tl_sampler_free(&s);
    /* top-p: mass of {3} < 0.5 <= mass of {3, 6}: keeps two */
    o.top_k = 0;
    o.top_p = (float)(p[3] + 0.5 * p[6]);
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&s, lg, NULL, 0, probs);
    for (int i = 0; i < V; i++)
        CHECK_CLOSE(probs[i], (i == 3 || i == 6) ? p[i] / (p[3] + p[6]) : 0.0, 1e-6, 1e-5);
    tl_sampler_free(&s);
    /* min-p 0.3: keeps tokens with p >= 0.3 * p[3]: {3, 6, 0} (p0/p3 = e^-1 = .37), not 1 (e^-2) */
    o.top_p = 1.0f;
    o.min_p = 0.3f;
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&s, lg, NULL, 0, probs);
    for (int i = 0; i < V; i++) CHECK_CLOSE(probs[i], (i == 3 || i == 6 || i == 0) ? p[i] / k3 : 0.0, 1e-6, 1e-5);
    tl_sampler_free(&s);
    /* temperature 0.5 squares the odds */
    o.min_p = 0.0f;
    o.temperature = 0.5f;
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&s, lg, NULL, 0, probs);
    CHECK_CLOSE(probs[3] / probs[6], (p[3] / p[6]) * (p[3] / p[6]), 0, 1e-4);
    tl_sampler_free(&s);
    /* repetition penalty 2: positive logits halved, negative doubled, once per id */
    o.temperature = 0.0f;
    o.repetition_penalty = 2.0f;
    CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
    memcpy(lg, base, sizeof lg);
    int hist[] = {3, 4, 3, 6};
    tl_sampler_penalize(&s, lg, hist, 4);
    CHECK(lg[3] == 1.5f && lg[4] == -2.0f && lg[6] == 1.25f && lg[0] == 2.0f);
    memcpy(lg, base, sizeof lg);
    CHECK(tl_sampler_sample(&s, lg, hist, 4) == 0); /* 3 and 6 penalised: 0 wins greedy */
    tl_sampler_free(&s);
    /* option checks */
    o.repetition_penalty = 1.0f;
    o.top_p = 0.0f;
    CHECK(tl_sampler_check_opts(&o, &err) != 0);
    o.top_p = 1.0f;
    o.temperature = -1.0f;
    CHECK(tl_sampler_check_opts(&o, &err) != 0);
}

/* Top-p and min-p on a 32,000-token vocabulary (the sampler sorts only the head of
 * the ranking) against the definition: every candidate ranked by a full sort
 * (qsort, descending probability, ties by id), the smallest prefix whose mass
 * reaches top_p, then min_p of the most likely, renormalised.  Flat, peaked and
 * tied logits; kept sets must be equal and probabilities within 1e-6. */
static const double *ref_p;
static int ref_rank(const void *a, const void *b) {
    const int i = *(const int *)a, j = *(const int *)b;
    if (ref_p[i] != ref_p[j]) return ref_p[i] > ref_p[j] ? -1 : 1;
    return i - j;
}
static void test_infer_sampler_head(tl_test_ctx *t) {
    enum { V = 32000 };
    float *lg = malloc(sizeof(float) * V), *lg2 = malloc(sizeof(float) * V), *probs = malloc(sizeof(float) * V);
    double *p = malloc(sizeof(double) * V);
    int *idx = malloc(sizeof(int) * V);
    tl_rng r;
    tl_rng_seed(&r, 29);
    static const float tops[] = {1.0f, 0.95f, 0.5f, 0.999f, 0.9f};
    static const float mins[] = {0.05f, 0.0f, 0.0f, 0.0f, 0.2f};
    static const float scales[] = {0.3f, 2.0f, 8.0f}; /* flat .. peaked */
    for (int sc = 0; sc < 3; sc++)
        for (int c = 0; c < 5; c++) {
            for (int i = 0; i < V; i++) /* quantised to 1/8: many ties */
                lg[i] = roundf((float)tl_rng_normal(&r) * scales[sc] * 8.0f) / 8.0f;
            memcpy(lg2, lg, sizeof(float) * V);
            tl_sampler s;
            tl_sampler_opts o;
            tl_error err;
            tl_sampler_default_opts(&o);
            o.temperature = 0.8f;
            o.top_p = tops[c];
            o.min_p = mins[c];
            CHECK(tl_sampler_init(&s, &o, V, 1, &err) == 0);
            tl_sampler_probs(&s, lg2, NULL, 0, probs);
            tl_sampler_free(&s);
            /* the definition, in double */
            double mx = -INFINITY, kept = 0;
            for (int i = 0; i < V; i++) mx = fmax(mx, (double)(lg[i] * (1.0f / 0.8f)));
            for (int i = 0; i < V; i++) p[i] = exp((double)(lg[i] * (1.0f / 0.8f)) - mx), idx[i] = i, kept += p[i];
            ref_p = p;
            qsort(idx, V, sizeof(int), ref_rank);
            int n = V;
            if (o.top_p < 1.0f) {
                double acc = 0;
                n = 0;
                while (n < V && acc < o.top_p * kept) acc += p[idx[n++]];
            }
            int k = 1;
            while (k < n && p[idx[k]] >= o.min_p * p[idx[0]]) k++;
            if (o.min_p > 0.0f) n = k;
            double tot = 0, worst = 0;
            for (int i = 0; i < n; i++) tot += p[idx[i]];
            int kept_ok = 1;
            char *in = calloc(V, 1);
            for (int i = 0; i < n; i++) in[idx[i]] = 1;
            for (int i = 0; i < V; i++) {
                kept_ok &= (probs[i] > 0.0f) == (in[i] != 0);
                if (in[i]) worst = fmax(worst, fabs(probs[i] - p[i] / tot));
            }
            free(in);
            CHECK_MSG(kept_ok && worst < 1e-6, "scale %g top_p %g min_p %g: %d kept by the definition, sets %s, "
                      "worst prob diff %.3g", scales[sc], o.top_p, o.min_p, n, kept_ok ? "equal" : "differ", worst);
        }
    free(lg);
    free(lg2);
    free(probs);
    free(p);
    free(idx);
}

static void test_infer_sampler_seeded(tl_test_ctx *t) {
    enum { V = 50, N = 4000 };
    float base[V], lg[V];
    for (int i = 0; i < V; i++) base[i] = (float)sin(i * 1.7) * 2.0f;
    tl_sampler_opts o;
    tl_sampler_default_opts(&o);
    o.temperature = 0.9f;
    o.top_k = 20;
    o.top_p = 0.9f;
    tl_sampler a, b, c;
    tl_error err;
    CHECK(tl_sampler_init(&a, &o, V, 42, &err) == 0);
    CHECK(tl_sampler_init(&b, &o, V, 42, &err) == 0);
    CHECK(tl_sampler_init(&c, &o, V, 43, &err) == 0);
    int same_ab = 1, same_ac = 1, counts[V] = {0};
    float probs[V];
    memcpy(lg, base, sizeof lg);
    tl_sampler_probs(&a, lg, NULL, 0, probs);
    for (int i = 0; i < N; i++) {
        memcpy(lg, base, sizeof lg);
        int x = tl_sampler_sample(&a, lg, NULL, 0);
        memcpy(lg, base, sizeof lg);
        int y = tl_sampler_sample(&b, lg, NULL, 0);
        memcpy(lg, base, sizeof lg);
        int z = tl_sampler_sample(&c, lg, NULL, 0);
        same_ab &= x == y;
        same_ac &= x == z;
        CHECK(probs[x] > 0); /* never a filtered token */
        counts[x]++;
    }
    CHECK(same_ab);
    CHECK(!same_ac);
    /* empirical frequencies follow the filtered distribution (loose: 5 sigma) */
    for (int i = 0; i < V; i++) {
        double sd = sqrt(N * probs[i] * (1 - probs[i])) + 1;
        CHECK_MSG(fabs(counts[i] - N * probs[i]) <= 5 * sd, "id %d: %d draws, expected %.1f", i, counts[i],
                  N * probs[i]);
    }
    tl_sampler_free(&a);
    tl_sampler_free(&b);
    tl_sampler_free(&c);
}

/* --------------------------------------------------------------- bad files */

/* Copies config.json of the bf16 fixture into a fresh directory and writes its
 * tensors to model.safetensors with one change applied by `mutate`. */
typedef enum { DROP, RESHAPE, INT_DTYPE, EXTRA } mutation;

static int write_variant(tl_test_ctx *t, const char *dir, mutation mu, const char *target) {
    char src[600], path[700];
    tl_error err;
    mkdir(dir, 0755);
    snprintf(src, sizeof src, "%s/infer_tied_bf16/config.json", tl_test_fixture_dir());
    char *cfg;
    size_t len;
    if (tl_read_file(src, 1 << 20, &cfg, &len, &err)) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(tl_write_file_atomic(path, cfg, len, &err) == 0);
    free(cfg);
    snprintf(src, sizeof src, "%s/infer_tied_bf16/model.safetensors", tl_test_fixture_dir());
    tl_safetensors st;
    if (tl_st_open(&st, src, &err)) return -1;
    tl_st_entry *e = calloc((size_t)st.n + 1, sizeof *e);
    int32_t *ints = NULL;
    int n = 0;
    for (int i = 0; i < st.n; i++) {
        const tl_st_tensor *x = &st.tensors[i];
        int hit = !strcmp(x->name, target);
        if (hit && mu == DROP) continue;
        e[n].name = x->name;
        e[n].dtype = x->dtype;
        e[n].ndim = x->ndim;
        memcpy(e[n].shape, x->shape, sizeof x->shape);
        e[n].data = tl_st_data(&st, x);
        if (hit && mu == RESHAPE) { /* same bytes, transposed shape */
            e[n].shape[0] = x->shape[1];
            e[n].shape[1] = x->shape[0];
        }
        if (hit && mu == INT_DTYPE) { /* I32 of the same shape */
            ints = calloc(x->numel, sizeof *ints);
            e[n].dtype = TL_DT_I32;
            e[n].data = ints;
        }
        n++;
    }
    if (mu == EXTRA) {
        static const float one = 1.0f;
        e[n].name = target;
        e[n].dtype = TL_DT_F32;
        e[n].ndim = 1;
        e[n].shape[0] = 1;
        e[n].data = &one;
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = tl_st_write(path, e, n, NULL, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    free(e);
    free(ints);
    tl_st_close(&st);
    return rc;
}

static void expect_load_error(tl_test_ctx *t, const char *dir, const char *want1, const char *want2) {
    tl_infer_model m;
    tl_error err;
    int rc = tl_infer_load(&m, dir, &err);
    CHECK_MSG(rc != 0, "%s: loaded although it should be refused", dir);
    if (rc == 0) {
        tl_infer_free(&m);
        return;
    }
    CHECK_MSG(strstr(err.msg, want1) && strstr(err.msg, want2), "error '%s' lacks '%s' / '%s'", err.msg, want1,
              want2);
}

static void test_infer_bad_files(tl_test_ctx *t) {
    char dir[600];
    const char *tmp = tl_test_tmpdir();
    snprintf(dir, sizeof dir, "%s/inf_missing", tmp);
    if (write_variant(t, dir, DROP, "model.layers.1.mlp.up_proj.weight") == 0)
        expect_load_error(t, dir, "missing tensor", "model.layers.1.mlp.up_proj.weight");
    snprintf(dir, sizeof dir, "%s/inf_shape", tmp);
    if (write_variant(t, dir, RESHAPE, "model.layers.0.self_attn.k_proj.weight") == 0) {
        expect_load_error(t, dir, "model.layers.0.self_attn.k_proj.weight", "has shape [32, 8], expected [8, 32]");
        expect_load_error(t, dir, "inf_shape/model.safetensors", "shape");
    }
    snprintf(dir, sizeof dir, "%s/inf_shape2", tmp);
    if (write_variant(t, dir, RESHAPE, "model.layers.0.mlp.gate_proj.weight") == 0)
        expect_load_error(t, dir, "model.layers.0.mlp.gate_proj.weight", "expected [64, 32]");
    snprintf(dir, sizeof dir, "%s/inf_dtype", tmp);
    if (write_variant(t, dir, INT_DTYPE, "model.layers.0.self_attn.k_proj.weight") == 0)
        expect_load_error(t, dir, "model.layers.0.self_attn.k_proj.weight", "dtype I32");
    snprintf(dir, sizeof dir, "%s/inf_extra", tmp);
    if (write_variant(t, dir, EXTRA, "model.layers.7.self_attn.q_proj.bias") == 0)
        expect_load_error(t, dir, "unexpected tensor", "model.layers.7.self_attn.q_proj.bias");

    /* hand-written headers: data offsets past the end, an unknown dtype, overlap */
    static const struct {
        const char *name, *header, *want;
    } raw[] = {
        {"inf_offsets", "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[0,4096]}}",
         "outside the data section"},
        {"inf_f8", "{\"model.norm.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[32],\"data_offsets\":[0,32]}}",
         "unsupported dtype F8_E4M3"},
        {"inf_overlap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[16,48]}}",
         "overlap"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", tmp, raw[i].name);
        if (write_variant(t, dir, DROP, "") != 0) continue; /* config + a valid file, then overwrite it */
        char path[700];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        FILE *fp = fopen(path, "wb");
        size_t hl = strlen(raw[i].header);
        unsigned char len8[8];
        for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hl >> (8 * b));
        fwrite(len8, 1, 8, fp);
        fwrite(raw[i].header, 1, hl, fp);
        static const unsigned char zeros[64];
        fwrite(zeros, 1, 48, fp);
        fclose(fp);
        expect_load_error(t, dir, raw[i].want, "model.safetensors");
    }
    /* a shard index pointing at a file that lacks the tensor */
    snprintf(dir, sizeof dir, "%s/inf_index", tmp);
    if (write_variant(t, dir, DROP, "") == 0) {
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/model.safetensors", dir);
        snprintf(b, sizeof b, "%s/model-00001-of-00001.safetensors", dir);
        CHECK(rename(a, b) == 0);
        snprintf(a, sizeof a, "%s/model.safetensors.index.json", dir);
        const char *idx = "{\"metadata\":{},\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00001.safetensors\","
                          "\"lm_head.weight\":\"model-00001-of-00001.safetensors\"}}";
        tl_error err;
        CHECK(tl_write_file_atomic(a, idx, strlen(idx), &err) == 0);
        expect_load_error(t, dir, "lm_head.weight", "lacks it");
    }
    /* no weights at all */
    snprintf(dir, sizeof dir, "%s/inf_none", tmp);
    if (write_variant(t, dir, DROP, "") == 0) {
        char a[700];
        snprintf(a, sizeof a, "%s/model.safetensors", dir);
        remove(a);
        expect_load_error(t, dir, "no model.safetensors", "inf_none");
    }
}

/* The model directory's extras: tokenizer and generation config. */
static void test_infer_directory(tl_test_ctx *t) {
    fixture f;
    fixture_open(t, &f, 0);
    if (!f.ok) return;
    CHECK(f.m.tok != NULL);
    CHECK(f.m.n_files == 3);
    CHECK(f.m.gen.n_eos == 1 && f.m.gen.eos_ids[0] == 2 && f.m.gen.bos_id == 1);
    CHECK(f.m.cfg.n_kv_heads == 2 && !f.m.cfg.tied);
    CHECK(f.m.embed.dtype == TL_DT_F32);
    fixture_close(&f);
    fixture_open(t, &f, 1);
    if (!f.ok) return;
    CHECK(f.m.cfg.tied && f.m.lm_head.data == f.m.embed.data && f.m.embed.dtype == TL_DT_BF16);
    /* bf16 weights: 2 bytes per element read per token */
    size_t D = 32, F = 64, V = 1000, KD = 8;
    CHECK(f.m.decode_bytes == 2 * (V * D + 2 * (D * D + 2 * KD * D + D * D + 3 * D * F)));
    fixture_close(&f);
}

const tl_test tests_infer[] = {
    {"infer_logits_gqa_f32", test_infer_logits_gqa_f32},
    {"infer_logits_tied_bf16", test_infer_logits_tied_bf16},
    {"infer_greedy_gqa_f32", test_infer_greedy_gqa_f32},
    {"infer_greedy_tied_bf16", test_infer_greedy_tied_bf16},
    {"infer_kv_vs_full_gqa_f32", test_infer_kv_vs_full_gqa_f32},
    {"infer_kv_vs_full_tied_bf16", test_infer_kv_vs_full_tied_bf16},
    {"infer_bf16_default", test_infer_bf16_default},
    {"infer_perplexity", test_infer_perplexity},
    {"infer_matvec_kernels", test_infer_matvec_kernels},
    {"infer_amx_gemm", test_infer_amx_gemm},
    {"infer_amx_swiglu", test_infer_amx_swiglu},
    {"infer_amx_attention", test_infer_amx_attention},
    {"infer_sampler_filters", test_infer_sampler_filters},
    {"infer_sampler_seeded", test_infer_sampler_seeded},
    {"infer_sampler_head", test_infer_sampler_head},
    {"infer_bad_files", test_infer_bad_files},
    {"infer_directory", test_infer_directory},
    {NULL, NULL},
};

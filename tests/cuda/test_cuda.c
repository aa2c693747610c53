/* test_cuda.c - GPU tests: every CUDA kernel against the CPU reference
 * (src/model/ops.c, src/model/attention.c, src/train/optimizer.c) in fp32 and bf16 storage, a
 * full training step against tl_model_forward_backward, and a short training
 * run against the CPU loop.  Fresh random inputs every run (seed from the clock
 * unless TL_SEED is set; the seed is printed), outputs NaN-poisoned before each
 * kernel so an unwritten element fails.  Errors are ||gpu - cpu|| / ||cpu||
 * unless stated.  Without a GPU: prints "no GPU: skipping" and exits 0.
 * Usage: test_cuda [substring-filter] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "cuda_engine.h"
#include "harness.h"
#include "model.h"
#include "ops.h"
#include "optimizer.h"
#include "rng.h"

/* shared state of one run (test-local, not library state) */
static tl_rng g_rng;

static const char *dtn(int dt) { return dt == TL_CUDA_BF16 ? "bf16" : "fp32"; }

static float *hnew(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void fill(float *p, size_t n, double std) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(std * tl_rng_normal(&g_rng));
}

static void round_if(float *p, size_t n, int dt) {
    if (dt == TL_CUDA_BF16)
        for (size_t i = 0; i < n; i++) p[i] = tl_cuda_round_bf16(p[i]);
}

static void die_on(int rc, const tl_error *err) {
    if (rc) {
        fprintf(stderr, "CUDA error: %s\n", err->msg);
        exit(2);
    }
}

/* device copy of host data in dt (host data first rounded to dt, so the CPU sees the same inputs) */
static void *din(float *h, size_t n, int dt) {
    tl_error err = {{0}};
    round_if(h, n, dt);
    void *d = tl_cuda_malloc(n * tl_cuda_dtype_size(dt), &err);
    die_on(!d, &err);
    die_on(tl_cuda_upload(d, h, n, dt, &err), &err);
    return d;
}

/* poisoned device output */
static void *dout(size_t n, int dt) {
    tl_error err = {{0}};
    void *d = tl_cuda_malloc(n * tl_cuda_dtype_size(dt), &err);
    die_on(!d, &err);
    die_on(tl_cuda_fill_nan(d, n, dt, NULL, &err), &err);
    return d;
}

static float *back(const void *d, size_t n, int dt) {
    tl_error err = {{0}};
    float *h = hnew(n);
    die_on(tl_cuda_sync(&err), &err);
    die_on(tl_cuda_download(h, d, n, dt, &err), &err);
    return h;
}

/* ||a-b|| / ||b||; NaN/inf anywhere in a gives +inf */
static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define CHECK_REL(a, b, n, tol, what)                                                              \
    do {                                                                                           \
        double e_ = relerr((a), (b), (n));                                                         \
        CHECK_MSG(e_ <= (tol), "%s: relative error %.3g > %.3g", (what), e_, (double)(tol));       \
    } while (0)

/* tolerance of a kernel's output stored in dt: fp32 ~ rounding, bf16 ~ 8 mantissa bits */
static double tol_out(int dt, double f32) { return dt == TL_CUDA_BF16 ? 1e-2 : f32; }

/* ------------------------------------------------------------------ kernels */

static void gemm_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    const int N = 67, in = 96, out = 80;
    float *x = hnew((size_t)N * in), *W = hnew((size_t)out * in), *dy = hnew((size_t)N * out);
    float *y0 = hnew((size_t)N * out), *dW0 = hnew((size_t)out * in);
    fill(x, (size_t)N * in, 1), fill(W, (size_t)out * in, 0.1), fill(dy, (size_t)N * out, 1);
    fill(y0, (size_t)N * out, 1), fill(dW0, (size_t)out * in, 1);
    void *dx_ = din(x, (size_t)N * in, dt), *dW_ = din(W, (size_t)out * in, dt), *ddy = din(dy, (size_t)N * out, dt);
    tl_cuda_gemm *g = tl_cuda_gemm_create(&err);
    die_on(!g, &err);
    /* y = x W^T (dt out), y += x W^T (fp32 out, beta 1) */
    void *dy1 = dout((size_t)N * out, dt);
    void *dy2 = din(y0, (size_t)N * out, TL_CUDA_F32);
    die_on(tl_cuda_linear_forward(g, dt, dt, dy1, dx_, dW_, N, in, out, 0.0f, NULL, &err), &err);
    die_on(tl_cuda_linear_forward(g, dt, TL_CUDA_F32, dy2, dx_, dW_, N, in, out, 1.0f, NULL, &err), &err);
    float *ref = hnew((size_t)N * out), *ref2 = hnew((size_t)N * out);
    tl_linear_forward(ref, x, W, N, in, out, 0);
    memcpy(ref2, y0, sizeof(float) * (size_t)N * out);
    tl_linear_forward(ref2, x, W, N, in, out, 1);
    float *r1 = back(dy1, (size_t)N * out, dt), *r2 = back(dy2, (size_t)N * out, TL_CUDA_F32);
    CHECK_REL(r1, ref, (size_t)N * out, tol_out(dt, 1e-5), "linear forward");
    CHECK_REL(r2, ref2, (size_t)N * out, 1e-5, "linear forward, fp32 out, accumulate");
    /* dx = dy W ; dW += dy^T x */
    void *ddx = dout((size_t)N * in, TL_CUDA_F32), *ddW = din(dW0, (size_t)out * in, TL_CUDA_F32);
    die_on(tl_cuda_linear_backward_dx(g, dt, TL_CUDA_F32, ddx, ddy, dW_, N, in, out, 0.0f, NULL, &err), &err);
    die_on(tl_cuda_linear_backward_dw(g, dt, ddW, ddy, dx_, N, in, out, 1.0f, NULL, &err), &err);
    float *rdx = hnew((size_t)N * in), *rdW = hnew((size_t)out * in);
    memcpy(rdW, dW0, sizeof(float) * (size_t)out * in);
    tl_linear_backward(rdx, rdW, dy, x, W, N, in, out, 0);
    float *gdx = back(ddx, (size_t)N * in, TL_CUDA_F32), *gdW = back(ddW, (size_t)out * in, TL_CUDA_F32);
    CHECK_REL(gdx, rdx, (size_t)N * in, 1e-5, "linear backward dx");
    CHECK_REL(gdW, rdW, (size_t)out * in, 1e-5, "linear backward dW (accumulated)");
    tl_cuda_gemm_free(g);
    void *dev[] = {dx_, dW_, ddy, dy1, dy2, ddx, ddW};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) tl_cuda_free(dev[i]);
    float *hs[] = {x, W, dy, y0, dW0, ref, ref2, r1, r2, rdx, rdW, gdx, gdW};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void rmsnorm_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    const int N = 100, D = 288;
    const size_t ND = (size_t)N * D;
    float *x = hnew(ND), *br = hnew(ND), *w = hnew(D), *dy = hnew(ND), *dx0 = hnew(ND), *dw0 = hnew(D);
    fill(x, ND, 1), fill(br, ND, 0.5), fill(w, D, 0.3), fill(dy, ND, 1), fill(dx0, ND, 1), fill(dw0, D, 1);
    for (int i = 0; i < D; i++) w[i] += 1.0f;
    float *xs = hnew(ND), *ry = hnew(ND), *rr = hnew(N);
    for (size_t i = 0; i < ND; i++) xs[i] = x[i] + br[i];
    tl_rmsnorm_forward(ry, rr, xs, w, N, D, 1e-5f);
    void *dx_in = din(x, ND, TL_CUDA_F32), *dbr = din(br, ND, TL_CUDA_F32), *dw_ = din(w, D, TL_CUDA_F32);
    void *dxo = dout(ND, TL_CUDA_F32), *dyo = dout(ND, dt), *dr = dout(N, TL_CUDA_F32);
    die_on(tl_cuda_add_rmsnorm_forward(dt, dxo, dyo, dr, dx_in, dbr, dw_, N, D, 1e-5f, NULL, &err), &err);
    float *gx = back(dxo, ND, TL_CUDA_F32), *gy = back(dyo, ND, dt), *gr = back(dr, N, TL_CUDA_F32);
    CHECK_REL(gx, xs, ND, 1e-7, "residual sum");
    CHECK_REL(gy, ry, ND, tol_out(dt, 1e-6), "rmsnorm forward");
    CHECK_REL(gr, rr, N, 1e-6, "rstd");
    /* backward, accumulating into dx and dw */
    float *rdx = hnew(ND), *rdw = hnew(D);
    memcpy(rdx, dx0, sizeof(float) * ND);
    memcpy(rdw, dw0, sizeof(float) * D);
    tl_rmsnorm_backward(rdx, rdw, dy, xs, w, rr, N, D);
    void *ddy = din(dy, ND, TL_CUDA_F32), *dxs = din(xs, ND, TL_CUDA_F32), *drr = din(rr, N, TL_CUDA_F32);
    void *ddx = din(dx0, ND, TL_CUDA_F32), *ddw = din(dw0, D, TL_CUDA_F32), *dlp = dout(ND, dt);
    void *scratch = dout(tl_cuda_rmsnorm_scratch_floats(N, D), TL_CUDA_F32);
    die_on(tl_cuda_rmsnorm_backward(dt, ddx, dlp, ddw, scratch, ddy, dxs, dw_, drr, N, D, 1, NULL, &err), &err);
    float *gdx = back(ddx, ND, TL_CUDA_F32), *gdw = back(ddw, D, TL_CUDA_F32), *glp = back(dlp, ND, dt);
    CHECK_REL(gdx, rdx, ND, 1e-6, "rmsnorm backward dx");
    CHECK_REL(glp, rdx, ND, tol_out(dt, 1e-6), "rmsnorm backward dx copy");
    CHECK_REL(gdw, rdw, D, 1e-5, "rmsnorm backward dw");
    void *dev[] = {dx_in, dbr, dw_, dxo, dyo, dr, ddy, dxs, drr, ddx, ddw, dlp, scratch};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) tl_cuda_free(dev[i]);
    float *hs[] = {x, br, w, dy, dx0, dw0, xs, ry, rr, gx, gy, gr, rdx, rdw, gdx, gdw, glp};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void rope_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    const int T = 37, N = 2 * T, heads = 6, hd = 16, width = heads * hd, stride = width + 16, maxpos = 64;
    float *cs = hnew((size_t)maxpos * hd / 2), *sn = hnew((size_t)maxpos * hd / 2);
    tl_rope_tables(cs, sn, maxpos, hd, 10000.0f);
    float *x = hnew((size_t)N * stride);
    fill(x, (size_t)N * stride, 1);
    void *dx = din(x, (size_t)N * stride, dt);
    void *dcs = din(cs, (size_t)maxpos * hd / 2, TL_CUDA_F32), *dsn = din(sn, (size_t)maxpos * hd / 2, TL_CUDA_F32);
    for (int bwd = 0; bwd < 2; bwd++) {
        float *ref = hnew((size_t)N * stride), *packed = hnew((size_t)N * width);
        tl_error e2 = {{0}};
        die_on(tl_cuda_upload(dx, x, (size_t)N * stride, dt, &e2), &e2);
        die_on(tl_cuda_rope(dt, dx, stride, dcs, dsn, N, T, heads, hd, bwd, NULL, &err), &err);
        for (int n = 0; n < N; n++) memcpy(packed + (size_t)n * width, x + (size_t)n * stride, sizeof(float) * width);
        if (bwd) tl_rope_backward(packed, cs, sn, N, T, 0, heads, hd);
        else tl_rope_forward(packed, cs, sn, N, T, 0, heads, hd);
        memcpy(ref, x, sizeof(float) * (size_t)N * stride);
        for (int n = 0; n < N; n++) memcpy(ref + (size_t)n * stride, packed + (size_t)n * width, sizeof(float) * width);
        float *g = back(dx, (size_t)N * stride, dt);
        CHECK_REL(g, ref, (size_t)N * stride, tol_out(dt, 1e-6), bwd ? "rope backward" : "rope forward");
        free(g), free(ref), free(packed);
    }
    tl_cuda_free(dx), tl_cuda_free(dcs), tl_cuda_free(dsn);
    free(cs), free(sn), free(x);
}

static void swiglu_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    const int N = 53, F = 120;
    const size_t NF = (size_t)N * F;
    float *gu = hnew(2 * NF), *dact = hnew(NF);
    fill(gu, 2 * NF, 2), fill(dact, NF, 1);
    round_if(gu, 2 * NF, dt), round_if(dact, NF, dt);
    float *g = hnew(NF), *u = hnew(NF);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < F; j++) {
            g[(size_t)n * F + j] = gu[(size_t)n * 2 * F + j];
            u[(size_t)n * F + j] = gu[(size_t)n * 2 * F + F + j];
        }
    float *ra = hnew(NF), *rdg = hnew(NF), *rdu = hnew(NF), *rdgu = hnew(2 * NF);
    tl_swiglu_forward(ra, g, u, NF);
    tl_swiglu_backward(rdg, rdu, dact, g, u, NF);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < F; j++) {
            rdgu[(size_t)n * 2 * F + j] = rdg[(size_t)n * F + j];
            rdgu[(size_t)n * 2 * F + F + j] = rdu[(size_t)n * F + j];
        }
    void *dgu_in = din(gu, 2 * NF, dt), *ddact = din(dact, NF, dt), *dact_out = dout(NF, dt), *ddgu = dout(2 * NF, dt);
    die_on(tl_cuda_swiglu_forward(dt, dact_out, dgu_in, N, F, NULL, &err), &err);
    die_on(tl_cuda_swiglu_backward(dt, ddgu, ddact, dgu_in, N, F, NULL, &err), &err);
    float *ga = back(dact_out, NF, dt), *gdgu = back(ddgu, 2 * NF, dt);
    CHECK_REL(ga, ra, NF, tol_out(dt, 1e-6), "swiglu forward");
    CHECK_REL(gdgu, rdgu, 2 * NF, tol_out(dt, 1e-6), "swiglu backward");
    tl_cuda_free(dgu_in), tl_cuda_free(ddact), tl_cuda_free(dact_out), tl_cuda_free(ddgu);
    float *hs[] = {gu, dact, g, u, ra, rdg, rdu, rdgu, ga, gdgu};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void ce_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    const int rows = 9, V = 1000;
    const float scale = 0.37f;
    const size_t n = (size_t)rows * V;
    float *z = hnew(n), *ref = hnew(n), *rl = hnew(rows);
    int tg[9];
    fill(z, n, 3);
    for (int r = 0; r < rows; r++) tg[r] = r == 4 ? -1 : (int)tl_rng_below(&g_rng, V);
    memcpy(ref, z, sizeof(float) * n);
    tl_cross_entropy_rows(ref, rl, tg, rows, V, scale);
    void *dz = din(z, n, TL_CUDA_F32), *dd = dout(n, dt), *dl = dout(rows, TL_CUDA_F32);
    int *dtg = tl_cuda_malloc(sizeof tg, &err);
    die_on(!dtg, &err);
    die_on(tl_cuda_memcpy_h2d(dtg, tg, sizeof tg, &err), &err);
    die_on(tl_cuda_cross_entropy(dt, dd, dl, dz, dtg, rows, V, scale, NULL, &err), &err);
    float *gd = back(dd, n, dt), *gl = back(dl, rows, TL_CUDA_F32);
    CHECK_REL(gl, rl, rows, 1e-6, "cross-entropy loss");
    CHECK_REL(gd, ref, n, tol_out(dt, 1e-5), "cross-entropy dlogits");
    tl_cuda_free(dz), tl_cuda_free(dd), tl_cuda_free(dl), tl_cuda_free(dtg);
    free(z), free(ref), free(rl), free(gd), free(gl);
}

static void embedding_case(tl_test_ctx *t) {
    tl_error err = {{0}};
    const int V = 50, D = 72, N = 120;
    float *tab = hnew((size_t)V * D), *d0 = hnew((size_t)V * D), *dy = hnew((size_t)N * D);
    int ids[120];
    fill(tab, (size_t)V * D, 1), fill(d0, (size_t)V * D, 1), fill(dy, (size_t)N * D, 1);
    for (int i = 0; i < N; i++) ids[i] = (int)tl_rng_below(&g_rng, 20); /* many repeats */
    float *ro = hnew((size_t)N * D), *rd = hnew((size_t)V * D);
    tl_embedding_forward(ro, tab, ids, N, D);
    memcpy(rd, d0, sizeof(float) * (size_t)V * D);
    tl_embedding_backward(rd, dy, ids, N, D);
    void *dtab = din(tab, (size_t)V * D, 0), *dd0 = din(d0, (size_t)V * D, 0), *ddy = din(dy, (size_t)N * D, 0);
    void *dout_ = dout((size_t)N * D, 0);
    int *dids = tl_cuda_malloc(sizeof ids, &err);
    die_on(!dids, &err);
    die_on(tl_cuda_memcpy_h2d(dids, ids, sizeof ids, &err), &err);
    die_on(tl_cuda_embedding_forward(dout_, dtab, dids, N, D, NULL, &err), &err);
    die_on(tl_cuda_embedding_backward(dd0, ddy, dids, N, D, NULL, &err), &err);
    float *go = back(dout_, (size_t)N * D, 0), *gd = back(dd0, (size_t)V * D, 0);
    CHECK_REL(go, ro, (size_t)N * D, 0.0, "embedding forward (exact)");
    CHECK_REL(gd, rd, (size_t)V * D, 1e-6, "embedding backward");
    tl_cuda_free(dtab), tl_cuda_free(dd0), tl_cuda_free(ddy), tl_cuda_free(dout_), tl_cuda_free(dids);
    free(tab), free(d0), free(dy), free(ro), free(rd), free(go), free(gd);
}

/* q, k, v packed in one [N, QD + 2 KD] buffer as the engine does */
static void attention_case(tl_test_ctx *t, int dt, int B, int T, int H, int KV, int hd) {
    tl_error err = {{0}};
    const int QD = H * hd, KD = KV * hd, W = QD + 2 * KD, N = B * T;
    float *qkv = hnew((size_t)N * W), *dO = hnew((size_t)N * QD);
    fill(qkv, (size_t)N * W, 1), fill(dO, (size_t)N * QD, 1);
    round_if(qkv, (size_t)N * W, dt), round_if(dO, (size_t)N * QD, dt);
    float *q = hnew((size_t)N * QD), *k = hnew((size_t)N * KD), *v = hnew((size_t)N * KD);
    for (int n = 0; n < N; n++) {
        memcpy(q + (size_t)n * QD, qkv + (size_t)n * W, sizeof(float) * QD);
        memcpy(k + (size_t)n * KD, qkv + (size_t)n * W + QD, sizeof(float) * KD);
        memcpy(v + (size_t)n * KD, qkv + (size_t)n * W + QD + KD, sizeof(float) * KD);
    }
    float *ro = hnew((size_t)N * QD), *probs = hnew((size_t)B * H * T * T);
    float *rdq = hnew((size_t)N * QD), *rdk = hnew((size_t)N * KD), *rdv = hnew((size_t)N * KD);
    tl_attention_forward(ro, probs, q, k, v, B, T, H, KV, hd);
    float *ro_r = hnew((size_t)N * QD); /* the backward on the GPU reads its own (rounded) output */
    memcpy(ro_r, ro, sizeof(float) * (size_t)N * QD);
    tl_attention_backward(rdq, rdk, rdv, dO, probs, q, k, v, B, T, H, KV, hd);
    float *rdqkv = hnew((size_t)N * W);
    for (int n = 0; n < N; n++) {
        memcpy(rdqkv + (size_t)n * W, rdq + (size_t)n * QD, sizeof(float) * QD);
        memcpy(rdqkv + (size_t)n * W + QD, rdk + (size_t)n * KD, sizeof(float) * KD);
        memcpy(rdqkv + (size_t)n * W + QD + KD, rdv + (size_t)n * KD, sizeof(float) * KD);
    }
    size_t es = tl_cuda_dtype_size(dt);
    void *dqkv = din(qkv, (size_t)N * W, dt), *ddO = din(dO, (size_t)N * QD, dt);
    void *dout_ = dout((size_t)N * QD, dt), *dlse = dout((size_t)B * H * T, 0), *ddelta = dout((size_t)B * H * T, 0);
    void *dg = dout((size_t)N * W, dt);
    char *qb = dqkv, *gb = dg;
    die_on(tl_cuda_attention_forward(dt, dout_, dlse, qb, qb + QD * es, qb + (QD + KD) * es, W, W, B, T, H, KV, hd,
                                     NULL, &err), &err);
    die_on(tl_cuda_attention_backward(dt, gb, gb + QD * es, gb + (QD + KD) * es, ddelta, ddO, dout_, dlse, qb,
                                      qb + QD * es, qb + (QD + KD) * es, W, W, B, T, H, KV, hd, NULL, &err), &err);
    float *go = back(dout_, (size_t)N * QD, dt), *gg = back(dg, (size_t)N * W, dt);
    char what[160];
    snprintf(what, sizeof what, "attention forward B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_REL(go, ro, (size_t)N * QD, tol_out(dt, 1e-5), what);
    snprintf(what, sizeof what, "attention backward dq|dk|dv B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_REL(gg, rdqkv, (size_t)N * W, dt == TL_CUDA_BF16 ? 2e-2 : 1e-5, what);
    tl_cuda_free(dqkv), tl_cuda_free(ddO), tl_cuda_free(dout_), tl_cuda_free(dlse), tl_cuda_free(ddelta), tl_cuda_free(dg);
    float *hs[] = {qkv, dO, q, k, v, ro, probs, rdq, rdk, rdv, ro_r, rdqkv, go, gg};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void adamw_case(tl_test_ctx *t) {
    tl_error err = {{0}};
    const size_t n = 100003;
    float *p = hnew(n), *g = hnew(n), *m = hnew(n), *v = hnew(n);
    fill(p, n, 0.05), fill(g, n, 0.01), fill(m, n, 0.001), fill(v, n, 1e-5);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    void *dp = din(p, n, 0), *dg = din(g, n, 0), *dm = din(m, n, 0), *dv = din(v, n, 0), *dlp = dout(n, TL_CUDA_BF16);
    double *scratch = tl_cuda_malloc(tl_cuda_grad_norm_scratch() * sizeof(double), &err);
    die_on(!scratch, &err);
    tl_adamw_config c = tl_adamw_defaults();
    c.clip = 1.0;
    double ref_norm = tl_grad_norm(g, n), norm = -1;
    die_on(tl_cuda_grad_norm(&norm, scratch, dg, n, NULL, &err), &err);
    CHECK_CLOSE(norm, ref_norm, 0.0, 1e-12);
    CHECK(ref_norm > c.clip); /* clipping is exercised */
    double cd = c.clip / (norm + 1e-6);
    tl_clip_grads(g, n, ref_norm, c.clip);
    tl_adamw_update(p, g, m, v, n, 3e-4, &c, 7);
    die_on(tl_cuda_adamw(dp, dlp, dg, dm, dv, n, cd < 1 ? (float)cd : 1.0f, 3e-4, c.beta1, c.beta2, c.eps,
                         c.weight_decay, 7, NULL, &err), &err);
    float *gp = back(dp, n, 0), *gm = back(dm, n, 0), *gv = back(dv, n, 0), *glp = back(dlp, n, TL_CUDA_BF16);
    CHECK_REL(gp, p, n, 1e-6, "adamw params");
    CHECK_REL(gm, m, n, 1e-6, "adamw m");
    CHECK_REL(gv, v, n, 1e-6, "adamw v");
    round_if(gp, n, TL_CUDA_BF16);
    CHECK_REL(glp, gp, n, 0.0, "adamw bf16 weight copy");
    tl_cuda_free(dp), tl_cuda_free(dg), tl_cuda_free(dm), tl_cuda_free(dv), tl_cuda_free(dlp), tl_cuda_free(scratch);
    free(p), free(g), free(m), free(v), free(gp), free(gm), free(gv), free(glp);
}

static void t_gemm_f32(tl_test_ctx *t) { gemm_case(t, TL_CUDA_F32); }
static void t_gemm_bf16(tl_test_ctx *t) { gemm_case(t, TL_CUDA_BF16); }
static void t_rmsnorm_f32(tl_test_ctx *t) { rmsnorm_case(t, TL_CUDA_F32); }
static void t_rmsnorm_bf16(tl_test_ctx *t) { rmsnorm_case(t, TL_CUDA_BF16); }
static void t_rope_f32(tl_test_ctx *t) { rope_case(t, TL_CUDA_F32); }
static void t_rope_bf16(tl_test_ctx *t) { rope_case(t, TL_CUDA_BF16); }
static void t_swiglu_f32(tl_test_ctx *t) { swiglu_case(t, TL_CUDA_F32); }
static void t_swiglu_bf16(tl_test_ctx *t) { swiglu_case(t, TL_CUDA_BF16); }
static void t_ce_f32(tl_test_ctx *t) { ce_case(t, TL_CUDA_F32); }
static void t_ce_bf16(tl_test_ctx *t) { ce_case(t, TL_CUDA_BF16); }
static void t_embedding(tl_test_ctx *t) { embedding_case(t); }
static void t_adamw(tl_test_ctx *t) { adamw_case(t); }
static void attention_all(tl_test_ctx *t, int dt) {
    attention_case(t, dt, 2, 70, 4, 2, 16);
    attention_case(t, dt, 1, 130, 8, 2, 64);
    attention_case(t, dt, 2, 33, 4, 4, 8);
    attention_case(t, dt, 1, 69, 6, 1, 48);
}
static void t_attention_f32(tl_test_ctx *t) { attention_all(t, TL_CUDA_F32); }
static void t_attention_bf16(tl_test_ctx *t) { attention_all(t, TL_CUDA_BF16); }

/* --------------------------------------------------------------- full model */

static tl_config small_cfg(int tied) {
    /* vocab, dim, hidden, layers, heads, kv, ctx, theta, eps, tied, bos, eos */
    tl_config c = {320, 64, 160, 2, 4, 2, 64, 10000.f, 1e-5f, 0, 1, 2};
    if (tied) {
        c.dim = 128, c.hidden_dim = 176, c.n_heads = 4, c.n_kv_heads = 1, c.tied = 1, c.n_layers = 3;
    }
    return c;
}

static void make_model(tl_model *m, const tl_config *c) {
    tl_error err = {{0}};
    if (tl_model_create(m, c, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    tl_model_init_weights(m, tl_rng_u64(&g_rng));
    for (int i = 0; i < m->n_tensors; i++) /* norms away from 1 so their gradients matter */
        if (m->tensors[i].init_kind == 0)
            for (size_t j = 0; j < m->tensors[i].numel; j++)
                m->params[m->tensors[i].offset + j] = 1.0f + 0.2f * (float)tl_rng_normal(&g_rng);
}

static void random_batch(int *in, int *tg, int N, int V) {
    for (int i = 0; i < N; i++) {
        in[i] = (int)tl_rng_below(&g_rng, (uint64_t)V);
        tg[i] = i % 11 == 5 ? -1 : (int)tl_rng_below(&g_rng, (uint64_t)V);
    }
}

static void full_step_case(tl_test_ctx *t, int dt, int tied, int recompute) {
    tl_error err = {{0}};
    tl_config c = small_cfg(tied);
    tl_model m;
    make_model(&m, &c);
    const int B = 2, T = 33, N = B * T;
    int in[66], tg[66];
    random_batch(in, tg, N, c.vocab_size);
    tl_acts *a = tl_acts_create(&c, B, T, &err);
    die_on(!a, &err);
    float *rg = hnew(m.n_params), *gg = hnew(m.n_params);
    double rloss, gloss = NAN;
    die_on(tl_model_forward_backward(&m, a, rg, in, tg, 0.5f, &rloss, &err), &err);
    tl_cuda_opts o = tl_cuda_opts_default();
    o.precision = dt, o.recompute = recompute, o.lm_chunk = 16;
    tl_cuda_engine *e = tl_cuda_engine_create(&m, B, T, &o, &err);
    die_on(!e, &err);
    die_on(tl_cuda_engine_zero_grads(e, &err), &err);
    die_on(tl_cuda_engine_forward_backward(e, in, tg, 0.5f, &gloss, &err), &err);
    die_on(tl_cuda_engine_get_grads(e, gg, &err), &err);
    const int bf = dt == TL_CUDA_BF16;
    CHECK_CLOSE(gloss, rloss, 0.0, bf ? 1e-2 : 1e-5);
    int bad = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        const tl_tensor_info *ti = &m.tensors[i];
        double e_ = relerr(gg + ti->offset, rg + ti->offset, ti->numel);
        if (e_ > worst) worst = e_, worst_name = ti->name;
        if (e_ > (bf ? 5e-2 : 1e-4)) {
            bad++;
            fprintf(stderr, "  %s: gradient of %s: relative error %.3g\n", t->name, ti->name, e_);
        }
    }
    CHECK(bad == 0);
    printf("     %s step: loss %.6f vs cpu %.6f, worst gradient %s %.2e\n", dtn(dt), gloss, rloss, worst_name, worst);
    /* forward-only loss agrees too */
    double ls = 0;
    long cnt = 0, rcnt = 0;
    double rls = 0;
    die_on(tl_cuda_engine_loss(e, in, tg, &ls, &cnt, &err), &err);
    die_on(tl_model_loss(&m, a, in, tg, &rls, &rcnt, &err), &err);
    CHECK(cnt == rcnt);
    CHECK_CLOSE(ls, rls, 0.0, bf ? 1e-2 : 1e-5);
    tl_cuda_engine_free(e);
    tl_acts_free(a);
    free(rg), free(gg);
    tl_model_free(&m);
}

static void t_step_f32(tl_test_ctx *t) { full_step_case(t, TL_CUDA_F32, 0, 0); }
static void t_step_f32_tied_recompute(tl_test_ctx *t) { full_step_case(t, TL_CUDA_F32, 1, 1); }
static void t_step_bf16(tl_test_ctx *t) { full_step_case(t, TL_CUDA_BF16, 0, 0); }
static void t_step_bf16_tied_recompute(tl_test_ctx *t) { full_step_case(t, TL_CUDA_BF16, 1, 1); }

/* 30 AdamW steps on 4 fixed batches drawn from a small repeating pattern
 * (learnable); the GPU's loss curve must track the CPU's. */
static void train_case(tl_test_ctx *t, int dt) {
    tl_error err = {{0}};
    tl_config c = small_cfg(0);
    tl_model m;
    make_model(&m, &c);
    const int B = 2, T = 32, N = B * T, steps = 30, accum = 2;
    int ins[4][64], tgs[4][64];
    int pat[16];
    for (int i = 0; i < 16; i++) pat[i] = (int)tl_rng_below(&g_rng, (uint64_t)c.vocab_size);
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < N; i++) {
            int off = (int)tl_rng_below(&g_rng, 16);
            ins[b][i] = pat[(i + off) % 16];
            tgs[b][i] = pat[(i + off + 1) % 16];
        }
    tl_cuda_opts o = tl_cuda_opts_default();
    o.precision = dt;
    tl_cuda_engine *e = tl_cuda_engine_create(&m, B, T, &o, &err);
    die_on(!e, &err);
    tl_acts *a = tl_acts_create(&c, B, T, &err);
    die_on(!a, &err);
    size_t n = m.n_params;
    float *g = hnew(n), *mm = hnew(n), *vv = hnew(n);
    tl_adamw_config oc = tl_adamw_defaults();
    oc.lr = 3e-3, oc.min_lr = 3e-4, oc.warmup_steps = 3, oc.decay_steps = steps, oc.clip = 1.0;
    double first_gpu = 0, last_gpu = 0, worst = 0;
    const int bf = dt == TL_CUDA_BF16;
    for (int s = 0; s < steps; s++) {
        double lr = tl_lr_at(&oc, s), lc = 0, lg = 0;
        memset(g, 0, n * sizeof(float));
        die_on(tl_cuda_engine_zero_grads(e, &err), &err);
        for (int k = 0; k < accum; k++) {
            int bi = (2 * s + k) % 4;
            double l;
            die_on(tl_model_forward_backward(&m, a, g, ins[bi], tgs[bi], 1.0f / accum, &l, &err), &err);
            lc += l / accum;
            die_on(tl_cuda_engine_forward_backward(e, ins[bi], tgs[bi], 1.0f / accum, &l, &err), &err);
            lg += l / accum;
        }
        double nc = tl_grad_norm(g, n), ng;
        tl_clip_grads(g, n, nc, oc.clip);
        tl_adamw_update(m.params, g, mm, vv, n, lr, &oc, s + 1);
        die_on(tl_cuda_engine_grad_norm(e, &ng, &err), &err);
        die_on(tl_cuda_engine_adamw(e, &oc, lr, s + 1, ng, &err), &err);
        double d = fabs(lg - lc) / lc;
        if (d > worst) worst = d;
        if (s == 0) first_gpu = lg;
        last_gpu = lg;
        CHECK_MSG(d <= (bf ? 3e-2 : 1e-3), "step %d: gpu loss %.6f vs cpu %.6f", s + 1, lg, lc);
        if (s == steps - 1)
            printf("     %s training: loss %.4f -> %.4f (cpu %.4f), worst relative loss gap %.2e\n", dtn(dt),
                   first_gpu, last_gpu, lc, worst);
    }
    CHECK(last_gpu < 0.7 * first_gpu); /* it learns */
    /* weights and moments as a checkpoint would download them */
    float *gp = hnew(n), *gm = hnew(n), *gv = hnew(n);
    die_on(tl_cuda_engine_get_params(e, gp, &err), &err);
    die_on(tl_cuda_engine_get_opt_state(e, gm, gv, &err), &err);
    CHECK_REL(gp, m.params, n, bf ? 1e-1 : 1e-3, "weights after training");
    CHECK_REL(gm, mm, n, bf ? 3e-1 : 1e-2, "AdamW m after training");
    CHECK_REL(gv, vv, n, bf ? 3e-1 : 1e-2, "AdamW v after training");
    /* upload/download round trip is exact */
    die_on(tl_cuda_engine_set_params(e, m.params, &err), &err);
    die_on(tl_cuda_engine_set_opt_state(e, mm, vv, &err), &err);
    die_on(tl_cuda_engine_get_params(e, gp, &err), &err);
    die_on(tl_cuda_engine_get_opt_state(e, gm, gv, &err), &err);
    CHECK(!memcmp(gp, m.params, n * sizeof(float)) && !memcmp(gm, mm, n * sizeof(float)) &&
          !memcmp(gv, vv, n * sizeof(float)));
    free(gp), free(gm), free(gv);
    tl_cuda_engine_free(e);
    tl_acts_free(a);
    free(g), free(mm), free(vv);
    tl_model_free(&m);
}

static void t_train_f32(tl_test_ctx *t) { train_case(t, TL_CUDA_F32); }
static void t_train_bf16(tl_test_ctx *t) { train_case(t, TL_CUDA_BF16); }

static const tl_test tests[] = {
    {"cuda/gemm_fp32", t_gemm_f32},
    {"cuda/gemm_bf16", t_gemm_bf16},
    {"cuda/rmsnorm_fp32", t_rmsnorm_f32},
    {"cuda/rmsnorm_bf16", t_rmsnorm_bf16},
    {"cuda/rope_fp32", t_rope_f32},
    {"cuda/rope_bf16", t_rope_bf16},
    {"cuda/swiglu_fp32", t_swiglu_f32},
    {"cuda/swiglu_bf16", t_swiglu_bf16},
    {"cuda/cross_entropy_fp32", t_ce_f32},
    {"cuda/cross_entropy_bf16", t_ce_bf16},
    {"cuda/embedding", t_embedding},
    {"cuda/attention_fp32", t_attention_f32},
    {"cuda/attention_bf16", t_attention_bf16},
    {"cuda/grad_norm_adamw", t_adamw},
    {"cuda/step_fp32", t_step_f32},
    {"cuda/step_fp32_tied_recompute", t_step_f32_tied_recompute},
    {"cuda/step_bf16", t_step_bf16},
    {"cuda/step_bf16_tied_recompute", t_step_bf16_tied_recompute},
    {"cuda/train_fp32", t_train_f32},
    {"cuda/train_bf16", t_train_bf16},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    tl_error err = {{0}};
    int ndev = 0;
    if (tl_cuda_device_count(&ndev, &err)) {
        printf("no GPU: skipping (%s)\n", err.msg);
        return 0;
    }
    char desc[256];
    if (!tl_cuda_device_describe(0, desc, sizeof desc, &err)) printf("device: %s\n", desc);
    const char *se = getenv("TL_SEED");
    uint64_t seed = se ? strtoull(se, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu (set TL_SEED to repeat)\n", (unsigned long long)seed);
    tl_rng_seed(&g_rng, seed);
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (const tl_test *tc = tests; tc->name; tc++) {
        if (filter && !strstr(tc->name, filter)) continue;
        tl_test_ctx ctx = {tc->name, 0};
        double t0 = tl_now();
        tc->fn(&ctx);
        printf("%s %s (%.2fs)\n", ctx.failures ? "FAIL" : "ok  ", tc->name, tl_now() - t0);
        fflush(stdout);
        if (ctx.failures) failed++;
        else passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* test_output.c - the fused, chunked output layer + cross-entropy (src/model/output.c)
 * against a double-precision reference of the unfused computation: all N x V logits
 * formed at once, softmax, loss and gradients in double.  N and V are multiples of
 * no chunk tried, so every chunk boundary and a short last chunk are exercised. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "harness.h"
#include "ops.h"
#include "output.h"
#include "rng.h"

enum { N_ = 150, D_ = 40, V_ = 1000 };

/* bf16 bits back to float (the rounding itself is tl_round_bf16's) */
static float from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void round_trip_bf16(const float *x, size_t n, float *out) {
    uint16_t *b = malloc(n * sizeof *b);
    tl_round_bf16(x, n, b);
    for (size_t i = 0; i < n; i++) out[i] = from_bf16(b[i]);
    free(b);
}

/* The unfused head in double: loss[r], dh [N, D], dW [V, D] (added to), returns the
 * (weighted) loss sum.  bf16: the products' inputs rounded as the bf16 wrappers do. */
static double reference(const float *h, const float *W, const int *tg, const float *row_w, float scale, int bf16,
                        double *loss, double *dh, double *dW) {
    float *hr = malloc(sizeof(float) * N_ * D_), *Wr = malloc(sizeof(float) * V_ * D_);
    if (bf16) {
        round_trip_bf16(h, (size_t)N_ * D_, hr);
        round_trip_bf16(W, (size_t)V_ * D_, Wr);
    } else {
        memcpy(hr, h, sizeof(float) * N_ * D_);
        memcpy(Wr, W, sizeof(float) * V_ * D_);
    }
    double *z = malloc(sizeof(double) * N_ * V_), total = 0;
    float *gf = malloc(sizeof(float) * V_);
    for (int r = 0; r < N_; r++) {
        double *zr = z + (size_t)r * V_, mx = -INFINITY, s = 0;
        for (int v = 0; v < V_; v++) {
            double acc = 0;
            for (int d = 0; d < D_; d++) acc += (double)hr[r * D_ + d] * Wr[v * D_ + d];
            zr[v] = acc;
            mx = acc > mx ? acc : mx;
        }
        for (int v = 0; v < V_; v++) s += exp(zr[v] - mx);
        double lse = mx + log(s), w = row_w ? row_w[r] : scale;
        loss[r] = tg[r] < 0 ? 0 : lse - zr[tg[r]];
        total += row_w ? row_w[r] * loss[r] : loss[r];
        for (int v = 0; v < V_; v++) /* dlogits, in place */
            zr[v] = tg[r] < 0 ? 0 : (exp(zr[v] - lse) - (v == tg[r])) * w;
        if (bf16) { /* the wrapper rounds the fp32 dlogits */
            for (int v = 0; v < V_; v++) gf[v] = (float)zr[v];
            round_trip_bf16(gf, V_, gf);
            for (int v = 0; v < V_; v++) zr[v] = gf[v];
        }
        for (int d = 0; d < D_; d++) {
            double acc = 0;
            for (int v = 0; v < V_; v++) acc += zr[v] * Wr[v * D_ + d];
            dh[r * D_ + d] = acc;
        }
        for (int v = 0; v < V_; v++)
            for (int d = 0; d < D_; d++) dW[v * D_ + d] += zr[v] * hr[r * D_ + d];
    }
    free(hr), free(Wr), free(z), free(gf);
    return total;
}

/* max |got - want| / max |want| */
static double rel_max(const float *got, const double *want, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        e = d > e ? d : e;
        m = fabs(want[i]) > m ? fabs(want[i]) : m;
    }
    return m > 0 ? e / m : e;
}

typedef struct {
    float h[N_ * D_], W[V_ * D_], row_w[N_], loss[N_], dh[N_ * D_], dW[V_ * D_];
    int tg[N_];
    uint16_t Wb[V_ * D_];
} case_data;

static void make_case(case_data *c) {
    tl_rng g;
    tl_rng_seed(&g, 23);
    for (int i = 0; i < N_ * D_; i++) c->h[i] = (float)tl_rng_normal(&g);
    for (int i = 0; i < V_ * D_; i++) c->W[i] = (float)(0.25 * tl_rng_normal(&g));
    for (int r = 0; r < N_; r++) {
        c->tg[r] = r % 7 == 3 ? -1 : (int)tl_rng_below(&g, V_);
        c->row_w[r] = (float)(2.0 * tl_rng_uniform(&g));
    }
    tl_round_bf16(c->W, (size_t)V_ * D_, c->Wb);
}

/* Runs the fused head with `chunk` rows; dW starts at 0.5 everywhere (it must add). */
static double run(case_data *c, int chunk, int bf16, int weighted, float scale, int grads) {
    tl_output o = {.W = c->W, .W_bf16 = bf16 ? c->Wb : NULL, .D = D_, .V = V_, .chunk = chunk};
    o.logits = malloc(sizeof(float) * (size_t)chunk * V_);
    o.xs = malloc(sizeof(uint16_t) * (size_t)chunk * D_);
    o.dys = malloc(sizeof(uint16_t) * (size_t)chunk * V_);
    for (int i = 0; i < V_ * D_; i++) c->dW[i] = 0.5f;
    memset(c->dh, 0, sizeof c->dh);
    double s = tl_output_loss(&o, c->h, N_, c->tg, scale, weighted ? c->row_w : NULL, c->loss,
                              grads ? c->dh : NULL, grads ? c->dW : NULL);
    free(o.logits), free(o.xs), free(o.dys);
    return s;
}

static void check_against_reference(tl_test_ctx *t, int bf16, int weighted) {
    case_data *c = malloc(sizeof *c);
    make_case(c);
    const float scale = 1.0f / 128.0f;
    double *loss = malloc(sizeof(double) * N_), *dh = malloc(sizeof(double) * N_ * D_);
    double *dW = malloc(sizeof(double) * V_ * D_);
    for (int i = 0; i < V_ * D_; i++) dW[i] = 0.5;
    double want = reference(c->h, c->W, c->tg, weighted ? c->row_w : NULL, scale, bf16, loss, dh, dW);
    /* fp32 sums of 40 and 1000 terms: errors of a few ulp of the largest terms.  bf16:
     * a dlogit whose fp32 value differs from the reference's in the last bits can round
     * to the neighbouring bf16 value (2^-8 apart), so a few terms differ by that much. */
    const double tol = bf16 ? 2e-4 : 1e-5;
    const int chunks[] = {1, 37, 64, N_};
    for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
        double got = run(c, chunks[k], bf16, weighted, scale, 1);
        double el = 0;
        for (int r = 0; r < N_; r++) el = fmax(el, fabs(c->loss[r] - loss[r]));
        for (int i = 0; i < V_ * D_; i++) c->dW[i] -= 0.5f; /* the gradient added */
        double edW = 0, mdW = 0;
        for (int i = 0; i < V_ * D_; i++) {
            edW = fmax(edW, fabs(c->dW[i] - (dW[i] - 0.5)));
            mdW = fmax(mdW, fabs(dW[i] - 0.5));
        }
        double edh = rel_max(c->dh, dh, (size_t)N_ * D_);
        /* and each chunk's addition into dW (which starts at 0.5) rounds once, half an ulp of 0.5 */
        const double adds = (double)((N_ + chunks[k] - 1) / chunks[k]) * 3e-8;
        CHECK_MSG(fabs(got - want) <= 1e-5 * fabs(want) && el < 1e-4 && edh < tol && edW < tol * mdW + adds,
                  "%s%s chunk %d: loss %.9g vs %.9g, row loss %.3g, dh %.3g, dW %.3g (relative)", bf16 ? "bf16" : "fp32",
                  weighted ? " weighted" : "", chunks[k], got, want, el, edh, edW / mdW);
    }
    free(loss), free(dh), free(dW), free(c);
}

static void test_output_fp32(tl_test_ctx *t) { check_against_reference(t, 0, 0); }
static void test_output_fp32_weighted(tl_test_ctx *t) { check_against_reference(t, 0, 1); }
static void test_output_bf16(tl_test_ctx *t) { check_against_reference(t, 1, 0); }
static void test_output_bf16_weighted(tl_test_ctx *t) { check_against_reference(t, 1, 1); }

/* Forward only gives the same row losses as the pass with gradients, and touches no
 * gradient; the same thread count repeats bit for bit, another one agrees to rounding. */
static void test_output_repeatable(tl_test_ctx *t) {
    case_data *c = malloc(sizeof *c), *d = malloc(sizeof *d);
    make_case(c);
    make_case(d);
    int saved = tl_get_threads();
    tl_set_threads(2);
    double a = run(c, 64, 0, 0, 0.01f, 1);
    double b = run(d, 64, 0, 0, 0.01f, 1);
    CHECK(a == b && !memcmp(c->loss, d->loss, sizeof c->loss) && !memcmp(c->dh, d->dh, sizeof c->dh) &&
          !memcmp(c->dW, d->dW, sizeof c->dW));
    double f = run(d, 64, 0, 0, 0.01f, 0);
    CHECK(f == a && !memcmp(c->loss, d->loss, sizeof c->loss));
    tl_set_threads(1);
    double one = run(d, 64, 0, 0, 0.01f, 1);
    tl_set_threads(saved);
    CHECK_CLOSE(one, a, 0, 1e-6);
    double e = 0;
    for (int i = 0; i < V_ * D_; i++) e = fmax(e, fabs(c->dW[i] - d->dW[i]));
    CHECK_MSG(e < 1e-6, "1 vs 2 threads: dW differs by %.3g", e);
    free(c), free(d);
}

const tl_test tests_output[] = {
    {"output/fused_matches_double_reference", test_output_fp32},
    {"output/fused_row_weights_match_double_reference", test_output_fp32_weighted},
    {"output/fused_bf16_matches_rounded_reference", test_output_bf16},
    {"output/fused_bf16_row_weights_match_rounded_reference", test_output_bf16_weighted},
    {"output/repeatable", test_output_repeatable},
    {NULL, NULL},
};

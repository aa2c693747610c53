/* test_ops.c - finite-difference checks of every op's backward pass, plus a few
 * exact properties (RoPE is a rotation, softmax cross-entropy sums to zero).
 * Each check perturbs inputs in double-checked central differences of the
 * scalar L = sum(r * f(x)) for a random r. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "harness.h"
#include "ops.h"
#include "rng.h"

static void fill(float *x, size_t n, tl_rng *r, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * tl_rng_normal(r));
}

static double weighted(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

/* Compares an analytic gradient with central differences on a few coordinates. */
typedef double (*scalar_fn)(void *ctx);
static void check_grad(tl_test_ctx *t, const char *what, float *x, const float *g, size_t n, scalar_fn f,
                       void *ctx, float h, double tol) {
    double worst = 0;
    for (size_t k = 0; k < n; k += (n > 40 ? n / 40 : 1)) {
        float keep = x[k];
        x[k] = keep + h;
        double up = f(ctx);
        x[k] = keep - h;
        double dn = f(ctx);
        x[k] = keep;
        double num = (up - dn) / (2.0 * h);
        double err = fabs(num - g[k]) / (fabs(num) + fabs(g[k]) + 1e-2);
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst < tol, "%s: finite-difference mismatch %.3g", what, worst);
}

/* ---- rmsnorm ---- */
typedef struct {
    float *x, *w, *y, *rstd, *r;
    int N, D;
} rms_ctx;
static double rms_f(void *c_) {
    rms_ctx *c = c_;
    tl_rmsnorm_forward(c->y, c->rstd, c->x, c->w, c->N, c->D, 1e-5f);
    return weighted(c->y, c->r, (size_t)c->N * c->D);
}
static void test_rmsnorm_grad(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 1);
    enum { N = 5, D = 24 };
    float x[N * D], w[D], y[N * D], rstd[N], r[N * D], dx[N * D] = {0}, dw[D] = {0};
    fill(x, N * D, &g, 1.0);
    fill(w, D, &g, 1.0);
    fill(r, N * D, &g, 1.0);
    rms_ctx c = {x, w, y, rstd, r, N, D};
    rms_f(&c);
    tl_rmsnorm_backward(dx, dw, r, x, w, rstd, N, D);
    check_grad(t, "rmsnorm dx", x, dx, N * D, rms_f, &c, 1e-2f, 2e-3);
    check_grad(t, "rmsnorm dw", w, dw, D, rms_f, &c, 1e-2f, 2e-3);
    /* forward against the formula in double (re-run: y holds the last perturbed evaluation) */
    rms_f(&c);
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[n * D + i] * x[n * D + i];
        double rs = 1.0 / sqrt(ss / D + 1e-5);
        for (int i = 0; i < D; i++) CHECK_CLOSE(y[n * D + i], w[i] * x[n * D + i] * rs, 1e-6, 1e-5);
    }
}

/* ---- rope ---- */
typedef struct {
    float *x, *y, *r, *cs, *sn;
    int N, T, H, hd;
} rope_ctx;
static double rope_f(void *c_) {
    rope_ctx *c = c_;
    memcpy(c->y, c->x, sizeof(float) * (size_t)c->N * c->H * c->hd);
    tl_rope_forward(c->y, c->cs, c->sn, c->N, c->T, 0, c->H, c->hd);
    return weighted(c->y, c->r, (size_t)c->N * c->H * c->hd);
}
static void test_rope(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 2);
    enum { T = 6, B = 2, N = B * T, H = 3, HD = 8, M = N * H * HD };
    float cs[T * HD / 2], sn[T * HD / 2], x[M], y[M], r[M], dx[M];
    tl_rope_tables(cs, sn, T, HD, 10000.0f);
    /* inv_freq_i = theta^(-2i/d): position 1, pair 1 rotates by 10000^(-1/4) = 0.1 */
    CHECK_CLOSE(cs[1 * HD / 2 + 1], cos(0.1), 1e-6, 0);
    CHECK_CLOSE(sn[1 * HD / 2 + 1], sin(0.1), 1e-6, 0);
    CHECK(cs[0] == 1.0f && sn[0] == 0.0f);
    fill(x, M, &g, 1.0);
    fill(r, M, &g, 1.0);
    rope_ctx c = {x, y, r, cs, sn, N, T, H, HD};
    rope_f(&c);
    /* rotation: norms of each (i, i+d/2) pair are preserved; position 0 is unchanged */
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < HD / 2; i++) {
                const float *a = x + ((size_t)n * H + h) * HD, *b = y + ((size_t)n * H + h) * HD;
                CHECK_CLOSE(a[i] * a[i] + a[i + HD / 2] * a[i + HD / 2], b[i] * b[i] + b[i + HD / 2] * b[i + HD / 2],
                            1e-5, 1e-5);
                if (n % T == 0) CHECK(a[i] == b[i]);
            }
    memcpy(dx, r, sizeof dx);
    tl_rope_backward(dx, cs, sn, N, T, 0, H, HD);
    check_grad(t, "rope", x, dx, M, rope_f, &c, 1e-2f, 1e-3);
}

/* ---- swiglu ---- */
typedef struct {
    float *g, *u, *h, *r;
    size_t n;
} swi_ctx;
static double swi_f(void *c_) {
    swi_ctx *c = c_;
    tl_swiglu_forward(c->h, c->g, c->u, c->n);
    return weighted(c->h, c->r, c->n);
}
static void test_swiglu_grad(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 3);
    enum { M = 64 };
    float gg[M], u[M], h[M], r[M], dg[M], du[M];
    fill(gg, M, &g, 2.0);
    fill(u, M, &g, 1.0);
    fill(r, M, &g, 1.0);
    swi_ctx c = {gg, u, h, r, M};
    swi_f(&c);
    CHECK_CLOSE(h[0], gg[0] / (1.0 + exp(-gg[0])) * u[0], 1e-6, 1e-5);
    tl_swiglu_backward(dg, du, r, gg, u, M);
    check_grad(t, "swiglu dgate", gg, dg, M, swi_f, &c, 1e-2f, 1e-3);
    check_grad(t, "swiglu dup", u, du, M, swi_f, &c, 1e-2f, 1e-3);
}

/* ---- attention ---- */
typedef struct {
    float *q, *k, *v, *o, *p, *r;
    int B, T, H, KV, hd;
} att_ctx;
static double att_f(void *c_) {
    att_ctx *c = c_;
    tl_attention_forward(c->o, c->p, c->q, c->k, c->v, c->B, c->T, c->H, c->KV, c->hd);
    return weighted(c->o, c->r, (size_t)c->B * c->T * c->H * c->hd);
}
/* Finite differences of dq, dk, dv on random inputs of one shape; also the
 * causal first position and the probability rows summing to 1. */
static void attention_grad_case(tl_test_ctx *t, unsigned seed, int B, int T, int H, int KV, int HD, const char *what) {
    tl_rng g;
    tl_rng_seed(&g, seed);
    const int QN = B * T * H * HD, KN = B * T * KV * HD;
    float *q = malloc(sizeof(float) * QN), *k = malloc(sizeof(float) * KN), *v = malloc(sizeof(float) * KN),
          *o = malloc(sizeof(float) * QN), *p = malloc(sizeof(float) * B * H * T * T), *r = malloc(sizeof(float) * QN),
          *dq = malloc(sizeof(float) * QN), *dk = malloc(sizeof(float) * KN), *dv = malloc(sizeof(float) * KN);
    fill(q, QN, &g, 1.0);
    fill(k, KN, &g, 1.0);
    fill(v, KN, &g, 1.0);
    fill(r, QN, &g, 1.0);
    att_ctx c = {q, k, v, o, p, r, B, T, H, KV, HD};
    att_f(&c);
    /* causal: the first position attends only to itself, so its output is v_0 of its KV head */
    for (int h = 0; h < H; h++)
        for (int i = 0; i < HD; i++) CHECK_CLOSE(o[h * HD + i], v[(h / (H / KV)) * HD + i], 1e-6, 1e-6);
    for (int row = 0; row < B * H * T; row++) {
        double sum = 0;
        for (int j = 0; j < T; j++) sum += p[(size_t)row * T + j];
        CHECK_CLOSE(sum, 1.0, 1e-5, 0);
    }
    tl_attention_backward(dq, dk, dv, r, p, q, k, v, B, T, H, KV, HD);
    char label[96];
    snprintf(label, sizeof label, "attention dq (%s)", what);
    check_grad(t, label, q, dq, QN, att_f, &c, 1e-2f, 2e-3);
    snprintf(label, sizeof label, "attention dk (%s)", what);
    check_grad(t, label, k, dk, KN, att_f, &c, 1e-2f, 2e-3);
    snprintf(label, sizeof label, "attention dv (%s)", what);
    check_grad(t, label, v, dv, KN, att_f, &c, 1e-2f, 2e-3);
    free(q), free(k), free(v), free(o), free(p), free(r), free(dq), free(dk), free(dv);
}

static void test_attention_grad(tl_test_ctx *t) { attention_grad_case(t, 4, 2, 5, 4, 2, 8, "short rows"); }

/* Rows long enough for the backward's 16-lane row sums and their tails (39
 * positions: 16 + 16 + 7), and more than one row block. */
static void test_attention_grad_long(tl_test_ctx *t) {
    attention_grad_case(t, 5, 1, 2 * TL_ATTN_ROWS + 39, 2, 1, 4, "long rows");
}

/* The inference variant (queries at p0.. over a cache) in pieces of 70, 1, 1, 3,
 * 1 and 74 rows (partial row blocks; the grouped-head path of steps <= 4 tokens) against attention computed in
 * double precision straight from the definition. */
static void test_attention_cached(tl_test_ctx *t) {
    enum { T = 150, H = 4, KV = 2, HD = 16, QS = H * HD, KS = KV * HD };
    tl_rng g;
    tl_rng_seed(&g, 41);
    float *q = malloc(sizeof(float) * T * QS), *k = malloc(sizeof(float) * T * KS), *v = malloc(sizeof(float) * T * KS);
    float *o = malloc(sizeof(float) * T * QS), *scratch = malloc(sizeof(float) * 2 * TL_ATTN_ROWS * T);
    fill(q, T * QS, &g, 1.0);
    fill(k, T * KS, &g, 1.0);
    fill(v, T * KS, &g, 1.0);
    const int pieces[] = {70, 1, 1, 3, 1, 74};
    int p0 = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        tl_attention_forward_cached(o + (size_t)p0 * QS, scratch, q + (size_t)p0 * QS, k, v, p0, pieces[i], H, KV, HD,
                                    2);
        p0 += pieces[i];
    }
    CHECK(p0 == T);
    const double worst = tl_test_attention_err(o, q, k, v, T, H, KV, HD);
    CHECK_MSG(worst < 1e-5, "cached attention differs from the definition by %.3g", worst);
    free(q);
    free(k);
    free(v);
    free(o);
    free(scratch);
}

/* ---- linear ---- */
typedef struct {
    float *x, *W, *y, *r;
    int N, in, out;
} lin_ctx;
static double lin_f(void *c_) {
    lin_ctx *c = c_;
    tl_linear_forward(c->y, c->x, c->W, c->N, c->in, c->out, 0);
    return weighted(c->y, c->r, (size_t)c->N * c->out);
}
static void test_linear_grad(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 5);
    enum { N = 3, IN = 7, OUT = 5 };
    float x[N * IN], W[OUT * IN], y[N * OUT], r[N * OUT], dx[N * IN], dW[OUT * IN] = {0};
    fill(x, N * IN, &g, 1.0);
    fill(W, OUT * IN, &g, 1.0);
    fill(r, N * OUT, &g, 1.0);
    lin_ctx c = {x, W, y, r, N, IN, OUT};
    lin_f(&c);
    double y01 = 0;
    for (int i = 0; i < IN; i++) y01 += (double)x[i] * W[1 * IN + i];
    CHECK_CLOSE(y[1], y01, 1e-5, 1e-5);
    tl_linear_backward(dx, dW, r, x, W, N, IN, OUT, 0);
    check_grad(t, "linear dx", x, dx, N * IN, lin_f, &c, 1e-2f, 1e-3);
    check_grad(t, "linear dW", W, dW, OUT * IN, lin_f, &c, 1e-2f, 1e-3);
}

/* ---- cross-entropy ---- */
typedef struct {
    float *z, *tmp, *loss;
    int *tgt;
    int rows, V;
} ce_ctx;
static double ce_f(void *c_) {
    ce_ctx *c = c_;
    memcpy(c->tmp, c->z, sizeof(float) * (size_t)c->rows * c->V);
    tl_cross_entropy_rows(c->tmp, c->loss, c->tgt, c->rows, c->V, 1.0f);
    double s = 0;
    for (int i = 0; i < c->rows; i++) s += c->loss[i];
    return s;
}
static void test_cross_entropy(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 6);
    enum { R = 4, V = 11 };
    float z[R * V], tmp[R * V], loss[R];
    int tgt[R] = {3, 0, -1, 10};
    fill(z, R * V, &g, 2.0);
    ce_ctx c = {z, tmp, loss, tgt, R, V};
    ce_f(&c);
    /* loss = logsumexp - z_target, in double */
    double lse = 0, mx = z[0];
    for (int i = 1; i < V; i++) mx = fmax(mx, z[i]);
    for (int i = 0; i < V; i++) lse += exp(z[i] - mx);
    CHECK_CLOSE(loss[0], log(lse) + mx - z[3], 1e-5, 1e-5);
    CHECK(loss[2] == 0.0f); /* ignored row */
    float grad[R * V];
    memcpy(grad, tmp, sizeof grad);
    for (int rrow = 0; rrow < R; rrow++) {
        double s = 0;
        for (int i = 0; i < V; i++) s += grad[rrow * V + i];
        CHECK_CLOSE(s, 0.0, 1e-5, 0);
    }
    check_grad(t, "cross-entropy", z, grad, R * V, ce_f, &c, 1e-2f, 1e-3);
}

static void test_embedding_backward_accumulates_repeats(tl_test_ctx *t) {
    enum { V = 4, D = 3, N = 3 };
    float table[V * D] = {0}, dout[N * D] = {1, 2, 3, 10, 20, 30, 100, 200, 300};
    int ids[N] = {2, 0, 2};
    tl_embedding_backward(table, dout, ids, N, D);
    CHECK(table[2 * D + 0] == 101 && table[2 * D + 2] == 303 && table[0] == 10 && table[1 * D] == 0);
}

const tl_test tests_ops[] = {
    {"ops/rmsnorm_grad", test_rmsnorm_grad},
    {"ops/rope", test_rope},
    {"ops/swiglu_grad", test_swiglu_grad},
    {"ops/attention_grad", test_attention_grad},
    {"ops/attention_grad_long", test_attention_grad_long},
    {"ops/attention_cached", test_attention_cached},
    {"ops/linear_grad", test_linear_grad},
    {"ops/cross_entropy", test_cross_entropy},
    {"ops/embedding_backward_accumulates_repeats", test_embedding_backward_accumulates_repeats},
    {NULL, NULL},
};

/* ---- vectorised exp against the C library ---- */
#include "vec.h"
static void test_vec_exp_accuracy(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 8);
    enum { M = 4099 };
    static float x[M], y[M];
    int worst = 0;
    for (int i = 0; i < M; i++) x[i] = (float)(-90.0 + 100.0 * tl_rng_uniform(&g));
    x[0] = 0.0f;
    x[1] = -1e-30f;
    memcpy(y, x, sizeof y);
    double sum = tl_vec_exp_sum(y, M, 0.0f), ref_sum = 0;
    for (int i = 0; i < M; i++) {
        double ref = exp((double)x[i]);
        ref_sum += ref;
        if (x[i] < -87.3f) {
            CHECK(y[i] == 0.0f || fabs(y[i] - ref) < 1e-37);
            continue;
        }
        float r = (float)ref;
        int32_t a, b;
        memcpy(&a, &y[i], 4);
        memcpy(&b, &r, 4);
        int ulp = abs(a - b);
        if (ulp > worst) worst = ulp;
        CHECK(tl_vec_expf(x[i]) == y[i]); /* scalar and vector paths agree exactly */
    }
    CHECK_MSG(worst <= 2, "exp differs from the correctly rounded value by %d ulp", worst);
    CHECK_CLOSE(sum, ref_sum, 0, 1e-6);
    CHECK(y[0] == 1.0f);
    float v[9] = {3, -1, 7.5f, 2, 0, -8, 7.25f, 1, 9.5f};
    CHECK(tl_vec_max(v, 9) == 9.5f && tl_vec_max(v, 8) == 7.5f);
}

static void test_vec_paths_agree(tl_test_ctx *t) {
    /* the dispatched (AVX-512 or AVX2 here if present) and portable paths give identical bits */
    tl_rng g;
    tl_rng_seed(&g, 9);
    enum { M = 1003 };
    static float a[M], b[M], gg[M], u[M], d[M], h1[M], h2[M], dg1[M], dg2[M], du1[M], du2[M];
    for (int i = 0; i < M; i++) {
        a[i] = b[i] = (float)(20 * tl_rng_normal(&g));
        gg[i] = (float)(4 * tl_rng_normal(&g));
        u[i] = (float)tl_rng_normal(&g);
        d[i] = (float)tl_rng_normal(&g);
    }
    gg[0] = 100.0f;
    gg[1] = -100.0f;
    double s1 = tl_vec_exp_sum(a, M, 30.0f), s2 = tl_vec_exp_sum_portable(b, M, 30.0f);
    CHECK(s1 == s2 && memcmp(a, b, sizeof a) == 0);
    tl_vec_swiglu_forward(h1, gg, u, M);
    tl_vec_swiglu_forward_portable(h2, gg, u, M);
    CHECK(memcmp(h1, h2, sizeof h1) == 0);
    CHECK(h1[0] == 100.0f * u[0] && h1[1] == -0.0f * u[1] + 0.0f);
    tl_vec_swiglu_backward(dg1, du1, d, gg, u, M);
    tl_vec_swiglu_backward_portable(dg2, du2, d, gg, u, M);
    CHECK(memcmp(dg1, dg2, sizeof dg1) == 0 && memcmp(du1, du2, sizeof du1) == 0);
    for (int i = 2; i < M; i++) {
        double s = 1.0 / (1.0 + exp(-(double)gg[i]));
        CHECK_CLOSE(h1[i], gg[i] * s * u[i], 1e-6, 1e-5);
    }
}

/* Every ISA path of vec.c against the portable one, bit for bit, over lengths 1..100
 * and some long rows (all tail lengths of the 8- and 16-wide loops) and value ranges
 * reaching overflow, underflow to zero, denormals, infinities, signed zeros and NaN. */
static int same_bits(float a, float b) {
    /* or both NaN: which NaN a product of two NaNs gives depends on operand order */
    return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b);
}

static void vec_fill_kind(float *x, size_t n, tl_rng *g, int kind) {
    static const float special[] = {-INFINITY, INFINITY, NAN, -NAN, 0.0f, -0.0f, -1e30f, 1e30f, 3.4028235e38f,
                                    -3.4028235e38f, 88.0f, 88.00001f, 87.99999f, -87.3365478515625f,
                                    -87.33655548095703f, -87.33654022216797f, -87.0f, -100.0f, -103.0f, 1e-45f,
                                    -1e-40f, 0.34657359f, -0.34657359f, 0.5f, -0.5f};
    const size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < n; i++) switch (kind) {
        case 0: x[i] = (float)(20 * tl_rng_normal(g)); break;            /* softmax logits */
        case 1: x[i] = (float)(-100 + 200 * tl_rng_uniform(g)); break;   /* exp overflows above 88 */
        case 2: x[i] = (float)(-200 + 120 * tl_rng_uniform(g)); break;   /* exp underflows (to 0 or denormal) */
        case 3: x[i] = (float)(1e-3 * tl_rng_normal(g)); break;          /* near zero */
        case 4: /* <= 0 with zeros of both signs: the maximum is a zero */
            x[i] = tl_rng_uniform(g) < 0.3 ? (tl_rng_uniform(g) < 0.5 ? 0.0f : -0.0f) : (float)(-5 * tl_rng_uniform(g));
            break;
        default: /* specials (NaN, infinities, range edges) among ordinary values */
            x[i] = tl_rng_uniform(g) < 0.5 ? special[(size_t)(tl_rng_uniform(g) * ns) % ns]
                                           : (float)(30 * tl_rng_normal(g));
        }
}

typedef struct {
    tl_test_ctx *t;
    const char *isa;
    int reported, failed;
} vec_cmp;

#define VEC_PAD 24 /* sentinel floats after each output row: masked tails must not write them */
static const float vec_sentinel = 12345.678f;

/* compares y (the ISA path) with ref over n, and y's padding with the sentinel */
static void vec_cmp_rows(vec_cmp *c, const char *what, size_t n, int kind, const float *y, const float *ref) {
    size_t bad = n + VEC_PAD;
    for (size_t i = 0; i < n + VEC_PAD && bad == n + VEC_PAD; i++)
        if (!same_bits(y[i], i < n ? ref[i] : vec_sentinel)) bad = i;
    if (bad == n + VEC_PAD) return;
    c->failed++;
    if (c->reported++ < 8) {
        tl_test_ctx *t = c->t;
        CHECK_MSG(0, "%s %s n=%zu kind=%d: element %zu is %.9g, portable %.9g%s", c->isa, what, n, kind, bad,
                  y[bad], bad < n ? ref[bad] : vec_sentinel, bad < n ? "" : " (written past the end)");
    }
}

static void vec_cmp_value(vec_cmp *c, const char *what, size_t n, int kind, double a, double b) {
    if (memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b)) return;
    c->failed++;
    if (c->reported++ < 8) {
        tl_test_ctx *t = c->t;
        CHECK_MSG(0, "%s %s n=%zu kind=%d: %.17g, portable %.17g", c->isa, what, n, kind, a, b);
    }
}

static void vec_compare_isa(tl_test_ctx *t, tl_vec_isa isa, const char *label) {
    const tl_vec_kernels *k = tl_vec_kernels_for(isa), *p = tl_vec_kernels_for(TL_VEC_ISA_PORTABLE);
    CHECK(p != NULL);
    if (!k || !p) {
        fprintf(stderr, "  vec_isa_paths_bit_identical: this CPU has no %s: the %s comparison was not run\n", label,
                label);
        return;
    }
    static const size_t extra[] = {127, 128, 129, 255, 256, 257, 1003, 4111, 5632, 32000, 100003};
    enum { NKIND = 6, NMAX = 100003, NBUF = NMAX + VEC_PAD + 4 };
    float *x = malloc(sizeof(float) * NBUF), *u = malloc(sizeof(float) * NBUF), *d = malloc(sizeof(float) * NBUF);
    float *a = malloc(sizeof(float) * NBUF), *b = malloc(sizeof(float) * NBUF);
    float *a2 = malloc(sizeof(float) * NBUF), *b2 = malloc(sizeof(float) * NBUF);
    tl_rng g;
    tl_rng_seed(&g, 12);
    vec_cmp c = {t, label, 0, 0};
    const size_t nlen = 100 + sizeof extra / sizeof extra[0];
    for (size_t li = 0; li < nlen; li++) {
        const size_t n = li < 100 ? li + 1 : extra[li - 100];
        for (int kind = 0; kind < NKIND; kind++) {
            const size_t off = (n + (size_t)kind) % 4; /* unaligned rows too */
            float *xr = x + off, *ur = u + off, *dr = d + off, *ar = a + off, *br = b + off, *a2r = a2 + off,
                  *b2r = b2 + off;
            vec_fill_kind(xr, n, &g, kind);
            vec_fill_kind(ur, n, &g, kind == 5 ? 5 : 3);
            fill(dr, n, &g, 1.0);
            for (size_t i = 0; i < n; i++) ur[i] *= 1000.0f;
            float mref = p->max(xr, n), m = k->max(xr, n);
            vec_cmp_value(&c, "max", n, kind, m, mref);
            /* exp_sum with shift 0 and shift = the row maximum (the softmax case) */
            for (int si = 0; si < 2; si++) {
                const float shift = si ? mref : 0.0f;
                memcpy(ar, xr, sizeof(float) * n);
                memcpy(br, xr, sizeof(float) * n);
                for (int j = 0; j < VEC_PAD; j++) ar[n + j] = vec_sentinel;
                double s1 = k->exp_sum(ar, n, shift), s2 = p->exp_sum(br, n, shift);
                vec_cmp_rows(&c, si ? "exp_sum(shift=max) values" : "exp_sum values", n, kind, ar, br);
                vec_cmp_value(&c, si ? "exp_sum(shift=max) sum" : "exp_sum sum", n, kind, s1, s2);
                /* scale by 1/sum, as softmax does, and by a plain factor */
                const float f = si ? (float)(1.0 / s2) : 1.0f / 3.0f;
                k->scale(ar, n, f);
                p->scale(br, n, f);
                vec_cmp_rows(&c, "scale", n, kind, ar, br);
            }
            /* SwiGLU with the row as the gate */
            for (int j = 0; j < VEC_PAD; j++) ar[n + j] = a2r[n + j] = vec_sentinel;
            k->swiglu_forward(ar, xr, ur, n);
            p->swiglu_forward(br, xr, ur, n);
            vec_cmp_rows(&c, "swiglu_forward", n, kind, ar, br);
            for (int j = 0; j < VEC_PAD; j++) ar[n + j] = a2r[n + j] = vec_sentinel;
            k->swiglu_backward(ar, a2r, dr, xr, ur, n);
            p->swiglu_backward(br, b2r, dr, xr, ur, n);
            vec_cmp_rows(&c, "swiglu_backward dg", n, kind, ar, br);
            vec_cmp_rows(&c, "swiglu_backward du", n, kind, a2r, b2r);
        }
    }
    CHECK_MSG(c.failed == 0, "%s path: %d comparisons differ from the portable path", label, c.failed);
    /* the cases the max rule is about (first zero of a zero maximum, NaN only at x[0]) */
    {
        float z[40];
        for (int i = 0; i < 40; i++) z[i] = -1.0f - (float)i;
        z[3] = -0.0f;
        z[37] = 0.0f;
        float m = k->max(z, 40);
        CHECK(m == 0.0f && signbit(m));
        z[3] = NAN;
        m = k->max(z, 40);
        CHECK(m == 0.0f && !signbit(m));
        z[0] = NAN;
        CHECK(isnan(k->max(z, 40)));
    }
    free(x);
    free(u);
    free(d);
    free(a);
    free(b);
    free(a2);
    free(b2);
}

static void test_vec_isa_paths_bit_identical(tl_test_ctx *t) {
    vec_compare_isa(t, TL_VEC_ISA_AVX2, "AVX2+FMA");
    vec_compare_isa(t, TL_VEC_ISA_AVX512, "AVX-512");
}

#include "optimizer.h"
static void test_grad_norm_thread_independent(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 10);
    size_t n = (1u << 18) + 77; /* several blocks and a tail */
    float *x = malloc(n * sizeof(float));
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)tl_rng_normal(&g);
        ref += (double)x[i] * x[i];
    }
    int saved = tl_get_threads();
    tl_set_threads(1);
    double a = tl_grad_norm(x, n);
    tl_set_threads(2);
    double b = tl_grad_norm(x, n);
    tl_set_threads(3);
    double c = tl_grad_norm(x, n);
    tl_set_threads(saved);
    CHECK(a == b && b == c);
    CHECK_CLOSE(a, sqrt(ref), 0, 1e-12);
    free(x);
}

#include "sumsq.h"
/* The dispatched sum of squares equals the portable one bit for bit (32 lanes,
 * then the tail) and a long-double sum to double rounding, at lengths around the
 * lane count. */
static void test_sumsq_paths(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 11);
    const size_t sizes[] = {0, 1, 31, 32, 33, 63, 64, 65, 1000, 4096 + 17};
    float *x = malloc(sizeof(float) * (4096 + 17));
    for (size_t i = 0; i < 4096 + 17; i++) x[i] = (float)(tl_rng_normal(&g) * (i % 7 ? 1.0 : 1e3));
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        long double ref = 0;
        for (size_t i = 0; i < n; i++) ref += (long double)x[i] * x[i];
        double a = tl_sumsq(x, n), b = tl_sumsq_portable(x, n);
        CHECK(a == b);
        CHECK_CLOSE(a, (double)ref, 0, 1e-14);
    }
    free(x);
}

const tl_test tests_vec[] = {
    {"ops/grad_norm_thread_independent", test_grad_norm_thread_independent},
    {"ops/sumsq_paths", test_sumsq_paths},
    {"ops/vec_paths_agree", test_vec_paths_agree},
    {"ops/vec_exp_accuracy", test_vec_exp_accuracy},
    {"ops/vec_isa_paths_bit_identical", test_vec_isa_paths_bit_identical},
    {NULL, NULL},
};

/* test_bf16_step.c - the bf16 step's own kernels: the fused optimizer pass
 * against the fp32 path's separate passes (bit for bit), the lane-summed gradient
 * norm against a long double sum, and attention's bf16 products against the
 * double-precision definition on the same bf16 inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "attention_bf16.h"
#include "distributed.h"
#include "dtype.h"
#include "gemm.h"
#include "harness.h"
#include "ops.h"
#include "ops_bf16.h"
#include "optimizer.h"
#include "rng.h"
#include "vec.h"

/* tl_adamw_update_bf16 = tl_clip_grads + tl_adamw_update + tl_round_bf16, and
 * tl_adamw_update_clipped = tl_clip_grads + tl_adamw_update, exactly, neither
 * touching the gradients (the bf16 pass asked to zero them: every one +0, the
 * update the same): three steps, clipped and not, on a length with partial
 * blocks and a tail. */
static void test_adamw_fused(tl_test_ctx *t) {
    const size_t n = 3 * 16384 + 77;
    tl_rng g;
    tl_rng_seed(&g, 23);
    float *p1 = malloc(4 * n), *p2 = malloc(4 * n), *gr = malloc(4 * n), *gc = malloc(4 * n);
    float *m1 = calloc(n, 4), *v1 = calloc(n, 4), *m2 = calloc(n, 4), *v2 = calloc(n, 4);
    float *p3 = malloc(4 * n), *m3 = calloc(n, 4), *v3 = calloc(n, 4);
    float *p4 = malloc(4 * n), *m4 = calloc(n, 4), *v4 = calloc(n, 4), *zero = calloc(n, 4);
    uint16_t *b1 = malloc(2 * n), *b2 = malloc(2 * n), *b4 = malloc(2 * n);
    for (size_t i = 0; i < n; i++) p1[i] = p2[i] = p3[i] = p4[i] = (float)(0.05 * tl_rng_normal(&g));
    tl_adamw_config c = tl_adamw_defaults();
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < n; i++) gr[i] = (float)(step == 2 ? 1e-4 : 0.1) * (float)tl_rng_normal(&g);
        const double norm = tl_grad_norm(gr, n); /* step 2: under the clip, 1 and 3: over */
        memcpy(gc, gr, 4 * n);
        tl_clip_grads(gc, n, norm, c.clip);
        tl_adamw_update(p1, gc, m1, v1, n, 3e-4, &c, step);
        tl_round_bf16(p1, n, b1);
        const float s = tl_clip_scale(norm, c.clip);
        CHECK(step == 2 ? s == 1.0f : s < 1.0f);
        memcpy(gc, gr, 4 * n);
        tl_adamw_update_bf16(p2, b2, gc, m2, v2, n, 3e-4, &c, step, s, 0);
        CHECK_MSG(!memcmp(gc, gr, 4 * n), "step %d: the fused pass changed the gradients", step);
        memcpy(gc, gr, 4 * n);
        tl_adamw_update_bf16(p4, b4, gc, m4, v4, n, 3e-4, &c, step, s, 1);
        CHECK_MSG(!memcmp(gc, zero, 4 * n), "step %d: the fused pass left gradients unzeroed", step);
        CHECK_MSG(!memcmp(p1, p4, 4 * n) && !memcmp(m1, m4, 4 * n) && !memcmp(v1, v4, 4 * n) &&
                      !memcmp(b1, b4, 2 * n),
                  "step %d: the update that zeroes the gradients differs", step);
        memcpy(gc, gr, 4 * n);
        CHECK_MSG(!memcmp(p1, p2, 4 * n) && !memcmp(m1, m2, 4 * n) && !memcmp(v1, v2, 4 * n),
                  "step %d: fused update differs from clip + AdamW", step);
        CHECK_MSG(!memcmp(b1, b2, 2 * n), "step %d: fused bf16 copy differs from tl_round_bf16", step);
        tl_adamw_update_clipped(p3, gc, m3, v3, n, 3e-4, &c, step, s);
        CHECK_MSG(!memcmp(gc, gr, 4 * n), "step %d: the fp32 fused pass changed the gradients", step);
        CHECK_MSG(!memcmp(p1, p3, 4 * n) && !memcmp(m1, m3, 4 * n) && !memcmp(v1, v3, 4 * n),
                  "step %d: fp32 fused update differs from clip + AdamW", step);
    }
    free(p1), free(p2), free(gr), free(gc), free(m1), free(v1), free(m2), free(v2), free(b1), free(b2);
    free(p3), free(m3), free(v3), free(p4), free(m4), free(v4), free(zero), free(b4);
}

/* The gradient norm (tl_sumsq's lanes per block): within 1e-13 of a long double
 * sum, the same bits on 1, 2 and 3 threads, and the same bits from a shard's block
 * partials. */
static void test_norm_blocks(tl_test_ctx *t) {
    static const size_t sizes[] = {0, 1, 15, 17, (1u << 16) + 3, (1u << 18) + 77};
    tl_rng g;
    tl_rng_seed(&g, 29);
    const int saved = tl_get_threads();
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const size_t n = sizes[k];
        float *x = malloc(4 * (n + 1));
        long double ref = 0;
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)(tl_rng_normal(&g) * (i % 7 == 0 ? 1e3 : 1e-3));
            ref += (long double)x[i] * x[i];
        }
        double r[3];
        for (int th = 1; th <= 3; th++) {
            tl_set_threads(th);
            r[th - 1] = tl_grad_norm(x, n);
        }
        CHECK_MSG(r[0] == r[1] && r[1] == r[2], "n %zu: the norm depends on the thread count", n);
        /* ranks' shards: the block partials, added in order, give the same bits */
        const size_t nb = (n + TL_NORM_BLOCK - 1) / TL_NORM_BLOCK;
        double *part = malloc(sizeof(double) * (nb + 1)), tot = 0;
        tl_grad_sumsq_blocks(x, 0, n, part);
        for (size_t b = 0; b < nb; b++) tot += part[b];
        CHECK_MSG(sqrt(tot) == r[0], "n %zu: block partials %.17g, norm %.17g", n, sqrt(tot), r[0]);
        free(part);
        CHECK_MSG(fabs(r[0] - (double)sqrtl(ref)) <= 1e-13 * (double)sqrtl(ref), "n %zu: norm %.17g, exact %.17g",
                  n, r[0], (double)sqrtl(ref));
        free(x);
    }
    tl_set_threads(saved);
}

/* ------------------------------------------------------------------ attention */

static double bf(float x) { return (double)tl_bf16_to_f32(tl_f32_to_bf16(x)); }

/* Exact attention in double (no rounding anywhere): P, O and, given dO, dq dk dv. */
static void attention_double(double *P, double *O, double *dq, double *dk, double *dv, const float *q,
                             const float *k, const float *v, const float *dO, int B, int T, int H, int KV, int hd) {
    const int group = H / KV, qs = H * hd, ks = KV * hd;
    const double scale = 1.0 / sqrt((double)hd);
    memset(dk, 0, sizeof(double) * (size_t)B * T * ks);
    memset(dv, 0, sizeof(double) * (size_t)B * T * ks);
    double *dP = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / group;
            for (int t = 0; t < T; t++) {
                double *p = P + (((size_t)b * H + h) * T + t) * T, mx = -INFINITY, sum = 0;
                const float *qr = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                for (int s = 0; s < T; s++) {
                    p[s] = 0;
                    if (s > t) continue;
                    const float *kr = k + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    for (int d = 0; d < hd; d++) p[s] += (double)qr[d] * kr[d];
                    p[s] *= scale;
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = 0; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
                for (int s = 0; s <= t; s++) p[s] /= sum;
                double *o = O + ((size_t)b * T + t) * qs + (size_t)h * hd;
                const float *dor = dO + ((size_t)b * T + t) * qs + (size_t)h * hd;
                for (int d = 0; d < hd; d++) o[d] = 0;
                double rs = 0;
                for (int s = 0; s <= t; s++) {
                    const float *vr = v + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    dP[s] = 0;
                    for (int d = 0; d < hd; d++) o[d] += p[s] * vr[d], dP[s] += (double)dor[d] * vr[d];
                    rs += p[s] * dP[s];
                }
                double *dqr = dq + ((size_t)b * T + t) * qs + (size_t)h * hd;
                for (int d = 0; d < hd; d++) dqr[d] = 0;
                for (int s = 0; s <= t; s++) {
                    const double ds = p[s] * (dP[s] - rs) * scale;
                    const float *kr = k + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    double *dkr = dk + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    double *dvr = dv + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    for (int d = 0; d < hd; d++) {
                        dqr[d] += ds * kr[d];
                        dkr[d] += ds * qr[d];
                        dvr[d] += p[s] * dor[d];
                    }
                }
            }
        }
    free(dP);
}

/* max |a - b| / max |b| */
static double rel_err_d(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(a[i] - b[i]) > num) num = fabs(a[i] - b[i]);
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0 ? num / den : num;
}

static float *randn(tl_rng *g, size_t n, double sd) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(sd * tl_rng_normal(g));
    return x;
}

/* bf16 attention on the active backend and on the reference, forward and backward:
 * - the probabilities within 2e-5 of softmax(bf16(q) bf16(k)^T / sqrt(d)) in double
 *   (only fp32 sums and fp32 softmax differ), and each output row within the fp32
 *   summation bound (4 u (T+2) sum |terms|) of sum_s bf16(P) bf16(v) in double;
 * - out, dq, dk, dv within 1.5e-2 (max error / max value) of exact double attention
 *   (bf16 inputs: about 2^-9 each; measured 2e-3 to 5e-3), and within it of the fp32
 *   kernels, yet not equal to them (the products really are bf16);
 * - 1 and 2 threads: the same bits. */
static void check_attention(tl_test_ctx *t, int B, int T, int H, int KV, int hd,
                            tl_rng *g) {
    const int qs = H * hd, ks = KV * hd;
    const size_t nq = (size_t)B * T * qs, nk = (size_t)B * T * ks, np = (size_t)B * H * T * T;
    float *q = randn(g, nq, 1.0), *k = randn(g, nk, 1.0), *v = randn(g, nk, 1.0), *dO = randn(g, nq, 1.0);
    float *out = malloc(4 * nq), *P = malloc(4 * np), *dq = malloc(4 * nq), *dk = malloc(4 * nk), *dv = malloc(4 * nk);
    float *out2 = malloc(4 * nq), *P2 = malloc(4 * np), *dq2 = malloc(4 * nq), *dk2 = malloc(4 * nk),
          *dv2 = malloc(4 * nk);
    double *Pd = malloc(8 * np), *Od = malloc(8 * nq), *dqd = malloc(8 * nq), *dkd = malloc(8 * nk),
           *dvd = malloc(8 * nk);
    void *scr = tl_alloc(tl_attention_bf16_scratch(B, T, H, KV, hd));
    /* the process's backend (TL_GEMM_BF16=ref runs the emulated one) */
    const char *bn = tl_gemm_bf16_name(tl_gemm_bf16_active());
    const int saved = tl_get_threads();
    tl_set_threads(2);
    tl_attention_forward_bf16(out, NULL, P, q, k, v, B, T, H, KV, hd, NULL, scr, NULL);
    tl_attention_backward_bf16(dq, dk, dv, dO, P, q, k, v, B, T, H, KV, hd, NULL, scr, NULL, NULL, NULL, NULL);

    /* tight: the probabilities and the P v product on the same bf16 operands */
    double worst_p = 0, worst_o = 0;
    const double scale = 1.0 / sqrt((double)hd), u = ldexp(1.0, -24);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int r = 0; r < T; r++) {
                const int gk = h / (H / KV);
                const float *qr = q + ((size_t)b * T + r) * qs + (size_t)h * hd;
                const float *pr = P + (((size_t)b * H + h) * T + r) * T;
                double s[T], mx = -INFINITY, sum = 0;
                for (int c = 0; c <= r; c++) {
                    const float *kr = k + ((size_t)b * T + c) * ks + (size_t)gk * hd;
                    s[c] = 0;
                    for (int d = 0; d < hd; d++) s[c] += bf(qr[d]) * bf(kr[d]);
                    s[c] *= scale;
                    if (s[c] > mx) mx = s[c];
                }
                for (int c = 0; c <= r; c++) sum += (s[c] = exp(s[c] - mx));
                for (int c = 0; c < T; c++) {
                    const double want = c <= r ? s[c] / sum : 0.0, e = fabs(pr[c] - want);
                    if (e > worst_p) worst_p = e;
                }
                for (int d = 0; d < hd; d++) {
                    double ref = 0, mag = 0;
                    for (int c = 0; c < T; c++) {
                        const double term = bf(pr[c]) * bf(v[((size_t)b * T + c) * ks + (size_t)gk * hd + d]);
                        ref += term;
                        mag += fabs(term);
                    }
                    const double e = fabs(out[((size_t)b * T + r) * qs + (size_t)h * hd + d] - ref);
                    const double bound = 4 * u * (T + 2) * mag + 1e-30;
                    if (e / bound > worst_o) worst_o = e / bound;
                }
            }
    CHECK_MSG(worst_p < 2e-5, "%s %dx%d H%d KV%d hd%d: probabilities off by %.3g", bn, B, T, H, KV, hd, worst_p);
    CHECK_MSG(worst_o <= 1.0, "%s %dx%d H%d KV%d hd%d: P v product at %.3g of the fp32 summation bound", bn, B, T,
              H, KV, hd, worst_o);

    /* loose: against exact attention, and against the fp32 kernels */
    attention_double(Pd, Od, dqd, dkd, dvd, q, k, v, dO, B, T, H, KV, hd);
    const double e_o = rel_err_d(out, Od, nq), e_q = rel_err_d(dq, dqd, nq), e_k = rel_err_d(dk, dkd, nk),
                 e_v = rel_err_d(dv, dvd, nk);
    if (getenv("TL_TEST_VERBOSE"))
        fprintf(stderr, "  %s %dx%d H%d KV%d hd%d vs double: out %.3g dq %.3g dk %.3g dv %.3g\n", bn, B, T, H, KV,
                hd, e_o, e_q, e_k, e_v);
    CHECK_MSG(e_o < 1.5e-2 && e_q < 1.5e-2 && e_k < 1.5e-2 && e_v < 1.5e-2,
              "%s %dx%d H%d KV%d hd%d vs double: out %.3g dq %.3g dk %.3g dv %.3g (tolerance 1.5e-2)", bn, B, T, H,
              KV, hd, e_o, e_q, e_k, e_v);
    tl_attention_forward(out2, P2, q, k, v, B, T, H, KV, hd);
    tl_attention_backward(dq2, dk2, dv2, dO, P2, q, k, v, B, T, H, KV, hd);
    const double f_o = tl_test_rel_err(out, out2, nq), f_q = tl_test_rel_err(dq, dq2, nq);
    CHECK_MSG(f_o < 1.5e-2 && f_q < 1.5e-2, "%s: vs the fp32 kernels: out %.3g dq %.3g", bn, f_o, f_q);
    CHECK_MSG(f_o > 1e-5 && (T == 1 || f_q > 1e-5), "%s: equal to the fp32 kernels (%.3g, %.3g): the products are not bf16", bn,
              f_o, f_q);

    /* the forward's rounded operands kept for the backward, which then reads no
     * q, k, v (NULL) and rounds nothing again: the same bits */
    uint16_t *kept = malloc(2 * tl_attention_bf16_kept(B, T, H, KV, hd));
    tl_attention_forward_bf16(out2, NULL, P2, q, k, v, B, T, H, KV, hd, NULL, scr, kept);
    tl_attention_backward_bf16(dq2, dk2, dv2, dO, P2, NULL, NULL, NULL, B, T, H, KV, hd, NULL, scr, kept, NULL, NULL,
                               NULL);
    CHECK_MSG(!memcmp(out, out2, 4 * nq) && !memcmp(P, P2, 4 * np) && !memcmp(dq, dq2, 4 * nq) &&
                  !memcmp(dk, dk2, 4 * nk) && !memcmp(dv, dv2, 4 * nk),
              "%s %dx%d H%d KV%d hd%d: the kept operands change the results", bn, B, T, H, KV, hd);
    free(kept);

    /* thread count */
    tl_set_threads(1);
    uint16_t *ob = malloc(2 * nq), *ob2 = malloc(2 * nq);
    tl_attention_forward_bf16(out2, ob, P2, q, k, v, B, T, H, KV, hd, NULL, scr, NULL);
    tl_round_bf16(out2, nq, ob2);
    CHECK_MSG(!memcmp(ob, ob2, 2 * nq), "%s: the output's bf16 copy is not its rounding", bn);
    memset(ob, 0, 2 * nq);
    tl_attention_forward_bf16(NULL, ob, P2, q, k, v, B, T, H, KV, hd, NULL, scr, NULL);
    CHECK_MSG(!memcmp(ob, ob2, 2 * nq), "%s: the output's bf16 copy alone differs", bn);
    free(ob), free(ob2);
    tl_attention_backward_bf16(dq2, dk2, dv2, dO, P2, q, k, v, B, T, H, KV, hd, NULL, scr, NULL, NULL, NULL, NULL);
    CHECK_MSG(!memcmp(out, out2, 4 * nq) && !memcmp(P, P2, 4 * np) && !memcmp(dq, dq2, 4 * nq) &&
                  !memcmp(dk, dk2, 4 * nk) && !memcmp(dv, dv2, 4 * nk),
              "%s %dx%d H%d KV%d hd%d: 1 and 2 threads differ", bn, B, T, H, KV, hd);
    tl_set_threads(saved);
    free(q), free(k), free(v), free(dO), free(out), free(P), free(dq), free(dk), free(dv);
    free(out2), free(P2), free(dq2), free(dk2), free(dv2), free(Pd), free(Od), free(dqd), free(dkd), free(dvd);
    tl_free(scr);
}

/* RoPE folded into the bf16 attention (the training step's way): from q and k
 * before RoPE, the same bits as tl_rope_forward, the attention, then
 * tl_rope_backward on dq and dk; the gradients' bf16 copies are their rounding,
 * and the fp32 gradients may be left out. */
static void check_attention_rope(tl_test_ctx *t, int B, int T, int H, int KV, int hd, tl_rng *g) {
    const size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd, np = (size_t)B * H * T * T;
    float *q = randn(g, nq, 1.0), *k = randn(g, nk, 1.0), *v = randn(g, nk, 1.0), *dO = randn(g, nq, 1.0);
    float *qr = malloc(4 * nq), *kr = malloc(4 * nk), *cs = malloc(4 * (size_t)T * hd), *sn = malloc(4 * (size_t)T * hd);
    float *o1 = malloc(4 * nq), *P1 = malloc(4 * np), *dq1 = malloc(4 * nq), *dk1 = malloc(4 * nk), *dv1 = malloc(4 * nk);
    float *o2 = malloc(4 * nq), *P2 = malloc(4 * np), *dq2 = malloc(4 * nq), *dk2 = malloc(4 * nk), *dv2 = malloc(4 * nk);
    uint16_t *b1 = malloc(2 * (nq + 2 * nk)), *b2 = malloc(2 * (nq + 2 * nk));
    uint16_t *kept = malloc(2 * tl_attention_bf16_kept(B, T, H, KV, hd));
    void *scr = tl_alloc(tl_attention_bf16_scratch(B, T, H, KV, hd));
    tl_rope_tables(cs, sn, T, hd, 10000.0f);
    memcpy(qr, q, 4 * nq);
    memcpy(kr, k, 4 * nk);
    tl_rope_forward(qr, cs, sn, B * T, T, 0, H, hd);
    tl_rope_forward(kr, cs, sn, B * T, T, 0, KV, hd);
    tl_attention_forward_bf16(o1, NULL, P1, qr, kr, v, B, T, H, KV, hd, NULL, scr, NULL);
    tl_attention_backward_bf16(dq1, dk1, dv1, dO, P1, qr, kr, v, B, T, H, KV, hd, NULL, scr, NULL, NULL, NULL, NULL);
    tl_rope_backward(dq1, cs, sn, B * T, T, 0, H, hd);
    tl_rope_backward(dk1, cs, sn, B * T, T, 0, KV, hd);
    tl_round_bf16(dq1, nq, b1);
    tl_round_bf16(dk1, nk, b1 + nq);
    tl_round_bf16(dv1, nk, b1 + nq + nk);

    const tl_rope rope = {cs, sn};
    tl_attention_forward_bf16(o2, NULL, P2, q, k, v, B, T, H, KV, hd, &rope, scr, kept);
    CHECK_MSG(!memcmp(o1, o2, 4 * nq) && !memcmp(P1, P2, 4 * np),
              "%dx%d H%d KV%d hd%d: the forward with RoPE folded in differs", B, T, H, KV, hd);
    tl_attention_backward_bf16(NULL, NULL, NULL, dO, P2, NULL, NULL, NULL, B, T, H, KV, hd, &rope, scr, kept, b2,
                               b2 + nq, b2 + nq + nk);
    CHECK_MSG(!memcmp(b1, b2, 2 * (nq + 2 * nk)),
              "%dx%d H%d KV%d hd%d: the gradients' bf16 copies with RoPE folded in differ", B, T, H, KV, hd);
    tl_attention_backward_bf16(dq2, dk2, dv2, dO, P2, q, k, v, B, T, H, KV, hd, &rope, scr, NULL, NULL, NULL, NULL);
    CHECK_MSG(!memcmp(dq1, dq2, 4 * nq) && !memcmp(dk1, dk2, 4 * nk) && !memcmp(dv1, dv2, 4 * nk),
              "%dx%d H%d KV%d hd%d: the fp32 gradients with RoPE folded in differ", B, T, H, KV, hd);
    free(q), free(k), free(v), free(dO), free(qr), free(kr), free(cs), free(sn);
    free(o1), free(P1), free(dq1), free(dk1), free(dv1), free(o2), free(P2), free(dq2), free(dk2), free(dv2);
    free(b1), free(b2), free(kept);
    tl_free(scr);
}

static void test_attention(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 31);
    /* odd sizes, grouped and not, one position, and gqa-40m's head shape */
    static const int sh[][5] = {{2, 37, 4, 2, 16}, {1, 1, 2, 2, 8}, {3, 20, 6, 6, 12}, {1, 96, 8, 4, 64}};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++)
        check_attention(t, sh[i][0], sh[i][1], sh[i][2], sh[i][3], sh[i][4], &g);
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++)
        check_attention_rope(t, sh[i][0], sh[i][1], sh[i][2], sh[i][3], sh[i][4], &g);
}

/* The producers that round their own output (ops_bf16.h): the fp32 outputs are
 * the fp32 kernels' and the bf16 copies tl_round_bf16's of them, bit for bit. */
static void test_producers_round(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 37);
    const int N = 19, D = 200; /* D: 12 blocks of 16 and a tail */
    const size_t n = 3 * 4096 + 123;
    float *x = randn(&g, (size_t)N * D, 1.0), *w = randn(&g, (size_t)D, 1.0);
    float *y1 = malloc(4 * N * D), *y2 = malloc(4 * N * D), r1[19], r2[19];
    uint16_t *b1 = malloc(2 * N * D), *b2 = malloc(2 * N * D);
    tl_rmsnorm_forward(y1, r1, x, w, N, D, 1e-5f);
    tl_round_bf16(y1, (size_t)N * D, b1);
    tl_rmsnorm_forward_bf16(y2, b2, r2, x, w, N, D, 1e-5f);
    CHECK_MSG(!memcmp(y1, y2, 4 * N * D) && !memcmp(r1, r2, sizeof r1) && !memcmp(b1, b2, 2 * N * D),
              "RMSNorm with its bf16 copy differs from tl_rmsnorm_forward + tl_round_bf16");
    memset(b2, 0, 2 * N * D);
    tl_rmsnorm_forward_bf16(NULL, b2, r2, x, w, N, D, 1e-5f);
    CHECK_MSG(!memcmp(r1, r2, sizeof r1) && !memcmp(b1, b2, 2 * N * D), "RMSNorm writing only its bf16 copy differs");
    float *gt = randn(&g, n, 2.0), *up = randn(&g, n, 1.0), *dh = randn(&g, n, 1.0);
    float *h1 = malloc(4 * n), *h2 = malloc(4 * n), *dg1 = malloc(4 * n), *du1 = malloc(4 * n), *dg2 = malloc(4 * n),
          *du2 = malloc(4 * n);
    uint16_t *s1 = malloc(2 * n), *s2 = malloc(2 * n), *s3 = malloc(2 * n), *s4 = malloc(2 * n);
    tl_swiglu_forward(h1, gt, up, n);
    tl_round_bf16(h1, n, s1);
    tl_swiglu_forward_bf16(h2, s2, gt, up, n);
    CHECK_MSG(!memcmp(h1, h2, 4 * n) && !memcmp(s1, s2, 2 * n), "SwiGLU forward with its bf16 copy differs");
    memset(s2, 0, 2 * n);
    tl_swiglu_forward_bf16(NULL, s2, gt, up, n);
    CHECK_MSG(!memcmp(s1, s2, 2 * n), "SwiGLU forward writing only its bf16 copy differs");
    tl_swiglu_backward(dg1, du1, dh, gt, up, n);
    tl_round_bf16(dg1, n, s1);
    tl_round_bf16(du1, n, s2);
    tl_swiglu_backward_bf16(dg2, du2, s3, s4, dh, gt, up, n);
    CHECK_MSG(!memcmp(dg1, dg2, 4 * n) && !memcmp(du1, du2, 4 * n) && !memcmp(s1, s3, 2 * n) &&
                  !memcmp(s2, s4, 2 * n),
              "SwiGLU backward with its bf16 copies differs");
    memset(s3, 0, 2 * n);
    memset(s4, 0, 2 * n);
    tl_swiglu_backward_bf16(NULL, NULL, s3, s4, dh, gt, up, n);
    CHECK_MSG(!memcmp(s1, s3, 2 * n) && !memcmp(s2, s4, 2 * n), "SwiGLU backward writing only its bf16 copies differs");
    free(x), free(w), free(y1), free(y2), free(b1), free(b2), free(gt), free(up), free(dh), free(h1), free(h2);
    free(dg1), free(du1), free(dg2), free(du2), free(s1), free(s2), free(s3), free(s4);
}

/* SwiGLU's backward with the token-minor copies: the rounded gradients as
 * tl_swiglu_backward + tl_round_bf16's, bit for bit, and the copies their exact
 * transposes.  N: blocks of 32 rows and a tail; F: rows that cut the flat pass's
 * blocks of 4096 in the middle. */
static void test_swiglu_backward_t(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 39);
    const int N = 77, F = 333;
    const size_t n = (size_t)N * F;
    float *gt = randn(&g, n, 2.0), *up = randn(&g, n, 1.0), *dh = randn(&g, n, 1.0);
    float *dg = malloc(4 * n), *du = malloc(4 * n);
    uint16_t *s1 = malloc(2 * n), *s2 = malloc(2 * n), *s3 = malloc(2 * n), *s4 = malloc(2 * n);
    uint16_t *t1 = malloc(2 * n), *t2 = malloc(2 * n);
    tl_swiglu_backward(dg, du, dh, gt, up, n);
    tl_round_bf16(dg, n, s1);
    tl_round_bf16(du, n, s2);
    tl_swiglu_backward_bf16_t(s3, s4, t1, t2, dh, gt, up, N, F);
    CHECK_MSG(!memcmp(s1, s3, 2 * n) && !memcmp(s2, s4, 2 * n), "SwiGLU backward with token-minor copies differs");
    long bad = 0;
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++)
            bad += t1[(size_t)f * N + r] != s1[(size_t)r * F + f] || t2[(size_t)f * N + r] != s2[(size_t)r * F + f];
    CHECK_MSG(bad == 0, "%ld elements of SwiGLU's token-minor gradients are not the gradients'", bad);
    free(gt), free(up), free(dh), free(dg), free(du), free(s1), free(s2), free(s3), free(s4), free(t1), free(t2);
}

/* tl_transpose_bf16 against the definition: blocks that are and are not multiples
 * of its tiles (16 x 16, 32 x 16), with row strides wider than the block, and with
 * dst's rows on 64-byte lines (its streamed stores). */
static void test_transpose(tl_test_ctx *t) {
    static const int sh[][3] = {{16, 16, 0}, {32, 48, 0}, {1, 1, 0},    {0, 5, 0},    {17, 33, 0},  {15, 64, 0},
                                {77, 333, 0}, {64, 15, 0}, {64, 48, 1}, {96, 333, 1}, {50, 40, 1}, {45, 77, 1}};
    for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++) {
        const int R = sh[s][0], C = sh[s][1], al = sh[s][2];
        const size_t lds = (size_t)C + 3, ldd = al ? ((size_t)R + 31) / 32 * 32 : (size_t)R + 5;
        uint16_t *a = malloc(2 * (R * lds + 1)), *b = aligned_alloc(64, (2 * (C * ldd + 1) + 63) / 64 * 64);
        for (size_t i = 0; i < R * lds; i++) a[i] = (uint16_t)(i * 2654435761u >> 7);
        for (size_t i = 0; i < C * ldd; i++) b[i] = 0xdead;
        tl_transpose_bf16(a, lds, R, C, b, ldd);
        long bad = 0;
        for (int c = 0; c < C; c++)
            for (size_t r = 0; r < ldd; r++)
                bad += b[c * ldd + r] != ((int)r < R ? a[r * lds + c] : 0xdead); /* the padding untouched */
        CHECK_MSG(bad == 0, "%dx%d: %ld elements wrong", R, C, bad);
        free(a), free(b);
    }
}

/* A row-major [rows, V] bf16 gradient in the output layer's slices (ops_bf16.h). */
static void to_slices(const uint16_t *d, int rows, int V, uint16_t *out) {
    for (int v0 = 0; v0 < V; v0 += TL_OUT_SLICE) {
        const int w = V - v0 < TL_OUT_SLICE ? V - v0 : TL_OUT_SLICE;
        for (int r = 0; r < rows; r++)
            memcpy(out + (size_t)v0 * rows + (size_t)r * w, d + (size_t)r * V + v0, sizeof(uint16_t) * (size_t)w);
    }
}

/* The cross-entropy that writes its gradient as bf16: the loss and the bits of the
 * fp32 path's passes (tl_cross_entropy_rows, the rows' weights, tl_round_bf16), with
 * ignored rows, weighted and not, a vocabulary that is no multiple of its blocks. */
static void test_cross_entropy_bf16(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 41);
    const int R = 37, V = 2 * TL_OUT_SLICE + 203; /* R: two blocks of 16 rows and a tail */
    float *z = randn(&g, (size_t)R * V, 3.0), *z1 = malloc(4 * (size_t)R * V), *z2 = malloc(4 * (size_t)R * V);
    uint16_t *d1 = malloc(2 * (size_t)R * V), *d2 = malloc(2 * (size_t)R * V), *d3 = malloc(2 * (size_t)R * V);
    uint16_t *dt = malloc(2 * (size_t)R * V);
    float rw[37], l1[37], l2[37];
    int tg[37];
    for (int r = 0; r < R; r++) {
        tg[r] = r == 4 || r == 33 ? -1 : (int)tl_rng_below(&g, V);
        rw[r] = (float)(2.0 * tl_rng_uniform(&g));
    }
    for (int weighted = 0; weighted < 2; weighted++) {
        const float scale = 1.0f / 37.0f;
        memcpy(z1, z, 4 * (size_t)R * V);
        memcpy(z2, z, 4 * (size_t)R * V);
        tl_cross_entropy_rows(z1, l1, tg, R, V, weighted ? 1.0f : scale);
        if (weighted)
            for (int r = 0; r < R; r++) tl_vec_scale(z1 + (size_t)r * V, (size_t)V, rw[r]);
        tl_round_bf16(z1, (size_t)R * V, d3);
        to_slices(d3, R, V, d1);
        tl_cross_entropy_rows_bf16(z2, l2, tg, R, V, scale, weighted ? rw : NULL, d2, NULL);
        CHECK_MSG(!memcmp(l1, l2, sizeof l1) && !memcmp(d1, d2, 2 * (size_t)R * V),
                  "%s: the bf16 cross-entropy differs from the fp32 passes", weighted ? "weighted" : "scaled");
        /* with the token-minor copy: the same, and slice [v0, v0 + w) transposed at dt + v0 R */
        memcpy(z2, z, 4 * (size_t)R * V);
        memset(d2, 0xff, 2 * (size_t)R * V);
        tl_cross_entropy_rows_bf16(z2, l2, tg, R, V, scale, weighted ? rw : NULL, d2, dt);
        CHECK_MSG(!memcmp(l1, l2, sizeof l1) && !memcmp(d1, d2, 2 * (size_t)R * V),
                  "%s: the bf16 cross-entropy with its token-minor copy differs", weighted ? "weighted" : "scaled");
        long bad = 0;
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++) {
                const int v0 = v - v % TL_OUT_SLICE;
                bad += dt[(size_t)v0 * R + (size_t)(v - v0) * R + r] != d3[(size_t)r * V + v];
            }
        CHECK_MSG(bad == 0, "%s: %ld elements of the token-minor gradient are not the gradient's",
                  weighted ? "weighted" : "scaled", bad);
    }
    free(z), free(z1), free(z2), free(d1), free(d2), free(d3), free(dt);
}

/* The output layer's backward (dx summed over vocabulary slices): against the double
 * sums of the exact products of the bf16 inputs, within the fp32 summation bound
 * 4 u (K+2) sum |terms|; the same bits on 1 and 2 threads.  V spans five slices. */
static void test_output_backward_bf16(tl_test_ctx *t) {
    tl_rng g;
    tl_rng_seed(&g, 43);
    const int N = 21, D = 48, V = 4 * TL_OUT_SLICE + 809;
    float *dy = randn(&g, (size_t)N * V, 1.0), *x = randn(&g, (size_t)N * D, 1.0), *W = randn(&g, (size_t)V * D, 1.0);
    uint16_t *dys = malloc(2 * (size_t)N * V), *xs = malloc(2 * (size_t)N * D), *Ws = malloc(2 * (size_t)V * D);
    uint16_t *rowmajor = malloc(2 * (size_t)N * V);
    tl_round_bf16(dy, (size_t)N * V, rowmajor);
    to_slices(rowmajor, N, V, dys);
    free(rowmajor);
    tl_round_bf16(x, (size_t)N * D, xs);
    tl_round_bf16(W, (size_t)V * D, Ws);
    float *dx = malloc(4 * (size_t)N * D), *dW = malloc(4 * (size_t)V * D), *dx2 = malloc(4 * (size_t)N * D),
          *dW2 = malloc(4 * (size_t)V * D);
    /* the token-minor copy in the same slices (ops_bf16.h), for dW's plain products */
    uint16_t *dyt = malloc(2 * (size_t)N * V);
    for (int v = 0; v < V; v++) {
        const int v0 = v - v % TL_OUT_SLICE, w = V - v0 < TL_OUT_SLICE ? V - v0 : TL_OUT_SLICE;
        for (int r = 0; r < N; r++)
            dyt[(size_t)v0 * N + (size_t)(v - v0) * N + r] = dys[(size_t)v0 * N + (size_t)r * w + (v - v0)];
    }
    for (int tm = 0; tm < 2; tm++) {
        const char *what = tm ? "with the token-minor copy" : "slices only";
        const int saved = tl_get_threads();
        for (int th = 1; th <= 2; th++) {
            tl_set_threads(th);
            float *a = th == 1 ? dx : dx2, *b = th == 1 ? dW : dW2;
            for (size_t i = 0; i < (size_t)V * D; i++) b[i] = 0.25f;
            memset(a, 0xff, 4 * (size_t)N * D); /* NaN: it must be overwritten, not added to */
            tl_output_backward_bf16(a, b, dys, tm ? dyt : NULL, xs, Ws, N, D, V);
        }
        tl_set_threads(saved);
        CHECK_MSG(!memcmp(dx, dx2, 4 * (size_t)N * D) && !memcmp(dW, dW2, 4 * (size_t)V * D),
                  "%s: 1 and 2 threads differ", what);
        const double u = ldexp(1.0, -24);
        double worst = 0;
        for (int r = 0; r < N; r++)
            for (int d = 0; d < D; d++) {
                double ref = 0, mag = 0;
                for (int v = 0; v < V; v++) {
                    const double term = (double)bf(dy[(size_t)r * V + v]) * bf(W[(size_t)v * D + d]);
                    ref += term;
                    mag += fabs(term);
                }
                const double e = fabs(dx[r * D + d] - ref) / (4 * u * (V + 2) * mag);
                if (!(e <= worst)) worst = e;
            }
        for (int v = 0; v < V; v += 7)
            for (int d = 0; d < D; d++) {
                double ref = 0.25, mag = 0.25;
                for (int r = 0; r < N; r++) {
                    const double term = (double)bf(dy[(size_t)r * V + v]) * bf(x[r * D + d]);
                    ref += term;
                    mag += fabs(term);
                }
                const double e = fabs(dW[(size_t)v * D + d] - ref) / (4 * u * (N + 3) * mag);
                if (!(e <= worst)) worst = e;
            }
        CHECK_MSG(worst <= 1.0, "%s: output backward at %.3g of the fp32 summation bound", what, worst);
    }
    free(dy), free(x), free(W), free(dys), free(dyt), free(xs), free(Ws), free(dx), free(dW), free(dx2), free(dW2);
}

const tl_test tests_bf16_step[] = {
    {"bf16/adamw_fused_matches_separate_passes", test_adamw_fused},
    {"bf16/grad_norm_blocks", test_norm_blocks},
    {"bf16/attention_vs_double", test_attention},
    {"bf16/producers_round_their_output", test_producers_round},
    {"bf16/swiglu_backward_token_minor", test_swiglu_backward_t},
    {"bf16/transpose", test_transpose},
    {"bf16/cross_entropy_writes_bf16_gradient", test_cross_entropy_bf16},
    {"bf16/output_backward_vs_double", test_output_backward_bf16},
    {NULL, NULL},
};

/* attention.c - causal GQA attention, forward and backward, on BLAS.
 *
 * Forward:  S = q k^T / sqrt(d), P = softmax(S + causal mask), O = P v.
 * Backward: dP = dO v^T, dS = P * (dP - rowsum(P * dP)),
 *           dq = dS k / sqrt(d), dk = dS^T q / sqrt(d), dv = P^T dO.
 *
 * Each (batch, head) is one task: its matrix products are single-threaded
 * sgemm calls on strided views of q/k/v (tl_sgemm runs single-threaded inside an
 * OpenMP parallel region), and the rows are processed in blocks of RB so the
 * causal upper triangle is mostly skipped.  The backward pass is parallel over
 * (batch, KV head): the query heads sharing a KV head add into dk/dv one after
 * another, so results are deterministic for any thread count. */
#include "attention.h"
#include "gemm.h"
#include "dtype.h"
#include "vec.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RB = TL_ATTN_ROWS }; /* row block */

void tl_attention_softmax_row(float *p, int t, int T) {
    const size_t n = (size_t)t + 1;
    float mx = tl_vec_max(p, n);
    double sum = tl_vec_exp_sum(p, n, mx);
    tl_vec_scale(p, n, (float)(1.0 / sum));
    for (int s = t + 1; s < T; s++) p[s] = 0.0f;
}

/* `rows` queries (rows of q, stride qs) attend causally to keys and values
 * (stride ks): query r sees positions [0, pos0 + r*step] (step 1: consecutive
 * tokens; step 0: heads of one token sharing a KV head).  P [rows, ldp] receives
 * the probabilities (zero past each row's limit), out (stride qs) the weighted
 * values. */
static void attend_rows(float *out, float *P, int ldp, const float *q, int qs, const float *k, const float *v, int ks,
                        int rows, int pos0, int step, int hd, float scale) {
    const int cols = pos0 + (rows - 1) * step + 1;
    tl_sgemm(false, true, rows, cols, hd, scale, q, qs, k, ks, 0.0f, P, ldp);
    for (int i = 0; i < rows; i++) tl_attention_softmax_row(P + (size_t)i * ldp, pos0 + i * step, ldp);
    tl_sgemm(false, false, rows, hd, cols, 1.0f, P, ldp, v, ks, 0.0f, out, qs);
}

void tl_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KV, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / group;
            const float *qb = q + (size_t)b * T * qs + (size_t)h * hd;
            const float *kb = k + (size_t)b * T * ks + (size_t)g * hd;
            const float *vb = v + (size_t)b * T * ks + (size_t)g * hd;
            float *P = probs + ((size_t)b * H + h) * T * T;
            float *ob = out + (size_t)b * T * qs + (size_t)h * hd;
            for (int r0 = 0; r0 < T; r0 += RB) {
                const int rows = T - r0 < RB ? T - r0 : RB;
                attend_rows(ob + (size_t)r0 * qs, P + (size_t)r0 * T, T, qb + (size_t)r0 * qs, qs, kb, vb, ks, rows, r0, 1,
                            hd, scale);
            }
        }
}

void tl_attention_forward_cached(float *out, float *scratch, const float *q, const float *kc, const float *vc,
                                 int p0, int n, int H, int KV, int hd, int nthreads) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd, ldp = p0 + n;
    if (n <= 4 && group <= TL_ATTN_ROWS) {
        /* decode: the group of query heads of one token that share a KV head are
         * consecutive rows (stride hd) at the same position: one product each */
        const int work = n * KV;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (work > 1)
        for (int wi = 0; wi < work; wi++) {
            const int i = wi / KV, g = wi % KV;
            const size_t at = (size_t)i * qs + (size_t)g * group * hd;
            float *P = scratch + (size_t)omp_get_thread_num() * TL_ATTN_ROWS * (size_t)ldp;
            attend_rows(out + at, P, ldp, q + at, hd, kc + (size_t)g * hd, vc + (size_t)g * hd, ks, group, p0 + i, 0,
                        hd, scale);
        }
        return;
    }
    const int blocks = (n + RB - 1) / RB, work = H * blocks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (work > 1)
    for (int wi = 0; wi < work; wi++) {
        const int h = wi % H, r0 = wi / H * RB, rows = n - r0 < RB ? n - r0 : RB;
        float *P = scratch + (size_t)omp_get_thread_num() * TL_ATTN_ROWS * (size_t)ldp;
        attend_rows(out + (size_t)r0 * qs + (size_t)h * hd, P, ldp, q + (size_t)r0 * qs + (size_t)h * hd, qs,
                    kc + (size_t)(h / group) * hd, vc + (size_t)(h / group) * hd, ks, rows, p0 + r0, 1, hd, scale);
    }
}

/* ------------------------------------------------------ bf16 on AMX tiles */

/* dS = P * (dP - rowsum(P * dP)) * scale in place over columns [0, t], zeros
 * after; the row sum in lanes. */
static void softmax_grad_row(float *d, const float *p, int t, int cols, float scale) {
    const int n = t + 1;
    const float rowsum = tl_vec_dot_lanes(p, d, NULL, (size_t)n);
    int s;
    for (s = 0; s < n; s++) d[s] = p[s] * (d[s] - rowsum) * scale;
    for (; s < cols; s++) d[s] = 0.0f;
}

void tl_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                           int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd;
#pragma omp parallel
    {
        float *dS = malloc(sizeof(float) * (size_t)RB * (size_t)T); /* one row block */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < KV; g++) {
                if (!dS) continue; /* reported below */
                const float *kb = k + (size_t)b * T * ks + (size_t)g * hd;
                const float *vb = v + (size_t)b * T * ks + (size_t)g * hd;
                float *dkb = dk + (size_t)b * T * ks + (size_t)g * hd;
                float *dvb = dv + (size_t)b * T * ks + (size_t)g * hd;
                for (int t = 0; t < T; t++) {
                    memset(dkb + (size_t)t * ks, 0, sizeof(float) * (size_t)hd);
                    memset(dvb + (size_t)t * ks, 0, sizeof(float) * (size_t)hd);
                }
                for (int h = g * group; h < (g + 1) * group; h++) {
                    const float *P = probs + ((size_t)b * H + h) * T * T;
                    const float *qb = q + (size_t)b * T * qs + (size_t)h * hd;
                    const float *dob = dout + (size_t)b * T * qs + (size_t)h * hd;
                    float *dqb = dq + (size_t)b * T * qs + (size_t)h * hd;
                    for (int r0 = 0; r0 < T; r0 += RB) {
                        /* rows [r0, r0+rows) attend to keys [0, cols) */
                        const int rows = T - r0 < RB ? T - r0 : RB, cols = r0 + rows;
                        const float *Pr = P + (size_t)r0 * T;
                        /* dP = dO v^T for this row block, then dS in place */
                        tl_sgemm(false, true, rows, cols, hd, 1.0f, dob + (size_t)r0 * qs, qs, vb, ks, 0.0f, dS,
                                 cols);
                        for (int i = 0; i < rows; i++)
                            softmax_grad_row(dS + (size_t)i * cols, Pr + (size_t)i * T, r0 + i, cols, scale);
                        /* dq = dS k;  dk[0, cols) += dS^T q;  dv[0, cols) += P^T dO */
                        tl_sgemm(false, false, rows, hd, cols, 1.0f, dS, cols, kb, ks, 0.0f, dqb + (size_t)r0 * qs,
                                 qs);
                        tl_sgemm(true, false, cols, hd, rows, 1.0f, dS, cols, qb + (size_t)r0 * qs, qs, 1.0f, dkb, ks);
                        tl_sgemm(true, false, cols, hd, rows, 1.0f, Pr, T, dob + (size_t)r0 * qs, qs, 1.0f, dvb, ks);
                    }
                }
            }
        free(dS);
    }
}

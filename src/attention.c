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
#include "gemm_amx.h"
#include "safetensors.h" /* tl_f32_to_bf16 */
#include "vec.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RB = TL_ATTN_ROWS }; /* row block */

/* Softmax of row t over columns [0, t], zeros after. */
static void causal_softmax_row(float *p, int t, int T) {
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
    for (int i = 0; i < rows; i++) causal_softmax_row(P + (size_t)i * ldp, pos0 + i * step, ldp);
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

/* Both products take the form C = A B^T with A row-major bf16 and B in the
 * tiles' pair layout (tl_amx_matmul_bt), so no result is transposed:
 *   scores  S = Q K^T: A = the block's queries, B = the keys (packed once per
 *           layer and KV head, as tl_amx_pack packs activations);
 *   output  O = P V = P (V^T)^T: A = the probabilities, B = V^T (pairs of
 *           positions), built once per layer and KV head.
 * Scratch: the packed keys and values per KV head (for max_ctx rounded up to
 * 32 positions), then per thread the scores [RB][Tm], the queries and the
 * probabilities as bf16 and the block's output. */
typedef struct {
    size_t kp, kp_head, vp, vp_head, threads; /* offsets, bytes per KV head */
    size_t thread, scores, qb, pb, ob;        /* bytes per thread; offsets inside it */
    size_t total;
    int Tm;
} amx_layout;

static size_t up64(size_t b) { return (b + 63) & ~(size_t)63; }

static amx_layout amx_scratch_layout(int max_ctx, int KV, int hd, int nthreads) {
    amx_layout l;
    l.Tm = (max_ctx + 31) & ~31;
    l.kp = 0;
    l.kp_head = up64(tl_amx_pack_bytes(l.Tm, hd));
    l.vp = (size_t)KV * l.kp_head;
    l.vp_head = up64(2 * (size_t)l.Tm * (size_t)((hd + 31) & ~31));
    l.threads = l.vp + (size_t)KV * l.vp_head;
    l.scores = 0;
    l.qb = up64(sizeof(float) * RB * (size_t)l.Tm);
    l.pb = l.qb + up64(2 * RB * (size_t)hd);
    l.ob = l.pb + up64(2 * RB * (size_t)l.Tm);
    l.thread = l.ob + up64(sizeof(float) * RB * (size_t)hd);
    l.total = l.threads + (size_t)nthreads * l.thread;
    return l;
}

size_t tl_attention_amx_scratch_bytes(int max_ctx, int KV, int hd, int nthreads) {
    return amx_scratch_layout(max_ctx, KV, hd, nthreads).total;
}

int tl_attention_forward_cached_amx(float *out, void *scratch, int max_ctx, const float *q, const float *kc,
                                    const float *vc, int p0, int n, int H, int KV, int hd, int nthreads) {
    if (hd % 32) return -1;
    const amx_layout l = amx_scratch_layout(max_ctx, KV, hd, nthreads);
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd, T = p0 + n, Tp = (T + 31) & ~31, Tm = l.Tm;
    uint8_t *base = scratch;
    const int blocks = (n + RB - 1) / RB, work = H * blocks;
#pragma omp parallel num_threads(nthreads)
    {
        /* keys packed as activations; values as V^T in pairs of positions:
         * dword (d, t/2) of 16-row block d/16 holds V[t][d], V[t+1][d] */
#pragma omp for schedule(static)
        for (int g = 0; g < KV; g++) {
            tl_amx_pack(kc + (size_t)g * hd, (size_t)ks, T, hd, 1, base + l.kp + (size_t)g * l.kp_head);
            uint16_t *vp = (uint16_t *)(base + l.vp + (size_t)g * l.vp_head);
            for (int t = 0; t < Tp; t++)
                for (int d = 0; d < hd; d++)
                    vp[(((size_t)(d / 16) * (size_t)(Tm / 2) + (size_t)(t / 2)) * 16 + (size_t)(d % 16)) * 2 +
                       (size_t)(t % 2)] = t < T ? tl_f32_to_bf16(vc[(size_t)t * ks + (size_t)g * hd + d]) : 0;
        }
        uint8_t *mine = base + l.threads + (size_t)omp_get_thread_num() * l.thread;
        float *S = (float *)(mine + l.scores), *O = (float *)(mine + l.ob);
        uint16_t *Qb = (uint16_t *)(mine + l.qb), *Pb = (uint16_t *)(mine + l.pb);
#pragma omp for schedule(dynamic, 1)
        for (int wi = 0; wi < work; wi++) {
            const int h = wi % H, g = h / group, r0 = wi / H * RB, rows = n - r0 < RB ? n - r0 : RB;
            const int M = (rows + 31) & ~31, pos0 = p0 + r0, cp = (pos0 + rows + 31) & ~31; /* keys seen, rounded up */
            for (int i = 0; i < rows; i++)
                tl_amx_to_bf16(q + (size_t)(r0 + i) * qs + (size_t)h * hd, (size_t)hd, Qb + (size_t)i * hd);
            memset(Qb + (size_t)rows * hd, 0, 2 * (size_t)(M - rows) * hd); /* padding rows: scores 0 */
            tl_amx_matmul_bt(Qb, (size_t)hd, base + l.kp + (size_t)g * l.kp_head, (size_t)hd * 32, M, cp, hd, S,
                             (size_t)cp);
            for (int i = 0; i < rows; i++) {
                float *row = S + (size_t)i * cp;
                tl_vec_scale(row, (size_t)(pos0 + i + 1), scale);
                causal_softmax_row(row, pos0 + i, cp);
            }
            tl_amx_to_bf16(S, (size_t)M * cp, Pb);
            tl_amx_matmul_bt(Pb, (size_t)cp, base + l.vp + (size_t)g * l.vp_head, (size_t)Tm * 32, M, hd, cp, O,
                             (size_t)hd);
            for (int i = 0; i < rows; i++)
                memcpy(out + (size_t)(r0 + i) * qs + (size_t)h * hd, O + (size_t)i * hd, sizeof(float) * (size_t)hd);
        }
    }
    return 0;
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
                        for (int i = 0; i < rows; i++) {
                            float *d = dS + (size_t)i * cols;
                            const float *p = Pr + (size_t)i * T;
                            const int t = r0 + i;
                            float rowsum = 0.0f;
                            for (int s = 0; s <= t; s++) rowsum += p[s] * d[s];
                            for (int s = 0; s <= t; s++) d[s] = p[s] * (d[s] - rowsum) * scale;
                            for (int s = t + 1; s < cols; s++) d[s] = 0.0f;
                        }
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

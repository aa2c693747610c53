/* attention_amx.c - the prompt pass's attention with bf16 products on AMX tiles
 * (the `amx` kernel of the inference engine); the fp32 reference is
 * tl_attention_forward_cached in attention.c. */
#include "attention_amx.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "dtype.h"
#include "gemm_amx.h"
#include "vec.h"

enum { RB = TL_ATTN_ROWS }; /* row block */

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
                tl_attention_softmax_row(row, pos0 + i, cp);
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


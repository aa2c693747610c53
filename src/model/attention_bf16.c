/* attention_bf16.c - attention with bf16 products (see attention_bf16.h).
 *
 * The products run batched over (batch, KV head): with the heads laid out
 * head-major, [B][H][T][hd], the `group` query heads sharing KV head g are one
 * [group*T, hd] matrix, so each product is one call of tl_gemm_bf16_batch over
 * B*KV matrices (oneDNN's bf16 matmul: AMX-BF16 or AVX512-BF16 by ISA).  The
 * products cover the whole T x T square: the masked half costs bf16 FLOPs, cheaper
 * than the many small causal products of the fp32 path; the softmax writes zeros
 * there, and the backward zeroes the masked scores' gradients.
 *
 * Forward:  S = q k^T / sqrt(d) (fp32), P = softmax(S) (fp32, kept), O = bf16(P) v.
 * Backward: dP = dO v^T, dS = P * (dP - rowsum(P * dP)) / sqrt(d) (fp32),
 *           dq = bf16(dS) k, dk = bf16(dS)^T q, dv = bf16(P)^T dO. */
#include "attention_bf16.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "ops.h"
#include "gemm.h"

static size_t up64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* Token-major x [B*T, nh*hd] -> head-major bf16 [B][nh][T][hd]; with rope, each
 * head rotated for position t first (tl_rope_forward's arithmetic, in L1). */
static void pack(uint16_t *dst, const float *x, int B, int T, int nh, int hd, const tl_rope *rope) {
    const int rows = B * T, half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int b = r / T, t = r % T;
        float rot[hd];
        for (int h = 0; h < nh; h++) {
            const float *xh = x + (size_t)r * nh * hd + (size_t)h * hd;
            if (rope) {
                tl_rope_head(rot, xh, rope->cos + (size_t)t * half, rope->sin + (size_t)t * half, hd, 1.0f);
                xh = rot;
            }
            tl_round_bf16_here(xh, (size_t)hd, dst + (((size_t)b * nh + h) * T + t) * hd);
        }
    }
}

/* Head-major fp32 [B][nh][T][hd] -> token-major [B*T, nh*hd] into y (NULL: not
 * written) and its bf16 copy yb (NULL: none), each row rounded while in cache;
 * with rope, each head rotated back for position t (tl_rope_backward's arithmetic). */
static void unpack(float *y, uint16_t *yb, const float *src, int B, int T, int nh, int hd, const tl_rope *rope) {
    const int rows = B * T, half = hd / 2, w = nh * hd;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int b = r / T, t = r % T;
        float row[w];
        float *yr = y ? y + (size_t)r * w : row;
        for (int h = 0; h < nh; h++) {
            const float *sh = src + (((size_t)b * nh + h) * T + t) * hd;
            if (rope)
                tl_rope_head(yr + (size_t)h * hd, sh, rope->cos + (size_t)t * half, rope->sin + (size_t)t * half,
                             hd, -1.0f);
            else
                memcpy(yr + (size_t)h * hd, sh, sizeof(float) * (size_t)hd);
        }
        if (yb) tl_round_bf16_here(yr, (size_t)w, yb + (size_t)r * w);
    }
}

typedef struct {
    uint16_t *qh, *kh, *vh, *doh, *pb, *dsb;
    float *dp, *oh, *dkh, *dvh;
} parts;

/* Carves the scratch: the forward uses qh kh vh pb oh, the backward all but oh
 * (dq goes through oh's space). */
static size_t carve(parts *p, char *base, int B, int T, int H, int KV, int hd) {
    const size_t nq = (size_t)B * H * T * hd, nk = (size_t)B * KV * T * hd, np = (size_t)B * H * T * T;
    size_t off = 0;
#define TAKE(field, type, n)                                       \
    do {                                                           \
        if (p) p->field = base ? (type *)(base + off) : NULL;      \
        off += up64(sizeof(type) * (n));                           \
    } while (0)
    TAKE(qh, uint16_t, nq);
    TAKE(kh, uint16_t, nk);
    TAKE(vh, uint16_t, nk);
    TAKE(doh, uint16_t, nq);
    TAKE(pb, uint16_t, np);
    TAKE(dsb, uint16_t, np);
    TAKE(dp, float, np);
    TAKE(oh, float, nq);
    TAKE(dkh, float, nk);
    TAKE(dvh, float, nk);
#undef TAKE
    return off;
}

size_t tl_attention_bf16_scratch(int B, int T, int H, int KV, int hd) { return carve(NULL, NULL, B, T, H, KV, hd); }

size_t tl_attention_bf16_kept(int B, int T, int H, int KV, int hd) {
    return (size_t)B * T * hd * ((size_t)H + 2 * (size_t)KV) + (size_t)B * H * T * T;
}

/* The kept operands in place of the scratch's qh kh vh pb: [q][k][v][P]. */
static void use_kept(parts *s, uint16_t *kept, int B, int T, int H, int KV, int hd) {
    s->qh = kept;
    s->kh = s->qh + (size_t)B * H * T * hd;
    s->vh = s->kh + (size_t)B * KV * T * hd;
    s->pb = s->vh + (size_t)B * KV * T * hd;
}

void tl_attention_forward_bf16(float *out, uint16_t *out_bf16, float *probs, const float *q, const float *k,
                               const float *v, int B, int T, int H, int KV, int hd, const tl_rope *rope,
                               void *scratch, uint16_t *kept) {
    parts s;
    carve(&s, scratch, B, T, H, KV, hd);
    if (kept) use_kept(&s, kept, B, T, H, KV, hd);
    const int group = H / KV, units = B * KV, gT = group * T;
    const size_t sq = (size_t)gT * hd, sk = (size_t)T * hd, sp = (size_t)gT * T;
    pack(s.qh, q, B, T, H, hd, rope);
    pack(s.kh, k, B, T, KV, hd, rope);
    pack(s.vh, v, B, T, KV, hd, NULL);
    tl_gemm_bf16_batch(units, false, true, gT, T, hd, 1.0f / sqrtf((float)hd), s.qh, hd, sq, s.kh, hd, sk, 0.0f,
                       probs, T, sp);
    const int rows = B * H * T;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *p = probs + (size_t)r * T;
        tl_attention_softmax_row(p, r % T, T);
        tl_round_bf16_here(p, (size_t)T, s.pb + (size_t)r * T);
    }
    tl_gemm_bf16_batch(units, false, false, gT, hd, T, 1.0f, s.pb, T, sp, s.vh, hd, sk, 0.0f, s.oh, hd, sq);
    unpack(out, out_bf16, s.oh, B, T, H, hd, NULL);
}

void tl_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                                const float *q, const float *k, const float *v, int B, int T, int H, int KV, int hd,
                                const tl_rope *rope, void *scratch, const uint16_t *kept, uint16_t *dq_bf16,
                                uint16_t *dk_bf16, uint16_t *dv_bf16) {
    parts s;
    carve(&s, scratch, B, T, H, KV, hd);
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, units = B * KV, gT = group * T;
    const size_t sq = (size_t)gT * hd, sk = (size_t)T * hd, sp = (size_t)gT * T;
    if (kept) { /* read only: the forward's operands */
        use_kept(&s, (uint16_t *)kept, B, T, H, KV, hd);
    } else {
        pack(s.qh, q, B, T, H, hd, rope);
        pack(s.kh, k, B, T, KV, hd, rope);
        pack(s.vh, v, B, T, KV, hd, NULL);
    }
    pack(s.doh, dout, B, T, H, hd, NULL);
    /* dP = dO v^T, then dS row by row in fp32 (as the fp32 path), rounded */
    tl_gemm_bf16_batch(units, false, true, gT, T, hd, 1.0f, s.doh, hd, sq, s.vh, hd, sk, 0.0f, s.dp, T, sp);
    const int rows = B * H * T;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int t = r % T;
        float *d = s.dp + (size_t)r * T;
        const float *p = probs + (size_t)r * T;
        float rowsum = 0.0f;
        for (int c = 0; c <= t; c++) rowsum += p[c] * d[c];
        for (int c = 0; c <= t; c++) d[c] = p[c] * (d[c] - rowsum) * scale;
        for (int c = t + 1; c < T; c++) d[c] = 0.0f;
        tl_round_bf16_here(d, (size_t)T, s.dsb + (size_t)r * T);
        if (!kept) tl_round_bf16_here(p, (size_t)T, s.pb + (size_t)r * T);
    }
    /* dq = dS k;  dk = dS^T q;  dv = P^T dO  (the group's heads summed inside the product) */
    tl_gemm_bf16_batch(units, false, false, gT, hd, T, 1.0f, s.dsb, T, sp, s.kh, hd, sk, 0.0f, s.oh, hd, sq);
    tl_gemm_bf16_batch(units, true, false, T, hd, gT, 1.0f, s.dsb, T, sp, s.qh, hd, sq, 0.0f, s.dkh, hd, sk);
    tl_gemm_bf16_batch(units, true, false, T, hd, gT, 1.0f, s.pb, T, sp, s.doh, hd, sq, 0.0f, s.dvh, hd, sk);
    unpack(dq, dq_bf16, s.oh, B, T, H, hd, rope);
    unpack(dk, dk_bf16, s.dkh, B, T, KV, hd, rope);
    unpack(dv, dv_bf16, s.dvh, B, T, KV, hd, NULL);
}

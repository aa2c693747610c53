/* attention.c - causal GQA attention, forward and backward, in plain loops.
 *
 * Forward:  S = q k^T / sqrt(d), P = softmax(S + causal mask), O = P v.
 * Backward: dP = dO v^T, dS = P * (dP - rowsum(P * dP)),
 *           dq = dS k / sqrt(d), dk = dS^T q / sqrt(d), dv = P^T dO.
 * The backward pass is parallel over (batch, KV head) so the query heads that
 * share a KV head add into dk/dv in a fixed order: deterministic for any thread count. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void tl_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KV, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                float *p = probs + (((size_t)b * H + h) * T + t) * T;
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float *ks_ = k + ((size_t)b * T + s) * ks + (size_t)g * hd;
                    p[s] = dot(qt, ks_, hd) * scale;
                    if (p[s] > mx) mx = p[s];
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) {
                    p[s] = expf(p[s] - mx);
                    sum += p[s];
                }
                float inv = 1.0f / sum;
                float *o = out + ((size_t)b * T + t) * qs + (size_t)h * hd;
                memset(o, 0, sizeof(float) * (size_t)hd);
                for (int s = 0; s <= t; s++) {
                    p[s] *= inv;
                    axpy(o, p[s], v + ((size_t)b * T + s) * ks + (size_t)g * hd, hd);
                }
                for (int s = t + 1; s < T; s++) p[s] = 0.0f;
            }
        }
}

void tl_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                           int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / KV, qs = H * hd, ks = KV * hd;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < KV; g++) {
            for (int t = 0; t < T; t++) {
                memset(dk + ((size_t)b * T + t) * ks + (size_t)g * hd, 0, sizeof(float) * (size_t)hd);
                memset(dv + ((size_t)b * T + t) * ks + (size_t)g * hd, 0, sizeof(float) * (size_t)hd);
            }
            float *dp = malloc(sizeof(float) * (size_t)(T > 0 ? T : 1));
            if (!dp) abort(); /* a few KB per task: only fails when the process is out of memory */
            for (int h = g * group; h < (g + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const float *p = probs + (((size_t)b * H + h) * T + t) * T;
                    const float *dot_ = dout + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    float *dqt = dq + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    float rowsum = 0.0f;
                    for (int s = 0; s <= t; s++) {
                        dp[s] = dot(dot_, v + ((size_t)b * T + s) * ks + (size_t)g * hd, hd);
                        rowsum += p[s] * dp[s];
                    }
                    memset(dqt, 0, sizeof(float) * (size_t)hd);
                    for (int s = 0; s <= t; s++) {
                        const size_t kv_off = ((size_t)b * T + s) * ks + (size_t)g * hd;
                        float ds = p[s] * (dp[s] - rowsum) * scale;
                        axpy(dqt, ds, k + kv_off, hd);
                        axpy(dk + kv_off, ds, qt, hd);
                        axpy(dv + kv_off, p[s], dot_, hd);
                    }
                }
            free(dp);
        }
}

/* infer_batch.c - the batched decode step (infer_batch.h). */
#include "infer_batch.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TL_X86 1
#endif

#include "attention.h"
#include "matvec_quant.h"
#include "ops.h"

int tl_infer_batch_init(tl_infer_batch *b, const tl_infer_model *m, int max_b, int max_rows, tl_error *err) {
    memset(b, 0, sizeof *b);
    if (max_b < 1 || max_rows < max_b)
        return tl_fail(err, "a batch holds at least one sequence and a row per sequence (got %d, %d rows)", max_b,
                       max_rows);
    const tl_config *c = &m->cfg;
    const size_t R = (size_t)max_rows, D = (size_t)c->dim, F = (size_t)c->hidden_dim,
                 QD = (size_t)c->n_heads * (size_t)tl_config_head_dim(c),
                 KD = (size_t)c->n_kv_heads * (size_t)tl_config_head_dim(c), V = (size_t)c->vocab_size;
    size_t widest = D > F ? D : F;
    if (QD > widest) widest = QD;
    b->m = m;
    b->max_b = max_b;
    b->max_rows = max_rows;
    b->n_rowbuf = omp_get_max_threads();
    b->x = tl_alloc(sizeof(float) * R * D);
    b->h = tl_alloc(sizeof(float) * R * D);
    b->q = tl_alloc(sizeof(float) * R * QD);
    b->k = tl_alloc(sizeof(float) * R * KD);
    b->v = tl_alloc(sizeof(float) * R * KD);
    b->ao = tl_alloc(sizeof(float) * R * QD);
    b->g = tl_alloc(sizeof(float) * R * F);
    b->u = tl_alloc(sizeof(float) * R * F);
    b->last = tl_alloc(sizeof(float) * (size_t)max_b * D);
    b->rowbuf = tl_alloc(sizeof(float) * (size_t)b->n_rowbuf * widest);
    b->logits = tl_alloc(sizeof(float) * (size_t)max_b * V);
    b->acc = tl_alloc(sizeof(float) * R * D);
    if (!b->x || !b->h || !b->q || !b->k || !b->v || !b->ao || !b->g || !b->u || !b->last || !b->rowbuf || !b->logits ||
        !b->acc) {
        tl_infer_batch_free(b);
        return tl_fail(err, "out of memory for a %d-row decode batch", max_rows);
    }
    return 0;
}

void tl_infer_batch_free(tl_infer_batch *b) {
    float *bufs[] = {b->x, b->h, b->q, b->k, b->v, b->ao, b->g, b->u, b->last, b->rowbuf, b->logits, b->acc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tl_free(bufs[i]);
    memset(b, 0, sizeof *b);
}

/* The fp32 kernel family for the model's kernel (the bf16 and AMX families
 * differ from AVX-512 only in how they treat bf16 inputs, which are converted
 * here before the dot). */
static tl_kernel dot_kernel(tl_kernel k) {
    return k == TL_KERNEL_AVX512BF16 || k == TL_KERNEL_AMX || k == TL_KERNEL_AMX_EXACT ? TL_KERNEL_AVX512 : k;
}

#define BLOCK_ROWS 16 /* rows per scheduled task: small enough to balance, large enough to amortise */

/* out[b] = dot(w, x[b]) over n floats for 4 inputs at once: each load of w
 * serves four products.  Each product's own operations (two accumulators of
 * lanes, the same reduction, the same tail) do not depend on the other three,
 * so a result is the same bit for bit whatever inputs share the call - the
 * batch invariance the header promises. */
#ifdef TL_X86
__attribute__((target("avx512f"))) static void dot4_avx512(const float *w, const float *const *x, int n, float *out) {
    __m512 a[4][2];
    for (int b = 0; b < 4; b++) a[b][0] = a[b][1] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = _mm512_loadu_ps(w + i), w1 = _mm512_loadu_ps(w + i + 16);
        for (int b = 0; b < 4; b++) {
            a[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x[b] + i), a[b][0]);
            a[b][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x[b] + i + 16), a[b][1]);
        }
    }
    for (; i + 16 <= n; i += 16) {
        __m512 w0 = _mm512_loadu_ps(w + i);
        for (int b = 0; b < 4; b++) a[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x[b] + i), a[b][0]);
    }
    for (int b = 0; b < 4; b++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(a[b][0], a[b][1]));
        for (int j = i; j < n; j++) s += w[j] * x[b][j];
        out[b] = s;
    }
}

__attribute__((target("avx2,fma"))) static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void dot4_avx2(const float *w, const float *const *x, int n, float *out) {
    __m256 a[4][2];
    for (int b = 0; b < 4; b++) a[b][0] = a[b][1] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
        for (int b = 0; b < 4; b++) {
            a[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[b] + i), a[b][0]);
            a[b][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[b] + i + 8), a[b][1]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 w0 = _mm256_loadu_ps(w + i);
        for (int b = 0; b < 4; b++) a[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[b] + i), a[b][0]);
    }
    for (int b = 0; b < 4; b++) {
        float s = hsum8(_mm256_add_ps(a[b][0], a[b][1]));
        for (int j = i; j < n; j++) s += w[j] * x[b][j];
        out[b] = s;
    }
}
#endif

static void dot4_scalar(const float *w, const float *const *x, int n, float *out) {
    for (int b = 0; b < 4; b++) out[b] = tl_dot_f32(TL_KERNEL_SCALAR, w, x[b], n);
}

typedef void (*dot4_fn)(const float *w, const float *const *x, int n, float *out);

static dot4_fn pick_dot4(tl_kernel k) {
#ifdef TL_X86
    if (k == TL_KERNEL_AVX512) return dot4_avx512;
    if (k == TL_KERNEL_AVX2) return dot4_avx2;
#endif
    return dot4_scalar;
}

/* y_j[n, W_j->rows] (=|+=) x[n, cols] W_j^T for count <= 8 matrices sharing x.
 * GGUF blocks with int8 activations and float weights take the decode kernels
 * for every input; blocks kept with fp32 activations are dequantized a row at
 * a time, in one parallel region, and each row dotted with all n inputs while
 * it is in cache.  accumulate: one matrix of at most D rows (wo, down). */
static void products(tl_infer_batch *b, const tl_wmat *const *W, float *const *y, int count, const float *x, int n,
                     int accumulate) {
    const int in = W[0]->cols;
    const dot4_fn dot4 = pick_dot4(dot_kernel(b->m->kernel));
    int first[9];
    first[0] = 0;
    const tl_wmat *dw[8];
    float *dy[8];
    int nd = 0;
    for (int j = 0; j < count; j++) {
        /* int8-activation weights go through the prompt pass's product, which
         * gives each input exactly what the single-sequence decode gives it */
        const tl_wmat *M = W[j];
        int done = M->quant && !M->f32_act && tl_q8_type(M->quant) &&
                   tl_q8_gemm(b->m->kernel, M, x, n, y[j], accumulate ? 1.0f : 0.0f) == 0;
        /* float weights: the single-sequence decode kernels, each stretch of
         * weights read once for all n inputs (tl_wmat_matvec_rows), which also
         * gives each input exactly what decode gives it; on a 1.1B-shaped BF16
         * model 1.5-1.7x the widen-and-dot4 loop below at 1-16 sequences */
        if (!done && !M->quant) {
            dw[nd] = M;
            dy[nd++] = accumulate ? b->acc : y[j];
            done = 1;
        }
        first[j + 1] = first[j] + (done ? 0 : (M->rows + BLOCK_ROWS - 1) / BLOCK_ROWS);
    }
    if (nd) {
        tl_wmat_matvec_rows(b->m->kernel, dw, dy, nd, x, n);
        if (accumulate)
            for (size_t i = 0; i < (size_t)n * (size_t)dw[0]->rows; i++) y[0][i] += b->acc[i];
    }
    const int nblocks = first[count];
    size_t widest = (size_t)b->m->cfg.dim > (size_t)b->m->cfg.hidden_dim ? (size_t)b->m->cfg.dim
                                                                          : (size_t)b->m->cfg.hidden_dim;
    const size_t qd = (size_t)b->m->cfg.n_heads * (size_t)tl_config_head_dim(&b->m->cfg);
    if (qd > widest) widest = qd;
#pragma omp parallel for schedule(dynamic, 1) num_threads(b->n_rowbuf)
    for (int blk = 0; blk < nblocks; blk++) {
        int j = 0;
        while (blk >= first[j + 1]) j++;
        const tl_wmat *M = W[j];
        const int r0 = (blk - first[j]) * BLOCK_ROWS, r1 = r0 + BLOCK_ROWS < M->rows ? r0 + BLOCK_ROWS : M->rows;
        float *row = b->rowbuf + (size_t)omp_get_thread_num() * widest;
        for (int r = r0; r < r1; r++) {
            const float *w = row;
            tl_wmat_row_f32(M, r, row); /* (only GGUF blocks come here: float weights went above) */
            for (int i = 0; i < n; i += 4) {
                /* a group of fewer than 4 repeats its first input (results dropped) */
                const float *xs[4];
                float d[4];
                for (int q = 0; q < 4; q++) xs[q] = x + (size_t)(i + q < n ? i + q : i) * in;
                dot4(w, xs, in, d);
                for (int q = 0; q < 4 && i + q < n; q++) {
                    float *o = y[j] + (size_t)(i + q) * M->rows + r;
                    *o = accumulate ? *o + d[q] : d[q];
                }
            }
        }
    }
}

void tl_infer_batch_linear(tl_infer_batch *b, const tl_wmat *W, const float *x, int n, float *out) {
    products(b, &W, &out, 1, x, n, 0);
}

int tl_infer_step_batch(tl_infer_batch *b, tl_infer_state *const *s, const int *ids, const int *counts, int n,
                        tl_error *err) {
    const tl_infer_model *m = b->m;
    const tl_config *c = &m->cfg;
    if (n < 1 || n > b->max_b) return tl_fail(err, "batch of %d sequences (this one holds 1..%d)", n, b->max_b);
    int rows = 0;
    for (int i = 0; i < n; i++) {
        if (s[i]->m != m) return tl_fail(err, "sequence %d of the batch belongs to another model", i);
        if (counts[i] < 1) return tl_fail(err, "sequence %d of the batch has %d tokens", i, counts[i]);
        if (counts[i] > s[i]->max_ctx - s[i]->pos)
            return tl_fail(err, "context full: sequence %d holds %d tokens + %d new, its context %d", i, s[i]->pos,
                           counts[i], s[i]->max_ctx);
        for (int j = 0; j < i; j++)
            if (s[j] == s[i]) return tl_fail(err, "sequences %d and %d of the batch are one session", j, i);
        if (counts[i] > b->max_rows - rows)
            return tl_fail(err, "the batch holds %d tokens per step; more were given", b->max_rows);
        for (int t = 0; t < counts[i]; t++)
            if (ids[rows + t] < 0 || ids[rows + t] >= c->vocab_size)
                return tl_fail(err, "token id %d of sequence %d is outside the vocabulary [0, %d)", ids[rows + t], i,
                               c->vocab_size);
        rows += counts[i];
    }
    const int D = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, hd = tl_config_head_dim(c),
              QD = H * hd, KD = KV * hd, V = c->vocab_size;
    for (int r = 0; r < rows; r++) tl_wmat_row_f32(&m->embed, ids[r], b->x + (size_t)r * D);
    for (int l = 0; l < c->n_layers; l++) {
        const tl_infer_layer *w = &m->layers[l];
        tl_rmsnorm_forward(b->h, NULL, b->x, w->attn_norm, rows, D, c->norm_eps);
        const tl_wmat *qkv[3] = {&w->wq, &w->wk, &w->wv};
        float *qkv_out[3] = {b->q, b->k, b->v};
        products(b, qkv, qkv_out, 3, b->h, rows, 0);
        tl_wmat_unpermute_out(&w->wq, b->q, rows);
        tl_wmat_unpermute_out(&w->wk, b->k, rows);
        /* attention per sequence: with at least as many sequences as threads, one
         * parallel region over the sequences (each run on one thread, on its own
         * scratch) instead of one small region per sequence; the same
         * arithmetic per row either way */
        const int across = n >= b->n_rowbuf && b->n_rowbuf > 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(b->n_rowbuf) if (across)
        for (int i = 0; i < n; i++) {
            tl_infer_state *si = s[i];
            int r0 = 0;
            for (int j = 0; j < i; j++) r0 += counts[j];
            const int p = si->pos, cn = counts[i];
            float *q = b->q + (size_t)r0 * QD, *k = b->k + (size_t)r0 * KD;
            float *kc = si->k_cache + (size_t)l * si->max_ctx * KD, *vc = si->v_cache + (size_t)l * si->max_ctx * KD;
            tl_rope_forward(q, m->rope_cos, m->rope_sin, cn, cn, p, H, hd);
            tl_rope_forward(k, m->rope_cos, m->rope_sin, cn, cn, p, KV, hd);
            memcpy(kc + (size_t)p * KD, k, sizeof(float) * (size_t)cn * KD);
            memcpy(vc + (size_t)p * KD, b->v + (size_t)r0 * KD, sizeof(float) * (size_t)cn * KD);
            tl_attention_forward_cached(b->ao + (size_t)r0 * QD, si->scores, q, kc, vc, p, cn, H, KV, hd,
                                        across ? 1 : si->n_scores);
        }
        products(b, (const tl_wmat *const[]){&w->wo}, (float *const[]){b->x}, 1, b->ao, rows, 1);
        tl_rmsnorm_forward(b->h, NULL, b->x, w->mlp_norm, rows, D, c->norm_eps);
        const tl_wmat *gu[2] = {&w->w_gate, &w->w_up};
        float *gu_out[2] = {b->g, b->u};
        products(b, gu, gu_out, 2, b->h, rows, 0);
        tl_swiglu_forward(b->g, b->g, b->u, (size_t)rows * F);
        products(b, (const tl_wmat *const[]){&w->w_down}, (float *const[]){b->x}, 1, b->g, rows, 1);
    }
    /* only each sequence's last row goes on to the logits */
    for (int i = 0, r0 = 0; i < n; r0 += counts[i], i++)
        memcpy(b->last + (size_t)i * D, b->x + (size_t)(r0 + counts[i] - 1) * D, sizeof(float) * (size_t)D);
    tl_rmsnorm_forward(b->h, NULL, b->last, m->final_norm, n, D, c->norm_eps);
    products(b, (const tl_wmat *const[]){&m->lm_head}, (float *const[]){b->logits}, 1, b->h, n, 0);
    for (int i = 0; i < n; i++) {
        memcpy(s[i]->logits, b->logits + (size_t)i * V, sizeof(float) * (size_t)V);
        s[i]->pos += counts[i];
    }
    return 0;
}

int tl_infer_decode_batch(tl_infer_batch *b, tl_infer_state *const *s, const int *ids, int n, tl_error *err) {
    int ones[256];
    if (n < 1 || n > b->max_b || n > 256) return tl_fail(err, "batch of %d sequences (this one holds 1..%d)", n, b->max_b);
    for (int i = 0; i < n; i++) ones[i] = 1;
    return tl_infer_step_batch(b, s, ids, ones, n, err);
}

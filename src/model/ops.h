/* ops.h - the per-token building blocks of a Llama layer, forward and backward.
 *
 * Shapes are row-major; N = batch * seq rows of activations.  Backward functions
 * accumulate (+=) into parameter gradients and, where noted, into input
 * gradients, so residual branches add up without extra copies.  Every reduction
 * runs in a fixed order, so results do not depend on the thread count. */
#ifndef TL_OPS_H
#define TL_OPS_H

#include <stddef.h>

/* Thread control for both OpenMP loops and the BLAS library. */
void tl_set_threads(int n);
int tl_get_threads(void);

/* y[N,out] (=|+=) x[N,in] W[out,in]^T   (nn.Linear without bias; accumulate selects +=) */
void tl_linear_forward(float *y, const float *x, const float *W, int N, int in, int out, int accumulate);
/* dW[out,in] += dy^T x;  dx[N,in] (=|+=) dy W  (accumulate_dx selects +=); dx may be NULL. */
void tl_linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int N,
                        int in, int out, int accumulate_dx);

/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * w.  rstd[N] saves 1/sqrt(...) for backward
 * (NULL when not needed, as in inference). */
/* One row of RMSNorm: yr = w * xr / rms(xr); returns 1/rms. Shared by the
 * fp32 and bf16 passes so both give the same bits. */
float tl_rmsnorm_row(float *yr, const float *xr, const float *w, int D, float eps);
void tl_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int D, float eps);
/* dx[N,D] += dL/dx;  dw[D] += dL/dw. */
void tl_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int N, int D);

/* Rotary tables for positions [0, max_pos): cos/sin[pos * half + i] with
 * inv_freq_i = theta^(-2i/head_dim), as HF's LlamaRotaryEmbedding computes them in fp32. */
void tl_rope_tables(float *cos_t, float *sin_t, int max_pos, int head_dim, float theta);
/* In-place rotate-half RoPE on x[N, n_heads*head_dim]; row n is at position pos0 + n % T. */
void tl_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int pos0,
                     int n_heads, int head_dim);
/* In-place transpose rotation (the gradient of tl_rope_forward). */
void tl_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int pos0,
                      int n_heads, int head_dim);
/* One head of either (sign 1: forward, -1: backward) from src into dst (may be
 * src), c and s the position's table rows: the arithmetic of the two above
 * (inline: each caller's loop vectorises knowing whether dst is src). */
static inline void tl_rope_head(float *dst, const float *src, const float *c, const float *s, int head_dim,
                                float sign) {
    const int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float a = src[i], b = src[i + half], si = sign * s[i];
        /* rotate_half(v) = (-v2, v1): out = v*cos + rotate_half(v)*sin */
        dst[i] = a * c[i] - b * si;
        dst[i + half] = b * c[i] + a * si;
    }
}

/* SwiGLU: h = silu(g) * u. */
void tl_swiglu_forward(float *h, const float *g, const float *u, size_t n);
/* Given dh, writes dg and du (may alias g/u buffers of another layer, not dh). */
void tl_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);

/* One row's softmax denominator: z becomes exp(z - max z), *loss = log(sum) -
 * (z_y - max z); returns the sum.  Shared by the fp32 and bf16 gradient passes. */
double tl_cross_entropy_row_exp(float *z, int V, int y, float *loss);

/* Softmax cross-entropy over rows of logits[rows, V] (in place): on return
 * logits hold dL/dlogits * scale and loss[r] = -log softmax(row)[target[r]].
 * Rows with target < 0 are ignored (loss 0, zero gradient). */
void tl_cross_entropy_rows(float *logits, float *loss, const int *targets, int rows, int V,
                           float scale);

/* out[n,:] = table[ids[n],:] */
void tl_embedding_forward(float *out, const float *table, const int *ids, int N, int D);
/* dtable[ids[n],:] += dout[n,:] (deterministic: column-parallel, rows in order) */
void tl_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D);

#endif

/* cuda_kernels.h - C interface to the CUDA kernels and the cuBLASLt matrix
 * products, one launcher per kernel.  The engine (cuda_engine.h) is built from
 * these; tests/cuda/test_cuda.c checks each against the CPU reference.
 *
 * Pointers are device pointers unless named h_*.  `dt` is the storage type of
 * activations (TL_CUDA_F32 or TL_CUDA_BF16); residual streams, norms' rstd,
 * logits, losses and all parameter gradients stay fp32.  Launchers enqueue on
 * `stream` (NULL: the default stream), check the launch, and return 0 or -1
 * with err filled.  Nothing here prints. */
#ifndef TL_CUDA_KERNELS_H
#define TL_CUDA_KERNELS_H

#include <stddef.h>

/* the project's C headers get C linkage when a .cu file includes them */
#ifdef __cplusplus
extern "C" {
#endif
#include "common.h"


enum { TL_CUDA_F32 = 0, TL_CUDA_BF16 = 1 };
typedef struct CUstream_st *tl_cuda_stream; /* == cudaStream_t */

/* Largest head dimension the attention kernels handle. */
#define TL_CUDA_MAX_HEAD_DIM 64

size_t tl_cuda_dtype_size(int dt);

/* Number of visible GPUs; -1 with a clear message ("no CUDA GPU: ...") when none. */
int tl_cuda_device_count(int *count, tl_error *err);
/* Name, memory and compute capability of device `dev` as one line. */
int tl_cuda_device_describe(int dev, char *buf, size_t len, tl_error *err);

void *tl_cuda_malloc(size_t bytes, tl_error *err);
void tl_cuda_free(void *p);
int tl_cuda_sync(tl_error *err);
int tl_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, tl_error *err);
int tl_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, tl_error *err);
/* n floats from the host into dt storage (bf16: round to nearest even) and back. */
int tl_cuda_upload(void *dst, const float *h_src, size_t n, int dt, tl_error *err);
int tl_cuda_download(float *h_dst, const void *src, size_t n, int dt, tl_error *err);
/* Fills n elements of dt storage with NaN (poisoning outputs before a test). */
int tl_cuda_fill_nan(void *p, size_t n, int dt, tl_cuda_stream s, tl_error *err);
/* Rounds a float to the nearest bf16 value (host side, for building test inputs). */
float tl_cuda_round_bf16(float x);

/* ---- matrix products (row-major, nn.Linear convention; cuBLASLt, fp32 accumulate) */
typedef struct tl_cuda_gemm tl_cuda_gemm;
tl_cuda_gemm *tl_cuda_gemm_create(tl_error *err);
void tl_cuda_gemm_free(tl_cuda_gemm *g);
/* y[N,out] = x[N,in] W[out,in]^T + beta*y.  x, W in `ab`; y in `yt`. */
int tl_cuda_linear_forward(tl_cuda_gemm *g, int ab, int yt, void *y, const void *x, const void *W, int N,
                           int in, int out, float beta, tl_cuda_stream s, tl_error *err);
/* dx[N,in] = dy[N,out] W[out,in] + beta*dx.  dy, W in `ab`; dx in `xt`. */
int tl_cuda_linear_backward_dx(tl_cuda_gemm *g, int ab, int xt, void *dx, const void *dy, const void *W,
                               int N, int in, int out, float beta, tl_cuda_stream s, tl_error *err);
/* dW[out,in] = dy^T x + beta*dW (fp32 dW; beta 1 accumulates).  dy, x in `ab`. */
int tl_cuda_linear_backward_dw(tl_cuda_gemm *g, int ab, float *dW, const void *dy, const void *x, int N,
                               int in, int out, float beta, tl_cuda_stream s, tl_error *err);

/* ---- fused kernels */
/* out[n,:] = table[ids[n],:] (fp32) */
int tl_cuda_embedding_forward(float *out, const float *table, const int *ids, int N, int D,
                              tl_cuda_stream s, tl_error *err);
/* dtable[ids[n],:] += dout[n,:] (fp32 atomics: order of equal ids is not fixed) */
int tl_cuda_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D,
                               tl_cuda_stream s, tl_error *err);
/* xs = x_in + branch (branch may be NULL: xs = x_in, x_out unused and may be NULL);
 * x_out = xs when given; y = RMSNorm(xs) * w in dt; rstd[n] saved. */
int tl_cuda_add_rmsnorm_forward(int dt, float *x_out, void *y, float *rstd, const float *x_in,
                                const float *branch, const float *w, int N, int D, float eps,
                                tl_cuda_stream s, tl_error *err);
/* Floats of scratch tl_cuda_rmsnorm_backward needs for (N, D). */
size_t tl_cuda_rmsnorm_scratch_floats(int N, int D);
/* dx (=|+=) dL/dx (accumulate selects +=); dx_lp (may be NULL) gets a dt copy of
 * the resulting dx; dw += dL/dw (deterministic two-pass column sums). */
int tl_cuda_rmsnorm_backward(int dt, float *dx, void *dx_lp, float *dw, float *scratch, const float *dy,
                             const float *x, const float *w, const float *rstd, int N, int D,
                             int accumulate, tl_cuda_stream s, tl_error *err);
/* In-place rotate-half RoPE on the first n_heads*hd columns of rows of x (row
 * stride in elements); row n is at position n % T.  backward: the transpose. */
int tl_cuda_rope(int dt, void *x, int row_stride, const float *cos_t, const float *sin_t, int N, int T,
                 int n_heads, int hd, int backward, tl_cuda_stream s, tl_error *err);
/* gu[N, 2F] = [gate | up]; act[N,F] = silu(gate) * up */
int tl_cuda_swiglu_forward(int dt, void *act, const void *gu, int N, int F, tl_cuda_stream s, tl_error *err);
/* dgu[N, 2F] = [dgate | dup] from dact[N,F] */
int tl_cuda_swiglu_backward(int dt, void *dgu, const void *dact, const void *gu, int N, int F,
                            tl_cuda_stream s, tl_error *err);
/* Per row of fp32 logits[rows,V]: loss[r] = -log softmax[target], dlogits (dt;
 * may alias logits when dt is fp32) = (softmax - onehot) * scale; rows with
 * target < 0 give loss 0 and zero gradient.  Online max/sum: one read to
 * normalise, one to write the gradient. */
int tl_cuda_cross_entropy(int dt, void *dlogits, float *loss, const float *logits, const int *targets,
                          int rows, int V, float scale, tl_cuda_stream s, tl_error *err);
/* Causal GQA flash attention.  q rows b*T+t with stride q_stride (elements),
 * head h at column h*hd; k, v likewise with kv_stride, KV heads; query head h
 * reads KV head h / (H/KV).  out [B*T, H*hd] (stride H*hd); lse [B*H*T] saves
 * the log2-sum-exp of the scaled scores for the backward pass.  hd <= 64. */
int tl_cuda_attention_forward(int dt, void *out, float *lse, const void *q, const void *k, const void *v,
                              int q_stride, int kv_stride, int B, int T, int H, int KV, int hd,
                              tl_cuda_stream s, tl_error *err);
/* dq (stride q_stride), dk, dv (stride kv_stride) are overwritten; delta is
 * scratch of B*H*T floats.  dK/dV sum over the query heads of a group inside one
 * thread, in order: deterministic, no repeated K/V. */
int tl_cuda_attention_backward(int dt, void *dq, void *dk, void *dv, float *delta, const void *dout,
                               const void *out, const float *lse, const void *q, const void *k,
                               const void *v, int q_stride, int kv_stride, int B, int T, int H, int KV,
                               int hd, tl_cuda_stream s, tl_error *err);
/* Doubles of scratch for tl_cuda_grad_norm. */
size_t tl_cuda_grad_norm_scratch(void);
/* *h_norm = sqrt(sum g^2) over n floats (fixed-order double reduction). */
int tl_cuda_grad_norm(double *h_norm, double *scratch, const float *g, size_t n, tl_cuda_stream s,
                      tl_error *err);
/* AdamW exactly as tl_adamw_update (torch order), with the gradient first
 * multiplied by clip_coef when clip_coef < 1 (as tl_clip_grads).  p_lp (may be
 * NULL) receives a bf16 copy of the updated parameters. */
int tl_cuda_adamw(float *p, void *p_lp, const float *g, float *m, float *v, size_t n, float clip_coef,
                  double lr, double beta1, double beta2, double eps, double weight_decay, long step,
                  tl_cuda_stream s, tl_error *err);
/* dst (bf16) = src (fp32), n elements */
int tl_cuda_cast_bf16(void *dst, const float *src, size_t n, tl_cuda_stream s, tl_error *err);

#ifdef __cplusplus
}
#endif
#endif

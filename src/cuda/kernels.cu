// kernels.cu - the fused element-wise and row kernels of the CUDA backend:
// embedding, RMSNorm (+ residual add), RoPE, SwiGLU, cross-entropy, gradient
// norm and AdamW, plus device memory helpers.  Each has a C launcher declared in
// cuda_kernels.h.  Math follows src/model/ops.c and src/train/optimizer.c line by line so
// the CPU path stays the oracle.
#include <stdio.h>
#include <string.h>

#include "common.cuh"

extern "C" size_t tl_cuda_dtype_size(int dt) { return dt == TL_CUDA_BF16 ? 2 : 4; }

extern "C" int tl_cuda_device_count(int *count, tl_error *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        *count = 0;
        return tl_fail(err, "no CUDA GPU: %s",
                       e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found no device");
    }
    *count = n;
    return 0;
}

extern "C" int tl_cuda_device_describe(int dev, char *buf, size_t len, tl_error *err) {
    cudaDeviceProp p;
    TL_CU(cudaGetDeviceProperties(&p, dev), err);
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    snprintf(buf, len, "%s, sm_%d%d, %d SMs, %.1f GiB, runtime %d, driver %d", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), rt, drv);
    return 0;
}

extern "C" void *tl_cuda_malloc(size_t bytes, tl_error *err) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        tl_fail(err, "cudaMalloc of %.1f MB failed: %s", (double)bytes / 1e6, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void tl_cuda_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" int tl_cuda_sync(tl_error *err) {
    TL_CU(cudaDeviceSynchronize(), err);
    return 0;
}

extern "C" int tl_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, tl_error *err) {
    TL_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), err);
    return 0;
}

extern "C" int tl_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, tl_error *err) {
    TL_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), err);
    return 0;
}

extern "C" float tl_cuda_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

extern "C" int tl_cuda_upload(void *dst, const float *h_src, size_t n, int dt, tl_error *err) {
    if (dt == TL_CUDA_F32) return tl_cuda_memcpy_h2d(dst, h_src, n * 4, err);
    bf16 *tmp = (bf16 *)malloc(n * sizeof(bf16) + 1);
    if (!tmp) return tl_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) tmp[i] = __float2bfloat16_rn(h_src[i]);
    int rc = tl_cuda_memcpy_h2d(dst, tmp, n * sizeof(bf16), err);
    free(tmp);
    return rc;
}

extern "C" int tl_cuda_download(float *h_dst, const void *src, size_t n, int dt, tl_error *err) {
    if (dt == TL_CUDA_F32) return tl_cuda_memcpy_d2h(h_dst, src, n * 4, err);
    bf16 *tmp = (bf16 *)malloc(n * sizeof(bf16) + 1);
    if (!tmp) return tl_fail(err, "out of memory");
    int rc = tl_cuda_memcpy_d2h(tmp, src, n * sizeof(bf16), err);
    for (size_t i = 0; !rc && i < n; i++) h_dst[i] = __bfloat162float(tmp[i]);
    free(tmp);
    return rc;
}

template <typename T> __global__ void k_fill_nan(T *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        st(p + i, __int_as_float(0x7fc00000));
}

extern "C" int tl_cuda_fill_nan(void *p, size_t n, int dt, tl_cuda_stream s, tl_error *err) {
    if (dt == TL_CUDA_BF16) k_fill_nan<<<tl_blocks(n, 256), 256, 0, s>>>((bf16 *)p, n);
    else k_fill_nan<<<tl_blocks(n, 256), 256, 0, s>>>((float *)p, n);
    TL_LAUNCHED(err, "fill_nan");
    return 0;
}

__global__ void k_cast_bf16(bf16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

extern "C" int tl_cuda_cast_bf16(void *dst, const float *src, size_t n, tl_cuda_stream s, tl_error *err) {
    k_cast_bf16<<<tl_blocks(n, 256), 256, 0, s>>>((bf16 *)dst, src, n);
    TL_LAUNCHED(err, "cast_bf16");
    return 0;
}

// ------------------------------------------------------------------ embedding

__global__ void k_embedding_fwd(float *out, const float *table, const int *ids, int N, int D) {
    size_t total = (size_t)N * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / D, j = i % D;
        out[i] = table[(size_t)ids[n] * D + j];
    }
}

__global__ void k_embedding_bwd(float *dtable, const float *dout, const int *ids, int N, int D) {
    size_t total = (size_t)N * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / D, j = i % D;
        atomicAdd(dtable + (size_t)ids[n] * D + j, dout[i]);
    }
}

extern "C" int tl_cuda_embedding_forward(float *out, const float *table, const int *ids, int N, int D,
                                         tl_cuda_stream s, tl_error *err) {
    k_embedding_fwd<<<tl_blocks((size_t)N * D, 256), 256, 0, s>>>(out, table, ids, N, D);
    TL_LAUNCHED(err, "embedding_forward");
    return 0;
}

extern "C" int tl_cuda_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D,
                                          tl_cuda_stream s, tl_error *err) {
    k_embedding_bwd<<<tl_blocks((size_t)N * D, 256), 256, 0, s>>>(dtable, dout, ids, N, D);
    TL_LAUNCHED(err, "embedding_backward");
    return 0;
}

// -------------------------------------------------------------------- RMSNorm

// One block per row.  xs = x_in + branch is formed once, written to x_out, and
// normalised: y = w * (xs * rstd), rstd = 1/sqrt(mean(xs^2) + eps).
template <typename T>
__global__ void k_add_rmsnorm(float *x_out, T *y, float *rstd, const float *x_in, const float *branch,
                              const float *w, int D, float eps) {
    __shared__ float sh[32];
    const size_t row = blockIdx.x;
    const float *xr = x_in + row * D;
    const float *br = branch ? branch + row * D : nullptr;
    float *xo = x_out ? x_out + row * D : nullptr;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (br) v += br[i];
        if (xo) xo[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (br) v += br[i];
        st(y + row * D + i, w[i] * (v * r));
    }
}

extern "C" int tl_cuda_add_rmsnorm_forward(int dt, float *x_out, void *y, float *rstd, const float *x_in,
                                           const float *branch, const float *w, int N, int D, float eps,
                                           tl_cuda_stream s, tl_error *err) {
    int threads = D >= 1024 ? 512 : D >= 256 ? 256 : 64;
    if (dt == TL_CUDA_BF16)
        k_add_rmsnorm<<<N, threads, 0, s>>>(x_out, (bf16 *)y, rstd, x_in, branch, w, D, eps);
    else
        k_add_rmsnorm<<<N, threads, 0, s>>>(x_out, (float *)y, rstd, x_in, branch, w, D, eps);
    TL_LAUNCHED(err, "add_rmsnorm_forward");
    return 0;
}

enum { NORM_BWD_ROWS = 32, NORM_BWD_THREADS = 256, NORM_BWD_MAXC = 32 }; // D <= 8192

extern "C" size_t tl_cuda_rmsnorm_scratch_floats(int N, int D) {
    return (size_t)((N + NORM_BWD_ROWS - 1) / NORM_BWD_ROWS) * (size_t)D;
}

// Block b handles rows [b*R, b*R+R) in order.  Per row:
//   dx_i (+)= r w_i dy_i - x_i r^3/D sum_j w_j dy_j x_j
// and the block keeps its share of dw_i = sum_n dy_ni x_ni r_n in registers,
// written to scratch[b, :] and summed over blocks in order by k_col_sum.
template <typename T>
__global__ void __launch_bounds__(NORM_BWD_THREADS) k_rmsnorm_bwd(float *dx, T *dx_lp, float *scratch,
                                                                   const float *dy, const float *x,
                                                                   const float *w, const float *rstd, int N,
                                                                   int D, int accumulate) {
    __shared__ float sh[32];
    float acc[NORM_BWD_MAXC];
#pragma unroll
    for (int c = 0; c < NORM_BWD_MAXC; c++) acc[c] = 0.0f;
    int r0 = blockIdx.x * NORM_BWD_ROWS, r1 = min(N, r0 + NORM_BWD_ROWS);
    for (int n = r0; n < r1; n++) {
        const float *xr = x + (size_t)n * D, *dyr = dy + (size_t)n * D;
        float r = rstd[n], dot = 0.0f;
#pragma unroll
        for (int c = 0; c < NORM_BWD_MAXC; c++) {
            int j = threadIdx.x + c * NORM_BWD_THREADS;
            if (j < D) dot += w[j] * dyr[j] * xr[j];
        }
        dot = block_sum(dot, sh);
        float cc = dot * r * r * r / (float)D;
        float *dxr = dx + (size_t)n * D;
#pragma unroll
        for (int c = 0; c < NORM_BWD_MAXC; c++) {
            int j = threadIdx.x + c * NORM_BWD_THREADS;
            if (j < D) {
                float g = r * w[j] * dyr[j] - cc * xr[j];
                float v = accumulate ? dxr[j] + g : g;
                dxr[j] = v;
                if (dx_lp) st(dx_lp + (size_t)n * D + j, v);
                acc[c] += dyr[j] * xr[j] * r;
            }
        }
    }
#pragma unroll
    for (int c = 0; c < NORM_BWD_MAXC; c++) {
        int j = threadIdx.x + c * NORM_BWD_THREADS;
        if (j < D) scratch[(size_t)blockIdx.x * D + j] = acc[c];
    }
}

__global__ void k_col_sum(float *dw, const float *scratch, int G, int D) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    float s = 0.0f;
    for (int b = 0; b < G; b++) s += scratch[(size_t)b * D + j];
    dw[j] += s;
}

extern "C" int tl_cuda_rmsnorm_backward(int dt, float *dx, void *dx_lp, float *dw, float *scratch,
                                        const float *dy, const float *x, const float *w, const float *rstd,
                                        int N, int D, int accumulate, tl_cuda_stream s, tl_error *err) {
    if (D > NORM_BWD_THREADS * NORM_BWD_MAXC)
        return tl_fail(err, "rmsnorm_backward: dim %d exceeds %d", D, NORM_BWD_THREADS * NORM_BWD_MAXC);
    int G = (N + NORM_BWD_ROWS - 1) / NORM_BWD_ROWS;
    if (dt == TL_CUDA_BF16)
        k_rmsnorm_bwd<<<G, NORM_BWD_THREADS, 0, s>>>(dx, (bf16 *)dx_lp, scratch, dy, x, w, rstd, N, D, accumulate);
    else
        k_rmsnorm_bwd<<<G, NORM_BWD_THREADS, 0, s>>>(dx, (float *)dx_lp, scratch, dy, x, w, rstd, N, D, accumulate);
    TL_LAUNCHED(err, "rmsnorm_backward");
    k_col_sum<<<(D + 255) / 256, 256, 0, s>>>(dw, scratch, G, D);
    TL_LAUNCHED(err, "rmsnorm_backward col_sum");
    return 0;
}

// ----------------------------------------------------------------------- RoPE

// One thread per (row, head, i < hd/2) pair: (a, b) = (v_i, v_{i+half})
// -> (a c - b s, b c + a s), with s negated for the backward pass.
template <typename T>
__global__ void k_rope(T *x, int row_stride, const float *cos_t, const float *sin_t, int N, int T_,
                       int n_heads, int hd, float sign) {
    int half = hd / 2;
    size_t total = (size_t)N * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t t2 = idx / half;
        int h = (int)(t2 % n_heads);
        size_t n = t2 / n_heads;
        int pos = (int)(n % T_);
        float c = cos_t[(size_t)pos * half + i], sn = sign * sin_t[(size_t)pos * half + i];
        T *v = x + n * row_stride + (size_t)h * hd;
        float a = ld(v + i), b = ld(v + i + half);
        st(v + i, a * c - b * sn);
        st(v + i + half, b * c + a * sn);
    }
}

extern "C" int tl_cuda_rope(int dt, void *x, int row_stride, const float *cos_t, const float *sin_t, int N,
                            int T, int n_heads, int hd, int backward, tl_cuda_stream s, tl_error *err) {
    size_t total = (size_t)N * n_heads * (hd / 2);
    float sign = backward ? -1.0f : 1.0f;
    if (dt == TL_CUDA_BF16)
        k_rope<<<tl_blocks(total, 256), 256, 0, s>>>((bf16 *)x, row_stride, cos_t, sin_t, N, T, n_heads, hd, sign);
    else
        k_rope<<<tl_blocks(total, 256), 256, 0, s>>>((float *)x, row_stride, cos_t, sin_t, N, T, n_heads, hd, sign);
    TL_LAUNCHED(err, "rope");
    return 0;
}

// --------------------------------------------------------------------- SwiGLU

static __device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T> __global__ void k_swiglu_fwd(T *act, const T *gu, int N, int F) {
    size_t total = (size_t)N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / F, j = i % F;
        float g = ld(gu + n * 2 * F + j), u = ld(gu + n * 2 * F + F + j);
        st(act + i, g * sigmoid_(g) * u);
    }
}

template <typename T> __global__ void k_swiglu_bwd(T *dgu, const T *dact, const T *gu, int N, int F) {
    size_t total = (size_t)N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / F, j = i % F;
        float g = ld(gu + n * 2 * F + j), u = ld(gu + n * 2 * F + F + j), d = ld(dact + i);
        float sg = sigmoid_(g);
        st(dgu + n * 2 * F + F + j, d * g * sg);
        st(dgu + n * 2 * F + j, d * u * sg * (1.0f + g * (1.0f - sg)));
    }
}

extern "C" int tl_cuda_swiglu_forward(int dt, void *act, const void *gu, int N, int F, tl_cuda_stream s,
                                      tl_error *err) {
    size_t total = (size_t)N * F;
    if (dt == TL_CUDA_BF16) k_swiglu_fwd<<<tl_blocks(total, 256), 256, 0, s>>>((bf16 *)act, (const bf16 *)gu, N, F);
    else k_swiglu_fwd<<<tl_blocks(total, 256), 256, 0, s>>>((float *)act, (const float *)gu, N, F);
    TL_LAUNCHED(err, "swiglu_forward");
    return 0;
}

extern "C" int tl_cuda_swiglu_backward(int dt, void *dgu, const void *dact, const void *gu, int N, int F,
                                       tl_cuda_stream s, tl_error *err) {
    size_t total = (size_t)N * F;
    if (dt == TL_CUDA_BF16)
        k_swiglu_bwd<<<tl_blocks(total, 256), 256, 0, s>>>((bf16 *)dgu, (const bf16 *)dact, (const bf16 *)gu, N, F);
    else
        k_swiglu_bwd<<<tl_blocks(total, 256), 256, 0, s>>>((float *)dgu, (const float *)dact, (const float *)gu, N, F);
    TL_LAUNCHED(err, "swiglu_backward");
    return 0;
}

// -------------------------------------------------------------- cross-entropy

// One block per row.  Pass 1: each thread keeps an online (max, sum of exp)
// over its strided elements; the block merges them.  Pass 2 writes the gradient.
template <typename T>
__global__ void k_cross_entropy(T *dlogits, float *loss, const float *logits, const int *targets, int V,
                                float scale) {
    __shared__ float shm[32], shs[32];
    const size_t row = blockIdx.x;
    const float *z = logits + row * V;
    T *dz = dlogits + row * V;
    int y = targets[row];
    if (y < 0) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) st(dz + i, 0.0f);
        if (threadIdx.x == 0) loss[row] = 0.0f;
        return;
    }
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = z[i];
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    // merge (m, s) across the warp, then across warps
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.0f : s * expf(m - mm)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - mm));
        m = mm;
    }
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        shm[wid] = m;
        shs[wid] = s;
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nw; w++) M = fmaxf(M, shm[w]);
    float S = 0.0f;
    for (int w = 0; w < nw; w++)
        if (shm[w] != -INFINITY) S += shs[w] * expf(shm[w] - M);
    if (threadIdx.x == 0) loss[row] = logf(S) - (z[y] - M);
    float inv = scale / S;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float p = expf(z[i] - M) * inv;
        st(dz + i, i == y ? p - scale : p);
    }
}

extern "C" int tl_cuda_cross_entropy(int dt, void *dlogits, float *loss, const float *logits,
                                     const int *targets, int rows, int V, float scale, tl_cuda_stream s,
                                     tl_error *err) {
    if (dt == TL_CUDA_BF16)
        k_cross_entropy<<<rows, 512, 0, s>>>((bf16 *)dlogits, loss, logits, targets, V, scale);
    else
        k_cross_entropy<<<rows, 512, 0, s>>>((float *)dlogits, loss, logits, targets, V, scale);
    TL_LAUNCHED(err, "cross_entropy");
    return 0;
}

// ------------------------------------------------------ grad norm and AdamW

enum { GN_BLOCKS = 1024, GN_THREADS = 256 };

extern "C" size_t tl_cuda_grad_norm_scratch(void) { return GN_BLOCKS + 1; }

// Block b sums squares of its contiguous slice in double (fixed thread
// assignment, fixed tree): partial[b].  Then one block sums partials in order.
__global__ void k_sumsq_partial(double *partial, const float *g, size_t n) {
    __shared__ double sh[GN_THREADS / 32];
    size_t per = (n + gridDim.x - 1) / gridDim.x;
    size_t lo = blockIdx.x * per, hi = lo + per < n ? lo + per : n;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)g[i] * (double)g[i];
    s = warp_sum_d(s);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < GN_THREADS / 32; w++) t += sh[w];
        partial[blockIdx.x] = t;
    }
}

__global__ void k_sum_partials(double *out, const double *partial, int G) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double t = 0.0;
        for (int b = 0; b < G; b++) t += partial[b];
        *out = t;
    }
}

extern "C" int tl_cuda_grad_norm(double *h_norm, double *scratch, const float *g, size_t n, tl_cuda_stream s,
                                 tl_error *err) {
    k_sumsq_partial<<<GN_BLOCKS, GN_THREADS, 0, s>>>(scratch, g, n);
    TL_LAUNCHED(err, "grad_norm");
    k_sum_partials<<<1, 32, 0, s>>>(scratch + GN_BLOCKS, scratch, GN_BLOCKS);
    TL_LAUNCHED(err, "grad_norm sum");
    double sq = 0.0;
    TL_CU(cudaMemcpyAsync(&sq, scratch + GN_BLOCKS, sizeof sq, cudaMemcpyDeviceToHost, s), err);
    TL_CU(cudaStreamSynchronize(s), err);
    *h_norm = sqrt(sq);
    return 0;
}

__global__ void k_adamw(float *p, bf16 *p_lp, const float *g, float *m, float *v, size_t n, float clip_coef,
                        float decay, float b1, float b2, float step_size, float bc2_sqrt, float eps) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        if (clip_coef < 1.0f) gi *= clip_coef;
        float pi = p[i] * decay;
        float mi = m[i], vi = v[i];
        mi += (1.0f - b1) * (gi - mi);
        vi = vi * b2 + (1.0f - b2) * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi -= step_size * (mi / denom);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (p_lp) p_lp[i] = __float2bfloat16_rn(pi);
    }
}

extern "C" int tl_cuda_adamw(float *p, void *p_lp, const float *g, float *m, float *v, size_t n,
                             float clip_coef, double lr, double beta1, double beta2, double eps,
                             double weight_decay, long step, tl_cuda_stream s, tl_error *err) {
    const double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    k_adamw<<<tl_blocks(n, 256, 132 * 16), 256, 0, s>>>(p, (bf16 *)p_lp, g, m, v, n, clip_coef,
                                                       (float)(1.0 - lr * weight_decay), (float)beta1,
                                                       (float)beta2, (float)(lr / bc1), (float)sqrt(bc2),
                                                       (float)eps);
    TL_LAUNCHED(err, "adamw");
    return 0;
}

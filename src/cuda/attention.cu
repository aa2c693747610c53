// attention.cu - causal grouped-query flash attention, forward and backward.
//
// Scores are scaled by (1/sqrt(hd)) * log2(e) once when q is loaded, so every
// exponential is exp2; lse holds log2(sum exp2) per query row.  Nothing of
// size T x T is ever stored.  Query head h reads KV head h / (H/KV) directly
// from the shared K/V rows: repeated K/V is never materialised.
//
// Version 1 is a straightforward fp32-FMA design, chosen to be obviously right:
//   forward: one thread per query row, K/V tiles in shared memory (broadcast
//            reads), online softmax over sub-tiles of 16 keys;
//   dq:      the same structure, recomputing p from lse;
//   dk, dv:  one thread per key row with dk/dv in registers, looping over every
//            query head of the KV group and every later query tile: the group
//            sum happens inside one thread, in order (deterministic, no atomics);
//   delta_i = rowsum(dO_i * O_i) in a small pre-pass.
// A tensor-core (mma/wgmma) version is the planned next step (docs/cuda.md).
#include "common.cuh"

#define HD TL_CUDA_MAX_HEAD_DIM
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

enum { FWD_BR = 64, FWD_BC = 64, SUB = 16, DKV_BC = 64, DKV_BQ = 32 };

// Loads row `src` (hd elements) into dst[HD], zero beyond hd, times mul.
template <typename T>
static __device__ __forceinline__ void load_row(float (&dst)[HD], const T *src, int hd, float mul) {
#pragma unroll
    for (int d = 0; d < HD; d++) dst[d] = d < hd ? ld(src + d) * mul : 0.0f;
}

// Cooperative load of rows [r0, r0+R) of a strided head slice into sh[R][HD]
// (zeros past T or hd), times mul.
template <typename T, int R, int LDS>
static __device__ __forceinline__ void load_tile(float (*sh)[LDS], const T *base, int stride, int r0, int T_,
                                                 int hd, float mul) {
    for (int e = threadIdx.x; e < R * HD; e += blockDim.x) {
        int r = e / HD, d = e % HD, t = r0 + r;
        sh[r][d] = (t < T_ && d < hd) ? ld(base + (size_t)t * stride + d) * mul : 0.0f;
    }
}

template <typename T>
__global__ void __launch_bounds__(FWD_BR) k_attn_fwd(T *out, float *lse, const T *q, const T *k, const T *v,
                                                     int q_stride, int kv_stride, int T_, int H, int KV,
                                                     int hd, float qmul) {
    __shared__ __align__(16) float Ks[FWD_BC][HD];
    __shared__ __align__(16) float Vs[FWD_BC][HD];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    const int qt = gridDim.x - 1 - blockIdx.x; // longest (last) query tiles start first
    const int i = qt * FWD_BR + threadIdx.x;
    const bool active = i < T_;
    const T *kb = k + (size_t)b * T_ * kv_stride + (size_t)g * hd;
    const T *vb = v + (size_t)b * T_ * kv_stride + (size_t)g * hd;
    float qr[HD], o[HD];
    if (active) load_row(qr, q + ((size_t)b * T_ + i) * q_stride + (size_t)h * hd, hd, qmul);
    else
#pragma unroll
        for (int d = 0; d < HD; d++) qr[d] = 0.0f;
#pragma unroll
    for (int d = 0; d < HD; d++) o[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int kend = min(T_, (qt + 1) * FWD_BR);
    for (int kt = 0; kt < kend; kt += FWD_BC) {
        __syncthreads();
        load_tile<T, FWD_BC, HD>(Ks, kb, kv_stride, kt, T_, hd, 1.0f);
        load_tile<T, FWD_BC, HD>(Vs, vb, kv_stride, kt, T_, hd, 1.0f);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < FWD_BC; jj += SUB) {
            if (kt + jj > i) break;
            float s[SUB];
            float mx = m;
#pragma unroll
            for (int u = 0; u < SUB; u++) {
                float acc = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; d++) acc += qr[d] * Ks[jj + u][d];
                s[u] = (kt + jj + u <= i) ? acc : -INFINITY;
                mx = fmaxf(mx, s[u]);
            }
            float corr = exp2f(m - mx); // m == -inf on the first sub-tile: 0
            l *= corr;
#pragma unroll
            for (int d = 0; d < HD; d++) o[d] *= corr;
#pragma unroll
            for (int u = 0; u < SUB; u++) {
                float p = exp2f(s[u] - mx);
                l += p;
#pragma unroll
                for (int d = 0; d < HD; d++) o[d] += p * Vs[jj + u][d];
            }
            m = mx;
        }
    }
    if (!active) return;
    float inv = 1.0f / l;
    T *orow = out + ((size_t)b * T_ + i) * ((size_t)H * hd) + (size_t)h * hd;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) st(orow + d, o[d] * inv);
    lse[((size_t)b * H + h) * T_ + i] = m + log2f(l);
}

// delta[b,h,i] = sum_d dO[i,d] * O[i,d]; one warp per (row, head).
template <typename T>
__global__ void k_attn_delta(float *delta, const T *dout, const T *out, int B, int T_, int H, int hd) {
    size_t wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    size_t total = (size_t)B * T_ * H;
    if (wid >= total) return;
    int h = (int)(wid % H);
    size_t n = wid / H; // row b*T + t
    const T *a = dout + n * ((size_t)H * hd) + (size_t)h * hd, *o = out + n * ((size_t)H * hd) + (size_t)h * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += ld(a + d) * ld(o + d);
    s = warp_sum(s);
    if (lane == 0) {
        size_t b = n / T_, t = n % T_;
        delta[(b * H + h) * T_ + t] = s;
    }
}

// dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j, dp_ij = dO_i . v_j
template <typename T>
__global__ void __launch_bounds__(FWD_BR) k_attn_bwd_dq(T *dq, const T *dout, const float *lse,
                                                        const float *delta, const T *q, const T *k,
                                                        const T *v, int q_stride, int kv_stride, int T_,
                                                        int H, int KV, int hd, float qmul, float scale) {
    __shared__ __align__(16) float Ks[FWD_BC][HD];
    __shared__ __align__(16) float Vs[FWD_BC][HD];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int i = qt * FWD_BR + threadIdx.x;
    const bool active = i < T_;
    const T *kb = k + (size_t)b * T_ * kv_stride + (size_t)g * hd;
    const T *vb = v + (size_t)b * T_ * kv_stride + (size_t)g * hd;
    float qr[HD], dor[HD], acc[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        qr[d] = 0.0f;
        dor[d] = 0.0f;
        acc[d] = 0.0f;
    }
    float li = 0.0f, di = 0.0f;
    if (active) {
        load_row(qr, q + ((size_t)b * T_ + i) * q_stride + (size_t)h * hd, hd, qmul);
        load_row(dor, dout + ((size_t)b * T_ + i) * ((size_t)H * hd) + (size_t)h * hd, hd, 1.0f);
        li = lse[((size_t)b * H + h) * T_ + i];
        di = delta[((size_t)b * H + h) * T_ + i];
    }
    const int kend = min(T_, (qt + 1) * FWD_BR);
    for (int kt = 0; kt < kend; kt += FWD_BC) {
        __syncthreads();
        load_tile<T, FWD_BC, HD>(Ks, kb, kv_stride, kt, T_, hd, 1.0f);
        load_tile<T, FWD_BC, HD>(Vs, vb, kv_stride, kt, T_, hd, 1.0f);
        __syncthreads();
        if (!active) continue;
        int jmax = min(FWD_BC, i - kt + 1);
        for (int jj = 0; jj < jmax; jj++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < HD; d++) {
                s += qr[d] * Ks[jj][d];
                dp += dor[d] * Vs[jj][d];
            }
            float p = exp2f(s - li);
            float ds = p * (dp - di);
#pragma unroll
            for (int d = 0; d < HD; d++) acc[d] += ds * Ks[jj][d];
        }
    }
    if (!active) return;
    T *row = dq + ((size_t)b * T_ + i) * q_stride + (size_t)h * hd;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) st(row + d, acc[d] * scale);
}

// One thread per key row j of KV head g: dv_j = sum p_ij dO_i, dk_j = scale *
// sum ds_ij q_i over queries i >= j of every query head in the group.
template <typename T>
__global__ void __launch_bounds__(DKV_BC) k_attn_bwd_dkdv(T *dk, T *dv, const T *dout, const float *lse,
                                                          const float *delta, const T *q, const T *k,
                                                          const T *v, int q_stride, int kv_stride, int T_,
                                                          int H, int KV, int hd, float qmul) {
    __shared__ __align__(16) float Qs[DKV_BQ][HD];
    __shared__ __align__(16) float dOs[DKV_BQ][HD];
    __shared__ float Vown[DKV_BC][HD + 1]; // own rows, padded: conflict-free column reads
    __shared__ float ls[DKV_BQ], ds_[DKV_BQ];
    const int bg = blockIdx.y, b = bg / KV, g = bg % KV, group = H / KV;
    const int kt = (gridDim.x - 1 - blockIdx.x) * DKV_BC;
    const int j = kt + threadIdx.x;
    const bool active = j < T_;
    float kr[HD], dk_acc[HD], dv_acc[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        kr[d] = 0.0f;
        dk_acc[d] = 0.0f;
        dv_acc[d] = 0.0f;
    }
    if (active) {
        load_row(kr, k + ((size_t)b * T_ + j) * kv_stride + (size_t)g * hd, hd, 1.0f);
        const T *vr = v + ((size_t)b * T_ + j) * kv_stride + (size_t)g * hd;
        for (int d = 0; d < HD; d++) Vown[threadIdx.x][d] = d < hd ? ld(vr + d) : 0.0f;
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        const T *qb = q + (size_t)b * T_ * q_stride + (size_t)h * hd;
        const T *ob = dout + (size_t)b * T_ * ((size_t)H * hd) + (size_t)h * hd;
        for (int qt = kt; qt < T_; qt += DKV_BQ) {
            __syncthreads();
            load_tile<T, DKV_BQ, HD>(Qs, qb, q_stride, qt, T_, hd, qmul);
            load_tile<T, DKV_BQ, HD>(dOs, ob, H * hd, qt, T_, hd, 1.0f);
            for (int r = threadIdx.x; r < DKV_BQ; r += blockDim.x) {
                int t = qt + r;
                ls[r] = t < T_ ? lse[((size_t)b * H + h) * T_ + t] : 0.0f;
                ds_[r] = t < T_ ? delta[((size_t)b * H + h) * T_ + t] : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            int ii0 = max(0, j - qt), ii1 = min(DKV_BQ, T_ - qt);
            for (int ii = ii0; ii < ii1; ii++) {
                float s = 0.0f, dp = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    s += Qs[ii][d] * kr[d];
                    dp += dOs[ii][d] * Vown[threadIdx.x][d];
                }
                float p = exp2f(s - ls[ii]);
                float dsv = p * (dp - ds_[ii]);
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    dv_acc[d] += p * dOs[ii][d];
                    dk_acc[d] += dsv * Qs[ii][d];
                }
            }
        }
    }
    if (!active) return;
    // Qs holds q * scale * log2(e): dk = scale * sum ds q = ln(2) * sum ds Qs.
    T *dkr = dk + ((size_t)b * T_ + j) * kv_stride + (size_t)g * hd;
    T *dvr = dv + ((size_t)b * T_ + j) * kv_stride + (size_t)g * hd;
#pragma unroll
    for (int d = 0; d < HD; d++)
        if (d < hd) {
            st(dkr + d, dk_acc[d] * LN2);
            st(dvr + d, dv_acc[d]);
        }
}

static int check_shape(int B, int T, int H, int KV, int hd, tl_error *err) {
    if (hd > HD || hd <= 0) return tl_fail(err, "attention: head dim %d unsupported (1..%d)", hd, HD);
    if (KV <= 0 || H % KV) return tl_fail(err, "attention: %d heads not a multiple of %d KV heads", H, KV);
    if (B <= 0 || T <= 0) return tl_fail(err, "attention: empty batch");
    return 0;
}

template <typename T>
static int attn_fwd(T *out, float *lse, const T *q, const T *k, const T *v, int qs, int kvs, int B, int T_,
                    int H, int KV, int hd, cudaStream_t s, tl_error *err) {
    dim3 grid((T_ + FWD_BR - 1) / FWD_BR, B * H);
    float qmul = LOG2E / sqrtf((float)hd);
    k_attn_fwd<T><<<grid, FWD_BR, 0, s>>>(out, lse, q, k, v, qs, kvs, T_, H, KV, hd, qmul);
    TL_LAUNCHED(err, "attention_forward");
    return 0;
}

template <typename T>
static int attn_bwd(T *dq, T *dk, T *dv, float *delta, const T *dout, const T *out, const float *lse,
                    const T *q, const T *k, const T *v, int qs, int kvs, int B, int T_, int H, int KV, int hd,
                    cudaStream_t s, tl_error *err) {
    float scale = 1.0f / sqrtf((float)hd), qmul = LOG2E * scale;
    size_t warps = (size_t)B * T_ * H;
    k_attn_delta<T><<<tl_blocks(warps * 32, 256, 1u << 30), 256, 0, s>>>(delta, dout, out, B, T_, H, hd);
    TL_LAUNCHED(err, "attention_backward delta");
    dim3 gq((T_ + FWD_BR - 1) / FWD_BR, B * H);
    k_attn_bwd_dq<T><<<gq, FWD_BR, 0, s>>>(dq, dout, lse, delta, q, k, v, qs, kvs, T_, H, KV, hd, qmul, scale);
    TL_LAUNCHED(err, "attention_backward dq");
    dim3 gk((T_ + DKV_BC - 1) / DKV_BC, B * KV);
    k_attn_bwd_dkdv<T><<<gk, DKV_BC, 0, s>>>(dk, dv, dout, lse, delta, q, k, v, qs, kvs, T_, H, KV, hd, qmul);
    TL_LAUNCHED(err, "attention_backward dkdv");
    return 0;
}

extern "C" int tl_cuda_attention_forward(int dt, void *out, float *lse, const void *q, const void *k,
                                         const void *v, int q_stride, int kv_stride, int B, int T, int H,
                                         int KV, int hd, tl_cuda_stream s, tl_error *err) {
    if (check_shape(B, T, H, KV, hd, err)) return -1;
    if (dt == TL_CUDA_BF16)
        return attn_fwd((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, q_stride, kv_stride,
                        B, T, H, KV, hd, s, err);
    return attn_fwd((float *)out, lse, (const float *)q, (const float *)k, (const float *)v, q_stride, kv_stride,
                    B, T, H, KV, hd, s, err);
}

extern "C" int tl_cuda_attention_backward(int dt, void *dq, void *dk, void *dv, float *delta, const void *dout,
                                          const void *out, const float *lse, const void *q, const void *k,
                                          const void *v, int q_stride, int kv_stride, int B, int T, int H,
                                          int KV, int hd, tl_cuda_stream s, tl_error *err) {
    if (check_shape(B, T, H, KV, hd, err)) return -1;
    if (dt == TL_CUDA_BF16)
        return attn_bwd((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, delta, (const bf16 *)dout, (const bf16 *)out, lse,
                        (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, q_stride, kv_stride, B, T, H, KV, hd,
                        s, err);
    return attn_bwd((float *)dq, (float *)dk, (float *)dv, delta, (const float *)dout, (const float *)out, lse,
                    (const float *)q, (const float *)k, (const float *)v, q_stride, kv_stride, B, T, H, KV, hd, s,
                    err);
}

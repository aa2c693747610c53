// common.cuh - shared device helpers for the CUDA backend: error checks that
// fill tl_error, bf16/fp32 load-store, block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "cuda_kernels.h"

typedef __nv_bfloat16 bf16;

#define TL_CU(call, err)                                                                     \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return tl_fail((err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                           cudaGetErrorString(e_));                                          \
    } while (0)

// After a launch: a bad configuration shows up here, faults at the next sync.
#define TL_LAUNCHED(err, what)                                                               \
    do {                                                                                     \
        cudaError_t e_ = cudaGetLastError();                                                 \
        if (e_ != cudaSuccess) return tl_fail((err), "%s: launch failed: %s", what, cudaGetErrorString(e_)); \
    } while (0)

static __device__ __forceinline__ float ld(const float *p) { return *p; }
static __device__ __forceinline__ float ld(const bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void st(float *p, float x) { *p = x; }
static __device__ __forceinline__ void st(bf16 *p, float x) { *p = __float2bfloat16_rn(x); }

static __device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
static __device__ __forceinline__ double warp_sum_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
static __device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets
// the result.  `sh` holds 32 floats; the function syncs before reusing it.
static __device__ __forceinline__ float block_sum(float x, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) sh[wid] = x;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(r);
}

static inline unsigned tl_blocks(size_t n, unsigned threads, unsigned cap = 65535u * 16u) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < cap ? (b ? b : 1) : cap);
}

/* onednn_matmul.h - oneDNN's matmul primitive for row-major products whose
 * transposes are strides, the primitive of each recent shape kept.
 *
 * Shared by the fp32 products that run faster on it than on dnnl_sgemm and by
 * every bf16 product (oneDNN's C API has no bf16 GEMM call).  Building a
 * primitive descriptor walks oneDNN's implementation list (about a millisecond)
 * even when the primitive comes from oneDNN's own cache, so recent shapes are
 * kept with their memory objects (per thread count, which a primitive fixes);
 * the data pointers are set per call.  The
 * engine, stream and cache belong to the process, made on first use and
 * guarded by a lock, like the GEMM backend choice. */
#ifndef TL_ONEDNN_MATMUL_H
#define TL_ONEDNN_MATMUL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    bool bf16; /* A and B bf16 (else fp32); C is always fp32 */
    bool ta, tb;
    int M, N, K, lda, ldb, ldc;
    int batch; /* 1: a 2-D product; else 3-D, the operands sa, sb, sc elements apart */
    size_t sa, sb, sc;
    float alpha, beta; /* C = alpha op(A) op(B) + beta C */
} tl_matmul_shape;

/* 0 on success; -1 when oneDNN refuses the shape or is unavailable (C untouched). */
int tl_onednn_matmul(const tl_matmul_shape *s, const void *A, const void *B, float *C);

#endif

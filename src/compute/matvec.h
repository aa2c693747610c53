/* matvec.h - weight matrices in their file's dtype (or quantized blocks) and the
 * products the inference engine runs on them: multithreaded SIMD mat-vec kernels
 * chosen at run time for decode (src/compute/matvec.c, src/compute/matvec_quant.c) and the
 * batched product of the prompt pass (tiles converted to fp32 for tl_sgemm). */
#ifndef TL_MATVEC_H
#define TL_MATVEC_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* A weight matrix [rows, cols] (row-major, nn.Linear's [out, in]) inside a mapped file.
 * From a GGUF file (src/infer/infer_gguf.c) it may instead hold rows of quantized
 * blocks (quant: a TL_GGML_* block type; dtype is then TL_DT_I32, which no
 * float path takes), and the rows of q/k projections are in GGUF's order
 * (perm_heads > 0, see tl_wmat_unpermute_out). */
typedef struct {
    tl_dtype dtype; /* TL_DT_F32, TL_DT_BF16 or TL_DT_F16 (TL_DT_I32 when quant) */
    const void *data;
    int rows, cols;
    uint32_t quant; /* 0, or the ggml block type of the rows (matvec_quant.h) */
    int perm_heads; /* 0, or the heads whose rows are interleaved as llama.cpp's converter leaves them */
    int f32_act;    /* keep x in fp32 (exact, slower): quant instead of int8 blocks (matvec_quant.h); BF16
                     * instead of bf16 where generation would round it (tl_infer_prefer_bf16_rounding) */
    int packed;     /* quant only: rows interleaved 16 at a time for decode (tl_q8_pack), not in file order */
} tl_wmat;

/* Kernel families.  AUTO picks the best exact one the CPU supports
 * (AMX_EXACT > AVX512 > AVX2 > SCALAR; generation's default for BF16 weights is
 * tl_kernel_best_bf16).  AMX_EXACT runs the batched (prompt)
 * products of BF16 weights on AMX tiles with the activations split exactly into
 * three bf16 parts (src/compute/gemm_amx.c), and decodes as AVX512.  The bf16
 * ones round activations to bf16 for BF16 weights (other dtypes run as
 * AVX512), slightly less precise: AVX512BF16 uses the VDPBF16PS dot product in
 * decode and oneDNN's bf16 matmul in the prompt pass; AMX runs the prompt pass
 * on AMX tiles with one bf16 part (and its attention too), and decodes as
 * AVX512. */
typedef enum {
    TL_KERNEL_AUTO = 0,
    TL_KERNEL_SCALAR,
    TL_KERNEL_AVX2,
    TL_KERNEL_AVX512,
    TL_KERNEL_AVX512BF16,
    TL_KERNEL_AMX,
    TL_KERNEL_AMX_EXACT,
    TL_KERNEL_LAST = TL_KERNEL_AMX_EXACT,
} tl_kernel;

const char *tl_kernel_name(tl_kernel k);
/* Parses "auto", "scalar", "avx2", "avx512", "avx512bf16", "amx", "amx-exact";
 * -1 if unknown. */
int tl_kernel_parse(const char *name);
/* Whether this CPU can run kernel k (AUTO and SCALAR: always). */
int tl_kernel_supported(tl_kernel k);
/* The kernel AUTO resolves to on this CPU. */
tl_kernel tl_kernel_best(void);
/* Generation's default for BF16 weights: tl_kernel_best(), except on a
 * CPU without AMX whose AVX512-BF16 dot products measure faster than its fp32
 * FMAs (tl_bf16_dot_rate >= TL_BF16_DOT_RATE_PAYS, oneDNN's bf16 matmul active):
 * there AVX512BF16, which rounds activations to bf16 as llama.cpp and PyTorch
 * do with bf16 weights (docs/inference.md measures what that costs).  Measures
 * the rate (~3 ms) on each call. */
tl_kernel tl_kernel_best_bf16(void);
/* Whether k rounds activations to bf16 (for BF16 weights). */
int tl_kernel_rounds_bf16(tl_kernel k);

/* y[rows] = W x  (threads split the rows).  Exposed for tests and benchmarks. */
void tl_wmat_matvec(tl_kernel k, const tl_wmat *W, const float *x, float *y);
/* y[j] = W[j] x for count matrices with the same number of columns, in one
 * parallel region. */
void tl_wmat_matvec_multi(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x);
/* The same for nx inputs x[nx, cols] at once: y[j] is [nx, W[j]->rows].  Each
 * output equals tl_wmat_matvec_multi's for that input bit for bit (the same
 * kernels on the same rows), while each stretch of weights is read from memory
 * once for all the inputs (speculative decoding's verification pass). */
void tl_wmat_matvec_rows(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x, int nx);
/* dot(w, x) over n floats with kernel family k's fp32 row kernel (SCALAR, AVX2 or
 * AVX512; the CPU must support it). */
float tl_dot_f32(tl_kernel k, const float *w, const float *x, int n);
/* One row of W as fp32 (stored row r: GGUF order for perm_heads matrices). */
void tl_wmat_row_f32(const tl_wmat *W, int r, float *out);
/* Whether decode reads W faster from a copy in 2 MiB pages than from the map
 * (BF16 matrices: tl_wmat_move_to). */
int tl_wmat_movable(const tl_wmat *W);
/* Copies W's rows to dst (rows * row bytes, caller's memory: 2 MiB pages),
 * drops the whole pages under them from the resident set and points W at
 * dst.  W must lie in a read-only file map (dropped pages of anonymous memory
 * would read back as zeros).  The layout is unchanged, so every kernel reads
 * the copy as it read the map. */
void tl_wmat_move_to(tl_wmat *W, void *dst);
/* Bytes of one stored row of W. */
size_t tl_wmat_row_bytes(const tl_wmat *W);
/* The products of a perm_heads matrix come out in its stored (GGUF) row
 * order; this puts n such output rows y[n, W->rows] back in HF order in place
 * (no-op when perm_heads is 0).  Exact, and O(rows) per token against the
 * O(rows * cols) product, so the weights are used as mapped. */
void tl_wmat_unpermute_out(const tl_wmat *W, float *y, int n);
/* y[n, W->rows] = x[n, W->cols] W^T + beta y on BLAS: F32 weights directly, other
 * dtypes converted to fp32 a tile of rows at a time (tile holds tile_floats >=
 * W->cols floats). */
void tl_wmat_gemm(const tl_wmat *W, const float *x, int n, float *y, float beta, float *tile, size_t tile_floats);
/* The same with kernel family k for quantized weights: those of a tl_q8_type
 * without f32_act run straight from the blocks (tl_q8_gemm), the tile unused. */
void tl_wmat_gemm_k(tl_kernel k, const tl_wmat *W, const float *x, int n, float *y, float beta, float *tile,
                    size_t tile_floats);

#endif

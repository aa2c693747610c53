/* gemm_amx.h - y = x W^T for BF16 weights on Intel AMX tiles: the batched
 * (prompt) pass of the `amx-exact` and `amx` kernels.  x is packed once per
 * product, split exactly into three bf16 parts (amx-exact: fp32 accuracy) or
 * rounded to one (amx); sums are fp32.  The weights are read straight from the
 * mapped file (no packing of W): W plays the tile multiply's left operand and
 * the packed x its right one, and each 16x16 result tile is transposed on the
 * way out.  See docs/inference.md. */
#ifndef TL_GEMM_AMX_H
#define TL_GEMM_AMX_H

#include <stddef.h>
#include <stdint.h>

/* Whether AMX-BF16 can run here: the CPU has AMX-TILE and AMX-BF16 (and
 * AVX512-BF16 for the packing), and the OS grants this process the tile state
 * (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked for here; it lasts for the
 * process).  Always 0 off x86-64 Linux. */
int tl_amx_usable(void);

/* Bytes of the packed form of an [n, cols] activation matrix (one part; a
 * multiple of 64). */
size_t tl_amx_pack_bytes(int n, int cols);

/* Packs x[n, cols] (fp32, row stride ldx floats) into pack (parts *
 * tl_amx_pack_bytes(n, cols) bytes, 64-byte aligned): parts = 1, x rounded to
 * bf16 to nearest even; parts = 3, x split into three bf16 parts (hi, then the
 * rounding of x - hi, then of what is left), whose products with bf16 weights
 * are exact in fp32: the products of the exact `amx-exact` kernel (finite x:
 * an infinity leaves NaN parts).  parts is 1 to 3. */
void tl_amx_pack(const float *x, size_t ldx, int n, int cols, int parts, void *pack);

/* y[n, rows] (row stride ldy floats; =, or += when accumulate) = x W^T, W BF16
 * [rows, cols] with row stride ldw elements (any alignment), x given packed.
 * Threads split the rows; called inside a parallel region, both functions run
 * on the calling thread alone (attention calls them per head).  Call only when
 * tl_amx_usable(). */
void tl_amx_gemm(const void *W, size_t ldw, int rows, int cols, const void *pack, int parts, int n, float *y,
                 size_t ldy, int accumulate);

/* The SwiGLU block's first half fused: h = silu(x Wg^T) * (x Wu^T) for
 * Wg, Wu BF16 [F, D] (row stride ldw), x packed in `parts` parts, written
 * straight into hpack in the packed form of h [n, F] in as many parts
 * (parts * tl_amx_pack_bytes(n, F) bytes), ready for the
 * down projection: no fp32 h, no transposes.  Bit-identical to the two
 * products, tl_vec_swiglu_forward and tl_amx_pack.  Needs F and D multiples of
 * 32; returns -1 (nothing done) otherwise. */
int tl_amx_swiglu(const void *Wg, const void *Wu, size_t ldw, int F, int D, const void *xpack, int parts, int n,
                  void *hpack);

/* C[M, N] (row stride ldc floats) = A B^T for A bf16 [M, K] row-major (row
 * stride lda elements) and B [N, K] given in the pair layout, 16 of its rows per
 * block and blocks bstride bytes apart (what tl_amx_pack writes for B, with
 * bstride = K * 32): the result tiles store straight into C, nothing is
 * transposed.  M, N and K multiples of 32.  Runs on the calling thread (the
 * attention products, one per head and row block). */
void tl_amx_matmul_bt(const uint16_t *A, size_t lda, const void *Bp, size_t bstride, int M, int N, int K, float *C,
                      size_t ldc);

/* out[i] = bf16(x[i]) to nearest even, vectorised. */
void tl_amx_to_bf16(const float *x, size_t n, uint16_t *out);

#endif

/* gemm_quant.h - the prompt pass's product of quantized weights with int8
 * activations on AMX-INT8 tiles (gemm_quant_amx.c), reached from tl_q8_gemm
 * (matvec_quant.h) for the AMX kernel families.
 *
 * x is rounded per token exactly as for the other ISAs (tl_q8_quantize) and
 * packed 16 tokens at a time into the tile multiply's right operand; 16 rows
 * of weights are unpacked once per work item to bytes (the left operand) with
 * their scales; each 32-element block (16 for Q6_K) is one tile product of
 * 16 rows x 16 tokens in int32 (TDPBSSD for Q8_0, TDPBUSD for the unsigned
 * nibbles of the others, their offsets through the activations' sums), then
 * scaled in vector registers with the same operations, in the same order per
 * (row, token), as the portable C kernels of matvec_quant_i8.c: the results
 * equal tl_q8_dot(TL_Q8_C, ...) bit for bit for every type. */
#ifndef TL_GEMM_QUANT_H
#define TL_GEMM_QUANT_H

#include <stdint.h>

#include "matvec.h"

/* Tokens from which the AMX kernel families take the tiles: a tile holds 16,
 * and below that the VNNI kernels (4 tokens per weight load) keep what a
 * prompt gives each token equal to its decode. */
#define TL_Q8_TILE_MIN_TOKENS 16
/* ... and for weights repacked for decode (tl_wmat.packed), which the tiles
 * first put back in file order: a 16-sequence decode step of the server ran
 * at 23 tokens/s on the tiles against 62 on the repacked VNNI kernel (Q4_0,
 * TinyLlama-1.1B shape, 2 threads, Xeon family 6 model 167) */
#define TL_Q8_TILE_MIN_TOKENS_PACKED 64

/* Whether AMX-INT8 can run here: the CPU has AMX-TILE, AMX-INT8 and the
 * AVX-512 the scaling uses, and the OS grants the tile state (Linux:
 * arch_prctl ARCH_REQ_XCOMP_PERM, asked for here).  Always 0 off x86-64 Linux. */
int tl_q8_amx_usable(void);
/* Whether weight type t has a tile kernel (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). */
int tl_q8_amx_type(uint32_t type);
/* y[n, W->rows] = x[n, W->cols] W^T + beta y on tiles, threads splitting the
 * rows (64 per work item).  Returns -1 (nothing done) when the tiles are not
 * usable, the type has no tile kernel, or memory runs out. */
int tl_q8_gemm_amx(const tl_wmat *W, const float *x, int n, float *y, float beta);
/* y_j[n, W_j->rows] = x W_j^T + beta y_j for count <= 8 such matrices with the
 * same columns (Q/K/V, gate/up; block types may differ): x rounded once per
 * block family (32-element, K-quant), one parallel region over all their
 * rows.  -1 (nothing done) as above. */
int tl_q8_gemm_amx_multi(const tl_wmat *const *W, float *const *y, int count, const float *x, int n, float beta);

/* 1 when a product of n tokens with the count matrices W goes to the tiles:
 * kernel family k is AMX or AMX_EXACT (AUTO: the best here), n >= TL_Q8_TILE_MIN_TOKENS
 * (TL_Q8_TILE_MIN_TOKENS_PACKED where a matrix is repacked) and none keeps fp32 activations. */
int tl_q8_tiles_take(tl_kernel k, const tl_wmat *const *W, int count, int n);

/* The prompt pass's y_j = x W_j^T (=) for count <= 8 quantized matrices
 * sharing x, on tiles when kernel family k is AMX or AMX_EXACT (AUTO: the
 * best here), n >= TL_Q8_TILE_MIN_TOKENS, none keeps fp32 activations and
 * tl_q8_gemm_amx_multi applies; -1 (nothing done) otherwise. */
int tl_q8_gemm_multi(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x, int n);

#endif

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

#endif

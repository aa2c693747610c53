/* matvec_quant.h - mat-vec products straight from GGUF's quantized blocks
 * (decode), and rows of them as fp32 (embedding lookups, the prompt pass).
 *
 * Accuracy choice: the weights are never rounded further and the activations
 * are NOT quantized (llama.cpp rounds x to 8-bit blocks): each block is
 * widened to fp32 in registers and multiplied with fp32 x, so a product
 * equals "dequantize the row (tl_gguf_dequant_row), then an fp32 dot" up to
 * fp32 summation order (the block scale is applied once per block:
 * d * sum(q_i x_i) instead of sum((d q_i) x_i)).  Q8_0 and Q4_0 have their
 * own kernels (portable C, AVX2+FMA, AVX-512), Q4_K and Q6_K AVX-512 ones;
 * everything else (and those two on AVX2 / portable C) is dequantized 256
 * elements at a time into a stack buffer and dotted in fp32 (correct, slower). */
#ifndef TL_MATVEC_QUANT_H
#define TL_MATVEC_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "matvec.h"

/* Whether a tl_wmat may hold blocks of ggml type t (quantized types only). */
int tl_quant_supported(uint32_t type);
/* Bytes of one row of cols elements (cols a multiple of the block size). */
size_t tl_quant_row_bytes(uint32_t type, int cols);
/* dot(row, x) over n elements of type's blocks with kernel family k (AUTO or
 * an unsupported family: the best the CPU has; AMX* and AVX512BF16 run as
 * AVX512, since x stays fp32). */
float tl_quant_dot(tl_kernel k, uint32_t type, const void *row, const float *x, int n);
/* y[r] = dot(row r of W, x) for rows [r0, r1) of a quantized W (y: the whole output). */
void tl_quant_rows(tl_kernel k, const tl_wmat *W, const float *x, float *y, int r0, int r1);

#endif

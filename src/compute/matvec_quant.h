/* matvec_quant.h - mat-vec products straight from GGUF's quantized blocks
 * (decode), the batched product of the prompt pass, and rows of them as fp32
 * (embedding lookups).
 *
 * Two ways to multiply, chosen per matrix (tl_wmat.f32_act):
 *
 * int8 activations (the default, as llama.cpp): x is rounded once per product
 * to int8 blocks with an fp32 scale (tl_q8_quantize: 32-element blocks with
 * their integer sums for the 32-element weight types, 256-element super-blocks
 * with sums per 16 for the K-quants), and each weight block meets them in
 * integer dot products (AVX512-VNNI, AVX-VNNI, AVX2 or portable C: tl_q8_isa),
 * scaled in fp32 once per block (per super-block for the K-quants).  For the
 * K-quants every ISA gives the same bits as the C version (integer sums, then
 * the same fp32 operations in the same order); for Q8_0/Q4_0 the per-block
 * fp32 terms are summed in a different order per ISA.  The error against the
 * fp32 product is that of rounding x: at most sum_i |w_i| d_x(i) / 2.
 * Types: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K (tl_q8_type); the others take the fp32 way.
 *
 * fp32 activations (f32_act set): the weights are never rounded further and x
 * is not quantized: each block is widened to fp32 in registers and multiplied
 * with fp32 x, so a product equals "dequantize the row (tl_gguf_dequant_row),
 * then an fp32 dot" up to fp32 summation order.  Q8_0 and Q4_0 have their own
 * kernels (portable C, AVX2+FMA, AVX-512), Q4_K and Q6_K AVX-512 ones;
 * everything else is dequantized 256 elements at a time into a stack buffer
 * and dotted in fp32 (correct, slower). */
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

/* ---- int8 activations ---- */

/* The integer kernels, best last. */
typedef enum { TL_Q8_C = 0, TL_Q8_AVX2, TL_Q8_AVXVNNI, TL_Q8_AVX512VNNI, TL_Q8_N } tl_q8_isa;
const char *tl_q8_isa_name(tl_q8_isa i);
int tl_q8_isa_supported(tl_q8_isa i);
/* The integer kernels a float kernel family runs on this CPU (SCALAR: C; AVX2:
 * AVX-VNNI or AVX2; the AVX-512 ones: AVX512-VNNI, else as AVX2). */
tl_q8_isa tl_q8_isa_for(tl_kernel k);
/* Whether weight type t has int8-activation kernels. */
int tl_q8_type(uint32_t type);
/* Bytes of n activations quantized for weight type t (n a multiple of t's block). */
size_t tl_q8_bytes(uint32_t type, int n);
/* x[n] rounded for weight type t into xq (tl_q8_bytes(t, n) bytes): int8
 * values q = round(x / d) with d = max|x| / 127 per block.  A NaN or infinity
 * makes the block's scale NaN, so the products it meets are NaN, as in fp32. */
void tl_q8_quantize(uint32_t type, const float *x, int n, void *xq);
/* The same with ISA i (supported; TL_Q8_C or TL_Q8_AVX512VNNI, the others run
 * the C code): every ISA writes the same bytes.  Exposed for tests. */
void tl_q8_quantize_isa(tl_q8_isa i, uint32_t type, const float *x, int n, void *xq);
/* out[t * ostride] = dot(row, activations t) for t < nt, the activations
 * xstride bytes apart (tl_q8_quantize's output), with ISA i (supported). */
void tl_q8_dot(tl_q8_isa i, uint32_t type, const void *row, const void *xq, size_t xstride, int nt, int n,
               float *out, size_t ostride);
/* y[n, W->rows] = x[n, W->cols] W^T + beta y for a quantized W of a tl_q8_type,
 * x rounded as above, every weight block loaded once per 4 rows of x; threads
 * split the rows.  For the AMX families from 16 rows of x on AMX-INT8 tiles
 * where the CPU has them (gemm_quant.h).  Returns -1 (nothing done) without
 * memory for the rounded x. */
int tl_q8_gemm(tl_kernel k, const tl_wmat *W, const float *x, int n, float *y, float beta);

/* ---- weights repacked for decode ----
 *
 * Q8_0 and Q4_0 matrices may be repacked once at load (as llama.cpp does) so
 * that one 512-bit register holds 4 bytes of each of 16 rows: x's 4 bytes are
 * broadcast once for 16 rows, the 16 rows' scales are converted by one
 * instruction and no horizontal sum is left per row.  Per 16-row group and
 * pair of 32-element blocks (k, k + 1), the same bytes as the file's 32 blocks:
 *   32 f16 scales: block k of rows 0-15, then block k + 1 of rows 0-15;
 *   block k's quants, then block k + 1's: 4-byte chunk j (Q4_0: 4 chunks of
 *   nibbles, as in the file; Q8_0: 8 chunks of bytes + 128, unsigned) of rows
 *   0-15, then chunk j + 1 of rows 0-15, ...
 * A group is one contiguous stream of 16 rows' bytes; a pair is 64-byte
 * aligned when the buffer is.  Products give the C kernel's bits exactly (per
 * row: integer sums, then (d_w d_x) isum added block by block).
 * Q4_K, Q5_K and Q6_K matrices are repacked the same way in a layout of their own
 * (matvec_quant_kpack.h: 16 rows per super-block, the file's size), with the
 * same bits as their C kernel on the file's rows. */

/* Whether loading a model repacks its quantized matrices (tl_q8_pack) on this
 * CPU: wherever tl_q8_isa_for's choice for the default kernel is a SIMD one
 * (AVX2, AVX-VNNI, AVX512-VNNI: each has kernels for the repacked layout);
 * without SIMD the file order is read as it is. */
int tl_q8_repacks(void);
/* Whether W (quantized, in file order) can be repacked: Q8_0/Q4_0 with an
 * even number of blocks per row, or Q4_K/Q5_K/Q6_K; rows a multiple of 16, at most
 * 12288 columns (a row and a rounded x fit stack buffers, so no product of it
 * can fail). */
int tl_q8_packable(const tl_wmat *W);
/* Repacks W's rows (tl_q8_packable) into dst (rows * row bytes, 64-byte aligned). */
void tl_q8_pack(const tl_wmat *W, void *dst);
/* The prompt pass's token count from which ISA i unpacks each repacked group
 * of type once (K-quants, Q4_0) and/or takes two groups per activation load
 * (measured per ISA and type; docs/inference.md); 0 where it never does. */
int tl_q8_pair_from(tl_q8_isa i, uint32_t type);
/* Row r of a repacked W in file order (tl_quant_row_bytes bytes) into dst. */
void tl_q8_unpack_row(const tl_wmat *W, int r, void *dst);
/* y[r] = dot(row r of a repacked W, x) for r in [r0, r1) (multiples of 16, or
 * r1 = W->rows), x already rounded by tl_q8_quantize. */
void tl_q8_rows_packed(tl_q8_isa i, const tl_wmat *W, const void *xq, float *y, int r0, int r1);

#endif

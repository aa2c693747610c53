/* matvec_quant_kpack.h - Q4_K, Q5_K and Q6_K matrices repacked for decode
 * (matvec_quant_kpack.c), reached through the tl_q8_* repacking calls of
 * matvec_quant.h.  Internal to src/compute.
 *
 * Layout: 16 rows per group, one super-block (256 elements) of the 16 rows
 * after another, each as many bytes as the file's 16 blocks (so a repacked
 * matrix has the file's size): every 4-byte unit at offset o of a row's block
 * (2-byte for the f16 scales) goes to 16 o + unit r, r the row in the group.
 * A 64-byte line then holds one unit of all 16 rows, so in the SIMD kernel
 * lane r of every register is row r: x's 4 bytes are broadcast once for the
 * 16 rows and no horizontal sum is left, and the 6-bit scales and mins of
 * Q4_K are decoded for 16 rows by a few whole-register shifts and masks
 * (three lines per super-block: keeping the file's 12 bytes costs no extra
 * memory traffic, where bytes are what decode is bound by).  Q5_K is Q4_K
 * with its 32 bytes of fifth bits (qh) as eight more lines after the scales,
 * the file's bytes unchanged: qh line c holds bit j for element 4 c + i of
 * sub-block j in byte i of a lane, so the SIMD kernel moves it into a masked
 * nibble by one select (vpternlogd) at a place shared by 16 rows, with at most
 * one whole-register shift of that nibble (and, for sub-blocks 0-3, of the qh
 * line), no per-bit unpacking.  Q6_K's quants
 * are rearranged further (matvec_quant_kpack.c, q6_line): three of every four
 * 6-bit values whole in a byte, the fourth in those bytes' top bits, which
 * takes a third fewer instructions per weight than the file's nibble and
 * 2-bit planes.
 *   Q4_K (144 bytes a row):  d[16] f16 | dmin[16] f16 | scales, 3 lines | quants, 32 lines
 *   Q5_K (176 bytes a row):  d[16] f16 | dmin[16] f16 | scales, 3 lines | qh, 8 lines | quants, 32 lines
 *   Q6_K (210 bytes a row):  quants, 48 lines | scales (int8), 4 lines | d[16] f16
 * The 256-bit kernels (AVX2, AVX-VNNI: matvec_quant_kpack_avx2.inc) read the
 * same layout a half-line at a time: bytes 0-31 of a line are rows 0-7, bytes
 * 32-63 rows 8-15, both halves of a super-block before the next.
 * Products give the bits of the file-order C kernel (tl_q8_dot with TL_Q8_C):
 * the same integer sums per super-block, then the same fp32 operations in the
 * same order, row by row. */
#ifndef TL_MATVEC_QUANT_KPACK_H
#define TL_MATVEC_QUANT_KPACK_H

#include <stddef.h>
#include <stdint.h>

#include "matvec_quant.h"

/* Whether type t has a repacked layout here (Q4_K, Q5_K, Q6_K). */
int tl_kq_type(uint32_t t);
/* Whether W can be repacked: tl_kq_type, in file order, rows a multiple of 16,
 * at most 12288 columns (a row and a rounded x fit the callers' stack buffers). */
int tl_kq_packable(const tl_wmat *W);
/* Repacks W's rows (tl_kq_packable) into dst (rows * row bytes). */
void tl_kq_pack(const tl_wmat *W, void *dst);
/* Row r of a repacked W in file order (tl_quant_row_bytes bytes) into dst. */
void tl_kq_unpack_row(const tl_wmat *W, int r, void *dst);
/* out[t * os + r] = dot(row r of the 16-row group at b, activations
 * xq + t * xs) for r < 16, t < nt, n elements (tl_q8_quantize's K-quant
 * layout), with ISA i (AVX2, AVX-VNNI, AVX512-VNNI: SIMD kernels; portable C
 * otherwise). */
void tl_kq_packed_dot(tl_q8_isa i, uint32_t type, const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n,
                      float *out, size_t os);

/* The prompt pass's unpacked layout (matvec_quant_kpack.c): a repacked group's
 * n columns with one byte per weight and the scales decoded, for many tokens
 * to pass over without unpacking each time; the products have the bits of
 * tl_kq_packed_dot.  tl_kq_unpack_from: the tokens from which ISA i unpacks
 * a group of type (measured), 0 where it has no unpacked kernel. */
int tl_kq_unpack_from(tl_q8_isa i, uint32_t type);
size_t tl_kq_unpacked_bytes(uint32_t type, int n);
/* The 16-row group at b (repacked, n columns) into dst (tl_kq_unpacked_bytes). */
void tl_kq_unpack(tl_q8_isa i, uint32_t type, const uint8_t *b, int n, void *dst);
/* tl_kq_packed_dot's products from the unpacked group u, any nt. */
void tl_kq_unpacked_dot(tl_q8_isa i, uint32_t type, const void *u, const uint8_t *xq, size_t xs, int nt, int n,
                        float *out, size_t os);
/* The same for two unpacked groups at once: out[t * os + r], r < 32, rows
 * 0-15 from u0 and 16-31 from u1. */
void tl_kq_unpacked_dot2(tl_q8_isa i, uint32_t type, const void *u0, const void *u1, const uint8_t *xq, size_t xs,
                         int nt, int n, float *out, size_t os);

#endif

/* quantize.h - fp32 rows to ggml's block types (the inverse of quant.h's
 * dequantization), following the arithmetic of ggml's reference quantizers
 * (quantize_row_*_ref, which llama-quantize uses when no importance matrix is
 * given) so the blocks equal llama.cpp's bit for bit for the same input. */
#ifndef TL_QUANTIZE_H
#define TL_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* 1 if rows can be written in type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1
 * Q4_K Q5_K Q6_K. */
int tl_quantize_supported(uint32_t type);

/* Bytes of n elements of type (n a multiple of its block size); 0 if the type
 * is unknown or n does not divide into blocks. */
size_t tl_quantize_row_bytes(uint32_t type, size_t n);

/* Quantizes n elements (a multiple of type's block size) at src into dst
 * (tl_quantize_row_bytes(type, n) bytes).  Returns 0, or -1 for a type that is
 * not supported or an n that is not a whole number of blocks (dst untouched). */
int tl_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

/* fp32 -> IEEE half, round to nearest even (overflow to infinity, subnormals
 * kept), as F16C's vcvtps2ph and ggml's portable conversion do. */
uint16_t tl_f32_to_f16(float f);

#endif

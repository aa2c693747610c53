/* quant.h - ggml's quantized block types (the tensor types of GGUF files): their
 * numbers, block sizes, and dequantization to fp32 exactly as ggml does it.  The
 * mat-vec kernels (matvec_quant.c) read these blocks directly; the GGUF reader
 * (formats/gguf.c) checks tensors against the block sizes. */
#ifndef TL_QUANT_H
#define TL_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Tensor types (ggml_type), numbered as in the file.  Only the ones below are
 * named; the reader knows the block sizes of the others it accepts (K-quants,
 * IQ*, integers) so it can check their extent, but cannot dequantize them. */
enum {
    TL_GGML_F32 = 0,
    TL_GGML_F16 = 1,
    TL_GGML_Q4_0 = 2,
    TL_GGML_Q4_1 = 3,
    TL_GGML_Q5_0 = 6,
    TL_GGML_Q5_1 = 7,
    TL_GGML_Q8_0 = 8,
    TL_GGML_Q4_K = 12,
    TL_GGML_Q5_K = 13,
    TL_GGML_Q6_K = 14,
    TL_GGML_BF16 = 30,
};

const char *tl_ggml_type_name(uint32_t type); /* "Q4_K", ...; NULL if unknown */
/* Block size in elements and bytes of a ggml type; 0 if unknown. */
int tl_ggml_type_block(uint32_t type, uint32_t *elems, uint32_t *bytes);
int tl_ggml_type_dequantizable(uint32_t type);

/* Converts n elements (a multiple of the type's block size) of type's blocks
 * at src to fp32, exactly as ggml's dequantize_row_* does. */
void tl_gguf_dequant_row(uint32_t type, const void *src, float *dst, size_t n);
#endif

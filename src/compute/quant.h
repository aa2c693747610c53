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

/* The 6-bit scale and minimum of sub-block j (0..7) of a Q4_K/Q5_K super-block,
 * from its 12 scale bytes s: bytes 0-3 hold scales 0-3 in their low 6 bits,
 * bytes 4-7 mins 0-3; bytes 8-11 hold scales 4-7 (low nibble) and mins 4-7 (high
 * nibble), whose top 2 bits sit in the spare top bits of bytes 0-3 and 4-7.
 * Inline: the kernels call it per sub-block. */
static inline void tl_k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}
#endif

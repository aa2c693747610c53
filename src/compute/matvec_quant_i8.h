/* matvec_quant_i8.h - what the int8-activation kernels of matvec_quant_i8.c
 * (portable C, dispatch) and matvec_quant_x86.c (SIMD) share: the layout of
 * rounded activations and the kernels' signature.  Internal to src/compute.
 *
 * Activations of one token, n elements (tl_q8_quantize):
 *   32-element types (Q8_0, Q4_0): int8 q[n], float d[n/32], int32 s[n/32]
 *     (s: the block's sum of q, for the nibble types' offsets);
 *   K-quants: int8 q[n], float d[n/256], int16 bsums[n/16] (sums of q per 16).
 * q comes first so that consecutive blocks are contiguous for wide loads. */
#ifndef TL_MATVEC_QUANT_I8_H
#define TL_MATVEC_QUANT_I8_H

#include <stddef.h>
#include <stdint.h>

/* out[t * os] = dot(row b, activations xq + t * xs) for t < nt (1 <= nt <= 4),
 * n elements. */
typedef void (*tl_q8_fn)(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out, size_t os);

/* The SIMD kernels for a weight type (NULL: none for that type). */
tl_q8_fn tl_q8_avx2_fn(uint32_t type);
tl_q8_fn tl_q8_avxvnni_fn(uint32_t type);
tl_q8_fn tl_q8_avx512vnni_fn(uint32_t type);

/* Repacked weights (matvec_quant.h): out[t * os + r] = dot(row r of the 16-row
 * group at b, activations t) for r < 16, t < nt (1 <= nt <= 4), n elements. */
typedef void (*tl_q8_packed_fn)(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out,
                                size_t os);

/* The kernels are compiled for 1-4 tokens at a time (NT a constant, so their
 * accumulators stay in registers); a kernel body call(N) dispatched on nt. */
#define NT_SWITCH(call)                                                                                              \
    switch (nt) {                                                                                                    \
    case 1: call(1); break;                                                                                          \
    case 2: call(2); break;                                                                                          \
    case 3: call(3); break;                                                                                          \
    default: call(4); break;                                                                                         \
    }
tl_q8_packed_fn tl_q8_avx2_packed_fn(uint32_t type);
tl_q8_packed_fn tl_q8_avxvnni_packed_fn(uint32_t type);
tl_q8_packed_fn tl_q8_avx512vnni_packed_fn(uint32_t type);
/* The prompt pass's AVX512-VNNI kernel on two repacked Q8_0 groups at once:
 * out[t * os + r] for r < 32 (rows 0-15 from group b0, 16-31 from b1), any
 * nt, the bits of the one-group kernels.  Q4_0 groups first go to that
 * layout by tl_q8_unpack4_512 (n columns: n / 32 * 544 bytes). */
void tl_q8_pair_512(const uint8_t *b0, const uint8_t *b1, const uint8_t *xq, size_t xs, int nt, int n, float *out,
                    size_t os);
void tl_q8_unpack4_512(const uint8_t *b, int n, uint8_t *dst);
/* tl_q8_quantize in AVX-512 (kq: the K-quants' layout), the same bytes. */
void tl_q8_quantize_avx512(int kq, const float *x, int n, void *xq);

/* The repacked kernels prefetch their stream TL_PACKED_PF bytes ahead into L2
 * (_MM_HINT_T1), not L1: a T0 prefetch holds one of the core's few L1 fill
 * buffers until its line comes from memory, which capped a thread's stream at
 * ~80% of a plain read loop's, where T1 reaches ~97% (docs/inference.md); the
 * loads then hit L2.  (Overridable with -D for measurements.) */
#ifndef TL_PACKED_PF_HINT
#define TL_PACKED_PF_HINT _MM_HINT_T1
#endif
#ifndef TL_PACKED_PF
#define TL_PACKED_PF 3072
#endif

#endif

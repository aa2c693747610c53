/* finite.c - NaN/Inf scan of weight tensors by exponent bits. */
#include "finite.h"

#include <stdint.h>
#include <string.h>

/* Values per block: each block's largest magnitude bits are found first (a
 * max reduction the compiler vectorises), and the block is searched element
 * by element only when that is NaN or infinity.  A value is non-finite when
 * its bits without the sign are >= those of +Inf (all-ones exponent). */
#define BLOCK 16384

/* Loads go through memcpy: mapped tensors need not be aligned to their element size. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static uint32_t max_bits32(const unsigned char *x,
                                                                                    size_t len) {
    uint32_t mx = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t v;
        memcpy(&v, x + 4 * i, sizeof v);
        v &= 0x7fffffffu;
        mx = v > mx ? v : mx;
    }
    return mx;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static uint16_t max_bits16(const unsigned char *x,
                                                                                    size_t len) {
    uint16_t mx = 0;
    for (size_t i = 0; i < len; i++) {
        uint16_t v;
        memcpy(&v, x + 2 * i, sizeof v);
        v &= 0x7fffu;
        mx = v > mx ? v : mx;
    }
    return mx;
}

static uint32_t bits_at(const void *data, tl_dtype dt, size_t i) {
    if (dt == TL_DT_F32) {
        uint32_t v;
        memcpy(&v, (const unsigned char *)data + 4 * i, sizeof v);
        return v;
    }
    uint16_t v;
    memcpy(&v, (const unsigned char *)data + 2 * i, sizeof v);
    return v;
}

size_t tl_find_nonfinite(const void *data, tl_dtype dt, size_t n) {
    if (dt != TL_DT_F32 && dt != TL_DT_BF16 && dt != TL_DT_F16) return n;
    const uint32_t inf = dt == TL_DT_F32 ? 0x7f800000u : dt == TL_DT_BF16 ? 0x7f80u : 0x7c00u;
    const uint32_t abs_mask = dt == TL_DT_F32 ? 0x7fffffffu : 0x7fffu;
    const size_t esize = dt == TL_DT_F32 ? 4 : 2, nb = (n + BLOCK - 1) / BLOCK;
    size_t first = n;
    /* the smallest hit over all blocks: the same answer for any thread count */
#pragma omp parallel for schedule(static) reduction(min : first) if (nb > 8)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * BLOCK, len = n - lo < BLOCK ? n - lo : BLOCK;
        const unsigned char *x = (const unsigned char *)data + lo * esize;
        uint32_t mx = esize == 4 ? max_bits32(x, len) : max_bits16(x, len);
        if (mx < inf) continue;
        for (size_t i = 0; i < len; i++)
            if ((bits_at(data, dt, lo + i) & abs_mask) >= inf) {
                if (lo + i < first) first = lo + i;
                break;
            }
    }
    return first;
}

const char *tl_nonfinite_kind(const void *data, tl_dtype dt, size_t i) {
    const uint32_t v = bits_at(data, dt, i);
    const uint32_t mant = v & (dt == TL_DT_F32 ? 0x007fffffu : dt == TL_DT_BF16 ? 0x007fu : 0x03ffu);
    const uint32_t sign = dt == TL_DT_F32 ? v >> 31 : v >> 15;
    return mant ? "NaN" : sign ? "-Inf" : "+Inf";
}

/* finite.h - finding NaN and infinity in weight tensors (F32, BF16, F16) by
 * their bits, so a corrupt checkpoint is refused at load instead of
 * producing garbage text or a NaN perplexity. */
#ifndef TL_FINITE_H
#define TL_FINITE_H

#include <stddef.h>

#include "dtype.h"

/* Index of the first NaN or infinity among the n values of dtype dt (F32, BF16
 * or F16; other dtypes: n) at data, or n when all are finite.  Memory-bound:
 * blocks are scanned by all OpenMP threads. */
size_t tl_find_nonfinite(const void *data, tl_dtype dt, size_t n);

/* "NaN", "+Inf" or "-Inf" for the value at index i (which must be non-finite). */
const char *tl_nonfinite_kind(const void *data, tl_dtype dt, size_t i);

#endif

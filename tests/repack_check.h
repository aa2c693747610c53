/* repack_check.h - the check both repacked layouts' tests share (test_infer_gguf.c
 * for Q8_0/Q4_0, test_kpack.c for Q4_K/Q6_K). */
#ifndef TL_TEST_REPACK_CHECK_H
#define TL_TEST_REPACK_CHECK_H

#include <stdint.h>

#include "harness.h"
#include "matvec.h"

/* Repacks W (which must be packable) into pk and returns the repacked view in *P
 * (no longer packable); checks that every row comes back from it as the file's
 * bytes (tl_q8_unpack_row) and as the same floats (tl_wmat_row_f32).  back holds
 * one row's bytes, row 2 * cols floats.  Returns whether every row did. */
int tl_test_repack_rows(tl_test_ctx *t, const tl_wmat *W, void *pk, tl_wmat *P, uint8_t *back, float *row);

#endif

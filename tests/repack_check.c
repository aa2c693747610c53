/* repack_check.c - see repack_check.h. */
#include "repack_check.h"

#include <string.h>

#include "matvec_quant.h"

int tl_test_repack_rows(tl_test_ctx *t, const tl_wmat *W, void *pk, tl_wmat *P, uint8_t *back, float *row) {
    const size_t rb = tl_quant_row_bytes(W->quant, W->cols);
    CHECK(tl_q8_packable(W));
    tl_q8_pack(W, pk);
    *P = *W;
    P->data = pk;
    P->packed = 1;
    CHECK(!tl_q8_packable(P));
    int ok = 1;
    for (int j = 0; j < W->rows; j++) {
        tl_q8_unpack_row(P, j, back);
        ok &= !memcmp(back, (const uint8_t *)W->data + rb * (size_t)j, rb);
        tl_wmat_row_f32(W, j, row);
        tl_wmat_row_f32(P, j, row + W->cols);
        ok &= !memcmp(row, row + W->cols, sizeof(float) * (size_t)W->cols);
    }
    return ok;
}

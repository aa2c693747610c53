/* ops_bf16.c - the linear layer in bf16 mixed precision (see ops_bf16.h). */
#include "ops_bf16.h"

#include <stddef.h>
#include <string.h>

#include "gemm.h"
#include "ops.h"
#include "vec.h"

void tl_linear_forward_bf16_rounded(float *y, const uint16_t *xs, const uint16_t *W, int N, int in, int out,
                                    int accumulate) {
    tl_gemm_bf16(false, true, N, out, in, 1.0f, xs, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
}

void tl_linear_forward_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int accumulate,
                            uint16_t *xs) {
    tl_round_bf16(x, (size_t)N * in, xs);
    tl_linear_forward_bf16_rounded(y, xs, W, N, in, out, accumulate);
}

void tl_linear_backward_bf16_both(float *dx, float *dW, const uint16_t *dys, const uint16_t *dyt, const uint16_t *xs,
                                  const uint16_t *W, int N, int in, int out, int accumulate_dx) {
    if (dW && dyt)
        tl_gemm_bf16(false, false, out, in, N, 1.0f, dyt, N, xs, in, 1.0f, dW, in);
    else if (dW)
        tl_gemm_bf16(true, false, out, in, N, 1.0f, dys, out, xs, in, 1.0f, dW, in);
    if (dx) tl_gemm_bf16(false, false, N, in, out, 1.0f, dys, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

void tl_linear_backward_bf16_rounded(float *dx, float *dW, const float *dy, const uint16_t *xs, const uint16_t *W,
                                     int N, int in, int out, int accumulate_dx, uint16_t *dys) {
    tl_round_bf16(dy, (size_t)N * out, dys);
    tl_linear_backward_bf16_both(dx, dW, dys, NULL, xs, W, N, in, out, accumulate_dx);
}

/* The output layer's products read W (V x D bf16: 32 MB at TinyLlama's shape),
 * which no cache holds.  In vocabulary slices each slice of W stays in L2 while
 * every row passes over it, and with the slices' gradients stored slice-major each
 * product's operands are plain row-major blocks, the layout oneDNN's AMX kernels
 * take (a strided slice sends it to another kernel, whose sum order depends on the
 * thread count).  One AMX core, 256 rows, V = 32,000: dx at ~260 GFLOP/s whole, ~390
 * in slices of 2048 (D = 512; D = 288: ~235 and ~300). */
void tl_output_backward_bf16(float *dx, float *dW, const uint16_t *dys, const uint16_t *dyt, const uint16_t *xs,
                             const uint16_t *W, int N, int D, int V) {
    for (int v0 = 0; v0 < V; v0 += TL_OUT_SLICE) {
        const int w = V - v0 < TL_OUT_SLICE ? V - v0 : TL_OUT_SLICE;
        const uint16_t *d = dys + (size_t)v0 * N, *Ws = W + (size_t)v0 * D;
        if (dW && dyt)
            tl_gemm_bf16(false, false, w, D, N, 1.0f, dyt + (size_t)v0 * N, N, xs, D, 1.0f, dW + (size_t)v0 * D, D);
        else if (dW)
            tl_gemm_bf16(true, false, w, D, N, 1.0f, d, w, xs, D, 1.0f, dW + (size_t)v0 * D, D);
        if (dx) tl_gemm_bf16(false, false, N, D, w, 1.0f, d, w, Ws, D, v0 ? 1.0f : 0.0f, dx, D);
    }
}

void tl_rmsnorm_forward_bf16(float *y, uint16_t *yb, float *rstd, const float *x, const float *w, int N, int D,
                             float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float row[y ? 1 : D];
        float *yr = y ? y + (size_t)n * D : row;
        rstd[n] = tl_rmsnorm_row(yr, x + (size_t)n * D, w, D, eps);
        tl_round_bf16_here(yr, (size_t)D, yb + (size_t)n * D); /* while the row is in L1 */
    }
}

/* Blocks of 4096 elements, as ops.c's SwiGLU: each block rounded while in L1. */
enum { EW_BLOCK = 4096 };

void tl_swiglu_forward_bf16(float *h, uint16_t *hb, const float *g, const float *u, size_t n) {
    const size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * EW_BLOCK, len = n - lo < EW_BLOCK ? n - lo : EW_BLOCK;
        float blk[EW_BLOCK];
        float *hl = h ? h + lo : blk;
        tl_vec_swiglu_forward(hl, g + lo, u + lo, len);
        tl_round_bf16_here(hl, len, hb + lo);
    }
}

/* SwiGLU's backward over elements [lo, lo + len) (len <= EW_BLOCK), both
 * gradients rounded while in L1; dg, du: where the fp32 gradients go, or NULL. */
static void swiglu_backward_piece(float *dg, float *du, uint16_t *dgb, uint16_t *dub, const float *dh,
                                  const float *g, const float *u, size_t lo, size_t len) {
    float gblk[dg ? 1 : EW_BLOCK], ublk[du ? 1 : EW_BLOCK];
    float *dgl = dg ? dg + lo : gblk, *dul = du ? du + lo : ublk;
    tl_vec_swiglu_backward(dgl, dul, dh + lo, g + lo, u + lo, len);
    tl_round_bf16_here(dgl, len, dgb + lo);
    tl_round_bf16_here(dul, len, dub + lo);
}

void tl_swiglu_backward_bf16(float *dg, float *du, uint16_t *dgb, uint16_t *dub, const float *dh, const float *g,
                             const float *u, size_t n) {
    const size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * EW_BLOCK, len = n - lo < EW_BLOCK ? n - lo : EW_BLOCK;
        swiglu_backward_piece(dg, du, dgb, dub, dh, g, u, lo, len);
    }
}

/* Rows in blocks of 32: the block's rounded gradients are transposed while in L2,
 * and each block writes whole 64-byte lines of the token-minor copies. */
enum { T_ROWS = 32 };

void tl_swiglu_backward_bf16_t(uint16_t *dgb, uint16_t *dub, uint16_t *dgt, uint16_t *dut, const float *dh,
                               const float *g, const float *u, int N, int F) {
    const int nb = (N + T_ROWS - 1) / T_ROWS;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        const int r0 = b * T_ROWS, rows = N - r0 < T_ROWS ? N - r0 : T_ROWS;
        const size_t lo = (size_t)r0 * F, hi = lo + (size_t)rows * F;
        /* pieces cut where the flat pass's blocks are cut: the same values, bit for bit */
        for (size_t p = lo; p < hi;) {
            const size_t end = (p / EW_BLOCK + 1) * EW_BLOCK, len = (end < hi ? end : hi) - p;
            swiglu_backward_piece(NULL, NULL, dgb, dub, dh, g, u, p, len);
            p += len;
        }
        tl_transpose_bf16(dgb + lo, (size_t)F, rows, F, dgt + r0, (size_t)N);
        tl_transpose_bf16(dub + lo, (size_t)F, rows, F, dut + r0, (size_t)N);
    }
}

/* One row of tl_cross_entropy_rows_bf16. */
static void ce_row_bf16(float *logits, float *loss, const int *targets, int rows, int V, float scale,
                        const float *row_w, uint16_t *dys, int r) {
    float *z = logits + (size_t)r * V;
    const int y = targets[r];
    if (y < 0) {
        for (int v0 = 0; v0 < V; v0 += TL_OUT_SLICE) {
            const int w = V - v0 < TL_OUT_SLICE ? V - v0 : TL_OUT_SLICE;
            memset(dys + (size_t)v0 * rows + (size_t)r * w, 0, sizeof(uint16_t) * (size_t)w); /* bf16 +0 */
        }
        loss[r] = 0.0f;
        return;
    }
    /* tl_cross_entropy_rows's arithmetic, then the row's weight, as output.c's fp32 passes */
    const double sum = tl_cross_entropy_row_exp(z, V, y, &loss[r]);
    const float s = row_w ? 1.0f : scale, inv = (float)(1.0 / sum) * s;
    /* the row (128 KB at V = 32,000) is in L2 after exp_sum: scale and round it block by block */
    float blk[256]; /* TL_OUT_SLICE is a multiple of 256: no block spans two slices */
    for (int v0 = 0; v0 < V; v0 += 256) {
        const int len = V - v0 < 256 ? V - v0 : 256, s0 = v0 - v0 % TL_OUT_SLICE;
        const int w = V - s0 < TL_OUT_SLICE ? V - s0 : TL_OUT_SLICE;
        for (int i = 0; i < len; i++) blk[i] = z[v0 + i] * inv;
        if (y >= v0 && y < v0 + len) blk[y - v0] -= s;
        if (row_w)
            for (int i = 0; i < len; i++) blk[i] *= row_w[r];
        tl_round_bf16_here(blk, (size_t)len, dys + (size_t)s0 * rows + (size_t)r * w + (v0 - s0));
    }
}

void tl_cross_entropy_rows_bf16(float *logits, float *loss, const int *targets, int rows, int V, float scale,
                                const float *row_w, uint16_t *dys, uint16_t *dyt) {
    if (!dyt) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) ce_row_bf16(logits, loss, targets, rows, V, scale, row_w, dys, r);
        return;
    }
    /* 32 rows a block: their gradient (V = 32,000: 2 MB of bf16) still in L2 when
     * transposed, and one 64-byte store per token-minor line (16 rows, two half-line
     * stores per line: 1024 x 32,000 at ~2.5x the pass's time, 32 rows ~1.3x) */
    const int nb = (rows + T_ROWS - 1) / T_ROWS;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        const int r0 = b * T_ROWS, r1 = rows - r0 < T_ROWS ? rows : r0 + T_ROWS;
        for (int r = r0; r < r1; r++) ce_row_bf16(logits, loss, targets, rows, V, scale, row_w, dys, r);
        for (int v0 = 0; v0 < V; v0 += TL_OUT_SLICE) {
            const int w = V - v0 < TL_OUT_SLICE ? V - v0 : TL_OUT_SLICE;
            tl_transpose_bf16(dys + (size_t)v0 * rows + (size_t)r0 * w, (size_t)w, r1 - r0, w,
                              dyt + (size_t)v0 * rows + r0, (size_t)rows);
        }
    }
}

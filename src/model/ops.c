/* ops.c - CPU reference of the Llama building blocks (OpenMP + BLAS). */
#include "ops.h"
#include "gemm.h"
#include "vec.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* OpenBLAS's own thread setter (declared here so the generic cblas.h suffices). */
void openblas_set_num_threads(int num_threads);

void tl_set_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int tl_get_threads(void) { return omp_get_max_threads(); }

void tl_linear_forward(float *y, const float *x, const float *W, int N, int in, int out, int accumulate) {
    tl_sgemm(false, true, N, out, in, 1.0f, x, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
}

void tl_linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int N,
                        int in, int out, int accumulate_dx) {
    if (dW)
        tl_sgemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (dx)
        tl_sgemm(false, false, N, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

float tl_rmsnorm_row(float *yr, const float *xr, const float *w, int D, float eps) {
    /* lane sums (a single add chain cost ~5% of a prompt pass) */
    const float ss = tl_vec_dot_lanes(xr, xr, NULL, (size_t)D);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = 0; i < D; i++) yr[i] = w[i] * (xr[i] * r);
    return r;
}

void tl_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int D, float eps) {
    /* one row (a decode step) is a microsecond of work: a parallel region
     * would cost as much, and on a busy machine far more (every region waits
     * for all its threads to be scheduled) */
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++) {
        float r = tl_rmsnorm_row(y + (size_t)n * D, x + (size_t)n * D, w, D, eps);
        if (rstd) rstd[n] = r;
    }
}

void tl_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int N, int D) {
    /* y_i = w_i x_i r, r = (mean(x^2)+eps)^-1/2
     * dx_i = r (w_i dy_i) - x_i r^3 / D * sum_j (w_j dy_j x_j) */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D, *dyr = dy + (size_t)n * D;
        float *dxr = dx + (size_t)n * D;
        const float r = rstd[n], dot = tl_vec_dot_lanes(w, dyr, xr, (size_t)D);
        float c = dot * r * r * r / (float)D;
        for (int i = 0; i < D; i++) dxr[i] += r * w[i] * dyr[i] - c * xr[i];
    }
    /* dw_i = sum_n dy_ni x_ni r_n, columns in parallel so each sum runs in row order. */
    enum { CB = 16 };
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < D; j0 += CB) {
        int j1 = j0 + CB < D ? j0 + CB : D;
        float acc[CB] = {0};
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * D, *dyr = dy + (size_t)n * D;
            for (int j = j0; j < j1; j++) acc[j - j0] += dyr[j] * xr[j] * rstd[n];
        }
        for (int j = j0; j < j1; j++) dw[j] += acc[j - j0];
    }
}

void tl_rope_tables(float *cos_t, float *sin_t, int max_pos, int head_dim, float theta) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        for (int p = 0; p < max_pos; p++) {
            float angle = (float)p * inv_freq;
            cos_t[(size_t)p * half + i] = cosf(angle);
            sin_t[(size_t)p * half + i] = sinf(angle);
        }
    }
}

/* sign = +1: forward rotation; -1: its transpose (for the backward pass). */
static void rope_apply(float *x, const float *cos_t, const float *sin_t, int N, int T, int pos0,
                       int n_heads, int head_dim, float sign) {
    int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (N > 1) /* one token: as for rmsnorm */
    for (int n = 0; n < N; n++) {
        int pos = pos0 + n % T;
        const float *c = cos_t + (size_t)pos * half, *s = sin_t + (size_t)pos * half;
        float *row = x + (size_t)n * n_heads * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = row + (size_t)h * head_dim;
            tl_rope_head(v, v, c, s, head_dim, sign);
        }
    }
}

void tl_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int pos0,
                     int n_heads, int head_dim) {
    rope_apply(x, cos_t, sin_t, N, T, pos0, n_heads, head_dim, 1.0f);
}

void tl_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int pos0,
                      int n_heads, int head_dim) {
    rope_apply(dx, cos_t, sin_t, N, T, pos0, n_heads, head_dim, -1.0f);
}

/* SwiGLU in blocks of 4096 elements per OpenMP task, vectorised inside. */
enum { EW_BLOCK = 4096 };

void tl_swiglu_forward(float *h, const float *g, const float *u, size_t n) {
    const size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static) if (nb > 2) /* a decode step's few microseconds: as for rmsnorm */
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * EW_BLOCK, len = n - lo < EW_BLOCK ? n - lo : EW_BLOCK;
        tl_vec_swiglu_forward(h + lo, g + lo, u + lo, len);
    }
}

void tl_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    const size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * EW_BLOCK, len = n - lo < EW_BLOCK ? n - lo : EW_BLOCK;
        tl_vec_swiglu_backward(dg + lo, du + lo, dh + lo, g + lo, u + lo, len);
    }
}

double tl_cross_entropy_row_exp(float *z, int V, int y, float *loss) {
    const float mx = tl_vec_max(z, (size_t)V), zy = z[y] - mx;
    const double sum = tl_vec_exp_sum(z, (size_t)V, mx);
    *loss = (float)(log(sum) - (double)zy);
    return sum;
}

void tl_cross_entropy_rows(float *logits, float *loss, const int *targets, int rows, int V, float scale) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *z = logits + (size_t)r * V;
        int y = targets[r];
        if (y < 0) {
            memset(z, 0, sizeof(float) * (size_t)V);
            loss[r] = 0.0f;
            continue;
        }
        const double sum = tl_cross_entropy_row_exp(z, V, y, &loss[r]);
        tl_vec_scale(z, (size_t)V, (float)(1.0 / sum) * scale);
        z[y] -= scale;
    }
}

void tl_embedding_forward(float *out, const float *table, const int *ids, int N, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * D, table + (size_t)ids[n] * D, sizeof(float) * (size_t)D);
}

void tl_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    enum { CB = 64 };
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < D; j0 += CB) {
        int j1 = j0 + CB < D ? j0 + CB : D;
        for (int n = 0; n < N; n++) {
            float *dst = dtable + (size_t)ids[n] * D;
            const float *src = dout + (size_t)n * D;
            for (int j = j0; j < j1; j++) dst[j] += src[j];
        }
    }
}

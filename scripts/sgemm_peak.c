/* sgemm_peak.c - the fp32 matrix-product peak this machine reaches with the
 * libraries tinyllama links: C = A B for square n x n matrices by OpenBLAS
 * (OpenMP build; its kernel family as the environment leaves it) and by
 * oneDNN's dnnl_sgemm (the fp32 backend on AVX-512 CPUs), best of several calls
 * each after a warm-up.  Prints the better GFLOP/s on stdout and both on
 * stderr.  Used by the benchmarks to state our speed as a fraction of it.
 * Usage: sgemm_peak [n] [reps] */
#include <cblas.h>
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* best GFLOP/s of reps calls after one warm-up call (threads, pages) */
static double best_of(int onednn, int n, int reps, const float *a, const float *b, float *c) {
    double best = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        if (onednn) {
            if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) return 0;
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        }
        double g = 2.0 * n * n * (double)n / (now() - t0) / 1e9;
        if (r > 0 && g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 5;
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n),
          *c = malloc(sizeof(float) * (size_t)n * n);
    if (!a || !b || !c || n <= 0) return 1;
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 13) * 0.01f, b[i] = (float)(i % 7) * 0.02f;
    const double ob = best_of(0, n, reps, a, b, c), od = best_of(1, n, reps, a, b, c);
    printf("%.1f\n", ob > od ? ob : od);
    fprintf(stderr, "sgemm_peak: %d^3, best of %d: OpenBLAS %.1f, oneDNN %.1f GFLOP/s (c[1] = %g)\n", n, reps, ob, od,
            c[1]);
    free(a);
    free(b);
    free(c);
    return 0;
}

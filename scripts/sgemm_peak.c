/* sgemm_peak.c - the fp32 matrix-product peak this machine reaches with the
 * BLAS tinyllama links (OpenBLAS, OpenMP build): C = A B for square n x n
 * matrices, best of several calls after a warm-up.  Prints GFLOP/s.  Used by the
 * benchmarks to state our speed as a fraction of it.  Usage: sgemm_peak [n] [reps] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 5;
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n),
          *c = malloc(sizeof(float) * (size_t)n * n);
    if (!a || !b || !c || n <= 0) return 1;
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 13) * 0.01f, b[i] = (float)(i % 7) * 0.02f;
    double best = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * n * (double)n / (now() - t0) / 1e9;
        if (r > 0 && g > best) best = g; /* call 0 warms up threads and pages */
    }
    printf("%.1f\n", best);
    fprintf(stderr, "sgemm_peak: %d^3, best of %d (c[1] = %g)\n", n, reps, c[1]);
    free(a);
    free(b);
    free(c);
    return 0;
}

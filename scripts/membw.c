/* membw.c - memory read bandwidth, for scripts/bench_infer.sh: every thread sums
 * its share of a large buffer (far larger than the caches); best of several
 * passes.  Prints GB/s (1e9 bytes).  Usage: membw [MiB] [passes] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 2048;
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    size_t n = mib * (1u << 20) / sizeof(float);
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) return 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int p = 0; p < passes; p++) {
        double t0 = now(), total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i += 16) {
            float s = 0;
            for (int j = 0; j < 16; j++) s += a[i + j];
            total += s;
        }
        double dt = now() - t0, gbs = n * sizeof(float) / dt / 1e9;
        sink += total;
        if (gbs > best) best = gbs;
    }
    printf("%.2f\n", best);
    fprintf(stderr, "membw: %zu MiB, %d threads, best of %d passes (checksum %g)\n", mib, omp_get_max_threads(),
            passes, sink);
    free(a);
    return 0;
}

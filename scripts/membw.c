/* membw.c - memory read bandwidth, for scripts/bench_infer.sh: every thread sums
 * its contiguous share of a buffer far larger than the caches, with 32
 * independent float accumulators (four AVX registers once vectorised) so that
 * the loop is limited by memory and not by the latency of one add chain.  Best
 * of several passes, for two buffers: one in ordinary 4 KiB pages (how the
 * page cache holds a memory-mapped checkpoint) and one advised to use 2 MiB
 * transparent huge pages (fewer TLB misses; the better of what this machine
 * can read).  Prints "GBPS_4K GBPS_HUGE" (1e9 bytes/s).
 * Usage: membw [MiB] [passes] */
#define _DEFAULT_SOURCE
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double measure(size_t n, int passes, int huge, double *sink) {
    float *a = aligned_alloc(2u << 20, n * sizeof(float));
    if (!a) return 0;
    madvise(a, n * sizeof(float), huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double best = 0;
    for (int p = 0; p < passes; p++) {
        double t0 = now(), total = 0;
#pragma omp parallel reduction(+ : total)
        {
            const size_t T = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
            const size_t lo = n / 32 * t / T * 32, hi = n / 32 * (t + 1) / T * 32;
            float acc[32] = {0};
            for (size_t i = lo; i < hi; i += 32)
                for (int j = 0; j < 32; j++) acc[j] += a[i + j];
            for (int j = 0; j < 32; j++) total += acc[j];
        }
        double gbs = (double)(n / 32 * 32) * sizeof(float) / (now() - t0) / 1e9;
        *sink += total;
        if (gbs > best) best = gbs;
    }
    free(a);
    return best;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 2048;
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    size_t n = mib * (1u << 20) / sizeof(float);
    double sink = 0;
    double small = measure(n, passes, 0, &sink), huge = measure(n, passes, 1, &sink);
    if (small <= 0 || huge <= 0) return 1;
    printf("%.2f %.2f\n", small, huge);
    fprintf(stderr, "membw: %zu MiB, %d threads, best of %d passes (checksum %g)\n", mib, omp_get_max_threads(), passes,
            sink);
    return 0;
}

/* threads.c - the default thread count from the machine's load (threads.h). */
#include "threads.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Only the CPUs this process may run on count: on a large machine others' work
 * on other cores takes nothing from us. */
int tl_cpu_sample_read(tl_cpu_sample *s) {
    cpu_set_t set;
    int have_set = sched_getaffinity(0, sizeof set, &set) == 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512];
    memset(s, 0, sizeof *s);
    while (fgets(line, sizeof line, f)) {
        int cpu;
        unsigned long long v[8] = {0};
        if (strncmp(line, "cpu", 3) || !(line[3] >= '0' && line[3] <= '9')) continue;
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) < 5)
            continue;
        if (have_set && (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set))) continue;
        /* user nice system idle iowait irq softirq steal: idle and iowait are not busy */
        unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        s->busy += busy;
        s->total += busy + v[3] + v[4];
        s->cpus++;
    }
    fclose(f);
    return s->cpus ? 0 : -1;
}

double tl_cpu_busy_cores(const tl_cpu_sample *a, const tl_cpu_sample *b) {
    if (b->total <= a->total || b->busy < a->busy) return 0;
    double frac = (double)(b->busy - a->busy) / (double)(b->total - a->total);
    if (frac > 1) frac = 1;
    return frac * b->cpus;
}

int tl_threads_for_load(int usable, double busy) {
    if (usable < 1) usable = 1;
    int n = usable - (int)floor(busy + 0.5);
    return n < 1 ? 1 : n;
}

int tl_cpus_usable(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int tl_threads_default(double seconds, double *busy) {
    int usable = tl_cpus_usable();
    tl_cpu_sample a, b;
    if (busy) *busy = -1;
    if (usable == 1 || tl_cpu_sample_read(&a)) return usable;
    struct timespec ts = {(time_t)seconds, (long)((seconds - floor(seconds)) * 1e9)};
    nanosleep(&ts, NULL); /* this process is idle meanwhile: what is busy is the others */
    if (tl_cpu_sample_read(&b)) return usable;
    double others = tl_cpu_busy_cores(&a, &b);
    if (busy) *busy = others;
    return tl_threads_for_load(usable, others);
}

void tl_threads_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", TL_OMP_SPIN_COUNT, 1) || setenv(TL_OMP_SPIN_MARK, TL_OMP_SPIN_COUNT, 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("GOMP_SPINCOUNT");
    unsetenv(TL_OMP_SPIN_MARK);
}

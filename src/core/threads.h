/* threads.h - how many threads to use by default.
 *
 * OpenMP regions end in barriers: with as many threads as cores, a core taken by
 * another process stalls every region until the descheduled thread runs again,
 * and speed collapses (measured: training at a third, the prompt pass at 1/60)
 * rather than halving.  So the default is the cores this process may run on minus
 * the cores other processes keep busy, measured from /proc/stat when the program
 * starts. */
#ifndef TL_THREADS_H
#define TL_THREADS_H

#include <stddef.h>

/* Cumulative CPU time of the CPUs this process may run on (clock ticks). */
typedef struct {
    unsigned long long busy, total;
    int cpus; /* CPUs counted in the sample */
} tl_cpu_sample;

/* Reads /proc/stat; -1 where it is unavailable. */
int tl_cpu_sample_read(tl_cpu_sample *s);
/* Cores kept busy between two samples (0 .. cpus). */
double tl_cpu_busy_cores(const tl_cpu_sample *before, const tl_cpu_sample *after);
/* The thread count for `usable` cores of which `busy` are taken by others:
 * usable - round(busy), at least 1. */
int tl_threads_for_load(int usable, double busy);
/* The cores this process may run on (its affinity mask). */
int tl_cpus_usable(void);
/* Samples the machine for `seconds` and returns the default thread count; *busy
 * (may be NULL) gets the cores that others kept busy (-1 if unknown). */
int tl_threads_default(double seconds, double *busy);

/* OpenMP threads that reach a barrier first spin this many times before they
 * sleep (libgomp's GOMP_SPINCOUNT).  libgomp's default, 300,000, assumes every
 * thread has a core of its own: when another process holds one of them, the
 * threads that arrived first burn their cores spinning while the late one waits
 * for CPU time, at every barrier (measured beside other jobs: training 3-5x,
 * decode 6-19x slower; a unit test's batched decode 49 s instead of 4.5 s;
 * docs/benchmarks.md "Threads on a shared machine").  A short spin keeps an idle machine's speed and sleeps soon on a
 * shared one. */
#define TL_OMP_SPIN_COUNT "10000"
/* Set beside GOMP_SPINCOUNT to the same value when the spin is this program's
 * choice rather than the user's (`info --cpu` tells them apart). */
#define TL_OMP_SPIN_MARK "TL_GOMP_SPINCOUNT_CHOSEN"

/* libgomp reads its wait policy once, when it loads, before main runs: so a
 * program's main calls this first.  Unless the user chose a policy
 * (OMP_WAIT_POLICY or GOMP_SPINCOUNT set, which the second run also sees), it
 * sets GOMP_SPINCOUNT (and TL_OMP_SPIN_MARK) to TL_OMP_SPIN_COUNT and runs the program again (execv of
 * /proc/self/exe with the same argv); it returns only where that is not needed
 * or the exec failed (the program then carries on with libgomp's default). */
void tl_threads_wait_policy(char **argv);

#endif

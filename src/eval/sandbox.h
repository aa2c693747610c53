/* sandbox.h - running untrusted programs (HumanEval completions) in a separate
 * process: wall-clock and CPU time limits, address-space, file-size and
 * process-count limits, no core dumps, a fresh scratch directory (removed
 * afterwards) as the working directory, an environment of only PATH, HOME,
 * LANG, and, where the kernel allows it, new network, PID and mount namespaces
 * (no network; every process it started dies with it; a private /tmp,
 * /var/tmp and /dev/shm).  Running as root, the program runs as the
 * unprivileged user nobody (so the process-count limit applies and it cannot
 * write outside world-writable places, which the mount namespace replaces). */
#ifndef TL_SANDBOX_H
#define TL_SANDBOX_H

#include <stddef.h>

#include "common.h"

typedef struct {
    double timeout_s;   /* wall clock (default 3 s, as lm-eval's code_eval); CPU: ceil + 1 */
    long mem_bytes;     /* RLIMIT_AS (default 1 GiB) */
    long fsize_bytes;   /* RLIMIT_FSIZE (default 16 MiB) */
    long nproc;         /* RLIMIT_NPROC (default 64) */
} tl_sandbox_limits;

typedef enum {
    TL_SBX_PASSED,   /* exit status 0 */
    TL_SBX_FAILED,   /* a non-zero exit status */
    TL_SBX_TIMEOUT,  /* killed at the wall-clock limit */
    TL_SBX_SIGNALED, /* killed by a signal (CPU limit, memory, ...) */
} tl_sandbox_outcome;

/* "passed", "failed", "timed out", "killed by a signal" */
const char *tl_sandbox_outcome_name(tl_sandbox_outcome o);

typedef struct {
    tl_sandbox_outcome outcome;
    int status;         /* exit status or signal number */
    double seconds;
    char output[1024];  /* the start of its stdout + stderr */
    /* which isolation held, e.g. "netns pidns mntns uid=nobody rlimits" */
    char isolation[128];
} tl_sandbox_result;

/* Runs argv (argv[0] an absolute path) in a scratch directory holding `file`
 * (file_name, e.g. "prog.py") with the program text; limits NULL: defaults.
 * Returns -1 only when the sandbox itself could not be set up (err). */
int tl_sandbox_run(const char *const *argv, const char *file_name, const char *text, size_t len,
                   const tl_sandbox_limits *limits, tl_sandbox_result *res, tl_error *err);

#endif

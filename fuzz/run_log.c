/* fuzz/run_log.c - tl_run_log_parse (a training run's log.jsonl, read by `plot`) on
 * arbitrary text: it must refuse with a message naming the file, or accept a log whose
 * points are finite and whose validation points name a known set; an accepted small
 * log is also drawn (the axes must cope with any finite range). */
#include <math.h>
#include <stdlib.h>

#include "fuzz_util.h"
#include "plot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tl_run_log log;
    tl_error err;
    if (tl_run_log_parse((const char *)data, size, "log.jsonl", &log, &err)) {
        if (strncmp(err.msg, "log.jsonl", 9)) abort();
        fz_refused(err.msg);
        tl_run_log_free(&log);
        return 0;
    }
    fz_accepted();
    if (log.n_steps < 1 || log.n_val_sets > TL_PLOT_MAX_VAL_SETS) abort();
    for (int i = 0; i < log.n_steps; i++)
        if (!isfinite(log.steps[i].tokens) || !isfinite(log.steps[i].loss) || !isfinite(log.steps[i].lr) ||
            !isfinite(log.steps[i].tokens_per_s) || log.steps[i].phase < -1 || log.steps[i].phase >= log.n_phases)
            abort();
    for (int i = 0; i < log.n_vals; i++)
        if (!isfinite(log.vals[i].tokens) || !isfinite(log.vals[i].loss) || log.vals[i].set < 0 ||
            log.vals[i].set >= log.n_val_sets)
            abort();
    if (log.n_steps + log.n_vals <= 64) { /* drawing is slow: small logs only */
        char path[600];
        snprintf(path, sizeof path, "%s/plot.svg", fz_scratch());
        if (tl_plot_runs(&log, 1, path, &err) && !err.msg[0]) abort();
    }
    tl_run_log_free(&log);
    return 0;
}

/* plot.h - a training run's metrics log (log.jsonl) read back, and drawn: training and
 * validation loss, learning rate and throughput against tokens seen, one colour per run,
 * into a PNG or an SVG (cairo). */
#ifndef TL_PLOT_H
#define TL_PLOT_H

#include <stddef.h>

#include "common.h"

#define TL_PLOT_MAX_VAL_SETS 8
#define TL_PLOT_MAX_PHASES 16

typedef struct {
    double tokens, loss, lr, tokens_per_s;
    int phase; /* index into phase[], -1 without phases */
} tl_log_step;

typedef struct {
    double tokens, loss;
    int set; /* index into val_set[] */
} tl_log_val;

typedef struct {
    char name[256];  /* the legend's label */
    tl_log_step *steps;
    int n_steps;
    tl_log_val *vals;
    int n_vals;
    char val_set[TL_PLOT_MAX_VAL_SETS][64]; /* "" is the plain --val-data set */
    int n_val_sets;
    char phase[TL_PLOT_MAX_PHASES][64]; /* a recipe's phases, in the order they first appear */
    int n_phases;
} tl_run_log;

/* Parses a log.jsonl held in text[0..len): step lines (loss, lr, tokens_per_s, tokens)
 * (and their recipe phase) and validation lines (val_loss, optionally val_set, placed at the tokens of their
 * step); skipped steps and other lines are passed over.  `file` names the input in
 * errors, as "file:line: ...".  Free with tl_run_log_free, also after an error. */
int tl_run_log_parse(const char *text, size_t len, const char *file, tl_run_log *log, tl_error *err);
/* The same from a file: a run directory (its log.jsonl) or the log itself. */
int tl_run_log_read(const char *path, tl_run_log *log, tl_error *err);
void tl_run_log_free(tl_run_log *log);

/* Draws the runs into out_path: .svg gives an SVG, .png a PNG. */
int tl_plot_runs(const tl_run_log *runs, int n_runs, const char *out_path, tl_error *err);

#endif

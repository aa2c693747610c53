/* cmd_plot.c - `tinyllama plot RUN [RUN...]`: training and validation loss, learning rate
 * and throughput against tokens of one or more runs' log.jsonl, into a PNG or an SVG. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot.h"

#define MAX_RUNS 16

static void help(void) {
    printf("usage: tinyllama plot RUN [RUN...] [--out FILE.png|FILE.svg]\n\n"
           "Draws the training loss (solid) and validation loss (dashed, one line per validation set),\n"
           "the learning rate and the throughput (tokens/s) against tokens seen, one colour per run.\n"
           "RUN is a `train --out` directory (its log.jsonl is read) or a log.jsonl itself; up to %d.\n\n"
           "  --out FILE     the picture; its extension picks PNG or SVG (default: plot.png, or\n"
           "                 RUN/plot.png for a single run directory)\n",
           MAX_RUNS);
}

int cmd_plot(int argc, char **argv) {
    const char *out = NULL;
    const cli_option opts[] = {CLI_OPT_STR("--out", &out)};
    const char *pos[MAX_RUNS + 1];
    int n_pos = 0;
    int rc = cli_parse("plot", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, MAX_RUNS + 1, &n_pos);
    if (rc == CLI_HELP) {
        help();
        return 0;
    }
    if (rc) return rc;
    if (n_pos < 1) {
        cli_error("plot", "no run given (usage: tinyllama plot RUN [RUN...] [--out FILE.png|.svg])");
        return 2;
    }
    if (n_pos > MAX_RUNS) {
        cli_error("plot", "at most %d runs in one plot", MAX_RUNS);
        return 2;
    }
    char def[4096];
    if (!out) {
        FILE *f = NULL;
        snprintf(def, sizeof def, "%s/log.jsonl", pos[0]);
        if (n_pos == 1 && (f = fopen(def, "r"))) snprintf(def, sizeof def, "%s/plot.png", pos[0]);
        else snprintf(def, sizeof def, "plot.png");
        if (f) fclose(f);
        out = def;
    }
    tl_run_log runs[MAX_RUNS];
    tl_error err;
    int n = 0;
    rc = 0;
    for (; n < n_pos; n++)
        if (tl_run_log_read(pos[n], &runs[n], &err)) {
            tl_run_log_free(&runs[n]);
            cli_error("plot", "%s", err.msg);
            rc = 1;
            break;
        }
    if (!rc && tl_plot_runs(runs, n, out, &err)) {
        cli_error("plot", "%s", err.msg);
        rc = 1;
    }
    if (!rc) {
        int steps = 0;
        for (int i = 0; i < n; i++) steps += runs[i].n_steps;
        fprintf(stderr, "plot: %d run(s), %d steps -> %s\n", n, steps, out);
    }
    for (int i = 0; i < n; i++) tl_run_log_free(&runs[i]);
    return rc;
}

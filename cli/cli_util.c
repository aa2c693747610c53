/* cli_util.c - small option-parsing helpers shared by the commands. */
#include "cli.h"

#include "ops.h"
#include "threads.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "tinyllama %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_parse_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        cli_error(cmd, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *val, double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v)) {
        cli_error(cmd, "%s expects a number, got '%s'", opt, val);
        return -1;
    }
    *out = v;
    return 0;
}

/* The option argv[i] names (exact, or before '='), else NULL. */
static const cli_option *find_option(const char *a, const cli_option *opts, int n, const char **eq_val) {
    for (int k = 0; k < n; k++) {
        size_t len = strlen(opts[k].name);
        if (strncmp(a, opts[k].name, len)) continue;
        if (a[len] == '\0') {
            *eq_val = NULL;
            return &opts[k];
        }
        if (a[len] == '=' && opts[k].kind != CLI_FLAG) { /* a flag takes no value: `--quiet=1` is unknown */
            *eq_val = a + len + 1;
            return &opts[k];
        }
    }
    return NULL;
}

/* A word that is not an option goes to pos[] when it does not look like one:
 * no leading '-', or "-" alone (standard input); with `text`, any word not
 * starting with "--" (free text such as a prompt may start with '-'). */
static int positional(const char *a, int text) {
    return a[0] != '-' || !a[1] || (text && a[1] != '-');
}

static int parse(const char *cmd, int argc, char **argv, const cli_option *opts, int n, const char **pos, int max_pos,
                 int *n_pos, int text) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return CLI_HELP;
        const cli_option *o = find_option(a, opts, n, &v);
        if (!o) {
            if (pos && positional(a, text) && *n_pos < max_pos) {
                pos[(*n_pos)++] = a;
                continue;
            }
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            return 2;
        }
        if (o->kind == CLI_FLAG) {
            if (!o->fn) {
                *(int *)o->dst = 1;
            } else if (o->fn(cmd, NULL, o->dst)) {
                return 2;
            }
            continue;
        }
        if (!v && o->kind == CLI_CALL && o->optional) {
            if (i + 1 < argc && argv[i + 1][0] != '-') v = argv[++i]; /* else absent: NULL */
        } else if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tinyllama: option %s needs a value\n", o->name);
                return 2;
            }
            v = argv[++i];
        }
        switch (o->kind) {
        case CLI_INT:
            if (cli_parse_int(cmd, o->name, v, o->lo, o->hi, o->dst)) return 2;
            break;
        case CLI_DOUBLE:
            if (cli_parse_double(cmd, o->name, v, o->dst)) return 2;
            break;
        case CLI_STR:
            *(const char **)o->dst = v;
            break;
        case CLI_LIST:
            if (*o->count >= o->hi) {
                cli_error(cmd, "%s", o->full);
                return 2;
            }
            ((const char **)o->dst)[(*o->count)++] = v;
            break;
        case CLI_CALL:
            if (o->fn(cmd, v, o->dst)) return 2;
            break;
        case CLI_FLAG:
            break;
        }
    }
    return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, const cli_option *opts, int n, const char **pos, int max_pos,
              int *n_pos) {
    return parse(cmd, argc, argv, opts, n, pos, max_pos, n_pos, 0);
}

int cli_parse_text(const char *cmd, int argc, char **argv, const cli_option *opts, int n, const char **pos,
                   int max_pos, int *n_pos) {
    return parse(cmd, argc, argv, opts, n, pos, max_pos, n_pos, 1);
}

void cli_threads(const char *cmd, long requested) {
    if (requested > 0) {
        tl_set_threads((int)requested);
        return;
    }
    double busy;
    int usable = tl_cpus_usable(), n = tl_threads_default(0.1, &busy);
    if (n < usable)
        fprintf(stderr, "tinyllama %s: %d of %d threads: other processes keep %.1f cores busy (--threads %d uses all)\n",
                cmd, n, usable, busy, usable);
    tl_set_threads(n);
}

double cli_datasheet_peak(const char *desc) {
    if (strstr(desc, "H200") || strstr(desc, "H100 80GB HBM3") || strstr(desc, "H100 SXM")) return 989.4;
    if (strstr(desc, "H100 PCIe") || strstr(desc, "H100")) return 756.0;
    if (strstr(desc, "A100")) return 312.0;
    if (strstr(desc, "L40S")) return 362.0;
    return 0.0;
}

/* cli.h - the `tinyllama <command>` entry points and shared option helpers.
 * Each command lives in cli/cmd_<name>.c, parses its own options, prints, and
 * returns the process exit code (0 ok, 1 runtime error, 2 usage error). */
#ifndef TL_CLI_H
#define TL_CLI_H

#include <stdio.h>

int cmd_train(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cli_info_gguf(const char *path, int full); /* cli/cmd_info_gguf.c: info --gguf */
int cmd_convert(int argc, char **argv);         /* cli/cmd_convert.c */
int cli_convert_to_gguf(int argc, char **argv); /* cli/cmd_quantize.c: convert --to-gguf */
int cmd_quantize(int argc, char **argv);        /* cli/cmd_quantize.c */
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);       /* info | train */
int cmd_tokenizer_train(int argc, char **argv); /* cli/cmd_tokenizer_train.c */
int cmd_generate(int argc, char **argv);        /* cli/cmd_generate.c */
int cmd_chat(int argc, char **argv);            /* cli/cmd_generate.c */
int cmd_perplexity(int argc, char **argv);      /* cli/cmd_perplexity.c */
int cmd_serve(int argc, char **argv);           /* cli/cmd_serve.c */
int cmd_plot(int argc, char **argv);            /* cli/cmd_plot.c */

/* Option parsing helpers: on a bad value they print "tinyllama CMD: ..." and return -1. */
int cli_parse_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out);
int cli_parse_double(const char *cmd, const char *opt, const char *val, double *out);
/* Table-driven option parsing: each command lists its options once, and
 * cli_parse walks argv in order, so the first bad option is the one reported. */
typedef enum {
    CLI_FLAG,   /* no value; sets *(int *)dst = 1, or calls fn(cmd, NULL, dst) when fn is set */
    CLI_INT,    /* *(long *)dst, in [lo, hi] */
    CLI_DOUBLE, /* *(double *)dst, finite */
    CLI_STR,    /* *(const char **)dst */
    CLI_LIST,   /* appended to (const char **)dst, at most hi of them, *count so far; `full` when over */
    CLI_CALL,   /* fn(cmd, value, dst); with `optional` the value may be absent (NULL) */
} cli_kind;
typedef struct {
    const char *name;
    cli_kind kind;
    void *dst;
    long lo, hi;
    int *count;                                         /* CLI_LIST */
    const char *full;                                   /* CLI_LIST: the message when it is full */
    int (*fn)(const char *cmd, const char *val, void *dst); /* CLI_CALL, CLI_FLAG: 0, or -1 after saying why */
    int optional; /* CLI_CALL: the value is `--opt=V` or a next word not starting with '-', else absent */
    const char *help; /* optional one-line description */
} cli_option;
/* Table entries; the `1 ? dst : (T *)0` makes a destination of the wrong type a compile warning. */
#define CLI_OPT_FLAG(nm, d) {.name = (nm), .kind = CLI_FLAG, .dst = (1 ? (d) : (int *)0)}
#define CLI_OPT_INT(nm, d, l, h) {.name = (nm), .kind = CLI_INT, .dst = (1 ? (d) : (long *)0), .lo = (l), .hi = (h)}
#define CLI_OPT_DOUBLE(nm, d) {.name = (nm), .kind = CLI_DOUBLE, .dst = (1 ? (d) : (double *)0)}
#define CLI_OPT_STR(nm, d) {.name = (nm), .kind = CLI_STR, .dst = (1 ? (d) : (const char **)0)}
#define CLI_OPT_LIST(nm, d, cap, cnt, msg) \
    {.name = (nm), .kind = CLI_LIST, .dst = (1 ? (d) : (const char **)0), .hi = (cap), .count = (cnt), .full = (msg)}
#define CLI_OPT_FLAG_CALL(nm, f, d) {.name = (nm), .kind = CLI_FLAG, .dst = (d), .fn = (f)}
#define CLI_OPT_CALL(nm, f, d, opt) {.name = (nm), .kind = CLI_CALL, .dst = (d), .fn = (f), .optional = (opt)}
#define CLI_HELP (-1) /* cli_parse saw --help / -h: the caller prints its help and exits 0 */
/* Parses argv[1..argc-1] against opts[0..n-1]: `--opt value` and `--opt=value`;
 * words not starting with '-', and "-" alone, go to pos[] (up to max_pos, counted
 * in *n_pos; pos NULL takes none).  Returns 0, CLI_HELP, or 2 (usage error,
 * already printed). */
int cli_parse(const char *cmd, int argc, char **argv, const cli_option *opts, int n, const char **pos, int max_pos,
              int *n_pos);
/* As cli_parse, but every word not starting with "--" (other than -h) goes to
 * pos[]: free text, such as a prompt, may start with '-'. */
int cli_parse_text(const char *cmd, int argc, char **argv, const cli_option *opts, int n, const char **pos,
                   int max_pos, int *n_pos);

/* Sets the thread count: `requested` if > 0, else the usable cores minus those
 * other processes keep busy (src/core/threads.h), saying so when it is fewer. */
void cli_threads(const char *cmd, long requested);

/* Set, with GOMP_SPINCOUNT, to the spin count main() chose when the environment
 * named no OpenMP wait policy (cli/main.c); `info --cpu` reports it. */
#define CLI_SPIN_MARK "TL_GOMP_SPINCOUNT_CHOSEN"

/* Dense bf16 datasheet peak (TFLOP/s) of a GPU from its name (`bench`, `train`'s MFU); 0 if unknown. */
double cli_datasheet_peak(const char *desc);

/* Prints "tinyllama <cmd>: <msg>" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

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
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);       /* info | train */
int cmd_tokenizer_train(int argc, char **argv); /* cli/cmd_tokenizer_train.c */
int cmd_generate(int argc, char **argv);        /* cli/cmd_generate.c */
int cmd_chat(int argc, char **argv);            /* cli/cmd_generate.c */
int cmd_perplexity(int argc, char **argv);      /* cli/cmd_perplexity.c */

/* Option parsing helpers: on a bad value they print "tinyllama CMD: ..." and return -1. */
int cli_parse_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out);
int cli_parse_double(const char *cmd, const char *opt, const char *val, double *out);
/* True if argv[i] is opt; consumes its value into *val (error if missing). */
int cli_opt(int argc, char **argv, int *i, const char *opt, const char **val, int *bad);
/* The model and batch options both `bench` commands (CPU, CUDA) take. */
typedef struct {
    const char *preset, *config;
    long batch, seq, steps;
} cli_bench_opts;
/* If argv[i] is one of --preset, --config, --batch, --seq-len, --steps: consumes it
 * (and its value) and returns 1, setting *bad on a bad value; else returns 0. */
int cli_bench_opt(int argc, char **argv, int *i, cli_bench_opts *o, int *bad);

/* Sets the thread count: `requested` if > 0, else the usable cores minus those
 * other processes keep busy (src/core/threads.h), saying so when it is fewer. */
void cli_threads(const char *cmd, long requested);

/* Prints "tinyllama <cmd>: <msg>" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

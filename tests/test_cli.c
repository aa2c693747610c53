/* test_cli.c - the CLI's table-driven option parser (cli/cli_util.c: cli_parse). */
#include "cli.h"
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    long steps;
    double lr;
    const char *out, *paths[2], *opt_val;
    int n_paths, quiet, calls;
    int text; /* parse with cli_parse_text */
} dests;

/* records the value of an optional-value callback (NULL when absent) */
static int record(const char *cmd, const char *val, void *dst) {
    (void)cmd;
    dests *d = dst;
    d->calls++;
    d->opt_val = val;
    return 0;
}

/* Runs cli_parse over the NULL-terminated words (argv[0] is the command), with
 * stderr captured into msg. */
/* a flag that calls: --no-quiet undoes --quiet, the later one wins */
static int unquiet(const char *cmd, const char *val, void *dst) {
    (void)cmd;
    ((dests *)dst)->quiet = val ? -1 : 0; /* -1: a value reached a flag */
    return 0;
}

static int parse(dests *d, const char **pos, int max_pos, int *n_pos, char *msg, size_t cap, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "test";
    va_list ap;
    va_start(ap, cap);
    for (char *w; (w = va_arg(ap, char *)) && argc < 32;) argv[argc++] = w;
    va_end(ap);
    const cli_option opts[] = {
        CLI_OPT_INT("--steps", &d->steps, 1, 10),
        CLI_OPT_DOUBLE("--lr", &d->lr),
        CLI_OPT_STR("--out", &d->out),
        CLI_OPT_LIST("--data", d->paths, 2, &d->n_paths, "too many --data paths"),
        CLI_OPT_LIST("--data-extra", d->paths, 2, &d->n_paths, "too many --data paths"),
        CLI_OPT_FLAG("--quiet", &d->quiet),
        CLI_OPT_CALL("--resume", record, d, 1),
        CLI_OPT_FLAG_CALL("--no-quiet", unquiet, d),
    };
    fflush(stderr);
    FILE *cap_f = tmpfile();
    int saved = dup(2);
    dup2(fileno(cap_f), 2);
    int rc = (d->text ? cli_parse_text : cli_parse)("test", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos,
                                                    max_pos, n_pos);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(cap_f);
    size_t n = fread(msg, 1, cap - 1, cap_f);
    msg[n] = '\0';
    fclose(cap_f);
    return rc;
}

static void test_values(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--steps", "7", "--lr=0.25", "--out", "o", "--data=a", "--data-extra",
                "b", "--quiet", NULL) == 0);
    CHECK(d.steps == 7 && d.lr == 0.25 && d.out && !strcmp(d.out, "o") && d.quiet == 1);
    CHECK(d.n_paths == 2 && !strcmp(d.paths[0], "a") && !strcmp(d.paths[1], "b")); /* --data-extra is not --data */
    CHECK(msg[0] == '\0');
}

static void test_errors(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--steps", "11", NULL) == 2 && d.steps == 0);
    CHECK_MSG(strstr(msg, "tinyllama test: --steps expects an integer in [1, 10], got '11'"), "got: %s", msg);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--lr", "fast", NULL) == 2);
    CHECK_MSG(strstr(msg, "--lr expects a number, got 'fast'"), "got: %s", msg);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--quiet", "--steps", NULL) == 2);
    CHECK_MSG(!strcmp(msg, "tinyllama: option --steps needs a value\n"), "got: %s", msg);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--stepz", "3", NULL) == 2);
    CHECK_MSG(!strcmp(msg, "tinyllama test: unknown option '--stepz' (see --help)\n"), "got: %s", msg);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--quiet=1", NULL) == 2); /* a flag takes no value */
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "word", NULL) == 2); /* no positionals taken */
    d.n_paths = 0;
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--data", "a", "--data", "b", "--data", "c", NULL) == 2);
    CHECK_MSG(strstr(msg, "too many --data paths") && d.n_paths == 2, "got: %s", msg);
}

static void test_help_in_order(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--steps", "3", "--help", NULL) == CLI_HELP);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "-h", "--bogus", NULL) == CLI_HELP);
    /* the first problem is the one reported: a bad option before --help */
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--bogus", "--help", NULL) == 2);
    /* --help as an option's value is that value */
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--out", "--help", NULL) == 0 && !strcmp(d.out, "--help"));
}

static void test_optional_value(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--resume", "--steps", "2", NULL) == 0);
    CHECK(d.calls == 1 && d.opt_val == NULL && d.steps == 2);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--resume", "dir", NULL) == 0 && d.opt_val && !strcmp(d.opt_val, "dir"));
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--resume=x", NULL) == 0 && d.opt_val && !strcmp(d.opt_val, "x"));
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--resume", NULL) == 0 && d.opt_val == NULL && d.calls == 4);
}

static void test_positionals(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    const char *pos[2];
    int n_pos = 0;
    CHECK(parse(&d, pos, 2, &n_pos, msg, sizeof msg, "a", "--quiet", "b", NULL) == 0);
    CHECK(n_pos == 2 && !strcmp(pos[0], "a") && !strcmp(pos[1], "b") && d.quiet);
    n_pos = 0;
    CHECK(parse(&d, pos, 2, &n_pos, msg, sizeof msg, "a", "b", "c", NULL) == 2);
    CHECK_MSG(strstr(msg, "unknown option 'c'"), "got: %s", msg);
}

static void test_flag_call(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--quiet", "--no-quiet", NULL) == 0 && d.quiet == 0);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--no-quiet", "--quiet", NULL) == 0 && d.quiet == 1);
    /* a flag takes no value: the next word is not its value */
    const char *pos[1];
    int n_pos = 0;
    CHECK(parse(&d, pos, 1, &n_pos, msg, sizeof msg, "--no-quiet", "word", NULL) == 0 && d.quiet == 0 && n_pos == 1);
    CHECK(parse(&d, NULL, 0, NULL, msg, sizeof msg, "--no-quiet=1", NULL) == 2);
    CHECK_MSG(strstr(msg, "unknown option '--no-quiet=1'"), "got: %s", msg);
}

static void test_dash_words(tl_test_ctx *t) {
    dests d = {0};
    char msg[512];
    const char *pos[3];
    int n_pos = 0;
    /* "-" alone (standard input) is a word; "-x" looks like an option */
    CHECK(parse(&d, pos, 3, &n_pos, msg, sizeof msg, "-", "a", NULL) == 0 && n_pos == 2 && !strcmp(pos[0], "-"));
    n_pos = 0;
    CHECK(parse(&d, pos, 3, &n_pos, msg, sizeof msg, "-x", NULL) == 2);
    CHECK_MSG(strstr(msg, "unknown option '-x'"), "got: %s", msg);
    /* free text: anything not starting with "--" is a word, -h still asks for help */
    d.text = 1;
    n_pos = 0;
    CHECK(parse(&d, pos, 3, &n_pos, msg, sizeof msg, "-5 degrees", "--quiet", "-", NULL) == 0);
    CHECK(n_pos == 2 && !strcmp(pos[0], "-5 degrees") && !strcmp(pos[1], "-") && d.quiet == 1);
    n_pos = 0;
    CHECK(parse(&d, pos, 3, &n_pos, msg, sizeof msg, "--x", NULL) == 2);
    CHECK(parse(&d, pos, 3, &n_pos, msg, sizeof msg, "a", "-h", NULL) == CLI_HELP);
}

const tl_test tests_cli[] = {
    {"cli/flag_call", test_flag_call},
    {"cli/dash_words", test_dash_words},
    {"cli/values", test_values},
    {"cli/errors", test_errors},
    {"cli/help_in_order", test_help_in_order},
    {"cli/optional_value", test_optional_value},
    {"cli/positionals", test_positionals},
    {NULL, NULL},
};

/* eval_internal.h - shared by the task readers (eval_tasks.c, eval_mc.c, eval_gen.c): building
 * a task's docs and requests, and tokenizing them. */
#ifndef TL_EVAL_INTERNAL_H
#define TL_EVAL_INTERNAL_H

#include "eval.h"

/* A growing string: appends never fail loudly, an allocation failure sets oom
 * and the text is then dropped (checked once at the end). */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} tl_sbuf;

void tl_sb_add(tl_sbuf *b, const char *s, size_t n);
void tl_sb_str(tl_sbuf *b, const char *s);
/* The string (owned by the caller; "" when nothing was added) or NULL when out
 * of memory. */
char *tl_sb_take(tl_sbuf *b);

typedef struct {
    tl_eval_task *t;
    int cap_docs, cap_reqs;
    const char *what; /* the file being read, for errors */
    int line;         /* its current line */
    int subject;      /* the subject index new docs get */
    tl_error *err;
} tl_eval_builder;

/* Fails with "what:line: message". */
int tl_eval_bfail(tl_eval_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds a doc whose requests are (contexts[i], " " + conts[i]); choices[i] give
 * the acc_norm lengths; gold is the index of the right choice. Copies strings. */
int tl_eval_add_doc(tl_eval_builder *b, int n, const char *const *contexts, const char *const *conts,
                    const char *const *choices, int gold);
/* Tokenizes every request as the harness does (t->tok_mode). */
int tl_eval_tokenize_all(tl_eval_task *t, const tl_tokenizer *tok, const char *what, tl_error *err);

/* The few-shot multiple-choice benchmarks (eval_mc.c): `dir` is the release's
 * data directory; tok NULL: prompts only, not tokenized. */
tl_eval_task *tl_eval_mc_load(tl_task_kind kind, const char *dir, int n_shot, long limit,
                              const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err);
/* Per-subject, per-group and overall metrics of a multi-subject task, after
 * tl_eval_run_backend filled r->pred / r->pred_norm. */
int tl_eval_mc_aggregate(const tl_eval_task *t, tl_eval_result *r, const double *acc, const double *accn,
                         tl_error *err);

/* The harness's pooled_sample_stderr: the stderr of a size-weighted group mean
 * from its k members' stderrs and sizes (members of size 0 are left out). */
double tl_eval_pooled_stderr(const double *se, const int *n, int k);

#endif

/* eval_gen.h - generation-based benchmarks scored as lm-evaluation-harness
 * scores them: BIG-Bench Hard (3-shot, answer only; exact match) and HumanEval
 * (0-shot completion; pass@1 by running the program in the sandbox) and DROP
 * (3-shot, shots drawn as the harness draws them; exact match and F1).  Greedy
 * decoding on the KV-cache inference engine with the harness's stop strings,
 * context truncation and decoding; shared few-shot prefixes stay in the cache. */
#ifndef TL_EVAL_GEN_H
#define TL_EVAL_GEN_H

#include "eval.h"
#include "eval_drop.h"
#include "infer.h"
#include "sandbox.h"

typedef struct {
    char *context;   /* the harness's prompt */
    int *ids;        /* its tokens (BOS first), before truncation */
    int n_ids;
    char *target;    /* BBH: the answer; HumanEval: test + "\ncheck(entry_point)" */
    char *prompt;    /* HumanEval: the problem's prompt, which the program starts with */
    char *name;      /* HumanEval: task_id; DROP: query_id */
    tl_drop_answer *answers; /* DROP: the distinct gold answers */
    int n_answers;
    int line;        /* line in the data file (BBH: index in "examples") */
    int subject;
} tl_gen_doc;

typedef struct {
    tl_task_kind kind;
    int n_docs;
    tl_gen_doc *docs;
    int n_subjects;
    char **subjects, **subject_files;
    const char *const *stops; /* the harness's `until` (with the EOS string), static */
    int n_stops;
    int max_gen_toks;
} tl_gen_task;

/* BBH: `data` is the BIG-Bench-Hard repository root (bbh/TASK.json and
 * cot-prompts/TASK.txt); HumanEval: HumanEval.jsonl or .jsonl.gz; DROP:
 * drop_dataset_dev.json (or the folder holding it), the shots from
 * drop_dataset_train.json beside it.  limit: per BBH task, or problems/questions. */
tl_gen_task *tl_gen_task_load(tl_task_kind kind, const char *data, long limit, const tl_tokenizer *tok,
                              tl_error *err);
void tl_gen_task_free(tl_gen_task *t);

typedef struct {
    /* HumanEval: the interpreter (absolute path; NULL: /usr/bin/python3) and limits */
    const char *python;
    tl_sandbox_limits limits;
    int no_exec;  /* generate only (pass@1 not computed) */
    void (*progress)(void *user, long done, long total, double elapsed);
    void *progress_user;
} tl_gen_eval_opts;

typedef struct {
    int n;
    char **completion;  /* [n_docs] the generated text, cut at the first stop string */
    int **gen_ids;      /* [n_docs] generated ids (up to where generation stopped) */
    int *n_gen;
    double *score;      /* [n_docs] exact match, passed (HumanEval), or F1 (DROP) */
    double *em;         /* DROP: [n_docs] exact match */
    double em_metric, em_stderr;
    int *outcome;       /* HumanEval: tl_sandbox_outcome per problem */
    double metric, metric_stderr; /* exact_match or pass@1 (BBH: size-weighted, pooled stderr) */
    double *subj_metric, *subj_stderr;
    int *subj_n;
    char isolation[128]; /* HumanEval: what the sandbox had */
    long tokens_generated, tokens_prefilled;
    double seconds, exec_seconds;
} tl_gen_result;

/* The metric's name: "exact_match", "pass@1" or "f1" (DROP; its "em" is in em_metric). */
const char *tl_gen_metric_name(tl_task_kind k);

int tl_gen_run(const tl_gen_task *t, const tl_infer_model *m, const tl_tokenizer *tok, const tl_gen_eval_opts *o,
               tl_gen_result *r, tl_error *err);
void tl_gen_result_free(tl_gen_result *r);
/* HumanEval's program for problem d: prompt + completion + "\n" + test + "\ncheck(entry_point)"
 * (malloc'ed), as the harness's code_eval assembles it. */
char *tl_gen_humaneval_program(const tl_gen_doc *d, const char *completion);
char *tl_gen_result_json(const tl_gen_task *t, const tl_gen_result *r, int samples);

#endif

/* eval_gen.h - generation-based benchmarks scored as lm-evaluation-harness
 * scores them: BIG-Bench Hard (3-shot, answer only; exact match) and HumanEval
 * (0-shot completion; pass@1 by running the program in the sandbox) and DROP
 * (3-shot, shots drawn as the harness draws them; exact match and F1).  Greedy
 * decoding on the KV-cache inference engine with the harness's stop strings,
 * context truncation and decoding; shared few-shot prefixes stay in the cache.
 * Several requests decode together (tl_infer_decode_batch), each on its own
 * cache; a request's tokens do not depend on the batch size.  HumanEval can
 * also sample several completions per problem for pass@k. */
#ifndef TL_EVAL_GEN_H
#define TL_EVAL_GEN_H

#include "eval.h"
#include "eval_drop.h"
#include "infer.h"
#include "sampler.h"
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
    int batch;    /* requests decoded together (0: 8) */
    /* HumanEval pass@k: n_samples completions per problem (0: 1), drawn with
     * temperature / top_p (temperature 0: greedy); request j of the run
     * (problem j / n_samples) draws from its own stream seeded by (seed, j),
     * so the draws do not depend on the batch */
    int n_samples;
    float temperature, top_p;
    uint64_t seed;
    int n_pass_k;       /* the k of the pass@k to report (none: 1, 10, 100 up to n_samples) */
    int pass_k[16];
    void (*progress)(void *user, long done, long total, double elapsed);
    void *progress_user;
} tl_gen_eval_opts;

typedef struct {
    int n;
    int n_samples;      /* completions per doc (1 but for sampled HumanEval) */
    /* per request, doc i's sample s at i * n_samples + s: */
    char **completion;  /* the generated text, cut at the first stop string */
    int **gen_ids;      /* generated ids (up to where generation stopped) */
    int *n_gen;
    int *outcome;       /* HumanEval: tl_sandbox_outcome */
    double *score;      /* [n_docs] exact match, fraction passed (HumanEval), or F1 (DROP) */
    double *em;         /* DROP: [n_docs] exact match */
    double em_metric, em_stderr;
    int *n_correct;     /* HumanEval: [n_docs] completions that passed */
    int n_pass_k;       /* HumanEval: the pass@k reported (unbiased estimator, mean over problems) */
    int pass_k[16];
    double pass_at[16];
    double metric, metric_stderr; /* exact_match or pass@1 (BBH: size-weighted, pooled stderr) */
    double *subj_metric, *subj_stderr;
    int *subj_n;
    char isolation[128]; /* HumanEval: what the sandbox had */
    long tokens_generated, tokens_prefilled;
    double seconds, exec_seconds;
} tl_gen_result;

/* The metric's name: "exact_match", "pass@1" or "f1" (DROP; its "em" is in em_metric). */
const char *tl_gen_metric_name(tl_task_kind k);

/* The unbiased pass@k estimator of the Codex paper (Chen et al. 2021) for a
 * problem with n samples of which c pass: 1 - C(n-c, k) / C(n, k), computed
 * as a product (no large binomials).  k <= n. */
double tl_pass_at_k(int n, int c, int k);
/* Its mean over problems with n samples each, correct[i] of them passing (NaN for none). */
double tl_pass_at_k_mean(const int *correct, int n_problems, int n, int k);

int tl_gen_run(const tl_gen_task *t, const tl_infer_model *m, const tl_tokenizer *tok, const tl_gen_eval_opts *o,
               tl_gen_result *r, tl_error *err);
void tl_gen_result_free(tl_gen_result *r);
/* HumanEval's program for problem d: prompt + completion + "\n" + test + "\ncheck(entry_point)"
 * (malloc'ed), as the harness's code_eval assembles it. */
char *tl_gen_humaneval_program(const tl_gen_doc *d, const char *completion);
char *tl_gen_result_json(const tl_gen_task *t, const tl_gen_result *r, int samples);

#endif

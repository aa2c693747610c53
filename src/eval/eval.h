/* eval.h - zero-shot multiple-choice evaluation scored exactly as EleutherAI's
 * lm-evaluation-harness (0.4.x, HF backend) scores it.
 *
 * A task (HellaSwag, PIQA, ARC-Easy/Challenge, OpenBookQA, WinoGrande, BoolQ) is
 * read from its original public release file, turned into the harness's prompts
 * (context, " " + continuation per choice) and tokenized once the way the
 * harness tokenizes a pair; tl_eval_run then asks a scoring backend for the
 * log-likelihood of every continuation and reports acc (argmax log-likelihood),
 * acc_norm (argmax log-likelihood / continuation length in characters) and the
 * standard error of the mean.  docs/eval.md describes formats and details. */
#ifndef TL_EVAL_H
#define TL_EVAL_H

#include <stddef.h>

#include "common.h"
#include "model.h"
#include "tokenizer.h"

typedef enum {
    TL_TASK_HELLASWAG,
    TL_TASK_PIQA,
    TL_TASK_ARC_EASY,
    TL_TASK_ARC_CHALLENGE,
    TL_TASK_OPENBOOKQA,
    TL_TASK_WINOGRANDE,
    TL_TASK_BOOLQ,
    /* few-shot, several subjects, a directory of CSV files (eval_mc.c) */
    TL_TASK_MMLU,
    TL_TASK_CMMLU,
    TL_TASK_CEVAL,
    /* generation (eval_gen.h) */
    TL_TASK_BBH,
    TL_TASK_HUMANEVAL,
    TL_TASK_DROP,
    TL_TASK_COUNT
} tl_task_kind;

/* "hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq",
 * "mmlu", "cmmlu", "ceval". */
const char *tl_task_name(tl_task_kind k);
int tl_task_from_name(const char *name, tl_task_kind *out, tl_error *err);
/* Whether the harness reports acc_norm for the task (not for WinoGrande, BoolQ, MMLU). */
int tl_task_has_acc_norm(tl_task_kind k);
/* Whether the task's --data is a directory of per-subject CSV files (MMLU, CMMLU, C-Eval). */
int tl_task_is_multi_subject(tl_task_kind k);
/* Whether the task is scored on generated text (BBH, HumanEval: eval_gen.h). */
int tl_task_is_generation(tl_task_kind k);

/* How strings become token ids.  TL_EVAL_TOK_HF (default) reproduces what the
 * harness gets from HF transformers' LlamaTokenizer (Metaspace pre-tokenizer,
 * no whitespace splitting, a "▁" prepended only if the text does not start with
 * a space, merges ranked by result id); TL_EVAL_TOK_SPM is SentencePiece's own
 * encoding.  They differ only around runs of spaces and a leading space. */
typedef enum { TL_EVAL_TOK_HF = 0, TL_EVAL_TOK_SPM = 1 } tl_eval_tok_mode;

/* Encodes text as the HF Llama tokenizer does (with BOS when add_bos). */
int tl_eval_hf_encode(const tl_tokenizer *tok, const char *text, size_t len, int add_bos, int **ids,
                      size_t *n, tl_error *err);

/* One scoring request: log P(continuation | context). */
typedef struct {
    char *context, *continuation;  /* the harness's strings (continuation includes " ") */
    int *ctx_ids, *cont_ids;       /* after the harness's split (BOS included in ctx_ids) */
    int n_ctx, n_cont;
    int doc;                       /* index of its doc */
} tl_eval_request;

typedef struct {
    int n_choices;
    int gold;
    int line;          /* 1-based line in the data file (where its CSV record starts) */
    int subject;       /* index into tl_eval_task.subjects (0 for single-file tasks) */
    int first_req;     /* requests [first_req, first_req + n_choices) */
    double *choice_len; /* characters (Unicode code points) of each choice, for acc_norm */
} tl_eval_doc;

typedef struct {
    tl_task_kind kind;
    int n_docs;
    tl_eval_doc *docs;
    int n_reqs;
    tl_eval_request *reqs;
    tl_eval_tok_mode tok_mode;
    /* multi-subject tasks (else 0 / NULL): subjects in file-name order, each
     * one's data file, its group (MMLU's category, else 0); docs of a subject
     * are adjacent. */
    int n_subjects, n_groups, n_shot;
    char **subjects, **subject_files;
    int *subject_group;
} tl_eval_task;

/* Reads `data` (and, for PIQA, `labels`: one 0/1 per line) in the task's original
 * release format, keeps the first `limit` docs (limit <= 0: all), builds the
 * harness's requests and tokenizes them.  Errors name the file and line.
 * Multi-subject tasks: `data` is the release's directory, 5-shot from its dev
 * split, and `limit` applies per subject (as the harness's --limit does). */
tl_eval_task *tl_eval_task_load(tl_task_kind kind, const char *data, const char *labels, long limit,
                                const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err);
/* The same from text in memory (`what` names it in errors; labels_text may be NULL). */
tl_eval_task *tl_eval_task_parse(tl_task_kind kind, const char *text, const char *what,
                                 const char *labels_text, const char *labels_what, long limit,
                                 const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err);
void tl_eval_task_free(tl_eval_task *t);
/* A multi-subject task with n_shot examples from the dev split (0..5 in the
 * releases); tok NULL builds the prompts without tokenizing them. */
tl_eval_task *tl_eval_task_load_fewshot(tl_task_kind kind, const char *dir, int n_shot, long limit,
                                        const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err);
/* The name of group g of a multi-subject task ("stem", "humanities", ...). */
const char *tl_task_group_name(tl_task_kind k, int g);

/* ---- scoring backends ----
 * loglik fills ll[i] (sum of log-probabilities of reqs[i]'s continuation tokens)
 * and greedy[i] (1 if every continuation token is the argmax) for n requests.
 * Requests of one doc are adjacent; requests with the same context are adjacent,
 * so a KV-cache backend can prefill a shared context once.  Truncation as in the
 * harness: only the last max_length + 1 tokens of context + continuation are used. */
typedef struct {
    void *self;
    int (*loglik)(void *self, const tl_eval_request *reqs, int n, double *ll, int *greedy,
                  tl_error *err);
} tl_eval_backend;

/* The fp32 tl_model backend: batches requests (longest first) into micro-batches
 * of at most max_tokens padded tokens; full forward per sequence. */
typedef struct tl_eval_model_backend tl_eval_model_backend;
tl_eval_model_backend *tl_eval_model_backend_create(const tl_model *m, int max_tokens, tl_error *err);
void tl_eval_model_backend_free(tl_eval_model_backend *b);
tl_eval_backend tl_eval_model_backend_iface(tl_eval_model_backend *b);
/* log softmax(row)[target] over V logits (sums in double) and whether target is
 * the first maximum: one continuation token's score, the same in both backends. */
double tl_eval_score_row(const float *row, int V, int target, int *is_argmax);

typedef struct {
    int max_tokens;   /* micro-batch size in tokens for the model backend (0: 2048) */
    int chunk;        /* requests handed to the backend per call (0: 256), for progress */
    /* Progress (may be NULL): called after each chunk with requests done / total. */
    void (*progress)(void *user, long done, long total, double elapsed);
    void *progress_user;
} tl_eval_opts;

typedef struct {
    tl_task_kind kind;
    int n;                        /* docs scored */
    double acc, acc_stderr;
    double acc_norm, acc_norm_stderr; /* NAN when the task has no acc_norm */
    int has_acc_norm;
    double *ll;                   /* [n_reqs] per-request log-likelihoods */
    int *greedy;                  /* [n_reqs] */
    int *pred, *pred_norm;        /* [n_docs] argmax choices */
    double seconds;
    /* multi-subject tasks: acc / acc_norm above are the harness's group numbers
     * (mean over all docs; stderr pooled over subjects, for MMLU over its
     * categories which pool their subjects); per subject and per group the same,
     * and the unweighted mean over subjects (macro). */
    int n_subjects, n_groups;
    int *subj_n, *group_n;
    double *subj_acc, *subj_acc_stderr, *subj_acc_norm, *subj_acc_norm_stderr;
    double *group_acc, *group_acc_stderr;
    double acc_macro, acc_norm_macro;
} tl_eval_result;

/* Scores a loaded task with any backend. */
int tl_eval_run_backend(const tl_eval_task *t, tl_eval_backend *be, const tl_eval_opts *o,
                        tl_eval_result *r, tl_error *err);
/* Training hook: scores a loaded task with the fp32 model (creates and frees a
 * model backend; the task is loaded and tokenized once, before training). */
int tl_eval_run(const tl_eval_task *t, const tl_model *m, const tl_eval_opts *o, tl_eval_result *r,
                tl_error *err);
void tl_eval_result_free(tl_eval_result *r);

/* Standard error of the mean as the harness computes it (sample stddev / sqrt(n));
 * NAN for n < 2. */
double tl_eval_mean_stderr(const double *x, int n);

/* Machine-readable result: a malloc'ed JSON object string (caller frees).
 * With samples, each doc's gold, predictions and per-choice log-likelihoods are included. */
char *tl_eval_result_json(const tl_eval_task *t, const tl_eval_result *r, int samples);

#endif

/* test_eval.c - zero-shot evaluation against lm-evaluation-harness: fixtures
 * written by scripts/gen_eval_fixtures.py (lm-eval 0.4.x HF backend on a random
 * tiny Llama with the Llama 2 tokenizer) hold every request's strings, token ids
 * and log-likelihood and the harness's metrics; we must reproduce all of them.
 * Also: malformed data gives errors naming file and line. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "eval.h"
#include "eval_infer.h"
#include "harness.h"

/* |ours - lm-eval| allowed for a continuation's summed log-likelihood (fp32 forward
 * in both, different summation orders; sums of up to ~25 tokens of magnitude
 * ~10, so the total reaches ~150: 1e-4 absolute plus 2e-6 relative). */
#define LL_ATOL 1e-4
#define LL_RTOL 2e-6

static const char *data_files[TL_TASK_BOOLQ + 1] = {
    "hellaswag.jsonl", "piqa.jsonl", "arc_easy.jsonl", "arc_challenge.jsonl",
    "openbookqa.jsonl", "winogrande.jsonl", "boolq.jsonl",
};

static double num(const cJSON *o, const char *k) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

static void test_eval_tokenizer_hf(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval/expected.json");
    if (!tok || !exp) goto out;
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(exp, "tokenizer"), *c;
    CHECK(cJSON_GetArraySize(cases) > 0);
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
        int *ids;
        size_t n;
        tl_error err;
        if (tl_eval_hf_encode(tok, text, strlen(text), 1, &ids, &n, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        CHECK_MSG(tl_test_ids_equal(cJSON_GetObjectItemCaseSensitive(c, "ids"), ids, (int)n),
                  "HF encoding of \"%s\" differs", text);
        free(ids);
    }
out:
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

/* Scores one task with the fp32 model (m) or, when be is non-NULL, that backend. */
static void check_task(tl_test_ctx *t, tl_task_kind kind, const cJSON *e, const tl_tokenizer *tok,
                       const tl_model *m, tl_eval_backend *be, double *max_err) {
    char data[600], labels[600];
    tl_error err;
    snprintf(data, sizeof data, "%s/eval/%s", tl_test_fixture_dir(), data_files[kind]);
    snprintf(labels, sizeof labels, "%s/eval/piqa-labels.lst", tl_test_fixture_dir());
    tl_eval_task *task = tl_eval_task_load(kind, data, kind == TL_TASK_PIQA ? labels : NULL, 0, tok,
                                           TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task != NULL, "%s: %s", tl_task_name(kind), err.msg);
    if (!task) return;
    const cJSON *docs = cJSON_GetObjectItemCaseSensitive(e, "docs");
    CHECK_MSG(task->n_docs == cJSON_GetArraySize(docs), "%s: %d docs, lm-eval %d", tl_task_name(kind),
              task->n_docs, cJSON_GetArraySize(docs));
    tl_eval_opts o = {.max_tokens = 200, .chunk = 5}; /* several batches and chunks */
    tl_eval_result r;
    if (be ? tl_eval_run_backend(task, be, &o, &r, &err) : tl_eval_run(task, m, &o, &r, &err)) {
        CHECK_MSG(0, "%s: %s", tl_task_name(kind), err.msg);
        tl_eval_task_free(task);
        return;
    }
    for (int d = 0; d < task->n_docs && d < cJSON_GetArraySize(docs); d++) {
        const cJSON *ed = cJSON_GetArrayItem(docs, d);
        const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(ed, "requests");
        const tl_eval_doc *doc = &task->docs[d];
        CHECK_MSG(doc->n_choices == cJSON_GetArraySize(reqs), "%s doc %d: choices", tl_task_name(kind), d);
        for (int c = 0; c < doc->n_choices && c < cJSON_GetArraySize(reqs); c++) {
            const cJSON *er = cJSON_GetArrayItem(reqs, c);
            const tl_eval_request *q = &task->reqs[doc->first_req + c];
            const char *ectx = cJSON_GetObjectItemCaseSensitive(er, "context")->valuestring;
            const char *econt = cJSON_GetObjectItemCaseSensitive(er, "continuation")->valuestring;
            CHECK_MSG(!strcmp(q->context, ectx), "%s doc %d choice %d: context\n ours: \"%s\"\n lm-eval: \"%s\"",
                      tl_task_name(kind), d, c, q->context, ectx);
            CHECK_MSG(!strcmp(q->continuation, econt),
                      "%s doc %d choice %d: continuation \"%s\" vs lm-eval \"%s\"", tl_task_name(kind), d, c,
                      q->continuation, econt);
            CHECK_MSG(tl_test_ids_equal(cJSON_GetObjectItemCaseSensitive(er, "context_ids"), q->ctx_ids, q->n_ctx),
                      "%s doc %d choice %d: context token ids differ", tl_task_name(kind), d, c);
            CHECK_MSG(tl_test_ids_equal(cJSON_GetObjectItemCaseSensitive(er, "continuation_ids"), q->cont_ids,
                                q->n_cont),
                      "%s doc %d choice %d: continuation token ids differ", tl_task_name(kind), d, c);
            double ell = num(er, "ll"), ll = r.ll[doc->first_req + c];
            CHECK_CLOSE(ll, ell, LL_ATOL, LL_RTOL);
            if (fabs(ll - ell) > *max_err) *max_err = fabs(ll - ell);
            CHECK(r.greedy[doc->first_req + c] == cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(er, "greedy")));
        }
        CHECK_MSG((r.pred[d] == doc->gold) == (num(ed, "acc") == 1.0), "%s doc %d: acc", tl_task_name(kind), d);
        if (r.has_acc_norm)
            CHECK_MSG((r.pred_norm[d] == doc->gold) == (num(ed, "acc_norm") == 1.0), "%s doc %d: acc_norm",
                      tl_task_name(kind), d);
    }
    CHECK(r.n == (int)num(e, "n"));
    CHECK_CLOSE(r.acc, num(e, "acc"), 1e-12, 0);
    CHECK_CLOSE(r.acc_stderr, num(e, "acc_stderr"), 1e-12, 1e-12);
    CHECK(r.has_acc_norm == (cJSON_GetObjectItemCaseSensitive(e, "acc_norm") != NULL));
    if (r.has_acc_norm) {
        CHECK_CLOSE(r.acc_norm, num(e, "acc_norm"), 1e-12, 0);
        CHECK_CLOSE(r.acc_norm_stderr, num(e, "acc_norm_stderr"), 1e-12, 1e-12);
    }
    char *json = tl_eval_result_json(task, &r, 1);
    CHECK(json != NULL);
    free(json);
    tl_eval_result_free(&r);
    tl_eval_task_free(task);
}

static void test_eval_vs_lm_eval(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval/expected.json");
    tl_model m;
    char dir[600];
    tl_error err;
    int have_model = 0;
    snprintf(dir, sizeof dir, "%s/eval/model", tl_test_fixture_dir());
    if (tok && exp) {
        have_model = tl_model_load_hf(dir, &m, &err) == 0;
        CHECK_MSG(have_model, "%s", err.msg);
    }
    if (have_model) {
        CHECK(m.cfg.max_seq_len == (int)num(exp, "max_length"));
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(exp, "tasks");
        double max_err = 0;
        for (int k = 0; k <= TL_TASK_BOOLQ; k++) { /* the zero-shot tasks */
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(tasks, tl_task_name((tl_task_kind)k));
            CHECK_MSG(e != NULL, "fixture lacks %s", tl_task_name((tl_task_kind)k));
            if (e) check_task(t, (tl_task_kind)k, e, tok, &m, NULL, &max_err);
        }
        printf("  eval: max |log-likelihood - lm-eval| = %.3g\n", max_err);
        tl_model_free(&m);
    }
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

/* The same checks through the KV-cache backend on the inference engine (BF16
 * weights mapped, shared contexts prefilled once), with the same tolerances. */
static void test_eval_kv_vs_lm_eval(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval/expected.json");
    tl_infer_model m;
    char dir[600];
    tl_error err;
    int have_model = 0;
    snprintf(dir, sizeof dir, "%s/eval/model", tl_test_fixture_dir());
    if (tok && exp) {
        have_model = tl_infer_load_weights_only(&m, dir, &err) == 0;
        CHECK_MSG(have_model, "%s", err.msg);
    }
    if (have_model) {
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(exp, "tasks");
        double max_err = 0;
        long run = 0, full = 0;
        for (int k = 0; k <= TL_TASK_BOOLQ; k++) { /* the zero-shot tasks */
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(tasks, tl_task_name((tl_task_kind)k));
            CHECK_MSG(e != NULL, "fixture lacks %s", tl_task_name((tl_task_kind)k));
            /* a fresh backend per task; chunk = 5 splits shared contexts across calls */
            tl_eval_infer_backend *b = tl_eval_infer_backend_create(&m, &err);
            CHECK_MSG(b != NULL, "%s", err.msg);
            if (!b || !e) {
                tl_eval_infer_backend_free(b);
                continue;
            }
            /* odd tasks: passes of at most 2 rows (several passes per context, and
             * longer continuations alone) */
            if (k % 2) tl_eval_infer_backend_set_rows(b, 2);
            tl_eval_backend be = tl_eval_infer_backend_iface(b);
            check_task(t, (tl_task_kind)k, e, tok, NULL, &be, &max_err);
            long r1, f1;
            tl_eval_infer_backend_stats(b, &r1, &f1);
            CHECK_MSG(r1 < f1, "%s: the KV backend ran %ld tokens, no fewer than the %ld of full passes",
                      tl_task_name((tl_task_kind)k), r1, f1);
            run += r1;
            full += f1;
            tl_eval_infer_backend_free(b);
        }
        printf("  eval (kv): max |log-likelihood - lm-eval| = %.3g; %ld tokens run instead of %ld\n", max_err,
               run, full);
        tl_infer_free(&m);
    }
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

/* A malformed input must fail with "what:LINE:" and a message containing `needle`. */
static void expect_error(tl_test_ctx *t, const tl_tokenizer *tok, tl_task_kind kind, const char *text,
                         const char *labels, const char *needle) {
    tl_error err = {{0}};
    tl_eval_task *task =
        tl_eval_task_parse(kind, text, "data.jsonl", labels, "labels.lst", 0, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task == NULL, "%s: accepted bad input: %s", tl_task_name(kind), text);
    tl_eval_task_free(task);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: error \"%s\" lacks \"%s\"", tl_task_name(kind),
              err.msg, needle);
}

static void test_eval_malformed(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    if (!tok) return;
    const char *hs_ok = "{\"activity_label\":\"A\",\"ctx_a\":\"b\",\"ctx_b\":\"c\",\"endings\":[\"d\",\"e\"],\"label\":1}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\n%s{not json\n", hs_ok, hs_ok);
    expect_error(t, tok, TL_TASK_HELLASWAG, buf, NULL, "data.jsonl:4: not a JSON object");
    snprintf(buf, sizeof buf, "%s{\"activity_label\":\"A\",\"ctx_a\":\"b\",\"endings\":[\"d\",\"e\"],\"label\":1}\n", hs_ok);
    expect_error(t, tok, TL_TASK_HELLASWAG, buf, NULL, "data.jsonl:2: missing field \"ctx_b\"");
    expect_error(t, tok, TL_TASK_HELLASWAG,
                 "{\"activity_label\":\"A\",\"ctx_a\":\"b\",\"ctx_b\":\"c\",\"endings\":[\"d\",\"e\"],\"label\":2}",
                 NULL, "data.jsonl:1: answer index 2 is out of range for 2 choices");
    expect_error(t, tok, TL_TASK_PIQA, "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n", "2\n",
                 "labels.lst:1: a label must be 0 or 1");
    expect_error(t, tok, TL_TASK_PIQA,
                 "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n",
                 "1\n", "data.jsonl:2: no label for this line");
    expect_error(t, tok, TL_TASK_PIQA, "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n", "1\n0\n",
                 "labels.lst has 2 labels but data.jsonl has 1 examples");
    expect_error(t, tok, TL_TASK_PIQA, "{\"goal\":\"g\",\"sol1\":\"a\"}\n", "1\n", "data.jsonl:1: missing field \"sol2\"");
    expect_error(t, tok, TL_TASK_ARC_EASY,
                 "{\"question\":{\"stem\":\"q\",\"choices\":[{\"text\":\"a\",\"label\":\"A\"},{\"text\":\"b\",\"label\":\"B\"}]},\"answerKey\":\"C\"}",
                 NULL, "data.jsonl:1: answerKey \"C\" is not one of the choice labels");
    expect_error(t, tok, TL_TASK_OPENBOOKQA,
                 "{\"question\":{\"stem\":\"q\",\"choices\":[{\"text\":\"a\"},{\"text\":\"b\",\"label\":\"B\"}]},\"answerKey\":\"B\"}",
                 NULL, "data.jsonl:1: missing field \"question.choices[0].label\"");
    expect_error(t, tok, TL_TASK_ARC_CHALLENGE, "{\"question\":\"q\",\"answerKey\":\"B\"}", NULL,
                 "data.jsonl:1: field \"question\" must be an object");
    expect_error(t, tok, TL_TASK_WINOGRANDE,
                 "{\"sentence\":\"a _ b\",\"option1\":\"x\",\"option2\":\"y\",\"answer\":\"3\"}", NULL,
                 "data.jsonl:1: field \"answer\" must be \"1\" or \"2\"");
    expect_error(t, tok, TL_TASK_WINOGRANDE,
                 "\n\n{\"sentence\":\"a b\",\"option1\":\"x\",\"option2\":\"y\",\"answer\":\"1\"}", NULL,
                 "data.jsonl:3: field \"sentence\" has no \"_\" blank");
    expect_error(t, tok, TL_TASK_BOOLQ, "{\"passage\":\"p\",\"question\":\"q\",\"answer\":\"yes\"}", NULL,
                 "data.jsonl:1: field \"answer\" must be true or false");
    expect_error(t, tok, TL_TASK_BOOLQ, "\n  \n", NULL, "data.jsonl: no examples");
    /* --limit stops before a later bad line */
    tl_error err;
    snprintf(buf, sizeof buf, "%s%s{bad\n", hs_ok, hs_ok);
    tl_eval_task *task = tl_eval_task_parse(TL_TASK_HELLASWAG, buf, "d", NULL, NULL, 2, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task && task->n_docs == 2 && task->n_reqs == 4, "limit: %s", task ? "" : err.msg);
    tl_eval_task_free(task);
    tl_tokenizer_free(tok);
}

static void test_eval_stderr(tl_test_ctx *t) {
    const double x[] = {1, 0, 1, 1};
    CHECK_CLOSE(tl_eval_mean_stderr(x, 4), 0.25, 1e-15, 0);
    CHECK(isnan(tl_eval_mean_stderr(x, 1)));
}

const tl_test tests_eval[] = {
    {"eval_tokenizer_hf", test_eval_tokenizer_hf},
    {"eval_vs_lm_eval", test_eval_vs_lm_eval},
    {"eval_kv_vs_lm_eval", test_eval_kv_vs_lm_eval},
    {"eval_malformed", test_eval_malformed},
    {"eval_stderr", test_eval_stderr},
    {NULL, NULL},
};

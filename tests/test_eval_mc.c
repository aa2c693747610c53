/* test_eval_mc.c - MMLU, CMMLU and C-Eval (5-shot, per-subject CSV releases)
 * against lm-evaluation-harness: tests/fixtures/eval_mc/expected.json, written
 * by scripts/gen_eval_mc_fixtures.py (lm-eval 0.4.x, HF backend, its own task
 * YAMLs and group definitions), holds every prompt, token id, log-likelihood
 * and the per-subject, per-category and overall metrics.  Also: malformed
 * release files fail naming the file and line. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "eval.h"
#include "eval_infer.h"
#include "harness.h"

#define LL_ATOL 1e-4
#define LL_RTOL 2e-6

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num(const cJSON *o, const char *k) {
    const cJSON *it = get(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

static void check_mc(tl_test_ctx *t, tl_task_kind kind, const cJSON *e, const tl_tokenizer *tok,
                     tl_eval_backend *be, double *max_err) {
    char dir[600];
    tl_error err;
    const char *name = tl_task_name(kind);
    snprintf(dir, sizeof dir, "%s/eval_mc/%s", tl_test_fixture_dir(), name);
    tl_eval_task *task = tl_eval_task_load(kind, dir, NULL, 0, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task != NULL, "%s: %s", name, err.msg);
    if (!task) return;
    const cJSON *subjects = get(e, "subjects");
    CHECK_MSG(task->n_subjects == cJSON_GetArraySize(subjects), "%s: %d subjects, lm-eval %d", name,
              task->n_subjects, cJSON_GetArraySize(subjects));
    tl_eval_opts o = {.chunk = 7};
    tl_eval_result r;
    if (tl_eval_run_backend(task, be, &o, &r, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        tl_eval_task_free(task);
        return;
    }
    int d = 0;
    for (int s = 0; s < task->n_subjects; s++) {
        const cJSON *es = get(subjects, task->subjects[s]);
        CHECK_MSG(es != NULL, "%s: subject %s not in the fixture", name, task->subjects[s]);
        if (!es) continue;
        const cJSON *docs = get(es, "docs");
        CHECK_MSG(r.subj_n[s] == cJSON_GetArraySize(docs), "%s/%s: %d docs, lm-eval %d", name,
                  task->subjects[s], r.subj_n[s], cJSON_GetArraySize(docs));
        for (int i = 0; i < cJSON_GetArraySize(docs) && d < task->n_docs; i++, d++) {
            const cJSON *ed = cJSON_GetArrayItem(docs, i), *reqs = get(ed, "requests");
            const tl_eval_doc *doc = &task->docs[d];
            CHECK(doc->subject == s);
            CHECK_MSG(doc->gold == (int)num(ed, "target"), "%s/%s doc %d: gold %d, lm-eval %d", name,
                      task->subjects[s], i, doc->gold, (int)num(ed, "target"));
            CHECK(doc->n_choices == cJSON_GetArraySize(reqs));
            for (int c = 0; c < doc->n_choices && c < cJSON_GetArraySize(reqs); c++) {
                const tl_eval_request *q = &task->reqs[doc->first_req + c];
                const cJSON *er = cJSON_GetArrayItem(reqs, c);
                const char *ectx = get(ed, "context")->valuestring;
                CHECK_MSG(!strcmp(q->context, ectx), "%s/%s doc %d: context\n ours: \"%s\"\n lm-eval: \"%s\"",
                          name, task->subjects[s], i, q->context, ectx);
                CHECK(!strcmp(q->continuation, get(er, "continuation")->valuestring));
                CHECK_MSG(tl_test_ids_equal(get(ed, "context_ids"), q->ctx_ids, q->n_ctx), "%s/%s doc %d: context ids",
                          name, task->subjects[s], i);
                CHECK(tl_test_ids_equal(get(er, "continuation_ids"), q->cont_ids, q->n_cont));
                double ll = r.ll[doc->first_req + c], ell = num(er, "ll");
                CHECK_CLOSE(ll, ell, LL_ATOL, LL_RTOL);
                if (fabs(ll - ell) > *max_err) *max_err = fabs(ll - ell);
                CHECK(r.greedy[doc->first_req + c] == cJSON_IsTrue(get(er, "greedy")));
            }
            CHECK_MSG((r.pred[d] == doc->gold) == (num(ed, "acc") == 1.0), "%s/%s doc %d: acc", name,
                      task->subjects[s], i);
        }
        CHECK_CLOSE(r.subj_acc[s], num(es, "acc"), 1e-12, 0);
        CHECK_CLOSE(r.subj_acc_stderr[s], num(es, "acc_stderr"), 1e-12, 1e-9);
    }
    CHECK(d == task->n_docs);
    /* the harness's group numbers: size-weighted acc, pooled stderr */
    CHECK_CLOSE(r.acc, num(e, "acc"), 1e-12, 0);
    CHECK_CLOSE(r.acc_stderr, num(e, "acc_stderr"), 1e-12, 1e-9);
    CHECK(r.has_acc_norm == (get(e, "acc_norm") != NULL));
    if (r.has_acc_norm) {
        CHECK_CLOSE(r.acc_norm, num(e, "acc_norm"), 1e-12, 0);
        CHECK_CLOSE(r.acc_norm_stderr, num(e, "acc_norm_stderr"), 1e-12, 1e-9);
    }
    const cJSON *cats = get(e, "categories");
    if (kind == TL_TASK_MMLU) {
        int seen = 0;
        for (int g = 0; g < r.n_groups; g++) {
            char key[64];
            snprintf(key, sizeof key, "mmlu_%s", tl_task_group_name(kind, g));
            const cJSON *ec = get(cats, key);
            if (!ec) {
                CHECK(r.group_n[g] == 0);
                continue;
            }
            seen++;
            CHECK_CLOSE(r.group_acc[g], num(ec, "acc"), 1e-12, 0);
            CHECK_CLOSE(r.group_acc_stderr[g], num(ec, "acc_stderr"), 1e-12, 1e-9);
        }
        CHECK(seen == cJSON_GetArraySize(cats));
        /* unequal subject sizes: the macro average differs from the harness's micro */
        double macro = 0;
        for (int s = 0; s < r.n_subjects; s++) macro += r.subj_acc[s];
        CHECK_CLOSE(r.acc_macro, macro / r.n_subjects, 1e-15, 0);
    }
    char *json = tl_eval_result_json(task, &r, 1);
    CHECK(json != NULL && strstr(json, "\"subjects\"") != NULL);
    free(json);
    tl_eval_result_free(&r);
    tl_eval_task_free(task);
}

static void run_all(tl_test_ctx *t, int kv) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval_mc/expected.json");
    char dir[600];
    tl_error err;
    snprintf(dir, sizeof dir, "%s/eval_mc/model", tl_test_fixture_dir());
    tl_infer_model im;
    tl_model m;
    int have = 0;
    if (tok && exp) {
        have = (kv ? tl_infer_load_weights_only(&im, dir, &err) : tl_model_load_hf(dir, &m, &err)) == 0;
        CHECK_MSG(have, "%s", err.msg);
    }
    if (have) {
        double max_err = 0;
        long run = 0, full = 0;
        const tl_task_kind kinds[3] = {TL_TASK_MMLU, TL_TASK_CMMLU, TL_TASK_CEVAL};
        for (int k = 0; k < 3; k++) {
            const cJSON *e = get(get(exp, "tasks"), tl_task_name(kinds[k]));
            CHECK_MSG(e != NULL, "fixture lacks %s", tl_task_name(kinds[k]));
            if (!e) continue;
            if (kv) {
                tl_eval_infer_backend *b = tl_eval_infer_backend_create(&im, &err);
                CHECK_MSG(b != NULL, "%s", err.msg);
                if (!b) continue;
                tl_eval_backend be = tl_eval_infer_backend_iface(b);
                check_mc(t, kinds[k], e, tok, &be, &max_err);
                long r1, f1;
                tl_eval_infer_backend_stats(b, &r1, &f1);
                run += r1, full += f1;
                tl_eval_infer_backend_free(b);
            } else {
                tl_eval_model_backend *b = tl_eval_model_backend_create(&m, 600, &err);
                tl_eval_backend be = tl_eval_model_backend_iface(b);
                check_mc(t, kinds[k], e, tok, &be, &max_err);
                tl_eval_model_backend_free(b);
            }
        }
        if (kv) {
            /* the 5-shot prefix of a subject is computed once, not once per question */
            CHECK_MSG(run * 3 < full, "kv backend ran %ld tokens of %ld", run, full);
            printf("  eval_mc (kv): max |ll - lm-eval| = %.3g; %ld tokens run instead of %ld\n", max_err, run, full);
            tl_infer_free(&im);
        } else {
            printf("  eval_mc (fp32): max |ll - lm-eval| = %.3g\n", max_err);
            tl_model_free(&m);
        }
    }
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

static void test_eval_mc_kv_vs_lm_eval(tl_test_ctx *t) { run_all(t, 1); }
static void test_eval_mc_fp32_vs_lm_eval(tl_test_ctx *t) { run_all(t, 0); }

/* ---- malformed release files ---- */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A scratch MMLU directory with one subject: dev (5 rows) and the given test text. */
static void make_dir(char *dir, size_t n, const char *dev, const char *test) {
    snprintf(dir, n, "/tmp/tl_eval_mc_XXXXXX");
    if (!mkdtemp(dir)) return;
    char p[700];
    snprintf(p, sizeof p, "%s/dev", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/test", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/dev/anatomy_dev.csv", dir);
    write_file(p, dev);
    snprintf(p, sizeof p, "%s/test/anatomy_test.csv", dir);
    write_file(p, test);
}

static void remove_dir(const char *dir) {
    char p[700];
    const char *files[] = {"dev/anatomy_dev.csv", "test/anatomy_test.csv", "test/anatomi_test.csv", "dev", "test"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (remove(p) != 0 && i >= 3) rmdir(p);
    }
    rmdir(dir);
}

static const char *DEV5 = "q1,a,b,c,d,A\nq2,a,b,c,d,B\nq3,a,b,c,d,C\nq4,a,b,c,d,D\nq5,a,b,c,d,A\n";

static void expect_mc_error(tl_test_ctx *t, const tl_tokenizer *tok, const char *dev, const char *test,
                            const char *needle) {
    char dir[64];
    make_dir(dir, sizeof dir, dev, test);
    tl_error err = {{0}};
    tl_eval_task *task = tl_eval_task_load(TL_TASK_MMLU, dir, NULL, 0, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task == NULL, "accepted bad input: %s", test);
    tl_eval_task_free(task);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "error \"%s\" lacks \"%s\"", err.msg, needle);
    remove_dir(dir);
}

static void test_eval_mc_malformed(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    if (!tok) return;
    expect_mc_error(t, tok, DEV5, "q,a,b,c,d,A\nq,a,b,c,A\n", "anatomy_test.csv:2: 5 fields, expected 6");
    expect_mc_error(t, tok, DEV5, "q,a,b,c,d,A\n\"multi\nline\",a,b,c,d,A\nq,a,b,c,d,E\n",
                    "anatomy_test.csv:4: answer \"E\" is not one of A, B, C, D");
    expect_mc_error(t, tok, DEV5, "q,a,b,c,d,A\n\"truncated,a,b", "anatomy_test.csv:2: unterminated quoted field");
    expect_mc_error(t, tok, DEV5, "q,a,b\xff,c,d,A\n", "anatomy_test.csv:1: field 3 is not valid UTF-8");
    expect_mc_error(t, tok, DEV5, "q,a,b,c,d,A\n  ,a,b,c,d,B\n", "anatomy_test.csv:2: empty question");
    expect_mc_error(t, tok, "q1,a,b,c,d,A\nq2,a,b,c,d,B\n", "q,a,b,c,d,A\n",
                    "anatomy_dev.csv: 2 examples, fewer than the 5 few-shot examples");
    expect_mc_error(t, tok, "q1,a,b,c,d,A\nq2,a,b,c,d\n", "q,a,b,c,d,A\n", "anatomy_dev.csv:2: 5 fields, expected 6");
    expect_mc_error(t, tok, DEV5, "", "anatomy_test.csv: no examples");
    /* an unknown subject file */
    char dir[64], p[700];
    make_dir(dir, sizeof dir, DEV5, "q,a,b,c,d,A\n");
    snprintf(p, sizeof p, "%s/test/anatomi_test.csv", dir);
    write_file(p, "q,a,b,c,d,A\n");
    tl_error err = {{0}};
    tl_eval_task *task = tl_eval_task_load(TL_TASK_MMLU, dir, NULL, 0, tok, TL_EVAL_TOK_HF, &err);
    CHECK(task == NULL);
    CHECK_MSG(strstr(err.msg, "\"anatomi\" is not a mmlu subject") != NULL, "%s", err.msg);
    tl_eval_task_free(task);
    remove_dir(dir);
    /* --limit is per subject and stops before a later bad row; CRLF line ends */
    make_dir(dir, sizeof dir, DEV5, "q,a,b,c,d,A\r\nq,a,b,c,d,B\r\nbad\r\n");
    task = tl_eval_task_load(TL_TASK_MMLU, dir, NULL, 2, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task && task->n_docs == 2 && task->n_reqs == 8 && task->docs[1].gold == 1 && task->docs[1].line == 2,
              "limit: %s", task ? "wrong docs" : err.msg);
    tl_eval_task_free(task);
    /* a missing directory */
    task = tl_eval_task_load(TL_TASK_MMLU, "/nonexistent/mmlu", NULL, 0, tok, TL_EVAL_TOK_HF, &err);
    CHECK(task == NULL && strstr(err.msg, "/nonexistent/mmlu/test") != NULL);
    /* few-shot count: zero shots is the bare question */
    task = tl_eval_task_load_fewshot(TL_TASK_MMLU, dir, 0, 1, tok, TL_EVAL_TOK_HF, &err);
    CHECK_MSG(task && !strcmp(task->reqs[0].context,
                              "The following are multiple choice questions (with answers) about anatomy.\n\n"
                              "q\nA. a\nB. b\nC. c\nD. d\nAnswer:"),
              "0-shot: %s", task ? task->reqs[0].context : err.msg);
    tl_eval_task_free(task);
    remove_dir(dir);
    tl_tokenizer_free(tok);
}

const tl_test tests_eval_mc[] = {
    {"eval_mc_kv_vs_lm_eval", test_eval_mc_kv_vs_lm_eval},
    {"eval_mc_fp32_vs_lm_eval", test_eval_mc_fp32_vs_lm_eval},
    {"eval_mc_malformed", test_eval_mc_malformed},
    {NULL, NULL},
};

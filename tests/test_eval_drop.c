/* test_eval_drop.c - DROP's normalisation, exact match and F1, and the shot
 * draws, against tests/fixtures/eval_drop/metric.json, which
 * scripts/gen_drop_metric_fixture.py writes with lm-evaluation-harness's own
 * drop functions and Python's random.Random; and the whole task (prompts with
 * the harness's shot draws, greedy generations, EM/F1) against
 * tests/fixtures/eval_drop/expected.json from scripts/gen_drop_fixtures.py
 * (lm-eval's drop task, HF backend, on the random tiny Llama of eval_gen). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_gen.h"
#include "harness.h"

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num(const cJSON *o, const char *k) {
    const cJSON *it = get(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

/* HF may run a few ids past where we stopped (its stop check looks at the last few tokens) */
static int ids_prefix(const cJSON *arr, const int *ids, int n) {
    if (cJSON_GetArraySize(arr) < n) return 0;
    for (int i = 0; i < n; i++)
        if ((int)cJSON_GetArrayItem(arr, i)->valuedouble != ids[i]) return 0;
    return 1;
}

/* The harness's prompts (shots drawn per question), generations and scores. */
static void test_drop_generation(tl_test_ctx *t) {
    char path[600], *text = NULL;
    size_t len;
    tl_error err;
    snprintf(path, sizeof path, "%s/eval_drop/expected.json", tl_test_fixture_dir());
    if (tl_read_file(path, 1 << 24, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    cJSON *exp = cJSON_Parse(text);
    free(text);
    snprintf(path, sizeof path, "%s/tokenizers/llama2/tokenizer.model", tl_test_shared_dir());
    tl_tokenizer *tok = tl_tokenizer_load(path, &err);
    CHECK_MSG(tok != NULL, "%s", err.msg);
    tl_gen_task *task = NULL;
    tl_infer_model m;
    int have_model = 0;
    if (!exp || !tok) goto out;
    snprintf(path, sizeof path, "%s/eval_gen/model", tl_test_fixture_dir());
    if (tl_infer_load_weights_only(&m, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    have_model = 1;
    /* the file, or the folder that holds it */
    snprintf(path, sizeof path, "%s/eval_drop", tl_test_fixture_dir());
    task = tl_gen_task_load(TL_TASK_DROP, path, 0, tok, &err);
    CHECK_MSG(task != NULL, "%s", err.msg);
    if (!task) goto out;
    const cJSON *docs = get(exp, "docs");
    CHECK(task->n_docs == cJSON_GetArraySize(docs));
    tl_gen_result r;
    if (tl_gen_run(task, &m, tok, NULL, &r, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    int hits = 0;
    for (int i = 0; i < task->n_docs && i < cJSON_GetArraySize(docs); i++) {
        const cJSON *ed = cJSON_GetArrayItem(docs, i);
        const tl_gen_doc *d = &task->docs[i];
        CHECK(!strcmp(d->name, get(ed, "query_id")->valuestring));
        CHECK_MSG(!strcmp(d->context, get(ed, "context")->valuestring), "drop %d: context\n ours: \"%s\"\n lm-eval: \"%s\"",
                  i, d->context, get(ed, "context")->valuestring);
        CHECK_MSG(tl_test_ids_equal(get(ed, "context_ids"), d->ids, d->n_ids), "drop %d: context ids", i);
        CHECK_MSG(ids_prefix(get(ed, "gen_ids"), r.gen_ids[i], r.n_gen[i]), "drop %d: generated ids differ", i);
        CHECK_MSG(!strcmp(r.completion[i], get(ed, "response")->valuestring),
                  "drop %d: continuation\n ours: \"%s\"\n lm-eval: \"%s\"", i, r.completion[i],
                  get(ed, "response")->valuestring);
        CHECK_MSG(r.em[i] == num(ed, "em") && r.score[i] == num(ed, "f1"), "drop %d: em %g f1 %g, lm-eval %g %g", i,
                  r.em[i], r.score[i], num(ed, "em"), num(ed, "f1"));
        hits += r.em[i] == 1.0;
    }
    CHECK_MSG(hits > 0 && hits < task->n_docs, "the fixture needs hits and misses (%d of %d)", hits, task->n_docs);
    CHECK_CLOSE(r.metric, num(exp, "f1"), 1e-12, 0);
    CHECK_CLOSE(r.metric_stderr, num(exp, "f1_stderr"), 1e-12, 1e-9);
    CHECK_CLOSE(r.em_metric, num(exp, "em"), 1e-12, 0);
    CHECK_CLOSE(r.em_stderr, num(exp, "em_stderr"), 1e-12, 1e-9);
    char *js = tl_gen_result_json(task, &r, 1);
    CHECK(js && strstr(js, "\"f1\"") && strstr(js, "\"em\"") && strstr(js, "\"query_id\""));
    free(js);
    tl_gen_result_free(&r);
out:
    tl_gen_task_free(task);
    if (have_model) tl_infer_free(&m);
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

static const char **strings(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    const char **s = calloc((size_t)*n + 1, sizeof *s);
    for (int i = 0; s && i < *n; i++) s[i] = cJSON_GetArrayItem(arr, i)->valuestring;
    return s;
}

static void test_drop_normalize(tl_test_ctx *t) {
    cJSON *j = tl_test_json_fixture(t, "eval_drop/metric.json");
    if (!j) return;
    const cJSON *it;
    int n = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "normalize")) {
        const char *s = cJSON_GetObjectItemCaseSensitive(it, "s")->valuestring;
        const char *want = cJSON_GetObjectItemCaseSensitive(it, "norm")->valuestring;
        char *got = tl_drop_normalize(s);
        CHECK_MSG(got && !strcmp(got, want), "normalize(\"%s\") = \"%s\", lm-eval \"%s\"", s, got ? got : "(null)",
                  want);
        free(got);
        n++;
    }
    CHECK(n > 300);
    cJSON_Delete(j);
}

static void test_drop_metrics(tl_test_ctx *t) {
    cJSON *j = tl_test_json_fixture(t, "eval_drop/metric.json");
    if (!j) return;
    const cJSON *it;
    int n = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "metrics")) {
        int np, ng;
        const char **p = strings(cJSON_GetObjectItemCaseSensitive(it, "pred"), &np);
        const char **g = strings(cJSON_GetObjectItemCaseSensitive(it, "gold"), &ng);
        double em = -1, f1 = -1;
        CHECK(tl_drop_metrics(p, np, g, ng, &em, &f1) == 0);
        double want_em = cJSON_GetObjectItemCaseSensitive(it, "em")->valuedouble;
        double want_f1 = cJSON_GetObjectItemCaseSensitive(it, "f1")->valuedouble;
        CHECK_MSG(em == want_em && f1 == want_f1, "pair %d (pred \"%s\", gold \"%s\"...): em %g f1 %g, lm-eval %g %g", n,
                  p[0], g[0], em, f1, want_em, want_f1);
        free(p);
        free(g);
        n++;
    }
    CHECK(n > 600);
    n = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "docs")) {
        const cJSON *ans = cJSON_GetObjectItemCaseSensitive(it, "answers");
        int na = cJSON_GetArraySize(ans);
        tl_drop_answer *a = calloc((size_t)na, sizeof *a);
        for (int k = 0; k < na; k++) a[k].spans = (char **)strings(cJSON_GetArrayItem(ans, k), &a[k].n);
        double em = -1, f1 = -1;
        const char *pred = cJSON_GetObjectItemCaseSensitive(it, "pred")->valuestring;
        CHECK(tl_drop_score(pred, a, na, &em, &f1) == 0);
        double want_em = cJSON_GetObjectItemCaseSensitive(it, "em")->valuedouble;
        double want_f1 = cJSON_GetObjectItemCaseSensitive(it, "f1")->valuedouble;
        CHECK_MSG(em == want_em && f1 == want_f1, "doc %d (pred \"%s\"): em %g f1 %g, lm-eval %g %g", n, pred, em, f1,
                  want_em, want_f1);
        for (int k = 0; k < na; k++) free(a[k].spans);
        free(a);
        n++;
    }
    CHECK(n == 200);
    cJSON_Delete(j);
}

static void test_drop_sample(tl_test_ctx *t) {
    cJSON *j = tl_test_json_fixture(t, "eval_drop/metric.json");
    if (!j) return;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "samples")) {
        tl_pyrandom r;
        tl_pyrandom_seed(&r, (uint32_t)cJSON_GetObjectItemCaseSensitive(it, "seed")->valuedouble);
        int n = (int)cJSON_GetObjectItemCaseSensitive(it, "n")->valuedouble;
        int k = (int)cJSON_GetObjectItemCaseSensitive(it, "k")->valuedouble;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(it, "draws")) {
            int out[16];
            CHECK(tl_pyrandom_sample(&r, n, k, out) == 0);
            for (int i = 0; i < k; i++)
                CHECK_MSG(out[i] == (int)cJSON_GetArrayItem(d, i)->valuedouble, "sample(range(%d), %d)[%d] = %d, Python %d",
                          n, k, i, out[i], (int)cJSON_GetArrayItem(d, i)->valuedouble);
        }
    }
    cJSON_Delete(j);
}

const tl_test tests_eval_drop[] = {
    {"eval_drop_normalize", test_drop_normalize},
    {"eval_drop_metrics", test_drop_metrics},
    {"eval_drop_sample", test_drop_sample},
    {"eval_drop_generation", test_drop_generation},
    {NULL, NULL},
};

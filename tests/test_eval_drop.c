/* test_eval_drop.c - DROP's normalisation, exact match and F1, and the shot
 * draws, against tests/fixtures/eval_gen/drop_metric.json, which
 * scripts/gen_drop_metric_fixture.py writes with lm-evaluation-harness's own
 * drop functions and Python's random.Random. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_drop.h"
#include "harness.h"

static cJSON *load_fixture(tl_test_ctx *t) {
    char path[600], *text;
    size_t len;
    tl_error err;
    snprintf(path, sizeof path, "%s/eval_gen/drop_metric.json", tl_test_fixture_dir());
    if (tl_read_file(path, 1 << 24, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    CHECK_MSG(j != NULL, "cannot parse %s", path);
    return j;
}

static const char **strings(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    const char **s = calloc((size_t)*n + 1, sizeof *s);
    for (int i = 0; s && i < *n; i++) s[i] = cJSON_GetArrayItem(arr, i)->valuestring;
    return s;
}

static void test_drop_normalize(tl_test_ctx *t) {
    cJSON *j = load_fixture(t);
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
    cJSON *j = load_fixture(t);
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
    cJSON *j = load_fixture(t);
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
    {NULL, NULL},
};

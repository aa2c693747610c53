/* test_generate.c - the generation loop (token limit, end of sequence, a full
 * context, stop strings, also split across tokens) on the transformers fixture
 * infer_tied_bf16, whose greedy continuation transformers wrote
 * (scripts/gen_infer_fixtures.py); and the TinyLlama-Chat template. */
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "harness.h"
#include "safetensors.h"
#include "tokenizer.h"

/* ---------------------------------------------------------- stop strings */

typedef struct {
    char text[512];
    size_t len;
    int ids[64];
    int n_ids;
} sink;

static void collect(const char *s, size_t n, void *user) {
    sink *k = user;
    if (k->len + n < sizeof k->text) memcpy(k->text + k->len, s, n), k->len += n;
    k->text[k->len] = '\0';
}

static void collect_id(int id, void *user) {
    sink *k = user;
    if (k->n_ids < 64) k->ids[k->n_ids++] = id;
}

static void test_stop_split_across_tokens(tl_test_ctx *t) {
    const char *stops[] = {"</s>"};
    sink k = {0};
    tl_stop_filter f;
    tl_stop_init(&f, stops, 1, collect, &k);
    CHECK(tl_stop_push(&f, "Hello <", 7) == 0);
    CHECK(strchr(k.text, '<') == NULL); /* the '<' could begin the stop string: held back */
    CHECK(tl_stop_push(&f, "/", 1) == 0);
    CHECK(strchr(k.text, '<') == NULL);
    CHECK(tl_stop_push(&f, "s> world", 8) == 1);
    CHECK_MSG(!strcmp(k.text, "Hello "), "'%s'", k.text); /* the text before it, nothing after */
    tl_stop_free(&f);
}

static void test_stop_near_miss_and_flush(tl_test_ctx *t) {
    const char *stops[] = {"</s>"};
    sink k = {0};
    tl_stop_filter f;
    tl_stop_init(&f, stops, 1, collect, &k);
    /* "</x" starts like the stop string but is not it: all of it comes out at the end */
    CHECK(tl_stop_push(&f, "ab<", 3) == 0);
    CHECK(tl_stop_push(&f, "/x", 2) == 0);
    tl_stop_flush(&f);
    CHECK_MSG(!strcmp(k.text, "ab</x"), "'%s'", k.text);
    tl_stop_free(&f);
}

static void test_stop_earliest_wins(tl_test_ctx *t) {
    const char *stops[] = {"world", "lo"};
    sink k = {0};
    tl_stop_filter f;
    tl_stop_init(&f, stops, 2, collect, &k);
    CHECK(tl_stop_push(&f, "hello world", 11) == 1);
    CHECK_MSG(!strcmp(k.text, "hel"), "'%s'", k.text);
    tl_stop_free(&f);
    /* without stop strings text passes straight through */
    sink k2 = {0};
    tl_stop_init(&f, NULL, 0, collect, &k2);
    CHECK(tl_stop_push(&f, "a</s>b", 6) == 0);
    CHECK(!strcmp(k2.text, "a</s>b"));
    tl_stop_free(&f);
}

/* ------------------------------------------------------------ chat template */

static void test_chat_template(tl_test_ctx *t) {
    /* TinyLlama-1.1B-Chat-v1.0's (Zephyr's) chat_template with add_generation_prompt:
     * each message "<|role|>\n" + content + eos_token + "\n", then "<|assistant|>\n" */
    size_t len;
    tl_chat_turn one[] = {{"How many helicopters can a human eat in one sitting?", NULL}};
    char *s = tl_chat_render(TL_CHAT_ZEPHYR, "You are a friendly chatbot who always responds in the style of a pirate",
                             one, 0, 1, &len);
    const char *want = "<|system|>\nYou are a friendly chatbot who always responds in the style of a pirate</s>\n"
                       "<|user|>\nHow many helicopters can a human eat in one sitting?</s>\n<|assistant|>\n";
    CHECK_MSG(s && !strcmp(s, want) && len == strlen(want), "'%s'", s ? s : "(null)");
    free(s);
    /* no system prompt; a finished turn carries its reply */
    tl_chat_turn two[] = {{"Hi!", "Hello."}, {"Tell me a joke.", NULL}};
    s = tl_chat_render(TL_CHAT_ZEPHYR, NULL, two, 0, 2, &len);
    want = "<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n<|user|>\nTell me a joke.</s>\n<|assistant|>\n";
    CHECK_MSG(s && !strcmp(s, want) && len == strlen(want), "'%s'", s ? s : "(null)");
    free(s);
    s = tl_chat_render(TL_CHAT_ZEPHYR, "sys", NULL, 0, 0, &len);
    CHECK(s && !strcmp(s, "<|system|>\nsys</s>\n"));
    free(s);
}

/* ------------------------------------------------------- the generation loop */

typedef struct {
    tl_infer_model m;
    tl_infer_state s;
    tl_sampler sp;
    int *prompt, *greedy;
    int n_prompt, n_greedy;
} gen_fixture;

static int *read_ids(tl_safetensors *st, const char *name, int *n) {
    const tl_st_tensor *e = tl_st_find(st, name);
    tl_error err;
    int *ids = e ? malloc(sizeof(int) * e->numel) : NULL;
    if (ids && tl_st_read_i32(st, e, ids, e->numel, &err)) {
        free(ids);
        return NULL;
    }
    if (ids) *n = (int)e->numel;
    return ids;
}

/* The tied_bf16 model with a greedy sampler and a cache of ctx positions. */
static int fixture_open(tl_test_ctx *t, gen_fixture *f, int ctx) {
    memset(f, 0, sizeof *f);
    char path[600];
    tl_error err;
    tl_safetensors st;
    snprintf(path, sizeof path, "%s/infer_expected.safetensors", tl_test_fixture_dir());
    if (tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    f->prompt = read_ids(&st, "tied_bf16.prompt", &f->n_prompt);
    f->greedy = read_ids(&st, "tied_bf16.greedy", &f->n_greedy);
    tl_st_close(&st);
    snprintf(path, sizeof path, "%s/infer_tied_bf16", tl_test_fixture_dir());
    tl_sampler_opts so;
    tl_sampler_default_opts(&so); /* greedy */
    if (!f->prompt || !f->greedy || tl_infer_load(&f->m, path, &err) ||
        tl_infer_state_init(&f->s, &f->m, ctx, &err) || tl_sampler_init(&f->sp, &so, f->m.cfg.vocab_size, 1, &err)) {
        CHECK_MSG(0, "fixture: %s", err.msg);
        return -1;
    }
    CHECK(f->n_greedy >= 8);
    return 0;
}

static void fixture_close(gen_fixture *f) {
    tl_sampler_free(&f->sp);
    tl_infer_state_free(&f->s);
    if (f->m.layers) tl_infer_free(&f->m);
    free(f->prompt);
    free(f->greedy);
}

/* Generates from the prompt; h gets the prompt and the new ids. */
static int run(gen_fixture *f, const tl_gen_opts *o, tl_gen_history *h, tl_gen_end *why, tl_gen_stats *st) {
    tl_error err;
    tl_infer_truncate(&f->s, 0);
    h->ids = malloc(sizeof(int) * (size_t)f->n_prompt);
    memcpy(h->ids, f->prompt, sizeof(int) * (size_t)f->n_prompt);
    h->n = h->cap = f->n_prompt;
    return tl_generate(&f->s, &f->sp, o, h, 0, why, st, &err);
}

static void test_generate_limit_and_eos(tl_test_ctx *t) {
    gen_fixture f;
    if (fixture_open(t, &f, 64)) {
        fixture_close(&f);
        return;
    }
    sink k = {0};
    tl_gen_opts o = {.max_tokens = 5, .on_token = collect_id, .user = &k};
    tl_gen_history h;
    tl_gen_end why;
    tl_gen_stats st;
    /* --max-tokens: exactly that many, transformers' greedy ids, the last one never run */
    CHECK(run(&f, &o, &h, &why, &st) == 0);
    CHECK(why == TL_GEN_LIMIT && st.n_generated == 5 && st.n_steps == 4 && st.n_prompt == f.n_prompt);
    CHECK(h.n == f.n_prompt + 5 && !memcmp(h.ids + f.n_prompt, f.greedy, sizeof(int) * 5));
    CHECK(k.n_ids == 5 && !memcmp(k.ids, f.greedy, sizeof(int) * 5));
    CHECK(f.s.pos == f.n_prompt + 4);
    free(h.ids);
    /* an end-of-sequence id ends the output and is not part of it */
    int eos = f.greedy[3], first = 3;
    for (int i = 0; i < 3; i++)
        if (f.greedy[i] == eos) first = i;
    f.m.gen.n_eos = 1;
    f.m.gen.eos_ids[0] = eos;
    o.max_tokens = 8;
    k.n_ids = 0;
    CHECK(run(&f, &o, &h, &why, &st) == 0);
    CHECK(why == TL_GEN_EOS && st.n_generated == first && h.n == f.n_prompt + first && k.n_ids == first);
    free(h.ids);
    /* --ignore-eos goes on to the limit */
    o.ignore_eos = 1;
    CHECK(run(&f, &o, &h, &why, &st) == 0);
    CHECK(why == TL_GEN_LIMIT && st.n_generated == 8 && !memcmp(h.ids + f.n_prompt, f.greedy, sizeof(int) * 8));
    free(h.ids);
    /* max-tokens 0: nothing */
    o.max_tokens = 0;
    CHECK(run(&f, &o, &h, &why, &st) == 0 && why == TL_GEN_LIMIT && st.n_generated == 0 && h.n == f.n_prompt);
    free(h.ids);
    fixture_close(&f);
}

static void test_generate_context_full(tl_test_ctx *t) {
    gen_fixture f;
    if (fixture_open(t, &f, 0) || (tl_infer_state_free(&f.s), 0)) {
        fixture_close(&f);
        return;
    }
    /* room for the prompt and two more positions: the third new id cannot be run */
    tl_error err;
    CHECK(tl_infer_state_init(&f.s, &f.m, f.n_prompt + 2, &err) == 0);
    tl_gen_opts o = {.max_tokens = 10};
    tl_gen_history h;
    tl_gen_end why;
    tl_gen_stats st;
    CHECK(run(&f, &o, &h, &why, &st) == 0);
    CHECK(why == TL_GEN_CONTEXT && st.n_generated == 3 && !memcmp(h.ids + f.n_prompt, f.greedy, sizeof(int) * 3));
    free(h.ids);
    /* a cache that does not hold the tokens before `from` is refused */
    h.ids = malloc(sizeof(int) * (size_t)f.n_prompt);
    memcpy(h.ids, f.prompt, sizeof(int) * (size_t)f.n_prompt);
    h.n = h.cap = f.n_prompt;
    tl_infer_truncate(&f.s, 0);
    CHECK(tl_generate(&f.s, &f.sp, &o, &h, 3, &why, &st, &err) == -1);
    free(h.ids);
    fixture_close(&f);
}

static void test_generate_stop_string_across_tokens(tl_test_ctx *t) {
    gen_fixture f;
    if (fixture_open(t, &f, 64)) {
        fixture_close(&f);
        return;
    }
    /* the greedy text, token by token, as the streaming decoder gives it */
    size_t end[16], total = 0;
    char full[2048];
    tl_decoder dec;
    tl_error err;
    tl_decoder_init(&dec, f.m.tok);
    int n = f.n_greedy < 16 ? f.n_greedy : 16;
    for (int i = 0; i < n; i++) {
        const char *s;
        size_t len = 0;
        CHECK(tl_decoder_push(&dec, f.greedy[i], &s, &len, &err) == 0);
        if (total + len < sizeof full) memcpy(full + total, s, len), total += len;
        end[i] = total;
    }
    const char *rest;
    size_t rest_len = 0;
    CHECK(tl_decoder_flush(&dec, &rest, &rest_len, &err) == 0); /* what the decoder holds at the end */
    char whole[2048];
    memcpy(whole, full, total);
    size_t whole_len = total;
    if (whole_len + rest_len < sizeof whole) memcpy(whole + whole_len, rest, rest_len), whole_len += rest_len;
    tl_decoder_free(&dec);
    /* a two-byte stop string made of the last byte of token k and the first of
     * token k+1, first found there */
    int k = -1;
    char stop[3] = {0};
    for (int i = 0; i + 1 < n && k < 0; i++) {
        if (end[i] == 0 || end[i + 1] == end[i] || (i > 0 && end[i] == end[i - 1])) continue;
        stop[0] = full[end[i] - 1], stop[1] = full[end[i]];
        const char *p = memmem(full, total, stop, 2);
        if (p && (size_t)(p - full) == end[i] - 1 && stop[0] && stop[1]) k = i;
    }
    CHECK_MSG(k >= 0, "no token boundary to put a stop string on");
    if (k >= 0) {
        const char *stops[] = {stop};
        sink out = {0};
        tl_gen_opts o = {.max_tokens = n, .stops = stops, .n_stops = 1, .on_text = collect, .user = &out};
        tl_gen_history h;
        tl_gen_end why;
        tl_gen_stats st;
        CHECK(run(&f, &o, &h, &why, &st) == 0);
        CHECK(why == TL_GEN_STOP && st.n_generated == k + 2);
        CHECK_MSG(out.len == end[k] - 1 && !memcmp(out.text, full, out.len), "got %zu bytes, want %zu", out.len,
                  end[k] - 1);
        free(h.ids);
        /* without it: the whole text */
        sink all = {0};
        o.n_stops = 0, o.user = &all;
        CHECK(run(&f, &o, &h, &why, &st) == 0 && why == TL_GEN_LIMIT);
        CHECK_MSG(all.len == whole_len && !memcmp(all.text, whole, whole_len), "%zu vs %zu", all.len, whole_len);
        free(h.ids);
    }
    fixture_close(&f);
}

static void test_chat_turns(tl_test_ctx *t) {
    gen_fixture f;
    if (fixture_open(t, &f, 256)) {
        fixture_close(&f);
        return;
    }
    tl_chat c;
    tl_error err;
    CHECK(tl_chat_init(&c, &f.s, &f.sp, TL_CHAT_ZEPHYR, "Be brief.", &err) == 0);
    tl_gen_opts o = {.max_tokens = 4, .ignore_eos = 1};
    tl_gen_end why;
    tl_gen_stats st;
    /* turn one: the rendered template, encoded with BOS */
    CHECK(tl_chat_say(&c, "Hi", &o, &why, &st, &err) == 0 && why == TL_GEN_LIMIT && st.n_generated == 4);
    size_t len, n1;
    int *ids = NULL;
    tl_chat_turn m1[] = {{"Hi", NULL}};
    char *text = tl_chat_render(TL_CHAT_ZEPHYR, "Be brief.", m1, 0, 1, &len);
    CHECK(tl_tokenizer_encode(f.m.tok, text, len, TL_ENC_BOS | TL_ENC_PARSE_SPECIAL, &ids, &n1, &err) == 0);
    CHECK(st.n_prompt == (int)n1 && c.n_cached == (int)n1 + 3 && !memcmp(c.cached, ids, sizeof(int) * n1));
    CHECK(c.n_turns == 1 && c.turns[0].assistant != NULL);
    free(text);
    free(ids);
    /* turn two: only what follows the cached prefix is run */
    CHECK(tl_chat_say(&c, "Again", &o, &why, &st, &err) == 0);
    CHECK_MSG(st.n_prompt > 0 && st.n_prompt < c.n_cached - 3 && c.first == 0, "%d %d %d", st.n_prompt, c.n_cached,
              c.first);
    /* a message that cannot fit the context is skipped; the conversation goes on */
    char big[3000];
    for (int i = 0; i < 2999; i++) big[i] = (char)('a' + i % 26);
    big[2999] = '\0';
    CHECK(tl_chat_say(&c, big, &o, &why, &st, &err) == 1 && c.n_turns == 2);
    CHECK(strstr(err.msg, "too long") != NULL);
    /* turns that no longer fit with room for the reply are dropped, oldest first */
    o.max_tokens = 200; /* reserves half the context */
    CHECK(tl_chat_say(&c, "And once more, a bit longer this time", &o, &why, &st, &err) == 0);
    CHECK(c.first > 0 && c.n_turns == 3);
    tl_chat_free(&c);
    fixture_close(&f);
}

/* ------------------------------------------------------------- settings */

static void test_settings_defaults(tl_test_ctx *t) {
    tl_gen_settings g, c;
    tl_gen_settings_default(&g, 0);
    tl_gen_settings_default(&c, 1);
    CHECK(g.so.temperature == 0.0f && g.so.top_k == 0 && g.so.top_p == 1.0f && g.max_tokens == 256 && !g.set);
    /* TinyLlama-1.1B-Chat-v1.0's model card: temperature 0.7, top_k 50, top_p 0.95 */
    CHECK(c.so.temperature == 0.7f && c.so.top_k == 50 && c.so.top_p == 0.95f && c.max_tokens == 512 && !c.set);
}

static void test_settings_resolve(tl_test_ctx *t) {
    tl_gen_config gc = {.has_sampling = 1, .temperature = 0.6f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f,
                        .repetition_penalty = 1.1f};
    /* generation_config.json fills what the caller left; the caller's choices stay */
    tl_gen_settings g;
    tl_gen_settings_default(&g, 0);
    g.so.top_k = 7;
    g.seed = 42;
    g.set = TL_GEN_SET_TOP_K | TL_GEN_SET_SEED;
    tl_gen_settings_resolve(&g, &gc);
    CHECK(g.so.temperature == 0.6f && g.so.top_k == 7 && g.so.top_p == 0.9f && g.so.min_p == 0.05f);
    CHECK(g.so.repetition_penalty == 1.1f && g.seed == 42);
    /* without do_sample the decoding stays greedy, but the repetition penalty applies */
    gc.has_sampling = 0;
    tl_gen_settings_default(&g, 0);
    tl_gen_settings_resolve(&g, &gc);
    CHECK(g.so.temperature == 0.0f && g.so.top_k == 0 && g.so.repetition_penalty == 1.1f);
    g.so.repetition_penalty = 1.3f;
    g.set = TL_GEN_SET_REPETITION_PENALTY;
    tl_gen_settings_resolve(&g, &gc);
    CHECK(g.so.repetition_penalty == 1.3f);
    /* a chat keeps its own defaults whatever the file says */
    gc.has_sampling = 1;
    tl_gen_settings default_chat, c;
    tl_gen_settings_default(&default_chat, 1);
    tl_gen_settings_default(&c, 1);
    tl_gen_settings_resolve(&c, &gc);
    CHECK(c.so.temperature == default_chat.so.temperature && c.so.top_k == 50 && c.so.repetition_penalty == 1.0f);
    /* no file at all */
    tl_gen_settings_default(&g, 0);
    tl_gen_settings_resolve(&g, NULL);
    CHECK(g.so.temperature == 0.0f && g.so.repetition_penalty == 1.0f);
}

const tl_test tests_generate[] = {
    {"generate/settings_defaults", test_settings_defaults},
    {"generate/settings_resolve", test_settings_resolve},
    {"generate/stop_split_across_tokens", test_stop_split_across_tokens},
    {"generate/stop_near_miss_and_flush", test_stop_near_miss_and_flush},
    {"generate/stop_earliest_wins", test_stop_earliest_wins},
    {"generate/chat_template", test_chat_template},
    {"generate/limit_and_eos", test_generate_limit_and_eos},
    {"generate/context_full", test_generate_context_full},
    {"generate/stop_string_across_tokens", test_generate_stop_string_across_tokens},
    {"generate/chat_turns", test_chat_turns},
    {NULL, NULL},
};

/* test_sft.c - supervised fine-tuning data and loss: chat records, masked
 * shards, and our ids / mask / loss / gradients against transformers +
 * TRL (fixtures written by scripts/gen_sft_fixtures.py). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "data.h"
#include "harness.h"
#include "model.h"
#include "prepare.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "train.h"

#define SFT_SEQ 63 /* gen_sft_fixtures.py's SEQ */

static int parse(const char *line, char *why, size_t cap) {
    tl_conv c;
    int s = tl_conv_parse(line, strlen(line), &c, why, cap);
    tl_conv_free(&c);
    return s;
}

static void test_conv_parse(tl_test_ctx *t) {
    char why[300];
    tl_conv c;
    const char *ok = "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Q\"},"
                     " {\"role\": \"assistant\", \"content\": \"A\"}]}";
    CHECK(tl_conv_parse(ok, strlen(ok), &c, why, sizeof why) == TL_CONV_OK);
    CHECK(c.n == 3 && c.msgs[0].role == TL_ROLE_SYSTEM && c.msgs[2].role == TL_ROLE_ASSISTANT &&
          !strcmp(c.msgs[2].content, "A"));
    tl_conv_free(&c);
    /* ShareGPT */
    const char *sg = "{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"gpt\", \"value\": \"A\"}]}";
    CHECK(tl_conv_parse(sg, strlen(sg), &c, why, sizeof why) == TL_CONV_OK);
    CHECK(c.n == 2 && c.msgs[0].role == TL_ROLE_USER && c.msgs[1].role == TL_ROLE_ASSISTANT);
    tl_conv_free(&c);
    static const struct {
        const char *line;
        int status;
        const char *says;
    } bad[] = {
        {"[1, 2]", TL_CONV_MALFORMED, "JSON object"},
        {"{\"messages\": [", TL_CONV_MALFORMED, "JSON object"},
        {"{\"text\": \"x\"}", TL_CONV_NO_MESSAGES, "messages"},
        {"{\"messages\": []}", TL_CONV_NO_MESSAGES, "messages"},
        {"{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", TL_CONV_BAD_ROLE, "'tool'"},
        {"{\"messages\": [{\"content\": \"x\"}]}", TL_CONV_BAD_ROLE, "missing"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": [1]}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
         TL_CONV_NOT_STRING, "not a string"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \" \\n\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
         TL_CONV_EMPTY_TURN, "empty"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}", TL_CONV_NO_ASSISTANT, "no assistant"},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}", TL_CONV_BAD_ORDER, "messages[0]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"system\", \"content\": \"s\"}]}",
         TL_CONV_BAD_ORDER, "messages[1]"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"human\", \"value\": \"q\"}]}",
         TL_CONV_BAD_ORDER, "conversations[1]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = 0;
        int s = parse(bad[i].line, why, sizeof why);
        CHECK_MSG(s == bad[i].status && strstr(why, bad[i].says), "%s: status %s (%s), wanted %s", bad[i].line,
                  tl_conv_status_name(s), why, tl_conv_status_name(bad[i].status));
    }
}

static void test_chat_render_spans(tl_test_ctx *t) {
    /* the reply span covers the reply and its end-of-turn marker, in every format */
    tl_chat_msg m[] = {{TL_ROLE_SYSTEM, "S"}, {TL_ROLE_USER, "Q"}, {TL_ROLE_ASSISTANT, "A"}, {TL_ROLE_USER, "R"},
                       {TL_ROLE_ASSISTANT, "B"}};
    static const char *const want[3][2] = {{"A</s>", "B</s>"}, {"A </s>", "B </s>"}, {"A<|im_end|>", "B<|im_end|>"}};
    for (int f = 0; f < 3; f++) {
        size_t len, spans[4];
        char *s = tl_chat_render_messages((tl_chat_format)(TL_CHAT_ZEPHYR + f), m, 5, 0, &len, spans);
        CHECK(s != NULL);
        if (!s) continue;
        for (int k = 0; k < 2; k++)
            CHECK_MSG(spans[2 * k + 1] - spans[2 * k] == strlen(want[f][k]) &&
                          !memcmp(s + spans[2 * k], want[f][k], strlen(want[f][k])),
                      "%s: span %d is '%.*s'", tl_chat_format_name((tl_chat_format)(TL_CHAT_ZEPHYR + f)), k,
                      (int)(spans[2 * k + 1] - spans[2 * k]), s + spans[2 * k]);
        free(s);
    }
}

/* The fixture's conversations through prepare --format chat, read back. */
static int prepare_fixture(tl_test_ctx *t, const char *out, tl_dataset *d) {
    char in[512], tok[512];
    snprintf(in, sizeof in, "%s/sft/convs.jsonl", tl_test_fixture_dir());
    snprintf(tok, sizeof tok, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    const char *inputs[] = {in};
    tl_prepare_opts o;
    tl_prepare_default_opts(&o);
    o.inputs = inputs;
    o.n_inputs = 1;
    o.out_dir = out;
    o.tokenizer = tok;
    o.format = TL_FMT_CHAT;
    o.seq_len = SFT_SEQ;
    o.nthreads = 1;
    tl_prepare_result r;
    tl_error err;
    int rc = tl_prepare_run(&o, &r, &err);
    CHECK_MSG(rc == 0, "prepare: %s", err.msg);
    if (rc) return -1;
    CHECK(r.chat.conversations == 3 && r.chat.truncated == 2 && r.train.samples == 3);
    tl_prepare_result_free(&r);
    const char *paths[] = {out};
    tl_dataset_opts dopts = {.split = "train", .verify = 1};
    rc = tl_dataset_open_ex(d, paths, 1, &dopts, &err);
    CHECK_MSG(rc == 0, "open: %s", err.msg);
    if (rc) return -1;
    CHECK(d->masked && d->seq_len == SFT_SEQ && d->n_samples == 3);
    return 0;
}

static int *read_i32(tl_test_ctx *t, tl_safetensors *st, const char *name, size_t *n) {
    const tl_st_tensor *e = tl_st_find(st, name);
    CHECK_MSG(e != NULL, "fixture lacks %s", name);
    if (!e) return NULL;
    int *v = malloc(sizeof(int) * (e->numel + 1));
    tl_error err;
    if (tl_st_read_i32(st, e, v, e->numel, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(v);
        return NULL;
    }
    *n = e->numel;
    return v;
}

static void test_sft_matches_trl(tl_test_ctx *t) {
    char path[600], dir[600];
    tl_error err;
    tl_safetensors st;
    snprintf(path, sizeof path, "%s/sft_expected.safetensors", tl_test_fixture_dir());
    if (tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    /* 1. each conversation encoded whole: ids and mask as apply_chat_template's */
    snprintf(path, sizeof path, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    tl_tokenizer *tok = tl_tokenizer_load(path, &err);
    CHECK_MSG(tok != NULL, "%s", err.msg);
    snprintf(path, sizeof path, "%s/sft/convs.jsonl", tl_test_fixture_dir());
    char *text = NULL;
    size_t tlen;
    CHECK(tl_read_file(path, 1 << 20, &text, &tlen, &err) == 0);
    int i = 0;
    for (char *line = text, *nl; tok && text && (nl = strchr(line, '\n')); line = nl + 1, i++) {
        tl_conv c;
        char why[300];
        CHECK(tl_conv_parse(line, (size_t)(nl - line), &c, why, sizeof why) == TL_CONV_OK);
        int *ids;
        uint8_t *mask;
        size_t n, wn, wm;
        CHECK_MSG(tl_conv_encode(tok, TL_CHAT_ZEPHYR, &c, &ids, &mask, &n, &err) == 0, "%s", err.msg);
        char name[64];
        snprintf(name, sizeof name, "full_ids.%d", i);
        int *want_ids = read_i32(t, &st, name, &wn);
        snprintf(name, sizeof name, "full_mask.%d", i);
        int *want_mask = read_i32(t, &st, name, &wm);
        if (want_ids && want_mask) {
            CHECK_MSG(n == wn && wn == wm, "conversation %d: %zu tokens, transformers %zu", i, n, wn);
            for (size_t k = 0; k < n && k < wn; k++)
                CHECK_MSG(ids[k] == want_ids[k] && mask[k] == want_mask[k],
                          "conversation %d token %zu: %d/%d, transformers %d/%d", i, k, ids[k], mask[k], want_ids[k],
                          want_mask[k]);
        }
        free(want_ids);
        free(want_mask);
        free(ids);
        free(mask);
        tl_conv_free(&c);
    }
    CHECK(i == 3);
    free(text);
    tl_tokenizer_free(tok);

    /* 2. prepare's samples and the targets the trainer takes from them: TRL's batch */
    tl_dataset d;
    snprintf(dir, sizeof dir, "%s/sft_data", tl_test_tmpdir());
    if (prepare_fixture(t, dir, &d)) goto out;
    const int B = 3, T = SFT_SEQ;
    int *tokens = malloc(sizeof(int) * (size_t)B * (T + 1)), *in = malloc(sizeof(int) * (size_t)B * T),
        *tgt = malloc(sizeof(int) * (size_t)B * T);
    uint8_t *mask = malloc((size_t)B * (T + 1));
    CHECK(tl_dataset_next_mask(&d, B, T, tokens, mask, &err) == 0);
    long count = tl_batch_targets(tokens, mask, B, T, in, tgt);
    size_t ni, nl;
    int *want_in = read_i32(t, &st, "input_ids", &ni), *labels = read_i32(t, &st, "labels", &nl);
    long want_count = 0;
    if (want_in && labels && ni == (size_t)B * (T + 1) && nl == ni) {
        for (int b = 0; b < B; b++)
            for (int s = 0; s <= T; s++) {
                int k = b * (T + 1) + s;
                CHECK_MSG(tokens[k] == want_in[k] && mask[k] == (labels[k] != -100),
                          "sample %d position %d: %d/%d, TRL %d/%d", b, s, tokens[k], mask[k], want_in[k], labels[k]);
                if (s > 0) {
                    want_count += labels[k] != -100;
                    CHECK(tgt[b * T + s - 1] == (labels[k] == -100 ? -1 : labels[k]));
                }
            }
    } else {
        CHECK_MSG(0, "fixture batch is not %d x %d", B, T + 1);
    }
    CHECK(count == want_count && count > 0);

    /* 3. loss and gradients of the batch: the mean over the target tokens */
    tl_model m;
    snprintf(path, sizeof path, "%s/sft/model", tl_test_fixture_dir());
    if (tl_model_load_hf(path, &m, &err) == 0) {
        tl_acts *a = tl_acts_create(&m.cfg, B, T, &err);
        float *grads = tl_alloc(sizeof(float) * m.n_params);
        double loss = 0;
        CHECK(a && grads && tl_model_forward_backward(&m, a, grads, in, tgt, 1.0f, &loss, &err) == 0);
        const tl_st_tensor *le = tl_st_find(&st, "loss");
        float wl = NAN;
        if (le) tl_st_read_f32(&st, le, &wl, 1, &err);
        CHECK_MSG(fabs(loss - wl) < 1e-5 * fabs(wl), "loss %.7f, TRL %.7f", loss, wl);
        int checked = 0;
        for (int k = 0; k < m.n_tensors; k++) {
            const tl_tensor_info *ti = &m.tensors[k];
            char name[128];
            snprintf(name, sizeof name, "grad.%s", ti->name);
            const tl_st_tensor *ge = tl_st_find(&st, name);
            float *g = malloc(sizeof(float) * ti->numel);
            if (ge && g && tl_st_read_f32(&st, ge, g, ti->numel, &err) == 0) {
                double e = tl_test_rel_err(grads + ti->offset, g, ti->numel);
                CHECK_MSG(e < 2e-5, "gradient of %s: relative error %.3g", ti->name, e);
                checked++;
            }
            free(g);
        }
        CHECK(checked == m.n_tensors);
        tl_free(grads);
        tl_acts_free(a);
        tl_model_free(&m);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    free(want_in);
    free(labels);
    free(tokens);
    free(in);
    free(tgt);
    free(mask);
    tl_dataset_close(&d);
out:
    tl_st_close(&st);
}

static void test_masked_shards(tl_test_ctx *t) {
    /* a masked shard round-trips; an unmasked one still reads as before (mask all 1) */
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/masked.bin", tl_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/plain.bin", tl_test_tmpdir());
    tl_error err;
    tl_shard_writer w;
    int tok[5] = {1, 7, 8, 9, 2};
    uint8_t mk[5] = {0, 0, 1, 1, 0}, got_m[5];
    int got[5];
    CHECK(tl_shard_writer_open_ex(&w, p1, 4, 300, 1, &err) == 0);
    CHECK(tl_shard_writer_add_masked(&w, tok, mk, &err) == 0);
    CHECK(tl_shard_writer_add(&w, tok, 5, &err) != 0); /* whole samples only */
    CHECK(tl_shard_writer_close(&w, NULL, &err) == 0);
    CHECK(tl_shard_writer_open(&w, p2, 4, 300, &err) == 0);
    CHECK(tl_shard_writer_add(&w, tok, 5, &err) == 0);
    CHECK(tl_shard_writer_close(&w, NULL, &err) == 0);
    tl_shard s;
    CHECK(tl_shard_open(&s, p1, &err) == 0);
    CHECK(s.masked && s.n_samples == 1 && s.map_len == TL_SHARD_HEADER + 5 * 3);
    tl_shard_sample_mask(&s, 0, got, got_m);
    CHECK(!memcmp(got, tok, sizeof tok) && !memcmp(got_m, mk, sizeof mk));
    tl_shard_close(&s);
    CHECK(tl_shard_open(&s, p2, &err) == 0);
    CHECK(!s.masked && s.map_len == TL_SHARD_HEADER + 5 * 2);
    tl_shard_sample_mask(&s, 0, got, got_m);
    CHECK(!memcmp(got, tok, sizeof tok) && got_m[0] == 1 && got_m[4] == 1);
    tl_shard_close(&s);
    /* a data set may not mix them */
    const char *both[] = {p1, p2};
    tl_dataset d;
    CHECK(tl_dataset_open(&d, both, 2, &err) != 0 && strstr(err.msg, "loss mask"));
    /* targets: unmasked tokens are not predicted */
    int in[4], tg[4];
    CHECK(tl_batch_targets(tok, mk, 1, 4, in, tg) == 2);
    CHECK(tg[0] == -1 && tg[1] == 8 && tg[2] == 9 && tg[3] == -1 && in[3] == 9);
    CHECK(tl_batch_targets(tok, NULL, 1, 4, in, tg) == 4 && tg[3] == 2);
}

/* ---- train --sft ---- */

typedef struct {
    double loss[16], norm[16];
    int n;
} sft_log;

static void on_event(const tl_train_event *ev, void *user) {
    sft_log *l = user;
    if (ev->kind == TL_EV_STEP && l->n < 16) {
        l->loss[l->n] = ev->loss;
        l->norm[l->n++] = ev->grad_norm;
    }
}

/* Trains the fixture model on the fixture's chat data, B x accum sequences a
 * step in file order, `steps` steps; with resume_at, in two runs: to resume_at,
 * then on from that checkpoint.  The final parameters in *params (malloc'd).
 * opt: the optimizer (NULL: lr 1e-2, cosine over the run, no warmup). */
static int sft_run(tl_test_ctx *t, tl_dataset *d, const char *out, int B, int accum, int steps, int resume_at,
                   const tl_adamw_config *opt, sft_log *log, float **params) {
    char path[600];
    snprintf(path, sizeof path, "%s/sft/model", tl_test_fixture_dir());
    int rc = 0;
    for (int phase = 0; phase < (resume_at ? 2 : 1) && !rc; phase++) {
        tl_model m;
        tl_error err;
        if (tl_model_load_hf(path, &m, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            return -1;
        }
        tl_train_opts o = {.batch = B, .seq_len = SFT_SEQ, .accum = accum, .steps = resume_at && !phase ? resume_at : steps,
                           .opt = tl_adamw_defaults(), .seed = 1, .shuffle = 0, .out_dir = out, .keep = 0,
                           .overwrite = 1, .sft = 1};
        o.opt.lr = 1e-2;
        o.opt.warmup_steps = 0;
        o.opt.decay_steps = steps;
        if (opt) o.opt = *opt;
        tl_trainer *tr = tl_trainer_create(&m, d, NULL, &o, &err);
        CHECK_MSG(tr != NULL, "%s", err.msg);
        rc = tr ? 0 : -1;
        if (!rc && phase) {
            char ck[700];
            snprintf(ck, sizeof ck, "%s/step-%08d", out, resume_at);
            rc = tl_trainer_resume(tr, ck, &err);
            CHECK_MSG(rc == 0, "resume: %s", err.msg);
        }
        if (!rc) {
            rc = tl_trainer_run(tr, on_event, log, NULL, &err);
            CHECK_MSG(rc == 0, "%s", err.msg);
        }
        if (!rc && o.steps == steps) {
            *params = malloc(sizeof(float) * m.n_params);
            memcpy(*params, m.params, sizeof(float) * m.n_params);
        }
        tl_trainer_free(tr);
        tl_model_free(&m);
    }
    return rc;
}

static void test_sft_train(tl_test_ctx *t) {
    tl_dataset d;
    char dir[600], out[700];
    snprintf(dir, sizeof dir, "%s/sft_train_data", tl_test_tmpdir());
    if (prepare_fixture(t, dir, &d)) return;
    tl_safetensors st;
    tl_error err;
    char path[600];
    snprintf(path, sizeof path, "%s/sft_expected.safetensors", tl_test_fixture_dir());
    if (tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        tl_dataset_close(&d);
        return;
    }
    /* TRL's loss and gradient norm of the three conversations as one batch */
    float wl = NAN;
    const tl_st_tensor *le = tl_st_find(&st, "loss");
    if (le) tl_st_read_f32(&st, le, &wl, 1, &err);
    double sq = 0;
    for (int i = 0; i < st.n; i++) {
        const tl_st_tensor *e = &st.tensors[i];
        if (strncmp(e->name, "grad.", 5)) continue;
        float *g = malloc(sizeof(float) * e->numel);
        if (g && !tl_st_read_f32(&st, e, g, e->numel, &err))
            for (size_t k = 0; k < e->numel; k++) sq += (double)g[k] * g[k];
        free(g);
    }
    tl_st_close(&st);
    /* one step of the three as one micro-batch, and as three micro-batches of one (their
     * target counts differ: an unweighted mean of the micro-batch means would not match) */
    sft_log a = {0}, b = {0}, c = {0}, r = {0};
    float *pa = NULL, *pb = NULL, *pc = NULL, *pr = NULL;
    snprintf(out, sizeof out, "%s/sft_run_a", tl_test_tmpdir());
    sft_run(t, &d, out, 3, 1, 1, 0, NULL, &a, &pa);
    snprintf(out, sizeof out, "%s/sft_run_b", tl_test_tmpdir());
    sft_run(t, &d, out, 1, 3, 1, 0, NULL, &b, &pb);
    CHECK(a.n == 1 && b.n == 1);
    CHECK_MSG(fabs(a.loss[0] - wl) < 1e-5 * wl && fabs(b.loss[0] - wl) < 1e-5 * wl, "loss %.7f / %.7f, TRL %.7f",
              a.loss[0], b.loss[0], wl);
    CHECK_MSG(fabs(a.norm[0] - sqrt(sq)) < 1e-4 * sqrt(sq) && fabs(b.norm[0] - sqrt(sq)) < 1e-4 * sqrt(sq),
              "gradient norm %.7f / %.7f, torch %.7f", a.norm[0], b.norm[0], sqrt(sq));
    /* bit-identical resume, across an epoch boundary */
    snprintf(out, sizeof out, "%s/sft_run_c", tl_test_tmpdir());
    sft_run(t, &d, out, 1, 2, 4, 0, NULL, &c, &pc);
    snprintf(out, sizeof out, "%s/sft_run_r", tl_test_tmpdir());
    sft_run(t, &d, out, 1, 2, 4, 2, NULL, &r, &pr);
    CHECK(c.n == 4 && r.n == 4 && c.loss[3] < c.loss[0]);
    tl_model m;
    snprintf(path, sizeof path, "%s/sft/model", tl_test_fixture_dir());
    if (pc && pr && tl_model_load_hf(path, &m, &err) == 0) {
        CHECK(memcmp(pc, pr, sizeof(float) * m.n_params) == 0);
        tl_model_free(&m);
    } else {
        CHECK(0);
    }
    for (int i = 0; i < 4; i++) CHECK(c.loss[i] == r.loss[i]);
    /* chat data only with sft, and sft only on chat data */
    tl_model m2;
    if (tl_model_load_hf(path, &m2, &err) == 0) {
        tl_train_opts o = {.batch = 1, .seq_len = SFT_SEQ, .accum = 1, .steps = 1, .opt = tl_adamw_defaults(),
                           .out_dir = out};
        o.opt.decay_steps = 1;
        o.opt.warmup_steps = 0;
        CHECK(tl_trainer_create(&m2, &d, NULL, &o, &err) == NULL && strstr(err.msg, "--sft"));
        o.sft = 1;
        o.seq_len = 32;
        CHECK(tl_trainer_create(&m2, &d, NULL, &o, &err) == NULL && strstr(err.msg, "sequence length"));
        tl_model_free(&m2);
    }
    free(pa);
    free(pb);
    free(pc);
    free(pr);
    tl_dataset_close(&d);
}

/* Ten steps of train --sft from the fixture model, the three conversations as every
 * step's batch, against SFTTrainer's losses with the same AdamW (scripts/gen_sft_fixtures.py
 * writes sft_trajectory.json).  The first step is the same computation as
 * sft/matches_trl; later ones drift apart by float rounding carried through the
 * updates (both sides fp32, different summation orders): 3e-7 relative at
 * most when written, checked at 1e-5. */
static void test_sft_trajectory(tl_test_ctx *t) {
    char path[600], out[700];
    tl_error err;
    snprintf(path, sizeof path, "%s/sft_trajectory.json", tl_test_fixture_dir());
    char *text = NULL;
    size_t len;
    if (tl_read_file(path, 1 << 20, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *losses = cJSON_GetObjectItem(j, "losses"), *jo = cJSON_GetObjectItem(j, "opt");
    const int steps = cJSON_GetArraySize(losses);
    CHECK_MSG(j && jo && steps == 10 && cJSON_GetObjectItem(j, "batch")->valueint == 3, "bad fixture %s", path);
    if (!j || !jo || steps != 10) {
        cJSON_Delete(j);
        return;
    }
    tl_adamw_config opt = tl_adamw_defaults();
    opt.lr = opt.min_lr = cJSON_GetObjectItem(jo, "lr")->valuedouble; /* constant */
    opt.beta1 = cJSON_GetObjectItem(jo, "beta1")->valuedouble;
    opt.beta2 = cJSON_GetObjectItem(jo, "beta2")->valuedouble;
    opt.eps = cJSON_GetObjectItem(jo, "eps")->valuedouble;
    opt.weight_decay = cJSON_GetObjectItem(jo, "weight_decay")->valuedouble;
    opt.clip = cJSON_GetObjectItem(jo, "clip")->valuedouble;
    opt.warmup_steps = 0;
    opt.decay_steps = steps;
    tl_dataset d;
    snprintf(path, sizeof path, "%s/sft_traj_data", tl_test_tmpdir());
    if (prepare_fixture(t, path, &d)) {
        cJSON_Delete(j);
        return;
    }
    sft_log l = {0};
    float *p = NULL;
    snprintf(out, sizeof out, "%s/sft_traj_run", tl_test_tmpdir());
    sft_run(t, &d, out, 3, 1, steps, 0, &opt, &l, &p);
    CHECK(l.n == steps);
    for (int i = 0; i < steps && i < l.n; i++) {
        const double want = cJSON_GetArrayItem(losses, i)->valuedouble;
        CHECK_MSG(fabs(l.loss[i] - want) < 1e-5 * fabs(want), "step %d: loss %.7f, TRL %.7f", i + 1, l.loss[i], want);
    }
    free(p);
    tl_dataset_close(&d);
    cJSON_Delete(j);
}

/* ---- DPO: our loss, rewards and gradients on TRL's batch (scripts/gen_dpo_fixtures.py) ---- */

static void test_dpo_matches_trl(tl_test_ctx *t) {
    char path[600];
    tl_error err;
    tl_safetensors st;
    snprintf(path, sizeof path, "%s/dpo_expected.safetensors", tl_test_fixture_dir());
    if (tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const tl_st_tensor *ie = tl_st_find(&st, "input_ids"), *ce = tl_st_find(&st, "completion_mask");
    const tl_st_tensor *re = tl_st_find(&st, "ref_logps");
    tl_model m;
    snprintf(path, sizeof path, "%s/sft/model", tl_test_fixture_dir());
    if (!ie || !ce || !re || ie->ndim != 2 || tl_model_load_hf(path, &m, &err)) {
        CHECK_MSG(0, "fixture or model: %s", err.msg);
        tl_st_close(&st);
        return;
    }
    /* TRL's rows are [chosen..., rejected...]; ours pair by pair: chosen, rejected */
    const int R = (int)ie->shape[0], P = R / 2, S = (int)ie->shape[1], T = S - 1;
    int *ids = malloc(sizeof(int) * (size_t)R * S), *cm = malloc(sizeof(int) * (size_t)R * S);
    int *tok = malloc(sizeof(int) * (size_t)R * S), *in = malloc(sizeof(int) * (size_t)R * T),
        *tg = malloc(sizeof(int) * (size_t)R * T);
    uint8_t *mk = malloc((size_t)R * S);
    float *rl = malloc(sizeof(float) * (size_t)R * T), *rw = malloc(sizeof(float) * (size_t)R * T), ref_f[64];
    double ref[64];
    tl_st_read_i32(&st, ie, ids, (size_t)R * S, &err);
    tl_st_read_i32(&st, ce, cm, (size_t)R * S, &err);
    tl_st_read_f32(&st, re, ref_f, (size_t)R, &err);
    for (int b = 0; b < P; b++)
        for (int k = 0; k < 2; k++) {
            const int from = k * P + b, to = 2 * b + k;
            memcpy(tok + (size_t)to * S, ids + (size_t)from * S, sizeof(int) * (size_t)S);
            for (int s = 0; s < S; s++) mk[(size_t)to * S + s] = (uint8_t)cm[(size_t)from * S + s];
            ref[to] = ref_f[from];
        }
    tl_batch_targets(tok, mk, R, T, in, tg);
    tl_acts *a = tl_acts_create(&m.cfg, R, T, &err);
    float *grads = tl_alloc(sizeof(float) * m.n_params);
    static const char *const kinds[2] = {"sigmoid", "ipo"};
    for (int ipo = 0; ipo < 2 && a && grads; ipo++) {
        memset(grads, 0, sizeof(float) * m.n_params);
        tl_dpo_stats ds = {0};
        CHECK(tl_model_row_losses(&m, a, in, tg, rl, &err) == 0);
        tl_dpo_pairs(rl, tg, P, T, ref, 0.1, ipo, 1.0 / P, rw, &ds);
        double l;
        CHECK(tl_model_forward_backward_rows(&m, a, grads, in, tg, rw, &l, &err) == 0);
        char name[160];
        float want[4], wl = NAN;
        snprintf(name, sizeof name, "%s.loss", kinds[ipo]);
        const tl_st_tensor *e = tl_st_find(&st, name);
        if (e) tl_st_read_f32(&st, e, &wl, 1, &err);
        snprintf(name, sizeof name, "%s.rewards", kinds[ipo]);
        e = tl_st_find(&st, name);
        if (e) tl_st_read_f32(&st, e, want, 4, &err);
        const double got[4] = {ds.chosen / ds.n, ds.rejected / ds.n, ds.acc / ds.n, ds.margin / ds.n};
        CHECK_MSG(fabs(ds.loss / ds.n - wl) < 2e-5 * fabs(wl), "%s loss %.7f, TRL %.7f", kinds[ipo], ds.loss / ds.n, wl);
        for (int k = 0; k < 4; k++)
            CHECK_MSG(fabs(got[k] - want[k]) < 1e-4 * fabs(want[k]) + 1e-6, "%s reward %d: %.7f, TRL %.7f",
                      kinds[ipo], k, got[k], want[k]);
        int checked = 0;
        for (int k = 0; k < m.n_tensors; k++) {
            const tl_tensor_info *ti = &m.tensors[k];
            snprintf(name, sizeof name, "%s.grad.%s", kinds[ipo], ti->name);
            e = tl_st_find(&st, name);
            float *g = malloc(sizeof(float) * ti->numel);
            if (e && g && tl_st_read_f32(&st, e, g, ti->numel, &err) == 0) {
                double re_ = tl_test_rel_err(grads + ti->offset, g, ti->numel);
                CHECK_MSG(re_ < 1e-4, "%s gradient of %s: relative error %.3g", kinds[ipo], ti->name, re_);
                checked++;
            }
            free(g);
        }
        CHECK(checked == m.n_tensors);
    }
    tl_free(grads);
    tl_acts_free(a);
    tl_model_free(&m);
    free(ids);
    free(cm);
    free(tok);
    free(in);
    free(tg);
    free(mk);
    free(rl);
    free(rw);
    tl_st_close(&st);
}

/* Ten steps of train --dpo from the fixture model (the reference: the start) on the
 * fixture's two pairs as every step's batch, against DPOTrainer's losses with the same
 * AdamW (scripts/gen_dpo_fixtures.py writes dpo_trajectory.json).  The pairs are TRL's
 * batch written as a pair shard, since our preference samples mask one token fewer
 * per reply than TRL's completions (docs/finetuning.md).  Written: 7e-7 relative
 * at most; checked at 1e-5. */
static void test_dpo_trajectory(tl_test_ctx *t) {
    char path[600], shard[700], out[700];
    tl_error err;
    snprintf(path, sizeof path, "%s/dpo_trajectory.json", tl_test_fixture_dir());
    char *text = NULL;
    size_t len;
    if (tl_read_file(path, 1 << 20, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *losses = cJSON_GetObjectItem(j, "losses"), *jo = cJSON_GetObjectItem(j, "opt");
    const int steps = cJSON_GetArraySize(losses);
    tl_safetensors st;
    snprintf(path, sizeof path, "%s/dpo_expected.safetensors", tl_test_fixture_dir());
    if (!j || !jo || steps != 10 || tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "bad fixtures: %s", err.msg);
        cJSON_Delete(j);
        return;
    }
    const tl_st_tensor *ie = tl_st_find(&st, "input_ids"), *ce = tl_st_find(&st, "completion_mask");
    CHECK(ie && ce && ie->ndim == 2 && ie->shape[0] == 4);
    const int P = 2, S = ie && ie->ndim == 2 ? (int)ie->shape[1] : 0;
    int *ids = malloc(sizeof(int) * 4 * (size_t)S), *cm = malloc(sizeof(int) * 4 * (size_t)S);
    int *sample = malloc(sizeof(int) * 2 * (size_t)S);
    uint8_t *mk = malloc(2 * (size_t)S);
    tl_dataset d;
    int have_data = 0;
    if (S > 1 && ids && cm && sample && mk && !tl_st_read_i32(&st, ie, ids, 4 * (size_t)S, &err) &&
        !tl_st_read_i32(&st, ce, cm, 4 * (size_t)S, &err)) {
        /* TRL's rows are [chosen..., rejected...]; a pair sample is chosen then rejected */
        snprintf(shard, sizeof shard, "%s/dpo_traj.bin", tl_test_tmpdir());
        tl_shard_writer w;
        int rc = tl_shard_writer_open_ex(&w, shard, 2 * S - 1, 1000, 1, &err);
        w.pairs = 1;
        for (int b = 0; b < P && !rc; b++) {
            for (int k = 0; k < 2; k++)
                for (int s = 0; s < S; s++) {
                    sample[k * S + s] = ids[(k * P + b) * S + s];
                    mk[k * S + s] = (uint8_t)cm[(k * P + b) * S + s];
                }
            rc = tl_shard_writer_add_masked(&w, sample, mk, &err);
        }
        if (!rc) rc = tl_shard_writer_close(&w, NULL, &err);
        const char *paths[] = {shard};
        if (!rc) rc = tl_dataset_open(&d, paths, 1, &err);
        CHECK_MSG(rc == 0, "pair shard: %s", err.msg);
        have_data = rc == 0 && d.pairs;
    }
    tl_model m;
    snprintf(path, sizeof path, "%s/sft/model", tl_test_fixture_dir());
    if (have_data && tl_model_load_hf(path, &m, &err) == 0) {
        tl_train_opts o = {.batch = P, .seq_len = S - 1, .accum = 1, .steps = steps, .opt = tl_adamw_defaults(),
                           .seed = 1, .shuffle = 0, .out_dir = out, .overwrite = 1, .dpo = 1,
                           .dpo_beta = cJSON_GetObjectItem(j, "beta")->valuedouble};
        snprintf(out, sizeof out, "%s/dpo_traj_run", tl_test_tmpdir());
        o.opt.lr = o.opt.min_lr = cJSON_GetObjectItem(jo, "lr")->valuedouble; /* constant */
        o.opt.beta1 = cJSON_GetObjectItem(jo, "beta1")->valuedouble;
        o.opt.beta2 = cJSON_GetObjectItem(jo, "beta2")->valuedouble;
        o.opt.eps = cJSON_GetObjectItem(jo, "eps")->valuedouble;
        o.opt.weight_decay = cJSON_GetObjectItem(jo, "weight_decay")->valuedouble;
        o.opt.clip = cJSON_GetObjectItem(jo, "clip")->valuedouble;
        o.opt.warmup_steps = 0;
        o.opt.decay_steps = steps;
        tl_trainer *tr = tl_trainer_create(&m, &d, NULL, &o, &err);
        CHECK_MSG(tr != NULL, "%s", err.msg);
        sft_log l = {0};
        if (tr) CHECK_MSG(tl_trainer_run(tr, on_event, &l, NULL, &err) == 0, "%s", err.msg);
        CHECK(l.n == steps);
        for (int i = 0; i < steps && i < l.n; i++) {
            const double want = cJSON_GetArrayItem(losses, i)->valuedouble;
            CHECK_MSG(fabs(l.loss[i] - want) < 1e-5 * fabs(want) + 1e-7, "step %d: loss %.7f, TRL %.7f", i + 1,
                      l.loss[i], want);
        }
        tl_trainer_free(tr);
        tl_model_free(&m);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    if (have_data) tl_dataset_close(&d);
    free(ids);
    free(cm);
    free(sample);
    free(mk);
    tl_st_close(&st);
    cJSON_Delete(j);
}

static void test_pref_parse(tl_test_ctx *t) {
    char why[300];
    tl_pref p;
    const char *uf = "{\"chosen\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}],"
                     " \"rejected\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"B\"}]}";
    CHECK(tl_pref_parse(uf, strlen(uf), &p, why, sizeof why) == TL_CONV_OK);
    CHECK(p.prompt.n == 1 && !strcmp(p.prompt.msgs[0].content, "Q") && !strcmp(p.chosen, "A") && !strcmp(p.rejected, "B"));
    tl_pref_free(&p);
    static const struct {
        const char *line;
        int status;
    } bad[] = {
        {"{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"a\"}", TL_CONV_SAME_PAIR},
        {"{\"prompt\": \"q\", \"chosen\": \"a\"}", TL_CONV_NO_ASSISTANT},
        {"{\"prompt\": \"q\", \"chosen\": 1, \"rejected\": \"b\"}", TL_CONV_NOT_STRING},
        {"{\"prompt\": \" \", \"chosen\": \"a\", \"rejected\": \"b\"}", TL_CONV_EMPTY_TURN},
        {"{\"chosen\": \"a\", \"rejected\": \"b\"}", TL_CONV_NO_MESSAGES},
        {"{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"x\"}], "
         "\"chosen\": \"a\", \"rejected\": \"b\"}", TL_CONV_BAD_ORDER},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int s = tl_pref_parse(bad[i].line, strlen(bad[i].line), &p, why, sizeof why);
        CHECK_MSG(s == bad[i].status, "%s: %s (%s)", bad[i].line, tl_conv_status_name(s), why);
        tl_pref_free(&p);
    }
}

const tl_test tests_sft[] = {
    {"sft/conv_parse", test_conv_parse},
    {"sft/render_spans", test_chat_render_spans},
    {"sft/masked_shards", test_masked_shards},
    {"sft/matches_trl", test_sft_matches_trl},
    {"sft/train", test_sft_train},
    {"sft/trajectory", test_sft_trajectory},
    {"sft/pref_parse", test_pref_parse},
    {"sft/dpo_matches_trl", test_dpo_matches_trl},
    {"sft/dpo_trajectory", test_dpo_trajectory},
    {NULL, NULL},
};

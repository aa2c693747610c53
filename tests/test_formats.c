/* test_formats.c - safetensors, config.json, token shards, training state:
 * round trips and every kind of bad input we refuse. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "harness.h"
#include "safetensors.h"
#include "tfevents.h"

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tl_test_tmpdir(), name); }

static void write_raw(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* A safetensors file from a header string and n data bytes. */
static void write_st(const char *path, const char *header, size_t data_bytes) {
    size_t hl = strlen(header);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
    fwrite(header, 1, hl, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void test_safetensors_round_trip(tl_test_ctx *t) {
    char p[512];
    tmp_path(p, sizeof p, "rt.safetensors");
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t b[3] = {tl_f32_to_bf16(1.0f), tl_f32_to_bf16(-0.5f), tl_f32_to_bf16(3.14159f)};
    tl_st_entry e[2] = {{"a", TL_DT_F32, 2, {2, 3}, a}, {"b.bf16", TL_DT_BF16, 1, {3}, b}};
    tl_error err;
    const char *md[] = {"format", "pt", NULL};
    CHECK(tl_st_write(p, e, 2, md, &err) == 0);
    tl_safetensors st;
    CHECK_MSG(tl_st_open(&st, p, &err) == 0, "%s", err.msg);
    CHECK(st.n == 2 && (st.data_start - 8) % 8 == 0);
    const tl_st_tensor *ta = tl_st_find(&st, "a"), *tb = tl_st_find(&st, "b.bf16");
    CHECK(ta && tb && ta->shape[0] == 2 && ta->shape[1] == 3);
    float out[6];
    if (ta) CHECK(tl_st_read_f32(&st, ta, out, 6, &err) == 0 && memcmp(out, a, sizeof a) == 0);
    if (tb) {
        CHECK(tl_st_read_f32(&st, tb, out, 3, &err) == 0);
        CHECK(out[0] == 1.0f && out[1] == -0.5f && fabsf(out[2] - 3.140625f) < 1e-6f);
    }
    tl_st_close(&st);
    /* f16 decoding of known bit patterns */
    CHECK(tl_f16_to_f32(0x3c00) == 1.0f && tl_f16_to_f32(0xc000) == -2.0f && tl_f16_to_f32(0x0001) == ldexpf(1, -24));
    CHECK(isinf(tl_f16_to_f32(0x7c00)));
}

static void test_safetensors_bad_files(tl_test_ctx *t) {
    char p[512];
    tl_safetensors st;
    tl_error err;
    struct {
        const char *header;
        size_t data;
        const char *expect;
    } cases[] = {
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside the data"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "shape needs 12 bytes"},
        {"{\"x\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unsupported dtype"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlapping"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "cover"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4, "not a valid JSON"},
        {"[1,2]", 0, "not a valid JSON object"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "bad shape"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tmp_path(p, sizeof p, "bad.safetensors");
        write_st(p, cases[i].header, cases[i].data);
        int rc = tl_st_open(&st, p, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, cases[i].expect) && strstr(err.msg, p),
                  "case %zu: rc %d, message '%s' (wanted '%s')", i, rc, rc ? err.msg : "", cases[i].expect);
        if (rc == 0) tl_st_close(&st);
    }
    /* header length larger than the file, and absurd */
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    tmp_path(p, sizeof p, "huge.safetensors");
    write_raw(p, huge, sizeof huge);
    CHECK(tl_st_open(&st, p, &err) == -1 && strstr(err.msg, "limit"));
    uint8_t trunc[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_raw(p, trunc, sizeof trunc);
    CHECK(tl_st_open(&st, p, &err) == -1 && strstr(err.msg, "truncated"));
    write_raw(p, trunc, 3);
    CHECK(tl_st_open(&st, p, &err) == -1 && strstr(err.msg, "truncated"));
    CHECK(tl_st_open(&st, "/nonexistent.safetensors", &err) == -1 && strstr(err.msg, "cannot open"));
}

static void test_config_json(tl_test_ctx *t) {
    tl_config c, d;
    tl_error err;
    CHECK(tl_config_preset("tinyllama-1.1b", &c, &err) == 0);
    char *j = tl_config_to_json(&c);
    CHECK(strstr(j, "\"rms_norm_eps\":\t1e-05") != NULL);
    CHECK(tl_config_parse_json(j, "mem", &d, &err) == 0 && memcmp(&c, &d, sizeof c) == 0);
    free(j);
    struct {
        const char *json, *expect;
    } bad[] = {
        {"{\"hidden_size\": 64", "malformed JSON"},
        {"{\"model_type\": \"gpt2\"}", "only \"llama\""},
        {"{\"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1}",
         "num_attention_heads"},
        {"{\"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "not divisible"},
        {"{\"vocab_size\": 10.5, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 4}", "must be an integer"},
        {"{\"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"linear\"}}", "rope_scaling"},
        {"[]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tl_config_parse_json(bad[i].json, "cfg.json", &d, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, bad[i].expect) && strstr(err.msg, "cfg.json"), "case %zu: '%s'", i,
                  rc ? err.msg : "accepted");
    }
}

static void write_shard(tl_test_ctx *t, const char *path, int seq_len, int vocab, int n_tokens, int offset) {
    tl_shard_writer w;
    tl_error err;
    CHECK(tl_shard_writer_open(&w, path, seq_len, vocab, &err) == 0);
    for (int i = 0; i < n_tokens; i++) {
        int tok = (i * 7 + offset) % vocab;
        CHECK(tl_shard_writer_add(&w, &tok, 1, &err) == 0);
    }
    size_t dropped;
    CHECK(tl_shard_writer_close(&w, &dropped, &err) == 0);
    CHECK(dropped == (size_t)(n_tokens % (seq_len + 1)));
}

static void test_shards_round_trip_and_order(tl_test_ctx *t) {
    char dir[512], a[600], b[600];
    snprintf(dir, sizeof dir, "%s/shards", tl_test_tmpdir());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    write_shard(t, a, 4, 300, 5 * 10 + 3, 0); /* 10 samples, 3 dropped */
    write_shard(t, b, 4, 70000, 5 * 7, 1);    /* 7 samples, 32-bit tokens */
    tl_dataset d;
    tl_error err;
    const char *paths[] = {dir};
    CHECK_MSG(tl_dataset_open(&d, paths, 1, &err) == 0, "%s", err.msg);
    CHECK(d.n_samples == 17 && d.seq_len == 4 && d.n_shards == 2 && d.shards[1].token_bytes == 4);
    int s[5];
    tl_dataset_get(&d, 11, s); /* b.bin sample 1: tokens 5..9 of stream offset 1 */
    CHECK(s[0] == (5 * 7 + 1) % 70000 && s[4] == (9 * 7 + 1) % 70000);
    CHECK(tl_dataset_check_vocab(&d, 32000, &err) == -1 && strstr(err.msg, "b.bin"));
    /* sequential order: 0,1,2,... wrapping to the next epoch */
    int batch[3 * 5];
    tl_dataset_set_order(&d, 0, 0);
    tl_dataset_seek(&d, 0, 15, &err);
    CHECK(tl_dataset_next(&d, 3, 4, batch, &err) == 0);
    CHECK(d.epoch == 1 && d.index == 1);
    tl_dataset_get(&d, 0, s);
    CHECK(memcmp(batch + 10, s, sizeof s) == 0);
    /* shuffled order: each epoch is a permutation, epochs differ, resume is exact */
    tl_dataset_set_order(&d, 1, 42);
    tl_dataset_seek(&d, 0, 0, &err);
    int seen[17] = {0}, first_epoch[17];
    for (int i = 0; i < 17; i++) {
        tl_dataset_next(&d, 1, 4, s, &err);
        for (int j = 0; j < 17; j++) {
            int ref[5];
            tl_dataset_get(&d, (uint64_t)j, ref);
            if (!memcmp(ref, s, sizeof s)) {
                seen[j]++;
                first_epoch[i] = j;
                break;
            }
        }
    }
    int all_once = 1;
    for (int j = 0; j < 17; j++) all_once &= seen[j] == 1;
    CHECK(all_once);
    int identity = 1;
    for (int i = 0; i < 17; i++) identity &= first_epoch[i] == i;
    CHECK(!identity);
    int resumed[5], cont[5];
    tl_dataset_seek(&d, 3, 5, &err);
    tl_dataset_next(&d, 1, 4, resumed, &err);
    tl_dataset_seek(&d, 3, 0, &err);
    for (int i = 0; i < 6; i++) tl_dataset_next(&d, 1, 4, cont, &err);
    CHECK(memcmp(resumed, cont, sizeof cont) == 0);
    CHECK(tl_dataset_seek(&d, 0, 17, &err) == -1);
    tl_dataset_close(&d);
}

static void test_shards_bad_input(tl_test_ctx *t) {
    char p[512];
    tl_shard s;
    tl_error err;
    tmp_path(p, sizeof p, "good.bin");
    write_shard(t, p, 8, 100, 9 * 4, 0);
    char *buf;
    size_t len;
    tl_read_file(p, 1 << 20, &buf, &len, &err);
    tmp_path(p, sizeof p, "cut.bin");
    write_raw(p, buf, len - 3);
    CHECK(tl_shard_open(&s, p, &err) == -1 && strstr(err.msg, "truncated") && strstr(err.msg, "cut.bin"));
    buf[len - 1] ^= 1;
    tmp_path(p, sizeof p, "flip.bin");
    write_raw(p, buf, len);
    CHECK(tl_shard_open(&s, p, &err) == -1 && strstr(err.msg, "checksum"));
    buf[len - 1] ^= 1;
    buf[0] = 'X';
    write_raw(p, buf, len);
    CHECK(tl_shard_open(&s, p, &err) == -1 && strstr(err.msg, "bad magic"));
    write_raw(p, buf, 10);
    CHECK(tl_shard_open(&s, p, &err) == -1 && strstr(err.msg, "truncated"));
    free(buf);
    tl_shard_writer w;
    tmp_path(p, sizeof p, "oov.bin");
    CHECK(tl_shard_writer_open(&w, p, 4, 10, &err) == 0);
    int bad = 10;
    CHECK(tl_shard_writer_add(&w, &bad, 1, &err) == -1 && strstr(err.msg, "outside the vocabulary"));
    tl_shard_writer_abort(&w);
    CHECK(access(p, F_OK) != 0); /* nothing that looks like a shard is left behind */
    const char *none[] = {"/nonexistent/*.bin"};
    tl_dataset d;
    CHECK(tl_dataset_open(&d, none, 1, &err) == -1 && strstr(err.msg, "matches no files"));
}

static void test_train_state_round_trip_and_corruption(tl_test_ctx *t) {
    char p[512];
    tmp_path(p, sizeof p, "state.bin");
    float m[5] = {1, 2, 3, 4, 5}, v[5] = {6, 7, 8, 9, 10}, m2[5], v2[5];
    tl_train_state s = {.step = 7, .tokens_seen = 99, .data_epoch = 1, .data_index = 3, .elapsed = 1.5,
                        .n_params = 5, .m = m, .v = v};
    tl_rng_seed(&s.rng, 11);
    tl_error err;
    CHECK(tl_train_state_save(p, &s, &err) == 0);
    tl_train_state r = {.n_params = 5, .m = m2, .v = v2};
    CHECK(tl_train_state_load(p, &r, &err) == 0);
    CHECK(r.step == 7 && r.tokens_seen == 99 && r.data_epoch == 1 && r.data_index == 3 && r.elapsed == 1.5);
    CHECK(!memcmp(m, m2, sizeof m) && !memcmp(v, v2, sizeof v) && !memcmp(&r.rng, &s.rng, sizeof r.rng));
    tl_train_state wrong = {.n_params = 6, .m = m2, .v = v2};
    CHECK(tl_train_state_load(p, &wrong, &err) == -1 && strstr(err.msg, "6"));
    char *buf;
    size_t len;
    tl_read_file(p, 1 << 20, &buf, &len, &err);
    buf[len - 2] ^= 0x10;
    write_raw(p, buf, len);
    CHECK(tl_train_state_load(p, &r, &err) == -1 && strstr(err.msg, "checksum"));
    write_raw(p, buf, len - 4);
    CHECK(tl_train_state_load(p, &r, &err) == -1 && strstr(err.msg, "truncated"));
    free(buf);
}

static void test_checkpoint_save_resolve_prune(tl_test_ctx *t) {
    tl_config c;
    tl_error err;
    tl_config_preset("test", &c, &err);
    tl_model m, back;
    tl_model_create(&m, &c, &err);
    tl_model_init_weights(&m, 5);
    float *mm = tl_alloc(sizeof(float) * m.n_params), *vv = tl_alloc(sizeof(float) * m.n_params);
    tl_train_state s = {.n_params = m.n_params, .m = mm, .v = vv};
    char run[512], ck[4200], resolved[4200];
    snprintf(run, sizeof run, "%s/run", tl_test_tmpdir());
    for (int step = 1; step <= 4; step++) {
        s.step = (uint64_t)step;
        m.params[0] = (float)step;
        CHECK_MSG(tl_checkpoint_save(run, &m, &s, "{\"run_id\": \"a\"}", step == 4 ? "tests/fixtures/tokenizer/small_bpe.model" : NULL, 2, ck, sizeof ck, &err) == 0, "%s", err.msg);
    }
    char note[2048];
    CHECK(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0 &&
          strstr(resolved, "step-00000004") && !note[0]);
    CHECK(tl_model_load_hf(resolved, &back, &err) == 0);
    CHECK(back.params[0] == 4.0f && memcmp(back.params + 1, m.params + 1, sizeof(float) * (m.n_params - 1)) == 0);
    tl_model_free(&back);
    char old[600];
    snprintf(old, sizeof old, "%s/step-00000002", run);
    CHECK(access(old, F_OK) != 0); /* pruned to the newest 2 */
    snprintf(old, sizeof old, "%s/step-00000003/config.json", run);
    CHECK(access(old, F_OK) == 0);
    snprintf(old, sizeof old, "%s/step-00000004/tokenizer.model", run); /* copied in */
    CHECK(access(old, F_OK) == 0);
    snprintf(old, sizeof old, "%s/step-00000003/tokenizer.model", run);
    CHECK(access(old, F_OK) != 0);
    /* an HF directory missing a tensor or with a wrong shape is refused by name */
    snprintf(old, sizeof old, "%s/step-00000003", run);
    tl_config c2 = c;
    c2.hidden_dim = 32;
    tl_model other;
    tl_model_create(&other, &c2, &err);
    CHECK(tl_model_load_hf_weights(old, &other, &err) == -1 && strstr(err.msg, "gate_proj") && strstr(err.msg, "shape"));
    tl_model_free(&other);
    CHECK(tl_checkpoint_resolve("/nonexistent", resolved, sizeof resolved, note, sizeof note, &err) == -1);
    tl_free(mm);
    tl_free(vv);
    tl_model_free(&m);
}

/* Sets up run/ with checkpoints 1..n of run "a" (one float of the weights = step). */
static void save_steps(tl_test_ctx *t, const char *run, tl_model *m, tl_train_state *s, int from, int to,
                       const char *args, int keep) {
    tl_error err;
    char ck[4200];
    for (int step = from; step <= to; step++) {
        s->step = (uint64_t)step;
        m->params[0] = (float)step;
        CHECK_MSG(tl_checkpoint_save(run, m, s, args, NULL, keep, ck, sizeof ck, &err) == 0, "%s", err.msg);
    }
}

static float first_weight(const char *dir) {
    tl_model back;
    tl_error err;
    if (tl_model_load_hf(dir, &back, &err)) return -1;
    float v = back.params[0];
    tl_model_free(&back);
    return v;
}

/* A crash at any moment leaves a complete checkpoint that --resume finds; corrupt
 * files are detected; only this run's checkpoints are pruned. */
static void test_checkpoint_crash_and_corruption(tl_test_ctx *t) {
    tl_config c;
    tl_error err;
    tl_config_preset("test", &c, &err);
    tl_model m;
    tl_model_create(&m, &c, &err);
    tl_model_init_weights(&m, 5);
    float *mm = tl_alloc(sizeof(float) * m.n_params), *vv = tl_alloc(sizeof(float) * m.n_params);
    tl_train_state s = {.n_params = m.n_params, .m = mm, .v = vv};
    char run[512], p[4400], q[4400], resolved[4200], note[2048];
    snprintf(run, sizeof run, "%s/crash", tl_test_tmpdir());
    save_steps(t, run, &m, &s, 1, 3, "{\"run_id\": \"a\"}", 0);

    /* re-saving the step `latest` names replaces it in place: never missing */
    save_steps(t, run, &m, &s, 3, 3, "{\"run_id\": \"a\"}", 0);
    snprintf(p, sizeof p, "%s/step-00000003", run);
    CHECK(first_weight(p) == 3.0f);
    snprintf(p, sizeof p, "%s/.old-step-00000003", run);
    CHECK(access(p, F_OK) != 0);

    /* the state a kill leaves between the two renames of the fallback path:
     * latest names step-3, which was moved aside */
    snprintf(p, sizeof p, "%s/step-00000003", run);
    snprintf(q, sizeof q, "%s/.old-step-00000003", run);
    CHECK(rename(p, q) == 0);
    CHECK_MSG(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0, "%s", err.msg);
    CHECK_MSG(strstr(resolved, ".old-step-00000003") && strstr(note, "does not exist"), "%s / %s", resolved, note);
    CHECK(rename(q, p) == 0);

    /* an unfinished temporary checkpoint of a later step is not taken */
    snprintf(q, sizeof q, "%s/.tmp-step-00000004", run);
    mkdir(q, 0755);
    snprintf(q, sizeof q, "%s/.tmp-step-00000004/config.json", run);
    write_raw(q, "{}", 2);

    /* a bit flip in the weights of the newest checkpoint */
    char *buf;
    size_t len;
    snprintf(p, sizeof p, "%s/step-00000003/model.safetensors", run);
    CHECK(tl_read_file(p, 1 << 24, &buf, &len, &err) == 0);
    buf[len - 3] ^= 0x04;
    write_raw(p, buf, len);
    free(buf);
    snprintf(p, sizeof p, "%s/step-00000003", run);
    CHECK(tl_checkpoint_resolve(p, resolved, sizeof resolved, note, sizeof note, &err) == -1 &&
          strstr(err.msg, "model.safetensors") && strstr(err.msg, "checksum"));
    CHECK_MSG(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0, "%s", err.msg);
    CHECK_MSG(strstr(resolved, "/step-00000002") && strstr(note, "checksum"), "%s / %s", resolved, note);
    CHECK(first_weight(resolved) == 2.0f);

    /* a truncated file */
    snprintf(p, sizeof p, "%s/step-00000002/training_state.bin", run);
    CHECK(tl_read_file(p, 1 << 24, &buf, &len, &err) == 0);
    write_raw(p, buf, len / 2);
    free(buf);
    snprintf(p, sizeof p, "%s/step-00000002", run);
    CHECK(tl_checkpoint_verify(p, NULL, &err) == -1 && strstr(err.msg, "training_state.bin"));
    CHECK(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0 &&
          strstr(resolved, "/step-00000001"));

    /* pruning: another run's checkpoints in the same directory are never removed */
    char run2[600];
    snprintf(run2, sizeof run2, "%s/two", tl_test_tmpdir());
    save_steps(t, run2, &m, &s, 3, 5, "{\"run_id\": \"old\"}", 0);
    save_steps(t, run2, &m, &s, 1, 3, "{\"run_id\": \"new\"}", 1);
    static const char *const names[] = {"step-00000001", "step-00000002", "step-00000003", "step-00000004",
                                        "step-00000005"};
    /* the new run keeps its newest (3, which replaced the old run's 3); 4 and 5 are the old run's */
    static const int present[] = {0, 0, 1, 1, 1};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", run2, names[i]);
        CHECK_MSG((access(p, F_OK) == 0) == present[i], "%s present=%d", names[i], access(p, F_OK) == 0);
    }
    tl_free(mm);
    tl_free(vv);
    tl_model_free(&m);
}

/* A resume past corrupt checkpoints (or from an older one) continues from the
 * verified checkpoint it fell back to: the run's later checkpoints that the
 * resumed process did not write count for nothing in --keep, so they do not get
 * the verified one pruned; they go only when the run replaces them. */
static void test_checkpoint_prune_keeps_verified(tl_test_ctx *t) {
    tl_config c;
    tl_error err;
    tl_config_preset("test", &c, &err);
    tl_model m;
    tl_model_create(&m, &c, &err);
    tl_model_init_weights(&m, 5);
    float *mm = tl_alloc(sizeof(float) * m.n_params), *vv = tl_alloc(sizeof(float) * m.n_params);
    tl_train_state s = {.n_params = m.n_params, .m = mm, .v = vv};
    char run[512], p[4400], resolved[4200], note[2048];
    snprintf(run, sizeof run, "%s/fallback", tl_test_tmpdir());
    const char *first = "{\"run_id\": \"a\", \"session\": \"s1\", \"resumed_from\": 0}";
    for (int step = 2; step <= 6; step += 2) save_steps(t, run, &m, &s, step, step, first, 3);
    /* bit flips in the weights of 4 and 6: the run resumes from 2 */
    for (int step = 4; step <= 6; step += 2) {
        char *buf;
        size_t len;
        snprintf(p, sizeof p, "%s/step-%08d/model.safetensors", run, step);
        CHECK(tl_read_file(p, 1 << 24, &buf, &len, &err) == 0);
        buf[len - 3] ^= 0x04;
        write_raw(p, buf, len);
        free(buf);
    }
    CHECK_MSG(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0, "%s", err.msg);
    CHECK_MSG(strstr(resolved, "/step-00000002") && strstr(note, "checksum"), "%s / %s", resolved, note);
    /* the resumed process writes 3 with --keep 2: 2 and 3 are the newest two that count */
    const char *second = "{\"run_id\": \"a\", \"session\": \"s2\", \"resumed_from\": 2}";
    save_steps(t, run, &m, &s, 3, 3, second, 2);
    static const int steps[] = {2, 3, 4, 6};
    static const int after3[] = {1, 1, 1, 1}, after5[] = {0, 1, 1, 1}, after6[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/step-%08d", run, steps[i]);
        CHECK_MSG((access(p, F_OK) == 0) == after3[i], "after step 3: step %d present=%d", steps[i], access(p, F_OK) == 0);
    }
    /* 5: two newer checkpoints of its own, so 2 goes; the corrupt 4 and 6 stay, not counted */
    save_steps(t, run, &m, &s, 5, 5, second, 2);
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/step-%08d", run, steps[i]);
        CHECK_MSG((access(p, F_OK) == 0) == after5[i], "after step 5: step %d present=%d", steps[i], access(p, F_OK) == 0);
    }
    /* 6 replaces the corrupt 6 and counts: 5 and 6 stay, 3 goes; the corrupt 4 is left
     * alone (resolving skips it) */
    save_steps(t, run, &m, &s, 6, 6, second, 2);
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/step-%08d", run, steps[i]);
        CHECK_MSG((access(p, F_OK) == 0) == after6[i], "after step 6: step %d present=%d", steps[i], access(p, F_OK) == 0);
    }
    CHECK(tl_checkpoint_resolve(run, resolved, sizeof resolved, note, sizeof note, &err) == 0 &&
          strstr(resolved, "/step-00000006") && !note[0] && first_weight(resolved) == 6.0f);
    tl_free(mm);
    tl_free(vv);
    tl_model_free(&m);
}

/* TensorBoard event files: CRC-32C's published check value (RFC 3720's
 * "123456789" -> 0xe3069283), and the same events as TensorBoard's own writer
 * wrote into the fixture (scripts/gen_tfevents_fixture.py), byte for byte. */
static void test_tfevents_matches_tensorboard(tl_test_ctx *t) {
    CHECK(tl_crc32c("123456789", 9) == 0xe3069283u);
    char want_path[600];
    snprintf(want_path, sizeof want_path, "%s/tfevents/expected.tfevents", tl_test_fixture_dir());
    char *want;
    size_t want_len;
    tl_error err;
    if (tl_read_file(want_path, 1 << 20, &want, &want_len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    tl_tfevents w;
    int rc = tl_tfevents_open(&w, tl_test_tmpdir(), "test", 1000.5, &err);
    rc = rc || tl_tfevents_scalar(&w, "train/loss", 3, 1001.25, 2.5f, &err);
    rc = rc || tl_tfevents_scalar(&w, "train/lr", 123456789, 1002.0, 4e-4f, &err);
    rc = rc || tl_tfevents_scalar(&w, "val/loss", 0, 1003.0, -1.75f, &err);
    rc = rc || tl_tfevents_restart(&w, 2, 1004.0, &err);
    tl_tfevents_close(&w);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(strstr(w.path, "/events.out.tfevents.0000001000.test") != NULL); /* TensorBoard globs *tfevents* */
    char *got;
    size_t got_len;
    if (!rc && !tl_read_file(w.path, 1 << 20, &got, &got_len, &err)) {
        CHECK_MSG(got_len == want_len && !memcmp(got, want, want_len), "%zu bytes written, TensorBoard's %zu", got_len,
                  want_len);
        free(got);
    }
    free(want);
}

const tl_test tests_formats[] = {
    {"formats/tfevents_matches_tensorboard", test_tfevents_matches_tensorboard},
    {"formats/safetensors_round_trip", test_safetensors_round_trip},
    {"formats/safetensors_bad_files", test_safetensors_bad_files},
    {"formats/config_json", test_config_json},
    {"formats/shards_round_trip_and_order", test_shards_round_trip_and_order},
    {"formats/shards_bad_input", test_shards_bad_input},
    {"formats/train_state_round_trip_and_corruption", test_train_state_round_trip_and_corruption},
    {"formats/checkpoint_save_resolve_prune", test_checkpoint_save_resolve_prune},
    {"formats/checkpoint_crash_and_corruption", test_checkpoint_crash_and_corruption},
    {"formats/checkpoint_prune_keeps_verified", test_checkpoint_prune_keeps_verified},
    {NULL, NULL},
};

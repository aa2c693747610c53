/* test_validate.c - settings and files that must be refused (or read) at the
 * door: AdamW settings, config.json special ids and transformers-5 configs,
 * non-finite weights. */
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config.h"
#include "finite.h"
#include "harness.h"
#include "infer.h"
#include "optimizer.h"
#include "safetensors.h"

static void test_adamw_config_validate(tl_test_ctx *t) {
    tl_error err;
    const char *field = "x";
    tl_adamw_config d = tl_adamw_defaults();
    CHECK(tl_adamw_config_validate(&d, &field, &err) == 0 && field == NULL);
    d.clip = 0; /* 0 disables clipping */
    d.beta1 = 0;
    d.weight_decay = 0;
    d.min_lr = d.lr;
    d.warmup_steps = d.decay_steps = 0;
    CHECK(tl_adamw_config_validate(&d, NULL, &err) == 0);
    struct {
        const char *field;
        double v;
    } bad[] = {{"lr", 0},       {"lr", -1},          {"lr", NAN},   {"min_lr", -1e-5}, {"min_lr", 1},
               {"beta1", 1},    {"beta1", 2},        {"beta1", -0.1}, {"beta1", NAN},  {"beta2", 1},
               {"beta2", -1},   {"eps", 0},          {"eps", -1e-8}, {"eps", INFINITY}, {"weight_decay", -0.1},
               {"clip", -1},    {"clip", NAN},       {"warmup_steps", -1}, {"decay_steps", 5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_adamw_config c = tl_adamw_defaults();
        c.warmup_steps = 10;
        c.decay_steps = 100;
        if (!strcmp(bad[i].field, "lr")) c.lr = bad[i].v;
        if (!strcmp(bad[i].field, "min_lr")) c.min_lr = bad[i].v;
        if (!strcmp(bad[i].field, "beta1")) c.beta1 = bad[i].v;
        if (!strcmp(bad[i].field, "beta2")) c.beta2 = bad[i].v;
        if (!strcmp(bad[i].field, "eps")) c.eps = bad[i].v;
        if (!strcmp(bad[i].field, "weight_decay")) c.weight_decay = bad[i].v;
        if (!strcmp(bad[i].field, "clip")) c.clip = bad[i].v;
        if (!strcmp(bad[i].field, "warmup_steps")) c.warmup_steps = (long)bad[i].v;
        if (!strcmp(bad[i].field, "decay_steps")) c.decay_steps = (long)bad[i].v;
        field = NULL;
        int rc = tl_adamw_config_validate(&c, &field, &err);
        CHECK_MSG(rc == -1 && field && !strcmp(field, bad[i].field) && strstr(err.msg, bad[i].field),
                  "case %zu (%s = %g): %s", i, bad[i].field, bad[i].v, rc ? err.msg : "accepted");
    }
}

/* a small valid config.json with extra fields spliced in */
static int parse_with(const char *extra, tl_config *c, tl_error *err) {
    char j[1024];
    snprintf(j, sizeof j,
             "{\"vocab_size\": 300, \"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2, "
             "\"num_attention_heads\": 4%s%s}",
             extra[0] ? ", " : "", extra);
    return tl_config_parse_json(j, "cfg.json", c, err);
}

static void test_config_special_ids_in_range(tl_test_ctx *t) {
    tl_config c;
    tl_error err;
    CHECK(parse_with("", &c, &err) == 0 && c.bos_id == 1 && c.eos_id == 2); /* absent: Llama's */
    CHECK(parse_with("\"bos_token_id\": null, \"eos_token_id\": null", &c, &err) == 0 && c.bos_id == 1 &&
          c.eos_id == 2);
    CHECK(parse_with("\"bos_token_id\": 0, \"eos_token_id\": 299", &c, &err) == 0 && c.bos_id == 0 &&
          c.eos_id == 299);
    const char *bad[] = {"\"bos_token_id\": 300", "\"bos_token_id\": -1", "\"eos_token_id\": 300",
                         "\"eos_token_id\": -2", "\"eos_token_id\": 100000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_with(bad[i], &c, &err);
        char key[16];
        memcpy(key, bad[i] + 1, 12);
        key[12] = 0; /* "bos_token_id" / "eos_token_id" */
        CHECK_MSG(rc == -1 && strstr(err.msg, key) && strstr(err.msg, "cfg.json"), "case %s: %s", bad[i],
                  rc ? err.msg : "accepted");
    }
}

/* head_dim * num_attention_heads once overflowed int (found by fuzz/config) */
static void test_config_head_dim(tl_test_ctx *t) {
    tl_config c;
    tl_error err;
    CHECK(parse_with("\"head_dim\": 16", &c, &err) == 0);
    CHECK(parse_with("\"head_dim\": 8", &c, &err) == -1 && strstr(err.msg, "head_dim 8"));
    int rc = parse_with("\"head_dim\": 2047919775", &c, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, "head_dim 2047919775"), "%s", rc ? err.msg : "accepted");
}

/* config.json files saved by transformers 5 (scripts/gen_config_fixtures.py) */
static void test_config_transformers5(tl_test_ctx *t) {
    char p[512];
    tl_config c;
    tl_error err;
    snprintf(p, sizeof p, "%s/hf5_config/rope500k/config.json", tl_test_fixture_dir());
    int rc = tl_config_load_json(p, &c, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    /* rope_theta only in rope_parameters; dtype (not torch_dtype) is bfloat16 */
    CHECK(rc == 0 && c.rope_theta == 500000.f && c.vocab_size == 300 && c.n_kv_heads == 2);
    snprintf(p, sizeof p, "%s/hf5_config/llama3_scaling/config.json", tl_test_fixture_dir());
    rc = tl_config_load_json(p, &c, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, "\"llama3\"") && strstr(err.msg, "not supported") &&
                  strstr(err.msg, "llama3_scaling/config.json"),
              "%s", rc ? err.msg : "accepted");
    CHECK(parse_with("\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0}", &c, &err) == -1 &&
          strstr(err.msg, "\"linear\""));
    CHECK(parse_with("\"rope_parameters\": {\"rope_type\": 3}", &c, &err) == -1);
    /* older files: torch_dtype and a top-level rope_theta */
    CHECK(parse_with("\"torch_dtype\": \"float16\", \"rope_theta\": 20000.0", &c, &err) == 0 &&
          c.rope_theta == 20000.f);
}


static void test_find_nonfinite(tl_test_ctx *t) {
    enum { N = 50001 }; /* several blocks and a ragged end */
    float *f = malloc(sizeof(float) * (N + 1));
    uint16_t *h = malloc(sizeof(uint16_t) * (N + 1));
    for (size_t i = 0; i <= N; i++) f[i] = (float)i - 25000.f;
    f[7] = FLT_MAX; /* the largest finite values are not flagged */
    f[8] = -FLT_MAX;
    CHECK(tl_find_nonfinite(f, TL_DT_F32, N) == N);
    size_t at[] = {0, 16383, 16384, 40000, N - 1};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        float keep = f[at[k]];
        f[at[k]] = k & 1 ? -INFINITY : NAN;
        CHECK_MSG(tl_find_nonfinite(f, TL_DT_F32, N) == at[k], "f32 at %zu", at[k]);
        CHECK(!strcmp(tl_nonfinite_kind(f, TL_DT_F32, at[k]), k & 1 ? "-Inf" : "NaN"));
        /* the same bits one byte off alignment */
        unsigned char *u = malloc(sizeof(float) * N + 1);
        memcpy(u + 1, f, sizeof(float) * N);
        CHECK(tl_find_nonfinite(u + 1, TL_DT_F32, N) == at[k]);
        free(u);
        f[at[k]] = keep;
    }
    f[30000] = INFINITY;
    f[20000] = NAN;
    CHECK(tl_find_nonfinite(f, TL_DT_F32, N) == 20000); /* the first one */
    CHECK(!strcmp(tl_nonfinite_kind(f, TL_DT_F32, 30000), "+Inf"));
    /* bf16: 0x7f7f is the largest finite, 0x7f80 +Inf, 0xff80 -Inf, 0x7fc0 NaN */
    for (size_t i = 0; i < N; i++) h[i] = i & 1 ? 0x7f7f : 0xff7f;
    CHECK(tl_find_nonfinite(h, TL_DT_BF16, N) == N);
    h[N - 1] = 0xff80;
    CHECK(tl_find_nonfinite(h, TL_DT_BF16, N) == N - 1 && !strcmp(tl_nonfinite_kind(h, TL_DT_BF16, N - 1), "-Inf"));
    h[123] = 0x7fc1;
    CHECK(tl_find_nonfinite(h, TL_DT_BF16, N) == 123 && !strcmp(tl_nonfinite_kind(h, TL_DT_BF16, 123), "NaN"));
    /* f16: 0x7bff is the largest finite (65504), 0x7c00 +Inf; as bf16 0x7c00 is finite */
    for (size_t i = 0; i < N; i++) h[i] = 0x7bff;
    h[17000] = 0x7c00;
    CHECK(tl_find_nonfinite(h, TL_DT_F16, N) == 17000 && !strcmp(tl_nonfinite_kind(h, TL_DT_F16, 17000), "+Inf"));
    CHECK(tl_find_nonfinite(h, TL_DT_BF16, N) == N);
    CHECK(tl_find_nonfinite(h, TL_DT_F32, 0) == 0);
    free(f);
    free(h);
}

/* Copies fixture dir `name` into the temp dir with value `bad_bits` (in the
 * file's dtype) written at element `at` of tensor `tensor`; returns the copy's path. */
static int corrupt_copy(tl_test_ctx *t, const char *name, const char *tensor, size_t at, uint32_t bad_bits,
                        char *out, size_t cap) {
    char src[512], path[600];
    tl_error err;
    snprintf(out, cap, "%s/nonfinite_%s", tl_test_tmpdir(), name);
    snprintf(src, sizeof src, "%s/%s", tl_test_fixture_dir(), name);
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.model"};
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", out);
    if (system(cmd) != 0) return -1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *text;
        size_t len;
        snprintf(path, sizeof path, "%s/%s", src, files[i]);
        if (tl_read_file(path, 1 << 24, &text, &len, &err)) continue; /* optional files */
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        CHECK(tl_write_file_atomic(path, text, len, &err) == 0);
        free(text);
    }
    tl_safetensors st;
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    if (tl_st_open(&st, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    tl_st_entry *e = calloc((size_t)st.n, sizeof *e);
    void **copies = calloc((size_t)st.n, sizeof *copies);
    int found = 0;
    for (int i = 0; i < st.n; i++) {
        const tl_st_tensor *x = &st.tensors[i];
        e[i].name = x->name;
        e[i].dtype = x->dtype;
        e[i].ndim = x->ndim;
        memcpy(e[i].shape, x->shape, sizeof x->shape);
        e[i].data = tl_st_data(&st, x);
        if (!strcmp(x->name, tensor)) {
            size_t es = tl_dtype_size(x->dtype);
            copies[i] = malloc(x->end - x->begin);
            memcpy(copies[i], e[i].data, x->end - x->begin);
            if (es == 4) memcpy((char *)copies[i] + 4 * at, &bad_bits, 4);
            else {
                uint16_t b16 = (uint16_t)bad_bits;
                memcpy((char *)copies[i] + 2 * at, &b16, 2);
            }
            e[i].data = copies[i];
            found = 1;
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    int rc = found ? tl_st_write(path, e, st.n, NULL, &err) : -1;
    CHECK_MSG(rc == 0, "%s", found ? err.msg : "no such tensor");
    for (int i = 0; i < st.n; i++) free(copies[i]);
    free(copies);
    free(e);
    tl_st_close(&st);
    return rc;
}

static void test_nonfinite_weights_refused(tl_test_ctx *t) {
    char dir[512];
    tl_error err;
    /* inference loader, bf16 file: a NaN in one layer's up_proj */
    if (corrupt_copy(t, "infer_tied_bf16", "model.layers.1.mlp.up_proj.weight", 37, 0x7fc0, dir, sizeof dir) == 0) {
        tl_infer_model m;
        int rc = tl_infer_load(&m, dir, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, "model.layers.1.mlp.up_proj.weight") && strstr(err.msg, "NaN") &&
                      strstr(err.msg, "element 37") && strstr(err.msg, "model.safetensors"),
                  "%s", rc ? err.msg : "accepted");
        if (!rc) tl_infer_free(&m);
    }
    /* fp32 loader (training / eval --backend fp32), f32 file: +Inf in a norm */
    if (corrupt_copy(t, "tiny_llama", "model.layers.2.post_attention_layernorm.weight", 3, 0x7f800000u, dir,
                     sizeof dir) == 0) {
        tl_model m;
        int rc = tl_model_load_hf(dir, &m, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, "model.layers.2.post_attention_layernorm.weight") &&
                      strstr(err.msg, "+Inf") && strstr(err.msg, "model.safetensors"),
                  "%s", rc ? err.msg : "accepted");
        if (!rc) tl_model_free(&m);
        /* and the inference loader on the same file */
        tl_infer_model im;
        rc = tl_infer_load(&im, dir, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, "post_attention_layernorm") && strstr(err.msg, "+Inf"), "%s",
                  rc ? err.msg : "accepted");
        if (!rc) tl_infer_free(&im);
    }
    /* the untouched fixtures still load */
    char ok_dir[512];
    snprintf(ok_dir, sizeof ok_dir, "%s/infer_tied_bf16", tl_test_fixture_dir());
    tl_infer_model m;
    CHECK(tl_infer_load(&m, ok_dir, &err) == 0);
    tl_infer_free(&m);
}

const tl_test tests_validate[] = {
    {"validate/adamw_config", test_adamw_config_validate},
    {"validate/config_special_ids_in_range", test_config_special_ids_in_range},
    {"validate/config_head_dim", test_config_head_dim},
    {"validate/config_transformers5", test_config_transformers5},
    {"validate/find_nonfinite", test_find_nonfinite},
    {"validate/nonfinite_weights_refused", test_nonfinite_weights_refused},
    {NULL, NULL},
};

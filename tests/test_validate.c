/* test_validate.c - settings and files that must be refused (or read) at the
 * door: AdamW settings, config.json special ids and transformers-5 configs,
 * non-finite weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "optimizer.h"

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

const tl_test tests_validate[] = {
    {"validate/adamw_config", test_adamw_config_validate},
    {"validate/config_special_ids_in_range", test_config_special_ids_in_range},
    {"validate/config_transformers5", test_config_transformers5},
    {NULL, NULL},
};

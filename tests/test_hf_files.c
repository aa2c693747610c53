/* test_hf_files.c - tokenizer_config.json and special_tokens_map.json, the
 * files transformers needs to rebuild our checkpoints' tokenizer as Llama's
 * (scripts/check_hf_tokenizer.py runs AutoTokenizer on them; here the fields). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "hf_tokenizer_files.h"

static cJSON *load_json(tl_test_ctx *t, const char *dir, const char *name) {
    char p[600], *text;
    size_t len;
    tl_error err;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (tl_read_file(p, 1 << 20, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    CHECK_MSG(j != NULL, "%s: not JSON", p);
    free(text);
    return j;
}

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : "";
}

/* the fields transformers reads; the expected pieces and ids are what
 * sentencepiece reports for small_bpe.model (<unk> 0, <s> 1, </s> 2) */
static void check_files(tl_test_ctx *t, const char *dir, int max_len, const char *want_template) {
    cJSON *c = load_json(t, dir, "tokenizer_config.json"), *m = load_json(t, dir, "special_tokens_map.json");
    if (c) {
        CHECK(!strcmp(str_of(c, "tokenizer_class"), "LlamaTokenizer"));
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_bos_token")));
        CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "add_eos_token")));
        CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "legacy")));
        CHECK(!strcmp(str_of(c, "bos_token"), "<s>"));
        CHECK(!strcmp(str_of(c, "eos_token"), "</s>"));
        CHECK(!strcmp(str_of(c, "unk_token"), "<unk>"));
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(c, "model_max_length");
        CHECK(cJSON_IsNumber(ml) && ml->valuedouble == max_len);
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(c, "added_tokens_decoder");
        const char *ids[3] = {"0", "1", "2"}, *pieces[3] = {"<unk>", "<s>", "</s>"};
        CHECK(cJSON_GetArraySize(dec) == 3);
        for (int k = 0; k < 3; k++) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(dec, ids[k]);
            CHECK_MSG(e && !strcmp(str_of(e, "content"), pieces[k]) &&
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) &&
                          cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(e, "normalized")),
                      "added_tokens_decoder[%s]", ids[k]);
        }
        const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
        if (want_template) CHECK(cJSON_IsString(tpl) && !strcmp(tpl->valuestring, want_template));
        else CHECK(tpl == NULL);
    }
    if (m) {
        const char *keys[3] = {"unk_token", "bos_token", "eos_token"}, *pieces[3] = {"<unk>", "<s>", "</s>"};
        for (int k = 0; k < 3; k++)
            CHECK_MSG(!strcmp(str_of(cJSON_GetObjectItemCaseSensitive(m, keys[k]), "content"), pieces[k]), "%s",
                      keys[k]);
    }
    cJSON_Delete(c);
    cJSON_Delete(m);
}

static void test_tokenizer_files_written(tl_test_ctx *t) {
    tl_config cfg;
    tl_error err;
    tl_config_preset("test", &cfg, &err);
    cfg.max_seq_len = 77;
    char dir[512], tok[512], cmd[2200];
    snprintf(dir, sizeof dir, "%s/hf_files", tl_test_tmpdir());
    snprintf(tok, sizeof tok, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    int rc = tl_hf_tokenizer_files_write(dir, tok, &cfg, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) check_files(t, dir, 77, NULL);

    /* a chat model's template, beside its tokenizer, stays with it */
    char src[512], p[600];
    snprintf(src, sizeof src, "%s/hf_files_src", tl_test_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/tokenizer.model'", src, tok, src);
    CHECK(system(cmd) == 0);
    const char *tpl = "{% for message in messages %}{{ '<|user|>\\n' + message['content'] + eos_token }}{% endfor %}";
    char *json = malloc(strlen(tpl) + 64);
    sprintf(json, "{\"chat_template\": \"%s\", \"legacy\": true}", tpl);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", src);
    CHECK(tl_write_file_atomic(p, json, strlen(json), &err) == 0);
    free(json);
    snprintf(p, sizeof p, "%s/tokenizer.model", src);
    rc = tl_hf_tokenizer_files_write(dir, p, &cfg, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) check_files(t, dir, 77, "{% for message in messages %}{{ '<|user|>\n' + message['content'] + eos_token }}{% endfor %}");

    /* an unreadable tokenizer is an error naming it, and writes nothing */
    snprintf(p, sizeof p, "%s/none", tl_test_tmpdir());
    CHECK(tl_hf_tokenizer_files_write(p, "/nonexistent/tokenizer.model", &cfg, &err) == -1 &&
          strstr(err.msg, "/nonexistent/tokenizer.model"));
}

const tl_test tests_hf_files[] = {
    {"hf_files/tokenizer_files_written", test_tokenizer_files_written},
    {NULL, NULL},
};

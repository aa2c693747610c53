/* hf_tokenizer_files.c - tokenizer_config.json and special_tokens_map.json. */
#include "hf_tokenizer_files.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

#define PATH_CAP 4096

/* An AddedToken as transformers writes it: matched verbatim in the text, not
 * normalized, no stripping. */
static cJSON *added_token(const char *content, int with_special) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "single_word", 0);
    if (with_special) cJSON_AddBoolToObject(o, "special", 1);
    return o;
}

/* The chat_template of dir(tokenizer_path)/tokenizer_config.json, or NULL. */
static cJSON *chat_template_beside(const char *tokenizer_path) {
    char p[PATH_CAP];
    const char *slash = strrchr(tokenizer_path, '/');
    int dlen = slash ? (int)(slash - tokenizer_path) : 1;
    const char *d = slash ? tokenizer_path : ".";
    if ((size_t)snprintf(p, sizeof p, "%.*s/tokenizer_config.json", dlen, d) >= sizeof p) return NULL;
    char *text;
    size_t len;
    tl_error ignored;
    if (tl_read_file(p, 16u << 20, &text, &len, &ignored)) return NULL; /* none: no template */
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *tpl = NULL;
    const cJSON *it = root ? cJSON_GetObjectItemCaseSensitive(root, "chat_template") : NULL;
    /* a string, or a list of named templates */
    if (it && (cJSON_IsString(it) || cJSON_IsArray(it))) tpl = cJSON_Duplicate(it, 1);
    cJSON_Delete(root);
    return tpl;
}

static int write_json(const char *dir, const char *name, cJSON *root, tl_error *err) {
    char p[PATH_CAP];
    if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p) return tl_fail(err, "%s: path too long", dir);
    char *s = cJSON_Print(root);
    if (!s) return tl_fail(err, "out of memory");
    size_t n = strlen(s);
    s[n] = '\n'; /* cJSON leaves no final newline; its buffer holds the NUL we replace */
    int rc = tl_write_file_atomic(p, s, n + 1, err);
    free(s);
    return rc;
}

int tl_hf_tokenizer_files_write(const char *dir, const char *tokenizer_path, const tl_config *cfg, tl_error *err) {
    tl_tokenizer *tok = tl_tokenizer_load(tokenizer_path, err);
    if (!tok) return -1;
    const int ids[3] = {tl_tokenizer_unk_id(tok), tl_tokenizer_bos_id(tok), tl_tokenizer_eos_id(tok)};
    const char *keys[3] = {"unk_token", "bos_token", "eos_token"};
    cJSON *cfgj = cJSON_CreateObject(), *map = cJSON_CreateObject();
    cJSON *dec = cJSON_CreateObject();
    int rc = -1;
    if (!cfgj || !map || !dec) {
        cJSON_Delete(dec);
        tl_fail(err, "out of memory");
        goto done;
    }
    /* keys in the order transformers writes them */
    cJSON_AddBoolToObject(cfgj, "add_bos_token", ids[1] >= 0);
    cJSON_AddBoolToObject(cfgj, "add_eos_token", 0);
    /* every control piece (and the unknown piece) is a special added token, so
     * transformers matches "<s>" written in text as the BOS id, as for Llama */
    for (int id = 0; id < tl_tokenizer_vocab_size(tok); id++) {
        int type = tl_tokenizer_piece_type(tok, id);
        if (type != TL_PIECE_CONTROL && type != TL_PIECE_UNKNOWN) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", id);
        cJSON_AddItemToObject(dec, key, added_token(tl_tokenizer_piece(tok, id), 1));
    }
    cJSON_AddItemToObject(cfgj, "added_tokens_decoder", dec);
    if (ids[1] >= 0) cJSON_AddStringToObject(cfgj, "bos_token", tl_tokenizer_piece(tok, ids[1]));
    else cJSON_AddNullToObject(cfgj, "bos_token");
    cJSON *tpl = chat_template_beside(tokenizer_path);
    if (tpl) cJSON_AddItemToObject(cfgj, "chat_template", tpl);
    cJSON_AddBoolToObject(cfgj, "clean_up_tokenization_spaces", 0);
    if (ids[2] >= 0) cJSON_AddStringToObject(cfgj, "eos_token", tl_tokenizer_piece(tok, ids[2]));
    else cJSON_AddNullToObject(cfgj, "eos_token");
    /* legacy false: the Metaspace layout (prepend_scheme "first") that Llama 2's
     * and TinyLlama's files ask for */
    cJSON_AddBoolToObject(cfgj, "legacy", 0);
    cJSON_AddNumberToObject(cfgj, "model_max_length", cfg->max_seq_len);
    cJSON_AddNullToObject(cfgj, "pad_token");
    cJSON_AddStringToObject(cfgj, "padding_side", "right");
    cJSON_AddItemToObject(cfgj, "sp_model_kwargs", cJSON_CreateObject());
    cJSON_AddStringToObject(cfgj, "tokenizer_class", "LlamaTokenizer");
    if (ids[0] >= 0) cJSON_AddStringToObject(cfgj, "unk_token", tl_tokenizer_piece(tok, ids[0]));
    else cJSON_AddNullToObject(cfgj, "unk_token");
    cJSON_AddBoolToObject(cfgj, "use_default_system_prompt", 0);
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0) cJSON_AddItemToObject(map, keys[k], added_token(tl_tokenizer_piece(tok, ids[k]), 0));
    rc = write_json(dir, "tokenizer_config.json", cfgj, err) || write_json(dir, "special_tokens_map.json", map, err)
             ? -1
             : 0;
done:
    cJSON_Delete(cfgj);
    cJSON_Delete(map);
    tl_tokenizer_free(tok);
    return rc;
}

int tl_hf_tokenizer_config_read(const char *dir, char **chat_template, int *add_bos, int *add_eos, tl_error *err) {
    *chat_template = NULL;
    char p[PATH_CAP], *text;
    size_t len;
    if ((size_t)snprintf(p, sizeof p, "%s/tokenizer_config.json", dir) >= sizeof p)
        return tl_fail(err, "%s: path too long", dir);
    FILE *f = fopen(p, "rb");
    if (!f) return 0; /* none: defaults */
    fclose(f);
    if (tl_read_file(p, 16u << 20, &text, &len, err)) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tl_fail(err, "%s: not a JSON object", p);
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    if (cJSON_IsBool(b)) *add_bos = cJSON_IsTrue(b);
    b = cJSON_GetObjectItemCaseSensitive(root, "add_eos_token");
    if (cJSON_IsBool(b)) *add_eos = cJSON_IsTrue(b);
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "chat_template"), *it;
    if (cJSON_IsArray(tpl)) { /* [{"name": ..., "template": ...}, ...] */
        const cJSON *found = NULL;
        cJSON_ArrayForEach(it, tpl) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (cJSON_IsString(n) && !strcmp(n->valuestring, "default"))
                found = cJSON_GetObjectItemCaseSensitive(it, "template");
        }
        tpl = found;
    }
    int rc = 0;
    if (cJSON_IsString(tpl) && !(*chat_template = strdup(tpl->valuestring))) rc = tl_fail(err, "out of memory");
    cJSON_Delete(root);
    return rc;
}

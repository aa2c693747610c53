/* config.c - presets, validation and HF config.json reading/writing (cJSON). */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    tl_config cfg;
} preset;

/* vocab, dim, hidden, layers, heads, kv, ctx, theta, eps, tied, bos, eos */
static const preset presets[] = {
    /* The paper's model: exactly 1,100,048,384 parameters. */
    {"tinyllama-1.1b", {32000, 2048, 5632, 22, 32, 4, 2048, 10000.f, 1e-5f, 0, 1, 2}},
    /* TinyLlama-120M-like (12 layers, hidden 768). */
    {"tinyllama-120m", {32000, 768, 2048, 12, 12, 4, 2048, 10000.f, 1e-5f, 0, 1, 2}},
    /* The llama2.c-sized 24M model used for CPU benchmarks. */
    {"llama-24m", {32000, 288, 768, 6, 6, 6, 256, 10000.f, 1e-5f, 0, 1, 2}},
    /* A small GQA model. */
    {"gqa-40m", {32000, 512, 1376, 8, 8, 4, 512, 10000.f, 1e-5f, 0, 1, 2}},
    /* Byte-level demo model: trains visibly in a few minutes on 2 cores. */
    {"demo", {259, 192, 512, 4, 6, 2, 256, 10000.f, 1e-5f, 0, 1, 2}},
    /* Tiny model for tests. */
    {"test", {259, 32, 64, 2, 4, 2, 64, 10000.f, 1e-5f, 0, 1, 2}},
};

static const char *const preset_names[] = {"tinyllama-1.1b", "tinyllama-120m", "llama-24m",
                                           "gqa-40m", "demo", "test", NULL};

const char *const *tl_config_preset_names(void) { return preset_names; }

int tl_config_preset(const char *name, tl_config *cfg, tl_error *err) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *cfg = presets[i].cfg;
            return 0;
        }
    }
    return tl_fail(err, "unknown model preset '%s' (known: tinyllama-1.1b, tinyllama-120m, "
                        "llama-24m, gqa-40m, demo, test)", name);
}

int tl_config_validate(const tl_config *c, tl_error *err) {
    if (c->vocab_size <= 0 || c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->n_kv_heads <= 0 || c->max_seq_len <= 0)
        return tl_fail(err, "sizes must be positive");
    if (c->vocab_size > (1 << 24) || c->dim > (1 << 16) || c->hidden_dim > (1 << 18) ||
        c->n_layers > 1024 || c->max_seq_len > (1 << 20))
        return tl_fail(err, "sizes are implausibly large");
    if (c->dim % c->n_heads != 0)
        return tl_fail(err, "hidden_size %d is not divisible by num_attention_heads %d", c->dim,
                       c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return tl_fail(err, "num_attention_heads %d is not divisible by num_key_value_heads %d",
                       c->n_heads, c->n_kv_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return tl_fail(err, "head dimension %d must be even for rotary embeddings",
                       c->dim / c->n_heads);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return tl_fail(err, "rope_theta must be positive");
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps)) return tl_fail(err, "rms_norm_eps must be positive");
    /* generation and training insert these ids: outside the vocabulary they
     * would index past the embedding table */
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size)
        return tl_fail(err, "bos_token_id %d is outside the vocabulary [0, %d)", c->bos_id, c->vocab_size);
    if (c->eos_id < 0 || c->eos_id >= c->vocab_size)
        return tl_fail(err, "eos_token_id %d is outside the vocabulary [0, %d)", c->eos_id, c->vocab_size);
    return 0;
}

int tl_config_diff(const tl_config *a, const tl_config *b, char *what, size_t cap) {
    /* the fields in HF config.json's names */
#define TL_CFG_FIELDS(X)                                                                                           \
    X(vocab_size, "vocab_size") X(dim, "hidden_size") X(hidden_dim, "intermediate_size")                           \
    X(n_layers, "num_hidden_layers") X(n_heads, "num_attention_heads") X(n_kv_heads, "num_key_value_heads")        \
    X(max_seq_len, "max_position_embeddings") X(tied, "tie_word_embeddings") X(bos_id, "bos_token_id")             \
    X(eos_id, "eos_token_id") X(rope_theta, "rope_theta") X(norm_eps, "rms_norm_eps")
#define TL_CFG_CMP(f, name)                                                                                        \
    if (a->f != b->f) {                                                                                            \
        if (what) snprintf(what, cap, "%s %g vs %g", name, (double)a->f, (double)b->f);                            \
        return 1;                                                                                                  \
    }
    TL_CFG_FIELDS(TL_CFG_CMP)
#undef TL_CFG_CMP
#undef TL_CFG_FIELDS
    if (what && cap) what[0] = '\0';
    return 0;
}

size_t tl_config_num_nonembed_params(const tl_config *c) {
    size_t d = (size_t)c->dim, hd = (size_t)tl_config_head_dim(c);
    size_t kv = (size_t)c->n_kv_heads * hd;
    size_t per_layer = d + d * d + 2 * kv * d + d * d + d + 3 * d * (size_t)c->hidden_dim;
    size_t n = per_layer * (size_t)c->n_layers + d;
    if (!c->tied) n += (size_t)c->vocab_size * d;
    return n;
}

size_t tl_config_num_params(const tl_config *c) {
    return tl_config_num_nonembed_params(c) + (size_t)c->vocab_size * (size_t)c->dim;
}

double tl_config_train_flops_per_token(const tl_config *c, int seq_len) {
    /* 6N for the matrix products (forward 2N, backward 4N) plus attention: per layer
     * QK^T and PV are 2*2*seq*dim forward, x3 with backward = 12*seq*dim (full, not
     * halved for causality, the convention of the PaLM/TinyLlama MFU figures). */
    double n = (double)tl_config_num_nonembed_params(c);
    return 6.0 * n + 12.0 * (double)c->n_layers * (double)c->dim * (double)seq_len;
}

static int get_int(const cJSON *root, const char *key, int required, int def, int *out,
                   const char *what, tl_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) return tl_fail(err, "%s: missing required field \"%s\"", what, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        fabs(it->valuedouble) > 2147483647.0)
        return tl_fail(err, "%s: field \"%s\" must be an integer", what, key);
    *out = (int)it->valuedouble;
    return 0;
}

static int get_float(const cJSON *root, const char *key, float def, float *out, const char *what,
                     tl_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it)) return tl_fail(err, "%s: field \"%s\" must be a number", what, key);
    *out = (float)it->valuedouble;
    return 0;
}

int tl_config_parse_json(const char *text, const char *what, tl_config *cfg, tl_error *err) {
    cJSON *root = cJSON_Parse(text);
    if (!root) return tl_fail(err, "%s: malformed JSON near byte %ld", what,
                              cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : -1L);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        tl_fail(err, "%s: top level is not a JSON object", what);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "llama") != 0)) {
        tl_fail(err, "%s: model_type is %s%s%s, only \"llama\" is supported", what,
                cJSON_IsString(mt) ? "\"" : "", cJSON_IsString(mt) ? mt->valuestring : "not a string",
                cJSON_IsString(mt) ? "\"" : "");
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        tl_fail(err, "%s: hidden_act must be \"silu\"", what);
        goto done;
    }
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    if (bias && cJSON_IsTrue(bias)) {
        tl_fail(err, "%s: attention_bias=true is not supported", what);
        goto done;
    }
    const cJSON *mlp_bias = cJSON_GetObjectItemCaseSensitive(root, "mlp_bias");
    if (mlp_bias && cJSON_IsTrue(mlp_bias)) {
        tl_fail(err, "%s: mlp_bias=true is not supported", what);
        goto done;
    }
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (scaling && !cJSON_IsNull(scaling)) {
        tl_fail(err, "%s: rope_scaling is not supported", what);
        goto done;
    }
    tl_config c = {0};
    /* transformers >= 5 nests rope_theta in rope_parameters {rope_type, rope_theta} */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    float theta_default = 10000.f;
    if (rp && !cJSON_IsNull(rp)) {
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (!cJSON_IsObject(rp) || (rt && !cJSON_IsString(rt))) {
            tl_fail(err, "%s: rope_parameters must be an object with a string rope_type", what);
            goto done;
        }
        /* llama3 / linear / dynamic / yarn rescale the frequencies: running such a
         * model with plain RoPE would be silently wrong */
        if (rt && strcmp(rt->valuestring, "default")) {
            tl_fail(err, "%s: rope_parameters.rope_type \"%s\" (RoPE frequency scaling) is not supported, "
                    "only \"default\"", what, rt->valuestring);
            goto done;
        }
        if (get_float(rp, "rope_theta", 10000.f, &theta_default, what, err)) goto done;
    }
    if (get_int(root, "vocab_size", 1, 0, &c.vocab_size, what, err) ||
        get_int(root, "hidden_size", 1, 0, &c.dim, what, err) ||
        get_int(root, "intermediate_size", 1, 0, &c.hidden_dim, what, err) ||
        get_int(root, "num_hidden_layers", 1, 0, &c.n_layers, what, err) ||
        get_int(root, "num_attention_heads", 1, 0, &c.n_heads, what, err) ||
        get_int(root, "num_key_value_heads", 0, 0, &c.n_kv_heads, what, err) ||
        get_int(root, "max_position_embeddings", 0, 2048, &c.max_seq_len, what, err) ||
        get_int(root, "bos_token_id", 0, 1, &c.bos_id, what, err) ||
        get_int(root, "eos_token_id", 0, 2, &c.eos_id, what, err) ||
        get_float(root, "rope_theta", theta_default, &c.rope_theta, what, err) ||
        get_float(root, "rms_norm_eps", 1e-6f, &c.norm_eps, what, err))
        goto done;
    if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads; /* HF default */
    int head_dim = 0;
    if (get_int(root, "head_dim", 0, 0, &head_dim, what, err)) goto done;
    if (head_dim && c.n_heads > 0 && (int64_t)head_dim * c.n_heads != c.dim) {
        tl_fail(err, "%s: head_dim %d differs from hidden_size/num_attention_heads (unsupported)", what, head_dim);
        goto done;
    }
    const cJSON *tied = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tied && !cJSON_IsBool(tied)) {
        tl_fail(err, "%s: tie_word_embeddings must be true or false", what);
        goto done;
    }
    c.tied = tied ? cJSON_IsTrue(tied) : 0; /* LlamaConfig defaults to untied */
    if (tl_config_validate(&c, err)) {
        tl_wrap(err, "%s", what);
        goto done;
    }
    *cfg = c;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int tl_config_load_json(const char *path, tl_config *cfg, tl_error *err) {
    char *text;
    size_t len;
    if (tl_read_file(path, 1 << 20, &text, &len, err)) return -1;
    if (strlen(text) != len) {
        free(text);
        return tl_fail(err, "%s: contains NUL bytes, not a JSON file", path);
    }
    int rc = tl_config_parse_json(text, path, cfg, err);
    free(text);
    return rc;
}

/* The shortest decimal that reads back as the same float, so 1e-5f is written
 * as 1e-05 rather than 9.99999975e-06. */
static double shortest_float(float v) {
    char buf[64];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

char *tl_config_to_json(const tl_config *c) {
    cJSON *r = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddBoolToObject(r, "attention_bias", 0);
    cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(r, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddNumberToObject(r, "hidden_size", c->dim);
    cJSON_AddNumberToObject(r, "initializer_range", 0.02);
    cJSON_AddNumberToObject(r, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_seq_len);
    cJSON_AddStringToObject(r, "model_type", "llama");
    cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
    /* float -> shortest decimal that round-trips through float */
    cJSON_AddNumberToObject(r, "rms_norm_eps", shortest_float(c->norm_eps));
    cJSON_AddNullToObject(r, "rope_scaling");
    cJSON_AddNumberToObject(r, "rope_theta", shortest_float(c->rope_theta));
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tied);
    cJSON_AddStringToObject(r, "torch_dtype", "float32");
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

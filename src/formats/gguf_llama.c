/* gguf_llama.c - a Llama GGUF seen as an HF Llama checkpoint: hyperparameters
 * from llama.* keys, tensor names, and the q/k row order (gguf.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_write.h"

/* A required or optional positive integer key that must fit an int. */
static int get_pos_int(const tl_gguf *g, const char *key, int required, int *out, tl_error *err) {
    int64_t v;
    int rc = tl_gguf_get_i64(g, key, &v, err);
    if (rc < 0) return -1;
    if (rc == 0) {
        if (required) return tl_fail(err, "%s: key '%s' is missing", tl_gguf_path(g), key);
        return 0;
    }
    if (v <= 0 || v > (1 << 30))
        return tl_fail(err, "%s: key '%s': %lld is not a plausible size", tl_gguf_path(g), key, (long long)v);
    *out = (int)v;
    return 1;
}

int tl_gguf_llama_config(const tl_gguf *g, tl_config *cfg, tl_error *err) {
    const char *path = tl_gguf_path(g);
    tl_config c;
    memset(&c, 0, sizeof c);
    tl_gguf_str arch;
    int rc = tl_gguf_get_str(g, "general.architecture", &arch, err);
    if (rc < 0) return -1;
    if (rc == 0) return tl_fail(err, "%s: key 'general.architecture' is missing", path);
    if (arch.len != 5 || memcmp(arch.ptr, "llama", 5))
        return tl_fail(err, "%s: general.architecture is '%.*s'; only 'llama' is supported", path,
                       (int)(arch.len > 40 ? 40 : arch.len), arch.ptr);
    if (get_pos_int(g, "llama.embedding_length", 1, &c.dim, err) < 0 ||
        get_pos_int(g, "llama.feed_forward_length", 1, &c.hidden_dim, err) < 0 ||
        get_pos_int(g, "llama.block_count", 1, &c.n_layers, err) < 0 ||
        get_pos_int(g, "llama.attention.head_count", 1, &c.n_heads, err) < 0 ||
        get_pos_int(g, "llama.context_length", 1, &c.max_seq_len, err) < 0)
        return -1;
    c.n_kv_heads = c.n_heads;
    if (get_pos_int(g, "llama.attention.head_count_kv", 0, &c.n_kv_heads, err) < 0) return -1;
    c.rope_theta = 10000.0f; /* llama.cpp's default when the key is absent */
    if (tl_gguf_get_f32(g, "llama.rope.freq_base", &c.rope_theta, err) < 0) return -1;
    rc = tl_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c.norm_eps, err);
    if (rc < 0) return -1;
    if (rc == 0) return tl_fail(err, "%s: key 'llama.attention.layer_norm_rms_epsilon' is missing", path);

    int rot = 0;
    if ((rc = get_pos_int(g, "llama.rope.dimension_count", 0, &rot, err)) < 0) return -1;
    if (rc && c.dim % c.n_heads == 0 && rot != c.dim / c.n_heads)
        return tl_fail(err, "%s: llama.rope.dimension_count %d differs from the head dimension %d (partial rotary "
                       "embeddings are not supported)", path, rot, c.dim / c.n_heads);
    tl_gguf_str scaling;
    if ((rc = tl_gguf_get_str(g, "llama.rope.scaling.type", &scaling, err)) < 0) return -1;
    if (rc && !(scaling.len == 4 && !memcmp(scaling.ptr, "none", 4)))
        return tl_fail(err, "%s: llama.rope.scaling.type '%.*s' is not supported", path,
                       (int)(scaling.len > 40 ? 40 : scaling.len), scaling.ptr);
    int experts = 0;
    if (get_pos_int(g, "llama.expert_count", 0, &experts, err) < 0) return -1;
    if (experts > 0) return tl_fail(err, "%s: llama.expert_count %d: mixture-of-experts models are not supported", path,
                                    experts);

    /* vocabulary: the tokenizer's size, else llama.vocab_size, else the embedding's rows */
    const tl_gguf_tensor *emb = tl_gguf_find_tensor(g, "token_embd.weight");
    const tl_gguf_kv *toks = tl_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (toks && toks->val.type == TL_GGUF_ARRAY && toks->val.arr_n <= (1u << 30)) c.vocab_size = (int)toks->val.arr_n;
    else if (get_pos_int(g, "llama.vocab_size", 0, &c.vocab_size, err) < 0) return -1;
    if (!c.vocab_size && emb && emb->ne[1] <= (1u << 30)) c.vocab_size = (int)emb->ne[1];
    if (!c.vocab_size) return tl_fail(err, "%s: no vocabulary size (no tokenizer.ggml.tokens, llama.vocab_size or "
                                      "token_embd.weight)", path);
    if (!emb) return tl_fail(err, "%s: tensor 'token_embd.weight' is missing", path);
    if (emb->n_dims != 2 || emb->ne[0] != (uint64_t)c.dim || emb->ne[1] != (uint64_t)c.vocab_size)
        return tl_fail(err, "%s: tensor 'token_embd.weight' has shape [%llu, %llu], expected [%d, %d] "
                       "(embedding_length, vocabulary)", path, (unsigned long long)emb->ne[0],
                       (unsigned long long)emb->ne[1], c.dim, c.vocab_size);
    c.tied = tl_gguf_find_tensor(g, "output.weight") == NULL;

    uint32_t id;
    c.bos_id = 1;
    c.eos_id = 2;
    if ((rc = tl_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id, err)) < 0) return -1;
    if (rc) c.bos_id = id > INT32_MAX ? -1 : (int)id;
    if ((rc = tl_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id, err)) < 0) return -1;
    if (rc) c.eos_id = id > INT32_MAX ? -1 : (int)id;
    if (tl_config_validate(&c, err)) return tl_wrap(err, "%s", path);
    *cfg = c;
    return 0;
}

/* GGUF name suffix inside blk.N -> HF name suffix inside model.layers.N */
static const char *const layer_names[][2] = {
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};

static int name_is(const char *name, size_t len, const char *s) { return strlen(s) == len && !memcmp(name, s, len); }

int tl_gguf_llama_hf_name(const char *name, size_t len, char *out, size_t cap) {
    const char *hf = NULL;
    if (name_is(name, len, "token_embd.weight")) hf = "model.embed_tokens.weight";
    else if (name_is(name, len, "output_norm.weight")) hf = "model.norm.weight";
    else if (name_is(name, len, "output.weight")) hf = "lm_head.weight";
    if (hf) return (size_t)snprintf(out, cap, "%s", hf) < cap ? 0 : -1;
    if (len < 6 || memcmp(name, "blk.", 4) || name[4] < '0' || name[4] > '9') return -1;
    size_t i = 4;
    long layer = 0;
    while (i < len && name[i] >= '0' && name[i] <= '9' && layer < 100000) layer = layer * 10 + (name[i++] - '0');
    if (i >= len || name[i] != '.' || (name[4] == '0' && i > 5)) return -1;
    i++;
    for (size_t k = 0; k < sizeof layer_names / sizeof layer_names[0]; k++)
        if (name_is(name + i, len - i, layer_names[k][0]))
            return (size_t)snprintf(out, cap, "model.layers.%ld.%s", layer, layer_names[k][1]) < cap ? 0 : -1;
    return -1;
}

int tl_gguf_llama_gguf_name(const char *hf, char *out, size_t cap) {
    const char *g = NULL;
    if (!strcmp(hf, "model.embed_tokens.weight")) g = "token_embd.weight";
    else if (!strcmp(hf, "model.norm.weight")) g = "output_norm.weight";
    else if (!strcmp(hf, "lm_head.weight")) g = "output.weight";
    if (g) return (size_t)snprintf(out, cap, "%s", g) < cap ? 0 : -1;
    long layer;
    int used = 0;
    if (sscanf(hf, "model.layers.%ld.%n", &layer, &used) != 1 || used == 0 || layer < 0) return -1;
    for (size_t k = 0; k < sizeof layer_names / sizeof layer_names[0]; k++)
        if (!strcmp(hf + used, layer_names[k][1]))
            return (size_t)snprintf(out, cap, "blk.%ld.%s", layer, layer_names[k][0]) < cap ? 0 : -1;
    return -1;
}

/* Within each head of d = rows / n_head rows, HF row j * d/2 + i (j = 0, 1: the
 * two rotary halves) is GGUF row 2 * i + j. */
void tl_gguf_llama_permute(const float *hf, float *gguf, int rows, int cols, int n_head) {
    int d = rows / n_head, half = d / 2;
    for (int h = 0; h < n_head; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(gguf + ((size_t)h * d + 2 * i + j) * cols, hf + ((size_t)h * d + j * half + i) * cols,
                       sizeof(float) * (size_t)cols);
}

void tl_gguf_llama_unpermute(const float *gguf, float *hf, int rows, int cols, int n_head) {
    int d = rows / n_head, half = d / 2;
    for (int h = 0; h < n_head; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(hf + ((size_t)h * d + j * half + i) * cols, gguf + ((size_t)h * d + 2 * i + j) * cols,
                       sizeof(float) * (size_t)cols);
}

static int ends_with(const tl_gguf_str *s, const char *suf) {
    size_t n = strlen(suf);
    return s->len >= n && !memcmp(s->ptr + s->len - n, suf, n);
}

int tl_gguf_llama_tensor_f32(const tl_gguf *g, const tl_gguf_tensor *t, const tl_config *cfg, float *out,
                             tl_error *err) {
    int heads = 0;
    if (!memcmp(t->name.ptr, "blk.", t->name.len < 4 ? t->name.len : 4)) {
        if (ends_with(&t->name, ".attn_q.weight")) heads = cfg->n_heads;
        else if (ends_with(&t->name, ".attn_k.weight")) heads = cfg->n_kv_heads;
    }
    if (!heads) return tl_gguf_tensor_to_f32(g, t, out, err);
    uint64_t rows = t->ne[1], cols = t->ne[0];
    int hd = tl_config_head_dim(cfg);
    if (t->n_dims != 2 || cols != (uint64_t)cfg->dim || rows != (uint64_t)heads * (uint64_t)hd)
        return tl_fail(err, "%s: tensor '%.*s' has shape [%llu, %llu], expected [%d, %d]", tl_gguf_path(g),
                       (int)t->name.len, t->name.ptr, (unsigned long long)cols, (unsigned long long)rows, cfg->dim,
                       heads * hd);
    float *tmp = malloc(sizeof(float) * (size_t)t->n_elements);
    if (!tmp) return tl_fail(err, "%s: out of memory", tl_gguf_path(g));
    if (tl_gguf_tensor_to_f32(g, t, tmp, err)) {
        free(tmp);
        return -1;
    }
    tl_gguf_llama_unpermute(tmp, out, (int)rows, (int)cols, heads);
    free(tmp);
    return 0;
}

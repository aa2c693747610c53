/* infer_gguf.c - a Llama GGUF file as an inference model, its tensors used
 * where they lie in the map.
 *
 * The q/k row permutation: llama.cpp's converter interleaves the two rotary
 * halves of every head's rows (gguf.h).  Rather than copying q/k to HF order
 * (memory) or adding an interleaved RoPE (a second code path through RoPE and
 * the KV cache), the matrices keep their GGUF order and each product's output
 * is put back in HF order (tl_wmat_unpermute_out): a shuffle of rows floats
 * per token, exact, and everything after the projection stays as for HF. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "finite.h"
#include "gguf.h"
#include "infer_internal.h"
#include "matvec_quant.h"

int tl_infer_is_gguf(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

typedef struct {
    const tl_gguf *g;
    unsigned char *used; /* per tensor: claimed by the model */
} gloader;

static const tl_gguf_tensor *claim(gloader *L, const char *name, tl_error *err) {
    const tl_gguf_tensor *t = tl_gguf_find_tensor(L->g, name);
    if (!t) return tl_fail(err, "%s: missing tensor '%s'", tl_gguf_path(L->g), name), NULL;
    L->used[t - tl_gguf_tensor_at(L->g, 0)] = 1;
    return t;
}

static int check_shape(const tl_gguf *g, const tl_gguf_tensor *t, const char *name, int rows, int cols,
                       tl_error *err) {
    /* ne[0] is the row length: [cols, rows] in GGUF is [rows, cols] row-major */
    int ok = cols ? (t->ne[0] == (uint64_t)cols && t->ne[1] == (uint64_t)rows)
                  : (t->ne[0] == (uint64_t)rows && t->ne[1] == 1);
    ok = ok && t->ne[2] == 1 && t->ne[3] == 1;
    if (ok) return 0;
    if (cols)
        return tl_fail(err, "%s: tensor '%s' has ne [%llu, %llu, %llu, %llu], expected [%d, %d] (cols, rows)",
                       tl_gguf_path(g), name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], cols, rows);
    return tl_fail(err, "%s: tensor '%s' has ne [%llu, %llu, ...], expected [%d]", tl_gguf_path(g), name,
                   (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], rows);
}

static int get_wmat(gloader *L, const char *name, int rows, int cols, int perm_heads, tl_wmat *w, tl_error *err) {
    const tl_gguf_tensor *t = claim(L, name, err);
    if (!t || check_shape(L->g, t, name, rows, cols, err)) return -1;
    memset(w, 0, sizeof *w);
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    w->perm_heads = perm_heads;
    tl_dtype dt;
    switch (t->type) {
    case TL_GGML_F32: dt = TL_DT_F32; break;
    case TL_GGML_F16: dt = TL_DT_F16; break;
    case TL_GGML_BF16: dt = TL_DT_BF16; break;
    default:
        if (!tl_quant_supported(t->type))
            return tl_fail(err, "%s: tensor '%s' has type %s, which inference does not support", tl_gguf_path(L->g),
                           name, tl_ggml_type_name(t->type) ? tl_ggml_type_name(t->type) : "?");
        w->quant = t->type;
        w->dtype = TL_DT_I32;
        return 0;
    }
    w->dtype = dt;
    /* as for HF files: a NaN or infinity in a weight poisons every logit */
    size_t bad = tl_find_nonfinite(t->data, dt, (size_t)t->n_elements);
    if (bad < t->n_elements)
        return tl_fail(err, "%s: tensor '%s' holds %s at element %zu: the weights are corrupt", tl_gguf_path(L->g),
                       name, tl_nonfinite_kind(t->data, dt, bad), bad);
    return 0;
}

static int get_vec(gloader *L, const char *name, int n, float **out, tl_error *err) {
    const tl_gguf_tensor *t = claim(L, name, err);
    if (!t || check_shape(L->g, t, name, n, 0, err)) return -1;
    if (!(*out = tl_alloc(sizeof(float) * (size_t)n))) return tl_fail(err, "out of memory");
    return tl_gguf_tensor_to_f32(L->g, t, *out, err);
}

void tl_infer_set_f32_activations(tl_infer_model *m, int on) {
    if (!m->layers) return;
    m->embed.f32_act = m->lm_head.f32_act = on != 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        tl_infer_layer *ly = &m->layers[l];
        tl_wmat *w[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (int j = 0; j < 7; j++) w[j]->f32_act = on != 0;
    }
}

int tl_infer_load_gguf(tl_infer_model *m, const char *path, int with_tokenizer, tl_error *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", path);
    if (!(m->gguf = tl_gguf_open(path, err))) return -1;
    const tl_gguf *g = m->gguf;
    gloader L = {g, NULL};
    int rc = tl_gguf_llama_config(g, &m->cfg, err);
    const tl_config *c = &m->cfg;
    const int D = c->dim, F = c->hidden_dim, hd = rc ? 0 : tl_config_head_dim(c), QD = c->n_heads * hd,
              KD = c->n_kv_heads * hd, V = c->vocab_size;
    if (!rc && (hd % 2 || hd > 1024))
        rc = tl_fail(err, "%s: head dimension %d is not supported (even, at most 1024)", path, hd);
    if (!rc) {
        L.used = calloc(tl_gguf_n_tensors(g) + 1, 1);
        m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
        if (!L.used || !m->layers) rc = tl_fail(err, "out of memory");
    }
    if (!rc) rc = get_wmat(&L, "token_embd.weight", V, D, 0, &m->embed, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        tl_infer_layer *ly = &m->layers[l];
        char nm[96];
#define NAME(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), nm)
        rc = get_vec(&L, NAME("attn_norm.weight"), D, &ly->attn_norm, err) ||
             get_wmat(&L, NAME("attn_q.weight"), QD, D, c->n_heads, &ly->wq, err) ||
             get_wmat(&L, NAME("attn_k.weight"), KD, D, c->n_kv_heads, &ly->wk, err) ||
             get_wmat(&L, NAME("attn_v.weight"), KD, D, 0, &ly->wv, err) ||
             get_wmat(&L, NAME("attn_output.weight"), D, QD, 0, &ly->wo, err) ||
             get_vec(&L, NAME("ffn_norm.weight"), D, &ly->mlp_norm, err) ||
             get_wmat(&L, NAME("ffn_gate.weight"), F, D, 0, &ly->w_gate, err) ||
             get_wmat(&L, NAME("ffn_up.weight"), F, D, 0, &ly->w_up, err) ||
             get_wmat(&L, NAME("ffn_down.weight"), D, F, 0, &ly->w_down, err);
#undef NAME
    }
    if (!rc) rc = get_vec(&L, "output_norm.weight", D, &m->final_norm, err);
    if (!rc) {
        if (c->tied)
            m->lm_head = m->embed;
        else
            rc = get_wmat(&L, "output.weight", V, D, 0, &m->lm_head, err);
    }
    /* refuse tensors we would silently ignore (rope_freqs: llama 3 scaling, not supported) */
    for (size_t i = 0; i < tl_gguf_n_tensors(g) && !rc; i++)
        if (!L.used[i]) {
            const tl_gguf_tensor *t = tl_gguf_tensor_at(g, i);
            rc = tl_fail(err, "%s: unexpected tensor '%.*s' (not part of a %d-layer Llama model)", path,
                         (int)(t->name.len > 200 ? 200 : t->name.len), t->name.ptr, c->n_layers);
        }
    free(L.used);
    if (!rc && with_tokenizer && tl_gguf_find_kv(g, "tokenizer.ggml.tokens")) {
        tl_gguf_tokenizer_info info;
        m->tok = tl_tokenizer_from_gguf(g, &info, err);
        if (!m->tok) rc = -1;
        snprintf(m->tok_path, sizeof m->tok_path, "%s", path);
        if (!rc && tl_tokenizer_vocab_size(m->tok) > V)
            rc = tl_fail(err, "%s: tokenizer has %d pieces but the model's vocabulary is %d", path,
                         tl_tokenizer_vocab_size(m->tok), V);
        if (!rc && info.chat_template.ptr) {
            if (!(m->chat_template = malloc(info.chat_template.len + 1))) {
                rc = tl_fail(err, "out of memory");
            } else {
                memcpy(m->chat_template, info.chat_template.ptr, info.chat_template.len);
                m->chat_template[info.chat_template.len] = '\0';
            }
        }
    }
    if (rc) {
        tl_infer_free(m);
        return -1;
    }
    tl_infer_into_pages(m);
    return tl_infer_finish_load(m, NULL, with_tokenizer, err);
}

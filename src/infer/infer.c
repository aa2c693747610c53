/* infer.c - loading HF checkpoints for inference (weights stay memory-mapped in
 * their file dtype) and the KV-cache forward pass. */
#include "infer.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attention.h"
#include "attention_amx.h"
#include "checkpoint.h"
#include "finite.h"
#include "gemm.h"
#include "gemm_amx.h"
#include "gemm_quant.h"
#include "gguf.h"
#include "infer_internal.h"
#include "matvec_quant.h"
#include "ops.h"

#define PATH_CAP 4096

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ----------------------------------------------------------------- loading */

typedef struct {
    tl_hf_files hf;
    unsigned char *used; /* per file, per tensor: claimed by the model */
    int *used_off;
} loader;

static int find_tensor(loader *L, const char *name, const tl_st_tensor **t, int *file) {
    for (int f = 0; f < L->hf.n; f++) {
        const tl_st_tensor *x = tl_st_find(&L->hf.st[f], name);
        if (x) {
            *t = x;
            *file = f;
            L->used[L->used_off[f] + (int)(x - L->hf.st[f].tensors)] = 1;
            return 1;
        }
    }
    return 0;
}

static int shape_str(char *buf, size_t cap, const tl_st_tensor *t) {
    buf[0] = '\0';
    for (int d = 0; d < t->ndim; d++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    return 0;
}

/* Looks up name, checks dtype and shape ([rows, cols], or [rows] when cols == 0). */
static int get_tensor(loader *L, const char *dir, const char *name, int rows, int cols, const tl_st_tensor **out,
                      int *file, tl_error *err) {
    const tl_st_tensor *t;
    int f;
    if (!find_tensor(L, name, &t, &f)) return tl_fail(err, "%s: missing tensor '%s'", dir, name);
    if (t->dtype != TL_DT_F32 && t->dtype != TL_DT_BF16 && t->dtype != TL_DT_F16)
        return tl_fail(err, "%s: tensor '%s' has dtype %s; model weights must be F32, BF16 or F16", L->hf.files[f],
                       name, tl_dtype_name(t->dtype));
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols) : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[160];
        shape_str(got, sizeof got, t);
        if (cols)
            return tl_fail(err, "%s: tensor '%s' has shape [%s], expected [%d, %d]", L->hf.files[f], name, got, rows,
                           cols);
        return tl_fail(err, "%s: tensor '%s' has shape [%s], expected [%d]", L->hf.files[f], name, got, rows);
    }
    /* a NaN or infinity in a weight turns every later logit into NaN: refuse
     * the file by name (the scan also pages the weights in for the first pass) */
    const void *data = tl_st_data(&L->hf.st[f], t);
    size_t bad = tl_find_nonfinite(data, t->dtype, t->numel);
    if (bad < t->numel)
        return tl_fail(err, "%s: tensor '%s' holds %s at element %zu: the weights are corrupt", L->hf.files[f], name,
                       tl_nonfinite_kind(data, t->dtype, bad), bad);
    *out = t;
    *file = f;
    return 0;
}

static int get_wmat(loader *L, const char *dir, const char *name, int rows, int cols, tl_wmat *w, tl_error *err) {
    const tl_st_tensor *t;
    int f;
    if (get_tensor(L, dir, name, rows, cols, &t, &f, err)) return -1;
    w->dtype = t->dtype;
    w->data = tl_st_data(&L->hf.st[f], t);
    w->rows = rows;
    w->cols = cols;
    return 0;
}

static int get_vec(loader *L, const char *dir, const char *name, int n, float **out, tl_error *err) {
    const tl_st_tensor *t;
    int f;
    if (get_tensor(L, dir, name, n, 0, &t, &f, err)) return -1;
    *out = tl_alloc(sizeof(float) * (size_t)n);
    if (!*out) return tl_fail(err, "out of memory");
    return tl_st_read_f32(&L->hf.st[f], t, *out, (size_t)n, err);
}

static int read_number(const cJSON *root, const char *key, float *out, const char *path, tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tl_fail(err, "%s: %s must be a number", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int load_gen_config(tl_infer_model *m, const char *dir, tl_error *err) {
    tl_gen_config *g = &m->gen;
    memset(g, 0, sizeof *g);
    g->bos_id = m->cfg.bos_id;
    g->n_eos = 1;
    g->eos_ids[0] = m->cfg.eos_id;
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->top_k = 50; /* transformers' GenerationConfig default */
    g->repetition_penalty = 1.0f;
    char path[PATH_CAP];
    if (!dir) return 0;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (!file_exists(path)) return 0;
    char *text;
    size_t len;
    if (tl_read_file(path, 1u << 20, &text, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tl_fail(err, "%s: not a JSON object", path);
    }
    int rc = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (cJSON_IsNumber(v)) g->bos_id = v->valueint;
    v = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(v)) {
        g->n_eos = 1;
        g->eos_ids[0] = v->valueint;
    } else if (cJSON_IsArray(v)) {
        g->n_eos = 0;
        for (const cJSON *e = v->child; e; e = e->next) {
            if (!cJSON_IsNumber(e)) {
                rc = tl_fail(err, "%s: eos_token_id entries must be integers", path);
                break;
            }
            if (g->n_eos < 8) g->eos_ids[g->n_eos++] = e->valueint;
        }
    } else if (v && !cJSON_IsNull(v)) {
        rc = tl_fail(err, "%s: eos_token_id must be an integer or a list", path);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "do_sample");
    g->has_sampling = cJSON_IsTrue(v);
    float tk = (float)g->top_k;
    if (!rc && (read_number(root, "temperature", &g->temperature, path, err) ||
                read_number(root, "top_p", &g->top_p, path, err) || read_number(root, "min_p", &g->min_p, path, err) ||
                read_number(root, "top_k", &tk, path, err) ||
                read_number(root, "repetition_penalty", &g->repetition_penalty, path, err)))
        rc = -1;
    g->top_k = (int)tk;
    for (int i = 0; i < g->n_eos && !rc; i++)
        if (g->eos_ids[i] < 0 || g->eos_ids[i] >= m->cfg.vocab_size)
            rc = tl_fail(err, "%s: eos_token_id %d is outside the vocabulary", path, g->eos_ids[i]);
    cJSON_Delete(root);
    return rc;
}

static int load_tokenizer(tl_infer_model *m, const char *dir, tl_error *err) {
    static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        char path[sizeof m->tok_path];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path)
            return tl_fail(err, "%s: path too long", dir);
        if (!file_exists(path)) continue;
        m->tok = tl_tokenizer_load(path, err);
        if (!m->tok) return -1;
        snprintf(m->tok_path, sizeof m->tok_path, "%s", path);
        if (tl_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
            return tl_fail(err, "%s: tokenizer has %d pieces but the model's vocabulary is %d", path,
                           tl_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
        return 0;
    }
    return 0;
}

static int load(tl_infer_model *m, const char *dir, int with_tokenizer, tl_error *err) {
    if (tl_infer_is_gguf(dir)) return tl_infer_load_gguf(m, dir, with_tokenizer, err);
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[PATH_CAP];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return tl_fail(err, "%s: path too long", dir);
    if (tl_config_load_json(path, &m->cfg, err)) return -1;
    const tl_config *c = &m->cfg;
    const int D = c->dim, F = c->hidden_dim, hd = tl_config_head_dim(c), QD = c->n_heads * hd,
              KD = c->n_kv_heads * hd, V = c->vocab_size;
    loader L;
    memset(&L, 0, sizeof L);
    if (tl_hf_files_open(dir, &L.hf, err)) return -1;
    m->n_files = L.hf.n;
    m->files = L.hf.st; /* the model owns the mappings from here on */
    int total = 0, rc = 0;
    L.used_off = calloc((size_t)L.hf.n + 1, sizeof *L.used_off);
    for (int f = 0; f < L.hf.n; f++) total += L.hf.st[f].n;
    L.used = calloc((size_t)total + 1, 1);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!L.used_off || !L.used || !m->layers) rc = tl_fail(err, "out of memory");
    for (int f = 1; f < L.hf.n && !rc; f++) L.used_off[f] = L.used_off[f - 1] + L.hf.st[f - 1].n;

    if (!rc) rc = get_wmat(&L, dir, "model.embed_tokens.weight", V, D, &m->embed, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        tl_infer_layer *ly = &m->layers[l];
        char nm[128];
#define NAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        rc = get_vec(&L, dir, NAME("input_layernorm.weight"), D, &ly->attn_norm, err) ||
             get_wmat(&L, dir, NAME("self_attn.q_proj.weight"), QD, D, &ly->wq, err) ||
             get_wmat(&L, dir, NAME("self_attn.k_proj.weight"), KD, D, &ly->wk, err) ||
             get_wmat(&L, dir, NAME("self_attn.v_proj.weight"), KD, D, &ly->wv, err) ||
             get_wmat(&L, dir, NAME("self_attn.o_proj.weight"), D, QD, &ly->wo, err) ||
             get_vec(&L, dir, NAME("post_attention_layernorm.weight"), D, &ly->mlp_norm, err) ||
             get_wmat(&L, dir, NAME("mlp.gate_proj.weight"), F, D, &ly->w_gate, err) ||
             get_wmat(&L, dir, NAME("mlp.up_proj.weight"), F, D, &ly->w_up, err) ||
             get_wmat(&L, dir, NAME("mlp.down_proj.weight"), D, F, &ly->w_down, err);
#undef NAME
    }
    if (!rc) rc = get_vec(&L, dir, "model.norm.weight", D, &m->final_norm, err);
    if (!rc) {
        if (c->tied) {
            m->lm_head = m->embed;
            const tl_st_tensor *t;
            int f;
            find_tensor(&L, "lm_head.weight", &t, &f); /* a tied copy some writers keep: ignored */
        } else {
            rc = get_wmat(&L, dir, "lm_head.weight", V, D, &m->lm_head, err);
        }
    }
    /* refuse tensors we would silently ignore */
    for (int f = 0; f < L.hf.n && !rc; f++)
        for (int j = 0; j < L.hf.st[f].n && !rc; j++) {
            const char *nm = L.hf.st[f].tensors[j].name;
            if (L.used[L.used_off[f] + j] || strstr(nm, "rotary_emb.inv_freq")) continue;
            rc = tl_fail(err, "%s: unexpected tensor '%s' (not part of a %d-layer Llama model)", L.hf.files[f], nm,
                         c->n_layers);
        }
    for (int f = 0; f < L.hf.n; f++) free(L.hf.files[f]);
    free(L.hf.files);
    free(L.used);
    free(L.used_off);
    if (rc) {
        tl_infer_free(m);
        return -1;
    }
    tl_infer_into_pages(m);
    return tl_infer_finish_load(m, dir, with_tokenizer, err);
}

/* Q8_0/Q4_0/Q4_K/Q5_K/Q6_K matrices repacked for the AVX512-VNNI decode kernels (matvec_quant.h:
 * 16 rows per register, x broadcast once for them), and BF16 matrices copied
 * as they are (tl_wmat_move_to), both into 2 MiB pages.  The copy replaces the
 * map: its pages are dropped after repacking, so the resident size stays the
 * file's.  Without memory for the copy (and the quantized types on other
 * CPUs), the map is used as it is.  The embedding table (rows looked up
 * one by one) stays in the map. */
void tl_infer_into_pages(tl_infer_model *m) {
    const int q8 = tl_q8_repacks();
    tl_wmat **ws = malloc(sizeof *ws * ((size_t)m->cfg.n_layers * 7 + 1));
    if (!ws) return;
    int nw = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        tl_infer_layer *ly = &m->layers[l];
        tl_wmat *w[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (int j = 0; j < 7; j++) ws[nw++] = w[j];
    }
    if (!m->cfg.tied) ws[nw++] = &m->lm_head;
    size_t total = 0;
    for (int i = 0; i < nw; i++)
        if ((q8 && tl_q8_packable(ws[i])) || tl_wmat_movable(ws[i]))
            total += ((size_t)ws[i]->rows * tl_wmat_row_bytes(ws[i]) + 63) & ~(size_t)63;
    /* in 2 MiB pages, advised before the first write: streaming 4 KiB pages
     * each token costs a TLB miss per page, and one Q4_0 decode thread read
     * 6.4 GB/s from them against 8.5 from huge pages (the Xeon VM) */
    if (!total || !(m->packed = tl_alloc_huge(total))) {
        free(ws);
        return;
    }
    uint8_t *dst = m->packed;
    for (int i = 0; i < nw; i++) {
        tl_wmat *w = ws[i];
        const size_t bytes = (size_t)w->rows * tl_wmat_row_bytes(w);
        if (tl_wmat_movable(w)) {
            tl_wmat_move_to(w, dst);
            dst += (bytes + 63) & ~(size_t)63;
            continue;
        }
        if (!q8 || !tl_q8_packable(w)) continue;
        tl_q8_pack(w, dst);
        tl_release_pages(w->data, bytes); /* the map's pages of this matrix */
        w->data = dst;
        w->packed = 1;
        dst += (bytes + 63) & ~(size_t)63;
    }
    free(ws);
}

int tl_infer_finish_load(tl_infer_model *m, const char *dir, int with_tokenizer, tl_error *err) {
    const tl_config *c = &m->cfg;
    const int hd = tl_config_head_dim(c);
    size_t half = (size_t)hd / 2;
    m->rope_cos = tl_alloc(sizeof(float) * (size_t)c->max_seq_len * half);
    m->rope_sin = tl_alloc(sizeof(float) * (size_t)c->max_seq_len * half);
    if (!m->rope_cos || !m->rope_sin) {
        tl_infer_free(m);
        return tl_fail(err, "out of memory");
    }
    tl_rope_tables(m->rope_cos, m->rope_sin, c->max_seq_len, hd, c->rope_theta);
    m->kernel = tl_kernel_best();
    size_t bytes = (size_t)m->lm_head.rows * tl_wmat_row_bytes(&m->lm_head);
    for (int l = 0; l < c->n_layers; l++) {
        const tl_wmat *ws[] = {&m->layers[l].wq, &m->layers[l].wk,     &m->layers[l].wv,    &m->layers[l].wo,
                               &m->layers[l].w_gate, &m->layers[l].w_up, &m->layers[l].w_down};
        for (int i = 0; i < 7; i++) bytes += (size_t)ws[i]->rows * tl_wmat_row_bytes(ws[i]);
    }
    m->decode_bytes = bytes;
    /* dir NULL (a GGUF file): generation defaults from the config, the tokenizer already loaded */
    if (load_gen_config(m, dir, err) || (dir && with_tokenizer && load_tokenizer(m, dir, err))) {
        tl_infer_free(m);
        return -1;
    }
    return 0;
}

int tl_infer_load(tl_infer_model *m, const char *dir, tl_error *err) { return load(m, dir, 1, err); }
int tl_infer_load_weights_only(tl_infer_model *m, const char *dir, tl_error *err) { return load(m, dir, 0, err); }

void tl_infer_free(tl_infer_model *m) {
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) {
            tl_free(m->layers[l].attn_norm);
            tl_free(m->layers[l].mlp_norm);
        }
    free(m->layers);
    tl_free(m->final_norm);
    tl_free(m->rope_cos);
    tl_free(m->rope_sin);
    for (int f = 0; f < m->n_files; f++) tl_st_close(&m->files[f]);
    free(m->files);
    if (m->tok) tl_tokenizer_free(m->tok);
    if (m->gguf) tl_gguf_close(m->gguf);
    free(m->chat_template);
    tl_free(m->packed);
    memset(m, 0, sizeof *m);
}

int tl_infer_set_kernel(tl_infer_model *m, tl_kernel k, tl_error *err) {
    if (!tl_kernel_supported(k)) return tl_fail(err, "this CPU cannot run the %s kernels", tl_kernel_name(k));
    m->kernel = k == TL_KERNEL_AUTO ? tl_kernel_best() : k;
    return 0;
}

void tl_infer_prefer_bf16_rounding(tl_infer_model *m) {
    const tl_wmat *w = m->layers ? &m->layers[0].wq : NULL;
    if (w && w->dtype == TL_DT_BF16 && !w->quant && !w->f32_act) m->kernel = tl_kernel_best_bf16();
}

/* ----------------------------------------------------------------- sessions */

/* fp32 weights converted per sgemm call: whole layer matrices of 1B-class models
 * (few calls, so OpenMP conversion and BLAS threads alternate rarely); allocated
 * on the first batched pass. */
#define TILE_FLOATS (16u << 20)
#define MATVEC_ROWS 4          /* up to this many rows: mat-vec per row instead of a tile sgemm */

int tl_infer_state_init(tl_infer_state *s, const tl_infer_model *m, int max_ctx, tl_error *err) {
    memset(s, 0, sizeof *s);
    const tl_config *c = &m->cfg;
    if (max_ctx <= 0 || max_ctx > c->max_seq_len) max_ctx = c->max_seq_len;
    const int D = c->dim, F = c->hidden_dim, hd = tl_config_head_dim(c), QD = c->n_heads * hd,
              KD = c->n_kv_heads * hd;
    s->m = m;
    s->max_ctx = max_ctx;
    /* Prompt tokens per batched pass: every pass converts and packs each weight
     * matrix once, so longer passes amortise that better (512: 4x less of it
     * than 128 on a 512-token prompt, for ~40 MB more activations at 1.1B). */
    s->chunk = max_ctx < 512 ? max_ctx : 512;
    s->n_scores = omp_get_max_threads();
    size_t cache = (size_t)c->n_layers * (size_t)max_ctx * (size_t)KD;
    size_t C = (size_t)s->chunk;
    size_t biggest = (size_t)(D > F ? D : F) * (size_t)(QD > F ? QD : F); /* largest layer matrix */
    if ((size_t)c->vocab_size * (size_t)D > biggest) biggest = (size_t)c->vocab_size * (size_t)D;
    s->tile_floats = biggest < TILE_FLOATS ? biggest : TILE_FLOATS;
    if (s->tile_floats < (size_t)(D > F ? D : F) * 16) s->tile_floats = (size_t)(D > F ? D : F) * 16;
    const int widest = D > F ? (D > QD ? D : QD) : (F > QD ? F : QD); /* widest matrix input */
    s->xpack_bytes = 3 * tl_amx_pack_bytes(s->chunk, widest);           /* up to 3 parts; allocated on first use */
    s->k_cache = tl_alloc(sizeof(float) * cache);
    s->v_cache = tl_alloc(sizeof(float) * cache);
    s->x = tl_alloc(sizeof(float) * C * D);
    s->h = tl_alloc(sizeof(float) * C * D);
    s->q = tl_alloc(sizeof(float) * C * QD);
    s->k = tl_alloc(sizeof(float) * C * KD);
    s->v = tl_alloc(sizeof(float) * C * KD);
    s->ao = tl_alloc(sizeof(float) * C * QD);
    s->g = tl_alloc(sizeof(float) * C * F);
    s->u = tl_alloc(sizeof(float) * C * F);
    s->tmp = tl_alloc(sizeof(float) * C * (size_t)(D > QD ? D : QD));
    s->scores = tl_alloc(sizeof(float) * (size_t)s->n_scores * TL_ATTN_ROWS * (size_t)max_ctx);
    s->logits = tl_alloc(sizeof(float) * (size_t)c->vocab_size);
    if (!s->k_cache || !s->v_cache || !s->x || !s->h || !s->q || !s->k || !s->v || !s->ao || !s->g || !s->u ||
        !s->tmp || !s->scores || !s->logits) {
        tl_infer_state_free(s);
        return tl_fail(err, "out of memory for a %d-token KV cache", max_ctx);
    }
    return 0;
}

void tl_infer_state_free(tl_infer_state *s) {
    float *bufs[] = {s->k_cache, s->v_cache, s->x, s->h,    s->q,    s->k,      s->v,
                     s->ao,      s->g,       s->u, s->tmp,  s->tile, s->scores, s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tl_free(bufs[i]);
    tl_free(s->xpack);
    tl_free(s->hpack);
    tl_free(s->attn_amx);
    memset(s, 0, sizeof *s);
}

void tl_infer_truncate(tl_infer_state *s, int pos) {
    if (pos < 0) pos = 0;
    if (pos < s->pos) s->pos = pos;
}

void tl_infer_copy_prefix(tl_infer_state *dst, const tl_infer_state *src, int n) {
    const tl_config *c = &src->m->cfg;
    const size_t KD = (size_t)c->n_kv_heads * (size_t)tl_config_head_dim(c), per = (size_t)src->max_ctx * KD;
    for (int l = 0; l < c->n_layers; l++) {
        memcpy(dst->k_cache + l * per, src->k_cache + l * per, sizeof(float) * (size_t)n * KD);
        memcpy(dst->v_cache + l * per, src->v_cache + l * per, sizeof(float) * (size_t)n * KD);
    }
    dst->pos = n;
}

/* Parts the activations are split into for AMX products: 1 (rounded to bf16,
 * the amx kernel) or 3 (exact, amx-exact). */
static int amx_parts(const tl_infer_model *m) { return m->kernel == TL_KERNEL_AMX_EXACT ? 3 : 1; }

/* Whether the batched product with W runs on AMX tiles (the amx kernels, BF16
 * weights, a batch; and memory for the packed activations). */
static int amx_applies(tl_infer_state *s, const tl_wmat *W, int n) {
    if ((s->m->kernel != TL_KERNEL_AMX && s->m->kernel != TL_KERNEL_AMX_EXACT) || W->dtype != TL_DT_BF16 ||
        n <= MATVEC_ROWS)
        return 0;
    if (!s->xpack) s->xpack = tl_alloc(s->xpack_bytes);
    return s->xpack != NULL;
}

/* Whether a batch's attention runs on AMX tiles: as its products (the amx
 * kernel with BF16 weights, so F32 models stay exact), for head sizes that are
 * multiples of 32, given the scratch. */
static int amx_attention_applies(tl_infer_state *s, const tl_wmat *wq, int n) {
    const tl_config *c = &s->m->cfg;
    if (s->m->kernel != TL_KERNEL_AMX || wq->dtype != TL_DT_BF16 || n <= MATVEC_ROWS || tl_config_head_dim(c) % 32)
        return 0;
    if (!s->attn_amx)
        s->attn_amx = tl_alloc(
            tl_attention_amx_scratch_bytes(s->max_ctx, c->n_kv_heads, tl_config_head_dim(c), s->n_scores));
    return s->attn_amx != NULL;
}

/* y_j[n, W_j->rows] (=|+=) x[n, cols] W_j^T on AMX tiles, x packed once for
 * all count matrices; 0 (nothing done) unless every one of them applies. */
static int amx_linear(tl_infer_state *s, const tl_wmat *const *W, float *const *y, int count, const float *x, int n,
                      int accumulate) {
    for (int j = 0; j < count; j++)
        if (!amx_applies(s, W[j], n)) return 0;
    const int in = W[0]->cols, parts = amx_parts(s->m);
    tl_amx_pack(x, (size_t)in, n, in, parts, s->xpack);
    for (int j = 0; j < count; j++)
        tl_amx_gemm(W[j]->data, (size_t)in, W[j]->rows, in, s->xpack, parts, n, y[j], (size_t)W[j]->rows, accumulate);
    return 1;
}

/* y_j[n, W_j->rows] (=|+=) x[n, cols] W_j^T with x rounded to bf16 once for all
 * count matrices and the products by the bf16 GEMM backend (oneDNN's bf16
 * matmul, on AVX512-BF16 or AMX): the avx512bf16 kernel's prompt pass, which
 * rounds x as that kernel's decode does.  0 (nothing done) unless every matrix
 * is BF16 and the backend has bf16 instructions. */
static int bf16_linear(tl_infer_state *s, const tl_wmat *const *W, float *const *y, int count, const float *x, int n,
                       int accumulate) {
    if (s->m->kernel != TL_KERNEL_AVX512BF16 || n <= MATVEC_ROWS || tl_gemm_bf16_active() != TL_GEMM_BF16_ONEDNN)
        return 0;
    for (int j = 0; j < count; j++)
        if (W[j]->dtype != TL_DT_BF16) return 0;
    const int in = W[0]->cols;
    if (!s->xpack && !(s->xpack = tl_alloc(s->xpack_bytes))) return 0; /* holds n x in bf16 (tl_amx_pack_bytes) */
    uint16_t *xs = s->xpack;
    tl_round_bf16(x, (size_t)n * (size_t)in, xs);
    for (int j = 0; j < count; j++)
        tl_gemm_bf16(false, true, n, W[j]->rows, in, 1.0f, xs, in, W[j]->data, in, accumulate ? 1.0f : 0.0f, y[j],
                     W[j]->rows);
    return 1;
}

/* y[n, W->rows] (=|+=) x[n, W->cols] W^T; rowwise: with the decode kernels
 * whatever n is (each row as a single-token step computes it). */
static void linear(tl_infer_state *s, const tl_wmat *W, const float *x, int n, float *y, int accumulate,
                   int rowwise) {
    const int in = W->cols, out = W->rows;
    if (rowwise || n <= MATVEC_ROWS) {
        /* the rows in one pass over the weights, each row's result that of its own mat-vec */
        float *dst = accumulate ? s->tmp : y;
        tl_wmat_matvec_rows(s->m->kernel, &W, &dst, 1, x, n);
        if (accumulate)
            for (size_t j = 0; j < (size_t)n * (size_t)out; j++) y[j] += s->tmp[j];
        return;
    }
    if (amx_linear(s, &W, &y, 1, x, n, accumulate)) return;
    if (bf16_linear(s, &W, &y, 1, x, n, accumulate)) return;
    float beta = accumulate ? 1.0f : 0.0f;
    /* non-F32 weights are converted a tile at a time (int8-activation block
     * types run straight from the blocks: no tile) */
    const int from_blocks = W->quant && !W->f32_act && tl_q8_type(W->quant);
    if (!(W->dtype == TL_DT_F32 && ((uintptr_t)W->data & 3u) == 0) && !from_blocks && !s->tile &&
        !(s->tile = tl_alloc(sizeof(float) * s->tile_floats))) {
        for (int i = 0; i < n; i++) { /* no memory for a tile: mat-vec per row */
            float *yr = y + (size_t)i * out;
            tl_wmat_matvec(s->m->kernel, W, x + (size_t)i * in, accumulate ? s->tmp : yr);
            if (accumulate)
                for (int j = 0; j < out; j++) yr[j] += s->tmp[j];
        }
        return;
    }
    tl_wmat_gemm_k(s->m->kernel, W, x, n, y, beta, s->tile, s->tile_floats);
}

/* y_j[n, W_j->rows] = x[n, cols] W_j^T for up to 8 matrices sharing their input
 * (Q/K/V, gate/up): decode rows run all of them in one parallel region. */
static void linear_multi(tl_infer_state *s, const tl_wmat *const *W, float *const *y, int count, const float *x,
                         int n, int rowwise) {
    if (rowwise || n <= MATVEC_ROWS) {
        tl_wmat_matvec_rows(s->m->kernel, W, y, count, x, n);
        return;
    }
    if (amx_linear(s, W, y, count, x, n, 0)) return;
    if (bf16_linear(s, W, y, count, x, n, 0)) return;
    if (!tl_q8_gemm_multi(s->m->kernel, W, y, count, x, n)) return; /* quantized, on AMX-INT8: x rounded once */
    for (int j = 0; j < count; j++) linear(s, W[j], x, n, y[j], 0, 0);
}

/* x += down(silu(gate(h)) * up(h)) on AMX tiles with the gate/up products, the
 * SwiGLU and the packing of its output fused (gemm_amx.h); 0 if it does not
 * apply (then nothing was done). */
static int amx_mlp(tl_infer_state *s, const tl_infer_layer *w, int n) {
    const int D = s->m->cfg.dim, F = s->m->cfg.hidden_dim;
    if (D % 32 || F % 32 || !amx_applies(s, &w->w_gate, n) || !amx_applies(s, &w->w_up, n) ||
        !amx_applies(s, &w->w_down, n))
        return 0;
    const int parts = amx_parts(s->m);
    if (!s->hpack && !(s->hpack = tl_alloc(3 * tl_amx_pack_bytes(s->chunk, F)))) return 0;
    tl_amx_pack(s->h, (size_t)D, n, D, parts, s->xpack);
    if (tl_amx_swiglu(w->w_gate.data, w->w_up.data, (size_t)D, F, D, s->xpack, parts, n, s->hpack)) return 0;
    tl_amx_gemm(w->w_down.data, (size_t)F, D, F, s->hpack, parts, n, s->x, (size_t)D, 1);
    return 1;
}

/* rowwise: every row through the single-token decode's kernels (products and
 * attention), so its results are bit for bit those of decoding it alone. */
static void forward_chunk(tl_infer_state *s, const int *ids, int n, float *all_logits, int rowwise) {
    const tl_infer_model *m = s->m;
    const tl_config *c = &m->cfg;
    const int D = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, hd = tl_config_head_dim(c),
              KD = KV * hd, V = c->vocab_size, p0 = s->pos;
    for (int i = 0; i < n; i++) tl_wmat_row_f32(&m->embed, ids[i], s->x + (size_t)i * D);
    for (int l = 0; l < c->n_layers; l++) {
        const tl_infer_layer *w = &m->layers[l];
        float *kc = s->k_cache + (size_t)l * s->max_ctx * KD, *vc = s->v_cache + (size_t)l * s->max_ctx * KD;
        tl_rmsnorm_forward(s->h, NULL, s->x, w->attn_norm, n, D, c->norm_eps);
        const tl_wmat *qkv[3] = {&w->wq, &w->wk, &w->wv};
        float *qkv_out[3] = {s->q, s->k, s->v};
        linear_multi(s, qkv, qkv_out, 3, s->h, n, rowwise);
        tl_wmat_unpermute_out(&w->wq, s->q, n); /* GGUF q/k rows: back to HF order */
        tl_wmat_unpermute_out(&w->wk, s->k, n);
        tl_rope_forward(s->q, m->rope_cos, m->rope_sin, n, n, p0, H, hd);
        tl_rope_forward(s->k, m->rope_cos, m->rope_sin, n, n, p0, KV, hd);
        memcpy(kc + (size_t)p0 * KD, s->k, sizeof(float) * (size_t)n * KD);
        memcpy(vc + (size_t)p0 * KD, s->v, sizeof(float) * (size_t)n * KD);
        if (rowwise) {
            for (int i = 0; i < n; i++)
                tl_attention_forward_cached(s->ao + (size_t)i * H * hd, s->scores, s->q + (size_t)i * H * hd, kc, vc,
                                            p0 + i, 1, H, KV, hd, s->n_scores);
        } else if (!amx_attention_applies(s, &w->wq, n) ||
                   tl_attention_forward_cached_amx(s->ao, s->attn_amx, s->max_ctx, s->q, kc, vc, p0, n, H, KV, hd,
                                                   s->n_scores)) {
            tl_attention_forward_cached(s->ao, s->scores, s->q, kc, vc, p0, n, H, KV, hd, s->n_scores);
        }
        linear(s, &w->wo, s->ao, n, s->x, 1, rowwise);
        tl_rmsnorm_forward(s->h, NULL, s->x, w->mlp_norm, n, D, c->norm_eps);
        if (rowwise || !amx_mlp(s, w, n)) {
            const tl_wmat *gu[2] = {&w->w_gate, &w->w_up};
            float *gu_out[2] = {s->g, s->u};
            linear_multi(s, gu, gu_out, 2, s->h, n, rowwise);
            tl_swiglu_forward(s->g, s->g, s->u, (size_t)n * F);
            linear(s, &w->w_down, s->g, n, s->x, 1, rowwise);
        }
    }
    tl_rmsnorm_forward(s->h, NULL, s->x, m->final_norm, n, D, c->norm_eps);
    if (all_logits) {
        linear(s, &m->lm_head, s->h, n, all_logits, 0, rowwise);
        memcpy(s->logits, all_logits + (size_t)(n - 1) * V, sizeof(float) * (size_t)V);
    } else {
        tl_wmat_matvec(m->kernel, &m->lm_head, s->h + (size_t)(n - 1) * D, s->logits);
    }
    s->pos += n;
}

static int forward(tl_infer_state *s, const int *ids, int n, float *all_logits, int rowwise, tl_error *err) {
    const tl_config *c = &s->m->cfg;
    if (n <= 0) return tl_fail(err, "no tokens to process");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return tl_fail(err, "token id %d at position %d is outside the vocabulary [0, %d)", ids[i], i,
                           c->vocab_size);
    if (n > s->max_ctx - s->pos)
        return tl_fail(err, "context full: %d cached + %d new tokens exceed the %d-token context", s->pos, n,
                       s->max_ctx);
    for (int done = 0; done < n; done += s->chunk) {
        int k = n - done < s->chunk ? n - done : s->chunk;
        forward_chunk(s, ids + done, k, all_logits ? all_logits + (size_t)done * c->vocab_size : NULL, rowwise);
    }
    return 0;
}

int tl_infer_forward(tl_infer_state *s, const int *ids, int n, float *all_logits, tl_error *err) {
    return forward(s, ids, n, all_logits, 0, err);
}

int tl_infer_decode_rows(tl_infer_state *s, const int *ids, int n, float *all_logits, tl_error *err) {
    return forward(s, ids, n, all_logits, 1, err);
}

/* log softmax(row)[target] in double */
static double log_prob(const float *row, int V, int target) {
    float mx = row[0];
    for (int i = 1; i < V; i++)
        if (row[i] > mx) mx = row[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((double)row[i] - mx);
    return (double)row[target] - mx - log(sum);
}

int tl_infer_nll(tl_infer_state *s, const int *ids, size_t n, int window, int stride, double *nll, long *count,
                 tl_error *err) {
    const int V = s->m->cfg.vocab_size;
    if (window < 2 || window > s->max_ctx)
        return tl_fail(err, "perplexity window %d must be in [2, %d] (the context)", window, s->max_ctx);
    if (stride < 1 || stride > window) return tl_fail(err, "stride %d must be in [1, window %d]", stride, window);
    if (n < 2) return 0;
    float *lg = tl_alloc(sizeof(float) * (size_t)s->chunk * (size_t)V);
    if (!lg) return tl_fail(err, "out of memory");
    size_t begin = 0, prev_end = 0;
    int rc = 0;
    for (;;) {
        size_t end = begin + (size_t)window < n ? begin + (size_t)window : n;
        size_t first = prev_end > begin + 1 ? prev_end : begin + 1; /* first target scored */
        tl_infer_truncate(s, 0);
        for (size_t p = begin; p < end - 1 && !rc; p += (size_t)s->chunk) {
            /* positions p..p+k-1 predict targets p+1..p+k */
            int k = (int)(end - 1 - p < (size_t)s->chunk ? end - 1 - p : (size_t)s->chunk);
            if (p + (size_t)k < first) { /* nothing scored here: just fill the cache */
                rc = tl_infer_forward(s, ids + p, k, NULL, err);
                continue;
            }
            rc = tl_infer_forward(s, ids + p, k, lg, err);
            for (int i = 0; i < k && !rc; i++) {
                size_t tgt = p + (size_t)i + 1;
                if (tgt < first) continue;
                *nll -= log_prob(lg + (size_t)i * V, V, ids[tgt]);
                (*count)++;
            }
        }
        if (rc || end == n) break;
        prev_end = end;
        begin += (size_t)stride;
    }
    tl_free(lg);
    return rc;
}

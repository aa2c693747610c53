/* gguf_write.c - GGUF v3 files: a generic writer, and a Llama model written as
 * llama.cpp's convert_hf_to_gguf.py + llama-quantize write it.
 *
 * Layout (docs/formats.md): "GGUF", version, tensor and key counts, the
 * key/value pairs, the tensor table (name, dims, type, offset into the data
 * section), padding to the alignment, then each tensor's data at an offset that
 * is a multiple of the alignment.  Metadata and the tensor table are built in
 * memory; the tensors are produced one at a time by a callback, so a file never
 * needs more than one tensor's bytes besides the model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "gguf.h"
#include "hf_tokenizer_files.h"
#include "gguf_write.h"
#include "quant.h"
#include "quantize.h"
#include "tokenizer_internal.h"

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

struct tl_gguf_writer {
    uint32_t align;
    buf kv, ti;
    uint64_t n_kv;
    uint64_t *t_bytes; /* per tensor */
    int n_t, cap_t;
    uint64_t data_len; /* padded */
    int oom;
};

static void put(tl_gguf_writer *w, buf *b, const void *src, size_t n) {
    if (w->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* the format is little-endian, as is every machine this builds for */
static void put_u32(tl_gguf_writer *w, buf *b, uint32_t v) { put(w, b, &v, 4); }
static void put_u64(tl_gguf_writer *w, buf *b, uint64_t v) { put(w, b, &v, 8); }
static void put_str(tl_gguf_writer *w, buf *b, const char *s, size_t len) {
    put_u64(w, b, len);
    put(w, b, s, len);
}

static void key(tl_gguf_writer *w, const char *k, uint32_t type) {
    put_str(w, &w->kv, k, strlen(k));
    put_u32(w, &w->kv, type);
    w->n_kv++;
}

tl_gguf_writer *tl_gguf_writer_new(uint32_t alignment) {
    if (!alignment || (alignment & (alignment - 1))) return NULL;
    tl_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->align = alignment;
    tl_gguf_w_u32(w, "general.alignment", alignment);
    return w;
}

void tl_gguf_writer_free(tl_gguf_writer *w) {
    if (!w) return;
    free(w->kv.p);
    free(w->ti.p);
    free(w->t_bytes);
    free(w);
}

void tl_gguf_w_u32(tl_gguf_writer *w, const char *k, uint32_t v) {
    key(w, k, TL_GGUF_UINT32);
    put_u32(w, &w->kv, v);
}
void tl_gguf_w_i32(tl_gguf_writer *w, const char *k, int32_t v) {
    key(w, k, TL_GGUF_INT32);
    put(w, &w->kv, &v, 4);
}
void tl_gguf_w_f32(tl_gguf_writer *w, const char *k, float v) {
    key(w, k, TL_GGUF_FLOAT32);
    put(w, &w->kv, &v, 4);
}
void tl_gguf_w_bool(tl_gguf_writer *w, const char *k, int v) {
    uint8_t b = v ? 1 : 0;
    key(w, k, TL_GGUF_BOOL);
    put(w, &w->kv, &b, 1);
}
void tl_gguf_w_str(tl_gguf_writer *w, const char *k, const char *s, size_t len) {
    key(w, k, TL_GGUF_STRING);
    put_str(w, &w->kv, s, len);
}
static void arr_head(tl_gguf_writer *w, const char *k, uint32_t type, size_t n) {
    key(w, k, TL_GGUF_ARRAY);
    put_u32(w, &w->kv, type);
    put_u64(w, &w->kv, n);
}
void tl_gguf_w_arr_str(tl_gguf_writer *w, const char *k, const char *const *s, const size_t *len, size_t n) {
    arr_head(w, k, TL_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) put_str(w, &w->kv, s[i], len ? len[i] : strlen(s[i]));
}
void tl_gguf_w_arr_f32(tl_gguf_writer *w, const char *k, const float *v, size_t n) {
    arr_head(w, k, TL_GGUF_FLOAT32, n);
    put(w, &w->kv, v, 4 * n);
}
void tl_gguf_w_arr_i32(tl_gguf_writer *w, const char *k, const int32_t *v, size_t n) {
    arr_head(w, k, TL_GGUF_INT32, n);
    put(w, &w->kv, v, 4 * n);
}

static uint64_t pad_to(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

int tl_gguf_w_tensor(tl_gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                     tl_error *err) {
    uint32_t be, bb;
    if (n_dims < 1 || n_dims > 4) return tl_fail(err, "tensor '%s': %d dimensions (1 to 4 allowed)", name, n_dims);
    if (!tl_ggml_type_block(type, &be, &bb)) return tl_fail(err, "tensor '%s': unknown type %u", name, type);
    if (ne[0] % be) return tl_fail(err, "tensor '%s': row length %llu is not a multiple of %s's block of %u", name,
                                   (unsigned long long)ne[0], tl_ggml_type_name(type), be);
    uint64_t n = ne[0] / be * bb;
    for (int d = 1; d < n_dims; d++) n *= ne[d];
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 64;
        uint64_t *p = realloc(w->t_bytes, sizeof *p * (size_t)cap);
        if (!p) return tl_fail(err, "out of memory");
        w->t_bytes = p;
        w->cap_t = cap;
    }
    put_str(w, &w->ti, name, strlen(name));
    put_u32(w, &w->ti, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) put_u64(w, &w->ti, ne[d]);
    put_u32(w, &w->ti, type);
    put_u64(w, &w->ti, w->data_len);
    w->t_bytes[w->n_t] = n;
    w->data_len += pad_to(n, w->align);
    return w->n_t++;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path, tl_error *err) {
    if (n && fwrite(p, 1, n, f) != n) return tl_fail(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_pad(FILE *f, uint64_t n, const char *path, tl_error *err) {
    static const uint8_t zeros[64];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (write_all(f, zeros, k, path, err)) return -1;
        n -= k;
    }
    return 0;
}

int tl_gguf_writer_write(tl_gguf_writer *w, const char *path, tl_gguf_fill_fn fill, void *ctx, tl_error *err) {
    if (w->oom) return tl_fail(err, "%s: out of memory building the metadata", path);
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return tl_fail(err, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return tl_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    uint8_t *data = NULL;
    int rc = -1;
    uint32_t head[2] = {0x46554747u /* "GGUF" */, 3};
    uint64_t counts[2] = {(uint64_t)w->n_t, w->n_kv};
    uint64_t off = 8 + 16 + w->kv.len + w->ti.len;
    if (write_all(f, head, 8, tmp, err) || write_all(f, counts, 16, tmp, err) ||
        write_all(f, w->kv.p, w->kv.len, tmp, err) || write_all(f, w->ti.p, w->ti.len, tmp, err) ||
        write_pad(f, pad_to(off, w->align) - off, tmp, err))
        goto done;
    for (int i = 0; i < w->n_t; i++) {
        size_t n = (size_t)w->t_bytes[i];
        uint8_t *p = realloc(data, n ? n : 1);
        if (!p) {
            tl_fail(err, "%s: out of memory (%zu bytes for tensor %d)", path, n, i);
            goto done;
        }
        data = p;
        if (fill(ctx, i, data, err) || write_all(f, data, n, tmp, err) ||
            write_pad(f, pad_to(n, w->align) - n, tmp, err))
            goto done;
    }
    if (fflush(f) || fsync(fileno(f))) {
        tl_fail(err, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(data);
    if (fclose(f) && !rc) rc = tl_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path)) rc = tl_fail(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return -1;
    }
    /* make the rename durable: fsync the directory holding path */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    return tl_fsync_dir(dir, err);
}

/* ---------------------------------------------------------------- Llama */

/* llama_ftype numbers from llama.h */
static const tl_gguf_ftype ftypes[] = {
    {"F32", 0, TL_GGML_F32, 0},      {"F16", 1, TL_GGML_F16, 0},        {"BF16", 32, TL_GGML_BF16, 0},
    {"Q8_0", 7, TL_GGML_Q8_0, 0},    {"Q4_0", 2, TL_GGML_Q4_0, 0},      {"Q4_1", 3, TL_GGML_Q4_1, 0},
    {"Q5_0", 8, TL_GGML_Q5_0, 0},    {"Q5_1", 9, TL_GGML_Q5_1, 0},      {"Q4_K_M", 15, TL_GGML_Q4_K, 1},
    {"Q5_K_M", 17, TL_GGML_Q5_K, 1}, {"Q6_K", 18, TL_GGML_Q6_K, 0},
};

const tl_gguf_ftype *tl_gguf_ftype_find(const char *name) {
    for (size_t i = 0; i < sizeof ftypes / sizeof ftypes[0]; i++)
        if (!strcasecmp(name, ftypes[i].name)) return &ftypes[i];
    return NULL;
}

const char *tl_gguf_ftype_names(void) { return "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_M Q5_K_M Q6_K"; }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every
 * third one between them */
static int more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static uint32_t block_of(uint32_t type) {
    uint32_t be = 1, bb;
    tl_ggml_type_block(type, &be, &bb);
    return be;
}

uint32_t tl_gguf_llama_tensor_type(const tl_gguf_ftype *ft, const char *name, int n_dims, uint64_t ne0,
                                   int n_layers, int tied, int *fallback) {
    *fallback = 0;
    /* norms and other vectors stay F32, as do all tensors of an F32 file */
    if (n_dims < 2 || ends_with(name, "_norm.weight") || !ends_with(name, "weight")) return TL_GGML_F32;
    uint32_t t = ft->base;
    if (t == TL_GGML_F32 || t == TL_GGML_F16 || t == TL_GGML_BF16) return t; /* not quantized: no mix */
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) {
        /* the output projection gets 6 bits unless the file is 8-bit */
        if (ne0 % block_of(t)) t = TL_GGML_Q8_0;
        else if (t != TL_GGML_Q8_0) t = TL_GGML_Q6_K;
    } else if (ft->mix && !strncmp(name, "blk.", 4)) {
        int layer = atoi(name + 4);
        if ((ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight")) && more_bits(layer, n_layers))
            t = TL_GGML_Q6_K;
    }
    if (ne0 % block_of(t)) { /* rows that do not divide into super-blocks: a 32-block type */
        *fallback = 1;
        if (t == TL_GGML_Q4_K) t = TL_GGML_Q5_0;
        else if (t == TL_GGML_Q5_K) t = TL_GGML_Q5_1;
        else if (t == TL_GGML_Q6_K) t = TL_GGML_Q8_0;
        if (ne0 % block_of(t)) t = TL_GGML_F16;
    }
    return t;
}

typedef struct {
    const tl_model *m;
    const tl_gguf_llama_opts *o;
    const tl_tensor_info **src; /* per GGUF tensor */
    uint32_t *type;
    int *heads;                 /* q/k: rows to permute with this many heads; else 0 */
    size_t done;
} llama_ctx;

static int fill_llama(void *vctx, int i, uint8_t *dst, tl_error *err) {
    llama_ctx *c = vctx;
    const tl_tensor_info *ti = c->src[i];
    const float *x = c->m->params + ti->offset;
    size_t rows = ti->ndim == 2 ? (size_t)ti->shape[0] : 1, cols = (size_t)ti->shape[ti->ndim - 1];
    float *perm = NULL;
    if (c->heads[i]) {
        perm = malloc(sizeof(float) * ti->numel);
        if (!perm) return tl_fail(err, "out of memory permuting %s", ti->name);
        tl_gguf_llama_permute(x, perm, (int)rows, (int)cols, c->heads[i]);
        x = perm;
    }
    size_t rb = tl_quantize_row_bytes(c->type[i], cols);
    uint32_t type = c->type[i];
    long nrows = (long)rows;
#pragma omp parallel for schedule(dynamic, 16)
    for (long r = 0; r < nrows; r++) tl_quantize_row(type, x + (size_t)r * cols, dst + (size_t)r * rb, cols);
    free(perm);
    c->done += ti->numel;
    if (c->o->progress) c->o->progress(c->o->progress_ctx, c->done, c->m->n_params);
    return 0;
}

/* tokenizer.* keys: the SentencePiece vocabulary as llama.cpp's converter copies
 * it, padded with [PADn] pieces to the model's vocabulary as the converter pads. */
static int write_tokenizer(tl_gguf_writer *w, const tl_gguf_llama_opts *o, int vocab, tl_error *err) {
    const tl_tokenizer *tk = o->tok;
    if (tk->is_json)
        return tl_fail(err, "the tokenizer is an HF tokenizer.json; GGUF's 'llama' tokenizer is written from a "
                       "SentencePiece tokenizer.model");
    if (tk->n > vocab)
        return tl_fail(err, "the tokenizer has %d pieces, more than the model's vocabulary of %d", tk->n, vocab);
    const char **s = malloc(sizeof *s * (size_t)vocab);
    size_t *len = malloc(sizeof *len * (size_t)vocab);
    float *score = malloc(sizeof *score * (size_t)vocab);
    int32_t *type = malloc(sizeof *type * (size_t)vocab);
    char *pads = malloc(16 * (size_t)(vocab - tk->n) + 1);
    int rc = -1;
    if (!s || !len || !score || !type || !pads) {
        tl_fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < vocab; i++) {
        if (i < tk->n) {
            s[i] = tk->pieces[i].str;
            len[i] = tk->pieces[i].len;
            score[i] = tk->pieces[i].score;
            type[i] = tk->pieces[i].type;
        } else {
            char *p = pads + 16 * (size_t)(i - tk->n);
            len[i] = (size_t)snprintf(p, 16, "[PAD%d]", i - tk->n + 1);
            s[i] = p;
            score[i] = -1000.0f;
            type[i] = TL_PIECE_UNUSED;
        }
    }
    tl_gguf_w_str(w, "tokenizer.ggml.model", "llama", 5);
    tl_gguf_w_str(w, "tokenizer.ggml.pre", "default", 7);
    tl_gguf_w_arr_str(w, "tokenizer.ggml.tokens", s, len, (size_t)vocab);
    tl_gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, (size_t)vocab);
    tl_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (size_t)vocab);
    if (tk->bos_id >= 0) tl_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tk->bos_id);
    if (tk->eos_id >= 0) tl_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tk->eos_id);
    if (tk->unk_id >= 0) tl_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)tk->unk_id);
    if (tk->pad_id >= 0) tl_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)tk->pad_id);
    tl_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", o->add_bos);
    tl_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", o->add_eos);
    tl_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", tk->add_dummy_prefix);
    if (tk->remove_extra_ws) tl_gguf_w_bool(w, "tokenizer.ggml.remove_extra_whitespaces", 1);
    if (o->chat_template) tl_gguf_w_str(w, "tokenizer.chat_template", o->chat_template, strlen(o->chat_template));
    rc = 0;
done:
    free(s);
    free(len);
    free(score);
    free(type);
    free(pads);
    return rc;
}

int tl_gguf_write_llama(const char *path, const tl_model *m, const tl_gguf_ftype *ft, tl_gguf_llama_opts *o,
                        tl_error *err) {
    const tl_config *cfg = &m->cfg;
    tl_gguf_writer *w = tl_gguf_writer_new(32);
    llama_ctx c = {.m = m, .o = o};
    c.src = calloc((size_t)m->n_tensors, sizeof *c.src);
    c.type = calloc((size_t)m->n_tensors, sizeof *c.type);
    c.heads = calloc((size_t)m->n_tensors, sizeof *c.heads);
    int rc = -1;
    if (!w || !c.src || !c.type || !c.heads) {
        tl_fail(err, "out of memory");
        goto done;
    }
    const char *name = o->name ? o->name : "tinyllama";
    tl_gguf_w_str(w, "general.architecture", "llama", 5);
    tl_gguf_w_str(w, "general.type", "model", 5);
    tl_gguf_w_str(w, "general.name", name, strlen(name));
    tl_gguf_w_u32(w, "general.file_type", ft->ftype);
    tl_gguf_w_u32(w, "general.quantization_version", 2);
    tl_gguf_w_u32(w, "llama.vocab_size", (uint32_t)cfg->vocab_size);
    tl_gguf_w_u32(w, "llama.context_length", (uint32_t)cfg->max_seq_len);
    tl_gguf_w_u32(w, "llama.embedding_length", (uint32_t)cfg->dim);
    tl_gguf_w_u32(w, "llama.block_count", (uint32_t)cfg->n_layers);
    tl_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)cfg->hidden_dim);
    tl_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)tl_config_head_dim(cfg));
    tl_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)cfg->n_heads);
    tl_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)cfg->n_kv_heads);
    tl_gguf_w_f32(w, "llama.rope.freq_base", cfg->rope_theta);
    tl_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", cfg->norm_eps);
    if (o->tok && write_tokenizer(w, o, cfg->vocab_size, err)) goto done;
    for (int i = 0; i < m->n_tensors; i++) {
        const tl_tensor_info *ti = &m->tensors[i];
        char gname[128];
        if (tl_gguf_llama_gguf_name(ti->name, gname, sizeof gname)) {
            tl_fail(err, "tensor %s has no GGUF Llama name", ti->name);
            goto done;
        }
        uint64_t ne[2] = {(uint64_t)ti->shape[ti->ndim - 1], ti->ndim == 2 ? (uint64_t)ti->shape[0] : 1};
        int fb;
        uint32_t type = tl_gguf_llama_tensor_type(ft, gname, ti->ndim, ne[0], cfg->n_layers, cfg->tied, &fb);
        o->fallbacks += fb;
        int k = tl_gguf_w_tensor(w, gname, type, ti->ndim, ne, err);
        if (k < 0) goto done;
        c.src[k] = ti;
        c.type[k] = type;
        if (ends_with(gname, ".attn_q.weight")) c.heads[k] = cfg->n_heads;
        else if (ends_with(gname, ".attn_k.weight")) c.heads[k] = cfg->n_kv_heads;
    }
    rc = tl_gguf_writer_write(w, path, fill_llama, &c, err);
done:
    tl_gguf_writer_free(w);
    free(c.src);
    free(c.type);
    free(c.heads);
    return rc;
}

static int hf_source(const char *dir, tl_model *m, tl_tokenizer **tok, tl_gguf_llama_opts *o, char **tpl,
                     tl_error *err) {
    char p[4200];
    struct stat sb;
    if (tl_model_load_hf(dir, m, err)) return -1;
    if ((size_t)snprintf(p, sizeof p, "%s/tokenizer.model", dir) >= sizeof p) return tl_fail(err, "%s: path too long", dir);
    if (stat(p, &sb) == 0) {
        if (!(*tok = tl_tokenizer_load(p, err))) return -1;
    } else {
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        if (stat(p, &sb) == 0)
            return tl_fail(err, "%s has tokenizer.json but no tokenizer.model: GGUF's 'llama' tokenizer is written "
                           "from a SentencePiece tokenizer.model", dir);
        return 0; /* no tokenizer: the weights alone */
    }
    o->add_bos = tl_tokenizer_bos_id(*tok) >= 0;
    o->add_eos = 0;
    return tl_hf_tokenizer_config_read(dir, tpl, &o->add_bos, &o->add_eos, err);
}

static int gguf_source(const char *path, tl_model *m, tl_tokenizer **tok, tl_gguf_llama_opts *o, char **tpl,
                       char **name, tl_error *err) {
    tl_gguf *g = tl_gguf_open(path, err);
    if (!g) return -1;
    int rc = -1;
    if (tl_gguf_llama_load_model(g, m, err)) goto done;
    tl_gguf_str s;
    if (tl_gguf_get_str(g, "general.name", &s, err) == 1 && (*name = malloc(s.len + 1))) {
        memcpy(*name, s.ptr, s.len);
        (*name)[s.len] = 0;
    }
    if (tl_gguf_find_kv(g, "tokenizer.ggml.model")) {
        tl_gguf_tokenizer_info info;
        if (!(*tok = tl_tokenizer_from_gguf(g, &info, err))) goto done;
        o->add_bos = info.add_bos;
        o->add_eos = info.add_eos;
        if (info.chat_template.ptr) {
            if (!(*tpl = malloc(info.chat_template.len + 1))) {
                tl_fail(err, "out of memory");
                goto done;
            }
            memcpy(*tpl, info.chat_template.ptr, info.chat_template.len);
            (*tpl)[info.chat_template.len] = 0;
        }
    }
    rc = 0;
done:
    tl_gguf_close(g);
    return rc;
}

int tl_gguf_convert(const char *in, const char *out, const tl_gguf_ftype *ft, tl_gguf_llama_opts *o,
                    int *has_tokenizer, tl_error *err) {
    struct stat sb;
    if (stat(in, &sb)) return tl_fail(err, "%s: %s", in, strerror(errno));
    tl_model m;
    memset(&m, 0, sizeof m);
    tl_tokenizer *tok = NULL;
    char *tpl = NULL, *name = NULL;
    int rc = S_ISDIR(sb.st_mode) ? hf_source(in, &m, &tok, o, &tpl, err)
                                 : gguf_source(in, &m, &tok, o, &tpl, &name, err);
    if (!rc) {
        o->tok = tok;
        o->chat_template = tpl;
        if (!o->name) o->name = name;
        *has_tokenizer = tok != NULL;
        rc = tl_gguf_write_llama(out, &m, ft, o, err);
        if (o->name == name) o->name = NULL;
        o->tok = NULL;
        o->chat_template = NULL;
    }
    if (m.params) tl_model_free(&m);
    tl_tokenizer_free(tok);
    free(tpl);
    free(name);
    return rc;
}

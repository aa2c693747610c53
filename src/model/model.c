/* model.c - Llama forward and backward on the CPU, reading like the paper:
 *
 *   x0 = embed[tokens]
 *   per layer:  h = RMSNorm(x) ; x = x + Wo · Attention(RoPE(Wq h), RoPE(Wk h), Wv h)
 *               h = RMSNorm(x) ; x = x + Wdown · (silu(Wgate h) * (Wup h))
 *   logits = lm_head · RMSNorm(x) ; loss = mean cross-entropy(next token)
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "attention_bf16.h"
#include "gemm.h"
#include "ops.h"
#include "ops_bf16.h"
#include "output.h"
#include "rng.h"
#include "vec.h"

/* ---------------------------------------------------------------- parameters */

static void add_tensor(tl_tensor_info *t, int *n, size_t *off, const char *name, int rows, int cols,
                       int init_kind) {
    tl_tensor_info *ti = &t[(*n)++];
    snprintf(ti->name, sizeof ti->name, "%s", name);
    ti->ndim = cols ? 2 : 1;
    ti->shape[0] = rows;
    ti->shape[1] = cols;
    ti->numel = (size_t)rows * (size_t)(cols ? cols : 1);
    ti->offset = *off;
    ti->init_kind = init_kind;
    *off += ti->numel;
}

int tl_model_create(tl_model *m, const tl_config *cfg, tl_error *err) {
    memset(m, 0, sizeof *m);
    if (tl_config_validate(cfg, err)) return -1;
    m->cfg = *cfg;
    const int D = cfg->dim, F = cfg->hidden_dim, L = cfg->n_layers, hd = tl_config_head_dim(cfg);
    const int QD = cfg->n_heads * hd, KD = cfg->n_kv_heads * hd;
    m->tensors = calloc((size_t)L * 9 + 3, sizeof *m->tensors);
    m->w.layers = calloc((size_t)L, sizeof *m->w.layers);
    if (!m->tensors || !m->w.layers) goto oom;
    size_t off = 0;
    int n = 0;
    char name[96];
    add_tensor(m->tensors, &n, &off, "model.embed_tokens.weight", cfg->vocab_size, D, 1);
    for (int l = 0; l < L; l++) {
#define T_(suffix, rows, cols, kind)                                            \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);               \
    add_tensor(m->tensors, &n, &off, name, rows, cols, kind)
        T_("input_layernorm.weight", D, 0, 0);
        T_("self_attn.q_proj.weight", QD, D, 1);
        T_("self_attn.k_proj.weight", KD, D, 1);
        T_("self_attn.v_proj.weight", KD, D, 1);
        T_("self_attn.o_proj.weight", D, QD, 2);
        T_("post_attention_layernorm.weight", D, 0, 0);
        T_("mlp.gate_proj.weight", F, D, 1);
        T_("mlp.up_proj.weight", F, D, 1);
        T_("mlp.down_proj.weight", D, F, 2);
#undef T_
    }
    add_tensor(m->tensors, &n, &off, "model.norm.weight", D, 0, 0);
    if (!cfg->tied) add_tensor(m->tensors, &n, &off, "lm_head.weight", cfg->vocab_size, D, 1);
    m->n_tensors = n;
    m->n_params = off;
    size_t bytes;
    if (tl_mul_size(off, sizeof(float), &bytes)) goto oom;
    m->params = tl_alloc(bytes);
    m->rope_cos = tl_alloc(sizeof(float) * (size_t)cfg->max_seq_len * (size_t)(hd / 2));
    m->rope_sin = tl_alloc(sizeof(float) * (size_t)cfg->max_seq_len * (size_t)(hd / 2));
    if (!m->params || !m->rope_cos || !m->rope_sin) goto oom;
    tl_weights_view(m, m->params, &m->w, m->w.layers);
    tl_rope_tables(m->rope_cos, m->rope_sin, cfg->max_seq_len, hd, cfg->rope_theta);
    return 0;
oom:
    tl_model_free(m);
    return tl_fail(err, "out of memory allocating a model of %zu parameters", tl_config_num_params(cfg));
}

void tl_model_free(tl_model *m) {
    free(m->tensors);
    free(m->w.layers);
    tl_free(m->params);
    tl_free(m->rope_cos);
    tl_free(m->rope_sin);
    memset(m, 0, sizeof *m);
}

/* Points w's tensors of parameter unit `unit` at s + (tensor offset - origin): the
 * whole block with origin 0, or a buffer holding only the unit with origin = the
 * unit's first element.  The tied lm_head is the embedding: unit 0 must be viewed
 * first. */
static void view_unit(const tl_model *m, int unit, float *s, size_t origin, tl_weights *w) {
    const tl_tensor_info *t = m->tensors;
    const int L = m->cfg.n_layers;
    if (unit == 0) {
        w->embed = s + (t[0].offset - origin);
    } else if (unit <= L) {
        const tl_tensor_info *lt = t + 1 + 9 * (unit - 1);
        tl_layer_weights *lw = &w->layers[unit - 1];
        float **f[9] = {&lw->attn_norm, &lw->wq, &lw->wk, &lw->wv, &lw->wo,
                        &lw->mlp_norm, &lw->w_gate, &lw->w_up, &lw->w_down};
        for (int i = 0; i < 9; i++) *f[i] = s + (lt[i].offset - origin);
    } else {
        w->final_norm = s + (t[1 + 9 * L].offset - origin);
        w->lm_head = m->cfg.tied ? w->embed : s + (t[1 + 9 * L + 1].offset - origin);
    }
}

void tl_weights_view(const tl_model *m, float *base, tl_weights *w, tl_layer_weights *layers) {
    w->layers = layers;
    for (int u = 0; u <= m->cfg.n_layers + 1; u++) view_unit(m, u, base, 0, w);
}

void tl_model_unit_range(const tl_model *m, int unit, size_t *lo, size_t *hi) {
    const tl_tensor_info *t = m->tensors;
    const int L = m->cfg.n_layers;
    if (unit <= 0) {
        *lo = 0;
        *hi = t[1].offset;
    } else if (unit <= L) {
        *lo = t[1 + 9 * (unit - 1)].offset;
        *hi = t[1 + 9 * (unit - 1) + 8].offset + t[1 + 9 * (unit - 1) + 8].numel;
    } else {
        *lo = t[1 + 9 * L].offset;
        *hi = m->n_params;
    }
}

/* The sharded-parameter hook (see model.h): HOOK(unit, event) or fail the pass. */
static int params_event(const tl_model *m, int unit, tl_params_event ev, tl_error *err) {
    if (!m->params_hook) return 0;
    if (m->params_hook(m->params_hook_user, unit, ev, err)) return -1;
    if (m->cfg.tied && unit == m->cfg.n_layers + 1) return m->params_hook(m->params_hook_user, 0, ev, err);
    return 0;
}

const tl_tensor_info *tl_model_find_tensor(const tl_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

void tl_model_init_weights(tl_model *m, uint64_t seed) {
    const double D = m->cfg.dim;
    const double std_init = sqrt(2.0 / (5.0 * D));
    const double std_out = 1.0 / sqrt(D) / m->cfg.n_layers;
    for (int i = 0; i < m->n_tensors; i++) {
        const tl_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->init_kind == 0) {
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
            continue;
        }
        tl_rng r;
        tl_rng_seed(&r, seed * 0x100000001b3ULL + (uint64_t)i);
        double std = t->init_kind == 1 ? std_init : std_out;
        for (size_t j = 0; j < t->numel; j++) p[j] = (float)(std * tl_rng_normal(&r));
    }
}

/* --------------------------------------------------------------- activations */

/* The weight gradients' products dW += dY^T X read dY token-minor (ops_bf16.h)
 * from this many tokens on: oneDNN's AMX kernels ran the plain operand 20-40%
 * faster than the transposed view over 1,024 and 2,048 tokens, and -10% to +16%
 * over 256 or 512, too little for the copy's cost (docs/benchmarks.md). */
enum { TOKEN_MINOR_MIN = 1024 };

struct tl_acts {
    int B, T, N, chunk;
    int chunk_bf16; /* the output layer's rows per chunk in bf16 (acts_bf16) */
    int token_minor_min; /* tl_acts_bf16_token_minor */
    size_t bytes;
    float *block;
    /* saved for backward, per layer */
    float *x;            /* [L+1][N*D] residual stream entering each layer */
    float *rstd1, *rstd2; /* [L][N] */
    float *h1, *h2;       /* [L][N*D] normalised inputs */
    float *q, *k, *v;     /* [L][N*QD], [L][N*KD] (q, k after RoPE; bf16: before) */
    float *probs;         /* [L][B*H*T*T] */
    float *ao;            /* [L][N*QD] attention output before o_proj */
    float *xmid;          /* [L][N*D] residual after attention */
    float *gate, *up, *act; /* [L][N*F] */
    float *rstdf, *hf;    /* [N], [N*D] */
    /* scratch for one layer's backward */
    float *dx, *dh, *dq, *dk, *dv, *dao, *dact, *dgate, *dup;
    float *logits;   /* [chunk*V] */
    float *row_loss; /* [N] */
    /* bf16 mixed precision only (allocated on first use): the products' inputs rounded */
    uint16_t *xs, *dys;
    uint16_t *dyt; /* the output gradients token-minor, for the weight gradients' products (ops_bf16.h) */
    float *logits_bf16; /* [chunk_bf16*V] */
    void *attn; /* attention's bf16 scratch (attention_bf16.h) */
    /* per layer, the products' inputs rounded once in the forward pass and read
     * again by the backward: h1, h2 [L][N*D], ao [L][N*QD], act [L][N*F] */
    uint16_t *h1b, *h2b, *aob, *actb;
    uint16_t *attn_kept; /* [L][tl_attention_bf16_kept]: attention's rounded operands */
    size_t attn_kept_n;  /* per layer */
    size_t bf16_bytes;
};

tl_acts *tl_acts_create(const tl_config *c, int B, int T, tl_error *err) {
    if (B <= 0 || T <= 0) {
        tl_fail(err, "batch size and sequence length must be positive");
        return NULL;
    }
    if (T > c->max_seq_len) {
        tl_fail(err, "sequence length %d exceeds the model's context of %d", T, c->max_seq_len);
        return NULL;
    }
    tl_acts *a = calloc(1, sizeof *a);
    if (!a) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    const size_t N = (size_t)B * T, D = c->dim, F = c->hidden_dim, L = c->n_layers, V = c->vocab_size;
    const size_t hd = D / c->n_heads, QD = c->n_heads * hd, KD = c->n_kv_heads * hd;
    a->B = B;
    a->T = T;
    a->N = (int)N;
    a->chunk = N < 256 ? (int)N : 256; /* output.h: the fastest chunk measured */
    a->token_minor_min = TOKEN_MINOR_MIN;
    struct {
        float **p;
        size_t n;
    } parts[] = {
        {&a->x, (L + 1) * N * D}, {&a->rstd1, L * N},      {&a->rstd2, L * N},
        {&a->h1, L * N * D},      {&a->h2, L * N * D},     {&a->q, L * N * QD},
        {&a->k, L * N * KD},      {&a->v, L * N * KD},     {&a->probs, L * N * c->n_heads * T},
        {&a->ao, L * N * QD},     {&a->xmid, L * N * D},   {&a->gate, L * N * F},
        {&a->up, L * N * F},      {&a->act, L * N * F},    {&a->rstdf, N},
        {&a->hf, N * D},          {&a->dx, N * D},         {&a->dh, N * D},
        {&a->dq, N * QD},         {&a->dk, N * KD},        {&a->dv, N * KD},
        {&a->dao, N * QD},        {&a->dact, N * F},       {&a->dgate, N * F},
        {&a->dup, N * F},         {&a->logits, (size_t)a->chunk * V}, {&a->row_loss, N},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) total += (parts[i].n + 15) & ~(size_t)15;
    a->bytes = total * sizeof(float);
    a->block = tl_alloc(a->bytes);
    if (!a->block) {
        tl_fail(err, "out of memory allocating %.1f MB of activations (batch %d x seq %d)",
                (double)a->bytes / 1e6, B, T);
        free(a);
        return NULL;
    }
    float *p = a->block;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        *parts[i].p = p;
        p += (parts[i].n + 15) & ~(size_t)15;
    }
    return a;
}

void tl_acts_free(tl_acts *a) {
    if (!a) return;
    tl_free(a->xs);
    tl_free(a->logits_bf16);
    tl_free(a->attn);
    tl_free(a->h1b);
    tl_free(a->block);
    free(a);
}

size_t tl_acts_bytes(const tl_acts *a) { return a->bytes + a->bf16_bytes; }

void tl_acts_bf16_token_minor(tl_acts *a, int min_tokens) { a->token_minor_min = min_tokens; }

/* The output layer's chunk in bf16.  Its weight gradient dW [V, D] is read and
 * written once per chunk by the slices' products (dW += dys^T xs, the chunk's rows
 * their inner dimension): at 256 rows that pass over dW (65 MB fp32 at gqa-40m)
 * came four times per 1,024 tokens and the products ran at K = 256.  1,024 rows cost
 * 128 MB of fp32 logits at V = 32,000 (docs/benchmarks.md). */
enum { OUT_CHUNK_BF16 = 1024 };

/* The bf16 scratch, each part large enough for any product's activation or output
 * gradient (the lm_head's is a chunk of logits). */
static int acts_bf16(tl_acts *a, const tl_config *c, tl_error *err) {
    if (a->xs) return 0;
    const size_t N = (size_t)a->N, QD = (size_t)c->n_heads * (size_t)(c->dim / c->n_heads);
    const size_t V = (size_t)c->vocab_size;
    const int cb = a->N < OUT_CHUNK_BF16 ? a->N : OUT_CHUNK_BF16;
    size_t n = N * (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim);
    if (N * QD > n) n = N * QD;
    if ((size_t)cb * V > n) n = (size_t)cb * V;
    n = (n + 31) & ~(size_t)31;
    /* dys also holds SwiGLU's two rounded gradients, and attention's three */
    const size_t KD = (size_t)c->n_kv_heads * (size_t)(c->dim / c->n_heads);
    size_t ndy = n > 2 * N * (size_t)c->hidden_dim ? n : 2 * N * (size_t)c->hidden_dim;
    if (N * (QD + 2 * KD) > ndy) ndy = N * (QD + 2 * KD);
    ndy = (ndy + 31) & ~(size_t)31; /* dyt on a 64-byte line: tl_transpose_bf16 then streams whole lines */
    /* dyt: the lm_head's chunk or SwiGLU's two gradients, token-minor */
    size_t ndt = (size_t)cb * V > 2 * N * (size_t)c->hidden_dim ? (size_t)cb * V : 2 * N * (size_t)c->hidden_dim;
    if (a->N < a->token_minor_min) ndt = 0;
    if (!(a->xs = tl_alloc((n + ndy + ndt) * sizeof(uint16_t))))
        return tl_fail(err, "out of memory allocating %.1f MB of bf16 activations",
                       2.0 * (double)(n + ndy + ndt) / 1e6);
    a->dys = a->xs + n;
    a->dyt = ndt ? a->dys + ndy : NULL;
    if (!(a->logits_bf16 = tl_alloc((size_t)cb * V * sizeof(float)))) {
        tl_free(a->xs);
        a->xs = NULL;
        return tl_fail(err, "out of memory allocating %.1f MB of bf16-mode logits", 4.0 * (double)cb * (double)V / 1e6);
    }
    a->chunk_bf16 = cb;
    const int H = c->n_heads;
    const size_t attn = tl_attention_bf16_scratch(a->B, a->T, H, c->n_kv_heads, c->dim / H);
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    a->attn_kept_n = tl_attention_bf16_kept(a->B, a->T, H, c->n_kv_heads, c->dim / H);
    const size_t saved = L * N * (2 * D + QD + F) + L * a->attn_kept_n;
    if (!(a->attn = tl_alloc(attn)) || !(a->h1b = tl_alloc(saved * sizeof(uint16_t)))) {
        tl_free(a->xs);
        tl_free(a->logits_bf16);
        tl_free(a->attn);
        a->xs = NULL;
        a->logits_bf16 = NULL;
        a->attn = NULL;
        return tl_fail(err, "out of memory allocating %.1f MB of bf16 attention scratch and activations",
                       (double)(attn + 2 * saved) / 1e6);
    }
    a->h2b = a->h1b + L * N * D;
    a->aob = a->h2b + L * N * D;
    a->actb = a->aob + L * N * QD;
    a->attn_kept = a->actb + L * N * F;
    a->bf16_bytes =
        (n + ndy + ndt) * sizeof(uint16_t) + (size_t)cb * V * sizeof(float) + attn + saved * sizeof(uint16_t);
    return 0;
}

/* The linear layers, in fp32 or (m->params_bf16) bf16 mixed precision; a
 * weight's bf16 copy sits at the same offset as the weight. */
static const uint16_t *bf16_w(const tl_model *m, const float *W) { return m->params_bf16 + (W - m->params); }

static void lin_fwd(const tl_model *m, tl_acts *a, float *y, const float *x, const float *W, int N, int in, int out,
                    int acc) {
    if (m->params_bf16)
        tl_linear_forward_bf16(y, x, bf16_w(m, W), N, in, out, acc, a->xs);
    else
        tl_linear_forward(y, x, W, N, in, out, acc);
}

/* RMSNorm and SwiGLU, in bf16 writing the rounded copy yb instead (ops_bf16.h):
 * the products and the backward read no other, so the fp32 h1, h2, act and ao
 * of a bf16 step are never written. */
static void norm_fwd(const tl_model *m, float *y, uint16_t *yb, float *rstd, const float *x, const float *w, int N,
                     int D) {
    if (m->params_bf16)
        tl_rmsnorm_forward_bf16(NULL, yb, rstd, x, w, N, D, m->cfg.norm_eps);
    else
        tl_rmsnorm_forward(y, rstd, x, w, N, D, m->cfg.norm_eps);
}

static void swiglu_fwd(const tl_model *m, float *h, uint16_t *hb, const float *g, const float *u, size_t n) {
    if (m->params_bf16)
        tl_swiglu_forward_bf16(NULL, hb, g, u, n);
    else
        tl_swiglu_forward(h, g, u, n);
}

/* The blocks' linear layers, given the input's bf16 copy xb as well (bf16: the
 * product reads it, rounded once by its producer; fp32: x). */
static void lin_fwd_x(const tl_model *m, float *y, const float *x, const uint16_t *xb, const float *W, int N, int in,
                      int out, int acc) {
    if (m->params_bf16)
        tl_linear_forward_bf16_rounded(y, xb, bf16_w(m, W), N, in, out, acc);
    else
        tl_linear_forward(y, x, W, N, in, out, acc);
}

static void lin_bwd_x(const tl_model *m, tl_acts *a, float *dx, float *dW, const float *dy, const float *x,
                      const uint16_t *xb, const float *W, int N, int in, int out, int acc) {
    if (m->params_bf16)
        tl_linear_backward_bf16_rounded(dx, dW, dy, xb, bf16_w(m, W), N, in, out, acc, a->dys);
    else
        tl_linear_backward(dx, dW, dy, x, W, N, in, out, acc);
}

/* ------------------------------------------------------------------- forward */

static int check_ids(const int *ids, int n, int V, int allow_ignore, const char *what, tl_error *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= V || ids[i] < (allow_ignore ? -1 : 0))
            return tl_fail(err, "%s id %d at position %d is outside the vocabulary [0, %d)", what,
                           ids[i], i, V);
    return 0;
}

/* Runs the layers and the final norm; leaves hf = RMSNorm(x_L).  With a params
 * hook, the final unit stays acquired for the caller (lm_head, final norm backward). */
static int forward_body(const tl_model *m, tl_acts *a, const int *tokens, tl_error *err) {
    const tl_config *c = &m->cfg;
    const int N = a->N, T = a->T, B = a->B, D = c->dim, F = c->hidden_dim;
    const int H = c->n_heads, KV = c->n_kv_heads, hd = D / H, QD = H * hd, KD = KV * hd;
    if (m->params_bf16 && acts_bf16(a, c, err)) return -1;
    if (params_event(m, 0, TL_PARAMS_ACQUIRE, err)) return -1;
    tl_embedding_forward(a->x, m->w.embed, tokens, N, D);
    if (params_event(m, 0, TL_PARAMS_RELEASE, err)) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        if (params_event(m, l + 1, TL_PARAMS_ACQUIRE, err)) return -1;
        const tl_layer_weights *w = &m->w.layers[l];
        float *x = a->x + (size_t)l * N * D, *xnext = x + (size_t)N * D;
        float *h1 = a->h1 + (size_t)l * N * D, *h2 = a->h2 + (size_t)l * N * D;
        float *q = a->q + (size_t)l * N * QD, *k = a->k + (size_t)l * N * KD, *v = a->v + (size_t)l * N * KD;
        float *ao = a->ao + (size_t)l * N * QD, *xmid = a->xmid + (size_t)l * N * D;
        float *probs = a->probs + (size_t)l * N * H * T;
        float *gate = a->gate + (size_t)l * N * F, *up = a->up + (size_t)l * N * F;
        float *act = a->act + (size_t)l * N * F;
        /* bf16: the same four inputs rounded (NULL in fp32) */
        uint16_t *h1b = a->h1b ? a->h1b + (size_t)l * N * D : NULL, *h2b = a->h2b ? a->h2b + (size_t)l * N * D : NULL;
        uint16_t *aob = a->aob ? a->aob + (size_t)l * N * QD : NULL, *actb = a->actb ? a->actb + (size_t)l * N * F : NULL;

        norm_fwd(m, h1, h1b, a->rstd1 + (size_t)l * N, x, w->attn_norm, N, D);
        lin_fwd_x(m, q, h1, h1b, w->wq, N, D, QD, 0);
        lin_fwd_x(m, k, h1, h1b, w->wk, N, D, KD, 0);
        lin_fwd_x(m, v, h1, h1b, w->wv, N, D, KD, 0);
        if (m->params_bf16) { /* RoPE on q and k's way to bf16: q and k stay unrotated */
            const tl_rope rope = {m->rope_cos, m->rope_sin};
            tl_attention_forward_bf16(NULL, aob, probs, q, k, v, B, T, H, KV, hd, &rope, a->attn,
                                      a->attn_kept + (size_t)l * a->attn_kept_n);
        } else {
            tl_rope_forward(q, m->rope_cos, m->rope_sin, N, T, 0, H, hd);
            tl_rope_forward(k, m->rope_cos, m->rope_sin, N, T, 0, KV, hd);
            tl_attention_forward(ao, probs, q, k, v, B, T, H, KV, hd);
        }
        memcpy(xmid, x, sizeof(float) * (size_t)N * D);
        lin_fwd_x(m, xmid, ao, aob, w->wo, N, QD, D, 1);

        norm_fwd(m, h2, h2b, a->rstd2 + (size_t)l * N, xmid, w->mlp_norm, N, D);
        lin_fwd_x(m, gate, h2, h2b, w->w_gate, N, D, F, 0);
        lin_fwd_x(m, up, h2, h2b, w->w_up, N, D, F, 0);
        swiglu_fwd(m, act, actb, gate, up, (size_t)N * F);
        memcpy(xnext, xmid, sizeof(float) * (size_t)N * D);
        lin_fwd_x(m, xnext, act, actb, w->w_down, N, F, D, 1);
        if (params_event(m, l + 1, TL_PARAMS_RELEASE, err)) return -1;
    }
    if (params_event(m, c->n_layers + 1, TL_PARAMS_ACQUIRE, err)) return -1;
    tl_rmsnorm_forward(a->hf, a->rstdf, a->x + (size_t)c->n_layers * N * D, m->w.final_norm, N, D,
                       c->norm_eps);
    return 0;
}

/* The head's cross-entropy, and with g its gradient (dlm_head, and dL/dhf into
 * a->dh): every row scaled by scale, or, with row_w, row r by row_w[r] (the loss
 * returned is then the weighted sum); output.c, a chunk of rows at a time. */
static double lm_head_loss(const tl_model *m, tl_acts *a, const int *targets, float scale, const float *row_w,
                           tl_weights *g) {
    const int bf = m->params_bf16 != NULL;
    const tl_output o = {.W = m->w.lm_head,
                         .W_bf16 = bf ? bf16_w(m, m->w.lm_head) : NULL,
                         .xs = a->xs,
                         .dys = a->dys,
                         .dyt = a->dyt,
                         .logits = bf ? a->logits_bf16 : a->logits,
                         .D = m->cfg.dim,
                         .V = m->cfg.vocab_size,
                         .chunk = bf ? a->chunk_bf16 : a->chunk};
    return tl_output_loss(&o, a->hf, a->N, targets, scale, row_w, a->row_loss, g ? a->dh : NULL,
                          g ? g->lm_head : NULL);
}

static long count_targets(const int *targets, int N) {
    long c = 0;
    for (int n = 0; n < N; n++) c += targets[n] >= 0;
    return c;
}

int tl_model_loss(const tl_model *m, tl_acts *a, const int *tokens, const int *targets,
                  double *loss_sum, long *count, tl_error *err) {
    if (check_ids(tokens, a->N, m->cfg.vocab_size, 0, "token", err) ||
        check_ids(targets, a->N, m->cfg.vocab_size, 1, "target", err))
        return -1;
    if (forward_body(m, a, tokens, err)) return -1;
    *loss_sum = lm_head_loss(m, a, targets, 0.0f, NULL, NULL);
    *count = count_targets(targets, a->N);
    return params_event(m, m->cfg.n_layers + 1, TL_PARAMS_RELEASE, err);
}

int tl_model_row_losses(const tl_model *m, tl_acts *a, const int *tokens, const int *targets, float *row_loss,
                        tl_error *err) {
    double sum;
    long count;
    if (tl_model_loss(m, a, tokens, targets, &sum, &count, err)) return -1;
    memcpy(row_loss, a->row_loss, sizeof(float) * (size_t)a->N);
    return 0;
}

int tl_model_logits(const tl_model *m, tl_acts *a, const int *tokens, float *out, tl_error *err) {
    if (check_ids(tokens, a->N, m->cfg.vocab_size, 0, "token", err)) return -1;
    if (forward_body(m, a, tokens, err)) return -1;
    lin_fwd(m, a, out, a->hf, m->w.lm_head, a->N, m->cfg.dim, m->cfg.vocab_size, 0);
    return params_event(m, m->cfg.n_layers + 1, TL_PARAMS_RELEASE, err);
}

/* ------------------------------------------------------------------ backward */

/* A unit's gradient storage before its backward: the caller's block, or the grads hook's bucket. */
static int grads_begin(const tl_model *m, float *grads, int unit, tl_weights *g, tl_error *err) {
    size_t lo, hi;
    tl_model_unit_range(m, unit, &lo, &hi);
    float *s = NULL;
    if (!m->grads_hook) s = grads + lo;
    else if (m->grads_hook(m->grads_hook_user, unit, TL_GRADS_BEGIN, &s, err)) return -1;
    view_unit(m, unit, s, lo, g);
    return 0;
}

static int grads_end(const tl_model *m, int unit, const tl_weights *g, tl_error *err) {
    if (!m->grads_hook) return 0;
    const int L = m->cfg.n_layers;
    float *s = unit == 0 ? g->embed : unit <= L ? g->layers[unit - 1].attn_norm : g->final_norm;
    return m->grads_hook(m->grads_hook_user, unit, TL_GRADS_END, &s, err);
}

static int forward_backward(const tl_model *m, tl_acts *a, float *grads, const int *tokens, const int *targets,
                            float grad_scale, const float *row_w, double *loss, tl_error *err);

int tl_model_forward_backward(const tl_model *m, tl_acts *a, float *grads, const int *tokens,
                              const int *targets, float grad_scale, double *loss, tl_error *err) {
    return forward_backward(m, a, grads, tokens, targets, grad_scale, NULL, loss, err);
}

int tl_model_forward_backward_rows(const tl_model *m, tl_acts *a, float *grads, const int *tokens,
                                   const int *targets, const float *row_weight, double *loss, tl_error *err) {
    return forward_backward(m, a, grads, tokens, targets, 0.0f, row_weight, loss, err);
}

static int forward_backward(const tl_model *m, tl_acts *a, float *grads, const int *tokens, const int *targets,
                            float grad_scale, const float *row_w, double *loss, tl_error *err) {
    const tl_config *c = &m->cfg;
    const int N = a->N, T = a->T, B = a->B, D = c->dim, F = c->hidden_dim;
    const int H = c->n_heads, KV = c->n_kv_heads, hd = D / H, QD = H * hd, KD = KV * hd;
    const int L = c->n_layers;
    if (check_ids(tokens, N, c->vocab_size, 0, "token", err) ||
        check_ids(targets, N, c->vocab_size, 1, "target", err))
        return -1;
    long count = count_targets(targets, N);
    if (count == 0) return tl_fail(err, "micro-batch has no targets to predict");
    if (!grads && !m->grads_hook) return tl_fail(err, "no gradient storage");

    tl_layer_weights *glayers = calloc((size_t)L, sizeof *glayers);
    if (!glayers) return tl_fail(err, "out of memory");
    tl_weights g = {.layers = glayers};
    int rc = -1;

    if (forward_body(m, a, tokens, err)) goto out;
    /* the head's gradient (and, tied, the embedding's: lm_head is the embedding) */
    if ((c->tied && grads_begin(m, grads, 0, &g, err)) || grads_begin(m, grads, L + 1, &g, err)) goto out;
    *loss = row_w ? lm_head_loss(m, a, targets, 0.0f, row_w, &g)
                  : lm_head_loss(m, a, targets, grad_scale / (float)count, NULL, &g) / (double)count;

    /* final norm: dx = d x_L */
    memset(a->dx, 0, sizeof(float) * (size_t)N * D);
    tl_rmsnorm_backward(a->dx, g.final_norm, a->dh, a->x + (size_t)L * N * D, m->w.final_norm, a->rstdf, N, D);
    if (params_event(m, L + 1, TL_PARAMS_RELEASE, err) || grads_end(m, L + 1, &g, err)) goto out;

    for (int l = L - 1; l >= 0; l--) {
        if (params_event(m, l + 1, TL_PARAMS_ACQUIRE, err) || grads_begin(m, grads, l + 1, &g, err)) goto out;
        const tl_layer_weights *w = &m->w.layers[l];
        tl_layer_weights *gl = &g.layers[l];
        const float *x = a->x + (size_t)l * N * D;
        const float *h1 = a->h1 + (size_t)l * N * D, *h2 = a->h2 + (size_t)l * N * D;
        const float *q = a->q + (size_t)l * N * QD, *k = a->k + (size_t)l * N * KD;
        const float *v = a->v + (size_t)l * N * KD, *ao = a->ao + (size_t)l * N * QD;
        const float *xmid = a->xmid + (size_t)l * N * D, *probs = a->probs + (size_t)l * N * H * T;
        const float *gate = a->gate + (size_t)l * N * F, *up = a->up + (size_t)l * N * F;
        const float *act = a->act + (size_t)l * N * F;
        const uint16_t *h1b = a->h1b ? a->h1b + (size_t)l * N * D : NULL;
        const uint16_t *h2b = a->h2b ? a->h2b + (size_t)l * N * D : NULL;
        const uint16_t *aob = a->aob ? a->aob + (size_t)l * N * QD : NULL;
        const uint16_t *actb = a->actb ? a->actb + (size_t)l * N * F : NULL;

        /* MLP branch: x_{l+1} = xmid + Wdown (silu(Wgate h2) * Wup h2) */
        lin_bwd_x(m, a, a->dact, gl->w_down, a->dx, act, actb, w->w_down, N, F, D, 0);
        if (m->params_bf16) { /* the two gradients only rounded, as SwiGLU writes them */
            uint16_t *dgb = a->dys, *dub = a->dys + (size_t)N * F, *dgt = a->dyt;
            uint16_t *dut = dgt ? dgt + (size_t)N * F : NULL;
            if (dgt)
                tl_swiglu_backward_bf16_t(dgb, dub, dgt, dut, a->dact, gate, up, N, F);
            else
                tl_swiglu_backward_bf16(NULL, NULL, dgb, dub, a->dact, gate, up, (size_t)N * F);
            tl_linear_backward_bf16_both(a->dh, gl->w_gate, dgb, dgt, h2b, bf16_w(m, w->w_gate), N, D, F, 0);
            tl_linear_backward_bf16_both(a->dh, gl->w_up, dub, dut, h2b, bf16_w(m, w->w_up), N, D, F, 1);
        } else {
            tl_swiglu_backward(a->dgate, a->dup, a->dact, gate, up, (size_t)N * F);
            lin_bwd_x(m, a, a->dh, gl->w_gate, a->dgate, h2, h2b, w->w_gate, N, D, F, 0);
            lin_bwd_x(m, a, a->dh, gl->w_up, a->dup, h2, h2b, w->w_up, N, D, F, 1);
        }
        tl_rmsnorm_backward(a->dx, gl->mlp_norm, a->dh, xmid, w->mlp_norm, a->rstd2 + (size_t)l * N, N, D);

        /* attention branch: xmid = x + Wo attn(h1) */
        lin_bwd_x(m, a, a->dao, gl->wo, a->dx, ao, aob, w->wo, N, QD, D, 0);
        if (m->params_bf16) { /* RoPE's backward and the rounding as the gradients are written: bf16 only */
            const tl_rope rope = {m->rope_cos, m->rope_sin};
            uint16_t *dqb = a->dys, *dkb = dqb + (size_t)N * QD, *dvb = dkb + (size_t)N * KD;
            tl_attention_backward_bf16(NULL, NULL, NULL, a->dao, probs, q, k, v, B, T, H, KV, hd, &rope, a->attn,
                                       a->attn_kept + (size_t)l * a->attn_kept_n, dqb, dkb, dvb);
            tl_linear_backward_bf16_both(a->dh, gl->wq, dqb, NULL, h1b, bf16_w(m, w->wq), N, D, QD, 0);
            tl_linear_backward_bf16_both(a->dh, gl->wk, dkb, NULL, h1b, bf16_w(m, w->wk), N, D, KD, 1);
            tl_linear_backward_bf16_both(a->dh, gl->wv, dvb, NULL, h1b, bf16_w(m, w->wv), N, D, KD, 1);
        } else {
            tl_attention_backward(a->dq, a->dk, a->dv, a->dao, probs, q, k, v, B, T, H, KV, hd);
            tl_rope_backward(a->dq, m->rope_cos, m->rope_sin, N, T, 0, H, hd);
            tl_rope_backward(a->dk, m->rope_cos, m->rope_sin, N, T, 0, KV, hd);
            lin_bwd_x(m, a, a->dh, gl->wq, a->dq, h1, h1b, w->wq, N, D, QD, 0);
            lin_bwd_x(m, a, a->dh, gl->wk, a->dk, h1, h1b, w->wk, N, D, KD, 1);
            lin_bwd_x(m, a, a->dh, gl->wv, a->dv, h1, h1b, w->wv, N, D, KD, 1);
        }
        tl_rmsnorm_backward(a->dx, gl->attn_norm, a->dh, x, w->attn_norm, a->rstd1 + (size_t)l * N, N, D);
        if (params_event(m, l + 1, TL_PARAMS_RELEASE, err) || grads_end(m, l + 1, &g, err)) goto out;
    }
    if (!c->tied && grads_begin(m, grads, 0, &g, err)) goto out;
    tl_embedding_backward(g.embed, a->dx, tokens, N, D);
    rc = grads_end(m, 0, &g, err);
out:
    free(glayers);
    return rc;
}

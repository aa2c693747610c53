// engine.cu - the GPU training engine (cuda_engine.h): one micro-batch's
// forward and backward pass built from the kernels in kernels.cu and
// attention.cu and the cuBLASLt products in gemm.cu, plus the fused optimizer.
//
// Layer forward (dt = activation storage type, residual stream fp32):
//   h1 = RMSNorm(x_l)                              (fused with the previous residual add)
//   qkv = h1 [Wq;Wk;Wv]^T      one product: q, k, v weights are adjacent in the flat block
//   RoPE on the q and k columns of qkv; ao, lse = FlashAttention(q, k, v)
//   branch = ao Wo^T;  xmid = x_l + branch;  h2 = RMSNorm(xmid)     (one fused kernel)
//   gu = h2 [Wgate;Wup]^T      one product; act = silu(gate) * up
//   branch = act Wdown^T;  x_{l+1} = xmid + branch; next RMSNorm   (one fused kernel)
// The loss head runs lm_head + cross-entropy + both lm_head gradients chunk by
// chunk, so only lm_chunk rows of vocab-sized logits exist at a time.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "cuda_engine.h"

typedef struct {
    size_t attn_norm, wq, wo, mlp_norm, w_gate, w_down;
} layer_off;

struct tl_cuda_engine {
    tl_config cfg;
    int B, T, N, dt, recompute, chunk;
    int D, F, L, H, KV, hd, QD, KD, QKV;
    size_t n_params, bytes;
    size_t off_embed, off_final_norm, off_lm_head;
    layer_off *lo;
    cudaStream_t stream;
    tl_cuda_gemm *gemm;
    float *params, *grads, *adam_m, *adam_v;
    void *wlp; // weights the products read: bf16 copy, or == params in fp32 mode
    float *rope_cos, *rope_sin;
    int *d_tokens, *d_targets;
    // saved activations
    float *x, *xmid, *rstd1, *rstd2, *rstdf, *lse;
    void *h1, *h2, *qkv, *ao, *gu, *act, *hf;
    // scratch
    float *branch, *dx, *dh, *delta, *logits, *row_loss, *norm_scratch;
    void *dx_lp, *dact, *dgu, *dqkv, *dao, *dlogits;
    double *gn_scratch;
    float *h_row_loss;
    void *allocs[64];
    int n_allocs;
};

extern "C" tl_cuda_opts tl_cuda_opts_default(void) {
    tl_cuda_opts o = {TL_CUDA_BF16, 0, 0, 0};
    return o;
}

static inline void *elt(void *base, size_t i, int dt) { return (char *)base + i * tl_cuda_dtype_size(dt); }
static inline const void *celt(const void *base, size_t i, int dt) {
    return (const char *)base + i * tl_cuda_dtype_size(dt);
}

static void *ealloc(tl_cuda_engine *e, size_t bytes, tl_error *err) {
    if (e->n_allocs >= (int)(sizeof e->allocs / sizeof e->allocs[0])) {
        tl_fail(err, "internal: too many engine allocations");
        return NULL;
    }
    void *p = tl_cuda_malloc(bytes, err);
    if (p) {
        e->allocs[e->n_allocs++] = p;
        e->bytes += bytes;
    }
    return p;
}

extern "C" void tl_cuda_engine_free(tl_cuda_engine *e) {
    if (!e) return;
    if (e->stream) cudaStreamSynchronize(e->stream);
    for (int i = 0; i < e->n_allocs; i++) tl_cuda_free(e->allocs[i]);
    tl_cuda_gemm_free(e->gemm);
    if (e->stream) cudaStreamDestroy(e->stream);
    free(e->lo);
    free(e->h_row_loss);
    free(e);
}

extern "C" size_t tl_cuda_engine_memory_bytes(const tl_cuda_engine *e) { return e->bytes; }

// The arguments tl_cuda_engine_create refuses before touching the GPU: the
// kernels have fixed limits (head dim, RMSNorm width) checked here once.
static int check_create_args(const tl_config *c, int B, int T, const tl_cuda_opts *o, tl_error *err) {
    int ndev = 0;
    if (tl_cuda_device_count(&ndev, err)) return -1;
    if (o->device < 0 || o->device >= ndev)
        return tl_fail(err, "CUDA device %d requested but %d present", o->device, ndev);
    if (B <= 0 || T <= 0 || T > c->max_seq_len)
        return tl_fail(err, "batch %d x sequence %d invalid for a context of %d", B, T, c->max_seq_len);
    if (tl_config_head_dim(c) > TL_CUDA_MAX_HEAD_DIM)
        return tl_fail(err, "head dim %d: the CUDA attention kernel supports at most %d", tl_config_head_dim(c),
                       TL_CUDA_MAX_HEAD_DIM);
    if (c->dim > 8192) return tl_fail(err, "hidden size %d: the CUDA RMSNorm kernels support at most 8192", c->dim);
    if (o->precision != TL_CUDA_BF16 && o->precision != TL_CUDA_F32)
        return tl_fail(err, "unknown precision %d", o->precision);
    return 0;
}

// The shapes every kernel launch reads, computed once.
static void set_shapes(tl_cuda_engine *e, const tl_model *m, int B, int T, const tl_cuda_opts *o) {
    const tl_config *c = &m->cfg;
    e->cfg = *c;
    e->B = B, e->T = T, e->N = B * T, e->dt = o->precision, e->recompute = o->recompute;
    e->D = c->dim, e->F = c->hidden_dim, e->L = c->n_layers, e->H = c->n_heads, e->KV = c->n_kv_heads;
    e->hd = e->D / e->H, e->QD = e->H * e->hd, e->KD = e->KV * e->hd, e->QKV = e->QD + 2 * e->KD;
    e->chunk = o->lm_chunk > 0 ? o->lm_chunk : 4096;
    if (e->chunk > e->N) e->chunk = e->N;
    e->n_params = m->n_params;
}

// The offset of every tensor in the flat parameter block, read off the
// model's own view, so the GPU copy of the block is laid out as the host's.
static int read_layout(tl_cuda_engine *e, const tl_model *m, tl_error *err) {
    tl_weights w = m->w;
    const float *base = m->params;
    e->off_embed = (size_t)(w.embed - base);
    e->off_final_norm = (size_t)(w.final_norm - base);
    e->off_lm_head = (size_t)(w.lm_head - base);
    e->lo = (layer_off *)calloc((size_t)e->L, sizeof *e->lo);
    e->h_row_loss = (float *)malloc(sizeof(float) * (size_t)e->N);
    if (!e->lo || !e->h_row_loss) return tl_fail(err, "out of memory");
    for (int l = 0; l < e->L; l++) {
        const tl_layer_weights *lw = &w.layers[l];
        layer_off *lo = &e->lo[l];
        lo->attn_norm = (size_t)(lw->attn_norm - base);
        lo->wq = (size_t)(lw->wq - base);
        lo->wo = (size_t)(lw->wo - base);
        lo->mlp_norm = (size_t)(lw->mlp_norm - base);
        lo->w_gate = (size_t)(lw->w_gate - base);
        lo->w_down = (size_t)(lw->w_down - base);
        // the fused products rely on q,k,v and gate,up being adjacent
        if (lw->wk != lw->wq + (size_t)e->QD * e->D || lw->wv != lw->wk + (size_t)e->KD * e->D ||
            lw->w_up != lw->w_gate + (size_t)e->F * e->D)
            return tl_fail(err, "internal: unexpected parameter layout");
    }
    return 0;
}

// Every GPU buffer, sized for B x T at once, so a step never allocates (and
// running out of memory shows at start-up, with the total asked for).
static int alloc_device_state(tl_cuda_engine *e, tl_error *err) {
    const tl_config *c = &e->cfg;
    const size_t N = (size_t)e->N, D = e->D, F = e->F, L = e->L, V = c->vocab_size, P = e->n_params;
    const size_t es = tl_cuda_dtype_size(e->dt), HT = (size_t)e->B * e->H * e->T;
    const size_t act_layers = e->recompute ? 1 : L;
    struct {
        void **p;
        size_t bytes;
    } parts[] = {
        {(void **)&e->params, P * 4},
        {(void **)&e->grads, P * 4},
        {(void **)&e->adam_m, P * 4},
        {(void **)&e->adam_v, P * 4},
        {(void **)&e->rope_cos, (size_t)c->max_seq_len * (e->hd / 2) * 4},
        {(void **)&e->rope_sin, (size_t)c->max_seq_len * (e->hd / 2) * 4},
        {(void **)&e->d_tokens, N * 4},
        {(void **)&e->d_targets, N * 4},
        {(void **)&e->x, (L + 1) * N * D * 4},
        {(void **)&e->xmid, L * N * D * 4},
        {(void **)&e->rstd1, L * N * 4},
        {(void **)&e->rstd2, L * N * 4},
        {(void **)&e->rstdf, N * 4},
        {(void **)&e->lse, L * HT * 4},
        {&e->h1, L * N * D * es},
        {&e->h2, L * N * D * es},
        {&e->qkv, L * N * e->QKV * es},
        {&e->ao, L * N * e->QD * es},
        {&e->gu, L * N * 2 * F * es},
        {&e->act, act_layers * N * F * es},
        {&e->hf, N * D * es},
        {(void **)&e->branch, N * D * 4},
        {(void **)&e->dx, N * D * 4},
        {(void **)&e->dh, N * D * 4},
        {(void **)&e->delta, HT * 4},
        {(void **)&e->logits, (size_t)e->chunk * V * 4},
        {(void **)&e->row_loss, N * 4},
        {(void **)&e->norm_scratch, tl_cuda_rmsnorm_scratch_floats(e->N, e->D) * 4},
        {&e->dact, N * F * es},
        {&e->dgu, N * 2 * F * es},
        {&e->dqkv, N * e->QKV * es},
        {&e->dao, N * e->QD * es},
        {(void **)&e->gn_scratch, tl_cuda_grad_norm_scratch() * 8},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        *parts[i].p = ealloc(e, parts[i].bytes, err);
        if (!*parts[i].p)
            return tl_wrap(err, "allocating %.2f GB of GPU state for batch %d x seq %d", (double)e->bytes / 1e9,
                           e->B, e->T);
    }
    if (e->dt == TL_CUDA_BF16) {
        e->wlp = ealloc(e, P * 2, err);
        e->dx_lp = ealloc(e, N * D * 2, err);
        e->dlogits = ealloc(e, (size_t)e->chunk * V * 2, err);
        if (!e->wlp || !e->dx_lp || !e->dlogits) return -1;
    } else {
        e->wlp = e->params;
        e->dx_lp = NULL;
        e->dlogits = e->logits; // cross-entropy writes the gradient in place
    }
    return 0;
}

// The model's RoPE tables and parameters to the GPU; gradients and the Adam
// moments start at zero.
static int upload_initial_state(tl_cuda_engine *e, const tl_model *m, tl_error *err) {
    const size_t P = e->n_params;
    size_t rope_bytes = (size_t)e->cfg.max_seq_len * (e->hd / 2) * 4;
    if (tl_cuda_memcpy_h2d(e->rope_cos, m->rope_cos, rope_bytes, err) ||
        tl_cuda_memcpy_h2d(e->rope_sin, m->rope_sin, rope_bytes, err) ||
        tl_cuda_engine_set_params(e, m->params, err) ||
        cudaMemset(e->adam_m, 0, P * 4) != cudaSuccess || cudaMemset(e->adam_v, 0, P * 4) != cudaSuccess ||
        cudaMemset(e->grads, 0, P * 4) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
        if (!err || !err->msg[0]) tl_fail(err, "initialising GPU state failed");
        return -1;
    }
    return 0;
}

extern "C" tl_cuda_engine *tl_cuda_engine_create(const tl_model *m, int B, int T, const tl_cuda_opts *o,
                                                 tl_error *err) {
    tl_cuda_opts def = tl_cuda_opts_default();
    if (!o) o = &def;
    if (check_create_args(&m->cfg, B, T, o, err)) return NULL;
    cudaError_t ce = cudaSetDevice(o->device);
    if (ce != cudaSuccess) {
        tl_fail(err, "cudaSetDevice(%d): %s", o->device, cudaGetErrorString(ce));
        return NULL;
    }
    tl_cuda_engine *e = (tl_cuda_engine *)calloc(1, sizeof *e);
    if (!e) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    set_shapes(e, m, B, T, o);
    if (read_layout(e, m, err)) goto fail;
    // A blocking stream: it orders after the legacy-stream cudaMemcpy/cudaMemset
    // used for host transfers, so uploads are complete before kernels read them.
    if (cudaStreamCreate(&e->stream) != cudaSuccess) {
        tl_fail(err, "cudaStreamCreate failed");
        goto fail;
    }
    e->gemm = tl_cuda_gemm_create(err);
    if (!e->gemm || alloc_device_state(e, err) || upload_initial_state(e, m, err)) goto fail;
    return e;
fail:
    tl_cuda_engine_free(e);
    return NULL;
}

extern "C" int tl_cuda_engine_sync(tl_cuda_engine *e, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    return 0;
}

extern "C" int tl_cuda_engine_set_params(tl_cuda_engine *e, const float *params, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    if (tl_cuda_memcpy_h2d(e->params, params, e->n_params * 4, err)) return -1;
    if (e->dt == TL_CUDA_BF16 && tl_cuda_cast_bf16(e->wlp, e->params, e->n_params, e->stream, err)) return -1;
    return tl_cuda_engine_sync(e, err);
}

extern "C" int tl_cuda_engine_get_params(tl_cuda_engine *e, float *params, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    return tl_cuda_memcpy_d2h(params, e->params, e->n_params * 4, err);
}

extern "C" int tl_cuda_engine_set_opt_state(tl_cuda_engine *e, const float *m, const float *v, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    if (tl_cuda_memcpy_h2d(e->adam_m, m, e->n_params * 4, err)) return -1;
    return tl_cuda_memcpy_h2d(e->adam_v, v, e->n_params * 4, err);
}

extern "C" int tl_cuda_engine_get_opt_state(tl_cuda_engine *e, float *m, float *v, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    if (tl_cuda_memcpy_d2h(m, e->adam_m, e->n_params * 4, err)) return -1;
    return tl_cuda_memcpy_d2h(v, e->adam_v, e->n_params * 4, err);
}

extern "C" int tl_cuda_engine_get_grads(tl_cuda_engine *e, float *grads, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    return tl_cuda_memcpy_d2h(grads, e->grads, e->n_params * 4, err);
}

extern "C" int tl_cuda_engine_set_grads(tl_cuda_engine *e, const float *grads, tl_error *err) {
    TL_CU(cudaStreamSynchronize(e->stream), err);
    return tl_cuda_memcpy_h2d(e->grads, grads, e->n_params * 4, err);
}

extern "C" int tl_cuda_engine_zero_grads(tl_cuda_engine *e, tl_error *err) {
    TL_CU(cudaMemsetAsync(e->grads, 0, e->n_params * 4, e->stream), err);
    return 0;
}

static int check_ids(const int *ids, int n, int V, int allow_ignore, const char *what, tl_error *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= V || ids[i] < (allow_ignore ? -1 : 0))
            return tl_fail(err, "%s id %d at position %d is outside the vocabulary [0, %d)", what, ids[i], i, V);
    return 0;
}

#define TRY(x)                                                                                \
    do {                                                                                      \
        if (x) return -1;                                                                     \
    } while (0)

// Embedding, every layer, and the final norm into hf.
static int forward_body(tl_cuda_engine *e, tl_error *err) {
    const int N = e->N, D = e->D, F = e->F, L = e->L, dt = e->dt;
    const float eps = e->cfg.norm_eps;
    cudaStream_t s = e->stream;
    const size_t ND = (size_t)N * D;
    TRY(tl_cuda_embedding_forward(e->x, e->params + e->off_embed, e->d_tokens, N, D, s, err));
    TRY(tl_cuda_add_rmsnorm_forward(dt, NULL, e->h1, e->rstd1, e->x, NULL, e->params + e->lo[0].attn_norm, N, D,
                                    eps, s, err));
    for (int l = 0; l < L; l++) {
        const layer_off *lo = &e->lo[l];
        void *h1 = elt(e->h1, (size_t)l * ND, dt), *h2 = elt(e->h2, (size_t)l * ND, dt);
        void *qkv = elt(e->qkv, (size_t)l * N * e->QKV, dt), *ao = elt(e->ao, (size_t)l * N * e->QD, dt);
        void *gu = elt(e->gu, (size_t)l * N * 2 * F, dt);
        void *act = elt(e->act, e->recompute ? 0 : (size_t)l * N * F, dt);
        float *lse = e->lse + (size_t)l * e->B * e->H * e->T;
        TRY(tl_cuda_linear_forward(e->gemm, dt, dt, qkv, h1, elt(e->wlp, lo->wq, dt), N, D, e->QKV, 0.0f, s, err));
        TRY(tl_cuda_rope(dt, qkv, e->QKV, e->rope_cos, e->rope_sin, N, e->T, e->H + e->KV, e->hd, 0, s, err));
        TRY(tl_cuda_attention_forward(dt, ao, lse, qkv, elt(qkv, e->QD, dt), elt(qkv, e->QD + e->KD, dt), e->QKV,
                                      e->QKV, e->B, e->T, e->H, e->KV, e->hd, s, err));
        TRY(tl_cuda_linear_forward(e->gemm, dt, TL_CUDA_F32, e->branch, ao, elt(e->wlp, lo->wo, dt), N, e->QD, D,
                                   0.0f, s, err));
        TRY(tl_cuda_add_rmsnorm_forward(dt, e->xmid + (size_t)l * ND, h2, e->rstd2 + (size_t)l * N,
                                        e->x + (size_t)l * ND, e->branch, e->params + lo->mlp_norm, N, D, eps, s,
                                        err));
        TRY(tl_cuda_linear_forward(e->gemm, dt, dt, gu, h2, elt(e->wlp, lo->w_gate, dt), N, D, 2 * F, 0.0f, s,
                                   err));
        TRY(tl_cuda_swiglu_forward(dt, act, gu, N, F, s, err));
        TRY(tl_cuda_linear_forward(e->gemm, dt, TL_CUDA_F32, e->branch, act, elt(e->wlp, lo->w_down, dt), N, F,
                                   D, 0.0f, s, err));
        int last = l == L - 1;
        TRY(tl_cuda_add_rmsnorm_forward(
            dt, e->x + (size_t)(l + 1) * ND, last ? e->hf : elt(e->h1, (size_t)(l + 1) * ND, dt),
            last ? e->rstdf : e->rstd1 + (size_t)(l + 1) * N, e->xmid + (size_t)l * ND, e->branch,
            e->params + (last ? e->off_final_norm : e->lo[l + 1].attn_norm), N, D, eps, s, err));
    }
    return 0;
}

// Loss head, chunk by chunk: logits, cross-entropy and (when backward) dlm_head
// and dh = dL/dhf.  Row losses are summed on the host in double.
static int lm_head(tl_cuda_engine *e, float scale, int backward, double *loss_sum, tl_error *err) {
    const int N = e->N, D = e->D, V = e->cfg.vocab_size, dt = e->dt;
    cudaStream_t s = e->stream;
    const void *W = elt(e->wlp, e->off_lm_head, dt);
    for (int r0 = 0; r0 < N; r0 += e->chunk) {
        int rows = N - r0 < e->chunk ? N - r0 : e->chunk;
        const void *h = celt(e->hf, (size_t)r0 * D, dt);
        TRY(tl_cuda_linear_forward(e->gemm, dt, TL_CUDA_F32, e->logits, h, W, rows, D, V, 0.0f, s, err));
        TRY(tl_cuda_cross_entropy(dt, e->dlogits, e->row_loss + r0, e->logits, e->d_targets + r0, rows, V, scale, s,
                                  err));
        if (backward) {
            TRY(tl_cuda_linear_backward_dw(e->gemm, dt, e->grads + e->off_lm_head, e->dlogits, h, rows, D, V, 1.0f,
                                           s, err));
            TRY(tl_cuda_linear_backward_dx(e->gemm, dt, TL_CUDA_F32, e->dh + (size_t)r0 * D, e->dlogits, W, rows, D,
                                           V, 0.0f, s, err));
        }
    }
    TL_CU(cudaMemcpyAsync(e->h_row_loss, e->row_loss, sizeof(float) * (size_t)N, cudaMemcpyDeviceToHost, s), err);
    TL_CU(cudaStreamSynchronize(s), err);
    double sum = 0.0;
    for (int n = 0; n < N; n++) sum += e->h_row_loss[n];
    *loss_sum = sum;
    return 0;
}

static int upload_batch(tl_cuda_engine *e, const int *tokens, const int *targets, long *count, tl_error *err) {
    const int V = e->cfg.vocab_size;
    TRY(check_ids(tokens, e->N, V, 0, "token", err));
    TRY(check_ids(targets, e->N, V, 1, "target", err));
    long c = 0;
    for (int n = 0; n < e->N; n++) c += targets[n] >= 0;
    *count = c;
    TL_CU(cudaMemcpyAsync(e->d_tokens, tokens, sizeof(int) * (size_t)e->N, cudaMemcpyHostToDevice, e->stream), err);
    TL_CU(cudaMemcpyAsync(e->d_targets, targets, sizeof(int) * (size_t)e->N, cudaMemcpyHostToDevice, e->stream), err);
    return 0;
}

extern "C" int tl_cuda_engine_loss(tl_cuda_engine *e, const int *tokens, const int *targets, double *loss_sum,
                                   long *count, tl_error *err) {
    TRY(upload_batch(e, tokens, targets, count, err));
    TRY(forward_body(e, err));
    return lm_head(e, 0.0f, 0, loss_sum, err);
}

extern "C" int tl_cuda_engine_forward_backward(tl_cuda_engine *e, const int *tokens, const int *targets,
                                               float grad_scale, double *loss, tl_error *err) {
    long count;
    TRY(upload_batch(e, tokens, targets, &count, err));
    if (count == 0) return tl_fail(err, "micro-batch has no targets to predict");
    TRY(forward_body(e, err));
    double sum;
    TRY(lm_head(e, grad_scale / (float)count, 1, &sum, err));
    *loss = sum / (double)count;

    const int N = e->N, D = e->D, F = e->F, L = e->L, dt = e->dt, QKV = e->QKV;
    const size_t ND = (size_t)N * D;
    cudaStream_t s = e->stream;
    float *g = e->grads;
    // dx for the matrix products: its bf16 copy, or dx itself in fp32 mode
    const void *dxin = e->dx_lp ? e->dx_lp : e->dx;
    TRY(tl_cuda_rmsnorm_backward(dt, e->dx, e->dx_lp, g + e->off_final_norm, e->norm_scratch, e->dh,
                                 e->x + (size_t)L * ND, e->params + e->off_final_norm, e->rstdf, N, D, 0, s, err));
    for (int l = L - 1; l >= 0; l--) {
        const layer_off *lo = &e->lo[l];
        const void *h1 = elt(e->h1, (size_t)l * ND, dt), *h2 = elt(e->h2, (size_t)l * ND, dt);
        void *qkv = elt(e->qkv, (size_t)l * N * QKV, dt), *ao = elt(e->ao, (size_t)l * N * e->QD, dt);
        void *gu = elt(e->gu, (size_t)l * N * 2 * F, dt);
        void *act = elt(e->act, e->recompute ? 0 : (size_t)l * N * F, dt);
        const float *lse = e->lse + (size_t)l * e->B * e->H * e->T;
        if (e->recompute) TRY(tl_cuda_swiglu_forward(dt, act, gu, N, F, s, err));
        // MLP: x_{l+1} = xmid + Wdown (silu(gate) * up)
        TRY(tl_cuda_linear_backward_dw(e->gemm, dt, g + lo->w_down, dxin, act, N, F, D, 1.0f, s, err));
        TRY(tl_cuda_linear_backward_dx(e->gemm, dt, dt, e->dact, dxin, elt(e->wlp, lo->w_down, dt), N, F, D, 0.0f,
                                       s, err));
        TRY(tl_cuda_swiglu_backward(dt, e->dgu, e->dact, gu, N, F, s, err));
        TRY(tl_cuda_linear_backward_dw(e->gemm, dt, g + lo->w_gate, e->dgu, h2, N, D, 2 * F, 1.0f, s, err));
        TRY(tl_cuda_linear_backward_dx(e->gemm, dt, TL_CUDA_F32, e->dh, e->dgu, elt(e->wlp, lo->w_gate, dt), N, D,
                                       2 * F, 0.0f, s, err));
        TRY(tl_cuda_rmsnorm_backward(dt, e->dx, e->dx_lp, g + lo->mlp_norm, e->norm_scratch, e->dh,
                                     e->xmid + (size_t)l * ND, e->params + lo->mlp_norm, e->rstd2 + (size_t)l * N,
                                     N, D, 1, s, err));
        // attention: xmid = x_l + Wo attn(RoPE(q), RoPE(k), v)
        TRY(tl_cuda_linear_backward_dw(e->gemm, dt, g + lo->wo, dxin, ao, N, e->QD, D, 1.0f, s, err));
        TRY(tl_cuda_linear_backward_dx(e->gemm, dt, dt, e->dao, dxin, elt(e->wlp, lo->wo, dt), N, e->QD, D, 0.0f, s,
                                       err));
        TRY(tl_cuda_attention_backward(dt, e->dqkv, elt(e->dqkv, e->QD, dt), elt(e->dqkv, e->QD + e->KD, dt),
                                       e->delta, e->dao, ao, lse, qkv, elt(qkv, e->QD, dt),
                                       elt(qkv, e->QD + e->KD, dt), QKV, QKV, e->B, e->T, e->H, e->KV, e->hd, s,
                                       err));
        TRY(tl_cuda_rope(dt, e->dqkv, QKV, e->rope_cos, e->rope_sin, N, e->T, e->H + e->KV, e->hd, 1, s, err));
        TRY(tl_cuda_linear_backward_dw(e->gemm, dt, g + lo->wq, e->dqkv, h1, N, D, QKV, 1.0f, s, err));
        TRY(tl_cuda_linear_backward_dx(e->gemm, dt, TL_CUDA_F32, e->dh, e->dqkv, elt(e->wlp, lo->wq, dt), N, D, QKV,
                                       0.0f, s, err));
        TRY(tl_cuda_rmsnorm_backward(dt, e->dx, e->dx_lp, g + lo->attn_norm, e->norm_scratch, e->dh,
                                     e->x + (size_t)l * ND, e->params + lo->attn_norm, e->rstd1 + (size_t)l * N, N,
                                     D, 1, s, err));
    }
    TRY(tl_cuda_embedding_backward(g + e->off_embed, e->dx, e->d_tokens, N, D, s, err));
    // surface asynchronous faults at the step they belong to
    TL_CU(cudaStreamSynchronize(s), err);
    return 0;
}

extern "C" int tl_cuda_engine_grad_norm(tl_cuda_engine *e, double *norm, tl_error *err) {
    return tl_cuda_grad_norm(norm, e->gn_scratch, e->grads, e->n_params, e->stream, err);
}

extern "C" int tl_cuda_engine_adamw(tl_cuda_engine *e, const tl_adamw_config *c, double lr, long step, double norm,
                                    tl_error *err) {
    float coef = 1.0f;
    if (c->clip > 0) {
        double cd = c->clip / (norm + 1e-6);
        if (cd < 1.0) coef = (float)cd;
    }
    return tl_cuda_adamw(e->params, e->dt == TL_CUDA_BF16 ? e->wlp : NULL, e->grads, e->adam_m, e->adam_v,
                         e->n_params, coef, lr, c->beta1, c->beta2, c->eps, c->weight_decay, step, e->stream, err);
}

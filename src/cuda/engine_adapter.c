/* engine_adapter.c - the CUDA engine behind the training loop's tl_engine
 * interface (src/train/engine.h).  Compiled only in the CUDA build (`make cuda`). */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_engine.h"
#include "engine.h"
#include "engine_cuda.h"

typedef struct {
    tl_engine base; /* first */
    tl_cuda_engine *gpu;
    tl_comm *comm;  /* the job's ranks (NULL: one process) */
    float *staging; /* several ranks: the gradients on the host while they are summed */
} cuda_adapter;

static tl_cuda_engine *G(tl_engine *e) { return ((cuda_adapter *)e)->gpu; }

static int a_zero(tl_engine *e, tl_error *err) { return tl_cuda_engine_zero_grads(G(e), err); }
static int a_fb(tl_engine *e, const int *in, const int *tg, float scale, double *loss, tl_error *err) {
    return tl_cuda_engine_forward_backward(G(e), in, tg, scale, loss, err);
}
static int a_loss(tl_engine *e, const int *in, const int *tg, double *sum, long *count, tl_error *err) {
    return tl_cuda_engine_loss(G(e), in, tg, sum, count, err);
}
/* Several ranks: download, sum over the ranks in rank order (distributed.h, the
 * same deterministic sum as the CPU engine), upload.  Every rank then holds the
 * same gradients and takes the same AdamW step.  NCCL on device buffers
 * (nccl_comm.h) is the faster path still to be wired in. */
static int a_reduce(tl_engine *e, tl_error *err) {
    cuda_adapter *a = (cuda_adapter *)e;
    if (e->world == 1) return 0;
    if (tl_cuda_engine_get_grads(a->gpu, a->staging, err) ||
        tl_comm_allreduce_f32(a->comm, a->staging, e->m->n_params, err) ||
        tl_cuda_engine_set_grads(a->gpu, a->staging, err))
        return -1;
    return 0;
}
static int a_params_noop(tl_engine *e, int root_only, tl_error *err) {
    (void)e;
    (void)root_only;
    (void)err;
    return 0; /* stage 0: every rank holds all parameters */
}
static int a_release_noop(tl_engine *e, tl_error *err) {
    (void)e;
    (void)err;
    return 0;
}
static int a_norm(tl_engine *e, double *norm, tl_error *err) { return tl_cuda_engine_grad_norm(G(e), norm, err); }
static int a_update(tl_engine *e, const tl_adamw_config *c, double lr, long step, double norm, tl_error *err) {
    return tl_cuda_engine_adamw(G(e), c, lr, step, norm, err);
}
/* device -> host: weights and moments, so checkpoints and evaluations see the current state */
static int a_pull(tl_engine *e, tl_error *err) {
    return tl_cuda_engine_get_params(G(e), e->m->params, err) || tl_cuda_engine_get_opt_state(G(e), e->opt_m, e->opt_v, err)
               ? -1
               : 0;
}
static int a_push(tl_engine *e, tl_error *err) {
    return tl_cuda_engine_set_params(G(e), e->m->params, err) || tl_cuda_engine_set_opt_state(G(e), e->opt_m, e->opt_v, err)
               ? -1
               : 0;
}
static int a_sync(tl_engine *e, tl_error *err) { return tl_cuda_engine_sync(G(e), err); }
static size_t a_bytes(const tl_engine *e) { return tl_cuda_engine_memory_bytes(((const cuda_adapter *)e)->gpu); }
static void a_free(tl_engine *e) {
    if (!e) return;
    if (G(e)) tl_cuda_engine_free(G(e));
    tl_free(((cuda_adapter *)e)->staging);
    free(e);
}

static const tl_engine_ops cuda_ops = {
    .name = "cuda", .zero_grads = a_zero, .forward_backward = a_fb, .loss = a_loss, .reduce_grads = a_reduce,
    .grad_norm = a_norm, .update = a_update, .gather_params = a_params_noop, .release_params = a_release_noop,
    .pull = a_pull, .push = a_push, .sync = a_sync, .memory_bytes = a_bytes, .free = a_free};

tl_engine *tl_engine_cuda_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, const tl_engine_job *job,
                                 void *user, tl_error *err) {
    const tl_cuda_opts *o = user;
    tl_cuda_opts def = tl_cuda_opts_default();
    cuda_adapter *a = calloc(1, sizeof *a);
    if (!a) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    a->base = (tl_engine){.ops = &cuda_ops, .m = m, .opt_m = opt_m, .opt_v = opt_v, .B = B, .T = T};
    if (tl_engine_bind_job(&a->base, job, err)) goto fail;
    if (a->base.zero > 0) {
        tl_fail(err, "ZeRO stage %d on the CUDA engine is not implemented yet: use --zero 0 (every GPU holds the "
                     "whole model and optimizer state) or --device cpu",
                a->base.zero);
        goto fail;
    }
    a->comm = job ? job->comm : NULL;
    if (a->base.world > 1 && !(a->staging = tl_alloc(m->n_params * sizeof(float)))) {
        tl_fail(err, "out of memory for the host gradient buffer of %zu parameters", m->n_params);
        goto fail;
    }
    a->gpu = tl_cuda_engine_create(m, B, T, o ? o : &def, err);
    if (!a->gpu || tl_cuda_engine_set_opt_state(a->gpu, opt_m, opt_v, err)) goto fail;
    return &a->base;
fail:
    a_free(&a->base);
    return NULL;
}

int tl_engine_cuda_available(void) {
    int n = 0;
    tl_error err;
    return tl_cuda_device_count(&n, &err) == 0 && n > 0;
}

/* ---- the "cuda" entry of the engine registry (tl_engine_find in src/train/engine.c) ---- */

static tl_engine *kind_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, const tl_engine_job *job,
                              void *user, tl_error *err) {
    const tl_engine_opts *eo = user;
    tl_cuda_opts o = tl_cuda_opts_default();
    if (eo) {
        o.precision = eo->fp32 ? TL_CUDA_F32 : TL_CUDA_BF16;
        o.recompute = eo->recompute;
        o.device = eo->device;
    }
    return tl_engine_cuda_create(m, opt_m, opt_v, B, T, job, &o, err);
}

/* Times bf16 8192^3 products through the same cuBLASLt path as the engine. */
static int kind_matmul_peak(int device, double *tflops, tl_error *err) {
    (void)device; /* the current device, as the engine's first products run */
    const int n = 8192;
    size_t e = (size_t)n * n;
    float *h = malloc(e * sizeof(float));
    if (!h) return tl_fail(err, "out of memory");
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < e; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        h[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    void *a = tl_cuda_malloc(e * 2, err), *b = a ? tl_cuda_malloc(e * 2, err) : NULL;
    void *c = b ? tl_cuda_malloc(e * 2, err) : NULL;
    tl_cuda_gemm *g = c ? tl_cuda_gemm_create(err) : NULL;
    int rc = -1;
    if (g && !tl_cuda_upload(a, h, e, TL_CUDA_BF16, err) && !tl_cuda_upload(b, h, e, TL_CUDA_BF16, err)) {
        rc = 0;
        for (int i = 0; i < 3 && !rc; i++) /* warm-up */
            rc = tl_cuda_linear_forward(g, TL_CUDA_BF16, TL_CUDA_BF16, c, a, b, n, n, n, 0.0f, NULL, err);
        rc = rc ? rc : tl_cuda_sync(err);
        double t0 = tl_now();
        const int reps = 20;
        for (int i = 0; i < reps && !rc; i++)
            rc = tl_cuda_linear_forward(g, TL_CUDA_BF16, TL_CUDA_BF16, c, a, b, n, n, n, 0.0f, NULL, err);
        rc = rc ? rc : tl_cuda_sync(err);
        if (!rc) *tflops = 2.0 * n * (double)n * n * reps / (tl_now() - t0) / 1e12;
    }
    tl_cuda_gemm_free(g);
    tl_cuda_free(a), tl_cuda_free(b), tl_cuda_free(c);
    free(h);
    return rc;
}

static int kind_describe(int device, char *buf, size_t n, tl_error *err) {
    int count = 0;
    if (tl_cuda_device_count(&count, err)) return -1;
    return tl_cuda_device_describe(device, buf, n, err);
}

const tl_engine_kind tl_engine_kind_cuda = {.name = "cuda", .create = kind_create,
                                            .available = tl_engine_cuda_available, .describe = kind_describe,
                                            .matmul_peak = kind_matmul_peak};

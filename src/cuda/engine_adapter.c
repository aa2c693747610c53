/* engine_adapter.c - the CUDA engine behind the training loop's tl_engine
 * interface (src/engine.h).  Compiled only in the CUDA build (`make cuda`). */
#include <stdlib.h>

#include "cuda_engine.h"
#include "engine.h"
#include "engine_cuda.h"

typedef struct {
    tl_engine base; /* first */
    tl_cuda_engine *gpu;
} cuda_adapter;

static tl_cuda_engine *G(tl_engine *e) { return ((cuda_adapter *)e)->gpu; }

static int a_zero(tl_engine *e, tl_error *err) { return tl_cuda_engine_zero_grads(G(e), err); }
static int a_fb(tl_engine *e, const int *in, const int *tg, float scale, double *loss, tl_error *err) {
    return tl_cuda_engine_forward_backward(G(e), in, tg, scale, loss, err);
}
static int a_loss(tl_engine *e, const int *in, const int *tg, double *sum, long *count, tl_error *err) {
    return tl_cuda_engine_loss(G(e), in, tg, sum, count, err);
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
static size_t a_bytes(const tl_engine *e) { return tl_cuda_engine_memory_bytes(((const cuda_adapter *)e)->gpu); }
static void a_free(tl_engine *e) {
    tl_cuda_engine_free(G(e));
    free(e);
}

static const tl_engine_ops cuda_ops = {"cuda", a_zero, a_fb, a_loss, a_norm, a_update, a_pull, a_push, a_bytes, a_free};

tl_engine *tl_engine_cuda_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, void *user, tl_error *err) {
    const tl_cuda_opts *o = user;
    tl_cuda_opts def = tl_cuda_opts_default();
    cuda_adapter *a = calloc(1, sizeof *a);
    if (!a) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    a->base = (tl_engine){&cuda_ops, m, opt_m, opt_v, B, T};
    a->gpu = tl_cuda_engine_create(m, B, T, o ? o : &def, err);
    if (!a->gpu || tl_cuda_engine_set_opt_state(a->gpu, opt_m, opt_v, err)) {
        if (a->gpu) tl_cuda_engine_free(a->gpu);
        free(a);
        return NULL;
    }
    return &a->base;
}

int tl_engine_cuda_available(void) {
    int n = 0;
    tl_error err;
    return tl_cuda_device_count(&n, &err) == 0 && n > 0;
}

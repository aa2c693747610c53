/* engine_cpu.c - the CPU reference engine: model.c's forward/backward, AdamW on
 * the host arrays the engine is bound to. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    tl_engine base; /* first: a tl_engine* is a cpu_engine* */
    tl_acts *acts;
    float *grads;
} cpu_engine;

static int cpu_zero(tl_engine *e, tl_error *err) {
    (void)err;
    cpu_engine *c = (cpu_engine *)e;
    if (c->grads) memset(c->grads, 0, e->m->n_params * sizeof(float));
    return 0;
}

/* Without a block the gradients live in the model's grads hook (ZeRO-2/3): the
 * distributed loop norms and updates its slice itself. */
static int no_block(tl_engine *e, tl_error *err) {
    if (((cpu_engine *)e)->grads) return 0;
    return tl_fail(err, "the CPU engine was created without a gradient block (gradients are sharded)");
}

static int cpu_fb(tl_engine *e, const int *in, const int *tg, float scale, double *loss, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    return tl_model_forward_backward(e->m, c->acts, c->grads, in, tg, scale, loss, err);
}

static int cpu_loss(tl_engine *e, const int *in, const int *tg, double *sum, long *count, tl_error *err) {
    return tl_model_loss(e->m, ((cpu_engine *)e)->acts, in, tg, sum, count, err);
}

static int cpu_norm(tl_engine *e, double *norm, tl_error *err) {
    if (no_block(e, err)) return -1;
    *norm = tl_grad_norm(((cpu_engine *)e)->grads, e->m->n_params);
    return 0;
}

static int cpu_update(tl_engine *e, const tl_adamw_config *c, double lr, long step, double norm, tl_error *err) {
    if (no_block(e, err)) return -1;
    cpu_engine *ce = (cpu_engine *)e;
    tl_clip_grads(ce->grads, e->m->n_params, norm, c->clip);
    tl_adamw_update(e->m->params, ce->grads, e->opt_m, e->opt_v, e->m->n_params, lr, c, step);
    return 0;
}

static int cpu_noop(tl_engine *e, tl_error *err) {
    (void)e;
    (void)err;
    return 0;
}

static size_t cpu_bytes(const tl_engine *e) {
    const cpu_engine *c = (const cpu_engine *)e;
    return tl_acts_bytes(c->acts) + (c->grads ? e->m->n_params * sizeof(float) : 0);
}

static void cpu_free(tl_engine *e) {
    cpu_engine *c = (cpu_engine *)e;
    tl_acts_free(c->acts);
    tl_free(c->grads);
    free(c);
}

static const tl_engine_ops cpu_ops = {"cpu", cpu_zero, cpu_fb, cpu_loss, cpu_norm, cpu_update,
                                      cpu_noop, cpu_noop, cpu_bytes, cpu_free};

tl_engine *tl_engine_cpu_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, tl_error *err) {
    return tl_engine_cpu_create_ex(m, opt_m, opt_v, B, T, 1, err);
}

tl_engine *tl_engine_cpu_create_ex(tl_model *m, float *opt_m, float *opt_v, int B, int T, int grad_block,
                                   tl_error *err) {
    cpu_engine *c = calloc(1, sizeof *c);
    if (!c) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    c->base = (tl_engine){&cpu_ops, m, opt_m, opt_v, B, T};
    c->acts = tl_acts_create(&m->cfg, B, T, err);
    if (!c->acts) {
        free(c);
        return NULL;
    }
    if (!grad_block) return &c->base;
    c->grads = tl_alloc(m->n_params * sizeof(float));
    if (!c->grads) {
        tl_acts_free(c->acts);
        free(c);
        tl_fail(err, "out of memory allocating gradients for %zu parameters", m->n_params);
        return NULL;
    }
    return &c->base;
}

float *tl_engine_cpu_grads(tl_engine *e) { return e && e->ops == &cpu_ops ? ((cpu_engine *)e)->grads : NULL; }
int tl_engine_is_cpu(const tl_engine *e) { return e && e->ops == &cpu_ops; }

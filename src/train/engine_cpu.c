/* engine_cpu.c - the CPU reference engine: model.c's forward/backward and AdamW on
 * the host arrays the engine is bound to, for one process or a job of ranks at any
 * ZeRO stage (docs/distributed.md).
 *
 * With one rank at stage 0 a step is model.c's arithmetic on the whole block.
 * Otherwise ("sharded" below) every rank owns the slice [lo, hi) of the flat
 * parameter block: the gradient sum is formed over the ranks in rank order
 * (stages 0-1: one all-reduce of the accumulated block; stages 2-3: each unit
 * reduce-scattered into the owners' slices as its backward completes, by
 * grad_shard.c), the norm from per-block partials of each shard, and AdamW runs on
 * the owner's slice, which is then gathered (stages 1-2) or kept sharded until the
 * next use (stage 3). */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemm.h"
#include "grad_shard.h"

typedef struct {
    tl_engine base; /* first: a tl_engine* is a cpu_engine* */
    tl_acts *acts;
    float *grads;      /* the whole gradient block (not at stages 2-3) */
    /* ---- sharded ---- */
    int sharded;       /* world > 1 or zero > 0 */
    tl_comm *comm, *own_comm;
    tl_grad_shard *gs; /* stages 2-3: this rank's gradient slice and the unit buckets */
    double *blocks;    /* squared-norm partial per TL_SHARD_ALIGN block, all ranks */
    size_t max_blocks;
    int first;         /* the next forward_backward is the step's first micro-batch */
    int params_full;   /* stage 3: the whole parameter block is current on this rank */
    /* bf16 mixed precision: the weights' bf16 copy the products read (model.h's
     * params_bf16), rounded again from the fp32 master weights after each update */
    uint16_t *wbf16;
    int bf16_stale;
    int grads_zeroed; /* the bf16 update zeroed the gradient block and nothing wrote it since */
} cpu_engine;

/* ---- stage 3: parameters gathered just before use, other slices released after ---- */

/* Parameters [a, b) released, with their bf16 copy in bf16 mixed precision. */
static void release_range(cpu_engine *c, size_t a, size_t b) {
    if (b <= a) return;
    tl_release_pages(c->base.m->params + a, (b - a) * sizeof(float)); /* they read as zeros after */
    if (c->wbf16) tl_release_pages(c->wbf16 + a, (b - a) * sizeof(uint16_t));
}

/* Hands the pages of the other ranks' slices back to the OS (they read as zeros
 * until the next gather). */
static void release_others(cpu_engine *c) {
    tl_engine *e = &c->base;
    release_range(c, 0, e->lo);
    release_range(c, e->hi, e->m->n_params);
    c->params_full = 0;
    c->bf16_stale = 1; /* the whole copy is rounded again once the block is whole */
}

/* model.h's params hook: each unit (embedding, layer, head) is gathered just before
 * the forward or backward reads it and its other ranks' pages released right after,
 * so a rank holds its own slice plus about one unit.  In bf16 mixed precision the
 * unit's bf16 copy is rounded from the gathered fp32 weights there too (the same
 * bits as rounding the whole block: rounding is per element).  No-op while the
 * whole block is current (evaluation, checkpoints). */
static int params_hook(void *user, int unit, tl_params_event ev, tl_error *err) {
    cpu_engine *c = user;
    tl_engine *e = &c->base;
    if (c->params_full) return 0;
    size_t a, b;
    tl_model_unit_range(e->m, unit, &a, &b);
    if (ev == TL_PARAMS_ACQUIRE) {
        if (tl_comm_allgather_range_f32(c->comm, e->m->params, e->m->n_params, TL_SHARD_ALIGN, a, b, err)) return -1;
        if (c->wbf16) tl_round_bf16(e->m->params + a, b - a, c->wbf16 + a);
        return 0;
    }
    if (a < e->lo) release_range(c, a, b < e->lo ? b : e->lo);
    if (b > e->hi) release_range(c, a > e->hi ? a : e->hi, b);
    return 0;
}

static int cpu_gather(tl_engine *e, int root_only, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    if (!c->sharded || e->zero != 3 || c->params_full) return 0;
    if (root_only) /* the others keep their slice */
        return tl_comm_gather_f32(c->comm, e->m->params + e->lo, e->m->params, e->m->n_params, TL_SHARD_ALIGN, 0, err);
    if (tl_comm_allgather_f32(c->comm, e->m->params, e->m->n_params, TL_SHARD_ALIGN, err))
        return tl_wrap(err, "gathering parameters");
    c->params_full = 1;
    return 0;
}

static int cpu_release(tl_engine *e, tl_error *err) {
    (void)err;
    cpu_engine *c = (cpu_engine *)e;
    if (c->sharded && e->zero == 3) release_others(c);
    return 0;
}

/* ---- the step ---- */

/* The bf16 copy made current before a pass reads it (the parameters may have
 * been set after the engine was made: initialisation, --init, a resume).  At
 * stage 3 with the block sharded the params hook rounds each unit as it is
 * gathered instead. */
static void bf16_refresh(cpu_engine *c) {
    if (!c->wbf16 || !c->bf16_stale || !c->params_full) return;
    tl_round_bf16(c->base.m->params, c->base.m->n_params, c->wbf16);
    c->base.m->params_bf16 = c->wbf16;
    c->bf16_stale = 0;
}

/* memset on all threads: the whole gradient block is hundreds of MB */
static void zero_floats(float *p, size_t n) {
    const size_t chunk = (size_t)1 << 18, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nc; i++) {
        const size_t lo = i * chunk;
        memset(p + lo, 0, sizeof(float) * (n - lo < chunk ? n - lo : chunk));
    }
}

static int cpu_zero(tl_engine *e, tl_error *err) {
    (void)err;
    cpu_engine *c = (cpu_engine *)e;
    /* stage 3: start sharded; the params hook gathers each unit as the passes reach it */
    if (c->sharded && e->zero == 3 && c->params_full) release_others(c);
    if (c->grads && !c->grads_zeroed) zero_floats(c->grads, e->m->n_params);
    c->grads_zeroed = 0;
    c->first = 1;
    return 0;
}

static int cpu_fb(tl_engine *e, const int *in, const int *tg, float scale, double *loss, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    if (c->gs) tl_grad_shard_next(c->gs, c->first); /* stages 2-3: each unit is reduced as it completes */
    c->first = 0;
    c->grads_zeroed = 0;
    bf16_refresh(c);
    return tl_model_forward_backward(e->m, c->acts, c->grads, in, tg, scale, loss, err);
}

static int cpu_fb_rows(tl_engine *e, const int *in, const int *tg, const float *w, double *loss, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    if (c->gs) tl_grad_shard_next(c->gs, c->first);
    c->first = 0;
    c->grads_zeroed = 0;
    bf16_refresh(c);
    return tl_model_forward_backward_rows(e->m, c->acts, c->grads, in, tg, w, loss, err);
}

static int cpu_row_losses(tl_engine *e, const int *in, const int *tg, float *row_loss, tl_error *err) {
    bf16_refresh((cpu_engine *)e);
    return tl_model_row_losses(e->m, ((cpu_engine *)e)->acts, in, tg, row_loss, err);
}

static int cpu_loss(tl_engine *e, const int *in, const int *tg, double *sum, long *count, tl_error *err) {
    bf16_refresh((cpu_engine *)e);
    return tl_model_loss(e->m, ((cpu_engine *)e)->acts, in, tg, sum, count, err);
}

static int cpu_reduce(tl_engine *e, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    if (!c->sharded) return 0;
    return c->gs ? tl_grad_shard_flush(c->gs, err) : tl_comm_allreduce_f32(c->comm, c->grads, e->m->n_params, err);
}

/* This rank's reduced gradients for its shard [lo, hi): stage 2-3's slice, or that
 * range of the whole block (stages 0-1). */
static float *shard_grads(cpu_engine *c) { return c->gs ? tl_grad_shard_slice(c->gs) : c->grads + c->base.lo; }

/* the shards' partials must be the blocks of the one-process norm */
_Static_assert(TL_NORM_BLOCK == TL_SHARD_ALIGN, "the norm's blocks are the shards' alignment");

static int cpu_norm(tl_engine *e, double *norm, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    const size_t n = e->m->n_params;
    if (!c->sharded) {
        *norm = tl_grad_norm(c->grads, n);
        return 0;
    }
    /* each rank: its shard's block partials (blocks of [lo, hi) start at lo, a block
     * boundary, so the slice's blocks are the same); exchanged in fixed-size slots */
    double *mine = c->blocks + c->max_blocks * (size_t)e->world, *all = c->blocks;
    memset(mine, 0, sizeof(double) * c->max_blocks);
    tl_grad_sumsq_blocks(shard_grads(c), 0, e->hi - e->lo, mine);
    if (tl_comm_allgather_bytes(c->comm, mine, sizeof(double) * c->max_blocks, all, err))
        return tl_wrap(err, "gradient norm");
    /* in place, in block order: rank r's blocks follow rank r-1's */
    size_t k = 0;
    for (int r = 0; r < e->world; r++) {
        size_t l, h;
        tl_shard_range(n, e->world, TL_SHARD_ALIGN, r, &l, &h);
        size_t cnt = tl_shard_blocks(l, h);
        memmove(all + k, all + (size_t)r * c->max_blocks, sizeof(double) * cnt);
        k += cnt;
    }
    *norm = tl_blocks_norm(all, k);
    return 0;
}

static int cpu_update(tl_engine *e, const tl_adamw_config *o, double lr, long step, double norm, tl_error *err) {
    cpu_engine *c = (cpu_engine *)e;
    const size_t n = e->m->n_params;
    c->bf16_stale = 1;
    if (e->zero == 0 && c->wbf16) { /* clip, update, the bf16 copy and the next step's zeroing in one pass */
        tl_adamw_update_bf16(e->m->params, c->wbf16, c->grads, e->opt_m, e->opt_v, n, lr, o, step,
                             tl_clip_scale(norm, o->clip), 1);
        c->grads_zeroed = 1;
        c->bf16_stale = 0;
        e->m->params_bf16 = c->wbf16;
        return 0;
    }
    if (e->zero == 0) { /* every rank has the whole reduced gradient and the whole moments */
        tl_adamw_update_clipped(e->m->params, c->grads, e->opt_m, e->opt_v, n, lr, o, step, tl_clip_scale(norm, o->clip));
        bf16_refresh(c);
        return 0;
    }
    size_t len = e->hi - e->lo;
    float *g = shard_grads(c);
    tl_clip_grads(g, len, norm, o->clip);
    tl_adamw_update(e->m->params + e->lo, g, e->opt_m, e->opt_v, len, lr, o, step);
    if (e->zero == 3) {
        release_others(c);
        return 0;
    }
    if (tl_comm_allgather_f32(c->comm, e->m->params, n, TL_SHARD_ALIGN, err))
        return tl_wrap(err, "step %ld: gathering parameters", step);
    bf16_refresh(c);
    return 0;
}

static int cpu_noop(tl_engine *e, tl_error *err) {
    (void)e;
    (void)err;
    return 0;
}

/* The host parameters were replaced as a whole (a resume): all of them are current. */
static int cpu_push(tl_engine *e, tl_error *err) {
    (void)err;
    cpu_engine *c = (cpu_engine *)e;
    c->params_full = 1;
    c->bf16_stale = 1;
    bf16_refresh(c);
    return 0;
}

static size_t cpu_bytes(const tl_engine *e) {
    const cpu_engine *c = (const cpu_engine *)e;
    return tl_acts_bytes(c->acts) + (c->grads ? e->m->n_params * sizeof(float) : 0) +
           (c->wbf16 ? e->m->n_params * sizeof(uint16_t) : 0) +
           (c->gs ? tl_grad_shard_bytes(c->gs) : 0);
}

static void cpu_free(tl_engine *e) {
    if (!e) return;
    cpu_engine *c = (cpu_engine *)e;
    tl_grad_shard_free(c->gs);
    if (e->m && e->m->params_hook_user == c) { /* the model is borrowed */
        e->m->params_hook = NULL;
        e->m->params_hook_user = NULL;
    }
    if (e->m && c->wbf16 && e->m->params_bf16 == c->wbf16) e->m->params_bf16 = NULL;
    tl_free(c->wbf16);
    tl_acts_free(c->acts);
    tl_free(c->grads);
    free(c->blocks);
    tl_comm_free(c->own_comm);
    free(c);
}

static const tl_engine_ops cpu_ops = {
    .name = "cpu", .zero_grads = cpu_zero, .forward_backward = cpu_fb, .loss = cpu_loss,
    .reduce_grads = cpu_reduce, .grad_norm = cpu_norm, .update = cpu_update, .gather_params = cpu_gather,
    .release_params = cpu_release, .pull = cpu_noop, .push = cpu_push, .memory_bytes = cpu_bytes, .free = cpu_free,
    .row_losses = cpu_row_losses, .forward_backward_rows = cpu_fb_rows};

tl_engine *tl_engine_cpu_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, const tl_engine_job *job,
                                void *user, tl_error *err) {
    const tl_engine_opts *eo = user;
    cpu_engine *c = calloc(1, sizeof *c);
    if (!c) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    c->base = (tl_engine){.ops = &cpu_ops, .m = m, .opt_m = opt_m, .opt_v = opt_v, .B = B, .T = T};
    c->params_full = 1;
    tl_engine *e = &c->base;
    if (tl_engine_bind_job(e, job, err)) goto fail;
    c->comm = job ? job->comm : NULL;
    c->sharded = e->world > 1 || e->zero > 0;
    if (c->sharded && !c->comm && !(c->comm = c->own_comm = tl_comm_single())) {
        tl_fail(err, "out of memory");
        goto fail;
    }
    if (!(c->acts = tl_acts_create(&m->cfg, B, T, err))) goto fail;
    const size_t n = m->n_params;
    if (c->sharded) {
        size_t l0, h0;
        tl_shard_range(n, e->world, TL_SHARD_ALIGN, 0, &l0, &h0);
        c->max_blocks = tl_shard_blocks(l0, h0) + 1; /* rank 0 has the most */
        c->blocks = malloc(sizeof(double) * (c->max_blocks * (size_t)e->world + c->max_blocks));
        if (!c->blocks) {
            tl_fail(err, "out of memory");
            goto fail;
        }
    }
    if (c->sharded && e->zero >= 2) { /* no gradient block: the grads hook supplies buckets */
        if (!(c->gs = tl_grad_shard_create(m, c->comm, job && job->overlap, err))) goto fail;
    } else if (!(c->grads = tl_alloc(n * sizeof(float)))) {
        tl_fail(err, "out of memory allocating gradients for %zu parameters", n);
        goto fail;
    }
    if (eo && eo->bf16) {
        if (!(c->wbf16 = tl_alloc(n * sizeof(uint16_t)))) {
            tl_fail(err, "out of memory allocating the bf16 copy of %zu parameters", n);
            goto fail;
        }
        c->bf16_stale = 1;
        m->params_bf16 = c->wbf16; /* stage 3 fills it unit by unit */
    }
    if (c->sharded && e->zero == 3) {
        m->params_hook = params_hook;
        m->params_hook_user = c;
    }
    return e;
fail:
    cpu_free(e);
    return NULL;
}

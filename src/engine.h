/* engine.h - where the arithmetic of a training step runs.
 *
 * The loop in train.c drives an engine through this small interface; the CPU
 * engine (engine_cpu.c) is the reference, the CUDA engine (src/cuda/) the fast
 * path.  An engine is bound to a host model and the host AdamW moments: `pull`
 * makes them current (before a checkpoint or an evaluation), `push` uploads them
 * (after a resume).  On the CPU both are no-ops. */
#ifndef TL_ENGINE_H
#define TL_ENGINE_H

#include "common.h"
#include "model.h"
#include "optimizer.h"

typedef struct tl_engine tl_engine;

typedef struct {
    const char *name;
    int (*zero_grads)(tl_engine *e, tl_error *err);
    /* adds grad_scale * d(mean loss)/dparams for one micro-batch [B*T] */
    int (*forward_backward)(tl_engine *e, const int *inputs, const int *targets, float grad_scale, double *loss,
                            tl_error *err);
    /* forward only: summed loss and the number of counted targets */
    int (*loss)(tl_engine *e, const int *inputs, const int *targets, double *loss_sum, long *count, tl_error *err);
    int (*grad_norm)(tl_engine *e, double *norm, tl_error *err);
    /* clip by min(1, clip/(norm+1e-6)) and apply AdamW step `step` (1-based) */
    int (*update)(tl_engine *e, const tl_adamw_config *c, double lr, long step, double norm, tl_error *err);
    int (*pull)(tl_engine *e, tl_error *err);
    int (*push)(tl_engine *e, tl_error *err);
    size_t (*memory_bytes)(const tl_engine *e);
    void (*free)(tl_engine *e);
} tl_engine_ops;

struct tl_engine {
    const tl_engine_ops *ops;
    tl_model *m;         /* host parameters */
    float *opt_m, *opt_v; /* host AdamW moments, model layout */
    int B, T;            /* micro-batch shape */
};

/* Makes an engine for micro-batches of B x T tokens (used by train options to pick
 * a backend; NULL factory means the CPU engine). */
typedef tl_engine *(*tl_engine_factory)(tl_model *m, float *opt_m, float *opt_v, int B, int T, void *user,
                                        tl_error *err);

tl_engine *tl_engine_cpu_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, tl_error *err);
/* grad_block 0: no gradient block; the backward writes into the storage of the
 * model's grads_hook (ZeRO-2/3, src/grad_shard.h), and grad_norm/update fail. */
tl_engine *tl_engine_cpu_create_ex(tl_model *m, float *opt_m, float *opt_v, int B, int T, int grad_block,
                                   tl_error *err);
/* The CPU engine's host gradient block (model layout); NULL for other engines and
 * without a block.  The distributed loop (train.c) reduces it across ranks itself. */
float *tl_engine_cpu_grads(tl_engine *e);
int tl_engine_is_cpu(const tl_engine *e);

#endif

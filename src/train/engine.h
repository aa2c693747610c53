/* engine.h - where the arithmetic of a training step runs.
 *
 * The loop in train.c drives an engine through this small interface, the same
 * way for every engine and every number of ranks (llm.c's shape):
 *
 *     zero_grads
 *     for each micro-batch: forward_backward   (this rank's samples)
 *     reduce_grads                             (sum over the job's ranks)
 *     grad_norm                                (global, from each rank's shard)
 *     update                                   (clip + AdamW on this rank's shard, then share it)
 *
 * One process is simply the job of one rank at ZeRO stage 0, where reduce_grads
 * and gather_params do nothing.  The CPU engine (engine_cpu.c) is the reference
 * and implements every ZeRO stage over the deterministic collectives of
 * distributed.h and grad_shard.h; the CUDA engine (src/cuda/) is the fast path.
 *
 * An engine is bound to a host model and the host AdamW moments (this rank's
 * shard of them at stages 1-3): `pull` makes them current (before a checkpoint
 * or an evaluation), `push` uploads them (after a resume).  On the CPU both are
 * no-ops. */
#ifndef TL_ENGINE_H
#define TL_ENGINE_H

#include "common.h"
#include "distributed.h"
#include "model.h"
#include "optimizer.h"

typedef struct tl_engine tl_engine;

/* The job an engine's step belongs to (docs/distributed.md). */
typedef struct {
    tl_comm *comm;  /* the ranks; NULL: one process */
    int zero;       /* ZeRO stage 0-3: 1 shards the moments, 2 also the gradients, 3 also the parameters */
    int overlap;    /* stages 2-3: reduce each unit on a communication thread (comm made with threads) */
} tl_engine_job;

typedef struct {
    const char *name;
    int (*zero_grads)(tl_engine *e, tl_error *err);
    /* adds grad_scale * d(mean loss)/dparams for one micro-batch [B*T] */
    int (*forward_backward)(tl_engine *e, const int *inputs, const int *targets, float grad_scale, double *loss,
                            tl_error *err);
    /* forward only: summed loss and the number of counted targets */
    int (*loss)(tl_engine *e, const int *inputs, const int *targets, double *loss_sum, long *count, tl_error *err);
    /* after the step's last micro-batch: the gradients summed over the ranks (each
     * rank's shard of the sum at stages 2-3); nothing to do on one rank */
    int (*reduce_grads)(tl_engine *e, tl_error *err);
    /* global L2 norm of the reduced gradients (every rank gets the same value) */
    int (*grad_norm)(tl_engine *e, double *norm, tl_error *err);
    /* clip by min(1, clip/(norm+1e-6)) and apply AdamW step `step` (1-based) to this
     * rank's shard, then make the updated parameters available to the ranks that
     * need them (stages 1-2: gathered; stage 3: left sharded) */
    int (*update)(tl_engine *e, const tl_adamw_config *c, double lr, long step, double norm, tl_error *err);
    /* stage 3: the whole parameter block current on this rank (root_only: only on
     * rank 0, which writes checkpoints); no-op at stages 0-2 */
    int (*gather_params)(tl_engine *e, int root_only, tl_error *err);
    /* stage 3: back to this rank's slice only (after a root-only gather); no-op at stages 0-2 */
    int (*release_params)(tl_engine *e, tl_error *err);
    int (*pull)(tl_engine *e, tl_error *err);
    int (*push)(tl_engine *e, tl_error *err);
    /* waits for the work queued on a device (for timing); NULL: the engine's calls return when done */
    int (*sync)(tl_engine *e, tl_error *err);
    size_t (*memory_bytes)(const tl_engine *e);
    void (*free)(tl_engine *e);
    /* DPO (NULL in an engine without them: DPO is then refused).  row_losses: forward
     * only, each row's cross-entropy into row_loss[B*T] (0 for an ignored target);
     * forward_backward_rows: adds d(sum_r row_weight[r] * CE_r)/dparams, *loss the sum */
    int (*row_losses)(tl_engine *e, const int *inputs, const int *targets, float *row_loss, tl_error *err);
    int (*forward_backward_rows)(tl_engine *e, const int *inputs, const int *targets, const float *row_weight,
                                 double *loss, tl_error *err);
} tl_engine_ops;

struct tl_engine {
    const tl_engine_ops *ops;
    tl_model *m;         /* host parameters */
    float *opt_m, *opt_v; /* host AdamW moments: this rank's shard [lo, hi) at stages 1-3, else all */
    int B, T;            /* micro-batch shape */
    int rank, world, zero;
    size_t lo, hi;       /* this rank's shard of the flat parameter block (everything on one rank) */
};

/* Makes an engine for micro-batches of B x T tokens in job (NULL: one process).
 * train options pick a backend with it; a NULL factory means the CPU engine. */
typedef tl_engine *(*tl_engine_factory)(tl_model *m, float *opt_m, float *opt_v, int B, int T,
                                        const tl_engine_job *job, void *user, tl_error *err);

/* The CPU reference engine (user: a const tl_engine_opts*, or NULL for fp32; with
 * bf16 set, bf16 mixed precision, not at stage 3).  At stage 3 it installs the model's
 * params hook (each unit gathered just before use); at stages 2-3 the model's
 * grads hook (src/dist/grad_shard.h); both removed when it is freed. */
tl_engine *tl_engine_cpu_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, const tl_engine_job *job,
                                void *user, tl_error *err);
/* This process's place in job (NULL: one process) for a flat block of n
 * elements: its rank, the number of ranks, and its shard [lo, hi) (everything
 * on one rank at stage 0); fails on a stage outside 0-3. */
int tl_engine_job_place(const tl_engine_job *job, size_t n, int *rank, int *world, size_t *lo, size_t *hi,
                        tl_error *err);
/* Fills the job fields of e (rank, world, zero, shard range) from job. */
int tl_engine_bind_job(tl_engine *e, const tl_engine_job *job, tl_error *err);

/* ---- engines by name ----
 * The options every engine kind reads (a kind ignores what it does not have). */
typedef struct {
    int fp32;      /* 1: fp32 arithmetic throughout; 0: the engine's default (CUDA: bf16 matrix inputs,
                    * fp32 master weights and AdamW state) */
    int bf16;      /* 1: bf16 asked for by name (the CPU engine: bf16 mixed precision; its default is fp32) */
    int recompute; /* recompute activations in the backward pass instead of keeping them (CUDA) */
    int device;    /* device ordinal (CUDA) */
} tl_engine_opts;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* user: a const tl_engine_opts* (NULL: defaults) */
    tl_engine_factory create;
    /* 1 if the hardware is present */
    int (*available)(void);
    /* the device's name (NULL on the CPU) */
    int (*describe)(int device, char *buf, size_t n, tl_error *err);
    /* the measured dense matrix-product peak in TFLOP/s of the engine's default arithmetic (NULL: not measured) */
    int (*matmul_peak)(int device, double *tflops, tl_error *err);
} tl_engine_kind;

/* The engine kind called name, or NULL when this program was built without it:
 * "cpu" always; "cuda" when the CUDA objects are linked in (`make cuda`: they
 * define tl_engine_kind_cuda, which the plain build leaves undefined). */
const tl_engine_kind *tl_engine_find(const char *name);
/* The engine a run uses when none is named: the first available of cuda, cpu. */
const tl_engine_kind *tl_engine_default(void);

#endif

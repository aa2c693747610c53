/* cuda_engine.h - the GPU training engine: the model's parameters (fp32
 * master copy, plus a bf16 copy in bf16 mode), gradients, AdamW moments and
 * activations live on one GPU; the training loop drives it through these calls.
 * Host-side layouts are exactly tl_model's flat block (HF tensor order), so
 * checkpoints, resume and the CPU reference need no conversion.
 *
 * A step in the training loop (mirrors the CPU loop in src/train/train.c):
 *     tl_cuda_engine_zero_grads(e)
 *     for each micro-batch: tl_cuda_engine_forward_backward(e, in, tg, 1/accum, &l)
 *     tl_cuda_engine_grad_norm(e, &norm)
 *     if (isfinite(norm) && isfinite(loss)) tl_cuda_engine_adamw(e, &opt, lr, step + 1, norm)
 * Checkpoint: tl_cuda_engine_get_params(e, m->params) and
 * tl_cuda_engine_get_opt_state(e, st.m, st.v), then save as usual.
 * Resume: load as usual, then set_params and set_opt_state.
 * Validation: tl_cuda_engine_loss.
 *
 * Every function returns 0, or -1 with err filled; nothing prints. */
#ifndef TL_CUDA_ENGINE_H
#define TL_CUDA_ENGINE_H

#include <stddef.h>

/* the project's C headers get C linkage when a .cu file includes them */
#ifdef __cplusplus
extern "C" {
#endif
#include "common.h"
#include "cuda_kernels.h"
#include "model.h"
#include "optimizer.h"


typedef struct {
    int precision; /* TL_CUDA_BF16 (mixed precision, default) or TL_CUDA_F32 (all fp32, no TF32) */
    int recompute; /* 1: keep no SwiGLU outputs; recompute them in the backward pass */
    int device;    /* CUDA device ordinal */
    int lm_chunk;  /* rows per cross-entropy chunk; 0: min(B*T, 4096) */
} tl_cuda_opts;

tl_cuda_opts tl_cuda_opts_default(void);

typedef struct tl_cuda_engine tl_cuda_engine;

/* Creates the engine for micro-batches of B x T tokens and uploads m's
 * parameters; fails with "no CUDA GPU: ..." when there is none. */
tl_cuda_engine *tl_cuda_engine_create(const tl_model *m, int B, int T, const tl_cuda_opts *o, tl_error *err);
void tl_cuda_engine_free(tl_cuda_engine *e);
/* Device memory the engine allocated (bytes). */
size_t tl_cuda_engine_memory_bytes(const tl_cuda_engine *e);

/* Host <-> device copies of the flat fp32 blocks (n_params floats each). */
int tl_cuda_engine_set_params(tl_cuda_engine *e, const float *params, tl_error *err);
int tl_cuda_engine_get_params(tl_cuda_engine *e, float *params, tl_error *err);
int tl_cuda_engine_set_opt_state(tl_cuda_engine *e, const float *m, const float *v, tl_error *err);
int tl_cuda_engine_get_opt_state(tl_cuda_engine *e, float *m, float *v, tl_error *err);
int tl_cuda_engine_get_grads(tl_cuda_engine *e, float *grads, tl_error *err);
/* Replaces the device gradients (ranks reduced on the host, src/cuda/engine_adapter.c). */
int tl_cuda_engine_set_grads(tl_cuda_engine *e, const float *grads, tl_error *err);

int tl_cuda_engine_zero_grads(tl_cuda_engine *e, tl_error *err);
/* As tl_model_forward_backward: tokens/targets [B*T] on the host (target < 0
 * ignored); adds grad_scale * d(mean loss)/dparam into the device gradients. */
int tl_cuda_engine_forward_backward(tl_cuda_engine *e, const int *tokens, const int *targets, float grad_scale,
                                    double *loss, tl_error *err);
/* As tl_model_loss (forward only). */
int tl_cuda_engine_loss(tl_cuda_engine *e, const int *tokens, const int *targets, double *loss_sum, long *count,
                        tl_error *err);
/* Global L2 norm of the gradients (as tl_grad_norm). */
int tl_cuda_engine_grad_norm(tl_cuda_engine *e, double *norm, tl_error *err);
/* Clip by c->clip against `norm` (as tl_clip_grads) fused into AdamW (as
 * tl_adamw_update); `step` is 1-based.  Refreshes the bf16 weight copy. */
int tl_cuda_engine_adamw(tl_cuda_engine *e, const tl_adamw_config *c, double lr, long step, double norm,
                         tl_error *err);
/* Waits for queued GPU work (for timing). */
int tl_cuda_engine_sync(tl_cuda_engine *e, tl_error *err);

#ifdef __cplusplus
}
#endif
#endif

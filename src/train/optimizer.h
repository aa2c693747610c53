/* optimizer.h - AdamW (decoupled weight decay, as torch.optim.AdamW), the
 * warmup + cosine learning-rate schedule, and global-norm gradient clipping. */
#ifndef TL_OPTIMIZER_H
#define TL_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    double lr, min_lr;
    double beta1, beta2, eps, weight_decay;
    long warmup_steps, decay_steps; /* cosine reaches min_lr at decay_steps */
    double clip;                    /* max global grad norm; <= 0 disables */
} tl_adamw_config;

/* TinyLlama's settings: lr 4e-4 -> 4e-5, betas (0.9, 0.95), eps 1e-8, wd 0.1, clip 1.0, 2000 warmup. */
tl_adamw_config tl_adamw_defaults(void);

/* Checks every setting is usable: lr > 0, 0 <= min_lr <= lr, beta1 and beta2 in
 * [0, 1), eps > 0, weight_decay >= 0, clip >= 0 (0 disables), 0 <= warmup_steps
 * <= decay_steps; all finite.  On error *field (when not NULL) names the bad
 * field ("lr", "min_lr", "beta1", "beta2", "eps", "weight_decay", "clip",
 * "warmup_steps", "decay_steps"), so a caller can name its own option. */
int tl_adamw_config_validate(const tl_adamw_config *c, const char **field, tl_error *err);

/* Learning-rate schedules as functions of training tokens, so that a change of
 * the global batch keeps the curve continuous.  All token counts are global (every rank). */
typedef enum { TL_SCHED_COSINE = 0, TL_SCHED_WSD = 1 } tl_sched_kind;
typedef enum { TL_COOLDOWN_LINEAR = 0, TL_COOLDOWN_SQRT = 1 } tl_cooldown_shape;

typedef struct {
    int kind;        /* tl_sched_kind */
    double warmup;   /* tokens of linear warmup to lr */
    double decay;    /* tokens at which min_lr is reached (cosine: the end of the cosine; wsd: of the cooldown) */
    double cooldown; /* wsd: tokens of the cooldown that ends at `decay` (lr is constant before it) */
    int shape;       /* wsd: tl_cooldown_shape: lr - (lr - min_lr) f, or min_lr + (lr - min_lr)(1 - sqrt f) */
} tl_lr_schedule;

/* Checks warmup >= 0, decay >= warmup, 0 <= cooldown <= decay - warmup (wsd), all finite;
 * *field (when not NULL) names the bad one ("warmup", "decay", "cooldown"). */
int tl_lr_schedule_validate(const tl_lr_schedule *s, const char **field, tl_error *err);

/* Learning rate of the step that takes the token count from `before` to `after`:
 * warmup lr * min(1, after / warmup) while before < warmup; then (cosine)
 * min_lr + (lr - min_lr) (1 + cos(pi (before - warmup) / (decay - warmup))) / 2, or
 * (wsd) lr until decay - cooldown, then the cooldown; min_lr from `decay` on.  With
 * a fixed batch of b tokens (before = step b, warmup = W b, decay = D b) it is
 * tl_lr_at(step) bit for bit: the warmup is computed in units of the step's batch. */
double tl_lr_at_tokens(const tl_adamw_config *c, const tl_lr_schedule *s, double before, double after);

/* Learning rate for 0-based `step`: lr * (step+1)/warmup during warmup, then
 * min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2 until decay_steps, then min_lr. */
double tl_lr_at(const tl_adamw_config *c, long step);

/* The recent losses a spike is measured against: a ring of the last `cap` losses
 * of updated steps (at most TL_LOSS_WINDOW_MAX). */
#define TL_LOSS_WINDOW_MAX 1024
typedef struct {
    int cap, n, head;
    double v[TL_LOSS_WINDOW_MAX];
} tl_loss_window;

void tl_loss_window_init(tl_loss_window *w, int cap);
void tl_loss_window_push(tl_loss_window *w, double loss);
/* (loss - mean) / standard deviation (population) of the window, summed oldest
 * first; 0 while it holds fewer than min(cap, 8) losses or they are all equal. */
double tl_loss_window_z(const tl_loss_window *w, double loss);

/* sqrt(sum g^2) over n values (fixed-order blocked reduction, double accumulators). */
double tl_grad_norm(const float *g, size_t n);
/* Scales g like torch's clip_grad_norm_: by min(1, clip / (norm + 1e-6)). */
void tl_clip_grads(float *g, size_t n, double norm, double clip);

/* One AdamW update of params from grads; `step` is 1-based (after increment). */
void tl_adamw_update(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                     const tl_adamw_config *c, long step);

/* ---- bf16 mixed precision's optimizer pass ----
 * The fp32 path above reads the whole parameter block several times per step
 * (norm, clip, update, then the bf16 copy); these do the same work in fewer
 * passes. */

/* The blocks of tl_grad_norm (a shard starts on a block boundary: TL_SHARD_ALIGN,
 * so a shard's partials, tl_grad_sumsq_blocks, are the same blocks). */
#define TL_NORM_BLOCK ((size_t)1 << 16)

/* The factor tl_clip_grads scales by: min(1, clip / (norm + 1e-6)) as a float,
 * 1 when clip <= 0. */
float tl_clip_scale(double norm, double clip);

/* tl_clip_grads(grads, n, norm, clip) then tl_adamw_update, with gscale =
 * tl_clip_scale(norm, clip), in one pass that leaves grads unscaled (with
 * zero_grads: zeroed) and also writes the bf16 copy of the updated params
 * (tl_round_bf16); params, m and v come out bit-identical to the two calls'. */
void tl_adamw_update_bf16(float *params, uint16_t *params_bf16, float *grads, float *m, float *v, size_t n,
                          double lr, const tl_adamw_config *c, long step, float gscale, int zero_grads);

/* The fp32 step's clip and update in one pass (one read and write of the
 * gradient block fewer): tl_adamw_update_bf16 without the bf16 copy. */
void tl_adamw_update_clipped(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                             const tl_adamw_config *c, long step, float gscale);

#endif

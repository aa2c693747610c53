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

/* Learning rate for 0-based `step`: lr * (step+1)/warmup during warmup, then
 * min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2 until decay_steps, then min_lr. */
double tl_lr_at(const tl_adamw_config *c, long step);

/* sqrt(sum g^2) over n values (fixed-order blocked reduction, double accumulators). */
double tl_grad_norm(const float *g, size_t n);
/* Scales g like torch's clip_grad_norm_: by min(1, clip / (norm + 1e-6)). */
void tl_clip_grads(float *g, size_t n, double norm, double clip);

/* One AdamW update of params from grads; `step` is 1-based (after increment). */
void tl_adamw_update(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                     const tl_adamw_config *c, long step);

#endif

/* optimizer.c - AdamW and the learning-rate schedule. */
#include "optimizer.h"

#include <math.h>
#include <string.h>

#include "gemm.h"
#include "sumsq.h"

tl_adamw_config tl_adamw_defaults(void) {
    tl_adamw_config c = {4e-4, 4e-5, 0.9, 0.95, 1e-8, 0.1, 2000, 1430000, 1.0};
    return c;
}

int tl_adamw_config_validate(const tl_adamw_config *c, const char **field, tl_error *err) {
    const char *f = NULL;
    const char *why = NULL;
    double v = 0;
    /* written as !(ok) so a NaN fails every test */
    if (!(c->lr > 0 && isfinite(c->lr))) f = "lr", v = c->lr, why = "must be a finite number > 0";
    else if (!(c->min_lr >= 0 && c->min_lr <= c->lr))
        f = "min_lr", v = c->min_lr, why = "must be in [0, lr]";
    else if (!(c->beta1 >= 0 && c->beta1 < 1)) f = "beta1", v = c->beta1, why = "must be in [0, 1)";
    else if (!(c->beta2 >= 0 && c->beta2 < 1)) f = "beta2", v = c->beta2, why = "must be in [0, 1)";
    else if (!(c->eps > 0 && isfinite(c->eps))) f = "eps", v = c->eps, why = "must be a finite number > 0";
    else if (!(c->weight_decay >= 0 && isfinite(c->weight_decay)))
        f = "weight_decay", v = c->weight_decay, why = "must be a finite number >= 0";
    else if (!(c->clip >= 0 && isfinite(c->clip)))
        f = "clip", v = c->clip, why = "must be a finite number >= 0 (0 disables clipping)";
    else if (c->warmup_steps < 0) f = "warmup_steps", v = (double)c->warmup_steps, why = "must be >= 0";
    else if (c->decay_steps < c->warmup_steps)
        f = "decay_steps", v = (double)c->decay_steps, why = "must be at least the warmup steps";
    if (field) *field = f;
    if (!f) return 0;
    return tl_fail(err, "%s %s (got %g)", f, why, v);
}

double tl_lr_at(const tl_adamw_config *c, long step) {
    if (step < c->warmup_steps) return c->lr * (double)(step + 1) / (double)c->warmup_steps;
    if (step >= c->decay_steps) return c->min_lr;
    double progress = (double)(step - c->warmup_steps) / (double)(c->decay_steps - c->warmup_steps);
    return c->min_lr + 0.5 * (1.0 + cos(M_PI * progress)) * (c->lr - c->min_lr);
}

int tl_lr_schedule_validate(const tl_lr_schedule *s, const char **field, tl_error *err) {
    const char *f = NULL, *why = NULL;
    double v = 0;
    if (!(s->warmup >= 0 && isfinite(s->warmup))) f = "warmup", v = s->warmup, why = "must be a finite number >= 0";
    else if (!(s->decay >= s->warmup && isfinite(s->decay)))
        f = "decay", v = s->decay, why = "must be at least the warmup";
    else if (s->kind == TL_SCHED_WSD && !(s->cooldown >= 0 && s->cooldown <= s->decay - s->warmup))
        f = "cooldown", v = s->cooldown, why = "must be in [0, decay - warmup]";
    if (field) *field = f;
    if (!f) return 0;
    return tl_fail(err, "schedule %s %s (got %.0f tokens)", f, why, v);
}

double tl_lr_at_tokens(const tl_adamw_config *c, const tl_lr_schedule *s, double before, double after) {
    if (before < s->warmup) {
        /* in units of this step's batch, so a fixed batch rounds exactly as tl_lr_at */
        double unit = after > before ? after - before : 1.0;
        double a = after / unit, w = s->warmup / unit;
        return c->lr * (a < w ? a : w) / w;
    }
    if (before >= s->decay) return c->min_lr;
    if (s->kind == TL_SCHED_WSD) {
        double start = s->decay - s->cooldown;
        if (before < start) return c->lr;
        double f = (before - start) / s->cooldown;
        if (s->shape == TL_COOLDOWN_SQRT) return c->min_lr + (c->lr - c->min_lr) * (1.0 - sqrt(f));
        return c->lr - (c->lr - c->min_lr) * f;
    }
    double progress = (before - s->warmup) / (s->decay - s->warmup);
    return c->min_lr + 0.5 * (1.0 + cos(M_PI * progress)) * (c->lr - c->min_lr);
}

void tl_loss_window_init(tl_loss_window *w, int cap) {
    w->cap = cap < 1 ? 1 : cap > TL_LOSS_WINDOW_MAX ? TL_LOSS_WINDOW_MAX : cap;
    w->n = w->head = 0;
}

void tl_loss_window_push(tl_loss_window *w, double loss) {
    w->v[(w->head + w->n) % w->cap] = loss;
    if (w->n < w->cap) w->n++;
    else w->head = (w->head + 1) % w->cap;
}

double tl_loss_window_z(const tl_loss_window *w, double loss) {
    if (w->n < (w->cap < 8 ? w->cap : 8)) return 0;
    double sum = 0, sq = 0;
    for (int i = 0; i < w->n; i++) sum += w->v[(w->head + i) % w->cap];
    const double mean = sum / w->n;
    for (int i = 0; i < w->n; i++) {
        double d = w->v[(w->head + i) % w->cap] - mean;
        sq += d * d;
    }
    const double sd = sqrt(sq / w->n);
    return sd > 0 ? (loss - mean) / sd : 0;
}

double tl_grad_norm(const float *g, size_t n) {
    /* Blocks of fixed size, each summed by one thread, added in block order: the
     * same result for any thread count (no reduction clause, whose per-thread
     * partial sums would depend on it). */
    const size_t BLOCK = TL_NORM_BLOCK;
    size_t nb = (n + BLOCK - 1) / BLOCK;
    double total = 0.0;
#pragma omp parallel for schedule(static) ordered
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        double s = tl_sumsq(g + lo, hi - lo);
#pragma omp ordered
        total += s;
    }
    return sqrt(total);
}

float tl_clip_scale(double norm, double clip) {
    if (clip <= 0) return 1.0f;
    double coef = clip / (norm + 1e-6);
    return coef >= 1.0 ? 1.0f : (float)coef;
}

void tl_clip_grads(float *g, size_t n, double norm, double clip) {
    if (clip <= 0) return;
    double coef = clip / (norm + 1e-6);
    if (coef >= 1.0) return;
    float cf = (float)coef;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= cf;
}

/* The inner loop, compiled for AVX-512, AVX2 and baseline x86-64, chosen at load
 * time by the CPU's flags ("arch=haswell" clones are chosen by CPU model: every
 * CPU newer than the models GCC knows ran the baseline).  No contraction under
 * -std=c11: every clone rounds alike. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void adamw_range(
    float *params, const float *grads, float *m, float *v, size_t n, float decay, float b2, float omb1, float omb2,
    float step_size, float bc2_sqrt, float eps) {
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        params[i] *= decay;
        m[i] += omb1 * (g - m[i]);
        v[i] = v[i] * b2 + omb2 * (g * g);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] -= step_size * (m[i] / denom);
    }
}

/* One step's AdamW constants.  The order of torch's single-tensor AdamW: decay,
 * moments, bias-corrected step; (1 - beta) is formed in double and rounded once,
 * as torch passes it as a Python float. */
typedef struct {
    float decay, b2, omb1, omb2, step_size, bc2_sqrt, eps;
} adamw_k;

static adamw_k adamw_constants(const tl_adamw_config *c, double lr, long step) {
    const double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
    return (adamw_k){.decay = (float)(1.0 - lr * c->weight_decay), .b2 = (float)c->beta2,
                     .omb1 = (float)(1.0 - c->beta1), .omb2 = (float)(1.0 - c->beta2),
                     .step_size = (float)(lr / bc1), .bc2_sqrt = (float)sqrt(bc2), .eps = (float)c->eps};
}

enum { ADAMW_BLOCK = 1 << 14 };

void tl_adamw_update(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                     const tl_adamw_config *c, long step) {
    const adamw_k k = adamw_constants(c, lr, step);
    const size_t nb = (n + ADAMW_BLOCK - 1) / ADAMW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * ADAMW_BLOCK, len = n - lo < ADAMW_BLOCK ? n - lo : ADAMW_BLOCK;
        adamw_range(params + lo, grads + lo, m + lo, v + lo, len, k.decay, k.b2, k.omb1, k.omb2, k.step_size,
                    k.bc2_sqrt, k.eps);
    }
}

/* adamw_range with the clip's scale applied to each gradient as it is read
 * (g * 1 is g: no clipping changes nothing), the operations in the same order, so
 * every clone rounds as adamw_range does (no contraction under -std=c11). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void adamw_range_scaled(
    float *params, const float *grads, float *m, float *v, size_t n, float gscale, float decay, float b2, float omb1,
    float omb2, float step_size, float bc2_sqrt, float eps) {
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * gscale;
        float p = params[i] * decay;
        float mi = m[i] + omb1 * (g - m[i]);
        float vi = v[i] * b2 + omb2 * (g * g);
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        params[i] = p - step_size * (mi / denom);
    }
}

/* The clipped update by blocks; with params_bf16, each block's bf16 copy too,
 * while the block is still in cache (on the thread that updated it), and with
 * zero (grads itself) the block's gradients zeroed once read: the next step's
 * zeroing without its own pass over the block. */
static void adamw_pass(float *params, uint16_t *params_bf16, const float *grads, float *zero, float *m, float *v,
                       size_t n, double lr, const tl_adamw_config *c, long step, float gscale) {
    const adamw_k k = adamw_constants(c, lr, step);
    const size_t nb = (n + ADAMW_BLOCK - 1) / ADAMW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * ADAMW_BLOCK, len = n - lo < ADAMW_BLOCK ? n - lo : ADAMW_BLOCK;
        adamw_range_scaled(params + lo, grads + lo, m + lo, v + lo, len, gscale, k.decay, k.b2, k.omb1, k.omb2,
                           k.step_size, k.bc2_sqrt, k.eps);
        if (params_bf16) tl_round_bf16_here(params + lo, len, params_bf16 + lo);
        if (zero) memset(zero + lo, 0, sizeof(float) * len);
    }
}

void tl_adamw_update_bf16(float *params, uint16_t *params_bf16, float *grads, float *m, float *v, size_t n,
                          double lr, const tl_adamw_config *c, long step, float gscale, int zero_grads) {
    adamw_pass(params, params_bf16, grads, zero_grads ? grads : NULL, m, v, n, lr, c, step, gscale);
}

void tl_adamw_update_clipped(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                             const tl_adamw_config *c, long step, float gscale) {
    adamw_pass(params, NULL, grads, NULL, m, v, n, lr, c, step, gscale);
}

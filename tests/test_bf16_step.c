/* test_bf16_step.c - the bf16 step's own kernels: the fused optimizer pass
 * against the fp32 path's separate passes (bit for bit), the lane-summed gradient
 * norm against a long double sum, and attention's bf16 products against the
 * double-precision definition on the same bf16 inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "harness.h"
#include "ops.h"
#include "optimizer.h"
#include "rng.h"

/* tl_adamw_update_bf16 = tl_clip_grads + tl_adamw_update + tl_round_bf16, exactly:
 * two steps, clipped and not, on a length with partial blocks and a tail. */
static void test_adamw_fused(tl_test_ctx *t) {
    const size_t n = 3 * 16384 + 77;
    tl_rng g;
    tl_rng_seed(&g, 23);
    float *p1 = malloc(4 * n), *p2 = malloc(4 * n), *gr = malloc(4 * n), *gc = malloc(4 * n);
    float *m1 = calloc(n, 4), *v1 = calloc(n, 4), *m2 = calloc(n, 4), *v2 = calloc(n, 4);
    uint16_t *b1 = malloc(2 * n), *b2 = malloc(2 * n);
    for (size_t i = 0; i < n; i++) p1[i] = p2[i] = (float)(0.05 * tl_rng_normal(&g));
    tl_adamw_config c = tl_adamw_defaults();
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < n; i++) gr[i] = (float)(step == 2 ? 1e-4 : 0.1) * (float)tl_rng_normal(&g);
        const double norm = tl_grad_norm(gr, n); /* step 2: under the clip, 1 and 3: over */
        memcpy(gc, gr, 4 * n);
        tl_clip_grads(gc, n, norm, c.clip);
        tl_adamw_update(p1, gc, m1, v1, n, 3e-4, &c, step);
        tl_round_bf16(p1, n, b1);
        const float s = tl_clip_scale(norm, c.clip);
        CHECK(step == 2 ? s == 1.0f : s < 1.0f);
        memcpy(gc, gr, 4 * n);
        tl_adamw_update_bf16(p2, b2, gc, m2, v2, n, 3e-4, &c, step, s);
        CHECK_MSG(!memcmp(gc, gr, 4 * n), "step %d: the fused pass changed the gradients", step);
        CHECK_MSG(!memcmp(p1, p2, 4 * n) && !memcmp(m1, m2, 4 * n) && !memcmp(v1, v2, 4 * n),
                  "step %d: fused update differs from clip + AdamW", step);
        CHECK_MSG(!memcmp(b1, b2, 2 * n), "step %d: fused bf16 copy differs from tl_round_bf16", step);
    }
    free(p1), free(p2), free(gr), free(gc), free(m1), free(v1), free(m2), free(v2), free(b1), free(b2);
}

/* The lanes' norm: within 1e-13 of a long double sum, the same bits on 1, 2 and 3 threads. */
static void test_norm_lanes(tl_test_ctx *t) {
    static const size_t sizes[] = {0, 1, 15, 17, (1u << 16) + 3, (1u << 18) + 77};
    tl_rng g;
    tl_rng_seed(&g, 29);
    const int saved = tl_get_threads();
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const size_t n = sizes[k];
        float *x = malloc(4 * (n + 1));
        long double ref = 0;
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)(tl_rng_normal(&g) * (i % 7 == 0 ? 1e3 : 1e-3));
            ref += (long double)x[i] * x[i];
        }
        double r[3];
        for (int th = 1; th <= 3; th++) {
            tl_set_threads(th);
            r[th - 1] = tl_grad_norm_lanes(x, n);
        }
        CHECK_MSG(r[0] == r[1] && r[1] == r[2], "n %zu: the norm depends on the thread count", n);
        CHECK_MSG(fabs(r[0] - (double)sqrtl(ref)) <= 1e-13 * (double)sqrtl(ref), "n %zu: norm %.17g, exact %.17g",
                  n, r[0], (double)sqrtl(ref));
        free(x);
    }
    tl_set_threads(saved);
}

const tl_test tests_bf16_step[] = {
    {"bf16/adamw_fused_matches_separate_passes", test_adamw_fused},
    {"bf16/grad_norm_lanes", test_norm_lanes},
    {NULL, NULL},
};

/* test_fp32_step.c - the fp32 training step's fused kernels against the
 * separate passes they replace. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "optimizer.h"
#include "rng.h"

/* tl_adamw_update_clipped = tl_clip_grads + tl_adamw_update, bit for bit, with
 * the gradients left as they were: steps over and under the clip, on a length
 * with partial blocks and a tail. */
static void test_adamw_clipped(tl_test_ctx *t) {
    const size_t n = 3 * 16384 + 77;
    tl_rng g;
    tl_rng_seed(&g, 31);
    float *p1 = malloc(4 * n), *p2 = malloc(4 * n), *gr = malloc(4 * n), *gc = malloc(4 * n);
    float *m1 = calloc(n, 4), *v1 = calloc(n, 4), *m2 = calloc(n, 4), *v2 = calloc(n, 4);
    for (size_t i = 0; i < n; i++) p1[i] = p2[i] = (float)(0.05 * tl_rng_normal(&g));
    tl_adamw_config c = tl_adamw_defaults();
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < n; i++) gr[i] = (float)(step == 2 ? 1e-4 : 0.1) * (float)tl_rng_normal(&g);
        const double norm = tl_grad_norm(gr, n); /* step 2: under the clip, 1 and 3: over */
        memcpy(gc, gr, 4 * n);
        tl_clip_grads(gc, n, norm, c.clip);
        tl_adamw_update(p1, gc, m1, v1, n, 3e-4, &c, step);
        const float s = tl_clip_scale(norm, c.clip);
        CHECK(step == 2 ? s == 1.0f : s < 1.0f);
        memcpy(gc, gr, 4 * n);
        tl_adamw_update_clipped(p2, gc, m2, v2, n, 3e-4, &c, step, s);
        CHECK_MSG(!memcmp(gc, gr, 4 * n), "step %d: the fused pass changed the gradients", step);
        CHECK_MSG(!memcmp(p1, p2, 4 * n) && !memcmp(m1, m2, 4 * n) && !memcmp(v1, v2, 4 * n),
                  "step %d: fused update differs from clip + AdamW", step);
    }
    free(p1), free(p2), free(gr), free(gc), free(m1), free(v1), free(m2), free(v2);
}

const tl_test tests_fp32_step[] = {
    {"fp32_step/adamw_clipped", test_adamw_clipped},
    {NULL, NULL},
};

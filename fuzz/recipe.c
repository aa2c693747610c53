/* fuzz/recipe.c - tl_recipe_parse (training recipe YAML) on arbitrary text: it must
 * refuse with a message or accept a recipe whose phases hold what the trainer needs. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tl_recipe r;
    tl_train_request rq = tl_train_request_defaults();
    tl_error err;
    if (tl_recipe_parse((const char *)data, size, "recipe.yaml", &r, &rq, &err)) {
        fz_refused(err.msg);
        return 0;
    }
    fz_accepted();
    if (r.n_phases < 1 || r.n_phases > TL_RECIPE_MAX_PHASES || r.phase[0].n_sources < 1 || rq.steps != 0) abort();
    for (int p = 0; p < r.n_phases; p++) {
        const tl_recipe_phase *ph = &r.phase[p];
        double sum = 0;
        if (!(ph->tokens >= 1) || ph->batch_tokens < 0 || ph->ramp_tokens < 0 || ph->lr < 0) abort();
        if (ph->n_sources < 0 || ph->n_sources > TL_MIX_MAX_SOURCES || !ph->name[0]) abort();
        for (int k = 0; k < ph->n_sources; k++) {
            if (!ph->src[k].name[0] || !ph->src[k].path[0] || !(ph->src[k].weight >= 0)) abort();
            sum += ph->src[k].weight;
        }
        if (ph->n_sources && !(sum > 0)) abort();
    }
    if (r.n_val < 0 || r.n_val > TL_RECIPE_MAX_VAL_SETS) abort();
    for (int v = 0; v < r.n_val; v++) { /* named, with a path, each name once */
        if (!r.val[v].name[0] || !r.val[v].path[0] || r.val[v].line < 1) abort();
        for (int j = 0; j < v; j++)
            if (!strcmp(r.val[j].name, r.val[v].name)) abort();
    }
    if (tl_adamw_config_validate(&rq.opt, NULL, &err)) abort();
    return 0;
}

/* fuzz/safetensors.c - tl_st_open on arbitrary bytes (the safetensors header and
 * the tensor table), then reads every tensor as fp32 and int the way loaders do. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[600];
    if (!path[0]) fz_path(path, sizeof path, "model.safetensors");
    fz_write(path, data, size);
    tl_safetensors st;
    tl_error err;
    if (tl_st_open(&st, path, &err)) return fz_refused(err.msg);
    fz_accepted();
    for (int i = 0; i < st.n; i++) {
        const tl_st_tensor *t = &st.tensors[i];
        if (tl_st_find(&st, t->name) != t) abort(); /* names are unique: a lookup finds this one */
        if (t->numel > ((size_t)1 << 20)) continue;
        float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
        int *k = malloc((t->numel ? t->numel : 1) * sizeof *k);
        if (!f || !k) abort();
        tl_st_read_f32(&st, t, f, t->numel, &err);
        tl_st_read_i32(&st, t, k, t->numel, &err);
        free(f);
        free(k);
    }
    tl_st_close(&st);
    return 0;
}

/* fuzz/st_index.c - tl_hf_files_open on a directory whose
 * model.safetensors.index.json is the input, beside two small valid shards
 * (a-00001.safetensors: "x", "y"; a-00002.safetensors: "z") written once. */
#include <stdlib.h>

#include "checkpoint.h"
#include "fuzz_util.h"

static void write_shard(const char *name, const char *const *names, int n) {
    static const float v[4] = {1, 2, 3, 4};
    tl_st_entry e[2];
    for (int i = 0; i < n; i++) e[i] = (tl_st_entry){.name = names[i], .dtype = TL_DT_F32, .ndim = 1, .shape = {4}, .data = v};
    char path[600];
    fz_path(path, sizeof path, name);
    tl_error err;
    if (tl_st_write(path, e, n, NULL, &err)) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char index[600];
    if (!index[0]) {
        static const char *const a[] = {"x", "y"}, *const b[] = {"z"};
        write_shard("a-00001.safetensors", a, 2);
        write_shard("a-00002.safetensors", b, 1);
        fz_path(index, sizeof index, "model.safetensors.index.json");
    }
    fz_write(index, data, size);
    tl_hf_files s;
    tl_error err;
    if (tl_hf_files_open(fz_scratch(), &s, &err)) return fz_refused(err.msg);
    fz_accepted();
    for (int i = 0; i < s.n; i++)
        for (int j = 0; j < s.st[i].n; j++) {
            const tl_st_tensor *t = &s.st[i].tensors[j];
            float f[4];
            if (t->numel <= 4) tl_st_read_f32(&s.st[i], t, f, t->numel, &err);
        }
    tl_hf_files_close(&s);
    return 0;
}

/* fuzz/train_state.c - a training_state.bin (tl_train_state_load: magic,
 * version, parameter count, exact size, checksum).  Input: one mode byte, then
 * the file.  The caller states how many parameters it expects: the count the
 * header claims when that is small, else 4.  Mode bit 0 makes the harness
 * write the right checksum (FNV-1a 64 over bytes 0..95 and the moments, at
 * bytes 96..103) so that mutations get past it. */
#include <stdlib.h>

#include "checkpoint.h"
#include "fuzz_util.h"

#define FZ_STATE_HEADER 128

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[600];
    if (!path[0]) fz_path(path, sizeof path, "training_state.bin");
    if (size < 1) return 0;
    int mode = data[0];
    size_t len = size - 1;
    uint8_t *file = malloc(len ? len : 1);
    if (!file) abort();
    memcpy(file, data + 1, len);
    size_t n_params = 4;
    if (len >= FZ_STATE_HEADER && fz_get64(file + 16) <= 4096) n_params = (size_t)fz_get64(file + 16);
    if ((mode & 1) && len >= FZ_STATE_HEADER)
        fz_put64(file + 96, fz_fnv1a(fz_fnv1a(FZ_FNV_INIT, file, 96), file + FZ_STATE_HEADER, len - FZ_STATE_HEADER));
    fz_write(path, file, len);
    free(file);

    tl_train_state s;
    memset(&s, 0, sizeof s);
    s.n_params = n_params;
    s.m = calloc(n_params + 1, sizeof(float));
    s.v = calloc(n_params + 1, sizeof(float));
    if (!s.m || !s.v) abort();
    tl_error err;
    if (tl_train_state_load(path, &s, &err)) {
        fz_refused(err.msg);
    } else {
        fz_accepted();
        double sum = 0; /* touch what was loaded */
        for (size_t i = 0; i < n_params; i++) sum += (double)s.m[i] + (double)s.v[i];
        (void)sum;
    }
    free(s.m);
    free(s.v);
    return 0;
}

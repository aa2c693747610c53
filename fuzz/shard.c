/* fuzz/shard.c - a token shard (tl_shard_open: the 64-byte header, sizes,
 * checksum, token range), then reading it through the data loader.
 * Input: one mode byte, then the file.  Mode bit 0 makes the harness write the
 * right checksum into the header so that mutations get past it to the checks
 * behind (docs/formats.md: FNV-1a 64 of the data at bytes 32..39). */
#include <stdlib.h>

#include "data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[600];
    if (!path[0]) fz_path(path, sizeof path, "train-00000.bin");
    if (size < 1) return 0;
    int mode = data[0];
    uint8_t *file = malloc(size);
    if (!file) abort();
    memcpy(file, data + 1, size - 1);
    size_t len = size - 1;
    if ((mode & 1) && len >= TL_SHARD_HEADER)
        fz_put64(file + 32, fz_fnv1a(FZ_FNV_INIT, file + TL_SHARD_HEADER, len - TL_SHARD_HEADER));
    fz_write(path, file, len);
    free(file);

    tl_shard s;
    tl_error err;
    if (tl_shard_open(&s, path, &err)) return fz_refused(err.msg);
    fz_accepted();
    int *sample = malloc(sizeof(int) * ((size_t)s.seq_len + 1));
    if (!sample) abort();
    if (s.n_samples) {
        tl_shard_sample(&s, 0, sample);
        tl_shard_sample(&s, s.n_samples - 1, sample);
    }
    free(sample);
    tl_shard_close(&s);

    /* the loader over the same file, shuffled or not, a few batches */
    tl_dataset d;
    const char *paths[1] = {path};
    if (tl_dataset_open(&d, paths, 1, &err)) return 0;
    if (!tl_dataset_check_vocab(&d, d.vocab_size, &err)) {
        tl_dataset_set_order(&d, mode & 2, 7);
        int T = d.seq_len < 64 ? d.seq_len : 64, B = 2;
        int *tok = malloc(sizeof(int) * (size_t)B * ((size_t)T + 1));
        if (!tok) abort();
        for (int i = 0; i < 3; i++)
            if (tl_dataset_next(&d, B, T, tok, &err)) break;
        if (!tl_dataset_seek(&d, 1, d.n_samples ? d.n_samples - 1 : 0, &err)) tl_dataset_next(&d, B, T, tok, &err);
        free(tok);
    }
    tl_dataset_close(&d);
    return 0;
}

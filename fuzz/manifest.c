/* fuzz/manifest.c - the manifest.json that `train` checks shards against
 * (tl_dataset_open_ex with verify): the input is the manifest of a directory whose
 * shards `prepare` wrote once at start-up (byte-level, --seq-len 8, paragraphs,
 * one validation sample: the same settings fuzz/make_seeds.sh uses, so its seed is
 * the valid manifest).  Opened by directory (the training split it lists) and by
 * the validation shard's own path; what opens is read through. */
#include <stdlib.h>

#include "data.h"
#include "fuzz_util.h"
#include "prepare.h"

static char dir[600], manifest[700], val[700];

static void make_dataset(void) {
    char txt[600];
    fz_path(txt, sizeof txt, "docs.txt");
    static const char docs[] = "one small document\n\nand another one, a little longer than the first\n";
    fz_write(txt, docs, sizeof docs - 1);
    fz_path(dir, sizeof dir, "d");
    tl_prepare_opts o;
    tl_prepare_default_opts(&o);
    const char *in[1] = {txt};
    o.inputs = in;
    o.n_inputs = 1;
    o.out_dir = dir;
    o.byte_level = 1;
    o.seq_len = 8;
    o.txt_mode = TL_TXT_PARAGRAPHS;
    o.split_by = TL_SPLIT_SAMPLES;
    o.val_count = 1;
    o.nthreads = 1;
    tl_prepare_result r;
    tl_error err;
    if (tl_prepare_run(&o, &r, &err)) {
        fprintf(stderr, "fuzz: prepare: %s\n", err.msg);
        abort();
    }
    tl_prepare_result_free(&r);
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    snprintf(val, sizeof val, "%s/val-00000.bin", dir);
}

static void open_and_read(const char *path, const char *split) {
    const char *paths[1] = {path};
    tl_dataset_opts o = {.split = split, .verify = 1};
    tl_dataset d;
    tl_error err;
    if (tl_dataset_open_ex(&d, paths, 1, &o, &err)) {
        fz_refused(err.msg);
        return;
    }
    fz_accepted();
    int tok[2 * 9];
    tl_dataset_set_order(&d, 1, 7);
    for (int i = 0; i < 3; i++)
        if (tl_dataset_next(&d, 2, 8, tok, &err)) break;
    tl_dataset_close(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) make_dataset();
    fz_write(manifest, data, size);
    open_and_read(dir, "train");
    open_and_read(val, NULL);
    return 0;
}

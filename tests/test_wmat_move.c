/* test_wmat_move.c - BF16 matrices copied out of a file map for decode
 * (tl_wmat_move_to): the copy holds the rows bit for bit, every kernel gives
 * the same bits on it as on the map (and fp32 accuracy against a double
 * sum), the map still reads back from the file after its pages are dropped,
 * and a BF16 GGUF model decodes from the copy. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dtype.h"
#include "gguf.h"
#include "harness.h"
#include "infer.h"
#include "matvec.h"
#include "rng.h"

/* shapes off the kernels' blocks: rows not a multiple of 8, columns not of 32
 * (vector tails), past 3072 (the eight-row kernel), and more bytes than one
 * 2 MiB copy chunk, placed at an offset that leaves every matrix off page
 * boundaries */
static const int shapes[][2] = {{150, 37}, {9, 1}, {1100, 1030}, {40, 5633}, {264, 2048}};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])
#define OFFSET 100

static void test_wmat_move_bf16(tl_test_ctx *t) {
    tl_rng r;
    tl_rng_seed(&r, 11);
    size_t total = OFFSET;
    for (int s = 0; s < NSHAPES; s++) total += 2 * (size_t)shapes[s][0] * (size_t)shapes[s][1];
    uint8_t *file = calloc(total, 1);
    for (size_t i = OFFSET; i + 1 < total; i += 2) {
        const uint16_t h = tl_f32_to_bf16((float)tl_rng_normal(&r));
        memcpy(file + i, &h, 2);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/wmat_move.bin", tl_test_tmpdir());
    tl_error e;
    const uint8_t *map = NULL;
    size_t len = 0;
    CHECK_MSG(tl_write_file_atomic(path, file, total, &e) == 0 && tl_map_file(path, &map, &len, &e) == 0, "%s", e.msg);
    if (!map || len != total) {
        free(file);
        return;
    }
    float *x = malloc(sizeof(float) * 5633), *before = malloc(sizeof(float) * 1100 * (TL_KERNEL_LAST + 1)),
          *y = malloc(sizeof(float) * 1100), *w = malloc(sizeof(float) * 5633);
    for (int i = 0; i < 5633; i++) x[i] = (float)tl_rng_normal(&r);
    size_t off = OFFSET;
    for (int s = 0; s < NSHAPES; s++) {
        const int R = shapes[s][0], C = shapes[s][1];
        const size_t bytes = 2 * (size_t)R * (size_t)C;
        tl_wmat W = {TL_DT_BF16, map + off, R, C, 0, 0, 0, 0};
        CHECK(tl_wmat_movable(&W));
        for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++)
            if (tl_kernel_supported((tl_kernel)k)) tl_wmat_matvec((tl_kernel)k, &W, x, before + (size_t)k * R);
        const size_t huge = (size_t)2 << 20;
        void *dst = aligned_alloc(huge, (bytes + huge - 1) / huge * huge);
        tl_wmat_move_to(&W, dst);
        CHECK(W.data == dst && W.rows == R && W.cols == C && W.dtype == TL_DT_BF16);
        CHECK_MSG(!memcmp(dst, file + off, bytes), "%dx%d: the copy differs from the file's rows", R, C);
        CHECK_MSG(!memcmp(map + off, file + off, bytes), "%dx%d: the map no longer reads the file", R, C);
        for (int k = TL_KERNEL_SCALAR; k <= TL_KERNEL_LAST; k++) {
            if (!tl_kernel_supported((tl_kernel)k)) continue;
            tl_wmat_matvec((tl_kernel)k, &W, x, y);
            CHECK_MSG(!memcmp(y, before + (size_t)k * R, sizeof(float) * (size_t)R),
                      "%dx%d kernel %s: the copy gives other bits than the map", R, C, tl_kernel_name(k));
            double worst = 0;
            for (int i = 0; i < R; i++) {
                tl_wmat_row_f32(&W, i, w);
                double ref = 0, mag = 0;
                for (int j = 0; j < C; j++) ref += (double)w[j] * x[j], mag += fabs((double)w[j] * x[j]);
                worst = fmax(worst, fabs(y[i] - ref) / (mag + 1e-30));
            }
            const double tol = tl_kernel_rounds_bf16((tl_kernel)k) ? 1e-2 : 1e-5;
            CHECK_MSG(worst <= tol, "%dx%d kernel %s: rel err %.3g", R, C, tl_kernel_name(k), worst);
            /* the rows each work item takes depend on the thread count, the bits must not */
            const int threads = omp_get_max_threads();
            for (int n = 1; n <= 3; n += 2) {
                omp_set_num_threads(n);
                tl_wmat_matvec((tl_kernel)k, &W, x, y);
                CHECK_MSG(!memcmp(y, before + (size_t)k * R, sizeof(float) * (size_t)R),
                          "%dx%d kernel %s: %d threads give other bits", R, C, tl_kernel_name(k), n);
            }
            omp_set_num_threads(threads);
        }
        free(dst);
        off += bytes;
    }
    /* only BF16 matrices are moved */
    tl_wmat f32 = {TL_DT_F32, map, 4, 4, 0, 0, 0, 0}, q = {TL_DT_I32, map, 4, 32, TL_GGML_Q8_0, 0, 0, 0};
    CHECK(!tl_wmat_movable(&f32) && !tl_wmat_movable(&q));
    tl_unmap_file(map, len);
    free(file);
    free(x);
    free(before);
    free(y);
    free(w);
}

/* Loads the fixture model at rel (under the fixture directory) into m; 0 on success. */
static int load_fixture(tl_test_ctx *t, const char *rel, tl_infer_model *m) {
    char model[512];
    snprintf(model, sizeof model, "%s/%s", tl_test_fixture_dir(), rel);
    tl_error e;
    if (tl_infer_load(m, model, &e)) {
        CHECK_MSG(0, "%s: %s", model, e.msg);
        return -1;
    }
    return 0;
}

/* Every decode matrix of m is BF16 and read from the huge-page copy. */
static void check_in_copy(tl_test_ctx *t, const tl_infer_model *m) {
    const uint8_t *cp = m->packed;
    CHECK(cp != NULL);
    for (int l = 0; cp && l < m->cfg.n_layers; l++) {
        const tl_infer_layer *ly = &m->layers[l];
        const tl_wmat *ws[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (int j = 0; j < 7; j++) {
            const uint8_t *d = ws[j]->data;
            CHECK_MSG(ws[j]->dtype == TL_DT_BF16 && d >= cp &&
                          d < cp + m->decode_bytes + 64 * (7 * (size_t)m->cfg.n_layers + 1),
                      "layer %d matrix %d not in the copy", l, j);
        }
    }
}

/* A BF16 GGUF model: every decode matrix is read from the copy, the embedding
 * table (rows looked up one by one) from the map; its logits are checked
 * against float64 in test_infer_gguf.c. */
static void test_wmat_move_gguf(tl_test_ctx *t) {
    tl_infer_model m;
    if (load_fixture(t, "gguf/tiny256_BF16.gguf", &m)) return;
    const tl_gguf_tensor *q = tl_gguf_find_tensor(m.gguf, "blk.0.attn_q.weight"),
                         *emb = tl_gguf_find_tensor(m.gguf, "token_embd.weight");
    check_in_copy(t, &m);
    CHECK(q && m.layers[0].wq.data != q->data);
    CHECK(emb && m.embed.data == emb->data);
    tl_infer_free(&m);
}

/* An HF directory of BF16 safetensors (tied embeddings): the decode matrices
 * are read from the copy, the embedding table (also the tied lm_head) from
 * the map; the fixture's logits are checked against transformers in
 * test_infer.c, which loads it the same way. */
static void test_wmat_move_hf(tl_test_ctx *t) {
    tl_infer_model m;
    if (load_fixture(t, "infer_tied_bf16", &m)) return;
    CHECK(m.n_files == 1 && m.cfg.tied);
    check_in_copy(t, &m);
    const uint8_t *map = m.files[0].map, *emb = m.embed.data;
    CHECK(emb >= map && emb < map + m.files[0].map_len && m.lm_head.data == m.embed.data);
    tl_infer_free(&m);
}

/* The decode products' work split (two-ended stealing over per-thread
 * ranges, matvec.c): for 1 to 8 threads, several matrices in one call (one
 * smaller than a work item, one a few items, one many), one input and
 * three: every row computed, once, with the bits of one thread. */
static void test_matvec_split(tl_test_ctx *t) {
    enum { C = 512, NX = 3 };
    static const int rows[3] = {7, 200, 1000};
    tl_rng r;
    tl_rng_seed(&r, 12);
    uint16_t *w[3];
    tl_wmat W[3];
    const tl_wmat *Wp[3];
    float *x = malloc(sizeof(float) * C * NX), *ref[3], *y[3];
    for (int i = 0; i < C * NX; i++) x[i] = (float)tl_rng_normal(&r);
    for (int j = 0; j < 3; j++) {
        w[j] = malloc(2 * (size_t)rows[j] * C);
        for (int i = 0; i < rows[j] * C; i++) w[j][i] = tl_f32_to_bf16((float)tl_rng_normal(&r));
        W[j] = (tl_wmat){TL_DT_BF16, w[j], rows[j], C, 0, 0, 0, 0};
        Wp[j] = &W[j];
        ref[j] = malloc(sizeof(float) * rows[j] * NX);
        y[j] = malloc(sizeof(float) * rows[j] * NX);
    }
    const int threads = omp_get_max_threads();
    for (int nx = 1; nx <= NX; nx += 2) {
        omp_set_num_threads(1);
        tl_wmat_matvec_rows(TL_KERNEL_AUTO, Wp, ref, 3, x, nx);
        double worst = 0; /* the one-thread result against a double sum */
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < nx * rows[j]; i++) {
                const int row = i % rows[j], in = i / rows[j];
                double d = 0, mag = 0;
                for (int c = 0; c < C; c++) {
                    const double p = (double)tl_bf16_to_f32(w[j][(size_t)row * C + c]) * x[in * C + c];
                    d += p, mag += fabs(p);
                }
                worst = fmax(worst, fabs(ref[j][i] - d) / (mag + 1e-30));
            }
        CHECK_MSG(worst < 1e-2, "%d inputs: relative error %.3g against a double sum", nx, worst);
        for (int n = 2; n <= 8; n++) {
            omp_set_num_threads(n);
            for (int j = 0; j < 3; j++)
                for (int i = 0; i < rows[j] * nx; i++) y[j][i] = NAN;
            tl_wmat_matvec_rows(TL_KERNEL_AUTO, Wp, y, 3, x, nx);
            for (int j = 0; j < 3; j++)
                CHECK_MSG(!memcmp(y[j], ref[j], sizeof(float) * rows[j] * nx),
                          "%d threads, %d inputs, matrix %d: other bits than one thread", n, nx, j);
        }
    }
    /* called from inside a parallel region (a team of one: every range
     * still taken), one call per outer thread */
    omp_set_num_threads(4);
    float *yo[2][3];
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < 3; j++) {
            yo[o][j] = malloc(sizeof(float) * rows[j] * NX);
            for (int i = 0; i < rows[j] * NX; i++) yo[o][j][i] = NAN;
        }
#pragma omp parallel num_threads(2)
    tl_wmat_matvec_rows(TL_KERNEL_AUTO, Wp, yo[omp_get_thread_num()], 3, x, NX);
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < 3; j++) {
            CHECK_MSG(!memcmp(yo[o][j], ref[j], sizeof(float) * rows[j] * NX),
                      "nested call %d, matrix %d: other bits than one thread", o, j);
            free(yo[o][j]);
        }
    omp_set_num_threads(threads);
    for (int j = 0; j < 3; j++) free(w[j]), free(ref[j]), free(y[j]);
    free(x);
}

const tl_test tests_wmat_move[] = {
    {"wmat_move_bf16", test_wmat_move_bf16},
    {"wmat_move_gguf", test_wmat_move_gguf},
    {"wmat_move_hf", test_wmat_move_hf},
    {"matvec_split", test_matvec_split},
    {NULL, NULL},
};

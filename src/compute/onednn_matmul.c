/* onednn_matmul.c - see onednn_matmul.h. */
#include "onednn_matmul.h"

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

/* a training step uses a few dozen shapes, both precisions together */
#define SLOTS 64

typedef struct {
    bool used;
    tl_matmul_shape s;
    int threads; /* oneDNN fixes a primitive's thread count when it is made */
    dnnl_primitive_t prim;
    dnnl_memory_t am, bm, cm;
} slot;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t eng;
static dnnl_stream_t stream;
static slot cache[SLOTS];
static int next_slot;

static void init_once(void) {
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success)
        stream = NULL;
}

static bool same(const tl_matmul_shape *a, const tl_matmul_shape *b) {
    return a->bf16 == b->bf16 && a->ta == b->ta && a->tb == b->tb && a->M == b->M && a->N == b->N && a->K == b->K &&
           a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc && a->batch == b->batch && a->sa == b->sa &&
           a->sb == b->sb && a->sc == b->sc && a->alpha == b->alpha && a->beta == b->beta;
}

static void slot_clear(slot *e) {
    dnnl_memory_destroy(e->am);
    dnnl_memory_destroy(e->bm);
    dnnl_memory_destroy(e->cm);
    dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

/* Makes the primitive and memory objects of e's product; -1 if oneDNN refuses. */
static int slot_build(slot *e) {
    const tl_matmul_shape *s = &e->s;
    /* row-major with the transposes as strides: op(A)[i][k] at i*lda + k, or
     * k*lda + i; a batch is one more (outer) dimension */
    const int nd = s->batch > 1 ? 3 : 2, o = nd - 2;
    dnnl_dims_t ad = {s->batch, 0, 0}, bd = {s->batch, 0, 0}, cd = {s->batch, 0, 0};
    dnnl_dims_t as = {(dnnl_dim_t)s->sa, 0, 0}, bs = {(dnnl_dim_t)s->sb, 0, 0}, cs = {(dnnl_dim_t)s->sc, 0, 0};
    ad[o] = s->M, ad[o + 1] = s->K, bd[o] = s->K, bd[o + 1] = s->N, cd[o] = s->M, cd[o + 1] = s->N;
    as[o] = s->ta ? 1 : s->lda, as[o + 1] = s->ta ? s->lda : 1;
    bs[o] = s->tb ? 1 : s->ldb, bs[o + 1] = s->tb ? s->ldb : 1;
    cs[o] = s->ldc, cs[o + 1] = 1;
    const dnnl_data_type_t ab = s->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_matmul_desc_t md;
    if (dnnl_memory_desc_init_by_strides(&amd, nd, ad, ab, as) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&bmd, nd, bd, ab, bs) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&cmd, nd, cd, dnnl_f32, cs) != dnnl_success ||
        dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) != dnnl_success)
        return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc = -1;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
    if (s->alpha != 1.0f && dnnl_primitive_attr_set_output_scales(attr, 1, 0, &s->alpha) != dnnl_success) goto out;
    if (s->beta != 0.0f) { /* C = product + beta C, a sum post-op */
        if (dnnl_post_ops_create(&po) != dnnl_success || dnnl_post_ops_append_sum(po, s->beta) != dnnl_success ||
            dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success)
            goto out;
    }
    if (dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL) == dnnl_success &&
        dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
        dnnl_memory_create(&e->am, &amd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
        dnnl_memory_create(&e->bm, &bmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
        dnnl_memory_create(&e->cm, &cmd, eng, DNNL_MEMORY_NONE) == dnnl_success)
        rc = 0;
out:
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

int tl_onednn_matmul(const tl_matmul_shape *s, const void *A, const void *B, float *C) {
    pthread_once(&once, init_once);
    if (!stream || s->M <= 0 || s->N <= 0 || s->K <= 0) return -1;
    int rc = -1;
    pthread_mutex_lock(&lock);
    slot *e = NULL;
    for (int i = 0; i < SLOTS && !e; i++)
        if (cache[i].used && same(&cache[i].s, s) && cache[i].threads == omp_get_max_threads()) e = &cache[i];
    if (!e) { /* the oldest slot makes way */
        e = &cache[next_slot];
        next_slot = (next_slot + 1) % SLOTS;
        slot_clear(e);
        e->used = true;
        e->s = *s;
        e->threads = omp_get_max_threads();
        if (slot_build(e)) {
            slot_clear(e);
            goto out;
        }
    }
    if (dnnl_memory_set_data_handle(e->am, (void *)A) != dnnl_success ||
        dnnl_memory_set_data_handle(e->bm, (void *)B) != dnnl_success || dnnl_memory_set_data_handle(e->cm, C) != dnnl_success)
        goto out;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->am}, {DNNL_ARG_WEIGHTS, e->bm}, {DNNL_ARG_DST, e->cm}};
    if (dnnl_primitive_execute(e->prim, stream, 3, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success)
        rc = 0;
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

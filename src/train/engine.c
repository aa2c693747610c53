/* engine.c - what every engine shares: its place in the job. */
#include "engine.h"

#include <string.h>

int tl_engine_job_place(const tl_engine_job *job, size_t n, int *rank, int *world, size_t *lo, size_t *hi,
                        tl_error *err) {
    *rank = job && job->comm ? tl_comm_rank(job->comm) : 0;
    *world = job && job->comm ? tl_comm_world(job->comm) : 1;
    const int zero = job ? job->zero : 0;
    if (zero < 0 || zero > 3) return tl_fail(err, "ZeRO stage %d: must be 0, 1, 2 or 3", zero);
    *lo = 0;
    *hi = n;
    if (*world > 1 || zero > 0) tl_shard_range(n, *world, TL_SHARD_ALIGN, *rank, lo, hi);
    return 0;
}

int tl_engine_bind_job(tl_engine *e, const tl_engine_job *job, tl_error *err) {
    e->zero = job ? job->zero : 0;
    return tl_engine_job_place(job, e->m->n_params, &e->rank, &e->world, &e->lo, &e->hi, err);
}

static int cpu_available(void) { return 1; }

static const tl_engine_kind cpu_kind = {.name = "cpu", .create = tl_engine_cpu_create, .available = cpu_available};

/* Defined by src/cuda/engine_adapter.c in the CUDA build; a weak reference, so
 * the plain build links without it and sees NULL. */
extern const tl_engine_kind tl_engine_kind_cuda __attribute__((weak));

const tl_engine_kind *tl_engine_find(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, cpu_kind.name)) return &cpu_kind;
    if (&tl_engine_kind_cuda && !strcmp(name, tl_engine_kind_cuda.name)) return &tl_engine_kind_cuda;
    return NULL;
}

const tl_engine_kind *tl_engine_default(void) {
    const tl_engine_kind *k = tl_engine_find("cuda");
    return k && k->available() ? k : &cpu_kind;
}

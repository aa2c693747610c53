/* engine.c - what every engine shares: its place in the job. */
#include "engine.h"

int tl_engine_bind_job(tl_engine *e, const tl_engine_job *job, tl_error *err) {
    e->rank = job && job->comm ? tl_comm_rank(job->comm) : 0;
    e->world = job && job->comm ? tl_comm_world(job->comm) : 1;
    e->zero = job ? job->zero : 0;
    if (e->zero < 0 || e->zero > 3) return tl_fail(err, "ZeRO stage %d: must be 0, 1, 2 or 3", e->zero);
    e->lo = 0;
    e->hi = e->m->n_params;
    if (e->world > 1 || e->zero > 0) tl_shard_range(e->m->n_params, e->world, TL_SHARD_ALIGN, e->rank, &e->lo, &e->hi);
    return 0;
}

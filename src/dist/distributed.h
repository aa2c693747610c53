/* distributed.h - data-parallel communication and ZeRO sharding arithmetic.
 *
 * A tl_comm is the set of ranks of one job.  Launched by `mpirun -np N` or Slurm's
 * `srun` (and built with MPI: TL_WITH_MPI), it is MPI_COMM_WORLD; otherwise it is a
 * single rank whose collectives are copies.
 *
 * Every collective is deterministic and the same on every rank: sums are formed by
 * the rank owning each element, adding the ranks' contributions in rank order
 * 0, 1, ..., N-1 (never in the order messages arrive, never by MPI's own reduction
 * trees), so a run is reproducible bit for bit for a given number of ranks.
 *
 * Collectives are built on non-blocking point-to-point messages polled against a
 * deadline (tl_comm_set_timeout): when a peer does not answer in time, the call
 * fails with a message naming the ranks it was still waiting for, instead of
 * hanging the job.  A failed collective leaves the communicator unusable: the
 * caller reports and calls tl_comm_abort.
 *
 * Sharding: a flat array of n elements is cut into `world` contiguous ranges,
 * rank r owning [lo_r, hi_r).  Range boundaries fall on multiples of `align`
 * elements (TL_SHARD_ALIGN for parameter blocks), so per-block reductions (the
 * gradient norm) do not depend on the number of ranks. */
#ifndef TL_DISTRIBUTED_H
#define TL_DISTRIBUTED_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"

/* Shard boundaries are multiples of this many elements (the gradient norm's block). */
#define TL_SHARD_ALIGN ((size_t)1 << 16)

/* ------------------------------------------------------------------ sharding */

/* Range [*lo, *hi) of rank `rank` of `world` over n elements: ceil(n/align) blocks
 * split as evenly as possible, lower ranks taking the larger share. */
void tl_shard_range(size_t n, int world, size_t align, int rank, size_t *lo, size_t *hi);

/* Gradient buckets of ZeRO stages 2-3 (model.h's grads hook), as the trainer
 * allocates them (src/dist/grad_shard.c): a rank holds the sum of its slice of the
 * gradient plus these, never the whole block. */
typedef struct {
    size_t embed;   /* tied weights: the embedding's own bucket, live for the whole backward
                     * (lm_head writes it first, the embedding last); else 0 */
    size_t ring;    /* floats of the bucket ring for the other units: the largest unit; with
                     * overlap the largest sum of two units in a row of the backward (one is
                     * reduced while the next fills the ring's other end) */
    size_t largest; /* the largest unit reduced at once */
} tl_grad_buckets;
void tl_grad_bucket_plan(const tl_config *c, int overlap, tl_grad_buckets *out);
size_t tl_grad_buckets_floats(const tl_grad_buckets *b);

/* Bytes per rank for the ZeRO stages, as the trainer allocates them. */
typedef struct {
    size_t params;     /* parameters held between steps */
    size_t params_peak;/* parameters while computing (stage 3: own slice + one gathered unit) */
    size_t grads;      /* gradients: stages 0-1 the whole block (the backward accumulates the
                        * micro-batches into it); stages 2-3 the rank's slice + grad_buckets */
    size_t grad_buckets; /* stages 2-3: the part of grads that is buckets (tl_grad_bucket_plan) */
    size_t opt_state;  /* AdamW m and v */
    size_t scratch;    /* communication scratch */
    size_t total_peak; /* params_peak + grads + opt_state + scratch */
} tl_zero_memory;

/* Fills *out for model c on `world` ranks at ZeRO `stage` (0-3), for rank `rank`
 * (shards differ by at most one align block); overlap: stages 2-3 reduce on a
 * communication thread (one more bucket). */
void tl_zero_memory_plan(const tl_config *c, int world, int rank, int stage, int overlap, tl_zero_memory *out);
/* Parameters of the largest unit of model.h's params hook: the embedding, one
 * layer, or the final norm + lm_head (+ the embedding when tied). */
size_t tl_zero_largest_unit(const tl_config *c);

/* Sum of squares of g[i] per block of TL_SHARD_ALIGN elements of the range
 * [lo, hi) of a flat array (lo a multiple of TL_SHARD_ALIGN): out[k] is the block
 * starting at lo + k*TL_SHARD_ALIGN, in double, summed as tl_sumsq does.  The global
 * norm is sqrt of these summed in block order (tl_blocks_norm). */
void tl_grad_sumsq_blocks(const float *g, size_t lo, size_t hi, double *out);
size_t tl_shard_blocks(size_t lo, size_t hi);
double tl_blocks_norm(const double *blocks, size_t n_blocks);

/* ------------------------------------------------------------------ launch */

/* Rank and world size as the launcher set them in the environment (Open MPI's
 * OMPI_COMM_WORLD_RANK/SIZE, PMIx, Slurm's SLURM_PROCID/SLURM_NTASKS); world 1
 * and rank 0 when not launched by either.  Returns the launcher's name. */
const char *tl_launch_env(int *rank, int *world);

/* ------------------------------------------------------------------ communicator */

typedef struct tl_comm tl_comm;

/* Creates the job's communicator: MPI when launched with more than one rank (or
 * when force_mpi), else a single rank.  Fails when launched with N > 1 ranks by a
 * build without MPI. */
int tl_comm_create(tl_comm **out, int force_mpi, tl_error *err);
/* The same; threads: initialise MPI with MPI_THREAD_MULTIPLE so that a second
 * thread may run collectives on a tl_comm_dup of it (fails if MPI lacks it). */
int tl_comm_create_ex(tl_comm **out, int force_mpi, int threads, tl_error *err);
/* 1 when another thread may use a tl_comm_dup of c while c is in use (a single
 * rank, or MPI initialised with MPI_THREAD_MULTIPLE). */
int tl_comm_threaded(const tl_comm *c);
/* A communicator over the same ranks whose messages never match c's (MPI_Comm_dup;
 * collective: every rank calls it), with c's timeout; free with tl_comm_free.
 * Its collectives sum on the calling thread only (no OpenMP team): it is meant for
 * a communication thread beside the compute threads. */
tl_comm *tl_comm_dup(tl_comm *c, tl_error *err);
/* A single-rank communicator (never MPI). */
tl_comm *tl_comm_single(void);
/* Finalizes MPI if this communicator initialized it. */
void tl_comm_free(tl_comm *c);
/* Ends the whole job (MPI_Abort) with exit code `code`; exit() for one rank. */
void tl_comm_abort(tl_comm *c, int code) __attribute__((noreturn));

int tl_comm_rank(const tl_comm *c);
int tl_comm_world(const tl_comm *c);
const char *tl_comm_backend(const tl_comm *c); /* "single" or "mpi" */
/* Seconds a collective may wait for its peers; <= 0: forever.  Default 300. */
void tl_comm_set_timeout(tl_comm *c, double seconds);
double tl_comm_timeout(const tl_comm *c);

/* In-place sum over ranks of buf[0..n), identical on every rank. */
int tl_comm_allreduce_f32(tl_comm *c, float *buf, size_t n, tl_error *err);
int tl_comm_allreduce_f64(tl_comm *c, double *buf, size_t n, tl_error *err);
/* Each rank r receives, in out[0 .. hi_r-lo_r), the sum over ranks of their
 * buf[lo_r .. hi_r) (ranges from tl_shard_range(n, world, align, r)).  out may be
 * buf + lo_r (in place). */
int tl_comm_reduce_scatter_f32(tl_comm *c, const float *buf, size_t n, size_t align, float *out, tl_error *err);
/* Reduce-scatter of the range [a, b) of a flat array of n elements: part[0 .. b-a)
 * holds this rank's values of [a, b); rank r receives the rank-order sum over ranks
 * of their values of [a, b) intersected with its shard [lo_r, hi_r), and stores
 * (accumulate 0) or adds (accumulate 1) it into slice[x - lo_r].  For a sum that
 * starts at the first contribution, store: adding to zero would turn -0 into +0. */
int tl_comm_reduce_scatter_range_f32(tl_comm *c, const float *part, size_t n, size_t align, size_t a, size_t b,
                                     float *slice, int accumulate, tl_error *err);
/* buf[lo_r .. hi_r) of each rank r is copied into buf of every rank. */
int tl_comm_allgather_f32(tl_comm *c, float *buf, size_t n, size_t align, tl_error *err);
/* The same restricted to [a, b): each rank's part of its shard inside [a, b)
 * (stage 3 gathers one layer's range before using it). */
int tl_comm_allgather_range_f32(tl_comm *c, float *buf, size_t n, size_t align, size_t a, size_t b, tl_error *err);
/* Like allgather but only `root` receives: shard is this rank's slice (hi_r-lo_r
 * elements), full (n elements) is written on root only (may be NULL elsewhere). */
int tl_comm_gather_f32(tl_comm *c, const float *shard, float *full, size_t n, size_t align, int root, tl_error *err);
/* Inverse of gather: root's full[lo_r .. hi_r) goes to rank r's shard. */
int tl_comm_scatter_f32(tl_comm *c, const float *full, float *shard, size_t n, size_t align, int root, tl_error *err);
/* all[r*bytes ..] receives rank r's `mine` (bytes each), on every rank. */
int tl_comm_allgather_bytes(tl_comm *c, const void *mine, size_t bytes, void *all, tl_error *err);
int tl_comm_bcast(tl_comm *c, void *buf, size_t bytes, int root, tl_error *err);
int tl_comm_barrier(tl_comm *c, tl_error *err);

/* Agreement after a step that may fail on some ranks only (loading, saving): every
 * rank passes its own rc and err; all ranks return 0 if all succeeded, else -1
 * with err set to the first failing rank's message prefixed with "rank R: ".  A
 * failure of the exchange itself is also -1. */
int tl_comm_agree(tl_comm *c, int rc, tl_error *err);

#endif

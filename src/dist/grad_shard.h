/* grad_shard.h - ZeRO-2/3 gradients: each rank holds only the sum of its slice
 * [lo, hi) of the flat gradient (tl_shard_range), plus bounded buckets for the
 * units whose backward is running (tl_grad_bucket_plan), never the whole block.
 *
 * It serves model.h's grads hook: a unit's backward writes into a zeroed bucket;
 * when the unit is complete its range is reduce-scattered across the ranks
 * (tl_comm_reduce_scatter_range_f32) into the owners' slices and the bucket is
 * reused.  With gradient accumulation every micro-batch is reduced this way: the
 * first micro-batch of a step stores its sums, later ones add theirs.
 *
 * Overlap: with a communication thread the reduction of a unit runs while the
 * backward of the next unit (and the next micro-batch's forward) computes; the
 * thread does the same arithmetic on a duplicate communicator, in the same order
 * per element, so results are bit-identical with and without it. */
#ifndef TL_GRAD_SHARD_H
#define TL_GRAD_SHARD_H

#include "common.h"
#include "distributed.h"
#include "model.h"

typedef struct tl_grad_shard tl_grad_shard;

/* Gradient slices for model m on comm's ranks; installs m's grads hook (removed by
 * tl_grad_shard_free).  overlap: reduce on a communication thread (with more than
 * one rank; needs tl_comm_threaded(comm)).  Collective when overlapping: every rank
 * creates it together. */
tl_grad_shard *tl_grad_shard_create(tl_model *m, tl_comm *comm, int overlap, tl_error *err);
void tl_grad_shard_free(tl_grad_shard *g);
/* Before each micro-batch's backward; first: the first micro-batch of a step. */
void tl_grad_shard_next(tl_grad_shard *g, int first);
/* Waits until every unit handed over so far is summed into the slice.  Returns -1
 * with the communication thread's error if a reduction failed. */
int tl_grad_shard_flush(tl_grad_shard *g, tl_error *err);
/* This rank's summed gradient: hi - lo floats for elements [lo, hi). */
float *tl_grad_shard_slice(tl_grad_shard *g);
/* Bytes of gradient storage allocated (slice + buckets), counted at allocation. */
size_t tl_grad_shard_bytes(const tl_grad_shard *g);
int tl_grad_shard_overlaps(const tl_grad_shard *g);

#endif

/* nccl_comm.h - GPU collectives with NCCL for data-parallel training (CUDA build).
 *
 * One process per GPU.  The job's tl_comm (MPI) carries NCCL's unique id from
 * rank 0 to every rank; after that, the collectives run on device buffers on a
 * CUDA stream.  NCCL is loaded at run time (dlopen of libnccl.so.2), so the CUDA
 * build needs neither NCCL's headers nor its library to compile or to run on one
 * GPU.
 *
 * Every call waits for its collective with a deadline (the tl_comm's timeout): it
 * polls the stream and NCCL's asynchronous error state, and on expiry aborts the
 * NCCL communicator and asks the ranks over MPI which of them is missing, so the
 * message names it.
 *
 * Reduce-scatter and all-gather take equal counts per rank (NCCL's contract): the
 * caller pads the flat block to world * shard elements (tl_nccl_padded_shard).
 * NCCL sums with its own ring/tree order: deterministic for a fixed job
 * (ranks, topology, NCCL version) but not the CPU path's rank-order sum.
 *
 * Status: compiled by `make cuda`; not yet called by the CUDA engine, and not run
 * (no multi-GPU machine was available) - see docs/distributed.md. */
#ifndef TL_NCCL_COMM_H
#define TL_NCCL_COMM_H

#include <stddef.h>

#include "common.h"
#include "distributed.h"

typedef struct tl_nccl tl_nccl;

/* Elements per rank when n is padded to a multiple of world (and of 64 elements). */
size_t tl_nccl_padded_shard(size_t n, int world);

/* Loads NCCL, shares the unique id over comm and joins on the current CUDA device.
 * Collective over comm's ranks. */
int tl_nccl_create(tl_nccl **out, tl_comm *comm, tl_error *err);
void tl_nccl_free(tl_nccl *nc);

/* stream: a cudaStream_t (NULL: the default stream).  Buffers are device memory. */
int tl_nccl_allreduce_f32(tl_nccl *nc, float *buf, size_t count, void *stream, tl_error *err);
/* recv (recvcount elements) = sum over ranks of send[rank*recvcount ..] */
int tl_nccl_reduce_scatter_f32(tl_nccl *nc, const float *send, float *recv, size_t recvcount, void *stream,
                               tl_error *err);
/* recv (world*sendcount) = every rank's send, in rank order */
int tl_nccl_allgather_f32(tl_nccl *nc, const float *send, float *recv, size_t sendcount, void *stream, tl_error *err);
int tl_nccl_bcast_f32(tl_nccl *nc, float *buf, size_t count, int root, void *stream, tl_error *err);

#endif

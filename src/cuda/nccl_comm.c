/* nccl_comm.c - NCCL collectives loaded at run time (see nccl_comm.h). */
#include "nccl_comm.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The parts of NCCL's ABI (nccl.h, stable since 2.x) used here. */
typedef struct {
    char internal[128];
} nccl_unique_id;
typedef void *nccl_comm_t;
typedef int nccl_result; /* 0: ncclSuccess, 7: ncclInProgress (2.14+) */
enum { NCCL_SUCCESS = 0, NCCL_IN_PROGRESS = 7 };
enum { NCCL_FLOAT32 = 7 };
enum { NCCL_SUM = 0 };

typedef struct {
    nccl_result (*get_unique_id)(nccl_unique_id *id);
    nccl_result (*comm_init_rank)(nccl_comm_t *comm, int nranks, nccl_unique_id id, int rank);
    nccl_result (*comm_destroy)(nccl_comm_t comm);
    nccl_result (*comm_abort)(nccl_comm_t comm);
    nccl_result (*comm_get_async_error)(nccl_comm_t comm, nccl_result *async);
    const char *(*get_error_string)(nccl_result r);
    nccl_result (*all_reduce)(const void *send, void *recv, size_t count, int dtype, int op, nccl_comm_t comm,
                              cudaStream_t stream);
    nccl_result (*reduce_scatter)(const void *send, void *recv, size_t recvcount, int dtype, int op, nccl_comm_t comm,
                                  cudaStream_t stream);
    nccl_result (*all_gather)(const void *send, void *recv, size_t sendcount, int dtype, nccl_comm_t comm,
                              cudaStream_t stream);
    nccl_result (*broadcast)(const void *send, void *recv, size_t count, int dtype, int root, nccl_comm_t comm,
                             cudaStream_t stream);
} nccl_api;

struct tl_nccl {
    void *lib;
    nccl_api api;
    nccl_comm_t comm;
    tl_comm *host; /* the MPI ranks: id exchange, and naming a missing rank */
    int aborted;
};

size_t tl_nccl_padded_shard(size_t n, int world) {
    size_t w = world < 1 ? 1 : (size_t)world, per = (n + w - 1) / w;
    return (per + 63) / 64 * 64;
}

static int load(tl_nccl *nc, tl_error *err) {
    static const char *const names[] = {"libnccl.so.2", "libnccl.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !nc->lib; i++) nc->lib = dlopen(names[i], RTLD_NOW);
    if (!nc->lib) return tl_fail(err, "NCCL not found (libnccl.so.2): install libnccl2 for multi-GPU training");
    struct {
        const char *name;
        void **slot;
    } syms[] = {
        {"ncclGetUniqueId", (void **)&nc->api.get_unique_id},
        {"ncclCommInitRank", (void **)&nc->api.comm_init_rank},
        {"ncclCommDestroy", (void **)&nc->api.comm_destroy},
        {"ncclCommAbort", (void **)&nc->api.comm_abort},
        {"ncclCommGetAsyncError", (void **)&nc->api.comm_get_async_error},
        {"ncclGetErrorString", (void **)&nc->api.get_error_string},
        {"ncclAllReduce", (void **)&nc->api.all_reduce},
        {"ncclReduceScatter", (void **)&nc->api.reduce_scatter},
        {"ncclAllGather", (void **)&nc->api.all_gather},
        {"ncclBroadcast", (void **)&nc->api.broadcast},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(nc->lib, syms[i].name);
        if (!p) return tl_fail(err, "NCCL: symbol %s missing (NCCL 2.x needed)", syms[i].name);
        memcpy(syms[i].slot, &p, sizeof p);
    }
    return 0;
}

static int nccl_check(tl_nccl *nc, nccl_result r, const char *what, tl_error *err) {
    if (r == NCCL_SUCCESS) return 0;
    return tl_fail(err, "rank %d: NCCL %s: %s", tl_comm_rank(nc->host), what, nc->api.get_error_string(r));
}

int tl_nccl_create(tl_nccl **out, tl_comm *comm, tl_error *err) {
    *out = NULL;
    tl_nccl *nc = calloc(1, sizeof *nc);
    if (!nc) return tl_fail(err, "out of memory");
    nc->host = comm;
    int rc = load(nc, err);
    /* every rank must know whether all could load NCCL before the id exchange */
    if (tl_comm_agree(comm, rc, err)) {
        tl_nccl_free(nc);
        return -1;
    }
    nccl_unique_id id;
    memset(&id, 0, sizeof id);
    rc = tl_comm_rank(comm) == 0 ? nccl_check(nc, nc->api.get_unique_id(&id), "unique id", err) : 0;
    if (tl_comm_agree(comm, rc, err) || tl_comm_bcast(comm, &id, sizeof id, 0, err)) {
        tl_nccl_free(nc);
        return -1;
    }
    rc = nccl_check(nc, nc->api.comm_init_rank(&nc->comm, tl_comm_world(comm), id, tl_comm_rank(comm)), "init", err);
    if (tl_comm_agree(comm, rc, err)) {
        tl_nccl_free(nc);
        return -1;
    }
    *out = nc;
    return 0;
}

void tl_nccl_free(tl_nccl *nc) {
    if (!nc) return;
    if (nc->comm) {
        if (nc->aborted) nc->api.comm_abort(nc->comm);
        else nc->api.comm_destroy(nc->comm);
    }
    if (nc->lib) dlclose(nc->lib);
    free(nc);
}

/* Polls the stream against the deadline; on expiry aborts NCCL and finds the
 * missing rank over MPI (a rank that is alive answers the host barrier). */
static int finish(tl_nccl *nc, nccl_result launched, cudaStream_t stream, const char *what, tl_error *err) {
    if (launched != NCCL_SUCCESS && launched != NCCL_IN_PROGRESS) return nccl_check(nc, launched, what, err);
    double timeout = tl_comm_timeout(nc->host), start = tl_now();
    for (;;) {
        cudaError_t q = cudaStreamQuery(stream);
        if (q == cudaSuccess) return 0;
        if (q != cudaErrorNotReady)
            return tl_fail(err, "rank %d: NCCL %s: CUDA: %s", tl_comm_rank(nc->host), what, cudaGetErrorString(q));
        nccl_result async = NCCL_SUCCESS;
        nc->api.comm_get_async_error(nc->comm, &async);
        if (async != NCCL_SUCCESS && async != NCCL_IN_PROGRESS) {
            nc->aborted = 1;
            return nccl_check(nc, async, what, err);
        }
        if (timeout > 0 && tl_now() - start > timeout) {
            nc->aborted = 1;
            nc->api.comm_abort(nc->comm);
            tl_error who;
            double keep = tl_comm_timeout(nc->host);
            tl_comm_set_timeout(nc->host, 5);
            int missing = tl_comm_barrier(nc->host, &who);
            tl_comm_set_timeout(nc->host, keep);
            return tl_fail(err, "rank %d: NCCL %s did not finish within %.0f s%s%s", tl_comm_rank(nc->host), what,
                           timeout, missing ? "; " : " (every rank answered over MPI: a GPU or link is stuck)",
                           missing ? who.msg : "");
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

int tl_nccl_allreduce_f32(tl_nccl *nc, float *buf, size_t count, void *stream, tl_error *err) {
    cudaStream_t s = (cudaStream_t)stream;
    return finish(nc, nc->api.all_reduce(buf, buf, count, NCCL_FLOAT32, NCCL_SUM, nc->comm, s), s, "all-reduce", err);
}

int tl_nccl_reduce_scatter_f32(tl_nccl *nc, const float *send, float *recv, size_t recvcount, void *stream,
                               tl_error *err) {
    cudaStream_t s = (cudaStream_t)stream;
    return finish(nc, nc->api.reduce_scatter(send, recv, recvcount, NCCL_FLOAT32, NCCL_SUM, nc->comm, s), s,
                  "reduce-scatter", err);
}

int tl_nccl_allgather_f32(tl_nccl *nc, const float *send, float *recv, size_t sendcount, void *stream, tl_error *err) {
    cudaStream_t s = (cudaStream_t)stream;
    return finish(nc, nc->api.all_gather(send, recv, sendcount, NCCL_FLOAT32, nc->comm, s), s, "all-gather", err);
}

int tl_nccl_bcast_f32(tl_nccl *nc, float *buf, size_t count, int root, void *stream, tl_error *err) {
    cudaStream_t s = (cudaStream_t)stream;
    return finish(nc, nc->api.broadcast(buf, buf, count, NCCL_FLOAT32, root, nc->comm, s), s, "broadcast", err);
}

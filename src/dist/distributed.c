/* distributed.c - communicator (MPI or single rank) and sharding arithmetic. */
#include "distributed.h"
#include "sumsq.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef TL_WITH_MPI
#include <mpi.h>
#endif

/* ------------------------------------------------------------------ sharding */

void tl_shard_range(size_t n, int world, size_t align, int rank, size_t *lo, size_t *hi) {
    if (world < 1) world = 1;
    if (align < 1) align = 1;
    size_t nb = n / align + (n % align != 0);
    size_t w = (size_t)world, r = (size_t)rank;
    /* the first nb % w ranks take one extra block */
    size_t base = nb / w, extra = nb % w;
    size_t b0 = r * base + (r < extra ? r : extra);
    size_t b1 = b0 + base + (r < extra);
    size_t l = b0 * align, h = b1 * align;
    *lo = l < n ? l : n;
    *hi = h < n ? h : n;
}

size_t tl_shard_blocks(size_t lo, size_t hi) {
    return hi > lo ? (hi - lo + TL_SHARD_ALIGN - 1) / TL_SHARD_ALIGN : 0;
}

void tl_grad_sumsq_blocks(const float *g, size_t lo, size_t hi, double *out) {
    size_t nb = tl_shard_blocks(lo, hi);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t a = lo + b * TL_SHARD_ALIGN, e = a + TL_SHARD_ALIGN < hi ? a + TL_SHARD_ALIGN : hi;
        out[b] = tl_sumsq(g + a, e - a);
    }
}

double tl_blocks_norm(const double *blocks, size_t n_blocks) {
    double total = 0.0;
    for (size_t b = 0; b < n_blocks; b++) total += blocks[b];
    return sqrt(total);
}

/* Elements per message (the largest shard is sent in pieces of at most this). */
#define CHUNK ((size_t)1 << 22)

/* Elements per peer in one reduce-scatter round: the scratch holds one piece from
 * every rank, world * piece floats, capped near 2^24 floats (64 MB) however many ranks. */
static size_t reduce_piece(size_t biggest, int world) {
    size_t p = ((size_t)1 << 24) / (size_t)(world < 1 ? 1 : world);
    if (p < ((size_t)1 << 16)) p = (size_t)1 << 16;
    if (p > CHUNK) p = CHUNK;
    return biggest < p ? biggest : p;
}

static size_t biggest_shard(size_t n, int world, size_t align) {
    size_t biggest = 0;
    for (int r = 0; r < world; r++) {
        size_t l, h;
        tl_shard_range(n, world, align, r, &l, &h);
        if (h - l > biggest) biggest = h - l;
    }
    return biggest;
}

/* Floats of the units of model.h's hooks: the embedding, one layer, the head (final
 * norm + lm_head; the tied lm_head is the embedding, counted with unit 0). */
static void unit_sizes(const tl_config *c, size_t *embed, size_t *layer, size_t *head) {
    size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t hd = (size_t)tl_config_head_dim(c), QD = (size_t)c->n_heads * hd, KD = (size_t)c->n_kv_heads * hd;
    *embed = V * D;
    *layer = 2 * D + D * QD + 2 * D * KD + QD * D + 3 * D * F;
    *head = D + (c->tied ? 0 : V * D);
}

static size_t max3(size_t a, size_t b, size_t c) {
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

size_t tl_zero_largest_unit(const tl_config *c) {
    size_t embed, layer, head;
    unit_sizes(c, &embed, &layer, &head);
    /* a stage-3 pass gathers the embedding with the head when tied (lm_head reads it) */
    return max3(embed, layer, c->tied ? head + embed : head);
}

void tl_grad_bucket_plan(const tl_config *c, int overlap, tl_grad_buckets *out) {
    size_t embed, layer, head;
    unit_sizes(c, &embed, &layer, &head);
    const int L = c->n_layers;
    out->embed = c->tied ? embed : 0;
    /* the ring's units in backward order: head, layers L..1, then (untied) the embedding */
    size_t one = c->tied ? (L ? max3(layer, head, 0) : head) : max3(embed, L ? layer : 0, head);
    size_t two = L ? head + layer : head + (c->tied ? 0 : embed);
    if (L >= 2 && 2 * layer > two) two = 2 * layer;
    if (L && !c->tied && layer + embed > two) two = layer + embed;
    out->ring = overlap && two > one ? two : one;
    out->largest = out->embed > one ? out->embed : one;
}

size_t tl_grad_buckets_floats(const tl_grad_buckets *b) { return b->embed + b->ring; }

void tl_zero_memory_plan(const tl_config *c, int world, int rank, int stage, int overlap, tl_zero_memory *out) {
    const size_t n_params = tl_config_num_params(c), largest_unit = tl_zero_largest_unit(c);
    size_t lo, hi;
    tl_shard_range(n_params, world, TL_SHARD_ALIGN, rank, &lo, &hi);
    size_t shard = hi - lo, f = sizeof(float), w = world < 1 ? 1 : (size_t)world;
    memset(out, 0, sizeof *out);
    out->params = (stage >= 3 ? shard : n_params) * f;
    size_t peak = stage >= 3 && world > 1 ? shard + largest_unit : n_params;
    out->params_peak = (peak < n_params ? peak : n_params) * f;
    size_t reduced = biggest_shard(n_params, world, TL_SHARD_ALIGN); /* the most one reduction hands a rank */
    if (stage >= 2) {
        tl_grad_buckets b;
        tl_grad_bucket_plan(c, overlap && world > 1, &b);
        out->grad_buckets = tl_grad_buckets_floats(&b) * f;
        out->grads = shard * f + out->grad_buckets;
        if (b.largest < reduced) reduced = b.largest;
    } else {
        out->grads = n_params * f;
    }
    out->opt_state = 2 * (stage >= 1 ? shard : n_params) * f;
    out->scratch = w > 1 ? w * reduce_piece(reduced, world) * f : 0;
    out->total_peak = out->params_peak + out->grads + out->opt_state + out->scratch;
}

/* ------------------------------------------------------------------ launch */

static int env_int(const char *name, int *v) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end || x < 0 || x > INT_MAX) return 0;
    *v = (int)x;
    return 1;
}

const char *tl_launch_env(int *rank, int *world) {
    int r = 0, w = 1;
    const char *who = "none";
    if (env_int("OMPI_COMM_WORLD_SIZE", &w) && env_int("OMPI_COMM_WORLD_RANK", &r)) who = "mpirun";
    else if (env_int("PMIX_SIZE", &w) && env_int("PMIX_RANK", &r)) who = "pmix";
    else if (env_int("PMI_SIZE", &w) && env_int("PMI_RANK", &r)) who = "pmi";
    else if (env_int("SLURM_NTASKS", &w) && env_int("SLURM_PROCID", &r)) who = "srun";
    else {
        r = 0;
        w = 1;
    }
    if (w < 1 || r >= w) {
        r = 0;
        w = 1;
        who = "none";
    }
    *rank = r;
    *world = w;
    return who;
}

/* ------------------------------------------------------------------ communicator */

struct tl_comm {
    int rank, world;
    int mpi;          /* 1: an MPI communicator (MPI_COMM_WORLD or a dup of it) */
    int initialized;  /* 1: we called MPI_Init and must finalize */
    int threaded;     /* MPI_THREAD_MULTIPLE provided (or a single rank) */
    int dup;          /* made by tl_comm_dup: MPI_Comm_free it; sums on this thread only */
#ifdef TL_WITH_MPI
    MPI_Comm mc;
#endif
    double timeout;
    unsigned seq;     /* collective counter: message tags */
    int broken;       /* a collective failed: peers are out of step, refuse further ones */
    float *scratch;
    size_t scratch_len;
};

tl_comm *tl_comm_single(void) {
    tl_comm *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->world = 1;
    c->timeout = 300;
    c->threaded = 1;
    return c;
}

int tl_comm_create(tl_comm **out, int force_mpi, tl_error *err) { return tl_comm_create_ex(out, force_mpi, 0, err); }

int tl_comm_create_ex(tl_comm **out, int force_mpi, int threads, tl_error *err) {
    int rank, world;
    const char *who = tl_launch_env(&rank, &world);
    *out = NULL;
#ifndef TL_WITH_MPI
    (void)force_mpi;
    (void)threads;
    if (world > 1)
        return tl_fail(err, "launched as rank %d of %d (by %s) but this build has no MPI: install Open MPI "
                            "(libopenmpi-dev) and rebuild",
                       rank, world, who);
    *out = tl_comm_single();
    return *out ? 0 : tl_fail(err, "out of memory");
#else
    (void)who;
    if (world == 1 && !force_mpi) {
        *out = tl_comm_single();
        return *out ? 0 : tl_fail(err, "out of memory");
    }
    tl_comm *c = tl_comm_single();
    if (!c) return tl_fail(err, "out of memory");
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    if (!inited) {
        /* without threads only the main thread calls MPI (OpenMP threads compute between
         * calls); with them a communication thread runs collectives beside the main thread */
        if (MPI_Init_thread(NULL, NULL, threads ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED, &provided) !=
            MPI_SUCCESS) {
            free(c);
            return tl_fail(err, "MPI_Init failed");
        }
        c->initialized = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    c->threaded = provided >= MPI_THREAD_MULTIPLE;
    c->mc = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    c->mpi = 1;
    if (threads && !c->threaded) {
        tl_comm_free(c);
        return tl_fail(err, "this MPI library does not provide MPI_THREAD_MULTIPLE (needed by a communication "
                            "thread)");
    }
    if (c->world != world && world > 1) {
        /* e.g. srun without PMI support: every process would train alone on the same data */
        int w = c->world;
        tl_comm_free(c);
        return tl_fail(err, "launched as rank %d of %d (by %s) but MPI sees %d rank(s): with Slurm use "
                            "`srun --mpi=pmix` (or mpirun inside the allocation)",
                       rank, world, who, w);
    }
    *out = c;
    return 0;
#endif
}

tl_comm *tl_comm_dup(tl_comm *c, tl_error *err) {
    tl_comm *d = tl_comm_single();
    if (!d) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    d->rank = c->rank;
    d->world = c->world;
    d->timeout = c->timeout;
    d->threaded = c->threaded;
    d->dup = 1;
#ifdef TL_WITH_MPI
    if (c->mpi) {
        if (MPI_Comm_dup(c->mc, &d->mc) != MPI_SUCCESS) {
            free(d);
            tl_fail(err, "rank %d: MPI_Comm_dup failed", c->rank);
            return NULL;
        }
        MPI_Comm_set_errhandler(d->mc, MPI_ERRORS_RETURN);
        d->mpi = 1;
    }
#endif
    return d;
}

int tl_comm_threaded(const tl_comm *c) { return c->threaded; }

void tl_comm_free(tl_comm *c) {
    if (!c) return;
#ifdef TL_WITH_MPI
    /* a broken dup may have abandoned sends: the job is ending, leave it to MPI_Abort */
    if (c->mpi && c->dup && !c->broken) MPI_Comm_free(&c->mc);
    if (c->initialized) MPI_Finalize();
#endif
    tl_free(c->scratch);
    free(c);
}

void tl_comm_abort(tl_comm *c, int code) {
#ifdef TL_WITH_MPI
    if (c && c->mpi) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)c;
#endif
    exit(code);
}

int tl_comm_rank(const tl_comm *c) { return c->rank; }
int tl_comm_world(const tl_comm *c) { return c->world; }
const char *tl_comm_backend(const tl_comm *c) { return c->mpi ? "mpi" : "single"; }
void tl_comm_set_timeout(tl_comm *c, double seconds) { c->timeout = seconds; }
double tl_comm_timeout(const tl_comm *c) { return c->timeout; }

#ifdef TL_WITH_MPI
static float *scratch(tl_comm *c, size_t n, tl_error *err) {
    if (c->scratch_len >= n) return c->scratch;
    tl_free(c->scratch);
    c->scratch = tl_alloc(n * sizeof(float));
    c->scratch_len = c->scratch ? n : 0;
    if (!c->scratch) tl_fail(err, "out of memory for %zu floats of communication scratch", n);
    return c->scratch;
}

/* out[i] (=|+=) (((parts[0][i] + parts[1][i]) + parts[2][i]) + ...), rank order.
 * The same per element whether or not it runs in parallel. */
static void ordered_sum(const tl_comm *c, float *out, const float *const *parts, int world, size_t len, int acc) {
#pragma omp parallel for schedule(static) if (len > 65536 && !c->dup)
    for (size_t i = 0; i < len; i++) {
        float s = parts[0][i];
        for (int q = 1; q < world; q++) s += parts[q][i];
        out[i] = acc ? out[i] + s : s;
    }
}
#endif

#ifdef TL_WITH_MPI
/* A batch of non-blocking point-to-point operations, each tagged with its peer. */
typedef struct {
    int n, cap;
    MPI_Request *req;
    int *peer;
    int *done;
    int *is_send;
} reqs;

static int reqs_init(tl_comm *c, reqs *q, int cap, tl_error *err) {
    if (c->broken)
        return tl_fail(err, "rank %d: an earlier collective failed; the ranks are out of step (the job must stop)",
                       c->rank);
    q->n = 0;
    q->cap = cap;
    q->req = malloc(sizeof *q->req * (size_t)cap);
    q->peer = malloc(sizeof *q->peer * (size_t)cap);
    q->done = malloc(sizeof *q->done * (size_t)cap);
    q->is_send = malloc(sizeof *q->is_send * (size_t)cap);
    if (!q->req || !q->peer || !q->done || !q->is_send) {
        free(q->req);
        free(q->peer);
        free(q->done);
        free(q->is_send);
        return tl_fail(err, "out of memory");
    }
    return 0;
}

static void reqs_free(reqs *q) {
    free(q->req);
    free(q->peer);
    free(q->done);
    free(q->is_send);
}

static int tag_of(const tl_comm *c) { return (int)(c->seq % 30000u); }

static int post(tl_comm *c, reqs *q, int send, void *buf, size_t bytes, int peer, const char *what, tl_error *err) {
    /* messages are cut to INT_MAX-safe pieces by the callers (CHUNK) */
    int rc = send ? MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag_of(c), c->mc, &q->req[q->n])
                  : MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag_of(c), c->mc, &q->req[q->n]);
    if (rc != MPI_SUCCESS) return tl_fail(err, "rank %d: %s: MPI error posting a message to rank %d", c->rank, what, peer);
    q->peer[q->n] = peer;
    q->done[q->n] = 0;
    q->is_send[q->n] = send;
    q->n++;
    return 0;
}

static void nap(long ns) {
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* After a timeout: receives not yet matched are cancelled (so no late message
 * lands in a buffer the caller frees), sends are released to finish on their
 * own, and the communicator refuses further collectives. */
static void abandon(tl_comm *c, reqs *q) {
    c->broken = 1;
    for (int i = 0; i < q->n; i++) {
        if (q->done[i]) continue;
        if (q->is_send[i]) {
            MPI_Request_free(&q->req[i]);
            continue;
        }
        MPI_Cancel(&q->req[i]);
        double until = tl_now() + 1.0;
        int flag = 0;
        while (!flag && tl_now() < until) {
            if (MPI_Test(&q->req[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
            if (!flag) nap(1000000);
        }
    }
}

/* Waits for every request of q, polling against the communicator's deadline. */
static int wait_reqs(tl_comm *c, reqs *q, const char *what, tl_error *err) {
    double start = tl_now();
    long spins = 0;
    int left = q->n;
    while (left > 0) {
        for (int i = 0; i < q->n; i++) {
            if (q->done[i]) continue;
            int flag = 0;
            if (MPI_Test(&q->req[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                return tl_fail(err, "rank %d: %s: MPI error in a message with rank %d", c->rank, what, q->peer[i]);
            if (flag) {
                q->done[i] = 1;
                left--;
            }
        }
        if (!left) break;
        double waited = tl_now() - start;
        if (c->timeout > 0 && waited > c->timeout) {
            char names[256] = "";
            size_t len = 0;
            int last = -1;
            for (int i = 0; i < q->n && len + 16 < sizeof names; i++) {
                if (q->done[i] || q->peer[i] == last) continue;
                int k = snprintf(names + len, sizeof names - len, "%s%d", len ? ", " : "", q->peer[i]);
                if (k > 0) len += (size_t)k;
                last = q->peer[i];
            }
            abandon(c, q);
            return tl_fail(err, "rank %d: %s timed out after %.0f s waiting for rank %s (dead or hung?)", c->rank,
                           what, c->timeout, names);
        }
        /* spin briefly (collectives are usually answered at once), then yield the core */
        if (++spins > 1000) nap(waited < 0.01 ? 20000 : 500000);
    }
    return 0;
}
#endif

int tl_comm_reduce_scatter_f32(tl_comm *c, const float *buf, size_t n, size_t align, float *out, tl_error *err) {
    if (c->world == 1) { /* out may be buf's own slice */
        size_t lo, hi;
        tl_shard_range(n, 1, align, 0, &lo, &hi);
        if (out != buf + lo) memmove(out, buf + lo, (hi - lo) * sizeof(float));
        return 0;
    }
    return tl_comm_reduce_scatter_range_f32(c, buf, n, align, 0, n, out, 0, err);
}

/* [*l, *h) = rank r's shard of n elements intersected with [a, b) (empty: *l == *h). */
static void shard_in(size_t n, int world, size_t align, int r, size_t a, size_t b, size_t *l, size_t *h) {
    tl_shard_range(n, world, align, r, l, h);
    if (*l < a) *l = a;
    if (*h > b) *h = b;
    if (*h < *l) *h = *l;
}

int tl_comm_reduce_scatter_range_f32(tl_comm *c, const float *part, size_t n, size_t align, size_t a, size_t b,
                                     float *slice, int accumulate, tl_error *err) {
    const int W = c->world, me = c->rank;
    size_t lo, hi, ml, mh;
    tl_shard_range(n, W, align, me, &lo, &hi);
    shard_in(n, W, align, me, a, b, &ml, &mh);
    if (W == 1) {
        const float *src = part + (ml - a);
        float *dst = slice + (ml - lo);
        for (size_t i = 0; i < mh - ml; i++) dst[i] = accumulate ? dst[i] + src[i] : src[i];
        return 0;
    }
#ifndef TL_WITH_MPI
    (void)slice;
    return tl_fail(err, "no MPI");
#else
    size_t biggest = 0;
    for (int r = 0; r < W; r++) {
        size_t l, h;
        shard_in(n, W, align, r, a, b, &l, &h);
        if (h - l > biggest) biggest = h - l;
    }
    if (biggest == 0) return 0;
    size_t ch = reduce_piece(biggest, W);
    float *tmp = scratch(c, (size_t)W * ch, err);
    if (!tmp) return -1;
    const float **parts = malloc(sizeof *parts * (size_t)W);
    reqs q;
    if (!parts || reqs_init(c, &q, 2 * W, err)) {
        free(parts);
        return parts ? -1 : tl_fail(err, "out of memory");
    }
    int rc = 0;
    for (size_t k = 0; k < biggest && !rc; k += ch) {
        c->seq++;
        q.n = 0;
        size_t mine = mh - ml > k ? (mh - ml - k < ch ? mh - ml - k : ch) : 0;
        for (int p = 0; p < W && !rc; p++) {
            if (p == me) continue;
            size_t l, h;
            shard_in(n, W, align, p, a, b, &l, &h);
            size_t theirs = h - l > k ? (h - l - k < ch ? h - l - k : ch) : 0;
            if (mine) rc = post(c, &q, 0, tmp + (size_t)p * ch, mine * sizeof(float), p, "reduce-scatter", err);
            if (!rc && theirs)
                rc = post(c, &q, 1, (void *)(part + (l - a) + k), theirs * sizeof(float), p, "reduce-scatter", err);
        }
        if (!rc) rc = wait_reqs(c, &q, "reduce-scatter", err);
        if (!rc && mine) {
            for (int p = 0; p < W; p++) parts[p] = p == me ? part + (ml - a) + k : tmp + (size_t)p * ch;
            ordered_sum(c, slice + (ml - lo) + k, parts, W, mine, accumulate);
        }
    }
    reqs_free(&q);
    free(parts);
    return rc;
#endif
}

int tl_comm_allgather_range_f32(tl_comm *c, float *buf, size_t n, size_t align, size_t a, size_t b, tl_error *err) {
    if (c->world == 1) return 0;
#ifndef TL_WITH_MPI
    (void)buf;
    (void)n;
    (void)align;
    (void)a;
    (void)b;
    return tl_fail(err, "no MPI");
#else
    const int W = c->world, me = c->rank;
    if (b > n) b = n;
    /* rank r contributes its shard's part of [a, b) */
    size_t lo = 0, hi = 0, biggest = 0;
    for (int r = 0; r < W; r++) {
        size_t l, h;
        tl_shard_range(n, W, align, r, &l, &h);
        l = l > a ? l : a;
        h = h < b ? h : b;
        if (h > l && h - l > biggest) biggest = h - l;
        if (r == me) {
            lo = l;
            hi = h > l ? h : l;
        }
    }
    reqs q;
    if (reqs_init(c, &q, 2 * W, err)) return -1;
    int rc = 0;
    for (size_t k = 0; k < biggest && !rc; k += CHUNK) {
        c->seq++;
        q.n = 0;
        size_t mine = hi - lo > k ? (hi - lo - k < CHUNK ? hi - lo - k : CHUNK) : 0;
        for (int p = 0; p < W && !rc; p++) {
            if (p == me) continue;
            size_t l, h;
            tl_shard_range(n, W, align, p, &l, &h);
            l = l > a ? l : a;
            h = h < b ? h : b;
            size_t theirs = h > l && h - l > k ? (h - l - k < CHUNK ? h - l - k : CHUNK) : 0;
            if (theirs) rc = post(c, &q, 0, buf + l + k, theirs * sizeof(float), p, "all-gather", err);
            if (!rc && mine) rc = post(c, &q, 1, buf + lo + k, mine * sizeof(float), p, "all-gather", err);
        }
        if (!rc) rc = wait_reqs(c, &q, "all-gather", err);
    }
    reqs_free(&q);
    return rc;
#endif
}

int tl_comm_allgather_f32(tl_comm *c, float *buf, size_t n, size_t align, tl_error *err) {
    return tl_comm_allgather_range_f32(c, buf, n, align, 0, n, err);
}

/* Gather (to_root) or scatter (!to_root) of the ranks' shards of a full buffer at
 * root, in chunks; `mine` is this rank's shard. */
static int root_exchange(tl_comm *c, float *mine, float *full, size_t n, size_t align, int root, int to_root,
                         const char *what, tl_error *err) {
    size_t lo, hi;
    tl_shard_range(n, c->world, align, c->rank, &lo, &hi);
    if (c->rank == root && full + lo != mine) {
        if (to_root) memmove(full + lo, mine, (hi - lo) * sizeof(float));
        else memmove(mine, full + lo, (hi - lo) * sizeof(float));
    }
    if (c->world == 1) return 0;
#ifndef TL_WITH_MPI
    (void)what;
    return tl_fail(err, "no MPI");
#else
    const int W = c->world, me = c->rank;
    reqs q;
    if (reqs_init(c, &q, W, err)) return -1;
    int rc = 0;
    for (size_t k = 0; !rc; k += CHUNK) {
        c->seq++;
        q.n = 0;
        int any = 0;
        for (int p = 0; p < W && !rc; p++) {
            size_t l, h;
            tl_shard_range(n, W, align, p, &l, &h);
            size_t len = h - l > k ? (h - l - k < CHUNK ? h - l - k : CHUNK) : 0;
            any |= len > 0;
            if (!len || p == root) continue;
            /* post(..., 0 = receive, 1 = send, ...) */
            if (me == root) rc = post(c, &q, !to_root, full + l + k, len * sizeof(float), p, what, err);
            else if (p == me) rc = post(c, &q, to_root, mine + k, len * sizeof(float), root, what, err);
        }
        if (!any) break;
        if (!rc) rc = wait_reqs(c, &q, what, err);
    }
    reqs_free(&q);
    return rc;
#endif
}

int tl_comm_gather_f32(tl_comm *c, const float *shard, float *full, size_t n, size_t align, int root, tl_error *err) {
    return root_exchange(c, (float *)shard, full, n, align, root, 1, "gather", err);
}

int tl_comm_scatter_f32(tl_comm *c, const float *full, float *shard, size_t n, size_t align, int root, tl_error *err) {
    return root_exchange(c, shard, (float *)full, n, align, root, 0, "scatter", err);
}

int tl_comm_allgather_bytes(tl_comm *c, const void *mine, size_t bytes, void *all, tl_error *err) {
    memmove((char *)all + (size_t)c->rank * bytes, mine, bytes);
    if (c->world == 1) return 0;
#ifndef TL_WITH_MPI
    return tl_fail(err, "no MPI");
#else
    if (bytes > (size_t)1 << 30) return tl_fail(err, "all-gather of %zu bytes per rank is too large", bytes);
    const int W = c->world, me = c->rank;
    reqs q;
    if (reqs_init(c, &q, 2 * W, err)) return -1;
    c->seq++;
    int rc = 0;
    for (int p = 0; p < W && !rc; p++) {
        if (p == me) continue;
        rc = post(c, &q, 0, (char *)all + (size_t)p * bytes, bytes, p, "exchange", err);
        if (!rc) rc = post(c, &q, 1, (char *)all + (size_t)me * bytes, bytes, p, "exchange", err);
    }
    if (!rc) rc = wait_reqs(c, &q, "exchange", err);
    reqs_free(&q);
    return rc;
#endif
}

int tl_comm_allreduce_f32(tl_comm *c, float *buf, size_t n, tl_error *err) {
    if (c->world == 1) return 0;
    size_t lo, hi;
    tl_shard_range(n, c->world, 1, c->rank, &lo, &hi);
    if (tl_comm_reduce_scatter_f32(c, buf, n, 1, buf + lo, err)) return -1;
    return tl_comm_allgather_f32(c, buf, n, 1, err);
}

int tl_comm_allreduce_f64(tl_comm *c, double *buf, size_t n, tl_error *err) {
    if (c->world == 1 || n == 0) return 0;
    double *all = malloc(sizeof(double) * n * (size_t)c->world);
    if (!all) return tl_fail(err, "out of memory");
    int rc = tl_comm_allgather_bytes(c, buf, n * sizeof(double), all, err);
    if (!rc)
        for (size_t i = 0; i < n; i++) {
            double s = all[i];
            for (int q = 1; q < c->world; q++) s += all[(size_t)q * n + i];
            buf[i] = s;
        }
    free(all);
    return rc;
}

int tl_comm_bcast(tl_comm *c, void *buf, size_t bytes, int root, tl_error *err) {
    if (c->world == 1) return 0;
#ifndef TL_WITH_MPI
    (void)buf;
    (void)bytes;
    (void)root;
    return tl_fail(err, "no MPI");
#else
    const int W = c->world, me = c->rank;
    const size_t piece = (size_t)1 << 30;
    reqs q;
    if (reqs_init(c, &q, W, err)) return -1;
    int rc = 0;
    for (size_t k = 0; (k < bytes || (bytes == 0 && k == 0)) && !rc; k += piece) {
        size_t len = bytes - k < piece ? bytes - k : piece;
        c->seq++;
        q.n = 0;
        if (me == root) {
            for (int p = 0; p < W && !rc; p++)
                if (p != me) rc = post(c, &q, 1, (char *)buf + k, len, p, "broadcast", err);
        } else {
            rc = post(c, &q, 0, (char *)buf + k, len, root, "broadcast", err);
        }
        if (!rc) rc = wait_reqs(c, &q, "broadcast", err);
        if (bytes == 0) break;
    }
    reqs_free(&q);
    return rc;
#endif
}

int tl_comm_barrier(tl_comm *c, tl_error *err) {
    if (c->world == 1) return 0;
    char one = 1, *all = malloc((size_t)c->world);
    if (!all) return tl_fail(err, "out of memory");
    int rc = tl_comm_allgather_bytes(c, &one, 1, all, err);
    free(all);
    return rc;
}

int tl_comm_agree(tl_comm *c, int rc, tl_error *err) {
    if (c->world == 1) return rc ? -1 : 0;
    typedef struct {
        int rc;
        char msg[1020];
    } status;
    status mine = {rc ? 1 : 0, ""};
    if (rc && err) {
        memcpy(mine.msg, err->msg, sizeof mine.msg - 1);
        mine.msg[sizeof mine.msg - 1] = 0;
    }
    status *all = malloc(sizeof *all * (size_t)c->world);
    if (!all) return tl_fail(err, "out of memory");
    tl_error xerr;
    if (tl_comm_allgather_bytes(c, &mine, sizeof mine, all, &xerr)) {
        free(all);
        if (rc) return -1; /* keep this rank's own message */
        if (err) *err = xerr;
        return -1;
    }
    int bad = -1;
    for (int q = 0; q < c->world && bad < 0; q++)
        if (all[q].rc) bad = q;
    if (bad >= 0) {
        char msg[1000];
        memcpy(msg, all[bad].msg, sizeof msg - 1);
        msg[sizeof msg - 1] = 0;
        tl_fail(err, "rank %d: %s", bad, msg);
    }
    free(all);
    return bad >= 0 ? -1 : 0;
}

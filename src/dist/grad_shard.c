/* grad_shard.c - ZeRO-2/3 gradient slices and buckets (see grad_shard.h). */
#include "grad_shard.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_JOBS = 8 }; /* units handed to the communication thread and not yet reduced */

/* A unit's bucket: in the ring (off, len) or the tied embedding's own bucket. */
typedef struct {
    int unit, in_ring, acc;
    size_t off, len;
} job;

struct tl_grad_shard {
    tl_model *m;
    tl_comm *comm;     /* the caller's: reductions on the calling thread */
    size_t n, lo, hi;
    float *slice;      /* [hi - lo] */
    size_t bytes;      /* gradient storage allocated */
    float *ring;       /* buckets of the units other than the tied embedding */
    size_t ring_len;
    int right;         /* overlap: the next bucket goes to the ring's right end (they alternate) */
    float *embed;      /* tied: the embedding's bucket (NULL untied) */
    job cur[2];        /* buckets begun and not yet ended: [0] ring, [1] embedding */
    int acc;           /* 0 for the first micro-batch of a step: its sums replace the slice */
    /* ---- overlap: a communication thread; everything below under mu ---- */
    int threaded;
    tl_comm *tcomm;    /* the thread's duplicate communicator */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job q[MAX_JOBS];   /* FIFO of handed-over units; their buckets are busy until reduced */
    int q_head, q_len;
    int quit, failed;
    tl_error terr;     /* the thread's first error */
};

static float *grad_alloc(tl_grad_shard *g, size_t floats) {
    float *p = tl_alloc((floats ? floats : 1) * sizeof(float));
    if (p) g->bytes += (floats ? floats : 1) * sizeof(float);
    return p;
}

static float *bucket(const tl_grad_shard *g, const job *j) { return j->in_ring ? g->ring + j->off : g->embed; }

static int reduce(tl_grad_shard *g, tl_comm *c, const job *j, tl_error *err) {
    size_t a, e;
    tl_model_unit_range(g->m, j->unit, &a, &e);
    if (!tl_comm_reduce_scatter_range_f32(c, bucket(g, j), g->n, TL_SHARD_ALIGN, a, e, g->slice, j->acc, err)) return 0;
    const int L = g->m->cfg.n_layers;
    if (j->unit == 0) return tl_wrap(err, "gradients of the embedding");
    if (j->unit > L) return tl_wrap(err, "gradients of the final norm and lm_head");
    return tl_wrap(err, "gradients of layer %d", j->unit - 1);
}

static void *comm_thread(void *arg) {
    tl_grad_shard *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->q_len && !g->quit) pthread_cond_wait(&g->cv, &g->mu);
        if (!g->q_len) break; /* quit with nothing queued */
        job j = g->q[g->q_head];
        int failed = g->failed;
        pthread_mutex_unlock(&g->mu);
        tl_error err;
        /* after a failure the ranks are out of step: drop the rest, freeing their buckets */
        int rc = failed ? 0 : reduce(g, g->tcomm, &j, &err);
        pthread_mutex_lock(&g->mu);
        if (rc && !g->failed) {
            g->failed = 1;
            g->terr = err;
        }
        g->q_head = (g->q_head + 1) % MAX_JOBS;
        g->q_len--;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* The thread's error, as this pass's (called with mu held). */
static int thread_failed(tl_grad_shard *g, tl_error *err) {
    if (!g->failed) return 0;
    if (err) *err = g->terr;
    return -1;
}

/* Whether a queued unit's bucket (not yet reduced) overlaps j's (called with mu held). */
static int busy(const tl_grad_shard *g, const job *j) {
    for (int i = 0; i < g->q_len; i++) {
        const job *o = &g->q[(g->q_head + i) % MAX_JOBS];
        if (o->in_ring == j->in_ring && (!j->in_ring || (o->off < j->off + j->len && j->off < o->off + o->len)))
            return 1;
    }
    return 0;
}

static int grads_hook(void *user, int unit, tl_grads_event ev, float **storage, tl_error *err) {
    tl_grad_shard *g = user;
    const int in_ring = !(g->embed && unit == 0);
    job *j = &g->cur[!in_ring];
    if (ev == TL_GRADS_BEGIN) {
        size_t a, e;
        tl_model_unit_range(g->m, unit, &a, &e);
        *j = (job){unit, in_ring, g->acc, 0, e - a};
        /* with the thread, buckets alternate between the ring's ends, so the next unit's never
         * overlaps the one just handed over (the ring holds any two units in a row) */
        if (in_ring && g->threaded) {
            j->off = g->right ? g->ring_len - j->len : 0;
            g->right = !g->right;
        }
        if (g->threaded) { /* wait until the thread has reduced what this bucket held */
            pthread_mutex_lock(&g->mu);
            while ((busy(g, j) || g->q_len == MAX_JOBS) && !g->failed) pthread_cond_wait(&g->cv, &g->mu);
            int rc = thread_failed(g, err);
            pthread_mutex_unlock(&g->mu);
            if (rc) return -1;
        }
        float *b = bucket(g, j);
        memset(b, 0, j->len * sizeof(float));
        *storage = b;
        return 0;
    }
    if (j->unit != unit || *storage != bucket(g, j))
        return tl_fail(err, "gradient unit %d ended without having begun", unit);
    if (!g->threaded) return reduce(g, g->comm, j, err);
    pthread_mutex_lock(&g->mu);
    int rc = thread_failed(g, err);
    if (!rc) {
        g->q[(g->q_head + g->q_len) % MAX_JOBS] = *j;
        g->q_len++;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

tl_grad_shard *tl_grad_shard_create(tl_model *m, tl_comm *comm, int overlap, tl_error *err) {
    tl_grad_shard *g = calloc(1, sizeof *g);
    if (!g) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    g->m = m;
    g->comm = comm;
    g->n = m->n_params;
    tl_shard_range(g->n, tl_comm_world(comm), TL_SHARD_ALIGN, tl_comm_rank(comm), &g->lo, &g->hi);
    overlap = overlap && tl_comm_world(comm) > 1;
    if (overlap && !tl_comm_threaded(comm)) {
        free(g);
        tl_fail(err, "overlapping communication needs MPI initialised with MPI_THREAD_MULTIPLE");
        return NULL;
    }
    /* the sizes are the plan's (tl_zero_memory_plan reports what is allocated here) */
    tl_grad_buckets plan;
    tl_grad_bucket_plan(&m->cfg, overlap, &plan);
    g->ring_len = plan.ring;
    g->slice = grad_alloc(g, g->hi - g->lo);
    g->ring = grad_alloc(g, plan.ring);
    if (plan.embed) g->embed = grad_alloc(g, plan.embed);
    int ok = g->slice && g->ring && (g->embed || !plan.embed);
    if (!ok) {
        tl_fail(err, "out of memory allocating %zu floats of gradient slice and buckets",
                g->hi - g->lo + tl_grad_buckets_floats(&plan));
        tl_grad_shard_free(g);
        return NULL;
    }
    if (overlap) {
        if (!(g->tcomm = tl_comm_dup(comm, err))) {
            tl_grad_shard_free(g);
            return NULL;
        }
        pthread_mutex_init(&g->mu, NULL);
        pthread_cond_init(&g->cv, NULL);
        if (pthread_create(&g->thread, NULL, comm_thread, g)) {
            pthread_mutex_destroy(&g->mu);
            pthread_cond_destroy(&g->cv);
            tl_fail(err, "cannot start the communication thread");
            tl_grad_shard_free(g);
            return NULL;
        }
        g->threaded = 1;
    }
    m->grads_hook = grads_hook;
    m->grads_hook_user = g;
    return g;
}

void tl_grad_shard_free(tl_grad_shard *g) {
    if (!g) return;
    if (g->threaded) {
        pthread_mutex_lock(&g->mu);
        g->quit = 1;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->thread, NULL);
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
    }
    tl_comm_free(g->tcomm);
    if (g->m && g->m->grads_hook_user == g) {
        g->m->grads_hook = NULL;
        g->m->grads_hook_user = NULL;
    }
    tl_free(g->slice);
    tl_free(g->ring);
    tl_free(g->embed);
    free(g);
}

void tl_grad_shard_next(tl_grad_shard *g, int first) { g->acc = !first; }

int tl_grad_shard_flush(tl_grad_shard *g, tl_error *err) {
    if (!g->threaded) return 0;
    pthread_mutex_lock(&g->mu);
    while (g->q_len && !g->failed) pthread_cond_wait(&g->cv, &g->mu);
    int rc = thread_failed(g, err);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

float *tl_grad_shard_slice(tl_grad_shard *g) { return g->slice; }
size_t tl_grad_shard_bytes(const tl_grad_shard *g) { return g->bytes; }
int tl_grad_shard_overlaps(const tl_grad_shard *g) { return g->threaded; }

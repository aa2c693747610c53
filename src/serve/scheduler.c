/* scheduler.c - slots, the job queue and the engine thread (scheduler.h). */
#include "scheduler.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer_batch.h"

typedef struct {
    tl_infer_state st;
    int *cached; /* the ids in st's cache: cached[0..st.pos) */
    tl_job *job;
    uint64_t last_used;
} slot;

struct tl_sched {
    const tl_infer_model *m;
    tl_sched_opts o;
    int threads;
    slot *slots;
    tl_infer_batch batch;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work, progress;
    tl_job *queue_head, *queue_tail;
    int closed, stopping;
    uint64_t clock;
    tl_sched_metrics met;
    /* speculative decoding (opts.draft): the draft's KV cache beside the one slot */
    tl_infer_state draft_st;
    tl_spec spec;
    int has_draft_st, has_spec;
};


tl_job *tl_job_new(void) {
    tl_job *j = calloc(1, sizeof *j);
    if (j) {
        j->refs = 1;
        j->slot = -1;
        j->pending = -1;
        tl_sampler_default_opts(&j->so);
    }
    return j;
}

static void unref(tl_job *j);

static void job_free(tl_job *j) {
    if (j->after) unref(j->after);
    free(j->lps);
    free(j->ids);
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    free(j->text);
    if (j->has_sampler) {
        tl_sampler_free(&j->sp);
        tl_decoder_free(&j->dec);
        tl_stop_free(&j->sf);
    }
    free(j);
}

/* under the lock */
static void unref(tl_job *j) {
    if (--j->refs == 0) job_free(j);
}

void tl_job_share_prompt(tl_sched *s, tl_job *j, tl_job *first) {
    pthread_mutex_lock(&s->mu);
    first->refs++;
    j->after = first;
    pthread_mutex_unlock(&s->mu);
}

void tl_sched_lock(tl_sched *s) { pthread_mutex_lock(&s->mu); }
void tl_sched_unlock(tl_sched *s) { pthread_mutex_unlock(&s->mu); }
tl_sched_metrics *tl_sched_metrics_locked(tl_sched *s) { return &s->met; }
int tl_sched_ctx(const tl_sched *s) { return s->o.ctx; }

void tl_sched_wait(tl_sched *s, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&s->progress, &s->mu, &ts);
}

int tl_sched_submit(tl_sched *s, tl_job *j) {
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return 1;
    }
    j->refs++;
    j->state = TL_JOB_QUEUED;
    j->t_submit = tl_now();
    j->next = NULL;
    if (s->queue_tail)
        s->queue_tail->next = j;
    else
        s->queue_head = j;
    s->queue_tail = j;
    s->met.requests++;
    s->met.queued++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void tl_sched_release(tl_sched *s, tl_job *j) {
    pthread_mutex_lock(&s->mu);
    if (j->state != TL_JOB_DONE) {
        j->cancelled = 1;
        pthread_cond_signal(&s->work);
    }
    unref(j);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ engine side */

static void append_text(const char *t, size_t n, void *user) {
    tl_job *j = user;
    if (j->text_len + n + 1 > j->text_cap) {
        size_t nc = (j->text_len + n + 1) * 2;
        char *nt = realloc(j->text, nc);
        if (!nt) {
            j->oom = 1;
            return;
        }
        j->text = nt;
        j->text_cap = nc;
    }
    memcpy(j->text + j->text_len, t, n);
    j->text_len += n;
    j->text[j->text_len] = '\0';
}

/* under the lock: j leaves its slot (the slot keeps its cache for later prefixes) */
static void finish(tl_sched *s, tl_job *j, const char *why, const char *error, int flush) {
    if (flush && j->has_sampler) { /* bytes the decoder and the stop filter still hold */
        const char *t;
        size_t n;
        tl_error e;
        if (tl_decoder_flush(&j->dec, &t, &n, &e) == 0 && n && tl_stop_push(&j->sf, t, n) < 0) j->oom = 1;
        tl_stop_flush(&j->sf);
    }
    j->finish = why;
    if (error) snprintf(j->error, sizeof j->error, "%.255s", error);
    if (j->oom && !error) {
        j->finish = "error";
        snprintf(j->error, sizeof j->error, "out of memory for the output");
    }
    if (j->state == TL_JOB_QUEUED) s->met.queued--;
    if (j->state == TL_JOB_RUNNING) s->met.active--;
    j->state = TL_JOB_DONE;
    if (j->slot >= 0) s->slots[j->slot].job = NULL;
    j->slot = -1;
    s->met.finished++;
    s->met.completion_tokens += j->n_gen;
    unref(j); /* the engine's reference */
}

static int is_eos(const tl_infer_model *m, int id) {
    for (int i = 0; i < m->gen.n_eos; i++)
        if (m->gen.eos_ids[i] == id) return 1;
    return 0;
}

/* The log-softmax normaliser of logits[0..V) and the k largest logits' ids,
 * largest first (ties: the lower id first, as greedy picks). */
static double log_sum_exp_top(const float *logits, int V, int k, int *top) {
    float mx = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    int n = 0;
    for (int i = 0; i < V; i++) {
        sum += exp((double)logits[i] - mx);
        if (k > 0 && (n < k || logits[i] > logits[top[n - 1]])) {
            int at = n < k ? n++ : n - 1;
            while (at > 0 && logits[i] > logits[top[at - 1]]) top[at] = top[at - 1], at--;
            top[at] = i;
        }
    }
    return mx + log(sum);
}

/* under the lock: appends id's record (logits not yet changed by the sampler) */
static void record_logprob(tl_job *j, const float *logits, int V, int id) {
    if (j->n_lps == j->lps_cap) {
        int nc = j->lps_cap ? 2 * j->lps_cap : 16;
        tl_token_logprob *nl = realloc(j->lps, sizeof *nl * (size_t)nc);
        if (!nl) {
            j->oom = 1;
            return;
        }
        j->lps = nl;
        j->lps_cap = nc;
    }
    tl_token_logprob *r = &j->lps[j->n_lps++];
    int k = j->top_logprobs < TL_JOB_MAX_TOP_LOGPROBS ? j->top_logprobs : TL_JOB_MAX_TOP_LOGPROBS;
    double lse = log_sum_exp_top(logits, V, k, r->top_id);
    r->id = id;
    r->logprob = (float)(logits[id] - lse);
    r->n_top = k;
    for (int i = 0; i < k; i++) r->top_logprob[i] = (float)(logits[r->top_id[i]] - lse);
}

/* under the lock: id is the job's next token, produced when the slot's cache
 * held pos tokens (what its limits are checked against); logits are the model's
 * for that position (NULL where they are not kept: the speculative path, which
 * refuses logprobs) */
static void take_token(tl_sched *s, tl_job *j, int id, int pos, const float *logits) {
    slot *sl = &s->slots[j->slot];
    if (j->n_gen == 0) {
        j->t_first = tl_now();
        s->met.ttft_sum += j->t_first - j->t_submit;
        s->met.ttft_count++;
    }
    if (is_eos(s->m, id)) {
        finish(s, j, "stop", NULL, 1);
        return;
    }
    j->n_gen++;
    if (j->logprobs && logits) record_logprob(j, logits, s->m->cfg.vocab_size, id);
    const char *t;
    size_t n;
    tl_error e;
    int hit = 0;
    if (tl_decoder_push(&j->dec, id, &t, &n, &e) == 0 && n) hit = tl_stop_push(&j->sf, t, n);
    if (hit) {
        if (hit < 0) j->oom = 1;
        finish(s, j, "stop", NULL, 0); /* the text after the stop string is dropped */
        return;
    }
    long limit = j->max_tokens > 0 ? j->max_tokens : (long)s->o.ctx;
    if (j->n_gen >= limit || pos >= sl->st.max_ctx) {
        finish(s, j, "length", NULL, 1);
        return;
    }
    j->pending = id;
}

/* under the lock: the slot's logits are fresh; picks the next id */
static void sample_step(tl_sched *s, tl_job *j) {
    slot *sl = &s->slots[j->slot];
    /* the sampler changes logits in place only for a repetition penalty, which serving never sets,
     * so they are still the model's after the draw */
    int id = tl_sampler_sample(&j->sp, sl->st.logits, sl->cached, sl->st.pos);
    take_token(s, j, id, sl->st.pos, sl->st.logits);
}

static int lcp(const int *a, int na, const int *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Whether j waits for another choice of its request to have the shared prompt in a cache. */
static int waits(const tl_job *j) {
    const tl_job *f = j->after;
    return f && (f->state == TL_JOB_QUEUED || (f->state == TL_JOB_RUNNING && f->n_fed < f->n_ids));
}

/* Copying a prefix from another (busy) slot pays when it saves at least a
 * short prompt's worth of compute; a smaller gain would only move where the
 * prompt is split. */
#define MIN_COPY 32

/* under the lock, engine thread: the slot other than dst holding the longest
 * prefix of j's prompt, when copying it beats dst's own `have` tokens; -1 if none */
static int copy_source(tl_sched *s, const tl_job *j, int dst, int have, int *len) {
    int best = -1, best_len = have;
    for (int i = 0; i < s->o.parallel; i++) {
        if (i == dst) continue;
        slot *sl = &s->slots[i];
        int n = lcp(sl->cached, sl->st.pos, j->ids, j->n_ids);
        int sibling = j->after && sl->job == j->after;
        if (n > best_len && (sibling || n - have >= MIN_COPY)) best = i, best_len = n;
    }
    *len = best_len;
    return best;
}

/* engine thread: KV cache positions [0, n) of slot src into slot dst (same layout, same max_ctx) */
static void copy_prefix(tl_sched *s, int dst, int src, int n) {
    tl_infer_copy_prefix(&s->slots[dst].st, &s->slots[src].st, n);
    memcpy(s->slots[dst].cached, s->slots[src].cached, sizeof(int) * (size_t)n);
}

/* under the lock: queued jobs take free slots in order (the slot with the
 * longest cached prefix first, else the least recently used), except choices
 * waiting for their first choice's prompt, which later jobs pass */
static void admit(tl_sched *s) {
    tl_job *prev = NULL;
    for (tl_job *j = s->queue_head, *next; j; j = next) {
        next = j->next;
        if (!j->cancelled && s->o.prefix_cache && waits(j)) {
            prev = j;
            continue;
        }
        int best = -1, best_len = -1;
        for (int i = 0; i < s->o.parallel; i++) {
            slot *sl = &s->slots[i];
            if (sl->job) continue;
            int len = s->o.prefix_cache ? lcp(sl->cached, sl->st.pos, j->ids, j->n_ids) : 0;
            if (len > best_len || (len == best_len && sl->last_used < s->slots[best].last_used)) best = i, best_len = len;
        }
        if (best < 0) return;
        if (prev)
            prev->next = next;
        else
            s->queue_head = next;
        if (s->queue_tail == j) s->queue_tail = prev;
        s->met.queued--;
        if (j->cancelled) {
            j->state = TL_JOB_RUNNING; /* counted out of the queue already */
            s->met.active++;
            s->met.cancelled++;
            finish(s, j, "error", "cancelled", 0);
            continue;
        }
        tl_error e;
        if (tl_sampler_init(&j->sp, &j->so, s->m->cfg.vocab_size, j->seed, &e)) {
            j->state = TL_JOB_RUNNING;
            s->met.active++;
            finish(s, j, "error", e.msg, 0);
            continue;
        }
        j->has_sampler = 1;
        tl_decoder_init(&j->dec, s->m->tok);
        tl_stop_init(&j->sf, (const char *const *)j->stops, j->n_stops, append_text, j);
        slot *sl = &s->slots[best];
        int src_len, src = s->o.prefix_cache ? copy_source(s, j, best, best_len, &src_len) : -1;
        if (src >= 0) {
            if (src_len >= j->n_ids) src_len = j->n_ids - 1;
            copy_prefix(s, best, src, src_len);
            best_len = src_len;
        }
        int reuse = best_len < j->n_ids ? best_len : j->n_ids - 1; /* one token runs, for the logits */
        tl_infer_truncate(&sl->st, reuse);
        if (s->has_spec) { /* the draft's cache holds a prefix of the slot's */
            tl_infer_truncate(&s->draft_st, reuse);
            tl_spec_set_sampling(&s->spec, &j->so);
        }
        j->n_fed = reuse;
        j->n_reused = reuse;
        j->slot = best;
        j->state = TL_JOB_RUNNING;
        sl->job = j;
        sl->last_used = ++s->clock;
        s->met.active++;
        s->met.prompt_tokens += j->n_ids;
        s->met.reused_tokens += reuse;
    }
}

/* Prompt remainders of at most this many tokens (and at most --chunk) join the
 * batched step as extra rows; longer prompts run in chunks of --chunk tokens
 * through the prompt pass (sgemm), one chunk per step so decoding goes on.  The
 * split depends only on a request's own prompt, so its result does not depend
 * on the other requests. */
#define SMALL_PROMPT 32

static int small_prompt(const tl_sched *s) { return s->o.chunk < SMALL_PROMPT ? s->o.chunk : SMALL_PROMPT; }

static void *engine_main(void *arg) {
    tl_sched *s = arg;
    omp_set_num_threads(s->threads);
    const int P = s->o.parallel, small = small_prompt(s);
    tl_job **big = calloc((size_t)P, sizeof *big), **rag = calloc((size_t)P, sizeof *rag);
    tl_infer_state **states = calloc((size_t)P, sizeof *states);
    int *counts = calloc((size_t)P, sizeof *counts), *ready = calloc((size_t)P, sizeof *ready);
    int *ids = calloc((size_t)s->batch.max_rows, sizeof *ids);
    char (*errs)[256] = calloc((size_t)P, sizeof *errs);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < P; i++) {
            tl_job *j = s->slots[i].job;
            if (j && j->cancelled) {
                s->met.cancelled++;
                finish(s, j, "error", s->closed ? "the server is shutting down" : "cancelled", 0);
            }
        }
        admit(s);
        int nb = 0, nr = 0, rows = 0, n_dec = 0;
        tl_job *spec_job = NULL; /* with a draft: the one slot's decode step */
        for (int i = 0; i < P; i++) {
            tl_job *j = s->slots[i].job;
            if (!j) continue;
            int left = j->n_ids - j->n_fed;
            /* with a draft every prompt runs through the prompt pass and every
             * step through the single-token decode's kernels, as generate runs them */
            if (left > small || (s->has_spec && left > 0)) {
                big[nb++] = j;
            } else if (s->has_spec && j->pending >= 0) {
                spec_job = j;
            } else if (left > 0) {
                memcpy(ids + rows, j->ids + j->n_fed, sizeof(int) * (size_t)left);
                rag[nr] = j, states[nr] = &s->slots[i].st, counts[nr] = left, rows += left, nr++;
            } else if (j->pending >= 0) {
                ids[rows] = j->pending;
                rag[nr] = j, states[nr] = &s->slots[i].st, counts[nr] = 1, rows++, nr++, n_dec++;
            }
        }
        if (!nb && !nr && !spec_job) {
            if (s->stopping) break;
            pthread_cond_wait(&s->work, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        /* the model runs outside the lock: only this thread touches slots and job engine fields */
        double t0 = tl_now();
        for (int k = 0; k < nb; k++) {
            tl_job *j = big[k];
            slot *sl = &s->slots[j->slot];
            int n = j->n_ids - j->n_fed < s->o.chunk ? j->n_ids - j->n_fed : s->o.chunk;
            tl_error e;
            ready[k] = 0;
            errs[k][0] = '\0';
            if (tl_infer_forward(&sl->st, j->ids + j->n_fed, n, NULL, &e)) {
                snprintf(errs[k], sizeof errs[k], "%.255s", e.msg);
                continue;
            }
            memcpy(sl->cached + j->n_fed, j->ids + j->n_fed, sizeof(int) * (size_t)n);
            j->n_fed += n;
            ready[k] = j->n_fed == j->n_ids;
        }
        double t1 = tl_now();
        int step_rc = 0;
        tl_error se;
        if (nr) {
            int *from = malloc(sizeof(int) * (size_t)nr);
            for (int k = 0; k < nr && from; k++) from[k] = states[k]->pos;
            step_rc = from ? tl_infer_step_batch(&s->batch, states, ids, counts, nr, &se)
                           : tl_fail(&se, "out of memory");
            for (int k = 0, r0 = 0; k < nr && !step_rc; r0 += counts[k], k++)
                memcpy(s->slots[rag[k]->slot].cached + from[k], ids + r0, sizeof(int) * (size_t)counts[k]);
            free(from);
        }
        int burst[TL_SPEC_MAX_K + 1], n_burst = 0, spec_pos = 0;
        long spec_prop = s->spec.proposed, spec_acc = s->spec.accepted;
        if (spec_job) {
            /* the cache holds all the slot's ids but the pending one, which the step runs */
            slot *sl = &s->slots[spec_job->slot];
            const long limit = spec_job->max_tokens > 0 ? spec_job->max_tokens : (long)s->o.ctx;
            const long left = limit - spec_job->n_gen;
            spec_pos = sl->st.pos + 1;
            sl->cached[sl->st.pos] = spec_job->pending;
            n_burst = tl_spec_step(&s->spec, &sl->st, &spec_job->sp, sl->cached, spec_pos,
                                   left > TL_SPEC_MAX_K ? TL_SPEC_MAX_K + 1 : (int)left, burst, &se);
            if (n_burst > 0) memcpy(sl->cached + spec_pos, burst, sizeof(int) * (size_t)(n_burst - 1));
        }
        double t2 = tl_now();
        pthread_mutex_lock(&s->mu);
        s->met.prompt_seconds += t1 - t0;
        if (spec_job) {
            s->met.decode_seconds += t2 - t1;
            s->met.decode_steps++;
            s->met.draft_proposed += s->spec.proposed - spec_prop;
            s->met.draft_accepted += s->spec.accepted - spec_acc;
            spec_job->pending = -1;
            if (n_burst < 0) finish(s, spec_job, "error", se.msg, 0);
            /* the tokens one at a time, as single steps would give them */
            for (int i = 0; i < n_burst && spec_job->state != TL_JOB_DONE; i++) {
                s->met.decode_rows++;
                take_token(s, spec_job, burst[i], spec_pos + i, NULL);
            }
        }
        if (nr) {
            s->met.decode_seconds += t2 - t1;
            s->met.decode_steps++;
            s->met.decode_rows += n_dec;
        }
        for (int k = 0; k < nb; k++) {
            if (errs[k][0])
                finish(s, big[k], "error", errs[k], 0);
            else if (ready[k])
                sample_step(s, big[k]);
        }
        for (int k = 0; k < nr; k++) {
            tl_job *j = rag[k];
            if (step_rc) {
                finish(s, j, "error", se.msg, 0);
                continue;
            }
            if (j->n_fed < j->n_ids)
                j->n_fed += counts[k]; /* a prompt remainder: its last token's logits are the first reply token's */
            else
                j->pending = -1;
            sample_step(s, j);
        }
        pthread_cond_broadcast(&s->progress);
    }
    pthread_mutex_unlock(&s->mu);
    free(big);
    free(rag);
    free(states);
    free(counts);
    free(ready);
    free(ids);
    free(errs);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void free_all(tl_sched *s) {
    if (s->slots)
        for (int i = 0; i < s->o.parallel; i++) {
            tl_infer_state_free(&s->slots[i].st);
            free(s->slots[i].cached);
        }
    free(s->slots);
    tl_infer_batch_free(&s->batch);
    if (s->has_spec) tl_spec_free(&s->spec);
    if (s->has_draft_st) tl_infer_state_free(&s->draft_st);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    free(s);
}

int tl_sched_start(tl_sched **out, const tl_infer_model *m, const tl_sched_opts *o, tl_error *err) {
    *out = NULL;
    if (!m->tok) return tl_fail(err, "%s: the model has no tokenizer; serving needs one", m->dir);
    if (o->parallel < 1 || o->parallel > 256) return tl_fail(err, "parallel slots %d: must be in [1, 256]", o->parallel);
    tl_sched *s = calloc(1, sizeof *s);
    if (!s) return tl_fail(err, "out of memory");
    s->m = m;
    s->o = *o;
    if (s->o.ctx <= 0 || s->o.ctx > m->cfg.max_seq_len) s->o.ctx = m->cfg.max_seq_len;
    if (s->o.chunk <= 0) s->o.chunk = 128;
    s->threads = omp_get_max_threads();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    s->slots = calloc((size_t)o->parallel, sizeof *s->slots);
    if (!s->slots) {
        free_all(s);
        return tl_fail(err, "out of memory");
    }
    for (int i = 0; i < o->parallel; i++) {
        if (tl_infer_state_init(&s->slots[i].st, m, s->o.ctx, err)) {
            free_all(s);
            return tl_wrap(err, "slot %d", i);
        }
        if (!(s->slots[i].cached = malloc(sizeof(int) * (size_t)s->o.ctx))) {
            free_all(s);
            return tl_fail(err, "out of memory");
        }
    }
    if (tl_infer_batch_init(&s->batch, m, o->parallel, o->parallel * small_prompt(s), err)) {
        free_all(s);
        return -1;
    }
    if (o->draft) {
        tl_sampler_opts so;
        tl_sampler_default_opts(&so);
        if (o->parallel != 1) {
            free_all(s);
            return tl_fail(err, "speculative decoding (a draft model) runs with one slot (--parallel 1), not %d",
                           o->parallel);
        }
        if (tl_spec_check_vocab(m, o->draft, o->draft->dir, err) ||
            tl_infer_state_init(&s->draft_st, o->draft, s->o.ctx, err)) {
            free_all(s);
            return -1;
        }
        s->has_draft_st = 1;
        if (tl_spec_init(&s->spec, &s->draft_st, &so, o->draft_k > 0 ? o->draft_k : 4, err)) {
            free_all(s);
            return -1;
        }
        s->has_spec = 1;
    }
    if (pthread_create(&s->thread, NULL, engine_main, s)) {
        free_all(s);
        return tl_fail(err, "cannot start the engine thread: %s", strerror(errno));
    }
    s->started = 1;
    *out = s;
    return 0;
}

void tl_sched_close(tl_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_mutex_unlock(&s->mu);
}

void tl_sched_drain(tl_sched *s, double seconds) {
    double until = tl_now() + seconds;
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    while ((s->met.queued || s->met.active) && tl_now() < until) tl_sched_wait(s, 50);
    /* what is left is cut off: the queue here, the running jobs by the engine at its next step */
    for (tl_job *j = s->queue_head; j;) {
        tl_job *next = j->next;
        finish(s, j, "error", "the server is shutting down", 0);
        j = next;
    }
    s->queue_head = s->queue_tail = NULL;
    for (int i = 0; i < s->o.parallel; i++)
        if (s->slots[i].job) s->slots[i].job->cancelled = 1;
    pthread_cond_signal(&s->work);
    while (s->met.active) tl_sched_wait(s, 50);
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->mu);
}

void tl_sched_stop(tl_sched *s) {
    if (!s) return;
    tl_sched_drain(s, 0);
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    if (s->started) pthread_join(s->thread, NULL);
    free_all(s);
}

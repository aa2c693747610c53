/* scheduler.h - the serving scheduler: N slots, each a KV cache (tl_infer_state),
 * and one engine thread that runs them with continuous batching.  Between two
 * decode steps, finished requests leave their slot and queued ones take a free
 * slot; prompts run in chunks of at most `chunk` tokens per step so a long one
 * does not stall the others; every request that is past its prompt advances by
 * one token per step in a single batched pass (src/infer/infer_batch.h).
 *
 * Prefix caching: a slot keeps the ids in its cache after its request ends; a
 * new request goes to the free slot whose cache shares the longest prefix with
 * its prompt and recomputes only the rest.
 *
 * Jobs are shared between the engine and the submitter (reference counted);
 * their output fields are read and written under the scheduler's lock. */
#ifndef TL_SERVE_SCHED_H
#define TL_SERVE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "infer.h"
#include "sampler.h"
#include "tokenizer.h"
#include "generate.h"
#include "speculative.h"

#define TL_JOB_MAX_STOPS 4
#define TL_JOB_MAX_TOP_LOGPROBS 20 /* OpenAI's limit */

/* One generated token's log-probability under the model's raw distribution
 * (log-softmax of the logits, before temperature and the sampler's filters),
 * with the most likely alternatives, most likely first. */
typedef struct {
    int id;
    float logprob;
    int n_top;
    int top_id[TL_JOB_MAX_TOP_LOGPROBS];
    float top_logprob[TL_JOB_MAX_TOP_LOGPROBS];
} tl_token_logprob;

typedef enum { TL_JOB_QUEUED, TL_JOB_RUNNING, TL_JOB_DONE } tl_job_state;

typedef struct tl_job {
    /* input: set before tl_sched_submit, then read-only */
    int *ids; /* prompt (owned; at least one id) */
    int n_ids;
    long max_tokens; /* 0: until the context is full */
    tl_sampler_opts so;
    uint64_t seed;
    char *stops[TL_JOB_MAX_STOPS]; /* owned */
    int n_stops;
    int logprobs;      /* record a tl_token_logprob per generated token (not with a draft model:
                        * its accepted tokens carry no logits; the server refuses such requests) */
    int top_logprobs;  /* alternatives per token, <= TL_JOB_MAX_TOP_LOGPROBS */
    struct tl_job *after; /* another choice of the same request (referenced): wait until its prompt is
                             in the cache, then copy it from there instead of recomputing it */
    /* output (under the lock) */
    char *text; /* everything produced so far (stop strings removed) */
    size_t text_len, text_cap;
    int n_gen;          /* completion tokens */
    int n_reused;       /* prompt tokens found in a slot's cache */
    tl_token_logprob *lps; /* with logprobs: one per completion token, lps[0..n_lps) */
    int n_lps, lps_cap;
    tl_job_state state;
    const char *finish; /* when done: "stop", "length" or "error" */
    char error[256];
    int oom;
    double t_submit, t_first; /* seconds (monotonic); t_first 0 until the first token */
    int cancelled;      /* the submitter is gone: the engine drops the job */
    int refs;
    /* engine side */
    struct tl_job *next;
    int slot, n_fed, pending;
    tl_sampler sp;
    tl_decoder dec;
    tl_stop_filter sf;
    int has_sampler;
} tl_job;

typedef struct {
    int parallel;     /* slots */
    int ctx;          /* positions per slot (<= 0: the model's) */
    int chunk;        /* prompt tokens per slot per step (<= 0: 128) */
    int prefix_cache; /* reuse cached prefixes */
    /* speculative decoding (speculative.h) with this draft model (same
     * vocabulary), draft_k proposals per step; needs parallel == 1; NULL: off */
    const tl_infer_model *draft;
    int draft_k;
} tl_sched_opts;

typedef struct {
    long requests, finished, cancelled;
    long prompt_tokens, completion_tokens, reused_tokens;
    long decode_steps, decode_rows; /* batched steps, sequences summed over them */
    double decode_seconds, prompt_seconds;
    double ttft_sum;
    long ttft_count;
    int queued, active;
    long http_errors;
    long draft_proposed, draft_accepted; /* speculative decoding's proposals made and kept */
} tl_sched_metrics;

typedef struct tl_sched tl_sched;

/* Builds the slots (each a KV cache of o->ctx positions) and starts the engine
 * thread, which runs OpenMP regions with the caller's omp_get_max_threads(). */
int tl_sched_start(tl_sched **out, const tl_infer_model *m, const tl_sched_opts *o, tl_error *err);
/* Refuses new jobs, waits up to `seconds` for the queued and running ones to
 * end, then ends what is left with finish "error" (returns once none runs). */
void tl_sched_drain(tl_sched *s, double seconds);
/* Drains with no wait, stops the engine thread and frees s (no job may still
 * be waited on). */
void tl_sched_stop(tl_sched *s);
/* Refuses new jobs from now on (tl_sched_submit returns 1). */
void tl_sched_close(tl_sched *s);
int tl_sched_ctx(const tl_sched *s);

/* A new job with refs 1 (the submitter's); NULL when out of memory. */
tl_job *tl_job_new(void);
/* Makes j wait for `first` (another choice of the same prompt) and share its
 * prompt's KV cache; call before submitting j (takes a reference to first). */
void tl_job_share_prompt(tl_sched *s, tl_job *j, tl_job *first);
/* Queues j (the engine takes a reference): 0; 1 when the scheduler is closed. */
int tl_sched_submit(tl_sched *s, tl_job *j);
/* Drops the submitter's reference (a job not done yet is cancelled). */
void tl_sched_release(tl_sched *s, tl_job *j);

/* The lock over jobs' outputs and the metrics; tl_sched_wait waits (locked)
 * for any job's progress, at most timeout_ms. */
void tl_sched_lock(tl_sched *s);
void tl_sched_unlock(tl_sched *s);
void tl_sched_wait(tl_sched *s, int timeout_ms);
/* The counters (copied under the lock by the caller holding it). */
tl_sched_metrics *tl_sched_metrics_locked(tl_sched *s);

#endif

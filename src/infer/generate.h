/* generate.h - text generation on the inference engine (infer.h): the sampling
 * loop with its stopping rules (token limit, end of sequence, stop strings, a
 * full context), and TinyLlama-Chat's template and multi-turn conversation.
 * Output reaches the caller through callbacks; nothing here prints. */
#ifndef TL_GENERATE_H
#define TL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "common.h"
#include "infer.h"
#include "sampler.h"
#include "speculative.h"

/* Receives output text as it becomes final. */
typedef void (*tl_gen_text_cb)(const char *text, size_t len, void *user);

/* ---- stop strings: holds back text that could be the start of one ---- */
typedef struct {
    char *buf;
    size_t len, cap;
    const char *const *stops;
    int n_stops;
    size_t hold; /* longest stop string - 1 */
    tl_gen_text_cb emit;
    void *user;
} tl_stop_filter;

/* stops (n of them, non-empty) are borrowed. */
void tl_stop_init(tl_stop_filter *f, const char *const *stops, int n, tl_gen_text_cb emit, void *user);
/* Adds text and emits what can no longer be part of a stop string.  Returns 1
 * once a stop string appeared (the text before it is emitted, the rest dropped),
 * 0 to go on, -1 out of memory. */
int tl_stop_push(tl_stop_filter *f, const char *s, size_t n);
/* Emits the text held back (at the end of the output). */
void tl_stop_flush(tl_stop_filter *f);
void tl_stop_free(tl_stop_filter *f);

/* ---- settings: the caller's choices over each mode's defaults ---- */
enum {
    TL_GEN_SET_TEMPERATURE = 1,
    TL_GEN_SET_TOP_K = 2,
    TL_GEN_SET_TOP_P = 4,
    TL_GEN_SET_MIN_P = 8,
    TL_GEN_SET_REPETITION_PENALTY = 16,
    TL_GEN_SET_SEED = 32,
};
typedef struct {
    tl_sampler_opts so;
    long max_tokens; /* per reply in a chat */
    uint64_t seed;
    unsigned set;    /* TL_GEN_SET_*: what the caller chose (tl_gen_settings_resolve keeps those) */
    int chat;
} tl_gen_settings;

/* One prompt: greedy, 256 tokens.  A chat: TinyLlama-1.1B-Chat's demo settings,
 * temperature 0.7, top-k 50, top-p 0.95, 512 tokens per reply. */
void tl_gen_settings_default(tl_gen_settings *s, int chat);
/* Fills in what the caller did not set.  One prompt: a generation_config.json
 * (gc, may be NULL) that asks for sampling gives the sampling settings, and its
 * repetition penalty always applies; a chat keeps its demo settings.  The seed:
 * from the clock and the process id. */
void tl_gen_settings_resolve(tl_gen_settings *s, const tl_gen_config *gc);

/* ---- the generation loop ---- */
typedef enum { TL_GEN_LIMIT, TL_GEN_EOS, TL_GEN_STOP, TL_GEN_CONTEXT, TL_GEN_ERROR } tl_gen_end;
/* "token limit", "end of sequence", "stop string", "context full", "error" */
const char *tl_gen_end_name(tl_gen_end why);

typedef struct {
    long max_tokens;          /* most tokens to generate */
    const char *const *stops; /* stop strings (text mode only) */
    int n_stops;
    int ignore_eos;           /* go on after an end-of-sequence id */
    /* text mode: the decoded output, stop strings removed (needs the model's tokenizer) */
    tl_gen_text_cb on_text;
    /* each generated id, when set */
    void (*on_token)(int id, void *user);
    void *user;
    /* speculative decoding (speculative.h): the draft proposes, the target
     * verifies; greedy output is the same as without it.  NULL: off.  The
     * draft's cache must hold a prefix of the context (it catches up). */
    tl_spec *spec;
} tl_gen_opts;

typedef struct {
    int n_prompt;          /* tokens run through the prompt pass */
    double prompt_seconds;
    int n_generated;       /* ids produced (an end-of-sequence id that stopped is not one) */
    int n_steps;           /* decode steps run (with a draft: verification passes) */
    double gen_seconds;
    long n_draft_proposed, n_draft_accepted; /* with a draft: proposals made and kept */
} tl_gen_stats;

/* The ids of a context, grown as tokens are produced (the repetition penalty reads them). */
typedef struct {
    int *ids;
    int n, cap;
} tl_gen_history;

/* Runs ids[from..h->n) through the model (the cache s must hold exactly
 * ids[0..from), from < h->n), then samples up to o->max_tokens ids, appending
 * them to h.  Returns -1 when the prompt pass fails (nothing generated);
 * otherwise 0 with *why (TL_GEN_ERROR: err says what failed). */
int tl_generate(tl_infer_state *s, tl_sampler *sp, const tl_gen_opts *o, tl_gen_history *h, int from,
                tl_gen_end *why, tl_gen_stats *st, tl_error *err);

/* ---- chat: a conversation rendered in one of chat_template.h's formats (the
 * TinyLlama-1.1B-Chat-v1.0 / Zephyr one by default); the tokenizer adds BOS and
 * reads </s> and the role markers as written (TL_ENC_PARSE_SPECIAL). */

/* A conversation on one model and KV cache: each turn renders the whole
 * conversation, drops the oldest turns when it no longer fits the context with
 * room for the reply (the system prompt is kept), reuses the cached prefix and
 * generates the reply. */
typedef struct {
    tl_infer_state *s;
    tl_sampler *sp;
    tl_chat_format fmt;
    const char *system;
    tl_chat_turn *turns;      /* the turns so far (their strings owned) */
    int n_turns, first;       /* turns [first, n_turns) are in the prompt */
    int *cached;              /* ids now in the KV cache */
    int n_cached;
} tl_chat;

/* s (whose model must have a tokenizer) and sp are borrowed; system may be NULL. */
int tl_chat_init(tl_chat *c, tl_infer_state *s, tl_sampler *sp, tl_chat_format fmt, const char *system,
                 tl_error *err);
void tl_chat_free(tl_chat *c);
/* Answers message.  Returns 0 with *why and *st (new prompt tokens, reply
 * tokens); 1 when the message alone does not fit the context (it is dropped,
 * err says so, the conversation goes on); -1 on an error (err). */
int tl_chat_say(tl_chat *c, const char *message, const tl_gen_opts *o, tl_gen_end *why, tl_gen_stats *st,
                tl_error *err);

#endif

/* generate.c - the generation loop, stop strings and the chat template (generate.h). */
#include "generate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"

/* ------------------------------------------------------------ stop strings */

void tl_stop_init(tl_stop_filter *f, const char *const *stops, int n, tl_gen_text_cb emit, void *user) {
    memset(f, 0, sizeof *f);
    f->stops = stops;
    f->n_stops = n;
    f->emit = emit;
    f->user = user;
    for (int i = 0; i < n; i++)
        if (strlen(stops[i]) > f->hold + 1) f->hold = strlen(stops[i]) - 1;
}

static void emit(tl_stop_filter *f, const char *s, size_t n) {
    if (n && f->emit) f->emit(s, n, f->user);
}

int tl_stop_push(tl_stop_filter *f, const char *s, size_t n) {
    if (f->len + n + 1 > f->cap) {
        size_t nc = (f->len + n + 1) * 2;
        char *nb = realloc(f->buf, nc);
        if (!nb) return -1;
        f->buf = nb;
        f->cap = nc;
    }
    memcpy(f->buf + f->len, s, n);
    f->len += n;
    f->buf[f->len] = '\0';
    /* the earliest stop string wins; the text after it is never shown */
    size_t cut = SIZE_MAX;
    for (int i = 0; i < f->n_stops; i++) {
        const char *p = memmem(f->buf, f->len, f->stops[i], strlen(f->stops[i]));
        if (p && (size_t)(p - f->buf) < cut) cut = (size_t)(p - f->buf);
    }
    if (cut != SIZE_MAX) {
        emit(f, f->buf, cut);
        f->len = 0;
        return 1;
    }
    /* a stop string could still begin in the last `hold` bytes */
    if (f->len > f->hold) {
        size_t out = f->len - f->hold;
        emit(f, f->buf, out);
        memmove(f->buf, f->buf + out, f->len - out);
        f->len -= out;
    }
    return 0;
}

void tl_stop_flush(tl_stop_filter *f) {
    emit(f, f->buf, f->len);
    f->len = 0;
}

void tl_stop_free(tl_stop_filter *f) {
    free(f->buf);
    f->buf = NULL;
}

/* ---------------------------------------------------------------- settings */

void tl_gen_settings_default(tl_gen_settings *s, int chat) {
    memset(s, 0, sizeof *s);
    tl_sampler_default_opts(&s->so);
    s->chat = chat;
    s->max_tokens = chat ? 512 : 256;
    if (chat) {
        s->so.temperature = 0.7f;
        s->so.top_k = 50;
        s->so.top_p = 0.95f;
    }
}

void tl_gen_settings_resolve(tl_gen_settings *s, const tl_gen_config *gc) {
    if (gc && !s->chat) {
        if (gc->has_sampling) {
            if (!(s->set & TL_GEN_SET_TEMPERATURE)) s->so.temperature = gc->temperature;
            if (!(s->set & TL_GEN_SET_TOP_K)) s->so.top_k = gc->top_k;
            if (!(s->set & TL_GEN_SET_TOP_P)) s->so.top_p = gc->top_p;
            if (!(s->set & TL_GEN_SET_MIN_P)) s->so.min_p = gc->min_p;
        }
        if (!(s->set & TL_GEN_SET_REPETITION_PENALTY)) s->so.repetition_penalty = gc->repetition_penalty;
    }
    if (!(s->set & TL_GEN_SET_SEED)) s->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

/* ---------------------------------------------------------------- the loop */

const char *tl_gen_end_name(tl_gen_end why) {
    static const char *const names[] = {"token limit", "end of sequence", "stop string", "context full", "error"};
    return why >= TL_GEN_LIMIT && why <= TL_GEN_ERROR ? names[why] : "?";
}

static int is_eos(const tl_infer_model *m, int id) {
    for (int i = 0; i < m->gen.n_eos; i++)
        if (m->gen.eos_ids[i] == id) return 1;
    return 0;
}

static int history_push(tl_gen_history *h, int id) {
    if (h->n == h->cap) {
        int nc = h->cap * 2 + 16;
        int *nh = realloc(h->ids, sizeof(int) * (size_t)nc);
        if (!nh) return -1;
        h->ids = nh;
        h->cap = nc;
    }
    h->ids[h->n++] = id;
    return 0;
}

/* Samples after the tokens in the cache (s->logits holds the next token's logits). */
static tl_gen_end sample_loop(tl_infer_state *s, tl_sampler *sp, const tl_gen_opts *o, tl_gen_history *h,
                              tl_gen_stats *st, tl_error *err) {
    const tl_infer_model *m = s->m;
    const int text = o->on_text && m->tok; /* decode only when the text is wanted */
    tl_decoder dec;
    tl_stop_filter sf;
    if (text) tl_decoder_init(&dec, m->tok);
    tl_stop_init(&sf, o->stops, o->n_stops, o->on_text, o->user);
    const long proposed0 = o->spec ? o->spec->proposed : 0, accepted0 = o->spec ? o->spec->accepted : 0;
    tl_gen_end why = TL_GEN_LIMIT;
    /* with a draft, a step yields up to k+1 tokens (the first one still comes
     * from the prompt pass's logits); they are taken one at a time as below */
    int burst[TL_SPEC_MAX_K + 1], n_burst = 0, at = 0;
    for (long i = 0; i < o->max_tokens; i++) {
        int id;
        if (at < n_burst) {
            id = burst[at++];
        } else if (o->spec && i > 0) {
            /* (the cache holds all but the last token, which the step runs) */
            long left = o->max_tokens - i;
            n_burst = tl_spec_step(o->spec, s, sp, h->ids, h->n, left > TL_SPEC_MAX_K ? TL_SPEC_MAX_K + 1 : (int)left,
                                   burst, err);
            if (n_burst < 0) {
                why = TL_GEN_ERROR;
                break;
            }
            st->n_steps++;
            st->n_draft_proposed = o->spec->proposed - proposed0;
            st->n_draft_accepted = o->spec->accepted - accepted0;
            id = burst[0];
            at = 1;
        } else {
            id = tl_sampler_sample(sp, s->logits, h->ids, h->n);
        }
        if (!o->ignore_eos && is_eos(m, id)) {
            why = TL_GEN_EOS;
            break;
        }
        if (history_push(h, id)) {
            tl_fail(err, "out of memory");
            why = TL_GEN_ERROR;
            break;
        }
        st->n_generated++;
        if (o->on_token) o->on_token(id, o->user);
        int stop = 0;
        if (text) {
            const char *txt;
            size_t len;
            tl_error derr;
            if (tl_decoder_push(&dec, id, &txt, &len, &derr) == 0) stop = tl_stop_push(&sf, txt, len);
        }
        if (stop) {
            why = stop > 0 ? TL_GEN_STOP : TL_GEN_ERROR;
            if (stop < 0) tl_fail(err, "out of memory");
            break;
        }
        if (i + 1 == o->max_tokens) break; /* no need to run the last token */
        if (at < n_burst) continue; /* already verified: in the cache */
        if (s->pos >= s->max_ctx) {
            why = TL_GEN_CONTEXT;
            break;
        }
        if (o->spec) continue; /* the next step runs it */
        if (tl_infer_forward(s, &id, 1, NULL, err)) {
            why = TL_GEN_ERROR;
            break;
        }
        st->n_steps++;
    }
    if (text && why != TL_GEN_STOP) { /* bytes the decoder still held */
        const char *txt;
        size_t len;
        tl_error derr;
        if (tl_decoder_flush(&dec, &txt, &len, &derr) == 0 && !tl_stop_push(&sf, txt, len)) tl_stop_flush(&sf);
    }
    tl_stop_free(&sf);
    if (text) tl_decoder_free(&dec);
    return why;
}

int tl_generate(tl_infer_state *s, tl_sampler *sp, const tl_gen_opts *o, tl_gen_history *h, int from,
                tl_gen_end *why, tl_gen_stats *st, tl_error *err) {
    memset(st, 0, sizeof *st);
    if (from < 0 || from >= h->n || s->pos != from)
        return tl_fail(err, "generate: the cache holds %d tokens, the prompt %d of which are new of %d", s->pos,
                       h->n - from, h->n);
    st->n_prompt = h->n - from;
    double t0 = tl_now();
    if (tl_infer_forward(s, h->ids + from, h->n - from, NULL, err)) return -1;
    st->prompt_seconds = tl_now() - t0;
    t0 = tl_now();
    *why = sample_loop(s, sp, o, h, st, err);
    st->gen_seconds = tl_now() - t0;
    return 0;
}

/* -------------------------------------------------------------------- chat */

int tl_chat_init(tl_chat *c, tl_infer_state *s, tl_sampler *sp, tl_chat_format fmt, const char *system,
                 tl_error *err) {
    memset(c, 0, sizeof *c);
    if (!s->m->tok) return tl_fail(err, "chat needs the model's tokenizer");
    c->s = s;
    c->sp = sp;
    c->fmt = fmt;
    c->system = system;
    c->cached = malloc(sizeof(int) * (size_t)s->max_ctx);
    if (!c->cached) return tl_fail(err, "out of memory");
    return 0;
}

void tl_chat_free(tl_chat *c) {
    for (int i = 0; i < c->n_turns; i++) {
        free(c->turns[i].user);
        free(c->turns[i].assistant);
    }
    free(c->turns);
    free(c->cached);
    memset(c, 0, sizeof *c);
}

/* The conversation's ids, dropping the oldest turns until there is room for
 * `reserve` more tokens (or one turn is left). */
static int encode_conversation(tl_chat *c, long reserve, int **ids, size_t *n, tl_error *err) {
    for (;;) {
        size_t len;
        char *text = tl_chat_render(c->fmt, c->system, c->turns, c->first, c->n_turns, &len);
        free(*ids);
        *ids = NULL;
        int rc = text ? tl_tokenizer_encode(c->s->m->tok, text, len, TL_ENC_BOS | TL_ENC_PARSE_SPECIAL, ids, n, err)
                      : tl_fail(err, "out of memory");
        free(text);
        if (rc) return -1;
        if ((long)*n + reserve <= c->s->max_ctx || c->first == c->n_turns - 1) return 0;
        c->first++;
    }
}

int tl_chat_say(tl_chat *c, const char *message, const tl_gen_opts *o, tl_gen_end *why, tl_gen_stats *st,
                tl_error *err) {
    tl_infer_state *s = c->s;
    memset(st, 0, sizeof *st);
    tl_chat_turn *nt = realloc(c->turns, sizeof *nt * (size_t)(c->n_turns + 1));
    if (!nt) return tl_fail(err, "out of memory");
    c->turns = nt;
    char *user = strdup(message);
    if (!user) return tl_fail(err, "out of memory");
    c->turns[c->n_turns++] = (tl_chat_turn){user, NULL};
    /* room for the reply: --max-tokens, but at most half the context */
    long reserve = o->max_tokens < s->max_ctx / 2 ? o->max_tokens : s->max_ctx / 2;
    int *ids = NULL;
    size_t n = 0;
    if (encode_conversation(c, reserve, &ids, &n, err)) {
        free(ids);
        return -1;
    }
    if ((long)n >= s->max_ctx) { /* the message alone fills the context */
        free(ids);
        free(user);
        c->n_turns--;
        tl_fail(err, "message too long for the %d-token context; skipped", s->max_ctx);
        return 1;
    }
    /* reuse the cache for the common prefix, but run at least the last token for its logits */
    int common = 0;
    while (common < c->n_cached && common < (int)n && c->cached[common] == ids[common]) common++;
    if (common == (int)n) common--;
    tl_infer_truncate(s, common);
    tl_gen_history h = {ids, (int)n, (int)n};
    if (tl_generate(s, c->sp, o, &h, common, why, st, err)) {
        free(h.ids);
        return -1;
    }
    /* the reply as text for the next rendering; the cache holds h.ids[0..pos) */
    char *reply;
    size_t rlen;
    tl_error derr;
    if (tl_tokenizer_decode(s->m->tok, h.ids + n, (size_t)st->n_generated, &reply, &rlen, &derr)) reply = strdup("");
    c->turns[c->n_turns - 1].assistant = reply;
    c->n_cached = s->pos;
    memcpy(c->cached, h.ids, sizeof(int) * (size_t)c->n_cached);
    free(h.ids);
    return 0;
}

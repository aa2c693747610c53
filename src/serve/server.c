/* server.c - HTTP routes, OpenAI JSON and server-sent events (server.h). */
#include "server.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "chat_template.h"
#include "request.h"
#include "scheduler.h"
#include "tokenizer.h"

struct tl_server {
    const tl_infer_model *m;
    tl_server_opts o;
    tl_chat_format fmt;
    tl_sched *sched;
    struct MHD_Daemon *d;
    int port;
    int closing;  /* under the scheduler's lock */
    int inflight; /* connections with a submitted job not yet fully answered (under the lock) */
    unsigned long next_id;
    char model_id[256];
    long created;
};

/* A streamed choice's progress. */
struct choice_out {
    size_t sent;    /* bytes of the job's text streamed */
    int lp_sent;    /* logprob records streamed */
    size_t lp_off;  /* text_offset of the next record (completions) */
    int role_sent, ended;
};

typedef struct {
    tl_server *srv;
    int refs;
    char *body;
    size_t len, cap;
    int too_big;
    int counted; /* in srv->inflight */
    /* a completion: one job per choice */
    tl_job **jobs;
    int n_jobs;
    int chat, include_usage, n_prompt, logprobs;
    char id[48];
    struct choice_out *co; /* per choice: what has been streamed */
    int done_sent;
    char *out;        /* SSE bytes not yet handed to MHD */
    size_t out_len, out_off, out_cap;
} conn;

static void conn_unref(conn *k) {
    if (--k->refs) return;
    for (int i = 0; i < k->n_jobs; i++)
        if (k->jobs[i]) tl_sched_release(k->srv->sched, k->jobs[i]);
    free(k->jobs);
    free(k->co);
    if (k->counted) {
        tl_sched_lock(k->srv->sched);
        k->srv->inflight--;
        tl_sched_unlock(k->srv->sched);
    }
    free(k->body);
    free(k->out);
    free(k);
}

/* ------------------------------------------------------------ responses */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *obj) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) return send_text(c, 500, "application/json", "{\"error\":{\"message\":\"out of memory\"}}");
    enum MHD_Result ret = send_text(c, status, "application/json", text);
    free(text);
    return ret;
}

static cJSON *error_obj(const char *message, const char *type, const char *code) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    return root;
}

static enum MHD_Result send_error(tl_server *srv, struct MHD_Connection *c, unsigned status, const char *message,
                                  const char *code) {
    tl_sched_lock(srv->sched);
    tl_sched_metrics_locked(srv->sched)->http_errors++;
    tl_sched_unlock(srv->sched);
    const char *type = status == 401   ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    return send_json(c, status, error_obj(message, type, code));
}

/* ------------------------------------------------------------ GET routes */

static enum MHD_Result get_models(tl_server *srv, struct MHD_Connection *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", srv->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)srv->created);
    cJSON_AddStringToObject(m, "owned_by", "tinyllama");
    cJSON_AddItemToArray(data, m);
    return send_json(c, 200, root);
}

static void metric(char **p, size_t *left, const char *name, const char *type, const char *help, double v) {
    int n = snprintf(*p, *left, "# HELP %s %s\n# TYPE %s %s\n%s %.9g\n", name, help, name, type, name, v);
    if (n > 0 && (size_t)n < *left) *p += n, *left -= (size_t)n;
}

static enum MHD_Result get_metrics(tl_server *srv, struct MHD_Connection *c) {
    tl_sched_metrics m;
    tl_sched_lock(srv->sched);
    m = *tl_sched_metrics_locked(srv->sched);
    tl_sched_unlock(srv->sched);
    char buf[8192], *p = buf;
    size_t left = sizeof buf;
    buf[0] = '\0';
    metric(&p, &left, "tinyllama_requests_total", "counter", "Completion requests accepted.", (double)m.requests);
    metric(&p, &left, "tinyllama_requests_finished_total", "counter", "Completion requests finished.",
           (double)m.finished);
    metric(&p, &left, "tinyllama_requests_cancelled_total", "counter",
           "Requests whose client went away before the end.", (double)m.cancelled);
    metric(&p, &left, "tinyllama_http_errors_total", "counter", "Requests answered with an HTTP error.",
           (double)m.http_errors);
    metric(&p, &left, "tinyllama_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.",
           (double)m.prompt_tokens);
    metric(&p, &left, "tinyllama_completion_tokens_total", "counter", "Tokens generated.",
           (double)m.completion_tokens);
    metric(&p, &left, "tinyllama_prefix_cache_reused_tokens_total", "counter",
           "Prompt tokens found in a slot's KV cache and not recomputed.", (double)m.reused_tokens);
    metric(&p, &left, "tinyllama_queue_depth", "gauge", "Requests waiting for a slot.", (double)m.queued);
    metric(&p, &left, "tinyllama_slots_busy", "gauge", "Slots running a request.", (double)m.active);
    metric(&p, &left, "tinyllama_slots_total", "gauge", "Slots (--parallel).", (double)srv->o.parallel);
    const union MHD_DaemonInfo *ci = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    metric(&p, &left, "tinyllama_http_connections", "gauge", "Open client connections (this one included).",
           ci ? (double)ci->num_connections : -1.0);
    metric(&p, &left, "tinyllama_decode_steps_total", "counter", "Batched decode steps run.", (double)m.decode_steps);
    metric(&p, &left, "tinyllama_draft_tokens_proposed_total", "counter",
           "Tokens the draft model proposed (speculative decoding).", (double)m.draft_proposed);
    metric(&p, &left, "tinyllama_draft_tokens_accepted_total", "counter",
           "Proposed tokens the model accepted (speculative decoding).", (double)m.draft_accepted);
    metric(&p, &left, "tinyllama_decode_sequences_total", "counter", "Sequences advanced, summed over decode steps.",
           (double)m.decode_rows);
    metric(&p, &left, "tinyllama_decode_seconds_total", "counter", "Time spent in decode steps.", m.decode_seconds);
    metric(&p, &left, "tinyllama_prompt_seconds_total", "counter", "Time spent in prompt chunks.", m.prompt_seconds);
    metric(&p, &left, "tinyllama_decode_tokens_per_second", "gauge",
           "Decoded tokens per second of decode time, all slots together.",
           m.decode_seconds > 0 ? (double)m.decode_rows / m.decode_seconds : 0.0);
    int n = snprintf(p, left,
                     "# HELP tinyllama_time_to_first_token_seconds From a request's arrival to its first token.\n"
                     "# TYPE tinyllama_time_to_first_token_seconds summary\n"
                     "tinyllama_time_to_first_token_seconds_sum %.9g\n"
                     "tinyllama_time_to_first_token_seconds_count %ld\n",
                     m.ttft_sum, m.ttft_count);
    (void)n;
    return send_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf);
}

/* ------------------------------------------------------------ completions */

/* The length of s[0..n) without an incomplete UTF-8 character at its end (the
 * stop filter holds text back by bytes, so a cut may fall inside one). */
static size_t utf8_whole(const char *s, size_t n) {
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return n;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return back + 1 >= need ? n : i - 1;
}

/* The conversation as chat_template.h turns: system messages first (joined),
 * then user and assistant alternating (consecutive ones of a role joined),
 * ending with a user message. */
static char *render_chat(tl_server *srv, const tl_serve_request *r, size_t *len, char *why, size_t why_cap) {
    tl_chat_turn *turns = calloc((size_t)r->n_msgs + 1, sizeof *turns);
    char *system = NULL, *out = NULL;
    int nt = 0, ok = 1;
    if (!turns) return NULL;
    for (int i = 0; i < r->n_msgs && ok; i++) {
        const tl_serve_msg *m = &r->msgs[i];
        char **dst;
        if (m->role == TL_ROLE_SYSTEM) {
            if (nt) {
                snprintf(why, why_cap, "messages[%d]: system messages must come before the conversation", i);
                ok = 0;
                break;
            }
            dst = &system;
        } else if (m->role == TL_ROLE_USER) {
            if (!nt || turns[nt - 1].assistant) nt++;
            dst = &turns[nt - 1].user;
        } else {
            if (!nt) {
                snprintf(why, why_cap, "messages[%d]: the conversation must start with a user message", i);
                ok = 0;
                break;
            }
            dst = &turns[nt - 1].assistant;
        }
        size_t a = *dst ? strlen(*dst) : 0, b = strlen(m->content);
        char *nd = realloc(*dst, a + b + 2);
        if (!nd) {
            ok = 0;
            snprintf(why, why_cap, "out of memory");
            break;
        }
        if (a) nd[a++] = '\n';
        memcpy(nd + a, m->content, b + 1);
        *dst = nd;
    }
    if (ok && (!nt || turns[nt - 1].assistant)) {
        snprintf(why, why_cap, "the last message must be a user message (the reply is the assistant's)");
        ok = 0;
    }
    if (ok && !(out = tl_chat_render(srv->fmt, system, turns, 0, nt, len))) snprintf(why, why_cap, "out of memory");
    for (int i = 0; i < nt; i++) free(turns[i].user), free(turns[i].assistant);
    free(turns);
    free(system);
    return out;
}

static cJSON *usage_obj(int prompt, int gen) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", gen);
    cJSON_AddNumberToObject(u, "total_tokens", prompt + gen);
    return u;
}

/* The bytes token id stands for in generated text: its piece with U+2581 as
 * a space, or a byte piece's byte. */
static size_t token_bytes(const tl_tokenizer *t, int id, char *buf, size_t cap) {
    const char *p = tl_tokenizer_piece(t, id);
    size_t n = 0;
    if (!p) return 0;
    unsigned v;
    if (tl_tokenizer_piece_type(t, id) == TL_PIECE_BYTE && sscanf(p, "<0x%2X>", &v) == 1) {
        if (cap) buf[n++] = (char)v;
        return n;
    }
    for (size_t i = 0; p[i] && n < cap; i++) {
        if (!strncmp(p + i, "\xe2\x96\x81", 3)) {
            buf[n++] = ' ';
            i += 2;
        } else {
            buf[n++] = p[i];
        }
    }
    return n;
}

/* A token as JSON: its text, or, where its bytes are not whole UTF-8 characters
 * (a byte piece), "bytes:\xNN..." as OpenAI writes them. */
static cJSON *token_string(const char *b, size_t n) {
    char s[400];
    if (tl_utf8_valid(b, n, NULL) && !memchr(b, 0, n)) {
        memcpy(s, b, n);
        s[n] = '\0';
    } else {
        size_t o = (size_t)snprintf(s, sizeof s, "bytes:");
        for (size_t i = 0; i < n && o + 5 < sizeof s; i++) o += (size_t)snprintf(s + o, sizeof s - o, "\\x%02x", (unsigned char)b[i]);
    }
    return cJSON_CreateString(s);
}

static cJSON *byte_array(const char *b, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)b[i]));
    return a;
}

/* The logprobs of records r[0..n): the chat form ({content: [{token, logprob,
 * bytes, top_logprobs}]}) or the completions form ({tokens, token_logprobs,
 * top_logprobs, text_offset}, offsets counted from *off in the bytes of the
 * tokens). */
static cJSON *logprobs_obj(const tl_tokenizer *t, int chat, const tl_token_logprob *r, int n, size_t *off) {
    char b[256];
    cJSON *root = cJSON_CreateObject();
    if (chat) {
        cJSON *content = cJSON_AddArrayToObject(root, "content");
        for (int i = 0; i < n; i++) {
            cJSON *e = cJSON_CreateObject(), *tops;
            size_t bn = token_bytes(t, r[i].id, b, sizeof b);
            cJSON_AddItemToObject(e, "token", token_string(b, bn));
            cJSON_AddNumberToObject(e, "logprob", r[i].logprob);
            cJSON_AddItemToObject(e, "bytes", byte_array(b, bn));
            tops = cJSON_AddArrayToObject(e, "top_logprobs");
            for (int k = 0; k < r[i].n_top; k++) {
                cJSON *tp = cJSON_CreateObject();
                bn = token_bytes(t, r[i].top_id[k], b, sizeof b);
                cJSON_AddItemToObject(tp, "token", token_string(b, bn));
                cJSON_AddNumberToObject(tp, "logprob", r[i].top_logprob[k]);
                cJSON_AddItemToObject(tp, "bytes", byte_array(b, bn));
                cJSON_AddItemToArray(tops, tp);
            }
            cJSON_AddItemToArray(content, e);
        }
        cJSON_AddNullToObject(root, "refusal");
        return root;
    }
    cJSON *tokens = cJSON_AddArrayToObject(root, "tokens"), *lps = cJSON_AddArrayToObject(root, "token_logprobs"),
          *tops = cJSON_AddArrayToObject(root, "top_logprobs"), *offs = cJSON_AddArrayToObject(root, "text_offset");
    for (int i = 0; i < n; i++) {
        size_t bn = token_bytes(t, r[i].id, b, sizeof b);
        cJSON_AddItemToArray(tokens, token_string(b, bn));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(r[i].logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*off));
        *off += bn;
        cJSON *d = cJSON_CreateObject();
        for (int k = 0; k < r[i].n_top; k++) {
            size_t tn = token_bytes(t, r[i].top_id[k], b, sizeof b);
            cJSON *key = token_string(b, tn);
            if (!cJSON_GetObjectItemCaseSensitive(d, key->valuestring)) /* two ids can spell one string */
                cJSON_AddNumberToObject(d, key->valuestring, r[i].top_logprob[k]);
            cJSON_Delete(key);
        }
        cJSON_AddItemToArray(tops, d);
    }
    return root;
}

/* A response or stream chunk with no choice yet. */
static cJSON *response_obj(tl_server *srv, conn *k, int stream) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", k->id);
    cJSON_AddStringToObject(root, "object",
                            k->chat ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)time(NULL));
    cJSON_AddStringToObject(root, "model", srv->model_id);
    cJSON_AddStringToObject(root, "system_fingerprint", "tinyllama");
    cJSON_AddArrayToObject(root, "choices");
    return root;
}

/* Adds choice `index` to root: text NULL for a chunk without content; logprobs
 * (taken) NULL for none. */
static void add_choice(cJSON *root, conn *k, int stream, int index, const char *text, size_t len, const char *finish,
                       int role, cJSON *logprobs) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", index);
    char *t = malloc(len + 1);
    if (t) { /* a NUL byte (a <0x00> piece) would end the C string cJSON keeps: it is dropped */
        size_t o = 0;
        for (size_t i = 0; i < len; i++)
            if (text[i]) t[o++] = text[i];
        t[o] = '\0';
    }
    if (k->chat) {
        cJSON *msg = cJSON_AddObjectToObject(ch, stream ? "delta" : "message");
        if (role) cJSON_AddStringToObject(msg, "role", "assistant");
        if (text && t) cJSON_AddStringToObject(msg, "content", t);
    } else {
        cJSON_AddStringToObject(ch, "text", text && t ? t : "");
    }
    free(t);
    if (logprobs)
        cJSON_AddItemToObject(ch, "logprobs", logprobs);
    else
        cJSON_AddNullToObject(ch, "logprobs");
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(root, "choices"), ch);
}

static cJSON *chunk_obj(tl_server *srv, conn *k, int index, const char *text, size_t len, const char *finish,
                        int role, cJSON *logprobs) {
    cJSON *root = response_obj(srv, k, 1);
    add_choice(root, k, 1, index, text, len, finish, role, logprobs);
    return root;
}

static int out_add(conn *k, const char *s, size_t n) {
    if (k->out_len + n > k->out_cap) {
        size_t nc = (k->out_len + n) * 2 + 256;
        char *no = realloc(k->out, nc);
        if (!no) return -1;
        k->out = no;
        k->out_cap = nc;
    }
    memcpy(k->out + k->out_len, s, n);
    k->out_len += n;
    return 0;
}

/* Appends `data: <obj>\n\n` (obj freed). */
static int out_event(conn *k, cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!text) return -1;
    int rc = out_add(k, "data: ", 6) || out_add(k, text, strlen(text)) || out_add(k, "\n\n", 2);
    free(text);
    return rc;
}

/* What a choice has for the stream since its last chunk (copied under the lock). */
typedef struct {
    char *delta;
    size_t dlen, upto;
    tl_token_logprob *lps;
    int n_lps, done, n_gen;
    const char *finish;
    char error[256];
} choice_news;

/* under the lock: whether choice i has something to stream */
static int has_news(conn *k, int i) {
    const tl_job *j = k->jobs[i];
    const struct choice_out *c = &k->co[i];
    if (c->ended) return 0;
    return j->state == TL_JOB_DONE || utf8_whole(j->text ? j->text : "", j->text_len) > c->sent ||
           (k->logprobs && j->n_lps > c->lp_sent);
}

/* under the lock: 0, or -1 when out of memory */
static int take_news(conn *k, int i, choice_news *nw) {
    const tl_job *j = k->jobs[i];
    const struct choice_out *c = &k->co[i];
    memset(nw, 0, sizeof *nw);
    nw->done = j->state == TL_JOB_DONE;
    nw->upto = nw->done ? j->text_len : utf8_whole(j->text ? j->text : "", j->text_len);
    nw->dlen = nw->upto - c->sent;
    if (nw->dlen && !(nw->delta = malloc(nw->dlen))) return -1;
    if (nw->dlen) memcpy(nw->delta, j->text + c->sent, nw->dlen);
    if (k->logprobs && j->n_lps > c->lp_sent) {
        nw->n_lps = j->n_lps - c->lp_sent;
        if (!(nw->lps = malloc(sizeof *nw->lps * (size_t)nw->n_lps))) return -1;
        memcpy(nw->lps, j->lps + c->lp_sent, sizeof *nw->lps * (size_t)nw->n_lps);
    }
    nw->finish = j->finish;
    snprintf(nw->error, sizeof nw->error, "%s", j->error);
    nw->n_gen = j->n_gen;
    return 0;
}

/* The chunks of choice i's news: new text and its tokens' logprobs, then, when
 * it is done, the chunk with finish_reason (or an error object). */
static int stream_news(conn *k, int i, choice_news *nw) {
    tl_server *srv = k->srv;
    struct choice_out *c = &k->co[i];
    int rc = 0;
    c->sent = nw->upto;
    if (nw->dlen || nw->n_lps) {
        cJSON *lp = nw->n_lps ? logprobs_obj(srv->m->tok, k->chat, nw->lps, nw->n_lps, &c->lp_off) : NULL;
        c->lp_sent += nw->n_lps;
        rc = out_event(k, chunk_obj(srv, k, i, nw->delta ? nw->delta : "", nw->dlen, NULL, 0, lp));
    }
    if (nw->done && !rc) {
        if (!strcmp(nw->finish, "error"))
            rc = out_event(k, error_obj(nw->error, "server_error", NULL));
        else
            rc = out_event(k, chunk_obj(srv, k, i, NULL, 0, nw->finish, 0, NULL));
        c->ended = 1;
    }
    return rc;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    conn *k = cls;
    tl_server *srv = k->srv;
    while (k->out_off == k->out_len) {
        if (k->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        k->out_off = k->out_len = 0;
        int rc = 0, pending = 0;
        for (int i = 0; i < k->n_jobs && !rc; i++)
            if (k->chat && !k->co[i].role_sent) { /* each choice's first chunk names the role, as OpenAI's does */
                k->co[i].role_sent = pending = 1;
                rc = out_event(k, chunk_obj(srv, k, i, "", 0, NULL, 1, NULL));
            }
        if (rc) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (pending) continue;
        choice_news *nw = calloc((size_t)k->n_jobs, sizeof *nw);
        if (!nw) return MHD_CONTENT_READER_END_WITH_ERROR;
        int any = 0, ended = 0, n_gen = 0;
        /* a wait longer than the connection timeout (a long prompt, a full queue) would get the
         * connection closed as idle: an SSE comment line, which clients skip, shows it is not */
        const double beat = (srv->o.timeout_s > 0 ? srv->o.timeout_s : 60) / 3.0, t0 = tl_now();
        tl_sched_lock(srv->sched);
        for (;;) {
            for (int i = 0; i < k->n_jobs; i++) any |= has_news(k, i);
            if (any || tl_now() - t0 > beat) break;
            tl_sched_wait(srv->sched, 200);
        }
        if (!any) {
            tl_sched_unlock(srv->sched);
            free(nw);
            if (out_add(k, ": waiting\n\n", strlen(": waiting\n\n"))) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        for (int i = 0; i < k->n_jobs && !rc; i++)
            if (has_news(k, i)) rc = take_news(k, i, &nw[i]);
        tl_sched_unlock(srv->sched);
        for (int i = 0; i < k->n_jobs && !rc; i++) {
            if (nw[i].finish || nw[i].dlen || nw[i].n_lps) rc = stream_news(k, i, &nw[i]);
            ended += k->co[i].ended;
        }
        for (int i = 0; i < k->n_jobs; i++) {
            free(nw[i].delta);
            free(nw[i].lps);
        }
        free(nw);
        if (!rc && ended == k->n_jobs) {
            if (k->include_usage) {
                tl_sched_lock(srv->sched);
                for (int i = 0; i < k->n_jobs; i++) n_gen += k->jobs[i]->n_gen;
                tl_sched_unlock(srv->sched);
                cJSON *u = response_obj(srv, k, 1);
                cJSON_AddItemToObject(u, "usage", usage_obj(k->n_prompt, n_gen));
                rc = out_event(k, u);
            }
            if (!rc) rc = out_add(k, "data: [DONE]\n\n", 14);
            k->done_sent = 1;
        }
        if (rc) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = k->out_len - k->out_off < max ? k->out_len - k->out_off : max;
    memcpy(buf, k->out + k->out_off, n);
    k->out_off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) { conn_unref(cls); }

/* The request's n jobs, choice i seeded with seed + i (so a choice is
 * reproducible); the other choices wait for the first one's prompt and copy
 * it.  ids is taken.  0, or -1 when out of memory. */
static int make_jobs(conn *k, const tl_serve_request *r, int *ids, int n_ids, tl_sched *sched) {
    const int n = r->n > 0 ? r->n : 1;
    if (!(k->jobs = calloc((size_t)n, sizeof *k->jobs)) || !(k->co = calloc((size_t)n, sizeof *k->co))) {
        free(ids);
        return -1;
    }
    k->n_jobs = n;
    uint64_t seed = r->has_seed ? r->seed : (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)k << 16);
    for (int i = 0; i < n; i++) {
        tl_job *j = k->jobs[i] = tl_job_new();
        if (!j) {
            if (i == 0) free(ids);
            return -1;
        }
        if (i == 0) {
            j->ids = ids;
        } else {
            if (!(j->ids = malloc(sizeof(int) * (size_t)n_ids))) return -1;
            memcpy(j->ids, ids, sizeof(int) * (size_t)n_ids);
            tl_job_share_prompt(sched, j, k->jobs[0]);
        }
        j->n_ids = n_ids;
        j->max_tokens = r->max_tokens;
        j->so.temperature = (float)r->temperature;
        j->so.top_p = (float)r->top_p;
        j->so.top_k = (int)r->top_k;
        j->so.min_p = (float)r->min_p;
        j->seed = seed + (uint64_t)i;
        j->logprobs = r->logprobs;
        j->top_logprobs = r->top_logprobs;
        for (int s = 0; s < r->n_stops; s++) {
            size_t len = strlen(r->stops[s]);
            if (!(j->stops[s] = malloc(len + 1))) return -1;
            memcpy(j->stops[s], r->stops[s], len + 1);
            j->n_stops = s + 1;
        }
    }
    return 0;
}

static enum MHD_Result post_completion(tl_server *srv, struct MHD_Connection *c, conn *k, int chat) {
    tl_serve_request r;
    tl_error err;
    if (tl_serve_request_parse(k->body, k->len, chat, &r, &err)) return send_error(srv, c, 400, err.msg, NULL);
    if (srv->o.draft && r.logprobs) { /* accepted draft tokens come without the model's logits per position */
        tl_serve_request_free(&r);
        return send_error(srv, c, 400, "logprobs are not available with speculative decoding (--draft)", NULL);
    }
    char why[256] = "out of memory";
    size_t tlen = 0;
    char *text = chat ? render_chat(srv, &r, &tlen, why, sizeof why) : r.prompt;
    if (!chat) tlen = strlen(text);
    if (!text) {
        tl_serve_request_free(&r);
        return send_error(srv, c, strcmp(why, "out of memory") ? 400 : 500, why, NULL);
    }
    int *ids = NULL;
    size_t n = 0;
    int flags = TL_ENC_BOS | (chat ? TL_ENC_PARSE_SPECIAL : 0);
    int rc = tl_tokenizer_encode(srv->m->tok, text, tlen, flags, &ids, &n, &err);
    if (chat) free(text);
    if (rc) {
        tl_serve_request_free(&r);
        return send_error(srv, c, 400, err.msg, NULL);
    }
    const int ctx = tl_sched_ctx(srv->sched);
    if (n == 0 || (long)n >= ctx) {
        free(ids);
        tl_serve_request_free(&r);
        char msg[200];
        if (n == 0) return send_error(srv, c, 400, "the prompt is empty", NULL);
        snprintf(msg, sizeof msg,
                 "the prompt has %zu tokens; the context holds %d (--ctx), leaving no room for a reply", n, ctx);
        return send_error(srv, c, 400, msg, "context_length_exceeded");
    }
    rc = make_jobs(k, &r, ids, (int)n, srv->sched);
    const int stream = r.stream;
    k->include_usage = r.include_usage;
    k->logprobs = r.logprobs;
    tl_serve_request_free(&r);
    if (rc) return send_error(srv, c, 500, "out of memory", NULL); /* conn_unref releases the jobs */
    for (int i = 0; i < k->n_jobs; i++)
        if (tl_sched_submit(srv->sched, k->jobs[i])) return send_error(srv, c, 503, "the server is shutting down", NULL);
    tl_sched_lock(srv->sched);
    snprintf(k->id, sizeof k->id, "%s-%lx", chat ? "chatcmpl" : "cmpl", ++srv->next_id);
    srv->inflight++;
    k->counted = 1;
    tl_sched_unlock(srv->sched);
    k->chat = chat;
    k->n_prompt = (int)n;
    if (stream) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, k, sse_free);
        if (!resp) return MHD_NO;
        k->refs++; /* the response's */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    tl_sched_lock(srv->sched);
    for (int i = 0; i < k->n_jobs; i++)
        while (k->jobs[i]->state != TL_JOB_DONE) tl_sched_wait(srv->sched, 500);
    tl_sched_unlock(srv->sched);
    /* done: the engine no longer writes the jobs */
    int n_gen = 0;
    for (int i = 0; i < k->n_jobs; i++) {
        if (!strcmp(k->jobs[i]->finish, "error")) return send_error(srv, c, 500, k->jobs[i]->error, NULL);
        n_gen += k->jobs[i]->n_gen;
    }
    cJSON *root = response_obj(srv, k, 0);
    for (int i = 0; i < k->n_jobs; i++) {
        tl_job *j = k->jobs[i];
        size_t off = 0;
        cJSON *lp = k->logprobs ? logprobs_obj(srv->m->tok, chat, j->lps, j->n_lps, &off) : NULL;
        add_choice(root, k, 0, i, j->text ? j->text : "", j->text_len, j->finish, 1, lp);
    }
    cJSON_AddItemToObject(root, "usage", usage_obj(k->n_prompt, n_gen));
    return send_json(c, 200, root);
}

/* ------------------------------------------------------------ dispatch */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    tl_server *srv = cls;
    conn *k = *con_cls;
    if (!k) { /* the headers are in: the body (if any) follows in later calls */
        if (!(k = calloc(1, sizeof *k))) return MHD_NO;
        k->srv = srv;
        k->refs = 1;
        *con_cls = k;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t limit = srv->o.max_body ? srv->o.max_body : (size_t)1 << 20;
        if (!k->too_big && k->len + *upload_size <= limit) {
            if (k->len + *upload_size + 1 > k->cap) {
                size_t nc = (k->len + *upload_size + 1) * 2;
                char *nb = realloc(k->body, nc);
                if (!nb) return MHD_NO;
                k->body = nb;
                k->cap = nc;
            }
            memcpy(k->body + k->len, upload, *upload_size);
            k->len += *upload_size;
        } else {
            k->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) return send_error(srv, c, 405, "use GET for /health", NULL);
        tl_sched_lock(srv->sched);
        int closing = srv->closing;
        tl_sched_unlock(srv->sched);
        return closing ? send_text(c, 503, "application/json", "{\"status\":\"shutting down\"}")
                       : send_text(c, 200, "application/json", "{\"status\":\"ok\"}");
    }
    if (srv->o.api_key) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncmp(auth, "Bearer ", 7) || strcmp(auth + 7, srv->o.api_key))
            return send_error(srv, c, 401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key");
    }
    int chat = !strcmp(url, "/v1/chat/completions");
    if (chat || !strcmp(url, "/v1/completions")) {
        if (!post) return send_error(srv, c, 405, "use POST for completions", NULL);
        if (k->too_big) {
            char msg[120];
            snprintf(msg, sizeof msg, "the request body is larger than the %zu-byte limit",
                     srv->o.max_body ? srv->o.max_body : (size_t)1 << 20);
            return send_error(srv, c, 413, msg, NULL);
        }
        tl_sched_lock(srv->sched);
        int closing = srv->closing;
        tl_sched_unlock(srv->sched);
        if (closing) return send_error(srv, c, 503, "the server is shutting down", NULL);
        return post_completion(srv, c, k, chat);
    }
    if (!strcmp(url, "/v1/models")) {
        if (!get) return send_error(srv, c, 405, "use GET for /v1/models", NULL);
        return get_models(srv, c);
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return send_error(srv, c, 405, "use GET for /metrics", NULL);
        return get_metrics(srv, c);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "no route %.8s %.200s", method, url);
    return send_error(srv, c, 404, msg, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    (void)cls, (void)c, (void)why;
    if (*con_cls) conn_unref(*con_cls);
    *con_cls = NULL;
}

/* ------------------------------------------------------------ lifecycle */

int tl_server_start(tl_server **out, const tl_infer_model *m, const tl_server_opts *o, tl_error *err) {
    *out = NULL;
    tl_server *srv = calloc(1, sizeof *srv);
    if (!srv) return tl_fail(err, "out of memory");
    srv->m = m;
    srv->o = *o;
    srv->created = (long)time(NULL);
    const char *name = o->model_id;
    if (!name) {
        name = strrchr(m->dir, '/') && strrchr(m->dir, '/')[1] ? strrchr(m->dir, '/') + 1 : m->dir;
    }
    snprintf(srv->model_id, sizeof srv->model_id, "%.255s", name);
    if (tl_chat_format_choose(NULL, m->chat_template, m->dir, &srv->fmt, err)) {
        free(srv);
        return -1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    const char *host = o->host ? o->host : "127.0.0.1";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        free(srv);
        return tl_fail(err, "--host %s: not an IPv4 address", host);
    }
    if (o->port < 0 || o->port > 65535) {
        free(srv);
        return tl_fail(err, "--port %d: must be in [0, 65535]", o->port);
    }
    tl_sched_opts so = {.parallel = o->parallel, .ctx = o->ctx, .chunk = o->chunk, .prefix_cache = o->prefix_cache,
                        .draft = o->draft, .draft_k = o->draft_k};
    if (tl_sched_start(&srv->sched, m, &so, err)) {
        free(srv);
        return -1;
    }
    srv->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                              on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)(o->timeout_s > 0 ? o->timeout_s : 60), MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)512, MHD_OPTION_END);
    if (!srv->d) {
        tl_sched_stop(srv->sched);
        free(srv);
        return tl_fail(err, "cannot listen on %s:%d (in use, or not an address of this machine?)", host, o->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? (int)info->port : o->port;
    *out = srv;
    return 0;
}

int tl_server_port(const tl_server *s) { return s->port; }

void tl_server_stop(tl_server *s, double drain_seconds) {
    if (!s) return;
    tl_sched_lock(s->sched);
    s->closing = 1;
    tl_sched_unlock(s->sched);
    const double until = tl_now() + drain_seconds;
    tl_sched_drain(s->sched, drain_seconds); /* in-flight requests end */
    /* their connections finish sending (a stream's last chunks and [DONE]) before the daemon closes them */
    tl_sched_lock(s->sched);
    while (s->inflight > 0 && tl_now() < until + 1.0) tl_sched_wait(s->sched, 20);
    tl_sched_unlock(s->sched);
    MHD_stop_daemon(s->d); /* joins the connection threads */
    tl_sched_stop(s->sched);
    free(s);
}

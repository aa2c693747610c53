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

typedef struct {
    tl_server *srv;
    int refs;
    char *body;
    size_t len, cap;
    int too_big;
    int counted; /* in srv->inflight */
    /* a streamed completion */
    tl_job *job;
    int chat, include_usage, n_prompt;
    char id[48];
    size_t sent;      /* bytes of job->text streamed */
    int role_sent, done_sent;
    char *out;        /* SSE bytes not yet handed to MHD */
    size_t out_len, out_off, out_cap;
} conn;

static void conn_unref(conn *k) {
    if (--k->refs) return;
    if (k->job) tl_sched_release(k->srv->sched, k->job);
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

/* A response or stream chunk: text NULL for a chunk without content. */
static cJSON *choice_obj(tl_server *srv, conn *k, int stream, const char *text, size_t len, const char *finish,
                         int role) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", k->id);
    cJSON_AddStringToObject(root, "object",
                            k->chat ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)time(NULL));
    cJSON_AddStringToObject(root, "model", srv->model_id);
    cJSON_AddStringToObject(root, "system_fingerprint", "tinyllama");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    char *t = malloc(len + 1);
    if (t) {
        if (len) memcpy(t, text, len);
        t[len] = '\0';
    }
    if (k->chat) {
        cJSON *msg = cJSON_AddObjectToObject(ch, stream ? "delta" : "message");
        if (role) cJSON_AddStringToObject(msg, "role", "assistant");
        if (text && t) cJSON_AddStringToObject(msg, "content", t);
    } else {
        cJSON_AddStringToObject(ch, "text", text && t ? t : "");
    }
    free(t);
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
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

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    conn *k = cls;
    tl_server *srv = k->srv;
    while (k->out_off == k->out_len) {
        if (k->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        k->out_off = k->out_len = 0;
        if (k->chat && !k->role_sent) { /* the first chunk names the role, as OpenAI's does */
            k->role_sent = 1;
            if (out_event(k, choice_obj(srv, k, 1, "", 0, NULL, 1))) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        tl_job *j = k->job;
        tl_sched_lock(srv->sched);
        while (j->state != TL_JOB_DONE && utf8_whole(j->text ? j->text : "", j->text_len) == k->sent)
            tl_sched_wait(srv->sched, 200);
        int done = j->state == TL_JOB_DONE;
        size_t upto = done ? j->text_len : utf8_whole(j->text, j->text_len);
        char *delta = NULL;
        size_t dlen = upto - k->sent;
        if (dlen && (delta = malloc(dlen))) memcpy(delta, j->text + k->sent, dlen);
        const char *finish = j->finish;
        char error[256];
        snprintf(error, sizeof error, "%s", j->error);
        int n_gen = j->n_gen;
        tl_sched_unlock(srv->sched);
        if (dlen && !delta) return MHD_CONTENT_READER_END_WITH_ERROR;
        k->sent = upto;
        int rc = 0;
        if (dlen) rc = out_event(k, choice_obj(srv, k, 1, delta, dlen, NULL, 0));
        free(delta);
        if (done && !rc) {
            if (!strcmp(finish, "error"))
                rc = out_event(k, error_obj(error, "server_error", NULL));
            else
                rc = out_event(k, choice_obj(srv, k, 1, NULL, 0, finish, 0));
            if (!rc && k->include_usage) {
                cJSON *u = choice_obj(srv, k, 1, NULL, 0, NULL, 0);
                cJSON_DeleteItemFromObject(u, "choices");
                cJSON_AddArrayToObject(u, "choices");
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

static enum MHD_Result post_completion(tl_server *srv, struct MHD_Connection *c, conn *k, int chat) {
    tl_serve_request r;
    tl_error err;
    if (tl_serve_request_parse(k->body, k->len, chat, &r, &err)) return send_error(srv, c, 400, err.msg, NULL);
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
    tl_job *j = tl_job_new();
    if (!j) {
        free(ids);
        tl_serve_request_free(&r);
        return send_error(srv, c, 500, "out of memory", NULL);
    }
    j->ids = ids;
    j->n_ids = (int)n;
    j->max_tokens = r.max_tokens;
    j->so.temperature = (float)r.temperature;
    j->so.top_p = (float)r.top_p;
    j->so.top_k = (int)r.top_k;
    j->so.min_p = (float)r.min_p;
    j->seed = r.has_seed ? r.seed : (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)j << 16);
    for (int i = 0; i < r.n_stops; i++) j->stops[i] = r.stops[i], r.stops[i] = NULL;
    j->n_stops = r.n_stops;
    r.n_stops = 0;
    const int stream = r.stream, include_usage = r.include_usage;
    tl_serve_request_free(&r);
    if (tl_sched_submit(srv->sched, j)) {
        tl_sched_release(srv->sched, j);
        return send_error(srv, c, 503, "the server is shutting down", NULL);
    }
    tl_sched_lock(srv->sched);
    snprintf(k->id, sizeof k->id, "%s-%lx", chat ? "chatcmpl" : "cmpl", ++srv->next_id);
    srv->inflight++;
    k->counted = 1;
    tl_sched_unlock(srv->sched);
    k->job = j;
    k->chat = chat;
    k->n_prompt = (int)n;
    k->include_usage = include_usage;
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
    while (j->state != TL_JOB_DONE) tl_sched_wait(srv->sched, 500);
    tl_sched_unlock(srv->sched);
    /* done: the engine no longer writes the job */
    if (!strcmp(j->finish, "error")) return send_error(srv, c, 500, j->error, NULL);
    cJSON *root = choice_obj(srv, k, 0, j->text ? j->text : "", j->text_len, j->finish, 1);
    cJSON_AddItemToObject(root, "usage", usage_obj(j->n_ids, j->n_gen));
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

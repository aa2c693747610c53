/* server.h - the OpenAI-compatible HTTP server (libmicrohttpd, one thread per
 * connection) over the scheduler (scheduler.h):
 *   POST /v1/chat/completions   messages rendered with the model's chat template
 *   POST /v1/completions        a prompt continued
 *   GET  /v1/models, /health, /metrics (Prometheus text)
 * `stream: true` answers as server-sent events (one `data: {chunk}` per piece
 * of text, then `data: [DONE]`).  Bad requests get HTTP 4xx with an OpenAI
 * error object naming the problem; the server goes on serving.  See
 * docs/serving.md. */
#ifndef TL_SERVE_SERVER_H
#define TL_SERVE_SERVER_H

#include "common.h"
#include "infer.h"

typedef struct {
    const char *host;    /* IPv4 address to bind (default 127.0.0.1) */
    int port;            /* 0: any free port (tl_server_port says which) */
    int parallel;        /* slots (sequences decoded together) */
    int ctx;             /* positions per slot (<= 0: the model's) */
    int chunk;           /* prompt tokens per slot per step (<= 0: default) */
    int prefix_cache;    /* reuse cached prompt prefixes */
    const char *model_id; /* the name /v1/models reports */
    const char *api_key; /* NULL: none; else every route but /health needs `Authorization: Bearer KEY` */
    size_t max_body;     /* largest request body (0: 1 MiB) */
    int timeout_s;       /* idle connection timeout (0: 60) */
    const tl_infer_model *draft; /* speculative decoding's draft (scheduler.h; parallel 1); NULL: none */
    int draft_k;         /* its proposals per step (0: 4) */
} tl_server_opts;

typedef struct tl_server tl_server;

/* Starts serving m (borrowed; it must have a tokenizer) in background threads. */
int tl_server_start(tl_server **out, const tl_infer_model *m, const tl_server_opts *o, tl_error *err);
int tl_server_port(const tl_server *s);
/* New requests get 503 from now on; requests in flight may take up to
 * drain_seconds to finish (the rest are cut off); then everything stops. */
void tl_server_stop(tl_server *s, double drain_seconds);

#endif

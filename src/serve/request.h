/* request.h - the body of an OpenAI-style completion request (POST
 * /v1/completions, /v1/chat/completions) checked and read into a struct.
 * Bodies come from the network: anything malformed (not UTF-8, not JSON, a
 * field of the wrong type or out of range) is refused with a message that
 * names the field; unknown fields are ignored, as OpenAI's server does. */
#ifndef TL_SERVE_REQUEST_H
#define TL_SERVE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "common.h"

#define TL_SERVE_MAX_STOPS 4 /* OpenAI's limit */
#define TL_SERVE_MAX_TOP_LOGPROBS 20 /* OpenAI's limit */
#define TL_SERVE_MAX_N 128 /* choices per request */

typedef struct {
    tl_chat_role role; /* chat_template.h's roles */
    char *content;
} tl_serve_msg;

typedef struct {
    int chat;                 /* messages (chat) or prompt (completions) */
    char *prompt;             /* completions */
    tl_serve_msg *msgs;       /* chat */
    int n_msgs;
    long max_tokens;          /* 0: not given (up to the context) */
    double temperature, top_p, min_p; /* defaults 1, 1, 0 */
    long top_k;               /* 0: off */
    int has_seed;
    uint64_t seed;
    char *stops[TL_SERVE_MAX_STOPS];
    int n_stops;
    int stream;
    int include_usage;        /* stream_options.include_usage */
    int n;                    /* choices (default 1) */
    int logprobs;             /* chat: logprobs true; completions: logprobs N given */
    int top_logprobs;         /* chat: top_logprobs; completions: the N of logprobs */
} tl_serve_request;

/* Whether s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or
 * code points above U+10FFFF); *bad receives the offset of the first error. */
int tl_utf8_valid(const char *s, size_t n, size_t *bad);

/* Parses body (len bytes, not necessarily NUL-terminated).  0 on success (free
 * r with tl_serve_request_free), -1 with err naming the problem (r freed). */
int tl_serve_request_parse(const char *body, size_t len, int chat, tl_serve_request *r, tl_error *err);
void tl_serve_request_free(tl_serve_request *r);

#endif

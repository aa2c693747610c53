/* request.c - reading a completion request body (request.h). */
#include "request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tl_utf8_valid(const char *str, size_t n, size_t *bad) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        int len;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            break;
        }
        if (n - i < (size_t)len) break;
        int k = 1;
        for (; k < len && (s[i + k] & 0xC0) == 0x80; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
        if (k < len || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) break;
        i += (size_t)len;
    }
    if (bad) *bad = i;
    return i == n;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

void tl_serve_request_free(tl_serve_request *r) {
    free(r->prompt);
    for (int i = 0; i < r->n_msgs; i++) free(r->msgs[i].content);
    free(r->msgs);
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    memset(r, 0, sizeof *r);
}

/* A JSON string that cJSON decoded: \u escapes can still spell a lone surrogate. */
static int take_string(const cJSON *v, const char *what, char **out, tl_error *err) {
    if (!cJSON_IsString(v)) return tl_fail(err, "'%s' must be a string", what);
    size_t bad;
    if (!tl_utf8_valid(v->valuestring, strlen(v->valuestring), &bad))
        return tl_fail(err, "'%s' is not valid UTF-8 (byte %zu)", what, bad);
    if (!(*out = dup_str(v->valuestring))) return tl_fail(err, "out of memory");
    return 0;
}

/* An optional number field: absent or null keeps *out. */
static int get_number(const cJSON *root, const char *key, double lo, double hi, double *out, tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return tl_fail(err, "'%s' must be a number", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return tl_fail(err, "'%s' is %g; it must be in [%g, %g]", key, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 0;
}

/* An optional integer field (a JSON number without a fraction). */
static int get_integer(const cJSON *root, const char *key, double lo, double hi, int *given, double *out,
                       tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return tl_fail(err, "'%s' must be an integer", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return tl_fail(err, "'%s' is %.0f; it must be in [%.0f, %.0f]", key, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    if (given) *given = 1;
    return 0;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts (joined). */
static int take_content(const cJSON *v, int i, char **out, tl_error *err) {
    char what[48];
    snprintf(what, sizeof what, "messages[%d].content", i);
    if (cJSON_IsString(v)) return take_string(v, what, out, err);
    if (!cJSON_IsArray(v)) return tl_fail(err, "'%s' must be a string or an array of text parts", what);
    size_t len = 0;
    char *acc = calloc(1, 1);
    if (!acc) return tl_fail(err, "out of memory");
    int k = 0;
    for (const cJSON *p = v->child; p; p = p->next, k++) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        char *t = NULL;
        if (!cJSON_IsObject(p) || !cJSON_IsString(type) || strcmp(type->valuestring, "text")) {
            free(acc);
            return tl_fail(err, "'%s[%d]' must be a {\"type\": \"text\"} part (only text is supported)", what, k);
        }
        snprintf(what, sizeof what, "messages[%d].content[%d].text", i, k);
        if (take_string(text, what, &t, err)) {
            free(acc);
            return -1;
        }
        size_t tl = strlen(t);
        char *na = realloc(acc, len + tl + 1);
        if (!na) {
            free(t);
            free(acc);
            return tl_fail(err, "out of memory");
        }
        acc = na;
        memcpy(acc + len, t, tl + 1);
        len += tl;
        free(t);
        snprintf(what, sizeof what, "messages[%d].content", i);
    }
    *out = acc;
    return 0;
}

static int parse_messages(const cJSON *v, tl_serve_request *r, tl_error *err) {
    if (!v) return tl_fail(err, "'messages' is required");
    if (!cJSON_IsArray(v) || !v->child) return tl_fail(err, "'messages' must be a non-empty array");
    int n = cJSON_GetArraySize(v);
    if (!(r->msgs = calloc((size_t)n, sizeof *r->msgs))) return tl_fail(err, "out of memory");
    int i = 0;
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) return tl_fail(err, "'messages[%d]' must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) return tl_fail(err, "'messages[%d].role' must be a string", i);
        const char *rs = role->valuestring;
        tl_chat_role ro;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer"))
            ro = TL_ROLE_SYSTEM;
        else if (!strcmp(rs, "user"))
            ro = TL_ROLE_USER;
        else if (!strcmp(rs, "assistant"))
            ro = TL_ROLE_ASSISTANT;
        else
            return tl_fail(err, "'messages[%d].role' is '%.40s'; expected system, user or assistant", i, rs);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!content) return tl_fail(err, "'messages[%d].content' is required", i);
        r->msgs[i].role = ro;
        r->n_msgs = i + 1;
        if (take_content(content, i, &r->msgs[i].content, err)) return -1;
    }
    return 0;
}

static int parse_stop(const cJSON *v, tl_serve_request *r, tl_error *err) {
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) return 0; /* "" stops nothing */
        if (take_string(v, "stop", &r->stops[0], err)) return -1;
        r->n_stops = 1;
        return 0;
    }
    if (!cJSON_IsArray(v)) return tl_fail(err, "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > TL_SERVE_MAX_STOPS)
        return tl_fail(err, "'stop' has %d strings; at most %d are allowed", cJSON_GetArraySize(v),
                       TL_SERVE_MAX_STOPS);
    int i = 0;
    for (const cJSON *s = v->child; s; s = s->next, i++) {
        char what[24];
        snprintf(what, sizeof what, "stop[%d]", i);
        if (!cJSON_IsString(s)) return tl_fail(err, "'%s' must be a string", what);
        if (!s->valuestring[0]) continue;
        if (take_string(s, what, &r->stops[r->n_stops], err)) return -1;
        r->n_stops++;
    }
    return 0;
}

static int parse_bool(const cJSON *root, const char *key, int *out, tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return tl_fail(err, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* chat: `logprobs: true` with `top_logprobs: K`; completions (the legacy API):
 * `logprobs: K`, where K alternatives are listed per token (0 lists none). */
static int parse_logprobs(const cJSON *root, int chat, tl_serve_request *r, tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    double d = 0;
    int given = 0;
    if (chat) {
        if (parse_bool(root, "logprobs", &r->logprobs, err) ||
            get_integer(root, "top_logprobs", 0, TL_SERVE_MAX_TOP_LOGPROBS, &given, &d, err))
            return -1;
        if (given && d > 0 && !r->logprobs) return tl_fail(err, "'top_logprobs' needs 'logprobs': true");
        r->top_logprobs = (int)d;
        return 0;
    }
    if (v && cJSON_IsBool(v)) { /* some clients send the chat form here */
        r->logprobs = cJSON_IsTrue(v);
        return 0;
    }
    if (get_integer(root, "logprobs", 0, TL_SERVE_MAX_TOP_LOGPROBS, &given, &d, err)) return -1;
    r->logprobs = given;
    r->top_logprobs = (int)d;
    return 0;
}

static int parse_root(const cJSON *root, int chat, tl_serve_request *r, tl_error *err) {
    if (!cJSON_IsObject(root)) return tl_fail(err, "the request body must be a JSON object");
    if (chat) {
        if (parse_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), r, err)) return -1;
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!p) return tl_fail(err, "'prompt' is required");
        /* the clients send a one-element list as often as a string */
        if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
        if (!cJSON_IsString(p)) return tl_fail(err, "'prompt' must be a string (or a list of one string)");
        if (take_string(p, "prompt", &r->prompt, err)) return -1;
    }
    double d = 0;
    int given = 0;
    /* max_completion_tokens is the newer name of max_tokens */
    if (get_integer(root, "max_tokens", 1, 1e9, &given, &d, err) ||
        get_integer(root, "max_completion_tokens", 1, 1e9, &given, &d, err))
        return -1;
    r->max_tokens = given ? (long)d : 0;
    if (get_number(root, "temperature", 0, 2, &r->temperature, err) ||
        get_number(root, "top_p", 0, 1, &r->top_p, err) || get_number(root, "min_p", 0, 1, &r->min_p, err))
        return -1;
    if (r->top_p <= 0) return tl_fail(err, "'top_p' must be greater than 0");
    d = 0;
    if (get_integer(root, "top_k", 0, 1e9, NULL, &d, err)) return -1;
    r->top_k = (long)d;
    d = 0;
    /* seeds up to 2^53: JSON numbers are doubles */
    if (get_integer(root, "seed", -9007199254740992.0, 9007199254740992.0, &r->has_seed, &d, err)) return -1;
    r->seed = (uint64_t)(int64_t)d;
    d = 1;
    if (get_integer(root, "n", 1, TL_SERVE_MAX_N, NULL, &d, err)) return -1;
    r->n = (int)d;
    if (parse_logprobs(root, chat, r, err)) return -1;
    if (parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), r, err) || parse_bool(root, "stream", &r->stream, err))
        return -1;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return tl_fail(err, "'stream_options' must be an object");
        if (parse_bool(so, "include_usage", &r->include_usage, err)) return -1;
    }
    return 0;
}

int tl_serve_request_parse(const char *body, size_t len, int chat, tl_serve_request *r, tl_error *err) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->temperature = 1.0;
    r->top_p = 1.0;
    size_t bad;
    if (!len) return tl_fail(err, "the request body is empty; expected a JSON object");
    if (!tl_utf8_valid(body, len, &bad)) return tl_fail(err, "the request body is not valid UTF-8 (byte %zu)", bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return tl_fail(err, "the request body is not valid JSON (error near byte %zu)", at);
    }
    while (end && (size_t)(end - body) < len && strchr(" \t\r\n", *end) && *end) end++;
    if (end && (size_t)(end - body) < len) {
        cJSON_Delete(root);
        return tl_fail(err, "the request body has data after the JSON value (byte %zu)", (size_t)(end - body));
    }
    int rc = parse_root(root, chat, r, err);
    cJSON_Delete(root);
    if (rc) tl_serve_request_free(r);
    return rc;
}

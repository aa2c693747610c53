/* prepare_chat.c - `prepare --format chat`: JSONL conversations -> masked
 * samples for supervised fine-tuning (prepare.h, docs/finetuning.md).
 *
 * A conversation is rendered with the chat template (chat_template.c, the code
 * `chat` uses), encoded whole as HF's tokenizer(apply_chat_template(...)) does
 * (BOS, special tokens parsed), and each token is a target when the text it
 * covers overlaps an assistant reply or its closing marker: the rule of HF's
 * return_assistant_tokens_mask, which TRL's assistant-only loss uses. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepare_internal.h"

static const char *const STATUS[TL_CONV_N_STATUS] = {"ok",        "malformed_json", "no_messages",  "bad_role",
                                                     "not_string", "empty_turn",    "bad_order",    "no_assistant",
                                                     "too_long",  "same_pair"};

const char *tl_conv_status_name(int status) {
    return status >= 0 && status < TL_CONV_N_STATUS ? STATUS[status] : "?";
}

void tl_conv_free(tl_conv *c) {
    free(c->msgs);
    cJSON_Delete(c->json);
    memset(c, 0, sizeof *c);
}

static int conv_bad(tl_conv *c, int status, char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int conv_bad(tl_conv *c, int status, char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (cap) vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    tl_conv_free(c);
    return status;
}

static int role_of(const char *r) {
    if (!strcmp(r, "system")) return TL_ROLE_SYSTEM;
    if (!strcmp(r, "user") || !strcmp(r, "human")) return TL_ROLE_USER;
    if (!strcmp(r, "assistant") || !strcmp(r, "gpt")) return TL_ROLE_ASSISTANT;
    return -1;
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return 0;
    return 1;
}

/* Checks a message array (OpenAI / UltraChat role+content, or ShareGPT
 * from+value) into out[*n]; TL_CONV_OK or a status with why (c freed). */
static int parse_msgs(tl_conv *c, const cJSON *arr, const char *ak, tl_chat_msg *out, int *n, int *replies, char *why,
                      size_t cap) {
    const int sharegpt = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 0), "from") != NULL;
    const char *rk = sharegpt ? "from" : "role", *ck = sharegpt ? "value" : "content";
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(e, rk), *v = cJSON_GetObjectItemCaseSensitive(e, ck);
        if (!cJSON_IsObject(e))
            return conv_bad(c, TL_CONV_NO_MESSAGES, why, cap, "%s[%d] is not an object", ak, k);
        int role = cJSON_IsString(r) ? role_of(r->valuestring) : -1;
        if (role < 0)
            return conv_bad(c, TL_CONV_BAD_ROLE, why, cap, "%s[%d]: %s %s%.40s%s is none of system, user, assistant%s",
                            ak, k, rk, cJSON_IsString(r) ? "'" : "", cJSON_IsString(r) ? r->valuestring : "missing",
                            cJSON_IsString(r) ? "'" : "", sharegpt ? " (human, gpt)" : "");
        if (!cJSON_IsString(v))
            return conv_bad(c, TL_CONV_NOT_STRING, why, cap, "%s[%d]: %s is %s, not a string", ak, k, ck,
                            v ? "of another type" : "missing");
        if (blank(v->valuestring)) return conv_bad(c, TL_CONV_EMPTY_TURN, why, cap, "%s[%d]: empty %s", ak, k, ck);
        /* the templates want: [system] user assistant user assistant ... */
        int want = k == 0 ? -1 : out[k - 1].role == TL_ROLE_USER ? TL_ROLE_ASSISTANT : TL_ROLE_USER;
        if (role == TL_ROLE_SYSTEM ? k != 0 : want >= 0 ? role != want : role != TL_ROLE_USER)
            return conv_bad(c, TL_CONV_BAD_ORDER, why, cap,
                            "%s[%d]: a %s message here (wanted: an optional system message first, then user and "
                            "assistant alternating from a user)",
                            ak, k, r->valuestring);
        out[k].role = (tl_chat_role)role;
        out[k].content = v->valuestring;
        *replies += role == TL_ROLE_ASSISTANT;
        k++;
    }
    *n = k;
    return TL_CONV_OK;
}

int tl_conv_parse(const char *line, size_t len, tl_conv *c, char *why, size_t cap) {
    memset(c, 0, sizeof *c);
    cJSON *j = cJSON_ParseWithLength(line, len);
    c->json = j;
    if (!cJSON_IsObject(j)) return conv_bad(c, TL_CONV_MALFORMED, why, cap, "not a JSON object");
    const char *ak = "messages";
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!arr) arr = cJSON_GetObjectItemCaseSensitive(j, ak = "conversations");
    if (!cJSON_IsArray(arr) || !cJSON_GetArraySize(arr))
        return conv_bad(c, TL_CONV_NO_MESSAGES, why, cap, "no non-empty \"messages\" or \"conversations\" array");
    c->msgs = calloc((size_t)cJSON_GetArraySize(arr), sizeof *c->msgs);
    if (!c->msgs) return conv_bad(c, TL_CONV_MALFORMED, why, cap, "out of memory");
    int replies = 0, s = parse_msgs(c, arr, ak, c->msgs, &c->n, &replies, why, cap);
    if (s) return s;
    if (!replies) return conv_bad(c, TL_CONV_NO_ASSISTANT, why, cap, "no assistant message (nothing to learn)");
    return TL_CONV_OK;
}

void tl_pref_free(tl_pref *p) {
    tl_conv_free(&p->prompt);
    memset(p, 0, sizeof *p);
}

/* A reply: a string, or a message array ending with the assistant's. */
static int pref_reply(tl_pref *p, const cJSON *v, const char *key, const char **out, char *why, size_t cap) {
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        const cJSON *last = cJSON_GetArrayItem(v, cJSON_GetArraySize(v) - 1);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(last, "role");
        if (!r) r = cJSON_GetObjectItemCaseSensitive(last, "from");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(last, "content");
        if (!c) c = cJSON_GetObjectItemCaseSensitive(last, "value");
        if (!cJSON_IsString(r) || role_of(r->valuestring) != TL_ROLE_ASSISTANT)
            return conv_bad(&p->prompt, TL_CONV_NO_ASSISTANT, why, cap, "\"%s\" does not end with an assistant message", key);
        v = c;
    }
    if (!v) return conv_bad(&p->prompt, TL_CONV_NO_ASSISTANT, why, cap, "no \"%s\" reply", key);
    if (!cJSON_IsString(v)) return conv_bad(&p->prompt, TL_CONV_NOT_STRING, why, cap, "\"%s\" is not a string", key);
    if (blank(v->valuestring)) return conv_bad(&p->prompt, TL_CONV_EMPTY_TURN, why, cap, "empty \"%s\"", key);
    *out = v->valuestring;
    return TL_CONV_OK;
}

int tl_pref_parse(const char *line, size_t len, tl_pref *p, char *why, size_t cap) {
    memset(p, 0, sizeof *p);
    tl_conv *c = &p->prompt;
    cJSON *j = cJSON_ParseWithLength(line, len);
    c->json = j;
    if (!cJSON_IsObject(j)) return conv_bad(c, TL_CONV_MALFORMED, why, cap, "not a JSON object");
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "chosen"), *rj = cJSON_GetObjectItemCaseSensitive(j, "rejected");
    int s = pref_reply(p, ch, "chosen", &p->chosen, why, cap);
    if (!s) s = pref_reply(p, rj, "rejected", &p->rejected, why, cap);
    if (s) return s;
    /* the prompt: "prompt" (a string: one user message; or messages), "messages", or
     * the conversation before the chosen reply (UltraFeedback's layout) */
    const char *ak = "prompt";
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    if (!cJSON_IsArray(pr) && !cJSON_IsString(pr)) pr = cJSON_GetObjectItemCaseSensitive(j, ak = "messages");
    cJSON *before = NULL;
    if (!pr && cJSON_IsArray(ch) && cJSON_GetArraySize(ch) > 1) {
        before = cJSON_Duplicate(ch, 1);
        cJSON_DeleteItemFromArray(before, cJSON_GetArraySize(before) - 1);
        cJSON_AddItemToObject(j, "tl_prompt", before); /* owned by the record */
        pr = before;
        ak = "chosen";
    }
    if (cJSON_IsString(pr)) {
        if (blank(pr->valuestring)) return conv_bad(c, TL_CONV_EMPTY_TURN, why, cap, "empty \"prompt\"");
        if (!(c->msgs = calloc(2, sizeof *c->msgs))) return conv_bad(c, TL_CONV_MALFORMED, why, cap, "out of memory");
        c->msgs[0] = (tl_chat_msg){TL_ROLE_USER, pr->valuestring};
        c->n = 1;
    } else if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) > 0) {
        if (!(c->msgs = calloc((size_t)cJSON_GetArraySize(pr) + 1, sizeof *c->msgs)))
            return conv_bad(c, TL_CONV_MALFORMED, why, cap, "out of memory");
        int replies = 0;
        if ((s = parse_msgs(c, pr, ak, c->msgs, &c->n, &replies, why, cap))) return s;
        if (c->msgs[c->n - 1].role != TL_ROLE_USER)
            return conv_bad(c, TL_CONV_BAD_ORDER, why, cap, "the prompt does not end with a user message");
    } else {
        return conv_bad(c, TL_CONV_NO_MESSAGES, why, cap, "no \"prompt\" (a string or messages) or \"messages\"");
    }
    if (!strcmp(p->chosen, p->rejected))
        return conv_bad(c, TL_CONV_SAME_PAIR, why, cap, "chosen and rejected are the same reply (nothing to prefer)");
    return TL_CONV_OK;
}

/* ------------------------------------------------------------------ masks */

/* The text token id stands for at the front of s (after pos), as SentencePiece
 * pieces spell it ("\xE2\x96\x81" is a space, <0xNN> one byte); *skip: the
 * piece starts with a space the encoder added (the dummy prefix). */
static size_t piece_text(const tl_tokenizer *t, int id, char *out, size_t cap) {
    const char *p = tl_tokenizer_piece(t, id);
    int type = tl_tokenizer_piece_type(t, id);
    if (!p) return 0;
    if (type == TL_PIECE_BYTE) {
        unsigned v;
        if (sscanf(p, "<0x%2X>", &v) != 1) return 0;
        out[0] = (char)v;
        return 1;
    }
    size_t n = 0;
    for (; *p && n < cap; p++) {
        if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81) {
            out[n++] = ' ';
            p += 2;
        } else {
            out[n++] = *p;
        }
    }
    return n;
}

/* mask[i] = 1 when token i's text overlaps one of the spans [s, e).  Fails if
 * the tokens do not spell the text (a tokenizer that normalizes it). */
static int assistant_mask(const tl_tokenizer *t, const char *text, size_t len, const int *ids, size_t n,
                          const size_t *spans, int n_spans, uint8_t *mask) {
    size_t pos = 0;
    char buf[256];
    for (size_t i = 0; i < n; i++) {
        size_t a = pos, pl;
        if (i == 0 && ids[0] == tl_tokenizer_bos_id(t)) {
            pl = 0; /* the BOS the encoder put in front */
        } else {
            pl = piece_text(t, ids[i], buf, sizeof buf);
            const char *p = buf;
            if (pl && !(pos + pl <= len && !memcmp(text + pos, p, pl)) && p[0] == ' ') {
                p++; /* the dummy prefix: a space that is not in the text */
                pl--;
            }
            if (pos + pl > len || memcmp(text + pos, p, pl)) return -1;
        }
        pos += pl;
        mask[i] = 0;
        for (int k = 0; k < n_spans; k++) {
            size_t s = spans[2 * k], e = spans[2 * k + 1];
            if (pl ? a < e && pos > s : a >= s && a < e) mask[i] = 1;
        }
    }
    return pos == len ? 0 : -1;
}

/* ------------------------------------------------------------------ the run */

static int add_issue(tl_prepare_chat *c, const char *file, uint64_t line, const char *why) {
    if (c->n_issues >= TL_CHAT_MAX_ISSUES) return 0;
    if (!c->issues && !(c->issues = calloc(TL_CHAT_MAX_ISSUES, sizeof *c->issues))) return -1;
    size_t l = strlen(file) + strlen(why) + 32;
    char *s = malloc(l);
    if (!s) return -1;
    snprintf(s, l, "%s:%llu: %s", file, (unsigned long long)line, why);
    c->issues[c->n_issues++] = s;
    return 0;
}

static int bad_line(prep *P, int status, const char *file, uint64_t line, const char *why, tl_error *err) {
    P->r->chat.bad[status]++;
    if (add_issue(&P->r->chat, file, line, why)) return tl_fail(err, "out of memory");
    return 0;
}

int tl_conv_encode(const tl_tokenizer *tok, tl_chat_format fmt, const tl_conv *c, int **ids_out, uint8_t **mask_out,
                   size_t *n_out, tl_error *err) {
    size_t *spans = malloc(sizeof *spans * 2 * (size_t)c->n + 1), len = 0, n = 0;
    char *text = spans ? tl_chat_render_messages(fmt, c->msgs, c->n, 0, &len, spans) : NULL;
    int n_spans = 0, *ids = NULL, rc = 0;
    for (int i = 0; i < c->n; i++) n_spans += c->msgs[i].role == TL_ROLE_ASSISTANT;
    uint8_t *mask = NULL;
    if (!text) rc = tl_fail(err, "out of memory");
    if (!rc) rc = tl_tokenizer_encode(tok, text, len, TL_ENC_BOS | TL_ENC_PARSE_SPECIAL, &ids, &n, err);
    if (!rc && !(mask = malloc(n + 1))) rc = tl_fail(err, "out of memory");
    if (!rc && assistant_mask(tok, text, len, ids, n, spans, n_spans, mask))
        rc = tl_fail(err, "the tokens do not spell the rendered conversation (a tokenizer that normalizes text "
                          "cannot mark the replies)");
    free(text);
    free(spans);
    if (rc) {
        free(ids);
        free(mask);
        return -1;
    }
    *ids_out = ids;
    *mask_out = mask;
    *n_out = n;
    return 0;
}

/* ids[n] cut or padded (EOS, never a target) to S tokens in out, om; returns
 * the targets kept (0: none, the conversation cannot be learned from). */
static size_t fit_sample(prep *P, const int *ids, const uint8_t *mask, size_t n, size_t S, int *out, uint8_t *om) {
    size_t keep = n < S ? n : S, targets = 0;
    for (size_t i = 0; i < S; i++) {
        out[i] = i < keep ? ids[i] : P->eos;
        om[i] = i < keep ? mask[i] : 0;
        targets += om[i];
    }
    return targets;
}

/* The counts of a conversation written as (part of) a sample. */
static void count_written(prep *P, size_t n, size_t S, size_t targets, tl_prepare_input *st) {
    if (n > S) {
        P->r->chat.truncated++;
        P->r->chat.truncated_tokens += n - S;
    }
    P->r->chat.padded_tokens += n < S ? S - n : 0;
    P->r->chat.target_tokens += targets;
    st->tokens += n < S ? n : S;
}

/* One good conversation (two for a preference pair, rej != NULL): encode, cut or
 * pad, write as one sample. */
static int write_conv(prep *P, tl_chat_format fmt, const tl_conv *c, const tl_conv *rej, const char *file,
                      uint64_t line, tl_prepare_input *st, tl_error *err) {
    const size_t S = (size_t)P->o->seq_len + 1;
    const int parts = rej ? 2 : 1;
    int *ids[2] = {NULL, NULL}, *out = malloc(sizeof *out * S * 2), rc = 0;
    uint8_t *mask[2] = {NULL, NULL}, *om = malloc(S * 2);
    size_t n[2], targets[2] = {0, 0};
    if (!out || !om) rc = tl_fail(err, "out of memory");
    for (int k = 0; k < parts && !rc; k++)
        if (tl_conv_encode(P->tok, fmt, k ? rej : c, &ids[k], &mask[k], &n[k], err))
            rc = tl_wrap(err, "%s:%llu", file, (unsigned long long)line);
    for (int k = 0; k < parts && !rc; k++) targets[k] = fit_sample(P, ids[k], mask[k], n[k], S, out + k * S, om + k * S);
    if (!rc && (!targets[0] || (rej && !targets[1]))) {
        char why[200];
        int k = targets[0] ? 1 : 0;
        snprintf(why, sizeof why, "%s%zu tokens: no reply token within the first %zu (--seq-len)",
                 !rej ? "" : k ? "rejected: " : "chosen: ", n[k], S);
        rc = bad_line(P, TL_CONV_TOO_LONG, file, line, why, err);
    } else if (!rc) {
        for (int k = 0; k < parts; k++) count_written(P, n[k], S, targets[k], st);
        int val = tl_prep_is_val_unit(P->o, P->doc_index++);
        rc = tl_prep_set_write_masked(&P->sets[val], out, om, err);
        st->documents++;
        if (val) st->val_documents++;
        else st->train_documents++;
        P->r->chat.conversations++;
    }
    for (int k = 0; k < 2; k++) {
        free(ids[k]);
        free(mask[k]);
    }
    free(out);
    free(om);
    return rc;
}

/* A preference pair: the prompt with each reply. */
static int write_pair(prep *P, tl_chat_format fmt, tl_pref *p, const char *file, uint64_t line, tl_prepare_input *st,
                      tl_error *err) {
    tl_chat_msg *m = p->prompt.msgs;
    const int n = p->prompt.n;
    tl_chat_msg *rm = malloc(sizeof *rm * (size_t)(n + 1));
    if (!rm) return tl_fail(err, "out of memory");
    memcpy(rm, m, sizeof *m * (size_t)n);
    m[n] = (tl_chat_msg){TL_ROLE_ASSISTANT, p->chosen};
    rm[n] = (tl_chat_msg){TL_ROLE_ASSISTANT, p->rejected};
    tl_conv c = {.msgs = m, .n = n + 1}, r = {.msgs = rm, .n = n + 1};
    int rc = write_conv(P, fmt, &c, &r, file, line, st, err);
    free(rm);
    return rc;
}

static int chat_file(prep *P, tl_chat_format fmt, int fi, tl_error *err) {
    const in_file *f = &P->files.v[fi];
    tl_prepare_input *st = &P->r->inputs[fi];
    lreader lr;
    memset(&lr, 0, sizeof lr);
    if (tl_prep_stream_open(&lr.s, f, st, err)) { /* an unreadable file is bad input, not a failure of the run */
        snprintf(st->error, sizeof st->error, "%.*s", (int)sizeof st->error - 1, err->msg);
        st->truncated = 1;
        return 0;
    }
    uint64_t line = 0;
    int skipping = 0, rc = 0;
    for (;;) {
        const char *p;
        size_t n;
        int kind = tl_prep_lr_next(&lr, P->o->max_doc_bytes, 0, &p, &n, err);
        if (kind < 0) {
            rc = -1;
            break;
        }
        if (kind == LR_END) break;
        if (skipping) { /* the rest of an over-long line */
            skipping = kind == LR_CUT;
            continue;
        }
        line++;
        if (kind == LR_CUT) {
            st->too_long++;
            skipping = 1;
            if ((rc = bad_line(P, TL_CONV_TOO_LONG, f->path, line, "line over --max-doc-bytes", err))) break;
            continue;
        }
        if (line == 1 && n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3, n -= 3; /* a byte order mark */
        if (kind == LR_LAST && st->truncated) { /* the stream broke off inside this line */
            st->malformed_json++;
            if ((rc = bad_line(P, TL_CONV_MALFORMED, f->path, line, "cut off by the end of a damaged stream", err)))
                break;
            continue;
        }
        size_t b = 0;
        while (b < n && (p[b] == ' ' || p[b] == '\t' || p[b] == '\r')) b++;
        if (b == n) {
            st->blank_lines++;
            continue;
        }
        char why[300];
        int status;
        if (P->o->format == TL_FMT_PREFERENCE) {
            tl_pref pf;
            status = tl_pref_parse(p, n, &pf, why, sizeof why);
            rc = status ? bad_line(P, status, f->path, line, why, err) : write_pair(P, fmt, &pf, f->path, line, st, err);
            tl_pref_free(&pf);
        } else {
            tl_conv c;
            status = tl_conv_parse(p, n, &c, why, sizeof why);
            rc = status ? bad_line(P, status, f->path, line, why, err)
                        : write_conv(P, fmt, &c, NULL, f->path, line, st, err);
            tl_conv_free(&c);
        }
        if (status == TL_CONV_MALFORMED) st->malformed_json++;
        if (rc) break;
        atomic_store(&P->pub_bytes, P->done_bytes + lr.s.file_read);
        tl_prep_progress(P, 0);
    }
    st->raw_bytes = lr.s.produced;
    tl_prep_stream_close(&lr.s);
    free(lr.buf);
    P->done_bytes += f->size;
    return rc;
}

int tl_prep_chat_run(prep *P, tl_error *err) {
    tl_chat_format fmt;
    if (tl_chat_format_choose(P->o->chat_template, NULL, "prepare", &fmt, err)) return -1;
    if (!P->tok) return tl_fail(err, "--format chat needs a --tokenizer (its </s> marks the end of each turn)");
    if (P->eos < 0) return tl_fail(err, "%s: the tokenizer has no EOS id (chat turns end with it)", P->o->tokenizer);
    for (int i = 0; i < P->files.n; i++) {
        atomic_store(&P->pub_file, i);
        if (chat_file(P, fmt, i, err)) return -1;
    }
    return 0;
}

void tl_prep_chat_manifest(const prep *P, cJSON *m) {
    const tl_prepare_chat *c = &P->r->chat;
    cJSON *o = cJSON_AddObjectToObject(m, "chat");
    tl_chat_format fmt = TL_CHAT_ZEPHYR;
    if (P->o->chat_template) fmt = (tl_chat_format)tl_chat_format_parse(P->o->chat_template);
    cJSON_AddStringToObject(o, "template", tl_chat_format_name(fmt));
    cJSON_AddStringToObject(o, "targets", "assistant replies and their end-of-turn marker");
    cJSON_AddStringToObject(o, "packing", "none: one conversation per sample, cut or padded with EOS");
    if (P->o->format == TL_FMT_PREFERENCE) {
        cJSON_AddStringToObject(o, "samples", "pairs: prompt + chosen, then prompt + rejected, seq_len + 1 tokens each");
        cJSON_AddNumberToObject(o, "pair_seq_len", P->o->seq_len);
    }
    cJSON_AddNumberToObject(o, "conversations", (double)c->conversations);
    cJSON_AddNumberToObject(o, "target_tokens", (double)c->target_tokens);
    cJSON_AddNumberToObject(o, "padded_tokens", (double)c->padded_tokens);
    cJSON_AddNumberToObject(o, "truncated", (double)c->truncated);
    cJSON_AddNumberToObject(o, "truncated_tokens", (double)c->truncated_tokens);
    cJSON *bad = cJSON_AddObjectToObject(o, "skipped");
    for (int s = 1; s < TL_CONV_N_STATUS; s++) cJSON_AddNumberToObject(bad, STATUS[s], (double)c->bad[s]);
}

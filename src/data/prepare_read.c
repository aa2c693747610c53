/* prepare_read.c - prepare's batches (prepare.c): reading input lines into
 * records (serial) and parsing records into text segments (parallel). */
#include "prepare_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ records */


static int arena_put(batch *b, const char *p, size_t n, tl_error *err) {
    if (!n) return 0; /* the arena may not exist yet: no NULL + 0 (found by fuzz/prepare_input) */
    if (b->arena_len + n > b->arena_cap) {
        size_t cap = b->arena_cap ? b->arena_cap : ((size_t)1 << 22);
        while (cap < b->arena_len + n) cap *= 2;
        char *a = realloc(b->arena, cap);
        if (!a) return tl_fail(err, "out of memory");
        b->arena = a;
        b->arena_cap = cap;
    }
    memcpy(b->arena + b->arena_len, p, n);
    b->arena_len += n;
    return 0;
}

static record *rec_new(batch *b, int kind, int input, tl_error *err) {
    if (b->n_recs == b->recs_cap) {
        size_t cap = b->recs_cap ? 2 * b->recs_cap : 4096;
        record *r = realloc(b->recs, sizeof *r * cap);
        if (!r) {
            tl_fail(err, "out of memory");
            return NULL;
        }
        b->recs = r;
        b->recs_cap = cap;
    }
    record *r = &b->recs[b->n_recs++];
    memset(r, 0, sizeof *r);
    r->kind = (unsigned char)kind;
    r->input = input;
    r->off = b->arena_len;
    return r;
}

void tl_prep_batch_reset(batch *b) {
    for (size_t i = 0; i < b->n_recs; i++) {
        record *r = &b->recs[i];
        for (int k = 0; k < r->nseg; k++) free(r->segs[k].owned);
        free(r->segs);
        free(r->text);
    }
    for (size_t i = 0; i < b->n_segs; i++) free(b->ids[i]);
    b->n_recs = 0;
    b->arena_len = 0;
    b->n_segs = 0;
}

void tl_prep_batch_free(batch *b) {
    tl_prep_batch_reset(b);
    free(b->arena);
    free(b->recs);
    free(b->texts);
    free(b->lens);
    free(b->ids);
    free(b->nids);
    memset(b, 0, sizeof *b);
}


/* ------------------------------------------------------------------ reading */

static int is_blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\f' && p[i] != '\v') return 0;
    return 1;
}

static int open_next_file(prep *P, tl_error *err) {
    in_file *f = &P->files.v[P->cur];
    tl_prepare_input *st = &P->r->inputs[P->cur];
    memset(&P->lr, 0, sizeof P->lr);
    if (tl_prep_stream_open(&P->lr.s, f, st, err)) {
        /* an unreadable file is bad input, not a failure of the run */
        size_t l = strnlen(err->msg, sizeof st->error - 1);
        memcpy(st->error, err->msg, l);
        st->error[l] = 0;
        st->truncated = 1;
        P->lr.eof = 1;
        P->lr.s.done = 1;
    }
    P->cur_open = 1;
    P->skipping = P->in_line = P->doc_open = P->pending_nl = P->next_cont = 0;
    P->first_piece = 1;
    P->open_rec = 0;
    return 0;
}

static void close_file(prep *P) {
    in_file *f = &P->files.v[P->cur];
    tl_prepare_input *st = &P->r->inputs[P->cur];
    st->raw_bytes = P->lr.s.produced;
    tl_prep_stream_close(&P->lr.s);
    free(P->lr.buf);
    memset(&P->lr, 0, sizeof P->lr);
    P->done_bytes += f->size;
    P->cur_open = 0;
    P->cur++;
}

/* txt: ends the record being built; the next one continues the document. */
static void txt_close_record(prep *P, batch *b, int doc_end) {
    if (!P->open_rec) return;
    record *r = &b->recs[P->open_idx];
    r->len = b->arena_len - r->off;
    r->doc_end = (unsigned char)doc_end;
    P->open_rec = 0;
}

static int txt_append(prep *P, batch *b, int input, const char *p, size_t n, tl_error *err) {
    if (!P->open_rec) {
        record *r = rec_new(b, REC_TEXT, input, err);
        if (!r) return -1;
        r->doc_start = (unsigned char)!P->doc_open;
        r->cont = (unsigned char)P->next_cont;
        P->open_rec = 1;
        P->open_idx = b->n_recs - 1;
        P->doc_open = 1;
        if (P->next_cont && arena_put(b, "\n", 1, err)) return -1;
    }
    return arena_put(b, p, n, err);
}

/* txt: the current document ends (its last record may already be packed: then
 * an empty record carries the end). */
static int txt_end_doc(prep *P, batch *b, int input, tl_error *err) {
    if (P->open_rec) {
        txt_close_record(P, b, 1);
    } else {
        record *r = rec_new(b, REC_TEXT, input, err);
        if (!r) return -1;
        r->doc_end = 1;
    }
    P->doc_open = P->pending_nl = P->next_cont = 0;
    return 0;
}

/* txt: a record may end at any line boundary: in file mode it ends with the
 * line's newline, in paragraph mode the separating newline is still pending;
 * either way the next record starts with a newline whose ids are stripped. */
static void txt_cut_record(prep *P, batch *b) {
    txt_close_record(P, b, 0);
    P->next_cont = 1;
}

/* Reads records into b until it holds about batch_bytes or the inputs end. */
static int fill_batch(prep *P, batch *b, size_t budget, tl_error *err) {
    const tl_prepare_opts *o = P->o;
    while (P->cur < P->files.n) {
        if (!P->cur_open && open_next_file(P, err)) return -1;
        in_file *f = &P->files.v[P->cur];
        tl_prepare_input *st = &P->r->inputs[P->cur];
        int input = P->cur;
        for (;;) {
            if (b->arena_len >= budget) {
                /* a txt record in progress is closed at a line boundary (exact) */
                if (P->open_rec && !P->in_line) txt_cut_record(P, b);
                if (!P->open_rec) return 0;
            }
            const char *p;
            size_t n;
            int kind;
            if (f->format == TL_FMT_JSONL) {
                kind = tl_prep_lr_next(&P->lr, o->max_doc_bytes, 0, &p, &n, err);
                if (kind < 0) return -1;
                if (kind == LR_END) break;
                int at_start = P->first_piece;
                P->first_piece = 0;
                if (P->skipping) {
                    if (kind != LR_CUT) P->skipping = 0;
                    continue;
                }
                if (kind == LR_CUT) {
                    st->too_long++;
                    P->skipping = 1;
                    continue;
                }
                if (at_start && n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) {
                    p += 3; /* a UTF-8 byte order mark before the first line */
                    n -= 3;
                }
                if (kind == LR_LAST && st->truncated) {
                    /* the stream broke off: the unterminated last line is incomplete */
                    st->malformed_json++;
                    continue;
                }
                if (is_blank(p, n)) {
                    st->blank_lines++;
                    continue;
                }
                record *r = rec_new(b, REC_JSON, input, err);
                if (!r || arena_put(b, p, n, err)) return -1;
                r->len = n;
                r->doc_start = r->doc_end = 1;
                continue;
            }
            /* plain text */
            kind = tl_prep_lr_next(&P->lr, P->seg_max, 1, &p, &n, err);
            if (kind < 0) return -1;
            if (kind == LR_END) break;
            int whole_line = !P->in_line;
            P->in_line = kind == LR_CUT;
            if (o->txt_mode == TL_TXT_PARAGRAPHS) {
                if (whole_line && kind != LR_CUT && is_blank(p, n)) {
                    if (P->doc_open && txt_end_doc(P, b, input, err)) return -1;
                    continue;
                }
                if (P->pending_nl && txt_append(P, b, input, "\n", 1, err)) return -1;
                if (txt_append(P, b, input, p, n, err)) return -1;
                P->pending_nl = kind != LR_CUT;
            } else {
                if (txt_append(P, b, input, p, n, err)) return -1;
                if (kind == LR_LINE && txt_append(P, b, input, "\n", 1, err)) return -1;
            }
            if (kind == LR_CUT) {
                /* a line longer than the segment limit: cut it (a forced split) */
                txt_cut_record(P, b);
                st->forced_splits++;
            } else if (P->open_rec && b->arena_len - b->recs[P->open_idx].off >= P->rec_target) {
                txt_cut_record(P, b); /* a long document: several records */
            }
        }
        /* end of the file */
        if (f->format == TL_FMT_TXT) {
            if (P->doc_open) {
                if (txt_end_doc(P, b, input, err)) return -1;
            } else if (o->txt_mode == TL_TXT_FILE) {
                st->empty++;
            }
        }
        close_file(P);
    }
    return 0;
}

/* fill_batch, then publishes how far the reader got (for progress lines). */
int tl_prep_read_batch(prep *P, batch *b, size_t budget, tl_error *err) {
    int rc = fill_batch(P, b, budget, err);
    atomic_store(&P->pub_bytes, P->done_bytes + (P->cur_open ? P->lr.s.file_read : 0));
    atomic_store(&P->pub_file, P->cur);
    return rc;
}

/* ------------------------------------------------------------------ parsing */

static const cJSON *json_path(const cJSON *obj, const char *path) {
    char key[256];
    while (obj && *path) {
        const char *dot = strchr(path, '.');
        size_t l = dot ? (size_t)(dot - path) : strlen(path);
        if (l >= sizeof key) return NULL;
        memcpy(key, path, l);
        key[l] = 0;
        if (!cJSON_IsObject(obj)) return NULL;
        obj = cJSON_GetObjectItemCaseSensitive(obj, key);
        path += l + (dot ? 1 : 0);
    }
    return obj;
}

static int seg_push(record *r, size_t *cap, const char *p, size_t len, int strip, char *owned) {
    if ((size_t)r->nseg == *cap) {
        size_t c = *cap ? 2 * *cap : 4;
        segment *s = realloc(r->segs, sizeof *s * c);
        if (!s) return -1;
        r->segs = s;
        *cap = c;
    }
    segment *s = &r->segs[r->nseg++];
    memset(s, 0, sizeof *s);
    s->p = p;
    s->len = len;
    s->strip = strip;
    s->owned = owned;
    return 0;
}

/* Cuts t[0..n) into segments of about seg_target bytes at newlines (see the top of prepare.c). */
static int segment_text(const prep *P, record *r, const char *t, size_t n, int cont) {
    size_t cap = 0, pos = 0;
    enum { K_NONE, K_NL, K_SYNTH } kind = cont ? K_NL : K_NONE;
    for (;;) {
        size_t body = kind == K_NL ? pos + 1 : pos;
        size_t rem = n - body, end, next = 0;
        int next_kind = -1;
        if (rem <= P->seg_target) {
            end = n;
        } else {
            const char *q = memrchr(t + body, '\n', P->seg_target);
            if (q && (size_t)(q - t) + 1 < n) {
                end = (size_t)(q - t) + 1;
            } else {
                size_t lim = body + P->seg_max + 1 < n - 1 ? body + P->seg_max + 1 : n - 1;
                q = lim > body + P->seg_target ? memchr(t + body + P->seg_target, '\n', lim - body - P->seg_target) : NULL;
                if (q) end = (size_t)(q - t) + 1;
                else if (rem <= P->seg_max) end = n;
                else {
                    end = tl_prep_utf8_cut((const unsigned char *)t, body + P->seg_max);
                    if (end <= body) end = body + P->seg_max;
                    next = end;
                    next_kind = K_SYNTH;
                    r->forced++;
                }
            }
            if (next_kind < 0 && end < n) {
                next = end - 1;
                next_kind = K_NL;
            }
        }
        int rc;
        if (kind == K_SYNTH) {
            char *c = malloc(end - pos + 1);
            if (!c) return -1;
            c[0] = '\n';
            memcpy(c + 1, t + pos, end - pos);
            rc = seg_push(r, &cap, c, end - pos + 1, 1, c);
            if (rc) free(c);
        } else {
            rc = seg_push(r, &cap, t + pos, end - pos, kind == K_NL, NULL);
        }
        if (rc) return -1;
        if (next_kind < 0) return 0;
        pos = next;
        kind = next_kind;
    }
}

/* Parses one record; returns -1 only when out of memory. */
int tl_prep_parse_record(const prep *P, const batch *b, record *r) {
    const char *raw = b->arena + r->off;
    const char *text = raw;
    size_t len = r->len;
    cJSON *root = NULL;
    if (r->kind == REC_JSON) {
        const char *end = NULL;
        root = cJSON_ParseWithLengthOpts(raw, r->len, &end, 0);
        if (root && end) /* only white space may follow the object */
            while (end < raw + r->len && strchr(" \t\r", *end)) end++;
        if (!root || !cJSON_IsObject(root) || !end || end != raw + r->len) {
            cJSON_Delete(root);
            r->status = ST_MALFORMED;
            return 0;
        }
        for (int i = 0; i < P->o->n_exclude; i++) {
            const char *eq = strchr(P->o->exclude[i], '=');
            char key[256];
            size_t kl = (size_t)(eq - P->o->exclude[i]);
            if (kl >= sizeof key) continue;
            memcpy(key, P->o->exclude[i], kl);
            key[kl] = 0;
            const cJSON *v = json_path(root, key);
            if (cJSON_IsString(v) && !strcmp(v->valuestring, eq + 1)) {
                cJSON_Delete(root);
                r->status = ST_FILTERED;
                return 0;
            }
        }
        cJSON *tf = (cJSON *)json_path(root, P->o->text_field);
        if (!cJSON_IsString(tf) || !tf->valuestring) {
            cJSON_Delete(root);
            r->status = ST_MISSING;
            return 0;
        }
        /* take the decoded string over from cJSON */
        r->text = tf->valuestring;
        tf->valuestring = NULL;
        cJSON_Delete(root);
        text = r->text;
        len = strlen(text);
        if (len == 0) {
            r->status = ST_EMPTY;
            return 0;
        }
    }
    char *fixed;
    size_t flen;
    /* a continuation record starts with the previous record's newline: not text of its own */
    r->bad_utf8 = tl_utf8_repair(text, len, &fixed, &flen);
    if (r->bad_utf8) {
        if (!fixed) return -1;
        free(r->text);
        r->text = fixed;
        text = fixed;
        len = flen;
    }
    r->text_len = len - (r->cont ? 1 : 0);
    if (len == 0 || (r->cont && len == 1)) return 0; /* nothing to encode (end-of-document marker) */
    return segment_text(P, r, text, len, r->cont);
}

/* sentencepiece_model.c - a minimal protobuf reader/writer for SentencePiece's
 * ModelProto (sentencepiece_model.proto).
 *
 * Only the fields that change encoding or decoding are kept; every other field
 * is skipped the way protobuf skips unknown fields (by wire type), including
 * groups.  A known field sent with an unexpected wire type is treated as unknown,
 * as protobuf does.  Every length is checked against the bytes that remain. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef struct {
    const unsigned char *p, *end;
} pb_reader;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* Each returns 0 on success, -1 on malformed input. */
static int pb_varint(pb_reader *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char c = *r->p++;
        if (shift == 63 && (c & 0x7e)) return -1; /* more than 64 bits */
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static int pb_tag(pb_reader *r, uint32_t *field, int *wt) {
    uint64_t k;
    if (pb_varint(r, &k)) return -1;
    if (k > 0xffffffffu) return -1;
    *field = (uint32_t)(k >> 3);
    *wt = (int)(k & 7);
    if (*field == 0) return -1;
    return 0;
}

static int pb_len(pb_reader *r, const unsigned char **data, size_t *len) {
    uint64_t l;
    if (pb_varint(r, &l)) return -1;
    if (l > (uint64_t)(r->end - r->p)) return -1;
    *data = r->p;
    *len = (size_t)l;
    r->p += l;
    return 0;
}

static int pb_fixed32(pb_reader *r, uint32_t *v) {
    if (r->end - r->p < 4) return -1;
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
         (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

/* Skips one field's value (the tag already read).  Groups nest; depth bounded. */
static int pb_skip(pb_reader *r, uint32_t field, int wt, int depth) {
    uint64_t v;
    const unsigned char *d;
    size_t l;
    switch (wt) {
    case WT_VARINT: return pb_varint(r, &v);
    case WT_I64:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 0;
    case WT_LEN: return pb_len(r, &d, &l);
    case WT_I32:
        if (r->end - r->p < 4) return -1;
        r->p += 4;
        return 0;
    case WT_SGROUP:
        if (depth > 64) return -1;
        for (;;) {
            uint32_t f2;
            int wt2;
            if (pb_tag(r, &f2, &wt2)) return -1;
            if (wt2 == WT_EGROUP) return f2 == field ? 0 : -1;
            if (pb_skip(r, f2, wt2, depth + 1)) return -1;
        }
    default: return -1; /* stray end-group or wire types 6/7 */
    }
}

/* ---- the messages ---- */

typedef struct {
    const unsigned char *str;
    size_t len;
    float score;
    int type;
} raw_piece;

typedef struct {
    raw_piece *pieces;
    int n, cap;
    /* trainer spec */
    int model_type, vocab_size, byte_fallback, split_digits, treat_ws_as_suffix;
    int unk_id, bos_id, eos_id, pad_id;
    const unsigned char *unk_piece, *bos_piece, *eos_piece, *pad_piece, *unk_surface;
    size_t unk_piece_len, bos_piece_len, eos_piece_len, pad_piece_len, unk_surface_len;
    int has_unk_surface;
    /* normalizer spec */
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    const unsigned char *norm_name;
    size_t norm_name_len;
    size_t charsmap_len;
    int has_denormalizer_charsmap;
} raw_model;

static int parse_piece(const unsigned char *d, size_t l, raw_piece *out) {
    pb_reader r = {d, d + l};
    out->str = (const unsigned char *)"";
    out->len = 0;
    out->score = 0.0f;
    out->type = TL_PIECE_NORMAL;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (pb_tag(&r, &f, &wt)) return -1;
        if (f == 1 && wt == WT_LEN) {
            if (pb_len(&r, &out->str, &out->len)) return -1;
        } else if (f == 2 && wt == WT_I32) {
            uint32_t bits;
            if (pb_fixed32(&r, &bits)) return -1;
            memcpy(&out->score, &bits, 4);
        } else if (f == 3 && wt == WT_VARINT) {
            uint64_t v;
            if (pb_varint(&r, &v)) return -1;
            /* proto2: an unknown enum value is kept as an unknown field, so the
             * type stays at its default (NORMAL). */
            if (v >= 1 && v <= 6) out->type = (int)v;
        } else if (pb_skip(&r, f, wt, 0)) {
            return -1;
        }
    }
    return 0;
}

static int parse_bool_or_int(pb_reader *r, int64_t *v) {
    uint64_t u;
    if (pb_varint(r, &u)) return -1;
    *v = (int64_t)u;
    return 0;
}

static int parse_trainer(const unsigned char *d, size_t l, raw_model *m) {
    pb_reader r = {d, d + l};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (pb_tag(&r, &f, &wt)) return -1;
        int64_t v;
        if (wt == WT_VARINT &&
            (f == 3 || f == 4 || f == 24 || f == 25 || f == 35 || (f >= 40 && f <= 43))) {
            if (parse_bool_or_int(&r, &v)) return -1;
            int32_t i32 = (int32_t)(uint32_t)(uint64_t)v; /* int32 fields: low 32 bits */
            switch (f) {
            case 3:
                if (v >= 1 && v <= 4) m->model_type = (int)v;
                break;
            case 4: m->vocab_size = i32; break;
            case 24: m->treat_ws_as_suffix = v != 0; break;
            case 25: m->split_digits = v != 0; break;
            case 35: m->byte_fallback = v != 0; break;
            case 40: m->unk_id = i32; break;
            case 41: m->bos_id = i32; break;
            case 42: m->eos_id = i32; break;
            case 43: m->pad_id = i32; break;
            }
        } else if (wt == WT_LEN && f >= 44 && f <= 48) {
            const unsigned char *s;
            size_t sl;
            if (pb_len(&r, &s, &sl)) return -1;
            switch (f) {
            case 44:
                m->unk_surface = s;
                m->unk_surface_len = sl;
                m->has_unk_surface = 1;
                break;
            case 45: m->unk_piece = s; m->unk_piece_len = sl; break;
            case 46: m->bos_piece = s; m->bos_piece_len = sl; break;
            case 47: m->eos_piece = s; m->eos_piece_len = sl; break;
            case 48: m->pad_piece = s; m->pad_piece_len = sl; break;
            }
        } else if (pb_skip(&r, f, wt, 0)) {
            return -1;
        }
    }
    return 0;
}

static int parse_normalizer(const unsigned char *d, size_t l, raw_model *m, int is_denorm) {
    pb_reader r = {d, d + l};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (pb_tag(&r, &f, &wt)) return -1;
        if (wt == WT_VARINT && f >= 3 && f <= 5) {
            int64_t v;
            if (parse_bool_or_int(&r, &v)) return -1;
            if (is_denorm) continue;
            if (f == 3) m->add_dummy_prefix = v != 0;
            else if (f == 4) m->remove_extra_ws = v != 0;
            else m->escape_ws = v != 0;
        } else if (wt == WT_LEN && (f == 1 || f == 2)) {
            const unsigned char *s;
            size_t sl;
            if (pb_len(&r, &s, &sl)) return -1;
            if (f == 1 && !is_denorm) {
                m->norm_name = s;
                m->norm_name_len = sl;
            } else if (f == 2) {
                if (is_denorm) m->has_denormalizer_charsmap = sl > 0;
                else m->charsmap_len = sl;
            }
        } else if (pb_skip(&r, f, wt, 0)) {
            return -1;
        }
    }
    return 0;
}

static int parse_model(const unsigned char *d, size_t l, raw_model *m, const char *what,
                       tl_error *err) {
    pb_reader r = {d, d + l};
    while (r.p < r.end) {
        size_t at = (size_t)(r.p - d);
        uint32_t f;
        int wt;
        if (pb_tag(&r, &f, &wt)) return tl_fail(err, "%s: malformed protobuf tag at byte %zu", what, at);
        if (wt == WT_LEN && (f == 1 || f == 2 || f == 3 || f == 5)) {
            const unsigned char *s;
            size_t sl;
            if (pb_len(&r, &s, &sl))
                return tl_fail(err, "%s: field %u at byte %zu: length runs past the end of the file",
                               what, f, at);
            if (f == 1) {
                if (m->n == m->cap) {
                    if (m->cap >= (1 << 24))
                        return tl_fail(err, "%s: more than %d pieces", what, 1 << 24);
                    int nc = m->cap ? m->cap * 2 : 1024;
                    raw_piece *np = realloc(m->pieces, (size_t)nc * sizeof *np);
                    if (!np) return tl_fail(err, "%s: out of memory", what);
                    m->pieces = np;
                    m->cap = nc;
                }
                if (parse_piece(s, sl, &m->pieces[m->n]))
                    return tl_fail(err, "%s: piece %d (byte %zu) is malformed", what, m->n, at);
                m->n++;
            } else if (f == 2) {
                if (parse_trainer(s, sl, m))
                    return tl_fail(err, "%s: trainer_spec (byte %zu) is malformed", what, at);
            } else if (f == 3 || f == 5) {
                if (parse_normalizer(s, sl, m, f == 5))
                    return tl_fail(err, "%s: %snormalizer_spec (byte %zu) is malformed", what,
                                   f == 5 ? "de" : "", at);
            }
        } else if (pb_skip(&r, f, wt, 0)) {
            return tl_fail(err, "%s: malformed or truncated field %u at byte %zu", what, f, at);
        }
    }
    return 0;
}

tl_tokenizer *tl_tokenizer_load_model_bytes(const void *data, size_t len, const char *what,
                                            tl_error *err) {
    raw_model m;
    memset(&m, 0, sizeof m);
    m.model_type = 1; /* proto default: UNIGRAM */
    m.vocab_size = 8000;
    m.unk_id = 0;
    m.bos_id = 1;
    m.eos_id = 2;
    m.pad_id = -1;
    m.add_dummy_prefix = m.remove_extra_ws = m.escape_ws = 1;
    m.unk_piece = (const unsigned char *)"<unk>";
    m.unk_piece_len = 5;
    m.bos_piece = (const unsigned char *)"<s>";
    m.bos_piece_len = 3;
    m.eos_piece = (const unsigned char *)"</s>";
    m.eos_piece_len = 4;
    m.pad_piece = (const unsigned char *)"<pad>";
    m.pad_piece_len = 5;

    tl_tokenizer *t = NULL;
    tl_piece_src *src = NULL;
    if (parse_model(data, len, &m, what, err)) goto fail;
    if (m.n == 0) {
        tl_fail(err, "%s: no pieces: not a SentencePiece model file", what);
        goto fail;
    }
    if (m.model_type != 2) {
        static const char *const names[] = {"?", "unigram", "bpe", "word", "char"};
        tl_fail(err, "%s: model type '%s' is not supported (only BPE SentencePiece models are)",
                what, names[m.model_type]);
        goto fail;
    }
    if (m.treat_ws_as_suffix) {
        tl_fail(err, "%s: treat_whitespace_as_suffix is not supported", what);
        goto fail;
    }
    if (m.charsmap_len > 0) {
        tl_fail(err,
                "%s: normalizer '%.*s' with a precompiled character map is not supported "
                "(train with --normalization_rule_name=identity)",
                what, (int)(m.norm_name_len > 40 ? 40 : m.norm_name_len), (const char *)m.norm_name);
        goto fail;
    }
    if (m.has_denormalizer_charsmap) {
        tl_fail(err, "%s: a denormalizer is not supported", what);
        goto fail;
    }

    t = calloc(1, sizeof *t);
    src = malloc((size_t)m.n * sizeof *src);
    if (!t || !src) {
        tl_fail(err, "%s: out of memory", what);
        goto fail;
    }
    for (int i = 0; i < m.n; i++) {
        src[i].str = (const char *)m.pieces[i].str;
        src[i].len = m.pieces[i].len;
        src[i].score = m.pieces[i].score;
        src[i].type = m.pieces[i].type;
    }
    t->model_type = m.model_type;
    t->byte_fallback = m.byte_fallback;
    t->split_digits = m.split_digits;
    t->add_dummy_prefix = m.add_dummy_prefix;
    t->remove_extra_ws = m.remove_extra_ws;
    t->escape_ws = m.escape_ws;
    snprintf(t->normalizer_name, sizeof t->normalizer_name, "%.*s",
             (int)(m.norm_name_len > 60 ? 60 : m.norm_name_len),
             m.norm_name ? (const char *)m.norm_name : "");
    if (m.has_unk_surface) {
        if (m.unk_surface_len >= sizeof t->unk_surface) {
            tl_fail(err, "%s: unk_surface is too long", what);
            goto fail;
        }
        memcpy(t->unk_surface, m.unk_surface, m.unk_surface_len);
    } else {
        strcpy(t->unk_surface, " \xE2\x81\x87 ");
    }
    if (tl_tok_finish(t, src, m.n, what, err)) goto fail;

    /* Special ids are found the way SentencePieceProcessor does: by piece name,
     * and only if that piece has the expected type. */
    int id;
    id = tl_tokenizer_piece_id(t, (const char *)m.bos_piece, m.bos_piece_len);
    t->bos_id = id >= 0 && t->pieces[id].type == TL_PIECE_CONTROL ? id : -1;
    id = tl_tokenizer_piece_id(t, (const char *)m.eos_piece, m.eos_piece_len);
    t->eos_id = id >= 0 && t->pieces[id].type == TL_PIECE_CONTROL ? id : -1;
    id = tl_tokenizer_piece_id(t, (const char *)m.pad_piece, m.pad_piece_len);
    t->pad_id = id >= 0 && t->pieces[id].type == TL_PIECE_CONTROL ? id : -1;
    tl_tok_set_hash(t, data, len);
    free(m.pieces);
    free(src);
    return t;
fail:
    free(m.pieces);
    free(src);
    tl_tokenizer_free(t);
    return NULL;
}

/* ---- writer ---- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    int oom;
} pb_writer;

static void pw_bytes(pb_writer *w, const void *d, size_t l) {
    if (w->oom) return;
    if (w->len + l > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->len + l) nc *= 2;
        unsigned char *nb = realloc(w->buf, nc);
        if (!nb) {
            w->oom = 1;
            return;
        }
        w->buf = nb;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, d, l);
    w->len += l;
}

static void pw_varint(pb_writer *w, uint64_t v) {
    unsigned char b[10];
    int n = 0;
    do {
        b[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    pw_bytes(w, b, (size_t)n);
}

static void pw_tag(pb_writer *w, uint32_t f, int wt) { pw_varint(w, (uint64_t)f << 3 | (uint64_t)wt); }
static void pw_int(pb_writer *w, uint32_t f, int64_t v) {
    pw_tag(w, f, WT_VARINT);
    pw_varint(w, (uint64_t)v); /* negative int32 -> 10-byte varint, as protobuf does */
}
static void pw_str(pb_writer *w, uint32_t f, const void *s, size_t l) {
    pw_tag(w, f, WT_LEN);
    pw_varint(w, l);
    pw_bytes(w, s, l);
}
static void pw_float(pb_writer *w, uint32_t f, float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    unsigned char b[4] = {(unsigned char)bits, (unsigned char)(bits >> 8),
                          (unsigned char)(bits >> 16), (unsigned char)(bits >> 24)};
    pw_tag(w, f, WT_I32);
    pw_bytes(w, b, 4);
}
static void pw_sub(pb_writer *w, uint32_t f, pb_writer *sub) {
    if (sub->oom) w->oom = 1;
    pw_str(w, f, sub->buf, sub->len);
    free(sub->buf);
}

int tl_spm_serialize(const tl_piece_src *pieces, int n, const tl_spm_write_opts *o,
                     unsigned char **out, size_t *out_len, tl_error *err) {
    pb_writer w = {0}, tmp;
    for (int i = 0; i < n; i++) {
        memset(&tmp, 0, sizeof tmp);
        pw_str(&tmp, 1, pieces[i].str, pieces[i].len);
        pw_float(&tmp, 2, pieces[i].score);
        if (pieces[i].type != TL_PIECE_NORMAL) pw_int(&tmp, 3, pieces[i].type);
        pw_sub(&w, 1, &tmp);
    }
    memset(&tmp, 0, sizeof tmp);
    pw_int(&tmp, 3, 2); /* model_type BPE */
    pw_int(&tmp, 4, o->vocab_size);
    pw_tag(&tmp, 10, WT_I32);
    {
        float cc = (float)o->character_coverage;
        uint32_t bits;
        memcpy(&bits, &cc, 4);
        unsigned char b[4] = {(unsigned char)bits, (unsigned char)(bits >> 8),
                              (unsigned char)(bits >> 16), (unsigned char)(bits >> 24)};
        pw_bytes(&tmp, b, 4);
    }
    pw_int(&tmp, 20, o->max_piece_length);
    pw_int(&tmp, 25, o->split_digits);
    pw_int(&tmp, 26, o->allow_whitespace_only_pieces);
    pw_int(&tmp, 35, o->byte_fallback);
    pw_int(&tmp, 40, 0);
    pw_int(&tmp, 41, 1);
    pw_int(&tmp, 42, 2);
    pw_int(&tmp, 43, -1);
    pw_sub(&w, 2, &tmp);
    memset(&tmp, 0, sizeof tmp);
    pw_str(&tmp, 1, "identity", 8);
    pw_int(&tmp, 3, o->add_dummy_prefix);
    pw_int(&tmp, 4, 0);
    pw_int(&tmp, 5, 1);
    pw_sub(&w, 3, &tmp);
    if (w.oom) {
        free(w.buf);
        return tl_fail(err, "out of memory serializing the model");
    }
    *out = w.buf;
    *out_len = w.len;
    return 0;
}

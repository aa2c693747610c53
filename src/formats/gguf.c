/* gguf.c - the GGUF reader: header, metadata, tensor infos, checked in full at
 * open time (see gguf.h).  Layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims,
 *   u64 ne[n_dims], u32 ggml type, u64 offset), padding to general.alignment
 *   (default 32), tensor data.  A string is u64 length + bytes; an array is
 *   u32 element type + u64 count + elements. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DEPTH 8 /* arrays of arrays: deeper nesting is refused, not recursed into */

struct tl_gguf {
    char *what;
    const uint8_t *map;
    size_t len;
    int mapped;
    uint32_t version, alignment;
    uint64_t data_off;
    tl_gguf_kv *kv;
    size_t n_kv;
    tl_gguf_tensor *tensors;
    size_t n_tensors;
    /* name -> index + 1 (0: empty), open addressing */
    uint32_t *kv_slots, *t_slots;
    size_t kv_mask, t_mask;
};

/* ---------------------------------------------------------------- helpers */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static const char *const vtype_names[TL_GGUF_NTYPES] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

const char *tl_gguf_type_name(uint32_t type) { return type < TL_GGUF_NTYPES ? vtype_names[type] : "?"; }

static size_t scalar_size(uint32_t type) {
    switch (type) {
    case TL_GGUF_UINT8: case TL_GGUF_INT8: case TL_GGUF_BOOL: return 1;
    case TL_GGUF_UINT16: case TL_GGUF_INT16: return 2;
    case TL_GGUF_UINT32: case TL_GGUF_INT32: case TL_GGUF_FLOAT32: return 4;
    case TL_GGUF_UINT64: case TL_GGUF_INT64: case TL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

int tl_gguf_type_is_int(uint32_t type) {
    return type <= TL_GGUF_INT32 || type == TL_GGUF_UINT64 || type == TL_GGUF_INT64;
}


/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Returns the byte offset of the first bad sequence, or len if all is well. */
static size_t utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= (size_t)n) return i;
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += (size_t)n + 1;
    }
    return len;
}

static uint64_t name_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static const tl_gguf_str *kv_name(const tl_gguf *g, size_t i) { return &g->kv[i].key; }
static const tl_gguf_str *t_name(const tl_gguf *g, size_t i) { return &g->tensors[i].name; }

/* Slot of name in the table (its index + 1), or the empty slot where it would go. */
static size_t slot_find(const tl_gguf *g, const uint32_t *slots, size_t mask,
                        const tl_gguf_str *(*get)(const tl_gguf *, size_t), const char *s, size_t len) {
    size_t h = (size_t)name_hash(s, len) & mask;
    while (slots[h]) {
        const tl_gguf_str *o = get(g, slots[h] - 1);
        if (o->len == len && !memcmp(o->ptr, s, len)) return h;
        h = (h + 1) & mask;
    }
    return h;
}

/* Builds the lookup table for n names; on a duplicate, *dup is the later index. */
static int table_build(tl_gguf *g, size_t n, const tl_gguf_str *(*get)(const tl_gguf *, size_t),
                       uint32_t **slots, size_t *mask, size_t *dup) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    *slots = calloc(cap, sizeof **slots);
    if (!*slots) return -1;
    *mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const tl_gguf_str *s = get(g, i);
        size_t h = slot_find(g, *slots, *mask, get, s->ptr, s->len);
        if ((*slots)[h]) {
            *dup = i;
            return -2;
        }
        (*slots)[h] = (uint32_t)(i + 1);
    }
    return 0;
}

/* ---------------------------------------------------------------- parsing */

typedef struct {
    const uint8_t *base, *p, *end;
    const char *what;
    tl_error *err;
} reader;

static size_t left(const reader *r) { return (size_t)(r->end - r->p); }
static size_t at(const reader *r) { return (size_t)(r->p - r->base); }

/* A field name for messages: "key 'general.name'" etc., printed with %s. */
typedef struct {
    char s[160];
} fieldname;

static void field_of(fieldname *f, const char *kind, const tl_gguf_str *name, size_t idx) {
    if (name && name->ptr)
        snprintf(f->s, sizeof f->s, "%s '%.*s'", kind, (int)(name->len > 100 ? 100 : name->len), name->ptr);
    else snprintf(f->s, sizeof f->s, "%s %zu", kind, idx);
}

static int read_u32(reader *r, uint32_t *v, const char *field, const char *part) {
    if (left(r) < 4)
        return tl_fail(r->err, "%s: %s: %s at byte %zu runs past the end of the file (%zu bytes)", r->what, field,
                       part, at(r), (size_t)(r->end - r->base));
    *v = rd32(r->p);
    r->p += 4;
    return 0;
}

static int read_u64(reader *r, uint64_t *v, const char *field, const char *part) {
    if (left(r) < 8)
        return tl_fail(r->err, "%s: %s: %s at byte %zu runs past the end of the file (%zu bytes)", r->what, field,
                       part, at(r), (size_t)(r->end - r->base));
    *v = rd64(r->p);
    r->p += 8;
    return 0;
}

/* A string: length, then that many bytes of UTF-8. */
static int read_str(reader *r, tl_gguf_str *s, const char *field, const char *part) {
    uint64_t n;
    size_t start = at(r);
    if (read_u64(r, &n, field, part)) return -1;
    if (n > left(r))
        return tl_fail(r->err, "%s: %s: %s at byte %zu has length %llu, more than the %zu bytes left in the file",
                       r->what, field, part, start, (unsigned long long)n, left(r));
    size_t bad = utf8_check(r->p, (size_t)n);
    if (bad != n)
        return tl_fail(r->err, "%s: %s: %s at byte %zu is not valid UTF-8 (byte %zu of the string)", r->what, field,
                       part, start, bad);
    s->ptr = (const char *)r->p;
    s->len = (size_t)n;
    r->p += n;
    return 0;
}

static int read_value(reader *r, uint32_t type, int depth, tl_gguf_value *v, const char *field) {
    memset(v, 0, sizeof *v);
    v->type = type;
    const uint8_t *start = r->p;
    size_t sz = scalar_size(type);
    if (sz) {
        if (left(r) < sz)
            return tl_fail(r->err, "%s: %s: %s value at byte %zu runs past the end of the file", r->what, field,
                           tl_gguf_type_name(type), at(r));
        if (type == TL_GGUF_BOOL && *r->p > 1)
            return tl_fail(r->err, "%s: %s: BOOL value %u is neither 0 nor 1", r->what, field, *r->p);
        v->data = r->p;
        r->p += sz;
    } else if (type == TL_GGUF_STRING) {
        if (read_str(r, &v->str, field, "string value")) return -1;
        v->data = start;
    } else if (type == TL_GGUF_ARRAY) {
        if (depth >= GGUF_MAX_DEPTH)
            return tl_fail(r->err, "%s: %s: arrays nested more than %d deep", r->what, field, GGUF_MAX_DEPTH);
        uint32_t et = 0;
        uint64_t n = 0;
        if (read_u32(r, &et, field, "array element type") || read_u64(r, &n, field, "array length")) return -1;
        if (et >= TL_GGUF_NTYPES)
            return tl_fail(r->err, "%s: %s: unknown array element type %u", r->what, field, et);
        /* every element takes at least this many bytes: refuse impossible counts before looping */
        size_t min = scalar_size(et) ? scalar_size(et) : et == TL_GGUF_STRING ? 8 : 12;
        if (n > left(r) / min)
            return tl_fail(r->err, "%s: %s: array length %llu (%s) is more than the %zu bytes left in the file can hold",
                           r->what, field, (unsigned long long)n, tl_gguf_type_name(et), left(r));
        v->arr_type = et;
        v->arr_n = n;
        v->data = r->p;
        if (scalar_size(et) && et != TL_GGUF_BOOL) {
            r->p += n * min;
        } else {
            for (uint64_t i = 0; i < n; i++) {
                char sub[200];
                snprintf(sub, sizeof sub, "%s element %llu", field, (unsigned long long)i);
                tl_gguf_value e;
                if (read_value(r, et, depth + 1, &e, sub)) return -1;
            }
        }
    } else {
        return tl_fail(r->err, "%s: %s: unknown value type %u", r->what, field, type);
    }
    v->size = (size_t)(r->p - start);
    return 0;
}

void tl_gguf_array_next(const tl_gguf_value *arr, const uint8_t **pos, tl_gguf_value *e) {
    const uint8_t *p = *pos;
    memset(e, 0, sizeof *e);
    e->type = arr->arr_type;
    e->data = p;
    size_t sz = scalar_size(e->type);
    if (sz) {
        p += sz;
    } else if (e->type == TL_GGUF_STRING) {
        e->str.len = (size_t)rd64(p);
        e->str.ptr = (const char *)p + 8;
        p += 8 + e->str.len;
    } else { /* ARRAY: validated at open, so each element's extent can be recomputed */
        e->arr_type = rd32(p);
        e->arr_n = rd64(p + 4);
        e->data = p + 12;
        const uint8_t *q = e->data;
        tl_gguf_value sub;
        for (uint64_t i = 0; i < e->arr_n; i++) tl_gguf_array_next(e, &q, &sub);
        p = q;
    }
    e->size = (size_t)(p - *pos);
    *pos = p;
}

static tl_gguf *parse(tl_gguf *g, tl_error *err) {
    reader r = {g->map, g->map, g->map + g->len, g->what, err};
    uint32_t magic;
    if (g->len < 4 || (magic = rd32(g->map)) != 0x46554747u) /* "GGUF" */
        return tl_fail(err, "%s: not a GGUF file (no 'GGUF' magic at byte 0)", g->what), NULL;
    r.p += 4;
    uint64_t n_t, n_kv;
    if (read_u32(&r, &g->version, "header", "version")) return NULL;
    if (g->version != 2 && g->version != 3) {
        uint32_t sw = __builtin_bswap32(g->version);
        if (sw == 2 || sw == 3)
            return tl_fail(err, "%s: big-endian GGUF (version %u) is not supported; only little-endian files are",
                           g->what, sw), NULL;
        return tl_fail(err, "%s: header: GGUF version %u is not supported (versions 2 and 3 are)", g->what,
                       g->version), NULL;
    }
    if (read_u64(&r, &n_t, "header", "tensor count") || read_u64(&r, &n_kv, "header", "metadata count"))
        return NULL;
    /* the smallest key/value is 14 bytes, the smallest tensor info 33 */
    if (n_kv > left(&r) / 14)
        return tl_fail(err, "%s: header: metadata count %llu is more than the file (%zu bytes) can hold", g->what,
                       (unsigned long long)n_kv, g->len), NULL;
    if (n_t > left(&r) / 33)
        return tl_fail(err, "%s: header: tensor count %llu is more than the file (%zu bytes) can hold", g->what,
                       (unsigned long long)n_t, g->len), NULL;
    /* the name tables hold 32-bit indices */
    if (n_kv >= UINT32_MAX || n_t >= UINT32_MAX)
        return tl_fail(err, "%s: header: more than 2^32 keys or tensors", g->what), NULL;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_t ? n_t : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return tl_fail(err, "%s: out of memory", g->what), NULL;

    fieldname f;
    for (uint64_t i = 0; i < n_kv; i++) {
        tl_gguf_kv *kv = &g->kv[i];
        field_of(&f, "metadata key", NULL, (size_t)i);
        if (read_str(&r, &kv->key, f.s, "key")) return NULL;
        if (kv->key.len == 0) return tl_fail(err, "%s: %s: the key is empty", g->what, f.s), NULL;
        if (memchr(kv->key.ptr, 0, kv->key.len))
            return tl_fail(err, "%s: %s: the key contains a NUL byte", g->what, f.s), NULL;
        field_of(&f, "key", &kv->key, 0);
        uint32_t type = 0;
        if (read_u32(&r, &type, f.s, "value type")) return NULL;
        if (type >= TL_GGUF_NTYPES)
            return tl_fail(err, "%s: %s: unknown value type %u", g->what, f.s, type), NULL;
        if (read_value(&r, type, 0, &kv->val, f.s)) return NULL;
        g->n_kv++;
    }
    size_t dup;
    int rc = table_build(g, g->n_kv, kv_name, &g->kv_slots, &g->kv_mask, &dup);
    if (rc == -1) return tl_fail(err, "%s: out of memory", g->what), NULL;
    if (rc == -2)
        return tl_fail(err, "%s: metadata key '%.*s' appears twice", g->what, (int)g->kv[dup].key.len,
                       g->kv[dup].key.ptr), NULL;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const tl_gguf_kv *al = tl_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->val.type != TL_GGUF_UINT32)
            return tl_fail(err, "%s: key 'general.alignment': type %s, expected UINT32", g->what,
                           tl_gguf_type_name(al->val.type)), NULL;
        uint32_t a = rd32(al->val.data);
        if (a == 0 || (a & (a - 1)))
            return tl_fail(err, "%s: key 'general.alignment': %u is not a power of two", g->what, a), NULL;
        g->alignment = a;
    }

    for (uint64_t i = 0; i < n_t; i++) {
        tl_gguf_tensor *t = &g->tensors[i];
        field_of(&f, "tensor", NULL, (size_t)i);
        if (read_str(&r, &t->name, f.s, "name")) return NULL;
        if (t->name.len == 0) return tl_fail(err, "%s: %s: the name is empty", g->what, f.s), NULL;
        if (memchr(t->name.ptr, 0, t->name.len))
            return tl_fail(err, "%s: %s: the name contains a NUL byte", g->what, f.s), NULL;
        field_of(&f, "tensor", &t->name, 0);
        if (read_u32(&r, &t->n_dims, f.s, "n_dims")) return NULL;
        if (t->n_dims < 1 || t->n_dims > 4)
            return tl_fail(err, "%s: %s: n_dims %u is not between 1 and 4", g->what, f.s, t->n_dims), NULL;
        uint64_t n = 1;
        int overflow = 0;
        for (uint32_t d = 0; d < 4; d++) {
            t->ne[d] = 1;
            if (d < t->n_dims && read_u64(&r, &t->ne[d], f.s, "dimension")) return NULL;
            if (t->ne[d] > (uint64_t)INT64_MAX) overflow = 1;
            if (!overflow && t->ne[d] && n > (uint64_t)INT64_MAX / t->ne[d]) overflow = 1;
            if (!overflow) n *= t->ne[d];
        }
        if (overflow)
            return tl_fail(err, "%s: %s: shape [%llu, %llu, %llu, %llu] has more elements than fit in 63 bits",
                           g->what, f.s, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                           (unsigned long long)t->ne[2], (unsigned long long)t->ne[3]), NULL;
        t->n_elements = n;
        if (read_u32(&r, &t->type, f.s, "type")) return NULL;
        uint32_t be, bb;
        if (!tl_ggml_type_block(t->type, &be, &bb))
            return tl_fail(err, "%s: %s: unknown tensor type %u", g->what, f.s, t->type), NULL;
        if (t->ne[0] % be)
            return tl_fail(err, "%s: %s: row length %llu is not a multiple of the %s block size %u", g->what, f.s,
                           (unsigned long long)t->ne[0], tl_ggml_type_name(t->type), be), NULL;
        if (n / be > (uint64_t)INT64_MAX / bb)
            return tl_fail(err, "%s: %s: %llu elements of %s take more bytes than fit in 63 bits", g->what, f.s,
                           (unsigned long long)n, tl_ggml_type_name(t->type)), NULL;
        t->n_bytes = n / be * bb;
        if (read_u64(&r, &t->offset, f.s, "offset")) return NULL;
        if (t->offset % g->alignment)
            return tl_fail(err, "%s: %s: data offset %llu is not a multiple of the alignment %u", g->what, f.s,
                           (unsigned long long)t->offset, g->alignment), NULL;
        g->n_tensors++;
    }
    rc = table_build(g, g->n_tensors, t_name, &g->t_slots, &g->t_mask, &dup);
    if (rc == -1) return tl_fail(err, "%s: out of memory", g->what), NULL;
    if (rc == -2)
        return tl_fail(err, "%s: tensor name '%.*s' appears twice", g->what, (int)g->tensors[dup].name.len,
                       g->tensors[dup].name.ptr), NULL;

    uint64_t off = at(&r);
    off = (off + g->alignment - 1) / g->alignment * g->alignment;
    g->data_off = off;
    uint64_t avail = off <= g->len ? g->len - off : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        tl_gguf_tensor *t = &g->tensors[i];
        if (t->offset > avail || t->n_bytes > avail - t->offset)
            return tl_fail(err,
                           "%s: tensor '%.*s': data [%llu, +%llu) runs past the end of the file "
                           "(%llu bytes of tensor data from byte %llu)",
                           g->what, (int)t->name.len, t->name.ptr, (unsigned long long)t->offset,
                           (unsigned long long)t->n_bytes, (unsigned long long)avail,
                           (unsigned long long)off), NULL;
        t->data = g->map + off + t->offset;
    }
    return g;
}

static tl_gguf *open_common(const uint8_t *data, size_t len, int mapped, const char *what, tl_error *err) {
    tl_gguf *g = calloc(1, sizeof *g);
    char *w = strdup(what ? what : "GGUF");
    if (!g || !w) {
        free(g);
        free(w);
        if (mapped) tl_unmap_file(data, len);
        tl_fail(err, "%s: out of memory", what);
        return NULL;
    }
    g->what = w;
    g->map = data;
    g->len = len;
    g->mapped = mapped;
    if (!data) {
        tl_fail(err, "%s: the file is empty, not a GGUF file", what);
        tl_gguf_close(g);
        return NULL;
    }
    if (!parse(g, err)) {
        tl_gguf_close(g);
        return NULL;
    }
    return g;
}

tl_gguf *tl_gguf_open(const char *path, tl_error *err) {
    const uint8_t *map;
    size_t len;
    if (tl_map_file(path, &map, &len, err)) return NULL;
    return open_common(map, len, 1, path, err);
}

tl_gguf *tl_gguf_open_bytes(const uint8_t *data, size_t len, const char *what, tl_error *err) {
    return open_common(len ? data : NULL, len, 0, what, err);
}

void tl_gguf_close(tl_gguf *g) {
    if (!g) return;
    if (g->mapped) tl_unmap_file(g->map, g->len);
    free(g->kv);
    free(g->tensors);
    free(g->kv_slots);
    free(g->t_slots);
    free(g->what);
    free(g);
}

/* ---------------------------------------------------------------- access */

const char *tl_gguf_path(const tl_gguf *g) { return g->what; }
uint32_t tl_gguf_version(const tl_gguf *g) { return g->version; }
uint32_t tl_gguf_alignment(const tl_gguf *g) { return g->alignment; }
uint64_t tl_gguf_data_offset(const tl_gguf *g) { return g->data_off; }
size_t tl_gguf_n_kv(const tl_gguf *g) { return g->n_kv; }
const tl_gguf_kv *tl_gguf_kv_at(const tl_gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t tl_gguf_n_tensors(const tl_gguf *g) { return g->n_tensors; }
const tl_gguf_tensor *tl_gguf_tensor_at(const tl_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const tl_gguf_kv *tl_gguf_find_kv(const tl_gguf *g, const char *key) {
    if (!g->kv_slots) return NULL;
    size_t h = slot_find(g, g->kv_slots, g->kv_mask, kv_name, key, strlen(key));
    return g->kv_slots[h] ? &g->kv[g->kv_slots[h] - 1] : NULL;
}

const tl_gguf_tensor *tl_gguf_find_tensor(const tl_gguf *g, const char *name) {
    if (!g->t_slots) return NULL;
    size_t h = slot_find(g, g->t_slots, g->t_mask, t_name, name, strlen(name));
    return g->t_slots[h] ? &g->tensors[g->t_slots[h] - 1] : NULL;
}

int64_t tl_gguf_value_i64(const tl_gguf_value *v) {
    const uint8_t *p = v->data;
    switch (v->type) {
    case TL_GGUF_UINT8: case TL_GGUF_BOOL: return p[0];
    case TL_GGUF_INT8: return (int8_t)p[0];
    case TL_GGUF_UINT16: return (uint16_t)(p[0] | p[1] << 8);
    case TL_GGUF_INT16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
    case TL_GGUF_UINT32: return rd32(p);
    case TL_GGUF_INT32: return (int32_t)rd32(p);
    case TL_GGUF_UINT64: case TL_GGUF_INT64: return (int64_t)rd64(p);
    default: return 0;
    }
}

uint64_t tl_gguf_value_u64(const tl_gguf_value *v) {
    return v->type == TL_GGUF_UINT64 ? rd64(v->data) : (uint64_t)tl_gguf_value_i64(v);
}

double tl_gguf_value_f64(const tl_gguf_value *v) {
    if (v->type == TL_GGUF_FLOAT32) {
        uint32_t b = rd32(v->data);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (v->type == TL_GGUF_FLOAT64) {
        uint64_t b = rd64(v->data);
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
    return (double)tl_gguf_value_i64(v);
}

static int wrong_type(const tl_gguf *g, const tl_gguf_kv *kv, const char *want, tl_error *err) {
    return tl_fail(err, "%s: key '%.*s': type %s, expected %s", g->what, (int)kv->key.len, kv->key.ptr,
                   tl_gguf_type_name(kv->val.type), want);
}

/* An integer value in [lo, hi] (as int64, or as uint64 for UINT64 above INT64_MAX). */
static int get_int(const tl_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *out, tl_error *err) {
    const tl_gguf_kv *kv = tl_gguf_find_kv(g, key);
    if (!kv) return 0;
    if (!tl_gguf_type_is_int(kv->val.type)) return wrong_type(g, kv, "an integer", err);
    int64_t v = tl_gguf_value_i64(&kv->val);
    if ((kv->val.type == TL_GGUF_UINT64 && tl_gguf_value_u64(&kv->val) > (uint64_t)INT64_MAX) || v < lo || v > hi)
        return tl_fail(err, "%s: key '%s': value %llu is out of range [%lld, %lld]", g->what, key,
                       (unsigned long long)tl_gguf_value_u64(&kv->val), (long long)lo, (long long)hi);
    *out = v;
    return 1;
}

int tl_gguf_get_u32(const tl_gguf *g, const char *key, uint32_t *out, tl_error *err) {
    int64_t v = 0;
    int rc = get_int(g, key, 0, UINT32_MAX, &v, err);
    if (rc == 1) *out = (uint32_t)v;
    return rc;
}

int tl_gguf_get_i64(const tl_gguf *g, const char *key, int64_t *out, tl_error *err) {
    return get_int(g, key, INT64_MIN, INT64_MAX, out, err);
}

int tl_gguf_get_f32(const tl_gguf *g, const char *key, float *out, tl_error *err) {
    const tl_gguf_kv *kv = tl_gguf_find_kv(g, key);
    if (!kv) return 0;
    if (kv->val.type != TL_GGUF_FLOAT32 && kv->val.type != TL_GGUF_FLOAT64)
        return wrong_type(g, kv, "FLOAT32", err);
    *out = (float)tl_gguf_value_f64(&kv->val);
    return 1;
}

int tl_gguf_get_bool(const tl_gguf *g, const char *key, int *out, tl_error *err) {
    const tl_gguf_kv *kv = tl_gguf_find_kv(g, key);
    if (!kv) return 0;
    if (kv->val.type != TL_GGUF_BOOL) return wrong_type(g, kv, "BOOL", err);
    *out = kv->val.data[0];
    return 1;
}

int tl_gguf_get_str(const tl_gguf *g, const char *key, tl_gguf_str *out, tl_error *err) {
    const tl_gguf_kv *kv = tl_gguf_find_kv(g, key);
    if (!kv) return 0;
    if (kv->val.type != TL_GGUF_STRING) return wrong_type(g, kv, "STRING", err);
    *out = kv->val.str;
    return 1;
}

int tl_gguf_get_array(const tl_gguf *g, const char *key, uint32_t elem_type, tl_gguf_value *out, tl_error *err) {
    const tl_gguf_kv *kv = tl_gguf_find_kv(g, key);
    if (!kv) return 0;
    char want[40];
    snprintf(want, sizeof want, "ARRAY of %s", tl_gguf_type_name(elem_type));
    if (kv->val.type != TL_GGUF_ARRAY) return wrong_type(g, kv, want, err);
    if (kv->val.arr_type != elem_type)
        return tl_fail(err, "%s: key '%s': ARRAY of %s, expected %s", g->what, key,
                       tl_gguf_type_name(kv->val.arr_type), want);
    *out = kv->val;
    return 1;
}

int tl_gguf_tensor_to_f32(const tl_gguf *g, const tl_gguf_tensor *t, float *out, tl_error *err) {
    if (!tl_ggml_type_dequantizable(t->type))
        return tl_fail(err, "%s: tensor '%.*s': type %s cannot be converted (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 "
                       "Q5_0 Q5_1 Q4_K Q5_K Q6_K)", tl_gguf_path(g), (int)t->name.len, t->name.ptr,
                       tl_ggml_type_name(t->type));
    uint32_t be, bb;
    tl_ggml_type_block(t->type, &be, &bb);
    /* row by row: a row is whole blocks, and this keeps the source reads sequential */
    size_t row = (size_t)t->ne[0], rows = row ? (size_t)(t->n_elements / row) : 0;
    size_t row_bytes = row / be * bb;
    #pragma omp parallel for schedule(static) if (t->n_elements > (1u << 20))
    for (size_t r = 0; r < rows; r++) tl_gguf_dequant_row(t->type, t->data + r * row_bytes, out + r * row, row);
    return 0;
}

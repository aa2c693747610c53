/* prepare.c - raw corpora -> packed token shards (see prepare.h, docs/data.md).
 *
 * The pipeline runs in batches of about batch_bytes of input:
 *   1. read (serial): decompress, split into lines, build records - a JSON line,
 *      or a piece of a text document cut at a newline - in an arena;
 *   2. parse (parallel over records): JSON, metadata filters, text field,
 *      UTF-8 repair, cutting long texts into segments at newlines;
 *   3. tokenize (parallel over segments, tl_tokenizer_encode_batch);
 *   4. pack (serial, input order): BOS/EOS, train/val routing, samples, shards.
 * Nothing in steps 2-3 depends on the thread count and nothing in the output
 * depends on where batches end, so the shards are the same bytes however the
 * run is configured.
 *
 * Segments are exact: a segment that starts after a newline is encoded
 * together with that newline and the newline's ids (the encoding of "\n") are
 * removed again.  When no vocabulary piece contains a newline and whitespace is
 * not normalized, no merge can cross the newline, so the concatenated segment
 * ids equal the ids of the whole document (checked at start-up; tested). */
#include "prepare.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "data.h"
#include "tokenizer.h"

#define READ_CHUNK ((size_t)1 << 20)
#define BYTE_VOCAB 259

void tl_prepare_default_opts(tl_prepare_opts *o) {
    memset(o, 0, sizeof *o);
    o->text_field = "text";
    o->add_eos = 1;
    o->seq_len = 2048;
    o->shard_samples = 16384;
    o->max_doc_bytes = (size_t)256 << 20;
    o->segment_bytes = 16384;
    o->progress_every = 0.5;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the well-formed sequence at s (Unicode Table 3-7), or 0 with *bad
 * set to the length of the maximal ill-formed subpart to replace. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) break;
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) break;
    }
    if (i == need + 1) return i;
    *bad = i; /* the lead byte and the continuation bytes that were valid so far */
    return 0;
}

size_t tl_utf8_repair(const char *s, size_t len, char **out, size_t *out_len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, replaced = 0;
    /* fast path: ASCII runs and well-formed sequences */
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad = 0, k = utf8_seq(u + i, len - i, &bad);
        if (!k) break;
        i += k;
    }
    *out = NULL;
    *out_len = len;
    if (i == len) return 0;
    /* slow path: each maximal ill-formed subpart (at most 3 bytes) grows to 3 bytes */
    size_t cap = len + 2 * (len - i) + 4;
    char *o = malloc(cap);
    size_t op = i;
    if (o) memcpy(o, s, i);
    while (i < len) {
        size_t bad = 0, k = utf8_seq(u + i, len - i, &bad);
        if (k) {
            if (o) memcpy(o + op, s + i, k);
            op += k;
            i += k;
        } else {
            if (o) memcpy(o + op, "\xEF\xBF\xBD", 3);
            op += 3;
            i += bad;
            replaced += bad;
        }
    }
    *out = o;
    *out_len = op;
    return replaced;
}

/* Cut position <= pos that does not split a well-formed UTF-8 sequence. */
static size_t utf8_cut(const unsigned char *s, size_t pos) {
    for (size_t back = 1; back <= 3 && back <= pos; back++) {
        unsigned c = s[pos - back];
        if (c < 0x80) return pos;
        if (c >= 0xC0) { /* lead byte: does its sequence reach past pos? */
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            return back < need ? pos - back : pos;
        }
    }
    return pos;
}

/* ------------------------------------------------------------------ inputs */

enum { COMP_NONE, COMP_ZSTD, COMP_GZ };

typedef struct {
    char *path;
    int format, comp;
    uint64_t size;
} in_file;

typedef struct {
    in_file *v;
    int n, cap;
} file_list;

static int classify(const char *path, int forced, int *format, int *comp) {
    size_t l = strlen(path);
    const char *end = path + l;
    *comp = COMP_NONE;
    if (l > 4 && !strcmp(end - 4, ".zst")) *comp = COMP_ZSTD, l -= 4;
    else if (l > 5 && !strcmp(end - 5, ".zstd")) *comp = COMP_ZSTD, l -= 5;
    else if (l > 3 && !strcmp(end - 3, ".gz")) *comp = COMP_GZ, l -= 3;
    if (forced) {
        *format = forced;
        return 0;
    }
    static const struct {
        const char *ext;
        int fmt;
    } exts[] = {{".jsonl", TL_FMT_JSONL}, {".json", TL_FMT_JSONL}, {".ndjson", TL_FMT_JSONL},
                {".txt", TL_FMT_TXT},     {".text", TL_FMT_TXT},   {".md", TL_FMT_TXT}};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t e = strlen(exts[i].ext);
        if (l > e && !strncmp(path + l - e, exts[i].ext, e)) {
            *format = exts[i].fmt;
            return 0;
        }
    }
    return -1;
}

static int add_file(file_list *fl, const char *path, int forced, int from_dir, tl_error *err) {
    int format, comp;
    if (classify(path, forced, &format, &comp)) {
        if (from_dir) return 0; /* other files in a directory are not inputs */
        format = TL_FMT_TXT;    /* a file named explicitly: plain text */
    }
    struct stat sb;
    if (stat(path, &sb) != 0) return tl_fail(err, "%s: %s", path, strerror(errno));
    if (fl->n == fl->cap) {
        int cap = fl->cap ? 2 * fl->cap : 16;
        in_file *v = realloc(fl->v, sizeof *v * (size_t)cap);
        if (!v) return tl_fail(err, "out of memory");
        fl->v = v;
        fl->cap = cap;
    }
    in_file *f = &fl->v[fl->n];
    if (!(f->path = strdup(path))) return tl_fail(err, "out of memory");
    f->format = format;
    f->comp = comp;
    f->size = (uint64_t)sb.st_size;
    fl->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int add_path(file_list *fl, const char *path, int forced, int depth, int from_dir, tl_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!from_dir && strpbrk(path, "*?[")) {
            glob_t g;
            if (glob(path, 0, NULL, &g) != 0) return tl_fail(err, "%s: pattern matches no files", path);
            int rc = 0;
            for (size_t i = 0; i < g.gl_pathc && !rc; i++) rc = add_path(fl, g.gl_pathv[i], forced, depth, 0, err);
            globfree(&g);
            return rc;
        }
        return tl_fail(err, "%s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) return add_file(fl, path, forced, from_dir, err);
    if (depth > 32) return tl_fail(err, "%s: directories nested too deeply", path);
    DIR *d = opendir(path);
    if (!d) return tl_fail(err, "%s: cannot read directory: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, sizeof *nn * cap);
            if (!nn) {
                rc = tl_fail(err, "out of memory");
                break;
            }
            names = nn;
        }
        size_t l = strlen(path) + strlen(e->d_name) + 2;
        if (!(names[n] = malloc(l))) {
            rc = tl_fail(err, "out of memory");
            break;
        }
        snprintf(names[n++], l, "%s/%s", path, e->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) rc = add_path(fl, names[i], forced, depth + 1, 1, err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* ------------------------------------------------------------------ streams */

typedef struct {
    FILE *f;
    int comp;
    ZSTD_DCtx *zd;
    z_stream zs;
    int zs_init;
    unsigned char *in;
    size_t in_len, in_pos;
    int in_eof, done, frame_open;
    uint64_t file_read, produced;
    tl_prepare_input *st;
} stream;

static void stream_close(stream *s) {
    if (s->f) fclose(s->f);
    if (s->zd) ZSTD_freeDCtx(s->zd);
    if (s->zs_init) inflateEnd(&s->zs);
    free(s->in);
    memset(s, 0, sizeof *s);
}

static int stream_open(stream *s, const in_file *f, tl_prepare_input *st, tl_error *err) {
    memset(s, 0, sizeof *s);
    s->st = st;
    s->comp = f->comp;
    s->f = fopen(f->path, "rb");
    if (!s->f) return tl_fail(err, "%s: cannot open: %s", f->path, strerror(errno));
    if (s->comp != COMP_NONE && !(s->in = malloc(READ_CHUNK))) goto oom;
    if (s->comp == COMP_ZSTD && !(s->zd = ZSTD_createDCtx())) goto oom;
    if (s->comp == COMP_GZ) {
        if (inflateInit2(&s->zs, 15 + 32) != Z_OK) goto oom;
        s->zs_init = 1;
    }
    return 0;
oom:
    stream_close(s);
    return tl_fail(err, "out of memory");
}

static void stream_bad(stream *s, const char *what) {
    if (!s->st->error[0]) snprintf(s->st->error, sizeof s->st->error, "%s", what);
    s->st->truncated = 1;
    s->done = 1;
}

static void refill(stream *s) {
    if (s->in_pos < s->in_len || s->in_eof) return;
    s->in_len = fread(s->in, 1, READ_CHUNK, s->f);
    s->in_pos = 0;
    s->file_read += s->in_len;
    if (s->in_len == 0) {
        s->in_eof = 1;
        if (ferror(s->f)) stream_bad(s, "read error");
    }
}

/* Up to cap decompressed bytes; 0 at the end (or after an error, recorded in st). */
static size_t stream_read(stream *s, void *buf, size_t cap) {
    if (s->done) return 0;
    if (s->comp == COMP_NONE) {
        size_t got = fread(buf, 1, cap, s->f);
        s->file_read += got;
        if (got == 0) {
            if (ferror(s->f)) stream_bad(s, "read error");
            s->done = 1;
        }
        s->produced += got;
        return got;
    }
    for (;;) {
        refill(s);
        if (s->done) return 0;
        if (s->in_pos == s->in_len && s->in_eof) {
            if (s->frame_open)
                stream_bad(s, s->comp == COMP_ZSTD ? "zstd stream ends inside a frame (truncated)"
                                                   : "gzip stream ends early (truncated)");
            s->done = 1;
            return 0;
        }
        size_t out_pos;
        if (s->comp == COMP_ZSTD) {
            ZSTD_inBuffer zin = {s->in, s->in_len, s->in_pos};
            ZSTD_outBuffer zout = {buf, cap, 0};
            size_t r = ZSTD_decompressStream(s->zd, &zout, &zin);
            s->in_pos = zin.pos;
            if (ZSTD_isError(r)) {
                char msg[200];
                snprintf(msg, sizeof msg, "corrupt zstd data: %s", ZSTD_getErrorName(r));
                stream_bad(s, msg);
                return 0;
            }
            s->frame_open = r != 0;
            out_pos = zout.pos;
        } else {
            s->zs.next_in = s->in + s->in_pos;
            s->zs.avail_in = (uInt)(s->in_len - s->in_pos);
            s->zs.next_out = buf;
            s->zs.avail_out = (uInt)(cap > (1u << 30) ? (1u << 30) : cap);
            uInt before = s->zs.avail_out;
            int r = inflate(&s->zs, Z_NO_FLUSH);
            s->in_pos = s->in_len - s->zs.avail_in;
            out_pos = before - s->zs.avail_out;
            if (r == Z_STREAM_END) {
                s->frame_open = 0;
                inflateReset(&s->zs); /* a further gzip member may follow */
            } else if (r == Z_OK || r == Z_BUF_ERROR) {
                s->frame_open = 1;
            } else {
                char msg[200];
                snprintf(msg, sizeof msg, "corrupt gzip data: %s", s->zs.msg ? s->zs.msg : "inflate failed");
                stream_bad(s, msg);
                return out_pos;
            }
        }
        if (out_pos) {
            s->produced += out_pos;
            return out_pos;
        }
    }
}

/* Splits a stream into lines; lines longer than max_piece come in pieces. */
enum { LR_END, LR_LINE, LR_LAST, LR_CUT };

typedef struct {
    stream s;
    char *buf;
    size_t cap, start, end, scanned;
    int eof;
} lreader;

static int lr_next(lreader *r, size_t max_piece, int utf8_cuts, const char **p, size_t *n, tl_error *err) {
    for (;;) {
        size_t avail = r->end - r->start;
        char *nl = avail > r->scanned ? memchr(r->buf + r->start + r->scanned, '\n', avail - r->scanned) : NULL;
        if (nl && (size_t)(nl - (r->buf + r->start)) <= max_piece) {
            *p = r->buf + r->start;
            *n = (size_t)(nl - *p);
            r->start += *n + 1;
            r->scanned = 0;
            return LR_LINE;
        }
        if (avail > max_piece) {
            size_t cut = utf8_cuts ? utf8_cut((const unsigned char *)r->buf + r->start, max_piece) : max_piece;
            if (cut == 0) cut = max_piece;
            *p = r->buf + r->start;
            *n = cut;
            r->start += cut;
            r->scanned = 0;
            return LR_CUT;
        }
        r->scanned = avail;
        if (r->eof) {
            if (!avail) return LR_END;
            *p = r->buf + r->start;
            *n = avail;
            r->start = r->end;
            r->scanned = 0;
            return LR_LAST;
        }
        if (r->start) {
            memmove(r->buf, r->buf + r->start, avail);
            r->start = 0;
            r->end = avail;
        }
        size_t want = avail + READ_CHUNK;
        if (r->cap < want) {
            size_t cap = r->cap ? r->cap : 2 * READ_CHUNK;
            while (cap < want) cap *= 2;
            char *b = realloc(r->buf, cap);
            if (!b) return tl_fail(err, "out of memory"), -1;
            r->buf = b;
            r->cap = cap;
        }
        size_t got = stream_read(&r->s, r->buf + r->end, r->cap - r->end);
        if (!got) r->eof = 1;
        r->end += got;
    }
}

/* ------------------------------------------------------------------ records */

enum { REC_JSON, REC_TEXT };
enum { ST_OK, ST_MALFORMED, ST_MISSING, ST_EMPTY, ST_FILTERED };

typedef struct {
    const char *p;
    size_t len;
    int strip; /* the segment starts with a newline whose ids are removed */
    char *owned;
    int *ids;
    size_t n;
} segment;

typedef struct {
    size_t off, len;
    int input;
    unsigned char kind, doc_start, doc_end, cont;
    /* filled by parse */
    int status;
    char *text; /* owned decoded/repaired text, or NULL (text is in the arena) */
    size_t bad_utf8, text_len;
    uint64_t forced;
    segment *segs;
    int nseg;
    size_t seg_first;
} record;

typedef struct {
    char *arena;
    size_t arena_len, arena_cap;
    record *recs;
    size_t n_recs, recs_cap;
    /* flattened segments for the tokenizer */
    const char **texts;
    size_t *lens;
    int **ids;
    size_t *nids;
    size_t n_segs, segs_cap;
} batch;

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

static void batch_reset(batch *b) {
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

static void batch_free(batch *b) {
    batch_reset(b);
    free(b->arena);
    free(b->recs);
    free(b->texts);
    free(b->lens);
    free(b->ids);
    free(b->nids);
    memset(b, 0, sizeof *b);
}

/* word cache tables (see "word cache" below) */
typedef struct {
    uint64_t h;
    uint32_t koff, voff;
    uint16_t klen, vlen;
} wc_slot;

/* word -> ids, open addressing; keys and ids in arenas. */
typedef struct {
    wc_slot *slots;
    size_t mask, used, max_used;
    char *keys;
    size_t kn, kcap;
    int *vals;
    size_t vn, vcap;
} wtable;

/* ------------------------------------------------------------------ state */

typedef struct {
    char dir[4200];
    const char *name;
    uint64_t per_shard;
    int seq_len, vocab;
    tl_shard_writer w;
    int open;
    int n_shards;
    struct shard_info {
        char file[64];
        uint64_t samples, checksum, bytes;
    } *shards;
    int shards_cap;
    tl_prepare_split *split;
} shard_set;

typedef struct {
    int *buf;
    int n;
} sample_buf;

typedef struct {
    const tl_prepare_opts *o;
    tl_prepare_result *r;
    tl_tokenizer *tok;
    int vocab, bos, eos;
    int nl_ids[16], n_nl;
    int exact;
    int word_cache;   /* words are encoded independently (and cached): see wcache */
    struct wcache *caches;
    wtable shared;    /* word -> ids, merged from the threads after each batch */
    uint64_t seg_counter;
    size_t seg_target, seg_max, rec_target;
    int nt;
    file_list files;
    /* reader */
    int cur;          /* file being read */
    int cur_open;
    lreader lr;
    int skipping;     /* inside an over-long JSON line */
    int first_piece;  /* nothing read from this file yet */
    int in_line;      /* txt: a line was cut, its rest follows */
    int open_rec;     /* txt: a record of the current document is being built ... */
    size_t open_idx;  /* ... at this index of the batch */
    int doc_open;     /* txt: a document has started */
    int pending_nl;   /* txt paragraphs: a newline separates the next line from the document */
    int next_cont;    /* txt: the next record continues the document */
    uint64_t done_bytes;
    _Atomic uint64_t pub_bytes; /* reader progress, published for the packer's progress calls */
    _Atomic int pub_file;
    /* packer */
    uint64_t doc_index, sample_index;
    int doc_val, doc_bad_utf8;
    sample_buf sb[2]; /* [0] train (or the single stream), [1] val */
    shard_set sets[2];
    double t0, last_progress;
} prep;

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
    if (stream_open(&P->lr.s, f, st, err)) {
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
    stream_close(&P->lr.s);
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
                kind = lr_next(&P->lr, o->max_doc_bytes, 0, &p, &n, err);
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
            kind = lr_next(&P->lr, P->seg_max, 1, &p, &n, err);
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
static int read_batch(prep *P, batch *b, size_t budget, tl_error *err) {
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

/* Cuts t[0..n) into segments of about seg_target bytes at newlines (see the top). */
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
                    end = utf8_cut((const unsigned char *)t, body + P->seg_max);
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
static int parse_record(const prep *P, const batch *b, record *r) {
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

/* ------------------------------------------------------------------ output */

static int set_open(shard_set *s, tl_error *err) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s-%05d.bin", s->dir, s->name, s->n_shards);
    if (tl_shard_writer_open(&s->w, path, s->seq_len, s->vocab, err)) return -1;
    s->open = 1;
    return 0;
}

static int set_close(shard_set *s, size_t *dropped, tl_error *err) {
    if (!s->open) return 0;
    s->open = 0;
    if (s->w.n_samples == 0) { /* nothing complete: leave no file */
        if (dropped) *dropped += (size_t)s->w.n_pending;
        tl_shard_writer_abort(&s->w);
        return 0;
    }
    size_t d = 0;
    if (tl_shard_writer_close(&s->w, &d, err)) return -1;
    if (dropped) *dropped += d;
    if (s->n_shards == s->shards_cap) {
        int cap = s->shards_cap ? 2 * s->shards_cap : 16;
        struct shard_info *v = realloc(s->shards, sizeof *v * (size_t)cap);
        if (!v) return tl_fail(err, "out of memory");
        s->shards = v;
        s->shards_cap = cap;
    }
    struct shard_info *si = &s->shards[s->n_shards++];
    snprintf(si->file, sizeof si->file, "%s-%05d.bin", s->name, s->n_shards - 1);
    si->samples = s->w.n_samples;
    si->checksum = s->w.checksum;
    si->bytes = TL_SHARD_HEADER + s->w.n_samples * (uint64_t)(s->seq_len + 1) * (uint64_t)s->w.token_bytes;
    s->split->shards = (uint64_t)s->n_shards;
    return 0;
}

static int set_write_sample(shard_set *s, const int *ids, tl_error *err) {
    if (!s->open && set_open(s, err)) return -1;
    if (tl_shard_writer_add(&s->w, ids, (size_t)s->seq_len + 1, err)) return -1;
    s->split->samples++;
    s->split->tokens += (uint64_t)s->seq_len + 1;
    if (s->w.n_samples >= s->per_shard) return set_close(s, NULL, err);
    return 0;
}

static int is_val_unit(const tl_prepare_opts *o, uint64_t u) {
    if (o->val_count) return u < o->val_count;
    if (o->val_fraction <= 0) return 0;
    /* unit u is held out when floor((u+1) f) > floor(u f): exactly floor(U f) of the first U */
    return (uint64_t)((double)(u + 1) * o->val_fraction) > (uint64_t)((double)u * o->val_fraction);
}

static int emit(prep *P, const int *ids, size_t n, tl_error *err) {
    const int S = P->o->seq_len + 1;
    int which = P->o->split_by == TL_SPLIT_DOCS ? P->doc_val : 0;
    sample_buf *sb = &P->sb[which];
    while (n) {
        size_t take = (size_t)(S - sb->n) < n ? (size_t)(S - sb->n) : n;
        memcpy(sb->buf + sb->n, ids, take * sizeof *ids);
        sb->n += (int)take;
        ids += take;
        n -= take;
        if (sb->n == S) {
            int to = which;
            if (P->o->split_by == TL_SPLIT_SAMPLES) to = is_val_unit(P->o, P->sample_index++);
            if (set_write_sample(&P->sets[to], sb->buf, err)) return -1;
            sb->n = 0;
        }
    }
    return 0;
}

static int pack_batch(prep *P, batch *b, tl_error *err) {
    for (size_t i = 0; i < b->n_recs; i++) {
        record *r = &b->recs[i];
        tl_prepare_input *st = &P->r->inputs[r->input];
        switch (r->status) {
        case ST_MALFORMED: st->malformed_json++; continue;
        case ST_MISSING: st->missing_text++; continue;
        case ST_EMPTY: st->empty++; continue;
        case ST_FILTERED: st->filtered++; continue;
        default: break;
        }
        if (r->doc_start) {
            P->doc_val = P->o->split_by == TL_SPLIT_DOCS ? is_val_unit(P->o, P->doc_index) : 0;
            P->doc_bad_utf8 = 0;
            if (P->o->add_bos) {
                if (emit(P, &P->bos, 1, err)) return -1;
                st->tokens++;
            }
        }
        st->text_bytes += r->text_len;
        st->invalid_utf8_bytes += r->bad_utf8;
        st->forced_splits += r->forced;
        if (r->bad_utf8) P->doc_bad_utf8 = 1;
        for (int k = 0; k < r->nseg; k++) {
            segment *s = &r->segs[k];
            const int *ids = s->ids;
            size_t n = s->n;
            if (s->strip) {
                if (n < (size_t)P->n_nl || memcmp(ids, P->nl_ids, sizeof(int) * (size_t)P->n_nl) != 0)
                    return tl_fail(err, "%s: internal error: a segment after a newline did not start with the "
                                        "newline's ids (tokenizer not newline-separable)", P->files.v[r->input].path);
                ids += P->n_nl;
                n -= (size_t)P->n_nl;
            }
            if (emit(P, ids, n, err)) return -1;
            st->tokens += n;
        }
        if (r->doc_end) {
            if (P->o->add_eos) {
                if (emit(P, &P->eos, 1, err)) return -1;
                st->tokens++;
            }
            st->documents++;
            if (P->doc_val) st->val_documents++;
            else st->train_documents++;
            if (P->doc_bad_utf8) st->invalid_utf8_docs++;
            P->doc_index++;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ word cache
 *
 * With SentencePiece's identity normalizer, escaped whitespace and a vocabulary
 * in which U+2581 only ever appears as a leading run of a piece (Llama's), no
 * merge can join a character to a following space: the text splits into
 * "words" before every space that follows something other than a space, and
 * each word's ids do not depend on its neighbours.  Natural text repeats its
 * words, so a table word -> ids is shared by the threads.  A word other than
 * the first of a segment is encoded as "\n" + word with the newline's ids
 * removed (so a leading space is not taken for the dummy prefix).
 *
 * Per batch: (A) in parallel, each segment's ids are assembled from the table,
 * with a marker where a word is missing (each thread collects its missing
 * words, once each); (B) all missing words are encoded in one parallel
 * tl_tokenizer_encode_batch call and added to the table; (C) in parallel, the
 * markers are replaced by those ids.  The table only changes the speed: ids
 * are the same as encoding each segment whole, which is re-checked on a sample
 * of segments (and checked in full by the tests). */

#define WC_MAX_WORD 64

static int wt_init(wtable *t, int slot_bits, size_t arena) {
    memset(t, 0, sizeof *t);
    t->slots = calloc((size_t)1 << slot_bits, sizeof *t->slots);
    t->keys = malloc(arena);
    t->vals = malloc(arena * sizeof *t->vals);
    t->mask = ((size_t)1 << slot_bits) - 1;
    t->max_used = (t->mask + 1) / 10 * 7;
    t->kcap = t->vcap = arena;
    if (t->slots && t->keys && t->vals) return 0;
    free(t->slots);
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
    return -1;
}

static void wt_free(wtable *t) {
    free(t->slots);
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

static void wt_clear(wtable *t) {
    if (t->used) memset(t->slots, 0, (t->mask + 1) * sizeof *t->slots);
    t->used = t->kn = t->vn = 0;
}

/* Keys are (word, first): klen holds the length and, in bit 15, whether the
 * word starts a segment (its ids then include the dummy prefix). */
#define WC_FIRST 0x8000u

static const wc_slot *wt_find(const wtable *t, uint64_t h, const char *w, unsigned klen) {
    if (!t->slots) return NULL;
    for (size_t j = (size_t)(h >> 20) & t->mask;; j = (j + 1) & t->mask) {
        const wc_slot *sl = &t->slots[j];
        if (!sl->h) return NULL;
        if (sl->h == h && sl->klen == klen && !memcmp(t->keys + sl->koff, w, klen & ~WC_FIRST)) return sl;
    }
}

/* Adds an entry that is not there; 0 if added, -1 if the table is full. */
static int wt_add(wtable *t, uint64_t h, const char *w, unsigned klen, const int *ids, size_t k) {
    size_t n = klen & ~WC_FIRST;
    if (!t->slots || t->used >= t->max_used || t->kn + n > t->kcap || t->vn + k > t->vcap || k > 0xffff) return -1;
    size_t j = (size_t)(h >> 20) & t->mask;
    while (t->slots[j].h) j = (j + 1) & t->mask;
    wc_slot *sl = &t->slots[j];
    sl->h = h;
    sl->koff = (uint32_t)t->kn;
    sl->klen = (uint16_t)klen;
    sl->voff = (uint32_t)t->vn;
    sl->vlen = (uint16_t)k;
    memcpy(t->keys + t->kn, w, n);
    if (k) memcpy(t->vals + t->vn, ids, k * sizeof *ids);
    t->kn += n;
    t->vn += k;
    t->used++;
    return 0;
}

typedef struct {
    const char *w;
    uint32_t n;
    int first;
} miss_word;

typedef struct {
    uint32_t tid, idx; /* missing word idx of thread tid */
} miss_ref;

/* A thread's state for phase A: its missing words (and an index of them), output buffers. */
struct wcache {
    wtable seen; /* (word, first) -> index in miss (kept in the slot's voff) */
    miss_word *miss;
    size_t n_miss, miss_cap;
    int *out;
    size_t out_n, out_cap;
    miss_ref *refs;
    size_t n_refs, refs_cap;
};

static void wc_free(struct wcache *c) {
    wt_free(&c->seen);
    free(c->miss);
    free(c->out);
    free(c->refs);
    memset(c, 0, sizeof *c);
}

static int wc_out(struct wcache *c, const int *ids, size_t n) {
    if (c->out_n + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_n + n) cap *= 2;
        int *o = realloc(c->out, cap * sizeof *o);
        if (!o) return -1;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_n, ids, n * sizeof *ids);
    c->out_n += n;
    return 0;
}

/* Phase A for one word: its ids, or a marker -(k+1) for the segment's k-th missing word. */
static int wc_word(const prep *P, struct wcache *c, int tid, const char *w, size_t n, uint64_t h, int first) {
    unsigned klen = (unsigned)n | (first ? WC_FIRST : 0);
    int cacheable = n <= WC_MAX_WORD;
    size_t idx = SIZE_MAX;
    if (cacheable) {
        const wc_slot *sl = wt_find(&P->shared, h, w, klen);
        if (sl) return wc_out(c, P->shared.vals + sl->voff, sl->vlen);
        sl = wt_find(&c->seen, h, w, klen);
        if (sl) idx = sl->voff;
    }
    if (idx == SIZE_MAX) { /* a new missing word */
        if (c->n_miss == c->miss_cap) {
            size_t cap = c->miss_cap ? 2 * c->miss_cap : 1024;
            miss_word *m = realloc(c->miss, cap * sizeof *m);
            if (!m) return -1;
            c->miss = m;
            c->miss_cap = cap;
        }
        idx = c->n_miss++;
        c->miss[idx] = (miss_word){w, (uint32_t)n, first};
        if (cacheable && (c->seen.slots || !wt_init(&c->seen, 17, 1 << 20)) &&
            !wt_add(&c->seen, h, w, klen, NULL, 0)) {
            wc_slot *sl = (wc_slot *)wt_find(&c->seen, h, w, klen);
            sl->voff = (uint32_t)idx;
        }
    }
    if (c->n_refs == c->refs_cap) {
        size_t cap = c->refs_cap ? 2 * c->refs_cap : 256;
        miss_ref *r = realloc(c->refs, cap * sizeof *r);
        if (!r) return -1;
        c->refs = r;
        c->refs_cap = cap;
    }
    c->refs[c->n_refs] = (miss_ref){(uint32_t)tid, (uint32_t)idx};
    int marker = -(int)c->n_refs - 1;
    c->n_refs++;
    return wc_out(c, &marker, 1);
}

#define FNV_OFF 0xcbf29ce484222325ULL
#define FNV_MUL 0x100000001b3ULL

/* Phase A for one segment: *ids (malloc'ed) with markers, *refs the missing words they stand for. */
static int wc_segment(const prep *P, struct wcache *c, int tid, const char *s, size_t n, int **ids, size_t *nids,
                      miss_ref **refs, size_t *nrefs) {
    c->out_n = 0;
    c->n_refs = 0;
    size_t start = 0;
    uint64_t h = FNV_OFF ^ 1; /* the first word is keyed apart: it gets the dummy prefix */
    for (size_t i = 0; i <= n; i++) {
        if (i > start && (i == n || (s[i] == ' ' && s[i - 1] != ' ' &&
                                     !(i >= 3 && (unsigned char)s[i - 3] == 0xE2 &&
                                       (unsigned char)s[i - 2] == 0x96 && (unsigned char)s[i - 1] == 0x81)))) {
            if (wc_word(P, c, tid, s + start, i - start, h | 1, start == 0)) return -1;
            start = i;
            h = FNV_OFF;
        }
        if (i < n) h = (h ^ (unsigned char)s[i]) * FNV_MUL;
    }
    *ids = malloc((c->out_n ? c->out_n : 1) * sizeof **ids);
    *refs = c->n_refs ? malloc(c->n_refs * sizeof **refs) : NULL;
    if (!*ids || (c->n_refs && !*refs)) return -1;
    memcpy(*ids, c->out, c->out_n * sizeof **ids);
    if (c->n_refs) memcpy(*refs, c->refs, c->n_refs * sizeof **refs);
    *nids = c->out_n;
    *nrefs = c->n_refs;
    return 0;
}

/* Can words be encoded one by one?  (see above) */
static int word_separable(const tl_tokenizer *t) {
    tl_tokenizer_info info;
    tl_tokenizer_get_info(t, &info);
    if (strcmp(info.format, "sentencepiece") || !info.add_dummy_prefix || !info.escape_whitespaces ||
        info.remove_extra_whitespaces || !info.byte_fallback || info.n_user_defined ||
        !info.normalizer_name || strcmp(info.normalizer_name, "identity"))
        return 0;
    for (int id = 0; id < tl_tokenizer_vocab_size(t); id++) {
        const char *p = tl_tokenizer_piece(t, id);
        if (!p) return 0;
        size_t i = 0;
        while (!strncmp(p + i, "\xE2\x96\x81", 3)) i += 3;
        if (strstr(p + i, "\xE2\x96\x81")) return 0;
    }
    return 1;
}

/* Tokenizes the batch's segments word by word through the shared table (see
 * "word cache"): phases A, B, C. */
static int word_tokenize(prep *P, batch *b, size_t total, tl_error *err) {
    int failed = 0;
    miss_ref **refs = calloc(total ? total : 1, sizeof *refs);
    size_t *nrefs = calloc(total ? total : 1, sizeof *nrefs);
    const char **mt = NULL;
    size_t *ml = NULL, *base = NULL, n_miss = 0, n_uniq = 0, *alias = NULL;
    const miss_word **usrc = NULL;
    uint64_t *uhash = NULL;
    int **mids = NULL;
    size_t *mn = NULL;
    char *arena = NULL;
    int rc = 0;
    for (size_t i = 0; i < total; i++) b->ids[i] = NULL;
    if (!refs || !nrefs) {
        rc = tl_fail(err, "out of memory");
        goto done;
    }
    /* A: ids from the table, markers for missing words */
#pragma omp parallel num_threads(P->nt)
    {
        int tid = omp_get_thread_num();
        struct wcache *c = &P->caches[tid];
#pragma omp for schedule(dynamic, 4)
        for (size_t i = 0; i < total; i++) {
            if (wc_segment(P, c, tid, b->texts[i], b->lens[i], &b->ids[i], &b->nids[i], &refs[i], &nrefs[i])) {
#pragma omp atomic write
                failed = 1;
            }
        }
    }
    if (failed) {
        rc = tl_fail(err, "out of memory");
        goto done;
    }
    /* B: encode the missing words (each once) in one parallel call */
    base = calloc((size_t)P->nt + 1, sizeof *base);
    if (!base) {
        rc = tl_fail(err, "out of memory");
        goto done;
    }
    size_t arena_len = 0;
    for (int t = 0; t < P->nt; t++) {
        base[t + 1] = base[t] + P->caches[t].n_miss;
        for (size_t k = 0; k < P->caches[t].n_miss; k++) arena_len += P->caches[t].miss[k].n + 1;
    }
    n_miss = base[P->nt];
    if (n_miss) {
        /* one entry per distinct (word, first) over all threads: alias[g] is its index */
        alias = malloc(n_miss * sizeof *alias);
        usrc = malloc(n_miss * sizeof *usrc);
        uhash = malloc(n_miss * sizeof *uhash);
        mt = malloc(n_miss * sizeof *mt);
        ml = malloc(n_miss * sizeof *ml);
        mids = calloc(n_miss, sizeof *mids);
        mn = calloc(n_miss, sizeof *mn);
        arena = malloc(arena_len);
        if (!alias || !usrc || !uhash || !mt || !ml || !mids || !mn || !arena) {
            rc = tl_fail(err, "out of memory");
            goto done;
        }
        int bits = 10;
        while (((size_t)1 << bits) < 2 * n_miss) bits++;
        wtable uniq;
        int have_uniq = !wt_init(&uniq, bits, arena_len + 1); /* without it: duplicates are encoded twice */
        size_t ap = 0;
        for (int t = 0; t < P->nt; t++)
            for (size_t k = 0; k < P->caches[t].n_miss; k++) {
                const miss_word *m = &P->caches[t].miss[k];
                size_t g = base[t] + k;
                unsigned klen = m->n | (m->first ? WC_FIRST : 0);
                uint64_t h = FNV_OFF ^ (uint64_t)m->first;
                for (uint32_t q = 0; q < m->n; q++) h = (h ^ (unsigned char)m->w[q]) * FNV_MUL;
                h |= 1;
                int keyed = have_uniq && m->n <= WC_MAX_WORD;
                const wc_slot *sl = keyed ? wt_find(&uniq, h, m->w, klen) : NULL;
                if (sl) {
                    alias[g] = sl->voff;
                    continue;
                }
                size_t u = n_uniq++;
                alias[g] = u;
                usrc[u] = m;
                uhash[u] = h;
                if (keyed && !wt_add(&uniq, h, m->w, klen, NULL, 0))
                    ((wc_slot *)wt_find(&uniq, h, m->w, klen))->voff = (uint32_t)u;
                if (m->first) {
                    mt[u] = m->w;
                    ml[u] = m->n;
                } else { /* "\n" + word; the newline's ids are removed below */
                    arena[ap] = '\n';
                    memcpy(arena + ap + 1, m->w, m->n);
                    mt[u] = arena + ap;
                    ml[u] = m->n + 1;
                    ap += m->n + 1;
                }
            }
        if (have_uniq) wt_free(&uniq);
        if (tl_tokenizer_encode_batch(P->tok, mt, ml, n_uniq, 0, P->nt, mids, mn, err)) {
            rc = -1;
            goto done;
        }
        /* strip the newline ids and remember the words for later batches */
        for (size_t u = 0; u < n_uniq; u++) {
            const miss_word *m = usrc[u];
            if (!m->first) {
                if (mn[u] < (size_t)P->n_nl || memcmp(mids[u], P->nl_ids, sizeof(int) * (size_t)P->n_nl)) {
                    rc = tl_fail(err, "internal error: a word after a newline did not start with the newline's ids");
                    goto done;
                }
                memmove(mids[u], mids[u] + P->n_nl, (mn[u] - (size_t)P->n_nl) * sizeof(int));
                mn[u] -= (size_t)P->n_nl;
            }
            if (m->n > WC_MAX_WORD) continue;
            unsigned klen = m->n | (m->first ? WC_FIRST : 0);
            if (!P->shared.slots && wt_init(&P->shared, 18, (size_t)1 << 22)) continue; /* no table: slower */
            if (wt_find(&P->shared, uhash[u], m->w, klen)) continue;
            if (wt_add(&P->shared, uhash[u], m->w, klen, mids[u], mn[u])) {
                wt_clear(&P->shared); /* full: start over (only the speed depends on it) */
                wt_add(&P->shared, uhash[u], m->w, klen, mids[u], mn[u]);
            }
        }
    }
    /* C: replace the markers, and spot-check a sample of segments against whole-segment encoding */
    {
        tl_error first_err = {{0}};
        size_t fail_at = SIZE_MAX;
#pragma omp parallel num_threads(P->nt)
        {
            tl_error e;
#pragma omp for schedule(dynamic, 4)
            for (size_t i = 0; i < total; i++) {
                int f;
#pragma omp atomic read
                f = failed;
                if (f) continue;
                int r = 0;
                if (nrefs[i]) {
                    size_t len = 0;
                    for (size_t j = 0; j < b->nids[i]; j++) {
                        int v = b->ids[i][j];
                        if (v >= 0) len++;
                        else {
                            const miss_ref *mr = &refs[i][-v - 1];
                            len += mn[alias[base[mr->tid] + mr->idx]];
                        }
                    }
                    int *out = malloc((len ? len : 1) * sizeof *out);
                    if (!out) r = tl_fail(&e, "out of memory");
                    size_t o = 0;
                    for (size_t j = 0; out && j < b->nids[i]; j++) {
                        int v = b->ids[i][j];
                        if (v >= 0) out[o++] = v;
                        else {
                            const miss_ref *mr = &refs[i][-v - 1];
                            size_t g = alias[base[mr->tid] + mr->idx];
                            memcpy(out + o, mids[g], mn[g] * sizeof *out);
                            o += mn[g];
                        }
                    }
                    if (out) {
                        free(b->ids[i]);
                        b->ids[i] = out;
                        b->nids[i] = len;
                    }
                }
                if (!r && (P->seg_counter + i) % 2048 == 0) {
                    int *ref;
                    size_t nref;
                    r = tl_tokenizer_encode(P->tok, b->texts[i], b->lens[i], 0, &ref, &nref, &e);
                    if (!r && (nref != b->nids[i] || memcmp(ref, b->ids[i], nref * sizeof *ref)))
                        r = tl_fail(&e, "internal error: word-by-word ids differ from whole-segment ids");
                    if (!r) free(ref);
                }
                if (r) {
#pragma omp critical(tl_prep_fail)
                    {
                        if (i < fail_at) {
                            fail_at = i;
                            first_err = e;
                        }
                        failed = 1;
                    }
                }
            }
        }
        if (failed) {
            *err = first_err;
            rc = -1;
        }
    }
    P->seg_counter += total;
done:
    for (int t = 0; t < P->nt; t++) {
        wt_clear(&P->caches[t].seen);
        P->caches[t].n_miss = 0;
    }
    for (size_t i = 0; refs && i < total; i++) free(refs[i]);
    for (size_t g = 0; mids && g < n_uniq; g++) free(mids[g]);
    free(alias);
    free(usrc);
    free(uhash);
    free(refs);
    free(nrefs);
    free(base);
    free(mt);
    free(ml);
    free(mids);
    free(mn);
    free(arena);
    return rc;
}

static int tokenize_batch(prep *P, batch *b, tl_error *err) {
    /* flatten the segments */
    size_t total = 0;
    for (size_t i = 0; i < b->n_recs; i++) total += (size_t)b->recs[i].nseg;
    if (total > b->segs_cap) {
        size_t cap = total + total / 2 + 64;
        const char **t = realloc(b->texts, sizeof *t * cap);
        if (t) b->texts = t;
        size_t *l = realloc(b->lens, sizeof *l * cap);
        if (l) b->lens = l;
        int **d = realloc(b->ids, sizeof *d * cap);
        if (d) b->ids = d;
        size_t *n = realloc(b->nids, sizeof *n * cap);
        if (n) b->nids = n;
        if (!t || !l || !d || !n) return tl_fail(err, "out of memory");
        b->segs_cap = cap;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n_recs; i++)
        for (int j = 0; j < b->recs[i].nseg; j++, k++) {
            b->texts[k] = b->recs[i].segs[j].p;
            b->lens[k] = b->recs[i].segs[j].len;
        }
    b->n_segs = 0;
    if (P->tok && P->word_cache) {
        b->n_segs = total;
        if (word_tokenize(P, b, total, err)) return -1;
    } else if (P->tok) {
        if (total && tl_tokenizer_encode_batch(P->tok, b->texts, b->lens, total, 0, P->nt, b->ids, b->nids, err))
            return -1;
    } else {
        int failed = 0;
#pragma omp parallel for schedule(dynamic, 16) num_threads(P->nt)
        for (size_t i = 0; i < total; i++) {
            int *ids = malloc(sizeof(int) * (b->lens[i] ? b->lens[i] : 1));
            b->ids[i] = ids;
            b->nids[i] = b->lens[i];
            if (!ids) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            const unsigned char *s = (const unsigned char *)b->texts[i];
            for (size_t j = 0; j < b->lens[i]; j++) ids[j] = s[j] + 3;
        }
        b->n_segs = total;
        if (failed) return tl_fail(err, "out of memory");
    }
    b->n_segs = total;
    k = 0;
    for (size_t i = 0; i < b->n_recs; i++)
        for (int j = 0; j < b->recs[i].nseg; j++, k++) {
            b->recs[i].segs[j].ids = b->ids[k];
            b->recs[i].segs[j].n = b->nids[k];
        }
    return 0;
}

/* ------------------------------------------------------------------ manifest */

static void add_u64(cJSON *o, const char *k, uint64_t v) { cJSON_AddNumberToObject(o, k, (double)v); }

static cJSON *input_json(const tl_prepare_input *in) {
    cJSON *o = cJSON_CreateObject();
    if (in->path) cJSON_AddStringToObject(o, "path", in->path);
    if (in->format) cJSON_AddStringToObject(o, "format", in->format);
    add_u64(o, "file_bytes", in->file_bytes);
    add_u64(o, "raw_bytes", in->raw_bytes);
    add_u64(o, "text_bytes", in->text_bytes);
    add_u64(o, "documents", in->documents);
    add_u64(o, "train_documents", in->train_documents);
    add_u64(o, "val_documents", in->val_documents);
    add_u64(o, "tokens", in->tokens);
    cJSON *bad = cJSON_AddObjectToObject(o, "skipped");
    add_u64(bad, "malformed_json", in->malformed_json);
    add_u64(bad, "missing_text", in->missing_text);
    add_u64(bad, "empty", in->empty);
    add_u64(bad, "filtered", in->filtered);
    add_u64(bad, "too_long", in->too_long);
    cJSON *rep = cJSON_AddObjectToObject(o, "repaired");
    add_u64(rep, "invalid_utf8_documents", in->invalid_utf8_docs);
    add_u64(rep, "invalid_utf8_bytes", in->invalid_utf8_bytes);
    add_u64(rep, "forced_splits", in->forced_splits);
    add_u64(o, "blank_lines", in->blank_lines);
    if (in->path) cJSON_AddBoolToObject(o, "truncated", in->truncated);
    else add_u64(o, "truncated_inputs", (uint64_t)in->truncated); /* the total: a count */
    if (in->error[0]) cJSON_AddStringToObject(o, "error", in->error);
    return o;
}

static cJSON *split_json(const shard_set *s) {
    cJSON *o = cJSON_CreateObject();
    add_u64(o, "samples", s->split->samples);
    add_u64(o, "tokens", s->split->tokens);
    add_u64(o, "documents", s->split->documents);
    cJSON *arr = cJSON_AddArrayToObject(o, "shards");
    for (int i = 0; i < s->n_shards; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "file", s->shards[i].file);
        add_u64(e, "samples", s->shards[i].samples);
        add_u64(e, "bytes", s->shards[i].bytes);
        char hex[20];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->shards[i].checksum);
        cJSON_AddStringToObject(e, "fnv1a64", hex);
        cJSON_AddItemToArray(arr, e);
    }
    return o;
}

static int write_manifest(prep *P, tl_error *err) {
    const tl_prepare_opts *o = P->o;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "tinyllama-token-shards");
    cJSON_AddNumberToObject(m, "version", 1);
    cJSON *tk = cJSON_AddObjectToObject(m, "tokenizer");
    if (P->tok) {
        const char *base = strrchr(o->tokenizer, '/');
        cJSON_AddStringToObject(tk, "file", base ? base + 1 : o->tokenizer);
        cJSON_AddStringToObject(tk, "fnv1a64", tl_tokenizer_hash_hex(P->tok));
    } else {
        cJSON_AddStringToObject(tk, "file", "byte-level");
        cJSON_AddStringToObject(tk, "fnv1a64", "byte-level-259");
    }
    cJSON_AddNumberToObject(tk, "vocab_size", P->vocab);
    cJSON_AddNumberToObject(tk, "bos_id", P->bos);
    cJSON_AddNumberToObject(tk, "eos_id", P->eos);
    cJSON *s = cJSON_AddObjectToObject(m, "settings");
    cJSON_AddNumberToObject(s, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(s, "sample_tokens", o->seq_len + 1);
    cJSON_AddNumberToObject(s, "token_bytes", P->vocab <= 65536 ? 2 : 4);
    cJSON_AddBoolToObject(s, "bos", o->add_bos);
    cJSON_AddBoolToObject(s, "eos", o->add_eos);
    cJSON_AddStringToObject(s, "text_field", o->text_field);
    cJSON *ex = cJSON_AddArrayToObject(s, "exclude");
    for (int i = 0; i < o->n_exclude; i++) cJSON_AddItemToArray(ex, cJSON_CreateString(o->exclude[i]));
    cJSON_AddStringToObject(s, "txt_documents", o->txt_mode == TL_TXT_PARAGRAPHS ? "paragraphs" : "file");
    cJSON_AddStringToObject(s, "split_by", o->split_by == TL_SPLIT_SAMPLES ? "samples" : "documents");
    cJSON_AddNumberToObject(s, "val_fraction", o->val_fraction);
    add_u64(s, "val_count", o->val_count);
    add_u64(s, "shard_samples", o->shard_samples);
    add_u64(s, "max_doc_bytes", o->max_doc_bytes);
    add_u64(s, "segment_bytes", P->seg_target);
    cJSON_AddBoolToObject(s, "segments_exact", P->exact);
    cJSON_AddStringToObject(s, "invalid_utf8", "replaced by U+FFFD per maximal ill-formed subpart");
    cJSON *ins = cJSON_AddArrayToObject(m, "inputs");
    for (int i = 0; i < P->r->n_inputs; i++) cJSON_AddItemToArray(ins, input_json(&P->r->inputs[i]));
    cJSON_AddItemToObject(m, "total", input_json(&P->r->total));
    cJSON *sp = cJSON_AddObjectToObject(m, "splits");
    cJSON_AddItemToObject(sp, "train", split_json(&P->sets[0]));
    cJSON_AddItemToObject(sp, "val", split_json(&P->sets[1]));
    add_u64(m, "dropped_tail_tokens", P->r->dropped_tail_tokens);
    char *text = cJSON_Print(m);
    cJSON_Delete(m);
    if (!text) return tl_fail(err, "out of memory");
    snprintf(P->r->manifest, sizeof P->r->manifest, "%s/manifest.json", P->sets[0].dir);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print's NUL becomes the final newline */
    int rc = tl_write_file_atomic(P->r->manifest, text, len + 1, err);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ the output directory
 *
 * A run writes OUT.prepare-new and swaps it in only when it is complete:
 * rename OUT -> OUT.prepare-old, OUT.prepare-new -> OUT, remove OUT.prepare-old.
 * A crash at any moment leaves the old or the new complete data set (between
 * the two renames, the old one as OUT.prepare-old); the next run finishes or
 * undoes what the crash interrupted (recover_out) before it starts. */

/* Is a directory entry something prepare writes?  manifest.json,
 * train-/val-NNNNN.bin and the temporary files of both. */
static int is_ours(const char *n) {
    if (!strcmp(n, "manifest.json") || !strncmp(n, "manifest.json.tmp.", 18)) return 1;
    const char *p = !strncmp(n, "train-", 6) ? n + 6 : !strncmp(n, "val-", 4) ? n + 4 : NULL;
    if (!p || *p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    return !strcmp(p, ".bin") || !strncmp(p, ".bin.tmp.", 9);
}

/* Fails naming the first entry of dir that prepare did not write. */
static int check_ours(const char *dir, tl_error *err) {
    DIR *d = opendir(dir);
    if (!d) return tl_fail(err, "%s: cannot read directory: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !is_ours(e->d_name))
            rc = tl_fail(err, "%s: holds '%s', which `prepare` did not write; prepare replaces the whole directory, "
                              "so give a new or empty one (or one it made)", dir, e->d_name);
    closedir(d);
    return rc;
}

/* Removes a directory prepare wrote (refused if anything else is inside). */
static int remove_ours(const char *dir, tl_error *err) {
    if (check_ours(dir, err)) return -1;
    DIR *d = opendir(dir);
    if (!d) return tl_fail(err, "%s: cannot read directory: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_ours(e->d_name)) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    if (rmdir(dir) != 0) return tl_fail(err, "%s: cannot remove: %s", dir, strerror(errno));
    return 0;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* out without trailing slashes, its siblings .prepare-new and .prepare-old, and its parent. */
static int out_paths(const char *dir, char *out, char *nw, char *old, char *parent, size_t cap, tl_error *err) {
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/') l--;
    if (l + 16 >= cap || l + 16 >= 4096) return tl_fail(err, "%s: path too long", dir);
    memcpy(out, dir, l);
    out[l] = 0;
    struct stat sb;
    if (lstat(out, &sb) == 0 && S_ISLNK(sb.st_mode)) { /* replace the directory it names, not the link */
        char *real = realpath(out, NULL);
        if (!real) return tl_fail(err, "%s: %s", dir, strerror(errno));
        l = strlen(real);
        int too_long = l + 16 >= cap || l + 16 >= 4096;
        if (!too_long) memcpy(out, real, l + 1);
        free(real);
        if (too_long) return tl_fail(err, "%s: path too long", dir);
    }
    const char *base = strrchr(out, '/');
    base = base ? base + 1 : out;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return tl_fail(err, "%s: give the output directory by its name (it is replaced as a whole)", dir);
    memcpy(nw, out, l);
    memcpy(nw + l, ".prepare-new", 13);
    memcpy(old, out, l);
    memcpy(old + l, ".prepare-old", 13);
    if (base == out) snprintf(parent, cap, ".");
    else if (base == out + 1) snprintf(parent, cap, "/");
    else snprintf(parent, cap, "%.*s", (int)(base - 1 - out), out);
    return 0;
}

/* Cleans up after an earlier run that was killed: its unfinished output goes,
 * an interrupted swap is finished (the new one is in place) or undone (the old
 * one goes back).  Then out, if it exists, must hold nothing but a data set. */
static int recover_out(const char *out, const char *nw, const char *old, tl_error *err) {
    if (is_dir(nw) && remove_ours(nw, err)) return -1;
    if (is_dir(old)) {
        if (is_dir(out)) {
            if (remove_ours(old, err)) return -1;
        } else if (rename(old, out) != 0) {
            return tl_fail(err, "%s: cannot move the earlier data set back to %s: %s", old, out, strerror(errno));
        }
    }
    struct stat sb;
    if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode)) return tl_fail(err, "%s: exists and is not a directory", out);
    return is_dir(out) ? check_ours(out, err) : 0;
}

static int swap_in(const char *out, const char *nw, const char *old, const char *parent, tl_error *err) {
    if (tl_fsync_dir(nw, err)) return -1; /* the shards' and the manifest's names are on disk */
    int had = is_dir(out);
    if (had && rename(out, old) != 0) return tl_fail(err, "%s: cannot move aside: %s", out, strerror(errno));
    if (rename(nw, out) != 0) {
        int e = errno;
        if (had) rename(old, out);
        return tl_fail(err, "%s: cannot move into place: %s", nw, strerror(e));
    }
    if (tl_fsync_dir(parent, err)) return -1;
    tl_error ignored; /* a leftover old copy is removed by the next run */
    if (had) remove_ours(old, &ignored);
    return 0;
}

/* ------------------------------------------------------------------ driver */

/* The error for a run whose inputs gave not one sample: what became of them. */
static int nothing_written(const tl_prepare_opts *o, const tl_prepare_result *r, const char *out, tl_error *err) {
    const tl_prepare_input *t = &r->total;
    char why[600] = "", field[300];
    size_t n = 0;
    snprintf(field, sizeof field, "without a string field '%s'", o->text_field);
    const struct {
        uint64_t v;
        const char *what;
    } counts[] = {{t->missing_text, field},  {t->malformed_json, "malformed JSON"}, {t->empty, "empty"},
                  {t->filtered, "filtered out"}, {t->too_long, "too long"}, {t->truncated, "truncated input file(s)"}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i].v && n < sizeof why)
            n += (size_t)snprintf(why + n, sizeof why - n, "%s%llu %s", n ? ", " : " (skipped: ",
                                  (unsigned long long)counts[i].v, counts[i].what);
    if (n && n < sizeof why - 1) strcat(why, ")");
    return tl_fail(err, "the inputs gave %llu documents and %llu tokens%s: not one sample of %d tokens; nothing written, "
                        "%s left as it was (--allow-empty writes an empty data set)",
                   (unsigned long long)t->documents, (unsigned long long)t->tokens, why, o->seq_len + 1, out);
}

static void progress(prep *P, int done) {
    const tl_prepare_opts *o = P->o;
    if (!o->progress) return;
    double now = tl_now();
    if (!done && now - P->last_progress < o->progress_every) return;
    P->last_progress = now;
    tl_prepare_progress pr = {0};
    pr.bytes_total = 0;
    for (int i = 0; i < P->files.n; i++) pr.bytes_total += P->files.v[i].size;
    pr.bytes_read = atomic_load(&P->pub_bytes);
    for (int i = 0; i < P->r->n_inputs; i++) {
        pr.text_bytes += P->r->inputs[i].text_bytes;
        pr.documents += P->r->inputs[i].documents;
        pr.tokens += P->r->inputs[i].tokens;
    }
    pr.elapsed = now - P->t0;
    pr.n_files = P->files.n;
    int cur = atomic_load(&P->pub_file);
    pr.file_index = cur < P->files.n ? cur : P->files.n - 1;
    pr.file = P->files.n ? P->files.v[pr.file_index].path : "";
    pr.done = done;
    o->progress(&pr, o->progress_user);
}

/* Parses and tokenizes one batch (parallel). */
static int process_batch(prep *P, batch *b, tl_error *err) {
    int oom = 0;
#pragma omp parallel for schedule(dynamic, 8) num_threads(P->nt)
    for (size_t i = 0; i < b->n_recs; i++)
        if (parse_record(P, b, &b->recs[i])) {
#pragma omp atomic write
            oom = 1;
        }
    if (oom) return tl_fail(err, "out of memory");
    return tokenize_batch(P, b, err);
}

/* One thread: read, process, pack, batch after batch. */
static int run_serial(prep *P, batch *b, size_t budget, tl_error *err) {
    int rc = 0;
    while (!rc && P->cur < P->files.n) {
        batch_reset(b);
        rc = read_batch(P, b, budget, err);
        if (!rc) rc = process_batch(P, b, err);
        if (!rc) rc = pack_batch(P, b, err);
        progress(P, 0);
    }
    return rc;
}

/* Several threads: a reader thread fills batches, this thread parses and
 * tokenizes them with the OpenMP team, a packer thread packs them in order, so
 * the serial stages overlap the parallel one.  Batches go round through three
 * FIFO queues (free -> read -> tokenized -> free); the output is the same as
 * run_serial's. */
#define PIPE_BATCHES 4

typedef struct {
    batch *v[PIPE_BATCHES];
    int head, n;
} bqueue;

typedef struct {
    prep *P;
    size_t budget;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bqueue free_q, read_q, tok_q;
    int reader_done, tok_done, failed;
    tl_error err;
} pipeline;

static void q_push(bqueue *q, batch *b) { q->v[(q->head + q->n++) % PIPE_BATCHES] = b; }
static batch *q_pop(bqueue *q) {
    batch *b = q->v[q->head];
    q->head = (q->head + 1) % PIPE_BATCHES;
    q->n--;
    return b;
}

static void pipe_fail(pipeline *pl, const tl_error *e) { /* call with mu held */
    if (!pl->failed) pl->err = *e;
    pl->failed = 1;
    pthread_cond_broadcast(&pl->cv);
}

static void *reader_main(void *arg) {
    pipeline *pl = arg;
    prep *P = pl->P;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (!pl->free_q.n && !pl->failed) pthread_cond_wait(&pl->cv, &pl->mu);
        if (pl->failed || P->cur >= P->files.n) {
            pl->reader_done = 1;
            pthread_cond_broadcast(&pl->cv);
            pthread_mutex_unlock(&pl->mu);
            return NULL;
        }
        batch *b = q_pop(&pl->free_q);
        pthread_mutex_unlock(&pl->mu);
        tl_error e;
        int rc = read_batch(P, b, pl->budget, &e);
        pthread_mutex_lock(&pl->mu);
        if (rc) pipe_fail(pl, &e);
        else q_push(&pl->read_q, b);
        pthread_cond_broadcast(&pl->cv);
        pthread_mutex_unlock(&pl->mu);
    }
}

static void *packer_main(void *arg) {
    pipeline *pl = arg;
    prep *P = pl->P;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (!pl->tok_q.n && !pl->tok_done && !pl->failed) pthread_cond_wait(&pl->cv, &pl->mu);
        if (pl->failed || !pl->tok_q.n) {
            pthread_mutex_unlock(&pl->mu);
            return NULL;
        }
        batch *b = q_pop(&pl->tok_q);
        pthread_mutex_unlock(&pl->mu);
        tl_error e;
        int rc = pack_batch(P, b, &e);
        progress(P, 0);
        batch_reset(b);
        pthread_mutex_lock(&pl->mu);
        if (rc) pipe_fail(pl, &e);
        else q_push(&pl->free_q, b);
        pthread_cond_broadcast(&pl->cv);
        pthread_mutex_unlock(&pl->mu);
    }
}

static int run_pipelined(prep *P, size_t budget, tl_error *err) {
    pipeline pl;
    memset(&pl, 0, sizeof pl);
    pl.P = P;
    pl.budget = budget;
    batch pool[PIPE_BATCHES];
    memset(pool, 0, sizeof pool);
    for (int i = 0; i < PIPE_BATCHES; i++) q_push(&pl.free_q, &pool[i]);
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.cv, NULL);
    pthread_t reader, packer;
    int have_reader = pthread_create(&reader, NULL, reader_main, &pl) == 0;
    int have_packer = have_reader && pthread_create(&packer, NULL, packer_main, &pl) == 0;
    if (!have_packer) {
        tl_error e;
        tl_fail(&e, "cannot start threads");
        pthread_mutex_lock(&pl.mu);
        pipe_fail(&pl, &e);
        pthread_mutex_unlock(&pl.mu);
    }
    while (have_packer) {
        pthread_mutex_lock(&pl.mu);
        while (!pl.read_q.n && !pl.reader_done && !pl.failed) pthread_cond_wait(&pl.cv, &pl.mu);
        if (pl.failed || !pl.read_q.n) {
            pl.tok_done = 1;
            pthread_cond_broadcast(&pl.cv);
            pthread_mutex_unlock(&pl.mu);
            break;
        }
        batch *b = q_pop(&pl.read_q);
        pthread_mutex_unlock(&pl.mu);
        tl_error e;
        int rc = process_batch(P, b, &e);
        pthread_mutex_lock(&pl.mu);
        if (rc) pipe_fail(&pl, &e);
        else q_push(&pl.tok_q, b);
        pthread_cond_broadcast(&pl.cv);
        pthread_mutex_unlock(&pl.mu);
    }
    if (have_reader) pthread_join(reader, NULL);
    if (have_packer) pthread_join(packer, NULL);
    for (int i = 0; i < PIPE_BATCHES; i++) batch_free(&pool[i]);
    pthread_mutex_destroy(&pl.mu);
    pthread_cond_destroy(&pl.cv);
    if (pl.failed) {
        *err = pl.err;
        return -1;
    }
    return 0;
}

static int setup_tokenizer(prep *P, tl_error *err) {
    const tl_prepare_opts *o = P->o;
    if (o->byte_level) {
        P->vocab = BYTE_VOCAB;
        P->bos = 1;
        P->eos = 2;
        P->nl_ids[0] = '\n' + 3;
        P->n_nl = 1;
        P->exact = 1;
        return 0;
    }
    if (!o->tokenizer) return tl_fail(err, "no tokenizer given (a tokenizer.model / tokenizer.json, or byte-level)");
    P->tok = tl_tokenizer_load(o->tokenizer, err);
    if (!P->tok) return -1;
    P->vocab = tl_tokenizer_vocab_size(P->tok);
    P->bos = tl_tokenizer_bos_id(P->tok);
    P->eos = tl_tokenizer_eos_id(P->tok);
    if (o->add_bos && P->bos < 0) return tl_fail(err, "%s: the tokenizer has no BOS id", o->tokenizer);
    if (o->add_eos && P->eos < 0) return tl_fail(err, "%s: the tokenizer has no EOS id", o->tokenizer);
    /* newline-separable? no piece may contain a newline and whitespace must be kept as is */
    tl_tokenizer_info info;
    tl_tokenizer_get_info(P->tok, &info);
    P->exact = !info.remove_extra_whitespaces;
    for (int id = 0; id < P->vocab && P->exact; id++) {
        const char *pc = tl_tokenizer_piece(P->tok, id);
        if (pc && strchr(pc, '\n')) P->exact = 0;
    }
    int *ids;
    size_t n;
    if (tl_tokenizer_encode(P->tok, "\n", 1, 0, &ids, &n, err)) return -1;
    if (n < 1 || n > 16) P->exact = 0;
    else memcpy(P->nl_ids, ids, n * sizeof *ids);
    P->n_nl = (int)n;
    free(ids);
    P->word_cache = P->exact && !o->no_word_cache && word_separable(P->tok);
    return 0;
}

static const char *format_name(const in_file *f) {
    static const char *const names[3][3] = {{"", "", ""},
                                            {"jsonl", "jsonl.zst", "jsonl.gz"},
                                            {"txt", "txt.zst", "txt.gz"}};
    return names[f->format][f->comp];
}

int tl_prepare_run(const tl_prepare_opts *o, tl_prepare_result *r, tl_error *err) {
    memset(r, 0, sizeof *r);
    if (!o->out_dir) return tl_fail(err, "no output directory");
    if (o->seq_len < 1 || o->seq_len > (1 << 24)) return tl_fail(err, "sequence length %d out of range", o->seq_len);
    if (o->shard_samples < 1) return tl_fail(err, "samples per shard must be positive");
    if (o->val_fraction < 0 || o->val_fraction >= 1) return tl_fail(err, "validation fraction must be in [0, 1)");
    if (!o->text_field || !*o->text_field) return tl_fail(err, "empty text field name");
    for (int i = 0; i < o->n_exclude; i++)
        if (!strchr(o->exclude[i], '=') || o->exclude[i][0] == '=')
            return tl_fail(err, "filter '%s' is not KEY=VALUE", o->exclude[i]);
    if (o->n_inputs < 1) return tl_fail(err, "no inputs");
    prep *P = calloc(1, sizeof *P);
    if (!P) return tl_fail(err, "out of memory");
    P->o = o;
    P->r = r;
    P->t0 = tl_now();
    batch b = {0};
    int rc = setup_tokenizer(P, err);
    for (int i = 0; i < o->n_inputs && !rc; i++) rc = add_path(&P->files, o->inputs[i], o->format, 0, 0, err);
    if (!rc && P->files.n == 0) rc = tl_fail(err, "%s: no input files found", o->inputs[0]);
    if (!rc) {
        r->n_inputs = P->files.n;
        r->inputs = calloc((size_t)P->files.n, sizeof *r->inputs);
        if (!r->inputs) rc = tl_fail(err, "out of memory");
    }
    for (int i = 0; i < P->files.n && !rc; i++) {
        r->inputs[i].path = strdup(P->files.v[i].path);
        r->inputs[i].format = format_name(&P->files.v[i]);
        r->inputs[i].file_bytes = P->files.v[i].size;
    }
    /* sizes */
    P->nt = o->nthreads > 0 ? o->nthreads : omp_get_max_threads();
    if (!rc && P->word_cache && !(P->caches = calloc((size_t)P->nt, sizeof *P->caches)))
        rc = tl_fail(err, "out of memory");
    P->seg_target = o->segment_bytes ? o->segment_bytes : 16384;
    P->seg_max = P->seg_target * 64 > ((size_t)1 << 20) ? P->seg_target * 64 : ((size_t)1 << 20);
    P->rec_target = P->seg_target * 16;
    if (!P->exact) /* whole documents (up to max_doc_bytes) */
        P->seg_target = P->seg_max = P->rec_target = o->max_doc_bytes;
    size_t budget = o->batch_bytes ? o->batch_bytes : ((size_t)2 << 20) * (size_t)P->nt;
    if (budget < ((size_t)4 << 20) && !o->batch_bytes) budget = (size_t)4 << 20;
    /* the data set is written beside the old one and swapped in when complete (see swap_in) */
    char out[4096], nw[4096], old[4096], parent[4096];
    int made_new = 0;
    if (!rc) rc = out_paths(o->out_dir, out, nw, old, parent, sizeof out, err);
    if (!rc) rc = recover_out(out, nw, old, err);
    if (!rc) rc = tl_mkdir_p(nw, err);
    made_new = !rc;
    static const char *const names[2] = {"train", "val"};
    for (int k = 0; k < 2 && !rc; k++) {
        shard_set *s = &P->sets[k];
        snprintf(s->dir, sizeof s->dir, "%s", nw);
        s->name = names[k];
        s->per_shard = o->shard_samples;
        s->seq_len = o->seq_len;
        s->vocab = P->vocab;
        s->split = k ? &r->val : &r->train;
        P->sb[k].buf = malloc(sizeof(int) * ((size_t)o->seq_len + 1));
        if (!P->sb[k].buf) rc = tl_fail(err, "out of memory");
    }
    if (!rc) rc = P->nt > 1 ? run_pipelined(P, budget, err) : run_serial(P, &b, budget, err);
    if (!rc) {
        size_t dropped = (size_t)(P->sb[0].n + P->sb[1].n);
        rc = set_close(&P->sets[0], &dropped, err);
        if (!rc) rc = set_close(&P->sets[1], &dropped, err);
        r->dropped_tail_tokens = dropped;
    }
    if (!rc) {
        tl_prepare_input *t = &r->total;
        for (int i = 0; i < r->n_inputs; i++) {
            tl_prepare_input *in = &r->inputs[i];
            t->file_bytes += in->file_bytes;
            t->raw_bytes += in->raw_bytes;
            t->text_bytes += in->text_bytes;
            t->documents += in->documents;
            t->train_documents += in->train_documents;
            t->val_documents += in->val_documents;
            t->tokens += in->tokens;
            t->blank_lines += in->blank_lines;
            t->malformed_json += in->malformed_json;
            t->missing_text += in->missing_text;
            t->empty += in->empty;
            t->filtered += in->filtered;
            t->too_long += in->too_long;
            t->invalid_utf8_docs += in->invalid_utf8_docs;
            t->invalid_utf8_bytes += in->invalid_utf8_bytes;
            t->forced_splits += in->forced_splits;
            if (in->truncated) {
                t->truncated++;
                r->bad_inputs++;
            }
        }
        r->train.documents = t->train_documents;
        r->val.documents = t->val_documents;
        if (r->train.samples + r->val.samples == 0 && !o->allow_empty)
            rc = nothing_written(o, r, out, err);
    }
    if (!rc) rc = write_manifest(P, err);
    if (!rc) rc = swap_in(out, nw, old, parent, err);
    if (!rc) {
        made_new = 0;
        snprintf(r->manifest, sizeof r->manifest, "%s/manifest.json", out);
    }
    if (!rc) progress(P, 1);
    /* cleanup */
    for (int k = 0; k < 2; k++) {
        if (P->sets[k].open) tl_shard_writer_abort(&P->sets[k].w);
        free(P->sets[k].shards);
        free(P->sb[k].buf);
    }
    if (P->cur_open) {
        stream_close(&P->lr.s);
        free(P->lr.buf);
    }
    if (made_new) { /* a failed run leaves the old data set as it was and nothing of its own */
        tl_error ignored;
        remove_ours(nw, &ignored);
    }
    batch_free(&b);
    for (int i = 0; i < P->files.n; i++) free(P->files.v[i].path);
    free(P->files.v);
    for (int i = 0; P->caches && i < P->nt; i++) wc_free(&P->caches[i]);
    wt_free(&P->shared);
    free(P->caches);
    tl_tokenizer_free(P->tok);
    free(P);
    if (rc) tl_prepare_result_free(r);
    return rc;
}

void tl_prepare_result_free(tl_prepare_result *r) {
    for (int i = 0; i < r->n_inputs; i++) free(r->inputs[i].path);
    free(r->inputs);
    r->inputs = NULL;
    r->n_inputs = 0;
}

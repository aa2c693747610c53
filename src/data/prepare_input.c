/* prepare_input.c - the input side of prepare (prepare.c): UTF-8 repair, the
 * list of input files (directories and globs expanded), decompressing streams
 * and the line reader on top of them. */
#include "prepare_internal.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
size_t tl_prep_utf8_cut(const unsigned char *s, size_t pos) {
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

int tl_prep_add_path(file_list *fl, const char *path, int forced, int depth, int from_dir, tl_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!from_dir && strpbrk(path, "*?[")) {
            glob_t g;
            if (glob(path, 0, NULL, &g) != 0) return tl_fail(err, "%s: pattern matches no files", path);
            int rc = 0;
            for (size_t i = 0; i < g.gl_pathc && !rc; i++) rc = tl_prep_add_path(fl, g.gl_pathv[i], forced, depth, 0, err);
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
    for (size_t i = 0; i < n && !rc; i++) rc = tl_prep_add_path(fl, names[i], forced, depth + 1, 1, err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* ------------------------------------------------------------------ streams */


void tl_prep_stream_close(stream *s) {
    if (s->f) fclose(s->f);
    if (s->zd) ZSTD_freeDCtx(s->zd);
    if (s->zs_init) inflateEnd(&s->zs);
    free(s->in);
    memset(s, 0, sizeof *s);
}

int tl_prep_stream_open(stream *s, const in_file *f, tl_prepare_input *st, tl_error *err) {
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
    tl_prep_stream_close(s);
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


int tl_prep_lr_next(lreader *r, size_t max_piece, int utf8_cuts, const char **p, size_t *n, tl_error *err) {
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
            size_t cut = utf8_cuts ? tl_prep_utf8_cut((const unsigned char *)r->buf + r->start, max_piece) : max_piece;
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

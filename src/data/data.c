/* data.c - token shards and the training loader. */
#include "data.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rng.h"
#include "tokenizer.h"

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

/* ------------------------------------------------------------------ writing */

size_t tl_shard_sample_bytes(int seq_len, int token_bytes, int masked) {
    return (size_t)(seq_len + 1) * (size_t)(token_bytes + (masked ? 1 : 0));
}

int tl_shard_writer_open(tl_shard_writer *w, const char *path, int seq_len, int vocab_size, tl_error *err) {
    return tl_shard_writer_open_ex(w, path, seq_len, vocab_size, 0, err);
}

int tl_shard_writer_open_ex(tl_shard_writer *w, const char *path, int seq_len, int vocab_size, int masked,
                            tl_error *err) {
    memset(w, 0, sizeof *w);
    w->masked = masked;
    if (seq_len < 1 || vocab_size < 1) return tl_fail(err, "%s: seq_len and vocab_size must be positive", path);
    if ((size_t)snprintf(w->path, sizeof w->path, "%s", path) >= sizeof w->path) return tl_fail(err, "%s: path too long", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
    w->seq_len = seq_len;
    w->vocab_size = vocab_size;
    w->token_bytes = vocab_size <= 65536 ? 2 : 4;
    w->checksum = FNV_INIT;
    w->pending = malloc(sizeof(int) * (size_t)(seq_len + 1));
    if (!w->pending) return tl_fail(err, "out of memory");
    FILE *f = fopen(w->tmp, "wb");
    if (!f) {
        free(w->pending);
        return tl_fail(err, "%s: cannot create: %s", w->tmp, strerror(errno));
    }
    uint8_t hdr[TL_SHARD_HEADER] = {0}; /* rewritten on close */
    if (fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr) {
        fclose(f);
        unlink(w->tmp);
        free(w->pending);
        return tl_fail(err, "%s: write failed", w->tmp);
    }
    w->f = f;
    return 0;
}

int tl_shard_writer_add_masked(tl_shard_writer *w, const int *tokens, const uint8_t *mask, tl_error *err) {
    if (!w->masked) return tl_fail(err, "%s: not a masked shard", w->path);
    const size_t n = (size_t)w->seq_len + 1;
    uint8_t buf[4096 * 4];
    size_t pos = 0;
    for (size_t i = 0; i < 2 * n; i++) { /* the tokens, then the mask */
        if (i < n) {
            if (tokens[i] < 0 || tokens[i] >= w->vocab_size)
                return tl_fail(err, "%s: token %d outside the vocabulary [0, %d)", w->path, tokens[i], w->vocab_size);
            for (int b = 0; b < w->token_bytes; b++) buf[pos++] = (uint8_t)((uint32_t)tokens[i] >> (8 * b));
        } else {
            buf[pos++] = mask[i - n] ? 1 : 0;
        }
        if (pos + 4 > sizeof buf || i == 2 * n - 1) {
            w->checksum = fnv1a(w->checksum, buf, pos);
            if (fwrite(buf, 1, pos, w->f) != pos) return tl_fail(err, "%s: write failed", w->tmp);
            pos = 0;
        }
    }
    w->n_samples++;
    return 0;
}

int tl_shard_writer_add(tl_shard_writer *w, const int *tokens, size_t n, tl_error *err) {
    if (w->masked) return tl_fail(err, "%s: a masked shard takes whole samples", w->path);
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= w->vocab_size)
            return tl_fail(err, "%s: token %d outside the vocabulary [0, %d)", w->path, tokens[i], w->vocab_size);
        w->pending[w->n_pending++] = tokens[i];
        if (w->n_pending == w->seq_len + 1) {
            uint8_t buf[4 * 4096];
            size_t pos = 0;
            for (int j = 0; j < w->n_pending; j++) {
                uint32_t v = (uint32_t)w->pending[j];
                for (int b = 0; b < w->token_bytes; b++) buf[pos++] = (uint8_t)(v >> (8 * b));
                if (pos + 4 > sizeof buf || j == w->n_pending - 1) {
                    w->checksum = fnv1a(w->checksum, buf, pos);
                    if (fwrite(buf, 1, pos, w->f) != pos) return tl_fail(err, "%s: write failed", w->tmp);
                    pos = 0;
                }
            }
            w->n_pending = 0;
            w->n_samples++;
        }
    }
    return 0;
}

void tl_shard_writer_abort(tl_shard_writer *w) {
    if (w->f) fclose(w->f);
    unlink(w->tmp);
    free(w->pending);
    memset(w, 0, sizeof *w);
}

int tl_shard_writer_close(tl_shard_writer *w, size_t *dropped, tl_error *err) {
    if (dropped) *dropped = (size_t)w->n_pending;
    uint8_t hdr[TL_SHARD_HEADER] = {0};
    memcpy(hdr, TL_SHARD_MAGIC, 8);
    put32(hdr + 8, w->masked ? TL_SHARD_VERSION_MASKED : TL_SHARD_VERSION);
    put32(hdr + 12, (uint32_t)w->token_bytes);
    put32(hdr + 16, (uint32_t)w->seq_len);
    put32(hdr + 20, (uint32_t)w->vocab_size);
    put64(hdr + 24, w->n_samples);
    put64(hdr + 32, w->checksum);
    put32(hdr + 40, w->masked && w->pairs ? 1u : 0u);
    FILE *f = w->f;
    int ok = fflush(f) == 0 && fseek(f, 0, SEEK_SET) == 0 && fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr &&
             fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    w->f = NULL;
    if (!ok || rename(w->tmp, w->path) != 0) {
        int e = errno;
        tl_shard_writer_abort(w);
        return tl_fail(err, "%s: could not finish the shard: %s", w->path, strerror(e));
    }
    free(w->pending);
    w->pending = NULL;
    return 0;
}

/* ------------------------------------------------------------------ reading */

int tl_shard_open(tl_shard *s, const char *path, tl_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    const uint8_t *map;
    size_t len;
    if (tl_map_file(path, &map, &len, err)) return -1;
    if (len < TL_SHARD_HEADER) {
        tl_unmap_file(map, len);
        return tl_fail(err, "%s: truncated (%zu bytes; a shard header is %d)", path, len, TL_SHARD_HEADER);
    }
    s->map = map;
    s->map_len = len;
    const uint8_t *h = map;
    int rc = 0;
    if (memcmp(h, TL_SHARD_MAGIC, 8) != 0) {
        rc = tl_fail(err, "%s: not a tinyllama token shard (bad magic)", path);
    } else if (get32(h + 8) != TL_SHARD_VERSION && get32(h + 8) != TL_SHARD_VERSION_MASKED) {
        rc = tl_fail(err, "%s: unsupported shard version %u", path, get32(h + 8));
    } else {
        s->masked = get32(h + 8) == TL_SHARD_VERSION_MASKED;
        s->pairs = s->masked && get32(h + 40) == 1;
        s->token_bytes = (int)get32(h + 12);
        uint32_t sl = get32(h + 16), vs = get32(h + 20);
        s->n_samples = get64(h + 24);
        if (s->token_bytes != 2 && s->token_bytes != 4)
            rc = tl_fail(err, "%s: token size %d (must be 2 or 4)", path, s->token_bytes);
        else if (sl < 1 || sl > (1u << 24) || vs < 1 || vs > (1u << 30))
            rc = tl_fail(err, "%s: implausible seq_len %u or vocab_size %u", path, sl, vs);
        else if (s->token_bytes == 2 && vs > 65536)
            rc = tl_fail(err, "%s: vocab_size %u does not fit 16-bit tokens", path, vs);
        if (!rc) {
            s->seq_len = (int)sl;
            s->vocab_size = (int)vs;
            size_t sample_bytes = tl_shard_sample_bytes((int)sl, s->token_bytes, s->masked), body;
            if (tl_mul_size(sample_bytes, (size_t)s->n_samples, &body) || body != len - TL_SHARD_HEADER)
                rc = tl_fail(err, "%s: header promises %llu samples of %u tokens but the file has %zu data bytes "
                                  "(truncated or corrupt)", path, (unsigned long long)s->n_samples, sl + 1,
                             len - TL_SHARD_HEADER);
            else if (fnv1a(FNV_INIT, h + TL_SHARD_HEADER, body) != get64(h + 32))
                rc = tl_fail(err, "%s: checksum mismatch (corrupt data)", path);
            s->checksum = get64(h + 32);
        }
    }
    if (!rc) {
        /* tokens must respect the shard's own vocabulary */
        const uint64_t n = (uint64_t)(s->seq_len + 1), stride = tl_shard_sample_bytes(s->seq_len, s->token_bytes, s->masked);
        for (uint64_t i = 0; i < s->n_samples * n && !rc; i++) {
            const uint8_t *p = h + TL_SHARD_HEADER + i / n * stride + i % n * (uint64_t)s->token_bytes;
            uint32_t v = s->token_bytes == 2 ? (uint32_t)(p[0] | p[1] << 8) : get32(p);
            if (v >= (uint32_t)s->vocab_size)
                rc = tl_fail(err, "%s: token %u at position %llu is outside the shard's vocabulary of %d", path, v,
                             (unsigned long long)i, s->vocab_size);
        }
    }
    if (rc) tl_shard_close(s);
    return rc;
}

void tl_shard_close(tl_shard *s) {
    tl_unmap_file(s->map, s->map_len);
    memset(s, 0, sizeof *s);
}

void tl_shard_sample_mask(const tl_shard *s, uint64_t i, int *out, uint8_t *mask) {
    const int n = s->seq_len + 1;
    const uint8_t *p = s->map + TL_SHARD_HEADER + i * tl_shard_sample_bytes(s->seq_len, s->token_bytes, s->masked);
    if (s->token_bytes == 2)
        for (int j = 0; j < n; j++) out[j] = p[2 * j] | p[2 * j + 1] << 8;
    else
        for (int j = 0; j < n; j++) out[j] = (int)get32(p + 4 * j);
    if (!mask) return;
    if (s->masked) memcpy(mask, p + (size_t)n * (size_t)s->token_bytes, (size_t)n);
    else memset(mask, 1, (size_t)n);
}

void tl_shard_sample(const tl_shard *s, uint64_t i, int *out) { tl_shard_sample_mask(s, i, out, NULL); }

/* ------------------------------------------------------------------ tokenizer identity */

void tl_data_tokenizer_of(const tl_tokenizer *t, const char *path, tl_data_tokenizer *out) {
    memset(out, 0, sizeof *out);
    const char *base = strrchr(path, '/');
    snprintf(out->hash, sizeof out->hash, "%s", tl_tokenizer_hash_hex(t));
    snprintf(out->file, sizeof out->file, "%s", base ? base + 1 : path);
    out->vocab_size = tl_tokenizer_vocab_size(t);
    snprintf(out->origin, sizeof out->origin, "%s", path);
}

int tl_data_tokenizer_check(const tl_data_tokenizer *a, const tl_data_tokenizer *b, tl_error *err) {
    if (!a->origin[0] || !b->origin[0]) return 0;
    if (!strcmp(a->hash, b->hash) && a->vocab_size == b->vocab_size) return 0;
    return tl_fail(err, "different tokenizers: %s names %s (fnv1a64 %s, %d ids) but %s names %s (fnv1a64 %s, %d ids); "
                        "token ids only mean something with the tokenizer that made them: prepare all data with the "
                        "tokenizer training uses (rerun tinyllama prepare)",
                   a->origin, a->file, a->hash, a->vocab_size, b->origin, b->file, b->hash, b->vocab_size);
}

/* ------------------------------------------------------------------ dataset */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The manifest.json files read while a data set opens, one per directory. */
typedef struct {
    struct manifest_entry {
        char *dir;
        cJSON *m; /* NULL: the directory has none */
    } *v;
    int n, cap;
} manifest_cache;

static void cache_free(manifest_cache *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->v[i].dir);
        cJSON_Delete(c->v[i].m);
    }
    free(c->v);
}

/* dir's manifest, parsed once; *m = NULL when there is none. */
static int manifest_get(manifest_cache *c, const char *dir, cJSON **m, tl_error *err) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->v[i].dir, dir)) {
            *m = c->v[i].m;
            return 0;
        }
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    cJSON *j = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0) {
        char *text;
        size_t len;
        if (tl_read_file(path, (size_t)1 << 30, &text, &len, err)) return -1;
        j = cJSON_ParseWithLength(text, len);
        free(text);
        cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
        if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "tinyllama-token-shards") ||
            !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "splits"))) {
            cJSON_Delete(j);
            return tl_fail(err, "%s: not a data manifest of `tinyllama prepare` (damaged?): rerun tinyllama prepare",
                           path);
        }
    } else if (errno != ENOENT && errno != ENOTDIR) {
        return tl_fail(err, "%s: %s", path, strerror(errno));
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        struct manifest_entry *v = realloc(c->v, sizeof *v * (size_t)cap);
        if (!v) {
            cJSON_Delete(j);
            return tl_fail(err, "out of memory");
        }
        c->v = v;
        c->cap = cap;
    }
    if (!(c->v[c->n].dir = strdup(dir))) {
        cJSON_Delete(j);
        return tl_fail(err, "out of memory");
    }
    c->v[c->n++].m = j;
    *m = j;
    return 0;
}

static cJSON *manifest_shards(const cJSON *m, const char *split) {
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "splits"), split), "shards");
    return cJSON_IsArray(arr) ? arr : NULL;
}

static const char *split_word(const char *split) {
    return !strcmp(split, "train") ? "training" : !strcmp(split, "val") ? "validation" : split;
}

/* Appends printf text to a malloc'ed string. */
static int str_add(char **s, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int str_add(char **s, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *ns = n < 0 ? NULL : realloc(*s, *len + (size_t)n + 1);
    if (!ns) return -1;
    *s = ns;
    va_start(ap, fmt);
    vsnprintf(ns + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
    return 0;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Expands files, directories and globs into a list (sorted per argument) and
 * says in *taken which files each argument gave. */
static int expand_paths(const char *const *paths, int n_paths, const tl_dataset_opts *o, manifest_cache *mc,
                        char ***out, int *n_out, char **taken, tl_error *err) {
    char **list = NULL, *tk = NULL;
    size_t tk_len = 0;
    int n = 0, cap = 0;
#define PUSH(s)                                                       \
    do {                                                              \
        if (n == cap) {                                               \
            cap = cap ? 2 * cap : 16;                                 \
            char **nl = realloc(list, sizeof *list * (size_t)cap);    \
            if (!nl) goto oom;                                        \
            list = nl;                                                \
        }                                                             \
        if (!(list[n] = strdup(s))) goto oom;                         \
        n++;                                                          \
    } while (0)
    for (int i = 0; i < n_paths; i++) {
        struct stat sb;
        int start = n;
        const char *kind = "";
        if (stat(paths[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            cJSON *m = NULL;
            if (o->split && manifest_get(mc, paths[i], &m, err)) goto fail;
            if (m) { /* a `prepare` output: the shards its manifest lists */
                cJSON *e;
                cJSON_ArrayForEach(e, manifest_shards(m, o->split)) {
                    cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
                    if (!cJSON_IsString(f) || !f->valuestring[0] || strchr(f->valuestring, '/')) {
                        tl_fail(err, "%s/manifest.json: a shard entry without a plain file name (damaged?)", paths[i]);
                        goto fail;
                    }
                    char p[4096];
                    snprintf(p, sizeof p, "%s/%s", paths[i], f->valuestring);
                    PUSH(p);
                }
            } else {
                DIR *d = opendir(paths[i]);
                if (!d) {
                    tl_fail(err, "%s: cannot read directory: %s", paths[i], strerror(errno));
                    goto fail;
                }
                size_t pl = o->split ? strlen(o->split) : 0;
                struct dirent *e;
                while ((e = readdir(d))) {
                    size_t l = strlen(e->d_name);
                    if (l > 4 && !strcmp(e->d_name + l - 4, ".bin") &&
                        (!o->split || (!strncmp(e->d_name, o->split, pl) && e->d_name[pl] == '-'))) {
                        char p[4096];
                        snprintf(p, sizeof p, "%s/%s", paths[i], e->d_name);
                        PUSH(p);
                    }
                }
                closedir(d);
                qsort(list + start, (size_t)(n - start), sizeof *list, cmp_str);
            }
            if (n == start) {
                if (o->split)
                    tl_fail(err, "%s: no %s shards (%s-*.bin%s)", paths[i], split_word(o->split), o->split,
                            m ? " listed in its manifest.json" : "");
                else
                    tl_fail(err, "%s: directory contains no .bin shards", paths[i]);
                goto fail;
            }
            kind = o->split ? split_word(o->split) : "";
        } else if (strpbrk(paths[i], "*?[")) {
            glob_t g;
            if (glob(paths[i], 0, NULL, &g) != 0) {
                tl_fail(err, "%s: pattern matches no files", paths[i]);
                goto fail;
            }
            for (size_t j = 0; j < g.gl_pathc; j++) PUSH(g.gl_pathv[j]);
            globfree(&g);
        } else {
            PUSH(paths[i]);
            if (str_add(&tk, &tk_len, "%s%s", i ? "; " : "", paths[i])) goto oom;
            continue;
        }
        int k = n - start;
        if (str_add(&tk, &tk_len, "%s%s: %d %s%sshard%s (%s", i ? "; " : "", paths[i], k, kind, *kind ? " " : "",
                    k == 1 ? "" : "s", base_name(list[start])) ||
            (k > 1 && str_add(&tk, &tk_len, " .. %s", base_name(list[n - 1]))) || str_add(&tk, &tk_len, ")"))
            goto oom;
    }
#undef PUSH
    *out = list;
    *n_out = n;
    *taken = tk;
    return 0;
oom:
    tl_fail(err, "out of memory");
fail:
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
    free(tk);
    return -1;
}

static uint64_t json_u64(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    /* 2^63 and beyond (or NaN) would not convert: such a count is not a real one either */
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9.2e18 ? (uint64_t)v->valuedouble : UINT64_MAX;
}

/* The shard must be the one the manifest of its directory lists (same sample
 * count, size and checksum); the manifests must all name one tokenizer. */
static int verify_shard(manifest_cache *mc, const tl_shard *s, tl_data_tokenizer *tok, tl_error *err) {
    char dir[4096];
    const char *base = base_name(s->path);
    if (base == s->path) snprintf(dir, sizeof dir, ".");
    else if (base - 1 == s->path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(base - 1 - s->path), s->path);
    cJSON *m;
    if (manifest_get(mc, dir, &m, err)) return -1;
    if (!m)
        return tl_fail(err, "%s: no manifest.json in %s, so nothing says its shards are complete and belong together "
                            "(left by an interrupted `tinyllama prepare`, or by one older than manifests): rerun "
                            "tinyllama prepare", s->path, dir);
    const cJSON *entry = NULL, *e;
    static const char *const splits[2] = {"train", "val"};
    for (int k = 0; k < 2 && !entry; k++)
        cJSON_ArrayForEach(e, manifest_shards(m, splits[k])) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
            if (cJSON_IsString(f) && !strcmp(f->valuestring, base)) entry = e;
        }
    if (!entry)
        return tl_fail(err, "%s: not listed in %s/manifest.json (left over from another run?): rerun tinyllama prepare",
                       s->path, dir);
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(entry, "fnv1a64");
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->checksum);
    if (json_u64(entry, "samples") != s->n_samples || json_u64(entry, "bytes") != (uint64_t)s->map_len ||
        !cJSON_IsString(sum) || strcmp(sum->valuestring, hex))
        return tl_fail(err, "%s: not the shard %s/manifest.json lists (it has %llu samples, %zu bytes, checksum %s; "
                            "the manifest says %llu, %llu, %s): the directory mixes shards of different `prepare` "
                            "runs (an interrupted one?): rerun tinyllama prepare",
                       s->path, dir, (unsigned long long)s->n_samples, s->map_len, hex,
                       (unsigned long long)json_u64(entry, "samples"), (unsigned long long)json_u64(entry, "bytes"),
                       cJSON_IsString(sum) ? sum->valuestring : "?");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "tokenizer");
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(t, "fnv1a64"), *tf = cJSON_GetObjectItemCaseSensitive(t, "file");
    if (!cJSON_IsString(th) || json_u64(t, "vocab_size") > (1u << 30))
        return tl_fail(err, "%s/manifest.json: names no tokenizer (damaged?): rerun tinyllama prepare", dir);
    tl_data_tokenizer here;
    memset(&here, 0, sizeof here);
    snprintf(here.hash, sizeof here.hash, "%s", th->valuestring);
    snprintf(here.file, sizeof here.file, "%s", cJSON_IsString(tf) ? tf->valuestring : "?");
    here.vocab_size = (int)json_u64(t, "vocab_size");
    snprintf(here.origin, sizeof here.origin, "%s/manifest.json", dir);
    if (!tok->origin[0]) *tok = here;
    else if (tl_data_tokenizer_check(tok, &here, err)) return -1;
    return 0;
}

int tl_dataset_open_ex(tl_dataset *d, const char *const *paths, int n_paths, const tl_dataset_opts *o, tl_error *err) {
    static const tl_dataset_opts none = {0};
    if (!o) o = &none;
    memset(d, 0, sizeof *d);
    if (n_paths < 1) return tl_fail(err, "no data shards given");
    char **files;
    int n;
    manifest_cache mc = {0};
    if (expand_paths(paths, n_paths, o, &mc, &files, &n, &d->taken, err)) {
        cache_free(&mc);
        return -1;
    }
    d->shards = calloc((size_t)n, sizeof *d->shards);
    d->first = calloc((size_t)n + 1, sizeof *d->first);
    int rc = d->shards && d->first ? 0 : tl_fail(err, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        rc = tl_shard_open(&d->shards[i], files[i], err);
        if (rc) break;
        d->n_shards++;
        if (o->verify) rc = verify_shard(&mc, &d->shards[i], &d->tok, err);
        if (!rc && i > 0 && d->shards[i].pairs != d->shards[0].pairs)
            rc = tl_fail(err, "%s %s preference pairs but %s %s: train them separately", files[i],
                         d->shards[i].pairs ? "holds" : "holds no", files[0], d->shards[0].pairs ? "does" : "does not");
        if (!rc && i > 0 && d->shards[i].masked != d->shards[0].masked)
            rc = tl_fail(err, "%s %s a loss mask (chat data) but %s %s: train chat and plain token data separately",
                         files[i], d->shards[i].masked ? "has" : "has no", files[0],
                         d->shards[0].masked ? "has one" : "has none");
        if (!rc && i > 0 && d->shards[i].seq_len != d->shards[0].seq_len)
            rc = tl_fail(err, "%s: sequence length %d differs from %s (%d)", files[i], d->shards[i].seq_len,
                         files[0], d->shards[0].seq_len);
        d->first[i + 1] = d->first[i] + d->shards[i].n_samples;
        if (d->shards[i].vocab_size > d->vocab_size) d->vocab_size = d->shards[i].vocab_size;
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    cache_free(&mc);
    if (!rc) {
        d->n_samples = d->first[d->n_shards];
        d->seq_len = d->shards[0].seq_len;
        d->masked = d->shards[0].masked;
        d->pairs = d->shards[0].pairs;
        if (d->n_samples == 0) rc = tl_fail(err, "%s: the shards hold no complete samples", paths[0]);
    }
    if (rc) tl_dataset_close(d);
    return rc;
}

int tl_dataset_open(tl_dataset *d, const char *const *paths, int n_paths, tl_error *err) {
    return tl_dataset_open_ex(d, paths, n_paths, NULL, err);
}

void tl_dataset_close(tl_dataset *d) {
    for (int i = 0; i < d->n_shards; i++) tl_shard_close(&d->shards[i]);
    free(d->taken);
    free(d->shards);
    free(d->first);
    memset(d, 0, sizeof *d);
}

int tl_dataset_check_vocab(const tl_dataset *d, int vocab_size, tl_error *err) {
    for (int i = 0; i < d->n_shards; i++)
        if (d->shards[i].vocab_size > vocab_size)
            return tl_fail(err, "%s: written for a vocabulary of %d tokens but the model has %d", d->shards[i].path,
                           d->shards[i].vocab_size, vocab_size);
    return 0;
}

void tl_dataset_set_order(tl_dataset *d, int shuffle, uint64_t seed) {
    d->shuffle = shuffle;
    d->seed = seed;
}

int tl_dataset_seek(tl_dataset *d, uint64_t epoch, uint64_t index, tl_error *err) {
    if (index >= d->n_samples)
        return tl_fail(err, "data position %llu is past the %llu samples of the data set (different data?)",
                       (unsigned long long)index, (unsigned long long)d->n_samples);
    d->epoch = epoch;
    d->index = index;
    return 0;
}

/* A keyed bijection on [0, n): a 4-round Feistel network over the next even
 * power of two, cycle-walking values >= n.  O(1) memory and O(1) random access,
 * so any position of any epoch is reached without replaying the loader. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t permute(uint64_t i, uint64_t n, uint64_t key) {
    int bits = 2;
    while (bits < 64 && ((uint64_t)1 << bits) < n) bits += 2;
    const int half = bits / 2;
    const uint64_t mask = ((uint64_t)1 << half) - 1;
    uint64_t x = i;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = mix64(r ^ mix64(key + (uint64_t)round)) & mask;
            uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

static uint64_t sample_at(const tl_dataset *d, uint64_t epoch, uint64_t index) {
    if (!d->shuffle) return index;
    return permute(index, d->n_samples, mix64(d->seed * 0x9e3779b97f4a7c15ULL + epoch));
}

void tl_dataset_get(const tl_dataset *d, uint64_t i, int *out) { tl_dataset_get_mask(d, i, out, NULL); }

void tl_dataset_get_mask(const tl_dataset *d, uint64_t i, int *out, uint8_t *mask) {
    int lo = 0, hi = d->n_shards - 1;
    while (lo < hi) { /* last shard whose first sample <= i */
        int mid = (lo + hi + 1) / 2;
        if (d->first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    tl_shard_sample_mask(&d->shards[lo], i - d->first[lo], out, mask);
}

int tl_dataset_next(tl_dataset *d, int B, int T, int *tokens, tl_error *err) {
    return tl_dataset_next_mask(d, B, T, tokens, NULL, err);
}

int tl_dataset_next_mask(tl_dataset *d, int B, int T, int *tokens, uint8_t *mask, tl_error *err) {
    return tl_dataset_next_ex(d, B, T, tokens, mask, NULL, err);
}

int tl_dataset_next_ex(tl_dataset *d, int B, int T, int *tokens, uint8_t *mask, uint64_t *index, tl_error *err) {
    if (T > d->seq_len)
        return tl_fail(err, "sequence length %d is longer than the shards' %d", T, d->seq_len);
    int *buf = malloc((sizeof(int) + 1) * (size_t)(d->seq_len + 1));
    if (!buf) return tl_fail(err, "out of memory");
    uint8_t *mbuf = (uint8_t *)(buf + d->seq_len + 1);
    for (int b = 0; b < B; b++) {
        const uint64_t at = sample_at(d, d->epoch, d->index);
        if (index) index[b] = at;
        tl_dataset_get_mask(d, at, buf, mask ? mbuf : NULL);
        memcpy(tokens + (size_t)b * (T + 1), buf, sizeof(int) * (size_t)(T + 1));
        if (mask) memcpy(mask + (size_t)b * (T + 1), mbuf, (size_t)(T + 1));
        if (++d->index == d->n_samples) {
            d->index = 0;
            d->epoch++;
        }
    }
    free(buf);
    return 0;
}

long tl_batch_targets(const int *tokens, const uint8_t *mask, int B, int T, int *inputs, int *targets) {
    long count = 0;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < T; s++) {
            const size_t i = (size_t)b * (size_t)(T + 1) + (size_t)s;
            inputs[b * T + s] = tokens[i];
            int on = !mask || mask[i + 1];
            targets[b * T + s] = on ? tokens[i + 1] : -1;
            count += on;
        }
    return count;
}

/* safetensors.c - the HF safetensors container, read through mmap. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (100u << 20) /* as the reference implementation limits it */


static int cmp_begin(const void *a, const void *b) {
    const tl_st_tensor *x = *(const tl_st_tensor *const *)a, *y = *(const tl_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse_tensor(const cJSON *item, tl_st_tensor *t, size_t data_len, const char *path,
                        tl_error *err) {
    const char *nm = item->string;
    if (!cJSON_IsObject(item)) return tl_fail(err, "%s: tensor '%s': entry is not an object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return tl_fail(err, "%s: tensor '%s': missing dtype", path, nm);
    int found = tl_dtype_parse(dt->valuestring);
    if (found < 0)
        return tl_fail(err, "%s: tensor '%s': unsupported dtype %s (supported: F32, F16, BF16, I32, I64, F64)",
                       path, nm, dt->valuestring);
    t->dtype = (tl_dtype)found;
    if (!cJSON_IsArray(sh)) return tl_fail(err, "%s: tensor '%s': missing shape", path, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > TL_ST_MAX_DIMS) return tl_fail(err, "%s: tensor '%s': %d dimensions (max %d)", path, nm, nd, TL_ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble != floor(d->valuedouble) ||
            d->valuedouble > 9.0e15)
            return tl_fail(err, "%s: tensor '%s': bad shape entry", path, nm);
        t->shape[i] = (int64_t)d->valuedouble;
        if (tl_mul_size(numel, (size_t)t->shape[i], &numel))
            return tl_fail(err, "%s: tensor '%s': shape overflows", path, nm);
    }
    t->numel = numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return tl_fail(err, "%s: tensor '%s': data_offsets must be [begin, end]", path, nm);
    double b = cJSON_GetArrayItem(off, 0)->valuedouble, e = cJSON_GetArrayItem(off, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) ||
        b < 0 || e < b || b != floor(b) || e != floor(e) || e > (double)data_len)
        return tl_fail(err, "%s: tensor '%s': data_offsets [%.0f, %.0f] outside the data section of %zu bytes",
                       path, nm, b, e, data_len);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    size_t bytes;
    if (tl_mul_size(numel, tl_dtype_size((tl_dtype)found), &bytes) || bytes != t->end - t->begin)
        return tl_fail(err, "%s: tensor '%s': shape needs %zu bytes but data_offsets span %zu", path, nm,
                       bytes, t->end - t->begin);
    t->name = strdup(nm);
    if (!t->name) return tl_fail(err, "out of memory");
    return 0;
}

int tl_st_open(tl_safetensors *st, const char *path, tl_error *err) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    const uint8_t *map;
    size_t len;
    if (tl_map_file(path, &map, &len, err)) return -1;
    if (len < 8) {
        tl_unmap_file(map, len);
        return tl_fail(err, "%s: truncated (%zu bytes, need at least 8 for the header length)", path, len);
    }
    st->map = (uint8_t *)map;
    st->map_len = len;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    if (hlen > MAX_HEADER) {
        tl_st_close(st);
        return tl_fail(err, "%s: header length %llu is larger than the %u-byte limit", path,
                       (unsigned long long)hlen, MAX_HEADER);
    }
    if (hlen > len - 8) {
        tl_st_close(st);
        return tl_fail(err, "%s: truncated: header says %llu bytes but the file has %zu", path,
                       (unsigned long long)hlen, len - 8);
    }
    st->data_start = 8 + (size_t)hlen;
    size_t data_len = len - st->data_start;
    cJSON *root = cJSON_ParseWithLength((const char *)st->map + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        tl_st_close(st);
        return tl_fail(err, "%s: header is not a valid JSON object", path);
    }
    int count = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) count++;
    st->tensors = calloc(count ? (size_t)count : 1, sizeof *st->tensors);
    tl_st_tensor **order = calloc(count ? (size_t)count : 1, sizeof *order);
    int rc = 0;
    if (!st->tensors || !order) rc = tl_fail(err, "out of memory");
    for (const cJSON *it = root->child; it && !rc; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) rc = tl_fail(err, "%s: __metadata__ is not an object", path);
            continue;
        }
        rc = parse_tensor(it, &st->tensors[st->n], data_len, path, err);
        if (!rc) {
            order[st->n] = &st->tensors[st->n];
            st->n++;
        }
    }
    cJSON_Delete(root);
    if (!rc) {
        qsort(order, (size_t)st->n, sizeof *order, cmp_begin);
        size_t pos = 0;
        for (int i = 0; i < st->n && !rc; i++) {
            if (order[i]->begin != pos)
                rc = tl_fail(err, "%s: tensor '%s' starts at byte %zu, expected %zu (%s)", path, order[i]->name,
                             order[i]->begin, pos, order[i]->begin < pos ? "overlapping data" : "gap in data");
            pos = order[i]->end;
        }
        if (!rc && pos != data_len)
            rc = tl_fail(err, "%s: tensors cover %zu of %zu data bytes", path, pos, data_len);
        for (int i = 0; i < st->n && !rc; i++)
            for (int j = i + 1; j < st->n && !rc; j++)
                if (!strcmp(st->tensors[i].name, st->tensors[j].name))
                    rc = tl_fail(err, "%s: duplicate tensor name '%s'", path, st->tensors[i].name);
    }
    free(order);
    if (rc) tl_st_close(st);
    return rc;
}

void tl_st_close(tl_safetensors *st) {
    tl_unmap_file(st->map, st->map_len);
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    memset(st, 0, sizeof *st);
}

const tl_st_tensor *tl_st_find(const tl_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const void *tl_st_data(const tl_safetensors *st, const tl_st_tensor *t) {
    return st->map + st->data_start + t->begin;
}

int tl_st_read_f32(const tl_safetensors *st, const tl_st_tensor *t, float *out, size_t n, tl_error *err) {
    if (n != t->numel)
        return tl_fail(err, "%s: tensor '%s' has %zu elements, expected %zu", st->path, t->name, t->numel, n);
    const uint8_t *p = tl_st_data(st, t);
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case TL_DT_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case TL_DT_BF16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = tl_bf16_to_f32(h);
            break;
        }
        case TL_DT_F16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = tl_f16_to_f32(h);
            break;
        }
        case TL_DT_F64: {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
            break;
        }
        case TL_DT_I32: {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            out[i] = (float)v;
            break;
        }
        case TL_DT_I64: {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            out[i] = (float)v;
            break;
        }
        }
    }
    return 0;
}

int tl_st_read_i32(const tl_safetensors *st, const tl_st_tensor *t, int *out, size_t n, tl_error *err) {
    if (n != t->numel)
        return tl_fail(err, "%s: tensor '%s' has %zu elements, expected %zu", st->path, t->name, t->numel, n);
    if (t->dtype != TL_DT_I32 && t->dtype != TL_DT_I64)
        return tl_fail(err, "%s: tensor '%s' is %s, expected an integer type", st->path, t->name,
                       tl_dtype_name(t->dtype));
    const uint8_t *p = tl_st_data(st, t);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (t->dtype == TL_DT_I32) {
            int32_t w;
            memcpy(&w, p + 4 * i, 4);
            v = w;
        } else {
            memcpy(&v, p + 8 * i, 8);
        }
        if (v < -2147483647LL - 1 || v > 2147483647LL)
            return tl_fail(err, "%s: tensor '%s' value %lld does not fit in int", st->path, t->name, (long long)v);
        out[i] = (int)v;
    }
    return 0;
}

int tl_st_write(const char *path, const tl_st_entry *entries, int n, const char *const *metadata,
                tl_error *err) {
    cJSON *root = cJSON_CreateObject();
    if (metadata) {
        cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2) cJSON_AddStringToObject(md, metadata[i], metadata[i + 1]);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const tl_st_entry *e = &entries[i];
        size_t numel = 1;
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON_AddStringToObject(t, "dtype", tl_dtype_name(e->dtype));
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e->ndim; d++) {
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
            numel *= (size_t)e->shape[d];
        }
        size_t bytes = numel * tl_dtype_size(e->dtype);
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return tl_fail(err, "%s: out of memory building the header", path);
    size_t jlen = strlen(json), hlen = (jlen + 7) & ~(size_t)7; /* pad with spaces to 8 bytes */

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(json);
        return tl_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(json, 1, jlen, f) == jlen;
    for (size_t i = jlen; i < hlen && ok; i++) ok = fputc(' ', f) != EOF;
    free(json);
    for (int i = 0; i < n && ok; i++) {
        size_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++) numel *= (size_t)entries[i].shape[d];
        size_t bytes = numel * tl_dtype_size(entries[i].dtype);
        ok = bytes == 0 || fwrite(entries[i].data, 1, bytes, f) == bytes;
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return tl_fail(err, "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

/* checkpoint.c - HF directories and atomic training checkpoints. */
#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "finite.h"
#include "hf_tokenizer_files.h"
#include "safetensors.h"

#define PATH_CAP 4096

static int join(char *out, size_t cap, const char *dir, const char *name, tl_error *err) {
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap) return tl_fail(err, "%s: path too long", dir);
    return 0;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Tensors that some HF checkpoints carry but are not parameters. */
static int ignorable_tensor(const char *name) {
    return strstr(name, "rotary_emb.inv_freq") != NULL;
}

typedef tl_hf_files shard_set;

static void shards_close(shard_set *s) {
    for (int i = 0; i < s->n; i++) {
        tl_st_close(&s->st[i]);
        free(s->files[i]);
    }
    free(s->files);
    free(s->st);
    memset(s, 0, sizeof *s);
}

static int shards_open(const char *dir, shard_set *s, tl_error *err) {
    memset(s, 0, sizeof *s);
    char path[PATH_CAP];
    if (join(path, sizeof path, dir, "model.safetensors", err)) return -1;
    if (file_exists(path)) {
        s->files = calloc(1, sizeof *s->files);
        s->st = calloc(1, sizeof *s->st);
        if (!s->files || !s->st || !(s->files[0] = strdup(path))) {
            shards_close(s);
            return tl_fail(err, "out of memory");
        }
        s->n = 1;
        if (tl_st_open(&s->st[0], path, err)) {
            s->n = 0;
            free(s->files[0]);
            shards_close(s);
            return -1;
        }
        return 0;
    }
    if (join(path, sizeof path, dir, "model.safetensors.index.json", err)) return -1;
    if (!file_exists(path))
        return tl_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    char *text;
    size_t len;
    if (tl_read_file(path, 64u << 20, &text, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return tl_fail(err, "%s: malformed index (no weight_map object)", path);
    }
    int cap = cJSON_GetArraySize(wm), rc = 0;
    s->files = calloc((size_t)cap + 1, sizeof *s->files);
    s->st = calloc((size_t)cap + 1, sizeof *s->st);
    if (!s->files || !s->st) rc = tl_fail(err, "out of memory");
    for (const cJSON *it = wm->child; it && !rc; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || !strcmp(it->valuestring, "..")) {
            rc = tl_fail(err, "%s: weight_map entry '%s' is not a file name in the directory", path, it->string);
            break;
        }
        int known = 0;
        for (int i = 0; i < s->n; i++) {
            const char *base = strrchr(s->files[i], '/') + 1;
            if (!strcmp(base, it->valuestring)) known = 1;
        }
        if (known) continue;
        char fp[PATH_CAP];
        if (join(fp, sizeof fp, dir, it->valuestring, err)) {
            rc = -1;
            break;
        }
        if (tl_st_open(&s->st[s->n], fp, err)) {
            rc = -1;
            break;
        }
        s->files[s->n] = strdup(fp);
        s->n++;
    }
    /* every tensor the index names must be in the file it names */
    for (const cJSON *it = wm->child; it && !rc; it = it->next) {
        int found = 0;
        for (int i = 0; i < s->n && !found; i++)
            if (!strcmp(strrchr(s->files[i], '/') + 1, it->valuestring) && tl_st_find(&s->st[i], it->string))
                found = 1;
        if (!found) rc = tl_fail(err, "%s: index maps '%s' to %s, which lacks it", path, it->string, it->valuestring);
    }
    cJSON_Delete(root);
    if (rc) shards_close(s);
    return rc;
}

int tl_hf_files_open(const char *dir, tl_hf_files *s, tl_error *err) { return shards_open(dir, s, err); }
void tl_hf_files_close(tl_hf_files *s) { shards_close(s); }

int tl_model_load_hf_weights(const char *dir, tl_model *m, tl_error *err) {
    shard_set s;
    if (shards_open(dir, &s, err)) return -1;
    int rc = 0;
    for (int i = 0; i < m->n_tensors && !rc; i++) {
        const tl_tensor_info *ti = &m->tensors[i];
        const tl_st_tensor *t = NULL;
        int f = 0;
        for (; f < s.n && !t; f++) t = tl_st_find(&s.st[f], ti->name);
        if (!t) {
            rc = tl_fail(err, "%s: missing tensor '%s'", dir, ti->name);
            break;
        }
        f--;
        int shape_ok = t->ndim == ti->ndim && t->shape[0] == ti->shape[0] &&
                       (ti->ndim == 1 || t->shape[1] == ti->shape[1]);
        if (!shape_ok) {
            char got[128] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            if (ti->ndim == 1)
                rc = tl_fail(err, "%s: tensor '%s' has shape [%s], expected [%d]", s.files[f], ti->name, got, ti->shape[0]);
            else
                rc = tl_fail(err, "%s: tensor '%s' has shape [%s], expected [%d, %d]", s.files[f], ti->name, got,
                             ti->shape[0], ti->shape[1]);
            break;
        }
        if (t->dtype != TL_DT_F32 && t->dtype != TL_DT_BF16 && t->dtype != TL_DT_F16) {
            rc = tl_fail(err, "%s: tensor '%s' has dtype %s; model weights must be F32, BF16 or F16", s.files[f],
                         ti->name, tl_dtype_name(t->dtype));
            break;
        }
        rc = tl_st_read_f32(&s.st[f], t, m->params + ti->offset, ti->numel, err);
        /* a NaN or infinity would make every loss NaN: name the tensor */
        size_t bad = rc ? ti->numel : tl_find_nonfinite(m->params + ti->offset, TL_DT_F32, ti->numel);
        if (bad < ti->numel)
            rc = tl_fail(err, "%s: tensor '%s' holds %s at element %zu: the weights are corrupt", s.files[f],
                         ti->name, tl_nonfinite_kind(m->params + ti->offset, TL_DT_F32, bad), bad);
    }
    /* refuse tensors we would silently ignore */
    for (int f = 0; f < s.n && !rc; f++)
        for (int j = 0; j < s.st[f].n && !rc; j++) {
            const char *nm = s.st[f].tensors[j].name;
            if (tl_model_find_tensor(m, nm) || ignorable_tensor(nm)) continue;
            if (m->cfg.tied && !strcmp(nm, "lm_head.weight")) continue; /* a tied copy */
            rc = tl_fail(err, "%s: unexpected tensor '%s' (not part of a %d-layer Llama model)", s.files[f], nm,
                         m->cfg.n_layers);
        }
    shards_close(&s);
    return rc;
}

int tl_model_load_hf(const char *dir, tl_model *m, tl_error *err) {
    char path[PATH_CAP];
    tl_config cfg;
    if (join(path, sizeof path, dir, "config.json", err) || tl_config_load_json(path, &cfg, err)) return -1;
    if (tl_model_create(m, &cfg, err)) return -1;
    if (tl_model_load_hf_weights(dir, m, err)) {
        tl_model_free(m);
        return -1;
    }
    return 0;
}

int tl_model_save_hf(const char *dir, const tl_model *m, tl_error *err) {
    char path[PATH_CAP];
    if (tl_mkdir_p(dir, err)) return -1;
    char *json = tl_config_to_json(&m->cfg);
    if (!json) return tl_fail(err, "out of memory");
    int rc = join(path, sizeof path, dir, "config.json", err) || tl_write_file_atomic(path, json, strlen(json), err);
    free(json);
    if (rc) return -1;
    char gen[128];
    int glen = snprintf(gen, sizeof gen, "{\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d\n}\n", m->cfg.bos_id,
                        m->cfg.eos_id);
    if (join(path, sizeof path, dir, "generation_config.json", err) ||
        tl_write_file_atomic(path, gen, (size_t)glen, err))
        return -1;
    tl_st_entry *e = calloc((size_t)m->n_tensors, sizeof *e);
    if (!e) return tl_fail(err, "out of memory");
    for (int i = 0; i < m->n_tensors; i++) {
        const tl_tensor_info *t = &m->tensors[i];
        e[i].name = t->name;
        e[i].dtype = TL_DT_F32;
        e[i].ndim = t->ndim;
        e[i].shape[0] = t->shape[0];
        e[i].shape[1] = t->shape[1];
        e[i].data = m->params + t->offset;
    }
    static const char *const md[] = {"format", "pt", NULL};
    rc = join(path, sizeof path, dir, "model.safetensors", err) || tl_st_write(path, e, m->n_tensors, md, err);
    free(e);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------ training state */

#define STATE_MAGIC "TLSTATE1"
#define STATE_VERSION 1u
#define STATE_HEADER 128

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

int tl_train_state_save(const char *path, const tl_train_state *s, tl_error *err) {
    size_t mbytes = s->n_params * sizeof(float), total = STATE_HEADER + 2 * mbytes;
    uint8_t *buf = malloc(total);
    if (!buf) return tl_fail(err, "%s: out of memory", path);
    memset(buf, 0, STATE_HEADER);
    memcpy(buf, STATE_MAGIC, 8);
    put64(buf + 8, STATE_VERSION | ((uint64_t)STATE_HEADER << 32));
    put64(buf + 16, s->n_params);
    put64(buf + 24, s->step);
    put64(buf + 32, s->tokens_seen);
    put64(buf + 40, s->data_epoch);
    put64(buf + 48, s->data_index);
    for (int i = 0; i < 4; i++) put64(buf + 56 + 8 * i, s->rng.s[i]);
    uint64_t el;
    memcpy(&el, &s->elapsed, 8);
    put64(buf + 88, el);
    memcpy(buf + STATE_HEADER, s->m, mbytes);
    memcpy(buf + STATE_HEADER + mbytes, s->v, mbytes);
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, buf, 96);
    put64(buf + 96, fnv1a(h, buf + STATE_HEADER, 2 * mbytes));
    int rc = tl_write_file_atomic(path, buf, total, err);
    free(buf);
    return rc;
}

int tl_train_state_load(const char *path, tl_train_state *s, tl_error *err) {
    char *buf;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 40, &buf, &len, err)) return -1;
    const uint8_t *b = (const uint8_t *)buf;
    int rc = 0;
    size_t mbytes = s->n_params * sizeof(float);
    if (len < STATE_HEADER || memcmp(b, STATE_MAGIC, 8) != 0)
        rc = tl_fail(err, "%s: not a tinyllama training state (bad magic or truncated header)", path);
    else if ((get64(b + 8) & 0xffffffffu) != STATE_VERSION)
        rc = tl_fail(err, "%s: unsupported training-state version %llu", path,
                     (unsigned long long)(get64(b + 8) & 0xffffffffu));
    else if (get64(b + 16) != s->n_params)
        rc = tl_fail(err, "%s: holds optimizer state for %llu parameters, the model has %zu", path,
                     (unsigned long long)get64(b + 16), s->n_params);
    else if (len != STATE_HEADER + 2 * mbytes)
        rc = tl_fail(err, "%s: truncated or oversized (%zu bytes, expected %zu)", path, len, STATE_HEADER + 2 * mbytes);
    else if (fnv1a(fnv1a(0xcbf29ce484222325ULL, b, 96), b + STATE_HEADER, 2 * mbytes) != get64(b + 96))
        rc = tl_fail(err, "%s: checksum mismatch (corrupt file)", path);
    if (!rc) {
        s->step = get64(b + 24);
        s->tokens_seen = get64(b + 32);
        s->data_epoch = get64(b + 40);
        s->data_index = get64(b + 48);
        for (int i = 0; i < 4; i++) s->rng.s[i] = get64(b + 56 + 8 * i);
        uint64_t el = get64(b + 88);
        memcpy(&s->elapsed, &el, 8);
        memcpy(s->m, b + STATE_HEADER, mbytes);
        memcpy(s->v, b + STATE_HEADER + mbytes, mbytes);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------- checkpoints */

static int remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path);
    struct dirent *e;
    char child[PATH_CAP];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    return rmdir(path);
}

/* ---- checksums: every file of a checkpoint, CRC-32 (zlib) over its bytes as read
 * back from the file system, in checksums.json, written last ---- */

#define CHECKSUMS "checksums.json"

static int file_crc32(const char *path, uint32_t *crc, size_t *size, tl_error *err) {
    const uint8_t *map;
    size_t len;
    if (tl_map_file(path, &map, &len, err)) return -1;
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < len;) { /* crc32 takes an unsigned int length */
        size_t n = len - off < (1u << 30) ? len - off : (1u << 30);
        c = crc32(c, map + off, (uInt)n);
        off += n;
    }
    tl_unmap_file(map, len);
    *crc = (uint32_t)c;
    *size = len;
    return 0;
}

static int write_checksums(const char *dir, tl_error *err) {
    DIR *d = opendir(dir);
    if (!d) return tl_fail(err, "%s: cannot list: %s", dir, strerror(errno));
    cJSON *root = cJSON_CreateObject(), *files = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "algorithm", "crc32");
    cJSON_AddItemToObject(root, "files", files);
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        char path[PATH_CAP];
        if (e->d_name[0] == '.' || !strcmp(e->d_name, CHECKSUMS)) continue;
        if (join(path, sizeof path, dir, e->d_name, err)) {
            rc = -1;
            break;
        }
        if (!file_exists(path)) continue;
        uint32_t crc;
        size_t size;
        if (file_crc32(path, &crc, &size, err)) {
            rc = -1;
            break;
        }
        char hex[16];
        snprintf(hex, sizeof hex, "%08x", crc);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddNumberToObject(f, "size", (double)size);
        cJSON_AddStringToObject(f, "crc32", hex);
        cJSON_AddItemToObject(files, e->d_name, f);
    }
    closedir(d);
    char *text = rc ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (rc) return -1;
    if (!text) return tl_fail(err, "out of memory");
    char path[PATH_CAP];
    rc = join(path, sizeof path, dir, CHECKSUMS, err) || tl_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc ? -1 : 0;
}

int tl_checkpoint_verify(const char *dir, int *verified, tl_error *err) {
    char path[PATH_CAP];
    if (verified) *verified = 0;
    static const char *const needed[] = {"config.json", "model.safetensors", "training_state.bin"};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        if (join(path, sizeof path, dir, needed[i], err)) return -1;
        if (!file_exists(path)) return tl_fail(err, "%s: incomplete checkpoint (no %s)", dir, needed[i]);
    }
    if (join(path, sizeof path, dir, CHECKSUMS, err)) return -1;
    if (!file_exists(path)) return 0; /* written before checksums existed: nothing to compare */
    char *text;
    size_t len;
    if (tl_read_file(path, 1 << 20, &text, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *files = root ? cJSON_GetObjectItemCaseSensitive(root, "files") : NULL;
    const cJSON *alg = root ? cJSON_GetObjectItemCaseSensitive(root, "algorithm") : NULL;
    int rc = 0;
    if (!cJSON_IsObject(files) || !cJSON_IsString(alg) || strcmp(alg->valuestring, "crc32"))
        rc = tl_fail(err, "%s: malformed (expected {\"algorithm\": \"crc32\", \"files\": {...}})", path);
    for (size_t i = 0; !rc && i < sizeof needed / sizeof needed[0]; i++)
        if (!cJSON_GetObjectItemCaseSensitive(files, needed[i]))
            rc = tl_fail(err, "%s: does not list %s", path, needed[i]);
    for (const cJSON *f = files ? files->child : NULL; f && !rc; f = f->next) {
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(f, "size");
        const cJSON *crc = cJSON_GetObjectItemCaseSensitive(f, "crc32");
        char fp[PATH_CAP];
        if (!f->string || strchr(f->string, '/') || f->string[0] == '.' || !cJSON_IsNumber(size) ||
            !cJSON_IsString(crc)) {
            rc = tl_fail(err, "%s: malformed entry '%s'", path, f->string ? f->string : "");
            break;
        }
        if (join(fp, sizeof fp, dir, f->string, err)) {
            rc = -1;
            break;
        }
        uint32_t got;
        size_t got_size;
        if (!file_exists(fp)) {
            rc = tl_fail(err, "%s: missing (listed in %s)", fp, CHECKSUMS);
            break;
        }
        if (file_crc32(fp, &got, &got_size, err)) {
            rc = -1;
            break;
        }
        char hex[16];
        snprintf(hex, sizeof hex, "%08x", got);
        if ((double)got_size != size->valuedouble)
            rc = tl_fail(err, "%s: %zu bytes, but %.0f were written (truncated or replaced)", fp, got_size,
                         size->valuedouble);
        else if (strcmp(hex, crc->valuestring))
            rc = tl_fail(err, "%s: checksum mismatch (crc32 %s, written as %s): the file is corrupt", fp, hex,
                         crc->valuestring);
    }
    cJSON_Delete(root);
    if (!rc && verified) *verified = 1;
    return rc;
}

/* A checkpoint's train_args.json, parsed (NULL when absent or malformed). */
static cJSON *read_args(const char *ckpt) {
    char path[PATH_CAP], *text;
    size_t len;
    if (join(path, sizeof path, ckpt, "train_args.json", NULL) || tl_read_file(path, 1 << 20, &text, &len, NULL))
        return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    return root;
}

int tl_checkpoint_threads(const char *ckpt_dir) {
    cJSON *root = read_args(ckpt_dir);
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "threads");
    int n = cJSON_IsNumber(th) && th->valuedouble >= 1 && th->valuedouble <= 4096 ? th->valueint : 0;
    cJSON_Delete(root);
    return n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A string field of a JSON object into out ("" when absent). */
static void json_str(const cJSON *o, const char *key, char *out, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    out[0] = '\0';
    if (cJSON_IsString(v)) snprintf(out, cap, "%s", v->valuestring);
}

/* Removes all but the newest `keep` step-* directories of this run (the run_id
 * of args; names sort by step); checkpoints of other runs, and `current`, are
 * never removed.  After a resume from an older checkpoint (args' resumed_from),
 * the run's checkpoints of later steps that this process (args' session) did
 * not write belong to the abandoned continuation, often the corrupt ones the
 * resume fell back from: they neither count nor go, so they cannot push out the
 * verified checkpoint the run continues from (the run replaces them when it
 * reaches their steps). */
static void prune(const char *out_dir, int keep, const char *args, const char *current) {
    char run_id[128], session[128];
    cJSON *a = args ? cJSON_Parse(args) : NULL;
    json_str(a, "run_id", run_id, sizeof run_id);
    json_str(a, "session", session, sizeof session);
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(a, "resumed_from");
    const double resumed_from = cJSON_IsNumber(rf) ? rf->valuedouble : -1; /* -1: count them all */
    cJSON_Delete(a);
    if (!run_id[0]) return;
    DIR *d = opendir(out_dir);
    if (!d) return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step-", 5)) continue;
        char p[PATH_CAP], id[128], sess[128];
        if (join(p, sizeof p, out_dir, e->d_name, NULL)) continue;
        cJSON *theirs = read_args(p);
        json_str(theirs, "run_id", id, sizeof id);
        json_str(theirs, "session", sess, sizeof sess);
        cJSON_Delete(theirs);
        if (strcmp(id, run_id)) continue; /* another run's */
        if (resumed_from >= 0 && strtod(e->d_name + 5, NULL) > resumed_from && strcmp(sess, session)) continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (names) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i + (size_t)keep < n && strcmp(names[i], current)) {
            char p[PATH_CAP];
            if (!join(p, sizeof p, out_dir, names[i], NULL)) remove_tree(p);
        }
        free(names[i]);
    }
    free(names);
}

/* Puts the complete directory tmp at final.  An existing final (a checkpoint of
 * the same step) is swapped out in one atomic exchange, so `final` is a complete
 * checkpoint at every moment; where the file system cannot exchange, it is moved
 * to .old-* first and resolving falls back to that copy after a crash in between. */
static int put_in_place(const char *tmp, const char *final, const char *old, tl_error *err) {
    struct stat sb;
    if (stat(final, &sb) != 0) {
        if (rename(tmp, final) != 0) return tl_fail(err, "%s: rename failed: %s", final, strerror(errno));
        return 0;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        remove_tree(tmp); /* now holds the replaced checkpoint */
        return 0;
    }
    remove_tree(old);
    if (rename(final, old) != 0) return tl_fail(err, "%s: cannot replace: %s", final, strerror(errno));
    if (rename(tmp, final) != 0) return tl_fail(err, "%s: rename failed: %s", final, strerror(errno));
    return 0;
}

int tl_checkpoint_save(const char *out_dir, const tl_model *m, const tl_train_state *s,
                       const char *extra_json, const char *tokenizer, int keep, char *saved_path,
                       size_t saved_cap, tl_error *err) {
    char name[64], tmp[PATH_CAP], final[PATH_CAP], path[PATH_CAP], old[PATH_CAP];
    snprintf(name, sizeof name, "step-%08llu", (unsigned long long)s->step);
    if (tl_mkdir_p(out_dir, err)) return -1;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.tmp-%s", out_dir, name) >= sizeof tmp ||
        (size_t)snprintf(old, sizeof old, "%s/.old-%s", out_dir, name) >= sizeof old ||
        join(final, sizeof final, out_dir, name, err))
        return tl_fail(err, "%s: path too long", out_dir);
    remove_tree(tmp); /* leftovers of a crash */
    if (tl_model_save_hf(tmp, m, err)) return -1;
    if (join(path, sizeof path, tmp, "training_state.bin", err) || tl_train_state_save(path, s, err)) return -1;
    if (extra_json && (join(path, sizeof path, tmp, "train_args.json", err) ||
                       tl_write_file_atomic(path, extra_json, strlen(extra_json), err)))
        return -1;
    if (tokenizer) {
        size_t tl_len = strlen(tokenizer);
        int json = tl_len >= 5 && !strcmp(tokenizer + tl_len - 5, ".json");
        char *bytes;
        size_t blen;
        if (tl_read_file(tokenizer, (size_t)1 << 30, &bytes, &blen, err)) return -1;
        int rc = join(path, sizeof path, tmp, json ? "tokenizer.json" : "tokenizer.model", err) ||
                 tl_write_file_atomic(path, bytes, blen, err);
        free(bytes);
        /* and what transformers needs to rebuild it as the Llama tokenizer (with BOS) */
        if (rc || tl_hf_tokenizer_files_write(tmp, tokenizer, &m->cfg, err)) return -1;
    }
    /* last: a directory with checksums.json is complete */
    if (write_checksums(tmp, err) || tl_fsync_dir(tmp, err)) return -1;
    if (put_in_place(tmp, final, old, err)) return -1;
    if (tl_fsync_dir(out_dir, err)) return -1;
    char latest[128];
    int llen = snprintf(latest, sizeof latest, "%s\n", name);
    if (join(path, sizeof path, out_dir, "latest", err) || tl_write_file_atomic(path, latest, (size_t)llen, err))
        return -1;
    tl_fsync_dir(out_dir, NULL);
    remove_tree(old);
    if (keep > 0) prune(out_dir, keep, extra_json, name);
    if (saved_path) snprintf(saved_path, saved_cap, "%s", final);
    return 0;
}

int tl_run_dir_in_use(const char *out_dir, char *what, size_t cap) {
    DIR *d = opendir(out_dir);
    if (!d) return 0;
    struct dirent *e;
    int used = 0;
    while (!used && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (!strcmp(nm, "latest") || !strncmp(nm, "step-", 5) || !strncmp(nm, ".tmp-step-", 10) ||
            !strncmp(nm, ".old-step-", 10)) {
            used = 1;
            if (what) snprintf(what, cap, "it has %s", nm);
        } else if (!strcmp(nm, "log.jsonl")) {
            char p[PATH_CAP];
            struct stat sb;
            if (!join(p, sizeof p, out_dir, nm, NULL) && stat(p, &sb) == 0 && sb.st_size > 0) {
                used = 1;
                if (what) snprintf(what, cap, "it has a training log, log.jsonl");
            }
        }
    }
    closedir(d);
    return used;
}

/* A step number from step-N, .old-step-N or .tmp-step-N; -1 for other names. */
static long long name_step(const char *nm, int *rank) {
    static const char *const prefixes[] = {"step-", ".old-step-", ".tmp-step-"};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(prefixes[i]);
        if (strncmp(nm, prefixes[i], l)) continue;
        char *end;
        long long v = strtoll(nm + l, &end, 10);
        if (end == nm + l || *end || v < 0) return -1;
        *rank = i; /* at one step, prefer step- over .old- over .tmp- */
        return v;
    }
    return -1;
}

typedef struct {
    long long step;
    int rank;
    char name[256];
} ckpt_cand;

static int cmp_cand(const void *a, const void *b) {
    const ckpt_cand *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return x->rank - y->rank;
}

/* The newest complete (and, where checksums exist, verified) checkpoint among
 * run_dir's step-*, .old-step-* and .tmp-step-* (a .tmp- one only when its
 * checksums were written, i.e. it was finished).  skip: a name already tried. */
static int newest_complete(const char *run_dir, const char *skip, char *out, size_t cap, tl_error *err) {
    DIR *d = opendir(run_dir);
    if (!d) return tl_fail(err, "%s: cannot list: %s", run_dir, strerror(errno));
    ckpt_cand *c = NULL;
    size_t n = 0, ncap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int rank;
        long long st = name_step(e->d_name, &rank);
        if (st < 0 || strlen(e->d_name) >= sizeof c->name || (skip && !strcmp(skip, e->d_name))) continue;
        if (n == ncap) {
            ckpt_cand *nc = realloc(c, (ncap = ncap ? 2 * ncap : 32) * sizeof *c);
            if (!nc) break;
            c = nc;
        }
        c[n].step = st;
        c[n].rank = rank;
        snprintf(c[n].name, sizeof c[n].name, "%s", e->d_name);
        n++;
    }
    closedir(d);
    if (c) qsort(c, n, sizeof *c, cmp_cand);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        char p[PATH_CAP], cs[PATH_CAP];
        int verified = 0;
        if (join(p, sizeof p, run_dir, c[i].name, NULL) || join(cs, sizeof cs, p, CHECKSUMS, NULL)) continue;
        if (c[i].rank == 2 && !file_exists(cs)) continue; /* an unfinished write */
        if (tl_checkpoint_verify(p, &verified, NULL)) continue;
        if ((size_t)snprintf(out, cap, "%s", p) < cap) found = 1;
    }
    free(c);
    if (!found) return tl_fail(err, "%s: no complete checkpoint found", run_dir);
    return 0;
}

int tl_checkpoint_resolve(const char *path, char *out, size_t cap, char *note, size_t note_cap, tl_error *err) {
    char p[PATH_CAP];
    if (note && note_cap) note[0] = '\0';
    if (join(p, sizeof p, path, "training_state.bin", err)) return -1;
    if (file_exists(p)) { /* a checkpoint named directly: it must be intact */
        if (tl_checkpoint_verify(path, NULL, err)) return -1;
        snprintf(out, cap, "%s", path);
        return 0;
    }
    if (join(p, sizeof p, path, "latest", err)) return -1;
    char *text = NULL, problem[1200] = "", named[256] = "";
    size_t len;
    tl_error e2;
    if (tl_read_file(p, 4096, &text, &len, NULL)) {
        if (!tl_run_dir_in_use(path, NULL, 0))
            return tl_fail(err, "%s: neither a checkpoint (no training_state.bin) nor a run directory (no latest)",
                           path);
        snprintf(problem, sizeof problem, "%s/latest is missing", path);
    } else {
        while (len && (text[len - 1] == '\n' || text[len - 1] == ' ')) text[--len] = '\0';
        int bad = len == 0 || len >= sizeof named || strchr(text, '/') != NULL || strncmp(text, "step-", 5) != 0;
        if (!bad) snprintf(named, sizeof named, "%s", text);
        free(text);
        if (bad) {
            snprintf(problem, sizeof problem, "%s/latest does not name a checkpoint directory", path);
        } else if ((size_t)snprintf(out, cap, "%s/%s", path, named) >= cap) {
            return tl_fail(err, "%s: path too long", path);
        } else if (tl_checkpoint_verify(out, NULL, &e2)) {
            struct stat sb;
            if (stat(out, &sb) != 0)
                snprintf(problem, sizeof problem, "%s/latest names %s, which does not exist", path, named);
            else
                snprintf(problem, sizeof problem, "%s", e2.msg);
        } else {
            return 0;
        }
    }
    if (newest_complete(path, named[0] ? named : NULL, out, cap, &e2))
        return tl_fail(err, "%s; %s", problem, e2.msg);
    if (note) snprintf(note, note_cap, "%s; using the newest complete checkpoint, %s", problem, out);
    return 0;
}

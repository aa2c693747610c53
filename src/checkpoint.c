/* checkpoint.c - HF directories and atomic training checkpoints. */
#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Removes all but the newest `keep` step-* directories (names sort by step). */
static void prune(const char *out_dir, int keep) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (!strncmp(e->d_name, "step-", 5)) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (i < n - keep && names[i]) {
            char p[PATH_CAP];
            snprintf(p, sizeof p, "%s/%s", out_dir, names[i]);
            remove_tree(p);
        }
        free(names[i]);
    }
}

int tl_checkpoint_save(const char *out_dir, const tl_model *m, const tl_train_state *s,
                       const char *extra_json, const char *tokenizer, int keep, char *saved_path,
                       size_t saved_cap, tl_error *err) {
    char name[64], tmp[PATH_CAP], final[PATH_CAP], path[PATH_CAP];
    snprintf(name, sizeof name, "step-%08llu", (unsigned long long)s->step);
    if (tl_mkdir_p(out_dir, err)) return -1;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.tmp-%s", out_dir, name) >= sizeof tmp ||
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
    if (tl_fsync_dir(tmp, err)) return -1;
    /* A checkpoint of the same step from an earlier run is replaced; `latest`
     * never points at it in between because we move it aside first. */
    char old[PATH_CAP];
    snprintf(old, sizeof old, "%s/.old-%s", out_dir, name);
    remove_tree(old);
    struct stat sb;
    if (stat(final, &sb) == 0 && rename(final, old) != 0)
        return tl_fail(err, "%s: cannot replace: %s", final, strerror(errno));
    if (rename(tmp, final) != 0) return tl_fail(err, "%s: rename failed: %s", final, strerror(errno));
    if (tl_fsync_dir(out_dir, err)) return -1;
    char latest[128];
    int llen = snprintf(latest, sizeof latest, "%s\n", name);
    if (join(path, sizeof path, out_dir, "latest", err) || tl_write_file_atomic(path, latest, (size_t)llen, err))
        return -1;
    tl_fsync_dir(out_dir, NULL);
    remove_tree(old);
    if (keep > 0) prune(out_dir, keep);
    if (saved_path) snprintf(saved_path, saved_cap, "%s", final);
    return 0;
}

int tl_checkpoint_resolve(const char *path, char *out, size_t cap, tl_error *err) {
    char p[PATH_CAP];
    if (join(p, sizeof p, path, "training_state.bin", err)) return -1;
    if (file_exists(p)) {
        snprintf(out, cap, "%s", path);
        return 0;
    }
    if (join(p, sizeof p, path, "latest", err)) return -1;
    char *text;
    size_t len;
    if (tl_read_file(p, 4096, &text, &len, err))
        return tl_fail(err, "%s: neither a checkpoint (no training_state.bin) nor a run directory (no latest)", path);
    while (len && (text[len - 1] == '\n' || text[len - 1] == ' ')) text[--len] = '\0';
    int bad = len == 0 || strchr(text, '/') != NULL || strncmp(text, "step-", 5) != 0;
    if (!bad && (size_t)snprintf(out, cap, "%s/%s", path, text) >= cap) bad = 1;
    free(text);
    if (bad) return tl_fail(err, "%s/latest: does not name a checkpoint directory", path);
    if (join(p, sizeof p, out, "training_state.bin", err)) return -1;
    if (!file_exists(p)) return tl_fail(err, "%s: checkpoint has no training_state.bin", out);
    return 0;
}

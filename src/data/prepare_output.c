/* prepare_output.c - prepare's output (prepare.c): packing token ids into
 * samples and shards, the manifest, and swapping the finished data set into
 * place. */
#include "prepare_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ output */

static int set_open(shard_set *s, tl_error *err) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s-%05d.bin", s->dir, s->name, s->n_shards);
    if (tl_shard_writer_open_ex(&s->w, path, s->seq_len, s->vocab, s->masked, err)) return -1;
    s->w.pairs = s->pairs;
    s->open = 1;
    return 0;
}

int tl_prep_set_close(shard_set *s, size_t *dropped, tl_error *err) {
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
    si->bytes = TL_SHARD_HEADER + s->w.n_samples * (uint64_t)tl_shard_sample_bytes(s->seq_len, s->w.token_bytes, s->masked);
    s->split->shards = (uint64_t)s->n_shards;
    return 0;
}

static int set_write_sample(shard_set *s, const int *ids, tl_error *err) {
    if (!s->open && set_open(s, err)) return -1;
    if (tl_shard_writer_add(&s->w, ids, (size_t)s->seq_len + 1, err)) return -1;
    s->split->samples++;
    s->split->tokens += (uint64_t)s->seq_len + 1;
    if (s->w.n_samples >= s->per_shard) return tl_prep_set_close(s, NULL, err);
    return 0;
}

int tl_prep_set_write_masked(shard_set *s, const int *ids, const uint8_t *mask, tl_error *err) {
    if (!s->open && set_open(s, err)) return -1;
    if (tl_shard_writer_add_masked(&s->w, ids, mask, err)) return -1;
    s->split->samples++;
    s->split->tokens += (uint64_t)s->seq_len + 1;
    if (s->w.n_samples >= s->per_shard) return tl_prep_set_close(s, NULL, err);
    return 0;
}

int tl_prep_is_val_unit(const tl_prepare_opts *o, uint64_t u) {
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
            if (P->o->split_by == TL_SPLIT_SAMPLES) to = tl_prep_is_val_unit(P->o, P->sample_index++);
            if (set_write_sample(&P->sets[to], sb->buf, err)) return -1;
            sb->n = 0;
        }
    }
    return 0;
}

int tl_prep_pack_batch(prep *P, batch *b, tl_error *err) {
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
            P->doc_val = P->o->split_by == TL_SPLIT_DOCS ? tl_prep_is_val_unit(P->o, P->doc_index) : 0;
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

int tl_prep_write_manifest(prep *P, tl_error *err) {
    const tl_prepare_opts *o = P->o;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "tinyllama-token-shards");
    cJSON_AddNumberToObject(m, "version", 1);
    /* what the samples are: "tokens" (packed text) or "chat" (masked conversations); older manifests: tokens */
    cJSON_AddStringToObject(m, "kind", o->format == TL_FMT_CHAT ? "chat" : o->format == TL_FMT_PREFERENCE ? "preference" : "tokens");
    if (o->format == TL_FMT_CHAT || o->format == TL_FMT_PREFERENCE) tl_prep_chat_manifest(P, m);
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
 * undoes what the crash interrupted (tl_prep_recover_out) before it starts. */

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
int tl_prep_remove_ours(const char *dir, tl_error *err) {
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
int tl_prep_out_paths(const char *dir, char *out, char *nw, char *old, char *parent, size_t cap, tl_error *err) {
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
int tl_prep_recover_out(const char *out, const char *nw, const char *old, tl_error *err) {
    if (is_dir(nw) && tl_prep_remove_ours(nw, err)) return -1;
    if (is_dir(old)) {
        if (is_dir(out)) {
            if (tl_prep_remove_ours(old, err)) return -1;
        } else if (rename(old, out) != 0) {
            return tl_fail(err, "%s: cannot move the earlier data set back to %s: %s", old, out, strerror(errno));
        }
    }
    struct stat sb;
    if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode)) return tl_fail(err, "%s: exists and is not a directory", out);
    return is_dir(out) ? check_ours(out, err) : 0;
}

int tl_prep_swap_in(const char *out, const char *nw, const char *old, const char *parent, tl_error *err) {
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
    if (had) tl_prep_remove_ours(old, &ignored);
    return 0;
}

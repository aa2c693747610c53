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
#include "prepare_internal.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void tl_prep_progress(prep *P, int done) {
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
        if (tl_prep_parse_record(P, b, &b->recs[i])) {
#pragma omp atomic write
            oom = 1;
        }
    if (oom) return tl_fail(err, "out of memory");
    return tl_prep_tokenize_batch(P, b, err);
}

/* One thread: read, process, pack, batch after batch. */
static int run_serial(prep *P, batch *b, size_t budget, tl_error *err) {
    int rc = 0;
    while (!rc && P->cur < P->files.n) {
        tl_prep_batch_reset(b);
        rc = tl_prep_read_batch(P, b, budget, err);
        if (!rc) rc = process_batch(P, b, err);
        if (!rc) rc = tl_prep_pack_batch(P, b, err);
        tl_prep_progress(P, 0);
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
        int rc = tl_prep_read_batch(P, b, pl->budget, &e);
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
        int rc = tl_prep_pack_batch(P, b, &e);
        tl_prep_progress(P, 0);
        tl_prep_batch_reset(b);
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
    for (int i = 0; i < PIPE_BATCHES; i++) tl_prep_batch_free(&pool[i]);
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
    P->word_cache = P->exact && !o->no_word_cache && tl_prep_word_separable(P->tok);
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
    const int chat = o->format == TL_FMT_CHAT || o->format == TL_FMT_PREFERENCE; /* conversations: prepare_chat.c */
    for (int i = 0; i < o->n_inputs && !rc; i++)
        rc = tl_prep_add_path(&P->files, o->inputs[i], chat ? TL_FMT_JSONL : o->format, 0, 0, err);
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
    if (!rc && P->word_cache && tl_prep_wcache_new(P)) rc = tl_fail(err, "out of memory");
    P->seg_target = o->segment_bytes ? o->segment_bytes : 16384;
    P->seg_max = P->seg_target * 64 > ((size_t)1 << 20) ? P->seg_target * 64 : ((size_t)1 << 20);
    P->rec_target = P->seg_target * 16;
    if (!P->exact) /* whole documents (up to max_doc_bytes) */
        P->seg_target = P->seg_max = P->rec_target = o->max_doc_bytes;
    size_t budget = o->batch_bytes ? o->batch_bytes : ((size_t)2 << 20) * (size_t)P->nt;
    if (budget < ((size_t)4 << 20) && !o->batch_bytes) budget = (size_t)4 << 20;
    /* the data set is written beside the old one and swapped in when complete (see tl_prep_swap_in) */
    char out[4096], nw[4096], old[4096], parent[4096];
    int made_new = 0;
    if (!rc) rc = tl_prep_out_paths(o->out_dir, out, nw, old, parent, sizeof out, err);
    if (!rc) rc = tl_prep_recover_out(out, nw, old, err);
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
        s->masked = chat;
        s->pairs = o->format == TL_FMT_PREFERENCE;
        if (s->pairs) s->seq_len = 2 * o->seq_len + 1; /* a pair: two samples of seq_len + 1 */
        P->sb[k].buf = malloc(sizeof(int) * ((size_t)o->seq_len + 1));
        if (!P->sb[k].buf) rc = tl_fail(err, "out of memory");
    }
    if (!rc) rc = chat ? tl_prep_chat_run(P, err) : P->nt > 1 ? run_pipelined(P, budget, err) : run_serial(P, &b, budget, err);
    if (!rc) {
        size_t dropped = (size_t)(P->sb[0].n + P->sb[1].n);
        rc = tl_prep_set_close(&P->sets[0], &dropped, err);
        if (!rc) rc = tl_prep_set_close(&P->sets[1], &dropped, err);
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
    if (!rc) rc = tl_prep_write_manifest(P, err);
    if (!rc) rc = tl_prep_swap_in(out, nw, old, parent, err);
    if (!rc) {
        made_new = 0;
        snprintf(r->manifest, sizeof r->manifest, "%s/manifest.json", out);
    }
    if (!rc) tl_prep_progress(P, 1);
    /* cleanup */
    for (int k = 0; k < 2; k++) {
        if (P->sets[k].open) tl_shard_writer_abort(&P->sets[k].w);
        free(P->sets[k].shards);
        free(P->sb[k].buf);
    }
    if (P->cur_open) {
        tl_prep_stream_close(&P->lr.s);
        free(P->lr.buf);
    }
    if (made_new) { /* a failed run leaves the old data set as it was and nothing of its own */
        tl_error ignored;
        tl_prep_remove_ours(nw, &ignored);
    }
    tl_prep_batch_free(&b);
    for (int i = 0; i < P->files.n; i++) free(P->files.v[i].path);
    free(P->files.v);
    tl_prep_wcache_free(P);
    tl_tokenizer_free(P->tok);
    free(P);
    if (rc) tl_prepare_result_free(r);
    return rc;
}

void tl_prepare_result_free(tl_prepare_result *r) {
    for (int i = 0; i < r->n_inputs; i++) free(r->inputs[i].path);
    free(r->inputs);
    r->inputs = NULL;
    for (int i = 0; i < r->chat.n_issues; i++) free(r->chat.issues[i]);
    free(r->chat.issues);
    memset(&r->chat, 0, sizeof r->chat);
    r->n_inputs = 0;
}

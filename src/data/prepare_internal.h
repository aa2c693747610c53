/* prepare_internal.h - the state shared by the files of the prepare pipeline:
 * prepare.c (the driver), prepare_input.c (files, streams, lines),
 * prepare_read.c (records, parsing), prepare_wcache.c (tokenizing) and
 * prepare_output.c (shards, manifest, output directory).  Not a public header. */
#ifndef TL_PREPARE_INTERNAL_H
#define TL_PREPARE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>

#include "data.h"
#include "prepare.h"
#include "tokenizer.h"

#define READ_CHUNK ((size_t)1 << 20)
#define BYTE_VOCAB 259

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

/* Splits a stream into lines; lines longer than max_piece come in pieces. */
enum { LR_END, LR_LINE, LR_LAST, LR_CUT };

typedef struct {
    stream s;
    char *buf;
    size_t cap, start, end, scanned;
    int eof;
} lreader;

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

/* word cache tables (prepare_wcache.c) */
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
    int masked; /* chat data: masked shards */
    int pairs;  /* preference data: of pairs */
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
    int word_cache;   /* words are encoded independently (and cached): see prepare_wcache.c */
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

/* ------------------------------------------------------------------ between the files */

/* prepare_input.c */
size_t tl_prep_utf8_cut(const unsigned char *s, size_t pos);
int tl_prep_add_path(file_list *fl, const char *path, int forced, int depth, int from_dir, tl_error *err);
int tl_prep_stream_open(stream *s, const in_file *f, tl_prepare_input *st, tl_error *err);
void tl_prep_stream_close(stream *s);
int tl_prep_lr_next(lreader *r, size_t max_piece, int utf8_cuts, const char **p, size_t *n, tl_error *err);

/* prepare_read.c */
void tl_prep_batch_reset(batch *b);
void tl_prep_batch_free(batch *b);
int tl_prep_read_batch(prep *P, batch *b, size_t budget, tl_error *err);
int tl_prep_parse_record(const prep *P, const batch *b, record *r);

/* prepare_wcache.c */
int tl_prep_word_separable(const tl_tokenizer *t);
int tl_prep_tokenize_batch(prep *P, batch *b, tl_error *err);
int tl_prep_wcache_new(prep *P);
void tl_prep_wcache_free(prep *P);

/* prepare_output.c */
int tl_prep_set_close(shard_set *s, size_t *dropped, tl_error *err);
int tl_prep_pack_batch(prep *P, batch *b, tl_error *err);
int tl_prep_write_manifest(prep *P, tl_error *err);
int tl_prep_set_write_masked(shard_set *s, const int *ids, const uint8_t *mask, tl_error *err);
int tl_prep_is_val_unit(const tl_prepare_opts *o, uint64_t u);

/* prepare_chat.c: --format chat (conversations -> masked samples) */
struct cJSON;
int tl_prep_chat_run(prep *P, tl_error *err);
void tl_prep_chat_manifest(const prep *P, struct cJSON *m);
int tl_prep_remove_ours(const char *dir, tl_error *err);
int tl_prep_out_paths(const char *dir, char *out, char *nw, char *old, char *parent, size_t cap, tl_error *err);
int tl_prep_recover_out(const char *out, const char *nw, const char *old, tl_error *err);
int tl_prep_swap_in(const char *out, const char *nw, const char *old, const char *parent, tl_error *err);

/* prepare.c */
void tl_prep_progress(prep *P, int done);

#endif

/* data.h - packed token shards (docs/formats.md) and the training data loader.
 *
 * A shard holds n_samples samples of seq_len+1 tokens each (inputs are tokens
 * [0, seq_len), targets tokens [1, seq_len]); uint16 tokens when vocab <= 65536,
 * else uint32.  The loader walks a set of shards either sequentially or in a
 * seeded shuffled order per epoch; its position is two integers, so resuming
 * is O(1) and exact.
 *
 * A masked shard (version 2, chat data for fine-tuning) follows each sample's
 * tokens with seq_len+1 mask bytes: 1 where the token is a training target
 * (the assistant's replies), 0 elsewhere (prompts, padding).  Unmasked shards
 * are still written as version 1, byte for byte as before.  A masked shard of
 * preference pairs (header u32 at offset 40 = 1) holds in each sample a chosen
 * and a rejected conversation of (seq_len+1)/2 tokens each. */
#ifndef TL_DATA_H
#define TL_DATA_H

#include <stdint.h>

#include "common.h"

#define TL_SHARD_MAGIC "TLSHARD1"
#define TL_SHARD_VERSION 1u
#define TL_SHARD_VERSION_MASKED 2u
#define TL_SHARD_HEADER 64

/* ------------------------------------------------------------------ writing */

typedef struct {
    char path[4096];
    char tmp[4200];
    void *f; /* FILE* */
    int seq_len, vocab_size, token_bytes;
    int masked; /* version 2: whole samples with their masks (tl_shard_writer_add_masked) */
    int pairs;  /* masked: each sample is a preference pair (set before closing) */
    uint64_t n_samples, checksum;
    int *pending; /* tokens of the sample being filled */
    int n_pending;
} tl_shard_writer;

/* Starts a shard at path (written to path.tmp.<pid>, renamed on close). */
int tl_shard_writer_open(tl_shard_writer *w, const char *path, int seq_len, int vocab_size, tl_error *err);
/* The same for a masked shard (version 2) when masked. */
int tl_shard_writer_open_ex(tl_shard_writer *w, const char *path, int seq_len, int vocab_size, int masked,
                            tl_error *err);
/* Masked shards: appends one whole sample, seq_len+1 tokens and their mask (0/1). */
int tl_shard_writer_add_masked(tl_shard_writer *w, const int *tokens, const uint8_t *mask, tl_error *err);
/* Bytes of one sample in the file. */
size_t tl_shard_sample_bytes(int seq_len, int token_bytes, int masked);
/* Appends tokens to the stream; every seq_len+1 tokens complete one sample. */
int tl_shard_writer_add(tl_shard_writer *w, const int *tokens, size_t n, tl_error *err);
/* Finishes: drops an incomplete tail sample (returned in *dropped), fixes the
 * header, fsyncs and renames into place. */
int tl_shard_writer_close(tl_shard_writer *w, size_t *dropped, tl_error *err);
/* Abandons a shard being written (removes the temporary file). */
void tl_shard_writer_abort(tl_shard_writer *w);

/* ------------------------------------------------------------------ reading */

typedef struct {
    char path[4096];
    const uint8_t *map;
    size_t map_len;
    int seq_len, vocab_size, token_bytes;
    int masked; /* version 2: each sample carries a target mask */
    int pairs;  /* masked: each sample is a preference pair, chosen then rejected, (seq_len+1)/2 tokens each */
    uint64_t n_samples, checksum; /* checksum: the header's FNV-1a 64 of the data (verified) */
} tl_shard;

/* Maps and validates a shard (magic, version, sizes, exact length, checksum). */
int tl_shard_open(tl_shard *s, const char *path, tl_error *err);
void tl_shard_close(tl_shard *s);
/* Copies sample i (seq_len+1 tokens) into out. */
void tl_shard_sample(const tl_shard *s, uint64_t i, int *out);
/* The same with the sample's mask (all 1 for an unmasked shard); mask may be NULL. */
void tl_shard_sample_mask(const tl_shard *s, uint64_t i, int *out, uint8_t *mask);

/* The tokenizer a data set was prepared with, as its manifest.json records it
 * (or, from tl_data_tokenizer_of, the one given to train). */
typedef struct {
    char hash[40];     /* FNV-1a 64 of the tokenizer file's bytes, or "byte-level-259" */
    char file[256];    /* base name, or "byte-level" */
    int vocab_size;
    char origin[4200]; /* where this was read: a manifest.json or a tokenizer file ("": not known) */
} tl_data_tokenizer;

/* The identity of a loaded tokenizer (path: the file it was loaded from). */
struct tl_tokenizer;
void tl_data_tokenizer_of(const struct tl_tokenizer *t, const char *path, tl_data_tokenizer *out);
/* Fails, naming both origins, unless a and b are the same tokenizer (0 if either is not known). */
int tl_data_tokenizer_check(const tl_data_tokenizer *a, const tl_data_tokenizer *b, tl_error *err);

typedef struct {
    int n_shards;
    tl_shard *shards;
    uint64_t *first; /* global index of each shard's first sample */
    uint64_t n_samples;
    int seq_len, vocab_size;
    int masked; /* the shards carry target masks (chat data); all or none of them */
    int pairs;  /* and hold preference pairs (all or none) */
    int shuffle;
    uint64_t seed;
    /* position */
    uint64_t epoch, index;
    tl_data_tokenizer tok; /* from the manifests (verify); origin "" if not checked */
    char *taken;           /* which files each path gave, e.g. "d: 3 training shards (train-00000.bin .. train-00002.bin)" */
} tl_dataset;

typedef struct {
    /* "train" or "val": a directory means its SPLIT-NNNNN.bin shards only (those
     * its manifest.json lists, when it has one); NULL: every *.bin inside */
    const char *split;
    /* every shard must be listed, with its size, sample count and checksum, in
     * the manifest.json of its directory (which `prepare` writes last), and all
     * manifests must name the same tokenizer: shards of an interrupted or
     * different `prepare` are refused */
    int verify;
} tl_dataset_opts;

/* Opens shards named by paths: files, directories or glob patterns.  All shards
 * must share seq_len. */
int tl_dataset_open_ex(tl_dataset *d, const char *const *paths, int n_paths, const tl_dataset_opts *o, tl_error *err);
/* The same with no options: a directory means every *.bin inside, sorted. */
int tl_dataset_open(tl_dataset *d, const char *const *paths, int n_paths, tl_error *err);
void tl_dataset_close(tl_dataset *d);
/* Checks every token is < vocab_size (the model's); names the shard otherwise. */
int tl_dataset_check_vocab(const tl_dataset *d, int vocab_size, tl_error *err);
void tl_dataset_set_order(tl_dataset *d, int shuffle, uint64_t seed);
/* Moves to a saved position. */
int tl_dataset_seek(tl_dataset *d, uint64_t epoch, uint64_t index, tl_error *err);
/* Fills B samples of T+1 tokens (T <= seq_len: the first T+1 tokens of each
 * sample) and advances, wrapping into the next epoch. */
int tl_dataset_next(tl_dataset *d, int B, int T, int *tokens, tl_error *err);
/* The same with the samples' masks into mask[B*(T+1)] (may be NULL). */
int tl_dataset_next_mask(tl_dataset *d, int B, int T, int *tokens, uint8_t *mask, tl_error *err);
/* The same, saying which samples (their numbers in file order) into index[B] (may be NULL). */
int tl_dataset_next_ex(tl_dataset *d, int B, int T, int *tokens, uint8_t *mask, uint64_t *index, tl_error *err);
/* Splits B samples of T+1 tokens into inputs[B*T] and next-token targets[B*T];
 * with mask (of the samples' tokens; NULL: every token), a target whose token
 * is not masked in is -1 (not counted by the loss).  Returns the number of
 * counted targets. */
long tl_batch_targets(const int *tokens, const uint8_t *mask, int B, int T, int *inputs, int *targets);
/* Reads sample number i (in file order) without moving the position. */
void tl_dataset_get(const tl_dataset *d, uint64_t i, int *out);
void tl_dataset_get_mask(const tl_dataset *d, uint64_t i, int *out, uint8_t *mask);

#endif

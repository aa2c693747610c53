/* tokenizer_internal.h - the tokenizer's data structure, shared by the loaders
 * (sentencepiece_model.c, tokenizer_json.c), the encoder/decoder (tokenizer.c)
 * and the trainer (bpe_train.c).  Not a public header. */
#ifndef TL_TOKENIZER_INTERNAL_H
#define TL_TOKENIZER_INTERNAL_H

#include <stdint.h>

#include "tokenizer.h"

typedef struct {
    const char *str; /* NUL-terminated, inside tl_tokenizer.pool */
    uint32_t len;
    float score;
    int type;        /* TL_PIECE_* */
} tl_piece;

/* Open-addressing string -> id table (linear probing, power-of-two size). */
typedef struct {
    uint32_t *hash;  /* full 32-bit hash of the key, for quick rejects */
    int32_t *id;     /* -1: empty slot */
    uint32_t mask;
} tl_strmap;

/* (left id, right id) -> merge rank and result id, for tokenizer.json merges. */
typedef struct {
    uint64_t *key;   /* (left << 32 | right) + 1; 0: empty */
    int32_t *rank;
    int32_t *result;
    uint32_t mask;
} tl_pairmap;

struct tl_tokenizer {
    int n;
    tl_piece *pieces;
    char *pool;
    size_t pool_len;

    tl_strmap normal;    /* NORMAL, USER_DEFINED, UNUSED pieces: merge candidates */
    tl_strmap reserved;  /* the other types (UNKNOWN, CONTROL, BYTE) */

    int unk_id, bos_id, eos_id, pad_id;
    int byte_id[256];    /* id of <0xXX>, -1 if absent */
    int byte_fallback;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int hf_prefix;       /* how add_dummy_prefix applies: TL_HF_PREFIX_* */
    int split_digits;
    int model_type;
    int has_unused;
    int word_split;      /* see encode_segment in tokenizer.c */
    char normalizer_name[64];
    char unk_surface[64];

    /* USER_DEFINED pieces are matched greedily (longest) in the text and never merged. */
    int *user_ids;       /* sorted by first byte */
    int n_user;
    int user_first[257]; /* user_ids index range per first byte */

    int *ctrl_ids;       /* CONTROL pieces and the unknown piece, for TL_ENC_PARSE_SPECIAL */
    int n_ctrl;
    unsigned char ctrl_first[256];

    int is_json;         /* HF tokenizer.json: merges decide, not scores */
    tl_pairmap merges;
    int fuse_unk;

    uint64_t hash;
    char hash_hex[17];
};

/* hf_prefix: SentencePiece (and HF's Prepend normalizer) prefix every encoded
 * segment; HF's Metaspace pre-tokenizer only a segment not already starting with
 * a space or U+2581, with prepend_scheme "first" only the text's first segment. */
enum { TL_HF_PREFIX_SPM = 0, TL_HF_PREFIX_ALWAYS = 1, TL_HF_PREFIX_FIRST = 2 };

uint32_t tl_tok_strhash(const char *s, size_t len);
int tl_strmap_build(tl_strmap *m, const tl_piece *pieces, int n, int want_normal,
                    int *dup_id);
int tl_strmap_get(const tl_strmap *m, const tl_piece *pieces, const char *s, size_t len);
void tl_strmap_free(tl_strmap *m);

/* Allocates t->pieces/pool from parallel arrays and builds the lookup tables,
 * applying SentencePiece's model checks (unique pieces, one unk, 256 byte pieces
 * when byte_fallback...).  Used by both loaders.  Fields other than the pieces
 * (flags, ids) must be set by the caller first. */
typedef struct {
    const char *str;
    size_t len;
    float score;
    int type;
} tl_piece_src;
int tl_tok_finish(tl_tokenizer *t, const tl_piece_src *src, int n, const char *what,
                  tl_error *err);

uint64_t tl_fnv1a64(const void *data, size_t len);
void tl_tok_set_hash(tl_tokenizer *t, const void *data, size_t len);

/* ModelProto writer for the trainer: pieces + specs. */
typedef struct {
    int vocab_size;
    int byte_fallback, split_digits, add_dummy_prefix, allow_whitespace_only_pieces;
    int max_piece_length;
    double character_coverage;
} tl_spm_write_opts;
int tl_spm_serialize(const tl_piece_src *pieces, int n, const tl_spm_write_opts *o,
                     unsigned char **out, size_t *out_len, tl_error *err);

#endif

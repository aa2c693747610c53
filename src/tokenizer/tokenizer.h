/* tokenizer.h - the Llama tokenizer: SentencePiece BPE with byte fallback.
 *
 * Loads a SentencePiece ModelProto (`tokenizer.model`) or an HF `tokenizer.json`
 * (Llama-family BPE with byte fallback) and encodes text to exactly the ids the
 * real SentencePiece library produces; decodes ids back to text the same way.
 * A tl_tokenizer is immutable after loading, so one instance may be shared by
 * any number of threads.  Library functions never print; they return 0 / -1
 * (or NULL) and fill a tl_error. */
#ifndef TL_TOKENIZER_H
#define TL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct tl_tokenizer tl_tokenizer;

/* Piece types, numbered as in sentencepiece_model.proto. */
enum {
    TL_PIECE_NORMAL = 1,
    TL_PIECE_UNKNOWN = 2,
    TL_PIECE_CONTROL = 3,
    TL_PIECE_USER_DEFINED = 4,
    TL_PIECE_UNUSED = 5,
    TL_PIECE_BYTE = 6,
};

/* Encode flags. */
enum {
    TL_ENC_BOS = 1,           /* prepend the BOS id (error if the model has none) */
    TL_ENC_EOS = 2,           /* append the EOS id */
    TL_ENC_PARSE_SPECIAL = 4, /* control pieces and the unknown piece written in the text (e.g.
                                 "<s>", "<unk>": HF's special tokens) become their ids;
                                 the text between them is encoded segment by segment, each as if
                                 it were a whole input (so each gets the dummy prefix) */
};

/* Loads `path`: a file whose name ends in ".json" is read as an HF tokenizer.json,
 * anything else as a SentencePiece ModelProto.  NULL + err on failure. */
tl_tokenizer *tl_tokenizer_load(const char *path, tl_error *err);
/* The same from bytes in memory (`what` names the source in error messages). */
tl_tokenizer *tl_tokenizer_load_model_bytes(const void *data, size_t len, const char *what,
                                            tl_error *err);
tl_tokenizer *tl_tokenizer_load_json_text(const char *text, size_t len, const char *what,
                                          tl_error *err);
void tl_tokenizer_free(tl_tokenizer *t);

int tl_tokenizer_vocab_size(const tl_tokenizer *t);
int tl_tokenizer_bos_id(const tl_tokenizer *t); /* -1 if none */
int tl_tokenizer_eos_id(const tl_tokenizer *t); /* -1 if none */
int tl_tokenizer_unk_id(const tl_tokenizer *t);
int tl_tokenizer_pad_id(const tl_tokenizer *t); /* -1 if none */
/* The piece string of id (NUL-terminated), or NULL if id is out of range. */
const char *tl_tokenizer_piece(const tl_tokenizer *t, int id);
float tl_tokenizer_score(const tl_tokenizer *t, int id);
int tl_tokenizer_piece_type(const tl_tokenizer *t, int id); /* TL_PIECE_*, 0 if out of range */
/* Id of an exact piece string, or -1. */
int tl_tokenizer_piece_id(const tl_tokenizer *t, const char *piece, size_t len);

/* Settings, for `tokenizer info` and manifests. */
typedef struct {
    const char *format;        /* "sentencepiece" or "hf-json" */
    int model_type;            /* 2 = BPE (the only one supported) */
    int byte_fallback;
    int add_dummy_prefix;
    int remove_extra_whitespaces;
    int escape_whitespaces;
    int split_digits;          /* trainer setting; recorded, does not change encoding */
    int n_user_defined, n_control, n_byte, n_unused;
    const char *normalizer_name;
} tl_tokenizer_info;
void tl_tokenizer_get_info(const tl_tokenizer *t, tl_tokenizer_info *info);

/* Identity of the tokenizer: FNV-1a 64 of the file bytes it was loaded from, and
 * the same as 16 lowercase hex digits (for data manifests). */
uint64_t tl_tokenizer_hash(const tl_tokenizer *t);
const char *tl_tokenizer_hash_hex(const tl_tokenizer *t);

/* Encodes len bytes of text (any bytes: invalid UTF-8 is handled exactly as
 * SentencePiece does).  *ids is malloc'ed (free() it; may be NULL when *n == 0). */
int tl_tokenizer_encode(const tl_tokenizer *t, const char *text, size_t len, int flags, int **ids,
                        size_t *n, tl_error *err);

/* Batch encode with OpenMP (nthreads <= 0: the OpenMP default).  out_ids[i] and
 * out_n[i] receive the ids of texts[i] (free() each).  On failure everything
 * already produced is freed and the first error is reported. */
int tl_tokenizer_encode_batch(const tl_tokenizer *t, const char *const *texts, const size_t *lens,
                              size_t count, int flags, int nthreads, int **out_ids, size_t *out_n,
                              tl_error *err);

/* Decodes ids to text exactly as SentencePiece's DecodeIds.  *text is malloc'ed
 * and NUL-terminated (the NUL not counted in *len).  Out-of-range ids are an error. */
int tl_tokenizer_decode(const tl_tokenizer *t, const int *ids, size_t n, char **text, size_t *len,
                        tl_error *err);

/* Streaming decoder for generation: feed one id at a time and get the bytes that
 * are final so far.  Byte pieces that start a UTF-8 character are held until the
 * character is complete (or proven invalid, which yields U+FFFD per byte, as in
 * the full decode).  The concatenation of all outputs plus tl_decoder_flush equals
 * tl_tokenizer_decode of the whole sequence. */
typedef struct {
    const tl_tokenizer *t;
    unsigned char pending[4];
    int npending;
    unsigned char *run; /* tokenizer.json: the current run of byte pieces (HF decodes a run whole) */
    size_t nrun, run_cap;
    int text_empty;   /* nothing emitted yet */
    int bos_ws_seen;  /* a leading-space piece was consumed at the start */
    int is_bos_ws;    /* still at the start: a leading U+2581 would be dropped */
    char *buf;
    size_t cap;
} tl_decoder;
void tl_decoder_init(tl_decoder *d, const tl_tokenizer *t);
/* *out points into the decoder's buffer, valid until the next call. */
int tl_decoder_push(tl_decoder *d, int id, const char **out, size_t *len, tl_error *err);
int tl_decoder_flush(tl_decoder *d, const char **out, size_t *len, tl_error *err);
void tl_decoder_free(tl_decoder *d);

/* ---- training (src/tokenizer/bpe_train.c) ---- */
typedef struct {
    int vocab_size;            /* total pieces including specials and 256 byte pieces */
    double character_coverage; /* e.g. 0.9995 (1.0 keeps every character) */
    int max_piece_length;      /* default 16 */
    int split_digits;          /* 1: digits never merge */
    int byte_fallback;         /* 1: add <0x00>..<0xFF> */
    int add_dummy_prefix;      /* 1 */
    int allow_whitespace_only_pieces; /* 1 */
    int max_sentence_length;   /* bytes; longer lines are skipped (default 4192) */
    size_t max_sentences;      /* 0: all */
    int nthreads;
    /* Progress callback (may be NULL): called now and then with a message. */
    void (*progress)(void *user, const char *msg);
    void *progress_user;
} tl_bpe_train_opts;

void tl_bpe_train_default_opts(tl_bpe_train_opts *o);
/* Trains on the given text files and writes a SentencePiece ModelProto to out_path. */
int tl_bpe_train(const char *const *inputs, size_t n_inputs, const tl_bpe_train_opts *o,
                 const char *out_path, tl_error *err);

#endif

/* gguf_write.h - writing GGUF v3 files (gguf_write.c): a generic writer of
 * metadata and tensors, and a Llama model written as llama.cpp's converter and
 * llama-quantize write it (names, q/k row order, metadata, the per-tensor
 * types of the quantization mixes).  docs/formats.md describes the layout and
 * the mixes. */
#ifndef TL_GGUF_WRITE_H
#define TL_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "model.h"
#include "tokenizer.h"

/* ---- generic writer ---- */

typedef struct tl_gguf_writer tl_gguf_writer;

/* alignment: of the data section and of every tensor (a power of two; it is
 * also written as general.alignment). */
tl_gguf_writer *tl_gguf_writer_new(uint32_t alignment);
void tl_gguf_writer_free(tl_gguf_writer *w);

/* Metadata, in the order added.  An allocation failure is remembered and
 * reported by tl_gguf_writer_write. */
void tl_gguf_w_u32(tl_gguf_writer *w, const char *key, uint32_t v);
void tl_gguf_w_i32(tl_gguf_writer *w, const char *key, int32_t v);
void tl_gguf_w_f32(tl_gguf_writer *w, const char *key, float v);
void tl_gguf_w_bool(tl_gguf_writer *w, const char *key, int v);
void tl_gguf_w_str(tl_gguf_writer *w, const char *key, const char *s, size_t len);
void tl_gguf_w_arr_str(tl_gguf_writer *w, const char *key, const char *const *s, const size_t *len, size_t n);
void tl_gguf_w_arr_f32(tl_gguf_writer *w, const char *key, const float *v, size_t n);
void tl_gguf_w_arr_i32(tl_gguf_writer *w, const char *key, const int32_t *v, size_t n);

/* A tensor of n_dims (1..4) dimensions ne[] (ne[0] the row length) and a ggml
 * type whose block divides ne[0].  Returns its index, or -1 + err. */
int tl_gguf_w_tensor(tl_gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                     tl_error *err);

/* fill writes tensor i's bytes (its type's size for its shape) at dst. */
typedef int (*tl_gguf_fill_fn)(void *ctx, int i, uint8_t *dst, tl_error *err);

/* Writes the file: into "path.tmp.<pid>", fsync'ed, then renamed over path, so
 * path is either absent/old or complete.  fill is called for each tensor in
 * order. */
int tl_gguf_writer_write(tl_gguf_writer *w, const char *path, tl_gguf_fill_fn fill, void *ctx, tl_error *err);

/* ---- Llama models ---- */

/* A whole-file type: what `quantize` and `convert --to-gguf --type` take. */
typedef struct {
    const char *name;  /* "Q4_K_M" */
    uint32_t ftype;    /* general.file_type (llama.cpp's llama_ftype) */
    uint32_t base;     /* the ggml type of 2-D weights */
    int mix;           /* 1: the K-quant mix's per-tensor choices (attn_v, ffn_down) */
} tl_gguf_ftype;

/* By name (case-insensitive); NULL if unknown. */
const tl_gguf_ftype *tl_gguf_ftype_find(const char *name);
/* All names, space-separated, for messages and --help. */
const char *tl_gguf_ftype_names(void);

/* The ggml type llama-quantize gives the Llama tensor gguf_name (n_dims, row
 * length ne0) for ft, in a model of n_layers layers that is tied (no
 * output.weight) or not.  Sets *fallback when the row length forced a type
 * with smaller blocks (or F16) in place of the mix's choice. */
uint32_t tl_gguf_llama_tensor_type(const tl_gguf_ftype *ft, const char *gguf_name, int n_dims, uint64_t ne0,
                                   int n_layers, int tied, int *fallback);

/* The GGUF name of an HF Llama tensor name (the inverse of
 * tl_gguf_llama_hf_name); -1 if unknown or too long. */
int tl_gguf_llama_gguf_name(const char *hf, char *out, size_t cap);

typedef struct {
    const tl_tokenizer *tok;   /* NULL: no tokenizer.* metadata */
    int add_bos, add_eos;      /* tokenizer.ggml.add_bos_token / add_eos_token */
    const char *chat_template; /* NULL: none */
    const char *name;          /* general.name; NULL: "tinyllama" */
    /* called after each tensor with the parameters done so far (may be NULL) */
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;
    int fallbacks;             /* out: tensors whose rows forced another type */
} tl_gguf_llama_opts;

/* Writes model m as a Llama GGUF v3 at path (atomically): general.* and llama.*
 * keys, the tokenizer (model "llama": tokens, scores, token types, special ids,
 * add-BOS/EOS, the chat template), and every tensor under its GGUF name in the
 * type tl_gguf_llama_tensor_type chooses, q/k rows permuted to llama.cpp's
 * order.  Rows are quantized in parallel (OpenMP). */
int tl_gguf_write_llama(const char *path, const tl_model *m, const tl_gguf_ftype *ft, tl_gguf_llama_opts *o,
                        tl_error *err);

/* Reads in (an HF directory: config.json, safetensors, tokenizer.model and
 * tokenizer_config.json when present; or a Llama GGUF file: its tensors
 * dequantized, its tokenizer and template) and writes it as out in ft.
 * o->progress/progress_ctx are used; o->tok, chat_template and name are taken
 * from the input (o->name, if set, overrides).  *has_tokenizer tells whether
 * tokenizer metadata was written. */
int tl_gguf_convert(const char *in, const char *out, const tl_gguf_ftype *ft, tl_gguf_llama_opts *o,
                    int *has_tokenizer, tl_error *err);

#endif

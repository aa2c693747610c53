/* gguf.h - reading GGUF files (llama.cpp's model format), versions 2 and 3,
 * little-endian.
 *
 * tl_gguf_open maps the file read-only and checks all of it before returning:
 * every count and length against the bytes that remain, every string as UTF-8,
 * every key and tensor name unique, every tensor's shape, type, offset and
 * alignment.  After that, every pointer handed out lies inside the map, so the
 * accessors need no further checks.  Metadata values and tensor data stay in
 * the map (nothing is copied); a tl_gguf is immutable and may be shared by
 * threads.  docs/formats.md describes the layout. */
#ifndef TL_GGUF_H
#define TL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

/* Metadata value types, numbered as in the file. */
enum {
    TL_GGUF_UINT8 = 0,
    TL_GGUF_INT8 = 1,
    TL_GGUF_UINT16 = 2,
    TL_GGUF_INT16 = 3,
    TL_GGUF_UINT32 = 4,
    TL_GGUF_INT32 = 5,
    TL_GGUF_FLOAT32 = 6,
    TL_GGUF_BOOL = 7,
    TL_GGUF_STRING = 8,
    TL_GGUF_ARRAY = 9,
    TL_GGUF_UINT64 = 10,
    TL_GGUF_INT64 = 11,
    TL_GGUF_FLOAT64 = 12,
    TL_GGUF_NTYPES
};


/* A string inside the map: NOT NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} tl_gguf_str;

/* A metadata value.  Scalars: data points at the value (little-endian).
 * Strings: str.  Arrays: arr_type, arr_n, and data at the first element; the
 * elements of an array of strings or arrays have varying sizes (walk them with
 * tl_gguf_array_next).  size is the value's byte length in the file. */
typedef struct {
    uint32_t type;
    uint32_t arr_type;
    uint64_t arr_n;
    tl_gguf_str str;
    const uint8_t *data;
    size_t size;
} tl_gguf_value;

typedef struct {
    tl_gguf_str key;
    tl_gguf_value val;
} tl_gguf_kv;

typedef struct {
    tl_gguf_str name;
    uint32_t n_dims;
    uint64_t ne[4];        /* ne[0] is the row length (fastest-varying); unused dims are 1 */
    uint32_t type;         /* TL_GGML_* */
    uint64_t offset;       /* from the start of the data section */
    uint64_t n_elements;
    uint64_t n_bytes;
    const uint8_t *data;   /* inside the map */
} tl_gguf_tensor;

typedef struct tl_gguf tl_gguf;

/* Opens and validates path.  NULL + err (naming the file and the field) on
 * failure.  tl_gguf_open_bytes reads a buffer that must outlive the result
 * (what names it in messages). */
tl_gguf *tl_gguf_open(const char *path, tl_error *err);
tl_gguf *tl_gguf_open_bytes(const uint8_t *data, size_t len, const char *what, tl_error *err);
void tl_gguf_close(tl_gguf *g);

const char *tl_gguf_path(const tl_gguf *g);
uint32_t tl_gguf_version(const tl_gguf *g);
uint32_t tl_gguf_alignment(const tl_gguf *g);
uint64_t tl_gguf_data_offset(const tl_gguf *g); /* file offset of the data section */

size_t tl_gguf_n_kv(const tl_gguf *g);
const tl_gguf_kv *tl_gguf_kv_at(const tl_gguf *g, size_t i);
const tl_gguf_kv *tl_gguf_find_kv(const tl_gguf *g, const char *key); /* NULL if absent */

size_t tl_gguf_n_tensors(const tl_gguf *g);
const tl_gguf_tensor *tl_gguf_tensor_at(const tl_gguf *g, size_t i);
const tl_gguf_tensor *tl_gguf_find_tensor(const tl_gguf *g, const char *name);

/* Typed getters: 1 and *out set when the key is present with a fitting type,
 * 0 when absent (*out untouched), -1 + err (file, key, found and wanted type)
 * when present with another type or a value out of range.  Integer getters
 * take any integer type whose value fits; the float getter FLOAT32 or FLOAT64;
 * bool only BOOL; string only STRING. */
int tl_gguf_get_u32(const tl_gguf *g, const char *key, uint32_t *out, tl_error *err);
int tl_gguf_get_i64(const tl_gguf *g, const char *key, int64_t *out, tl_error *err);
int tl_gguf_get_f32(const tl_gguf *g, const char *key, float *out, tl_error *err);
int tl_gguf_get_bool(const tl_gguf *g, const char *key, int *out, tl_error *err);
int tl_gguf_get_str(const tl_gguf *g, const char *key, tl_gguf_str *out, tl_error *err);
/* An array value whose elements have type elem_type exactly. */
int tl_gguf_get_array(const tl_gguf *g, const char *key, uint32_t elem_type, tl_gguf_value *out,
                      tl_error *err);

/* Array walking: *pos starts at arr->data; each call fills *elem with the next
 * element (a value of type arr->arr_type) and advances *pos. */
void tl_gguf_array_next(const tl_gguf_value *arr, const uint8_t **pos, tl_gguf_value *elem);

/* Scalars of a (validated) value: any integer type as int64 / uint64 (the raw
 * bits of UINT64 above INT64_MAX read negative in the int64 form), floats as
 * double. */
int64_t tl_gguf_value_i64(const tl_gguf_value *v);
uint64_t tl_gguf_value_u64(const tl_gguf_value *v);
double tl_gguf_value_f64(const tl_gguf_value *v);
int tl_gguf_type_is_int(uint32_t type);

const char *tl_gguf_type_name(uint32_t type);      /* "UINT32", ...; "?" if unknown */

/* ---- dequantization (the block types: quant.h) ---- */

/* A whole tensor to fp32 (n_elements floats at out). */
int tl_gguf_tensor_to_f32(const tl_gguf *g, const tl_gguf_tensor *t, float *out, tl_error *err);

/* ---- Llama (src/formats/gguf_llama.c) ---- */

/* Hyperparameters from llama.* keys (general.architecture must be "llama");
 * vocab from the tokenizer's token count (or llama.vocab_size, or token_embd);
 * tied when output.weight is absent; bos/eos from tokenizer.ggml.* ids. */
int tl_gguf_llama_config(const tl_gguf *g, tl_config *cfg, tl_error *err);

/* The HF name of a GGUF Llama tensor name ("blk.3.attn_q.weight" ->
 * "model.layers.3.self_attn.q_proj.weight"); 0 on success, -1 if the name is
 * not a Llama tensor we know or does not fit in cap. */
int tl_gguf_llama_hf_name(const char *name, size_t len, char *out, size_t cap);

/* llama.cpp's converter reorders the rows of q_proj and k_proj inside each
 * head (from HF's two halves [x0..x(d/2-1) | y0..] to interleaved pairs
 * [x0 y0 x1 y1 ...]), because ggml's RoPE rotates adjacent pairs.  These
 * convert a [rows, cols] matrix (rows = n_head * head_dim) between the two
 * layouts; in and out must not overlap. */
void tl_gguf_llama_permute(const float *hf, float *gguf, int rows, int cols, int n_head);
void tl_gguf_llama_unpermute(const float *gguf, float *hf, int rows, int cols, int n_head);

/* A tensor of a Llama GGUF as the HF tensor of the same role: fp32, with q/k
 * rows put back in HF order (cfg from tl_gguf_llama_config). */
int tl_gguf_llama_tensor_f32(const tl_gguf *g, const tl_gguf_tensor *t, const tl_config *cfg,
                             float *out, tl_error *err);

/* ---- conversion (src/formats/gguf_convert.c) ---- */

/* A Llama GGUF as a freshly created fp32 model (HF names and row order): every
 * tensor of the file must map to one of the model's and every model tensor
 * must be present.  The model is the caller's to free. */
int tl_gguf_llama_load_model(const tl_gguf *g, tl_model *m, tl_error *err);

/* Writes dir (created if needed) as an HF Llama directory: config.json,
 * generation_config.json, model.safetensors (F32, HF names and row order) and,
 * when the file has a tokenizer, tokenizer.model, tokenizer_config.json (with
 * tokenizer.chat_template) and special_tokens_map.json.  Every tensor of the
 * file must map to one of the model's and every model tensor must be present. */
int tl_gguf_to_hf_dir(const tl_gguf *g, const char *dir, tl_error *err);

/* ---- tokenizer (src/formats/tokenizer_gguf.c) ---- */

typedef struct {
    int add_bos, add_eos;     /* tokenizer.ggml.add_bos_token / add_eos_token (defaults 1, 0) */
    tl_gguf_str chat_template; /* tokenizer.chat_template; ptr NULL if absent */
} tl_gguf_tokenizer_info;

/* A tokenizer from tokenizer.ggml.* (model "llama": SentencePiece BPE), which
 * encodes exactly as the tokenizer.model it was converted from. */
tl_tokenizer *tl_tokenizer_from_gguf(const tl_gguf *g, tl_gguf_tokenizer_info *info,
                                     tl_error *err);

#endif

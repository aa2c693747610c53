/* infer_internal.h - what infer.c and infer_gguf.c share (not public API). */
#ifndef TL_INFER_INTERNAL_H
#define TL_INFER_INTERNAL_H

#include "infer.h"

/* Whether --model path names a GGUF file rather than an HF directory (any
 * regular file is taken for one; tl_gguf_open then checks its magic). */
int tl_infer_is_gguf(const char *path);
/* tl_infer_load for a GGUF file: tensors used in place (F32/F16/BF16 as they
 * are, the block types of matvec_quant.h as blocks), q/k rows left in GGUF's
 * order (perm_heads), the tokenizer and chat template from the file. */
int tl_infer_load_gguf(tl_infer_model *m, const char *path, int with_tokenizer, tl_error *err);
/* The decode matrices (all but the embedding table) into 2 MiB pages, in place
 * of their read-only file map, whose pages are dropped: the quantized types
 * tl_q8_packable repacked where tl_q8_repacks says so, BF16 ones copied as they are
 * (tl_wmat_move_to).  Without memory for the copy the map stays in use. */
void tl_infer_into_pages(tl_infer_model *m);
/* The common end of loading once cfg and the weights are set: RoPE tables,
 * kernel, decode_bytes, generation_config.json of dir (dir NULL: defaults from
 * cfg, no tokenizer lookup).  Frees m on failure. */
int tl_infer_finish_load(tl_infer_model *m, const char *dir, int with_tokenizer, tl_error *err);

#endif

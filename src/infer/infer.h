/* infer.h - the inference engine: an HF Llama checkpoint memory-mapped with its
 * weights kept in their file dtype (F32, BF16 or F16), a KV cache, a batched
 * prompt pass (weights converted to fp32 a tile at a time for cblas_sgemm, or
 * bf16 weights on AMX tiles, src/compute/gemm_amx.c) and single-token decode with
 * multithreaded SIMD mat-vec kernels chosen at run time (AVX-512, AVX2+FMA,
 * portable C).  Activations are fp32 (the opt-in bf16 kernels round them where
 * they enter a product).
 *
 * A tl_infer_model is immutable after loading (except the kernel choice) and may
 * back several tl_infer_state sessions.  See docs/inference.md. */
#ifndef TL_INFER_H
#define TL_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"
#include "matvec.h"
#include "safetensors.h"
#include "tokenizer.h"

typedef struct {
    float *attn_norm, *mlp_norm; /* fp32 copies [D] */
    tl_wmat wq, wk, wv, wo, w_gate, w_up, w_down;
} tl_infer_layer;

/* generation_config.json (absent fields keep their defaults). */
typedef struct {
    int bos_id;
    int n_eos;
    int eos_ids[8];
    int has_sampling; /* the file asks for sampling (do_sample true) */
    float temperature, top_p, min_p, repetition_penalty;
    int top_k;
} tl_gen_config;

typedef struct {
    tl_config cfg;
    char dir[1024];
    int n_files;
    tl_safetensors *files;
    tl_wmat embed, lm_head; /* lm_head == embed when tied */
    float *final_norm;
    tl_infer_layer *layers;
    float *rope_cos, *rope_sin; /* [max_seq_len, hd/2] */
    tl_tokenizer *tok;          /* NULL when the directory has no tokenizer */
    char tok_path[1100];
    tl_gen_config gen;
    tl_kernel kernel;           /* resolved (never AUTO) */
    struct tl_gguf *gguf;       /* the mapped GGUF file when loaded from one (src/infer/infer_gguf.c) */
    char *chat_template;        /* tokenizer.chat_template of a GGUF file, NUL-terminated; NULL if none */
    void *packed;               /* the GGUF matrices repacked for decode (tl_q8_pack), in place of their map */
    size_t decode_bytes;        /* weight bytes read per decoded token */
} tl_infer_model;

/* Loads dir: a GGUF file (a path ending in .gguf, or any regular file: see
 * tl_infer_load_gguf), or config.json, model.safetensors or a sharded index, tokenizer.model
 * or tokenizer.json (if present), generation_config.json (if present).  Every
 * tensor is checked (present, shape, float dtype; no unknown tensors). */
int tl_infer_load(tl_infer_model *m, const char *dir, tl_error *err);
/* The same without looking for a tokenizer. */
int tl_infer_load_weights_only(tl_infer_model *m, const char *dir, tl_error *err);
void tl_infer_free(tl_infer_model *m);
/* Selects the mat-vec kernels; fails if the CPU lacks them. */
int tl_infer_set_kernel(tl_infer_model *m, tl_kernel k, tl_error *err);
/* Generation's default for BF16 weights (generate, chat, serve; eval and
 * perplexity keep the exact kernels): m's kernels become tl_kernel_best_bf16,
 * which rounds activations to bf16 where that measures faster, as llama.cpp
 * does with BF16 weights.  Other weights, or fp32 activations asked for
 * (tl_infer_set_f32_activations): nothing changes. */
void tl_infer_prefer_bf16_rounding(tl_infer_model *m);
/* Quantized (GGUF) weights: 1 keeps the activations fp32 in their products
 * (exact up to summation order, slower), 0 (the default) rounds them to int8
 * blocks for integer dot products as llama.cpp does (matvec_quant.h). */
void tl_infer_set_f32_activations(tl_infer_model *m, int on);

/* A generation session: KV cache of max_ctx positions plus scratch. */
typedef struct {
    const tl_infer_model *m;
    int max_ctx;   /* positions the cache holds */
    int pos;       /* tokens in the cache */
    int chunk;     /* rows per batched pass */
    int n_scores;  /* per-thread score buffers allocated */
    float *k_cache, *v_cache; /* [L, max_ctx, KV*hd] */
    float *x, *h, *q, *k, *v, *ao, *g, *u, *tmp; /* [chunk, ...] */
    float *tile;   /* fp32 weight tile for the batched pass */
    size_t tile_floats;
    void *xpack;   /* bf16-packed activations for the AMX pass */
    size_t xpack_bytes;
    void *hpack;   /* the packed SwiGLU output (fused AMX MLP) */
    void *attn_amx; /* scratch of the AMX attention (allocated on first use) */
    float *scores; /* [n_scores, max_ctx] */
    float *logits; /* [V]: logits of the last token processed */
} tl_infer_state;

/* max_ctx <= 0 or larger than the model's max_seq_len: the model's max_seq_len. */
int tl_infer_state_init(tl_infer_state *s, const tl_infer_model *m, int max_ctx, tl_error *err);
void tl_infer_state_free(tl_infer_state *s);
/* Forgets cached positions >= pos (pos = 0 empties the cache). */
void tl_infer_truncate(tl_infer_state *s, int pos);
/* Makes dst's cache positions [0, n) those of src (states of one model with the
 * same max_ctx; n <= src->pos) and dst->pos = n: a shared prefix computed once. */
void tl_infer_copy_prefix(tl_infer_state *dst, const tl_infer_state *src, int n);

/* Runs ids[0..n) at positions pos..pos+n-1, appending their keys/values to the
 * cache.  The last token's logits are always left in s->logits; if all_logits
 * is non-NULL it receives [n, V] logits of every position.  Fails (cache
 * unchanged) if an id is outside the vocabulary or the cache would overflow. */
int tl_infer_forward(tl_infer_state *s, const int *ids, int n, float *all_logits, tl_error *err);

/* The same through the single-token decode's kernels (mat-vec products,
 * per-token attention) whatever n is: each row's keys, values and logits equal
 * bit for bit those of feeding the tokens one at a time to tl_infer_forward,
 * while each weight matrix is read from memory once for all n rows.  The
 * verification pass of speculative decoding (speculative.h). */
int tl_infer_decode_rows(tl_infer_state *s, const int *ids, int n, float *all_logits, tl_error *err);

/* Negative log-likelihood of ids[0..n) for perplexity (docs/inference.md):
 * windows [b, b+window) for b = 0, stride, 2*stride... (the last one ends at n);
 * each window starts from an empty cache and scores only the targets that no
 * earlier window scored, so with stride == window the windows are disjoint and
 * with a smaller stride every scored token sees at least window-stride tokens of
 * context.  ids[0] is never a target.  Adds to *nll (natural log) and *count. */
int tl_infer_nll(tl_infer_state *s, const int *ids, size_t n, int window, int stride, double *nll, long *count,
                 tl_error *err);

#endif

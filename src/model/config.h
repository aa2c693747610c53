/* config.h - Llama model configuration: presets and HF config.json. */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include "common.h"

typedef struct {
    int vocab_size;
    int dim;          /* hidden_size */
    int hidden_dim;   /* intermediate_size (SwiGLU) */
    int n_layers;
    int n_heads;
    int n_kv_heads;   /* grouped-query attention: divides n_heads */
    int max_seq_len;  /* max_position_embeddings */
    float rope_theta;
    float norm_eps;
    int tied;         /* lm_head shares the embedding matrix */
    int bos_id, eos_id;
} tl_config;

/* Built-in presets by name ("tinyllama-1.1b", "demo", ...). */
int tl_config_preset(const char *name, tl_config *cfg, tl_error *err);
/* Names of the presets, NULL-terminated, for --help. */
const char *const *tl_config_preset_names(void);
/* Checks internal consistency (positive sizes, n_kv_heads | n_heads, even head dim...). */
int tl_config_validate(const tl_config *cfg, tl_error *err);

/* 0 if a and b describe the same model; else 1, with what naming the first
 * difference ("hidden_size 64 vs 128"; what may be NULL). */
int tl_config_diff(const tl_config *a, const tl_config *b, char *what, size_t cap);

/* HF config.json (model_type "llama"). */
int tl_config_load_json(const char *path, tl_config *cfg, tl_error *err);
int tl_config_parse_json(const char *text, const char *what, tl_config *cfg, tl_error *err);
/* Returns a malloc'ed JSON string (caller frees). */
char *tl_config_to_json(const tl_config *cfg);

static inline int tl_config_head_dim(const tl_config *c) { return c->dim / c->n_heads; }
/* Total parameter count (including embeddings and lm_head unless tied). */
size_t tl_config_num_params(const tl_config *cfg);
/* Parameters excluding the token embedding (used for FLOP estimates). */
size_t tl_config_num_nonembed_params(const tl_config *cfg);
/* Training FLOPs per token: 6 * non-embedding params + attention (12 * layers * dim * seq). */
double tl_config_train_flops_per_token(const tl_config *cfg, int seq_len);

#endif

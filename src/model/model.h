/* model.h - the Llama model (HF LlamaForCausalLM math): parameters, TinyLlama
 * initialisation, and the CPU forward/backward pass.
 *
 * All parameters live in one contiguous fp32 block laid out in HF tensor order
 * (embed, then per layer: input_layernorm, q, k, v, o, post_attention_layernorm,
 * gate, up, down; then norm, lm_head).  Gradients and AdamW moments use the same
 * layout, so the optimizer and checkpoints work on flat arrays. */
#ifndef TL_MODEL_H
#define TL_MODEL_H

#include <stdint.h>

#include "common.h"
#include "config.h"

typedef struct {
    float *attn_norm; /* [D] */
    float *wq;        /* [H*hd, D] */
    float *wk;        /* [KV*hd, D] */
    float *wv;        /* [KV*hd, D] */
    float *wo;        /* [D, H*hd] */
    float *mlp_norm;  /* [D] */
    float *w_gate;    /* [F, D] */
    float *w_up;      /* [F, D] */
    float *w_down;    /* [D, F] */
} tl_layer_weights;

typedef struct {
    float *embed;      /* [V, D] */
    tl_layer_weights *layers;
    float *final_norm; /* [D] */
    float *lm_head;    /* [V, D]; == embed when tied */
} tl_weights;

/* One named tensor of the flat block (HF name, shape [rows, cols] or [rows]). */
typedef struct {
    char name[96];
    int ndim;
    int shape[2];
    size_t offset, numel;
    int init_kind; /* 0: norm weight (ones), 1: normal std_init, 2: normal std_out */
} tl_tensor_info;

/* Parameter units, for engines that keep parameters sharded (ZeRO-3 / FSDP,
 * docs/distributed.md): unit 0 is the embedding, 1..n_layers the layers, n_layers+1
 * the final norm and lm_head; each is a contiguous range of the flat block
 * (tl_model_unit_range).  When a model has a params_hook, the passes call it with
 * TL_PARAMS_ACQUIRE before reading a unit's weights and TL_PARAMS_RELEASE after
 * their last use in that pass (the forward and the backward each acquire a layer
 * once; tied weights acquire unit 0 for the lm_head too).  A non-zero return fails
 * the pass with err. */
typedef enum { TL_PARAMS_ACQUIRE, TL_PARAMS_RELEASE } tl_params_event;
typedef int (*tl_params_hook)(void *user, int unit, tl_params_event ev, tl_error *err);

/* Gradient units, for engines that keep only a slice of the gradients (ZeRO-2/3):
 * with a grads_hook, tl_model_forward_backward ignores its grads argument and asks
 * for each unit's storage instead.  TL_GRADS_BEGIN, before the unit's first
 * gradient write: the hook sets *storage to zeroed floats for the unit's range
 * [lo, hi) (storage[0] is element lo).  TL_GRADS_END, after the unit's last
 * contribution in this pass (same *storage): the gradient is complete and the
 * hook may reduce it and reuse the storage.  Order: the head (n_layers+1), the
 * layers n_layers..1, the embedding 0; with tied weights lm_head writes the
 * embedding's gradient, so unit 0 begins before the head and ends last. */
typedef enum { TL_GRADS_BEGIN, TL_GRADS_END } tl_grads_event;
typedef int (*tl_grads_hook)(void *user, int unit, tl_grads_event ev, float **storage, tl_error *err);

typedef struct {
    tl_config cfg;
    size_t n_params;
    float *params;
    tl_weights w;
    int n_tensors;
    tl_tensor_info *tensors;
    float *rope_cos, *rope_sin; /* [max_seq_len, hd/2] */
    tl_params_hook params_hook; /* NULL: parameters always resident */
    void *params_hook_user;
    tl_grads_hook grads_hook;   /* NULL: the backward adds into the caller's whole block */
    void *grads_hook_user;
    /* bf16 mixed precision: a bf16 copy of params (same layout) that the linear
     * layers multiply with, their inputs rounded to bf16 (ops_bf16.h); NULL: fp32
     * products.  Its owner (the CPU engine) keeps it equal to params. */
    const uint16_t *params_bf16;
} tl_model;

/* [*lo, *hi) of parameter unit `unit` (0 .. n_layers+1) in the flat block. */
void tl_model_unit_range(const tl_model *m, int unit, size_t *lo, size_t *hi);

/* Allocates a model (parameters zeroed).  Returns 0 or -1 with err set. */
int tl_model_create(tl_model *m, const tl_config *cfg, tl_error *err);
void tl_model_free(tl_model *m);

/* TinyLlama / lit-gpt initialisation: normal(0, sqrt(2/(5*D))) for embeddings and
 * linears, normal(0, 1/sqrt(D)/n_layers) for attention o_proj and mlp down_proj,
 * ones for norms.  Each tensor draws from its own stream seeded by (seed, index). */
void tl_model_init_weights(tl_model *m, uint64_t seed);

/* Points w (with layers storage of cfg->n_layers entries) into any flat block
 * with the model's layout (parameters, gradients, moments). */
void tl_weights_view(const tl_model *m, float *base, tl_weights *w, tl_layer_weights *layers);

/* Finds a tensor by HF name; NULL if absent. */
const tl_tensor_info *tl_model_find_tensor(const tl_model *m, const char *name);

/* Activations and scratch for micro-batches of B sequences of T tokens. */
typedef struct tl_acts tl_acts;
tl_acts *tl_acts_create(const tl_config *cfg, int B, int T, tl_error *err);
void tl_acts_free(tl_acts *a);
size_t tl_acts_bytes(const tl_acts *a);
/* A bf16 step's weight gradients read their output gradients token-minor from
 * min_tokens tokens per micro-batch on (default 1,024, where it pays: model.c);
 * 0: always (tests).  Call before the first bf16 step. */
void tl_acts_bf16_token_minor(tl_acts *a, int min_tokens);

/* Training step body: forward over tokens[B*T] with next-token targets[B*T]
 * (target < 0 ignored), then backward, adding grad_scale * d(mean loss)/dparam
 * into grads (same layout as params; unused, and may be NULL, with a grads_hook).
 * Returns the mean loss over counted targets in *loss.  The vocab-sized softmax is formed only a chunk of rows at a time. */
int tl_model_forward_backward(const tl_model *m, tl_acts *a, float *grads, const int *tokens,
                              const int *targets, float grad_scale, double *loss, tl_error *err);

/* The same with a weight per row instead of the mean: adds d(sum_r row_weight[r] *
 * CE_r)/dparam (CE_r: row r's cross-entropy, 0 for an ignored target) and returns
 * that sum in *loss.  For losses of whole sequences (DPO). */
int tl_model_forward_backward_rows(const tl_model *m, tl_acts *a, float *grads, const int *tokens,
                                   const int *targets, const float *row_weight, double *loss, tl_error *err);

/* Forward only: each row's cross-entropy into row_loss[B*T] (0 for an ignored target). */
int tl_model_row_losses(const tl_model *m, tl_acts *a, const int *tokens, const int *targets, float *row_loss,
                        tl_error *err);

/* Forward only: mean loss (and its count of targets) without touching gradients. */
int tl_model_loss(const tl_model *m, tl_acts *a, const int *tokens, const int *targets,
                  double *loss_sum, long *count, tl_error *err);

/* Forward only: full logits [B*T, V] into out (for tests and tooling). */
int tl_model_logits(const tl_model *m, tl_acts *a, const int *tokens, float *out, tl_error *err);

#endif

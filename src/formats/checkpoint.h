/* checkpoint.h - HF model directories (config.json + safetensors, single or
 * sharded) and training checkpoints (HF directory + training_state.bin), written
 * atomically: a crash at any moment leaves the previous checkpoint intact. */
#ifndef TL_CHECKPOINT_H
#define TL_CHECKPOINT_H

#include <stdint.h>

#include "common.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"

/* The safetensors files of an HF directory: model.safetensors, or every shard
 * that model.safetensors.index.json names (each tensor checked to be where the
 * index says).  files[i] is the path of st[i]. */
typedef struct {
    int n;
    char **files;
    tl_safetensors *st;
} tl_hf_files;
int tl_hf_files_open(const char *dir, tl_hf_files *s, tl_error *err);
void tl_hf_files_close(tl_hf_files *s);

/* Loads config.json and the weights (F32/BF16/F16, converted to fp32) of an HF
 * Llama directory into a freshly created model.  Every expected tensor must be
 * present with the right shape; unknown tensors are an error. */
int tl_model_load_hf(const char *dir, tl_model *m, tl_error *err);
/* Loads weights of dir into an existing model whose config must match. */
int tl_model_load_hf_weights(const char *dir, tl_model *m, tl_error *err);
/* Writes config.json, generation_config.json and model.safetensors (F32) into dir
 * (created if needed), each file atomically. */
int tl_model_save_hf(const char *dir, const tl_model *m, tl_error *err);

/* Everything besides the weights needed to continue training bit-identically. */
typedef struct {
    uint64_t step;        /* optimizer steps completed */
    uint64_t tokens_seen;
    uint64_t data_epoch, data_index; /* data loader position */
    tl_rng rng;
    double elapsed;       /* training seconds so far */
    size_t n_params;
    float *m, *v;         /* AdamW moments, same layout as the parameters */
} tl_train_state;

int tl_train_state_save(const char *path, const tl_train_state *s, tl_error *err);
/* s->m and s->v must be allocated with n_params floats; the file must match. */
int tl_train_state_load(const char *path, tl_train_state *s, tl_error *err);

/* Writes out_dir/step-NNNNNNNN/ (HF files, training_state.bin, extra_json as
 * train_args.json, a copy of the tokenizer file if given, as tokenizer.json or
 * tokenizer.model so the directory runs as it is, and last checksums.json: size
 * and CRC-32 of every file, read back from the file system) in a temporary
 * directory, puts it in place (an existing checkpoint of the same step is
 * exchanged atomically), then points out_dir/latest at it and removes all but the
 * newest `keep` checkpoints of the same run: those whose train_args.json has the
 * run_id of extra_json.  Checkpoints of other runs are never removed.  With
 * "resumed_from" (the step the process resumed from) and "session" (one per
 * process) in extra_json, the run's checkpoints after resumed_from that another
 * process wrote (the continuation a resume from an older checkpoint abandoned)
 * neither count nor are removed. */
int tl_checkpoint_save(const char *out_dir, const tl_model *m, const tl_train_state *s,
                       const char *extra_json, const char *tokenizer, int keep, char *saved_path,
                       size_t saved_cap, tl_error *err);
/* Checks that dir holds a complete checkpoint and that every file its
 * checksums.json lists has the size and CRC-32 written.  A checkpoint written
 * before checksums existed passes with *verified = 0 (may be NULL). */
int tl_checkpoint_verify(const char *dir, int *verified, tl_error *err);
/* The thread count ckpt_dir was trained with (train_args.json); 0 if not recorded. */
int tl_checkpoint_threads(const char *ckpt_dir);
/* Resolves a --resume argument: a checkpoint directory itself (which must
 * verify), or a run directory whose `latest` names one.  When `latest` is
 * missing or names a checkpoint that is missing, incomplete or corrupt (a crash
 * between two renames, a bit flip), the newest complete checkpoint of the run
 * directory is taken instead (step-*, or the copies a crash can leave:
 * .old-step-*, finished .tmp-step-*) and note says why (note is "" otherwise). */
int tl_checkpoint_resolve(const char *path, char *out, size_t cap, char *note, size_t note_cap, tl_error *err);
/* 1 if out_dir already holds a training run (latest, checkpoints, or a non-empty
 * log.jsonl), with what names the evidence; 0 otherwise (also if it does not exist). */
int tl_run_dir_in_use(const char *out_dir, char *what, size_t cap);

#endif

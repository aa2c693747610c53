/* hf_tokenizer_files.h - the files beside tokenizer.model that HF transformers
 * reads to rebuild a Llama tokenizer: tokenizer_config.json (class, BOS/EOS
 * behaviour, special tokens, context length, chat template) and
 * special_tokens_map.json.  Without them transformers 5 builds a generic
 * tokenizer that adds no BOS. */
#ifndef TL_HF_TOKENIZER_FILES_H
#define TL_HF_TOKENIZER_FILES_H

#include "common.h"
#include "config.h"

/* Writes dir/tokenizer_config.json and dir/special_tokens_map.json (each
 * atomically) for the tokenizer at tokenizer_path (tokenizer.model or
 * tokenizer.json) and the model config cfg: tokenizer_class "LlamaTokenizer",
 * add_bos_token true (when the tokenizer has a BOS piece), add_eos_token false,
 * the unk/bos/eos pieces and their ids read from the tokenizer,
 * model_max_length = cfg->max_seq_len, legacy false (as Llama 2's and
 * TinyLlama's files), and the chat_template of a tokenizer_config.json beside
 * tokenizer_path, if there is one (a chat model's template stays with it). */
int tl_hf_tokenizer_files_write(const char *dir, const char *tokenizer_path, const tl_config *cfg, tl_error *err);

/* What dir/tokenizer_config.json says about the tokenizer's use: its
 * chat_template (a string, or the entry named "default" of a list; *chat_template
 * NULL when absent, else malloc'ed) and add_bos_token / add_eos_token (left as
 * given when absent).  A missing file is not an error; unreadable JSON is. */
int tl_hf_tokenizer_config_read(const char *dir, char **chat_template, int *add_bos, int *add_eos, tl_error *err);

#endif

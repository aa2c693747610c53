/* chat_template.h - the chat formats `tinyllama chat` can render, recognised
 * from a model's Jinja chat template (tokenizer.chat_template of a GGUF file)
 * by its text, since no Jinja interpreter is run.  Training data (`prepare
 * --format chat`) is rendered by the same code, so a fine-tuned model sees at
 * inference exactly the text it was trained on. */
#ifndef TL_CHAT_TEMPLATE_H
#define TL_CHAT_TEMPLATE_H

#include <stddef.h>

#include "common.h"

typedef enum {
    TL_CHAT_UNKNOWN = 0,
    TL_CHAT_ZEPHYR, /* TinyLlama-Chat / Zephyr: <|system|>\n..</s>\n<|user|>\n..</s>\n<|assistant|>\n */
    TL_CHAT_LLAMA2, /* Llama 2 chat: [INST] <<SYS>>\n..\n<</SYS>>\n\n.. [/INST] .. </s><s>[INST] .. */
    TL_CHAT_CHATML, /* ChatML: <|im_start|>user\n..<|im_end|>\n<|im_start|>assistant\n */
} tl_chat_format;

/* The format a template's text is recognised as; UNKNOWN if none. */
tl_chat_format tl_chat_template_detect(const char *jinja);
/* "zephyr" (or "tinyllama"), "llama2", "chatml"; -1 if unknown. */
int tl_chat_format_parse(const char *name);
const char *tl_chat_format_name(tl_chat_format f);

/* The format to chat with: the override name when given, else the model's
 * template (what names it in messages; template NULL: the TinyLlama/Zephyr
 * format, this program's default).  An unrecognised template is an error that
 * names the formats and --chat-template. */
int tl_chat_format_choose(const char *override, const char *jinja, const char *what, tl_chat_format *out,
                          tl_error *err);

typedef struct {
    char *user, *assistant; /* assistant NULL: the turn awaiting its reply */
} tl_chat_turn;

/* The conversation as text to encode with BOS prepended and special tokens
 * parsed: system (may be NULL), turns [first, n), ending with the open
 * assistant header.  malloc'd; NULL when out of memory. */
char *tl_chat_render(tl_chat_format f, const char *system, const tl_chat_turn *t, int first, int n, size_t *len);

/* A conversation as role-tagged messages (training data). */
typedef enum { TL_ROLE_SYSTEM = 0, TL_ROLE_USER = 1, TL_ROLE_ASSISTANT = 2 } tl_chat_role;

typedef struct {
    tl_chat_role role;
    const char *content;
} tl_chat_msg;

/* Renders messages m[0..n) as HF's apply_chat_template does for the format
 * (text to encode with BOS prepended and special tokens parsed); gen_prompt:
 * end with the open assistant header.  spans (may be NULL; 2 per assistant
 * message) receive the byte range [start, end) of each assistant reply with
 * its closing end-of-turn marker (</s>, or <|im_end|> for ChatML): the part a
 * fine-tuned model learns to produce.  The formats want: an optional system
 * message first, then user and assistant alternating from a user (checked by
 * the caller).  malloc'd; NULL when out of memory. */
char *tl_chat_render_messages(tl_chat_format f, const tl_chat_msg *m, int n, int gen_prompt, size_t *len,
                              size_t *spans);

#endif

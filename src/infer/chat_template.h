/* chat_template.h - the chat formats `tinyllama chat` can render, recognised
 * from a model's Jinja chat template (tokenizer.chat_template of a GGUF file)
 * by its text, since no Jinja interpreter is run. */
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

#endif

/* chat_template.c - recognising and rendering the popular Llama-family chat
 * formats (chat_template.h). */
#include "chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tl_chat_format tl_chat_template_detect(const char *s) {
    if (!s) return TL_CHAT_UNKNOWN;
    /* each format's role markers are distinctive enough on their own */
    if (strstr(s, "<|im_start|>") && strstr(s, "<|im_end|>")) return TL_CHAT_CHATML;
    if (strstr(s, "[INST]") && strstr(s, "[/INST]")) return TL_CHAT_LLAMA2;
    if (strstr(s, "<|user|>") && strstr(s, "<|assistant|>")) return TL_CHAT_ZEPHYR;
    return TL_CHAT_UNKNOWN;
}

static const char *const NAMES[] = {"unknown", "zephyr", "llama2", "chatml"};

const char *tl_chat_format_name(tl_chat_format f) {
    return (unsigned)f < sizeof NAMES / sizeof NAMES[0] ? NAMES[f] : "unknown";
}

int tl_chat_format_parse(const char *name) {
    if (!strcmp(name, "tinyllama")) return TL_CHAT_ZEPHYR;
    for (int f = TL_CHAT_ZEPHYR; f <= TL_CHAT_CHATML; f++)
        if (!strcmp(name, NAMES[f])) return f;
    return -1;
}

int tl_chat_format_choose(const char *override, const char *jinja, const char *what, tl_chat_format *out,
                          tl_error *err) {
    if (override) {
        int f = tl_chat_format_parse(override);
        if (f < 0) return tl_fail(err, "unknown chat template '%s' (zephyr, tinyllama, llama2 or chatml)", override);
        *out = (tl_chat_format)f;
        return 0;
    }
    if (!jinja) {
        *out = TL_CHAT_ZEPHYR;
        return 0;
    }
    *out = tl_chat_template_detect(jinja);
    if (*out == TL_CHAT_UNKNOWN)
        return tl_fail(err, "%s: the chat template (tokenizer.chat_template) is none of those this program knows "
                       "(TinyLlama/Zephyr, Llama 2 chat, ChatML); choose one with --chat-template zephyr|llama2|chatml",
                       what);
    return 0;
}

char *tl_chat_render(tl_chat_format f, const char *system, const tl_chat_turn *t, int first, int n, size_t *len) {
    size_t cap = 96 + (system ? strlen(system) : 0);
    for (int i = first; i < n; i++) cap += strlen(t[i].user) + (t[i].assistant ? strlen(t[i].assistant) : 0) + 96;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t k = 0;
    if (f == TL_CHAT_CHATML) {
        if (system) k += (size_t)sprintf(s + k, "<|im_start|>system\n%s<|im_end|>\n", system);
        for (int i = first; i < n; i++) {
            k += (size_t)sprintf(s + k, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", t[i].user);
            if (t[i].assistant) k += (size_t)sprintf(s + k, "%s<|im_end|>\n", t[i].assistant);
        }
    } else if (f == TL_CHAT_LLAMA2) {
        /* the system prompt goes inside the first [INST]; every later turn opens
         * with its own <s> (the first one's BOS is the encoder's) */
        for (int i = first; i < n; i++) {
            if (i > first) k += (size_t)sprintf(s + k, "<s>");
            k += (size_t)sprintf(s + k, "[INST] ");
            if (i == first && system) k += (size_t)sprintf(s + k, "<<SYS>>\n%s\n<</SYS>>\n\n", system);
            k += (size_t)sprintf(s + k, "%s [/INST]", t[i].user);
            if (t[i].assistant) k += (size_t)sprintf(s + k, " %s </s>", t[i].assistant);
        }
    } else {
        if (system) k += (size_t)sprintf(s + k, "<|system|>\n%s</s>\n", system);
        for (int i = first; i < n; i++) {
            k += (size_t)sprintf(s + k, "<|user|>\n%s</s>\n<|assistant|>\n", t[i].user);
            if (t[i].assistant) k += (size_t)sprintf(s + k, "%s</s>\n", t[i].assistant);
        }
    }
    *len = k;
    return s;
}

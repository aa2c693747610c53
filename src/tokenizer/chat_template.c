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

char *tl_chat_render_messages(tl_chat_format f, const tl_chat_msg *m, int n, int gen_prompt, size_t *len,
                              size_t *spans) {
    size_t cap = 96;
    for (int i = 0; i < n; i++) cap += strlen(m[i].content) + 64;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t k = 0;
    int users = 0;
    const char *system = NULL; /* Llama 2 puts it inside the first [INST] */
    for (int i = 0; i < n; i++) {
        const char *c = m[i].content;
        size_t a = 0; /* where the reply starts */
        if (f == TL_CHAT_CHATML) {
            static const char *const role[] = {"system", "user", "assistant"};
            k += (size_t)sprintf(s + k, "<|im_start|>%s\n", role[m[i].role]);
            a = k;
            k += (size_t)sprintf(s + k, "%s<|im_end|>", c);
            if (m[i].role == TL_ROLE_ASSISTANT && spans) spans[0] = a, spans[1] = k, spans += 2;
            s[k++] = '\n';
        } else if (f == TL_CHAT_LLAMA2) {
            if (m[i].role == TL_ROLE_SYSTEM) {
                system = c;
            } else if (m[i].role == TL_ROLE_USER) {
                /* every turn after the first opens with its own <s> (the first one's BOS is the encoder's) */
                k += (size_t)sprintf(s + k, "%s[INST] ", users++ ? "<s>" : "");
                if (system) k += (size_t)sprintf(s + k, "<<SYS>>\n%s\n<</SYS>>\n\n", system);
                system = NULL;
                k += (size_t)sprintf(s + k, "%s [/INST]", c);
            } else {
                k += (size_t)sprintf(s + k, " ");
                a = k;
                k += (size_t)sprintf(s + k, "%s </s>", c);
                if (spans) spans[0] = a, spans[1] = k, spans += 2;
            }
        } else {
            static const char *const role[] = {"<|system|>", "<|user|>", "<|assistant|>"};
            k += (size_t)sprintf(s + k, "%s\n", role[m[i].role]);
            a = k;
            k += (size_t)sprintf(s + k, "%s</s>", c);
            if (m[i].role == TL_ROLE_ASSISTANT && spans) spans[0] = a, spans[1] = k, spans += 2;
            s[k++] = '\n';
        }
    }
    if (gen_prompt && f == TL_CHAT_CHATML) k += (size_t)sprintf(s + k, "<|im_start|>assistant\n");
    else if (gen_prompt && f != TL_CHAT_LLAMA2) k += (size_t)sprintf(s + k, "<|assistant|>\n");
    s[k] = 0;
    *len = k;
    return s;
}

char *tl_chat_render(tl_chat_format f, const char *system, const tl_chat_turn *t, int first, int n, size_t *len) {
    /* the same text as the messages system, user, assistant, ..., with the open
     * assistant header when the last turn awaits its reply */
    tl_chat_msg *m = malloc(sizeof *m * (size_t)(2 * (n > first ? n - first : 0) + 1));
    if (!m) return NULL;
    int k = 0, open = n > first && !t[n - 1].assistant;
    if (system) m[k++] = (tl_chat_msg){TL_ROLE_SYSTEM, system};
    for (int i = first; i < n; i++) {
        m[k++] = (tl_chat_msg){TL_ROLE_USER, t[i].user};
        if (t[i].assistant) m[k++] = (tl_chat_msg){TL_ROLE_ASSISTANT, t[i].assistant};
    }
    char *s = tl_chat_render_messages(f, m, k, open, len, NULL);
    free(m);
    return s;
}

/* fuzz/chat_record.c - tl_conv_parse (a `prepare --format chat` line) and
 * tl_pref_parse (a `--format preference` line) on arbitrary bytes.  A refused line must come with its reason; an accepted one
 * must be what the templates want (optional system first, user and assistant
 * alternating from a user, a reply, no empty turn) and render in every format
 * with reply spans that lie in the text, in order, each ending with its
 * end-of-turn marker. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "prepare.h"

/* An accepted pair: a prompt the templates take (ending with a user message) and
 * two different non-empty replies. */
static void check_pref(const uint8_t *data, size_t size) {
    tl_pref p;
    char why[300] = "";
    int s = tl_pref_parse((const char *)data, size, &p, why, sizeof why);
    if (s != TL_CONV_OK) {
        if (s <= 0 || s >= TL_CONV_N_STATUS || !why[0]) abort();
    } else if (p.prompt.n < 1 || p.prompt.msgs[p.prompt.n - 1].role != TL_ROLE_USER || !p.chosen[0] ||
               !p.rejected[0] || !strcmp(p.chosen, p.rejected)) {
        abort();
    }
    tl_pref_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_pref(data, size);
    tl_conv c;
    char why[300] = "";
    int s = tl_conv_parse((const char *)data, size, &c, why, sizeof why);
    if (s != TL_CONV_OK) {
        if (s <= 0 || s >= TL_CONV_N_STATUS || !why[0]) abort();
        fz_refused(why);
        tl_conv_free(&c);
        return 0;
    }
    fz_accepted();
    int replies = 0;
    for (int i = 0; i < c.n; i++) {
        int r = c.msgs[i].role;
        if (r == TL_ROLE_SYSTEM ? i != 0 : r != (i == 0 || c.msgs[i - 1].role != TL_ROLE_USER ? TL_ROLE_USER : TL_ROLE_ASSISTANT))
            abort();
        if (!c.msgs[i].content || !c.msgs[i].content[0]) abort();
        replies += r == TL_ROLE_ASSISTANT;
    }
    if (!replies) abort();
    static const char *const marker[3] = {"</s>", "</s>", "<|im_end|>"};
    for (int f = 0; f < 3; f++) {
        size_t len, *spans = malloc(sizeof *spans * 2 * (size_t)replies);
        char *text = tl_chat_render_messages((tl_chat_format)(TL_CHAT_ZEPHYR + f), c.msgs, c.n, f & 1, &len, spans);
        if (!text || !spans || strlen(text) < len) abort(); /* contents may hold NULs: strlen may stop early */
        size_t prev = 0, ml = strlen(marker[f]);
        for (int k = 0; k < replies; k++) {
            if (spans[2 * k] < prev || spans[2 * k + 1] > len || spans[2 * k + 1] < spans[2 * k] + ml ||
                memcmp(text + spans[2 * k + 1] - ml, marker[f], ml))
                abort();
            prev = spans[2 * k + 1];
        }
        free(text);
        free(spans);
    }
    tl_conv_free(&c);
    return 0;
}

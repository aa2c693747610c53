/* tokenizer_use.h - what the tokenizer targets do with a tokenizer that loaded:
 * encode a few strings (with and without special-token parsing), decode the
 * ids back, and stream them through the incremental decoder, which must give
 * the same bytes as the full decode. */
#ifndef TL_FUZZ_TOKENIZER_USE_H
#define TL_FUZZ_TOKENIZER_USE_H

#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static void fz_use_tokenizer(const tl_tokenizer *t) {
    static const char *const texts[] = {
        "Hello world", "  two  spaces\tand\nnewlines ", "<s>special</s><unk> 123 4567", "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80",
        "bad \xFF\xC3 utf8", "",
    };
    tl_tokenizer_info info;
    tl_tokenizer_get_info(t, &info);
    (void)tl_tokenizer_hash_hex(t);
    int V = tl_tokenizer_vocab_size(t);
    for (int id = 0; id < V && id < 64; id++) {
        const char *p = tl_tokenizer_piece(t, id);
        if (p) (void)tl_tokenizer_piece_id(t, p, strlen(p));
    }
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
        for (int flags = 0; flags <= TL_ENC_PARSE_SPECIAL; flags += TL_ENC_PARSE_SPECIAL) {
            int *ids = NULL;
            size_t n = 0;
            tl_error err;
            if (tl_tokenizer_encode(t, texts[k], strlen(texts[k]), flags, &ids, &n, &err)) continue;
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= V) abort(); /* encode gives only ids of the vocabulary */
            char *text = NULL;
            size_t len = 0;
            if (!tl_tokenizer_decode(t, ids, n, &text, &len, &err)) {
                /* the streaming decoder gives the same bytes as the whole decode */
                tl_decoder d;
                tl_decoder_init(&d, t);
                char *acc = malloc(len + 64);
                size_t at = 0;
                int ok = acc != NULL;
                for (size_t i = 0; i <= n && ok; i++) {
                    const char *o;
                    size_t ol;
                    if (i < n ? tl_decoder_push(&d, ids[i], &o, &ol, &err) : tl_decoder_flush(&d, &o, &ol, &err)) {
                        ok = 0;
                        break;
                    }
                    if (at + ol > len) abort();
                    memcpy(acc + at, o, ol);
                    at += ol;
                }
                if (ok && (at != len || memcmp(acc, text, len))) abort();
                free(acc);
                tl_decoder_free(&d);
                free(text);
            }
            free(ids);
        }
}

#endif

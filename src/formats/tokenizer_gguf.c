/* tokenizer_gguf.c - a SentencePiece BPE tokenizer from a GGUF file's
 * tokenizer.ggml.* metadata (model "llama").
 *
 * llama.cpp's converter copies the ModelProto's pieces, scores and types into
 * the arrays tokens/scores/token_type; the normalizer settings that Llama
 * models use are fixed (identity rules, whitespace escaped to U+2581) except
 * the dummy prefix (add_space_prefix, default on) and the collapsing of extra
 * whitespace (remove_extra_whitespaces, default off).  With these the pieces
 * go through the same checks and tables as a tokenizer.model (tl_tok_finish). */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer_internal.h"

/* An optional id key: *id keeps its default when absent; -1 if the value lies outside the vocabulary. */
static int get_id(const tl_gguf *g, const char *key, int n, int *id, tl_error *err) {
    uint32_t v;
    int rc = tl_gguf_get_u32(g, key, &v, err);
    if (rc < 0) return -1;
    if (rc == 1) {
        if (v >= (uint32_t)n)
            return tl_fail(err, "%s: key '%s': id %u is outside the vocabulary of %d tokens", tl_gguf_path(g), key,
                           v, n);
        *id = (int)v;
    }
    return 0;
}

tl_tokenizer *tl_tokenizer_from_gguf(const tl_gguf *g, tl_gguf_tokenizer_info *info, tl_error *err) {
    const char *path = tl_gguf_path(g);
    tl_gguf_str model;
    int rc = tl_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (rc < 0) return NULL;
    if (rc == 0) return tl_fail(err, "%s: key 'tokenizer.ggml.model' is missing: the file has no tokenizer", path), NULL;
    if (model.len != 5 || memcmp(model.ptr, "llama", 5))
        return tl_fail(err, "%s: tokenizer.ggml.model '%.*s' is not supported (only 'llama', SentencePiece BPE)", path,
                       (int)(model.len > 40 ? 40 : model.len), model.ptr), NULL;
    tl_gguf_value toks, scores = {0}, types = {0};
    rc = tl_gguf_get_array(g, "tokenizer.ggml.tokens", TL_GGUF_STRING, &toks, err);
    if (rc < 0) return NULL;
    if (rc == 0) return tl_fail(err, "%s: key 'tokenizer.ggml.tokens' is missing", path), NULL;
    if (toks.arr_n == 0 || toks.arr_n > (1u << 24))
        return tl_fail(err, "%s: tokenizer.ggml.tokens has %llu tokens (1 to %d allowed)", path,
                       (unsigned long long)toks.arr_n, 1 << 24), NULL;
    int n = (int)toks.arr_n;
    int has_scores = tl_gguf_get_array(g, "tokenizer.ggml.scores", TL_GGUF_FLOAT32, &scores, err);
    if (has_scores < 0) return NULL;
    int has_types = tl_gguf_get_array(g, "tokenizer.ggml.token_type", TL_GGUF_INT32, &types, err);
    if (has_types < 0) return NULL;
    if (has_scores && scores.arr_n != toks.arr_n)
        return tl_fail(err, "%s: tokenizer.ggml.scores has %llu entries for %d tokens", path,
                       (unsigned long long)scores.arr_n, n), NULL;
    if (has_types && types.arr_n != toks.arr_n)
        return tl_fail(err, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", path,
                       (unsigned long long)types.arr_n, n), NULL;

    tl_gguf_tokenizer_info inf = {1, 0, {NULL, 0}};
    int add_space = 1, remove_ws = 0;
    if (tl_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &inf.add_bos, err) < 0 ||
        tl_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &inf.add_eos, err) < 0 ||
        tl_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_space, err) < 0 ||
        tl_gguf_get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &remove_ws, err) < 0 ||
        tl_gguf_get_str(g, "tokenizer.chat_template", &inf.chat_template, err) < 0)
        return NULL;

    tl_tokenizer *t = calloc(1, sizeof *t);
    tl_piece_src *src = malloc((size_t)n * sizeof *src);
    if (!t || !src) {
        tl_fail(err, "%s: out of memory", path);
        goto fail;
    }
    const uint8_t *pos = toks.data;
    int any_byte = 0;
    for (int i = 0; i < n; i++) {
        tl_gguf_value e;
        tl_gguf_array_next(&toks, &pos, &e);
        src[i].str = e.str.ptr;
        src[i].len = e.str.len;
        src[i].score = 0;
        if (has_scores) {
            tl_gguf_value s = {.type = TL_GGUF_FLOAT32, .data = scores.data + 4 * (size_t)i};
            src[i].score = (float)tl_gguf_value_f64(&s);
        }
        src[i].type = TL_PIECE_NORMAL;
        if (has_types) {
            tl_gguf_value ty = {.type = TL_GGUF_INT32, .data = types.data + 4 * (size_t)i};
            int64_t v = tl_gguf_value_i64(&ty);
            if (v < TL_PIECE_NORMAL || v > TL_PIECE_BYTE) {
                tl_fail(err, "%s: tokenizer.ggml.token_type[%d] is %lld, not a token type (1..6)", path, i,
                        (long long)v);
                goto fail;
            }
            src[i].type = (int)v;
        }
        if (src[i].type == TL_PIECE_BYTE) any_byte = 1;
    }
    t->model_type = 2;
    t->byte_fallback = any_byte;
    t->add_dummy_prefix = add_space;
    t->remove_extra_ws = remove_ws;
    t->escape_ws = 1;
    strcpy(t->normalizer_name, "identity");
    strcpy(t->unk_surface, " \xE2\x81\x87 "); /* SentencePiece's default " ⁇ " */
    if (tl_tok_finish(t, src, n, path, err)) goto fail;

    /* llama.cpp's defaults for a SentencePiece vocabulary: <unk> 0, <s> 1, </s> 2 */
    int unk = t->unk_id, bos = n > 1 ? 1 : -1, eos = n > 2 ? 2 : -1, pad = -1;
    if (get_id(g, "tokenizer.ggml.unknown_token_id", n, &unk, err) ||
        get_id(g, "tokenizer.ggml.bos_token_id", n, &bos, err) ||
        get_id(g, "tokenizer.ggml.eos_token_id", n, &eos, err) ||
        get_id(g, "tokenizer.ggml.padding_token_id", n, &pad, err))
        goto fail;
    if (unk != t->unk_id) {
        tl_fail(err, "%s: tokenizer.ggml.unknown_token_id is %d but the unknown token (type 2) is %d", path, unk,
                t->unk_id);
        goto fail;
    }
    t->bos_id = bos;
    t->eos_id = eos;
    t->pad_id = pad;

    /* identity for data manifests: the three arrays as stored */
    uint64_t h[3] = {tl_fnv1a64(toks.data, toks.size), has_scores ? tl_fnv1a64(scores.data, scores.size) : 0,
                     has_types ? tl_fnv1a64(types.data, types.size) : 0};
    tl_tok_set_hash(t, h, sizeof h);
    free(src);
    if (info) *info = inf;
    return t;
fail:
    free(src);
    tl_tokenizer_free(t);
    return NULL;
}

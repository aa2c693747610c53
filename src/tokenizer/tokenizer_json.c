/* tokenizer_json.c - HF tokenizer.json loader for Llama-family BPE tokenizers
 * (model.type "BPE" with byte_fallback, normalizer Prepend("▁") + Replace(" ",
 * "▁") or a Metaspace pre-tokenizer without splitting).  Merges are applied by
 * rank on (left id, right id) pairs, as HF tokenizers does.  Other kinds
 * (byte-level BPE, WordPiece, Unigram, splitting pre-tokenizers) are refused. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static const char kSpaceU[] = "\xE2\x96\x81";

static int is_str(const cJSON *j, const char *s) {
    return cJSON_IsString(j) && j->valuestring && strcmp(j->valuestring, s) == 0;
}

/* Accepts the normalizer / pre_tokenizer combinations Llama tokenizers use.
 * Returns how the "▁" prefix is added: 0 never, 1 always (the Prepend
 * normalizer, as SentencePiece), 2 Metaspace prepend_scheme "always" (unless the
 * text starts with a space or "▁"), 3 Metaspace "first" (the same, and only
 * before the first segment when special tokens split the text); -1 on error. */
static int check_pipeline(const cJSON *root, const char *what, tl_error *err) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    int prepend = 0, replace = 0, meta = 0;
    if (norm && !cJSON_IsNull(norm)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(norm, "type");
        const cJSON *list = NULL;
        if (is_str(type, "Sequence")) list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        const cJSON *one;
        int count = 0;
        if (list) {
            cJSON_ArrayForEach(one, list) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(one, "type");
                count++;
                if (is_str(ty, "Prepend") && is_str(cJSON_GetObjectItemCaseSensitive(one, "prepend"), kSpaceU))
                    prepend++;
                else if (is_str(ty, "Replace")) {
                    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(one, "pattern");
                    const cJSON *ps = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
                    if (is_str(ps, " ") && is_str(cJSON_GetObjectItemCaseSensitive(one, "content"), kSpaceU))
                        replace++;
                    else
                        return tl_fail(err, "%s: normalizer Replace other than ' ' -> U+2581 is not supported", what);
                } else {
                    return tl_fail(err, "%s: normalizer '%s' is not supported", what,
                                   cJSON_IsString(ty) ? ty->valuestring : "?");
                }
            }
        } else {
            return tl_fail(err, "%s: normalizer '%s' is not supported", what,
                           cJSON_IsString(type) ? type->valuestring : "?");
        }
        (void)count;
    }
    if (pre && !cJSON_IsNull(pre)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
        if (!is_str(type, "Metaspace"))
            return tl_fail(err, "%s: pre_tokenizer '%s' is not supported (only Llama-style BPE is)", what,
                           cJSON_IsString(type) ? type->valuestring : "?");
        const cJSON *split = cJSON_GetObjectItemCaseSensitive(pre, "split");
        if (cJSON_IsTrue(split))
            return tl_fail(err, "%s: a Metaspace pre_tokenizer with split=true is not supported", what);
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(pre, "replacement");
        if (rep && !is_str(rep, kSpaceU))
            return tl_fail(err, "%s: Metaspace replacement other than U+2581 is not supported", what);
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
        const cJSON *add = cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space");
        if (is_str(scheme, "never") || cJSON_IsFalse(add)) meta = 2; /* no prefix */
        else if (is_str(scheme, "first")) meta = 3;
        else if (!scheme || is_str(scheme, "always")) meta = 1;
        else return tl_fail(err, "%s: Metaspace prepend_scheme '%s' is not supported", what,
                            cJSON_IsString(scheme) ? scheme->valuestring : "?");
    }
    if (meta && (prepend || replace))
        return tl_fail(err, "%s: both a normalizer and a Metaspace pre_tokenizer: not supported", what);
    if (meta == 1) return 2;
    if (meta == 3) return 3;
    if (prepend == 1 && replace == 1) return 1;
    if (meta == 2 || (prepend == 0 && replace == 1)) return 0;
    return tl_fail(err, "%s: neither a Llama-style normalizer (Prepend + Replace) nor a Metaspace "
                        "pre_tokenizer: not supported", what);
}

static int pairmap_put(tl_pairmap *m, int l, int r, int rank, int result) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    uint32_t j = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
    while (m->key[j]) {
        if (m->key[j] == key) return 1; /* duplicate merge: first (lowest rank) wins */
        j = (j + 1) & m->mask;
    }
    m->key[j] = key;
    m->rank[j] = rank;
    m->result[j] = result;
    return 0;
}

/* The "model" object must be a plain BPE: other models and options change
 * what the merges mean, so they are refused rather than misread. */
static int check_model(const cJSON *model, const char *what, tl_error *err) {
    if (!cJSON_IsObject(model)) return tl_fail(err, "%s: no \"model\" object: not a tokenizer.json", what);
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (mtype && !is_str(mtype, "BPE"))
        return tl_fail(err, "%s: model type '%s' is not supported (only BPE is)", what,
                       cJSON_IsString(mtype) ? mtype->valuestring : "?");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return tl_fail(err, "%s: model.vocab or model.merges missing", what);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")))
        return tl_fail(err, "%s: ignore_merges=true is not supported", what);
    const cJSON *csp = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *eows = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if ((csp && !cJSON_IsNull(csp) && !is_str(csp, "")) || (eows && !cJSON_IsNull(eows) && !is_str(eows, "")))
        return tl_fail(err, "%s: subword prefixes/suffixes are not supported", what);
    return 0;
}

/* The vocabulary size: one more than the largest id of the vocab and the
 * added tokens (the ids must be dense from 0; fill_pieces checks that).  The
 * ids are checked to be integers below 2^24 here, so later steps may index
 * with them.  -1 on error. */
static int count_ids(const cJSON *vocab, const cJSON *added, const char *what, tl_error *err) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= (1 << 24) ||
            it->valuedouble != (double)(int)it->valuedouble)
            return tl_fail(err, "%s: vocab entry '%.40s' has a bad id", what, it->string ? it->string : "");
        if (it->valueint + 1 > n) n = it->valueint + 1;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !cJSON_IsString(content))
            return tl_fail(err, "%s: malformed added_tokens entry", what);
        if (id->valueint + 1 > n) n = id->valueint + 1;
    }
    if (n == 0) return tl_fail(err, "%s: empty vocabulary", what);
    return n;
}

/* The encoder's settings for a Llama tokenizer.json; dummy is check_pipeline's
 * answer (how the "▁" prefix is added). */
static void set_options(tl_tokenizer *t, const cJSON *model, int dummy) {
    t->is_json = 1;
    t->model_type = 2;
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    t->add_dummy_prefix = dummy != 0;
    t->hf_prefix = dummy == 2 ? TL_HF_PREFIX_ALWAYS : dummy == 3 ? TL_HF_PREFIX_FIRST : TL_HF_PREFIX_SPM;
    t->escape_ws = 1;
    t->remove_extra_ws = 0;
    snprintf(t->normalizer_name, sizeof t->normalizer_name, "hf-llama");
    strcpy(t->unk_surface, " \xE2\x81\x87 ");
}

/* src[0..n) from the vocab (normal pieces) and the added tokens (control
 * pieces if special, else user-defined); an added token may repeat its vocab
 * entry but not contradict it, and no id may be left without a piece. */
static int fill_pieces(tl_piece_src *src, int n, const cJSON *vocab, const cJSON *added, const char *what,
                       tl_error *err) {
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int id = it->valueint;
        if (src[id].str) return tl_fail(err, "%s: id %d is used twice in the vocab", what, id);
        src[id].str = it->string;
        src[id].len = strlen(it->string);
        src[id].type = TL_PIECE_NORMAL;
    }
    cJSON_ArrayForEach(it, added) {
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        const char *c = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
        if (src[id].str && strcmp(src[id].str, c) != 0)
            return tl_fail(err, "%s: added token %d '%.40s' conflicts with the vocab", what, id, c);
        src[id].str = c;
        src[id].len = strlen(c);
        src[id].type = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")) ? TL_PIECE_CONTROL
                                                                                      : TL_PIECE_USER_DEFINED;
    }
    for (int i = 0; i < n; i++)
        if (!src[i].str) return tl_fail(err, "%s: id %d is missing from the vocabulary", what, i);
    return 0;
}

/* tokenizer.json has no piece types for these: the unknown piece is named by
 * model.unk_token and the byte pieces are the "<0xNN>" ones (with byte
 * fallback).  Scores are unused: merges go by rank. */
static int mark_unk_and_bytes(tl_piece_src *src, int n, const cJSON *model, int byte_fallback, const char *what,
                              tl_error *err) {
    /* transformers 5 writes "unk_token": null for Llama (byte fallback covers every
     * character, so HF never emits it); "<unk>" is then the unknown piece */
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const char *unk_str = cJSON_IsString(unk) ? unk->valuestring : (!unk || cJSON_IsNull(unk)) ? "<unk>" : NULL;
    int unk_found = 0;
    for (int i = 0; i < n; i++) {
        if (unk_str && strcmp(src[i].str, unk_str) == 0) {
            src[i].type = TL_PIECE_UNKNOWN;
            unk_found = 1;
        } else if (byte_fallback && src[i].type == TL_PIECE_NORMAL && src[i].len == 6 &&
                   memcmp(src[i].str, "<0x", 3) == 0 && src[i].str[5] == '>') {
            src[i].type = TL_PIECE_BYTE;
        }
        src[i].score = 0.0f;
    }
    if (!unk_found)
        return tl_fail(err, "%s: model.unk_token (or \"<unk>\" when it is null) is not in the vocabulary", what);
    return 0;
}

/* BOS and EOS are "<s>" and "</s>" when they are control pieces (as in
 * Llama's tokenizer.model); there is no pad. */
static void set_special_ids(tl_tokenizer *t) {
    t->bos_id = tl_tokenizer_piece_id(t, "<s>", 3);
    if (t->bos_id >= 0 && t->pieces[t->bos_id].type != TL_PIECE_CONTROL) t->bos_id = -1;
    t->eos_id = tl_tokenizer_piece_id(t, "</s>", 4);
    if (t->eos_id >= 0 && t->pieces[t->eos_id].type != TL_PIECE_CONTROL) t->eos_id = -1;
    t->pad_id = -1;
}

/* The two sides of merge `rank`: a "left right" string (the older format) or
 * a ["left", "right"] array (newer tokenizers write this). */
static int merge_sides(const cJSON *it, int rank, const char **a, size_t *la, const char **b, size_t *lb,
                       const char *what, tl_error *err) {
    if (cJSON_IsString(it)) {
        const char *sp = strchr(it->valuestring, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return tl_fail(err, "%s: merge %d '%.40s' is not 'left right'", what, rank, it->valuestring);
        *a = it->valuestring;
        *la = (size_t)(sp - *a);
        *b = sp + 1;
        *lb = strlen(*b);
        return 0;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
        cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
        *a = cJSON_GetArrayItem(it, 0)->valuestring;
        *b = cJSON_GetArrayItem(it, 1)->valuestring;
        *la = strlen(*a);
        *lb = strlen(*b);
        return 0;
    }
    return tl_fail(err, "%s: merge %d is malformed", what, rank);
}

/* The merges as (left id, right id) -> (rank, merged id); both sides and the
 * merged piece must be normal vocabulary pieces. */
static int load_merges(tl_tokenizer *t, const cJSON *merges, const char *what, tl_error *err) {
    int nm = cJSON_GetArraySize(merges);
    uint32_t size = 16;
    while (size < 2u * (uint32_t)nm + 2) size <<= 1;
    t->merges.mask = size - 1;
    t->merges.key = calloc(size, sizeof *t->merges.key);
    t->merges.rank = malloc(size * sizeof *t->merges.rank);
    t->merges.result = malloc(size * sizeof *t->merges.result);
    if (!t->merges.key || !t->merges.rank || !t->merges.result) return tl_fail(err, "%s: out of memory", what);
    int rank = 0;
    char tmp[1024];
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (merge_sides(it, rank, &a, &la, &b, &lb, what, err)) return -1;
        int l = tl_strmap_get(&t->normal, t->pieces, a, la);
        int r = tl_strmap_get(&t->normal, t->pieces, b, lb);
        if (la + lb >= sizeof tmp || l < 0 || r < 0)
            return tl_fail(err, "%s: merge %d refers to a piece not in the vocabulary", what, rank);
        memcpy(tmp, a, la);
        memcpy(tmp + la, b, lb);
        int res = tl_strmap_get(&t->normal, t->pieces, tmp, la + lb);
        if (res < 0) return tl_fail(err, "%s: merge %d: the merged piece is not in the vocabulary", what, rank);
        pairmap_put(&t->merges, l, r, rank, res);
        rank++;
    }
    return 0;
}

tl_tokenizer *tl_tokenizer_load_json_text(const char *text, size_t len, const char *what,
                                          tl_error *err) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    tl_tokenizer *t = NULL;
    tl_piece_src *src = NULL;
    if (!root) {
        tl_fail(err, "%s: not valid JSON", what);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (check_model(model, what, err)) goto fail;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int dummy = check_pipeline(root, what, err);
    if (dummy < 0) goto fail;

    /* ids: vocab plus added_tokens, dense from 0 */
    int n = count_ids(vocab, added, what, err);
    if (n < 0) goto fail;
    t = calloc(1, sizeof *t);
    src = calloc((size_t)n, sizeof *src);
    if (!t || !src) {
        tl_fail(err, "%s: out of memory", what);
        goto fail;
    }
    set_options(t, model, dummy);
    if (fill_pieces(src, n, vocab, added, what, err) ||
        mark_unk_and_bytes(src, n, model, t->byte_fallback, what, err) || tl_tok_finish(t, src, n, what, err))
        goto fail;
    set_special_ids(t);
    if (load_merges(t, merges, what, err)) goto fail;
    tl_tok_set_hash(t, text, len);
    cJSON_Delete(root);
    free(src);
    return t;
fail:
    cJSON_Delete(root);
    free(src);
    tl_tokenizer_free(t);
    return NULL;
}

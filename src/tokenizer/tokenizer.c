/* tokenizer.c - SentencePiece-compatible BPE encoding and decoding.
 *
 * Encoding follows SentencePiece exactly:
 *   1. normalize: (identity normalizer) each invalid UTF-8 byte becomes U+FFFD,
 *      optional removal of extra spaces, a dummy-prefix space, spaces -> U+2581;
 *   2. split into characters (user-defined pieces are matched greedily, longest
 *      first, and are frozen: they never merge);
 *   3. repeatedly merge the adjacent pair whose concatenation is a piece
 *      (NORMAL / USER_DEFINED / UNUSED) with the highest score, leftmost first
 *      on ties - a binary heap of candidate pairs over a linked list of symbols,
 *      stale heap entries detected by their length, as SentencePiece does;
 *   4. UNUSED pieces are split back into the pair they were made from;
 *   5. pieces not in the vocabulary become byte pieces (byte fallback) or UNK,
 *      consecutive UNKs collapsing into one.
 * tokenizer.json models (is_json) merge by pair rank instead of piece score. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* ---------------------------------------------------------------- hashing */

uint32_t tl_tok_strhash(const char *s, size_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)len;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, len);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

uint64_t tl_fnv1a64(const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void tl_tok_set_hash(tl_tokenizer *t, const void *data, size_t len) {
    t->hash = tl_fnv1a64(data, len);
    snprintf(t->hash_hex, sizeof t->hash_hex, "%016llx", (unsigned long long)t->hash);
}

static int is_normal_type(int type) {
    return type == TL_PIECE_NORMAL || type == TL_PIECE_USER_DEFINED || type == TL_PIECE_UNUSED;
}

int tl_strmap_build(tl_strmap *m, const tl_piece *pieces, int n, int want_normal, int *dup_id) {
    uint32_t size = 16;
    while (size < 2u * (uint32_t)n + 2) size <<= 1;
    m->mask = size - 1;
    m->hash = malloc(size * sizeof *m->hash);
    m->id = malloc(size * sizeof *m->id);
    if (!m->hash || !m->id) return -1;
    for (uint32_t i = 0; i < size; i++) m->id[i] = -1;
    *dup_id = -1;
    for (int i = 0; i < n; i++) {
        if (is_normal_type(pieces[i].type) != want_normal) continue;
        uint32_t h = tl_tok_strhash(pieces[i].str, pieces[i].len);
        uint32_t j = h & m->mask;
        while (m->id[j] >= 0) {
            const tl_piece *q = &pieces[m->id[j]];
            if (m->hash[j] == h && q->len == pieces[i].len &&
                memcmp(q->str, pieces[i].str, q->len) == 0) {
                *dup_id = i;
                return -2;
            }
            j = (j + 1) & m->mask;
        }
        m->hash[j] = h;
        m->id[j] = i;
    }
    return 0;
}

static inline int strmap_get_h(const tl_strmap *m, const tl_piece *pieces, const char *s,
                               size_t len, uint32_t h) {
    uint32_t j = h & m->mask;
    for (;;) {
        int id = m->id[j];
        if (id < 0) return -1;
        if (m->hash[j] == h && pieces[id].len == len && memcmp(pieces[id].str, s, len) == 0)
            return id;
        j = (j + 1) & m->mask;
    }
}

int tl_strmap_get(const tl_strmap *m, const tl_piece *pieces, const char *s, size_t len) {
    if (!m->id) return -1;
    return strmap_get_h(m, pieces, s, len, tl_tok_strhash(s, len));
}

void tl_strmap_free(tl_strmap *m) {
    free(m->hash);
    free(m->id);
    m->hash = NULL;
    m->id = NULL;
}

/* ---------------------------------------------------------------- building */

static int parse_byte_piece(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *a = memchr(hex, s[3], 16), *b = memchr(hex, s[4], 16);
    if (!a || !b || !s[3] || !s[4]) return -1;
    return (int)(a - hex) * 16 + (int)(b - hex);
}

static int cmp_user(const void *a, const void *b, void *ctx) {
    const tl_tokenizer *t = ctx;
    const tl_piece *x = &t->pieces[*(const int *)a], *y = &t->pieces[*(const int *)b];
    unsigned char cx = (unsigned char)x->str[0], cy = (unsigned char)y->str[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

int tl_tok_finish(tl_tokenizer *t, const tl_piece_src *src, int n, const char *what,
                  tl_error *err) {
    size_t pool = 0;
    for (int i = 0; i < n; i++) {
        if (src[i].len == 0) return tl_fail(err, "%s: piece %d is empty", what, i);
        if (src[i].len > 1u << 20) return tl_fail(err, "%s: piece %d is absurdly long (%zu bytes)", what, i, src[i].len);
        pool += src[i].len + 1;
    }
    t->n = n;
    t->pieces = calloc((size_t)n, sizeof *t->pieces);
    t->pool = malloc(pool ? pool : 1);
    if (!t->pieces || !t->pool) return tl_fail(err, "%s: out of memory", what);
    t->pool_len = pool;
    size_t off = 0;
    t->unk_id = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    int n_byte = 0;
    for (int i = 0; i < n; i++) {
        memcpy(t->pool + off, src[i].str, src[i].len);
        t->pool[off + src[i].len] = '\0';
        tl_piece *p = &t->pieces[i];
        p->str = t->pool + off;
        p->len = (uint32_t)src[i].len;
        p->score = src[i].score;
        p->type = src[i].type;
        off += src[i].len + 1;
        if (p->type == TL_PIECE_UNKNOWN) {
            if (t->unk_id >= 0)
                return tl_fail(err, "%s: unk is already defined (pieces %d and %d)", what, t->unk_id, i);
            t->unk_id = i;
        } else if (p->type == TL_PIECE_BYTE) {
            if (!t->byte_fallback)
                return tl_fail(err, "%s: byte piece %d is found although byte_fallback is false", what, i);
            int b = parse_byte_piece(p->str, p->len);
            if (b < 0) return tl_fail(err, "%s: byte piece %d '%.20s' is invalid", what, i, p->str);
            if (t->byte_id[b] < 0) n_byte++;
            t->byte_id[b] = i;
        } else if (p->type == TL_PIECE_UNUSED) {
            t->has_unused = 1;
        } else if (p->type == TL_PIECE_USER_DEFINED) {
            t->n_user++;
        }
    }
    if (t->unk_id < 0) return tl_fail(err, "%s: unk is not defined", what);
    if (t->byte_fallback && n_byte != 256)
        return tl_fail(err, "%s: there are not 256 byte pieces although byte_fallback is true (found %d)", what, n_byte);
    int dup;
    for (int pass = 0; pass < 2; pass++) {
        tl_strmap *m = pass ? &t->reserved : &t->normal;
        int rc = tl_strmap_build(m, t->pieces, n, !pass, &dup);
        if (rc == -1) return tl_fail(err, "%s: out of memory", what);
        if (rc == -2)
            return tl_fail(err, "%s: piece %d '%.40s' is already defined", what, dup, t->pieces[dup].str);
    }
    if (t->n_user) {
        t->user_ids = malloc((size_t)t->n_user * sizeof *t->user_ids);
        if (!t->user_ids) return tl_fail(err, "%s: out of memory", what);
        int k = 0;
        for (int i = 0; i < n; i++)
            if (t->pieces[i].type == TL_PIECE_USER_DEFINED) t->user_ids[k++] = i;
        qsort_r(t->user_ids, (size_t)k, sizeof *t->user_ids, cmp_user, t);
    }
    /* the pieces TL_ENC_PARSE_SPECIAL matches in text: CONTROL ones and, as HF's
     * Llama tokenizer (which lists it as a special token), the unknown piece */
    for (int i = 0; i < n; i++)
        if (t->pieces[i].type == TL_PIECE_CONTROL || t->pieces[i].type == TL_PIECE_UNKNOWN) t->n_ctrl++;
    if (t->n_ctrl) {
        t->ctrl_ids = malloc((size_t)t->n_ctrl * sizeof *t->ctrl_ids);
        if (!t->ctrl_ids) return tl_fail(err, "%s: out of memory", what);
        int k = 0;
        for (int i = 0; i < n; i++)
            if (t->pieces[i].type == TL_PIECE_CONTROL || t->pieces[i].type == TL_PIECE_UNKNOWN) {
                t->ctrl_ids[k++] = i;
                t->ctrl_first[(unsigned char)t->pieces[i].str[0]] = 1;
            }
    }
    /* word splitting is exact when no merge candidate has U+2581 after another char */
    t->word_split = !t->has_unused && t->escape_ws;
    for (int i = 0; i < n && t->word_split; i++) {
        const tl_piece *p = &t->pieces[i];
        if (!is_normal_type(p->type)) continue;
        int prev_sp = 1;
        for (uint32_t k = 0; k < p->len;) {
            int sp = k + 3 <= p->len && memcmp(p->str + k, "\xE2\x96\x81", 3) == 0;
            if (sp && !prev_sp) {
                t->word_split = 0;
                break;
            }
            prev_sp = sp;
            k += sp ? 3 : 1;
        }
    }
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < t->n_user && (unsigned char)t->pieces[t->user_ids[k]].str[0] < c) k++;
        t->user_first[c] = k;
    }
    return 0;
}

/* ---------------------------------------------------------------- loading */

tl_tokenizer *tl_tokenizer_load(const char *path, tl_error *err) {
    char *buf;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 30, &buf, &len, err)) return NULL;
    size_t pl = strlen(path);
    tl_tokenizer *t;
    if (pl >= 5 && strcmp(path + pl - 5, ".json") == 0)
        t = tl_tokenizer_load_json_text(buf, len, path, err);
    else
        t = tl_tokenizer_load_model_bytes(buf, len, path, err);
    free(buf);
    return t;
}

void tl_tokenizer_free(tl_tokenizer *t) {
    if (!t) return;
    free(t->pieces);
    free(t->pool);
    tl_strmap_free(&t->normal);
    tl_strmap_free(&t->reserved);
    free(t->user_ids);
    free(t->ctrl_ids);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.result);
    free(t);
}

int tl_tokenizer_vocab_size(const tl_tokenizer *t) { return t->n; }
int tl_tokenizer_bos_id(const tl_tokenizer *t) { return t->bos_id; }
int tl_tokenizer_eos_id(const tl_tokenizer *t) { return t->eos_id; }
int tl_tokenizer_unk_id(const tl_tokenizer *t) { return t->unk_id; }
int tl_tokenizer_pad_id(const tl_tokenizer *t) { return t->pad_id; }
uint64_t tl_tokenizer_hash(const tl_tokenizer *t) { return t->hash; }
const char *tl_tokenizer_hash_hex(const tl_tokenizer *t) { return t->hash_hex; }

const char *tl_tokenizer_piece(const tl_tokenizer *t, int id) {
    return id >= 0 && id < t->n ? t->pieces[id].str : NULL;
}
float tl_tokenizer_score(const tl_tokenizer *t, int id) {
    return id >= 0 && id < t->n ? t->pieces[id].score : 0.0f;
}
int tl_tokenizer_piece_type(const tl_tokenizer *t, int id) {
    return id >= 0 && id < t->n ? t->pieces[id].type : 0;
}

/* SentencePiece's PieceToId: reserved pieces first, then the others. */
int tl_tokenizer_piece_id(const tl_tokenizer *t, const char *piece, size_t len) {
    int id = tl_strmap_get(&t->reserved, t->pieces, piece, len);
    if (id >= 0) return id;
    return tl_strmap_get(&t->normal, t->pieces, piece, len);
}

void tl_tokenizer_get_info(const tl_tokenizer *t, tl_tokenizer_info *info) {
    memset(info, 0, sizeof *info);
    info->format = t->is_json ? "hf-json" : "sentencepiece";
    info->model_type = t->model_type;
    info->byte_fallback = t->byte_fallback;
    info->add_dummy_prefix = t->add_dummy_prefix;
    info->remove_extra_whitespaces = t->remove_extra_ws;
    info->escape_whitespaces = t->escape_ws;
    info->split_digits = t->split_digits;
    info->normalizer_name = t->normalizer_name;
    for (int i = 0; i < t->n; i++) {
        switch (t->pieces[i].type) {
        case TL_PIECE_USER_DEFINED: info->n_user_defined++; break;
        case TL_PIECE_CONTROL: info->n_control++; break;
        case TL_PIECE_BYTE: info->n_byte++; break;
        case TL_PIECE_UNUSED: info->n_unused++; break;
        }
    }
}

/* ---------------------------------------------------------------- UTF-8 */

/* SentencePiece's DecodeUTF8 + IsValidDecodeUTF8: strict UTF-8 (no overlongs,
 * surrogates or > U+10FFFF); an invalid sequence consumes one byte.  A literal
 * U+FFFD counts as valid. */
static int utf8_valid_len(const unsigned char *s, size_t len, size_t *mblen) {
    unsigned c = s[0];
    if (c < 0x80) {
        *mblen = 1;
        return 1;
    }
    if (len >= 2 && (c & 0xE0) == 0xC0) {
        unsigned cp = (c & 0x1F) << 6 | (s[1] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && cp >= 0x80) {
            *mblen = 2;
            return 1;
        }
    } else if (len >= 3 && (c & 0xF0) == 0xE0) {
        unsigned cp = (c & 0x0F) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            (cp < 0xD800 || cp >= 0xE000)) {
            *mblen = 3;
            return 1;
        }
    } else if (len >= 4 && (c & 0xF8) == 0xF0) {
        unsigned cp = (c & 0x07) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF) {
            *mblen = 4;
            return 1;
        }
    }
    *mblen = 1;
    return 0;
}

/* SentencePiece's OneCharLen: by the lead byte only (the text is valid by now). */
static inline size_t one_char_len(unsigned char c) {
    static const unsigned char tab[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return tab[c >> 4];
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    int start, len; /* byte span in the normalized text; len 0: merged away */
    int prev, next;
    int id;         /* piece id once merged (normal map), or -1 / char id in json mode */
    int freeze;
} tok_sym;

typedef struct {
    float score;
    int left, right, size;
    int result;     /* id of the merged piece */
} tok_pair;

typedef struct {
    int id, left_len;
} tok_rev;

typedef struct {
    uint32_t hash, len, key_off, ids_off, n_ids;
} tok_cache_ent;

typedef struct {
    char *norm;
    size_t norm_cap;
    tok_sym *syms;
    size_t syms_cap;
    tok_pair *heap;
    size_t heap_n, heap_cap;
    int *out;
    size_t out_n, out_cap;
    tok_rev *rev;
    size_t rev_n, rev_cap;
    int prev_unk;
    /* word cache (see encode_segment) */
    tok_cache_ent *cache_tab;
    uint32_t cache_mask;
    size_t cache_n;
    char *cache_keys;
    size_t cache_keys_n, cache_keys_cap;
    int *cache_ids;
    size_t cache_ids_n, cache_ids_cap;
} tok_scratch;

static void scratch_free(tok_scratch *s) {
    free(s->norm);
    free(s->syms);
    free(s->heap);
    free(s->out);
    free(s->rev);
    free(s->cache_tab);
    free(s->cache_keys);
    free(s->cache_ids);
    memset(s, 0, sizeof *s);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return -1;
        nc *= 2;
    }
    void *np = realloc(*p, nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static inline int out_push(tok_scratch *s, int id) {
    if (s->out_n == s->out_cap && grow((void **)&s->out, &s->out_cap, s->out_n + 1, sizeof(int)))
        return -1;
    s->out[s->out_n++] = id;
    return 0;
}

/* Longest USER_DEFINED piece starting at s (0 if none). */
static size_t user_match(const tl_tokenizer *t, const char *s, size_t len) {
    unsigned char c = (unsigned char)s[0];
    size_t best = 0;
    for (int k = t->user_first[c]; k < t->user_first[c + 1]; k++) {
        const tl_piece *p = &t->pieces[t->user_ids[k]];
        if (p->len <= len && p->len > best && memcmp(p->str, s, p->len) == 0) best = p->len;
    }
    return best;
}

static const char kSpace[] = "\xE2\x96\x81"; /* U+2581 */

/* SentencePiece's Normalizer::Normalize for a model without a character map. */
static int normalize(const tl_tokenizer *t, const char *in, size_t len, int first, tok_scratch *s,
                     size_t *out_len) {
    size_t need;
    if (tl_mul_size(len, 3, &need) || need > SIZE_MAX - 8 ||
        grow((void **)&s->norm, &s->norm_cap, need + 8, 1))
        return -1;
    char *o = s->norm;
    size_t n = 0, i = 0;
    *out_len = 0;
    if (len == 0) return 0;
    /* Each step consumes one unit: a user-defined piece, a valid character, or
     * one invalid byte (which becomes U+FFFD). */
#define UNIT_AT(pos, ulen, bad)                                                    \
    do {                                                                           \
        size_t um_ = t->n_user ? user_match(t, in + (pos), len - (pos)) : 0;      \
        if (um_) {                                                                 \
            (ulen) = um_;                                                          \
            (bad) = 0;                                                             \
        } else {                                                                   \
            (bad) = !utf8_valid_len((const unsigned char *)in + (pos), len - (pos), &(ulen)); \
        }                                                                          \
    } while (0)
    size_t ul;
    int bad;
    if (t->remove_extra_ws) {
        while (i < len) {
            UNIT_AT(i, ul, bad);
            if (bad || ul != 1 || in[i] != ' ') break;
            i++;
        }
        if (i == len) return 0;
    }
    /* HF Metaspace: no prefix when the text already starts with one (a space or
     * U+2581); with prepend_scheme "first", only the text's first segment gets it */
    int prefix = t->add_dummy_prefix;
    if (prefix && t->hf_prefix == TL_HF_PREFIX_FIRST && !first) prefix = 0;
    if (prefix && t->hf_prefix != TL_HF_PREFIX_SPM &&
        (in[i] == ' ' || (len - i >= 3 && memcmp(in + i, kSpace, 3) == 0)))
        prefix = 0;
    if (prefix) {
        if (t->escape_ws) {
            memcpy(o + n, kSpace, 3);
            n += 3;
        } else {
            o[n++] = ' ';
        }
    }
    int prev_space = t->remove_extra_ws;
    while (i < len) {
        UNIT_AT(i, ul, bad);
        const char *u = bad ? "\xEF\xBF\xBD" : in + i;
        size_t un = bad ? 3 : ul;
        while (prev_space && un > 0 && u[0] == ' ') {
            u++;
            un--;
        }
        if (un > 0) {
            for (size_t k = 0; k < un; k++) {
                if (t->escape_ws && u[k] == ' ') {
                    memcpy(o + n, kSpace, 3);
                    n += 3;
                } else {
                    o[n++] = u[k];
                }
            }
            prev_space = u[un - 1] == ' ';
        }
        i += ul;
        if (!t->remove_extra_ws) prev_space = 0;
    }
#undef UNIT_AT
    if (t->remove_extra_ws) {
        const char *sp = t->escape_ws ? kSpace : " ";
        size_t spl = t->escape_ws ? 3 : 1;
        while (n >= spl && memcmp(o + n - spl, sp, spl) == 0) n -= spl;
    }
    *out_len = n;
    return 0;
}

static inline int pair_better(const tok_pair *a, const tok_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(tok_scratch *s, const tok_pair *p) {
    if (s->heap_n == s->heap_cap &&
        grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap))
        return -1;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_better(p, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = *p;
    return 0;
}

static void heap_pop(tok_scratch *s, tok_pair *top) {
    *top = s->heap[0];
    tok_pair last = s->heap[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    if (n == 0) return;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const tok_pair *bp = &last;
        if (l < n && pair_better(&s->heap[l], bp)) {
            best = l;
            bp = &s->heap[l];
        }
        if (r < n && pair_better(&s->heap[r], bp)) best = r;
        if (best == i) break;
        s->heap[i] = s->heap[best];
        i = best;
    }
    s->heap[i] = last;
}

static int rev_record(tok_scratch *s, int id, int left_len) {
    if (s->rev_n == s->rev_cap && grow((void **)&s->rev, &s->rev_cap, s->rev_n + 1, sizeof *s->rev))
        return -1;
    s->rev[s->rev_n].id = id;
    s->rev[s->rev_n].left_len = left_len;
    s->rev_n++;
    return 0;
}

/* SentencePiece's MaybeAddNewSymbolPair. */
static int maybe_add_pair(const tl_tokenizer *t, tok_scratch *s, const char *text, int left,
                          int right) {
    if (left < 0 || right < 0) return 0;
    const tok_sym *a = &s->syms[left], *b = &s->syms[right];
    if (a->freeze || b->freeze) return 0;
    tok_pair p;
    if (t->is_json) {
        uint64_t key = ((uint64_t)(uint32_t)a->id << 32 | (uint32_t)b->id) + 1;
        const tl_pairmap *m = &t->merges;
        if (!m->key || a->id < 0 || b->id < 0) return 0;
        uint32_t j = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
        for (;;) {
            if (m->key[j] == 0) return 0;
            if (m->key[j] == key) break;
            j = (j + 1) & m->mask;
        }
        p.score = -(float)m->rank[j];
        p.result = m->result[j];
    } else {
        size_t len = (size_t)a->len + (size_t)b->len;
        int id = strmap_get_h(&t->normal, t->pieces, text + a->start, len,
                              tl_tok_strhash(text + a->start, len));
        if (id < 0) return 0;
        p.score = t->pieces[id].score;
        p.result = id;
        if (t->pieces[id].type == TL_PIECE_UNUSED && rev_record(s, id, a->len)) return -1;
    }
    p.left = left;
    p.right = right;
    p.size = a->len + b->len;
    return heap_push(s, &p);
}

/* Emits one final piece the way PopulateSentencePieceText does. */
static int emit_piece(const tl_tokenizer *t, tok_scratch *s, int id, const char *str, size_t len) {
    int is_unk = id == t->unk_id;
    if (t->pieces[id].type == TL_PIECE_CONTROL) return -2;
    if (is_unk && t->byte_fallback) {
        for (size_t k = 0; k < len; k++)
            if (out_push(s, t->byte_id[(unsigned char)str[k]])) return -1;
    } else if (!(is_unk && s->prev_unk)) {
        if (out_push(s, id)) return -1;
    }
    s->prev_unk = is_unk;
    return 0;
}

static int lookup_final(const tl_tokenizer *t, const char *str, size_t len) {
    int id = tl_tokenizer_piece_id(t, str, len);
    return id >= 0 ? id : t->unk_id;
}

/* The `resegment` step: UNUSED pieces go back to the pair that made them. */
static int resegment(const tl_tokenizer *t, tok_scratch *s, const char *str, size_t len,
                     int depth) {
    int id = lookup_final(t, str, len);
    if (t->pieces[id].type != TL_PIECE_UNUSED || depth > 64) return emit_piece(t, s, id, str, len);
    int left_len = -1;
    for (size_t k = s->rev_n; k-- > 0;)
        if (s->rev[k].id == id) {
            left_len = s->rev[k].left_len;
            break;
        }
    if (left_len <= 0 || (size_t)left_len >= len) return emit_piece(t, s, id, str, len);
    int rc = resegment(t, s, str, (size_t)left_len, depth + 1);
    if (rc) return rc;
    return resegment(t, s, str + left_len, len - (size_t)left_len, depth + 1);
}

/* json mode: the initial symbol ids (characters, or their bytes). */
static int json_char_id(const tl_tokenizer *t, const char *s, size_t len) {
    return tl_strmap_get(&t->normal, t->pieces, s, len);
}

/* Appends symbol ns (linked to its neighbours) covering norm[start, start+len). */
static inline void push_sym(tok_sym *syms, int ns, size_t start, size_t len, int id, int freeze) {
    tok_sym *y = &syms[ns];
    y->start = (int)start;
    y->len = (int)len;
    y->prev = ns - 1;
    y->next = ns + 1;
    y->id = id;
    y->freeze = freeze;
}

/* BPE over norm[0..nlen) (normalized text), appending the final ids to s->out. */
static int bpe_run(const tl_tokenizer *t, tok_scratch *s, const char *norm, size_t nlen) {
    /* symbols: at most one per byte (json byte fallback: still one per byte) */
    if (grow((void **)&s->syms, &s->syms_cap, nlen, sizeof *s->syms)) return -1;
    int ns = 0;
    size_t pos = 0;
    while (pos < nlen) {
        size_t ml = 0;
        int freeze = 0;
        if (t->n_user) ml = user_match(t, norm + pos, nlen - pos);
        if (ml) freeze = 1;
        else {
            ml = one_char_len((unsigned char)norm[pos]);
            if (ml > nlen - pos) ml = nlen - pos;
        }
        if (t->is_json && !freeze) {
            int id = json_char_id(t, norm + pos, ml);
            if (id < 0 && t->byte_fallback) {
                int all = 1;
                for (size_t k = 0; k < ml; k++)
                    if (t->byte_id[(unsigned char)norm[pos + k]] < 0) all = 0;
                if (all) {
                    for (size_t k = 0; k < ml; k++, ns++)
                        push_sym(s->syms, ns, pos + k, 1, t->byte_id[(unsigned char)norm[pos + k]], 0);
                    pos += ml;
                    continue;
                }
            }
            push_sym(s->syms, ns++, pos, ml, id >= 0 ? id : t->unk_id, 0);
            pos += ml;
            continue;
        }
        push_sym(s->syms, ns++, pos, ml, t->is_json ? lookup_final(t, norm + pos, ml) : -1, freeze);
        pos += ml;
    }
    s->syms[ns - 1].next = -1;
    s->heap_n = 0;
    s->rev_n = 0;
    for (int i = 1; i < ns; i++)
        if (maybe_add_pair(t, s, norm, i - 1, i)) return -1;
    while (s->heap_n) {
        tok_pair top;
        heap_pop(s, &top);
        tok_sym *a = &s->syms[top.left], *b = &s->syms[top.right];
        if (a->len == 0 || b->len == 0 || a->len + b->len != top.size) continue;
        a->len += b->len;
        a->id = top.result;
        a->next = b->next;
        if (b->next >= 0) s->syms[b->next].prev = top.left;
        b->len = 0;
        if (maybe_add_pair(t, s, norm, a->prev, top.left)) return -1;
        if (maybe_add_pair(t, s, norm, top.left, a->next)) return -1;
    }
    for (int i = 0; i >= 0; i = s->syms[i].next) {
        const tok_sym *y = &s->syms[i];
        int rc;
        if (t->is_json) {
            int id = y->id;
            int is_unk = id == t->unk_id;
            if (!(is_unk && t->fuse_unk && s->prev_unk) && out_push(s, id)) return -1;
            s->prev_unk = is_unk;
            continue;
        }
        if (t->has_unused)
            rc = resegment(t, s, norm + y->start, (size_t)y->len, 0);
        else
            rc = emit_piece(t, s, lookup_final(t, norm + y->start, (size_t)y->len),
                            norm + y->start, (size_t)y->len);
        if (rc) return rc;
    }
    return 0;
}

/* ---- word cache ----
 * When no piece contains U+2581 right after another character (true of Llama's
 * vocabulary; checked at load: t->word_split), no merge can cross the point
 * before a U+2581 that follows a non-U+2581 character, so the text splits there
 * into words that encode independently, and repeated words are served from a
 * per-scratch cache.  (Not used with UNUSED pieces, whose resegmentation
 * depends on the whole text.) */

static void cache_clear(tok_scratch *s) {
    if (s->cache_tab) memset(s->cache_tab, 0, (size_t)(s->cache_mask + 1) * sizeof *s->cache_tab);
    s->cache_n = 0;
    s->cache_keys_n = 0;
    s->cache_ids_n = 0;
}

enum { CACHE_SLOTS = 1 << 16, CACHE_MAX_WORD = 48, CACHE_KEYS_MAX = 1 << 21, CACHE_IDS_MAX = 1 << 20 };

/* Returns the entry for word w (found: ent->len set) or an empty slot, NULL if no cache. */
static tok_cache_ent *cache_slot(tok_scratch *s, const char *w, size_t len, uint32_t h) {
    if (!s->cache_tab) {
        s->cache_tab = calloc(CACHE_SLOTS, sizeof *s->cache_tab);
        if (!s->cache_tab) return NULL;
        s->cache_mask = CACHE_SLOTS - 1;
    }
    uint32_t j = h & s->cache_mask;
    for (;;) {
        tok_cache_ent *e = &s->cache_tab[j];
        if (e->len == 0) return e;
        if (e->hash == h && e->len == len && memcmp(s->cache_keys + e->key_off, w, len) == 0) return e;
        j = (j + 1) & s->cache_mask;
    }
}

static int cache_put(tok_scratch *s, tok_cache_ent *e, const char *w, size_t len, uint32_t h,
                     const int *ids, size_t n) {
    if (grow((void **)&s->cache_keys, &s->cache_keys_cap, s->cache_keys_n + len, 1) ||
        grow((void **)&s->cache_ids, &s->cache_ids_cap, s->cache_ids_n + n + 1, sizeof(int)))
        return -1;
    memcpy(s->cache_keys + s->cache_keys_n, w, len);
    if (n) memcpy(s->cache_ids + s->cache_ids_n, ids, n * sizeof(int));
    e->hash = h;
    e->len = (uint32_t)len;
    e->key_off = (uint32_t)s->cache_keys_n;
    e->ids_off = (uint32_t)s->cache_ids_n;
    e->n_ids = (uint32_t)n;
    s->cache_keys_n += len;
    s->cache_ids_n += n;
    s->cache_n++;
    return 0;
}

/* Appends a word's context-free ids, applying the UNK collapse across words. */
static int append_word(const tl_tokenizer *t, tok_scratch *s, size_t o0, int collapse,
                       int prev_unk) {
    if (collapse && prev_unk && s->out_n > o0 && s->out[o0] == t->unk_id) {
        memmove(s->out + o0, s->out + o0 + 1, (s->out_n - o0 - 1) * sizeof(int));
        s->out_n--;
    }
    if (s->out_n > o0) s->prev_unk = s->out[s->out_n - 1] == t->unk_id;
    else s->prev_unk = prev_unk;
    return 0;
}

static int encode_segment(const tl_tokenizer *t, tok_scratch *s, const char *text, size_t len, int first) {
    size_t nlen;
    s->prev_unk = 0;
    if (normalize(t, text, len, first, s, &nlen)) return -1;
    if (nlen == 0) return 0;
    if (nlen > (size_t)INT32_MAX / 2) return -3;
    const char *norm = s->norm;
    if (!t->word_split) return bpe_run(t, s, norm, nlen);
    int collapse = t->is_json ? t->fuse_unk : !t->byte_fallback;
    size_t a = 0;
    while (a < nlen) {
        /* the word ends before the next U+2581 that follows a non-U+2581 char */
        size_t b = a, prev_sp = 0;
        while (b < nlen) {
            size_t cl = one_char_len((unsigned char)norm[b]);
            if (cl > nlen - b) cl = nlen - b;
            int sp = cl == 3 && memcmp(norm + b, kSpace, 3) == 0;
            if (sp && b > a && !prev_sp) break;
            prev_sp = (size_t)sp;
            b += cl;
        }
        size_t wl = b - a;
        int prev_unk = s->prev_unk;
        size_t o0 = s->out_n;
        s->prev_unk = 0;
        if (wl <= CACHE_MAX_WORD) {
            uint32_t h = tl_tok_strhash(norm + a, wl);
            tok_cache_ent *e = cache_slot(s, norm + a, wl, h);
            if (!e) return -1;
            if (e->len) {
                if (grow((void **)&s->out, &s->out_cap, s->out_n + e->n_ids, sizeof(int))) return -1;
                memcpy(s->out + s->out_n, s->cache_ids + e->ids_off, e->n_ids * sizeof(int));
                s->out_n += e->n_ids;
            } else {
                int rc = bpe_run(t, s, norm + a, wl);
                if (rc) return rc;
                if (s->cache_n >= CACHE_SLOTS / 2 || s->cache_keys_n + wl > CACHE_KEYS_MAX ||
                    s->cache_ids_n + (s->out_n - o0) > CACHE_IDS_MAX) {
                    cache_clear(s);
                    e = cache_slot(s, norm + a, wl, h);
                }
                if (cache_put(s, e, norm + a, wl, h, s->out + o0, s->out_n - o0)) return -1;
            }
        } else {
            int rc = bpe_run(t, s, norm + a, wl);
            if (rc) return rc;
        }
        append_word(t, s, o0, collapse, prev_unk);
        a = b;
    }
    return 0;
}

/* Longest CONTROL (or unknown) piece at s (for TL_ENC_PARSE_SPECIAL), -1 if none. */
static int control_match(const tl_tokenizer *t, const char *s, size_t len, size_t *mlen) {
    int best = -1;
    size_t bl = 0;
    for (int k = 0; k < t->n_ctrl; k++) {
        const tl_piece *p = &t->pieces[t->ctrl_ids[k]];
        if (p->len > len || p->len <= bl) continue;
        if (memcmp(p->str, s, p->len) == 0) {
            best = t->ctrl_ids[k];
            bl = p->len;
        }
    }
    *mlen = bl;
    return best;
}

static int encode_into(const tl_tokenizer *t, tok_scratch *s, const char *text, size_t len,
                       int flags, tl_error *err) {
    s->out_n = 0;
    s->prev_unk = 0;
    if ((flags & TL_ENC_BOS) && t->bos_id < 0) return tl_fail(err, "tokenizer has no BOS piece");
    if ((flags & TL_ENC_EOS) && t->eos_id < 0) return tl_fail(err, "tokenizer has no EOS piece");
    if ((flags & TL_ENC_BOS) && out_push(s, t->bos_id)) goto oom;
    int rc = 0;
    if (flags & TL_ENC_PARSE_SPECIAL) {
        size_t seg = 0, i = 0;
        while (i < len) {
            size_t ml;
            int cid;
            if (t->ctrl_first[(unsigned char)text[i]] && (cid = control_match(t, text + i, len - i, &ml)) >= 0) {
                if (i > seg && (rc = encode_segment(t, s, text + seg, i - seg, seg == 0))) break;
                s->prev_unk = 0;
                if (out_push(s, cid)) goto oom;
                i += ml;
                seg = i;
            } else {
                i++;
            }
        }
        if (!rc && len > seg) rc = encode_segment(t, s, text + seg, len - seg, seg == 0);
    } else {
        rc = encode_segment(t, s, text, len, 1);
    }
    if (rc == -1) goto oom;
    if (rc == -2)
        return tl_fail(err, "text contains a single-character control piece (SentencePiece rejects it too)");
    if (rc == -3) return tl_fail(err, "text too long to encode in one call (%zu bytes)", len);
    if ((flags & TL_ENC_EOS) && out_push(s, t->eos_id)) goto oom;
    return 0;
oom:
    return tl_fail(err, "out of memory encoding %zu bytes", len);
}

int tl_tokenizer_encode(const tl_tokenizer *t, const char *text, size_t len, int flags, int **ids,
                        size_t *n, tl_error *err) {
    tok_scratch s;
    memset(&s, 0, sizeof s);
    *ids = NULL;
    *n = 0;
    if (encode_into(t, &s, text, len, flags, err)) {
        scratch_free(&s);
        return -1;
    }
    *ids = s.out;
    *n = s.out_n;
    s.out = NULL;
    scratch_free(&s);
    return 0;
}

int tl_tokenizer_encode_batch(const tl_tokenizer *t, const char *const *texts, const size_t *lens,
                              size_t count, int flags, int nthreads, int **out_ids, size_t *out_n,
                              tl_error *err) {
    for (size_t i = 0; i < count; i++) {
        out_ids[i] = NULL;
        out_n[i] = 0;
    }
    int failed = 0;
    size_t fail_at = SIZE_MAX;
    tl_error first_err = {{0}};
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
    {
        tok_scratch s;
        memset(&s, 0, sizeof s);
        tl_error e;
#pragma omp for schedule(dynamic, 8)
        for (size_t i = 0; i < count; i++) {
            int bad;
#pragma omp atomic read
            bad = failed;
            if (bad) continue;
            if (encode_into(t, &s, texts[i], lens[i], flags, &e) == 0) {
                int *copy = malloc((s.out_n ? s.out_n : 1) * sizeof *copy);
                if (copy) {
                    if (s.out_n) memcpy(copy, s.out, s.out_n * sizeof *copy);
                    out_ids[i] = copy;
                    out_n[i] = s.out_n;
                    continue;
                }
                tl_fail(&e, "out of memory");
            }
#pragma omp critical(tl_tok_batch_err)
            {
                if (i < fail_at) {
                    fail_at = i;
                    first_err = e;
                }
                failed = 1;
            }
        }
        scratch_free(&s);
    }
    if (failed) {
        for (size_t i = 0; i < count; i++) {
            free(out_ids[i]);
            out_ids[i] = NULL;
            out_n[i] = 0;
        }
        tl_fail(err, "%s", first_err.msg);
        return tl_wrap(err, "text %zu", fail_at);
    }
    return 0;
}

/* ---------------------------------------------------------------- decoding */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} dbuf;

static void dput(dbuf *b, const void *d, size_t l) {
    if (b->oom) return;
    if (b->n + l + 1 > b->cap && grow((void **)&b->p, &b->cap, b->n + l + 1, 1)) {
        b->oom = 1;
        return;
    }
    memcpy(b->p + b->n, d, l);
    b->n += l;
}

/* Appends a piece with U+2581 -> ' '. */
static void dput_piece(dbuf *b, const char *s, size_t l) {
    size_t i = 0, run = 0;
    while (i < l) {
        if (i + 3 <= l && memcmp(s + i, kSpace, 3) == 0) {
            dput(b, s + run, i - run);
            dput(b, " ", 1);
            i += 3;
            run = i;
        } else {
            i++;
        }
    }
    dput(b, s + run, l - run);
}

static int byte_value(const tl_piece *p) { return parse_byte_piece(p->str, p->len); }

/* Completes a run of byte pieces: valid characters are copied, each invalid byte
 * becomes U+FFFD (ProcessBytePieces). */
static void flush_bytes(dbuf *b, const unsigned char *bytes, size_t n) {
    size_t off = 0;
    while (off < n) {
        size_t ml;
        if (utf8_valid_len(bytes + off, n - off, &ml)) {
            dput(b, bytes + off, ml);
        } else {
            dput(b, "\xEF\xBF\xBD", 3);
        }
        off += ml;
    }
}

/* HF's ByteFallback decoder (tokenizer.json): a run of byte pieces is copied if
 * it is valid UTF-8 as a whole, else each of its bytes becomes U+FFFD. */
static void flush_bytes_hf(dbuf *b, const unsigned char *bytes, size_t n) {
    size_t off = 0, ml;
    if (n == 0) return;
    while (off < n && utf8_valid_len(bytes + off, n - off, &ml)) off += ml;
    if (off == n) {
        dput(b, bytes, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dput(b, "\xEF\xBF\xBD", 3);
}

/* tokenizer.json decoding as HF's decode(skip_special_tokens=True): special
 * tokens (CONTROL, and the unknown piece, which Llama files list as special) are
 * dropped before decoding, so they do not end a byte run. */
static int json_skipped(const tl_tokenizer *t, int id) {
    return t->is_json && (t->pieces[id].type == TL_PIECE_CONTROL || t->pieces[id].type == TL_PIECE_UNKNOWN);
}

/* The decode of one non-byte piece (DecodeSentencePiece); returns bos_ws_seen. */
static int decode_piece(const tl_tokenizer *t, int id, int is_bos_ws, dbuf *b) {
    const tl_piece *p = &t->pieces[id];
    if (p->type == TL_PIECE_CONTROL) return 0;
    if (p->type == TL_PIECE_UNKNOWN) {
        dput(b, t->unk_surface, strlen(t->unk_surface));
        return 0;
    }
    const char *s = p->str;
    size_t l = p->len;
    int has = 0;
    if (is_bos_ws && (t->add_dummy_prefix || t->remove_extra_ws)) {
        if (l >= 3 && memcmp(s, kSpace, 3) == 0) {
            s += 3;
            l -= 3;
            has = 1;
        }
        if (t->remove_extra_ws) has = 0;
    }
    dput_piece(b, s, l);
    return has;
}

int tl_tokenizer_decode(const tl_tokenizer *t, const int *ids, size_t n, char **text, size_t *len,
                        tl_error *err) {
    *text = NULL;
    *len = 0;
    dbuf b = {0};
    unsigned char *bytes = NULL;
    size_t nb = 0;
    if (n) {
        bytes = malloc(n);
        if (!bytes) return tl_fail(err, "out of memory decoding %zu ids", n);
    }
    int is_bos_ws = 1, bos_ws_seen = 0;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n) {
            free(bytes);
            free(b.p);
            return tl_fail(err, "invalid id %d at position %zu (vocabulary size %d)", id, i, t->n);
        }
        if (t->pieces[id].type == TL_PIECE_BYTE) {
            bytes[nb++] = (unsigned char)byte_value(&t->pieces[id]);
            continue;
        }
        if (json_skipped(t, id)) continue;
        if (t->is_json) flush_bytes_hf(&b, bytes, nb);
        else flush_bytes(&b, bytes, nb);
        nb = 0;
        if (bos_ws_seen || b.n > 0) is_bos_ws = 0;
        bos_ws_seen = decode_piece(t, id, is_bos_ws, &b);
    }
    if (t->is_json) flush_bytes_hf(&b, bytes, nb);
    else flush_bytes(&b, bytes, nb);
    free(bytes);
    dput(&b, "", 0);
    if (b.oom || !b.p) {
        if (!b.oom) {
            b.p = malloc(1);
            if (b.p) {
                b.p[0] = '\0';
                *text = b.p;
                return 0;
            }
        }
        free(b.p);
        return tl_fail(err, "out of memory decoding %zu ids", n);
    }
    b.p[b.n] = '\0';
    *text = b.p;
    *len = b.n;
    return 0;
}

/* ---------------------------------------------------------------- streaming */

void tl_decoder_init(tl_decoder *d, const tl_tokenizer *t) {
    memset(d, 0, sizeof *d);
    d->t = t;
    d->text_empty = 1;
    d->is_bos_ws = 1;
}

void tl_decoder_free(tl_decoder *d) {
    free(d->buf);
    free(d->run);
    d->buf = NULL;
    d->cap = 0;
    d->run = NULL;
    d->nrun = d->run_cap = 0;
}

/* Could bytes p[0..n) still grow into a valid character? */
static int utf8_viable_prefix(const unsigned char *p, int n) {
    unsigned c = p[0];
    int need;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3;
    else if (c >= 0xF0 && c <= 0xF4) need = 4;
    else return 0;
    if (n >= need) return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (n >= 2) {
        unsigned s = p[1];
        if (c == 0xE0 && s < 0xA0) return 0;
        if (c == 0xED && s > 0x9F) return 0;
        if (c == 0xF0 && s < 0x90) return 0;
        if (c == 0xF4 && s > 0x8F) return 0;
    }
    return 1;
}

/* Emits what is final among the pending bytes; all of them if `final`. */
static void drain_pending(tl_decoder *d, dbuf *b, int final) {
    while (d->npending > 0) {
        size_t ml;
        if (!final && utf8_viable_prefix(d->pending, d->npending)) break;
        if (utf8_valid_len(d->pending, (size_t)d->npending, &ml))
            dput(b, d->pending, ml);
        else
            dput(b, "\xEF\xBF\xBD", 3);
        memmove(d->pending, d->pending + ml, (size_t)d->npending - ml);
        d->npending -= (int)ml;
    }
}

static int decoder_finish(tl_decoder *d, dbuf *b, const char **out, size_t *len, tl_error *err) {
    if (b->oom) {
        d->buf = b->p;
        d->cap = b->cap;
        return tl_fail(err, "out of memory in the streaming decoder");
    }
    if (b->n > 0) d->text_empty = 0;
    d->buf = b->p;
    d->cap = b->cap;
    *out = b->p ? b->p : "";
    *len = b->n;
    return 0;
}

int tl_decoder_push(tl_decoder *d, int id, const char **out, size_t *len, tl_error *err) {
    const tl_tokenizer *t = d->t;
    dbuf b = {d->buf, 0, d->cap, 0};
    *out = "";
    *len = 0;
    if (id < 0 || id >= t->n) return tl_fail(err, "invalid id %d (vocabulary size %d)", id, t->n);
    if (t->is_json) { /* byte runs are held back until they end (HF decodes them whole) */
        if (json_skipped(t, id)) return decoder_finish(d, &b, out, len, err);
        if (t->pieces[id].type == TL_PIECE_BYTE) {
            if (d->nrun == d->run_cap) {
                size_t nc = d->run_cap ? 2 * d->run_cap : 16;
                unsigned char *r = realloc(d->run, nc);
                if (!r) return tl_fail(err, "out of memory in the streaming decoder");
                d->run = r;
                d->run_cap = nc;
            }
            d->run[d->nrun++] = (unsigned char)byte_value(&t->pieces[id]);
            return decoder_finish(d, &b, out, len, err);
        }
        flush_bytes_hf(&b, d->run, d->nrun);
        d->nrun = 0;
    }
    if (t->pieces[id].type == TL_PIECE_BYTE) {
        d->pending[d->npending++] = (unsigned char)byte_value(&t->pieces[id]);
        drain_pending(d, &b, 0);
        return decoder_finish(d, &b, out, len, err);
    }
    drain_pending(d, &b, 1);
    if (d->bos_ws_seen || !d->text_empty || b.n > 0) d->is_bos_ws = 0;
    d->bos_ws_seen = decode_piece(t, id, d->is_bos_ws, &b);
    return decoder_finish(d, &b, out, len, err);
}

int tl_decoder_flush(tl_decoder *d, const char **out, size_t *len, tl_error *err) {
    dbuf b = {d->buf, 0, d->cap, 0};
    drain_pending(d, &b, 1);
    flush_bytes_hf(&b, d->run, d->nrun);
    d->nrun = 0;
    return decoder_finish(d, &b, out, len, err);
}

/* bpe_train.c - learns a SentencePiece-style BPE vocabulary and writes a
 * standard ModelProto.
 *
 * Same setup as spm_train --model_type=bpe with Llama-style settings: lines are
 * normalized (identity; dummy-prefix U+2581, spaces -> U+2581, invalid UTF-8 ->
 * U+FFFD), split into words before each U+2581 (a run of U+2581 stays together
 * so whitespace-only pieces can be learned), characters kept by frequency up to
 * the character coverage (the rest can never merge), and candidate pieces
 * obey SentencePiece's validity rules (max length, whitespace only as a prefix
 * or whole piece, digits alone, one Unicode script per piece).  Unlike
 * spm_train, which rescans a sampled "active" subset of pairs, every step takes
 * the exact most frequent pair (ties: fewer characters, then bytewise smaller),
 * maintained incrementally with a lazy max-heap and per-pair word lists.
 *
 * Output: <unk>, <s>, </s>, <0x00>..<0xFF> (with byte fallback), the merged
 * pieces with scores 0, -1, -2, ..., then the kept characters by frequency. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

void tl_bpe_train_default_opts(tl_bpe_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->vocab_size = 8000;
    o->character_coverage = 0.9995;
    o->max_piece_length = 16;
    o->split_digits = 1;
    o->byte_fallback = 1;
    o->add_dummy_prefix = 1;
    o->allow_whitespace_only_pieces = 1;
    o->max_sentence_length = 4192;
}

/* ---------------------------------------------------------------- scripts */

enum { SC_ANY = -1, SC_COMMON = 0, SC_INHERITED = 1, SC_LATIN, SC_GREEK, SC_CYRILLIC, SC_ARMENIAN,
       SC_HEBREW, SC_ARABIC, SC_DEVANAGARI, SC_BENGALI, SC_TAMIL, SC_THAI, SC_HANGUL, SC_HAN,
       SC_GEORGIAN, SC_ETHIOPIC, SC_OTHER };

/* A compact approximation of Unicode's Script property for the scripts that
 * matter in practice; unlisted letters get a per-128-block pseudo script. */
static int script_of(uint32_t c) {
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return SC_LATIN;
        return SC_COMMON;
    }
    if (c == 0xAA || c == 0xBA) return SC_LATIN;
    if (c < 0xC0) return SC_COMMON;
    if (c == 0xD7 || c == 0xF7) return SC_COMMON;
    if (c < 0x250) return SC_LATIN;
    if (c < 0x2B0) return SC_LATIN; /* IPA */
    if (c < 0x300) return SC_COMMON; /* modifier letters (mostly Common) */
    if (c < 0x370) return SC_INHERITED;
    if (c < 0x400) return (c == 0x37E || c == 0x387) ? SC_COMMON : SC_GREEK;
    if (c < 0x530) return SC_CYRILLIC;
    if (c < 0x590) return SC_ARMENIAN;
    if (c < 0x600) return SC_HEBREW;
    if (c < 0x700) {
        if (c == 0x60C || c == 0x61B || c == 0x61F || c == 0x640) return SC_COMMON;
        if (c >= 0x64B && c <= 0x655) return SC_INHERITED;
        return SC_ARABIC;
    }
    if (c >= 0x750 && c < 0x780) return SC_ARABIC;
    if (c >= 0x900 && c < 0x980) return (c == 0x964 || c == 0x965) ? SC_COMMON : SC_DEVANAGARI;
    if (c >= 0x980 && c < 0xA00) return SC_BENGALI;
    if (c >= 0xB80 && c < 0xC00) return SC_TAMIL;
    if (c >= 0xE00 && c < 0xE80) return c == 0xE3F ? SC_COMMON : SC_THAI;
    if (c >= 0x10A0 && c < 0x1100) return SC_GEORGIAN;
    if (c >= 0x1100 && c < 0x1200) return SC_HANGUL;
    if (c >= 0x1200 && c < 0x13A0) return SC_ETHIOPIC;
    if (c >= 0x1AB0 && c < 0x1B00) return SC_INHERITED;
    if (c >= 0x1DC0 && c < 0x1E00) return SC_INHERITED;
    if (c >= 0x1E00 && c < 0x1F00) return SC_LATIN;
    if (c >= 0x1F00 && c < 0x2000) return SC_GREEK;
    if (c == 0x200C || c == 0x200D) return SC_INHERITED;
    if (c >= 0x20D0 && c < 0x2100) return SC_INHERITED;
    if (c >= 0x2000 && c < 0x2E80) return SC_COMMON; /* punctuation, symbols, arrows, math */
    if (c >= 0x2E80 && c < 0x2FE0) return SC_HAN;
    if (c >= 0x3000 && c < 0x3040) {
        if (c == 0x3005 || c == 0x3007 || (c >= 0x3021 && c <= 0x3029) || (c >= 0x3038 && c <= 0x303B))
            return SC_HAN;
        if (c >= 0x302A && c <= 0x302D) return SC_INHERITED;
        return SC_COMMON;
    }
    if (c >= 0x3040 && c < 0x3100) return SC_HAN; /* Hiragana/Katakana count as Han */
    if (c >= 0x3130 && c < 0x3190) return SC_HANGUL;
    if (c >= 0x31F0 && c < 0x3200) return SC_HAN;
    if (c >= 0x3400 && c < 0xA000) return SC_HAN;
    if (c >= 0xAC00 && c < 0xD7B0) return SC_HANGUL;
    if (c >= 0xF900 && c < 0xFB00) return SC_HAN;
    if (c >= 0xFE00 && c < 0xFE10) return SC_INHERITED;
    if (c >= 0xFE20 && c < 0xFE30) return SC_INHERITED;
    if (c >= 0xFF21 && c <= 0xFF3A) return SC_LATIN;
    if (c >= 0xFF41 && c <= 0xFF5A) return SC_LATIN;
    if (c >= 0xFF66 && c <= 0xFF9D) return SC_HAN;
    if (c >= 0xFFA0 && c < 0xFFE0) return SC_HANGUL;
    if (c >= 0xFB00 && c < 0xFFF0) return SC_COMMON;
    if (c >= 0x1F000 && c < 0x1FB00) return SC_COMMON; /* emoji and symbols */
    if (c >= 0xE0100 && c < 0xE01F0) return SC_INHERITED;
    if (c >= 0x20000 && c < 0x32000) return SC_HAN;
    return SC_OTHER + (int)(c >> 7);
}

#define WS_CHAR 0x2581u

static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (n > len) n = len;
    uint32_t v = n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < n; i++) v = v << 6 | (s[i] & 0x3F);
    *cp = v;
    return n;
}

/* SentencePiece's TrainerInterface::IsValidSentencePiece (split_by_whitespace,
 * split_by_unicode_script and split_by_number on, treat_whitespace_as_suffix off). */
static int valid_piece(const uint32_t *cps, int n, const tl_bpe_train_opts *o) {
    if (n <= 0 || n > o->max_piece_length) return 0;
    int all_ws = 1;
    for (int i = 0; i < n; i++)
        if (cps[i] != WS_CHAR) all_ws = 0;
    int prev = SC_ANY;
    for (int i = 0; i < n; i++) {
        uint32_t c = cps[i];
        if (c == 0 || c == 0x20 || c == 0x2047 || c == 0x2585) return 0;
        if (c == WS_CHAR) {
            if (!o->allow_whitespace_only_pieces || !all_ws) {
                if (i > 0) return 0;
            }
            continue;
        }
        int s = script_of(c);
        if (s == SC_INHERITED) s = prev;
        if (o->split_digits && c >= '0' && c <= '9' && n > 1) return 0;
        if (s != SC_ANY && prev != SC_ANY && prev != s) return 0;
        prev = s;
    }
    return 1;
}

/* ---------------------------------------------------------------- tables */

typedef struct {
    uint32_t off, len; /* bytes in the symbol pool */
    int nchars;
} bsym;

typedef struct {
    int a, b;
    int64_t freq;
    int valid;
    int *occ; /* word indices (may repeat; checked lazily) */
    int nocc, capocc;
    int touched;
} bpair;

typedef struct {
    int64_t freq;
    int pair;
} hent;

typedef struct {
    const tl_bpe_train_opts *o;
    /* symbols */
    bsym *syms;
    int nsyms, capsyms;
    char *pool;
    size_t pool_n, pool_cap;
    int32_t *sym_tab; /* string -> symbol, open addressing */
    uint32_t sym_mask;
    /* pairs */
    bpair *pairs;
    int npairs, cappairs;
    int32_t *pair_tab;
    uint32_t pair_mask;
    /* heap */
    hent *heap;
    size_t nheap, capheap;
    /* words */
    int *wsyms;
    size_t *woff;
    int *wlen;
    int64_t *wfreq;
    int nwords;
    int *wstamp;
    int unk_sym;
    /* pairs whose count changed since they were last pushed on the heap */
    int *touched;
    int ntouched, captouched;
} btrainer;

static int xgrow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap : 256;
    while (nc < need) {
        if (nc > (1 << 29)) return -1;
        nc *= 2;
    }
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static int rehash_syms(btrainer *bt) {
    uint32_t size = (bt->sym_mask + 1) * 2;
    if (size < 1024) size = 1024;
    int32_t *tab = malloc(size * sizeof *tab);
    if (!tab) return -1;
    for (uint32_t i = 0; i < size; i++) tab[i] = -1;
    for (int s = 0; s < bt->nsyms; s++) {
        uint32_t j = tl_tok_strhash(bt->pool + bt->syms[s].off, bt->syms[s].len) & (size - 1);
        while (tab[j] >= 0) j = (j + 1) & (size - 1);
        tab[j] = s;
    }
    free(bt->sym_tab);
    bt->sym_tab = tab;
    bt->sym_mask = size - 1;
    return 0;
}

/* Finds or adds the symbol for string s; *created tells which.  -1 on OOM. */
static int sym_get(btrainer *bt, const char *s, size_t len, int nchars, int *created) {
    if (created) *created = 0;
    if (!bt->sym_tab || (uint32_t)bt->nsyms * 2 >= bt->sym_mask)
        if (rehash_syms(bt)) return -1;
    uint32_t j = tl_tok_strhash(s, len) & bt->sym_mask;
    while (bt->sym_tab[j] >= 0) {
        const bsym *y = &bt->syms[bt->sym_tab[j]];
        if (y->len == len && memcmp(bt->pool + y->off, s, len) == 0) return bt->sym_tab[j];
        j = (j + 1) & bt->sym_mask;
    }
    if (xgrow((void **)&bt->syms, &bt->capsyms, bt->nsyms + 1, sizeof *bt->syms)) return -1;
    if (bt->pool_n + len > bt->pool_cap) {
        size_t nc = bt->pool_cap ? bt->pool_cap * 2 : 1 << 16;
        while (nc < bt->pool_n + len) nc *= 2;
        char *np = realloc(bt->pool, nc);
        if (!np) return -1;
        bt->pool = np;
        bt->pool_cap = nc;
    }
    memcpy(bt->pool + bt->pool_n, s, len);
    bsym *y = &bt->syms[bt->nsyms];
    y->off = (uint32_t)bt->pool_n;
    y->len = (uint32_t)len;
    y->nchars = nchars;
    bt->pool_n += len;
    bt->sym_tab[j] = bt->nsyms;
    if (created) *created = 1;
    return bt->nsyms++;
}

static int rehash_pairs(btrainer *bt) {
    uint32_t size = (bt->pair_mask + 1) * 2;
    if (size < 4096) size = 4096;
    int32_t *tab = malloc(size * sizeof *tab);
    if (!tab) return -1;
    for (uint32_t i = 0; i < size; i++) tab[i] = -1;
    for (int p = 0; p < bt->npairs; p++) {
        uint64_t key = (uint64_t)(uint32_t)bt->pairs[p].a << 32 | (uint32_t)bt->pairs[p].b;
        uint32_t j = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (size - 1);
        while (tab[j] >= 0) j = (j + 1) & (size - 1);
        tab[j] = p;
    }
    free(bt->pair_tab);
    bt->pair_tab = tab;
    bt->pair_mask = size - 1;
    return 0;
}

static int pair_is_valid(btrainer *bt, int a, int b) {
    if (a == bt->unk_sym || b == bt->unk_sym) return 0;
    const bsym *x = &bt->syms[a], *y = &bt->syms[b];
    int n = x->nchars + y->nchars;
    if (n > bt->o->max_piece_length) return 0;
    uint32_t cps[64];
    int k = 0;
    for (int side = 0; side < 2; side++) {
        const bsym *z = side ? y : x;
        const unsigned char *s = (const unsigned char *)bt->pool + z->off;
        size_t i = 0;
        while (i < z->len && k < 64) i += utf8_decode(s + i, z->len - i, &cps[k++]);
    }
    return valid_piece(cps, k, bt->o);
}

/* Finds or adds pair (a, b); -1 on OOM. */
static int pair_get(btrainer *bt, int a, int b) {
    if (!bt->pair_tab || (uint32_t)bt->npairs * 2 >= bt->pair_mask)
        if (rehash_pairs(bt)) return -1;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t j = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & bt->pair_mask;
    while (bt->pair_tab[j] >= 0) {
        const bpair *p = &bt->pairs[bt->pair_tab[j]];
        if (p->a == a && p->b == b) return bt->pair_tab[j];
        j = (j + 1) & bt->pair_mask;
    }
    if (xgrow((void **)&bt->pairs, &bt->cappairs, bt->npairs + 1, sizeof *bt->pairs)) return -1;
    bpair *p = &bt->pairs[bt->npairs];
    memset(p, 0, sizeof *p);
    p->a = a;
    p->b = b;
    p->valid = pair_is_valid(bt, a, b);
    bt->pair_tab[j] = bt->npairs;
    return bt->npairs++;
}

/* Heap order: higher freq; then fewer characters; then bytewise smaller string. */
static int concat_cmp(const btrainer *bt, const bpair *p, const bpair *q) {
    const bsym *pa = &bt->syms[p->a], *pb = &bt->syms[p->b];
    const bsym *qa = &bt->syms[q->a], *qb = &bt->syms[q->b];
    size_t lp = pa->len + pb->len, lq = qa->len + qb->len, n = lp < lq ? lp : lq;
    for (size_t i = 0; i < n; i++) {
        unsigned char c1 = (unsigned char)(i < pa->len ? bt->pool[pa->off + i] : bt->pool[pb->off + i - pa->len]);
        unsigned char c2 = (unsigned char)(i < qa->len ? bt->pool[qa->off + i] : bt->pool[qb->off + i - qa->len]);
        if (c1 != c2) return c1 < c2 ? -1 : 1;
    }
    return lp < lq ? -1 : lp > lq ? 1 : 0;
}

static int hbetter(const btrainer *bt, const hent *x, const hent *y) {
    if (x->freq != y->freq) return x->freq > y->freq;
    const bpair *p = &bt->pairs[x->pair], *q = &bt->pairs[y->pair];
    int np = bt->syms[p->a].nchars + bt->syms[p->b].nchars;
    int nq = bt->syms[q->a].nchars + bt->syms[q->b].nchars;
    if (np != nq) return np < nq;
    return concat_cmp(bt, p, q) < 0;
}

static int hpush(btrainer *bt, int64_t freq, int pair) {
    if (bt->nheap == bt->capheap) {
        size_t nc = bt->capheap ? bt->capheap * 2 : 4096;
        hent *nh = realloc(bt->heap, nc * sizeof *nh);
        if (!nh) return -1;
        bt->heap = nh;
        bt->capheap = nc;
    }
    hent e = {freq, pair};
    size_t i = bt->nheap++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!hbetter(bt, &e, &bt->heap[par])) break;
        bt->heap[i] = bt->heap[par];
        i = par;
    }
    bt->heap[i] = e;
    return 0;
}

static hent hpop(btrainer *bt) {
    hent top = bt->heap[0], last = bt->heap[--bt->nheap];
    size_t n = bt->nheap, i = 0;
    if (n == 0) return top;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const hent *bp = &last;
        if (l < n && hbetter(bt, &bt->heap[l], bp)) {
            best = l;
            bp = &bt->heap[l];
        }
        if (r < n && hbetter(bt, &bt->heap[r], bp)) best = r;
        if (best == i) break;
        bt->heap[i] = bt->heap[best];
        i = best;
    }
    bt->heap[i] = last;
    return top;
}

static int occ_add(bpair *p, int w) {
    if (p->nocc && p->occ[p->nocc - 1] == w) return 0;
    if (xgrow((void **)&p->occ, &p->capocc, p->nocc + 1, sizeof *p->occ)) return -1;
    p->occ[p->nocc++] = w;
    return 0;
}

/* Adds delta * freq(w) to every valid pair of word w; records touched pairs.
 * With add_occ, the word joins the occurrence list of pairs containing sym `only`
 * (or all pairs when only < 0). */
static int word_pairs(btrainer *bt, int w, int64_t delta, int only) {
    const int *s = bt->wsyms + bt->woff[w];
    int n = bt->wlen[w];
    for (int i = 0; i + 1 < n; i++) {
        int pi = pair_get(bt, s[i], s[i + 1]);
        if (pi < 0) return -1;
        bpair *p = &bt->pairs[pi];
        if (!p->valid) continue;
        p->freq += delta * bt->wfreq[w];
        if (delta > 0 && (only < 0 || s[i] == only || s[i + 1] == only) && occ_add(p, w)) return -1;
        if (!p->touched) {
            p->touched = 1;
            if (xgrow((void **)&bt->touched, &bt->captouched, bt->ntouched + 1, sizeof *bt->touched)) return -1;
            bt->touched[bt->ntouched++] = pi;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- corpus */

typedef struct {
    char *key;
    uint32_t len, hash;
    int64_t freq;
} wc_ent;

typedef struct {
    wc_ent *tab;
    uint32_t mask;
    size_t n;
} wcount;

static int wc_add(wcount *wc, const char *s, size_t len) {
    if (!wc->tab || wc->n * 2 >= wc->mask) {
        uint32_t size = wc->tab ? (wc->mask + 1) * 2 : 1 << 16;
        wc_ent *nt = calloc(size, sizeof *nt);
        if (!nt) return -1;
        if (wc->tab) {
            for (uint32_t i = 0; i <= wc->mask; i++) {
                if (!wc->tab[i].key) continue;
                uint32_t j = wc->tab[i].hash & (size - 1);
                while (nt[j].key) j = (j + 1) & (size - 1);
                nt[j] = wc->tab[i];
            }
            free(wc->tab);
        }
        wc->tab = nt;
        wc->mask = size - 1;
    }
    uint32_t h = tl_tok_strhash(s, len);
    uint32_t j = h & wc->mask;
    while (wc->tab[j].key) {
        if (wc->tab[j].hash == h && wc->tab[j].len == len && memcmp(wc->tab[j].key, s, len) == 0) {
            wc->tab[j].freq++;
            return 0;
        }
        j = (j + 1) & wc->mask;
    }
    char *k = malloc(len ? len : 1);
    if (!k) return -1;
    memcpy(k, s, len);
    wc->tab[j].key = k;
    wc->tab[j].len = (uint32_t)len;
    wc->tab[j].hash = h;
    wc->tab[j].freq = 1;
    wc->n++;
    return 0;
}

static const char kWS[] = "\xE2\x96\x81";

/* Normalizes one line (like the encoder with the trained model's settings) into
 * buf; returns its length. */
static size_t norm_line(const char *in, size_t len, char *buf, int dummy) {
    size_t n = 0;
    if (len == 0) return 0;
    if (dummy) {
        memcpy(buf, kWS, 3);
        n = 3;
    }
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ') {
            memcpy(buf + n, kWS, 3);
            n += 3;
            i++;
            continue;
        }
        if (c < 0x80) {
            buf[n++] = (char)c;
            i++;
            continue;
        }
        /* strict UTF-8 check, as in the encoder; invalid bytes -> U+FFFD */
        size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        int ok = need && i + need <= len;
        for (size_t k = 1; ok && k < need; k++)
            if (((unsigned char)in[i + k] & 0xC0) != 0x80) ok = 0;
        if (ok && need >= 3) {
            unsigned char s1 = (unsigned char)in[i + 1];
            if ((c == 0xE0 && s1 < 0xA0) || (c == 0xED && s1 > 0x9F) || (c == 0xF0 && s1 < 0x90) ||
                (c == 0xF4 && s1 > 0x8F))
                ok = 0;
        }
        if (ok) {
            memcpy(buf + n, in + i, need);
            n += need;
            i += need;
        } else {
            memcpy(buf + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i++;
        }
    }
    return n;
}

/* Splits a normalized line into words (SplitIntoWords with allow_ws_only_pieces). */
static int count_words(wcount *wc, const char *s, size_t n, int ws_runs) {
    size_t start = 0, i = 0;
    int in_ws = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t cl = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (cl > n - i) cl = n - i;
        int is_ws = cl == 3 && memcmp(s + i, kWS, 3) == 0;
        if (i == 0 || (is_ws && (!in_ws || !ws_runs))) {
            if (i > start && wc_add(wc, s + start, i - start)) return -1;
            start = i;
            in_ws = 1;
        }
        if (in_ws && !is_ws) in_ws = 0;
        i += cl;
    }
    if (n > start && wc_add(wc, s + start, n - start)) return -1;
    return 0;
}

typedef struct {
    uint32_t cp;
    int64_t count;
} chcount;

static int cmp_chcount(const void *a, const void *b) {
    const chcount *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->cp < y->cp ? -1 : x->cp > y->cp;
}

static void progress(const tl_bpe_train_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(const tl_bpe_train_opts *o, const char *fmt, ...) {
    if (!o->progress) return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->progress(o->progress_user, msg);
}

static void bt_free(btrainer *bt) {
    free(bt->syms);
    free(bt->pool);
    free(bt->sym_tab);
    for (int i = 0; i < bt->npairs; i++) free(bt->pairs[i].occ);
    free(bt->pairs);
    free(bt->pair_tab);
    free(bt->heap);
    free(bt->wsyms);
    free(bt->woff);
    free(bt->wlen);
    free(bt->wfreq);
    free(bt->wstamp);
    free(bt->touched);
}

/* ---------------------------------------------------------------- training steps */

typedef struct {
    size_t nlines, nskipped, nbytes;
} corpus_stats;

/* Step 1: counts the words of every line of the inputs (normalized as the
 * trained model will normalize them), up to max_sentences lines.  Lines over
 * max_sentence_length are skipped, as spm_train skips them. */
static int read_words(const char *const *inputs, size_t n_inputs, const tl_bpe_train_opts *o, wcount *wc,
                      corpus_stats *cs, tl_error *err) {
    size_t maxlen = o->max_sentence_length > 0 ? (size_t)o->max_sentence_length : 4192;
    /* normalizing grows a byte to at most 3 (a space or a bad byte: U+2581, U+FFFD) */
    char *nbuf = malloc(maxlen * 3 + 8);
    if (!nbuf) return tl_fail(err, "out of memory");
    int rc = 0;
    for (size_t f = 0; f < n_inputs && !rc; f++) {
        char *data;
        size_t len;
        if (tl_read_file(inputs[f], (size_t)1 << 34, &data, &len, err)) {
            rc = -1;
            break;
        }
        size_t a = 0;
        while (a < len) {
            const char *nl = memchr(data + a, '\n', len - a);
            size_t b = nl ? (size_t)(nl - data) : len;
            size_t ll = b - a;
            if (ll > maxlen) {
                cs->nskipped++;
            } else if (ll > 0 && (!o->max_sentences || cs->nlines < o->max_sentences)) {
                size_t nn = norm_line(data + a, ll, nbuf, o->add_dummy_prefix);
                if (count_words(wc, nbuf, nn, o->allow_whitespace_only_pieces)) {
                    rc = tl_fail(err, "out of memory counting words");
                    break;
                }
                cs->nlines++;
                cs->nbytes += ll;
            }
            a = b + 1;
        }
        free(data);
    }
    free(nbuf);
    if (!rc && wc->n == 0) rc = tl_fail(err, "no training text in the input files");
    return rc;
}

/* Step 2: the distinct characters of the words and how often each occurs,
 * most frequent first (sorted by cmp_chcount), and the total.  At most 32k
 * distinct characters are counted; rarer ones beyond that are left out. */
static int count_chars(const wcount *wc, chcount **chars_out, size_t *nch_out, int64_t *all_out, tl_error *err) {
    size_t nch = 0, capch = 1024;
    chcount *chars = malloc(capch * sizeof *chars);
    uint32_t ch_mask = (1 << 16) - 1;
    int32_t *ch_tab = malloc((ch_mask + 1) * sizeof *ch_tab);
    if (!chars || !ch_tab) goto oom;
    for (uint32_t i = 0; i <= ch_mask; i++) ch_tab[i] = -1;
    int64_t all_chars = 0;
    for (uint32_t i = 0; i <= wc->mask; i++) {
        const wc_ent *e = &wc->tab[i];
        if (!e->key) continue;
        size_t k = 0;
        while (k < e->len) {
            uint32_t cp;
            k += utf8_decode((const unsigned char *)e->key + k, e->len - k, &cp);
            if (cp == 0) continue;
            uint32_t j = (cp * 2654435761u) & ch_mask;
            while (ch_tab[j] >= 0 && chars[ch_tab[j]].cp != cp) j = (j + 1) & ch_mask;
            if (ch_tab[j] < 0) {
                if (nch == capch || nch * 2 > ch_mask) {
                    /* keep it simple: 32k distinct characters at most */
                    if (nch * 2 > ch_mask) continue;
                    capch *= 2;
                    chcount *nc = realloc(chars, capch * sizeof *nc);
                    if (!nc) goto oom;
                    chars = nc;
                }
                chars[nch].cp = cp;
                chars[nch].count = 0;
                ch_tab[j] = (int32_t)nch++;
            }
            chars[ch_tab[j]].count += e->freq;
            all_chars += e->freq;
        }
    }
    free(ch_tab);
    qsort(chars, nch, sizeof *chars, cmp_chcount);
    *chars_out = chars;
    *nch_out = nch;
    *all_out = all_chars;
    return 0;
oom:
    free(chars);
    free(ch_tab);
    return tl_fail(err, "out of memory");
}

/* How many of the most frequent characters it takes to cover the share
 * `coverage` of all character occurrences (*covered: their occurrences). */
static size_t covered_chars(const chcount *chars, size_t nch, int64_t all_chars, double coverage, int64_t *covered) {
    size_t nreq = 0;
    int64_t acc = 0;
    while (nreq < nch) {
        double cov = all_chars ? (double)acc / (double)all_chars : 1.0;
        if (cov >= coverage) break;
        acc += chars[nreq].count;
        nreq++;
    }
    *covered = acc;
    return nreq;
}

/* UTF-8 bytes of code point c into u; returns their number. */
static size_t utf8_encode(uint32_t c, char u[4]) {
    if (c < 0x80) {
        u[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        u[0] = (char)(0xC0 | c >> 6);
        u[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        u[0] = (char)(0xE0 | c >> 12);
        u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    u[0] = (char)(0xF0 | c >> 18);
    u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    u[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Step 3: the kept characters become symbols 0..nreq-1 (so the model can list
 * them by frequency at the end), then one symbol stands for every other
 * character: it never forms a valid pair, so those characters never merge. */
static int add_char_symbols(btrainer *bt, const chcount *chars, size_t nreq, tl_error *err) {
    for (size_t i = 0; i < nreq; i++) {
        char u[4];
        size_t l = utf8_encode(chars[i].cp, u);
        if (sym_get(bt, u, l, 1, NULL) < 0) return tl_fail(err, "out of memory");
    }
    bt->unk_sym = sym_get(bt, "\x01<unk-char>", 11, 1, NULL);
    if (bt->unk_sym < 0) return tl_fail(err, "out of memory");
    return 0;
}

/* The symbol for s[0..len), or -1 if there is none (lookup only). */
static int sym_find(const btrainer *bt, const char *s, size_t len) {
    uint32_t j = tl_tok_strhash(s, len) & bt->sym_mask;
    while (bt->sym_tab[j] >= 0) {
        const bsym *y = &bt->syms[bt->sym_tab[j]];
        if (y->len == len && memcmp(bt->pool + y->off, s, len) == 0) return bt->sym_tab[j];
        j = (j + 1) & bt->sym_mask;
    }
    return -1;
}

/* Step 3, continued: every counted word becomes a sequence of character
 * symbols in bt (wsyms/woff/wlen/wfreq).  The word table is consumed: its keys
 * are freed as they are converted, so the two never peak together. */
static int load_words(btrainer *bt, wcount *wc, tl_error *err) {
    size_t total_syms = 0;
    for (uint32_t i = 0; i <= wc->mask; i++)
        if (wc->tab[i].key) total_syms += wc->tab[i].len;
    bt->nwords = (int)wc->n;
    bt->wsyms = malloc((total_syms + 1) * sizeof *bt->wsyms);
    bt->woff = malloc(wc->n * sizeof *bt->woff);
    bt->wlen = malloc(wc->n * sizeof *bt->wlen);
    bt->wfreq = malloc(wc->n * sizeof *bt->wfreq);
    bt->wstamp = calloc(wc->n, sizeof *bt->wstamp);
    if (!bt->wsyms || !bt->woff || !bt->wlen || !bt->wfreq || !bt->wstamp) return tl_fail(err, "out of memory");
    size_t off = 0;
    int w = 0;
    for (uint32_t i = 0; i <= wc->mask; i++) {
        wc_ent *e = &wc->tab[i];
        if (!e->key) continue;
        bt->woff[w] = off;
        bt->wfreq[w] = e->freq;
        int n = 0;
        size_t k = 0;
        while (k < e->len) {
            uint32_t cp;
            size_t cl = utf8_decode((const unsigned char *)e->key + k, e->len - k, &cp);
            int sid = cp != 0 ? sym_find(bt, e->key + k, cl) : -1;
            bt->wsyms[off + (size_t)n++] = sid >= 0 ? sid : bt->unk_sym;
            k += cl;
        }
        bt->wlen[w] = n;
        off += (size_t)n;
        free(e->key);
        e->key = NULL;
        w++;
    }
    free(wc->tab);
    wc->tab = NULL;
    return 0;
}

/* Puts every touched pair that still occurs on the heap with its new count
 * (older heap entries of the pair become stale and are skipped when popped). */
static int push_touched(btrainer *bt) {
    for (int k = 0; k < bt->ntouched; k++) {
        bpair *p = &bt->pairs[bt->touched[k]];
        p->touched = 0;
        if (p->freq > 0 && hpush(bt, p->freq, bt->touched[k])) return -1;
    }
    bt->ntouched = 0;
    return 0;
}

/* Step 4: the initial count of every pair of adjacent symbols, and the heap. */
static int count_pairs(btrainer *bt, tl_error *err) {
    for (int w = 0; w < bt->nwords; w++)
        if (word_pairs(bt, w, 1, -1)) return tl_fail(err, "out of memory");
    if (push_touched(bt)) return tl_fail(err, "out of memory");
    return 0;
}

/* Replaces each pair (a, b) by c in the words of occ, the words that had the
 * pair when they were listed (a word may be listed twice, or have lost the
 * pair since: stamp marks the words done in this merge).  The old pairs of
 * a changed word are uncounted and its new ones counted. */
static int merge_in_words(btrainer *bt, const int *occ, int nocc, int a, int b, int c, int stamp) {
    for (int k = 0; k < nocc; k++) {
        int w = occ[k];
        if (bt->wstamp[w] == stamp) continue;
        bt->wstamp[w] = stamp;
        int *s = bt->wsyms + bt->woff[w];
        int n = bt->wlen[w], has = 0;
        for (int i = 0; i + 1 < n; i++)
            if (s[i] == a && s[i + 1] == b) {
                has = 1;
                break;
            }
        if (!has) continue;
        if (word_pairs(bt, w, -1, -1)) return -1;
        int o2 = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                s[o2++] = c;
                i += 2;
            } else {
                s[o2++] = s[i++];
            }
        }
        bt->wlen[w] = o2;
        if (word_pairs(bt, w, 1, c)) return -1;
    }
    return 0;
}

/* Step 5: up to target merges, each of the most frequent valid pair; the new
 * symbols go to merged in order (their rank).  Fewer than target when the
 * pairs run out: the caller reports that. */
static int merge_pairs(btrainer *bt, int target, int *merged, int *nmerged, double t0, tl_error *err) {
    const tl_bpe_train_opts *o = bt->o;
    int stamp = 0;
    double last_report = tl_now();
    *nmerged = 0;
    while (*nmerged < target) {
        if (bt->nheap == 0) break;
        hent top = hpop(bt);
        bpair *bp = &bt->pairs[top.pair];
        if (bp->freq != top.freq || bp->freq <= 0) continue; /* a stale entry */
        int a = bp->a, b = bp->b;
        char tmp[64 * 4];
        size_t la = bt->syms[a].len, lb = bt->syms[b].len;
        memcpy(tmp, bt->pool + bt->syms[a].off, la);
        memcpy(tmp + la, bt->pool + bt->syms[b].off, lb);
        int created;
        int c = sym_get(bt, tmp, la + lb, bt->syms[a].nchars + bt->syms[b].nchars, &created);
        if (c < 0) return tl_fail(err, "out of memory");
        if (created) merged[(*nmerged)++] = c;
        stamp++;
        /* the pair's word list is taken: words that get the pair again re-list themselves */
        bp = &bt->pairs[top.pair];
        int nocc = bp->nocc;
        int *occ = bp->occ;
        bp->occ = NULL;
        bp->nocc = bp->capocc = 0;
        int failed = merge_in_words(bt, occ, nocc, a, b, c, stamp) || push_touched(bt);
        free(occ);
        if (failed) return tl_fail(err, "out of memory while merging");
        if (o->progress && (tl_now() - last_report > 2.0 || *nmerged == target)) {
            last_report = tl_now();
            progress(o, "merge %d/%d: '%.*s' (frequency %lld), %.1f s", *nmerged, target, (int)(la + lb), tmp,
                     (long long)top.freq, tl_now() - t0);
        }
    }
    return 0;
}

/* Step 6: the pieces (specials, bytes, merges by rank, then the kept
 * characters by frequency) as a ModelProto, checked to load, written
 * atomically to out_path.  *total: the number of pieces. */
static int write_model(const btrainer *bt, const int *merged, int nmerged, size_t nreq, int n_meta,
                       const char *out_path, int *total, tl_error *err) {
    const tl_bpe_train_opts *o = bt->o;
    *total = n_meta + nmerged + (int)nreq;
    tl_piece_src *out = calloc((size_t)*total, sizeof *out);
    char *bytes_pool = malloc(256 * 7);
    unsigned char *model = NULL;
    int rc = -1;
    if (!out || !bytes_pool) {
        tl_fail(err, "out of memory");
        goto done;
    }
    int k = 0;
    out[k++] = (tl_piece_src){"<unk>", 5, 0.0f, TL_PIECE_UNKNOWN};
    out[k++] = (tl_piece_src){"<s>", 3, 0.0f, TL_PIECE_CONTROL};
    out[k++] = (tl_piece_src){"</s>", 4, 0.0f, TL_PIECE_CONTROL};
    if (o->byte_fallback)
        for (int b = 0; b < 256; b++) {
            snprintf(bytes_pool + 7 * b, 7, "<0x%02X>", b);
            out[k++] = (tl_piece_src){bytes_pool + 7 * b, 6, 0.0f, TL_PIECE_BYTE};
        }
    int rank = 0;
    for (int i = 0; i < nmerged; i++, rank++)
        out[k++] = (tl_piece_src){bt->pool + bt->syms[merged[i]].off, bt->syms[merged[i]].len, -(float)rank,
                                  TL_PIECE_NORMAL};
    for (size_t i = 0; i < nreq; i++, rank++)
        out[k++] = (tl_piece_src){bt->pool + bt->syms[i].off, bt->syms[i].len, -(float)rank, TL_PIECE_NORMAL};
    tl_spm_write_opts wo = {o->vocab_size, o->byte_fallback, o->split_digits, o->add_dummy_prefix,
                            o->allow_whitespace_only_pieces, o->max_piece_length, o->character_coverage};
    size_t mlen;
    if (tl_spm_serialize(out, *total, &wo, &model, &mlen, err)) goto done;
    /* self-check: the bytes load as a tokenizer */
    tl_tokenizer *chk = tl_tokenizer_load_model_bytes(model, mlen, out_path, err);
    if (!chk) {
        tl_wrap(err, "internal error: the trained model does not load");
        goto done;
    }
    tl_tokenizer_free(chk);
    if (tl_write_file_atomic(out_path, model, mlen, err)) goto done;
    rc = 0;
done:
    free(out);
    free(bytes_pool);
    free(model);
    return rc;
}

int tl_bpe_train(const char *const *inputs, size_t n_inputs, const tl_bpe_train_opts *o,
                 const char *out_path, tl_error *err) {
    const int n_meta = 3 + (o->byte_fallback ? 256 : 0);
    if (o->vocab_size <= n_meta + 1)
        return tl_fail(err, "vocab size %d is too small (at least %d)", o->vocab_size, n_meta + 2);
    if (o->character_coverage <= 0 || o->character_coverage > 1)
        return tl_fail(err, "character coverage must be in (0, 1]");
    if (o->max_piece_length < 1 || o->max_piece_length > 64)
        return tl_fail(err, "max piece length must be in [1, 64]");
    double t0 = tl_now();
    wcount wc = {0};
    btrainer bt;
    memset(&bt, 0, sizeof bt);
    bt.o = o;
    int rc = -1;
    chcount *chars = NULL;
    int *merged = NULL;

    /* 1. words and their counts */
    corpus_stats cs = {0};
    if (read_words(inputs, n_inputs, o, &wc, &cs, err)) goto done;
    progress(o, "read %zu lines (%zu bytes, %zu too long skipped), %zu distinct words, %.1f s", cs.nlines,
             cs.nbytes, cs.nskipped, wc.n, tl_now() - t0);

    /* 2. character coverage */
    size_t nch = 0;
    int64_t all_chars = 0, acc;
    if (count_chars(&wc, &chars, &nch, &all_chars, err)) goto done;
    size_t nreq = covered_chars(chars, nch, all_chars, o->character_coverage, &acc);
    int target = o->vocab_size - n_meta - (int)nreq;
    if (target < 0) {
        tl_fail(err, "vocab size %d is smaller than the %d special pieces plus %zu required characters",
                o->vocab_size, n_meta, nreq);
        goto done;
    }
    progress(o, "%zu characters, %zu kept (coverage %.4f); learning %d merges", nch, nreq,
             all_chars ? (double)acc / (double)all_chars : 1.0, target);

    /* 3. symbols: required characters first, one UNK symbol for the rest; words as symbol sequences */
    if (add_char_symbols(&bt, chars, nreq, err) || load_words(&bt, &wc, err)) goto done;

    /* 4. initial pair counts */
    if (count_pairs(&bt, err)) goto done;

    /* 5. merges */
    merged = malloc(((size_t)target + 1) * sizeof *merged);
    if (!merged) {
        tl_fail(err, "out of memory");
        goto done;
    }
    int nmerged;
    if (merge_pairs(&bt, target, merged, &nmerged, t0, err)) goto done;
    if (nmerged < target) {
        tl_fail(err,
                "vocab size %d is too large for this corpus: only %d merges possible "
                "(%d specials + %zu characters); use a smaller --vocab-size",
                o->vocab_size, nmerged, n_meta, nreq);
        goto done;
    }

    /* 6. the model */
    int total;
    if (write_model(&bt, merged, nmerged, nreq, n_meta, out_path, &total, err)) goto done;
    progress(o, "wrote %s: %d pieces (%d merges, %zu characters), %.1f s", out_path, total, nmerged, nreq,
             tl_now() - t0);
    rc = 0;
done:
    if (wc.tab) {
        for (uint32_t i = 0; i <= wc.mask; i++) free(wc.tab[i].key);
        free(wc.tab);
    }
    free(chars);
    free(merged);
    bt_free(&bt);
    return rc;
}

/* prepare_wcache.c - prepare's tokenize step (prepare.c): segments are encoded
 * whole, or word by word through a word cache. */
#include "prepare_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ word cache
 *
 * With SentencePiece's identity normalizer, escaped whitespace and a vocabulary
 * in which U+2581 only ever appears as a leading run of a piece (Llama's), no
 * merge can join a character to a following space: the text splits into
 * "words" before every space that follows something other than a space, and
 * each word's ids do not depend on its neighbours.  Natural text repeats its
 * words, so a table word -> ids is shared by the threads.  A word other than
 * the first of a segment is encoded as "\n" + word with the newline's ids
 * removed (so a leading space is not taken for the dummy prefix).
 *
 * Per batch: (A) in parallel, each segment's ids are assembled from the table,
 * with a marker where a word is missing (each thread collects its missing
 * words, once each); (B) all missing words are encoded in one parallel
 * tl_tokenizer_encode_batch call and added to the table; (C) in parallel, the
 * markers are replaced by those ids.  The table only changes the speed: ids
 * are the same as encoding each segment whole, which is re-checked on a sample
 * of segments (and checked in full by the tests). */

#define WC_MAX_WORD 64

static int wt_init(wtable *t, int slot_bits, size_t arena) {
    memset(t, 0, sizeof *t);
    t->slots = calloc((size_t)1 << slot_bits, sizeof *t->slots);
    t->keys = malloc(arena);
    t->vals = malloc(arena * sizeof *t->vals);
    t->mask = ((size_t)1 << slot_bits) - 1;
    t->max_used = (t->mask + 1) / 10 * 7;
    t->kcap = t->vcap = arena;
    if (t->slots && t->keys && t->vals) return 0;
    free(t->slots);
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
    return -1;
}

static void wt_free(wtable *t) {
    free(t->slots);
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

static void wt_clear(wtable *t) {
    if (t->used) memset(t->slots, 0, (t->mask + 1) * sizeof *t->slots);
    t->used = t->kn = t->vn = 0;
}

/* Keys are (word, first): klen holds the length and, in bit 15, whether the
 * word starts a segment (its ids then include the dummy prefix). */
#define WC_FIRST 0x8000u

static const wc_slot *wt_find(const wtable *t, uint64_t h, const char *w, unsigned klen) {
    if (!t->slots) return NULL;
    for (size_t j = (size_t)(h >> 20) & t->mask;; j = (j + 1) & t->mask) {
        const wc_slot *sl = &t->slots[j];
        if (!sl->h) return NULL;
        if (sl->h == h && sl->klen == klen && !memcmp(t->keys + sl->koff, w, klen & ~WC_FIRST)) return sl;
    }
}

/* Adds an entry that is not there; 0 if added, -1 if the table is full. */
static int wt_add(wtable *t, uint64_t h, const char *w, unsigned klen, const int *ids, size_t k) {
    size_t n = klen & ~WC_FIRST;
    if (!t->slots || t->used >= t->max_used || t->kn + n > t->kcap || t->vn + k > t->vcap || k > 0xffff) return -1;
    size_t j = (size_t)(h >> 20) & t->mask;
    while (t->slots[j].h) j = (j + 1) & t->mask;
    wc_slot *sl = &t->slots[j];
    sl->h = h;
    sl->koff = (uint32_t)t->kn;
    sl->klen = (uint16_t)klen;
    sl->voff = (uint32_t)t->vn;
    sl->vlen = (uint16_t)k;
    memcpy(t->keys + t->kn, w, n);
    if (k) memcpy(t->vals + t->vn, ids, k * sizeof *ids);
    t->kn += n;
    t->vn += k;
    t->used++;
    return 0;
}

typedef struct {
    const char *w;
    uint32_t n;
    int first;
} miss_word;

typedef struct {
    uint32_t tid, idx; /* missing word idx of thread tid */
} miss_ref;

/* A thread's state for phase A: its missing words (and an index of them), output buffers. */
struct wcache {
    wtable seen; /* (word, first) -> index in miss (kept in the slot's voff) */
    miss_word *miss;
    size_t n_miss, miss_cap;
    int *out;
    size_t out_n, out_cap;
    miss_ref *refs;
    size_t n_refs, refs_cap;
};

static void wc_free(struct wcache *c) {
    wt_free(&c->seen);
    free(c->miss);
    free(c->out);
    free(c->refs);
    memset(c, 0, sizeof *c);
}

static int wc_out(struct wcache *c, const int *ids, size_t n) {
    if (c->out_n + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_n + n) cap *= 2;
        int *o = realloc(c->out, cap * sizeof *o);
        if (!o) return -1;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_n, ids, n * sizeof *ids);
    c->out_n += n;
    return 0;
}

/* Phase A for one word: its ids, or a marker -(k+1) for the segment's k-th missing word. */
static int wc_word(const prep *P, struct wcache *c, int tid, const char *w, size_t n, uint64_t h, int first) {
    unsigned klen = (unsigned)n | (first ? WC_FIRST : 0);
    int cacheable = n <= WC_MAX_WORD;
    size_t idx = SIZE_MAX;
    if (cacheable) {
        const wc_slot *sl = wt_find(&P->shared, h, w, klen);
        if (sl) return wc_out(c, P->shared.vals + sl->voff, sl->vlen);
        sl = wt_find(&c->seen, h, w, klen);
        if (sl) idx = sl->voff;
    }
    if (idx == SIZE_MAX) { /* a new missing word */
        if (c->n_miss == c->miss_cap) {
            size_t cap = c->miss_cap ? 2 * c->miss_cap : 1024;
            miss_word *m = realloc(c->miss, cap * sizeof *m);
            if (!m) return -1;
            c->miss = m;
            c->miss_cap = cap;
        }
        idx = c->n_miss++;
        c->miss[idx] = (miss_word){w, (uint32_t)n, first};
        if (cacheable && (c->seen.slots || !wt_init(&c->seen, 17, 1 << 20)) &&
            !wt_add(&c->seen, h, w, klen, NULL, 0)) {
            wc_slot *sl = (wc_slot *)wt_find(&c->seen, h, w, klen);
            sl->voff = (uint32_t)idx;
        }
    }
    if (c->n_refs == c->refs_cap) {
        size_t cap = c->refs_cap ? 2 * c->refs_cap : 256;
        miss_ref *r = realloc(c->refs, cap * sizeof *r);
        if (!r) return -1;
        c->refs = r;
        c->refs_cap = cap;
    }
    c->refs[c->n_refs] = (miss_ref){(uint32_t)tid, (uint32_t)idx};
    int marker = -(int)c->n_refs - 1;
    c->n_refs++;
    return wc_out(c, &marker, 1);
}

#define FNV_OFF 0xcbf29ce484222325ULL
#define FNV_MUL 0x100000001b3ULL

/* Phase A for one segment: *ids (malloc'ed) with markers, *refs the missing words they stand for. */
static int wc_segment(const prep *P, struct wcache *c, int tid, const char *s, size_t n, int **ids, size_t *nids,
                      miss_ref **refs, size_t *nrefs) {
    c->out_n = 0;
    c->n_refs = 0;
    size_t start = 0;
    uint64_t h = FNV_OFF ^ 1; /* the first word is keyed apart: it gets the dummy prefix */
    for (size_t i = 0; i <= n; i++) {
        if (i > start && (i == n || (s[i] == ' ' && s[i - 1] != ' ' &&
                                     !(i >= 3 && (unsigned char)s[i - 3] == 0xE2 &&
                                       (unsigned char)s[i - 2] == 0x96 && (unsigned char)s[i - 1] == 0x81)))) {
            if (wc_word(P, c, tid, s + start, i - start, h | 1, start == 0)) return -1;
            start = i;
            h = FNV_OFF;
        }
        if (i < n) h = (h ^ (unsigned char)s[i]) * FNV_MUL;
    }
    *ids = malloc((c->out_n ? c->out_n : 1) * sizeof **ids);
    *refs = c->n_refs ? malloc(c->n_refs * sizeof **refs) : NULL;
    if (!*ids || (c->n_refs && !*refs)) return -1;
    memcpy(*ids, c->out, c->out_n * sizeof **ids);
    if (c->n_refs) memcpy(*refs, c->refs, c->n_refs * sizeof **refs);
    *nids = c->out_n;
    *nrefs = c->n_refs;
    return 0;
}

/* The per-thread caches (P->nt of them), allocated only when words are cached. */
int tl_prep_wcache_new(prep *P) {
    P->caches = calloc((size_t)P->nt, sizeof *P->caches);
    return P->caches ? 0 : -1;
}

void tl_prep_wcache_free(prep *P) {
    for (int i = 0; P->caches && i < P->nt; i++) wc_free(&P->caches[i]);
    wt_free(&P->shared);
    free(P->caches);
}

/* Can words be encoded one by one?  (see above) */
int tl_prep_word_separable(const tl_tokenizer *t) {
    tl_tokenizer_info info;
    tl_tokenizer_get_info(t, &info);
    if (strcmp(info.format, "sentencepiece") || !info.add_dummy_prefix || !info.escape_whitespaces ||
        info.remove_extra_whitespaces || !info.byte_fallback || info.n_user_defined ||
        !info.normalizer_name || strcmp(info.normalizer_name, "identity"))
        return 0;
    for (int id = 0; id < tl_tokenizer_vocab_size(t); id++) {
        const char *p = tl_tokenizer_piece(t, id);
        if (!p) return 0;
        size_t i = 0;
        while (!strncmp(p + i, "\xE2\x96\x81", 3)) i += 3;
        if (strstr(p + i, "\xE2\x96\x81")) return 0;
    }
    return 1;
}

/* One batch's word-by-word state between the phases. */
typedef struct {
    size_t total;            /* segments */
    miss_ref **refs;         /* per segment: the missing words its markers stand for */
    size_t *nrefs;
    size_t *base;            /* thread t's missing words have the global indices base[t].. */
    size_t n_miss, n_uniq;   /* missing words over all threads; distinct ones */
    size_t *alias;           /* global index -> distinct word */
    const miss_word **usrc;  /* distinct word -> its text and kind */
    uint64_t *uhash;
    const char **mt;         /* the texts encoded for the distinct words ... */
    size_t *ml;
    int **mids;              /* ... and their ids (the newline's ids removed) */
    size_t *mn;
    char *arena;             /* the "\n" + word texts */
} wt_batch;

/* Phase A (parallel): each segment's ids from the shared table, with a marker
 * -(k+1) for its k-th missing word; each thread lists its missing words. */
static int wc_lookup_segments(prep *P, batch *b, wt_batch *W) {
    int failed = 0;
#pragma omp parallel num_threads(P->nt)
    {
        int tid = omp_get_thread_num();
        struct wcache *c = &P->caches[tid];
#pragma omp for schedule(dynamic, 4)
        for (size_t i = 0; i < W->total; i++) {
            if (wc_segment(P, c, tid, b->texts[i], b->lens[i], &b->ids[i], &b->nids[i], &W->refs[i], &W->nrefs[i])) {
#pragma omp atomic write
                failed = 1;
            }
        }
    }
    return failed ? -1 : 0;
}

/* Phase B, first half: numbers the threads' missing words globally and keeps
 * one entry per distinct (word, first) - two threads may both have missed a
 * word - with the text to encode: the word itself for a segment's first word,
 * else "\n" + word (so a leading space is not taken for the dummy prefix). */
static int wc_gather_missing(const prep *P, wt_batch *W) {
    W->base = calloc((size_t)P->nt + 1, sizeof *W->base);
    if (!W->base) return -1;
    size_t arena_len = 0;
    for (int t = 0; t < P->nt; t++) {
        W->base[t + 1] = W->base[t] + P->caches[t].n_miss;
        for (size_t k = 0; k < P->caches[t].n_miss; k++) arena_len += P->caches[t].miss[k].n + 1;
    }
    size_t n_miss = W->n_miss = W->base[P->nt];
    if (!n_miss) return 0;
    W->alias = malloc(n_miss * sizeof *W->alias);
    W->usrc = malloc(n_miss * sizeof *W->usrc);
    W->uhash = malloc(n_miss * sizeof *W->uhash);
    W->mt = malloc(n_miss * sizeof *W->mt);
    W->ml = malloc(n_miss * sizeof *W->ml);
    W->mids = calloc(n_miss, sizeof *W->mids);
    W->mn = calloc(n_miss, sizeof *W->mn);
    W->arena = malloc(arena_len);
    if (!W->alias || !W->usrc || !W->uhash || !W->mt || !W->ml || !W->mids || !W->mn || !W->arena) return -1;
    int bits = 10;
    while (((size_t)1 << bits) < 2 * n_miss) bits++;
    wtable uniq;
    int have_uniq = !wt_init(&uniq, bits, arena_len + 1); /* without it: duplicates are encoded twice */
    size_t ap = 0;
    for (int t = 0; t < P->nt; t++)
        for (size_t k = 0; k < P->caches[t].n_miss; k++) {
            const miss_word *m = &P->caches[t].miss[k];
            size_t g = W->base[t] + k;
            unsigned klen = m->n | (m->first ? WC_FIRST : 0);
            uint64_t h = FNV_OFF ^ (uint64_t)m->first;
            for (uint32_t q = 0; q < m->n; q++) h = (h ^ (unsigned char)m->w[q]) * FNV_MUL;
            h |= 1;
            int keyed = have_uniq && m->n <= WC_MAX_WORD;
            const wc_slot *sl = keyed ? wt_find(&uniq, h, m->w, klen) : NULL;
            if (sl) {
                W->alias[g] = sl->voff;
                continue;
            }
            size_t u = W->n_uniq++;
            W->alias[g] = u;
            W->usrc[u] = m;
            W->uhash[u] = h;
            if (keyed && !wt_add(&uniq, h, m->w, klen, NULL, 0))
                ((wc_slot *)wt_find(&uniq, h, m->w, klen))->voff = (uint32_t)u;
            if (m->first) {
                W->mt[u] = m->w;
                W->ml[u] = m->n;
            } else { /* "\n" + word; the newline's ids are removed after encoding */
                W->arena[ap] = '\n';
                memcpy(W->arena + ap + 1, m->w, m->n);
                W->mt[u] = W->arena + ap;
                W->ml[u] = m->n + 1;
                ap += m->n + 1;
            }
        }
    if (have_uniq) wt_free(&uniq);
    return 0;
}

/* Phase B, second half: encodes the distinct missing words in one parallel
 * call, strips the newline ids, and adds the words to the shared table for
 * later batches. */
static int wc_encode_missing(prep *P, wt_batch *W, tl_error *err) {
    if (tl_tokenizer_encode_batch(P->tok, W->mt, W->ml, W->n_uniq, 0, P->nt, W->mids, W->mn, err)) return -1;
    for (size_t u = 0; u < W->n_uniq; u++) {
        const miss_word *m = W->usrc[u];
        int *ids = W->mids[u];
        if (!m->first) {
            if (W->mn[u] < (size_t)P->n_nl || memcmp(ids, P->nl_ids, sizeof(int) * (size_t)P->n_nl))
                return tl_fail(err, "internal error: a word after a newline did not start with the newline's ids");
            memmove(ids, ids + P->n_nl, (W->mn[u] - (size_t)P->n_nl) * sizeof(int));
            W->mn[u] -= (size_t)P->n_nl;
        }
        if (m->n > WC_MAX_WORD) continue;
        unsigned klen = m->n | (m->first ? WC_FIRST : 0);
        if (!P->shared.slots && wt_init(&P->shared, 18, (size_t)1 << 22)) continue; /* no table: slower */
        if (wt_find(&P->shared, W->uhash[u], m->w, klen)) continue;
        if (wt_add(&P->shared, W->uhash[u], m->w, klen, ids, W->mn[u])) {
            wt_clear(&P->shared); /* full: start over (only the speed depends on it) */
            wt_add(&P->shared, W->uhash[u], m->w, klen, ids, W->mn[u]);
        }
    }
    return 0;
}

/* Phase C for segment i: its markers replaced by the missing words' ids. */
static int wc_fill_segment(const wt_batch *W, batch *b, size_t i, tl_error *e) {
    if (!W->nrefs[i]) return 0;
    size_t len = 0;
    for (size_t j = 0; j < b->nids[i]; j++) {
        int v = b->ids[i][j];
        if (v >= 0) len++;
        else {
            const miss_ref *mr = &W->refs[i][-v - 1];
            len += W->mn[W->alias[W->base[mr->tid] + mr->idx]];
        }
    }
    int *out = malloc((len ? len : 1) * sizeof *out);
    if (!out) return tl_fail(e, "out of memory");
    size_t o = 0;
    for (size_t j = 0; j < b->nids[i]; j++) {
        int v = b->ids[i][j];
        if (v >= 0) out[o++] = v;
        else {
            const miss_ref *mr = &W->refs[i][-v - 1];
            size_t g = W->alias[W->base[mr->tid] + mr->idx];
            memcpy(out + o, W->mids[g], W->mn[g] * sizeof *out);
            o += W->mn[g];
        }
    }
    free(b->ids[i]);
    b->ids[i] = out;
    b->nids[i] = len;
    return 0;
}

/* The cache only changes the speed: segment i's ids must equal the ids of
 * the segment encoded whole.  Checked on one segment in 2048, spread over
 * the run by the running segment count. */
static int wc_check_segment(const prep *P, const batch *b, size_t i, tl_error *e) {
    if ((P->seg_counter + i) % 2048 != 0) return 0;
    int *ref;
    size_t nref;
    if (tl_tokenizer_encode(P->tok, b->texts[i], b->lens[i], 0, &ref, &nref, e)) return -1;
    int r = 0;
    if (nref != b->nids[i] || memcmp(ref, b->ids[i], nref * sizeof *ref))
        r = tl_fail(e, "internal error: word-by-word ids differ from whole-segment ids");
    free(ref);
    return r;
}

/* Phase C (parallel) over all segments; the error reported is the one of the
 * first failing segment, whatever the thread timing. */
static int wc_fill_markers(const prep *P, batch *b, const wt_batch *W, tl_error *err) {
    tl_error first_err = {{0}};
    size_t fail_at = SIZE_MAX;
    int failed = 0;
#pragma omp parallel num_threads(P->nt)
    {
        tl_error e;
#pragma omp for schedule(dynamic, 4)
        for (size_t i = 0; i < W->total; i++) {
            int f;
#pragma omp atomic read
            f = failed;
            if (f) continue;
            int r = wc_fill_segment(W, b, i, &e);
            if (!r) r = wc_check_segment(P, b, i, &e);
            if (r) {
#pragma omp critical(tl_prep_fail)
                {
                    if (i < fail_at) {
                        fail_at = i;
                        first_err = e;
                    }
                    failed = 1;
                }
            }
        }
    }
    if (!failed) return 0;
    *err = first_err;
    return -1;
}

/* Frees the batch's state and empties the threads' missing-word lists. */
static void wt_batch_free(prep *P, wt_batch *W) {
    for (int t = 0; t < P->nt; t++) {
        wt_clear(&P->caches[t].seen);
        P->caches[t].n_miss = 0;
    }
    for (size_t i = 0; W->refs && i < W->total; i++) free(W->refs[i]);
    for (size_t g = 0; W->mids && g < W->n_uniq; g++) free(W->mids[g]);
    free(W->alias);
    free(W->usrc);
    free(W->uhash);
    free(W->refs);
    free(W->nrefs);
    free(W->base);
    free(W->mt);
    free(W->ml);
    free(W->mids);
    free(W->mn);
    free(W->arena);
}

/* Tokenizes the batch's segments word by word through the shared table (see
 * "word cache"): phases A, B, C. */
static int word_tokenize(prep *P, batch *b, size_t total, tl_error *err) {
    wt_batch W = {0};
    W.total = total;
    W.refs = calloc(total ? total : 1, sizeof *W.refs);
    W.nrefs = calloc(total ? total : 1, sizeof *W.nrefs);
    int rc = 0;
    for (size_t i = 0; i < total; i++) b->ids[i] = NULL;
    if (!W.refs || !W.nrefs || wc_lookup_segments(P, b, &W) || wc_gather_missing(P, &W))
        rc = tl_fail(err, "out of memory");
    if (!rc && W.n_miss) rc = wc_encode_missing(P, &W, err);
    if (!rc) {
        rc = wc_fill_markers(P, b, &W, err);
        P->seg_counter += total;
    }
    wt_batch_free(P, &W);
    return rc;
}

int tl_prep_tokenize_batch(prep *P, batch *b, tl_error *err) {
    /* flatten the segments */
    size_t total = 0;
    for (size_t i = 0; i < b->n_recs; i++) total += (size_t)b->recs[i].nseg;
    if (total > b->segs_cap) {
        size_t cap = total + total / 2 + 64;
        const char **t = realloc(b->texts, sizeof *t * cap);
        if (t) b->texts = t;
        size_t *l = realloc(b->lens, sizeof *l * cap);
        if (l) b->lens = l;
        int **d = realloc(b->ids, sizeof *d * cap);
        if (d) b->ids = d;
        size_t *n = realloc(b->nids, sizeof *n * cap);
        if (n) b->nids = n;
        if (!t || !l || !d || !n) return tl_fail(err, "out of memory");
        b->segs_cap = cap;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n_recs; i++)
        for (int j = 0; j < b->recs[i].nseg; j++, k++) {
            b->texts[k] = b->recs[i].segs[j].p;
            b->lens[k] = b->recs[i].segs[j].len;
        }
    b->n_segs = 0;
    if (P->tok && P->word_cache) {
        b->n_segs = total;
        if (word_tokenize(P, b, total, err)) return -1;
    } else if (P->tok) {
        if (total && tl_tokenizer_encode_batch(P->tok, b->texts, b->lens, total, 0, P->nt, b->ids, b->nids, err))
            return -1;
    } else {
        int failed = 0;
#pragma omp parallel for schedule(dynamic, 16) num_threads(P->nt)
        for (size_t i = 0; i < total; i++) {
            int *ids = malloc(sizeof(int) * (b->lens[i] ? b->lens[i] : 1));
            b->ids[i] = ids;
            b->nids[i] = b->lens[i];
            if (!ids) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            const unsigned char *s = (const unsigned char *)b->texts[i];
            for (size_t j = 0; j < b->lens[i]; j++) ids[j] = s[j] + 3;
        }
        b->n_segs = total;
        if (failed) return tl_fail(err, "out of memory");
    }
    b->n_segs = total;
    k = 0;
    for (size_t i = 0; i < b->n_recs; i++)
        for (int j = 0; j < b->recs[i].nseg; j++, k++) {
            b->recs[i].segs[j].ids = b->ids[k];
            b->recs[i].segs[j].n = b->nids[k];
        }
    return 0;
}

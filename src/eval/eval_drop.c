/* eval_drop.c - DROP's answer normalisation and F1/EM, as the harness's drop
 * task (after the official drop_eval.py) computes them, and Python's Mersenne
 * Twister and random.sample, so that each question gets the harness's shots.
 * Text is handled as UTF-8 bytes: lowercasing and the word boundaries of the
 * article regex follow ASCII, and any byte >= 0x80 counts as a word character
 * (Python lowercases all of Unicode; see docs/eval.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_drop.h"

/* ------------------------------------------------------------ Python's float() and repr() */

static int py_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static int ieq(const char *a, size_t n, const char *b) {
    if (strlen(b) != n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
        if (c != b[i]) return 0;
    }
    return 1;
}

/* digits with single underscores between them, as float() accepts; returns the count consumed */
static size_t digits(const char *s, size_t n, size_t i, char *out, size_t *o, int *any) {
    size_t start = i;
    while (i < n) {
        if (s[i] >= '0' && s[i] <= '9') {
            out[(*o)++] = s[i++];
            *any = 1;
        } else if (s[i] == '_' && i > start && s[i - 1] >= '0' && s[i - 1] <= '9' && i + 1 < n && s[i + 1] >= '0' &&
                   s[i + 1] <= '9')
            i++;
        else break;
    }
    return i;
}

/* float(text) succeeds: *v gets the value.  text is n bytes (no NUL needed). */
static int py_float(const char *s, size_t n, double *v) {
    size_t a = 0, b = n;
    while (a < b && py_space(s[a])) a++;
    while (b > a && py_space(s[b - 1])) b--;
    if (a == b) return 0;
    char *buf = malloc(b - a + 4);
    if (!buf) return 0;
    size_t o = 0, i = a;
    if (s[i] == '+' || s[i] == '-') buf[o++] = s[i++];
    int ok = 0;
    if (ieq(s + i, b - i, "inf") || ieq(s + i, b - i, "infinity") || ieq(s + i, b - i, "nan")) {
        double x = ieq(s + i, b - i, "nan") ? NAN : INFINITY;
        *v = o && buf[0] == '-' ? -x : x;
        free(buf);
        return 1;
    }
    int any = 0;
    i = digits(s, b, i, buf, &o, &any);
    if (i < b && s[i] == '.') {
        buf[o++] = '.';
        i = digits(s, b, i + 1, buf, &o, &any);
    }
    if (any && i < b && (s[i] == 'e' || s[i] == 'E')) {
        buf[o++] = 'e';
        i++;
        if (i < b && (s[i] == '+' || s[i] == '-')) buf[o++] = s[i++];
        int ed = 0;
        i = digits(s, b, i, buf, &o, &ed);
        if (!ed) any = 0;
    }
    buf[o] = 0;
    if (any && i == b) {
        *v = strtod(buf, NULL);
        ok = 1;
    }
    free(buf);
    return ok;
}

/* repr(float): the shortest digits that read back, in Python's layout. */
static void py_repr(double v, char *out, size_t cap) {
    if (isnan(v)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int p = 0; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e is [-]d[.ddd]e[+-]XX */
    const char *q = e;
    char sign[2] = "";
    if (*q == '-') sign[0] = '-', q++;
    char dig[24];
    size_t nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') dig[nd++] = *q;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    int x = atoi(q + 1);
    if (x < -4 || x >= 16) {
        snprintf(out, cap, "%s%c%s%.*se%c%02d", sign, dig[0], nd > 1 ? "." : "", (int)nd - 1, dig + 1,
                 x < 0 ? '-' : '+', x < 0 ? -x : x);
    } else if (x >= 0) {
        if ((int)nd <= x + 1) snprintf(out, cap, "%s%s%0*d.0", sign, dig, x + 1 - (int)nd, 0);
        else snprintf(out, cap, "%s%.*s.%s", sign, x + 1, dig, dig + x + 1);
        if ((int)nd <= x + 1 && x + 1 - (int)nd == 0) snprintf(out, cap, "%s%s.0", sign, dig);
    } else {
        snprintf(out, cap, "%s0.%0*d%s", sign, -x - 1, 0, dig);
        if (-x - 1 == 0) snprintf(out, cap, "%s0.%s", sign, dig);
    }
}

/* ------------------------------------------------------------ normalisation */

static int is_punct(unsigned char c) { return c < 0x80 && c > ' ' && c < 0x7f && !((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z')); }
static int word_char(unsigned char c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }

/* one piece of _tokenize: lower, remove punctuation (unless a number), fix a
 * number, remove articles, fix whitespace; appended to out (with a space) */
static int norm_token(const char *s, size_t n, char *out, size_t *o) {
    char *t = malloc(n + 64), *u = malloc(n * 2 + 64);
    if (!t || !u) {
        free(t);
        free(u);
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) t[m++] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
    double v;
    if (!py_float(t, m, &v)) {
        size_t k = 0;
        for (size_t i = 0; i < m; i++)
            if (!is_punct((unsigned char)t[i])) t[k++] = t[i];
        m = k;
    }
    if (py_float(t, m, &v)) {
        py_repr(v, t, n + 64);
        m = strlen(t);
    }
    t[m] = 0;
    /* \b(a|an|the)\b -> " " */
    size_t k = 0;
    for (size_t i = 0; i < m;) {
        int hit = 0;
        if (i == 0 || !word_char((unsigned char)t[i - 1])) {
            static const char *const art[] = {"the", "an", "a"};
            for (int a = 0; a < 3 && !hit; a++) {
                size_t l = strlen(art[a]);
                if (i + l <= m && !memcmp(t + i, art[a], l) && (i + l == m || !word_char((unsigned char)t[i + l]))) {
                    u[k++] = ' ';
                    i += l;
                    hit = 1;
                }
            }
        }
        if (!hit) u[k++] = t[i++];
    }
    /* " ".join(text.split()) */
    int first = 1;
    for (size_t i = 0; i < k;) {
        while (i < k && py_space(u[i])) i++;
        if (i == k) break;
        size_t j = i;
        while (j < k && !py_space(u[j])) j++;
        if (first && *o) out[(*o)++] = ' ';
        if (!first) out[(*o)++] = ' ';
        memcpy(out + *o, u + i, j - i);
        *o += j - i;
        first = 0;
        i = j;
    }
    free(t);
    free(u);
    return 0;
}

char *tl_drop_normalize(const char *s) {
    size_t n = strlen(s);
    /* a number's repr is at most ~25 bytes per piece; each piece is at least one byte plus a separator */
    char *out = malloc(n * 26 + 32);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0;;) {
        size_t j = i;
        while (j < n && s[j] != ' ' && s[j] != '-') j++;
        if (norm_token(s + i, j - i, out, &o)) {
            free(out);
            return NULL;
        }
        if (j == n) break;
        i = j + 1;
    }
    out[o] = 0;
    return out;
}

/* ------------------------------------------------------------ bags and F1 */

typedef struct {
    char *norm;
    int n;        /* distinct words */
    char **words; /* into a private copy */
    char *copy;
} bag;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int make_bag(const char *raw, bag *b) {
    memset(b, 0, sizeof *b);
    if (!(b->norm = tl_drop_normalize(raw)) || !(b->copy = strdup(b->norm))) return -1;
    size_t len = strlen(b->copy);
    b->words = malloc(sizeof(char *) * (len / 2 + 2));
    if (!b->words) return -1;
    for (char *p = b->copy; *p;) {
        while (*p && py_space(*p)) *p++ = 0;
        if (!*p) break;
        b->words[b->n++] = p;
        while (*p && !py_space(*p)) p++;
    }
    qsort(b->words, (size_t)b->n, sizeof *b->words, cmp_str);
    int k = 0;
    for (int i = 0; i < b->n; i++)
        if (k == 0 || strcmp(b->words[k - 1], b->words[i])) b->words[k++] = b->words[i];
    b->n = k;
    return 0;
}

static void free_bag(bag *b) {
    free(b->norm);
    free(b->copy);
    free(b->words);
}

static int in_bag(const bag *b, const char *w) {
    return bsearch(&w, b->words, (size_t)b->n, sizeof *b->words, cmp_str) != NULL;
}

static int word_is_number(const char *w) {
    double v;
    return py_float(w, strlen(w), &v);
}

/* no gold numbers, or a gold number among the predicted words */
static int numbers_match(const bag *gold, const bag *pred) {
    int any = 0;
    for (int i = 0; i < gold->n; i++)
        if (word_is_number(gold->words[i])) {
            any = 1;
            if (in_bag(pred, gold->words[i])) return 1;
        }
    return !any;
}

static double bag_f1(const bag *pred, const bag *gold) {
    int inter = 0;
    for (int i = 0; i < gold->n; i++) inter += in_bag(pred, gold->words[i]);
    double p = pred->n ? (double)inter / pred->n : 1.0, r = gold->n ? (double)inter / gold->n : 1.0;
    return p == 0.0 && r == 0.0 ? 0.0 : 2 * p * r / (p + r);
}

int tl_drop_metrics(const char *const *pred, int n_pred, const char *const *gold, int n_gold, double *em,
                    double *f1) {
    bag *pb = calloc((size_t)n_pred + 1, sizeof *pb), *gb = calloc((size_t)n_gold + 1, sizeof *gb);
    double *sc = calloc((size_t)n_pred * (size_t)n_gold + 1, sizeof *sc);
    int rc = pb && gb && sc ? 0 : -1;
    for (int i = 0; i < n_pred && !rc; i++) rc = make_bag(pred[i], &pb[i]);
    for (int i = 0; i < n_gold && !rc; i++) rc = make_bag(gold[i], &gb[i]);
    /* the normalised spans as sets, and the same count */
    if (!rc) {
        int same = n_pred == n_gold;
        for (int i = 0; i < n_pred && same; i++) {
            int found = 0;
            for (int j = 0; j < n_gold && !found; j++) found = !strcmp(pb[i].norm, gb[j].norm);
            same = found;
        }
        for (int j = 0; j < n_gold && same; j++) {
            int found = 0;
            for (int i = 0; i < n_pred && !found; i++) found = !strcmp(pb[i].norm, gb[j].norm);
            same = found;
        }
        *em = same ? 1.0 : 0.0;
    }
    if (!rc) {
        for (int g = 0; g < n_gold; g++)
            for (int p = 0; p < n_pred; p++)
                sc[g * n_pred + p] = numbers_match(&gb[g], &pb[p]) ? bag_f1(&pb[p], &gb[g]) : 0.0;
        /* the best one-to-one alignment (linear_sum_assignment): a DP over the
         * subsets of the smaller side, the larger side taken in order */
        int rows = n_gold >= n_pred ? n_gold : n_pred, cols = n_gold >= n_pred ? n_pred : n_gold;
        double total = 0;
        if (cols > 20) rc = -1;
        else if (cols > 0) {
            size_t S = (size_t)1 << cols;
            double *dp = malloc(sizeof(double) * S), *nx = malloc(sizeof(double) * S);
            if (!dp || !nx) rc = -1;
            for (size_t m = 0; !rc && m < S; m++) dp[m] = m ? -1 : 0;
            for (int r = 0; !rc && r < rows; r++) {
                memcpy(nx, dp, sizeof(double) * S); /* row r left unassigned */
                for (size_t m = 0; m < S; m++) {
                    if (dp[m] < 0) continue;
                    for (int c = 0; c < cols; c++) {
                        if (m >> c & 1) continue;
                        double s = n_gold >= n_pred ? sc[r * n_pred + c] : sc[c * n_pred + r];
                        size_t m2 = m | (size_t)1 << c;
                        if (dp[m] + s > nx[m2]) nx[m2] = dp[m] + s;
                    }
                }
                double *tmp = dp;
                dp = nx;
                nx = tmp;
            }
            for (size_t m = 0; !rc && m < S; m++)
                if (dp[m] > total) total = dp[m];
            free(dp);
            free(nx);
        }
        /* np.mean over max(len) rows, then round(x, 2) as numpy rounds */
        if (!rc) *f1 = rint(total / (rows ? rows : 1) * 100.0) / 100.0;
        if (!rc && rows == 0) *f1 = NAN;
    }
    for (int i = 0; pb && i < n_pred; i++) free_bag(&pb[i]);
    for (int i = 0; gb && i < n_gold; i++) free_bag(&gb[i]);
    free(pb);
    free(gb);
    free(sc);
    return rc;
}

int tl_drop_score(const char *pred, const tl_drop_answer *gold, int n_gold, double *em, double *f1) {
    double best_em = 0, best_f1 = 0;
    for (int a = 0; a < n_gold; a++) {
        const char *first = gold[a].n > 0 ? gold[a].spans[0] : "";
        while (*first && py_space(*first)) first++;
        double e, f;
        if (tl_drop_metrics(&pred, 1, (const char *const *)gold[a].spans, gold[a].n, &e, &f)) return -1;
        if (*first) {
            if (e > best_em) best_em = e;
            if (f > best_f1) best_f1 = f;
        }
    }
    *em = best_em;
    *f1 = best_f1;
    return 0;
}

/* ------------------------------------------------------------ random.Random */

void tl_pyrandom_seed(tl_pyrandom *r, uint32_t seed) {
    uint32_t *mt = r->mt;
    mt[0] = 19650218u;
    for (int i = 1; i < 624; i++) mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + (uint32_t)i;
    /* init_by_array with the one-word key {seed}, as random.seed(int) does */
    int i = 1;
    for (int k = 624; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + seed;
        i++;
        if (i >= 624) {
            mt[0] = mt[623];
            i = 1;
        }
    }
    for (int k = 623; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= 624) {
            mt[0] = mt[623];
            i = 1;
        }
    }
    mt[0] = 0x80000000u;
    r->idx = 624;
}

uint32_t tl_pyrandom_u32(tl_pyrandom *r) {
    uint32_t *mt = r->mt;
    if (r->idx >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (mt[k] & 0x80000000u) | (mt[(k + 1) % 624] & 0x7fffffffu);
            mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (y & 1 ? 0x9908b0dfu : 0);
        }
        r->idx = 0;
    }
    uint32_t y = mt[r->idx++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* _randbelow: getrandbits(n.bit_length()) until below n (n < 2^31 here) */
static int randbelow(tl_pyrandom *r, int n) {
    int k = 0;
    while (k < 32 && ((uint32_t)n >> k)) k++;
    for (;;) {
        uint32_t v = tl_pyrandom_u32(r) >> (32 - k);
        if (v < (uint32_t)n) return (int)v;
    }
}

int tl_pyrandom_sample(tl_pyrandom *r, int n, int k, int *out) {
    int setsize = 21;
    if (k > 5) {
        int p = 1;
        while (p < 3 * k) p *= 4; /* 4 ** ceil(log(3k, 4)) */
        setsize += p;
    }
    if (n <= setsize) {
        int *pool = malloc(sizeof(int) * (size_t)(n + 1));
        if (!pool) return -1;
        for (int i = 0; i < n; i++) pool[i] = i;
        for (int i = 0; i < k; i++) {
            int j = randbelow(r, n - i);
            out[i] = pool[j];
            pool[j] = pool[n - i - 1];
        }
        free(pool);
    } else {
        for (int i = 0; i < k; i++) {
            int j, dup;
            do {
                j = randbelow(r, n);
                dup = 0;
                for (int q = 0; q < i; q++) dup |= out[q] == j;
            } while (dup);
            out[i] = j;
        }
    }
    return 0;
}

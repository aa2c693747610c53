/* mixture.c - weighted, rank-disjoint, O(1)-resumable mixing of shard sources.
 *
 * Arithmetic (all exact integers, so every machine draws the same stream):
 *   time t is counted in 1/R of a draw (R = 2^12); weights are fixed point with
 *   ONE = 2^24 and the sources' weights sum to ONE at every moment;
 *   W_s(t) = w0*t + d*F(t) for t <= K, with d = w1 - w0, K the ramp in time
 *   units and F(t) = floor(t^2 / 2K); after K it grows by w1 per unit.  W_s is
 *   non-decreasing (F steps by at most 1 while t grows by 1 on [0, K]), and the
 *   sum over sources is exactly ONE * t.  In units of 2^-36 of a sample,
 *   source s has its i-th sample due when W_s reaches i*2^36 + u_{s,i},
 *   u in [1, 2^36): so the due count at t is m + [u_{s,m} <= W_s mod 2^36],
 *   m = W_s >> 36. */
#include "mixture.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define R_BITS 12
#define ONE_BITS 24
#define FRAC_BITS (R_BITS + ONE_BITS)
#define ONE ((uint64_t)1 << ONE_BITS)

typedef __int128 i128;
typedef unsigned __int128 u128;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void tl_mixture_init(tl_mixture *m) {
    memset(m, 0, sizeof *m);
    m->world = 1;
}

double tl_mixture_default_weight(const char *name) {
    if (!strcasecmp(name, "slimpajama")) return 0.693584;
    if (!strcasecmp(name, "starcoder")) return 0.306416;
    return -1;
}

int tl_mixture_add(tl_mixture *m, const char *name, double weight, double start_weight, const char *const *paths,
                   int n_paths, tl_error *err) {
    if (m->finished) return tl_fail(err, "mixture: sources must be added before it is finished");
    if (m->n == TL_MIX_MAX_SOURCES) return tl_fail(err, "mixture: at most %d sources", TL_MIX_MAX_SOURCES);
    if (!name || !*name || strlen(name) >= sizeof m->src[0].name)
        return tl_fail(err, "mixture: source names must have 1 to %zu characters", sizeof m->src[0].name - 1);
    for (const char *q = name; *q; q++) /* names go into JSON logs and checkpoints as they are */
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || strchr("-_.", *q)))
            return tl_fail(err, "mixture: source name '%s': use letters, digits, '-', '_' and '.' only", name);
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->src[i].name, name)) return tl_fail(err, "mixture: source '%s' given twice", name);
    if (start_weight < 0) start_weight = weight;
    if (!(weight >= 0) || !(start_weight >= 0) || weight > 1e9 || start_weight > 1e9)
        return tl_fail(err, "mixture: source '%s': weights must be non-negative numbers", name);
    tl_mix_source *s = &m->src[m->n];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->weight = weight;
    s->start_weight = start_weight;
    if (tl_dataset_open_ex(&s->ds, paths, n_paths, &m->open_opts, err)) return tl_wrap(err, "source '%s'", name);
    m->n++;
    return 0;
}

/* Fixed-point weights summing to exactly ONE (the rounding rest goes to the largest). */
static int normalize(tl_mixture *m, int start, tl_error *err) {
    double sum = 0;
    for (int i = 0; i < m->n; i++) sum += start ? m->src[i].start_weight : m->src[i].weight;
    if (!(sum > 0)) return tl_fail(err, "mixture: the %s weights sum to zero", start ? "start" : "final");
    uint64_t tot = 0;
    int big = 0;
    for (int i = 0; i < m->n; i++) {
        double w = (start ? m->src[i].start_weight : m->src[i].weight) / sum;
        uint32_t q = (uint32_t)(w * (double)ONE + 0.5);
        if (start) m->src[i].w0 = q;
        else m->src[i].w1 = q;
        tot += q;
        if (q > (start ? m->src[big].w0 : m->src[big].w1)) big = i;
    }
    int64_t rest = (int64_t)ONE - (int64_t)tot;
    if (start) m->src[big].w0 = (uint32_t)((int64_t)m->src[big].w0 + rest);
    else m->src[big].w1 = (uint32_t)((int64_t)m->src[big].w1 + rest);
    return 0;
}

int tl_mixture_finish(tl_mixture *m, uint64_t seed, int shuffle, int rank, int world, uint64_t ramp_draws,
                      tl_error *err) {
    if (m->n < 1) return tl_fail(err, "mixture: no sources");
    if (world < 1 || rank < 0 || rank >= world) return tl_fail(err, "mixture: rank %d of %d is not valid", rank, world);
    if (ramp_draws > ((uint64_t)1 << 40)) return tl_fail(err, "mixture: ramp of %llu draws is too long",
                                                         (unsigned long long)ramp_draws);
    int ref = 0; /* one token stream: the same ids must mean the same text in every source */
    while (ref < m->n - 1 && !m->src[ref].ds.tok.origin[0]) ref++;
    for (int i = ref + 1; i < m->n; i++)
        if (tl_data_tokenizer_check(&m->src[ref].ds.tok, &m->src[i].ds.tok, err))
            return tl_wrap(err, "mixture: sources '%s' and '%s'", m->src[ref].name, m->src[i].name);
    if (normalize(m, 1, err) || normalize(m, 0, err)) return -1;
    m->seed = seed;
    m->shuffle = shuffle;
    m->rank = rank;
    m->world = world;
    m->ramp = ramp_draws;
    m->seq_len = m->src[0].ds.seq_len;
    m->vocab_size = 0;
    for (int i = 0; i < m->n; i++) {
        tl_mix_source *s = &m->src[i];
        /* the key depends on the name, not the position, so adding a source keeps the others' orders */
        uint64_t h = 0xcbf29ce484222325ULL;
        for (const char *p = s->name; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
        s->key = mix64(seed ^ mix64(h));
        tl_dataset_set_order(&s->ds, shuffle, s->key);
        if (s->ds.seq_len < m->seq_len) m->seq_len = s->ds.seq_len;
        if (s->ds.vocab_size > m->vocab_size) m->vocab_size = s->ds.vocab_size;
    }
    free(m->buf);
    m->buf = malloc(sizeof(int) * ((size_t)m->seq_len + 1));
    if (!m->buf) return tl_fail(err, "out of memory");
    m->pos = 0;
    m->finished = 1;
    return 0;
}

void tl_mixture_close(tl_mixture *m) {
    for (int i = 0; i < m->n; i++) tl_dataset_close(&m->src[i].ds);
    free(m->buf);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ schedule */

/* Cumulative weight of source s at time t (units of 2^-36 samples). */
static u128 cum_weight(const tl_mixture *m, const tl_mix_source *s, uint64_t t) {
    if (!m->ramp || s->w0 == s->w1) return (u128)s->w1 * t;
    const uint64_t K = m->ramp << R_BITS;
    const i128 d = (i128)s->w1 - (i128)s->w0;
    uint64_t tk = t < K ? t : K;
    i128 F = (i128)(((u128)tk * tk) / ((u128)2 * K));
    i128 w = (i128)s->w0 * (i128)tk + d * F;
    if (t > K) w += (i128)s->w1 * (i128)(t - K);
    return (u128)w;
}

static uint64_t due_count(const tl_mixture *m, int si, uint64_t t) {
    const tl_mix_source *s = &m->src[si];
    u128 w = cum_weight(m, s, t);
    uint64_t mcount = (uint64_t)(w >> FRAC_BITS);
    uint64_t frac = (uint64_t)(w & ((((u128)1) << FRAC_BITS) - 1));
    uint64_t u = 1 + mix64(s->key ^ mix64(mcount + 0x51ed2701u)) % ((((uint64_t)1) << FRAC_BITS) - 1);
    return mcount + (u <= frac);
}

static uint64_t total_due(const tl_mixture *m, uint64_t t) {
    uint64_t c = 0;
    for (int i = 0; i < m->n; i++) c += due_count(m, i, t);
    return c;
}

/* The time bracket of draw g: total_due(*lo) <= g < total_due(*hi), hi = lo + 1. */
static void bracket(const tl_mixture *m, uint64_t g, uint64_t *lo_out, uint64_t *hi_out) {
    const uint64_t R = (uint64_t)1 << R_BITS, k = (uint64_t)m->n;
    /* total_due(t) lies within k of t/R: bracket the first t with total_due(t) > g */
    uint64_t lo = g + 1 > k ? (g + 1 - k) * R - 1 : 0;
    uint64_t hi = (g + 1 + k) * R;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (total_due(m, mid) > g) hi = mid;
        else lo = mid;
    }
    *lo_out = lo;
    *hi_out = hi;
}

void tl_mixture_locate(const tl_mixture *m, uint64_t g, int *source, uint64_t *idx) {
    uint64_t lo, hi;
    bracket(m, g, &lo, &hi);
    uint64_t r = g - total_due(m, lo);
    for (int s = 0; s < m->n; s++) {
        uint64_t a = due_count(m, s, lo), b = due_count(m, s, hi);
        if (r < b - a) {
            *source = s;
            *idx = a + r;
            return;
        }
        r -= b - a;
    }
    *source = m->n - 1; /* not reached */
    *idx = 0;
}

uint64_t tl_mixture_count(const tl_mixture *m, int s, uint64_t g) {
    if (g == 0) return 0;
    /* draws before g: all due by lo, then the first r of those due at hi, in source order */
    uint64_t lo, hi;
    bracket(m, g, &lo, &hi);
    uint64_t r = g - total_due(m, lo);
    for (int j = 0; j < s; j++) {
        uint64_t n = due_count(m, j, hi) - due_count(m, j, lo);
        r = r > n ? r - n : 0;
    }
    uint64_t a = due_count(m, s, lo), n = due_count(m, s, hi) - a;
    return a + (r < n ? r : n);
}

double tl_mixture_weight_at(const tl_mixture *m, int s, uint64_t g) {
    const tl_mix_source *x = &m->src[s];
    double f = m->ramp && g < m->ramp ? (double)g / (double)m->ramp : 1.0;
    return ((double)x->w0 + ((double)x->w1 - (double)x->w0) * f) / (double)ONE;
}

double tl_mixture_expected(const tl_mixture *m, int s, uint64_t g) {
    return (double)cum_weight(m, &m->src[s], g << R_BITS) / (double)((u128)1 << FRAC_BITS);
}

/* ------------------------------------------------------------------ reading */

int tl_mixture_seek(tl_mixture *m, uint64_t pos, tl_error *err) {
    if (!m->finished) return tl_fail(err, "mixture: not finished");
    m->pos = pos;
    return 0;
}

int tl_mixture_next(tl_mixture *m, int B, int T, int *tokens, int *sources, tl_error *err) {
    if (!m->finished) return tl_fail(err, "mixture: not finished");
    if (T > m->seq_len) return tl_fail(err, "sequence length %d is longer than the sources' %d", T, m->seq_len);
    for (int b = 0; b < B; b++) {
        uint64_t g = m->pos * (uint64_t)m->world + (uint64_t)m->rank;
        int s;
        uint64_t i;
        tl_mixture_locate(m, g, &s, &i);
        i += m->src[s].offset;
        tl_dataset *d = &m->src[s].ds;
        if (tl_dataset_seek(d, i / d->n_samples, i % d->n_samples, err) ||
            tl_dataset_next(d, 1, T, tokens + (size_t)b * (size_t)(T + 1), err))
            return tl_wrap(err, "source '%s'", m->src[s].name);
        if (sources) sources[b] = s;
        m->pos++;
    }
    return 0;
}

char *tl_mixture_describe(const tl_mixture *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "sources");
    for (int i = 0; i < m->n; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", m->src[i].name);
        cJSON_AddNumberToObject(s, "weight", (double)m->src[i].w1 / (double)ONE);
        cJSON_AddNumberToObject(s, "start_weight", (double)m->src[i].w0 / (double)ONE);
        cJSON_AddNumberToObject(s, "samples", (double)m->src[i].ds.n_samples);
        if (m->src[i].offset) cJSON_AddNumberToObject(s, "offset", (double)m->src[i].offset);
        cJSON_AddItemToArray(arr, s);
    }
    cJSON_AddNumberToObject(o, "ramp_samples", (double)m->ramp);
    cJSON_AddNumberToObject(o, "rank", m->rank);
    cJSON_AddNumberToObject(o, "world", m->world);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

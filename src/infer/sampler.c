/* sampler.c - next-token selection (see sampler.h for the order of filters). */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void tl_sampler_default_opts(tl_sampler_opts *o) {
    o->temperature = 0.0f;
    o->top_k = 0;
    o->top_p = 1.0f;
    o->min_p = 0.0f;
    o->repetition_penalty = 1.0f;
}

int tl_sampler_check_opts(const tl_sampler_opts *o, tl_error *err) {
    if (!(o->temperature >= 0.0f) || !isfinite(o->temperature))
        return tl_fail(err, "temperature must be >= 0 (0 = greedy), got %g", o->temperature);
    if (o->top_k < 0) return tl_fail(err, "top-k must be >= 0 (0 = off), got %d", o->top_k);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f)) return tl_fail(err, "top-p must be in (0, 1], got %g", o->top_p);
    if (!(o->min_p >= 0.0f && o->min_p <= 1.0f)) return tl_fail(err, "min-p must be in [0, 1], got %g", o->min_p);
    if (!(o->repetition_penalty > 0.0f) || !isfinite(o->repetition_penalty))
        return tl_fail(err, "repetition penalty must be > 0 (1 = off), got %g", o->repetition_penalty);
    return 0;
}

int tl_sampler_init(tl_sampler *s, const tl_sampler_opts *o, int vocab, uint64_t seed, tl_error *err) {
    memset(s, 0, sizeof *s);
    if (tl_sampler_check_opts(o, err)) return -1;
    if (vocab <= 0) return tl_fail(err, "sampler: empty vocabulary");
    s->o = *o;
    s->vocab = vocab;
    tl_rng_seed(&s->rng, seed);
    s->probs = malloc(sizeof(float) * (size_t)vocab);
    s->idx = malloc(sizeof(int) * (size_t)vocab);
    s->tmp = malloc(sizeof(int) * (size_t)vocab);
    s->dense = malloc(sizeof(float) * (size_t)vocab);
    s->seen = calloc((size_t)vocab, 1);
    if (!s->probs || !s->idx || !s->tmp || !s->dense || !s->seen) {
        tl_sampler_free(s);
        return tl_fail(err, "out of memory");
    }
    return 0;
}

void tl_sampler_free(tl_sampler *s) {
    free(s->probs);
    free(s->idx);
    free(s->tmp);
    free(s->dense);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void tl_sampler_penalize(const tl_sampler *s, float *logits, const int *history, int n_history) {
    const float p = s->o.repetition_penalty;
    if (p == 1.0f || n_history <= 0) return;
    for (int i = 0; i < n_history; i++) {
        int id = history[i];
        if (id < 0 || id >= s->vocab || s->seen[id]) continue;
        s->seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / p : logits[id] * p;
    }
    for (int i = 0; i < n_history; i++)
        if (history[i] >= 0 && history[i] < s->vocab) s->seen[history[i]] = 0;
}

/* a ranks below b: lower probability, or equal probability and higher id */
static inline int weaker(const float *p, int a, int b) { return p[a] < p[b] || (p[a] == p[b] && a > b); }

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Sorts idx by descending p, ties by ascending id (a total order, so the result is unique). */
static void sort_desc(int *idx, int *tmp, int n, const float *p) {
    if (n < 2) return;
    if (n <= 16) {
        for (int i = 1; i < n; i++) {
            int v = idx[i], j = i;
            while (j > 0 && (p[idx[j - 1]] < p[v] || (p[idx[j - 1]] == p[v] && idx[j - 1] > v))) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
        return;
    }
    int h = n / 2;
    sort_desc(idx, tmp, h, p);
    sort_desc(idx + h, tmp, n - h, p);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int a = idx[i], b = idx[j];
        if (p[a] > p[b] || (p[a] == p[b] && a < b)) tmp[k++] = idx[i++];
        else tmp[k++] = idx[j++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, sizeof(int) * (size_t)n);
}

/* Top-p and min-p read only the head of the ranking: the tokens down to where the
 * mass reaches top_p of the total, and those at least min_p times the most likely.
 * All tokens at or above a threshold t are a prefix of the ranking (ties rank by
 * id, and everything else is below t), so lowering t from the most likely
 * probability 16-fold at a time until that set holds enough mass, then sorting only it, gives the
 * same head as sorting the whole vocabulary (32,000 ids: milliseconds a token).
 * idx[0..n) lists the candidates; returns the length of the sorted head in idx,
 * or n after sorting everything when the head would be most of it. */
static int sort_head(tl_sampler *s, const float *probs, int n, double kept) {
    int *idx = s->idx;
    float pmax = 0.0f;
    for (int i = 0; i < n; i++) pmax = probs[idx[i]] > pmax ? probs[idx[i]] : pmax;
    const double need = s->o.top_p < 1.0f ? (double)s->o.top_p * kept : 0.0;
    const float floor_p = s->o.min_p * pmax; /* min-p alone: everything at or above it */
    for (float t = pmax / 16.0f; t > 0.0f; t /= 16.0f) {
        if (s->o.top_p >= 1.0f && t > floor_p) continue;
        double mass = 0.0;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (probs[idx[i]] >= t) mass += probs[idx[i]], m++;
        if (m > n / 2) break;
        /* a margin over `need`: the head's mass summed in rank order below must reach it too */
        if (s->o.top_p < 1.0f && !(mass >= need * (1.0 + 1e-6))) continue;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (probs[idx[i]] >= t) s->tmp[k++] = idx[i];
        memcpy(idx, s->tmp, sizeof(int) * (size_t)k);
        sort_desc(idx, s->tmp, k, probs);
        return k;
    }
    sort_desc(idx, s->tmp, n, probs);
    return n;
}

/* Fills probs (dense, [vocab]) with the final distribution; returns the number
 * of candidates kept, listed in s->idx[0..k) by descending probability. */
static int distribution(tl_sampler *s, float *logits, const int *history, int n_history, float *probs) {
    const int V = s->vocab;
    tl_sampler_penalize(s, logits, history, n_history);
    if (s->o.temperature == 0.0f) {
        memset(probs, 0, sizeof(float) * (size_t)V);
        int b = argmax(logits, V);
        probs[b] = 1.0f;
        s->idx[0] = b;
        return 1;
    }
    const float invt = 1.0f / s->o.temperature;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] * invt > mx) mx = logits[i] * invt;
    for (int i = 0; i < V; i++) probs[i] = expf(logits[i] * invt - mx);
    /* candidates, by descending probability when a filter needs the order */
    int n = 0;
    for (int i = 0; i < V; i++)
        if (probs[i] > 0.0f) s->idx[n++] = i;
    int sorted = 0;
    if (s->o.top_k > 0 && s->o.top_k < n) {
        /* keep the k most likely: a min-heap of k (root = weakest kept), then sort those */
        const int k = s->o.top_k;
        int *hp = s->tmp;
        for (int i = 0; i < n; i++) {
            int id = s->idx[i];
            if (i < k) {
                int j = i;
                hp[j] = id;
                while (j > 0 && weaker(probs, hp[j], hp[(j - 1) / 2])) {
                    int t = hp[j]; hp[j] = hp[(j - 1) / 2]; hp[(j - 1) / 2] = t;
                    j = (j - 1) / 2;
                }
            } else if (weaker(probs, hp[0], id)) {
                hp[0] = id;
                int j = 0;
                for (;;) {
                    int l = 2 * j + 1, r = l + 1, m = j;
                    if (l < k && weaker(probs, hp[l], hp[m])) m = l;
                    if (r < k && weaker(probs, hp[r], hp[m])) m = r;
                    if (m == j) break;
                    int t = hp[j]; hp[j] = hp[m]; hp[m] = t;
                    j = m;
                }
            }
        }
        memcpy(s->idx, hp, sizeof(int) * (size_t)k);
        n = k;
        sort_desc(s->idx, s->tmp, n, probs);
        sorted = 1;
    }
    /* the mass of the candidates, for top-p (after top-k: of the k kept) */
    double kept = 0.0;
    for (int i = 0; i < n; i++) kept += probs[s->idx[i]];
    if (!sorted && (s->o.top_p < 1.0f || s->o.min_p > 0.0f))
        n = sort_head(s, probs, n, kept);
    /* top-p: the smallest prefix whose mass reaches top_p (at least one token) */
    if (s->o.top_p < 1.0f) {
        double acc = 0.0;
        int k = 0;
        while (k < n) {
            acc += probs[s->idx[k]];
            k++;
            if (acc >= s->o.top_p * kept) break;
        }
        n = k;
    }
    /* min-p: drop tokens below min_p times the most likely one */
    if (s->o.min_p > 0.0f && n > 0) {
        float thr = s->o.min_p * probs[s->idx[0]];
        int k = 1;
        while (k < n && probs[s->idx[k]] >= thr) k++;
        n = k;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += probs[s->idx[i]];
    float *tmpv = s->probs;
    for (int i = 0; i < n; i++) tmpv[i] = (float)(probs[s->idx[i]] / total);
    memset(probs, 0, sizeof(float) * (size_t)V);
    for (int i = 0; i < n; i++) probs[s->idx[i]] = tmpv[i];
    return n;
}

void tl_sampler_probs(tl_sampler *s, float *logits, const int *history, int n_history, float *probs) {
    distribution(s, logits, history, n_history, probs);
}

int tl_sampler_sample(tl_sampler *s, float *logits, const int *history, int n_history) {
    if (s->o.temperature == 0.0f) {
        tl_sampler_penalize(s, logits, history, n_history);
        return argmax(logits, s->vocab);
    }
    int n = distribution(s, logits, history, n_history, s->dense);
    double u = tl_rng_uniform(&s->rng), acc = 0.0;
    int pick = s->idx[n - 1];
    for (int i = 0; i < n; i++) {
        acc += s->dense[s->idx[i]];
        if (u < acc) {
            pick = s->idx[i];
            break;
        }
    }
    return pick;
}

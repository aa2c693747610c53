/* eval.c - HF-compatible tokenization for the harness's requests, the fp32
 * model scoring backend, the metrics (acc, acc_norm, standard errors) and JSON. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

/* ------------------------------------------------------------ HF tokenization */

/* Id of a piece that BPE may produce by merging (NORMAL or USER_DEFINED), or -1. */
static int mergeable_id(const tl_tokenizer *tok, const char *s, size_t n) {
    int id = tl_tokenizer_piece_id(tok, s, n);
    if (id < 0) return -1;
    int ty = tl_tokenizer_piece_type(tok, id);
    return ty == TL_PIECE_NORMAL || ty == TL_PIECE_USER_DEFINED ? id : -1;
}

/* Rank of merging symbols i and i+1: the merged piece's id (HF's merges for
 * Llama tokenizers are ordered by result id), INT_MAX if it is not a piece. */
static int pair_rank(const tl_tokenizer *tok, const char *s, const int *start, const int *slen,
                     const unsigned char *ok, int i) {
    if (!ok[i] || !ok[i + 1]) return INT_MAX;
    int id = mergeable_id(tok, s + start[i], (size_t)(slen[i] + slen[i + 1]));
    return id >= 0 ? id : INT_MAX;
}

static int utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

int tl_eval_hf_encode(const tl_tokenizer *tok, const char *text, size_t len, int add_bos, int **ids,
                      size_t *n_out, tl_error *err) {
    static const char META[] = "\xE2\x96\x81"; /* U+2581 */
    *ids = NULL;
    *n_out = 0;
    int bos = tl_tokenizer_bos_id(tok);
    if (add_bos && bos < 0) return tl_fail(err, "the tokenizer has no BOS token");
    /* normalize: spaces -> U+2581, one U+2581 prepended unless already there */
    size_t cap = 3 * len + 4, m = 0;
    char *s = malloc(cap);
    int *start = malloc(sizeof(int) * (len + 2)), *slen = malloc(sizeof(int) * (len + 2));
    int *rank = malloc(sizeof(int) * (len + 2));
    int *out = malloc(sizeof(int) * (4 * len + 2));
    unsigned char *ok = malloc(len + 2);
    if (!s || !start || !slen || !rank || !out || !ok) {
        free(s), free(start), free(slen), free(rank), free(out), free(ok);
        return tl_fail(err, "out of memory");
    }
    size_t k = 0;
    if (add_bos) out[k++] = bos;
    if (len > 0) {
        int starts_meta = text[0] == ' ' || (len >= 3 && !memcmp(text, META, 3));
        if (!starts_meta) memcpy(s + m, META, 3), m += 3;
        for (size_t i = 0; i < len; i++) {
            if (text[i] == ' ') memcpy(s + m, META, 3), m += 3;
            else s[m++] = text[i];
        }
        /* symbols: UTF-8 characters */
        int ns = 0;
        for (size_t i = 0; i < m;) {
            int l = utf8_len((unsigned char)s[i]);
            if (i + (size_t)l > m) l = 1;
            start[ns] = (int)i;
            slen[ns] = l;
            ns++;
            i += (size_t)l;
        }
        for (int i = 0; i < ns; i++) ok[i] = mergeable_id(tok, s + start[i], (size_t)slen[i]) >= 0;
#define PAIR_RANK(i) pair_rank(tok, s, start, slen, ok, i)
        for (int i = 0; i + 1 < ns; i++) rank[i] = PAIR_RANK(i);
        for (;;) {
            int best = -1;
            for (int i = 0; i + 1 < ns; i++)
                if (rank[i] != INT_MAX && (best < 0 || rank[i] < rank[best])) best = i;
            if (best < 0) break;
            slen[best] += slen[best + 1];
            memmove(start + best + 1, start + best + 2, sizeof(int) * (size_t)(ns - best - 2));
            memmove(slen + best + 1, slen + best + 2, sizeof(int) * (size_t)(ns - best - 2));
            memmove(ok + best + 1, ok + best + 2, (size_t)(ns > best + 2 ? ns - best - 2 : 0));
            ok[best] = 1;
            memmove(rank + best + 1, rank + best + 2, sizeof(int) * (size_t)(ns > best + 2 ? ns - best - 2 : 0));
            ns--;
            if (best + 1 < ns) rank[best] = PAIR_RANK(best);
            if (best > 0) rank[best - 1] = PAIR_RANK(best - 1);
        }
#undef PAIR_RANK
        for (int i = 0; i < ns; i++) {
            int id = mergeable_id(tok, s + start[i], (size_t)slen[i]);
            if (id >= 0) {
                out[k++] = id;
                continue;
            }
            for (int j = 0; j < slen[i]; j++) { /* byte fallback */
                char hex[8];
                snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)s[start[i] + j]);
                int b = tl_tokenizer_piece_id(tok, hex, 6);
                out[k++] = b >= 0 ? b : tl_tokenizer_unk_id(tok);
                if (b < 0) break;
            }
        }
    }
    free(s), free(start), free(slen), free(rank), free(ok);
    *ids = out;
    *n_out = k;
    return 0;
}

/* ------------------------------------------------------------ model backend */

struct tl_eval_model_backend {
    const tl_model *m;
    int max_tokens;
    tl_acts *acts;
    int B, T;
    int *tokens;
    float *logits;
    size_t logits_cap;
};

tl_eval_model_backend *tl_eval_model_backend_create(const tl_model *m, int max_tokens, tl_error *err) {
    tl_eval_model_backend *b = calloc(1, sizeof *b);
    if (!b) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    b->m = m;
    b->max_tokens = max_tokens > 0 ? max_tokens : 2048;
    return b;
}

void tl_eval_model_backend_free(tl_eval_model_backend *b) {
    if (!b) return;
    tl_acts_free(b->acts);
    free(b->tokens);
    free(b->logits);
    free(b);
}

typedef struct {
    int req, len; /* input length after truncation */
} sort_item;

static int by_len_desc(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->req < y->req ? -1 : x->req > y->req;
}

/* The harness's input for a request: (ctx + cont)[-(L+1):][:-1]. */
static int input_len(const tl_eval_request *r, int L) {
    int total = r->n_ctx + r->n_cont;
    return (total > L + 1 ? L + 1 : total) - 1;
}
static int token_at(const tl_eval_request *r, int L, int j) {
    int total = r->n_ctx + r->n_cont, skip = total > L + 1 ? total - (L + 1) : 0;
    int idx = skip + j;
    return idx < r->n_ctx ? r->ctx_ids[idx] : r->cont_ids[idx - r->n_ctx];
}

static int ensure_acts(tl_eval_model_backend *b, int B, int T, tl_error *err) {
    if (b->acts && b->B == B && b->T == T) return 0;
    tl_acts_free(b->acts);
    free(b->tokens);
    b->acts = NULL;
    b->tokens = NULL;
    b->acts = tl_acts_create(&b->m->cfg, B, T, err);
    if (!b->acts) return -1;
    b->tokens = malloc(sizeof(int) * (size_t)B * T);
    size_t need = (size_t)B * T * (size_t)b->m->cfg.vocab_size;
    if (need > b->logits_cap) {
        free(b->logits);
        b->logits = malloc(sizeof(float) * need);
        b->logits_cap = b->logits ? need : 0;
    }
    if (!b->tokens || !b->logits) return tl_fail(err, "out of memory for a %dx%d eval batch", B, T);
    b->B = B;
    b->T = T;
    return 0;
}

static int model_loglik(void *self, const tl_eval_request *reqs, int n, double *ll, int *greedy,
                        tl_error *err) {
    tl_eval_model_backend *b = self;
    const int L = b->m->cfg.max_seq_len, V = b->m->cfg.vocab_size;
    sort_item *items = malloc(sizeof *items * (size_t)(n > 0 ? n : 1));
    if (!items) return tl_fail(err, "out of memory");
    for (int i = 0; i < n; i++) {
        if (reqs[i].n_cont > L) {
            free(items);
            return tl_fail(err, "a continuation of %d tokens exceeds the model's context of %d",
                           reqs[i].n_cont, L);
        }
        items[i].req = i;
        items[i].len = input_len(&reqs[i], L);
    }
    qsort(items, (size_t)n, sizeof *items, by_len_desc);
    int rc = 0;
    for (int s = 0; s < n && !rc;) {
        /* pad to a multiple of 16 (fewer distinct activation shapes), longest first */
        int T = (items[s].len + 15) / 16 * 16;
        if (T > L) T = L;
        int B = b->max_tokens / T;
        if (B < 1) B = 1;
        if (B > n - s) B = n - s;
        if (ensure_acts(b, B, T, err)) {
            rc = -1;
            break;
        }
        for (int r = 0; r < B; r++) {
            const tl_eval_request *q = &reqs[items[s + r].req];
            int len = items[s + r].len;
            for (int j = 0; j < T; j++) b->tokens[(size_t)r * T + j] = j < len ? token_at(q, L, j) : 0;
        }
        if (tl_model_logits(b->m, b->acts, b->tokens, b->logits, err)) {
            rc = -1;
            break;
        }
#pragma omp parallel for schedule(dynamic)
        for (int r = 0; r < B; r++) {
            const int qi = items[s + r].req, len = items[s + r].len;
            const tl_eval_request *q = &reqs[qi];
            double sum = 0;
            int all_greedy = 1;
            for (int c = 0; c < q->n_cont; c++) {
                const int pos = len - q->n_cont + c, target = q->cont_ids[c];
                int is_argmax;
                sum += tl_eval_score_row(b->logits + ((size_t)r * T + pos) * V, V, target, &is_argmax);
                if (!is_argmax) all_greedy = 0;
            }
            ll[qi] = sum;
            greedy[qi] = all_greedy;
        }
        s += B;
    }
    free(items);
    return rc;
}

double tl_eval_score_row(const float *row, int V, int target, int *is_argmax) {
    int arg = 0;
    float mx = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > mx) mx = row[v], arg = v;
    double se = 0;
    for (int v = 0; v < V; v++) se += exp((double)row[v] - mx);
    *is_argmax = arg == target;
    return (double)row[target] - mx - log(se);
}

tl_eval_backend tl_eval_model_backend_iface(tl_eval_model_backend *b) {
    tl_eval_backend be = {b, model_loglik};
    return be;
}

/* ------------------------------------------------------------ metrics */

double tl_eval_mean_stderr(const double *x, int n) {
    if (n < 2) return NAN;
    double mu = 0, ss = 0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int i = 0; i < n; i++) ss += (x[i] - mu) * (x[i] - mu);
    return sqrt(ss / (n - 1)) / sqrt((double)n);
}

void tl_eval_result_free(tl_eval_result *r) {
    if (!r) return;
    free(r->ll);
    free(r->greedy);
    free(r->pred);
    free(r->pred_norm);
    free(r->subj_n);
    free(r->subj_acc);
    free(r->subj_acc_stderr);
    free(r->subj_acc_norm);
    free(r->subj_acc_norm_stderr);
    free(r->group_n);
    free(r->group_acc);
    free(r->group_acc_stderr);
    memset(r, 0, sizeof *r);
}

int tl_eval_run_backend(const tl_eval_task *t, tl_eval_backend *be, const tl_eval_opts *o,
                        tl_eval_result *r, tl_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = t->kind;
    r->has_acc_norm = tl_task_has_acc_norm(t->kind);
    const double t0 = tl_now();
    const int chunk = o && o->chunk > 0 ? o->chunk : 256;
    r->ll = malloc(sizeof(double) * (size_t)t->n_reqs);
    r->greedy = malloc(sizeof(int) * (size_t)t->n_reqs);
    r->pred = malloc(sizeof(int) * (size_t)t->n_docs);
    r->pred_norm = malloc(sizeof(int) * (size_t)t->n_docs);
    double *acc = malloc(sizeof(double) * (size_t)t->n_docs);
    double *accn = malloc(sizeof(double) * (size_t)t->n_docs);
    if (!r->ll || !r->greedy || !r->pred || !r->pred_norm || !acc || !accn) {
        free(acc), free(accn);
        tl_eval_result_free(r);
        return tl_fail(err, "out of memory");
    }
    for (int s = 0; s < t->n_reqs; s += chunk) {
        int n = t->n_reqs - s < chunk ? t->n_reqs - s : chunk;
        if (be->loglik(be->self, t->reqs + s, n, r->ll + s, r->greedy + s, err)) {
            free(acc), free(accn);
            tl_eval_result_free(r);
            return -1;
        }
        if (o && o->progress) o->progress(o->progress_user, s + n, t->n_reqs, tl_now() - t0);
    }
    double sa = 0, sn = 0;
    for (int d = 0; d < t->n_docs; d++) {
        const tl_eval_doc *doc = &t->docs[d];
        const double *l = r->ll + doc->first_req;
        int p = 0, pn = 0;
        for (int c = 1; c < doc->n_choices; c++) { /* first maximum, like np.argmax */
            if (l[c] > l[p]) p = c;
            if (l[c] / doc->choice_len[c] > l[pn] / doc->choice_len[pn]) pn = c;
        }
        r->pred[d] = p;
        r->pred_norm[d] = pn;
        acc[d] = p == doc->gold;
        accn[d] = pn == doc->gold;
        sa += acc[d];
        sn += accn[d];
    }
    r->n = t->n_docs;
    r->acc = sa / t->n_docs;
    r->acc_stderr = tl_eval_mean_stderr(acc, t->n_docs);
    r->acc_norm = r->has_acc_norm ? sn / t->n_docs : NAN;
    r->acc_norm_stderr = r->has_acc_norm ? tl_eval_mean_stderr(accn, t->n_docs) : NAN;
    r->seconds = tl_now() - t0;
    int rc = t->n_subjects > 0 ? tl_eval_mc_aggregate(t, r, acc, accn, err) : 0;
    free(acc);
    free(accn);
    if (rc) tl_eval_result_free(r);
    return rc;
}

int tl_eval_run(const tl_eval_task *t, const tl_model *m, const tl_eval_opts *o, tl_eval_result *r,
                tl_error *err) {
    tl_eval_model_backend *b = tl_eval_model_backend_create(m, o ? o->max_tokens : 0, err);
    if (!b) return -1;
    tl_eval_backend be = tl_eval_model_backend_iface(b);
    int rc = tl_eval_run_backend(t, &be, o, r, err);
    tl_eval_model_backend_free(b);
    return rc;
}

/* ------------------------------------------------------------ JSON */

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

char *tl_eval_result_json(const tl_eval_task *t, const tl_eval_result *r, int samples) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "task", tl_task_name(t->kind));
    cJSON_AddNumberToObject(o, "n", r->n);
    add_num(o, "acc", r->acc);
    add_num(o, "acc_stderr", r->acc_stderr);
    if (r->has_acc_norm) {
        add_num(o, "acc_norm", r->acc_norm);
        add_num(o, "acc_norm_stderr", r->acc_norm_stderr);
    }
    cJSON_AddNumberToObject(o, "requests", t->n_reqs);
    cJSON_AddStringToObject(o, "tokenization", t->tok_mode == TL_EVAL_TOK_HF ? "hf" : "spm");
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    if (r->n_subjects > 0) {
        cJSON_AddNumberToObject(o, "num_fewshot", t->n_shot);
        add_num(o, "acc_macro", r->acc_macro);
        if (r->has_acc_norm) add_num(o, "acc_norm_macro", r->acc_norm_macro);
        cJSON *subj = cJSON_AddObjectToObject(o, "subjects");
        for (int s = 0; subj && s < r->n_subjects; s++) {
            cJSON *e = cJSON_AddObjectToObject(subj, t->subjects[s]);
            if (!e) break;
            cJSON_AddNumberToObject(e, "n", r->subj_n[s]);
            add_num(e, "acc", r->subj_acc[s]);
            add_num(e, "acc_stderr", r->subj_acc_stderr[s]);
            if (r->has_acc_norm) {
                add_num(e, "acc_norm", r->subj_acc_norm[s]);
                add_num(e, "acc_norm_stderr", r->subj_acc_norm_stderr[s]);
            }
        }
        cJSON *grp = r->n_groups > 0 ? cJSON_AddObjectToObject(o, "groups") : NULL;
        for (int g = 0; grp && g < r->n_groups; g++) {
            if (r->group_n[g] == 0) continue;
            cJSON *e = cJSON_AddObjectToObject(grp, tl_task_group_name(t->kind, g));
            if (!e) break;
            cJSON_AddNumberToObject(e, "n", r->group_n[g]);
            add_num(e, "acc", r->group_acc[g]);
            add_num(e, "acc_stderr", r->group_acc_stderr[g]);
        }
    }
    if (samples) {
        cJSON *arr = cJSON_AddArrayToObject(o, "samples");
        for (int d = 0; arr && d < t->n_docs; d++) {
            const tl_eval_doc *doc = &t->docs[d];
            cJSON *s = cJSON_CreateObject();
            if (!s) break;
            if (t->n_subjects > 0) cJSON_AddStringToObject(s, "subject", t->subjects[doc->subject]);
            cJSON_AddNumberToObject(s, "line", doc->line);
            cJSON_AddNumberToObject(s, "gold", doc->gold);
            cJSON_AddNumberToObject(s, "pred", r->pred[d]);
            if (r->has_acc_norm) cJSON_AddNumberToObject(s, "pred_norm", r->pred_norm[d]);
            cJSON *ll = cJSON_AddArrayToObject(s, "ll");
            for (int c = 0; ll && c < doc->n_choices; c++)
                cJSON_AddItemToArray(ll, cJSON_CreateNumber(r->ll[doc->first_req + c]));
            cJSON_AddItemToArray(arr, s);
        }
    }
    char *out = cJSON_Print(o);
    cJSON_Delete(o);
    return out;
}

/* eval_tasks.c - reading the seven benchmarks in their original release formats
 * and turning each doc into lm-evaluation-harness's requests (prompt formats and
 * text preprocessing of the harness's task definitions), then tokenizing every
 * (context, continuation) pair the way the harness's HF backend does. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

static const char *const task_names[TL_TASK_COUNT] = {
    "hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq",
    "mmlu", "cmmlu", "ceval", "bbh", "humaneval", "drop",
};

const char *tl_task_name(tl_task_kind k) {
    return (unsigned)k < TL_TASK_COUNT ? task_names[k] : "?";
}

int tl_task_from_name(const char *name, tl_task_kind *out, tl_error *err) {
    for (int i = 0; i < TL_TASK_COUNT; i++)
        if (!strcmp(name, task_names[i])) {
            *out = (tl_task_kind)i;
            return 0;
        }
    return tl_fail(err,
                   "unknown task '%s' (known: hellaswag, piqa, arc_easy, arc_challenge, openbookqa, "
                   "winogrande, boolq, mmlu, cmmlu, ceval, bbh, humaneval, drop)",
                   name);
}

int tl_task_has_acc_norm(tl_task_kind k) {
    return k != TL_TASK_WINOGRANDE && k != TL_TASK_BOOLQ && k != TL_TASK_MMLU;
}

int tl_task_is_generation(tl_task_kind k) { return k == TL_TASK_BBH || k == TL_TASK_HUMANEVAL || k == TL_TASK_DROP; }

int tl_task_is_multi_subject(tl_task_kind k) {
    return k == TL_TASK_MMLU || k == TL_TASK_CMMLU || k == TL_TASK_CEVAL;
}

/* ------------------------------------------------------------ strings */

void tl_sb_add(tl_sbuf *b, const char *s, size_t n) {
    if (b->oom || n == 0 || n > ((size_t)1 << 40)) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
void tl_sb_str(tl_sbuf *b, const char *s) { tl_sb_add(b, s, strlen(s)); }
char *tl_sb_take(tl_sbuf *b) {
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    if (!b->p) return calloc(1, 1);
    return b->p;
}

/* Decodes one UTF-8 character at s[i] (i < n): its code point and byte length
 * (invalid bytes count as one character of one byte, code point -1). */
static int utf8_next(const char *s, size_t n, size_t i, long *cp) {
    const unsigned char c = (unsigned char)s[i];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + (size_t)len > n) {
        *cp = -1;
        return 1;
    }
    long v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; k++) {
        unsigned char d = (unsigned char)s[i + (size_t)k];
        if ((d & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (d & 0x3F);
    }
    *cp = v;
    return len;
}

/* Python's str.isspace() */
static int py_isspace(long c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Byte length of the leading / trailing whitespace (Python's definition). */
static size_t lead_space(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        long cp;
        int l = utf8_next(s, n, i, &cp);
        if (!py_isspace(cp)) break;
        i += (size_t)l;
    }
    return i;
}
static size_t trail_space(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && end - st < 4 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        long cp;
        int l = utf8_next(s, n, st, &cp);
        if (st + (size_t)l != end) st = end - 1, cp = -1; /* stray continuation byte */
        if (!py_isspace(cp)) break;
        end = st;
    }
    return n - end;
}

/* Characters (code points) as Python's len() counts them. */
static double char_len(const char *s) {
    size_t n = strlen(s), i = 0;
    double c = 0;
    while (i < n) {
        long cp;
        i += (size_t)utf8_next(s, n, i, &cp);
        c += 1;
    }
    return c;
}

static void put_cp(tl_sbuf *b, long cp) {
    char u[4];
    int n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    tl_sb_add(b, u, (size_t)n);
}

/* Case mapping for ASCII, Latin-1 and Latin Extended-A (where the benchmarks'
 * text lives); other characters are left as they are. */
static long to_upper(long c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 &&
        c != 0x17F) {
        int odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (odd_upper ? (c % 2 == 0) : (c % 2 == 1)) return c - 1;
    }
    return c;
}
static long to_lower(long c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 &&
        c != 0x17F) {
        int odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (odd_upper ? (c % 2 == 1) : (c % 2 == 0)) return c + 1;
    }
    return c;
}

/* Python's str.capitalize(): first character upper case, the rest lower case. */
static void add_capitalized(tl_sbuf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    int first = 1;
    while (i < n) {
        long cp;
        int l = utf8_next(s, n, i, &cp);
        if (cp < 0) tl_sb_add(b, s + i, 1);
        else put_cp(b, first ? to_upper(cp) : to_lower(cp));
        first = 0;
        i += (size_t)l;
    }
}

/* The harness's HellaSwag preprocess(): strip; " [title]" -> ". "; remove every
 * non-greedy "[...]" (not across newlines); replace "  " by " " (one pass). */
static char *hellaswag_preprocess(const char *in) {
    size_t n = strlen(in), a = lead_space(in, n);
    size_t e = a < n ? n - trail_space(in + a, n - a) : n;
    tl_sbuf s1 = {0};
    for (size_t i = a; i < e;) {
        if (i + 8 <= e && !memcmp(in + i, " [title]", 8)) {
            tl_sb_str(&s1, ". ");
            i += 8;
        } else tl_sb_add(&s1, in + i++, 1);
    }
    char *t1 = tl_sb_take(&s1);
    if (!t1) return NULL;
    tl_sbuf s2 = {0};
    size_t n1 = strlen(t1);
    for (size_t i = 0; i < n1;) {
        if (t1[i] == '[') {
            size_t j = i + 1;
            while (j < n1 && t1[j] != ']' && t1[j] != '\n') j++;
            if (j < n1 && t1[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        tl_sb_add(&s2, t1 + i++, 1);
    }
    free(t1);
    char *t2 = tl_sb_take(&s2);
    if (!t2) return NULL;
    tl_sbuf s3 = {0};
    size_t n2 = strlen(t2);
    for (size_t i = 0; i < n2;) {
        if (i + 1 < n2 && t2[i] == ' ' && t2[i + 1] == ' ') {
            tl_sb_add(&s3, " ", 1);
            i += 2;
        } else tl_sb_add(&s3, t2 + i++, 1);
    }
    free(t2);
    return tl_sb_take(&s3);
}

/* ------------------------------------------------------------ docs -> requests */

int tl_eval_bfail(tl_eval_builder *b, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tl_fail(b->err, "%s:%d: %s", b->what, b->line, msg);
}

/* Adds a doc whose requests are (contexts[i], " " + conts[i]); choices[i] give
 * the acc_norm lengths.  Takes ownership of nothing; copies strings. */
int tl_eval_add_doc(tl_eval_builder *b, int n, const char *const *contexts, const char *const *conts,
                    const char *const *choices, int gold) {
    tl_eval_task *t = b->t;
    if (gold < 0 || gold >= n) return tl_eval_bfail(b, "answer index %d is out of range for %d choices", gold, n);
    if (t->n_docs == b->cap_docs) {
        int cap = b->cap_docs ? 2 * b->cap_docs : 64;
        tl_eval_doc *d = realloc(t->docs, sizeof *d * (size_t)cap);
        if (!d) return tl_eval_bfail(b, "out of memory");
        t->docs = d;
        b->cap_docs = cap;
    }
    while (t->n_reqs + n > b->cap_reqs) {
        int cap = b->cap_reqs ? 2 * b->cap_reqs : 256;
        tl_eval_request *r = realloc(t->reqs, sizeof *r * (size_t)cap);
        if (!r) return tl_eval_bfail(b, "out of memory");
        t->reqs = r;
        b->cap_reqs = cap;
    }
    tl_eval_doc *d = &t->docs[t->n_docs];
    memset(d, 0, sizeof *d);
    d->n_choices = n;
    d->gold = gold;
    d->line = b->line;
    d->subject = b->subject;
    d->first_req = t->n_reqs;
    d->choice_len = malloc(sizeof(double) * (size_t)n);
    if (!d->choice_len) return tl_eval_bfail(b, "out of memory");
    t->n_docs++; /* from here the doc is owned by the task (freed with it) */
    for (int i = 0; i < n; i++) {
        tl_eval_request *r = &t->reqs[t->n_reqs];
        memset(r, 0, sizeof *r);
        r->doc = t->n_docs - 1;
        tl_sbuf c = {0};
        tl_sb_str(&c, " "); /* the harness's target_delimiter */
        tl_sb_str(&c, conts[i]);
        r->continuation = tl_sb_take(&c);
        r->context = strdup(contexts[i]);
        t->n_reqs++;
        if (!r->context || !r->continuation) return tl_eval_bfail(b, "out of memory");
        if (!r->context[0]) return tl_eval_bfail(b, "empty context");
        d->choice_len[i] = char_len(choices[i]);
    }
    return 0;
}

static const cJSON *field(tl_eval_builder *b, const cJSON *obj, const char *name, const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) tl_eval_bfail(b, "missing field \"%s\"", path);
    return it;
}

static const char *str_field(tl_eval_builder *b, const cJSON *obj, const char *name, const char *path) {
    const cJSON *it = field(b, obj, name, path);
    if (!it) return NULL;
    if (!cJSON_IsString(it)) {
        tl_eval_bfail(b, "field \"%s\" must be a string", path);
        return NULL;
    }
    return it->valuestring;
}

/* An integer label given as a JSON number or a string of digits. */
static int int_field(tl_eval_builder *b, const cJSON *obj, const char *name, int *out) {
    const cJSON *it = field(b, obj, name, name);
    if (!it) return -1;
    if (cJSON_IsNumber(it) && it->valuedouble == (double)(int)it->valuedouble) {
        *out = (int)it->valuedouble;
        return 0;
    }
    if (cJSON_IsString(it) && it->valuestring[0]) {
        char *end;
        long v = strtol(it->valuestring, &end, 10);
        if (!*end && v >= -1000000 && v <= 1000000) {
            *out = (int)v;
            return 0;
        }
    }
    return tl_eval_bfail(b, "field \"%s\" must be an integer", name);
}

static int doc_hellaswag(tl_eval_builder *b, const cJSON *o) {
    const char *act = str_field(b, o, "activity_label", "activity_label");
    const char *ca = act ? str_field(b, o, "ctx_a", "ctx_a") : NULL;
    const char *cb = ca ? str_field(b, o, "ctx_b", "ctx_b") : NULL;
    const cJSON *ends = cb ? field(b, o, "endings", "endings") : NULL;
    int label = 0;
    if (!ends) return -1;
    if (!cJSON_IsArray(ends) || cJSON_GetArraySize(ends) < 2)
        return tl_eval_bfail(b, "field \"endings\" must be an array of at least 2 strings");
    if (int_field(b, o, "label", &label)) return -1;
    int n = cJSON_GetArraySize(ends);
    tl_sbuf q = {0};
    tl_sb_str(&q, act);
    tl_sb_str(&q, ": ");
    tl_sb_str(&q, ca);
    tl_sb_str(&q, " ");
    add_capitalized(&q, cb);
    char *raw = tl_sb_take(&q);
    char *ctx = raw ? hellaswag_preprocess(raw) : NULL;
    free(raw);
    char **choices = calloc((size_t)n, sizeof *choices);
    const char **ctxs = calloc((size_t)n, sizeof *ctxs);
    int rc = 0;
    if (!ctx || !choices || !ctxs) rc = tl_eval_bfail(b, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(ends, i);
        if (!cJSON_IsString(e)) rc = tl_eval_bfail(b, "endings[%d] must be a string", i);
        else if (!(choices[i] = hellaswag_preprocess(e->valuestring))) rc = tl_eval_bfail(b, "out of memory");
        ctxs[i] = ctx;
    }
    if (!rc) rc = tl_eval_add_doc(b, n, ctxs, (const char *const *)choices, (const char *const *)choices, label);
    for (int i = 0; choices && i < n; i++) free(choices[i]);
    free(choices);
    free(ctxs);
    free(ctx);
    return rc;
}

static int doc_piqa(tl_eval_builder *b, const cJSON *o, int label) {
    const char *goal = str_field(b, o, "goal", "goal");
    const char *s1 = goal ? str_field(b, o, "sol1", "sol1") : NULL;
    const char *s2 = s1 ? str_field(b, o, "sol2", "sol2") : NULL;
    if (!s2) return -1;
    tl_sbuf q = {0};
    tl_sb_str(&q, "Question: ");
    tl_sb_str(&q, goal);
    tl_sb_str(&q, "\nAnswer:");
    char *ctx = tl_sb_take(&q);
    if (!ctx) return tl_eval_bfail(b, "out of memory");
    const char *ctxs[2] = {ctx, ctx}, *ch[2] = {s1, s2};
    int rc = tl_eval_add_doc(b, 2, ctxs, ch, ch, label);
    free(ctx);
    return rc;
}

/* ARC / OpenBookQA: {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}. */
static int doc_arc(tl_eval_builder *b, const cJSON *o, int obqa) {
    const cJSON *q = field(b, o, "question", "question");
    if (!q) return -1;
    if (!cJSON_IsObject(q)) return tl_eval_bfail(b, "field \"question\" must be an object with stem and choices");
    const char *stem = str_field(b, q, "stem", "question.stem");
    const cJSON *chs = stem ? field(b, q, "choices", "question.choices") : NULL;
    const char *key = chs ? str_field(b, o, "answerKey", "answerKey") : NULL;
    if (!key) return -1;
    if (!cJSON_IsArray(chs) || cJSON_GetArraySize(chs) < 2)
        return tl_eval_bfail(b, "field \"question.choices\" must be an array of at least 2 choices");
    if (obqa) key += lead_space(key, strlen(key)); /* answerKey.lstrip() */
    int n = cJSON_GetArraySize(chs), gold = -1;
    const char **texts = calloc((size_t)n, sizeof *texts), **ctxs = calloc((size_t)n, sizeof *ctxs);
    char *ctx = NULL;
    int rc = 0;
    if (!texts || !ctxs) rc = tl_eval_bfail(b, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(chs, i);
        char path[64];
        snprintf(path, sizeof path, "question.choices[%d].text", i);
        texts[i] = cJSON_IsObject(c) ? str_field(b, c, "text", path) : NULL;
        snprintf(path, sizeof path, "question.choices[%d].label", i);
        const char *lab = texts[i] ? str_field(b, c, "label", path) : NULL;
        if (!cJSON_IsObject(c)) rc = tl_eval_bfail(b, "question.choices[%d] must be an object", i);
        else if (!lab) rc = -1;
        else if (gold < 0 && !strcmp(lab, key)) gold = i;
    }
    if (!rc && gold < 0) rc = tl_eval_bfail(b, "answerKey \"%s\" is not one of the choice labels", key);
    if (!rc) {
        tl_sbuf s = {0};
        if (!obqa) tl_sb_str(&s, "Question: ");
        tl_sb_str(&s, stem);
        if (!obqa) tl_sb_str(&s, "\nAnswer:");
        ctx = tl_sb_take(&s);
        if (!ctx) rc = tl_eval_bfail(b, "out of memory");
        for (int i = 0; !rc && i < n; i++) ctxs[i] = ctx;
    }
    if (!rc) rc = tl_eval_add_doc(b, n, ctxs, texts, texts, gold);
    free(ctx);
    free(texts);
    free(ctxs);
    return rc;
}

static int doc_winogrande(tl_eval_builder *b, const cJSON *o) {
    const char *sent = str_field(b, o, "sentence", "sentence");
    const char *o1 = sent ? str_field(b, o, "option1", "option1") : NULL;
    const char *o2 = o1 ? str_field(b, o, "option2", "option2") : NULL;
    const char *ans = o2 ? str_field(b, o, "answer", "answer") : NULL;
    if (!ans) return -1;
    int gold = !strcmp(ans, "1") ? 0 : !strcmp(ans, "2") ? 1 : -1;
    if (gold < 0) return tl_eval_bfail(b, "field \"answer\" must be \"1\" or \"2\", got \"%s\"", ans);
    const char *us = strchr(sent, '_');
    if (!us) return tl_eval_bfail(b, "field \"sentence\" has no \"_\" blank");
    size_t pre = (size_t)(us - sent);
    const char *rest = us + 1;
    size_t rn = strlen(rest), a = lead_space(rest, rn);
    size_t e = a < rn ? rn - trail_space(rest + a, rn - a) : rn;
    char *cont = strndup(rest + a, e - a);
    tl_sbuf c1 = {0}, c2 = {0};
    tl_sb_add(&c1, sent, pre);
    tl_sb_str(&c1, o1);
    tl_sb_add(&c2, sent, pre);
    tl_sb_str(&c2, o2);
    char *x1 = tl_sb_take(&c1), *x2 = tl_sb_take(&c2);
    int rc;
    if (!cont || !x1 || !x2) rc = tl_eval_bfail(b, "out of memory");
    else {
        const char *ctxs[2] = {x1, x2}, *conts[2] = {cont, cont};
        rc = tl_eval_add_doc(b, 2, ctxs, conts, ctxs, gold);
    }
    free(cont);
    free(x1);
    free(x2);
    return rc;
}

static int doc_boolq(tl_eval_builder *b, const cJSON *o) {
    const char *passage = str_field(b, o, "passage", "passage");
    const char *question = passage ? str_field(b, o, "question", "question") : NULL;
    const cJSON *ans = question ? field(b, o, "answer", "answer") : NULL;
    if (!ans) return -1;
    if (!cJSON_IsBool(ans)) return tl_eval_bfail(b, "field \"answer\" must be true or false");
    tl_sbuf s = {0};
    tl_sb_str(&s, passage);
    tl_sb_str(&s, "\nQuestion: ");
    tl_sb_str(&s, question);
    tl_sb_str(&s, "?\nAnswer:");
    char *ctx = tl_sb_take(&s);
    if (!ctx) return tl_eval_bfail(b, "out of memory");
    const char *ctxs[2] = {ctx, ctx}, *ch[2] = {"no", "yes"};
    int rc = tl_eval_add_doc(b, 2, ctxs, ch, ch, cJSON_IsTrue(ans) ? 1 : 0);
    free(ctx);
    return rc;
}

/* ------------------------------------------------------------ tokenization */

static int encode(const tl_eval_task *t, const tl_tokenizer *tok, const char *s, size_t n, int **ids,
                  size_t *len, tl_error *err) {
    if (t->tok_mode == TL_EVAL_TOK_SPM) return tl_tokenizer_encode(tok, s, n, TL_ENC_BOS, ids, len, err);
    return tl_eval_hf_encode(tok, s, n, 1, ids, len, err);
}

/* The harness's _encode_pair: trailing whitespace of the context moves to the
 * continuation; the whole string and the context are encoded (with BOS) and the
 * continuation is what follows the context's token count. */
static int encode_pair(const tl_eval_task *t, const tl_tokenizer *tok, tl_eval_request *r,
                       tl_error *err) {
    size_t cn = strlen(r->context), sp = trail_space(r->context, cn), kn = strlen(r->continuation);
    char *whole = malloc(cn + kn + 1);
    if (!whole) return tl_fail(err, "out of memory");
    memcpy(whole, r->context, cn);
    memcpy(whole + cn, r->continuation, kn + 1);
    int *w = NULL, *c = NULL;
    size_t nw = 0, nc = 0;
    int rc = encode(t, tok, whole, cn + kn, &w, &nw, err);
    if (!rc) rc = encode(t, tok, r->context, cn - sp, &c, &nc, err);
    free(whole);
    if (rc) {
        free(w);
        return -1;
    }
    if (nc > nw) nc = nw;
    if (nw - nc == 0) {
        free(w);
        free(c);
        return tl_fail(err, "continuation \"%s\" has no tokens", r->continuation);
    }
    r->ctx_ids = c;
    r->n_ctx = (int)nc;
    r->cont_ids = malloc(sizeof(int) * (nw - nc));
    if (!r->cont_ids) {
        free(w);
        return tl_fail(err, "out of memory");
    }
    memcpy(r->cont_ids, w + nc, sizeof(int) * (nw - nc));
    r->n_cont = (int)(nw - nc);
    free(w);
    return 0;
}

/* Tokenizes every request (independent: all cores); an error names the doc's
 * file (its subject's for multi-subject tasks, else `what`) and line. */
int tl_eval_tokenize_all(tl_eval_task *t, const tl_tokenizer *tok, const char *what, tl_error *err) {
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < t->n_reqs; i++) {
        tl_error e;
        int bad;
#pragma omp atomic read
        bad = failed;
        if (bad || !encode_pair(t, tok, &t->reqs[i], &e)) continue;
#pragma omp critical(tl_eval_tok_err)
        {
            int first;
#pragma omp atomic read
            first = failed;
            const tl_eval_doc *d = &t->docs[t->reqs[i].doc];
            const char *file = t->subject_files ? t->subject_files[d->subject] : what;
            if (!first) tl_fail(err, "%s:%d: %s", file, d->line, e.msg);
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------ loading */

void tl_eval_task_free(tl_eval_task *t) {
    if (!t) return;
    for (int i = 0; i < t->n_reqs; i++) {
        free(t->reqs[i].context);
        free(t->reqs[i].continuation);
        free(t->reqs[i].ctx_ids);
        free(t->reqs[i].cont_ids);
    }
    for (int i = 0; i < t->n_docs; i++) free(t->docs[i].choice_len);
    for (int i = 0; i < t->n_subjects; i++) {
        free(t->subjects[i]);
        if (t->subject_files) free(t->subject_files[i]);
    }
    free(t->subjects);
    free(t->subject_files);
    free(t->subject_group);
    free(t->reqs);
    free(t->docs);
    free(t);
}

/* Parses the PIQA labels text: one 0 or 1 per non-empty line. */
static int parse_labels(const char *text, const char *what, int **out, int *n, tl_error *err) {
    int cap = 0, cnt = 0, line = 0;
    int *v = NULL;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        line++;
        size_t a = lead_space(p, len), z = len - trail_space(p, len);
        if (a < z) {
            if (z - a != 1 || (p[a] != '0' && p[a] != '1')) {
                free(v);
                return tl_fail(err, "%s:%d: a label must be 0 or 1, got \"%.*s\"", what, line,
                               (int)(z - a > 40 ? 40 : z - a), p + a);
            }
            if (cnt == cap) {
                cap = cap ? 2 * cap : 256;
                int *nv = realloc(v, sizeof(int) * (size_t)cap);
                if (!nv) {
                    free(v);
                    return tl_fail(err, "out of memory");
                }
                v = nv;
            }
            v[cnt++] = p[a] - '0';
        }
        if (!e) break;
        p = e + 1;
    }
    *out = v;
    *n = cnt;
    return 0;
}

tl_eval_task *tl_eval_task_parse(tl_task_kind kind, const char *text, const char *what,
                                 const char *labels_text, const char *labels_what, long limit,
                                 const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err) {
    if ((unsigned)kind >= TL_TASK_COUNT) {
        tl_fail(err, "bad task");
        return NULL;
    }
    if (tl_task_is_multi_subject(kind) || tl_task_is_generation(kind)) {
        tl_fail(err, "%s: %s is not a zero-shot multiple-choice task", what, tl_task_name(kind));
        return NULL;
    }
    if (kind == TL_TASK_PIQA && !labels_text) {
        tl_fail(err, "%s: PIQA needs its labels file (one 0/1 per line, e.g. valid-labels.lst)", what);
        return NULL;
    }
    tl_eval_task *t = calloc(1, sizeof *t);
    if (!t) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    t->kind = kind;
    t->tok_mode = mode;
    int *labels = NULL, n_labels = 0;
    if (kind == TL_TASK_PIQA && parse_labels(labels_text, labels_what, &labels, &n_labels, err)) {
        free(t);
        return NULL;
    }
    tl_eval_builder b = {t, 0, 0, what, 0, 0, err};
    const char *p = text;
    int rc = 0, n_seen = 0;
    while (*p && !rc && (limit <= 0 || t->n_docs < limit)) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        b.line++;
        if (lead_space(p, len) < len) {
            cJSON *o = cJSON_ParseWithLength(p, len);
            if (!o || !cJSON_IsObject(o)) rc = tl_eval_bfail(&b, "not a JSON object");
            else {
                switch (kind) {
                case TL_TASK_HELLASWAG: rc = doc_hellaswag(&b, o); break;
                case TL_TASK_PIQA:
                    if (n_seen >= n_labels)
                        rc = tl_eval_bfail(&b, "no label for this line: %s has only %d labels", labels_what,
                                   n_labels);
                    else rc = doc_piqa(&b, o, labels[n_seen]);
                    break;
                case TL_TASK_ARC_EASY:
                case TL_TASK_ARC_CHALLENGE: rc = doc_arc(&b, o, 0); break;
                case TL_TASK_OPENBOOKQA: rc = doc_arc(&b, o, 1); break;
                case TL_TASK_WINOGRANDE: rc = doc_winogrande(&b, o); break;
                case TL_TASK_BOOLQ: rc = doc_boolq(&b, o); break;
                default: rc = tl_eval_bfail(&b, "bad task"); break;
                }
            }
            cJSON_Delete(o);
            n_seen++;
        }
        if (!e) break;
        p = e + 1;
    }
    if (!rc && kind == TL_TASK_PIQA && limit <= 0 && n_seen != n_labels)
        rc = tl_fail(err, "%s has %d labels but %s has %d examples", labels_what, n_labels, what, n_seen);
    free(labels);
    if (!rc && t->n_docs == 0) rc = tl_fail(err, "%s: no examples", what);
    if (!rc) rc = tl_eval_tokenize_all(t, tok, what, err);
    if (rc) {
        tl_eval_task_free(t);
        return NULL;
    }
    return t;
}

tl_eval_task *tl_eval_task_load(tl_task_kind kind, const char *data, const char *labels, long limit,
                                const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err) {
    if (tl_task_is_generation(kind)) {
        tl_fail(err, "%s is scored on generated text (tl_gen_task_load)", tl_task_name(kind));
        return NULL;
    }
    if (tl_task_is_multi_subject(kind)) {
        if (labels) {
            tl_fail(err, "%s takes no labels file", tl_task_name(kind));
            return NULL;
        }
        return tl_eval_mc_load(kind, data, 5, limit, tok, mode, err);
    }
    char *text = NULL, *ltext = NULL;
    size_t len;
    if (tl_read_file(data, (size_t)1 << 32, &text, &len, err)) return NULL;
    if (labels && tl_read_file(labels, (size_t)1 << 30, &ltext, &len, err)) {
        free(text);
        return NULL;
    }
    tl_eval_task *t = tl_eval_task_parse(kind, text, data, ltext, labels, limit, tok, mode, err);
    free(text);
    free(ltext);
    return t;
}

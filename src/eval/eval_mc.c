/* eval_mc.c - the few-shot multiple-choice benchmarks with one CSV file per
 * subject (MMLU, CMMLU, C-Eval), read from their release directories and
 * turned into lm-evaluation-harness's prompts: the subject's description line,
 * the first n_shot dev examples with their answers, then the question; the
 * choices are the letters " A" .. " D".  Also the harness's group aggregation
 * (size-weighted means, pooled standard errors).  docs/eval.md has the layouts. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

typedef struct {
    const char *name, *info; /* MMLU: category; CMMLU, C-Eval: the Chinese subject name */
} subject_info;

/* The subjects the harness defines (its task YAMLs), with the names its
 * description lines use. */
static const subject_info mmlu_subjects[] = {
    {"abstract_algebra", "stem"}, {"anatomy", "stem"}, {"astronomy", "stem"},
    {"business_ethics", "other"}, {"clinical_knowledge", "other"}, {"college_biology", "stem"},
    {"college_chemistry", "stem"}, {"college_computer_science", "stem"}, {"college_mathematics", "stem"},
    {"college_medicine", "other"}, {"college_physics", "stem"}, {"computer_security", "stem"},
    {"conceptual_physics", "stem"}, {"econometrics", "social_sciences"}, {"electrical_engineering", "stem"},
    {"elementary_mathematics", "stem"}, {"formal_logic", "humanities"}, {"global_facts", "other"},
    {"high_school_biology", "stem"}, {"high_school_chemistry", "stem"},
    {"high_school_computer_science", "stem"}, {"high_school_european_history", "humanities"},
    {"high_school_geography", "social_sciences"}, {"high_school_government_and_politics", "social_sciences"},
    {"high_school_macroeconomics", "social_sciences"}, {"high_school_mathematics", "stem"},
    {"high_school_microeconomics", "social_sciences"}, {"high_school_physics", "stem"},
    {"high_school_psychology", "social_sciences"}, {"high_school_statistics", "stem"},
    {"high_school_us_history", "humanities"}, {"high_school_world_history", "humanities"},
    {"human_aging", "other"}, {"human_sexuality", "social_sciences"}, {"international_law", "humanities"},
    {"jurisprudence", "humanities"}, {"logical_fallacies", "humanities"}, {"machine_learning", "stem"},
    {"management", "other"}, {"marketing", "other"}, {"medical_genetics", "other"},
    {"miscellaneous", "other"}, {"moral_disputes", "humanities"}, {"moral_scenarios", "humanities"},
    {"nutrition", "other"}, {"philosophy", "humanities"}, {"prehistory", "humanities"},
    {"professional_accounting", "other"}, {"professional_law", "humanities"},
    {"professional_medicine", "other"}, {"professional_psychology", "social_sciences"},
    {"public_relations", "social_sciences"}, {"security_studies", "social_sciences"},
    {"sociology", "social_sciences"}, {"us_foreign_policy", "social_sciences"}, {"virology", "other"},
    {"world_religions", "humanities"},
};

static const subject_info cmmlu_subjects[] = {
    {"agronomy", "农学"}, {"anatomy", "解剖学"}, {"ancient_chinese", "古汉语"}, {"arts", "艺术学"},
    {"astronomy", "天文学"}, {"business_ethics", "商业伦理"},
    {"chinese_civil_service_exam", "中国公务员考试"}, {"chinese_driving_rule", "中国驾驶规则"},
    {"chinese_food_culture", "中国饮食文化"}, {"chinese_foreign_policy", "中国外交政策"},
    {"chinese_history", "中国历史"}, {"chinese_literature", "中国文学"},
    {"chinese_teacher_qualification", "中国教师资格"}, {"clinical_knowledge", "临床知识"},
    {"college_actuarial_science", "大学精算学"}, {"college_education", "大学教育学"},
    {"college_engineering_hydrology", "大学工程水文学"}, {"college_law", "大学法律"},
    {"college_mathematics", "大学数学"}, {"college_medical_statistics", "大学医学统计"},
    {"college_medicine", "大学医学"}, {"computer_science", "计算机科学"},
    {"computer_security", "计算机安全"}, {"conceptual_physics", "概念物理学"},
    {"construction_project_management", "建设工程管理"}, {"economics", "经济学"}, {"education", "教育学"},
    {"electrical_engineering", "电气工程"}, {"elementary_chinese", "小学语文"},
    {"elementary_commonsense", "小学常识"}, {"elementary_information_and_technology", "小学信息技术"},
    {"elementary_mathematics", "初等数学"}, {"ethnology", "民族学"}, {"food_science", "食品科学"},
    {"genetics", "遗传学"}, {"global_facts", "全球事实"}, {"high_school_biology", "高中生物"},
    {"high_school_chemistry", "高中化学"}, {"high_school_geography", "高中地理"},
    {"high_school_mathematics", "高中数学"}, {"high_school_physics", "高中物理学"},
    {"high_school_politics", "高中政治"}, {"human_sexuality", "人类性行为"},
    {"international_law", "国际法学"}, {"journalism", "新闻学"}, {"jurisprudence", "法理学"},
    {"legal_and_moral_basis", "法律与道德基础"}, {"logical", "逻辑学"}, {"machine_learning", "机器学习"},
    {"management", "管理学"}, {"marketing", "市场营销"}, {"marxist_theory", "马克思主义理论"},
    {"modern_chinese", "现代汉语"}, {"nutrition", "营养学"}, {"philosophy", "哲学"},
    {"professional_accounting", "专业会计"}, {"professional_law", "专业法学"},
    {"professional_medicine", "专业医学"}, {"professional_psychology", "专业心理学"},
    {"public_relations", "公共关系"}, {"security_study", "安全研究"}, {"sociology", "社会学"},
    {"sports_science", "体育学"}, {"traditional_chinese_medicine", "中医中药"}, {"virology", "病毒学"},
    {"world_history", "世界历史"}, {"world_religions", "世界宗教"},
};

static const subject_info ceval_subjects[] = {
    {"accountant", "注册会计师"}, {"advanced_mathematics", "高等数学"}, {"art_studies", "艺术学"},
    {"basic_medicine", "基础医学"}, {"business_administration", "工商管理"},
    {"chinese_language_and_literature", "中国语言文学"}, {"civil_servant", "公务员"},
    {"clinical_medicine", "临床医学"}, {"college_chemistry", "大学化学"},
    {"college_economics", "大学经济学"}, {"college_physics", "大学物理"},
    {"college_programming", "大学编程"}, {"computer_architecture", "计算机组成"},
    {"computer_network", "计算机网络"}, {"discrete_mathematics", "离散数学"},
    {"education_science", "教育学"}, {"electrical_engineer", "注册电气工程师"},
    {"environmental_impact_assessment_engineer", "环境影响评价工程师"},
    {"fire_engineer", "注册消防工程师"}, {"high_school_biology", "高中生物"},
    {"high_school_chemistry", "高中化学"}, {"high_school_chinese", "高中语文"},
    {"high_school_geography", "高中地理"}, {"high_school_history", "高中历史"},
    {"high_school_mathematics", "高中数学"}, {"high_school_physics", "高中物理"},
    {"high_school_politics", "高中政治"}, {"ideological_and_moral_cultivation", "思想道德修养与法律基础"},
    {"law", "法学"}, {"legal_professional", "法律职业资格"}, {"logic", "逻辑学"},
    {"mao_zedong_thought", "毛泽东思想和中国特色社会主义理论体系概论"},
    {"marxism", "马克思主义基本原理"}, {"metrology_engineer", "注册计量师"},
    {"middle_school_biology", "初中生物"}, {"middle_school_chemistry", "初中化学"},
    {"middle_school_geography", "初中地理"}, {"middle_school_history", "初中历史"},
    {"middle_school_mathematics", "初中数学"}, {"middle_school_physics", "初中物理"},
    {"middle_school_politics", "初中政治"}, {"modern_chinese_history", "近代史纲要"},
    {"operating_system", "操作系统"}, {"physician", "医师资格"}, {"plant_protection", "植物保护"},
    {"probability_and_statistics", "概率统计"}, {"professional_tour_guide", "导游资格"},
    {"sports_science", "体育学"}, {"tax_accountant", "税务师"}, {"teacher_qualification", "教师资格"},
    {"urban_and_rural_planner", "注册城乡规划师"}, {"veterinary_medicine", "兽医学"},
};

static const char *const mmlu_groups[] = {"humanities", "other", "social_sciences", "stem"};

const char *tl_task_group_name(tl_task_kind k, int g) {
    if (k == TL_TASK_MMLU && g >= 0 && g < 4) return mmlu_groups[g];
    return g == 0 ? "all" : "?";
}

/* Per task: the subject table, the split scored, how a subject's file is
 * named in a split, whether the CSV files have a header row. */
typedef struct {
    const subject_info *subjects;
    int n_subjects;
    const char *eval_split;
    int suffixed; /* files are SUBJECT_SPLIT.csv (MMLU, C-Eval), else SUBJECT.csv */
    int header;
} mc_spec;

static mc_spec spec_of(tl_task_kind k) {
    mc_spec s;
    if (k == TL_TASK_MMLU)
        s = (mc_spec){mmlu_subjects, (int)(sizeof mmlu_subjects / sizeof *mmlu_subjects), "test", 1, 0};
    else if (k == TL_TASK_CMMLU)
        s = (mc_spec){cmmlu_subjects, (int)(sizeof cmmlu_subjects / sizeof *cmmlu_subjects), "test", 0, 1};
    else s = (mc_spec){ceval_subjects, (int)(sizeof ceval_subjects / sizeof *ceval_subjects), "val", 1, 1};
    return s;
}

/* ------------------------------------------------------------ CSV */

/* One record of RFC 4180 CSV (quoted fields may hold commas, newlines and ""),
 * as Python's csv module writes it; \r\n or \n ends a record. */
typedef struct {
    char **f;
    int n, cap;
} csv_rec;

static void rec_clear(csv_rec *r) {
    for (int i = 0; i < r->n; i++) free(r->f[i]);
    r->n = 0;
}

static int rec_push(csv_rec *r, const char *s, size_t n) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 8;
        char **f = realloc(r->f, sizeof *f * (size_t)cap);
        if (!f) return -1;
        r->f = f;
        r->cap = cap;
    }
    char *c = malloc(n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    c[n] = 0;
    r->f[r->n++] = c;
    return 0;
}

/* Reads the record at text[*pos]; *line advances over its newlines. Returns 1
 * for a record, 0 at the end, -1 on error (message in *why). */
static int csv_next(const char *text, size_t len, size_t *pos, int *line, csv_rec *r, const char **why) {
    rec_clear(r);
    size_t i = *pos;
    if (i >= len) return 0;
    char *buf = malloc(len - i + 1);
    if (!buf) {
        *why = "out of memory";
        return -1;
    }
    for (;;) { /* one field */
        size_t k = 0;
        if (i < len && text[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    free(buf);
                    *why = "unterminated quoted field (truncated file?)";
                    return -1;
                }
                if (text[i] == '"') {
                    if (i + 1 < len && text[i + 1] == '"') buf[k++] = '"', i += 2;
                    else {
                        i++;
                        break;
                    }
                } else {
                    if (text[i] == '\n') (*line)++;
                    buf[k++] = text[i++];
                }
            }
            if (i < len && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                free(buf);
                *why = "text after a closing quote";
                return -1;
            }
        } else {
            while (i < len && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < len && text[i + 1] == '\n'))
                buf[k++] = text[i++];
        }
        if (rec_push(r, buf, k)) {
            free(buf);
            *why = "out of memory";
            return -1;
        }
        if (i < len && text[i] == ',') {
            i++;
            continue;
        }
        if (i < len && text[i] == '\r') i++;
        if (i < len && text[i] == '\n') i++, (*line)++;
        break;
    }
    free(buf);
    *pos = i;
    return 1;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && *p < 0xC2)) return 0;
        p++;
        for (int k = 0; k < n; k++, p++)
            if ((*p & 0xC0) != 0x80) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ one subject file */

typedef struct {
    char *question, *choice[4];
    int answer; /* 0..3, -1 when the split has no answers */
    int line;
} mc_row;

static void rows_free(mc_row *rows, int n) {
    for (int i = 0; i < n; i++) {
        free(rows[i].question);
        for (int c = 0; c < 4; c++) free(rows[i].choice[c]);
    }
    free(rows);
}

static int col_index(const csv_rec *h, const char *name) {
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->f[i], name)) return i;
    return -1;
}

/* Reads up to max_rows (<= 0: all) question rows of a subject file.  Columns:
 * MMLU question,A,B,C,D,answer (no header); CMMLU a header naming
 * Question,A,B,C,D,Answer; C-Eval a header naming question,A,B,C,D,answer. */
static int read_rows(tl_task_kind kind, const char *path, int max_rows, mc_row **out, int *n_out,
                     tl_error *err) {
    *out = NULL;
    *n_out = 0;
    char *text;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 30, &text, &len, err)) return -1;
    size_t pos = 0;
    int line = 1, rc = 0, n = 0, cap = 0, ncols = 6;
    int col[6] = {0, 1, 2, 3, 4, 5}; /* question, A, B, C, D, answer */
    const char *why = NULL;
    csv_rec rec = {0};
    mc_row *rows = NULL;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3; /* a UTF-8 byte order mark */
    if (kind != TL_TASK_MMLU) {
        int at = line;
        int got = csv_next(text, len, &pos, &line, &rec, &why);
        if (got <= 0) {
            rc = got < 0 ? tl_fail(err, "%s:%d: %s", path, at, why) : tl_fail(err, "%s: empty file (no header row)", path);
        } else {
            const char *names[6] = {kind == TL_TASK_CMMLU ? "Question" : "question", "A", "B", "C", "D",
                                    kind == TL_TASK_CMMLU ? "Answer" : "answer"};
            ncols = rec.n;
            for (int c = 0; c < 6 && !rc; c++) {
                col[c] = col_index(&rec, names[c]);
                /* C-Eval's test split has no answers */
                if (col[c] < 0 && !(c == 5 && kind == TL_TASK_CEVAL))
                    rc = tl_fail(err, "%s:%d: the header has no \"%s\" column", path, at, names[c]);
            }
        }
    }
    while (!rc && (max_rows <= 0 || n < max_rows)) {
        int at = line;
        int got = csv_next(text, len, &pos, &line, &rec, &why);
        if (got < 0) rc = tl_fail(err, "%s:%d: %s", path, at, why);
        if (got <= 0) break;
        if (rec.n == 1 && !rec.f[0][0]) continue; /* a blank line */
        if (rec.n != ncols) {
            rc = tl_fail(err, "%s:%d: %d fields, expected %d", path, at, rec.n, ncols);
            break;
        }
        for (int c = 0; c < rec.n && !rc; c++)
            if (!utf8_valid(rec.f[c])) rc = tl_fail(err, "%s:%d: field %d is not valid UTF-8", path, at, c + 1);
        if (rc) break;
        int ans = -1;
        if (col[5] >= 0) {
            const char *a = rec.f[col[5]];
            if (a[0] < 'A' || a[0] > 'D' || a[1]) {
                rc = tl_fail(err, "%s:%d: answer \"%.20s\" is not one of A, B, C, D", path, at, a);
                break;
            }
            ans = a[0] - 'A';
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            mc_row *nr = realloc(rows, sizeof *nr * (size_t)cap);
            if (!nr) {
                rc = tl_fail(err, "out of memory");
                break;
            }
            rows = nr;
        }
        mc_row *r = &rows[n];
        memset(r, 0, sizeof *r);
        n++;
        r->answer = ans;
        r->line = at;
        r->question = strdup(rec.f[col[0]]);
        for (int c = 0; c < 4; c++) r->choice[c] = strdup(rec.f[col[1 + c]]);
        if (!r->question || !r->choice[0] || !r->choice[1] || !r->choice[2] || !r->choice[3])
            rc = tl_fail(err, "out of memory");
    }
    rec_clear(&rec);
    free(rec.f);
    free(text);
    if (rc) {
        rows_free(rows, n);
        return -1;
    }
    *out = rows;
    *n_out = n;
    return 0;
}

/* ------------------------------------------------------------ prompts */

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* The harness's doc_to_text: "{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"
 * ("\n答案：" for the Chinese benchmarks). Returns -1 for an empty question. */
static int add_doc_text(char **buf, size_t *len, size_t *cap, tl_task_kind kind, const mc_row *r) {
    const char *q = r->question;
    size_t a = 0, e = strlen(q);
    while (a < e && is_space((unsigned char)q[a])) a++;
    while (e > a && is_space((unsigned char)q[e - 1])) e--;
    if (a == e) return -1;
    size_t need = *len + (e - a) + 64;
    for (int c = 0; c < 4; c++) need += strlen(r->choice[c]);
    if (need > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < need) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -2;
        *buf = nb;
        *cap = nc;
    }
    char *p = *buf + *len;
    memcpy(p, q + a, e - a);
    p += e - a;
    for (int c = 0; c < 4; c++) p += sprintf(p, "\n%c. %s", 'A' + c, r->choice[c]);
    p += sprintf(p, "%s", kind == TL_TASK_MMLU ? "\nAnswer:" : "\n\xE7\xAD\x94\xE6\xA1\x88\xEF\xBC\x9A");
    *len = (size_t)(p - *buf);
    return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
    return 0;
}

/* The description line the harness's subject YAML gives. */
static void description(tl_task_kind kind, const subject_info *si, char *out, size_t n) {
    if (kind == TL_TASK_MMLU) {
        char name[128];
        snprintf(name, sizeof name, "%s", si->name);
        for (char *p = name; *p; p++)
            if (*p == '_') *p = ' ';
        snprintf(out, n, "The following are multiple choice questions (with answers) about %s.\n\n", name);
    } else if (kind == TL_TASK_CMMLU) {
        snprintf(out, n, "以下是关于%s的单项选择题，请直接给出正确答案的选项。\n\n", si->info);
    } else {
        snprintf(out, n, "以下是中国关于%s的单项选择题，请选出其中的正确答案。\n\n", si->info);
    }
}

/* ------------------------------------------------------------ loading */

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The subject names of the files in dir/split, sorted. */
static int list_subjects(const char *dir, const char *split, int suffixed, char ***out, int *n_out,
                         tl_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, split);
    DIR *d = opendir(path);
    if (!d) return tl_fail(err, "%s: cannot open the %s split directory (is %s the release's data directory?)", path, split, dir);
    char suffix[32];
    snprintf(suffix, sizeof suffix, suffixed ? "_%s.csv" : ".csv", split);
    size_t sl = strlen(suffix);
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && !rc) {
        size_t l = strlen(e->d_name);
        if (l <= sl || strcmp(e->d_name + l - sl, suffix)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) {
                rc = tl_fail(err, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strndup(e->d_name, l - sl))) rc = tl_fail(err, "out of memory");
        else n++;
    }
    closedir(d);
    if (!rc && n == 0) rc = tl_fail(err, "%s: no *%s files", path, suffix);
    if (rc) {
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
        return -1;
    }
    qsort(names, (size_t)n, sizeof *names, by_str);
    *out = names;
    *n_out = n;
    return 0;
}

static void subject_path(const char *dir, const mc_spec *sp, const char *subj, const char *split, char *out,
                         size_t n) {
    if (sp->suffixed) snprintf(out, n, "%s/%s/%s_%s.csv", dir, split, subj, split);
    else snprintf(out, n, "%s/%s/%s.csv", dir, split, subj);
}

tl_eval_task *tl_eval_mc_load(tl_task_kind kind, const char *dir, int n_shot, long limit,
                              const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err) {
    if (!tl_task_is_multi_subject(kind)) {
        tl_fail(err, "%s is not a multi-subject task", tl_task_name(kind));
        return NULL;
    }
    if (n_shot < 0 || n_shot > 64) {
        tl_fail(err, "%d few-shot examples: expected 0..64", n_shot);
        return NULL;
    }
    const mc_spec sp = spec_of(kind);
    tl_eval_task *t = calloc(1, sizeof *t);
    if (!t) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    t->kind = kind;
    t->tok_mode = mode;
    t->n_shot = n_shot;
    t->n_groups = kind == TL_TASK_MMLU ? 4 : 1;
    char **names = NULL;
    int n_names = 0;
    if (list_subjects(dir, sp.eval_split, sp.suffixed, &names, &n_names, err)) {
        free(t);
        return NULL;
    }
    t->subjects = names; /* owned by the task from here */
    t->n_subjects = n_names;
    t->subject_files = calloc((size_t)n_names, sizeof *t->subject_files);
    t->subject_group = calloc((size_t)n_names, sizeof *t->subject_group);
    int rc = !t->subject_files || !t->subject_group ? tl_fail(err, "out of memory") : 0;
    tl_eval_builder b = {t, 0, 0, NULL, 0, 0, err};
    char *ctx = NULL;
    size_t ctx_cap = 0;
    for (int s = 0; s < n_names && !rc; s++) {
        const subject_info *si = NULL;
        for (int k = 0; k < sp.n_subjects; k++)
            if (!strcmp(sp.subjects[k].name, names[s])) si = &sp.subjects[k];
        char path[4096], dev[4096];
        subject_path(dir, &sp, names[s], sp.eval_split, path, sizeof path);
        if (!si) {
            rc = tl_fail(err, "%s: \"%s\" is not a %s subject", path, names[s], tl_task_name(kind));
            break;
        }
        if (kind == TL_TASK_MMLU)
            for (int g = 0; g < 4; g++)
                if (!strcmp(si->info, mmlu_groups[g])) t->subject_group[s] = g;
        if (!(t->subject_files[s] = strdup(path))) {
            rc = tl_fail(err, "out of memory");
            break;
        }
        /* the few-shot prefix: description + the first n_shot dev examples */
        mc_row *shots = NULL, *rows = NULL;
        int n_dev = 0, n_rows = 0;
        subject_path(dir, &sp, names[s], "dev", dev, sizeof dev);
        if (n_shot > 0 && read_rows(kind, dev, n_shot, &shots, &n_dev, err)) {
            rc = -1;
            break;
        }
        if (n_dev < n_shot) {
            rows_free(shots, n_dev);
            rc = tl_fail(err, "%s: %d examples, fewer than the %d few-shot examples asked for", dev, n_dev, n_shot);
            break;
        }
        size_t ctx_len = 0, prefix_len;
        char desc[512];
        description(kind, si, desc, sizeof desc);
        rc = append(&ctx, &ctx_len, &ctx_cap, desc) ? tl_fail(err, "out of memory") : 0;
        for (int i = 0; i < n_shot && !rc; i++) {
            int a = add_doc_text(&ctx, &ctx_len, &ctx_cap, kind, &shots[i]);
            char tail[8] = {' ', (char)('A' + shots[i].answer), '\n', '\n', 0};
            if (a == -1) rc = tl_fail(err, "%s:%d: empty question", dev, shots[i].line);
            else if (a || append(&ctx, &ctx_len, &ctx_cap, tail)) rc = tl_fail(err, "out of memory");
            else if (shots[i].answer < 0) rc = tl_fail(err, "%s:%d: no answer column", dev, shots[i].line);
        }
        rows_free(shots, n_dev);
        prefix_len = ctx_len;
        if (!rc && read_rows(kind, path, (int)(limit > 0 && limit < (1L << 30) ? limit : 0), &rows, &n_rows, err))
            rc = -1;
        if (!rc && n_rows == 0) rc = tl_fail(err, "%s: no examples", path);
        b.what = t->subject_files[s];
        b.subject = s;
        for (int i = 0; i < n_rows && !rc; i++) {
            b.line = rows[i].line;
            ctx_len = prefix_len;
            int a = add_doc_text(&ctx, &ctx_len, &ctx_cap, kind, &rows[i]);
            if (a == -1) rc = tl_eval_bfail(&b, "empty question");
            else if (a) rc = tl_fail(err, "out of memory");
            else if (rows[i].answer < 0) rc = tl_eval_bfail(&b, "no answer column (C-Eval's test split has no answers: use val)");
            if (rc) break;
            const char *ctxs[4] = {ctx, ctx, ctx, ctx};
            const char *letters[4] = {"A", "B", "C", "D"};
            rc = tl_eval_add_doc(&b, 4, ctxs, letters, letters, rows[i].answer);
        }
        rows_free(rows, n_rows);
    }
    free(ctx);
    if (!rc && tok) rc = tl_eval_tokenize_all(t, tok, dir, err);
    if (rc) {
        tl_eval_task_free(t);
        return NULL;
    }
    return t;
}

tl_eval_task *tl_eval_task_load_fewshot(tl_task_kind kind, const char *dir, int n_shot, long limit,
                                        const tl_tokenizer *tok, tl_eval_tok_mode mode, tl_error *err) {
    return tl_eval_mc_load(kind, dir, n_shot, limit, tok, mode, err);
}

/* ------------------------------------------------------------ aggregation */

double tl_eval_pooled_stderr(const double *se, const int *n, int k) {
    double num = 0;
    long total = 0;
    int members = 0;
    for (int i = 0; i < k; i++) {
        if (n[i] == 0) continue;
        num += (n[i] - 1) * se[i] * se[i] * n[i];
        total += n[i];
        members++;
    }
    if (total - members <= 0) return NAN;
    return sqrt(num / (double)(total - members) / (double)total);
}

int tl_eval_mc_aggregate(const tl_eval_task *t, tl_eval_result *r, const double *acc, const double *accn,
                         tl_error *err) {
    const int S = t->n_subjects, G = t->n_groups > 0 ? t->n_groups : 1;
    r->n_subjects = S;
    r->n_groups = t->kind == TL_TASK_MMLU ? G : 0;
    r->subj_n = calloc((size_t)S, sizeof(int));
    r->subj_acc = calloc((size_t)S, sizeof(double));
    r->subj_acc_stderr = calloc((size_t)S, sizeof(double));
    r->subj_acc_norm = calloc((size_t)S, sizeof(double));
    r->subj_acc_norm_stderr = calloc((size_t)S, sizeof(double));
    r->group_n = calloc((size_t)G, sizeof(int));
    r->group_acc = calloc((size_t)G, sizeof(double));
    r->group_acc_stderr = calloc((size_t)G, sizeof(double));
    double *gn_se = calloc((size_t)G, sizeof(double)), *tmp_se = calloc((size_t)S, sizeof(double));
    int *tmp_n = calloc((size_t)S, sizeof(int));
    if (!r->subj_n || !r->subj_acc || !r->subj_acc_stderr || !r->subj_acc_norm || !r->subj_acc_norm_stderr ||
        !r->group_n || !r->group_acc || !r->group_acc_stderr || !gn_se || !tmp_se || !tmp_n) {
        free(gn_se), free(tmp_se), free(tmp_n);
        return tl_fail(err, "out of memory");
    }
    for (int d0 = 0; d0 < t->n_docs;) { /* docs of a subject are adjacent */
        const int s = t->docs[d0].subject;
        int d1 = d0;
        double sa = 0, sn = 0;
        while (d1 < t->n_docs && t->docs[d1].subject == s) sa += acc[d1], sn += accn[d1], d1++;
        r->subj_n[s] = d1 - d0;
        r->subj_acc[s] = sa / (d1 - d0);
        r->subj_acc_norm[s] = sn / (d1 - d0);
        r->subj_acc_stderr[s] = tl_eval_mean_stderr(acc + d0, d1 - d0);
        r->subj_acc_norm_stderr[s] = tl_eval_mean_stderr(accn + d0, d1 - d0);
        d0 = d1;
    }
    double ma = 0, mn = 0;
    for (int s = 0; s < S; s++) ma += r->subj_acc[s], mn += r->subj_acc_norm[s];
    r->acc_macro = ma / S;
    r->acc_norm_macro = tl_task_has_acc_norm(t->kind) ? mn / S : NAN;
    /* groups: size-weighted means, stderr pooled over their subjects */
    for (int g = 0; g < G; g++) {
        int k = 0;
        double sum = 0;
        for (int s = 0; s < S; s++)
            if (t->subject_group[s] == g) {
                tmp_se[k] = r->subj_acc_stderr[s];
                tmp_n[k++] = r->subj_n[s];
                sum += r->subj_acc[s] * r->subj_n[s];
                r->group_n[g] += r->subj_n[s];
            }
        r->group_acc[g] = r->group_n[g] ? sum / r->group_n[g] : NAN;
        r->group_acc_stderr[g] = tl_eval_pooled_stderr(tmp_se, tmp_n, k);
        if (t->kind != TL_TASK_MMLU) { /* one flat group: acc_norm pooled the same way */
            k = 0;
            for (int s = 0; s < S; s++) tmp_se[k] = r->subj_acc_norm_stderr[s], tmp_n[k++] = r->subj_n[s];
            gn_se[g] = tl_eval_pooled_stderr(tmp_se, tmp_n, k);
        }
    }
    if (t->kind == TL_TASK_MMLU) { /* the top group pools its categories, as the harness nests them */
        r->acc_stderr = tl_eval_pooled_stderr(r->group_acc_stderr, r->group_n, G);
    } else {
        r->acc_stderr = r->group_acc_stderr[0];
        if (r->has_acc_norm) r->acc_norm_stderr = gn_se[0];
    }
    free(gn_se), free(tmp_se), free(tmp_n);
    return 0;
}

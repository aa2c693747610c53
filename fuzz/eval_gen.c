/* fuzz/eval_gen.c - the BIG-Bench Hard and HumanEval release readers on arbitrary
 * files.  Mode byte bit 0: 0 = BBH (the rest up to the first NUL is a task's
 * cot-prompts file, after it its bbh/TASK.json), 1 = HumanEval (a jsonl file; with
 * bit 1 set, the bytes are taken as a .gz file); bit 2 set: DROP (up to the first
 * NUL drop_dataset_train.json, after it drop_dataset_dev.json).  An accepted task
 * must have prompts that end in "\nA:" (BBH), equal the problem's prompt
 * (HumanEval), or hold three shots and gold answers with spans (DROP). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval_gen.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0];
    data++, size--;
    char dir[600], path[700];
    tl_error err;
    tl_gen_task *t;
    if (mode & 4) {
        snprintf(dir, sizeof dir, "%s/drop_root", fz_scratch());
        mkdir(dir, 0700);
        const uint8_t *nul = memchr(data, 0, size);
        size_t train_len = nul ? (size_t)(nul - data) : size;
        snprintf(path, sizeof path, "%s/drop_dataset_train.json", dir);
        fz_write(path, data, train_len);
        snprintf(path, sizeof path, "%s/drop_dataset_dev.json", dir);
        fz_write(path, nul ? nul + 1 : data, nul ? size - train_len - 1 : 0);
        t = tl_gen_task_load(TL_TASK_DROP, path, 4, NULL, &err);
    } else if (!(mode & 1)) {
        snprintf(dir, sizeof dir, "%s/bbh_root", fz_scratch());
        mkdir(dir, 0700);
        snprintf(path, sizeof path, "%s/bbh", dir);
        mkdir(path, 0700);
        snprintf(path, sizeof path, "%s/cot-prompts", dir);
        mkdir(path, 0700);
        const uint8_t *nul = memchr(data, 0, size);
        size_t cot_len = nul ? (size_t)(nul - data) : size;
        snprintf(path, sizeof path, "%s/cot-prompts/navigate.txt", dir);
        fz_write(path, data, cot_len);
        snprintf(path, sizeof path, "%s/bbh/navigate.json", dir);
        fz_write(path, nul ? nul + 1 : data, nul ? size - cot_len - 1 : 0);
        t = tl_gen_task_load(TL_TASK_BBH, dir, 4, NULL, &err);
    } else {
        fz_path(path, sizeof path, (mode & 2) ? "he.jsonl.gz" : "he.jsonl");
        fz_write(path, data, size);
        t = tl_gen_task_load(TL_TASK_HUMANEVAL, path, 4, NULL, &err);
    }
    if (!t) {
        fz_refused(err.msg);
        return 0;
    }
    fz_accepted();
    for (int i = 0; i < t->n_docs; i++) {
        const char *c = t->docs[i].context;
        size_t n = strlen(c);
        if (t->kind == TL_TASK_BBH && (n < 3 || strcmp(c + n - 3, "\nA:"))) abort();
        if (t->kind == TL_TASK_DROP) {
            int blank = 0;
            for (const char *p = c; (p = strstr(p, "\n\n")) != NULL; p += 2) blank++;
            if (blank < 3 || t->docs[i].n_answers < 1) abort();
            for (int a = 0; a < t->docs[i].n_answers; a++) {
                if (t->docs[i].answers[a].n < 1) abort();
                double em, f1;
                if (tl_drop_score(c, t->docs[i].answers, t->docs[i].n_answers, &em, &f1) || em < 0 || em > 1 ||
                    !(f1 >= 0 && f1 <= 1))
                    abort();
            }
        }
        if (t->kind == TL_TASK_HUMANEVAL) {
            if (strcmp(c, t->docs[i].prompt)) abort();
            char *prog = tl_gen_humaneval_program(&t->docs[i], "pass");
            if (!prog || strncmp(prog, c, n)) abort();
            free(prog);
        }
    }
    tl_gen_task_free(t);
    return 0;
}

/* fuzz/eval_mc.c - the MMLU / CMMLU / C-Eval release reader (CSV per subject,
 * few-shot prompts) on arbitrary files: the first byte picks the task, the rest
 * up to the first NUL is the subject's dev file, after it the scored split's
 * file.  An accepted task must have 4 requests per doc, each context ending in
 * the question's answer cue. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const tl_task_kind kinds[3] = {TL_TASK_MMLU, TL_TASK_CMMLU, TL_TASK_CEVAL};
    static const char *const dev_name[3] = {"dev/anatomy_dev.csv", "dev/agronomy.csv", "dev/accountant_dev.csv"};
    static const char *const eval_name[3] = {"test/anatomy_test.csv", "test/agronomy.csv", "val/accountant_val.csv"};
    const int k = data[0] % 3;
    data++, size--;
    const uint8_t *nul = memchr(data, 0, size);
    size_t dev_len = nul ? (size_t)(nul - data) : size;
    char dir[600], path[700];
    /* a fresh directory per task kind, so that only this input's files are in it */
    snprintf(dir, sizeof dir, "%s/k%d", fz_scratch(), k);
    const char *sub[3] = {"dev", k == 2 ? "val" : "test", ""};
    mkdir(dir, 0700);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, sub[i]);
        mkdir(path, 0700);
    }
    snprintf(path, sizeof path, "%s/%s", dir, dev_name[k]);
    fz_write(path, data, dev_len);
    snprintf(path, sizeof path, "%s/%s", dir, eval_name[k]);
    fz_write(path, nul ? nul + 1 : data, nul ? size - dev_len - 1 : 0);
    tl_error err;
    tl_eval_task *t = tl_eval_task_load_fewshot(kinds[k], dir, (int)(size % 3), 3, NULL, TL_EVAL_TOK_HF, &err);
    if (!t) {
        fz_refused(err.msg);
        return 0;
    }
    fz_accepted();
    if (t->n_reqs != 4 * t->n_docs || t->n_subjects != 1) abort();
    const char *cue = k == 0 ? "\nAnswer:" : "\n\xE7\xAD\x94\xE6\xA1\x88\xEF\xBC\x9A";
    for (int i = 0; i < t->n_reqs; i++) {
        size_t n = strlen(t->reqs[i].context), c = strlen(cue);
        if (n < c || strcmp(t->reqs[i].context + n - c, cue)) abort();
        if (t->docs[t->reqs[i].doc].gold < 0 || t->docs[t->reqs[i].doc].gold > 3) abort();
    }
    tl_eval_task_free(t);
    return 0;
}

/* main.c - runs every registered unit test; prints "N passed, N failed".
 * Usage: test_unit [substring-filter] */
#include "harness.h"

#include <cjson/cJSON.h>

#include "common.h"
#include "threads.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const tl_test tests_common[];
extern const tl_test tests_data_pipeline[];
extern const tl_test tests_mixture[];
extern const tl_test tests_model[];
extern const tl_test tests_output[];
extern const tl_test tests_ops[];
extern const tl_test tests_gemm[];
extern const tl_test tests_bf16[];
extern const tl_test tests_bf16_step[];
extern const tl_test tests_vec[];
extern const tl_test tests_formats[];
extern const tl_test tests_tokenizer[];
extern const tl_test tests_infer[];
extern const tl_test tests_eval[];
extern const tl_test tests_eval_mc[];
extern const tl_test tests_sandbox[];
extern const tl_test tests_eval_gen[];
extern const tl_test tests_eval_drop[];
extern const tl_test tests_distributed[];
extern const tl_test tests_validate[];
extern const tl_test tests_hf_files[];
extern const tl_test tests_gguf[];
extern const tl_test tests_quantize[];
extern const tl_test tests_gguf_write[];
extern const tl_test tests_train_setup[];
extern const tl_test tests_recipe[];
extern const tl_test tests_generate[];
extern const tl_test tests_infer_gguf[];
extern const tl_test tests_gemm_quant[];
extern const tl_test tests_kpack[];
extern const tl_test tests_wmat_move[];
extern const tl_test tests_cli[];
extern const tl_test tests_sft[];
extern const tl_test tests_serve[];
extern const tl_test tests_speculative[];

static const tl_test *const suites[] = {
    tests_common,
    tests_data_pipeline,
    tests_mixture,
    tests_ops,
    tests_gemm,
    tests_bf16,
    tests_bf16_step,
    tests_vec,
    tests_model,
    tests_output,
    tests_formats,
    tests_tokenizer,
    tests_infer,
    tests_eval,
    tests_eval_mc,
    tests_sandbox,
    tests_eval_gen,
    tests_eval_drop,
    tests_distributed,
    tests_validate,
    tests_hf_files,
    tests_gguf,
    tests_quantize,
    tests_gguf_write,
    tests_train_setup,
    tests_recipe,
    tests_generate,
    tests_infer_gguf,
    tests_gemm_quant,
    tests_kpack,
    tests_wmat_move,
    tests_cli,
    tests_sft,
    tests_serve,
    tests_speculative,
};

static char tmpdir_path[256];

const char *tl_test_shared_dir(void) {
    const char *e = getenv("TL_SHARED");
    return e ? e : "../shared";
}

const char *tl_test_fixture_dir(void) {
    const char *e = getenv("TL_FIXTURES");
    return e ? e : "tests/fixtures";
}

cJSON *tl_test_json_fixture(tl_test_ctx *t, const char *rel) {
    char path[600], *text;
    size_t len;
    tl_error err;
    snprintf(path, sizeof path, "%s/%s", tl_test_fixture_dir(), rel);
    if (tl_read_file(path, 1 << 26, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    CHECK_MSG(j != NULL, "cannot parse %s", path);
    return j;
}

tl_tokenizer *tl_test_llama2_tokenizer(tl_test_ctx *t) {
    char path[600];
    tl_error err;
    snprintf(path, sizeof path, "%s/tokenizers/llama2/tokenizer.model", tl_test_shared_dir());
    tl_tokenizer *tok = tl_tokenizer_load(path, &err);
    CHECK_MSG(tok != NULL, "%s", err.msg);
    return tok;
}

int tl_test_ids_equal(const cJSON *arr, const int *ids, int n) {
    if (cJSON_GetArraySize(arr) != n) return 0;
    for (int i = 0; i < n; i++)
        if ((int)cJSON_GetArrayItem(arr, i)->valuedouble != ids[i]) return 0;
    return 1;
}

double tl_test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

double tl_test_attention_err(const float *o, const float *q, const float *k, const float *v, int T, int H, int KV,
                             int hd) {
    const int qs = H * hd, ks = KV * hd;
    double *sc = malloc(sizeof(double) * (size_t)T), worst = 0;
    for (int i = 0; i < T; i++)
        for (int h = 0; h < H; h++) {
            const int kh = h / (H / KV);
            double mx = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)q[i * qs + h * hd + e] * k[j * ks + kh * hd + e];
                sc[j] = d / sqrt((double)hd);
                if (sc[j] > mx) mx = sc[j];
            }
            for (int j = 0; j <= i; j++) sum += sc[j] = exp(sc[j] - mx);
            for (int e = 0; e < hd; e++) {
                double ref = 0;
                for (int j = 0; j <= i; j++) ref += sc[j] / sum * v[j * ks + kh * hd + e];
                worst = fmax(worst, fabs(o[i * qs + h * hd + e] - ref));
            }
        }
    free(sc);
    return worst;
}

const char *tl_test_tmpdir(void) {
    if (!tmpdir_path[0]) {
        snprintf(tmpdir_path, sizeof tmpdir_path, "/tmp/tl_test_XXXXXX");
        if (!mkdtemp(tmpdir_path)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir_path;
}

void tl_test_buf_put(tl_test_buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

int main(int argc, char **argv) {
    tl_threads_wait_policy(argv); /* as the program does: a short OpenMP spin */
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        for (const tl_test *tc = suites[s]; tc->name; tc++) {
            if (filter && !strstr(tc->name, filter)) continue;
            tl_test_ctx ctx = {tc->name, 0};
            tc->fn(&ctx);
            printf("%s %s\n", ctx.failures ? "FAIL" : "ok  ", tc->name);
            fflush(stdout);
            if (ctx.failures) failed++;
            else passed++;
        }
    }
    if (tmpdir_path[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_path);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir_path);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* harness.h - a tiny unit-test harness.  Each tests/test_<module>.c defines a
 * NULL-terminated table `const tl_test tests_<module>[]`, listed in tests/main.c. */
#ifndef TL_HARNESS_H
#define TL_HARNESS_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *name;
    int failures;
} tl_test_ctx;

typedef struct {
    const char *name;
    void (*fn)(tl_test_ctx *t);
} tl_test;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            t->failures++;                                                           \
            fprintf(stderr, "  %s:%d: %s: check failed: %s\n", __FILE__, __LINE__,   \
                    t->name, #cond);                                                 \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) {                                                               \
            t->failures++;                                                           \
            fprintf(stderr, "  %s:%d: %s: ", __FILE__, __LINE__, t->name);           \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
        }                                                                            \
    } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                \
    do {                                                                             \
        double a_ = (a), b_ = (b);                                                   \
        if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_))) {                       \
            t->failures++;                                                           \
            fprintf(stderr, "  %s:%d: %s: %s = %.9g, expected %s = %.9g\n", __FILE__, \
                    __LINE__, t->name, #a, a_, #b, b_);                              \
        }                                                                            \
    } while (0)

/* Directory of the shared test assets (../shared beside the repo), overridable
 * by TL_SHARED; and of checked-in fixtures. */
const char *tl_test_shared_dir(void);
const char *tl_test_fixture_dir(void);
/* Fixture files the oracle scripts wrote: rel (under tl_test_fixture_dir())
 * parsed as JSON, a failed check and NULL when it cannot be read or parsed. */
struct cJSON *tl_test_json_fixture(tl_test_ctx *t, const char *rel);
/* The real Llama 2 tokenizer from the shared assets (a failed check and NULL
 * when it does not load). */
struct tl_tokenizer *tl_test_llama2_tokenizer(tl_test_ctx *t);
/* Whether the JSON number array arr holds exactly ids[0..n). */
int tl_test_ids_equal(const struct cJSON *arr, const int *ids, int n);
/* max |a - b| / max |b| over n values: a scale-aware error for a whole tensor */
double tl_test_rel_err(const float *a, const float *b, size_t n);
/* max |o - attention(q, k, v)| with attention computed in double precision from
 * its definition: causal, GQA (query head h reads KV head h / (H/KV)), scale
 * 1/sqrt(hd); q, o [T, H*hd], k, v [T, KV*hd] */
double tl_test_attention_err(const float *o, const float *q, const float *k, const float *v, int T, int H, int KV,
                             int hd);

/* A hand-written HF tokenizer.json: BPE without byte fallback (unknown characters
 * fuse into one <unk>), vocabulary <unk> <s> </s> a b ab \u2581 \u2581a \u2581ab, merges
 * "a b", "\u2581 a", "\u2581 ab", the Llama normalizer (prepend and replace by \u2581). */
#define TL_TEST_TINY_TOKENIZER_JSON \
        "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"\
        "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"\
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"\
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"\
        "\"pre_tokenizer\":null,"\
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":false,"\
        "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"a\":3,\"b\":4,\"ab\":5,\"\xE2\x96\x81\":6,"\
        "\"\xE2\x96\x81" "a\":7,\"\xE2\x96\x81" "ab\":8},"\
        "\"merges\":[\"a b\",\"\xE2\x96\x81 a\",\"\xE2\x96\x81 ab\"]}}"

/* A fresh temporary directory for this test (removed by the runner at exit). */
const char *tl_test_tmpdir(void);

/* A growable byte buffer for tests that build files byte by byte (free p). */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} tl_test_buf;
void tl_test_buf_put(tl_test_buf *b, const void *data, size_t n);

#endif

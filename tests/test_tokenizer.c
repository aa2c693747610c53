/* test_tokenizer.c - the tokenizer against fixtures written by the real
 * SentencePiece library (scripts/gen_tokenizer_fixtures.py), plus loader
 * robustness (truncation, corruption, absurd lengths, duplicates, unknown
 * fields, a bounded deterministic mutation fuzzer). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common.h"
#include "harness.h"
#include "tokenizer.h"

static char *path_join(char *buf, size_t cap, const char *a, const char *b) {
    snprintf(buf, cap, "%s/%s", a, b);
    return buf;
}

static tl_tokenizer *load_shared_llama(tl_test_ctx *t) {
    char p[512];
    tl_error e;
    path_join(p, sizeof p, tl_test_shared_dir(), "tokenizers/llama2/tokenizer.model");
    tl_tokenizer *tk = tl_tokenizer_load(p, &e);
    CHECK_MSG(tk != NULL, "load %s: %s", p, e.msg);
    return tk;
}

static tl_tokenizer *load_fixture_model(tl_test_ctx *t, const char *name) {
    char p[512], f[128];
    tl_error e;
    snprintf(f, sizeof f, "tokenizer/%s", name);
    path_join(p, sizeof p, tl_test_fixture_dir(), f);
    tl_tokenizer *tk = tl_tokenizer_load(p, &e);
    CHECK_MSG(tk != NULL, "load %s: %s", p, e.msg);
    return tk;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes hex in place; returns length or -1. */
static long unhex(char *s) {
    size_t n = strlen(s);
    if (n % 2) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int a = hexval(s[2 * i]), b = hexval(s[2 * i + 1]);
        if (a < 0 || b < 0) return -1;
        s[i] = (char)(a * 16 + b);
    }
    return (long)(n / 2);
}

static size_t parse_ids(const char *s, int *ids, size_t cap) {
    size_t n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (n < cap) ids[n] = (int)v;
        n++;
        s = end;
    }
    return n;
}

static uint64_t fnv_ids(uint64_t h, const int *ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

typedef struct {
    int enc, enc_fail, dec, dec_fail, stream_fail, corp, corp_fail;
} fx_stats;

static char *read_corpus(const char *name, size_t *len) {
    char p[512], *buf;
    tl_error e;
    snprintf(p, sizeof p, "%s/corpora/%s", tl_test_shared_dir(), name);
    if (tl_read_file(p, (size_t)1 << 28, &buf, len, &e)) return NULL;
    return buf;
}

/* Line starts of a corpus (split on '\n', final empty line dropped). */
static size_t corpus_lines(const char *buf, size_t len, size_t **starts) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\n') n++;
    if (len && buf[len - 1] != '\n') n++;
    *starts = malloc((n + 1) * sizeof **starts);
    size_t k = 0;
    (*starts)[k++] = 0;
    for (size_t i = 0; i < len && k <= n; i++)
        if (buf[i] == '\n') (*starts)[k++] = i + 1;
    if (k <= n) (*starts)[k] = len + 1;
    return n;
}

static void check_stream(tl_test_ctx *t, const tl_tokenizer *tk, const int *ids, size_t n,
                         const char *expect, size_t elen, fx_stats *st) {
    tl_decoder d;
    tl_decoder_init(&d, tk);
    char *acc = malloc(elen + 64 * n + 64);
    size_t al = 0;
    tl_error e;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        const char *o;
        size_t ol;
        if (tl_decoder_push(&d, ids[i], &o, &ol, &e)) ok = 0;
        else {
            memcpy(acc + al, o, ol);
            al += ol;
        }
    }
    const char *o;
    size_t ol;
    if (ok && tl_decoder_flush(&d, &o, &ol, &e) == 0) {
        memcpy(acc + al, o, ol);
        al += ol;
    } else {
        ok = 0;
    }
    if (!ok || al != elen || memcmp(acc, expect, elen) != 0) {
        if (st->stream_fail++ < 5) CHECK_MSG(0, "streaming decode differs from sentencepiece (%zu ids)", n);
    }
    tl_decoder_free(&d);
    free(acc);
}

/* Runs every line of tests/fixtures/tokenizer/<name>.txt against tk. */
static void run_fixture(tl_test_ctx *t, const tl_tokenizer *tk, const char *name, fx_stats *st) {
    char p[512], f[128];
    snprintf(f, sizeof f, "tokenizer/%s.txt", name);
    path_join(p, sizeof p, tl_test_fixture_dir(), f);
    FILE *fp = fopen(p, "r");
    CHECK_MSG(fp != NULL, "cannot open %s", p);
    if (!fp) return;
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    int *want = malloc(sizeof(int) * (1 << 18));
    const size_t want_cap = 1 << 18;
    char *corp_name = NULL, *corp = NULL;
    size_t corp_len = 0, *starts = NULL, nlines = 0;
    int lineno = 0;
    while (fgets(line, (int)cap, fp)) {
        lineno++;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\n') line[--ll] = '\0';
        if (line[0] == '#' || ll == 0) continue;
        char *fields[8];
        int nf = 0;
        char *s = line;
        fields[nf++] = s;
        while (nf < 8 && (s = strchr(s, '\t'))) {
            *s++ = '\0';
            fields[nf++] = s;
        }
        tl_error e;
        if (fields[0][0] == 'E' && nf == 4) {
            int flags = atoi(fields[1]);
            long tl = unhex(fields[2]);
            size_t nw = parse_ids(fields[3], want, want_cap);
            int *got;
            size_t ng;
            st->enc++;
            if (tl < 0 || tl_tokenizer_encode(tk, fields[2], (size_t)tl, flags, &got, &ng, &e)) {
                if (st->enc_fail++ < 10) CHECK_MSG(0, "%s:%d: encode failed: %s", name, lineno, e.msg);
                continue;
            }
            if (ng != nw || (ng && memcmp(got, want, ng * sizeof *got) != 0)) {
                if (st->enc_fail++ < 10) {
                    char buf[400];
                    size_t o = 0;
                    for (size_t i = 0; i < ng && o < sizeof buf - 16; i++)
                        o += (size_t)snprintf(buf + o, sizeof buf - o, " %d", got[i]);
                    CHECK_MSG(0, "%s:%d: ids differ from sentencepiece: got%s, want %s", name, lineno, buf,
                              fields[3]);
                }
            }
            free(got);
        } else if (fields[0][0] == 'D' && nf == 3) {
            size_t nw = parse_ids(fields[1], want, want_cap);
            long tl = unhex(fields[2]);
            char *got;
            size_t gl;
            st->dec++;
            if (tl < 0 || tl_tokenizer_decode(tk, want, nw, &got, &gl, &e)) {
                if (st->dec_fail++ < 10) CHECK_MSG(0, "%s:%d: decode failed: %s", name, lineno, e.msg);
                continue;
            }
            if (gl != (size_t)tl || memcmp(got, fields[2], gl) != 0) {
                if (st->dec_fail++ < 10)
                    CHECK_MSG(0, "%s:%d: decoded text differs from sentencepiece: '%s'", name, lineno, got);
            }
            check_stream(t, tk, want, nw, fields[2], (size_t)tl, st);
            free(got);
        } else if (fields[0][0] == 'C' && nf == 7) {
            if (!corp_name || strcmp(corp_name, fields[1]) != 0) {
                free(corp_name);
                free(corp);
                free(starts);
                corp_name = strdup(fields[1]);
                corp = read_corpus(fields[1], &corp_len);
                CHECK_MSG(corp != NULL, "cannot read corpus %s", fields[1]);
                if (!corp) break;
                nlines = corpus_lines(corp, corp_len, &starts);
            }
            size_t first = strtoull(fields[3], NULL, 10), n = strtoull(fields[4], NULL, 10);
            size_t count = strtoull(fields[5], NULL, 10);
            uint64_t hash = strtoull(fields[6], NULL, 16);
            st->corp++;
            if (first + n > nlines) {
                CHECK_MSG(0, "%s:%d: corpus %s has only %zu lines", name, lineno, fields[1], nlines);
                continue;
            }
            uint64_t h = 0xcbf29ce484222325ull;
            size_t total = 0;
            int ok = 1;
            if (!strcmp(fields[2], "lines")) {
                for (size_t k = first; k < first + n && ok; k++) {
                    int *got;
                    size_t ng;
                    size_t a = starts[k], b = starts[k + 1] - 1;
                    if (tl_tokenizer_encode(tk, corp + a, b - a, 0, &got, &ng, &e)) {
                        ok = 0;
                        break;
                    }
                    int sep = -1;
                    h = fnv_ids(fnv_ids(h, got, ng), &sep, 1);
                    total += ng;
                    free(got);
                }
            } else {
                int *got;
                size_t ng;
                size_t a = starts[first], b = starts[first + n];
                if (b > corp_len) b = corp_len;
                char *txt = malloc(b - a + 1);
                memcpy(txt, corp + a, b - a);
                size_t tlen = b - a;
                if (tlen == 0 || txt[tlen - 1] != '\n') txt[tlen++] = '\n';
                if (tl_tokenizer_encode(tk, txt, tlen, 0, &got, &ng, &e)) ok = 0;
                else {
                    h = fnv_ids(h, got, ng);
                    total = ng;
                    free(got);
                }
                free(txt);
            }
            if (!ok || total != count || h != hash) {
                if (st->corp_fail++ < 10)
                    CHECK_MSG(0, "%s:%d: %s lines %zu..%zu (%s): %zu ids, want %zu (hash %s)", name, lineno,
                              fields[1], first, first + n, fields[2], total, count,
                              h == hash ? "same" : "differs");
            }
        } else {
            CHECK_MSG(0, "%s:%d: malformed fixture line", name, lineno);
        }
    }
    fclose(fp);
    free(line);
    free(want);
    free(corp_name);
    free(corp);
    free(starts);
    printf("     %s: %d/%d encode, %d/%d decode (streaming %d failures), %d/%d corpus chunks agree\n", name,
           st->enc - st->enc_fail, st->enc, st->dec - st->dec_fail, st->dec, st->stream_fail,
           st->corp - st->corp_fail, st->corp);
    CHECK_MSG(st->enc > 100 && st->dec > 100, "%s: too few fixture cases", name);
}

static void test_tokenizer_known_ids(tl_test_ctx *t) {
    tl_tokenizer *tk = load_shared_llama(t);
    if (!tk) return;
    struct {
        const char *text;
        int ids[8];
        size_t n;
    } cases[] = {
        {"I believe the meaning of life is", {306, 4658, 278, 6593, 310, 2834, 338}, 7},
        {"Hello world", {15043, 3186}, 2},
        {"Hello\nworld", {15043, 13, 11526}, 3},
        {"\n", {29871, 13}, 2}, /* "\n" is byte piece 13 <0x0A>, after the dummy-prefix piece */
        {"", {0}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int *ids;
        size_t n;
        tl_error e;
        CHECK(tl_tokenizer_encode(tk, cases[c].text, strlen(cases[c].text), 0, &ids, &n, &e) == 0);
        CHECK_MSG(n == cases[c].n && (n == 0 || memcmp(ids, cases[c].ids, n * sizeof(int)) == 0),
                  "'%s' -> %zu ids", cases[c].text, n);
        free(ids);
    }
    CHECK(tl_tokenizer_vocab_size(tk) == 32000);
    CHECK(tl_tokenizer_bos_id(tk) == 1 && tl_tokenizer_eos_id(tk) == 2 && tl_tokenizer_unk_id(tk) == 0);
    CHECK(strcmp(tl_tokenizer_piece(tk, 13), "<0x0A>") == 0);
    CHECK(tl_tokenizer_piece(tk, 32000) == NULL && tl_tokenizer_piece(tk, -1) == NULL);
    CHECK(tl_tokenizer_piece_type(tk, 1) == TL_PIECE_CONTROL);
    CHECK(tl_tokenizer_piece_id(tk, "\xE2\x96\x81the", 6) == 278);
    int *ids;
    size_t n;
    tl_error e;
    CHECK(tl_tokenizer_encode(tk, "Hi", 2, TL_ENC_BOS | TL_ENC_EOS, &ids, &n, &e) == 0);
    CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 2);
    free(ids);
    /* decode errors on out-of-range ids */
    int bad[2] = {5, 32000};
    char *txt;
    size_t tl;
    CHECK(tl_tokenizer_decode(tk, bad, 2, &txt, &tl, &e) == -1 && strstr(e.msg, "32000"));
    CHECK(strlen(tl_tokenizer_hash_hex(tk)) == 16);
    tl_tokenizer_free(tk);
}

static void test_tokenizer_fixtures_llama2(tl_test_ctx *t) {
    tl_tokenizer *tk = load_shared_llama(t);
    if (!tk) return;
    fx_stats st = {0};
    run_fixture(t, tk, "llama2", &st);
    CHECK(st.corp > 100);
    tl_tokenizer_free(tk);
}

static void test_tokenizer_fixtures_small(tl_test_ctx *t) {
    static const char *const names[] = {"small_bpe", "small_bpe_unk", "small_bpe_unused", "ours_bpe"};
    for (size_t i = 0; i < 4; i++) {
        char m[64];
        snprintf(m, sizeof m, "%s.model", names[i]);
        tl_tokenizer *tk = load_fixture_model(t, m);
        if (!tk) continue;
        fx_stats st = {0};
        run_fixture(t, tk, names[i], &st);
        tl_tokenizer_free(tk);
    }
}

/* The real Llama 2 tokenizer converted to tokenizer.json by transformers, against
 * HF `tokenizers` (scripts/gen_tokenizer_json_fixtures.py): as written (Metaspace
 * pre-tokenizer, prepend_scheme "first", unk_token null) and in the legacy layout
 * (Prepend + Replace normalizer), which the test derives from it the way the
 * script does. */
static char *read_zst_fixture(tl_test_ctx *t, const char *name, size_t *len) {
    char p[512], f[128], *z;
    size_t zl;
    tl_error e;
    snprintf(f, sizeof f, "tokenizer/%s", name);
    path_join(p, sizeof p, tl_test_fixture_dir(), f);
    if (tl_read_file(p, 1u << 24, &z, &zl, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return NULL;
    }
    unsigned long long n = ZSTD_getFrameContentSize(z, zl);
    char *out = NULL;
    if (n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN && n < (1u << 26)) {
        out = malloc((size_t)n + 1);
        size_t got = out ? ZSTD_decompress(out, (size_t)n, z, zl) : 0;
        if (!out || ZSTD_isError(got) || got != n) {
            free(out);
            out = NULL;
        } else {
            out[n] = '\0';
            *len = (size_t)n;
        }
    }
    free(z);
    CHECK_MSG(out != NULL, "cannot decompress %s", p);
    return out;
}

static char *legacy_layout(const char *text) {
    cJSON *j = cJSON_Parse(text);
    if (!j) return NULL;
    cJSON *norm = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(norm, "normalizers");
    cJSON_AddStringToObject(norm, "type", "Sequence");
    cJSON *pre = cJSON_CreateObject(), *rep = cJSON_CreateObject(), *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(pre, "type", "Prepend");
    cJSON_AddStringToObject(pre, "prepend", "\xE2\x96\x81");
    cJSON_AddStringToObject(rep, "type", "Replace");
    cJSON_AddStringToObject(pat, "String", " ");
    cJSON_AddItemToObject(rep, "pattern", pat);
    cJSON_AddStringToObject(rep, "content", "\xE2\x96\x81");
    cJSON_AddItemToArray(list, pre);
    cJSON_AddItemToArray(list, rep);
    cJSON_ReplaceItemInObjectCaseSensitive(j, "normalizer", norm);
    cJSON_ReplaceItemInObjectCaseSensitive(j, "pre_tokenizer", cJSON_CreateNull());
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "model"), "unk_token",
                                           cJSON_CreateString("<unk>"));
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}

static void test_tokenizer_fixtures_hf_json(tl_test_ctx *t) {
    size_t len;
    char *text = read_zst_fixture(t, "llama2_hf.json.zst", &len);
    if (!text) return;
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load_json_text(text, len, "llama2_hf.json", &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (tk) {
        CHECK(tl_tokenizer_vocab_size(tk) == 32000 && tl_tokenizer_bos_id(tk) == 1 && tl_tokenizer_unk_id(tk) == 0);
        fx_stats st = {0};
        run_fixture(t, tk, "llama2_hf", &st);
        CHECK(st.corp > 100);
        tl_tokenizer_free(tk);
    }
    char *leg = legacy_layout(text);
    CHECK(leg != NULL);
    tk = leg ? tl_tokenizer_load_json_text(leg, strlen(leg), "llama2_hf_legacy.json", &e) : NULL;
    CHECK_MSG(tk != NULL, "%s", leg ? e.msg : "");
    if (tk) {
        fx_stats st = {0};
        run_fixture(t, tk, "llama2_hf_legacy", &st);
        CHECK(st.corp > 100);
        tl_tokenizer_free(tk);
    }
    free(leg);
    free(text);
}

/* The fixtures must be able to fail: a wrong expectation is caught. */
static void test_tokenizer_fixture_can_fail(tl_test_ctx *t) {
    tl_tokenizer *tk = load_shared_llama(t);
    if (!tk) return;
    int *ids;
    size_t n;
    tl_error e;
    CHECK(tl_tokenizer_encode(tk, "Hello world", 11, 0, &ids, &n, &e) == 0);
    CHECK(!(n == 2 && ids[0] == 15043 && ids[1] == 3187)); /* a deliberately wrong id */
    free(ids);
    tl_tokenizer_free(tk);
}

static void test_tokenizer_batch(tl_test_ctx *t) {
    tl_tokenizer *tk = load_shared_llama(t);
    if (!tk) return;
    size_t len;
    char *corp = read_corpus("botchan.txt", &len);
    CHECK(corp != NULL);
    if (!corp) {
        tl_tokenizer_free(tk);
        return;
    }
    size_t *starts;
    size_t nl = corpus_lines(corp, len, &starts);
    if (nl > 2000) nl = 2000;
    const char **texts = malloc(nl * sizeof *texts);
    size_t *lens = malloc(nl * sizeof *lens), *ns = malloc(nl * sizeof *ns);
    int **ids = malloc(nl * sizeof *ids);
    for (size_t i = 0; i < nl; i++) {
        texts[i] = corp + starts[i];
        lens[i] = starts[i + 1] - 1 - starts[i];
    }
    tl_error e;
    CHECK(tl_tokenizer_encode_batch(tk, texts, lens, nl, TL_ENC_BOS, 4, ids, ns, &e) == 0);
    int mismatch = 0;
    for (size_t i = 0; i < nl; i++) {
        int *one;
        size_t n1;
        CHECK(tl_tokenizer_encode(tk, texts[i], lens[i], TL_ENC_BOS, &one, &n1, &e) == 0);
        if (n1 != ns[i] || (n1 && memcmp(one, ids[i], n1 * sizeof *one))) mismatch++;
        free(one);
        free(ids[i]);
    }
    CHECK(mismatch == 0);
    free(texts);
    free(lens);
    free(ns);
    free(ids);
    free(starts);
    free(corp);
    tl_tokenizer_free(tk);
}

/* ---- loader robustness ---- */

typedef tl_test_buf bytes;

static void put(bytes *b, const void *d, size_t l) { tl_test_buf_put(b, d, l); }
static void put_varint(bytes *b, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        put(b, &c, 1);
    } while (v);
}
static void put_str(bytes *b, int field, const void *s, size_t l) {
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, l);
    put(b, s, l);
}
static void put_piece(bytes *b, const char *s, float score, int type, int extra_unknown) {
    bytes m = {0};
    put_str(&m, 1, s, strlen(s));
    put_varint(&m, 2 << 3 | 5);
    put(&m, &score, 4);
    if (type != 1) {
        put_varint(&m, 3 << 3);
        put_varint(&m, (uint64_t)type);
    }
    if (extra_unknown) {
        put_varint(&m, 99 << 3 | 0); /* unknown varint field */
        put_varint(&m, 12345);
        put_str(&m, 100, "junk", 4); /* unknown length-delimited field */
        put_varint(&m, 101 << 3 | 5);
        put(&m, "abcd", 4);
        put_varint(&m, 102 << 3 | 1);
        put(&m, "abcdefgh", 8);
        put_varint(&m, 103 << 3 | 3); /* a group */
        put_varint(&m, 1 << 3 | 0);
        put_varint(&m, 7);
        put_varint(&m, 103 << 3 | 4);
    }
    put_str(b, 1, m.p, m.n);
    free(m.p);
}

/* A tiny valid BPE model: <unk> <s> </s> a b ab ▁ ▁a (no byte fallback). */
static bytes tiny_model(int dup, int unknown_fields, int model_type) {
    bytes b = {0};
    put_piece(&b, "<unk>", 0, 2, 0);
    put_piece(&b, "<s>", 0, 3, 0);
    put_piece(&b, "</s>", 0, 3, 0);
    put_piece(&b, "a", -1, 1, unknown_fields);
    put_piece(&b, "b", -2, 1, 0);
    put_piece(&b, "ab", -0.5f, 1, 0);
    put_piece(&b, "\xE2\x96\x81", -3, 1, 0);
    put_piece(&b, dup ? "ab" : "\xE2\x96\x81" "a", -0.25f, 1, 0);
    bytes ts = {0};
    put_varint(&ts, 3 << 3);
    put_varint(&ts, (uint64_t)model_type);
    if (unknown_fields) {
        put_str(&ts, 777, "zzz", 3);
        put_varint(&ts, 41 << 3 | 2); /* bos_id with a wrong wire type: skipped as unknown */
        put_varint(&ts, 1);
        put(&ts, "x", 1);
    }
    put_str(&b, 2, ts.p, ts.n);
    free(ts.p);
    bytes ns = {0};
    put_str(&ns, 1, "identity", 8);
    put_varint(&ns, 4 << 3);
    put_varint(&ns, 0);
    put_str(&b, 3, ns.p, ns.n);
    free(ns.p);
    if (unknown_fields) {
        put_str(&b, 4, "self test data", 14);
        put_varint(&b, 1000 << 3 | 0);
        put_varint(&b, UINT64_MAX);
    }
    return b;
}

static void test_tokenizer_tiny_model(tl_test_ctx *t) {
    for (int uf = 0; uf < 2; uf++) {
        bytes b = tiny_model(0, uf, 2);
        tl_error e;
        tl_tokenizer *tk = tl_tokenizer_load_model_bytes(b.p, b.n, "tiny", &e);
        CHECK_MSG(tk != NULL, "tiny model (unknown fields %d): %s", uf, e.msg);
        if (tk) {
            int *ids;
            size_t n;
            /* "ab ab": ▁a (score -.25) vs ab (-.5): "▁ab" -> ▁a b; " ab" -> ▁a b; unknown 'c' -> unk,
             * consecutive unknowns merge into one */
            CHECK(tl_tokenizer_encode(tk, "ab abccx", 8, 0, &ids, &n, &e) == 0);
            int want[] = {7, 4, 7, 4, 0};
            CHECK_MSG(n == 5 && memcmp(ids, want, sizeof want) == 0, "tiny encode gave %zu ids", n);
            free(ids);
            char *txt;
            size_t tl;
            CHECK(tl_tokenizer_decode(tk, want, 5, &txt, &tl, &e) == 0);
            CHECK_MSG(strcmp(txt, "ab ab \xE2\x81\x87 ") == 0, "decoded '%s'", txt);
            free(txt);
            tl_tokenizer_free(tk);
        }
        free(b.p);
    }
    /* duplicate piece */
    bytes b = tiny_model(1, 0, 2);
    tl_error e;
    CHECK(tl_tokenizer_load_model_bytes(b.p, b.n, "dup", &e) == NULL);
    CHECK_MSG(strstr(e.msg, "already defined") != NULL, "%s", e.msg);
    free(b.p);
    /* unigram model: not supported */
    b = tiny_model(0, 0, 1);
    CHECK(tl_tokenizer_load_model_bytes(b.p, b.n, "uni", &e) == NULL);
    CHECK_MSG(strstr(e.msg, "unigram") && strstr(e.msg, "not supported"), "%s", e.msg);
    free(b.p);
    /* absurd length */
    unsigned char absurd[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
    CHECK(tl_tokenizer_load_model_bytes(absurd, sizeof absurd, "absurd", &e) == NULL);
    CHECK_MSG(strstr(e.msg, "absurd") && strstr(e.msg, "past the end"), "%s", e.msg);
    /* overlong varint, field 0, stray end-group, empty file, non-protobuf text */
    unsigned char v1[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    unsigned char v2[] = {0x00, 0x01};
    unsigned char v3[] = {0x0c};
    CHECK(tl_tokenizer_load_model_bytes(v1, sizeof v1, "v1", &e) == NULL);
    CHECK(tl_tokenizer_load_model_bytes(v2, sizeof v2, "v2", &e) == NULL);
    CHECK(tl_tokenizer_load_model_bytes(v3, sizeof v3, "v3", &e) == NULL);
    CHECK(tl_tokenizer_load_model_bytes("", 0, "empty", &e) == NULL);
    CHECK(tl_tokenizer_load_model_bytes("hello world", 11, "text", &e) == NULL);
    CHECK(tl_tokenizer_load("/nonexistent/tokenizer.model", &e) == NULL && strstr(e.msg, "/nonexistent"));
}

static void test_tokenizer_truncated_and_corrupt(tl_test_ctx *t) {
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer/small_bpe.model", tl_test_fixture_dir());
    char *data;
    size_t len;
    tl_error e;
    CHECK(tl_read_file(p, 1 << 24, &data, &len, &e) == 0);
    if (!data) return;
    /* every truncation either fails cleanly or (at a field boundary) loads */
    int fails = 0;
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 37)) {
        tl_tokenizer *tk = tl_tokenizer_load_model_bytes(data, cut, "cut", &e);
        if (!tk) {
            fails++;
            CHECK(e.msg[0] != '\0');
        }
        tl_tokenizer_free(tk);
    }
    CHECK(fails > 0);
    /* deterministic mutation fuzzing: flip / overwrite / insert bytes; the loaded
     * tokenizer (if any) must encode and decode without crashing */
    uint64_t rng = 0x1234567887654321ull;
    unsigned char *buf = malloc(len + 16);
    int loaded = 0;
    for (int iter = 0; iter < 400; iter++) {
        memcpy(buf, data, len);
        size_t n = len;
        int muts = 1 + iter % 4;
        for (int m = 0; m < muts; m++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(rng >> 33) % n;
            int kind = (int)(rng >> 20) % 3;
            if (kind == 0) buf[pos] ^= (unsigned char)(1u << ((rng >> 10) & 7));
            else if (kind == 1) buf[pos] = (unsigned char)(rng >> 40);
            else if (n > 1) n = pos + 1; /* truncate */
        }
        tl_tokenizer *tk = tl_tokenizer_load_model_bytes(buf, n, "fuzz", &e);
        if (tk) {
            loaded++;
            int *ids;
            size_t ni;
            const char *txt = "Hello \xff world 123 \xE6\x97\xA5";
            if (tl_tokenizer_encode(tk, txt, strlen(txt), 0, &ids, &ni, &e) == 0) {
                char *out;
                size_t ol;
                if (tl_tokenizer_decode(tk, ids, ni, &out, &ol, &e) == 0) free(out);
                free(ids);
            }
            tl_tokenizer_free(tk);
        }
    }
    CHECK(loaded > 0); /* some mutations hit scores and still load */
    free(buf);
    free(data);
}

static void test_tokenizer_json(tl_test_ctx *t) {
    const char *js = TL_TEST_TINY_TOKENIZER_JSON;
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load_json_text(js, strlen(js), "tiny.json", &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (!tk) return;
    int *ids;
    size_t n;
    /* merges by rank: a b first, then ▁ ab; ▁a never forms from "▁ab" */
    CHECK(tl_tokenizer_encode(tk, "ab bacc", 7, TL_ENC_BOS, &ids, &n, &e) == 0);
    int want[] = {1, 8, 6, 4, 3, 0};
    CHECK_MSG(n == 6 && memcmp(ids, want, sizeof want) == 0, "json encode gave %zu ids", n);
    free(ids);
    tl_tokenizer_free(tk);
    const char *bad = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}";
    CHECK(tl_tokenizer_load_json_text(bad, strlen(bad), "uni.json", &e) == NULL);
    CHECK_MSG(strstr(e.msg, "not supported") != NULL, "%s", e.msg);
    CHECK(tl_tokenizer_load_json_text("{", 1, "broken.json", &e) == NULL);
}

static void test_tokenizer_parse_special(tl_test_ctx *t) {
    tl_tokenizer *tk = load_shared_llama(t);
    if (!tk) return;
    int *ids;
    size_t n;
    tl_error e;
    CHECK(tl_tokenizer_encode(tk, "<s>", 3, 0, &ids, &n, &e) == 0);
    CHECK(n > 1); /* literal text by default */
    free(ids);
    CHECK(tl_tokenizer_encode(tk, "<s>", 3, TL_ENC_PARSE_SPECIAL, &ids, &n, &e) == 0);
    CHECK(n == 1 && ids[0] == 1);
    free(ids);
    tl_tokenizer_free(tk);
}

static void test_tokenizer_train(tl_test_ctx *t) {
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/train.txt", tl_test_tmpdir());
    snprintf(out, sizeof out, "%s/trained.model", tl_test_tmpdir());
    FILE *f = fopen(in, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int i = 0; i < 300; i++)
        fprintf(f, "        the cat  sat on  the mat %d times,  then  the dog ran %d laps\n", i, i * 7);
    fprintf(f, "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xff\n");
    fclose(f);
    tl_bpe_train_opts o;
    tl_bpe_train_default_opts(&o);
    o.vocab_size = 300;
    o.character_coverage = 1.0;
    const char *inputs[1] = {in};
    tl_error e;
    CHECK_MSG(tl_bpe_train(inputs, 1, &o, out, &e) == 0, "%s", e.msg);
    tl_tokenizer *tk = tl_tokenizer_load(out, &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (!tk) return;
    CHECK(tl_tokenizer_vocab_size(tk) == 300);
    CHECK(tl_tokenizer_bos_id(tk) == 1 && tl_tokenizer_eos_id(tk) == 2 && tl_tokenizer_unk_id(tk) == 0);
    CHECK(strcmp(tl_tokenizer_piece(tk, 3), "<0x00>") == 0);
    CHECK(tl_tokenizer_piece_id(tk, "the", 3) > 258); /* a learned merge */
    CHECK(tl_tokenizer_piece_id(tk, "12", 2) < 0);                 /* split digits */
    CHECK(tl_tokenizer_piece_id(tk, "\xE2\x96\x81\xE2\x96\x81", 6) > 258); /* whitespace-only piece */
    const char *txt = "the cat ran 42 laps \xF0\x9F\x98\x80  caf\xC3\xA9";
    int *ids;
    size_t n;
    CHECK(tl_tokenizer_encode(tk, txt, strlen(txt), 0, &ids, &n, &e) == 0);
    char *back;
    size_t bl;
    CHECK(tl_tokenizer_decode(tk, ids, n, &back, &bl, &e) == 0);
    CHECK_MSG(bl == strlen(txt) && memcmp(back, txt, bl) == 0, "round trip gave '%s'", back);
    free(back);
    free(ids);
    tl_tokenizer_free(tk);
    o.vocab_size = 100000; /* more than this corpus can give */
    CHECK(tl_bpe_train(inputs, 1, &o, out, &e) == -1 && strstr(e.msg, "too large"));
    o.vocab_size = 100;
    CHECK(tl_bpe_train(inputs, 1, &o, out, &e) == -1 && strstr(e.msg, "too small"));
}

const tl_test tests_tokenizer[] = {
    {"tokenizer_known_ids", test_tokenizer_known_ids},
    {"tokenizer_fixtures_llama2", test_tokenizer_fixtures_llama2},
    {"tokenizer_fixtures_small", test_tokenizer_fixtures_small},
    {"tokenizer_fixtures_hf_json", test_tokenizer_fixtures_hf_json},
    {"tokenizer_fixture_can_fail", test_tokenizer_fixture_can_fail},
    {"tokenizer_batch", test_tokenizer_batch},
    {"tokenizer_tiny_model", test_tokenizer_tiny_model},
    {"tokenizer_truncated_and_corrupt", test_tokenizer_truncated_and_corrupt},
    {"tokenizer_json", test_tokenizer_json},
    {"tokenizer_parse_special", test_tokenizer_parse_special},
    {"tokenizer_train", test_tokenizer_train},
    {NULL, NULL},
};

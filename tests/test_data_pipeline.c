/* test_data_pipeline.c - `prepare`: raw corpora -> shards.
 * Every test writes its own inputs (plain, .zst via libzstd, .gz via zlib) into
 * the test's temporary directory and checks the shards token by token against
 * tokenizing each document on its own. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "data.h"
#include "harness.h"
#include "prepare.h"
#include "tokenizer.h"

/* ------------------------------------------------------------------ helpers */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* JSON string literal of s[0..n) (bytes >= 0x80 are copied as they are). */
static void sb_json_str(sbuf *b, const char *s, size_t n) {
    sb_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c == '\n') sb_str(b, "\\n");
        else if (c == '\t') sb_str(b, "\\t");
        else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else sb_put(b, &s[i], 1);
    }
    sb_str(b, "\"");
}

static char *tmp_path(const char *name) {
    static char buf[64][512];
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tl_test_tmpdir(), name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static char *read_corpus(const char *name, size_t *len) {
    char p[512], *buf;
    tl_error e;
    snprintf(p, sizeof p, "%s/corpora/%s", tl_test_shared_dir(), name);
    if (tl_read_file(p, (size_t)1 << 28, &buf, len, &e)) return NULL;
    return buf;
}

static const char *llama_path(void) {
    static char p[512];
    snprintf(p, sizeof p, "%s/tokenizers/llama2/tokenizer.model", tl_test_shared_dir());
    return p;
}

/* zstd in several frames of frame bytes each (exercises frame boundaries). */
static void write_zst(const char *path, const char *p, size_t n, size_t frame) {
    sbuf out = {0};
    for (size_t off = 0; off < n || off == 0; off += frame) {
        size_t len = n - off < frame ? n - off : frame;
        size_t cap = ZSTD_compressBound(len);
        char *c = malloc(cap);
        size_t z = ZSTD_compress(c, cap, p + off, len, 3);
        if (!ZSTD_isError(z)) sb_put(&out, c, z);
        free(c);
        if (n == 0) break;
    }
    write_bytes(path, out.p, out.n);
    free(out.p);
}

static void write_gz(const char *path, const char *p, size_t n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    unsigned char *out = malloc(cap);
    zs.next_in = (unsigned char *)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    write_bytes(path, out, cap - zs.avail_out);
    deflateEnd(&zs);
    free(out);
}

/* All tokens of OUT/SPLIT-*.bin in order (n: count; -1 if a shard fails to open). */
static int *read_split(const char *out, const char *split, size_t *n, int *seq_len) {
    char pat[700];
    snprintf(pat, sizeof pat, "%s/%s-*.bin", out, split);
    glob_t g;
    *n = 0;
    int *all = NULL;
    if (glob(pat, 0, NULL, &g) != 0) return NULL;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        tl_shard s;
        tl_error e;
        if (tl_shard_open(&s, g.gl_pathv[i], &e)) {
            fprintf(stderr, "  %s\n", e.msg);
            free(all);
            globfree(&g);
            *n = (size_t)-1;
            return NULL;
        }
        size_t S = (size_t)s.seq_len + 1;
        *seq_len = s.seq_len;
        all = realloc(all, sizeof(int) * (*n + s.n_samples * S));
        for (uint64_t k = 0; k < s.n_samples; k++) tl_shard_sample(&s, k, all + *n + k * S);
        *n += s.n_samples * S;
        tl_shard_close(&s);
    }
    globfree(&g);
    return all;
}

typedef struct {
    int *v;
    size_t n, cap;
} ivec;

static void iv_put(ivec *a, const int *p, size_t n) {
    if (a->n + n > a->cap) {
        a->cap = (a->n + n) * 2 + 16;
        a->v = realloc(a->v, sizeof(int) * a->cap);
    }
    if (n) memcpy(a->v + a->n, p, sizeof(int) * n);
    a->n += n;
}

/* Checks that DIR/{train,val} hold exactly want_train / want_val cut to whole samples. */
static void check_split(tl_test_ctx *t, const char *out, const char *split, const ivec *want, int seq_len) {
    size_t n;
    int sl = seq_len;
    int *got = read_split(out, split, &n, &sl);
    size_t S = (size_t)seq_len + 1, expect = want->n / S * S;
    CHECK_MSG(n == expect, "%s: %zu tokens in the shards, expected %zu", split, n, expect);
    if (n == expect && expect) {
        size_t bad = 0;
        while (bad < n && got[bad] == want->v[bad]) bad++;
        CHECK_MSG(bad == n, "%s: first difference at token %zu: %d vs %d", split, bad, bad < n ? got[bad] : -1,
                  bad < n ? want->v[bad] : -1);
    }
    free(got);
}

/* Expected token streams: each document encoded on its own + EOS, routed like prepare. */
typedef struct {
    ivec train, val;
    uint64_t docs, val_docs;
} expected;

static void expect_doc(tl_test_ctx *t, expected *x, const tl_tokenizer *tk, const char *s, size_t n, double val_fraction) {
    int *ids = NULL;
    size_t k = 0;
    tl_error e;
    if (tk) {
        CHECK(tl_tokenizer_encode(tk, s, n, TL_ENC_EOS, &ids, &k, &e) == 0);
    } else {
        ids = malloc(sizeof(int) * (n + 1));
        for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)s[i] + 3;
        ids[n] = 2;
        k = n + 1;
    }
    uint64_t u = x->docs++;
    int val = val_fraction > 0 && (uint64_t)((double)(u + 1) * val_fraction) > (uint64_t)((double)u * val_fraction);
    iv_put(val ? &x->val : &x->train, ids, k);
    x->val_docs += (uint64_t)val;
    free(ids);
}

static void expected_free(expected *x) {
    free(x->train.v);
    free(x->val.v);
}

static int files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (tl_read_file(a, (size_t)1 << 30, &x, &nx, NULL)) return 0;
    if (tl_read_file(b, (size_t)1 << 30, &y, &ny, NULL)) {
        free(x);
        return 0;
    }
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

/* Same shards (all of train/ and val/) and manifest in two output directories. */
static void check_same_output(tl_test_ctx *t, const char *a, const char *b) {
    const char *sub[] = {"manifest.json", "train-00000.bin", "train-00001.bin", "train-00002.bin", "val-00000.bin"};
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/%s", a, sub[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, sub[i]);
        int ea = access(pa, F_OK) == 0, eb = access(pb, F_OK) == 0;
        CHECK_MSG(ea == eb, "%s exists in one output only", sub[i]);
        if (ea && eb) CHECK_MSG(files_equal(pa, pb), "%s differs between %s and %s", sub[i], a, b);
    }
}

/* A set of documents cut from the shared corpora at pseudo-random places (mid
 * line, mid word), with a few non-ASCII and whitespace-heavy ones. */
typedef struct {
    char **s;
    size_t *n;
    int count;
} docs;

static void docs_free(docs *d) {
    for (int i = 0; i < d->count; i++) free(d->s[i]);
    free(d->s);
    free(d->n);
}

static docs make_docs(int count, size_t max_len, uint64_t seed) {
    docs d = {calloc((size_t)count, sizeof(char *)), calloc((size_t)count, sizeof(size_t)), count};
    size_t clen = 0;
    char *corpus = read_corpus("tinyshakespeare.txt", &clen);
    static const char *extra[] = {"Grüße aus Köln — “quotes” ✓", "日本語のテキスト、坊っちゃん。\n改行あり",
                                  "emoji 😀🚀 and tabs\tand  double  spaces", "   leading spaces\n\n\ntrailing   ",
                                  "\n", "x", " ", "a ", "x  \n  y", "lit\xE2\x96\x81 eral\xE2\x96\x81\xE2\x96\x81  sp",
                                  "\xE2\x96\x81 start", "x\xE2\x96\x81 ", "x\xE2\x96\x81 \xE6\x97\xA5", "tab\t end\t", "  two  spaces  "};
    uint64_t x = seed;
    for (int i = 0; i < count; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        if (!corpus || i % 7 == 3) {
            const char *e = extra[(x >> 33) % (sizeof extra / sizeof extra[0])];
            d.n[i] = strlen(e);
            d.s[i] = strdup(e);
            continue;
        }
        size_t len = 1 + (x >> 20) % max_len;
        size_t off = (x >> 40) % (clen - len);
        d.s[i] = malloc(len + 1);
        memcpy(d.s[i], corpus + off, len);
        d.s[i][len] = 0;
        d.n[i] = len;
    }
    free(corpus);
    return d;
}

static void docs_jsonl(const docs *d, sbuf *b) {
    for (int i = 0; i < d->count; i++) {
        sb_str(b, "{\"id\": ");
        char num[32];
        snprintf(num, sizeof num, "%d", i);
        sb_str(b, num);
        sb_str(b, ", \"text\": ");
        sb_json_str(b, d->s[i], d->n[i]);
        sb_str(b, ", \"meta\": {\"redpajama_set_name\": \"RedPajamaC4\"}}\n");
    }
}

static int run_prepare(tl_test_ctx *t, tl_prepare_opts *o, const char *out, const char *const *in, int n_in,
                       tl_prepare_result *r) {
    o->out_dir = out;
    o->inputs = in;
    o->n_inputs = n_in;
    tl_error e;
    int rc = tl_prepare_run(o, r, &e);
    CHECK_MSG(rc == 0, "prepare %s: %s", out, e.msg);
    return rc;
}

static void llama_opts(tl_prepare_opts *o, int seq_len) {
    tl_prepare_default_opts(o);
    o->tokenizer = llama_path();
    o->seq_len = seq_len;
    o->shard_samples = 40;
    o->segment_bytes = 200; /* many segments per document: tests the exact cutting */
    o->progress_every = 1e9;
}

/* ------------------------------------------------------------------ tests */

static void test_utf8_repair(tl_test_ctx *t) {
    static const struct {
        const char *in, *out;
        size_t replaced;
    } cases[] = {
        {"plain ascii", "plain ascii", 0},
        {"\xF0\x9F\x98\x80 ok \xE2\x82\xAC", "\xF0\x9F\x98\x80 ok \xE2\x82\xAC", 0},
        {"a\x80" "b", "a\xEF\xBF\xBD" "b", 1},
        {"end \xE2\x82", "end \xEF\xBF\xBD", 2},                           /* truncated sequence: one U+FFFD */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 3},       /* surrogate: each byte */
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD", 2},                       /* overlong */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 4}, /* > U+10FFFF */
        {"\xE0\x80x", "\xEF\xBF\xBD\xEF\xBF\xBDx", 2},
        {"\xF0\x9F\x98x", "\xEF\xBF\xBDx", 3},                             /* maximal subpart of 3 bytes */
        {"\xFF\xFE", "\xEF\xBF\xBD\xEF\xBF\xBD", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        size_t n;
        size_t rep = tl_utf8_repair(cases[i].in, strlen(cases[i].in), &out, &n);
        CHECK_MSG(rep == cases[i].replaced, "case %zu: %zu bytes replaced, expected %zu", i, rep, cases[i].replaced);
        const char *got = rep ? out : cases[i].in;
        CHECK_MSG(n == strlen(cases[i].out) && memcmp(got, cases[i].out, n) == 0, "case %zu: wrong repair", i);
        free(out);
    }
}

/* Shards decode to exactly the documents + EOS, the same for .jsonl, .jsonl.zst
 * and .jsonl.gz, for 1 and 2 threads and any batch size. */
static void test_jsonl_exact_all_formats_threads(tl_test_ctx *t) {
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load(llama_path(), &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (!tk) return;
    docs d = make_docs(160, 3000, 7);
    sbuf js = {0};
    docs_jsonl(&d, &js);
    write_bytes(tmp_path("a.jsonl"), js.p, js.n);
    write_zst(tmp_path("a.jsonl.zst"), js.p, js.n, 50000);
    write_gz(tmp_path("a.jsonl.gz"), js.p, js.n);
    const double vf = 0.1;
    expected x = {0};
    for (int i = 0; i < d.count; i++) expect_doc(t, &x, tk, d.s[i], d.n[i], vf);

    const char *in_plain[] = {tmp_path("a.jsonl")}, *in_zst[] = {tmp_path("a.jsonl.zst")},
               *in_gz[] = {tmp_path("a.jsonl.gz")};
    tl_prepare_opts o;
    tl_prepare_result r;
    llama_opts(&o, 128);
    o.val_fraction = vf;
    o.nthreads = 1;
    if (!run_prepare(t, &o, tmp_path("j1"), in_plain, 1, &r)) {
        CHECK(r.total.documents == (uint64_t)d.count);
        CHECK(r.total.malformed_json == 0 && r.total.missing_text == 0 && r.total.invalid_utf8_docs == 0);
        CHECK(r.total.forced_splits == 0);
        CHECK(r.val.documents == x.val_docs && r.train.documents == (uint64_t)d.count - x.val_docs);
        CHECK(r.train.samples == x.train.n / 129 && r.val.samples == x.val.n / 129);
        CHECK(r.train.shards >= 2); /* 40 samples per shard */
        CHECK(r.dropped_tail_tokens == x.train.n % 129 + x.val.n % 129);
        tl_prepare_result_free(&r);
    }
    check_split(t, tmp_path("j1"), "train", &x.train, 128);
    check_split(t, tmp_path("j1"), "val", &x.val, 128);

    o.nthreads = 2;
    if (!run_prepare(t, &o, tmp_path("j2"), in_plain, 1, &r)) tl_prepare_result_free(&r);
    check_same_output(t, tmp_path("j1"), tmp_path("j2"));
    o.batch_bytes = 3000; /* batches of a few documents */
    if (!run_prepare(t, &o, tmp_path("j3"), in_zst, 1, &r)) {
        CHECK(r.total.truncated == 0);
        CHECK(r.total.file_bytes < r.total.raw_bytes && r.total.raw_bytes == js.n);
        tl_prepare_result_free(&r);
    }
    o.batch_bytes = 0;
    if (!run_prepare(t, &o, tmp_path("j4"), in_gz, 1, &r)) tl_prepare_result_free(&r);
    /* the manifests name their inputs, so compare the shards of j3/j4 and the manifests' splits */
    const char *sh[] = {"train-00000.bin", "train-00001.bin", "val-00000.bin"};
    for (size_t i = 0; i < 3; i++) {
        char a[600], b[600], c[600];
        snprintf(a, sizeof a, "%s/%s", tmp_path("j1"), sh[i]);
        snprintf(b, sizeof b, "%s/%s", tmp_path("j3"), sh[i]);
        snprintf(c, sizeof c, "%s/%s", tmp_path("j4"), sh[i]);
        CHECK_MSG(files_equal(a, b), ".zst output differs: %s", sh[i]);
        CHECK_MSG(files_equal(a, c), ".gz output differs: %s", sh[i]);
    }
    /* decode: the first training document comes back as its text */
    int first_train = 0;
    while (first_train < d.count && (uint64_t)((double)(first_train + 1) * vf) > (uint64_t)((double)first_train * vf))
        first_train++;
    size_t eos_at = 0;
    while (eos_at < x.train.n && x.train.v[eos_at] != 2) eos_at++;
    char *text;
    size_t tl;
    if (tl_tokenizer_decode(tk, x.train.v, eos_at, &text, &tl, &e) == 0) {
        CHECK(tl == d.n[first_train] && memcmp(text, d.s[first_train], tl) == 0);
        free(text);
    }
    expected_free(&x);
    free(js.p);
    docs_free(&d);
    tl_tokenizer_free(tk);
}

/* A whole text file is one document, tokenized in segments across many batches:
 * equal to encoding the whole file at once. */
static void test_txt_whole_file_exact(tl_test_ctx *t) {
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load(llama_path(), &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    size_t clen;
    char *corpus = read_corpus("tinyshakespeare.txt", &clen);
    CHECK(corpus != NULL);
    if (!tk || !corpus) {
        tl_tokenizer_free(tk);
        free(corpus);
        return;
    }
    size_t len = clen < 150000 ? clen : 150000;
    /* a few lines longer than the segment size, without newlines, but under the forced-cut limit */
    sbuf s = {0};
    sb_put(&s, corpus, len / 2);
    for (int i = 0; i < 30; i++) sb_str(&s, "a long line without any newline in it, ");
    sb_put(&s, corpus + len / 2, len - len / 2);
    write_bytes(tmp_path("whole.txt"), s.p, s.n);
    write_zst(tmp_path("whole.txt.zst"), s.p, s.n, 1 << 20);
    expected x = {0};
    expect_doc(t, &x, tk, s.p, s.n, 0);
    tl_prepare_opts o;
    tl_prepare_result r;
    llama_opts(&o, 256);
    o.batch_bytes = 5000;
    const char *in[] = {tmp_path("whole.txt")};
    if (!run_prepare(t, &o, tmp_path("w1"), in, 1, &r)) {
        CHECK(r.total.documents == 1 && r.total.text_bytes == s.n && r.total.forced_splits == 0);
        tl_prepare_result_free(&r);
    }
    check_split(t, tmp_path("w1"), "train", &x.train, 256);
    o.batch_bytes = 0;
    o.nthreads = 1;
    o.segment_bytes = 4096;
    const char *in2[] = {tmp_path("whole.txt.zst")};
    if (!run_prepare(t, &o, tmp_path("w2"), in2, 1, &r)) tl_prepare_result_free(&r);
    check_split(t, tmp_path("w2"), "train", &x.train, 256);
    /* byte-level: ids are bytes + 3 */
    expected xb = {0};
    expect_doc(t, &xb, NULL, s.p, s.n, 0);
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 64;
    o.segment_bytes = 100;
    o.batch_bytes = 777;
    if (!run_prepare(t, &o, tmp_path("w3"), in, 1, &r)) tl_prepare_result_free(&r);
    check_split(t, tmp_path("w3"), "train", &xb.train, 64);
    expected_free(&x);
    expected_free(&xb);
    free(s.p);
    free(corpus);
    tl_tokenizer_free(tk);
}

/* --txt-docs paragraphs: blocks between blank (or white-space-only) lines are documents. */
static void test_txt_paragraphs(tl_test_ctx *t) {
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load(llama_path(), &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (!tk) return;
    sbuf s = {0}, longp = {0};
    for (int i = 0; i < 400; i++) sb_str(&longp, i % 3 ? "Line of a long paragraph, with words.\n" : "  indented\n");
    longp.p[--longp.n] = 0; /* no newline at its end */
    sb_str(&s, "\n\nFirst para line one.\nline two\n\n  \t\n");
    sb_str(&s, "Second\r\n\n");
    sb_put(&s, longp.p, longp.n);
    sb_str(&s, "\n\n\nLast one, no newline at the end");
    write_bytes(tmp_path("para.txt"), s.p, s.n);
    const char *want[] = {"First para line one.\nline two", "Second\r", longp.p, "Last one, no newline at the end"};
    expected x = {0};
    for (int i = 0; i < 4; i++) expect_doc(t, &x, tk, want[i], strlen(want[i]), 0);
    tl_prepare_opts o;
    tl_prepare_result r;
    llama_opts(&o, 32);
    o.txt_mode = TL_TXT_PARAGRAPHS;
    o.segment_bytes = 100; /* records of 1600 bytes: the long paragraph spans several */
    o.batch_bytes = 1000;
    const char *in[] = {tmp_path("para.txt")};
    if (!run_prepare(t, &o, tmp_path("p1"), in, 1, &r)) {
        CHECK_MSG(r.total.documents == 4, "%llu documents", (unsigned long long)r.total.documents);
        tl_prepare_result_free(&r);
    }
    check_split(t, tmp_path("p1"), "train", &x.train, 32);
    expected_free(&x);
    free(s.p);
    free(longp.p);
    tl_tokenizer_free(tk);
}

/* Every kind of bad input is counted where it happened; the good documents are intact. */
static void test_bad_input_counted(tl_test_ctx *t) {
    sbuf js = {0};
    sb_str(&js, "{\"text\": \"good one\"}\n");
    sb_str(&js, "{\"text\": \"unterminated\n");                              /* malformed */
    sb_str(&js, "not json at all\n");                                          /* malformed */
    sb_str(&js, "[\"an array\"]\n");                                           /* malformed: not an object */
    sb_str(&js, "{\"text\": \"a\"} {\"text\": \"b\"}\n");                      /* malformed: trailing data */
    sb_str(&js, "{\"content\": \"wrong field\"}\n");                           /* missing text */
    sb_str(&js, "{\"text\": 42}\n");                                           /* missing text (not a string) */
    sb_str(&js, "{\"text\": \"\"}\n");                                         /* empty */
    sb_str(&js, "   \n\n");                                                    /* blank lines */
    sb_str(&js, "{\"text\": \"code\", \"meta\": {\"redpajama_set_name\": \"RedPajamaGithub\"}}\n"); /* filtered */
    sb_str(&js, "{\"text\": \"bad \xC3\x28 utf8 \xFF\"}\n");                   /* repaired: 2 bytes */
    sb_str(&js, "{\"text\": \"");
    for (int i = 0; i < 300; i++) sb_str(&js, "too long ");
    sb_str(&js, "\"}\n");                                                      /* too long */
    sb_str(&js, "{\"text\": \"good two\", \"meta\": {\"redpajama_set_name\": \"RedPajamaBook\"}}"); /* no final newline */
    write_bytes(tmp_path("bad.jsonl"), js.p, js.n);
    /* a truncated zstd stream: a frame with two good lines, then a frame cut short */
    const char *two = "{\"text\": \"zst one\"}\n{\"text\": \"zst two\"}\n";
    const char *three = "{\"text\": \"zst three is cut off here\"}\n";
    size_t cap = ZSTD_compressBound(strlen(two)) + ZSTD_compressBound(strlen(three));
    char *z = malloc(cap);
    size_t z1 = ZSTD_compress(z, cap, two, strlen(two), 1);
    size_t z2 = ZSTD_compress(z + z1, cap - z1, three, strlen(three), 1);
    CHECK(!ZSTD_isError(z1) && !ZSTD_isError(z2));
    write_bytes(tmp_path("cut.jsonl.zst"), z, z1 + z2 - 6);
    free(z);
    /* corrupt gzip: valid header, garbage body */
    write_bytes(tmp_path("junk.jsonl.gz"), "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbagegarbage", 24);
    /* an empty .txt file */
    write_bytes(tmp_path("empty.txt"), "", 0);

    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 4;
    o.val_fraction = 0;
    o.max_doc_bytes = 1000;
    o.progress_every = 1e9;
    const char *ex[] = {"meta.redpajama_set_name=RedPajamaGithub"};
    o.exclude = ex;
    o.n_exclude = 1;
    const char *in[] = {tmp_path("bad.jsonl"), tmp_path("cut.jsonl.zst"), tmp_path("junk.jsonl.gz"),
                        tmp_path("empty.txt")};
    if (run_prepare(t, &o, tmp_path("bad"), in, 4, &r)) return;
    CHECK(r.n_inputs == 4);
    const tl_prepare_input *b = &r.inputs[0];
    CHECK_MSG(b->documents == 3, "%llu documents", (unsigned long long)b->documents);
    CHECK_MSG(b->malformed_json == 4, "%llu malformed", (unsigned long long)b->malformed_json);
    CHECK(b->missing_text == 2);
    CHECK(b->empty == 1);
    CHECK(b->blank_lines == 2);
    CHECK(b->filtered == 1);
    CHECK(b->too_long == 1);
    CHECK(b->invalid_utf8_docs == 1 && b->invalid_utf8_bytes == 2);
    CHECK(!b->truncated);
    const tl_prepare_input *c = &r.inputs[1];
    CHECK(c->truncated && strstr(c->error, "truncated") != NULL);
    CHECK_MSG(c->documents == 2, "zst: %llu documents", (unsigned long long)c->documents);
    CHECK(c->malformed_json <= 1); /* a cut-off last line, if the decoder got that far */
    CHECK(r.inputs[2].truncated && strstr(r.inputs[2].error, "gzip") != NULL);
    CHECK(r.inputs[3].empty == 1 && r.inputs[3].documents == 0);
    CHECK(r.bad_inputs == 2);
    /* the good documents, byte-level, in order */
    expected x = {0};
    const char *good[] = {"good one", "bad \xEF\xBF\xBD( utf8 \xEF\xBF\xBD", "good two", "zst one", "zst two"};
    for (int i = 0; i < 5; i++) expect_doc(t, &x, NULL, good[i], strlen(good[i]), 0);
    check_split(t, tmp_path("bad"), "train", &x.train, 4);
    /* the manifest records the counts */
    char *m;
    size_t ml;
    if (tl_read_file(r.manifest, 1 << 20, &m, &ml, NULL) == 0) {
        CHECK(strstr(m, "\"malformed_json\":\t4") != NULL);
        CHECK(strstr(m, "\"truncated\":\ttrue") != NULL);
        CHECK(strstr(m, "zstd stream ends inside a frame") != NULL);
        free(m);
    }
    tl_prepare_result_free(&r);
    expected_free(&x);
    free(js.p);
}

/* Re-running gives the same bytes; leftovers of other runs are removed; the
 * manifest is gone while a run is incomplete. */
static void test_idempotent_and_cleanup(tl_test_ctx *t) {
    docs d = make_docs(60, 2000, 11);
    sbuf js = {0};
    docs_jsonl(&d, &js);
    write_bytes(tmp_path("idem.jsonl"), js.p, js.n);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 255;
    o.shard_samples = 50;
    o.val_fraction = 0.1;
    o.progress_every = 1e9;
    const char *in[] = {tmp_path("idem.jsonl")};
    char out[600], copy[700], cmd[1500];
    snprintf(out, sizeof out, "%s", tmp_path("idem"));
    if (run_prepare(t, &o, out, in, 1, &r)) return;
    uint64_t shards = r.train.shards;
    CHECK(shards >= 3);
    tl_prepare_result_free(&r);
    snprintf(copy, sizeof copy, "%s.copy", out);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", out, copy);
    CHECK(system(cmd) == 0);
    /* litter: a temporary file of a killed run and a stale shard of a bigger run */
    char junk[800], stale[800];
    snprintf(junk, sizeof junk, "%s/train-00000.bin.tmp.99999", out);
    snprintf(stale, sizeof stale, "%s/train-00077.bin", out);
    write_bytes(junk, "partial", 7);
    write_bytes(stale, "old", 3);
    if (!run_prepare(t, &o, out, in, 1, &r)) tl_prepare_result_free(&r);
    check_same_output(t, out, copy);
    CHECK(access(junk, F_OK) != 0);
    CHECK(access(stale, F_OK) != 0);
    /* a killed run's temporary shard is not a shard for the loader */
    write_bytes(junk, "partial", 7);
    char train_dir[700];
    snprintf(train_dir, sizeof train_dir, "%s/train-*.bin", out);
    const char *dp[] = {train_dir};
    tl_dataset ds;
    tl_error e;
    CHECK_MSG(tl_dataset_open(&ds, dp, 1, &e) == 0, "%s", e.msg);
    if (ds.n_shards) {
        CHECK(ds.n_shards == (int)shards);
        tl_dataset_close(&ds);
    }
    free(js.p);
    docs_free(&d);
}

/* Splitting by samples: an exact fraction of the samples, spread evenly. */
static void test_split_by_samples(tl_test_ctx *t) {
    sbuf s = {0};
    for (int i = 0; i < 1000; i++) sb_str(&s, "0123456789");
    write_bytes(tmp_path("digits.txt"), s.p, s.n);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 99; /* 10001 tokens -> 100 samples of 100 */
    o.split_by = TL_SPLIT_SAMPLES;
    o.val_fraction = 0.25;
    o.progress_every = 1e9;
    const char *in[] = {tmp_path("digits.txt")};
    if (run_prepare(t, &o, tmp_path("samp"), in, 1, &r)) return;
    CHECK_MSG(r.train.samples == 75 && r.val.samples == 25, "%llu / %llu", (unsigned long long)r.train.samples,
              (unsigned long long)r.val.samples);
    CHECK(r.dropped_tail_tokens == 1);
    tl_prepare_result_free(&r);
    o.val_fraction = 0;
    o.val_count = 3;
    if (!run_prepare(t, &o, tmp_path("samp2"), in, 1, &r)) {
        CHECK(r.train.samples == 97 && r.val.samples == 3);
        tl_prepare_result_free(&r);
    }
    free(s.p);
}

/* Other SentencePiece models: with UNUSED pieces (word cache + segments), and
 * without byte fallback and with remove_extra_whitespaces (neither applies:
 * whole documents) - the ids still equal encoding each document alone. */
static void test_other_tokenizers(tl_test_ctx *t) {
    static const char *models[] = {"small_bpe.model", "small_bpe_unused.model", "small_bpe_unk.model"};
    docs d = make_docs(80, 1500, 23);
    sbuf js = {0};
    docs_jsonl(&d, &js);
    write_bytes(tmp_path("fx.jsonl"), js.p, js.n);
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        char path[512], out[600];
        snprintf(path, sizeof path, "%s/tokenizer/%s", tl_test_fixture_dir(), models[m]);
        tl_error e;
        tl_tokenizer *tk = tl_tokenizer_load(path, &e);
        CHECK_MSG(tk != NULL, "%s", e.msg);
        if (!tk) continue;
        expected x = {0};
        for (int i = 0; i < d.count; i++) expect_doc(t, &x, tk, d.s[i], d.n[i], 0);
        tl_prepare_opts o;
        tl_prepare_result r;
        tl_prepare_default_opts(&o);
        o.tokenizer = path;
        o.seq_len = 64;
        o.segment_bytes = 150;
        o.batch_bytes = 5000;
        o.progress_every = 1e9;
        snprintf(out, sizeof out, "%s", tmp_path(models[m]));
        const char *in[] = {tmp_path("fx.jsonl")};
        if (!run_prepare(t, &o, out, in, 1, &r)) tl_prepare_result_free(&r);
        check_split(t, out, "train", &x.train, 64);
        expected_free(&x);
        tl_tokenizer_free(tk);
    }
    free(js.p);
    docs_free(&d);
}

/* --bos, directories (recursive, sorted, other files ignored), globs, a UTF-8
 * byte order mark before the first JSONL line, --val-count by documents. */
static void test_inputs_bos_dirs_globs(tl_test_ctx *t) {
    char dir[600], sub[700], p[800];
    snprintf(dir, sizeof dir, "%s", tmp_path("tree"));
    snprintf(sub, sizeof sub, "%s/b_sub", dir);
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    snprintf(p, sizeof p, "%s/a.jsonl", dir);
    const char *bom_jsonl = "\xEF\xBB\xBF{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
    write_bytes(p, bom_jsonl, strlen(bom_jsonl));
    snprintf(p, sizeof p, "%s/c.txt", sub);
    write_bytes(p, "three", 5);
    snprintf(p, sizeof p, "%s/README", dir); /* not an input */
    write_bytes(p, "ignored", 7);
    snprintf(p, sizeof p, "%s/z.jsonl.zst", sub);
    write_zst(p, "{\"text\": \"four\"}\n", 17, 100);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.add_bos = 1;
    o.seq_len = 3;
    o.val_count = 1; /* the first document */
    o.progress_every = 1e9;
    const char *in[] = {dir};
    if (!run_prepare(t, &o, tmp_path("tree_out"), in, 1, &r)) {
        CHECK_MSG(r.n_inputs == 3, "%d inputs", r.n_inputs);
        if (r.n_inputs == 3) {
            CHECK(strstr(r.inputs[0].path, "a.jsonl") && strstr(r.inputs[1].path, "c.txt") &&
                  strstr(r.inputs[2].path, "z.jsonl.zst"));
            CHECK(r.inputs[0].documents == 2 && r.inputs[0].malformed_json == 0);
        }
        CHECK(r.val.documents == 1 && r.train.documents == 3);
        tl_prepare_result_free(&r);
    }
    /* byte-level with BOS: 1, bytes + 3, 2 */
    ivec train = {0}, val = {0};
    const char *docs_in[] = {"one", "two", "three", "four"};
    for (int i = 0; i < 4; i++) {
        ivec *v = i == 0 ? &val : &train;
        int bos = 1, eos = 2;
        iv_put(v, &bos, 1);
        for (const char *c = docs_in[i]; *c; c++) {
            int id = (unsigned char)*c + 3;
            iv_put(v, &id, 1);
        }
        iv_put(v, &eos, 1);
    }
    check_split(t, tmp_path("tree_out"), "train", &train, 3);
    check_split(t, tmp_path("tree_out"), "val", &val, 3);
    /* a glob picks the same files in the same order as the directory */
    char pat[700];
    snprintf(pat, sizeof pat, "%s/*.jsonl", dir);
    const char *in2[] = {pat};
    o.val_count = 0;
    if (!run_prepare(t, &o, tmp_path("glob_out"), in2, 1, &r)) {
        CHECK(r.n_inputs == 1 && r.total.documents == 2);
        tl_prepare_result_free(&r);
    }
    snprintf(pat, sizeof pat, "%s/nothing-*.jsonl", dir);
    tl_error e;
    o.out_dir = tmp_path("glob_none");
    o.inputs = in2;
    CHECK(tl_prepare_run(&o, &r, &e) == -1 && strstr(e.msg, "matches no files"));
    free(train.v);
    free(val.v);
}

/* Lines longer than the forced-cut limit (64 x segment, at least 1 MiB), in a
 * .txt file and inside a JSON text: cut and counted; with byte-level ids the
 * cuts are still exact. */
static void test_forced_splits(tl_test_ctx *t) {
    const size_t L = (size_t)2500000; /* one line of 2.5 MB: two cuts at 1 MiB */
    char *line = malloc(L + 1);
    for (size_t i = 0; i < L; i++) line[i] = (char)('a' + i % 23);
    line[L] = 0;
    /* non-ASCII right at the cut points must not be split inside a character */
    memcpy(line + (1 << 20) - 1, "\xE2\x82\xAC", 3);
    memcpy(line + (2 << 20) - 2, "\xF0\x9F\x98\x80", 4);
    sbuf txt = {0}, js = {0};
    sb_str(&txt, "short first line\n");
    sb_put(&txt, line, L);
    sb_str(&txt, "\nlast line\n");
    write_bytes(tmp_path("longline.txt"), txt.p, txt.n);
    sb_str(&js, "{\"text\": ");
    sb_json_str(&js, line, L);
    sb_str(&js, "}\n");
    write_bytes(tmp_path("longline.jsonl"), js.p, js.n);
    expected x = {0};
    expect_doc(t, &x, NULL, txt.p, txt.n, 0);
    expect_doc(t, &x, NULL, line, L, 0);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 1000;
    o.segment_bytes = 1000;
    o.progress_every = 1e9;
    const char *in[] = {tmp_path("longline.txt"), tmp_path("longline.jsonl")};
    if (!run_prepare(t, &o, tmp_path("long_out"), in, 2, &r)) {
        CHECK_MSG(r.inputs[0].forced_splits == 2, "txt: %llu forced splits", (unsigned long long)r.inputs[0].forced_splits);
        CHECK_MSG(r.inputs[1].forced_splits == 2, "jsonl: %llu forced splits", (unsigned long long)r.inputs[1].forced_splits);
        CHECK(r.total.documents == 2 && r.total.invalid_utf8_docs == 0);
        tl_prepare_result_free(&r);
    }
    check_split(t, tmp_path("long_out"), "train", &x.train, 1000);
    expected_free(&x);
    free(txt.p);
    free(js.p);
    free(line);
}

/* An HF tokenizer.json without byte fallback (unknown characters, newlines
 * included, fuse into one <unk>): segments cut at newlines still give the
 * ids of whole documents. */
static void test_tokenizer_json_segments(tl_test_ctx *t) {
    const char *js = TL_TEST_TINY_TOKENIZER_JSON;
    write_bytes(tmp_path("tiny.tokenizer.json"), js, strlen(js));
    tl_error e;
    tl_tokenizer *tk = tl_tokenizer_load(tmp_path("tiny.tokenizer.json"), &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (!tk) return;
    static const char *texts[] = {"ab ba\nab\n\nabc\ncx ab\n  a b\nzz\nq", "c\nc\nc\nab ab ab ab ab ab ab ab\nb",
                                  "ab\n", "\n\nx\n\nab", "abababababababababab\nab ba ab\ncc cc\n"};
    sbuf b = {0};
    expected x = {0};
    for (int rep = 0; rep < 6; rep++)
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            sb_str(&b, "{\"text\": ");
            sb_json_str(&b, texts[i], strlen(texts[i]));
            sb_str(&b, "}\n");
            expect_doc(t, &x, tk, texts[i], strlen(texts[i]), 0);
        }
    write_bytes(tmp_path("tiny.jsonl"), b.p, b.n);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.tokenizer = tmp_path("tiny.tokenizer.json");
    o.seq_len = 7;
    o.segment_bytes = 5; /* a cut at nearly every newline */
    o.val_fraction = 0;
    o.progress_every = 1e9;
    const char *in[] = {tmp_path("tiny.jsonl")};
    if (!run_prepare(t, &o, tmp_path("tiny_out"), in, 1, &r)) tl_prepare_result_free(&r);
    check_split(t, tmp_path("tiny_out"), "train", &x.train, 7);
    expected_free(&x);
    free(b.p);
    tl_tokenizer_free(tk);
}

/* A run whose inputs give nothing fails and leaves the old data set as it was;
 * so does a crash (simulated: the states the swap passes through); a directory
 * holding anything else is refused. */
static void test_prepare_keeps_old_data_set(tl_test_ctx *t) {
    sbuf s = {0};
    for (int i = 0; i < 200; i++) sb_str(&s, "{\"text\": \"the old data set, line after line\"}\n");
    write_bytes(tmp_path("keep.jsonl"), s.p, s.n);
    write_bytes(tmp_path("notext.jsonl"), "{\"title\": \"a\"}\n{\"title\": \"b\"}\n", 30);
    tl_prepare_opts o;
    tl_prepare_result r;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 63;
    o.val_fraction = 0.1;
    o.progress_every = 1e9;
    char out[600], copy[700], side[700], cmd[1500];
    snprintf(out, sizeof out, "%s", tmp_path("keep"));
    snprintf(copy, sizeof copy, "%s.copy", out);
    const char *in_old[] = {tmp_path("keep.jsonl")}, *in_none[] = {tmp_path("notext.jsonl")};
    if (run_prepare(t, &o, out, in_old, 1, &r)) return;
    tl_prepare_result_free(&r);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", out, copy);
    CHECK(system(cmd) == 0);
    o.out_dir = out;
    o.inputs = in_none;
    o.n_inputs = 1;
    tl_error e;
    CHECK(tl_prepare_run(&o, &r, &e) == -1);
    CHECK_MSG(strstr(e.msg, "gave 0 documents") && strstr(e.msg, "2 without a string field 'text'") &&
                  strstr(e.msg, "left as it was"), "%s", e.msg);
    check_same_output(t, out, copy);
    snprintf(side, sizeof side, "%s.prepare-new", out);
    CHECK(access(side, F_OK) != 0);
    /* killed between the swap's renames, with a half-written new data set beside it */
    snprintf(side, sizeof side, "%s.prepare-old", out);
    CHECK(rename(out, side) == 0);
    snprintf(side, sizeof side, "%s.prepare-new", out);
    CHECK(mkdir(side, 0755) == 0);
    snprintf(cmd, sizeof cmd, "%s/train-00000.bin.tmp.4242", side);
    write_bytes(cmd, "partial", 7);
    CHECK(tl_prepare_run(&o, &r, &e) == -1); /* still nothing to write: the old one is put back */
    check_same_output(t, out, copy);
    CHECK(access(side, F_OK) != 0);
    snprintf(side, sizeof side, "%s.prepare-old", out);
    CHECK(access(side, F_OK) != 0);
    /* killed after the swap: the old copy beside the new one is removed */
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", copy, side);
    CHECK(system(cmd) == 0);
    o.allow_empty = 1; /* asked for: an empty data set replaces the old one */
    if (!run_prepare(t, &o, out, in_none, 1, &r)) {
        CHECK(r.train.samples == 0 && r.val.samples == 0 && r.total.missing_text == 2);
        tl_prepare_result_free(&r);
    }
    CHECK(access(side, F_OK) != 0);
    snprintf(cmd, sizeof cmd, "%s/manifest.json", out);
    CHECK(access(cmd, F_OK) == 0);
    snprintf(cmd, sizeof cmd, "%s/train-00000.bin", out);
    CHECK(access(cmd, F_OK) != 0);
    /* a directory with other files is not replaced */
    snprintf(cmd, sizeof cmd, "%s/notes.txt", out);
    write_bytes(cmd, "mine", 4);
    CHECK(tl_prepare_run(&o, &r, &e) == -1);
    CHECK_MSG(strstr(e.msg, "notes.txt"), "%s", e.msg);
    CHECK(access(cmd, F_OK) == 0);
    free(s.p);
}

/* train's view: a directory means one split; every shard must be the one a
 * complete manifest beside it lists; the manifest names the tokenizer. */
static void test_dataset_manifest_checks(tl_test_ctx *t) {
    sbuf s = {0};
    for (int i = 0; i < 300; i++) sb_str(&s, "{\"text\": \"shards that belong together\"}\n");
    write_bytes(tmp_path("man.jsonl"), s.p, s.n);
    sbuf s2 = {0};
    for (int i = 0; i < 150; i++) sb_str(&s2, "{\"text\": \"a shard of another run\"}\n");
    write_bytes(tmp_path("man2.jsonl"), s2.p, s2.n);
    tl_prepare_opts o;
    tl_prepare_result r, r2;
    tl_prepare_default_opts(&o);
    o.byte_level = 1;
    o.seq_len = 31;
    o.shard_samples = 100;
    o.val_fraction = 0.1;
    o.progress_every = 1e9;
    char dir[600], dir2[600], p[800], p2[800];
    snprintf(dir, sizeof dir, "%s", tmp_path("man"));
    snprintf(dir2, sizeof dir2, "%s", tmp_path("man2"));
    const char *in[] = {tmp_path("man.jsonl")}, *in2[] = {tmp_path("man2.jsonl")};
    if (run_prepare(t, &o, dir, in, 1, &r)) return;
    if (run_prepare(t, &o, dir2, in2, 1, &r2)) return;
    CHECK(r.train.shards >= 2 && r.val.shards >= 1);
    tl_dataset ds;
    tl_error e;
    const tl_dataset_opts train = {.split = "train", .verify = 1}, val = {.split = "val", .verify = 1};
    const char *dp[] = {dir};
    CHECK_MSG(tl_dataset_open_ex(&ds, dp, 1, &train, &e) == 0, "%s", e.msg);
    if (ds.shards) {
        CHECK(ds.n_shards == (int)r.train.shards && ds.n_samples == r.train.samples);
        CHECK(!strcmp(ds.tok.hash, "byte-level-259") && ds.tok.vocab_size == 259 && strstr(ds.tok.origin, "manifest.json"));
        CHECK_MSG(ds.taken && strstr(ds.taken, "training shards (train-00000.bin .. train-0000"), "%s", ds.taken);
        /* a tokenizer other than the one the manifest names is refused */
        tl_tokenizer *tk = tl_tokenizer_load(llama_path(), &e);
        if (tk) {
            tl_data_tokenizer want;
            tl_data_tokenizer_of(tk, llama_path(), &want);
            CHECK(tl_data_tokenizer_check(&ds.tok, &want, &e) == -1);
            CHECK_MSG(strstr(e.msg, "different tokenizers") && strstr(e.msg, "byte-level") &&
                          strstr(e.msg, "tokenizer.model"), "%s", e.msg);
            CHECK(tl_data_tokenizer_check(&want, &want, &e) == 0);
            tl_tokenizer_free(tk);
        }
        tl_dataset_close(&ds);
    }
    CHECK_MSG(tl_dataset_open_ex(&ds, dp, 1, &val, &e) == 0, "%s", e.msg);
    if (ds.shards) {
        CHECK(ds.n_shards == (int)r.val.shards && ds.n_samples == r.val.samples);
        tl_dataset_close(&ds);
    }
    /* a shard of another run (as an interrupted older prepare left them) */
    snprintf(p, sizeof p, "%s/train-00000.bin", dir);
    snprintf(p2, sizeof p2, "%s/train-00000.bin", dir2);
    const char *fp[] = {p};
    CHECK(tl_dataset_open_ex(&ds, fp, 1, &train, &e) == 0);
    if (ds.shards) tl_dataset_close(&ds);
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s.keep' && cp '%s' '%s'", p, p, p2, p);
    CHECK(system(cmd) == 0);
    CHECK(tl_dataset_open_ex(&ds, fp, 1, &train, &e) == -1);
    CHECK_MSG(strstr(e.msg, "train-00000.bin: not the shard") && strstr(e.msg, "rerun tinyllama prepare"), "%s", e.msg);
    CHECK(tl_dataset_open_ex(&ds, dp, 1, &train, &e) == -1);
    CHECK(tl_dataset_open(&ds, fp, 1, &e) == 0); /* unchecked, as before */
    if (ds.shards) tl_dataset_close(&ds);
    snprintf(cmd, sizeof cmd, "mv '%s.keep' '%s'", p, p);
    CHECK(system(cmd) == 0);
    /* no manifest: refused, by file and by directory */
    snprintf(p2, sizeof p2, "%s/manifest.json", dir);
    snprintf(cmd, sizeof cmd, "%s.keep", p2);
    CHECK(rename(p2, cmd) == 0);
    CHECK(tl_dataset_open_ex(&ds, fp, 1, &train, &e) == -1);
    CHECK_MSG(strstr(e.msg, "train-00000.bin: no manifest.json") && strstr(e.msg, "rerun tinyllama prepare"), "%s",
              e.msg);
    CHECK(tl_dataset_open_ex(&ds, dp, 1, &train, &e) == -1 && strstr(e.msg, "no manifest.json"));
    CHECK(rename(cmd, p2) == 0);
    /* a shard the manifest does not list */
    snprintf(p2, sizeof p2, "%s/train-00077.bin", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", p, p2);
    CHECK(system(cmd) == 0);
    const char *up[] = {p2};
    CHECK(tl_dataset_open_ex(&ds, up, 1, &train, &e) == -1 && strstr(e.msg, "not listed in"));
    CHECK(tl_dataset_open_ex(&ds, dp, 1, &train, &e) == 0); /* a directory means what its manifest lists */
    if (ds.shards) {
        CHECK(ds.n_shards == (int)r.train.shards);
        tl_dataset_close(&ds);
    }
    tl_prepare_result_free(&r);
    tl_prepare_result_free(&r2);
    free(s.p);
    free(s2.p);
}

const tl_test tests_data_pipeline[] = {
    {"data/utf8_repair", test_utf8_repair},
    {"data/prepare_jsonl_exact_formats_threads", test_jsonl_exact_all_formats_threads},
    {"data/prepare_txt_whole_file_exact", test_txt_whole_file_exact},
    {"data/prepare_txt_paragraphs", test_txt_paragraphs},
    {"data/prepare_bad_input_counted", test_bad_input_counted},
    {"data/prepare_idempotent_cleanup", test_idempotent_and_cleanup},
    {"data/prepare_split_by_samples", test_split_by_samples},
    {"data/prepare_other_tokenizers", test_other_tokenizers},
    {"data/prepare_forced_splits", test_forced_splits},
    {"data/prepare_tokenizer_json_segments", test_tokenizer_json_segments},
    {"data/prepare_inputs_bos_dirs_globs", test_inputs_bos_dirs_globs},
    {"data/prepare_keeps_old_data_set", test_prepare_keeps_old_data_set},
    {"data/dataset_manifest_checks", test_dataset_manifest_checks},
    {NULL, NULL},
};

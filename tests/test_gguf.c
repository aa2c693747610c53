/* test_gguf.c - the GGUF reader, dequantization, the Llama mapping and the GGUF
 * tokenizer, against files and values written by the `gguf` Python package
 * (scripts/gen_gguf_fixtures.py), and hand-made corrupt files. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "checkpoint.h"
#include "gguf.h"
#include "harness.h"
#include "model.h"
#include "tokenizer.h"

static void fixture_path(char *p, size_t cap, const char *name) {
    snprintf(p, cap, "%s/gguf/%s", tl_test_fixture_dir(), name);
}

static tl_gguf *open_fixture(tl_test_ctx *t, const char *name) {
    char p[512];
    tl_error e;
    fixture_path(p, sizeof p, name);
    tl_gguf *g = tl_gguf_open(p, &e);
    CHECK_MSG(g != NULL, "open %s: %s", p, e.msg);
    return g;
}

static char *read_fixture(tl_test_ctx *t, const char *name, size_t *len) {
    char p[512], *buf;
    tl_error e;
    fixture_path(p, sizeof p, name);
    if (tl_read_file(p, 1u << 26, &buf, len, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return NULL;
    }
    return buf;
}

/* ---------------------------------------------------------------- dequantization */

/* Every type's [256, 4] tensor equals gguf.quants.dequantize bit for bit. */
static void test_gguf_dequant_types(tl_test_ctx *t) {
    static const char *const names[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1",
                                        "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
    tl_gguf *g = open_fixture(t, "quants.gguf");
    if (!g) return;
    CHECK(tl_gguf_n_tensors(g) == sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const tl_gguf_tensor *tt = tl_gguf_find_tensor(g, names[i]);
        CHECK_MSG(tt != NULL, "tensor %s missing", names[i]);
        if (!tt) continue;
        CHECK(!strcmp(tl_ggml_type_name(tt->type), names[i]));
        CHECK(tt->n_elements == 1024 && tt->ne[0] == 256 && tt->ne[1] == 4);
        char fn[64];
        size_t len;
        snprintf(fn, sizeof fn, "quants_%s.f32", names[i]);
        char *expect = read_fixture(t, fn, &len);
        if (!expect) continue;
        CHECK(len == 4096);
        float *got = malloc(4096);
        tl_error e;
        CHECK_MSG(tl_gguf_tensor_to_f32(g, tt, got, &e) == 0, "%s", e.msg);
        size_t bad = 0, first = 0;
        for (size_t k = 0; k < 1024; k++)
            if (memcmp(got + k, expect + 4 * k, 4) && !bad++) first = k;
        CHECK_MSG(bad == 0, "%s: %zu of 1024 values differ from gguf.quants.dequantize, first at %zu", names[i], bad,
                  first);
        /* one row at a time gives the same (what a mat-vec over rows would use) */
        float row[256];
        uint32_t be, bb;
        CHECK(tl_ggml_type_block(tt->type, &be, &bb) && tl_ggml_type_dequantizable(tt->type));
        tl_gguf_dequant_row(tt->type, tt->data + 3 * (256 / be) * bb, row, 256);
        CHECK(!memcmp(row, expect + 3 * 1024, 1024));
        free(got);
        free(expect);
    }
    tl_gguf_close(g);
}

/* ---------------------------------------------------------------- metadata */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* The script's rendering: ints in decimal, floats %.9g / %.17g, strings with \ \n \t
 * escaped, arrays as ELEMTYPE[a,b,...]. */
static void render(sbuf *b, const tl_gguf_value *v) {
    char tmp[64];
    switch (v->type) {
    case TL_GGUF_BOOL:
        sb_str(b, v->data[0] ? "true" : "false");
        break;
    case TL_GGUF_FLOAT32:
        snprintf(tmp, sizeof tmp, "%.9g", tl_gguf_value_f64(v));
        sb_str(b, tmp);
        break;
    case TL_GGUF_FLOAT64:
        snprintf(tmp, sizeof tmp, "%.17g", tl_gguf_value_f64(v));
        sb_str(b, tmp);
        break;
    case TL_GGUF_UINT64:
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)tl_gguf_value_u64(v));
        sb_str(b, tmp);
        break;
    case TL_GGUF_STRING:
        for (size_t i = 0; i < v->str.len; i++) {
            char c = v->str.ptr[i];
            if (c == '\\') sb_str(b, "\\\\");
            else if (c == '\n') sb_str(b, "\\n");
            else if (c == '\t') sb_str(b, "\\t");
            else sb_put(b, &c, 1);
        }
        break;
    case TL_GGUF_ARRAY: {
        sb_str(b, tl_gguf_type_name(v->arr_type));
        sb_str(b, "[");
        const uint8_t *pos = v->data;
        for (uint64_t i = 0; i < v->arr_n; i++) {
            tl_gguf_value e;
            tl_gguf_array_next(v, &pos, &e);
            if (i) sb_str(b, ",");
            render(b, &e);
        }
        sb_str(b, "]");
        break;
    }
    default:
        snprintf(tmp, sizeof tmp, "%lld", (long long)tl_gguf_value_i64(v));
        sb_str(b, tmp);
    }
}

/* Every key, its type and value, in file order, as the script wrote them; every
 * tensor's type, shape and data offset as GGUFReader reads them. */
static void test_gguf_metadata(tl_test_ctx *t) {
    tl_gguf *g = open_fixture(t, "tiny_llama.gguf");
    size_t len;
    char *want = read_fixture(t, "tiny_llama_kv.txt", &len);
    if (g && want) {
        CHECK(tl_gguf_version(g) == 3 && tl_gguf_alignment(g) == 64);
        sbuf b = {0};
        for (size_t i = 0; i < tl_gguf_n_kv(g); i++) {
            const tl_gguf_kv *kv = tl_gguf_kv_at(g, i);
            sb_put(&b, kv->key.ptr, kv->key.len);
            sb_str(&b, "\t");
            sb_str(&b, tl_gguf_type_name(kv->val.type));
            sb_str(&b, "\t");
            render(&b, &kv->val);
            sb_str(&b, "\n");
        }
        CHECK_MSG(b.n == len && !memcmp(b.s, want, len), "metadata differs:\n--- ours\n%s--- written\n%s", b.s, want);
        free(b.s);
    }
    free(want);
    want = g ? read_fixture(t, "tiny_llama_tensors.txt", &len) : NULL;
    if (want) {
        sbuf b = {0};
        char tmp[200];
        for (size_t i = 0; i < tl_gguf_n_tensors(g); i++) {
            const tl_gguf_tensor *tt = tl_gguf_tensor_at(g, i);
            sb_put(&b, tt->name.ptr, tt->name.len);
            snprintf(tmp, sizeof tmp, "\t%s\t", tl_ggml_type_name(tt->type));
            sb_str(&b, tmp);
            for (uint32_t d = 0; d < tt->n_dims; d++) {
                snprintf(tmp, sizeof tmp, "%s%llu", d ? "," : "", (unsigned long long)tt->ne[d]);
                sb_str(&b, tmp);
            }
            snprintf(tmp, sizeof tmp, "\t%llu\n", (unsigned long long)(tl_gguf_data_offset(g) + tt->offset));
            sb_str(&b, tmp);
            CHECK(tt->data == NULL || tt->offset % 64 == 0);
        }
        CHECK_MSG(b.n == len && !memcmp(b.s, want, len), "tensors differ:\n--- ours\n%s--- gguf\n%s", b.s, want);
        free(b.s);
    }
    free(want);
    if (g) {
        /* typed getters: the fitting types, the absent key, a wrong type */
        uint32_t u;
        int64_t i64;
        float f;
        int bo;
        tl_gguf_str s;
        tl_gguf_value arr;
        tl_error e;
        CHECK(tl_gguf_get_u32(g, "llama.block_count", &u, &e) == 1 && u == 1);
        CHECK(tl_gguf_get_u32(g, "test.u8", &u, &e) == 1 && u == 200);
        CHECK(tl_gguf_get_i64(g, "test.i64", &i64, &e) == 1 && i64 == -9000000000000000000LL);
        CHECK(tl_gguf_get_f32(g, "llama.rope.freq_base", &f, &e) == 1 && f == 500000.0f);
        CHECK(tl_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bo, &e) == 1 && bo == 1);
        CHECK(tl_gguf_get_str(g, "general.architecture", &s, &e) == 1 && s.len == 5 && !memcmp(s.ptr, "llama", 5));
        CHECK(tl_gguf_get_array(g, "tokenizer.ggml.scores", TL_GGUF_FLOAT32, &arr, &e) == 1 && arr.arr_n == 32);
        u = 7;
        CHECK(tl_gguf_get_u32(g, "no.such.key", &u, &e) == 0 && u == 7);
        CHECK(tl_gguf_get_u32(g, "general.name", &u, &e) == -1 && strstr(e.msg, "tiny_llama.gguf") &&
              strstr(e.msg, "'general.name': type STRING, expected an integer"));
        CHECK(tl_gguf_get_u32(g, "test.i8", &u, &e) == -1 && strstr(e.msg, "out of range"));
        CHECK(tl_gguf_get_u32(g, "test.u64", &u, &e) == -1 && strstr(e.msg, "out of range"));
        CHECK(tl_gguf_get_i64(g, "test.u64", &i64, &e) == -1);
        CHECK(tl_gguf_get_str(g, "llama.block_count", &s, &e) == -1 && strstr(e.msg, "type UINT32, expected STRING"));
        CHECK(tl_gguf_get_bool(g, "test.u8", &bo, &e) == -1 && strstr(e.msg, "expected BOOL"));
        CHECK(tl_gguf_get_f32(g, "general.name", &f, &e) == -1 && strstr(e.msg, "expected FLOAT32"));
        CHECK(tl_gguf_get_array(g, "tokenizer.ggml.scores", TL_GGUF_INT32, &arr, &e) == -1 &&
              strstr(e.msg, "ARRAY of FLOAT32, expected ARRAY of INT32"));
        tl_gguf_close(g);
    }
}

/* ---------------------------------------------------------------- Llama */

static void test_gguf_llama_config(tl_test_ctx *t) {
    tl_gguf *g = open_fixture(t, "tiny_llama.gguf");
    if (!g) return;
    tl_config c;
    tl_error e;
    CHECK_MSG(tl_gguf_llama_config(g, &c, &e) == 0, "%s", e.msg);
    CHECK(c.vocab_size == 32 && c.dim == 32 && c.hidden_dim == 64 && c.n_layers == 1 && c.n_heads == 4 &&
          c.n_kv_heads == 2 && c.max_seq_len == 128 && c.tied == 0 && c.bos_id == 1 && c.eos_id == 2);
    CHECK(c.rope_theta == 500000.0f && c.norm_eps == 1e-6f);

    /* names */
    char hf[128];
    static const char *const pairs[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
        {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
        {"blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"},
        {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
        {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
        {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"},
        {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"},
        {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"},
        {"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"},
        {"blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        CHECK_MSG(tl_gguf_llama_hf_name(pairs[i][0], strlen(pairs[i][0]), hf, sizeof hf) == 0 &&
                      !strcmp(hf, pairs[i][1]), "%s -> %s", pairs[i][0], hf);
    static const char *const bad[] = {"blk.x.attn_q.weight", "blk.1.attn_qq.weight", "blk..attn_q.weight",
                                      "blk.01.attn_q.weight", "rope_freqs.weight", "blk.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(tl_gguf_llama_hf_name(bad[i], strlen(bad[i]), hf, sizeof hf) == -1, "%s accepted", bad[i]);
    CHECK(tl_gguf_llama_hf_name("blk.1.attn_q.weight", 19, hf, 10) == -1); /* does not fit */

    /* q and k come back in HF row order: the script permuted them as llama.cpp's converter does */
    static const char *const qk[][2] = {{"blk.0.attn_q.weight", "tiny_llama_q_hf.f32"},
                                        {"blk.0.attn_k.weight", "tiny_llama_k_hf.f32"}};
    for (int i = 0; i < 2; i++) {
        const tl_gguf_tensor *tt = tl_gguf_find_tensor(g, qk[i][0]);
        size_t len;
        char *want = read_fixture(t, qk[i][1], &len);
        if (!tt || !want) {
            CHECK(0);
            free(want);
            continue;
        }
        CHECK(len == tt->n_elements * 4);
        float *got = malloc(len), *plain = malloc(len), *back = malloc(len);
        CHECK_MSG(tl_gguf_llama_tensor_f32(g, tt, &c, got, &e) == 0, "%s", e.msg);
        CHECK_MSG(!memcmp(got, want, len), "%s is not in HF order", qk[i][0]);
        /* the file's own order differs (the test would pass without unpermuting otherwise) */
        tl_gguf_tensor_to_f32(g, tt, plain, &e);
        CHECK(memcmp(plain, want, len) != 0);
        /* and permuting the HF rows gives the file's order back */
        int rows = (int)tt->ne[1], cols = (int)tt->ne[0];
        tl_gguf_llama_permute(got, back, rows, cols, i ? c.n_kv_heads : c.n_heads);
        CHECK(!memcmp(back, plain, len));
        free(got);
        free(plain);
        free(back);
        free(want);
    }
    /* other tensors are not reordered */
    const tl_gguf_tensor *v = tl_gguf_find_tensor(g, "blk.0.attn_v.weight");
    float a[512], b[512];
    CHECK(v && v->n_elements == 512);
    if (v) {
        tl_gguf_llama_tensor_f32(g, v, &c, a, &e);
        tl_gguf_tensor_to_f32(g, v, b, &e);
        CHECK(!memcmp(a, b, sizeof a));
    }
    tl_gguf_close(g);
}

/* ---------------------------------------------------------------- tokenizer */

static char *read_zst(tl_test_ctx *t, const char *name, size_t *len) {
    size_t zl;
    char *z = read_fixture(t, name, &zl), *out = NULL;
    if (!z) return NULL;
    unsigned long long n = ZSTD_getFrameContentSize(z, zl);
    if (n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN && n < (1u << 26)) {
        out = malloc((size_t)n + 1);
        size_t got = out ? ZSTD_decompress(out, (size_t)n, z, zl) : 0;
        if (!out || ZSTD_isError(got) || got != n) {
            free(out);
            out = NULL;
        } else {
            *len = (size_t)n;
        }
    }
    free(z);
    CHECK_MSG(out != NULL, "cannot decompress %s", name);
    return out;
}

/* The Llama 2 tokenizer's pieces as llama.cpp's converter stores them encode every
 * line of the shared corpora to the same ids as the tokenizer.model. */
static void test_gguf_tokenizer_llama2(tl_test_ctx *t) {
    size_t len;
    char *bytes = read_zst(t, "llama2_tokenizer.gguf.zst", &len);
    if (!bytes) return;
    tl_error e;
    tl_gguf *g = tl_gguf_open_bytes((const uint8_t *)bytes, len, "llama2_tokenizer.gguf", &e);
    CHECK_MSG(g != NULL, "%s", e.msg);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizers/llama2/tokenizer.model", tl_test_shared_dir());
    tl_tokenizer *ref = tl_tokenizer_load(p, &e);
    CHECK_MSG(ref != NULL, "%s: %s", p, e.msg);
    tl_gguf_tokenizer_info info;
    tl_tokenizer *tk = g ? tl_tokenizer_from_gguf(g, &info, &e) : NULL;
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (tk && ref) {
        CHECK(tl_tokenizer_vocab_size(tk) == 32000 && tl_tokenizer_bos_id(tk) == 1 && tl_tokenizer_eos_id(tk) == 2 &&
              tl_tokenizer_unk_id(tk) == 0 && info.add_bos == 1 && info.add_eos == 0);
        for (int id = 0; id < 32000; id++)
            if (strcmp(tl_tokenizer_piece(tk, id), tl_tokenizer_piece(ref, id)) ||
                tl_tokenizer_score(tk, id) != tl_tokenizer_score(ref, id) ||
                tl_tokenizer_piece_type(tk, id) != tl_tokenizer_piece_type(ref, id)) {
                CHECK_MSG(0, "piece %d differs", id);
                break;
            }
        /* the chat template, as written (the script renders it escaped in tiny_llama_kv.txt) */
        CHECK(info.chat_template.ptr && info.chat_template.len > 20 &&
              !memcmp(info.chat_template.ptr, "{% for message in messages %}\n", 30));
        static const char *const corpora[] = {"botchan.txt", "tinyshakespeare.txt"};
        size_t lines = 0, diff = 0;
        for (int c = 0; c < 2; c++) {
            char *text;
            size_t tl;
            snprintf(p, sizeof p, "%s/corpora/%s", tl_test_shared_dir(), corpora[c]);
            if (tl_read_file(p, 1u << 28, &text, &tl, &e)) {
                CHECK_MSG(0, "%s", e.msg);
                continue;
            }
            /* the first 400 lines one by one, with BOS as add_bos_token asks, then 64 KiB at once */
            const char *s = text;
            for (int k = 0; k < 401 && s < text + tl; k++) {
                const char *nl = memchr(s, '\n', (size_t)(text + tl - s));
                size_t n = k < 400 ? (nl ? (size_t)(nl - s) : (size_t)(text + tl - s)) : (tl < 65536 ? tl : 65536);
                if (k == 400) s = text;
                int *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                int ra = tl_tokenizer_encode(tk, s, n, TL_ENC_BOS, &a, &na, &e);
                int rb = tl_tokenizer_encode(ref, s, n, TL_ENC_BOS, &b, &nb, &e);
                lines++;
                if (ra || rb || na != nb || (na && memcmp(a, b, na * sizeof *a))) {
                    if (!diff++) CHECK_MSG(0, "%s line %d: ids differ: '%.*s'", corpora[c], k, (int)n, s);
                }
                free(a);
                free(b);
                s = nl ? nl + 1 : text + tl;
            }
            free(text);
        }
        CHECK_MSG(diff == 0 && lines > 700, "%zu of %zu lines differ", diff, lines);
    }
    tl_tokenizer_free(tk);
    tl_tokenizer_free(ref);
    tl_gguf_close(g);
    free(bytes);
}

/* The tiny model's vocabulary (no byte pieces) also loads, with its ids. */
static void test_gguf_tokenizer_tiny(tl_test_ctx *t) {
    tl_gguf *g = open_fixture(t, "tiny_llama.gguf");
    if (!g) return;
    tl_error e;
    tl_gguf_tokenizer_info info;
    tl_tokenizer *tk = tl_tokenizer_from_gguf(g, &info, &e);
    CHECK_MSG(tk != NULL, "%s", e.msg);
    if (tk) {
        CHECK(tl_tokenizer_vocab_size(tk) == 32 && tl_tokenizer_bos_id(tk) == 1 && info.add_bos == 1);
        int *ids = NULL;
        size_t n = 0;
        /* "▁a" is a piece (id 7), then b, c (ids 18, 19): the highest-scoring merges first */
        CHECK(tl_tokenizer_encode(tk, "abc", 3, 0, &ids, &n, &e) == 0);
        CHECK_MSG(n == 3 && ids[0] == 7 && ids[1] == 18 && ids[2] == 19, "n=%zu", n);
        free(ids);
        tl_tokenizer_free(tk);
    }
    tl_gguf_close(g);
}

/* ---------------------------------------------------------------- GGUF -> HF directory */

/* The converted directory loads with the HF loader and gives the logits that the
 * script computed from HF Llama's definition on the same weights (a q/k row
 * order or a dequantization gone wrong shows here); its tokenizer.model encodes
 * as the GGUF's vocabulary does, and the chat template moves to tokenizer_config.json. */
static void test_gguf_to_hf_dir(tl_test_ctx *t) {
    tl_gguf *g = open_fixture(t, "tiny_llama.gguf");
    if (!g) return;
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/tiny_hf", tl_test_tmpdir());
    tl_error e;
    CHECK_MSG(tl_gguf_to_hf_dir(g, dir, &e) == 0, "%s", e.msg);
    tl_model m;
    if (tl_model_load_hf(dir, &m, &e)) {
        CHECK_MSG(0, "%s", e.msg);
    } else {
        CHECK(m.cfg.n_kv_heads == 2 && m.cfg.rope_theta == 500000.0f && !m.cfg.tied);
        static const int toks[8] = {1, 7, 18, 19, 20, 3, 25, 9};
        float logits[8 * 32];
        tl_acts *a = tl_acts_create(&m.cfg, 1, 8, &e);
        CHECK(a && tl_model_logits(&m, a, toks, logits, &e) == 0);
        size_t len;
        char *want = read_fixture(t, "tiny_llama_logits.f32", &len);
        if (want && len == sizeof logits) {
            double err = tl_test_rel_err(logits, (const float *)(const void *)want, 8 * 32);
            CHECK_MSG(err < 1e-5, "logits differ from the reference: relative error %g", err);
        } else {
            CHECK(0);
        }
        free(want);
        tl_acts_free(a);
        tl_model_free(&m);
    }
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    tl_tokenizer *spm = tl_tokenizer_load(p, &e), *gt = tl_tokenizer_from_gguf(g, NULL, &e);
    CHECK_MSG(spm && gt, "%s", e.msg);
    if (spm && gt) {
        CHECK(tl_tokenizer_vocab_size(spm) == 32 && tl_tokenizer_bos_id(spm) == 1 && tl_tokenizer_eos_id(spm) == 2);
        int *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        static const char text[] = "abc hij  gfe kmo a";
        CHECK(tl_tokenizer_encode(spm, text, sizeof text - 1, TL_ENC_BOS, &a, &na, &e) == 0);
        CHECK(tl_tokenizer_encode(gt, text, sizeof text - 1, TL_ENC_BOS, &b, &nb, &e) == 0);
        CHECK(na == nb && na > 5 && !memcmp(a, b, na * sizeof *a));
        free(a);
        free(b);
    }
    tl_tokenizer_free(spm);
    tl_tokenizer_free(gt);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    char *tc;
    size_t tcl;
    CHECK(tl_read_file(p, 1 << 20, &tc, &tcl, &e) == 0 && strstr(tc, "\\n{{ '<|user|>\\n' + message['content']") &&
          strstr(tc, "\"add_bos_token\"") && strstr(tc, "LlamaTokenizer"));
    if (tc) free(tc);
    tl_gguf_close(g);

    /* a file that is not a Llama model is refused, naming it */
    g = open_fixture(t, "quants.gguf");
    snprintf(dir, sizeof dir, "%s/quants_hf", tl_test_tmpdir());
    CHECK(g && tl_gguf_to_hf_dir(g, dir, &e) == -1 && strstr(e.msg, "quants.gguf: general.architecture is 'none'"));
    tl_gguf_close(g);
}

/* ---------------------------------------------------------------- hostile input */

typedef tl_test_buf wbuf;

static void w_put(wbuf *w, const void *p, size_t n) { tl_test_buf_put(w, p, n); }
static void w_u32(wbuf *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    w_put(w, b, 4);
}
static void w_u64(wbuf *w, uint64_t v) {
    w_u32(w, (uint32_t)v);
    w_u32(w, (uint32_t)(v >> 32));
}
static void w_strn(wbuf *w, const char *s, size_t n) {
    w_u64(w, n);
    w_put(w, s, n);
}
static void w_str(wbuf *w, const char *s) { w_strn(w, s, strlen(s)); }
static void w_hdr(wbuf *w, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    w_put(w, "GGUF", 4);
    w_u32(w, version);
    w_u64(w, n_t);
    w_u64(w, n_kv);
}
static void w_kv_u32(wbuf *w, const char *key, uint32_t v) {
    w_str(w, key);
    w_u32(w, TL_GGUF_UINT32);
    w_u32(w, v);
}
static void w_kv_str(wbuf *w, const char *key, const char *v) {
    w_str(w, key);
    w_u32(w, TL_GGUF_STRING);
    w_str(w, v);
}
/* a tensor info with dims ne[0..n_dims) */
static void w_tinfo(wbuf *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    w_str(w, name);
    w_u32(w, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) w_u64(w, ne[i]);
    w_u32(w, type);
    w_u64(w, off);
}
static void w_pad(wbuf *w, size_t align) {
    while (w->n % align) w_put(w, "", 1);
}
static void w_zeros(wbuf *w, size_t n) {
    for (size_t i = 0; i < n; i++) w_put(w, "", 1);
}

/* Opens the bytes as "bad.gguf" and requires a refusal whose message names the
 * file and contains want. */
static void expect_refused(tl_test_ctx *t, wbuf *w, const char *want, int line) {
    tl_error e;
    e.msg[0] = 0;
    tl_gguf *g = tl_gguf_open_bytes(w->p, w->n, "bad.gguf", &e);
    if (g) {
        CHECK_MSG(0, "line %d: accepted, expected '%s'", line, want);
        tl_gguf_close(g);
    } else {
        CHECK_MSG(strncmp(e.msg, "bad.gguf: ", 10) == 0 && strstr(e.msg, want), "line %d: got '%s', expected '%s'",
                  line, e.msg, want);
    }
    free(w->p);
    memset(w, 0, sizeof *w);
}
#define REFUSED(w, want) expect_refused(t, &(w), want, __LINE__)

static void test_gguf_corrupt(tl_test_ctx *t) {
    wbuf w = {0};
    const uint64_t ne2[2] = {32, 2};

    /* a valid file first: the cases below each break one thing in it */
    w_hdr(&w, 3, 1, 1);
    w_kv_str(&w, "general.architecture", "llama");
    w_tinfo(&w, "w", 2, ne2, TL_GGML_Q4_0, 0);
    w_pad(&w, 32);
    w_zeros(&w, 36);
    tl_error e;
    tl_gguf *g = tl_gguf_open_bytes(w.p, w.n, "ok.gguf", &e);
    CHECK_MSG(g != NULL, "%s", e.msg);
    tl_gguf_close(g);
    free(w.p);
    memset(&w, 0, sizeof w);

    w_put(&w, "GGUX", 4);
    w_zeros(&w, 20);
    REFUSED(w, "not a GGUF file");
    w_hdr(&w, 1, 0, 0);
    REFUSED(w, "GGUF version 1 is not supported");
    w_hdr(&w, 0x03000000u, 0, 0);
    REFUSED(w, "big-endian GGUF");
    w_put(&w, "GGUF\3\0", 6);
    REFUSED(w, "header: version at byte 4 runs past the end of the file");
    w_hdr(&w, 3, 0, 1000000000000ull);
    REFUSED(w, "header: metadata count 1000000000000 is more than the file");
    w_hdr(&w, 3, UINT64_MAX, 0);
    REFUSED(w, "header: tensor count 18446744073709551615 is more than the file");

    /* strings */
    w_hdr(&w, 3, 0, 1);
    w_u64(&w, 1ull << 62);
    w_put(&w, "key", 3);
    w_zeros(&w, 20);
    REFUSED(w, "metadata key 0: key at byte 24 has length 4611686018427387904, more than the 23 bytes left");
    w_hdr(&w, 3, 0, 2);
    w_kv_u32(&w, "a", 1);
    w_str(&w, "b");
    w_u32(&w, TL_GGUF_STRING);
    w_u64(&w, 100);
    w_put(&w, "short", 5);
    REFUSED(w, "key 'b': string value at byte");
    w_hdr(&w, 3, 0, 1);
    w_kv_str(&w, "general.name", "caf\xc3");
    REFUSED(w, "key 'general.name': string value at byte 48 is not valid UTF-8 (byte 3 of the string)");
    w_hdr(&w, 3, 0, 1);
    w_kv_str(&w, "overlong", "\xc0\xaf");
    REFUSED(w, "is not valid UTF-8");
    w_hdr(&w, 3, 0, 1);
    w_kv_str(&w, "surrogate", "\xed\xa0\x80");
    REFUSED(w, "is not valid UTF-8");
    w_hdr(&w, 3, 0, 1);
    w_kv_u32(&w, "bad\xff key", 1);
    REFUSED(w, "metadata key 0: key at byte 24 is not valid UTF-8");
    w_hdr(&w, 3, 0, 1);
    w_kv_u32(&w, "", 1);
    REFUSED(w, "metadata key 0: the key is empty");
    w_hdr(&w, 3, 0, 1);
    w_strn(&w, "a\0b", 3);
    w_u32(&w, TL_GGUF_UINT8);
    w_put(&w, "\1", 1);
    REFUSED(w, "NUL byte");

    /* value types, arrays */
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "k");
    w_u32(&w, 13);
    w_u32(&w, 0);
    REFUSED(w, "key 'k': unknown value type 13");
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "k");
    w_u32(&w, TL_GGUF_BOOL);
    w_put(&w, "\2", 1);
    REFUSED(w, "key 'k': BOOL value 2 is neither 0 nor 1");
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "tokenizer.ggml.tokens");
    w_u32(&w, TL_GGUF_ARRAY);
    w_u32(&w, TL_GGUF_STRING);
    w_u64(&w, 1ull << 61);
    w_str(&w, "a");
    REFUSED(w, "key 'tokenizer.ggml.tokens': array length 2305843009213693952 (STRING) is more than the 9 bytes");
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "k");
    w_u32(&w, TL_GGUF_ARRAY);
    w_u32(&w, TL_GGUF_FLOAT64);
    w_u64(&w, 3);
    w_zeros(&w, 16);
    REFUSED(w, "key 'k': array length 3 (FLOAT64) is more than the 16 bytes left");
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "k");
    w_u32(&w, TL_GGUF_ARRAY);
    w_u32(&w, 99);
    w_u64(&w, 0);
    REFUSED(w, "key 'k': unknown array element type 99");
    w_hdr(&w, 3, 0, 1);
    w_str(&w, "k");
    w_u32(&w, TL_GGUF_ARRAY);
    w_u32(&w, TL_GGUF_STRING);
    w_u64(&w, 2);
    w_str(&w, "ok");
    w_strn(&w, "\xff", 1);
    REFUSED(w, "key 'k' element 1: string value at byte");
    w_hdr(&w, 3, 0, 1); /* arrays nested 9 deep */
    w_str(&w, "deep");
    w_u32(&w, TL_GGUF_ARRAY);
    for (int d = 0; d < 9; d++) {
        w_u32(&w, TL_GGUF_ARRAY);
        w_u64(&w, 1);
    }
    w_u32(&w, TL_GGUF_UINT8);
    w_u64(&w, 0);
    REFUSED(w, "key 'deep");
    w_hdr(&w, 3, 0, 2);
    w_kv_u32(&w, "a", 1);
    w_kv_str(&w, "a", "again");
    REFUSED(w, "metadata key 'a' appears twice");
    w_hdr(&w, 3, 0, 1);
    w_kv_str(&w, "general.alignment", "32");
    REFUSED(w, "key 'general.alignment': type STRING, expected UINT32");
    w_hdr(&w, 3, 0, 1);
    w_kv_u32(&w, "general.alignment", 48);
    REFUSED(w, "key 'general.alignment': 48 is not a power of two");

    /* tensor infos */
    const uint64_t ne5[5] = {32, 1, 1, 1, 1};
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 5, ne5, TL_GGML_F32, 0);
    REFUSED(w, "tensor 'w': n_dims 5 is not between 1 and 4");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 0, ne5, TL_GGML_F32, 0);
    w_zeros(&w, 32);
    REFUSED(w, "tensor 'w': n_dims 0 is not between 1 and 4");
    const uint64_t big[3] = {1ull << 32, 1ull << 32, 2};
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 3, big, TL_GGML_F32, 0);
    REFUSED(w, "tensor 'w': shape [4294967296, 4294967296, 2, 1] has more elements than fit in 63 bits");
    const uint64_t huge[1] = {UINT64_MAX};
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 1, huge, TL_GGML_F32, 0);
    REFUSED(w, "more elements than fit in 63 bits");
    const uint64_t bytes_ovf[2] = {1ull << 31, 1ull << 31};
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, bytes_ovf, 28 /* F64 */, 0);
    REFUSED(w, "tensor 'w': 4611686018427387904 elements of F64 take more bytes than fit in 63 bits");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, 99, 0);
    REFUSED(w, "tensor 'w': unknown tensor type 99");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, 4, 0); /* Q4_2: removed from ggml long ago */
    REFUSED(w, "tensor 'w': unknown tensor type 4");
    const uint64_t ne33[2] = {33, 2};
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne33, TL_GGML_Q8_0, 0);
    REFUSED(w, "tensor 'w': row length 33 is not a multiple of the Q8_0 block size 32");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 16);
    w_pad(&w, 32);
    w_zeros(&w, 512);
    REFUSED(w, "tensor 'w': data offset 16 is not a multiple of the alignment 32");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 0);
    w_pad(&w, 32);
    w_zeros(&w, 255);
    REFUSED(w, "tensor 'w': data [0, +256) runs past the end of the file (255 bytes of tensor data");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 1ull << 63);
    w_pad(&w, 32);
    w_zeros(&w, 256);
    REFUSED(w, "runs past the end of the file");
    w_hdr(&w, 3, 2, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 256);
    w_pad(&w, 32);
    w_zeros(&w, 512);
    REFUSED(w, "tensor name 'w' appears twice");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w\xe2\x82", 2, ne2, TL_GGML_F32, 0);
    REFUSED(w, "tensor 0: name at byte 24 is not valid UTF-8");
    w_hdr(&w, 3, 1, 0);
    w_tinfo(&w, "w", 2, ne2, TL_GGML_F32, 0);
    w.n -= 3; /* cut inside the offset */
    REFUSED(w, "tensor 'w': offset at byte");

    /* a Llama key of the wrong type is refused by the mapping, naming file and key */
    w_hdr(&w, 3, 0, 2);
    w_kv_str(&w, "general.architecture", "llama");
    w_kv_str(&w, "llama.embedding_length", "2048");
    g = tl_gguf_open_bytes(w.p, w.n, "types.gguf", &e);
    CHECK_MSG(g != NULL, "%s", e.msg);
    tl_config c;
    CHECK(g && tl_gguf_llama_config(g, &c, &e) == -1 &&
          strstr(e.msg, "types.gguf: key 'llama.embedding_length': type STRING, expected an integer"));
    CHECK(g && tl_tokenizer_from_gguf(g, NULL, &e) == NULL && strstr(e.msg, "types.gguf: key 'tokenizer.ggml.model'"));
    tl_gguf_close(g);
    free(w.p);

    CHECK(tl_gguf_open_bytes(NULL, 0, "empty.gguf", &e) == NULL && strstr(e.msg, "empty.gguf: the file is empty"));
    char p[512];
    snprintf(p, sizeof p, "%s/none.gguf", tl_test_tmpdir());
    CHECK(tl_gguf_open(p, &e) == NULL && strstr(e.msg, "none.gguf: cannot open"));
}

/* Whatever the file opens to, everything reachable is walked and converted. */
static void walk_all(const tl_gguf *g) {
    for (size_t i = 0; i < tl_gguf_n_kv(g); i++) {
        const tl_gguf_kv *kv = tl_gguf_kv_at(g, i);
        if (kv->val.type == TL_GGUF_ARRAY) {
            sbuf b = {0};
            render(&b, &kv->val);
            free(b.s);
        }
    }
    for (size_t i = 0; i < tl_gguf_n_tensors(g); i++) {
        const tl_gguf_tensor *tt = tl_gguf_tensor_at(g, i);
        if (!tl_ggml_type_dequantizable(tt->type) || tt->n_elements > (1u << 20)) continue;
        float *out = malloc(tt->n_elements * sizeof(float) + 4);
        tl_error e;
        tl_gguf_tensor_to_f32(g, tt, out, &e);
        free(out);
    }
    tl_config c;
    tl_error e;
    if (tl_gguf_llama_config(g, &c, &e) == 0) {
        float *out = malloc((size_t)c.dim * (size_t)c.dim * 4 + 4);
        const tl_gguf_tensor *q = tl_gguf_find_tensor(g, "blk.0.attn_q.weight");
        if (q && q->n_elements <= (size_t)c.dim * (size_t)c.dim) tl_gguf_llama_tensor_f32(g, q, &c, out, &e);
        free(out);
    }
    tl_tokenizer_free(tl_tokenizer_from_gguf(g, NULL, &e));
}

/* Every prefix of a real file is refused; random byte changes never crash (run
 * under ASan/UBSan by `make asan`). */
static void test_gguf_truncate_and_mutate(tl_test_ctx *t) {
    size_t len;
    char *file = read_fixture(t, "tiny_llama.gguf", &len);
    if (!file) return;
    tl_error e;
    size_t accepted = 0;
    for (size_t n = 0; n < len; n++) {
        tl_gguf *g = tl_gguf_open_bytes((const uint8_t *)file, n, "cut.gguf", &e);
        if (g) {
            accepted++;
            tl_gguf_close(g);
        } else if (strncmp(e.msg, "cut.gguf: ", 10)) {
            CHECK_MSG(0, "prefix %zu: message does not name the file: %s", n, e.msg);
        }
    }
    CHECK_MSG(accepted == 0, "%zu truncated files accepted", accepted);
    uint8_t *m = malloc(len);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int opened = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(m, file, len);
        for (int k = 0; k < 1 + it % 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t pos = (s >> 8) % (it % 2 ? 3200 : len); /* half the time inside the header/metadata */
            m[pos] = (uint8_t)(it % 3 == 0 ? s >> 56 : m[pos] ^ (1u << (s % 8)));
        }
        tl_gguf *g = tl_gguf_open_bytes(m, len, "mut.gguf", &e);
        if (g) {
            opened++;
            walk_all(g);
            tl_gguf_close(g);
        } else {
            CHECK_MSG(!strncmp(e.msg, "mut.gguf: ", 10), "message does not name the file: %s", e.msg);
        }
    }
    CHECK(opened > 100); /* changes to tensor data leave the file valid */
    free(m);
    free(file);
}

const tl_test tests_gguf[] = {
    {"gguf_dequant_types", test_gguf_dequant_types},
    {"gguf_metadata", test_gguf_metadata},
    {"gguf_llama_config", test_gguf_llama_config},
    {"gguf_tokenizer_llama2", test_gguf_tokenizer_llama2},
    {"gguf_tokenizer_tiny", test_gguf_tokenizer_tiny},
    {"gguf_to_hf_dir", test_gguf_to_hf_dir},
    {"gguf_corrupt", test_gguf_corrupt},
    {"gguf_truncate_and_mutate", test_gguf_truncate_and_mutate},
    {NULL, NULL},
};

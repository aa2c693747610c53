/* test_gguf_write.c - the GGUF writer: files read back by our reader (checked
 * against the gguf package in tests/test_gguf.c) give the model, tokenizer and
 * metadata written; each tensor holds its rows quantized as tl_quantize_row
 * (checked against ggml in tests/test_quantize.c) in llama.cpp's q/k order;
 * the per-tensor types are those llama-quantize chose for the same model
 * (tests/fixtures/quantize/mix_*.txt, scripts/check_gguf_llamacpp.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "harness.h"
#include "model.h"
#include "quantize.h"
#include "tokenizer.h"

static int make_model(tl_model *m, int dim, int hidden, int layers, int heads, int kv, int vocab, int tied) {
    tl_config c = {.vocab_size = vocab, .dim = dim, .hidden_dim = hidden, .n_layers = layers, .n_heads = heads,
                   .n_kv_heads = kv, .max_seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = tied,
                   .bos_id = 1, .eos_id = 2};
    tl_error e;
    if (tl_model_create(m, &c, &e)) return -1;
    tl_model_init_weights(m, 7);
    /* norms away from 1 so a mix-up shows */
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 1)
            for (size_t k = 0; k < m->tensors[i].numel; k++) m->params[m->tensors[i].offset + k] = 1.0f + 0.01f * (float)k;
    return 0;
}

static void tmp_path(char *p, size_t cap, const char *name) { snprintf(p, cap, "/tmp/tl_gguf_write_%d_%s", (int)getpid(), name); }

/* F32: the model comes back bit for bit (q/k permuted on writing and undone on
 * reading), with the tokenizer, its flags and the chat template. */
static void test_gguf_write_f32_roundtrip(tl_test_ctx *t) {
    char tk_path[512], path[256];
    snprintf(tk_path, sizeof tk_path, "%s/infer_gqa_f32/tokenizer.model", tl_test_fixture_dir());
    tl_error e;
    tl_tokenizer *tok = tl_tokenizer_load(tk_path, &e);
    CHECK_MSG(tok != NULL, "%s", e.msg);
    if (!tok) return;
    tl_model m;
    if (make_model(&m, 64, 96, 2, 8, 2, 1003, 0)) { /* 3 padding pieces beyond the tokenizer's 1000 */
        CHECK(0);
        tl_tokenizer_free(tok);
        return;
    }
    tmp_path(path, sizeof path, "f32.gguf");
    const char *tpl = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
    tl_gguf_llama_opts o = {.tok = tok, .add_bos = 1, .add_eos = 1, .chat_template = tpl, .name = "unit"};
    int rc = tl_gguf_write_llama(path, &m, tl_gguf_ftype_find("f32"), &o, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    tl_gguf *g = rc ? NULL : tl_gguf_open(path, &e);
    CHECK_MSG(rc || g, "%s", e.msg);
    if (g) {
        CHECK(tl_gguf_version(g) == 3 && tl_gguf_alignment(g) == 32);
        CHECK(tl_gguf_n_tensors(g) == (size_t)m.n_tensors);
        tl_model back;
        CHECK_MSG(tl_gguf_llama_load_model(g, &back, &e) == 0, "%s", e.msg);
        if (back.params) {
            CHECK(back.cfg.dim == 64 && back.cfg.n_kv_heads == 2 && back.cfg.vocab_size == 1003 && !back.cfg.tied);
            CHECK(back.n_params == m.n_params && !memcmp(back.params, m.params, sizeof(float) * m.n_params));
            tl_model_free(&back);
        }
        /* q is stored in llama.cpp's order, not HF's */
        const tl_gguf_tensor *q = tl_gguf_find_tensor(g, "blk.0.attn_q.weight");
        const tl_tensor_info *hq = tl_model_find_tensor(&m, "model.layers.0.self_attn.q_proj.weight");
        CHECK(q && hq && memcmp(q->data, m.params + hq->offset, q->n_bytes) != 0);
        tl_gguf_tokenizer_info info;
        tl_tokenizer *tg = tl_gguf_find_kv(g, "tokenizer.ggml.model") ? tl_tokenizer_from_gguf(g, &info, &e) : NULL;
        CHECK_MSG(tg != NULL, "%s", e.msg);
        if (tg) {
            CHECK(info.add_bos == 1 && info.add_eos == 1);
            CHECK(info.chat_template.len == strlen(tpl) && !memcmp(info.chat_template.ptr, tpl, strlen(tpl)));
            CHECK(tl_tokenizer_vocab_size(tg) == 1003 && !strcmp(tl_tokenizer_piece(tg, 1001), "[PAD2]"));
            const char *text = "Hello world, this is a tiny test of the GGUF tokenizer: 123 ü€!";
            int *a = NULL, *b = NULL;
            size_t na = 0, nb = 0;
            CHECK(tl_tokenizer_encode(tok, text, strlen(text), TL_ENC_BOS, &a, &na, &e) == 0);
            CHECK(tl_tokenizer_encode(tg, text, strlen(text), TL_ENC_BOS, &b, &nb, &e) == 0);
            CHECK(na > 5 && na == nb && a && b && !memcmp(a, b, sizeof(int) * na));
            free(a);
            free(b);
            tl_tokenizer_free(tg);
        }
        tl_gguf_str s;
        CHECK(tl_gguf_get_str(g, "general.name", &s, &e) == 1 && s.len == 4 && !memcmp(s.ptr, "unit", 4));
        uint32_t ft;
        CHECK(tl_gguf_get_u32(g, "general.file_type", &ft, &e) == 1 && ft == 0);
        tl_gguf_close(g);
    }
    unlink(path);
    tl_model_free(&m);
    tl_tokenizer_free(tok);
}

/* Every file type: each tensor holds tl_quantize_row of its (q/k-permuted) rows
 * in the type the mix gives it, and the model read back is close to the original. */
static void test_gguf_write_types(tl_test_ctx *t) {
    static const char *const types[] = {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M", "Q5_K_M", "Q6_K"};
    static const double tol[] = {1e-3, 1e-2, 1e-2, 0.15, 0.15, 0.08, 0.08, 0.15, 0.08, 0.04};
    tl_model m;
    if (make_model(&m, 256, 512, 4, 4, 2, 300, 1)) {
        CHECK(0);
        return;
    }
    char path[256];
    tmp_path(path, sizeof path, "types.gguf");
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const tl_gguf_ftype *ft = tl_gguf_ftype_find(types[k]);
        CHECK(ft != NULL);
        if (!ft) continue;
        tl_error e;
        tl_gguf_llama_opts o = {0};
        if (tl_gguf_write_llama(path, &m, ft, &o, &e)) {
            CHECK_MSG(0, "%s: %s", types[k], e.msg);
            continue;
        }
        tl_gguf *g = tl_gguf_open(path, &e);
        CHECK_MSG(g != NULL, "%s: %s", types[k], e.msg);
        if (!g) continue;
        CHECK(!tl_gguf_find_kv(g, "tokenizer.ggml.model") && !tl_gguf_find_tensor(g, "output.weight"));
        for (int i = 0; i < m.n_tensors; i++) {
            const tl_tensor_info *ti = &m.tensors[i];
            char gname[128];
            CHECK(tl_gguf_llama_gguf_name(ti->name, gname, sizeof gname) == 0);
            const tl_gguf_tensor *gt = tl_gguf_find_tensor(g, gname);
            CHECK_MSG(gt != NULL, "%s: %s missing", types[k], gname);
            if (!gt) continue;
            int fb;
            uint32_t want = tl_gguf_llama_tensor_type(ft, gname, ti->ndim, gt->ne[0], 4, 1, &fb);
            CHECK_MSG(gt->type == want, "%s: %s is %s", types[k], gname, tl_ggml_type_name(gt->type));
            int rows = ti->ndim == 2 ? ti->shape[0] : 1, cols = ti->shape[ti->ndim - 1];
            const float *src = m.params + ti->offset;
            float *perm = malloc(sizeof(float) * ti->numel);
            uint8_t *blk = malloc(gt->n_bytes);
            int heads = strstr(gname, "attn_q") ? 4 : strstr(gname, "attn_k") ? 2 : 0;
            if (heads) {
                tl_gguf_llama_permute(src, perm, rows, cols, heads);
                src = perm;
            }
            size_t rb = tl_quantize_row_bytes(gt->type, (size_t)cols);
            for (int r = 0; r < rows; r++) tl_quantize_row(gt->type, src + (size_t)r * cols, blk + (size_t)r * rb, (size_t)cols);
            CHECK_MSG(rb * (size_t)rows == gt->n_bytes && !memcmp(blk, gt->data, gt->n_bytes), "%s: %s's blocks", types[k],
                      gname);
            free(perm);
            free(blk);
        }
        tl_model back;
        if (tl_gguf_llama_load_model(g, &back, &e) == 0) {
            double err = tl_test_rel_err(back.params, m.params, m.n_params);
            CHECK_MSG(err < tol[k], "%s: relative error %g", types[k], err);
            tl_model_free(&back);
        } else {
            CHECK_MSG(0, "%s: %s", types[k], e.msg);
        }
        tl_gguf_close(g);
    }
    unlink(path);
    tl_model_free(&m);
}

/* The per-tensor types of Q4_K_M, Q5_K_M, Q4_0 and Q8_0 for a 22-layer model (TinyLlama's
 * depth) with rows of 256 and 288 (not a whole super-block), as llama-quantize chose them. */
static void test_gguf_write_mix_matches_llama_quantize(tl_test_ctx *t) {
    static const char *const types[] = {"Q4_K_M", "Q5_K_M", "Q4_0", "Q8_0"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char p[512], *text;
        size_t len;
        tl_error e;
        snprintf(p, sizeof p, "%s/quantize/mix_%s.txt", tl_test_fixture_dir(), types[k]);
        if (tl_read_file(p, 1u << 20, &text, &len, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            continue;
        }
        const tl_gguf_ftype *ft = tl_gguf_ftype_find(types[k]);
        int n = 0, tied = strstr(text, "output.weight\t") == NULL;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            char name[128], type[16];
            int nd;
            unsigned long long ne0;
            if (sscanf(line, "%127[^\t]\t%15[^\t]\t%d\t%llu", name, type, &nd, &ne0) != 4) continue;
            int fb;
            uint32_t got = tl_gguf_llama_tensor_type(ft, name, nd, ne0, 22, tied, &fb);
            CHECK_MSG(!strcmp(tl_ggml_type_name(got), type), "%s: %s: ours %s, llama-quantize's %s", types[k], name,
                      tl_ggml_type_name(got), type);
            n++;
        }
        CHECK(n == 22 * 9 + 3);
        free(text);
    }
}

/* Names, types and refusals. */
static void test_gguf_write_refusals(tl_test_ctx *t) {
    CHECK(tl_gguf_ftype_find("q4_k_m") && tl_gguf_ftype_find("Q4_K_M")->ftype == 15);
    CHECK(tl_gguf_ftype_find("Q3_K") == NULL && tl_gguf_ftype_find("") == NULL);
    char out[64];
    CHECK(tl_gguf_llama_gguf_name("model.layers.12.mlp.down_proj.weight", out, sizeof out) == 0 &&
          !strcmp(out, "blk.12.ffn_down.weight"));
    CHECK(tl_gguf_llama_gguf_name("lm_head.weight", out, sizeof out) == 0 && !strcmp(out, "output.weight"));
    CHECK(tl_gguf_llama_gguf_name("model.layers.1.mlp.experts.weight", out, sizeof out) == -1);
    tl_gguf_writer *w = tl_gguf_writer_new(32);
    tl_error e;
    uint64_t ne[2] = {48, 2};
    CHECK(tl_gguf_w_tensor(w, "x", TL_GGML_Q8_0, 2, ne, &e) == -1 && strstr(e.msg, "not a multiple"));
    CHECK(tl_gguf_w_tensor(w, "x", TL_GGML_F32, 5, ne, &e) == -1);
    CHECK(tl_gguf_w_tensor(w, "x", TL_GGML_F32, 2, ne, &e) == 0);
    CHECK(tl_gguf_writer_write(w, "/nonexistent-dir/x.gguf", NULL, NULL, &e) == -1 && strstr(e.msg, "/nonexistent-dir/x.gguf"));
    tl_gguf_writer_free(w);
    CHECK(tl_gguf_writer_new(24) == NULL);
}

const tl_test tests_gguf_write[] = {
    {"gguf_write_f32_roundtrip", test_gguf_write_f32_roundtrip},
    {"gguf_write_types", test_gguf_write_types},
    {"gguf_write_mix_matches_llama_quantize", test_gguf_write_mix_matches_llama_quantize},
    {"gguf_write_refusals", test_gguf_write_refusals},
    {NULL, NULL},
};

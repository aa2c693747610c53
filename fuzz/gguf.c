/* fuzz/gguf.c - the GGUF reader (tl_gguf_open) on arbitrary bytes, then
 * everything a loader does with an accepted file: every key walked (nested
 * arrays included), every typed getter, every tensor dequantized, the Llama
 * config, q/k unpermuted, the tokenizer built and used. */
#include "fuzz_util.h"
#include "gguf.h"

static void walk(const tl_gguf_value *v, int depth) {
    if (v->type != TL_GGUF_ARRAY) {
        (void)tl_gguf_value_i64(v);
        (void)tl_gguf_value_f64(v);
        return;
    }
    const uint8_t *pos = v->data;
    for (uint64_t i = 0; i < v->arr_n; i++) {
        tl_gguf_value e;
        tl_gguf_array_next(v, &pos, &e);
        if (e.type != v->arr_type || depth > 16) abort();
        walk(&e, depth + 1);
    }
    if ((size_t)(pos - v->data) + 12 != v->size) abort(); /* the walk ends where the value does */
}

static void use(const tl_gguf *g) {
    tl_error err;
    for (size_t i = 0; i < tl_gguf_n_kv(g); i++) {
        const tl_gguf_kv *kv = tl_gguf_kv_at(g, i);
        char key[256];
        if (kv->key.len >= sizeof key) continue;
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        if (tl_gguf_find_kv(g, key) != kv) abort(); /* keys are unique */
        if (kv->val.type == TL_GGUF_ARRAY) walk(&kv->val, 0);
        uint32_t u;
        int64_t i64;
        float f;
        int b;
        tl_gguf_str s;
        tl_gguf_value a;
        tl_gguf_get_u32(g, key, &u, &err);
        tl_gguf_get_i64(g, key, &i64, &err);
        tl_gguf_get_f32(g, key, &f, &err);
        tl_gguf_get_bool(g, key, &b, &err);
        tl_gguf_get_str(g, key, &s, &err);
        tl_gguf_get_array(g, key, kv->val.arr_type, &a, &err);
    }
    for (size_t i = 0; i < tl_gguf_n_tensors(g); i++) {
        const tl_gguf_tensor *t = tl_gguf_tensor_at(g, i);
        if (t->n_elements > ((uint64_t)1 << 22)) continue;
        float *out = malloc(t->n_elements * sizeof *out + 1);
        if (!out) abort();
        tl_gguf_tensor_to_f32(g, t, out, &err);
        free(out);
    }
    tl_config cfg;
    if (tl_gguf_llama_config(g, &cfg, &err) == 0) {
        for (size_t i = 0; i < tl_gguf_n_tensors(g); i++) {
            const tl_gguf_tensor *t = tl_gguf_tensor_at(g, i);
            char hf[128];
            tl_gguf_llama_hf_name(t->name.ptr, t->name.len, hf, sizeof hf);
            if (t->n_elements > ((uint64_t)1 << 22)) continue;
            float *out = malloc(t->n_elements * sizeof *out + 1);
            if (!out) abort();
            tl_gguf_llama_tensor_f32(g, t, &cfg, out, &err);
            free(out);
        }
    }
    tl_gguf_tokenizer_info info;
    tl_tokenizer *tk = tl_tokenizer_from_gguf(g, &info, &err);
    if (tk) {
        int *ids = NULL;
        size_t n = 0;
        static const char text[] = "Hello world, caf\xc3\xa9 <s> 123";
        if (tl_tokenizer_encode(tk, text, sizeof text - 1, TL_ENC_BOS | TL_ENC_PARSE_SPECIAL, &ids, &n, &err) == 0) {
            char *back = NULL;
            size_t bl;
            tl_tokenizer_decode(tk, ids, n, &back, &bl, &err);
            free(back);
        }
        free(ids);
        tl_tokenizer_free(tk);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* through a file, as the program opens them: the mmap path included */
    static char path[600];
    if (!path[0]) fz_path(path, sizeof path, "in.gguf");
    fz_write(path, data, size);
    tl_error err;
    tl_gguf *g = tl_gguf_open(path, &err);
    if (g) {
        fz_accepted();
        use(g);
        tl_gguf_close(g);
    } else {
        fz_refused(err.msg);
        if (!strstr(err.msg, path)) {
            fprintf(stderr, "message does not name the file: %s\n", err.msg);
            abort();
        }
    }
    return 0;
}

/* gguf_convert.c - a Llama GGUF file to an HF directory: config.json,
 * model.safetensors (F32: every tensor dequantized, q/k rows back in HF order),
 * tokenizer.model rebuilt from tokenizer.ggml.*, and the files transformers
 * reads beside it (tokenizer_config.json with the chat template). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "gguf.h"
#include "hf_tokenizer_files.h"
#include "model.h"
#include "tokenizer_internal.h"

static int fill_weights(const tl_gguf *g, tl_model *m, tl_error *err) {
    const char *path = tl_gguf_path(g);
    /* every GGUF tensor must be one the model has, with the HF shape */
    for (size_t i = 0; i < tl_gguf_n_tensors(g); i++) {
        const tl_gguf_tensor *t = tl_gguf_tensor_at(g, i);
        char hf[128];
        if (tl_gguf_llama_hf_name(t->name.ptr, t->name.len, hf, sizeof hf))
            return tl_fail(err, "%s: tensor '%.*s' is not part of a Llama model this program reads", path,
                           (int)t->name.len, t->name.ptr);
        const tl_tensor_info *ti = tl_model_find_tensor(m, hf);
        if (!ti)
            return tl_fail(err, "%s: tensor '%.*s' (%s) does not belong to the model its llama.* keys describe", path,
                           (int)t->name.len, t->name.ptr, hf);
        uint64_t rows = ti->ndim == 2 ? (uint64_t)ti->shape[0] : 1, cols = (uint64_t)ti->shape[ti->ndim - 1];
        if (t->n_dims != (uint32_t)ti->ndim || t->ne[0] != cols || (ti->ndim == 2 && t->ne[1] != rows))
            return tl_fail(err, "%s: tensor '%.*s' has shape [%llu, %llu], expected [%llu, %llu] (ne0 first)", path,
                           (int)t->name.len, t->name.ptr, (unsigned long long)t->ne[0],
                           (unsigned long long)t->ne[1], (unsigned long long)cols, (unsigned long long)rows);
        if (tl_gguf_llama_tensor_f32(g, t, &m->cfg, m->params + ti->offset, err)) return -1;
    }
    /* and every model tensor must come from the file */
    for (int i = 0; i < m->n_tensors; i++) {
        const char *name = m->tensors[i].name;
        int found = 0;
        for (size_t k = 0; k < tl_gguf_n_tensors(g) && !found; k++) {
            const tl_gguf_tensor *t = tl_gguf_tensor_at(g, k);
            char hf[128];
            found = !tl_gguf_llama_hf_name(t->name.ptr, t->name.len, hf, sizeof hf) && !strcmp(hf, name);
        }
        if (!found) return tl_fail(err, "%s: no tensor for %s", path, name);
    }
    return 0;
}

static int join(char *out, size_t cap, const char *dir, const char *name, tl_error *err) {
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap) return tl_fail(err, "%s: path too long", dir);
    return 0;
}

/* tokenizer.model (a SentencePiece ModelProto) from the GGUF's vocabulary. */
static int write_tokenizer(const tl_gguf *g, const char *dir, const tl_config *cfg, tl_error *err) {
    const char *path = tl_gguf_path(g);
    tl_gguf_tokenizer_info info;
    tl_tokenizer *tk = tl_tokenizer_from_gguf(g, &info, err);
    if (!tk) return -1;
    int rc = -1;
    unsigned char *proto = NULL;
    size_t plen = 0;
    tl_piece_src *src = malloc((size_t)tk->n * sizeof *src);
    cJSON *tc = NULL;
    char *json = NULL, p[4096];
    if (!src) {
        tl_fail(err, "out of memory");
        goto done;
    }
    /* the ModelProto writer fixes the special ids and the normalizer as Llama's */
    if (tk->unk_id != 0 || tk->bos_id != 1 || tk->eos_id != 2 || tk->remove_extra_ws || !tk->add_dummy_prefix) {
        tl_fail(err, "%s: a tokenizer.model can only be written for the Llama layout (unk 0, bos 1, eos 2, a dummy "
                "prefix, no whitespace collapsing); this file has unk %d, bos %d, eos %d", path, tk->unk_id,
                tk->bos_id, tk->eos_id);
        goto done;
    }
    for (int i = 0; i < tk->n; i++) {
        src[i].str = tk->pieces[i].str;
        src[i].len = tk->pieces[i].len;
        src[i].score = tk->pieces[i].score;
        src[i].type = tk->pieces[i].type;
    }
    tl_spm_write_opts o = {.vocab_size = tk->n, .byte_fallback = tk->byte_fallback, .add_dummy_prefix = 1,
                           .allow_whitespace_only_pieces = 1, .max_piece_length = 16, .character_coverage = 1.0};
    if (tl_spm_serialize(src, tk->n, &o, &proto, &plen, err)) goto done;
    if (join(p, sizeof p, dir, "tokenizer.model", err) || tl_write_file_atomic(p, proto, plen, err)) goto done;
    /* the chat template goes into tokenizer_config.json, which the writer below
     * completes (it keeps the template of a tokenizer_config.json beside the tokenizer) */
    if (info.chat_template.ptr) {
        tc = cJSON_CreateObject();
        char *tpl = malloc(info.chat_template.len + 1);
        if (!tc || !tpl) {
            free(tpl);
            tl_fail(err, "out of memory");
            goto done;
        }
        memcpy(tpl, info.chat_template.ptr, info.chat_template.len);
        tpl[info.chat_template.len] = 0;
        cJSON_AddStringToObject(tc, "chat_template", tpl);
        free(tpl);
        json = cJSON_PrintUnformatted(tc);
        if (!json || join(p, sizeof p, dir, "tokenizer_config.json", err) ||
            tl_write_file_atomic(p, json, strlen(json), err))
            goto done;
    }
    if (join(p, sizeof p, dir, "tokenizer.model", err) || tl_hf_tokenizer_files_write(dir, p, cfg, err)) goto done;
    rc = 0;
done:
    cJSON_Delete(tc);
    free(json);
    free(proto);
    free(src);
    tl_tokenizer_free(tk);
    return rc;
}

int tl_gguf_llama_load_model(const tl_gguf *g, tl_model *m, tl_error *err) {
    tl_config cfg;
    if (tl_gguf_llama_config(g, &cfg, err) || tl_model_create(m, &cfg, err)) return -1;
    if (fill_weights(g, m, err)) {
        tl_model_free(m);
        return -1;
    }
    return 0;
}

int tl_gguf_to_hf_dir(const tl_gguf *g, const char *dir, tl_error *err) {
    tl_model m;
    if (tl_gguf_llama_load_model(g, &m, err)) return -1;
    int rc = tl_model_save_hf(dir, &m, err);
    tl_config cfg = m.cfg;
    tl_model_free(&m);
    if (!rc && tl_gguf_find_kv(g, "tokenizer.ggml.model")) rc = write_tokenizer(g, dir, &cfg, err);
    return rc ? -1 : 0;
}

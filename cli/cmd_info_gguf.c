/* cmd_info_gguf.c - `tinyllama info --gguf FILE`: a GGUF file's metadata, its
 * tensor table, and the Llama configuration read from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "gguf.h"

/* A string with control characters escaped, cut after max bytes. */
static void print_str(const char *s, size_t n, size_t max) {
    putchar('"');
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (n > max) printf("... (%zu bytes)", n);
}

static void print_value(const tl_gguf_value *v, int full) {
    switch (v->type) {
    case TL_GGUF_STRING:
        print_str(v->str.ptr, v->str.len, full ? (size_t)-1 : 200);
        break;
    case TL_GGUF_BOOL:
        fputs(v->data[0] ? "true" : "false", stdout);
        break;
    case TL_GGUF_FLOAT32:
    case TL_GGUF_FLOAT64:
        printf("%.9g", tl_gguf_value_f64(v));
        break;
    case TL_GGUF_UINT64:
        printf("%llu", (unsigned long long)tl_gguf_value_u64(v));
        break;
    case TL_GGUF_ARRAY: {
        /* long arrays (the vocabulary) show their first elements unless --full */
        uint64_t show = full ? v->arr_n : v->arr_n < 8 ? v->arr_n : 8;
        printf("%s[%llu] [", tl_gguf_type_name(v->arr_type), (unsigned long long)v->arr_n);
        const uint8_t *pos = v->data;
        for (uint64_t i = 0; i < show; i++) {
            tl_gguf_value e;
            tl_gguf_array_next(v, &pos, &e);
            if (i) fputs(", ", stdout);
            print_value(&e, full);
        }
        fputs(show < v->arr_n ? ", ...]" : "]", stdout);
        break;
    }
    default:
        printf("%lld", (long long)tl_gguf_value_i64(v));
    }
}

int cli_info_gguf(const char *path, int full) {
    tl_error err;
    tl_gguf *g = tl_gguf_open(path, &err);
    if (!g) {
        cli_error("info", "%s", err.msg);
        return 1;
    }
    size_t nkv = tl_gguf_n_kv(g), nt = tl_gguf_n_tensors(g);
    printf("%s: GGUF version %u, %zu metadata keys, %zu tensors, alignment %u, tensor data from byte %llu\n", path,
           tl_gguf_version(g), nkv, nt, tl_gguf_alignment(g), (unsigned long long)tl_gguf_data_offset(g));
    printf("\nmetadata:\n");
    for (size_t i = 0; i < nkv; i++) {
        const tl_gguf_kv *kv = tl_gguf_kv_at(g, i);
        printf("  %-44.*s %-8s ", (int)kv->key.len, kv->key.ptr, tl_gguf_type_name(kv->val.type));
        print_value(&kv->val, full);
        putchar('\n');
    }
    printf("\ntensors:\n  %-36s %-6s %-24s %14s %12s\n", "name", "type", "shape (ne0 first)", "offset", "bytes");
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        const tl_gguf_tensor *t = tl_gguf_tensor_at(g, i);
        char shape[96];
        int o = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%llu", d ? " x " : "", (unsigned long long)t->ne[d]);
        printf("  %-36.*s %-6s %-24s %14llu %12llu\n", (int)t->name.len, t->name.ptr, tl_ggml_type_name(t->type), shape,
               (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
        total += t->n_bytes;
    }
    printf("  %zu tensors, %llu bytes of tensor data\n", nt, (unsigned long long)total);

    tl_config cfg;
    if (tl_gguf_llama_config(g, &cfg, &err) == 0) {
        char *json = tl_config_to_json(&cfg);
        printf("\nas an HF Llama config:\n%s\nparameters: %zu (non-embedding %zu)\n", json,
               tl_config_num_params(&cfg), tl_config_num_nonembed_params(&cfg));
        free(json);
    } else {
        printf("\nnot a Llama model this program reads: %s\n", err.msg);
    }
    tl_gguf_close(g);
    return 0;
}

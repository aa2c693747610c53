/* fuzz/config.c - tl_config_parse_json (HF config.json) on arbitrary text; a
 * config that parses must survive tl_config_to_json and parse back the same. */
#include <stdlib.h>

#include "config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fz_cstr(data, size);
    tl_config c, back;
    memset(&c, 0, sizeof c);
    memset(&back, 0, sizeof back);
    tl_error err;
    if (tl_config_parse_json(text, "config.json", &c, &err)) {
        fz_refused(err.msg);
    } else {
        fz_accepted();
        (void)tl_config_num_params(&c);
        (void)tl_config_train_flops_per_token(&c, c.max_seq_len);
        char *json = tl_config_to_json(&c);
        if (!json) abort();
        if (tl_config_parse_json(json, "round trip", &back, &err)) {
            fprintf(stderr, "config accepted but its own JSON is refused: %s\n%s\n", err.msg, json);
            abort();
        }
        if (memcmp(&c, &back, sizeof c) != 0) {
            fprintf(stderr, "config changes through its own JSON:\n%s\n", json);
            abort();
        }
        free(json);
    }
    free(text);
    return 0;
}

/* fuzz/hf_tokenizer_config.c - tl_hf_tokenizer_config_read (what the GGUF
 * writer takes from tokenizer_config.json: the chat template and the BOS/EOS
 * flags) on arbitrary bytes; an accepted file gives flags that are 0 or 1 and a
 * template that is a NUL-terminated string. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "hf_tokenizer_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600];
    fz_path(path, sizeof path, "tokenizer_config.json");
    fz_write(path, data, size);
    char *tpl = NULL;
    int bos = 7, eos = 9;
    tl_error err;
    if (tl_hf_tokenizer_config_read(fz_scratch(), &tpl, &bos, &eos, &err)) {
        if (tpl) abort(); /* nothing handed out on failure */
        fz_refused(err.msg);
        return 0;
    }
    fz_accepted();
    if ((bos != 7 && bos != 0 && bos != 1) || (eos != 9 && eos != 0 && eos != 1)) abort();
    if (tpl) (void)strlen(tpl);
    free(tpl);
    return 0;
}

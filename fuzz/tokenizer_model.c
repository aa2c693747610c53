/* fuzz/tokenizer_model.c - a SentencePiece tokenizer.model (protobuf ModelProto)
 * from arbitrary bytes (tl_tokenizer_load_model_bytes, which tl_tokenizer_load
 * calls after reading the file), then encode / decode with it. */
#include "fuzz_util.h"
#include "tokenizer.h"
#include "tokenizer_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tl_error err;
    tl_tokenizer *t = tl_tokenizer_load_model_bytes(data, size, "tokenizer.model", &err);
    if (!t) return fz_refused(err.msg);
    fz_accepted();
    fz_use_tokenizer(t);
    tl_tokenizer_free(t);
    return 0;
}

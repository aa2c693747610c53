/* fuzz/serve_request.c - tl_serve_request_parse (the body of an HTTP completion
 * request) on arbitrary bytes, as a chat and as a plain completion; an accepted
 * request must hold only valid UTF-8 strings and in-range fields. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "request.h"

static void check_str(const char *s, const char *what) {
    if (!s || !tl_utf8_valid(s, strlen(s), NULL)) {
        fprintf(stderr, "accepted request has a bad %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int chat = 0; chat < 2; chat++) {
        tl_serve_request r;
        tl_error err;
        if (tl_serve_request_parse((const char *)data, size, chat, &r, &err)) {
            fz_refused(err.msg);
            continue;
        }
        fz_accepted();
        if (chat) {
            if (r.n_msgs < 1) abort();
            for (int i = 0; i < r.n_msgs; i++) check_str(r.msgs[i].content, "message");
        } else {
            check_str(r.prompt, "prompt");
        }
        if (r.n_stops < 0 || r.n_stops > TL_SERVE_MAX_STOPS) abort();
        for (int i = 0; i < r.n_stops; i++) check_str(r.stops[i], "stop string");
        if (r.max_tokens < 0 || !(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p > 0 && r.top_p <= 1) ||
            !(r.min_p >= 0 && r.min_p <= 1) || r.top_k < 0 || r.n < 1 || r.n > TL_SERVE_MAX_N ||
            r.top_logprobs < 0 || r.top_logprobs > TL_SERVE_MAX_TOP_LOGPROBS || (r.top_logprobs && !r.logprobs)) {
            fprintf(stderr, "accepted request has a field out of range\n");
            abort();
        }
        tl_serve_request_free(&r);
    }
    return 0;
}

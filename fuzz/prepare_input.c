/* fuzz/prepare_input.c - input files as `prepare` reads them (tl_prepare_run on
 * one file: the .zst / .gz streams, line reading, JSON records, text fields,
 * filters, paragraph splitting, UTF-8 repair, segmenting), and the shards it
 * writes must then open.
 *
 * Input: one mode byte, then the file content.  Mode bits:
 *   0-1  0 plain; 1 the harness zstd-compresses the content; 2 it gzips it;
 *        3 the content is taken as compressed bytes as they are (.zst if bit 2
 *        is clear, else .gz), to exercise the decoders on broken streams
 *   3-4  0 JSONL "text"; 1 a .txt file as one document; 2 .txt paragraphs;
 *        3 JSONL with the dotted field "meta.text" and the filter "meta.lang=xx"
 *   5    tiny limits (64-byte documents, 16-byte segments, 256-byte batches; else
 *        4 KiB batches)
 *   6    split by samples with --val-count 1 (else 10% of documents)
 *   7    the byte-level ids (else a small SentencePiece tokenizer trained once
 *        at start-up, which takes the word-cache path) */
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "data.h"
#include "fuzz_util.h"
#include "prepare.h"
#include "tokenizer.h"

static char tok_path[600];

static void train_tokenizer(void) {
    char txt[600];
    fz_path(txt, sizeof txt, "tok-corpus.txt");
    static const char corpus[] = "the quick brown fox jumps over the lazy dog\n"
                                 "a stitch in time saves nine; the early bird catches the worm\n"
                                 "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC 12345 {\"json\": [1, 2]}\n";
    fz_write(txt, corpus, sizeof corpus - 1);
    fz_path(tok_path, sizeof tok_path, "tokenizer.model");
    tl_bpe_train_opts o;
    tl_bpe_train_default_opts(&o);
    o.vocab_size = 340;
    o.nthreads = 1;
    const char *in[1] = {txt};
    tl_error err;
    if (tl_bpe_train(in, 1, &o, tok_path, &err)) {
        fprintf(stderr, "fuzz: training the tokenizer: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!tok_path[0]) train_tokenizer();
    int mode = data[0], comp = mode & 3, kind = (mode >> 3) & 3;
    data++, size--;

    static const char *const ext[4] = {".jsonl", ".txt", ".txt", ".jsonl"};
    const char *cext = comp == 1 ? ".zst" : comp == 2 ? ".gz" : comp == 3 ? ((mode & 4) ? ".gz" : ".zst") : "";
    char name[64], in[700], out[600];
    snprintf(name, sizeof name, "in%s%s", ext[kind], cext);
    fz_path(in, sizeof in, name);
    fz_path(out, sizeof out, "out");
    /* only this input: an earlier input of another name would be read too if the directory were given */
    if (comp == 1) {
        size_t cap = ZSTD_compressBound(size);
        void *z = malloc(cap ? cap : 1);
        if (!z) abort();
        size_t zn = ZSTD_compress(z, cap, data, size, 1);
        if (ZSTD_isError(zn)) abort();
        fz_write(in, z, zn);
        free(z);
    } else if (comp == 2) {
        gzFile g = gzopen(in, "wb1");
        if (!g || (size && gzwrite(g, data, (unsigned)size) != (int)size) || gzclose(g) != Z_OK) abort();
    } else {
        fz_write(in, data, size);
    }

    tl_prepare_opts o;
    tl_prepare_default_opts(&o);
    const char *inputs[1] = {in};
    static const char *const exclude[1] = {"meta.lang=xx"};
    o.inputs = inputs;
    o.n_inputs = 1;
    o.out_dir = out;
    if (mode & 128) o.byte_level = 1;
    else o.tokenizer = tok_path;
    o.txt_mode = kind == 2 ? TL_TXT_PARAGRAPHS : TL_TXT_FILE;
    if (kind == 3) {
        o.text_field = "meta.text";
        o.exclude = exclude;
        o.n_exclude = 1;
    }
    o.seq_len = 16;
    o.shard_samples = 64;
    o.nthreads = 1;
    o.batch_bytes = 4096; /* the 4 MiB default batch would cost more than the input */
    if (mode & 32) {
        o.max_doc_bytes = 64;
        o.segment_bytes = 16;
        o.batch_bytes = 256;
    }
    if (mode & 64) {
        o.split_by = TL_SPLIT_SAMPLES;
        o.val_count = 1;
    } else {
        o.val_fraction = 0.1;
    }
    tl_prepare_result r;
    tl_error err;
    if (tl_prepare_run(&o, &r, &err)) {
        fz_refused(err.msg);
    } else {
        if (getenv("TL_FUZZ_VERBOSE"))
            fprintf(stderr, "accepted: %llu documents, %llu malformed, %llu missing text, %llu filtered, %d bad inputs%s%s\n",
                    (unsigned long long)r.total.documents, (unsigned long long)r.total.malformed_json,
                    (unsigned long long)r.total.missing_text, (unsigned long long)r.total.filtered, r.bad_inputs,
                    r.n_inputs && r.inputs[0].error[0] ? ": " : "", r.n_inputs ? r.inputs[0].error : "");
        /* what was written reads back as valid shards */
        for (int k = 0; k < 2; k++) {
            const tl_prepare_split *sp = k ? &r.val : &r.train;
            for (uint64_t i = 0; i < sp->shards; i++) {
                char path[700];
                snprintf(path, sizeof path, "%s/%s-%05llu.bin", out, k ? "val" : "train", (unsigned long long)i);
                tl_shard s;
                if (tl_shard_open(&s, path, &err)) {
                    fprintf(stderr, "prepare wrote a shard that does not open: %s\n", err.msg);
                    abort();
                }
                tl_shard_close(&s);
            }
        }
        tl_prepare_result_free(&r);
    }
    unlink(in);
    return 0;
}

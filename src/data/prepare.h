/* prepare.h - the pretraining data pipeline: raw corpora -> packed token shards.
 *
 * Reads .jsonl / .txt inputs (optionally .zst or .gz compressed; files,
 * directories and globs), extracts one text field per JSON line (or takes a
 * whole text file, or each blank-line-separated block, as a document), repairs
 * invalid UTF-8, tokenizes on all cores, appends EOS (and optionally BOS) to
 * every document and packs the token stream into shards of seq_len+1-token
 * samples (src/data/data.h): OUT/train-NNNNN.bin and OUT/val-NNNNN.bin, with
 * OUT/manifest.json written last (docs/formats.md, docs/data.md).
 *
 * The output is a pure function of the inputs and the settings: the same bytes
 * whatever the thread count or batch size, so re-running is idempotent.  Bad
 * input (malformed JSON, missing text, invalid UTF-8, empty documents,
 * truncated or corrupt compressed streams, over-long lines) is counted per input
 * file and reported in the result and the manifest; it never stops the run. */
#ifndef TL_PREPARE_H
#define TL_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "common.h"

/* TL_FMT_CHAT: JSONL conversations for supervised fine-tuning; TL_FMT_PREFERENCE:
 * preference pairs for DPO (see below) */
enum { TL_FMT_AUTO = 0, TL_FMT_JSONL = 1, TL_FMT_TXT = 2, TL_FMT_CHAT = 3, TL_FMT_PREFERENCE = 4 };
enum { TL_TXT_FILE = 0, TL_TXT_PARAGRAPHS = 1 };
enum { TL_SPLIT_DOCS = 0, TL_SPLIT_SAMPLES = 1 };

typedef struct {
    uint64_t bytes_read;  /* input file bytes consumed so far (compressed size) */
    uint64_t bytes_total; /* sum of the input file sizes */
    uint64_t text_bytes;  /* document text bytes tokenized */
    uint64_t documents, tokens;
    double elapsed;
    int file_index, n_files;
    const char *file;
    int done;             /* last call */
} tl_prepare_progress;

typedef struct {
    const char *const *inputs; /* files, directories (files with a known extension inside, sorted), globs */
    int n_inputs;
    const char *out_dir;       /* created; gets train-NNNNN.bin, val-NNNNN.bin, manifest.json */
    const char *tokenizer;     /* tokenizer.model or tokenizer.json; NULL with byte_level */
    int byte_level;            /* 259 ids: byte + 3; 0 unk, 1 bos, 2 eos */
    const char *text_field;    /* JSON field holding the text, dotted path allowed (default "text") */
    const char *const *exclude; /* "dotted.key=value": skip JSON documents whose string field equals value */
    int n_exclude;
    int format;                /* TL_FMT_*: AUTO decides by file name */
    int txt_mode;              /* TL_TXT_*: a .txt file is one document, or one per blank-line block */
    int add_bos, add_eos;      /* defaults (after tl_prepare_default_opts): 0, 1 */
    int seq_len;               /* samples hold seq_len + 1 tokens */
    double val_fraction;       /* of documents or samples (split_by), spread evenly */
    uint64_t val_count;        /* alternatively: the first N documents or samples (if > 0) */
    int split_by;              /* TL_SPLIT_* */
    uint64_t shard_samples;    /* samples per shard file */
    int nthreads;              /* <= 0: all cores */
    size_t max_doc_bytes;      /* JSON lines longer than this are skipped and counted */
    size_t segment_bytes;      /* documents are tokenized in pieces of about this size, cut at newlines */
    size_t batch_bytes;        /* text read per parallel batch (memory bound; never changes the output) */
    int no_word_cache;         /* encode segments whole instead of word by word (same ids, slower) */
    int allow_empty;           /* inputs that give no sample are not an error (an empty data set is written) */
    const char *chat_template; /* TL_FMT_CHAT: zephyr (default), llama2 or chatml (chat_template.h) */
    void (*progress)(const tl_prepare_progress *p, void *user); /* may be NULL */
    void *progress_user;
    double progress_every;     /* seconds between progress calls (default 0.5) */
} tl_prepare_opts;

void tl_prepare_default_opts(tl_prepare_opts *o);

/* Per input file.  Every line/document read ends up in exactly one counter:
 * documents (written), or malformed_json, missing_text, empty, filtered, too_long. */
typedef struct {
    char *path;
    const char *format;   /* "jsonl", "jsonl.zst", "txt.gz", ... */
    uint64_t file_bytes;  /* size on disk */
    uint64_t raw_bytes;   /* decompressed bytes */
    uint64_t text_bytes;  /* bytes of document text tokenized (after UTF-8 repair) */
    uint64_t documents, tokens, train_documents, val_documents;
    uint64_t blank_lines;            /* whitespace-only lines in JSONL (ignored, not an error) */
    uint64_t malformed_json;         /* lines that are not a JSON object */
    uint64_t missing_text;           /* objects without a string text field */
    uint64_t empty;                  /* documents with empty text (skipped) */
    uint64_t filtered;               /* excluded by a metadata filter */
    uint64_t too_long;               /* lines over max_doc_bytes (skipped) */
    uint64_t invalid_utf8_docs;      /* documents repaired */
    uint64_t invalid_utf8_bytes;     /* ill-formed bytes replaced by U+FFFD */
    uint64_t forced_splits;          /* cuts inside a line longer than segment limits (see docs/data.md) */
    int truncated;                   /* compressed stream ended early or was corrupt (total: count of inputs) */
    char error[256];                 /* what went wrong with the stream, "" if nothing */
} tl_prepare_input;

typedef struct {
    uint64_t samples, tokens, documents, shards;
} tl_prepare_split;

/* ---- chat data (--format chat) ----
 * One conversation per JSONL line, {"messages": [{"role", "content"}, ...]}
 * (OpenAI / UltraChat) or {"conversations": [{"from", "value"}, ...]} (ShareGPT;
 * from human/user, gpt/assistant, system), rendered with a chat template,
 * encoded with BOS and special tokens parsed, and stored as one masked sample
 * per conversation (no packing): the mask marks the assistant replies and their
 * closing end-of-turn token.  A longer conversation is cut to seq_len+1 tokens
 * (counted; skipped as too_long if no reply token is left); a shorter one is
 * padded with EOS, masked out.  Every bad line is counted by reason and named
 * (file:line: why) in the result, up to TL_CHAT_MAX_ISSUES lines. */
enum {
    TL_CONV_OK = 0,
    TL_CONV_MALFORMED,   /* not a JSON object */
    TL_CONV_NO_MESSAGES, /* neither a "messages" nor a "conversations" array of objects */
    TL_CONV_BAD_ROLE,    /* a role (or from) that is not system/user/assistant (human/gpt) */
    TL_CONV_NOT_STRING,  /* a content (or value) that is missing or not a string */
    TL_CONV_EMPTY_TURN,  /* a message whose content is empty or only whitespace */
    TL_CONV_BAD_ORDER,   /* system not first, or user and assistant not alternating from a user */
    TL_CONV_NO_ASSISTANT, /* no assistant reply to learn */
    TL_CONV_TOO_LONG,    /* the line is over max_doc_bytes, or no reply token fits seq_len+1 */
    TL_CONV_SAME_PAIR,   /* preference: chosen equals rejected */
    TL_CONV_N_STATUS
};
const char *tl_conv_status_name(int status); /* "malformed_json", "bad_role", ... */

typedef struct {
    tl_chat_msg *msgs; /* contents point into the parsed JSON (valid until tl_conv_free) */
    int n;
    void *json;
} tl_conv;

/* Parses one JSONL line into c (status TL_CONV_OK) or says in why[cap] what is
 * wrong with it (returns that status; c is then empty).  tl_conv_free either way. */
int tl_conv_parse(const char *line, size_t len, tl_conv *c, char *why, size_t cap);
void tl_conv_free(tl_conv *c);

/* A parsed conversation rendered in fmt and encoded whole (BOS, special tokens
 * parsed) into *ids[*n], with *mask[*n] (1: the token is a target, i.e. it
 * overlaps an assistant reply or its end-of-turn marker).  Both malloc'd. */
struct tl_tokenizer;
int tl_conv_encode(const struct tl_tokenizer *tok, tl_chat_format fmt, const tl_conv *c, int **ids, uint8_t **mask,
                   size_t *n, tl_error *err);

/* ---- preference pairs (--format preference) ----
 * One pair per JSONL line: {"prompt": "..." or messages, "chosen": ..., "rejected": ...}
 * ("messages" may stand for the prompt; chosen/rejected: a string, or messages ending
 * with the assistant's reply, UltraFeedback's layout, whose earlier messages are then
 * the prompt when none is given).  Each pair is one masked sample of 2 x (seq_len+1)
 * tokens: the prompt + chosen reply, then the prompt + rejected reply, each cut or
 * padded as a chat sample (a shard of pairs, data.h). */
typedef struct {
    tl_conv prompt; /* its msgs have room for one more message (the reply) */
    const char *chosen, *rejected;
} tl_pref;
int tl_pref_parse(const char *line, size_t len, tl_pref *p, char *why, size_t cap);
void tl_pref_free(tl_pref *p);

#define TL_CHAT_MAX_ISSUES 100
typedef struct {
    uint64_t conversations;          /* written */
    uint64_t bad[TL_CONV_N_STATUS];  /* skipped, by reason (bad[0]: unused) */
    uint64_t truncated, truncated_tokens; /* conversations cut to seq_len+1, tokens cut off */
    uint64_t padded_tokens, target_tokens;
    char **issues;                   /* "file:line: why", the first TL_CHAT_MAX_ISSUES bad lines */
    int n_issues;
} tl_prepare_chat;

typedef struct {
    int n_inputs;
    tl_prepare_input *inputs;
    tl_prepare_input total; /* sums (path NULL) */
    tl_prepare_split train, val;
    uint64_t dropped_tail_tokens; /* tokens of the last incomplete sample(s), not written */
    int bad_inputs;               /* inputs that were truncated or unreadable */
    tl_prepare_chat chat;         /* TL_FMT_CHAT */
    char manifest[4200];          /* path written */
} tl_prepare_result;

/* Runs the pipeline.  Returns 0 (bad input is counted, not an error) or -1 for
 * a setup or output failure (nothing valid-looking is left behind: shards are
 * renamed into place only when complete, and manifest.json is written last). */
int tl_prepare_run(const tl_prepare_opts *o, tl_prepare_result *r, tl_error *err);
void tl_prepare_result_free(tl_prepare_result *r);

/* Replaces ill-formed UTF-8 in s[0..len) by U+FFFD, one per maximal ill-formed
 * subpart (the Unicode recommendation, as Python's errors="replace").  Returns
 * the number of bytes replaced; if non-zero, *out is a malloc'ed repaired copy
 * of *out_len bytes (NULL on out of memory, with the return value still set). */
size_t tl_utf8_repair(const char *s, size_t len, char **out, size_t *out_len);

#endif

/* cmd_prepare.c - `tinyllama prepare`: raw corpora -> packed token shards.
 * The pipeline is src/data/prepare.c; this file parses options, draws the progress
 * line and reports bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "prepare.h"

static void help(void) {
    printf("usage: tinyllama prepare (--tokenizer FILE | --byte-level) --out DIR [options] INPUT...\n\n"
           "Tokenizes raw text into packed token shards for `tinyllama train` (docs/data.md,\n"
           "docs/formats.md).  Writes DIR/train-NNNNN.bin, DIR/val-NNNNN.bin and\n"
           "DIR/manifest.json into DIR.prepare-new and swaps it in for DIR only when it is\n"
           "complete: an earlier data set in DIR stays whole if the run fails or is killed.\n"
           "Train with --data DIR --val-data DIR (its train-*.bin and val-*.bin).\n\n"
           "INPUT: files, directories (searched recursively for known extensions) or globs:\n"
           "  .jsonl .json .ndjson   one JSON object per line, text in --text-field\n"
           "  .txt .text .md         plain text (see --txt-docs)\n"
           "  each optionally compressed: .zst (streamed) or .gz; files named explicitly\n"
           "  with other extensions are read as plain text\n\n"
           "tokenizer:\n"
           "  --tokenizer FILE     tokenizer.model (SentencePiece) or tokenizer.json (HF)\n"
           "  --byte-level         byte vocabulary of 259 ids (byte + 3; 0 unk, 1 bos, 2 eos)\n"
           "  --bos                add BOS before each document (default: no, as TinyLlama)\n"
           "  --no-eos             no EOS after each document (default: EOS)\n"
           "documents:\n"
           "  --text-field NAME    JSON field with the text; dotted paths allowed (default text)\n"
           "  --exclude KEY=VALUE  skip JSON documents whose string field KEY (dotted path) is\n"
           "                       VALUE (repeatable)\n"
           "  --exclude-meta K=V   the same for meta.K, e.g. redpajama_set_name=RedPajamaGithub\n"
           "  --format F           jsonl or txt for every input, whatever its name; chat: JSONL\n"
           "                       conversations with a loss mask for `train --sft`\n"
           "                       (docs/finetuning.md); preference: {prompt, chosen, rejected}\n"
           "                       pairs for `train --dpo`\n"
           "  --chat-template T    chat: zephyr (TinyLlama-Chat, default), llama2 or chatml\n"
           "  --txt-docs MODE      file: a .txt file is one document (default);\n"
           "                       paragraphs: each block of lines between blank lines is one\n"
           "  --max-doc-bytes N    JSON lines longer than this are skipped and counted\n"
           "                       (default 268435456)\n"
           "output:\n"
           "  --out DIR            output directory (created, or replaced as a whole: it may hold\n"
           "                       only a data set)\n"
           "  --seq-len N          tokens per training sequence; samples hold N+1 (default 2048,\n"
           "                       256 with --byte-level)\n"
           "  --val-fraction X     fraction held out for validation, spread evenly (default 0.05)\n"
           "  --val-count N        instead: hold out the first N documents / samples (0: none)\n"
           "  --split-by U         documents (default; whole documents go to one split) or\n"
           "                       samples (default with --byte-level)\n"
           "  --shard-samples N    samples per shard (default: about 64 MiB per shard)\n"
           "run:\n"
           "  --threads N          tokenizer threads (default: all cores); the output is the\n"
           "                       same bytes for any N\n"
           "  --segment-bytes N    tokenize long documents in pieces of about N bytes cut at\n"
           "                       newlines (exact; default 16384)\n"
           "  --no-word-cache      encode text segment by segment instead of word by word with a\n"
           "                       cache (same ids, several times slower; for checking)\n"
           "  --strict             exit with status 1 if any input was bad (default: report it)\n"
           "  --allow-empty        inputs that give no sample write an empty data set (default:\n"
           "                       an error, and DIR is left as it was)\n"
           "  --quiet              no progress line\n\n"
           "Bad input (malformed JSON lines, missing text, empty documents, over-long lines,\n"
           "truncated or corrupt .zst/.gz streams) is skipped and counted; invalid UTF-8 is\n"
           "replaced by U+FFFD.  All counts are printed and recorded in the manifest.\n");
}

typedef struct {
    int quiet, tty;
    double last;
} progress_state;

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static void fmt_count(char *buf, size_t n, double v) {
    if (v >= 1e9) snprintf(buf, n, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, n, "%.1fk", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
}

static void on_progress(const tl_prepare_progress *p, void *user) {
    progress_state *ps = user;
    if (ps->quiet) return;
    if (!ps->tty && !p->done && p->elapsed - ps->last < 10.0) return; /* logs: a line every 10 s */
    ps->last = p->elapsed;
    double frac = p->bytes_total ? (double)p->bytes_read / (double)p->bytes_total : 1.0;
    double mbs = p->elapsed > 0 ? (double)p->text_bytes / 1e6 / p->elapsed : 0;
    double eta = frac > 0 ? p->elapsed * (1 - frac) / frac : 0;
    char docs[32], toks[32], t[32];
    fmt_count(docs, sizeof docs, (double)p->documents);
    fmt_count(toks, sizeof toks, (double)p->tokens);
    fmt_time(t, sizeof t, p->done ? p->elapsed : eta);
    fprintf(stderr, "%s[%5.1f%%] file %d/%d | %.1f/%.1f MB in | text %.1f MB/s | %s docs | %s tokens | %s %s%s",
            ps->tty ? "\r\033[K" : "", 100 * frac, p->file_index + 1, p->n_files, (double)p->bytes_read / 1e6,
            (double)p->bytes_total / 1e6, mbs, docs, toks, p->done ? "took" : "ETA", t,
            ps->tty && !p->done ? "" : "\n");
}

/* --format chat: every bad conversation line (the first ones) and the counts. */
static int report_chat(const tl_prepare_result *r, int format) {
    const tl_prepare_chat *c = &r->chat;
    uint64_t bad = 0;
    for (int s = 1; s < TL_CONV_N_STATUS; s++) bad += c->bad[s];
    for (int i = 0; i < c->n_issues; i++) fprintf(stderr, "warning: %s\n", c->issues[i]);
    if (bad > (uint64_t)c->n_issues)
        fprintf(stderr, "warning: ... and %llu more bad line(s)\n", (unsigned long long)(bad - (uint64_t)c->n_issues));
    printf("%llu %s (%llu target tokens, %llu padding tokens); %llu cut to --seq-len (%llu tokens cut); "
           "%llu skipped",
           (unsigned long long)c->conversations, format == TL_FMT_PREFERENCE ? "pairs" : "conversations", (unsigned long long)c->target_tokens,
           (unsigned long long)c->padded_tokens, (unsigned long long)c->truncated,
           (unsigned long long)c->truncated_tokens, (unsigned long long)bad);
    for (int s = 1; s < TL_CONV_N_STATUS; s++)
        if (c->bad[s]) printf(", %llu %s", (unsigned long long)c->bad[s], tl_conv_status_name(s));
    printf("\n");
    return bad > 0;
}

/* Prints what was skipped or repaired for one input ("" if nothing). */
static int report_bad(const char *name, const tl_prepare_input *in) {
    char buf[1024];
    size_t n = 0;
#define ITEM(cond, ...)                                                               \
    if (cond) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s", n ? ", " : ""), \
              n += (size_t)snprintf(buf + n, sizeof buf - n, __VA_ARGS__)
    ITEM(in->malformed_json, "%llu malformed JSON line(s)", (unsigned long long)in->malformed_json);
    ITEM(in->missing_text, "%llu without a text field", (unsigned long long)in->missing_text);
    ITEM(in->empty, "%llu empty document(s)", (unsigned long long)in->empty);
    ITEM(in->too_long, "%llu over-long line(s)", (unsigned long long)in->too_long);
    ITEM(in->invalid_utf8_docs, "%llu document(s) with invalid UTF-8 (%llu bytes replaced)",
         (unsigned long long)in->invalid_utf8_docs, (unsigned long long)in->invalid_utf8_bytes);
    ITEM(in->forced_splits, "%llu forced cut(s) of lines over the segment limit",
         (unsigned long long)in->forced_splits);
    ITEM(in->truncated, "%s", in->error[0] ? in->error : "truncated");
#undef ITEM
    if (!n) return 0;
    fprintf(stderr, "warning: %s: %s\n", name, buf);
    return 1;
}

/* The --exclude / --exclude-meta values, in order (meta[k]: under "meta."). */
typedef struct {
    const char **val;
    int *meta, n;
} exclusions;

static int add_exclusion(const char *cmd, const char *v, exclusions *ex, int meta) {
    if (!strchr(v, '=') || v[0] == '=') {
        cli_error(cmd, "%s expects KEY=VALUE, got '%s'", meta ? "--exclude-meta" : "--exclude", v);
        return -1;
    }
    ex->val[ex->n] = v;
    ex->meta[ex->n++] = meta;
    return 0;
}
static int exclude(const char *cmd, const char *v, void *dst) { return add_exclusion(cmd, v, dst, 0); }
static int exclude_meta(const char *cmd, const char *v, void *dst) { return add_exclusion(cmd, v, dst, 1); }

static int parse_format(const char *cmd, const char *v, void *dst) {
    if (!strcmp(v, "jsonl")) *(int *)dst = TL_FMT_JSONL;
    else if (!strcmp(v, "txt")) *(int *)dst = TL_FMT_TXT;
    else if (!strcmp(v, "chat")) *(int *)dst = TL_FMT_CHAT;
    else if (!strcmp(v, "preference")) *(int *)dst = TL_FMT_PREFERENCE;
    else { cli_error(cmd, "--format must be jsonl, txt, chat or preference"); return -1; }
    return 0;
}

static int parse_txt_docs(const char *cmd, const char *v, void *dst) {
    if (!strcmp(v, "file")) *(int *)dst = TL_TXT_FILE;
    else if (!strcmp(v, "paragraphs")) *(int *)dst = TL_TXT_PARAGRAPHS;
    else { cli_error(cmd, "--txt-docs must be file or paragraphs"); return -1; }
    return 0;
}

static int parse_split_by(const char *cmd, const char *v, void *dst) {
    if (!strcmp(v, "documents") || !strcmp(v, "docs")) *(int *)dst = TL_SPLIT_DOCS;
    else if (!strcmp(v, "samples")) *(int *)dst = TL_SPLIT_SAMPLES;
    else { cli_error(cmd, "--split-by must be documents or samples"); return -1; }
    return 0;
}

static int parse_val_fraction(const char *cmd, const char *v, void *dst) {
    if (cli_parse_double(cmd, "--val-fraction", v, dst)) return -1;
    if (*(double *)dst < 0 || *(double *)dst >= 1) {
        cli_error(cmd, "--val-fraction must be in [0, 1)");
        return -1;
    }
    return 0;
}

int cmd_prepare(int argc, char **argv) {
    tl_prepare_opts o;
    tl_prepare_default_opts(&o);
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    char **excl = calloc((size_t)argc + 1, sizeof *excl);
    const char **excl_c = calloc((size_t)argc + 1, sizeof *excl_c);
    int *excl_meta = calloc((size_t)argc + 1, sizeof *excl_meta);
    exclusions ex = {excl_c, excl_meta, 0};
    int n_in = 0, n_ex = 0, strict = 0, quiet = 0, no_eos = 0, rc = 2;
    long seq_len = -1, shard_samples = 0, threads = 0, val_count = -1, max_doc = -1, seg = -1; /* -1: not given */
    double val_fraction = 0.05;
    int split_by = -1;
    if (!inputs || !excl || !excl_c || !excl_meta) {
        cli_error("prepare", "out of memory");
        rc = 1;
        goto done;
    }
    const cli_option opts[] = {
        CLI_OPT_FLAG("--byte-level", &o.byte_level),
        CLI_OPT_FLAG("--bos", &o.add_bos),
        CLI_OPT_FLAG("--no-eos", &no_eos),
        CLI_OPT_FLAG("--strict", &strict),
        CLI_OPT_FLAG("--allow-empty", &o.allow_empty),
        CLI_OPT_FLAG("--no-word-cache", &o.no_word_cache),
        CLI_OPT_FLAG("--quiet", &quiet),
        CLI_OPT_STR("--tokenizer", &o.tokenizer),
        CLI_OPT_STR("--out", &o.out_dir),
        CLI_OPT_STR("--text-field", &o.text_field),
        CLI_OPT_STR("--chat-template", &o.chat_template),
        CLI_OPT_CALL("--exclude", exclude, &ex, 0),
        CLI_OPT_CALL("--exclude-meta", exclude_meta, &ex, 0),
        CLI_OPT_CALL("--format", parse_format, &o.format, 0),
        CLI_OPT_CALL("--txt-docs", parse_txt_docs, &o.txt_mode, 0),
        CLI_OPT_CALL("--split-by", parse_split_by, &split_by, 0),
        CLI_OPT_INT("--seq-len", &seq_len, 1, 1 << 20),
        CLI_OPT_INT("--shard-samples", &shard_samples, 1, 1L << 40),
        CLI_OPT_INT("--threads", &threads, 0, 4096),
        CLI_OPT_INT("--val-count", &val_count, 0, 1L << 50),
        CLI_OPT_INT("--max-doc-bytes", &max_doc, 1, 1L << 40),
        CLI_OPT_INT("--segment-bytes", &seg, 64, 1L << 30),
        CLI_OPT_CALL("--val-fraction", parse_val_fraction, &val_fraction, 0),
    };
    int prc = cli_parse("prepare", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), inputs, argc, &n_in);
    if (prc == CLI_HELP) {
        help();
        rc = 0;
        goto done;
    }
    if (prc) goto done;
    if (no_eos) o.add_eos = 0;
    for (; n_ex < ex.n; n_ex++) {
        size_t l = strlen(excl_c[n_ex]) + 8;
        char *e = malloc(l);
        if (!e) goto oom;
        snprintf(e, l, "%s%s", excl_meta[n_ex] ? "meta." : "", excl_c[n_ex]);
        excl[n_ex] = e;
        excl_c[n_ex] = e;
    }
    if (!o.byte_level == !o.tokenizer) {
        cli_error("prepare", "choose a vocabulary: --tokenizer FILE or --byte-level");
        goto done;
    }
    if (!o.out_dir || n_in == 0) {
        cli_error("prepare", "need --out DIR and at least one input");
        goto done;
    }
    o.inputs = inputs;
    o.n_inputs = n_in;
    o.exclude = excl_c;
    o.n_exclude = n_ex;
    o.seq_len = (int)(seq_len > 0 ? seq_len : o.byte_level ? 256 : 2048);
    o.shard_samples = shard_samples > 0 ? (uint64_t)shard_samples : ((uint64_t)1 << 25) / (uint64_t)(o.seq_len + 1) + 1;
    o.nthreads = (int)threads;
    o.val_fraction = val_count >= 0 ? 0 : val_fraction; /* --val-count 0: nothing held out */
    o.val_count = val_count > 0 ? (uint64_t)val_count : 0;
    o.split_by = split_by >= 0 ? split_by : o.byte_level ? TL_SPLIT_SAMPLES : TL_SPLIT_DOCS;
    if (max_doc > 0) o.max_doc_bytes = (size_t)max_doc;
    if (seg > 0) o.segment_bytes = (size_t)seg;
    progress_state ps = {.quiet = quiet, .tty = isatty(2), .last = 0};
    o.progress = on_progress;
    o.progress_user = &ps;

    tl_prepare_result r;
    tl_error err;
    double t0 = tl_now();
    if (tl_prepare_run(&o, &r, &err)) {
        if (ps.tty && !quiet) fputc('\n', stderr);
        cli_error("prepare", "%s", err.msg);
        rc = 1;
        goto done;
    }
    double dt = tl_now() - t0;
    int any_bad = 0;
    for (int i = 0; i < r.n_inputs; i++) any_bad |= report_bad(r.inputs[i].path, &r.inputs[i]);
    if (o.format == TL_FMT_CHAT || o.format == TL_FMT_PREFERENCE) any_bad |= report_chat(&r, o.format);
    const tl_prepare_input *t = &r.total;
    printf("%llu documents (%.1f MB of text) -> %llu tokens in %.1f s (%.2f MB/s)\n", (unsigned long long)t->documents,
           (double)t->text_bytes / 1e6, (unsigned long long)t->tokens, dt, dt > 0 ? (double)t->text_bytes / 1e6 / dt : 0);
    printf("train: %llu samples of %d tokens in %llu shard(s); val: %llu samples in %llu shard(s); "
           "%llu tail tokens dropped\n",
           (unsigned long long)r.train.samples, o.seq_len + 1, (unsigned long long)r.train.shards,
           (unsigned long long)r.val.samples, (unsigned long long)r.val.shards,
           (unsigned long long)r.dropped_tail_tokens);
    if ((o.val_fraction > 0 || o.val_count) && r.val.samples == 0)
        fprintf(stderr, "warning: the validation split is empty (%llu documents); try --split-by samples or "
                        "--txt-docs paragraphs\n", (unsigned long long)t->documents);
    if (t->filtered) printf("%llu documents excluded by filters\n", (unsigned long long)t->filtered);
    printf("manifest: %s\n", r.manifest);
    rc = (strict && any_bad) ? 1 : 0;
    if (rc) cli_error("prepare", "bad input found (--strict)");
    tl_prepare_result_free(&r);
    goto done;
oom:
    cli_error("prepare", "out of memory");
    rc = 1;
done:
    for (int i = 0; excl && i < n_ex; i++) free(excl[i]);
    free(excl);
    free(excl_c);
    free(excl_meta);
    free(inputs);
    return rc;
}

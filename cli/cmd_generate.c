/* cmd_generate.c - `tinyllama generate` (one prompt, streamed continuation) and
 * `tinyllama chat` (multi-turn chat with the TinyLlama-Chat template). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "cli.h"
#include "generate.h"
#include "infer.h"
#include "ops.h"
#include "sampler.h"
#include "tokenizer.h"

/* ------------------------------------------------------- shared option set */

typedef struct {
    const char *model, *kernel;
    long max_tokens, ctx, threads;
    uint64_t seed;
    int seed_set;
    tl_sampler_opts so;
    int so_set[5]; /* temperature, top_k, top_p, min_p, repetition_penalty given */
    const char *stops[16];
    int n_stops;
    int ignore_eos, stats, f32_act;
} gen_opts;

/* Consumes argv[*i] if it is a common option; 1 = consumed, 0 = not ours, -1 = bad value. */
static int common_opt(const char *cmd, int argc, char **argv, int *i, gen_opts *o) {
    const char *v;
    int bad = 0;
    long l;
    double d;
    if (cli_opt(argc, argv, i, "--model", &o->model, &bad)) return bad ? -1 : 1;
    if (cli_opt(argc, argv, i, "--kernel", &o->kernel, &bad)) return bad ? -1 : 1;
    if (cli_opt(argc, argv, i, "--max-tokens", &v, &bad))
        return bad || cli_parse_int(cmd, "--max-tokens", v, 0, 1L << 30, &o->max_tokens) ? -1 : 1;
    if (cli_opt(argc, argv, i, "--ctx", &v, &bad))
        return bad || cli_parse_int(cmd, "--ctx", v, 2, 1L << 24, &o->ctx) ? -1 : 1;
    if (cli_opt(argc, argv, i, "--threads", &v, &bad))
        return bad || cli_parse_int(cmd, "--threads", v, 1, 1024, &o->threads) ? -1 : 1;
    if (cli_opt(argc, argv, i, "--seed", &v, &bad)) {
        char *end;
        errno = 0;
        unsigned long long s = bad ? 0 : strtoull(v, &end, 10);
        if (bad || errno || end == v || *end) {
            if (!bad) cli_error(cmd, "--seed expects a non-negative integer, got '%s'", v);
            return -1;
        }
        o->seed = s;
        o->seed_set = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--temperature", &v, &bad)) {
        if (bad || cli_parse_double(cmd, "--temperature", v, &d)) return -1;
        o->so.temperature = (float)d;
        o->so_set[0] = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--top-k", &v, &bad)) {
        if (bad || cli_parse_int(cmd, "--top-k", v, 0, 1L << 30, &l)) return -1;
        o->so.top_k = (int)l;
        o->so_set[1] = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--top-p", &v, &bad)) {
        if (bad || cli_parse_double(cmd, "--top-p", v, &d)) return -1;
        o->so.top_p = (float)d;
        o->so_set[2] = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--min-p", &v, &bad)) {
        if (bad || cli_parse_double(cmd, "--min-p", v, &d)) return -1;
        o->so.min_p = (float)d;
        o->so_set[3] = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--repetition-penalty", &v, &bad)) {
        if (bad || cli_parse_double(cmd, "--repetition-penalty", v, &d)) return -1;
        o->so.repetition_penalty = (float)d;
        o->so_set[4] = 1;
        return 1;
    }
    if (cli_opt(argc, argv, i, "--stop", &v, &bad)) {
        if (bad) return -1;
        if (!*v || o->n_stops == 16) {
            cli_error(cmd, "--stop needs a non-empty string (at most 16 of them)");
            return -1;
        }
        o->stops[o->n_stops++] = v;
        return 1;
    }
    if (!strcmp(argv[*i], "--greedy")) {
        o->so.temperature = 0.0f;
        o->so_set[0] = 1;
        return 1;
    }
    if (!strcmp(argv[*i], "--f32-activations")) {
        o->f32_act = 1;
        return 1;
    }
    if (!strcmp(argv[*i], "--ignore-eos")) {
        o->ignore_eos = 1;
        return 1;
    }
    if (!strcmp(argv[*i], "--stats")) {
        o->stats = 1;
        return 1;
    }
    if (!strcmp(argv[*i], "--no-stats")) {
        o->stats = 0;
        return 1;
    }
    return 0;
}

static const char COMMON_HELP[] =
    "  --model DIR|FILE.gguf  a GGUF file (llama.cpp's format, tensors used in place, quantized\n"
    "                         ones too), or an HF model directory (config.json, *.safetensors, tokenizer.model\n"
    "                         or tokenizer.json, generation_config.json)\n"
    "  --max-tokens N         most tokens to generate (per reply in chat)\n"
    "  --stop STRING          stop when the output contains STRING (repeatable; STRING is not printed)\n"
    "  --ignore-eos           keep going after the end-of-sequence token\n"
    "  --temperature T        0 = greedy (argmax)\n"
    "  --greedy               same as --temperature 0\n"
    "  --top-k K              keep the K most likely tokens (0 = off)\n"
    "  --top-p P              keep the smallest set of tokens with probability mass >= P (1 = off)\n"
    "  --min-p P              drop tokens less likely than P times the most likely one (0 = off)\n"
    "  --repetition-penalty R divide positive / multiply negative logits of tokens already in the\n"
    "                         context by R (1 = off)\n"
    "  --seed N               sampling seed (default: from the clock; printed with --stats)\n"
    "  --ctx N                KV-cache length (default: the model's max_position_embeddings)\n"
    "  --threads N            threads (default: the cores other processes leave free)\n"
    "  --f32-activations      quantized GGUF weights: keep the activations fp32 (exact up to\n"
    "                         summation order, slower) instead of rounding them to int8 blocks\n"
    "  --kernel NAME          kernels: auto (the best exact one), scalar, avx2, avx512, amx-exact\n"
    "                         (CPUs with AMX: bf16 weights' prompt products on AMX tiles, exact to\n"
    "                         fp32; decode as avx512); for bf16 weights, opt-in and less precise\n"
    "                         (activations rounded to bf16): avx512bf16 (VDPBF16PS decode), amx\n"
    "                         (prompt pass on AMX tiles with one bf16 part, attention too: ~2x\n"
    "                         amx-exact; decode as avx512)\n";

typedef struct {
    tl_infer_model m;
    tl_infer_state s;
    tl_sampler sp;
} engine;

static int engine_load(const char *cmd, const gen_opts *o, engine *e) {
    tl_error err;
    memset(e, 0, sizeof *e);
    cli_threads(cmd, o->threads);
    if (tl_infer_load(&e->m, o->model, &err)) {
        cli_error(cmd, "%s", err.msg);
        return -1;
    }
    tl_infer_set_f32_activations(&e->m, o->f32_act);
    if (o->kernel) {
        int k = tl_kernel_parse(o->kernel);
        if (k < 0 || tl_infer_set_kernel(&e->m, (tl_kernel)k, &err)) {
            cli_error(cmd, k < 0 ? "unknown --kernel '%s'" : "%s", k < 0 ? o->kernel : err.msg);
            tl_infer_free(&e->m);
            return -1;
        }
    }
    return 0;
}

static int engine_start(const char *cmd, const gen_opts *o, engine *e) {
    tl_error err;
    if (tl_infer_state_init(&e->s, &e->m, (int)o->ctx, &err) ||
        tl_sampler_init(&e->sp, &o->so, e->m.cfg.vocab_size, o->seed, &err)) {
        cli_error(cmd, "%s", err.msg);
        tl_infer_state_free(&e->s);
        tl_infer_free(&e->m);
        return -1;
    }
    return 0;
}

static void engine_close(engine *e) {
    tl_sampler_free(&e->sp);
    tl_infer_state_free(&e->s);
    tl_infer_free(&e->m);
}

/* Sampling settings: explicit options win; otherwise the defaults given, then
 * (for generate) generation_config.json when it asks for sampling. */
static void resolve_sampling(gen_opts *o, const tl_gen_config *g, int use_gen_config) {
    if (use_gen_config && g->has_sampling) {
        if (!o->so_set[0]) o->so.temperature = g->temperature;
        if (!o->so_set[1]) o->so.top_k = g->top_k;
        if (!o->so_set[2]) o->so.top_p = g->top_p;
        if (!o->so_set[3]) o->so.min_p = g->min_p;
    }
    if (use_gen_config && !o->so_set[4]) o->so.repetition_penalty = g->repetition_penalty;
    if (!o->seed_set) o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

/* Terminal output of the generation loop: text as it becomes final, or ids. */
static void print_text(const char *text, size_t len, void *user) {
    fwrite(text, 1, len, user);
    fflush(user);
}

typedef struct {
    FILE *out;
    int n;
} id_printer;

static void print_id(int id, void *user) {
    id_printer *p = user;
    fprintf(p->out, p->n++ ? " %d" : "%d", id);
    fflush(p->out);
}

static tl_gen_opts loop_opts(const gen_opts *o) {
    tl_gen_opts g = {.max_tokens = o->max_tokens, .stops = o->stops, .n_stops = o->n_stops,
                     .ignore_eos = o->ignore_eos, .on_text = print_text, .user = stdout};
    return g;
}

/* Reads all of a stream. */
static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int parse_ids(const char *cmd, const char *s, int **ids, int *n) {
    int cap = 16;
    *ids = malloc(sizeof(int) * (size_t)cap);
    *n = 0;
    const char *p = s;
    while (*ids) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (!*p) return 0;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            cli_error(cmd, "--ids: '%.20s' is not a token id", p);
            free(*ids);
            *ids = NULL;
            return -1;
        }
        if (*n == cap) {
            cap *= 2;
            int *nb = realloc(*ids, sizeof(int) * (size_t)cap);
            if (!nb) break;
            *ids = nb;
        }
        (*ids)[(*n)++] = (int)v;
        p = end;
    }
    free(*ids);
    *ids = NULL;
    cli_error(cmd, "out of memory");
    return -1;
}

/* ----------------------------------------------------------------- generate */

static void generate_help(void) {
    printf("usage: tinyllama generate --model DIR [PROMPT | --prompt-file FILE | --ids \"1 2 3\"] [options]\n\n"
           "Continues a prompt, streaming tokens to stdout as they are produced.  The prompt comes\n"
           "from the argument, --prompt-file, or stdin (when neither is given); BOS is prepended.\n"
           "Without sampling options, decoding is greedy unless generation_config.json asks for\n"
           "sampling (do_sample), whose settings are then the defaults.  Stops at end-of-sequence,\n"
           "a --stop string, --max-tokens, or a full context.  Prompt and generation speeds go to\n"
           "stderr at the end (--no-stats to silence); generation tokens/s counts the single-token\n"
           "decode steps (the first new token comes from the prompt pass).\n\n"
           "  PROMPT                 the prompt text\n"
           "  --prompt-file FILE     read the prompt from FILE\n"
           "  --ids \"1 2 3\"          the prompt as token ids (used as given: no BOS added)\n"
           "  --no-bos               do not prepend BOS to a text prompt\n"
           "  --print-ids            print generated token ids instead of text\n"
           "  --echo                 print the prompt text before the continuation\n"
           "  --stats, --no-stats    print (default) or not the prompt and generation speeds\n"
           "                         on stderr\n"
           "%s"
           "                         (default --max-tokens 256)\n",
           COMMON_HELP);
}

int cmd_generate(int argc, char **argv) {
    const char *CMD = "generate";
    gen_opts o;
    memset(&o, 0, sizeof o);
    tl_sampler_default_opts(&o.so);
    o.max_tokens = 256;
    o.stats = 1;
    const char *prompt = NULL, *prompt_file = NULL, *ids_s = NULL;
    int no_bos = 0, print_ids = 0, echo = 0;
    for (int i = 1; i < argc; i++) {
        int bad = 0, r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            generate_help();
            return 0;
        }
        if ((r = common_opt(CMD, argc, argv, &i, &o)) != 0) {
            if (r < 0) return 2;
        } else if (cli_opt(argc, argv, &i, "--prompt-file", &prompt_file, &bad) ||
                   cli_opt(argc, argv, &i, "--ids", &ids_s, &bad)) {
            if (bad) return 2;
        } else if (!strcmp(argv[i], "--no-bos")) {
            no_bos = 1;
        } else if (!strcmp(argv[i], "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(argv[i], "--echo")) {
            echo = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            cli_error(CMD, "unknown option '%s' (see --help)", argv[i]);
            return 2;
        } else if (!prompt) {
            prompt = argv[i];
        } else {
            cli_error(CMD, "more than one prompt argument (quote the prompt)");
            return 2;
        }
    }
    if (!o.model) {
        cli_error(CMD, "--model is required (see --help)");
        return 2;
    }
    if ((prompt != NULL) + (prompt_file != NULL) + (ids_s != NULL) > 1) {
        cli_error(CMD, "give the prompt one way: argument, --prompt-file or --ids");
        return 2;
    }
    engine e;
    if (engine_load(CMD, &o, &e)) return 1;
    resolve_sampling(&o, &e.m.gen, 1); /* generation_config.json may set sampling defaults */
    if (engine_start(CMD, &o, &e)) return 1;
    int rc = 1, *ids = NULL, n = 0;
    char *text = NULL;
    size_t text_len = 0;
    if (ids_s) {
        if (parse_ids(CMD, ids_s, &ids, &n)) goto done;
    } else {
        if (!e.m.tok) {
            cli_error(CMD, "%s has no tokenizer.model or tokenizer.json; give the prompt with --ids", o.model);
            goto done;
        }
        if (prompt) {
            text = strdup(prompt);
            text_len = strlen(prompt);
        } else {
            FILE *f = prompt_file ? fopen(prompt_file, "rb") : stdin;
            if (!f) {
                cli_error(CMD, "%s: %s", prompt_file, strerror(errno));
                goto done;
            }
            text = read_all(f, &text_len);
            if (prompt_file) fclose(f);
        }
        tl_error err;
        size_t nn;
        if (!text || tl_tokenizer_encode(e.m.tok, text, text_len, no_bos ? 0 : TL_ENC_BOS, &ids, &nn, &err)) {
            cli_error(CMD, "%s", text ? err.msg : "cannot read the prompt");
            goto done;
        }
        n = (int)nn;
    }
    if (n == 0) {
        cli_error(CMD, "the prompt is empty (use --ids to start from a given token)");
        goto done;
    }
    if (echo && text) fwrite(text, 1, text_len, stdout);
    tl_gen_opts go = loop_opts(&o);
    id_printer idp = {stdout, 0};
    if (print_ids) go.on_text = NULL, go.on_token = print_id, go.user = &idp;
    tl_gen_history h = {ids, n, n};
    tl_gen_stats st;
    tl_gen_end why;
    tl_error err;
    rc = tl_generate(&e.s, &e.sp, &go, &h, 0, &why, &st, &err);
    ids = h.ids;
    if (rc) {
        cli_error(CMD, "%s", err.msg);
        rc = 1;
        goto done;
    }
    if (why == TL_GEN_ERROR) cli_error(CMD, "%s", err.msg);
    printf("\n");
    fflush(stdout);
    if (o.stats)
        fprintf(stderr,
                "[prompt: %d tokens, %.1f tokens/s | generated: %d tokens, %.2f tokens/s | stopped: %s | "
                "kernel %s, %d threads, seed %llu]\n",
                n, n / (st.prompt_seconds > 0 ? st.prompt_seconds : 1e-9), st.n_generated,
                st.n_steps > 0 ? st.n_steps / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9) : 0.0,
                tl_gen_end_name(why), tl_kernel_name(e.m.kernel), tl_get_threads(), (unsigned long long)o.seed);
    rc = why == TL_GEN_ERROR;
done:
    free(ids);
    free(text);
    engine_close(&e);
    return rc;
}

/* --------------------------------------------------------------------- chat */

static void chat_help(void) {
    printf("usage: tinyllama chat --model DIR|FILE.gguf [--system TEXT] [options]\n\n"
           "Multi-turn chat.  The template: a GGUF file's tokenizer.chat_template, recognised as\n"
           "TinyLlama/Zephyr, Llama 2 chat or ChatML (any other: give --chat-template); otherwise\n"
           "the TinyLlama-1.1B-Chat-v1.0 template\n"
           "  <|system|>\\n{system}</s>\\n<|user|>\\n{message}</s>\\n<|assistant|>\\n\n"
           "(BOS prepended; </s> is the end-of-sequence control token).  Each line read from stdin is\n"
           "one user message (empty lines are skipped), so a conversation can be scripted:\n"
           "  printf 'Hi!\\nTell me a joke.\\n' | tinyllama chat --model DIR\n"
           "Each reply is streamed to stdout and ends with a newline.  The KV cache is reused across\n"
           "turns.  When the conversation no longer fits the context (prompt + --max-tokens for the\n"
           "reply), the oldest turns are dropped (the system prompt is kept); a reply that fills the\n"
           "context stops there.  Defaults as the model's demo: --temperature 0.7 --top-k 50\n"
           "--top-p 0.95, --max-tokens 512.\n\n"
           "  --system TEXT          system prompt (default: none)\n"
           "  --chat-template NAME   zephyr (= tinyllama), llama2 or chatml, whatever the model says\n"
           "%s"
           "  --stats, --no-stats    print or not (default) tokens/s per reply on stderr\n",
           COMMON_HELP);
}

int cmd_chat(int argc, char **argv) {
    const char *CMD = "chat";
    gen_opts o;
    memset(&o, 0, sizeof o);
    tl_sampler_default_opts(&o.so);
    o.so.temperature = 0.7f;
    o.so.top_k = 50;
    o.so.top_p = 0.95f;
    o.max_tokens = 512;
    const char *system = NULL, *template_name = NULL;
    for (int i = 1; i < argc; i++) {
        int bad = 0, r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            chat_help();
            return 0;
        }
        if ((r = common_opt(CMD, argc, argv, &i, &o)) != 0) {
            if (r < 0) return 2;
        } else if (cli_opt(argc, argv, &i, "--system", &system, &bad)) {
            if (bad) return 2;
        } else if (cli_opt(argc, argv, &i, "--chat-template", &template_name, &bad)) {
            if (bad) return 2;
        } else {
            cli_error(CMD, "unknown option '%s' (see --help)", argv[i]);
            return 2;
        }
    }
    if (!o.model) {
        cli_error(CMD, "--model is required (see --help)");
        return 2;
    }
    resolve_sampling(&o, NULL, 0);
    engine e;
    if (engine_load(CMD, &o, &e) || engine_start(CMD, &o, &e)) return 1;
    if (!e.m.tok) {
        cli_error(CMD, "%s has no tokenizer.model or tokenizer.json", o.model);
        engine_close(&e);
        return 1;
    }
    tl_chat_format fmt;
    {
        tl_error err;
        if (tl_chat_format_choose(template_name, e.m.chat_template, o.model, &fmt, &err)) {
            cli_error(CMD, "%s", err.msg);
            engine_close(&e);
            return template_name ? 2 : 1;
        }
    }
    int interactive = isatty(0) && isatty(1), rc = 0;
    tl_error err;
    tl_chat chat;
    if (tl_chat_init(&chat, &e.s, &e.sp, fmt, system, &err)) {
        cli_error(CMD, "%s", err.msg);
        engine_close(&e);
        return 1;
    }
    tl_gen_opts go = loop_opts(&o);
    char *line = NULL;
    size_t line_cap = 0;
    for (;;) {
        if (interactive) {
            printf("> ");
            fflush(stdout);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        tl_gen_end why;
        tl_gen_stats st;
        int r = tl_chat_say(&chat, line, &go, &why, &st, &err);
        if (r) cli_error(CMD, "%s", err.msg);
        if (r < 0) {
            rc = 1;
            break;
        }
        if (r == 0 && why == TL_GEN_ERROR) cli_error(CMD, "%s", err.msg);
        printf("\n");
        fflush(stdout);
        if (r == 1) continue; /* the message did not fit: skipped */
        if (o.stats)
            fprintf(stderr, "[prompt: %d new tokens, %.1f tokens/s | reply: %d tokens, %.2f tokens/s | %s]\n",
                    st.n_prompt, st.n_prompt / (st.prompt_seconds > 0 ? st.prompt_seconds : 1e-9), st.n_generated,
                    st.n_steps / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9), tl_gen_end_name(why));
        if (why == TL_GEN_ERROR) {
            rc = 1;
            break;
        }
    }
    free(line);
    tl_chat_free(&chat);
    engine_close(&e);
    return rc;
}

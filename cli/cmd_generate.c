/* cmd_generate.c - `tinyllama generate` (one prompt, streamed continuation) and
 * `tinyllama chat` (multi-turn chat with the TinyLlama-Chat template). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "cli.h"
#include "generate.h"
#include "infer.h"
#include "ops.h"
#include "sampler.h"
#include "speculative.h"
#include "tokenizer.h"

/* ------------------------------------------------------- shared option set */

typedef struct {
    const char *model, *kernel;
    long ctx, threads;
    tl_gen_settings gs;
    /* sampling options as given: NAN (top_k -1) when absent */
    double temperature, top_p, min_p, repetition_penalty;
    long top_k;
    const char *stops[16];
    int n_stops;
    int ignore_eos, stats, f32_act;
} gen_opts;

static void gen_opts_init(gen_opts *o, int chat) {
    memset(o, 0, sizeof *o);
    tl_gen_settings_default(&o->gs, chat);
    o->temperature = o->top_p = o->min_p = o->repetition_penalty = NAN;
    o->top_k = -1;
    o->stats = !chat;
}

/* The sampling options given go into the settings, marked as the caller's. */
static void gen_opts_settle(gen_opts *o) {
    tl_gen_settings *g = &o->gs;
    if (!isnan(o->temperature)) g->so.temperature = (float)o->temperature, g->set |= TL_GEN_SET_TEMPERATURE;
    if (o->top_k >= 0) g->so.top_k = (int)o->top_k, g->set |= TL_GEN_SET_TOP_K;
    if (!isnan(o->top_p)) g->so.top_p = (float)o->top_p, g->set |= TL_GEN_SET_TOP_P;
    if (!isnan(o->min_p)) g->so.min_p = (float)o->min_p, g->set |= TL_GEN_SET_MIN_P;
    if (!isnan(o->repetition_penalty))
        g->so.repetition_penalty = (float)o->repetition_penalty, g->set |= TL_GEN_SET_REPETITION_PENALTY;
}

static int parse_seed(const char *cmd, const char *v, void *dst) {
    tl_gen_settings *g = dst;
    char *end;
    errno = 0;
    unsigned long long s = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        cli_error(cmd, "--seed expects a non-negative integer, got '%s'", v);
        return -1;
    }
    g->seed = s;
    g->set |= TL_GEN_SET_SEED;
    return 0;
}

static int set_greedy(const char *cmd, const char *v, void *dst) {
    (void)cmd, (void)v;
    *(double *)dst = 0.0;
    return 0;
}

static int set_no_stats(const char *cmd, const char *v, void *dst) {
    (void)cmd, (void)v;
    *(int *)dst = 0;
    return 0;
}

static int add_stop(const char *cmd, const char *v, void *dst) {
    gen_opts *o = dst;
    if (!*v || o->n_stops == 16) {
        cli_error(cmd, "--stop needs a non-empty string (at most 16 of them)");
        return -1;
    }
    o->stops[o->n_stops++] = v;
    return 0;
}

/* The options generate and chat share, as table entries. */
#define GEN_COMMON_OPTS(o)                                                                  \
    CLI_OPT_STR("--model", &(o)->model), CLI_OPT_STR("--kernel", &(o)->kernel),              \
        CLI_OPT_INT("--max-tokens", &(o)->gs.max_tokens, 0, 1L << 30),                      \
        CLI_OPT_INT("--ctx", &(o)->ctx, 2, 1L << 24), CLI_OPT_INT("--threads", &(o)->threads, 1, 1024), \
        CLI_OPT_CALL("--seed", parse_seed, &(o)->gs, 0), CLI_OPT_DOUBLE("--temperature", &(o)->temperature), \
        CLI_OPT_INT("--top-k", &(o)->top_k, 0, 1L << 30), CLI_OPT_DOUBLE("--top-p", &(o)->top_p), \
        CLI_OPT_DOUBLE("--min-p", &(o)->min_p),                                               \
        CLI_OPT_DOUBLE("--repetition-penalty", &(o)->repetition_penalty),                     \
        CLI_OPT_CALL("--stop", add_stop, (o), 0), CLI_OPT_FLAG_CALL("--greedy", set_greedy, &(o)->temperature), \
        CLI_OPT_FLAG("--ignore-eos", &(o)->ignore_eos), CLI_OPT_FLAG("--stats", &(o)->stats),  \
        CLI_OPT_FLAG("--f32-activations", &(o)->f32_act),                                          \
        CLI_OPT_FLAG_CALL("--no-stats", set_no_stats, &(o)->stats)

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
    "  --f32-activations      keep the activations fp32 (exact up to summation order, slower):\n"
    "                         quantized GGUF weights instead of rounding them to int8 blocks,\n"
    "                         bf16 weights instead of to bf16 where auto would pick avx512bf16\n"
    "  --kernel NAME          kernels: auto (the default: the best exact one, but for bf16 weights\n"
    "                         avx512bf16 where its dot products measure faster than fp32 FMAs\n"
    "                         and the CPU has no AMX, as `tinyllama info --cpu` shows; perplexity\n"
    "                         and eval keep the exact one), scalar, avx2, avx512,\n"
    "                         amx-exact (CPUs with AMX: bf16 weights' prompt products on AMX\n"
    "                         tiles, exact to fp32; decode as avx512); for bf16 weights, less\n"
    "                         precise (activations rounded to bf16, as llama.cpp does):\n"
    "                         avx512bf16 (VDPBF16PS decode, prompt products by oneDNN's bf16\n"
    "                         matmul), amx (prompt pass on AMX tiles with one bf16 part,\n"
    "                         attention too: ~2x amx-exact; decode as avx512)\n";

typedef struct {
    tl_infer_model m;
    tl_infer_state s;
    tl_sampler sp;
} engine;

static int model_load(const char *cmd, const gen_opts *o, engine *e, const char *what);

static int engine_load(const char *cmd, const gen_opts *o, engine *e) {
    cli_threads(cmd, o->threads);
    return model_load(cmd, o, e, NULL);
}

/* The model of o->model with o's kernel and activation choices; what (may be
 * NULL) names its role in messages. */
static int model_load(const char *cmd, const gen_opts *o, engine *e, const char *what) {
    tl_error err;
    memset(e, 0, sizeof *e);
    if (tl_infer_load(&e->m, o->model, &err)) {
        cli_error(cmd, "%s%s%s", what ? what : "", what ? ": " : "", err.msg);
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
    /* auto: BF16 weights take the bf16-rounding kernels where they pay, unless fp32 activations were asked for */
    if (!o->kernel || !strcmp(o->kernel, "auto")) tl_infer_prefer_bf16_rounding(&e->m);
    return 0;
}

static int engine_start(const char *cmd, const gen_opts *o, engine *e) {
    tl_error err;
    if (tl_infer_state_init(&e->s, &e->m, (int)o->ctx, &err) ||
        tl_sampler_init(&e->sp, &o->gs.so, e->m.cfg.vocab_size, o->gs.seed, &err)) {
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
    tl_gen_opts g = {.max_tokens = o->gs.max_tokens, .stops = o->stops, .n_stops = o->n_stops,
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
           "                         on stderr (with --draft also the drafts' acceptance rate)\n"
           "  --draft DIR|FILE.gguf  speculative decoding: this smaller model (same vocabulary)\n"
           "                         proposes tokens that the model verifies several at a time;\n"
           "                         greedy output is identical to decoding without it, sampled\n"
           "                         output follows the model's distribution (another random\n"
           "                         stream than without a draft, so a --seed gives other text)\n"
           "  --draft-k N            tokens the draft proposes per step (default 4, at most 16)\n"
           "%s"
           "                         (default --max-tokens 256)\n",
           COMMON_HELP);
}

int cmd_generate(int argc, char **argv) {
    const char *CMD = "generate";
    gen_opts o;
    gen_opts_init(&o, 0);
    const char *prompt_file = NULL, *ids_s = NULL;
    int no_bos = 0, print_ids = 0, echo = 0;
    const char *draft_path = NULL;
    long draft_k = 4;
    const cli_option opts[] = {
        CLI_OPT_STR("--draft", &draft_path),
        CLI_OPT_INT("--draft-k", &draft_k, 1, TL_SPEC_MAX_K),
        GEN_COMMON_OPTS(&o),
        CLI_OPT_STR("--prompt-file", &prompt_file),
        CLI_OPT_STR("--ids", &ids_s),
        CLI_OPT_FLAG("--no-bos", &no_bos),
        CLI_OPT_FLAG("--print-ids", &print_ids),
        CLI_OPT_FLAG("--echo", &echo),
    };
    const char **words = malloc(sizeof *words * (size_t)argc); /* every word, so a second one is named as such */
    int n_words = 0;
    if (!words) {
        cli_error(CMD, "out of memory");
        return 1;
    }
    int prc = cli_parse_text(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), words, argc, &n_words);
    const char *prompt = n_words ? words[0] : NULL;
    free(words);
    if (prc == CLI_HELP) {
        generate_help();
        return 0;
    }
    if (prc) return prc;
    if (n_words > 1) {
        cli_error(CMD, "more than one prompt argument (quote the prompt)");
        return 2;
    }
    gen_opts_settle(&o);
    if (!o.model) {
        cli_error(CMD, "--model is required (see --help)");
        return 2;
    }
    if ((prompt != NULL) + (prompt_file != NULL) + (ids_s != NULL) > 1) {
        cli_error(CMD, "give the prompt one way: argument, --prompt-file or --ids");
        return 2;
    }
    engine e, d;
    int have_draft = 0, have_spec = 0;
    tl_spec spec;
    if (engine_load(CMD, &o, &e)) return 1;
    tl_gen_settings_resolve(&o.gs, &e.m.gen); /* generation_config.json may set sampling defaults */
    if (engine_start(CMD, &o, &e)) return 1;
    int rc = 1, *ids = NULL, n = 0;
    char *text = NULL;
    size_t text_len = 0;
    if (draft_path) {
        /* the draft: same threads, activations and kernel choice as the model */
        gen_opts dopt = o;
        dopt.model = draft_path;
        tl_error err;
        if (model_load(CMD, &dopt, &d, "--draft")) goto done;
        have_draft = 1;
        if (tl_spec_check_vocab(&e.m, &d.m, draft_path, &err) ||
            tl_infer_state_init(&d.s, &d.m, (int)o.ctx, &err) ||
            tl_spec_init(&spec, &d.s, &o.gs.so, (int)draft_k, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        have_spec = 1;
    }
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
    if (have_spec) go.spec = &spec;
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
                tl_gen_end_name(why), tl_kernel_name(e.m.kernel), tl_get_threads(), (unsigned long long)o.gs.seed);
    if (o.stats && have_spec)
        /* tokens/s here counts every token after the first (several per verification pass) */
        fprintf(stderr,
                "[draft: %ld of %ld proposed tokens accepted (%.1f%%), %d verification passes, %.2f tokens per "
                "pass, %.2f tokens/s, k %ld]\n",
                st.n_draft_accepted, st.n_draft_proposed,
                st.n_draft_proposed ? 100.0 * (double)st.n_draft_accepted / (double)st.n_draft_proposed : 0.0,
                st.n_steps, st.n_steps ? (double)(st.n_generated - 1) / st.n_steps : 0.0,
                st.n_generated > 1 ? (st.n_generated - 1) / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9) : 0.0,
                draft_k);
    rc = why == TL_GEN_ERROR;
done:
    free(ids);
    free(text);
    if (have_spec) tl_spec_free(&spec);
    if (have_draft) {
        tl_infer_state_free(&d.s);
        tl_infer_free(&d.m);
    }
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
    gen_opts_init(&o, 1);
    const char *system = NULL, *template_name = NULL;
    const cli_option opts[] = {
        GEN_COMMON_OPTS(&o),
        CLI_OPT_STR("--system", &system),
        CLI_OPT_STR("--chat-template", &template_name),
    };
    int prc = cli_parse(CMD, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        chat_help();
        return 0;
    }
    if (prc) return prc;
    if (!o.model) {
        cli_error(CMD, "--model is required (see --help)");
        return 2;
    }
    gen_opts_settle(&o);
    tl_gen_settings_resolve(&o.gs, NULL);
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

/* cmd_train.c - `tinyllama train`: pretrain or continue training on token shards. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "distributed.h"
#include "cli.h"
#include "gemm.h"
#include "ops.h"
#include "recipe.h"
#include "tokenizer.h"
#include "train.h"
#include "train_setup.h"

static volatile sig_atomic_t stop_requested; /* the signal that asked to stop */
static void on_signal(int sig) { stop_requested = sig; }

static void help(void) {
    printf(
        "usage: tinyllama train --data SHARDS [options]\n"
        "       tinyllama train --recipe FILE [options]\n\n"
        "Pretrains a Llama model on packed token shards (see `tinyllama prepare`), writing\n"
        "HF checkpoints (config.json + model.safetensors) and training state to --out.\n\n"
        "recipe:\n"
        "  --recipe FILE        a YAML training recipe: model, optimizer, schedule in tokens and\n"
        "                       phases, each with its length, global batch and data mixture, run\n"
        "                       as one run (docs/training.md); every option below overrides it\n"
        "                       (--steps stops early, --batch-tokens replaces every phase's batch)\n"
        "data:\n"
        "  --data PATH          training shards: a .bin file, a glob, or a `prepare` directory\n"
        "                       (its train-*.bin) (repeatable); each shard must be listed in the\n"
        "                       manifest.json beside it, and name the --tokenizer given\n"
        "  --val-data PATH      held-out shards for validation loss / perplexity; a directory\n"
        "                       means its val-*.bin (repeatable)\n"
        "  --sequential         read samples in file order (default: seeded shuffle per epoch)\n"
        "  --sft                supervised fine-tuning on chat data (prepare --format chat): the\n"
        "                       loss is the mean over the replies' tokens (docs/finetuning.md)\n"
        "  --dpo                DPO on preference pairs (prepare --format preference) against\n"
        "                       the starting model (--init); --batch counts pairs\n"
        "  --beta X             DPO's beta (default 0.1)\n"
        "  --ipo                the IPO loss instead of DPO's sigmoid loss\n"
        "  --source NAME[=W]:PATH  instead of --data: a named source of a weighted mixture\n"
        "                       (repeatable; PATH as --data; W defaults to TinyLlama's weight\n"
        "                       for slimpajama 0.693584 and starcoder 0.306416); see docs/data.md\n"
        "  --source-start NAME=W  weight of NAME at the start of training, moving linearly to\n"
        "                       its final weight over --ramp-tokens (repeatable)\n"
        "  --ramp-tokens N      length of that ramp in training tokens (default 0)\n"
        "model (one of; default --preset demo):\n"
        "  --preset NAME        built-in config:");
    for (const char *const *p = tl_config_preset_names(); *p; p++) printf(" %s", *p);
    printf("\n"
           "  --config FILE        an HF config.json (random init)\n"
           "  --init DIR           start from an HF checkpoint directory (continual pretraining)\n"
           "  --vocab-size N       override the preset's / config's vocabulary size (e.g. for a trained tokenizer)\n"
           "  --resume [DIR]       continue a run from its checkpoint (DIR: a checkpoint or run\n"
           "                       directory; default --out); bit-identical to an uninterrupted run\n"
           "                       with the same --threads.  A run directory whose `latest` is\n"
           "                       unusable (crash, corrupt file) resumes from its newest complete\n"
           "                       checkpoint, saying so; every file is checked against checksums.json\n"
           "batch and schedule:\n"
           "  --batch N            sequences per micro-batch (default 8)\n"
           "  --seq-len N          tokens per sequence (default: the shards' length)\n"
           "  --batch-tokens N     global batch in tokens; micro-batches are accumulated to reach\n"
           "                       it (default: one micro-batch; TinyLlama used 2097152)\n"
           "  --steps N            optimizer steps (default 1000)\n"
           "  --lr X               peak learning rate (default 4e-4)\n"
           "  --min-lr X           cosine floor (default 4e-5)\n"
           "  --warmup N           linear warmup steps (default min(2000, steps/10))\n"
           "  --decay-steps N      step at which the cosine reaches --min-lr (default --steps)\n"
           "  --beta1 X --beta2 X --eps X --weight-decay X   AdamW (0.9, 0.95, 1e-8, 0.1)\n"
           "  --clip X             max global gradient norm, 0 disables (default 1.0)\n"
           "  --seed N             weight init and data order seed (default 3407)\n"
           "output:\n"
           "  --out DIR            run directory (default runs/train); a new run refuses a directory\n"
           "                       that holds another run (use --resume to continue it)\n"
           "  --overwrite          start a new run in --out although it holds one: the log restarts,\n"
           "                       checkpoints of the same step are replaced, the others are kept\n"
           "  --ckpt-every N       checkpoint every N steps (default 0: only at the end)\n"
           "  --keep N             checkpoints of this run to keep (default 3, 0 keeps all)\n"
           "  --eval-every N       validation every N steps (default 100 with --val-data)\n"
           "  --eval-batches N     micro-batches per validation (default 8)\n"
           "  --log FILE           JSONL log (default OUT/log.jsonl); TensorBoard events go to OUT too\n"
           "  --spike-z X          skip the update of a step whose loss is X standard deviations above\n"
           "                       the last --spike-window (100) steps' (default 0: off)\n"
           "  --max-skips N        stop after N skipped steps in a row (spikes or non-finite), naming\n"
           "                       the last good checkpoint (default 0: never)\n"
           "zero-shot benchmarks during training (scored as lm-evaluation-harness, docs/eval.md):\n"
           "  --bench TASK:DATA[:LABELS]  e.g. hellaswag:hellaswag_val.jsonl or piqa:valid.jsonl:valid-labels.lst\n"
           "                       (repeatable; tasks: hellaswag piqa arc_easy arc_challenge openbookqa\n"
           "                       winogrande boolq)\n"
           "  --bench-every N      score them every N steps and at the end (default: --eval-every or 100)\n"
           "  --bench-limit N      first N examples of each (default 0: all)\n"
           "  --tokenizer FILE     tokenizer.model / tokenizer.json the data was prepared with: copied into\n"
           "                       each checkpoint (so `generate` runs it) and used by --bench\n"
           "  --threads N          threads (default: the cores other processes leave free; with\n"
           "                       --resume the checkpoint's count, which bit-identity needs)\n"
           "distributed (run under `mpirun -np N` or `srun`; docs/distributed.md):\n"
           "  --zero N             ZeRO stage: 0 replicate everything, 1 shard the AdamW moments,\n"
           "                       2 also reduce-scatter the gradients, 3 also shard the parameters\n"
           "                       (default 0); --batch-tokens stays the global batch\n"
           "  --comm-timeout S     stop the job when a rank does not answer a collective within S\n"
           "                       seconds, naming it (default 300; 0 waits forever)\n"
           "  --overlap            --zero 2|3: reduce each layer's gradient on a communication thread\n"
           "                       while the next layer's backward runs (same results)\n");
    if (tl_engine_find("cuda")) /* the CUDA build */
        printf("  --device cpu|cuda    where the step runs (default: cuda when a GPU is present)\n"
               "  --recompute          CUDA: recompute SwiGLU activations in the backward pass\n");
    printf("  --precision bf16|fp32  bf16: mixed precision, bf16 matrix inputs with fp32 master weights,\n"
           "                       AdamW state and everything else (CUDA's default); fp32 throughout\n"
           "                       (the CPU's default; its bf16 runs on oneDNN where the CPU has\n"
           "                       AVX512-BF16 or AMX, elsewhere emulated: same arithmetic, no speed-up)\n"
           "  --quiet              no progress line\n"
           "  --peak-tflops X      the device's peak for the progress line's MFU (model FLOP/s: 6N +\n"
           "                       attention per token, over the peak; default: a GPU's datasheet bf16\n"
           "                       peak by name; without one the line shows GFLOP/s only)\n\n"
           "Ctrl-C (or SIGTERM) stops after the current step, writes a checkpoint and exits with\n"
           "130 (143), as shells report an interrupted command; 0 means the run finished.\n");
}

typedef struct {
    int quiet, tty;
    double flops_per_token, peak_tflops; /* model FLOP/s, and over a known peak the MFU */
    long last_print_step;
    double last_print;
} progress;

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static void on_event(const tl_train_event *ev, void *user) {
    progress *p = user;
    if (p->quiet && ev->kind == TL_EV_STEP) return;
    switch (ev->kind) {
    case TL_EV_STEP: {
        double now = tl_now();
        /* on a terminal redraw in place; in a log print about every 2 seconds */
        if (!p->tty && now - p->last_print < 2.0 && ev->step != ev->steps && ev->step != 1) return;
        p->last_print = now;
        char eta[32];
        fmt_time(eta, sizeof eta, ev->eta);
        char phase[96] = "";
        if (ev->phase) snprintf(phase, sizeof phase, "%s | ", ev->phase);
        char mfu[64];
        double flops = ev->tokens_per_s * p->flops_per_token;
        int l = snprintf(mfu, sizeof mfu, "%.3g GFLOP/s", flops / 1e9);
        if (p->peak_tflops > 0) snprintf(mfu + l, sizeof mfu - l, " (MFU %.2f%%)", 100 * flops / (p->peak_tflops * 1e12));
        fprintf(stderr, "%s%sstep %ld/%ld | %.4g tok (batch %.4g) | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | %s | ETA %s%s",
                p->tty ? "\r\033[K" : "", phase, ev->step, ev->steps, ev->tokens, ev->batch_tokens, ev->loss, ev->lr,
                ev->grad_norm, ev->tokens_per_s, mfu, eta, p->tty ? "" : "\n");
        break;
    }
    case TL_EV_EVAL: /* task: a named validation set (a recipe's domain) */
        fprintf(stderr, "%sstep %ld: validation loss%s%s %.4f, perplexity %.2f\n", p->tty ? "\n" : "", ev->step,
                ev->task ? " on " : "", ev->task ? ev->task : "", ev->val_loss, exp(ev->val_loss));
        break;
    case TL_EV_CKPT:
        fprintf(stderr, "%scheckpoint: %s\n", p->tty ? "\n" : "", ev->path);
        break;
    case TL_EV_WARN:
        fprintf(stderr, "%swarning: %s\n", p->tty ? "\n" : "", ev->path);
        break;
    case TL_EV_SKIP:
        fprintf(stderr, "%sstep %ld: %s, update skipped\n", p->tty ? "\n" : "", ev->step,
                ev->path ? ev->path : "non-finite gradient");
        break;
    case TL_EV_BENCH:
        if (isnan(ev->acc_norm))
            fprintf(stderr, "%sstep %ld: %s acc %.4f (n=%d)\n", p->tty ? "\n" : "", ev->step, ev->task, ev->acc, ev->n);
        else
            fprintf(stderr, "%sstep %ld: %s acc %.4f acc_norm %.4f (n=%d)\n", p->tty ? "\n" : "", ev->step, ev->task,
                    ev->acc, ev->acc_norm, ev->n);
        break;
    }
}

#define MAX_PATHS 256

/* The library names the request field; the user typed the option. */
static const char *option_of(const char *field) {
    static const char *const opt_of[][2] = {
        {"lr", "--lr"},         {"min_lr", "--min-lr"},          {"beta1", "--beta1"}, {"beta2", "--beta2"},
        {"eps", "--eps"},       {"weight_decay", "--weight-decay"}, {"clip", "--clip"},  {"warmup", "--warmup"},
        {"decay_steps", "--decay-steps"}, {"batch_tokens", "--batch-tokens"}, {"spike_z", "--spike-z"},
        {"spike_window", "--spike-window"}, {"max_skips", "--max-skips"}};
    for (size_t k = 0; field && k < sizeof opt_of / sizeof opt_of[0]; k++)
        if (!strcmp(field, opt_of[k][0])) return opt_of[k][1];
    return field ? field : "train";
}

/* ---- mixture (--source): parses NAME[=W]:PATH ---- */
typedef struct {
    char name[64];
    double weight, start;
    const char *path;
} source_arg;

static int parse_source(const char *v, source_arg *sa) {
    const char *colon = strchr(v, ':');
    if (!colon || colon == v || !colon[1]) {
        cli_error("train", "--source expects NAME[=WEIGHT]:PATH, got '%s'", v);
        return -1;
    }
    const char *eq = memchr(v, '=', (size_t)(colon - v));
    size_t nl = (size_t)((eq ? eq : colon) - v);
    if (nl == 0 || nl >= sizeof sa->name) {
        cli_error("train", "--source: bad source name in '%s'", v);
        return -1;
    }
    memcpy(sa->name, v, nl);
    sa->name[nl] = 0;
    sa->path = colon + 1;
    sa->start = -1;
    if (eq) {
        char num[64];
        size_t l = (size_t)(colon - eq - 1);
        if (l == 0 || l >= sizeof num) {
            cli_error("train", "--source: bad weight in '%s'", v);
            return -1;
        }
        memcpy(num, eq + 1, l);
        num[l] = 0;
        if (cli_parse_double("train", "--source weight", num, &sa->weight)) return -1;
    } else if ((sa->weight = tl_mixture_default_weight(sa->name)) < 0) {
        cli_error("train", "--source %s: give a weight (NAME=WEIGHT:PATH)", sa->name);
        return -1;
    }
    if (sa->weight < 0) {
        cli_error("train", "--source %s: the weight must not be negative", sa->name);
        return -1;
    }
    return 0;
}
typedef struct {
    source_arg *src;
    int *n;
} source_list;

static int add_source(const char *cmd, const char *v, void *dst) {
    source_list *l = dst;
    if (*l->n == TL_MIX_MAX_SOURCES) {
        cli_error(cmd, "at most %d sources", TL_MIX_MAX_SOURCES);
        return -1;
    }
    if (parse_source(v, &l->src[*l->n])) return -1;
    ++*l->n;
    return 0;
}

/* NAME=W: the start weight of a --source given before it */
static int set_source_start(const char *cmd, const char *v, void *dst) {
    source_list *l = dst;
    const char *eq = strchr(v, '=');
    int found = 0;
    double w;
    if (!eq || cli_parse_double(cmd, "--source-start", eq + 1, &w) || w < 0) {
        cli_error(cmd, "--source-start expects NAME=WEIGHT (after the --source it names)");
        return -1;
    }
    for (int k = 0; k < *l->n; k++)
        if (strlen(l->src[k].name) == (size_t)(eq - v) && !strncmp(l->src[k].name, v, (size_t)(eq - v))) {
            l->src[k].start = w;
            found = 1;
        }
    if (!found) {
        cli_error(cmd, "--source-start %s: no --source of that name before it", v);
        return -1;
    }
    return 0;
}
/* ---- end mixture ---- */

typedef struct {
    int *on;
    const char **dir;
} resume_arg;

/* --resume [DIR]: DIR, when given, replaces the default (--out) */
static int set_resume(const char *cmd, const char *v, void *dst) {
    (void)cmd;
    resume_arg *r = dst;
    *r->on = 1;
    if (v) *r->dir = v;
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *data[MAX_PATHS], *val[MAX_PATHS];
    int n_data = 0, n_val = 0;
    const char *preset = NULL, *config = NULL, *init = NULL, *resume = NULL, *out = "runs/train", *log = NULL;
    tl_train_request rq = tl_train_request_defaults(); /* the training defaults */
    long seed = (long)rq.seed, threads = 0;
    int quiet = 0, do_resume = 0, overwrite = 0;
    long zero = 0;            /* distributed */
    int overlap = 0;          /* distributed */
    double comm_timeout = 300; /* distributed */
    source_arg src_args[TL_MIX_MAX_SOURCES];
    int n_sources = 0;
    long ramp_tokens = 0;
    const char *bench_args[16], *tokenizer_path = NULL;
    int n_bench = 0;
    long bench_limit = 0, vocab_size = 0;
    tl_adamw_config *oc = &rq.opt;
    double peak_tflops = 0; /* the progress line's MFU */
    const char *device = NULL, *precision = NULL; /* engines built in: src/train/engine.h */
    int recompute = 0, sft = 0, dpo = 0, ipo = 0;
    double beta = 0.1; /* DPO's (TRL's default) */
    const int with_cuda = tl_engine_find("cuda") != NULL;
    /* a recipe fills the request first, so every option given overrides it */
    const char *recipe_path = NULL;
    tl_recipe *recipe = NULL;
    for (int k = 1; k < argc; k++) {
        if (!strcmp(argv[k], "--recipe") && k + 1 < argc) recipe_path = argv[k + 1];
        else if (!strncmp(argv[k], "--recipe=", 9)) recipe_path = argv[k] + 9;
    }
    if (recipe_path) {
        tl_error rerr;
        if (!(recipe = calloc(1, sizeof *recipe)) || tl_recipe_load(recipe_path, recipe, &rq, &rerr)) {
            cli_error("train", "%s", recipe ? rerr.msg : "out of memory");
            free(recipe);
            return 2;
        }
        seed = (long)rq.seed; /* the recipe's, unless --seed overrides it */
    }
    source_list srcs = {src_args, &n_sources};
    resume_arg res = {&do_resume, &resume};
    const cli_option opts[] = {
        CLI_OPT_LIST("--data", data, MAX_PATHS, &n_data, "too many --data paths"),
        CLI_OPT_LIST("--val-data", val, MAX_PATHS, &n_val, "too many --val-data paths"),
        CLI_OPT_CALL("--source", add_source, &srcs, 0),
        CLI_OPT_CALL("--source-start", set_source_start, &srcs, 0),
        CLI_OPT_CALL("--resume", set_resume, &res, 1),
        CLI_OPT_LIST("--bench", bench_args, 16, &n_bench, "at most 16 --bench tasks"),
        CLI_OPT_STR("--tokenizer", &tokenizer_path),
        CLI_OPT_INT("--bench-every", &rq.bench_every, 1, 1L << 40),
        CLI_OPT_INT("--vocab-size", &vocab_size, 1, 1L << 24),
        CLI_OPT_INT("--bench-limit", &bench_limit, 0, 1L << 40),
        CLI_OPT_STR("--recipe", &recipe_path),
        CLI_OPT_STR("--preset", &preset),
        CLI_OPT_STR("--config", &config),
        CLI_OPT_STR("--init", &init),
        CLI_OPT_STR("--out", &out),
        CLI_OPT_STR("--log", &log),
        CLI_OPT_INT("--batch", &rq.batch, 1, 1 << 20),
        CLI_OPT_INT("--seq-len", &rq.seq_len, 1, 1 << 20),
        CLI_OPT_INT("--batch-tokens", &rq.batch_tokens, 1, 1L << 40),
        CLI_OPT_INT("--steps", &rq.steps, 1, 1L << 40),
        CLI_OPT_INT("--warmup", &rq.warmup, 0, 1L << 40),
        CLI_OPT_INT("--decay-steps", &rq.decay_steps, 0, 1L << 40),
        CLI_OPT_INT("--seed", &seed, 0, 1L << 62),
        CLI_OPT_INT("--ckpt-every", &rq.ckpt_every, 0, 1L << 40),
        CLI_OPT_INT("--keep", &rq.keep, 0, 1 << 20),
        CLI_OPT_INT("--eval-every", &rq.eval_every, 0, 1L << 40),
        CLI_OPT_INT("--eval-batches", &rq.eval_batches, 1, 1 << 20),
        CLI_OPT_INT("--zero", &zero, 0, 3),
        CLI_OPT_DOUBLE("--comm-timeout", &comm_timeout),
        CLI_OPT_INT("--threads", &threads, 0, 4096),
        CLI_OPT_INT("--ramp-tokens", &ramp_tokens, 0, 1L << 50),
        CLI_OPT_DOUBLE("--lr", &oc->lr),
        CLI_OPT_DOUBLE("--min-lr", &oc->min_lr),
        CLI_OPT_DOUBLE("--beta1", &oc->beta1),
        CLI_OPT_DOUBLE("--beta2", &oc->beta2),
        CLI_OPT_DOUBLE("--eps", &oc->eps),
        CLI_OPT_DOUBLE("--weight-decay", &oc->weight_decay),
        CLI_OPT_DOUBLE("--clip", &oc->clip),
        CLI_OPT_DOUBLE("--spike-z", &rq.spike_z),
        CLI_OPT_INT("--spike-window", &rq.spike_window, 1, TL_LOSS_WINDOW_MAX),
        CLI_OPT_INT("--max-skips", &rq.max_skips, 0, 1L << 30),
        CLI_OPT_FLAG("--sequential", &rq.sequential),
        CLI_OPT_FLAG("--quiet", &quiet),
        CLI_OPT_FLAG("--overwrite", &overwrite),
        CLI_OPT_FLAG("--sft", &sft),
        CLI_OPT_FLAG("--dpo", &dpo),
        CLI_OPT_FLAG("--ipo", &ipo),
        CLI_OPT_DOUBLE("--beta", &beta),
        CLI_OPT_FLAG("--overlap", &overlap), /* distributed */
        CLI_OPT_STR("--precision", &precision),
        CLI_OPT_DOUBLE("--peak-tflops", &peak_tflops),
        /* the CUDA build's options last: a CPU-only build parses without them */
        CLI_OPT_STR("--device", &device),
        CLI_OPT_FLAG("--recompute", &recompute),
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]) - (with_cuda ? 0 : 2);
    int prc = cli_parse("train", argc, argv, opts, n_opts, NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        return 0;
    }
    if (prc) return prc;
    if (peak_tflops < 0) {
        cli_error("train", "--peak-tflops must be positive (the device's peak TFLOP/s), got %g", peak_tflops);
        free(recipe);
        return 2;
    }
    if (recipe && (n_data || n_sources || ramp_tokens)) {
        cli_error("train", "%s declares the data of each phase: drop --data / --source / --ramp-tokens", recipe_path);
        free(recipe);
        return 2;
    }
    if (recipe && (sft || dpo || ipo)) { /* fine-tuning reads one chat or pair data set at one batch: not phases */
        cli_error("train", "%s: --%s does not run with a recipe (its phases pretrain on mixtures and change the "
                  "batch); fine-tune with --data", recipe_path, sft ? "sft" : dpo ? "dpo" : "ipo");
        free(recipe);
        return 2;
    }
    if (recipe && !preset && !config && !init) { /* the recipe's model unless an option names one */
        preset = recipe->preset[0] ? recipe->preset : NULL;
        config = recipe->config[0] ? recipe->config : NULL;
        init = recipe->init[0] ? recipe->init : NULL;
    }
    if (recipe && !vocab_size) vocab_size = recipe->vocab_size;
    if (n_data == 0 && n_sources == 0 && !recipe) {
        cli_error("train", "no training data: give --data SHARDS (make some with `tinyllama prepare`)");
        return 2;
    }
    if (n_data && n_sources) {
        cli_error("train", "give either --data or --source, not both");
        return 2;
    }
    if ((preset != NULL) + (config != NULL) + (init != NULL) > 1) {
        cli_error("train", "give at most one of --preset, --config, --init");
        return 2;
    }
    rq.seed = (uint64_t)seed;
    rq.has_val = n_val > 0;
    const char *field = NULL;
    tl_error serr;
    if (tl_train_request_check(&rq, &field, &serr)) { /* settings are refused before anything is read */
        cli_error("train", "%s: %s", option_of(field), serr.msg);
        return 2;
    }
    /* ---- distributed: this process's place in the job, as the launcher set it (MPI
     * starts later, after the data is open); rank 0 alone reports progress ---- */
    int rank = 0, world = 1;
    tl_launch_env(&rank, &world);
    rq.world = world;
    if (rank != 0) quiet = 1;
    if (recipe && tl_recipe_check_batch(recipe, &rq, &serr)) { /* before the model and the data */
        cli_error("train", "%s", serr.msg);
        free(recipe);
        return 2;
    }
    if (!(comm_timeout >= 0)) {
        cli_error("train", "--comm-timeout must be a number of seconds >= 0");
        return 2;
    }
    if (overlap && zero < 2) {
        cli_error("train", "--overlap needs --zero 2 or 3 (stages 0-1 reduce once per step, after the backward)");
        return 2;
    }
    /* ---- end distributed ---- */

    tl_error err;
    tl_model model;
    char resume_dir[4200] = "", note[2048];
    if (do_resume && overwrite) {
        cli_error("train", "give either --resume (continue the run) or --overwrite (start a new one), not both");
        return 2;
    }
    if (do_resume && init) {
        cli_error("train", "--resume continues the checkpoint's model: drop --init");
        return 2;
    }
    if (do_resume && tl_checkpoint_resolve(resume ? resume : out, resume_dir, sizeof resume_dir, note, sizeof note, &err)) {
        cli_error("train", "--resume: %s", err.msg);
        return 1;
    }
    if (do_resume && note[0] && rank == 0) fprintf(stderr, "warning: %s\n", note);
    switch (tl_train_threads(threads, resume_dir, world, &threads)) {
    case TL_THREADS_GIVEN: tl_set_threads((int)threads); break;
    case TL_THREADS_FREE_CORES: cli_threads("train", 0); break; /* says so when it is fewer than all */
    case TL_THREADS_ALL: break;
    }
    const tl_train_model_request mrq = {.resume_dir = resume_dir, .init = init, .preset = preset, .config = config,
                                        .vocab_size = vocab_size, .seed = (uint64_t)seed};
    int rc = tl_train_model_open(&model, &mrq, &field, &err);
    if (rc > 0 && !strcmp(field, "vocab_size")) {
        cli_error("train", "--vocab-size %ld differs from %s", vocab_size, err.msg);
        return 2;
    }
    if (rc > 0) { /* a --preset / --config given with --resume must be the checkpoint's model */
        cli_error("train", "--resume: %s holds a different model than %s %s (%s, checkpoint vs option); drop the option to continue the "
                           "checkpoint's model", resume_dir, config ? "--config" : "--preset", config ? config : preset,
                  err.msg);
        return 2;
    }
    if (rc) {
        cli_error("train", "%s", err.msg);
        return 1;
    }
    tl_data_tokenizer want_tok; /* the data must have been prepared with --tokenizer */
    if (tokenizer_path && (rc = tl_train_tokenizer_identify(tokenizer_path, model.cfg.vocab_size, &want_tok, &err))) {
        cli_error("train", rc > 0 ? "%s (use --vocab-size)" : "%s", err.msg);
        tl_model_free(&model);
        return 1;
    }
    tl_train_source sources[TL_MIX_MAX_SOURCES];
    for (int k = 0; k < n_sources; k++)
        sources[k] = (tl_train_source){src_args[k].name, src_args[k].weight, src_args[k].start, src_args[k].path};
    const tl_train_data_request drq = {.data = data, .n_data = n_data, .sources = sources, .n_sources = n_sources,
                                       .val = val, .n_val = n_val, .ramp_tokens = ramp_tokens,
                                       .tokenizer = tokenizer_path ? &want_tok : NULL, .phases = recipe != NULL};
    tl_train_data td;
    if (tl_train_data_open(&td, &drq, &rq, rank, model.cfg.max_seq_len, &err)) {
        cli_error("train", "%s", err.msg);
        tl_model_free(&model);
        return 1;
    }
    tl_mixture *mix = &td.mix;
    if (rank == 0) { /* which files were taken */
        if (!n_sources && !recipe) fprintf(stderr, "data: %s\n", td.train.taken);
        for (int k = 0; k < mix->n; k++) fprintf(stderr, "source %s: %s\n", mix->src[k].name, mix->src[k].ds.taken);
        if (n_val) fprintf(stderr, "val-data: %s\n", td.val.taken);
    }
    /* a preference pair holds chosen then rejected, (seq_len + 1) / 2 tokens each */
    /* a recipe's sources open in its phases: the model's length unless it or an option gives one */
    int data_seq_len = recipe ? (int)model.cfg.max_seq_len : td.seq_len;
    const int pairs = (dpo || ipo) && !td.mixture && td.train.pairs;
    rq.seq_len = tl_train_seq_len(rq.seq_len, pairs ? (data_seq_len + 1) / 2 - 1 : data_seq_len,
                                  model.cfg.max_seq_len);
    tl_train_opts o = {.overwrite = overwrite, .out_dir = out, .log_path = log, .tokenizer = tokenizer_path,
                       .mixture = n_sources ? mix : NULL, .sft = sft, .dpo = dpo || ipo, .dpo_ipo = ipo,
                       .dpo_beta = beta};
    tl_recipe_run *run = recipe ? calloc(1, sizeof *run) : NULL;
    if (recipe) { /* phases: their sources, accumulation, steps and the schedule in tokens */
        rc = !run ? tl_fail(&err, "out of memory")
                  : tl_recipe_open(recipe, &rq, &td, tokenizer_path ? &want_tok : NULL, rank, run, &o, &field, &err);
        if (rc) {
            cli_error("train", "%s", err.msg);
            free(run);
            free(recipe);
            tl_train_data_close(&td);
            tl_model_free(&model);
            return 1;
        }
        for (int p = 0; rank == 0 && p < run->n; p++) {
            const tl_train_phase *ph = &run->phase[p];
            fprintf(stderr, "phase %s: %ld steps of %.0f tokens (accumulation %d)", ph->name, ph->steps,
                    (double)rq.batch * rq.seq_len * ph->accum * world, ph->accum);
            for (int k = 0; k < ph->mixture->n; k++)
                fprintf(stderr, "%s %s %.3f", k ? "," : ";", ph->mixture->src[k].name,
                        (double)ph->mixture->src[k].w1 / (1 << 24));
            fputc('\n', stderr);
        }
    } else if (tl_train_setup(&rq, &o, &field, &err)) { /* accumulation to --batch-tokens, schedule, cadence */
        cli_error("train", "%s: %s", option_of(field), err.msg);
        return 2;
    }
    const long batch = o.batch, seq_len = o.seq_len, accum = o.accum, steps = o.steps;
    /* zero-shot benchmarks: read, validated and tokenized once, before training */
    tl_eval_task *bench[16];
    int n_loaded = 0;
    if (n_bench && !tokenizer_path) {
        cli_error("train", "--bench needs --tokenizer FILE (the tokenizer the data was prepared with)");
        return 2;
    }
    if (n_bench) {
        tl_tokenizer *tok = tl_tokenizer_load(tokenizer_path, &err);
        if (!tok) {
            cli_error("train", "%s", err.msg);
            return 1;
        }
        for (int k = 0; k < n_bench; k++) {
            char spec[4096], *labels = NULL;
            snprintf(spec, sizeof spec, "%s", bench_args[k]);
            char *colon = strchr(spec, ':');
            if (!colon) {
                cli_error("train", "--bench expects TASK:DATA[:LABELS], got '%s'", bench_args[k]);
                tl_tokenizer_free(tok);
                return 2;
            }
            *colon = '\0';
            char *data_path = colon + 1, *c2 = strchr(data_path, ':');
            if (c2) {
                *c2 = '\0';
                labels = c2 + 1;
            }
            if (!(bench[n_loaded] = tl_train_bench_load(spec, data_path, labels, bench_limit, tok, &err))) {
                cli_error("train", "--bench %s: %s", bench_args[k], err.msg);
                tl_tokenizer_free(tok);
                return 1;
            }
            n_loaded++;
        }
        tl_tokenizer_free(tok);
    }
    o.bench = (const tl_eval_task *const *)bench;
    o.n_bench = n_loaded;
    /* none given: each engine's default (CUDA bf16, CPU fp32) */
    tl_engine_opts eopts = {.fp32 = precision && !strcmp(precision, "fp32"),
                            .bf16 = precision && !strcmp(precision, "bf16"), .recompute = recompute};
    if (precision && strcmp(precision, "fp32") && strcmp(precision, "bf16")) {
        cli_error("train", "--precision must be bf16 or fp32");
        return 2;
    }
    const tl_engine_kind *kind = tl_train_use_engine(&o, device, &eopts);
    if (!kind) {
        cli_error("train", "--device must be cpu or cuda");
        return 2;
    }
    if (o.engine) fprintf(stderr, "device: %s (%s)\n", kind->name, eopts.fp32 ? "fp32" : "bf16 mixed precision");
    else if (eopts.bf16) {
        fprintf(stderr, "precision: bf16 mixed precision (%s)\n",
                tl_gemm_bf16_active() == TL_GEMM_BF16_ONEDNN
                    ? "oneDNN bf16 products: the CPU has bf16 instructions"
                    : "emulated bf16 products: this CPU has no AVX512-BF16 or AMX-BF16, so no speed-up");
        /* without AMX the products run on vdpbf16ps, which some cores issue at a quarter of the FMA rate */
        tl_cpu_info cpu;
        tl_cpu_detect(&cpu);
        const double rate = cpu.amx_bf16 ? 0.0 : tl_bf16_dot_rate();
        if (rate > 0.0 && rate < TL_BF16_DOT_RATE_PAYS)
            fprintf(stderr,
                    "note: this CPU has no AMX, and its bf16 dot products do %.2fx the arithmetic of its fp32 FMAs: "
                    "bf16 training is likely slower here than --precision fp32 (docs/benchmarks.md)\n",
                    rate);
    }
    /* ---- distributed: join the job (MPI when launched with several ranks) ---- */
    tl_comm *comm = NULL;
    rc = tl_comm_create_ex(&comm, 0, overlap && world > 1, &err);
    if (!rc) {
        tl_comm_set_timeout(comm, comm_timeout);
        o.comm = comm;
        o.zero = (int)zero;
        o.overlap = overlap;
        if (world > 1 && rank == 0)
            fprintf(stderr, "distributed: %d ranks (%s), ZeRO stage %ld%s, collective timeout %.0f s\n", world,
                    tl_comm_backend(comm), zero, overlap ? " with a communication thread" : "", comm_timeout);
    }
    /* ---- end distributed ---- */
    tl_trainer *tr = rc ? NULL : tl_trainer_create(&model, n_sources || recipe ? NULL : &td.train, n_val ? &td.val : NULL,
                                                &o, &err);
    rc = tr ? 0 : -1;
    if (!rc && resume_dir[0]) rc = tl_trainer_resume(tr, resume_dir, &err);
    uint64_t mix_samples = 0; /* mixture totals for the summary */
    int mix_shards = 0;
    for (int k = 0; k < mix->n; k++) {
        mix_samples += mix->src[k].ds.n_samples;
        mix_shards += mix->src[k].ds.n_shards;
    }
    for (int p = 0; run && p < run->n; p++) /* a recipe: each source once, however many phases read it */
        for (int k = 0; k < run->mix[p].n; k++) {
            int again = 0;
            for (int q = 0; q < p; q++)
                for (int j = 0; j < run->mix[q].n; j++) again |= !strcmp(run->mix[q].src[j].name, run->mix[p].src[k].name);
            if (again) continue;
            mix_samples += run->mix[p].src[k].ds.n_samples;
            mix_shards += run->mix[p].src[k].ds.n_shards;
        }
    if (recipe) data_seq_len = (int)rq.seq_len;
    if (!rc && rank == 0) { /* distributed: rank 0 reports */
        const tl_config *c = &model.cfg;
        fprintf(stderr,
                "model: %zu parameters (%d layers, dim %d, ffn %d, heads %d/%d kv, vocab %d)\n"
                "data: %llu training samples of %d tokens in %d shard(s)%s\n"
                "batch: %ld x %ld tokens x %ld accumulation%s = %ld tokens/step; %ld steps; %d threads; %.0f MB%s\n",
                model.n_params, c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->vocab_size,
                (unsigned long long)(n_sources || recipe ? mix_samples : td.train.n_samples), data_seq_len,
                n_sources || recipe ? mix_shards : td.train.n_shards,
                n_val ? ", with validation" : "", batch, seq_len, accum, world > 1 ? " x ranks" : "",
                batch * seq_len * accum * world, steps, tl_get_threads(), (double)tl_trainer_memory_bytes(tr) / 1e6,
                world > 1 ? " per rank" : "");
        for (int k = 0; k < mix->n; k++) /* mixture */
            fprintf(stderr, "source %s: weight %.6f (start %.6f), %llu samples of %d tokens in %d shard(s)\n",
                    mix->src[k].name, (double)mix->src[k].w1 / (1 << 24), (double)mix->src[k].w0 / (1 << 24),
                    (unsigned long long)mix->src[k].ds.n_samples, mix->src[k].ds.seq_len, mix->src[k].ds.n_shards);
        if (resume_dir[0]) fprintf(stderr, "resuming from %s at step %ld\n", resume_dir, tl_trainer_step(tr));
    }
    if (!rc) {
        struct sigaction sa = {0};
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        progress p = {.quiet = quiet, .tty = isatty(2), .peak_tflops = peak_tflops,
                      .flops_per_token = tl_config_train_flops_per_token(&model.cfg, (int)o.seq_len)};
        char desc[256];
        tl_error de;
        if (p.peak_tflops <= 0 && kind->describe && !kind->describe(eopts.device, desc, sizeof desc, &de))
            p.peak_tflops = cli_datasheet_peak(desc);
        rc = tl_trainer_run(tr, on_event, &p, &stop_requested, &err);
        if (p.tty && !quiet) fputc('\n', stderr);
        if (!rc && stop_requested) fprintf(stderr, "stopped at step %ld\n", tl_trainer_step(tr));
    }
    if (rc) cli_error("train", "%s", err.msg);
    /* distributed: a rank that fails takes the job down (its peers may be inside a collective) */
    if (rc && comm && tl_comm_world(comm) > 1) tl_comm_abort(comm, 1);
    tl_trainer_free(tr);
    tl_comm_free(comm);
    for (int k = 0; k < n_loaded; k++) tl_eval_task_free(bench[k]);
    if (run) tl_recipe_run_close(run);
    free(run);
    free(recipe);
    tl_train_data_close(&td);
    tl_model_free(&model);
    if (rc) return 1;
    return stop_requested ? 128 + stop_requested : 0; /* interrupted, as shells report it */
}

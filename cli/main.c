/* main.c - `tinyllama <command> [options]`: dispatches to cli/cmd_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "gemm.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", cmd_train, "pretrain (or continue training) a Llama model on token shards"},
    {"prepare", cmd_prepare, "turn text files into packed token shards"},
    {"bench", cmd_bench, "measure training tokens/s and GFLOP/s for a model config"},
    {"eval", cmd_eval, "zero-shot benchmark accuracy (HellaSwag, PIQA, ARC, OBQA, WinoGrande, BoolQ)"},
    {"info", cmd_info, "show a model config preset, an HF config.json or a GGUF file"},
    {"convert", cmd_convert, "a GGUF file (llama.cpp) to an HF directory (--to-hf), or back (--to-gguf)"},
    {"quantize", cmd_quantize, "an HF directory or GGUF file to a GGUF file of another type (Q4_K_M, Q8_0, ...)"},
    {"tokenize", cmd_tokenize, "text on stdin -> token ids"},
    {"detokenize", cmd_detokenize, "token ids on stdin -> text"},
    {"tokenizer", cmd_tokenizer, "tokenizer info | train (learn a BPE vocabulary)"},
    {"generate", cmd_generate, "continue a prompt with an HF checkpoint (KV cache, sampling)"},
    {"chat", cmd_chat, "multi-turn chat (TinyLlama-Chat template), messages from stdin"},
    {"perplexity", cmd_perplexity, "perplexity of a model on a text file or token shards"},
    {"plot", cmd_plot, "draw the loss, learning rate and throughput of training runs (PNG or SVG)"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server (continuous batching, prefix cache)"},
};

static void usage(FILE *f) {
    fprintf(f,
            "tinyllama - train and run Llama-architecture models (TinyLlama) in C\n\n"
            "usage: tinyllama <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`tinyllama <command> --help` describes each command's options.\n");
}

/* libgomp (and oneDNN and OpenBLAS on it) reads its wait policy once, when it
 * loads, before main.  Its default spins ~300,000 pause loops (milliseconds) at
 * every barrier: beside one busy process a thread that waits that long holds the
 * core its partner needs, and 2 threads fell to a fraction of 1 thread's speed.
 * Unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT), the program runs
 * itself again with a short spin (docs/benchmarks.md, "Threads on a shared
 * machine"); if that fails it goes on with libgomp's default. */
#define SPINCOUNT "1000"

static void choose_omp_spin(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", SPINCOUNT, 1) || setenv(CLI_SPIN_MARK, SPINCOUNT, 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("GOMP_SPINCOUNT");
    unsetenv(CLI_SPIN_MARK);
}

int main(int argc, char **argv) {
    choose_omp_spin(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    /* the GEMM backends are chosen once here, so a bad TL_GEMM(_BF16) stops every command */
    tl_error err;
    if (tl_gemm_init(&err) || tl_gemm_bf16_init(&err)) {
        fprintf(stderr, "tinyllama: %s\n", err.msg);
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tinyllama: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

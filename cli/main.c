/* main.c - `tinyllama <command> [options]`: dispatches to cli/cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gemm.h"
#include "threads.h"

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

int main(int argc, char **argv) {
    tl_threads_wait_policy(argv); /* first: it may run the program again */
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

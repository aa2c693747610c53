/* cmd_tokenizer_train.c - `tinyllama tokenizer train` (placeholder until the trainer lands). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_tokenizer_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("tokenizer train", "not implemented yet");
    return 1;
}

/* cmd_info.c - `tinyllama info`: print a model configuration and its size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"

static void help(void) {
    printf("usage: tinyllama info (--preset NAME | --config config.json)\n\n"
           "Prints the model configuration and parameter count.\n\n"
           "  --preset NAME     a built-in preset:");
    for (const char *const *p = tl_config_preset_names(); *p; p++) printf(" %s", *p);
    printf("\n  --config FILE     an HF config.json\n");
}

int cmd_info(int argc, char **argv) {
    const char *preset = NULL, *config = NULL;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        } else if (cli_opt(argc, argv, &i, "--preset", &preset, &bad) ||
                   cli_opt(argc, argv, &i, "--config", &config, &bad)) {
            if (bad) return 2;
        } else {
            cli_error("info", "unknown option '%s' (see --help)", argv[i]);
            return 2;
        }
    }
    if (!preset == !config) {
        cli_error("info", "give exactly one of --preset or --config");
        return 2;
    }
    tl_config cfg;
    tl_error err;
    if (preset ? tl_config_preset(preset, &cfg, &err) : tl_config_load_json(config, &cfg, &err)) {
        cli_error("info", "%s", err.msg);
        return 1;
    }
    char *json = tl_config_to_json(&cfg);
    printf("%s\n", json);
    free(json);
    printf("parameters: %zu (non-embedding %zu)\n", tl_config_num_params(&cfg),
           tl_config_num_nonembed_params(&cfg));
    return 0;
}

/* test_sandbox.c - the sandbox that runs HumanEval completions (src/eval/sandbox.h),
 * with shell programs standing in for hostile completions: an infinite loop, a
 * fork bomb, a memory hog, a write outside its directory, a socket, and reading
 * our environment.  Each must fail (or be contained) and leave nothing behind. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "sandbox.h"

static int run_sh(tl_test_ctx *t, const char *shell, const char *prog, const tl_sandbox_limits *lim,
                  tl_sandbox_result *r) {
    const char *argv[] = {shell, "prog.sh", NULL};
    tl_error err;
    int rc = tl_sandbox_run(argv, "prog.sh", prog, strlen(prog), lim, r, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

/* Processes whose command line is exactly argv0 argv1. */
static int count_procs(const char *argv0, const char *argv1) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    int n = 0;
    char want[128];
    size_t wl = (size_t)snprintf(want, sizeof want, "%s%c%s%c", argv0, 0, argv1, 0);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char p[300], buf[128];
        snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (k == wl && !memcmp(buf, want, wl)) n++;
    }
    closedir(d);
    return n;
}

static void test_sandbox_basic(tl_test_ctx *t) {
    tl_sandbox_result r;
    if (run_sh(t, "/bin/sh", "exit 0\n", NULL, &r)) return;
    CHECK_MSG(r.outcome == TL_SBX_PASSED, "exit 0: %s", tl_sandbox_outcome_name(r.outcome));
    printf("  sandbox isolation here: %s\n", r.isolation);
    if (run_sh(t, "/bin/sh", "echo oops >&2; exit 3\n", NULL, &r)) return;
    CHECK(r.outcome == TL_SBX_FAILED && r.status == 3);
    CHECK_MSG(strstr(r.output, "oops") != NULL, "stderr not captured: '%s'", r.output);
    /* a fresh directory as the working directory, removed afterwards; our environment is not passed */
    setenv("TL_SANDBOX_SECRET", "do-not-leak", 1);
    if (run_sh(t, "/bin/sh", "pwd; ls -A; env\n", NULL, &r)) return;
    unsetenv("TL_SANDBOX_SECRET");
    CHECK(r.outcome == TL_SBX_PASSED);
    CHECK_MSG(strstr(r.output, "TL_SANDBOX_SECRET") == NULL, "environment leaked: %s", r.output);
    CHECK_MSG(strstr(r.output, "tl-sbx-") != NULL, "cwd: %s", r.output);
    char dir[512] = "";
    sscanf(r.output, "%511s", dir);
    struct stat st;
    CHECK_MSG(dir[0] == '/' && stat(dir, &st) != 0, "scratch directory %s still exists", dir);
    tl_sandbox_result bad;
    tl_error err;
    const char *rel[] = {"sh", NULL};
    CHECK(tl_sandbox_run(rel, "p", "", 0, NULL, &bad, &err) == -1 && strstr(err.msg, "absolute") != NULL);
}

static void test_sandbox_infinite_loop(tl_test_ctx *t) {
    tl_sandbox_limits lim = {.timeout_s = 1.0};
    tl_sandbox_result r;
    if (run_sh(t, "/bin/sh", "while :; do :; done\n", &lim, &r)) return;
    CHECK_MSG(r.outcome == TL_SBX_TIMEOUT || r.outcome == TL_SBX_SIGNALED, "loop: %s",
              tl_sandbox_outcome_name(r.outcome));
    CHECK_MSG(r.seconds < 4.0, "loop ran %.1f s", r.seconds);
}

static void test_sandbox_fork_bomb(tl_test_ctx *t) {
    /* forks without bound (each child sleeps with a marker argument), then waits */
    tl_sandbox_limits lim = {.timeout_s = 2.0, .nproc = 32};
    tl_sandbox_result r;
    const char *bomb = "i=0; while [ $i -lt 100000 ]; do sleep 4171 & i=$((i+1)); done; wait\n";
    if (run_sh(t, "/bin/sh", bomb, &lim, &r)) return;
    CHECK_MSG(r.outcome != TL_SBX_PASSED, "fork bomb passed");
    usleep(200000);
    CHECK_MSG(count_procs("sleep", "4171") == 0, "%d of the fork bomb's processes survive",
              count_procs("sleep", "4171"));
    /* a bomb whose first process exits at once, leaving its children running */
    if (run_sh(t, "/bin/sh", "for i in 1 2 3 4 5; do sleep 4172 & done; exit 1\n", &lim, &r)) return;
    CHECK(r.outcome == TL_SBX_FAILED);
    usleep(200000);
    CHECK_MSG(count_procs("sleep", "4172") == 0, "%d orphaned processes survive", count_procs("sleep", "4172"));
}

static void test_sandbox_memory_hog(tl_test_ctx *t) {
    tl_sandbox_limits lim = {.timeout_s = 10.0, .mem_bytes = 256L << 20};
    tl_sandbox_result r;
    if (access("/usr/bin/awk", X_OK) != 0) {
        printf("  (no /usr/bin/awk: memory hog not run)\n");
        return;
    }
    if (run_sh(t, "/bin/sh", "/usr/bin/awk 'BEGIN { s = \"x\"; while (1) s = s s }'\n", &lim, &r)) return;
    CHECK_MSG(r.outcome == TL_SBX_FAILED || r.outcome == TL_SBX_SIGNALED, "memory hog: %s",
              tl_sandbox_outcome_name(r.outcome));
    CHECK_MSG(r.seconds < 9.0, "memory hog ran %.1f s (not stopped by the memory limit)", r.seconds);
}

static void test_sandbox_writes_and_network(tl_test_ctx *t) {
    tl_sandbox_result r;
    char probe[128];
    snprintf(probe, sizeof probe, "/tmp/tl_sbx_probe_%d", (int)getpid());
    char prog[512];
    /* a write to /tmp lands in the sandbox's private /tmp (or is refused); one to /etc is refused */
    snprintf(prog, sizeof prog, "echo x > %s; echo y > /etc/tl_sbx_probe && exit 0; exit 1\n", probe);
    if (run_sh(t, "/bin/sh", prog, NULL, &r)) return;
    struct stat st;
    CHECK_MSG(stat(probe, &st) != 0, "the program wrote %s outside its directory", probe);
    remove(probe);
    if (geteuid() == 0) { /* as root the program runs as nobody */
        CHECK_MSG(r.outcome == TL_SBX_FAILED, "writing /etc: %s", tl_sandbox_outcome_name(r.outcome));
        CHECK(stat("/etc/tl_sbx_probe", &st) != 0);
    }
    /* a file larger than the file-size limit */
    tl_sandbox_limits lim = {.fsize_bytes = 1 << 20};
    if (run_sh(t, "/bin/sh", "head -c 4000000 /dev/zero > big || exit 1; exit 0\n", &lim, &r)) return;
    CHECK_MSG(r.outcome != TL_SBX_PASSED, "wrote past the file-size limit");
    /* a socket: no network in its own namespace */
    if (access("/bin/bash", X_OK) != 0) return;
    if (run_sh(t, "/bin/bash", "exec 3<>/dev/tcp/127.0.0.1/9 || exit 1; exit 0\n", NULL, &r)) return;
    if (strncmp(r.isolation, "netns", 5) == 0)
        CHECK_MSG(r.outcome == TL_SBX_FAILED, "a socket in the sandbox: %s", tl_sandbox_outcome_name(r.outcome));
    else printf("  (no network namespace here: %s)\n", r.isolation);
}

const tl_test tests_sandbox[] = {
    {"sandbox_basic", test_sandbox_basic},
    {"sandbox_infinite_loop", test_sandbox_infinite_loop},
    {"sandbox_fork_bomb", test_sandbox_fork_bomb},
    {"sandbox_memory_hog", test_sandbox_memory_hog},
    {"sandbox_writes_and_network", test_sandbox_writes_and_network},
    {NULL, NULL},
};

/* sandbox.c - see sandbox.h.  Process layout: we fork a "keeper" that starts a
 * new session (so one kill reaches its whole process group), tries to enter new
 * network, PID and mount namespaces, and forks the program's process (PID 1 of
 * the new PID namespace when that held: when it exits, the kernel kills
 * everything it left behind).  The keeper reports which isolation held and the
 * program's exit status through a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define NOBODY 65534

const char *tl_sandbox_outcome_name(tl_sandbox_outcome o) {
    switch (o) {
    case TL_SBX_PASSED: return "passed";
    case TL_SBX_FAILED: return "failed";
    case TL_SBX_TIMEOUT: return "timed out";
    case TL_SBX_SIGNALED: return "killed by a signal";
    }
    return "?";
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void set_limit(int what, rlim_t v) {
    struct rlimit r = {v, v};
    setrlimit(what, &r);
}

/* The program's process: never returns. */
static void run_program(const char *const *argv, int dir_fd, int out_fd, int report, int mntns, int root,
                        const tl_sandbox_limits *lim, const char *home, char *iso) {
    if (mntns) { /* a private /tmp, /var/tmp, /dev/shm: writes there vanish with the namespace */
        int ok = mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
        const char *tmps[3] = {"/tmp", "/var/tmp", "/dev/shm"};
        for (int i = 0; ok && i < 3; i++)
            if (mount("tmpfs", tmps[i], "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777") != 0 && errno != ENOENT)
                ok = 0;
        strcat(iso, ok ? " private-tmp" : " (private tmp failed)");
    }
    if (fchdir(dir_fd) != 0) _exit(126);
    if (root) { /* drop to nobody: the process limit applies, root's files are out of reach */
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0 || getuid() != NOBODY) {
            strcat(iso, " (cannot become nobody)\n");
            write_all(report, iso, strlen(iso));
            _exit(126);
        }
        strcat(iso, " uid=nobody");
    }
    rlim_t cpu = (rlim_t)ceil(lim->timeout_s) + 1;
    struct rlimit rc = {cpu, cpu + 1};
    setrlimit(RLIMIT_CPU, &rc);
    set_limit(RLIMIT_AS, (rlim_t)lim->mem_bytes);
    set_limit(RLIMIT_FSIZE, (rlim_t)lim->fsize_bytes);
    set_limit(RLIMIT_NPROC, (rlim_t)lim->nproc);
    set_limit(RLIMIT_CORE, 0);
    set_limit(RLIMIT_NOFILE, 256);
    strcat(iso, " rlimits\n");
    write_all(report, iso, strlen(iso));
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) _exit(126);
    for (int fd = 3; fd < 1024; fd++) close(fd); /* nothing of ours leaks into it */
    char e_home[4200];
    snprintf(e_home, sizeof e_home, "HOME=%s", home);
    char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", e_home, "LANG=C.UTF-8", NULL};
    execve(argv[0], (char *const *)argv, envp);
    _exit(127);
}

/* The keeper: never returns. */
static void keeper(const char *const *argv, const char *dir, int dir_fd, int out_fd, int report,
                   const tl_sandbox_limits *lim) {
    setsid();
    const int root = geteuid() == 0;
    char iso[128] = "";
    int netns = 0, pidns = 0, mntns = 0;
    if (unshare(CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS) == 0) netns = pidns = mntns = 1;
    else if (!root && unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS) == 0)
        netns = pidns = mntns = 1; /* unprivileged: inside a user namespace of our own */
    else {
        netns = unshare(CLONE_NEWNET) == 0;
        pidns = unshare(CLONE_NEWPID) == 0;
    }
    strcat(iso, netns ? "netns" : "(no netns)");
    strcat(iso, pidns ? " pidns" : " (no pidns)");
    strcat(iso, mntns ? " mntns" : " (no mntns)");
    pid_t p = fork();
    if (p < 0) _exit(125);
    if (p == 0) run_program(argv, dir_fd, out_fd, report, mntns, root, lim, dir, iso);
    int st = 0;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    char msg[64];
    if (WIFSIGNALED(st)) snprintf(msg, sizeof msg, "K %d\n", WTERMSIG(st));
    else snprintf(msg, sizeof msg, "X %d\n", WEXITSTATUS(st));
    write_all(report, msg, strlen(msg));
    _exit(0);
}

int tl_sandbox_run(const char *const *argv, const char *file_name, const char *text, size_t len,
                   const tl_sandbox_limits *limits, tl_sandbox_result *res, tl_error *err) {
    tl_sandbox_limits lim = {3.0, 1L << 30, 16L << 20, 64};
    if (limits) {
        if (limits->timeout_s > 0) lim.timeout_s = limits->timeout_s;
        if (limits->mem_bytes > 0) lim.mem_bytes = limits->mem_bytes;
        if (limits->fsize_bytes > 0) lim.fsize_bytes = limits->fsize_bytes;
        if (limits->nproc > 0) lim.nproc = limits->nproc;
    }
    memset(res, 0, sizeof *res);
    if (!argv || !argv[0] || argv[0][0] != '/') return tl_fail(err, "sandbox: the interpreter must be an absolute path");
    if (strchr(file_name, '/')) return tl_fail(err, "sandbox: file name '%s' has a '/'", file_name);
    const char *tmp = getenv("TMPDIR");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/tl-sbx-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return tl_fail(err, "sandbox: cannot create a scratch directory in %s: %s",
                                      tmp && *tmp ? tmp : "/tmp", strerror(errno));
    int rc = 0, dir_fd = -1, out_fd = -1, pipefd[2] = {-1, -1};
    snprintf(path, sizeof path, "%s/%s", dir, file_name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, len, f) != len) rc = tl_fail(err, "sandbox: cannot write %s", path);
    if (f && fclose(f) != 0 && !rc) rc = tl_fail(err, "sandbox: cannot write %s", path);
    snprintf(path, sizeof path, "%s/.output", dir);
    if (!rc && (out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        rc = tl_fail(err, "sandbox: cannot create %s", path);
    if (!rc && geteuid() == 0 && chown(dir, NOBODY, NOBODY) != 0)
        rc = tl_fail(err, "sandbox: cannot hand %s to nobody: %s", dir, strerror(errno));
    if (!rc && (dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) rc = tl_fail(err, "sandbox: cannot open %s", dir);
    if (!rc && pipe2(pipefd, O_CLOEXEC) != 0) rc = tl_fail(err, "sandbox: pipe: %s", strerror(errno));
    pid_t pid = -1;
    if (!rc) {
        fflush(NULL);
        pid = fork();
        if (pid < 0) rc = tl_fail(err, "sandbox: fork: %s", strerror(errno));
        else if (pid == 0) {
            close(pipefd[0]);
            keeper(argv, dir, dir_fd, out_fd, pipefd[1], &lim);
        }
    }
    if (!rc) {
        close(pipefd[1]);
        pipefd[1] = -1;
        const double t0 = tl_now();
        int st = 0, done = 0;
        while (!done) {
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) done = 1;
            else if (tl_now() - t0 > lim.timeout_s) {
                kill(-pid, SIGKILL); /* the whole session; the PID namespace dies with its first process */
                kill(pid, SIGKILL);
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
                }
                res->outcome = TL_SBX_TIMEOUT;
                done = 2;
            } else {
                struct timespec ts = {0, 2000000};
                nanosleep(&ts, NULL);
            }
        }
        res->seconds = tl_now() - t0;
        kill(-pid, SIGKILL); /* anything of its session still running */
        char rep[512];
        size_t n = 0;
        ssize_t r;
        while (n + 1 < sizeof rep && (r = read(pipefd[0], rep + n, sizeof rep - 1 - n)) > 0) n += (size_t)r;
        rep[n] = 0;
        char *nl = strchr(rep, '\n');
        size_t il = nl ? (size_t)(nl - rep) : strlen(rep);
        if (il >= sizeof res->isolation) il = sizeof res->isolation - 1;
        memcpy(res->isolation, rep, il);
        res->isolation[il] = 0;
        const char *status = nl ? nl + 1 : "";
        if (done == 1) {
            int code;
            if (sscanf(status, "K %d", &code) == 1) res->outcome = TL_SBX_SIGNALED, res->status = code;
            else if (sscanf(status, "X %d", &code) == 1)
                res->outcome = code == 0 ? TL_SBX_PASSED : TL_SBX_FAILED, res->status = code;
            else res->outcome = TL_SBX_FAILED, res->status = -1; /* the keeper died */
        }
        FILE *o = fopen(path, "rb");
        if (o) {
            size_t k = fread(res->output, 1, sizeof res->output - 1, o);
            res->output[k] = 0;
            fclose(o);
        }
    }
    if (pipefd[0] >= 0) close(pipefd[0]);
    if (pipefd[1] >= 0) close(pipefd[1]);
    if (dir_fd >= 0) close(dir_fd);
    if (out_fd >= 0) close(out_fd);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

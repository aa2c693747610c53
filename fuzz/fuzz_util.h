/* fuzz_util.h - helpers shared by the libFuzzer targets in fuzz/ (docs/fuzzing.md).
 * Parsers that take a path read the input from a per-process scratch directory
 * in $TMPDIR (or /tmp), created once and removed at exit; a file there is
 * rewritten for every input. */
#ifndef TL_FUZZ_UTIL_H
#define TL_FUZZ_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[512];

static inline void fz_remove_dir(void) {
    /* the targets only write flat files and one level of subdirectories */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);
    if (fz_dir[0] && system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fz_dir);
}

/* The scratch directory of this process. */
static inline const char *fz_scratch(void) {
    if (!fz_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz_dir, sizeof fz_dir, "%s/tl-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_remove_dir);
    }
    return fz_dir;
}

/* dir/name, in a static buffer per call site's argument */
static inline void fz_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", fz_scratch(), name); }

/* Writes data to path (replacing it); aborts on failure, which is the
 * harness's fault, not the library's. */
static inline void fz_write(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w;
        len -= (size_t)w;
    }
    close(fd);
}

/* A NUL-terminated copy (free() it). */
static inline char *fz_cstr(const uint8_t *data, size_t len) {
    char *s = malloc(len + 1);
    if (!s) abort();
    memcpy(s, data, len);
    s[len] = 0;
    return s;
}

/* The library's file checksum (FNV-1a 64), so a target can repair it and let
 * mutations reach the checks behind it. */
static inline uint64_t fz_fnv1a(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FZ_FNV_INIT 0xcbf29ce484222325ULL

static inline uint64_t fz_get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static inline void fz_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* With TL_FUZZ_VERBOSE set, says why the library refused an input (for
 * checking seeds: TL_FUZZ_VERBOSE=1 build-fuzz/T followed by files). */
static inline int fz_refused(const char *msg) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("TL_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "refused: %s\n", msg);
    return 0;
}
static inline void fz_accepted(void) {
    if (getenv("TL_FUZZ_VERBOSE")) fprintf(stderr, "accepted\n");
}

#endif

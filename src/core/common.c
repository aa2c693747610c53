/* common.c - error reporting, aligned allocation, atomic file writes. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int tl_fail(tl_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int tl_wrap(tl_error *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], joined[sizeof prefix + sizeof err->msg + 2];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
        memcpy(err->msg, joined, sizeof err->msg - 1);
        err->msg[sizeof err->msg - 1] = '\0';
    }
    return -1;
}

/* tl_alloc puts blocks from this size on in 2 MiB transparent huge pages where
 * the kernel offers them (THP "madvise" mode waits for the advice): training
 * streams its weights, gradients, moments and activations every step, and in
 * 4 KiB pages every page costs a TLB miss. */
#define HUGE_FROM ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

void *tl_alloc_huge(size_t bytes) {
    if (bytes == 0 || bytes > SIZE_MAX - HUGE_PAGE) return NULL;
    const size_t whole = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *h = aligned_alloc(HUGE_PAGE, whole);
#ifdef MADV_HUGEPAGE
    if (h) (void)madvise(h, whole, MADV_HUGEPAGE); /* advice: refused, the block is still usable */
#endif
    return h;
}

void *tl_alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    /* zeroed after the advice, so that the first touches fault in huge pages */
    void *p = rounded >= HUGE_FROM ? tl_alloc_huge(rounded) : aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void tl_free(void *p) { free(p); }

int tl_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

double tl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int tl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, tl_error *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return tl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return tl_fail(err, "%s: cannot seek: %s", path, strerror(errno));
    }
    long size = ftell(f);
    if (size < 0 || (unsigned long)size > max_bytes) {
        fclose(f);
        return tl_fail(err, "%s: file too large (%ld bytes, limit %zu)", path, size, max_bytes);
    }
    rewind(f);
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        fclose(f);
        return tl_fail(err, "%s: out of memory reading %ld bytes", path, size);
    }
    if (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        fclose(f);
        return tl_fail(err, "%s: read error", path);
    }
    fclose(f);
    buf[size] = '\0';
    *out = buf;
    *len = (size_t)size;
    return 0;
}

int tl_map_file(const char *path, const uint8_t **map, size_t *len, tl_error *err) {
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return tl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tl_fail(err, "%s: not a regular file", path);
    }
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return tl_fail(err, "%s: mmap failed: %s", path, strerror(e));
        }
        *map = m;
        *len = (size_t)sb.st_size;
    }
    close(fd);
    return 0;
}

void tl_unmap_file(const uint8_t *map, size_t len) {
    if (map) munmap((void *)map, len);
}

void tl_release_pages(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + page - 1) & ~(page - 1),
                    e = ((uintptr_t)p + n) & ~(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

int tl_write_file_atomic(const char *path, const void *data, size_t len, tl_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return tl_fail(err, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return tl_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return tl_fail(err, "%s: write failed: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return tl_fail(err, "%s: fsync/close failed: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return tl_fail(err, "%s: rename failed: %s", path, strerror(e));
    }
    return 0;
}

int tl_fsync_dir(const char *dir, tl_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return tl_fail(err, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) return tl_fail(err, "%s: fsync failed: %s", dir, strerror(errno));
    return 0;
}

int tl_mkdir_p(const char *dir, tl_error *err) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", dir) >= sizeof tmp) return tl_fail(err, "%s: path too long", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return tl_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return tl_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    return 0;
}

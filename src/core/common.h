/* common.h - error reporting and small helpers shared by every module.
 *
 * Library functions never print or exit: they return 0 on success and a
 * negative value on failure, filling a tl_error with a message that names the
 * file and the problem.  Only the CLI turns that into output and an exit code. */
#ifndef TL_COMMON_H
#define TL_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char msg[1024];
} tl_error;

/* Formats a message into err (if non-NULL) and returns -1, so callers can write
 * `return tl_fail(err, "%s: bad magic", path);`. */
int tl_fail(tl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (used to add context on the way up). */
int tl_wrap(tl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation helpers: 64-byte aligned, zeroed; NULL on failure (or when n == 0).
 * Blocks of 4 MiB or more are 2 MiB-aligned and advised into transparent huge
 * pages (common.c). */
void *tl_alloc(size_t bytes);
/* 2 MiB-aligned and advised into transparent huge pages, not zeroed (a buffer
 * its owner fills whole before reading); tl_free frees it. */
void *tl_alloc_huge(size_t bytes);
void tl_free(void *p);

/* Overflow-checked size arithmetic: return 0 and set *out, or -1 on overflow. */
int tl_mul_size(size_t a, size_t b, size_t *out);

/* Wall-clock seconds (monotonic). */
double tl_now(void);

/* Reads a whole file into a NUL-terminated buffer (the NUL is not counted in *len).
 * Refuses files larger than max_bytes. */
int tl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, tl_error *err);

/* Maps a regular file read-only.  *map is NULL for an empty file; release with
 * tl_unmap_file(map, len). */
int tl_map_file(const char *path, const uint8_t **map, size_t *len, tl_error *err);
void tl_unmap_file(const uint8_t *map, size_t len);
/* The whole pages inside [p, p + n) leave the resident set: a file map reads
 * them back from the file when touched again, anonymous memory as zeros. */
void tl_release_pages(const void *p, size_t n);

/* Writes a file atomically: data goes to "path.tmp.<pid>", is fsync'ed, then
 * renamed over path, so readers see either the old file or the new one. */
int tl_write_file_atomic(const char *path, const void *data, size_t len, tl_error *err);

/* mkdir -p: creates dir and its missing parents. */
int tl_mkdir_p(const char *dir, tl_error *err);

/* fsync a directory so a rename inside it is durable. */
int tl_fsync_dir(const char *dir, tl_error *err);

#endif

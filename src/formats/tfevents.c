/* tfevents.c - TensorBoard event files (tfevents.h): a few protocol buffer
 * fields written by hand, framed as TFRecords. */
#include "tfevents.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

uint32_t tl_crc32c(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u))); /* reflected Castagnoli */
    }
    return c ^ 0xffffffffu;
}

static uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- protocol buffer pieces: varints, tags, little-endian fixed widths ---- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n <= b->cap) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void varint(buf *b, uint64_t v) {
    uint8_t t[10];
    size_t k = 0;
    do {
        t[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    put(b, t, k);
}
static void le(buf *b, uint64_t v, int bytes) {
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)bytes);
}
static void f64(buf *b, int field, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    varint(b, (uint64_t)field << 3 | 1);
    le(b, u, 8);
}
static void f32(buf *b, int field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    varint(b, (uint64_t)field << 3 | 5);
    le(b, u, 4);
}
static void bytes_field(buf *b, int field, const void *s, size_t n) {
    varint(b, (uint64_t)field << 3 | 2);
    varint(b, n);
    put(b, s, n);
}

/* TFRecord framing of an event's bytes into out. */
static size_t record(uint8_t *out, size_t cap, const uint8_t *ev, size_t n) {
    buf b = {out, 0, cap};
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)n >> (8 * i));
    put(&b, len, 8);
    le(&b, masked(tl_crc32c(len, 8)), 4);
    put(&b, ev, n);
    le(&b, masked(tl_crc32c(ev, n)), 4);
    return b.n;
}

/* Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
 * summary = 5 { value = 1 { tag = 1, simple_value = 2 (float) } }, session_log = 7 { status = 1 };
 * proto3 leaves out a field at its default (step 0), as TensorBoard's writer does. */
size_t tl_tfevents_scalar_record(uint8_t *out, size_t cap, const char *tag, long step, double wall_time, float value) {
    size_t tl = strlen(tag);
    if (tl > 256) return 0;
    uint8_t val[300], sum[310], ev[340];
    buf v = {val, 0, sizeof val}, s = {sum, 0, sizeof sum}, e = {ev, 0, sizeof ev};
    bytes_field(&v, 1, tag, tl);
    f32(&v, 2, value);
    bytes_field(&s, 1, val, v.n);
    f64(&e, 1, wall_time);
    if (step) {
        varint(&e, 2 << 3 | 0);
        varint(&e, (uint64_t)step);
    }
    bytes_field(&e, 5, sum, s.n);
    return record(out, cap, ev, e.n);
}

static int write_all(tl_tfevents *w, const uint8_t *p, size_t n, tl_error *err) {
    while (n) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return tl_fail(err, "%s: write failed: %s", w->path, k < 0 ? strerror(errno) : "no space");
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int tl_tfevents_open(tl_tfevents *w, const char *dir, const char *tag, double wall_time, tl_error *err) {
    w->fd = -1;
    snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%010.0f.%s", dir, wall_time, tag);
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) return tl_fail(err, "%s: cannot create: %s", w->path, strerror(errno));
    uint8_t ev[64], rec[96];
    buf e = {ev, 0, sizeof ev};
    f64(&e, 1, wall_time);
    bytes_field(&e, 3, "brain.Event:2", 13);
    size_t n = record(rec, sizeof rec, ev, e.n);
    if (write_all(w, rec, n, err)) {
        tl_tfevents_close(w);
        return -1;
    }
    return 0;
}

int tl_tfevents_scalar(tl_tfevents *w, const char *tag, long step, double wall_time, float value, tl_error *err) {
    uint8_t rec[400];
    size_t n = tl_tfevents_scalar_record(rec, sizeof rec, tag, step, wall_time, value);
    if (!n || n > sizeof rec) return tl_fail(err, "%s: tag '%s' too long", w->path, tag);
    return write_all(w, rec, n, err);
}

int tl_tfevents_restart(tl_tfevents *w, long step, double wall_time, tl_error *err) {
    uint8_t ev[64], log[8], rec[96];
    buf l = {log, 0, sizeof log}, e = {ev, 0, sizeof ev};
    varint(&l, 1 << 3 | 0);
    varint(&l, 1); /* SessionLog.START */
    f64(&e, 1, wall_time);
    if (step) {
        varint(&e, 2 << 3 | 0);
        varint(&e, (uint64_t)step);
    }
    bytes_field(&e, 7, log, l.n);
    size_t n = record(rec, sizeof rec, ev, e.n);
    return write_all(w, rec, n, err);
}

void tl_tfevents_close(tl_tfevents *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
}

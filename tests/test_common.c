/* test_common.c - error helpers, checked arithmetic, atomic writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "harness.h"
#include "threads.h"

static void test_fail_and_wrap(tl_test_ctx *t) {
    tl_error e;
    CHECK(tl_fail(&e, "%s: bad %d", "f.bin", 3) == -1);
    CHECK(strcmp(e.msg, "f.bin: bad 3") == 0);
    tl_wrap(&e, "loading %s", "model");
    CHECK(strcmp(e.msg, "loading model: f.bin: bad 3") == 0);
    CHECK(tl_fail(NULL, "no crash without an error object") == -1);
}

static void test_mul_size_overflow(tl_test_ctx *t) {
    size_t out;
    CHECK(tl_mul_size(3, 5, &out) == 0 && out == 15);
    CHECK(tl_mul_size(SIZE_MAX / 2, 3, &out) == -1);
}

static void test_atomic_write_and_read(tl_test_ctx *t) {
    char path[512];
    snprintf(path, sizeof path, "%s/atomic.txt", tl_test_tmpdir());
    tl_error e;
    CHECK(tl_write_file_atomic(path, "first", 5, &e) == 0);
    CHECK(tl_write_file_atomic(path, "second!", 7, &e) == 0);
    char *buf;
    size_t len;
    CHECK(tl_read_file(path, 100, &buf, &len, &e) == 0);
    CHECK(len == 7 && memcmp(buf, "second!", 7) == 0);
    free(buf);
    CHECK(tl_read_file(path, 3, &buf, &len, &e) == -1); /* over the size limit */
    CHECK(strstr(e.msg, "too large") != NULL);
    CHECK(tl_read_file("/nonexistent/x", 100, &buf, &len, &e) == -1);
    CHECK(strstr(e.msg, "/nonexistent/x") != NULL);
}

/* The default thread count: the usable cores minus the cores others keep busy. */
static void test_threads_for_load(tl_test_ctx *t) {
    CHECK(tl_threads_for_load(2, 0.0) == 2);
    CHECK(tl_threads_for_load(2, 0.4) == 2);  /* background noise keeps every core */
    CHECK(tl_threads_for_load(2, 1.0) == 1);  /* one busy process on 2 cores */
    CHECK(tl_threads_for_load(2, 2.0) == 1);  /* never fewer than one */
    CHECK(tl_threads_for_load(16, 3.6) == 12);
    CHECK(tl_threads_for_load(0, 0.0) == 1);
    /* 2 CPUs over 100 ticks each: 100 of the 200 ticks busy = one core */
    tl_cpu_sample a = {.busy = 1000, .total = 5000, .cpus = 2}, b = {.busy = 1100, .total = 5200, .cpus = 2};
    CHECK_CLOSE(tl_cpu_busy_cores(&a, &b), 1.0, 1e-12, 0);
    CHECK(tl_cpu_busy_cores(&b, &a) == 0); /* no time passed: nothing known */
    tl_cpu_sample now;
    CHECK(tl_cpu_sample_read(&now) == 0 && now.cpus >= 1 && now.busy <= now.total);
    CHECK(tl_cpus_usable() >= 1);
    int n = tl_threads_default(0.02, NULL);
    CHECK(n >= 1 && n <= tl_cpus_usable());
}

const tl_test tests_common[] = {
    {"common/fail_and_wrap", test_fail_and_wrap},
    {"common/mul_size_overflow", test_mul_size_overflow},
    {"common/atomic_write_and_read", test_atomic_write_and_read},
    {"common/threads_for_load", test_threads_for_load},
    {NULL, NULL},
};

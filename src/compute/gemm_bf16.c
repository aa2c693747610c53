/* gemm_bf16.c - bf16 matrix products with fp32 sums (see gemm.h): oneDNN's
 * matmul primitive where the CPU has bf16 instructions, else the reference.
 *
 * oneDNN has no bf16 GEMM call in its C API (only sgemm and the int8 ones), so
 * every product describes its operands (bf16 A and B, fp32 C, transposes as
 * strides) as a matmul primitive (onednn_matmul.c, shared with the fp32
 * products that run on it), kept for the shape's next use. */
#include "gemm.h"

#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "onednn_matmul.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TL_BF16_X86 1
#endif

bool tl_cpu_has_bf16(const tl_cpu_info *cpu) { return cpu->avx512_bf16 || cpu->amx_bf16; }

tl_gemm_bf16_backend tl_gemm_bf16_choose(const tl_cpu_info *cpu) {
    return tl_cpu_has_bf16(cpu) ? TL_GEMM_BF16_ONEDNN : TL_GEMM_BF16_REF;
}

const char *tl_gemm_bf16_name(tl_gemm_bf16_backend b) { return b == TL_GEMM_BF16_ONEDNN ? "onednn" : "ref"; }

static pthread_once_t once = PTHREAD_ONCE_INIT;
static tl_gemm_bf16_backend active;
static bool vec_round; /* AVX512-BF16 conversions */
static bool vec_transpose, vec_transpose512; /* AVX2 shuffles, AVX-512 stores */
static char bad_env[64]; /* an unrecognised TL_GEMM_BF16 */

static void init_once(void) {
    tl_cpu_info cpu;
    tl_cpu_detect(&cpu);
    active = tl_gemm_bf16_choose(&cpu);
    vec_round = cpu.avx512_bf16;
    vec_transpose = cpu.avx2;
    vec_transpose512 = cpu.avx2 && cpu.avx512f;
    const char *env = getenv("TL_GEMM_BF16");
    if (env && !strcmp(env, "ref"))
        active = TL_GEMM_BF16_REF;
    else if (env && !strcmp(env, "onednn"))
        active = TL_GEMM_BF16_ONEDNN;
    else if (env && *env)
        snprintf(bad_env, sizeof bad_env, "%s", env);
}

int tl_gemm_bf16_init(tl_error *err) {
    pthread_once(&once, init_once);
    if (bad_env[0]) return tl_fail(err, "TL_GEMM_BF16: unknown bf16 GEMM backend '%s' (expected ref or onednn)", bad_env);
    return 0;
}

tl_gemm_bf16_backend tl_gemm_bf16_active(void) {
    pthread_once(&once, init_once);
    return active;
}

/* ------------------------------------------------------- the dot-product rate */

#ifdef TL_BF16_X86
/* one instruction into each of zmm0-zmm11 from zmm12 and zmm13 (zeros: no
 * subnormal or infinity slow path), n times over; seconds */
#define RATE_ONE(op, r) op " %%zmm12, %%zmm13, %%zmm" #r "\n"
#define RATE_TWELVE(op)                                                                                             \
    RATE_ONE(op, 0) RATE_ONE(op, 1) RATE_ONE(op, 2) RATE_ONE(op, 3) RATE_ONE(op, 4) RATE_ONE(op, 5) RATE_ONE(op, 6) \
        RATE_ONE(op, 7) RATE_ONE(op, 8) RATE_ONE(op, 9) RATE_ONE(op, 10) RATE_ONE(op, 11)
#define RATE_LOOP(op)                                                                                               \
    __asm__ volatile("vpxord %%zmm12, %%zmm12, %%zmm12\n vpxord %%zmm13, %%zmm13, %%zmm13\n mov %0, %%rcx\n"       \
                     "1:\n" RATE_TWELVE(op) "dec %%rcx\n jnz 1b\n"                                                  \
                     :                                                                                              \
                     : "r"(n)                                                                                       \
                     : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",        \
                       "xmm10", "xmm11", "xmm12", "xmm13")

static double rate_seconds(bool bf16, long n) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (bf16)
        RATE_LOOP("vdpbf16ps");
    else
        RATE_LOOP("vfmadd231ps");
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
}
#endif

double tl_bf16_dot_rate(void) {
#ifdef TL_BF16_X86
    tl_cpu_info cpu;
    tl_cpu_detect(&cpu);
    if (!cpu.avx512_bf16 || !cpu.avx512f) return 0.0;
    const long n = 100000; /* 1.2 M instructions each: ~0.6 ms of vdpbf16ps at the slower rate */
    double dp = 1e30, fma = 1e30;
    for (int r = 0; r < 3; r++) { /* interleaved: a busy neighbour slows both alike */
        const double x = rate_seconds(true, n), y = rate_seconds(false, n);
        dp = x < dp ? x : dp;
        fma = y < fma ? y : fma;
    }
    return dp > 0.0 ? 2.0 * fma / dp : 0.0; /* a vdpbf16ps is twice an FMA's arithmetic */
#else
    return 0.0;
#endif
}

/* ------------------------------------------------------------------ rounding */

static uint16_t round1(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* zero or subnormal: signed zero */
    return tl_f32_to_bf16(f);
}

#ifdef TL_BF16_X86
__attribute__((target("avx512f,avx512bf16"))) static void round_vec(const float *x, size_t n, uint16_t *out) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = round1(x[i]);
}
#endif

static void round_run(const float *x, size_t n, uint16_t *out) {
#ifdef TL_BF16_X86
    if (vec_round) {
        round_vec(x, n, out);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = round1(x[i]);
}

void tl_round_bf16_here(const float *x, size_t n, uint16_t *out) {
    pthread_once(&once, init_once);
    round_run(x, n, out);
}

void tl_round_bf16(const float *x, size_t n, uint16_t *out) {
    pthread_once(&once, init_once);
    /* chunks of a fixed size: the split never changes a value, only who writes it */
    const size_t chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
    if (nc <= 1 || omp_in_parallel()) { /* no region (a nested one costs a team's set-up) */
        round_run(x, n, out);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nc; c++) {
        const size_t lo = c * chunk, len = n - lo < chunk ? n - lo : chunk;
        round_run(x + lo, len, out + lo);
    }
}

/* -------------------------------------------------------------- transposing */

#ifdef TL_BF16_X86
/* One 16 x 16 tile into o[16], the tile's columns: 16-bit, 32-bit and 64-bit
 * interleaves within the 128-bit lanes, then the lanes' halves swapped. */
__attribute__((target("avx2"))) static inline void tile16(const uint16_t *s, size_t ls, __m256i o[16]) {
    __m256i r[16], a[16], b[16], c[16];
    for (int i = 0; i < 16; i++) r[i] = _mm256_loadu_si256((const __m256i *)(s + i * ls));
    for (int k = 0; k < 8; k++) { /* rows 2k, 2k+1 interleaved: columns 0-3 and 4-7 of each lane */
        a[2 * k] = _mm256_unpacklo_epi16(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm256_unpackhi_epi16(r[2 * k], r[2 * k + 1]);
    }
    for (int g = 0; g < 4; g++) { /* rows 4g..4g+3: column pairs {0,1}, {2,3}, {4,5}, {6,7} of each lane */
        b[4 * g] = _mm256_unpacklo_epi32(a[4 * g], a[4 * g + 2]);
        b[4 * g + 1] = _mm256_unpackhi_epi32(a[4 * g], a[4 * g + 2]);
        b[4 * g + 2] = _mm256_unpacklo_epi32(a[4 * g + 1], a[4 * g + 3]);
        b[4 * g + 3] = _mm256_unpackhi_epi32(a[4 * g + 1], a[4 * g + 3]);
    }
    for (int h = 0; h < 2; h++) /* rows 8h..8h+7: c[8h + m] holds column m (low lane) and m + 8 (high) */
        for (int j = 0; j < 4; j++) {
            c[8 * h + 2 * j] = _mm256_unpacklo_epi64(b[8 * h + j], b[8 * h + 4 + j]);
            c[8 * h + 2 * j + 1] = _mm256_unpackhi_epi64(b[8 * h + j], b[8 * h + 4 + j]);
        }
    for (int m = 0; m < 8; m++) {
        o[m] = _mm256_permute2x128_si256(c[m], c[8 + m], 0x20);
        o[m + 8] = _mm256_permute2x128_si256(c[m], c[8 + m], 0x31);
    }
}

__attribute__((target("avx2"))) static void transpose_avx2(const uint16_t *src, size_t lds, int rows, int cols,
                                                          uint16_t *dst, size_t ldd) {
    __m256i o[16];
    for (int c = 0; c < cols; c += 16) /* a strip of columns at a time: dst's lines filled in turn */
        for (int r = 0; r < rows; r += 16) {
            tile16(src + (size_t)r * lds + c, lds, o);
            for (int m = 0; m < 16; m++) _mm256_storeu_si256((__m256i *)(dst + (size_t)(c + m) * ldd + r), o[m]);
        }
}

/* 32 rows at a time: each column of the block is one 64-byte store, written
 * around the caches when dst's lines are aligned (the copy is read by a product
 * only after the producer's whole pass, by then evicted anyway). */
__attribute__((target("avx2,avx512f"))) static void transpose_avx512(const uint16_t *src, size_t lds, int rows,
                                                                   int cols, uint16_t *dst, size_t ldd) {
    const bool stream = ((uintptr_t)dst & 63) == 0 && (ldd & 31) == 0;
    __m256i lo[16], hi[16];
    for (int c = 0; c < cols; c += 16)
        for (int r = 0; r < rows; r += 32) {
            tile16(src + (size_t)r * lds + c, lds, lo);
            tile16(src + (size_t)(r + 16) * lds + c, lds, hi);
            for (int m = 0; m < 16; m++) {
                const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo[m]), hi[m], 1);
                uint16_t *d = dst + (size_t)(c + m) * ldd + r;
                if (stream)
                    _mm512_stream_si512((void *)d, v);
                else
                    _mm512_storeu_si512(d, v);
            }
        }
    _mm_sfence(); /* the streamed lines visible before anyone reads them */
}
#endif

static void transpose_c(const uint16_t *src, size_t lds, int r0, int r1, int c0, int c1, uint16_t *dst, size_t ldd) {
    for (int c = c0; c < c1; c++)
        for (int r = r0; r < r1; r++) dst[(size_t)c * ldd + r] = src[(size_t)r * lds + c];
}

void tl_transpose_bf16(const uint16_t *src, size_t lds, int rows, int cols, uint16_t *dst, size_t ldd) {
    pthread_once(&once, init_once);
    int r0 = 0; /* the rows left to the scalar loop */
#ifdef TL_BF16_X86
    int ct = cols & ~15;
    if (vec_transpose512 && rows >= 32) {
        r0 = rows & ~31;
        transpose_avx512(src, lds, r0, ct, dst, ldd);
    }
    if (vec_transpose && rows - r0 >= 16) {
        const int rt = r0 + ((rows - r0) & ~15);
        transpose_avx2(src + (size_t)r0 * lds, lds, rt - r0, ct, dst + r0, ldd);
        r0 = rt;
    }
    transpose_c(src, lds, 0, r0, ct, cols, dst, ldd); /* the tiles' rows, the columns past them */
#endif
    transpose_c(src, lds, r0, rows, 0, cols, dst, ldd);
}

/* ----------------------------------------------------------------- reference */

/* A [rows, cols] bf16 block (row stride ld) widened into a packed fp32 one. */
static float *widen(const uint16_t *s, int rows, int cols, int ld) {
    float *d = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    if (!d) return NULL;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) d[(size_t)r * cols + c] = tl_bf16_to_f32(s[(size_t)r * ld + c]);
    return d;
}

static void gemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    float *a = widen(A, ar, ac, lda), *b = widen(B, br, bc, ldb);
    if (a && b) {
        /* products of bf16 values are exact in fp32: only the order of the sums can differ from hardware */
        tl_sgemm(ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
    } else { /* out of memory: the same sums, one at a time */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = 0;
                for (int k = 0; k < K; k++)
                    s += tl_bf16_to_f32(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                         tl_bf16_to_f32(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                float *c = C + (size_t)i * ldc + j;
                *c = alpha * s + (beta == 0.0f ? 0.0f : beta * *c);
            }
    }
    free(a);
    free(b);
}

/* ------------------------------------------------------------------- oneDNN */

static int gemm_onednn(int batch, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                       size_t sa, const uint16_t *B, int ldb, size_t sb, float beta, float *C, int ldc, size_t sc) {
    const tl_matmul_shape s = {.bf16 = true, .ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                               .ldc = ldc, .batch = batch, .sa = sa, .sb = sb, .sc = sc, .alpha = alpha, .beta = beta};
    return tl_onednn_matmul(&s, A, B, C);
}

void tl_gemm_bf16_on(tl_gemm_bf16_backend b, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A,
                     int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    pthread_once(&once, init_once);
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    /* oneDNN refusing the arguments leaves C untouched: the reference then */
    if (b == TL_GEMM_BF16_ONEDNN && !gemm_onednn(1, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0))
        return;
    gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc) {
    tl_gemm_bf16_on(tl_gemm_bf16_active(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_gemm_bf16_batch_on(tl_gemm_bf16_backend b, int batch, bool ta, bool tb, int M, int N, int K, float alpha,
                           const uint16_t *A, int lda, size_t sa, const uint16_t *B, int ldb, size_t sb, float beta,
                           float *C, int ldc, size_t sc) {
    pthread_once(&once, init_once);
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (batch > 1 && K > 0 && b == TL_GEMM_BF16_ONEDNN &&
        !gemm_onednn(batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc))
        return;
    for (int i = 0; i < batch; i++)
        tl_gemm_bf16_on(b, ta, tb, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

void tl_gemm_bf16_batch(int batch, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                        size_t sa, const uint16_t *B, int ldb, size_t sb, float beta, float *C, int ldc, size_t sc) {
    tl_gemm_bf16_batch_on(tl_gemm_bf16_active(), batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc,
                          sc);
}

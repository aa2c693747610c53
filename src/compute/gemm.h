/* gemm.h - the fp32 matrix products (C = alpha op(A) op(B) + beta C, row-major)
 * behind training, attention, the prompt pass and evaluation, and the choice of
 * the library that computes them, made once per process from the CPU's
 * instruction-set flags (cpuid), never from a table of CPU models.
 *
 * Backends: OpenBLAS (with its kernel family forced from the flags when its own
 * detection does not know the CPU) and oneDNN (dnnl_sgemm, which dispatches by
 * ISA itself).  TL_GEMM=openblas|onednn in the environment overrides the choice.
 * Measurements behind the defaults: docs/dependencies.md, docs/benchmarks.md. */
#ifndef TL_GEMM_H
#define TL_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* What cpuid says, with the OS-enabled register state (XCR0) folded in: a flag
 * is true only when its instructions can run in this process. */
typedef struct {
    char vendor[13];
    char model[49]; /* the brand string, spaces trimmed */
    int family, model_id, stepping;
    bool sse3, avx, fma, f16c, avx2;
    bool avx512f, avx512dq, avx512bw, avx512vl, avx512_vnni, avx512_bf16, avx512_fp16;
    bool amx_tile, amx_bf16, amx_int8;
} tl_cpu_info;

void tl_cpu_detect(tl_cpu_info *cpu);

typedef enum { TL_GEMM_OPENBLAS = 0, TL_GEMM_ONEDNN, TL_GEMM_NBACKENDS } tl_gemm_backend;

typedef struct {
    tl_gemm_backend backend;
    /* OPENBLAS_CORETYPE to force on OpenBLAS (its DYNAMIC_ARCH kernel family,
     * from the flags), or NULL to leave its own detection alone */
    const char *openblas_core;
    char openblas_detected[32]; /* the family OpenBLAS picked by itself */
    char why[200];
} tl_gemm_choice;

/* The default for a CPU with these flags, given the kernel family OpenBLAS
 * picked by itself (pure: no side effects), then an override by name (NULL or
 * "" = none, else "openblas" or "onednn"; anything else fails naming the value). */
int tl_gemm_choose(const tl_cpu_info *cpu, const char *openblas_detected, const char *override, tl_gemm_choice *out,
                   tl_error *err);

const char *tl_gemm_backend_name(tl_gemm_backend b);

/* The process's choice: made on first use from tl_cpu_detect and TL_GEMM, with
 * OpenBLAS's core type forced then (unless OPENBLAS_CORETYPE is already set, which
 * wins).  tl_gemm_init reports a bad TL_GEMM; without it a bad value falls back
 * to the default with the reason in why. */
int tl_gemm_init(tl_error *err);
const tl_gemm_choice *tl_gemm_active(void);

/* The name of the kernel family OpenBLAS runs ("SkylakeX", "Prescott", ...). */
const char *tl_gemm_openblas_corename(void);

/* Switches OpenBLAS to the kernel family core (an OPENBLAS_CORETYPE name; NULL:
 * its own detection again) and leaves the environment as it was; -1, with the
 * family it ran before kept, for a name this build lacks.  Call while no
 * product runs (tl_gemm_init does, once). */
int tl_gemm_openblas_force(const char *core);

/* C[M,N] = alpha op(A) op(B) + beta C: op(A) is [M,K] (A stored [K,M] when ta),
 * op(B) is [K,N] (B stored [N,K] when tb); lda/ldb/ldc are row strides.  beta 0
 * ignores C's old contents.  Safe to call inside an OpenMP parallel region (it
 * then runs on the calling thread). */
void tl_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);

/* The same on a named backend (tests, benchmarks). */
void tl_sgemm_on(tl_gemm_backend b, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);

/* tl_sgemm with oneDNN's matmul primitive at every shape where the backend is
 * oneDNN, not only where tl_sgemm_matmul_wins: the prompt pass's products,
 * which it ran 1.2-1.4x faster than dnnl_sgemm at 512 x 2048 x 2048 and 512 x
 * 5632 x 2048 on 2 threads (AMD EPYC family 26, docs/inference.md; level on 1
 * thread).  Training keeps tl_sgemm's choice, whose bits its resume tests pin. */
void tl_sgemm_prefer_matmul(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc);

/* The same product by oneDNN's matmul primitive (what the oneDNN backend runs
 * where tl_sgemm_matmul_wins says so: the output layer's wide products, and
 * forward products of few rows or few outputs); -1,
 * with C untouched, if oneDNN refuses the arguments.  Not inside an OpenMP
 * parallel region.  Results do not depend on the thread count (tested). */
int tl_sgemm_matmul(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);
bool tl_sgemm_matmul_wins(bool ta, bool tb, int M, int N, int K);

/* ---- bf16 products (mixed precision training: gemm_bf16.c) ----
 * C = alpha op(A) op(B) + beta C as tl_sgemm, with A and B bf16 (bit patterns)
 * and C and every sum fp32.  Backends, chosen from the flags: oneDNN's bf16
 * matmul (it dispatches AVX512-BF16 or AMX-BF16 by ISA itself) where the CPU has
 * bf16 instructions; elsewhere the reference, the inputs widened to fp32 (exactly)
 * and multiplied by tl_sgemm: the same arithmetic, emulated, with no speed-up.
 * TL_GEMM_BF16=ref|onednn in the environment overrides the choice. */
typedef enum { TL_GEMM_BF16_REF = 0, TL_GEMM_BF16_ONEDNN } tl_gemm_bf16_backend;

/* The default for these flags (pure); true when they include bf16 instructions. */
tl_gemm_bf16_backend tl_gemm_bf16_choose(const tl_cpu_info *cpu);
bool tl_cpu_has_bf16(const tl_cpu_info *cpu);
const char *tl_gemm_bf16_name(tl_gemm_bf16_backend b);

/* The process's choice (first use: tl_cpu_detect, then TL_GEMM_BF16; an unknown
 * value keeps the default, and tl_gemm_bf16_init reports it). */
int tl_gemm_bf16_init(tl_error *err);
tl_gemm_bf16_backend tl_gemm_bf16_active(void);

/* The arithmetic rate of this core's AVX512-BF16 dot products (vdpbf16ps: two
 * bf16 products per fp32 lane) over that of its fp32 FMAs, measured now on the
 * calling thread (~3 ms: 512-bit, 12 independent sums each, best of three);
 * 0 where the CPU has no AVX512-BF16.  The flags do not tell it: a core may
 * issue vdpbf16ps at a quarter of its FMA rate (0.5x: the Xeon of
 * docs/benchmarks.md), and there bf16 products without AMX cannot beat fp32
 * ones. */
double tl_bf16_dot_rate(void);
/* Below this rate a bf16 step without AMX is likely slower than an fp32 one:
 * its rounding and copies need products well above the fp32 rate to pay
 * (docs/training.md). */
#define TL_BF16_DOT_RATE_PAYS 1.2

/* Rounds x[n] to bf16, to nearest even, with subnormal inputs and results
 * flushed to zero (as the AVX512-BF16 conversion does, so that the vector and
 * scalar paths agree bit for bit); NaN stays NaN.  Threads split the elements. */
void tl_round_bf16(const float *x, size_t n, uint16_t *out);
/* The same on the calling thread only: for short rows inside a parallel loop. */
void tl_round_bf16_here(const float *x, size_t n, uint16_t *out);

/* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: a bf16 block
 * transposed on the calling thread (16 x 16 tiles through AVX2 registers where
 * the CPU has them), for producers that also write their output token-minor. */
void tl_transpose_bf16(const uint16_t *src, size_t lds, int rows, int cols, uint16_t *dst, size_t ldd);

/* The product on the active backend, or on a named one (tests, benchmarks).
 * Call from one thread at a time, outside parallel regions (the products use
 * all threads). */
void tl_gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc);
void tl_gemm_bf16_on(tl_gemm_bf16_backend b, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A,
                     int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);

/* batch products at once, operand i of each at A + i sa, B + i sb, C + i sc
 * (elements): one oneDNN call for the batch (attention's heads), or the products
 * one by one; each product is tl_gemm_bf16_on's (the order of its sums is
 * the library's). */
void tl_gemm_bf16_batch(int batch, bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                        size_t sa, const uint16_t *B, int ldb, size_t sb, float beta, float *C, int ldc, size_t sc);
void tl_gemm_bf16_batch_on(tl_gemm_bf16_backend b, int batch, bool ta, bool tb, int M, int N, int K, float alpha,
                           const uint16_t *A, int lda, size_t sa, const uint16_t *B, int ldb, size_t sb, float beta,
                           float *C, int ldc, size_t sc);

#endif

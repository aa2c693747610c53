/* gemm.c - fp32 matrix products through the library the CPU's flags pick
 * (see gemm.h).  The choice is the one piece of process-wide state here: like
 * OpenBLAS's own kernel table it is a property of the process and the CPU, set
 * once (pthread_once) and read-only afterwards. */
#include "gemm.h"

#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "onednn_matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TL_X86 1
#endif

/* OpenBLAS entry points outside cblas.h (exported by every DYNAMIC_ARCH build;
 * the re-initialisation pair is how OPENBLAS_CORETYPE is read once loaded). */
char *openblas_get_corename(void);
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);

#ifdef TL_X86
static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

void tl_cpu_detect(tl_cpu_info *cpu) {
    memset(cpu, 0, sizeof *cpu);
#ifdef TL_X86
    unsigned a = 0, b = 0, c = 0, d = 0, max = 0;
    if (!__get_cpuid(0, &max, &b, &c, &d)) return;
    memcpy(cpu->vendor, &b, 4);
    memcpy(cpu->vendor + 4, &d, 4);
    memcpy(cpu->vendor + 8, &c, 4);
    __get_cpuid(1, &a, &b, &c, &d);
    const unsigned fam = (a >> 8) & 15, mod = (a >> 4) & 15;
    cpu->family = (int)(fam == 15 ? fam + ((a >> 20) & 255) : fam);
    cpu->model_id = (int)(fam == 6 || fam == 15 ? mod | (((a >> 16) & 15) << 4) : mod);
    cpu->stepping = (int)(a & 15);
    cpu->sse3 = c & 1;
    /* AVX needs the OS to save the YMM state (OSXSAVE, then XCR0 bits 1-2),
     * AVX-512 the opmask and ZMM state (bits 5-7), AMX the tile state (17-18) */
    const bool osxsave = (c >> 27) & 1;
    const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    const bool os_avx = (xcr0 & 6) == 6, os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0,
               os_amx = (xcr0 & 0x60000) == 0x60000;
    cpu->avx = os_avx && ((c >> 28) & 1);
    cpu->fma = cpu->avx && ((c >> 12) & 1);
    cpu->f16c = cpu->avx && ((c >> 29) & 1);
    if (max >= 7) {
        __get_cpuid_count(7, 0, &a, &b, &c, &d);
        cpu->avx2 = cpu->avx && ((b >> 5) & 1);
        cpu->avx512f = os_avx512 && ((b >> 16) & 1);
        cpu->avx512dq = cpu->avx512f && ((b >> 17) & 1);
        cpu->avx512bw = cpu->avx512f && ((b >> 30) & 1);
        cpu->avx512vl = cpu->avx512f && ((b >> 31) & 1);
        cpu->avx512_vnni = cpu->avx512f && ((c >> 11) & 1);
        cpu->avx512_fp16 = cpu->avx512f && ((d >> 23) & 1);
        cpu->amx_bf16 = os_amx && ((d >> 22) & 1);
        cpu->amx_tile = os_amx && ((d >> 24) & 1);
        cpu->amx_int8 = os_amx && ((d >> 25) & 1);
        const unsigned sub = a;
        if (sub >= 1) {
            __get_cpuid_count(7, 1, &a, &b, &c, &d);
            cpu->avx512_bf16 = cpu->avx512f && ((a >> 5) & 1);
        }
    }
    unsigned ext = 0;
    __get_cpuid(0x80000000, &ext, &b, &c, &d);
    if (ext >= 0x80000004) {
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        char s[49];
        memcpy(s, r, 48);
        s[48] = 0;
        const char *p = s;
        while (*p == ' ') p++;
        snprintf(cpu->model, sizeof cpu->model, "%s", p);
        for (size_t n = strlen(cpu->model); n && cpu->model[n - 1] == ' ';) cpu->model[--n] = 0;
    }
#endif
}

const char *tl_gemm_backend_name(tl_gemm_backend b) {
    return b == TL_GEMM_ONEDNN ? "onednn" : b == TL_GEMM_OPENBLAS ? "openblas" : "?";
}

/* The instruction-set level a set of flags allows, and the OpenBLAS kernel
 * family written for each level (names OpenBLAS's DYNAMIC_ARCH builds accept in
 * OPENBLAS_CORETYPE; these are kernel families, not CPU models). */
static int flag_level(const tl_cpu_info *c) {
    if (c->avx512f && c->avx512dq && c->avx512bw && c->avx512vl) return 3;
    if (c->avx2 && c->fma) return 2;
    return c->avx ? 1 : 0;
}

static const char *const level_core[] = {NULL, "Sandybridge", "Haswell", "SkylakeX"};

static int core_level(const char *core) {
    static const char *const l3[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL},
                             *const l2[] = {"Haswell", "Zen", "Excavator", NULL},
                             *const l1[] = {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller", NULL};
    const char *const *lv[] = {l1, l2, l3};
    for (int i = 2; i >= 0; i--)
        for (const char *const *p = lv[i]; *p; p++)
            if (core && !strcasecmp(core, *p)) return i + 1;
    return 0;
}

int tl_gemm_choose(const tl_cpu_info *cpu, const char *openblas_detected, const char *override, tl_gemm_choice *out,
                   tl_error *err) {
    memset(out, 0, sizeof *out);
    const int lv = flag_level(cpu);
    /* OpenBLAS keeps its own pick when it reached the flags' level (it tunes by
     * model), and gets the level's kernel family when it fell below it */
    out->openblas_core = core_level(openblas_detected) < lv ? level_core[lv] : NULL;
    snprintf(out->openblas_detected, sizeof out->openblas_detected, "%s", openblas_detected ? openblas_detected : "?");
    /* Default (measured, docs/dependencies.md): with AVX-512 oneDNN's sgemm is
     * at or near the best at every TinyLlama shape and well ahead on attention's
     * small products; below it OpenBLAS matched oneDNN on the large products and
     * beat it on attention's, and stays as it was (same results as before) */
    if (lv == 3) {
        out->backend = TL_GEMM_ONEDNN;
        snprintf(out->why, sizeof out->why,
                 "AVX-512 F/DQ/BW/VL: oneDNN measured at or near the best at TinyLlama's shapes");
    } else {
        out->backend = TL_GEMM_OPENBLAS;
        snprintf(out->why, sizeof out->why, "%s: OpenBLAS's %s kernels, measured level with oneDNN",
                 lv == 2 ? "AVX2+FMA, no AVX-512" : lv == 1 ? "AVX, no AVX2" : "no AVX",
                 out->openblas_core ? out->openblas_core : "self-chosen");
    }
    if (override && *override) {
        tl_gemm_backend b;
        if (!strcmp(override, "openblas"))
            b = TL_GEMM_OPENBLAS;
        else if (!strcmp(override, "onednn"))
            b = TL_GEMM_ONEDNN;
        else
            return tl_fail(err, "TL_GEMM: unknown GEMM backend '%s' (expected openblas or onednn)", override);
        out->backend = b;
        snprintf(out->why, sizeof out->why, "TL_GEMM=%s", override);
    }
    return 0;
}

const char *tl_gemm_openblas_corename(void) {
    const char *s = openblas_get_corename();
    return s ? s : "?";
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static tl_gemm_choice active;
static tl_error init_err;
static int init_rc;

/* OpenBLAS reads OPENBLAS_CORETYPE when it loads, and 0.3.21 has no call to
 * set it afterwards; re-running its dynamic initialisation with the variable
 * set switches the kernel table (the environment is restored after). */
static void openblas_reinit(const char *core) {
    if (core)
        setenv("OPENBLAS_CORETYPE", core, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
}

int tl_gemm_openblas_force(const char *core) {
    const char *env = getenv("OPENBLAS_CORETYPE");
    char old[64], was[64];
    snprintf(old, sizeof old, "%s", env ? env : "");
    snprintf(was, sizeof was, "%s", tl_gemm_openblas_corename());
    openblas_reinit(core);
    const int bad = core && strcasecmp(tl_gemm_openblas_corename(), core);
    /* an unknown name leaves OpenBLAS on Prescott: back to the family it ran */
    if (bad) openblas_reinit(was);
    if (env)
        setenv("OPENBLAS_CORETYPE", old, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    return bad ? -1 : 0;
}

static void init_once(void) {
    tl_cpu_info cpu;
    tl_cpu_detect(&cpu);
    const char *env = getenv("TL_GEMM");
    const char *core = tl_gemm_openblas_corename();
    init_rc = tl_gemm_choose(&cpu, core, env, &active, &init_err);
    if (init_rc) {
        tl_gemm_choose(&cpu, core, NULL, &active, NULL);
        snprintf(active.why, sizeof active.why, "TL_GEMM='%.60s' not recognised: default", env);
    }
    /* a core type set by the user (or the machine's environment) wins */
    if (getenv("OPENBLAS_CORETYPE")) active.openblas_core = NULL;
    if (active.openblas_core && tl_gemm_openblas_force(active.openblas_core)) active.openblas_core = NULL;
}

int tl_gemm_init(tl_error *err) {
    pthread_once(&once, init_once);
    if (init_rc && err) *err = init_err;
    return init_rc;
}

const tl_gemm_choice *tl_gemm_active(void) {
    pthread_once(&once, init_once);
    return &active;
}

/* ------------------------------------------- oneDNN's matmul primitive */

/* dnnl_sgemm is oneDNN's older GEMM; its matmul primitive (the brgemm kernels)
 * was measured 15-20% faster on the output layer's products, a chunk of rows
 * against the whole vocabulary (NT with N = vocab, TN with M = vocab), and on
 * the forward products (NT) of few rows or few outputs with K >= 512, where
 * dnnl_sgemm leaves one of two threads short of work; level or slower on the
 * other blocks' products (docs/dependencies.md, docs/benchmarks.md). */
int tl_sgemm_matmul(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    const tl_matmul_shape s = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                               .batch = 1, .alpha = alpha, .beta = beta};
    return tl_onednn_matmul(&s, A, B, C);
}

bool tl_sgemm_matmul_wins(bool ta, bool tb, int M, int N, int K) {
    /* the output layer's weight gradient (TN, M = vocabulary); input gradients
     * (NN) and the blocks' weight gradients stay on sgemm, measured faster */
    if (ta || !tb) return ta && !tb && M >= 8192;
    /* NT: the output layer's forward (N = vocabulary), and x W^T with K >= 512
     * of up to 512 rows or up to 2^20 outputs in all: 1.0-1.5x at 256-2048
     * rows and 1.5-6x at 16-192 on 2 threads, 0.95-1.9x on 1 (AMD EPYC family
     * 26); at K = 288, and from 1.5M outputs at 1024+ rows, level or behind */
    return N >= 8192 || (K >= 512 && (M <= 512 || (long long)M * N <= 1 << 20));
}

/* tl_sgemm_on, with the matmul primitive tried first where matmul is set */
static void sgemm_route(tl_gemm_backend b, bool matmul, bool ta, bool tb, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        /* an empty sum: C = beta C (oneDNN would leave C as it was) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    if (b == TL_GEMM_ONEDNN) {
        /* the primitive runs its own parallel region: not inside another one
         * (attention's per-head products), where sgemm runs on the caller */
        if (matmul && !omp_in_parallel() && !tl_sgemm_matmul(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
            return;
        /* row-major, like cblas */
        if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) ==
            dnnl_success)
            return;
        /* oneDNN refused the arguments (it checks strides more strictly): OpenBLAS */
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
}

void tl_sgemm_on(tl_gemm_backend b, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm_route(b, tl_sgemm_matmul_wins(ta, tb, M, N, K), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    tl_sgemm_on(tl_gemm_active()->backend, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tl_sgemm_prefer_matmul(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm_route(tl_gemm_active()->backend, true, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

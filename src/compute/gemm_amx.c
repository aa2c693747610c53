/* gemm_amx.c - y = x W^T for BF16 weights on AMX tiles (see gemm_amx.h).
 *
 * A tile multiply TDPBF16PS C[16][16] += A[16][32] B[16][16][2] takes its left
 * operand as 16 rows of 32 bf16 (plain row-major) and its right one in the
 * "pair" layout, k-pairs down and columns across.  The weights are already
 * row-major [out, in], so they are the left operand and load straight from the
 * mapped file; the activations, produced fresh for every product anyway, are
 * rounded and packed into the pair layout once (shared by all threads), and the
 * result C = W x^T comes out transposed, which is fixed per 16x16 tile on the
 * way to y.  Each thread owns 32-row blocks of W (2 tiles) and runs them against
 * 32 tokens at a time (2 tiles): 4 accumulator tiles, 8 tiles in all.
 *
 * Pack layout for x[n, cols], K32 = cols rounded down to 32, P = K32/2 pairs:
 *   main: uint32 [NB][P][16], NB = 2*ceil(n/32) blocks of 16 tokens (zero
 *         padded), dword = bf16(x[t][2p]) | bf16(x[t][2p+1]) << 16;
 *   tail: uint16 [n][cols - K32], the columns past K32 (scalar path).
 *
 * Split activations (parts = 3, the exact `amx-exact` kernel): x = hi + mid +
 * lo, each part the bf16 rounding of what the previous ones left, so the three
 * hold x's 24 significant bits; bf16 weights times each part are exact in fp32,
 * and the tiles sum all three into the same fp32 accumulators.  The packs of
 * the parts follow each other, tl_amx_pack_bytes(n, cols) bytes apart.
 *
 * Also here: the MLP's gate and up products fused with the SwiGLU, writing the
 * down projection's packed input directly (tl_amx_swiglu), and C = A B^T for
 * operands already in tile form (the attention products, tl_amx_matmul_bt). */
#include "gemm_amx.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"
#include "vec.h"

#if defined(__x86_64__) && defined(__linux__)
#define TL_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    size_t main_bytes;
    int K32, P, rem, NB;
} pack_geom;

static pack_geom geom(int n, int cols) {
    pack_geom g;
    g.K32 = cols & ~31;
    g.P = g.K32 / 2;
    g.rem = cols - g.K32;
    g.NB = 2 * ((n + 31) / 32);
    g.main_bytes = (size_t)g.NB * (size_t)g.P * 64;
    return g;
}

size_t tl_amx_pack_bytes(int n, int cols) {
    pack_geom g = geom(n, cols);
    return (g.main_bytes + (size_t)n * (size_t)g.rem * 2 + 127) & ~(size_t)63;
}

/* x as packed: the bf16 value of x[t][k] (the scalar paths). */
static uint16_t packed_x(const uint8_t *pack, const pack_geom *g, int t, int k) {
    if (k >= g->K32) {
        uint16_t v;
        memcpy(&v, pack + g->main_bytes + 2 * ((size_t)t * (size_t)g->rem + (size_t)(k - g->K32)), 2);
        return v;
    }
    uint32_t d;
    memcpy(&d, pack + (((size_t)(t / 16) * (size_t)g->P + (size_t)(k / 2)) * 16 + (size_t)(t % 16)) * 4, 4);
    return (uint16_t)(k & 1 ? d >> 16 : d & 0xffff);
}

/* sum over k in [k0, cols) of W[r][k] * x[t][k] (W row stride ldw elements),
 * x as packed: the sum of its parts (pstride bytes apart) */
static float dot_scalar(const uint8_t *W, size_t ldw, int cols, const uint8_t *pack, const pack_geom *g, int parts,
                        size_t pstride, int r, int t, int k0) {
    float s = 0;
    for (int k = k0; k < cols; k++) {
        uint16_t w;
        memcpy(&w, W + 2 * ((size_t)r * ldw + (size_t)k), 2);
        float xv = 0;
        for (int p = 0; p < parts; p++) xv += tl_bf16_to_f32(packed_x(pack + (size_t)p * pstride, g, t, k));
        s += tl_bf16_to_f32(w) * xv;
    }
    return s;
}

/* y[t][r] for the rows past the last 32-row block, scalar */
static void rows_scalar(const uint8_t *W, size_t ldw, int r0, int rows, int cols, const uint8_t *pack,
                        const pack_geom *g, int parts, size_t pstride, int n, float *y, size_t ldy, int accumulate) {
    for (int t = 0; t < n; t++)
        for (int r = r0; r < rows; r++) {
            float s = dot_scalar(W, ldw, cols, pack, g, parts, pstride, r, t, 0);
            float *yr = y + (size_t)t * ldy + r;
            *yr = accumulate ? *yr + s : s;
        }
}

#ifdef TL_AMX

int tl_amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, avx512f = (b >> 16) & 1;
    if (!amx_bf16 || !amx_tile || !avx512f) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return 0; /* AVX512-BF16 */
    /* XCR0 must enable XTILECFG and XTILEDATA (bits 17, 18) */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* In-register 16x16 transpose of 32-bit elements, as four block swaps: at level
 * d the off-diagonal d x d blocks trade places (rows i and i+d exchange the
 * elements whose column has bit d set). */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(__m512 m[16]) {
    const __m512i j = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int d = 8; d >= 1; d >>= 1) {
        /* lo[j] = bit d of j ? 16 + j - d : j,  hi[j] = bit d of j ? 16 + j : j + d */
        const __mmask16 set = _mm512_test_epi32_mask(j, _mm512_set1_epi32(d));
        const __m512i lo = _mm512_mask_add_epi32(j, set, j, _mm512_set1_epi32(16 - d));
        const __m512i hi = _mm512_add_epi32(j, _mm512_mask_blend_epi32(set, _mm512_set1_epi32(d), _mm512_set1_epi32(16)));
        for (int i = 0; i < 16; i++) {
            if (i & d) continue;
            __m512 a = m[i], b = m[i + d];
            m[i] = _mm512_permutex2var_ps(a, lo, b);
            m[i + d] = _mm512_permutex2var_ps(a, hi, b);
        }
    }
}

/* The parts of 32 floats a (16) and b (16) as 32 bf16 in their order: part[0]
 * the rounding of (a, b), part[1] of what it leaves, part[2] of the rest. */
__attribute__((target("avx512f,avx512bf16"))) static inline void split32(__m512 a, __m512 b, int parts, __m512 *part) {
    for (int p = 0; p < parts; p++) {
        const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* the second operand fills the low half */
        part[p] = _mm512_castsi512_ps(h);
        if (p + 1 == parts) break;
        /* the 32 bf16 back to fp32 (low 256 bits: a's, high: b's), subtracted */
        const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)),
                      hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1));
        a = _mm512_sub_ps(a, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
        b = _mm512_sub_ps(b, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
    }
}

__attribute__((target("avx512f,avx512bf16"))) void tl_amx_pack(const float *x, size_t ldx, int n, int cols, int parts,
                                                                 void *pack) {
    const pack_geom g = geom(n, cols);
    const size_t pstride = tl_amx_pack_bytes(n, cols);
    uint8_t *out = pack;
#pragma omp parallel for schedule(static) if (n > 16 && !omp_in_parallel())
    for (int tb = 0; tb < g.NB; tb++) {
        for (int p0 = 0; p0 < g.P; p0 += 16) {
            __m512 m[3][16];
            for (int j = 0; j < 16; j++) {
                const int t = tb * 16 + j;
                if (t >= n) {
                    for (int p = 0; p < parts; p++) m[p][j] = _mm512_setzero_ps();
                    continue;
                }
                const float *xr = x + (size_t)t * ldx + 2 * (size_t)p0;
                __m512 pj[3];
                split32(_mm512_loadu_ps(xr), _mm512_loadu_ps(xr + 16), parts, pj);
                for (int p = 0; p < parts; p++) m[p][j] = pj[p];
            }
            for (int p = 0; p < parts; p++) {
                transpose16(m[p]); /* row q: pair p0+q of the 16 tokens */
                uint8_t *o = out + (size_t)p * pstride;
                for (int q = 0; q < 16; q++)
                    _mm512_store_ps((float *)(o + (((size_t)tb * (size_t)g.P + (size_t)(p0 + q)) * 16) * 4), m[p][q]);
            }
        }
    }
    for (int t = 0; t < n; t++)
        for (int k = 0; k < g.rem; k++) {
            float v = x[(size_t)t * ldx + (size_t)(g.K32 + k)];
            for (int p = 0; p < parts; p++) {
                const uint16_t b = tl_f32_to_bf16(v);
                ((uint16_t *)(out + (size_t)p * pstride + g.main_bytes))[(size_t)t * (size_t)g.rem + (size_t)k] = b;
                v -= tl_bf16_to_f32(b);
            }
        }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* A 32x32 block C = (rows w0.., w1..: 16 each) x (columns 0-15, 16-31 of the
 * right operand) over k < 32*ksteps, as four tiles; w0/w1: first rows of the
 * two 16-row tiles (row stride ldw bytes), xb: the right operand's first
 * 16-column block in the pair layout (the second is xstride bytes on; its
 * parts, summed, pstride bytes apart), c: the block, row-major with row stride
 * ldc floats. */
__attribute__((target("amx-tile,amx-bf16"))) static inline void tile_block(const uint8_t *w0, const uint8_t *w1, size_t ldw,
                                                                      const uint8_t *xb, size_t xstride, int parts,
                                                                      size_t pstride, int ksteps, float *c, size_t ldc) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int s = 0; s < ksteps; s++) {
        _tile_loadd(4, w0 + 64 * (size_t)s, ldw);
        _tile_loadd(5, w1 + 64 * (size_t)s, ldw);
        for (int p = 0; p < parts; p++) { /* the parts of x (one unless split) */
            const uint8_t *xs = xb + (size_t)p * pstride + 1024 * (size_t)s;
            _tile_loadd(6, xs, 64);
            _tile_loadd(7, xs + xstride, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    const size_t lb = 4 * ldc;
    _tile_stored(0, c, lb);
    _tile_stored(1, c + 16, lb);
    _tile_stored(2, c + 16 * ldc, lb);
    _tile_stored(3, c + 16 * ldc + 16, lb);
}

/* tile_block with the part count a constant (the compiler unrolls the parts) */
__attribute__((target("amx-tile,amx-bf16"))) static void tile_block1(const uint8_t *w0, const uint8_t *w1, size_t ldw,
                                                                       const uint8_t *xb, size_t xstride, size_t pstride,
                                                                       int ksteps, float *c, size_t ldc) {
    tile_block(w0, w1, ldw, xb, xstride, 1, pstride, ksteps, c, ldc);
}
__attribute__((target("amx-tile,amx-bf16"))) static void tile_block3(const uint8_t *w0, const uint8_t *w1, size_t ldw,
                                                                       const uint8_t *xb, size_t xstride, size_t pstride,
                                                                       int ksteps, float *c, size_t ldc) {
    tile_block(w0, w1, ldw, xb, xstride, 3, pstride, ksteps, c, ldc);
}

/* A 16x16 tile c (row stride ldc; W rows r0.., tokens t0..) transposed into y[t][r]. */
__attribute__((target("avx512f"))) static void emit(const float *c, size_t ldc, float *y, size_t ldy, int n, int r0,
                                                    int t0, int accumulate) {
    __m512 m[16];
    for (int i = 0; i < 16; i++) m[i] = _mm512_load_ps(c + ldc * i);
    transpose16(m); /* row j: token t0+j, W rows r0..r0+15 */
    for (int j = 0; j < 16 && t0 + j < n; j++) {
        float *yr = y + (size_t)(t0 + j) * ldy + r0;
        _mm512_storeu_ps(yr, accumulate ? _mm512_add_ps(_mm512_loadu_ps(yr), m[j]) : m[j]);
    }
}

__attribute__((target("amx-tile"))) static void tiles_configure(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    /* GCC 12 does not see that ldtilecfg reads cfg and drops the stores above
     * without this barrier */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void tiles_release(void) { _tile_release(); }

/* Weight bytes a thread keeps in L2 while a 32-token panel of x runs past them. */
#define GROUP_BYTES (1u << 20)

/* 32-row blocks per group: ~GROUP_BYTES of weights (rows of wb bytes), but
 * enough groups for every thread.  Each 32-token panel of x is fetched once per
 * group, and the group's weights stay in L2 for all the panels. */
static int group_blocks(int nrb, size_t wb, int nth) {
    int G = (int)(GROUP_BYTES / (32 * wb));
    if (G > (nrb + nth - 1) / nth) G = (nrb + nth - 1) / nth;
    return G < 1 ? 1 : G;
}

void tl_amx_gemm(const void *W, size_t ldw, int rows, int cols, const void *pack, int parts, int n, float *y,
                 size_t ldy, int accumulate) {
    const pack_geom g = geom(n, cols);
    const size_t pstride = tl_amx_pack_bytes(n, cols);
    const uint8_t *w = W, *xp = pack;
    const size_t wb = 2 * ldw, xstride = (size_t)g.P * 64; /* bytes per W row, per token block */
    const int nrb = rows / 32, ntp = g.NB / 2, ksteps = g.K32 / 32, serial = omp_in_parallel(),
              nth = serial ? 1 : omp_get_max_threads();
    const int G = group_blocks(nrb, wb, nth), ngroups = (nrb + G - 1) / G;
#pragma omp parallel if (!serial)
    {
        _Alignas(64) float c[1024];
        tiles_configure();
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ngroups; gi++) {
            const int rb1 = (gi + 1) * G < nrb ? (gi + 1) * G : nrb;
            for (int tp = 0; tp < ntp; tp++) {
                const int t0 = tp * 32;
                for (int rb = gi * G; rb < rb1; rb++) {
                    const int r0 = rb * 32;
                    const uint8_t *wr = w + (size_t)r0 * wb;
                    (parts == 1 ? tile_block1 : tile_block3)(wr, wr + 16 * wb, wb, xp + 2 * (size_t)tp * xstride,
                                                              xstride, pstride, ksteps, c, 32);
                    emit(c, 32, y, ldy, n, r0, t0, accumulate);
                    emit(c + 16, 32, y, ldy, n, r0, t0 + 16, accumulate);
                    emit(c + 512, 32, y, ldy, n, r0 + 16, t0, accumulate);
                    emit(c + 528, 32, y, ldy, n, r0 + 16, t0 + 16, accumulate);
                    if (g.rem) /* columns past K32 */
                        for (int t = t0; t < t0 + 32 && t < n; t++)
                            for (int r = r0; r < r0 + 32; r++)
                                y[(size_t)t * ldy + r] += dot_scalar(w, ldw, cols, xp, &g, parts, pstride, r, t, g.K32);
                }
            }
        }
        tiles_release();
    }
    rows_scalar(w, ldw, nrb * 32, rows, cols, xp, &g, parts, pstride, n, y, ldy, accumulate);
}

void tl_amx_matmul_bt(const uint16_t *A, size_t lda, const void *Bp, size_t bstride, int M, int N, int K, float *C,
                      size_t ldc) {
    const uint8_t *a = (const uint8_t *)A, *b = Bp;
    const size_t ab = 2 * lda;
    tiles_configure();
    for (int m0 = 0; m0 + 32 <= M; m0 += 32)
        for (int n0 = 0; n0 + 32 <= N; n0 += 32)
            tile_block(a + (size_t)m0 * ab, a + (size_t)(m0 + 16) * ab, ab, b + (size_t)(n0 / 16) * bstride, bstride,
                       1, 0, K / 32, C + (size_t)m0 * ldc + n0, ldc);
    tiles_release();
}

__attribute__((target("avx512f,avx512bf16"))) void tl_amx_to_bf16(const float *x, size_t n, uint16_t *out) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = tl_f32_to_bf16(x[i]);
}

/* h (16 features x 16 tokens, row stride 32) into the pair layout: feature
 * pairs (2q, 2q+1) interleaved token by token, rounded to bf16; out: pair row
 * f0/2 of the token block, rows 64 bytes apart. */
__attribute__((target("avx512f,avx512bf16"))) static void pack_feature_rows(const float *h, int parts, size_t pstride,
                                                                            uint8_t *out) {
    const __m512i j = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    /* lo: (a0 b0 a1 b1 .. a7 b7), hi: (a8 b8 .. a15 b15) */
    const __m512i lo = _mm512_add_epi32(_mm512_srli_epi32(j, 1), _mm512_slli_epi32(_mm512_and_si512(j, _mm512_set1_epi32(1)), 4));
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int q = 0; q < 8; q++) {
        const __m512 a = _mm512_load_ps(h + 64 * q), b = _mm512_load_ps(h + 64 * q + 32);
        __m512 part[3];
        split32(_mm512_permutex2var_ps(a, lo, b), _mm512_permutex2var_ps(a, hi, b), parts, part);
        for (int p = 0; p < parts; p++) _mm512_store_ps((float *)(out + (size_t)p * pstride + 64 * (size_t)q), part[p]);
    }
}

int tl_amx_swiglu(const void *Wg, const void *Wu, size_t ldw, int F, int D, const void *xpack, int parts, int n,
                  void *hpack) {
    if (F % 32 || D % 32) return -1;
    const pack_geom g = geom(n, D), gh = geom(n, F);
    const size_t xps = tl_amx_pack_bytes(n, D), hps = tl_amx_pack_bytes(n, F);
    const uint8_t *wg = Wg, *wu = Wu, *xp = xpack;
    uint8_t *hp = hpack;
    const size_t wb = 2 * ldw, xstride = (size_t)g.P * 64, hstride = (size_t)gh.P * 64;
    /* blocks of 16 features: 16 gate rows and 16 up rows (as many bytes as one
     * 32-row block of the plain product) */
    const int nfb = F / 16, ntp = g.NB / 2, ksteps = g.K32 / 32, serial = omp_in_parallel(),
              nth = serial ? 1 : omp_get_max_threads();
    const int G = group_blocks(nfb, wb, nth), ngroups = (nfb + G - 1) / G;
#pragma omp parallel if (!serial)
    {
        _Alignas(64) float c[1024], h[512];
        tiles_configure();
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ngroups; gi++) {
            const int fb1 = (gi + 1) * G < nfb ? (gi + 1) * G : nfb;
            for (int tp = 0; tp < ntp; tp++)
                for (int fb = gi * G; fb < fb1; fb++) {
                    const size_t f0 = 16 * (size_t)fb;
                    tile_block(wg + f0 * wb, wu + f0 * wb, wb, xp + 2 * (size_t)tp * xstride, xstride, parts, xps,
                               ksteps, c, 32);
                    /* c rows 0-15: gate, 16-31: up, of 32 tokens; padding tokens see
                     * x = 0, so their h is silu(0) * 0 = 0 as the layout wants */
                    tl_vec_swiglu_forward(h, c, c + 512, 512);
                    for (int b = 0; b < 2; b++)
                        pack_feature_rows(h + 16 * b, parts, hps, hp + (size_t)(2 * tp + b) * hstride + (f0 / 2) * 64);
                }
        }
        tiles_release();
    }
    return 0;
}

#else /* no AMX */

int tl_amx_usable(void) { return 0; }

/* Portable packing and products: the same contract (never reached through the
 * engine, which asks tl_amx_usable first). */
void tl_amx_pack(const float *x, size_t ldx, int n, int cols, int parts, void *pack) {
    const pack_geom g = geom(n, cols);
    const size_t pstride = tl_amx_pack_bytes(n, cols);
    for (int p = 0; p < parts; p++) memset((uint8_t *)pack + (size_t)p * pstride, 0, g.main_bytes);
    for (int t = 0; t < n; t++)
        for (int k = 0; k < cols; k++) {
            float v = x[(size_t)t * ldx + (size_t)k];
            for (int p = 0; p < parts; p++) {
                const uint16_t b = tl_f32_to_bf16(v);
                uint8_t *o = (uint8_t *)pack + (size_t)p * pstride;
                if (k >= g.K32)
                    memcpy(o + g.main_bytes + 2 * ((size_t)t * g.rem + (size_t)(k - g.K32)), &b, 2);
                else
                    memcpy(o + (((size_t)(t / 16) * g.P + (size_t)(k / 2)) * 16 + (size_t)(t % 16)) * 4 + 2 * (k & 1),
                           &b, 2);
                v -= tl_bf16_to_f32(b);
            }
        }
}

void tl_amx_gemm(const void *W, size_t ldw, int rows, int cols, const void *pack, int parts, int n, float *y,
                 size_t ldy, int accumulate) {
    const pack_geom g = geom(n, cols);
    rows_scalar(W, ldw, 0, rows, cols, pack, &g, parts, tl_amx_pack_bytes(n, cols), n, y, ldy, accumulate);
}

int tl_amx_swiglu(const void *Wg, const void *Wu, size_t ldw, int F, int D, const void *xpack, int parts, int n,
                  void *hpack) {
    (void)Wg, (void)Wu, (void)ldw, (void)F, (void)D, (void)xpack, (void)parts, (void)n, (void)hpack;
    return -1;
}

void tl_amx_matmul_bt(const uint16_t *A, size_t lda, const void *Bp, size_t bstride, int M, int N, int K, float *C,
                      size_t ldc) {
    const uint8_t *b = Bp;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float s = 0;
            for (int k = 0; k < K; k++) {
                uint32_t d;
                memcpy(&d, b + (size_t)(n / 16) * bstride + ((size_t)(k / 2) * 16 + (size_t)(n % 16)) * 4, 4);
                s += tl_bf16_to_f32(A[(size_t)m * lda + k]) * tl_bf16_to_f32((uint16_t)(k & 1 ? d >> 16 : d));
            }
            C[(size_t)m * ldc + n] = s;
        }
}

void tl_amx_to_bf16(const float *x, size_t n, uint16_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = tl_f32_to_bf16(x[i]);
}

#endif

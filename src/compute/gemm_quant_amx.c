/* gemm_quant_amx.c - quantized weights times int8 activations on AMX-INT8
 * tiles: the prompt pass (gemm_quant.h).
 *
 * A tile multiply C[16][16] += A[16][K] B[K/4][16][4] (int32 sums of byte
 * products) takes the weights as its left operand: 16 rows unpacked to bytes,
 * row-major, so one 32-element block of the 16 rows is one A tile.  The right
 * operand is 16 tokens' rounded x, four consecutive elements of each token
 * side by side ("quad" layout), packed once per product.  C's row r is then
 * weight row r against the 16 tokens, one 512-bit register, which meets the
 * row's scale as a broadcast and the tokens' scales as a vector.
 *
 * Scales that change every 32 elements (Q8_0, Q4_0: fp32) or 16 (Q6_K: int8)
 * end a tile product there: its C tile is stored and scaled in vector
 * registers, four blocks in flight so that the tile unit works ahead.  Q4_K
 * and Q5_K fold their 6-bit sub-block scales into the weights instead: w sc =
 * w (sc & 7) + 8 w (sc >> 3), both products bytes (at most 31 x 7), so two byte
 * planes of scaled weights run a whole 256-element super-block through two C
 * tiles at the full K = 64 per product, and only the super-block's
 * mins and fp32 step are left to the vector registers.
 *
 * Layouts (all per 16-token group or 16-row tile, tokens / rows fastest):
 *   x group:  int8 q[in/4][16][4]; float dx[nd][16] (nd: blocks of 32, or
 *             super-blocks); int32 s[in/32][16]: Q4_0 8 x the block's sum of
 *             q, K-quants the int16 pair (sum q of the 16s 2j, 2j+1);
 *   row tile: uint8 w[in/ke][16][ke] (ke = 32, Q6_K 16: each A tile
 *             contiguous; Q4_K/Q5_K, ke = 64: two such planes, w (sc & 7)
 *             and w (sc >> 3)); then per type
 *             Q8_0, Q4_0  float dw[in/32][16]
 *             Q4_K, Q5_K  int32 mm[in/32][16] (the 6-bit min twice, as
 *                         int16s), float d[in/256][16], float dmin[in/256][16]
 *             Q6_K        int32 sc[in/16][16], int32 scp[in/32][16] (scale
 *                         pairs as int16s), float d[in/256][16].
 * Tokens past the end are zero; rows past the end are left as they are (a C
 * row depends on its A row alone): neither is read back. */
#include "gemm_quant.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "common.h"
#include "dtype.h"
#include "matvec_quant.h"
#include "q8_round_x86.h"
#include "quant.h"

#if defined(__x86_64__) && defined(__linux__)
#define TL_AMX_I8 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* row tiles per work item: their unpacked bytes (64 x in) stay in L2 while
 * every token group passes over them */
#define GR 4

int tl_q8_amx_type(uint32_t t) {
    return t == TL_GGML_Q8_0 || t == TL_GGML_Q4_0 || t == TL_GGML_Q4_K || t == TL_GGML_Q5_K || t == TL_GGML_Q6_K;
}

#ifdef TL_AMX_I8

#define TGT "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,amx-tile,amx-int8"

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

typedef struct {
    uint32_t type;
    int in, nd;                 /* elements per row; scale blocks of x per token */
    int ke;                     /* elements per tile product: 32, Q6_K 16, Q4_K/Q5_K 64 */
    size_t aux, tile, gstride;  /* offset of the scales in a row tile; bytes per row tile, per token group */
} geom;

static geom geometry(uint32_t type, int in) {
    geom g;
    g.type = type;
    g.in = in;
    g.nd = type == TL_GGML_Q8_0 || type == TL_GGML_Q4_0 ? in / 32 : in / 256;
    g.ke = type == TL_GGML_Q6_K ? 16 : type == TL_GGML_Q4_K || type == TL_GGML_Q5_K ? 64 : 32;
    g.aux = (g.ke == 64 ? 32 : 16) * (size_t)in;
    g.tile = g.aux + 8 * (size_t)in; /* the scales take at most 6.5 in */
    g.gstride = 16 * (size_t)in + 64 * (size_t)g.nd + 2 * (size_t)in;
    return g;
}

static inline int32_t pair16(int a, int b) { return (int32_t)((uint32_t)(uint16_t)a | (uint32_t)(uint16_t)b << 16); }

/* Unpacks rows [r0, r0 + nr) of W (rb bytes each) into a row tile u. */
__attribute__((target(TGT))) static void unpack_rows(const geom *G, const uint8_t *restrict W, size_t rb, int r0, int nr,
                                                    uint8_t *restrict u, uint8_t *restrict tmp) {
    const int in = G->in, nb = in / 32, nk = in / 256;
    /* rows past nr keep what they held: their C rows are never read */
    uint8_t *aux = u + G->aux;
    float *f = (float *)(void *)aux;
    int32_t *i32 = (int32_t *)(void *)aux;
    for (int r = 0; r < nr; r++) {
        const uint8_t *restrict b = W + (size_t)(r0 + r) * rb;
        uint8_t *restrict w = tmp; /* the row in element order, then cut into the tiles */
        switch (G->type) {
        case TL_GGML_Q8_0:
            for (int k = 0; k < nb; k++, b += 34) {
                memcpy(w + 32 * k, b + 2, 32);
                f[16 * k + r] = tl_f16_to_f32(ld16(b));
            }
            break;
        case TL_GGML_Q4_0:
            for (int k = 0; k < nb; k++, b += 18) {
                for (int i = 0; i < 16; i++) {
                    w[32 * k + i] = b[2 + i] & 15;
                    w[32 * k + 16 + i] = b[2 + i] >> 4;
                }
                f[16 * k + r] = tl_f16_to_f32(ld16(b));
            }
            break;
        case TL_GGML_Q4_K:
        case TL_GGML_Q5_K: {
            const int five = G->type == TL_GGML_Q5_K;
            int32_t *mm = i32;
            float *d = (float *)(void *)(mm + 16 * nb), *dmin = d + 16 * nk;
            for (int k = 0; k < nk; k++, b += five ? 176 : 144) {
                const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
                d[16 * k + r] = tl_f16_to_f32(ld16(b));
                dmin[16 * k + r] = tl_f16_to_f32(ld16(b + 2));
                for (int j = 0; j < 8; j++) {
                    int s, m;
                    tl_k_scale_min(b + 4, j, &s, &m);
                    mm[16 * (8 * k + j) + r] = pair16(m, m);
                    const uint8_t *p = qs + 32 * (j / 2);
                    uint8_t *o = w + 256 * k + 32 * j;
                    if (j & 1)
                        for (int i = 0; i < 32; i++) o[i] = p[i] >> 4;
                    else
                        for (int i = 0; i < 32; i++) o[i] = p[i] & 15;
                    if (five)
                        for (int i = 0; i < 32; i++) o[i] |= ((qh[i] >> j) & 1) << 4;
                    /* the scale's low and high 3 bits folded into two byte planes */
                    uint8_t *lo = u + ((size_t)(4 * k + j / 2) * 16 + (size_t)r) * 64 + 32 * (j & 1), *hi = lo + 16 * (size_t)in;
                    for (int i = 0; i < 32; i++) lo[i] = (uint8_t)(o[i] * (s & 7)), hi[i] = (uint8_t)(o[i] * (s >> 3));
                }
            }
            break;
        }
        default: { /* Q6_K */
            int32_t *sc = i32, *scp = i32 + 16 * (in / 16);
            float *d = (float *)(void *)(scp + 16 * nb);
            for (int k = 0; k < nk; k++, b += 210) {
                const int8_t *s8 = (const int8_t *)(b + 192);
                d[16 * k + r] = tl_f16_to_f32(ld16(b + 208));
                for (int g = 0; g < 16; g++) sc[16 * (16 * k + g) + r] = s8[g];
                for (int i = 0; i < 8; i++) scp[16 * (8 * k + i) + r] = pair16(s8[2 * i], s8[2 * i + 1]);
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
                    uint8_t *o = w + 256 * k + 128 * h;
                    for (int q = 0; q < 4; q++)
                        for (int i = 0; i < 32; i++)
                            o[32 * q + i] =
                                (uint8_t)(((ql[i + 32 * (q & 1)] >> (4 * (q >> 1))) & 15) | ((qh[i] >> (2 * q)) & 3) << 4);
                }
            }
            break;
        }
        }
        if (G->ke != 64)
            for (int k = 0; k < in / G->ke; k++) memcpy(u + (size_t)(16 * k + r) * (size_t)G->ke, tmp + k * G->ke, (size_t)G->ke);
    }
}

int tl_q8_amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
    const int avx512 = (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1) && (c >> 11 & 1); /* F DQ BW VL VNNI */
    if (!amx_tile || !amx_int8 || !avx512) return 0;
    /* XCR0 must enable the AVX-512 state (bits 5-7) and XTILECFG / XTILEDATA (17, 18) */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 5) & 7) != 7 || ((lo >> 17) & 3) != 3) return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tiles 0-3: C (16 x 16 int32); 4, 5: A (16 rows x ke bytes); 6, 7: B (ke/4
 * rows x 64 bytes) */
__attribute__((target("amx-tile"))) static void tiles_configure(int ke) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 4; i++) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    for (int i = 4; i < 6; i++) cfg.rows[i] = 16, cfg.colsb[i] = (uint16_t)ke;
    for (int i = 6; i < 8; i++) cfg.rows[i] = (uint8_t)(ke / 4), cfg.colsb[i] = 64;
    /* GCC 12 does not see that ldtilecfg reads cfg (as in gemm_amx.c) */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void tiles_release(void) { _tile_release(); }


/* Rounds tokens [16 tg, 16 tg + 16) of x (n tokens of G->in) as
 * tl_q8_quantize does, bit for bit (the same fp32 operations per element:
 * d = amax / 127, q = trunc(x (127 / amax) +- 0.5) clamped to +-127; a block
 * with a NaN or an infinity: q = 0, d = NaN), straight into the token
 * group's layout out (zeroed: the tokens past n stay zero). */
__attribute__((target(TGT))) static void quant_pack(const geom *G, const float *x, int n, int tg, uint8_t *out) {
    const int in = G->in, bl = G->nd == in / 32 ? 32 : 256;
    float *dx = (float *)(void *)(out + 16 * (size_t)in);
    int32_t *s = (int32_t *)(void *)(dx + 16 * (size_t)G->nd);
    for (int t = 0; t < 16 && 16 * tg + t < n; t++) {
        const float *xr = x + (size_t)(16 * tg + t) * (size_t)in;
        for (int b0 = 0; b0 < in; b0 += bl) {
            float id;
            __mmask16 keep;
            dx[16 * (b0 / bl) + t] = tl_q8_block_scale_avx512(xr + b0, bl, &id, &keep);
            int32_t sum32 = 0;
            for (int i = b0; i < b0 + bl; i += 16) {
                const __m512i q = tl_q8_round16_avx512(xr + i, id, keep);
                const int qs = _mm512_reduce_add_epi32(q);
                _Alignas(16) uint32_t qd[4];
                _mm_store_si128((__m128i *)(void *)qd, _mm512_cvtepi32_epi8(q));
                for (int j = 0; j < 4; j++) memcpy(out + 64 * (size_t)(i / 4 + j) + 4 * (size_t)t, &qd[j], 4);
                if (bl == 256) { /* the sums per 16 as int16 pairs, one pair per 32 */
                    uint16_t *p = (uint16_t *)(void *)(s + 16 * (i / 32) + t);
                    p[(i / 16) & 1] = (uint16_t)(int16_t)qs;
                } else {
                    sum32 += qs;
                }
            }
            if (bl == 32) s[16 * (b0 / 32) + t] = 8 * sum32; /* Q4_0's offset (Q8_0: unused) */
        }
    }
}

/* Block s (ke elements) of the row tile w against the token
 * group's quads xb into C tile c (a, b: its A and B tiles); sgn: Q8_0's signed
 * weights. */
#define TILE_ISSUE(c, a, bt, s)                                                                                        \
    do {                                                                                                               \
        _tile_zero(c);                                                                                                 \
        _tile_loadd(a, w + (size_t)(s) * (size_t)ke * 16, ke);                                                               \
        _tile_loadd(bt, xb + (size_t)(s) * (size_t)ke * 16, 64);                                                       \
        if (sgn)                                                                                                       \
            _tile_dpbssd(c, a, bt);                                                                                    \
        else                                                                                                           \
            _tile_dpbusd(c, a, bt);                                                                                    \
    } while (0)

/* The blocks s = 0..ns-1 of one row tile against one token group, four in
 * flight (C tile s % 4, A and B tiles by the parity of s; the tile unit's
 * latency is several times one block's scaling): EPI(s) consumes the int32
 * results of block s from cb[16][16]. */
#define PIPELINE(ns, EPI)                                                                                              \
    do {                                                                                                               \
        TILE_ISSUE(0, 4, 6, 0);                                                                                        \
        if (1 < (ns)) TILE_ISSUE(1, 5, 7, 1);                                                                          \
        if (2 < (ns)) TILE_ISSUE(2, 4, 6, 2);                                                                          \
        for (int s = 0; s < (ns); s += 4) {                                                                            \
            if (s + 3 < (ns)) TILE_ISSUE(3, 5, 7, s + 3);                                                              \
            _tile_stored(0, cb, 64);                                                                                   \
            EPI(s);                                                                                                    \
            if (s + 4 < (ns)) TILE_ISSUE(0, 4, 6, s + 4);                                                              \
            if (s + 1 >= (ns)) break;                                                                                  \
            _tile_stored(1, cb, 64);                                                                                   \
            EPI(s + 1);                                                                                                \
            if (s + 5 < (ns)) TILE_ISSUE(1, 5, 7, s + 5);                                                              \
            if (s + 2 >= (ns)) break;                                                                                  \
            _tile_stored(2, cb, 64);                                                                                   \
            EPI(s + 2);                                                                                                \
            if (s + 6 < (ns)) TILE_ISSUE(2, 4, 6, s + 6);                                                              \
            if (s + 3 >= (ns)) break;                                                                                  \
            _tile_stored(3, cb, 64);                                                                                   \
            EPI(s + 3);                                                                                                \
        }                                                                                                              \
    } while (0)

/* Q8_0 / Q4_0: acc += (dw dx) isum per block, as c_q8_0 / c_q4_0. */
__attribute__((target(TGT))) static void tile_q32(const geom *G, const uint8_t *w, const uint8_t *xg, float *res) {
    const int in = G->in, nb = in / 32, ke = 32, sgn = G->type == TL_GGML_Q8_0;
    const uint8_t *xb = xg;
    const float *dx = (const float *)(const void *)(xg + 16 * (size_t)in);
    const int32_t *sx = (const int32_t *)(const void *)(dx + 16 * (size_t)G->nd);
    const float *dw = (const float *)(const void *)(w + 16 * (size_t)in);
    _Alignas(64) int32_t cb[256];
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
#define EPI32(s)                                                                                                       \
    do {                                                                                                               \
        const __m512 dxv = _mm512_load_ps(dx + 16 * (s));                                                              \
        const __m512i corr = sgn ? _mm512_setzero_si512() : _mm512_load_si512((const void *)(sx + 16 * (s)));          \
        for (int r = 0; r < 16; r++) {                                                                                 \
            const __m512i ci = _mm512_sub_epi32(_mm512_load_si512((const void *)(cb + 16 * r)), corr);                 \
            const __m512 sv = _mm512_mul_ps(_mm512_set1_ps(dw[16 * (s) + r]), dxv);                                    \
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(sv, _mm512_cvtepi32_ps(ci)));                                 \
        }                                                                                                              \
    } while (0)
    PIPELINE(nb, EPI32);
#undef EPI32
    for (int r = 0; r < 16; r++) _mm512_store_ps(res + 16 * r, acc[r]);
}

/* Q4_K / Q5_K: per super-block isum = C_lo + 8 C_hi (the two planes' sums,
 * 4 products of K = 64 each), two super-blocks in flight (C tiles 0-1, 2-3);
 * msum by vpdpwssd from the pair sums, then the fp32 step of c_q45_k. */
__attribute__((target(TGT))) static void tile_k45(const geom *G, const uint8_t *w, const uint8_t *xg, float *res) {
    const int in = G->in, nb = in / 32, nk = in / 256;
    const uint8_t *lo = w, *hi = w + 16 * (size_t)in, *xb = xg;
    const float *dx = (const float *)(const void *)(xg + 16 * (size_t)in);
    const int32_t *sp = (const int32_t *)(const void *)(dx + 16 * (size_t)G->nd);
    const int32_t *mm = (const int32_t *)(const void *)(w + G->aux);
    const float *d = (const float *)(const void *)(mm + 16 * (size_t)nb), *dmin = d + 16 * (size_t)nk;
    _Alignas(64) int32_t cl[256], ch[256];
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
#define SB_ISSUE(c0, c1, k)                                                                                            \
    do {                                                                                                               \
        _tile_zero(c0);                                                                                                \
        _tile_zero(c1);                                                                                                \
        for (int q = 0; q < 4; q += 2) {                                                                               \
            const size_t o = (size_t)(4 * (k) + q) * 1024;                                                             \
            _tile_loadd(6, xb + o, 64);                                                                                \
            _tile_loadd(4, lo + o, 64);                                                                                \
            _tile_loadd(5, hi + o, 64);                                                                                \
            _tile_dpbusd(c0, 4, 6);                                                                                    \
            _tile_dpbusd(c1, 5, 6);                                                                                    \
            _tile_loadd(7, xb + o + 1024, 64);                                                                         \
            _tile_loadd(4, lo + o + 1024, 64);                                                                         \
            _tile_loadd(5, hi + o + 1024, 64);                                                                         \
            _tile_dpbusd(c0, 4, 7);                                                                                    \
            _tile_dpbusd(c1, 5, 7);                                                                                    \
        }                                                                                                              \
    } while (0)
#define SB_EPI(k)                                                                                                      \
    do {                                                                                                               \
        const __m512 dxv = _mm512_load_ps(dx + 16 * (k));                                                              \
        for (int r = 0; r < 16; r++) {                                                                                 \
            const __m512i isum = _mm512_add_epi32(_mm512_load_si512((const void *)(cl + 16 * r)),                      \
                                                  _mm512_slli_epi32(_mm512_load_si512((const void *)(ch + 16 * r)), 3)); \
            __m512i m = _mm512_setzero_si512();                                                                        \
            for (int j = 0; j < 8; j++)                                                                                \
                m = _mm512_dpwssd_epi32(m, _mm512_load_si512((const void *)(sp + 16 * (8 * (k) + j))),                 \
                                        _mm512_set1_epi32(mm[16 * (8 * (k) + j) + r]));                                \
            const __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d[16 * (k) + r]), _mm512_cvtepi32_ps(isum)),   \
                                           _mm512_mul_ps(_mm512_set1_ps(dmin[16 * (k) + r]), _mm512_cvtepi32_ps(m)));  \
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(dxv, t));                                                     \
        }                                                                                                              \
    } while (0)
    SB_ISSUE(0, 1, 0);
    for (int k = 0; k < nk; k += 2) {
        if (k + 1 < nk) SB_ISSUE(2, 3, k + 1);
        _tile_stored(0, cl, 64);
        _tile_stored(1, ch, 64);
        SB_EPI(k);
        if (k + 2 < nk) SB_ISSUE(0, 1, k + 2);
        if (k + 1 < nk) {
            _tile_stored(2, cl, 64);
            _tile_stored(3, ch, 64);
            SB_EPI(k + 1);
        }
    }
#undef SB_ISSUE
#undef SB_EPI
    for (int r = 0; r < 16; r++) _mm512_store_ps(res + 16 * r, acc[r]);
}

/* Q6_K (ke 16): per block isum += sc isum_block; per super-block the -32
 * offsets through the activations' pair sums, then the fp32 step of c_q6_k. */
__attribute__((target(TGT))) static void tile_q6k(const geom *G, const uint8_t *w, const uint8_t *xg, float *res) {
    const int in = G->in, nb = in / 32, ke = 16, ns = in / ke, per = 256 / ke, sgn = 0;
    const uint8_t *xb = xg;
    const float *dx = (const float *)(const void *)(xg + 16 * (size_t)in);
    const int32_t *sp = (const int32_t *)(const void *)(dx + 16 * (size_t)G->nd);
    const int32_t *sc = (const int32_t *)(const void *)(w + G->aux), *pr = sc + 16 * (size_t)ns;
    const float *d = (const float *)(const void *)(pr + 16 * (size_t)nb);
    _Alignas(64) int32_t cb[256];
    __m512 acc[16];
    __m512i isum[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps(), isum[r] = _mm512_setzero_si512();
#define EPIK(s)                                                                                                        \
    do {                                                                                                               \
        for (int r = 0; r < 16; r++)                                                                                   \
            isum[r] = _mm512_add_epi32(                                                                                \
                isum[r], _mm512_mullo_epi32(_mm512_load_si512((const void *)(cb + 16 * r)),                            \
                                            _mm512_set1_epi32(sc[16 * (s) + r])));                                     \
        if (((s) + 1) % per == 0) {                                                                                    \
            const int k = (s) / per;                                                                                   \
            const __m512 dxv = _mm512_load_ps(dx + 16 * k);                                                            \
            for (int r = 0; r < 16; r++) {                                                                             \
                __m512i m = _mm512_setzero_si512();                                                                    \
                for (int j = 0; j < 8; j++)                                                                            \
                    m = _mm512_dpwssd_epi32(m, _mm512_load_si512((const void *)(sp + 16 * (8 * k + j))),               \
                                            _mm512_set1_epi32(pr[16 * (8 * k + j) + r]));                              \
                const __m512i tot = _mm512_sub_epi32(isum[r], _mm512_slli_epi32(m, 5));                                \
                const __m512 t = _mm512_mul_ps(_mm512_set1_ps(d[16 * k + r]), _mm512_cvtepi32_ps(tot));                \
                acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(dxv, t));                                                 \
                isum[r] = _mm512_setzero_si512();                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)
    PIPELINE(ns, EPIK);
#undef EPIK
    for (int r = 0; r < 16; r++) _mm512_store_ps(res + 16 * r, acc[r]);
}

/* y[t][r] (=, or v + beta y) = res[r][t] for t < nt, r < nr (row stride ldy) */
__attribute__((target(TGT))) static void emit(const float *res, float *y, size_t ldy, int nt, int nr, float beta) {
    const __mmask16 m = (__mmask16)((1u << nr) - 1);
    const __m512i col = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(16));
    for (int t = 0; t < nt; t++) {
        float *yy = y + (size_t)t * ldy;
        __m512 v = _mm512_i32gather_ps(_mm512_add_epi32(col, _mm512_set1_epi32(t)), res, 4);
        if (beta != 0) v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, yy)));
        _mm512_mask_storeu_ps(yy, m, v);
    }
}

static int kfamily(uint32_t t) { return t != TL_GGML_Q8_0 && t != TL_GGML_Q4_0; }

int tl_q8_gemm_amx_multi(const tl_wmat *const *W, float *const *y, int count, const float *x, int n, float beta) {
    if (count < 1 || count > 8 || n <= 0) return -1;
    const int in = W[0]->cols;
    int fam[2] = {0, 0}, first[9];
    first[0] = 0;
    for (int j = 0; j < count; j++) {
        if (!tl_q8_amx_type(W[j]->quant) || W[j]->cols != in || in % (kfamily(W[j]->quant) ? 256 : 32)) return -1;
        fam[kfamily(W[j]->quant)] = 1;
        first[j + 1] = first[j] + ((W[j]->rows + 15) / 16 + GR - 1) / GR; /* work items of GR row tiles */
    }
    if (!tl_q8_amx_usable()) return -1;
    const int ntg = (n + 15) / 16, nth = omp_get_max_threads();
    geom G[2];
    size_t gs[2];
    uint8_t *xp[2] = {NULL, NULL};
    for (int f = 0; f < 2; f++) { /* x rounded once for each block family present */
        G[f] = geometry(f ? TL_GGML_Q4_K : TL_GGML_Q4_0, in);
        gs[f] = (G[f].gstride + 63) & ~(size_t)63;
        if (fam[f]) xp[f] = tl_alloc(gs[f] * (size_t)ntg);
    }
    /* weights repacked for decode (W->packed) are put back in file order 16 rows
     * at a time, once per row tile for all the tokens */
    size_t pb = 0;
    for (int j = 0; j < count; j++)
        if (W[j]->packed && 16 * tl_quant_row_bytes(W[j]->quant, in) > pb) pb = 16 * tl_quant_row_bytes(W[j]->quant, in);
    pb = (pb + 63) & ~(size_t)63;
    const size_t ts = (geometry(TL_GGML_Q4_K, in).tile + 63) & ~(size_t)63, /* the largest */
        tb = ts * GR + (size_t)in + pb; /* + a row in element order + 16 unpacked rows */
    uint8_t *wb = tl_alloc(tb * (size_t)nth);
    if (!wb || (fam[0] && !xp[0]) || (fam[1] && !xp[1])) {
        tl_free(xp[0]), tl_free(xp[1]), tl_free(wb);
        return -1;
    }
#pragma omp parallel num_threads(nth)
    {
#pragma omp for schedule(static) collapse(2)
        for (int f = 0; f < 2; f++)
            for (int g = 0; g < ntg; g++)
                if (xp[f]) quant_pack(&G[f], x, n, g, xp[f] + (size_t)g * gs[f]);
        uint8_t *u = wb + tb * (size_t)omp_get_thread_num();
        _Alignas(64) float res[256];
        int ke = 0;
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < first[count]; it++) {
            int j = 0;
            while (it >= first[j + 1]) j++;
            const tl_wmat *M = W[j];
            const int out = M->rows, nrt = (out + 15) / 16, kq = kfamily(M->quant), rt0 = (it - first[j]) * GR,
                      rt1 = rt0 + GR < nrt ? rt0 + GR : nrt;
            const geom Gj = geometry(M->quant, in);
            const int kej = Gj.ke;
            const size_t rb = tl_quant_row_bytes(M->quant, in);
            if (kej != ke) tiles_configure(ke = kej);
            for (int rt = rt0; rt < rt1; rt++) {
                const int r0 = 16 * rt;
                const int nr = out - r0 < 16 ? out - r0 : 16;
                if (M->packed) {
                    uint8_t *fr = u + ts * GR + (size_t)in; /* the 16 rows in file order */
                    for (int r = 0; r < nr; r++) tl_q8_unpack_row(M, r0 + r, fr + (size_t)r * rb);
                    unpack_rows(&Gj, fr, rb, 0, nr, u + ts * (size_t)(rt - rt0), u + ts * GR);
                } else {
                    unpack_rows(&Gj, M->data, rb, r0, nr, u + ts * (size_t)(rt - rt0), u + ts * GR);
                }
            }
            for (int g = 0; g < ntg; g++) {
                const uint8_t *xg = xp[kq] + (size_t)g * gs[kq];
                for (int rt = rt0; rt < rt1; rt++) {
                    if (Gj.ke == 64)
                        tile_k45(&Gj, u + ts * (size_t)(rt - rt0), xg, res);
                    else if (kq)
                        tile_q6k(&Gj, u + ts * (size_t)(rt - rt0), xg, res);
                    else
                        tile_q32(&Gj, u + ts * (size_t)(rt - rt0), xg, res);
                    const int r0 = 16 * rt, nr = out - r0 < 16 ? out - r0 : 16, nt = n - 16 * g < 16 ? n - 16 * g : 16;
                    emit(res, y[j] + (size_t)(16 * g) * out + r0, out, nt, nr, beta);
                }
            }
        }
        if (ke) tiles_release();
    }
    tl_free(xp[0]), tl_free(xp[1]), tl_free(wb);
    return 0;
}

#else

int tl_q8_amx_usable(void) { return 0; }

int tl_q8_gemm_amx_multi(const tl_wmat *const *W, float *const *y, int count, const float *x, int n, float beta) {
    (void)W, (void)y, (void)count, (void)x, (void)n, (void)beta;
    return -1;
}

#endif

int tl_q8_gemm_amx(const tl_wmat *W, const float *x, int n, float *y, float beta) {
    return tl_q8_gemm_amx_multi(&W, &y, 1, x, n, beta);
}

int tl_q8_tiles_take(tl_kernel k, const tl_wmat *const *W, int count, int n) {
    const tl_kernel kb = k == TL_KERNEL_AUTO ? tl_kernel_best() : k;
    if (n < TL_Q8_TILE_MIN_TOKENS || (kb != TL_KERNEL_AMX && kb != TL_KERNEL_AMX_EXACT)) return 0;
    for (int j = 0; j < count; j++)
        if (W[j]->f32_act || (W[j]->packed && n < TL_Q8_TILE_MIN_TOKENS_PACKED)) return 0;
    return 1;
}

int tl_q8_gemm_multi(tl_kernel k, const tl_wmat *const *W, float *const *y, int count, const float *x, int n) {
    if (!tl_q8_tiles_take(k, W, count, n)) return -1;
    return tl_q8_gemm_amx_multi(W, y, count, x, n, 0.0f);
}

/* matvec_quant_kpack.c - Q4_K, Q5_K and Q6_K matrices repacked for decode
 * (matvec_quant_kpack.h): the layout, a portable C kernel that reads it and
 * AVX512-VNNI, AVX-VNNI and AVX2 kernels with the same bits. */
#include "matvec_quant_kpack.h"

#include <string.h>

#include "matvec_quant_i8.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#define TL_X86 1
#include <immintrin.h>
#endif

/* the most columns a repacked matrix may have (as for Q8_0/Q4_0) */
#define KQ_MAX_COLS 12288

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int tl_kq_type(uint32_t t) { return t == TL_GGML_Q4_K || t == TL_GGML_Q5_K || t == TL_GGML_Q6_K; }

int tl_kq_packable(const tl_wmat *W) {
    return tl_kq_type(W->quant) && !W->packed && W->rows % 16 == 0 && W->cols % 256 == 0 && W->cols > 0 &&
           W->cols <= KQ_MAX_COLS;
}

static size_t kq_block(uint32_t t) { return t == TL_GGML_Q4_K ? 144 : t == TL_GGML_Q5_K ? 176 : 210; }

/* Where Q6_K's repacked quants go: per half h and 4-element chunk c, three
 * lines (16 rows x 4 bytes each), byte j of line 3 (8 h + c) + l holding the
 * 6-bit value of run l (elements 128 h + 32 l + 4 c + j) in its low bits and
 * two bits of run 3's in its top two (bits 2l, 2l + 1 of it), so runs 0-2
 * take one mask each and run 3 a few shifts, with no other bit-fiddling. */
static inline size_t q6_line(int e) { return 64 * (size_t)(3 * (8 * (e / 128) + e % 32 / 4)); }

/* one block moved between the file (f) and row r's place in a group's
 * super-block (g), either way: the f16 scales in 2-byte units, the rest in
 * 4-byte ones (Q6_K's quants as above) */
static void kq_move(uint32_t t, uint8_t *f, uint8_t *g, int r, int to_file) {
    const int q4 = t != TL_GGML_Q6_K; /* Q4_K and Q5_K: every unit moved as it is */
    const size_t fo = q4 ? 0 : 208, fe = q4 ? 4 : 210, qo = q4 ? 4 : 192, qe = q4 ? kq_block(t) : 208;
    for (size_t o = fo; o < fe; o += 2) {
        uint8_t *p = g + 16 * o + 2 * (size_t)r;
        if (to_file)
            memcpy(f + o, p, 2);
        else
            memcpy(p, f + o, 2);
    }
    uint8_t *g4 = g + 4 * (size_t)r;
    if (to_file)
        for (size_t o = qo; o < qe; o += 4) memcpy(f + o, g4 + 16 * o, 4);
    else
        for (size_t o = qo; o < qe; o += 4) memcpy(g4 + 16 * o, f + o, 4);
    if (q4) return;
    /* the quants four elements at a time, in 32-bit words (a byte per element) */
    const uint32_t m2 = 0x03030303u, m4 = 0x0f0f0f0fu, m6 = 0x3f3f3f3fu;
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 8; c++) {
            uint8_t *p = g4 + q6_line(128 * h + 4 * c), *a = f + 64 * h + 4 * c, *b = a + 32, *q = f + 128 + 32 * h + 4 * c;
            uint32_t v[4], w[3];
            if (to_file) {
                for (int l = 0; l < 3; l++) memcpy(&w[l], p + 64 * l, 4), v[l] = w[l] & m6;
                v[3] = (w[0] >> 6 & m2) | (w[1] >> 4 & m2 << 2) | (w[2] >> 2 & m2 << 4);
                const uint32_t A = (v[0] & m4) | (v[2] & m4) << 4, B = (v[1] & m4) | (v[3] & m4) << 4,
                               Q = (v[0] >> 4 & m2) | (v[1] >> 4 & m2) << 2 | (v[2] >> 4 & m2) << 4 | (v[3] >> 4 & m2) << 6;
                memcpy(a, &A, 4), memcpy(b, &B, 4), memcpy(q, &Q, 4);
            } else {
                uint32_t A, B, Q;
                memcpy(&A, a, 4), memcpy(&B, b, 4), memcpy(&Q, q, 4);
                v[0] = (A & m4) | (Q & m2) << 4, v[1] = (B & m4) | (Q >> 2 & m2) << 4;
                v[2] = (A >> 4 & m4) | (Q >> 4 & m2) << 4, v[3] = (B >> 4 & m4) | (Q >> 6 & m2) << 4;
                for (int l = 0; l < 3; l++) {
                    w[l] = v[l] | (v[3] >> 2 * l & m2) << 6;
                    memcpy(p + 64 * l, &w[l], 4);
                }
            }
        }
}

void tl_kq_pack(const tl_wmat *W, void *dst) {
    const uint32_t t = W->quant;
    const int nb = W->cols / 256;
    const size_t bb = kq_block(t), rb = (size_t)nb * bb;
    const uint8_t *src = W->data;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < W->rows; r++)
        for (int k = 0; k < nb; k++)
            kq_move(t, (uint8_t *)(uintptr_t)(src + (size_t)r * rb + (size_t)k * bb),
                    (uint8_t *)dst + (size_t)(r / 16) * 16 * rb + (size_t)k * 16 * bb, r % 16, 0);
}

void tl_kq_unpack_row(const tl_wmat *W, int r, void *dst) {
    const uint32_t t = W->quant;
    const int nb = W->cols / 256;
    const size_t bb = kq_block(t), rb = (size_t)nb * bb;
    const uint8_t *g = (const uint8_t *)W->data + (size_t)(r / 16) * 16 * rb;
    for (int k = 0; k < nb; k++)
        kq_move(t, (uint8_t *)dst + (size_t)k * bb, (uint8_t *)(uintptr_t)(g + (size_t)k * 16 * bb), r % 16, 1);
}

/* ------------------------------------------------------------ portable C */

/* byte o of row r's block in a group's super-block g (4-byte units; the f16
 * scales are read with their 2-byte units directly) */
static inline uint8_t at4(const uint8_t *g, int r, int o) { return g[16 * (o & ~3) + 4 * r + (o & 3)]; }

/* Q4_K / Q5_K (five: the fifth bits, bit j of qh byte i for sub-block j),
 * row by row as the file-order kernel: per super-block the integer sums
 * isum = sum_j sc_j sum_i q x and msum = sum_j m_j sum_i x, then
 * d_x (d isum - dmin msum). */
static void c_q45_k(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out, size_t os, int five) {
    const size_t bb = five ? 176 : 144;
    const int qo = five ? 48 : 16;
    for (int t = 0; t < nt; t++) {
        const int8_t *q = (const int8_t *)(xq + (size_t)t * xs);
        const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
        const int16_t *bs = (const int16_t *)(const void *)(xd + n / 256);
        for (int r = 0; r < 16; r++) {
            float acc = 0;
            for (int k = 0; k < n / 256; k++) {
                const uint8_t *g = b + (size_t)k * 16 * bb;
                uint8_t s[12];
                for (int i = 0; i < 12; i++) s[i] = at4(g, r, 4 + i);
                int isum = 0, msum = 0;
                for (int j = 0; j < 8; j++) {
                    int sc, mn;
                    tl_k_scale_min(s, j, &sc, &mn);
                    int sum = 0;
                    for (int i = 0; i < 32; i++) {
                        const int v = at4(g, r, qo + 32 * (j / 2) + i),
                                  h = five ? (at4(g, r, 16 + i) >> j & 1) << 4 : 0;
                        sum += ((j & 1 ? v >> 4 : v & 15) | h) * q[256 * k + 32 * j + i];
                    }
                    isum += sc * sum;
                    msum += mn * (bs[16 * k + 2 * j] + bs[16 * k + 2 * j + 1]);
                }
                acc += xd[k] * (tl_f16_to_f32(ld16(g + 2 * r)) * (float)isum -
                                tl_f16_to_f32(ld16(g + 32 + 2 * r)) * (float)msum);
            }
            out[(size_t)t * os + (size_t)r] = acc;
        }
    }
}

/* Q6_K, row by row as the file-order kernel: isum = sum_g sc_g (sum_i q x -
 * 32 sum_i x) over the 16 groups of 16, then d_x (d isum). */
static void c_q6_k(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n, float *out, size_t os) {
    for (int t = 0; t < nt; t++) {
        const int8_t *q = (const int8_t *)(xq + (size_t)t * xs);
        const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
        const int16_t *bs = (const int16_t *)(const void *)(xd + n / 256);
        for (int r = 0; r < 16; r++) {
            float acc = 0;
            for (int k = 0; k < n / 256; k++) {
                const uint8_t *g = b + (size_t)k * 16 * 210;
                int isum = 0;
                for (int grp = 0; grp < 16; grp++) {
                    const int h = grp / 8, rr = (grp / 2) % 4;
                    int sum = 0;
                    for (int i = 16 * (grp % 2); i < 16 * (grp % 2) + 16; i++) {
                        const uint8_t *p = g + q6_line(128 * h + i) + 4 * r + i % 4;
                        const int v = rr < 3 ? p[64 * rr] & 63 : p[0] >> 6 | (p[64] >> 6) << 2 | (p[128] >> 6) << 4;
                        sum += v * q[256 * k + 128 * h + 32 * rr + i];
                    }
                    isum += (int8_t)at4(g, r, 192 + grp) * (sum - 32 * bs[16 * k + grp]);
                }
                acc += xd[k] * (tl_f16_to_f32(ld16(g + 16 * 208 + 2 * r)) * (float)isum);
            }
            out[(size_t)t * os + (size_t)r] = acc;
        }
    }
}

/* ----------------------------------------------------------- AVX512-VNNI */

/* The prompt pass, where many tokens pass over each group: the group's n
 * columns unpacked once into one byte per weight (tl_kq_unpack), so that the
 * nibble and fifth-bit work above is done once per group instead of once per
 * 4 tokens.  Per super-block of a group (KQU_BYTES): 64 lines, line 4 g + c
 * holding elements 16 g + 4 c .. + 3 of the 16 rows (a dword per row, as in
 * the repacked layout), values 0-15 / 0-31 / 0-63; then the scales as int32
 * lanes (Q4_K/Q5_K: 8 sub-block scales and the mins as the int16 pairs of
 * pq45k_n; Q6_K: 16 signed group scales); then the f16 d (and dmin) of the 16
 * rows as the group holds them.  The kernel makes the same integer sums per
 * super-block as pq45k_n / pq6k_n and the same fp32 operations after them. */
#define KQU_LINES 4096
#define KQU_BYTES(six) ((six) ? KQU_LINES + 16 * 64 + 64 : KQU_LINES + 12 * 64 + 64)

#ifdef TL_X86
#define T512 "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c"
/* software prefetch distance in bytes (matvec_quant_i8.h) */
#define KPF TL_PACKED_PF
/* Q6_K also pulls its lines from L2 into L1 this far ahead: its three loads
 * per chunk otherwise wait on L2 in a kernel with more work per byte than
 * Q4_K's (decode products 4% faster on one thread by CPU time, Q6_K
 * matrices 27 -> 31 GB/s on two; Q4_K measured no gain from it) */
#define KPF_L1 2048

__attribute__((target(T512))) static inline __m512i bcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* A Q4_K/Q5_K super-block's 6-bit scales and mins for the 16 rows of a
 * group (its three scale lines at b + 64): byte j of lane r is row r's scale
 * (min) j in slo (mlo) for j < 4 and shi (mhi) for j - 4. */
__attribute__((target(T512), always_inline)) static inline void kscales512(const uint8_t *b, __m512i *slo, __m512i *shi,
                                                                           __m512i *mlo, __m512i *mhi) {
    const __m512i m4 = _mm512_set1_epi8(15), m6 = _mm512_set1_epi8(63), m2 = _mm512_set1_epi8(3);
    const __m512i u0 = _mm512_loadu_si512((const void *)(b + 64)), u1 = _mm512_loadu_si512((const void *)(b + 128)),
                  u2 = _mm512_loadu_si512((const void *)(b + 192));
    *slo = _mm512_and_si512(u0, m6);
    *mlo = _mm512_and_si512(u1, m6);
    *shi =
        _mm512_or_si512(_mm512_and_si512(u2, m4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m2), 4));
    *mhi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m2), 4));
}

/* token x's int16 sums per 16 elements of super-block k (tl_q8_quantize's
 * K-quant layout: after the n bytes and the n / 256 scales) */
static inline const int16_t *kbsums(const uint8_t *x, int n, int k) {
    return (const int16_t *)(const void *)((const float *)(const void *)(x + n) + n / 256) + 16 * k;
}

/* sum_j m_j sum_{i in sub-block j} x_i for the 16 rows: the mins as int16
 * pairs mp = (m0, m2), (m1, m3), (m4, m6), (m5, m7) against x's sums per 16
 * (bs) added per sub-block */
__attribute__((target(T512), always_inline)) static inline __m512i kmins512(const __m512i mp[4], const int16_t *bs) {
    uint16_t s[8];
    for (int j = 0; j < 8; j++) s[j] = (uint16_t)(bs[2 * j] + bs[2 * j + 1]);
    __m512i msum = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++) {
        const int j0 = (p / 2) * 4 + p % 2; /* the pairs (0, 2), (1, 3), (4, 6), (5, 7) */
        msum = _mm512_dpwssd_epi32(msum, mp[p], _mm512_set1_epi32((int)(s[j0] | (uint32_t)s[j0 + 2] << 16)));
    }
    return msum;
}

/* Q4_K / Q5_K (FIVE): per super-block, for the 16 rows at once: the scales
 * and mins decoded from the three scale lines, sub-block j's integer sum (8
 * vpdpbusd) times its scale (vpmulld), the mins against x's sums per
 * sub-block by vpdpwssd (m_j as int16 pairs), then the C kernel's fp32
 * operations per lane.  Q5_K's fifth bits stay in the file's qh bytes (bit j
 * for sub-block j), one line per 4-element chunk: each masked nibble, shifted
 * so that its fifth bit's place lines up with that bit in the qh line (or the
 * qh line shifted up a nibble, for sub-blocks 0-3), takes it by one
 * vpternlogd select; the nibble is then 1, 2, 4 or 8 times the 5-bit value
 * and the sum is shifted back, exactly. */
__attribute__((target(T512), always_inline)) static inline void pq45k_n(const uint8_t *b, const uint8_t *xq, size_t xs,
                                                                        int n, float *out, size_t os, const int FIVE,
                                                                        const int NT) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const size_t bb = FIVE ? 176 : 144, qo = FIVE ? 768 : 256; /* a group's super-block, its quants' offset */
    /* vpshufb controls taking byte j of every dword, zero-extended */
    const __m512i sel0 = _mm512_set4_epi32((int)0x8080800c, (int)0x80808008, (int)0x80808004, (int)0x80808000);
    __m512 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int k = 0; k < n / 256; k++, b += 16 * bb) {
        for (size_t l = 0; l < qo; l += 64) _mm_prefetch((const char *)b + KPF + l, TL_PACKED_PF_HINT);
        __m512i slo, shi, mlo, mhi;
        kscales512(b, &slo, &shi, &mlo, &mhi);
        /* the mins as int16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7) */
        const __m512i lo16 = _mm512_set1_epi32(0x00ff00ff);
        const __m512i mp[4] = {_mm512_and_si512(mlo, lo16), _mm512_srli_epi16(mlo, 8), _mm512_and_si512(mhi, lo16),
                               _mm512_srli_epi16(mhi, 8)};
        __m512i isum[4], msum[4];
        for (int t = 0; t < NT; t++) {
            msum[t] = kmins512(mp, kbsums(xq + (size_t)t * xs, n, k));
            isum[t] = _mm512_setzero_si512();
        }
        for (int p = 0; p < 4; p++) {
            const uint8_t *qp = b + qo + 512 * p;
            /* Q5_K: the low (high) nibbles hold 1 (2) times the value for
             * even p, 4 (8) times for odd p; Q4_K: 1 (16) */
            const int lsh = FIVE && p % 2 ? 2 : 0, hsh = FIVE ? (p % 2 ? 3 : 1) : 4;
            const __m512i sc0 = _mm512_shuffle_epi8(p < 2 ? slo : shi, _mm512_add_epi32(sel0, _mm512_set1_epi32(2 * (p % 2)))),
                          sc1 = _mm512_shuffle_epi8(p < 2 ? slo : shi,
                                                    _mm512_add_epi32(sel0, _mm512_set1_epi32(2 * (p % 2) + 1)));
            /* two chains per nibble (even and odd chunks) to hide vpdpbusd's
             * latency; Q4_K's high nibbles masked in place (16 times their
             * value, the sum shifted back once: exact, a multiple of 16)
             * instead of a shift per line */
            __m512i s0[4][2], s1[4][2];
            for (int t = 0; t < NT; t++) s0[t][0] = s0[t][1] = s1[t][0] = s1[t][1] = _mm512_setzero_si512();
            /* unrolled, so that c & 1 indexes registers, not a stack array */
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                _mm_prefetch((const char *)qp + KPF + 64 * c, TL_PACKED_PF_HINT);
                const __m512i v = _mm512_loadu_si512((const void *)(qp + 64 * c));
                __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_andnot_si512(m4, v);
                if (FIVE) {
                    /* sub-block 2p's fifth bit at bit 2p of qh, 2p + 1's
                     * at 2p + 1; moved to bits 4-7 for p < 2 */
                    const __m512i qh = _mm512_loadu_si512((const void *)(b + 256 + 64 * c)),
                                  h = p < 2 ? _mm512_slli_epi16(qh, 4) : qh;
                    if (p % 2) { /* bits 6 and 7: 4 and 8 times */
                        lo = _mm512_ternarylogic_epi32(h, _mm512_slli_epi16(lo, 2), _mm512_set1_epi8(0x40), 0xE4);
                        hi = _mm512_ternarylogic_epi32(h, _mm512_srli_epi16(hi, 1), _mm512_set1_epi8((char)0x80), 0xE4);
                    } else { /* bits 4 and 5: 1 and 2 times */
                        lo = _mm512_ternarylogic_epi32(h, lo, _mm512_set1_epi8(0x10), 0xE4);
                        hi = _mm512_ternarylogic_epi32(h, _mm512_srli_epi16(hi, 3), _mm512_set1_epi8(0x20), 0xE4);
                    }
                }
                for (int t = 0; t < NT; t++) {
                    const uint8_t *x = xq + (size_t)t * xs + 256 * k + 64 * p + 4 * c;
                    s0[t][c & 1] = _mm512_dpbusd_epi32(s0[t][c & 1], lo, bcast4(x));
                    s1[t][c & 1] = _mm512_dpbusd_epi32(s1[t][c & 1], hi, bcast4(x + 32));
                }
            }
            for (int t = 0; t < NT; t++) {
                const __m512i a = _mm512_srai_epi32(_mm512_add_epi32(s0[t][0], s0[t][1]), lsh),
                              h = _mm512_srai_epi32(_mm512_add_epi32(s1[t][0], s1[t][1]), hsh);
                isum[t] = _mm512_add_epi32(isum[t],
                                           _mm512_add_epi32(_mm512_mullo_epi32(a, sc0), _mm512_mullo_epi32(h, sc1)));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)b)),
                     dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(b + 32)));
        for (int t = 0; t < NT; t++) {
            const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
            const __m512 v = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[t])),
                                           _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(msum[t])));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_set1_ps(xd[k]), v));
        }
    }
    for (int t = 0; t < NT; t++) _mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

/* Q6_K: per 4-element chunk of the four runs of a half, three lines: runs
 * 0-2 one and each, run 3 (times 4) from their top bits by two shifts and two
 * vpternlogd selects; per group of 16 elements four vpdpbusd, the sum started
 * at -32 times x's sum there (-128 for run 3, shifted back once), times the
 * signed scale (vpmulld). */
__attribute__((target(T512), always_inline)) static inline void pq6k_n(const uint8_t *b, const uint8_t *xq, size_t xs,
                                                                       int n, float *out, size_t os, const int NT) {
    const __m512i m63 = _mm512_set1_epi8(63), mf0 = _mm512_set1_epi8((char)0xf0), mc0 = _mm512_set1_epi8((char)0xc0);
    /* vpshufb controls putting byte 0 of every dword in its top byte */
    const __m512i top0 = _mm512_set4_epi32(12 << 24, 8 << 24, 4 << 24, 0);
    __m512 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int k = 0; k < n / 256; k++, b += 16 * 210) {
        for (int l = 3072; l < 16 * 210; l += 64) _mm_prefetch((const char *)b + KPF + l, TL_PACKED_PF_HINT);
        __m512i isum[4];
        for (int t = 0; t < NT; t++) isum[t] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++)
            for (int gg = 0; gg < 2; gg++) { /* chunks 4 gg .. 4 gg + 3: group 8 h + 2 l + gg of run l */
                __m512i s[4][4];
                for (int t = 0; t < NT; t++) {
                    const int16_t *bs = kbsums(xq + (size_t)t * xs, n, k);
                    for (int l = 0; l < 4; l++) s[t][l] = _mm512_set1_epi32((l < 3 ? -32 : -128) * bs[8 * h + 2 * l + gg]);
                }
                for (int c = 4 * gg; c < 4 * gg + 4; c++) {
                    const uint8_t *p = b + 192 * (8 * h + c);
                    for (int l = 0; l < 3; l++) _mm_prefetch((const char *)p + KPF + 64 * l, TL_PACKED_PF_HINT);
                    for (int l = 0; l < 3; l++) _mm_prefetch((const char *)p + KPF_L1 + 64 * l, _MM_HINT_T0);
                    const __m512i p0 = _mm512_loadu_si512((const void *)p), p1 = _mm512_loadu_si512((const void *)(p + 64)),
                                  p2 = _mm512_loadu_si512((const void *)(p + 128));
                    /* run 3 times 4 (two shifts, not three): bits 2-3 from p0's
                     * top bits, 4-5 from p1's, 6-7 from p2's in place (select:
                     * c ? a : b) */
                    const __m512i t12 = _mm512_ternarylogic_epi32(p2, _mm512_srli_epi16(p1, 2), mc0, 0xE4);
                    const __m512i w[4] = {_mm512_and_si512(p0, m63), _mm512_and_si512(p1, m63), _mm512_and_si512(p2, m63),
                                          _mm512_ternarylogic_epi32(t12, _mm512_srli_epi16(_mm512_andnot_si512(m63, p0), 4), mf0, 0xE4)};
                    for (int t = 0; t < NT; t++) {
                        const uint8_t *x = xq + (size_t)t * xs + 256 * k + 128 * h + 4 * c;
                        for (int l = 0; l < 4; l++) s[t][l] = _mm512_dpbusd_epi32(s[t][l], w[l], bcast4(x + 32 * l));
                    }
                }
                for (int l = 0; l < 4; l++) {
                    const int grp = 8 * h + 2 * l + gg;
                    /* the signed scale byte moved to the top of each dword by
                     * vpshufb (port 5) and sign-extended by one shift */
                    const __m512i sc = _mm512_srai_epi32(
                        _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)(b + 3072 + 64 * (grp / 4))),
                                            _mm512_add_epi32(top0, _mm512_set1_epi32((grp % 4) << 24))),
                        24);
                    for (int t = 0; t < NT; t++) {
                        /* run 3's sum is 4 times, exactly */
                        const __m512i v = l < 3 ? s[t][l] : _mm512_srai_epi32(s[t][l], 2);
                        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(v, sc));
                    }
                }
            }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(b + 16 * 208)));
        for (int t = 0; t < NT; t++) {
            const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
            acc[t] = _mm512_add_ps(acc[t],
                                   _mm512_mul_ps(_mm512_set1_ps(xd[k]), _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[t]))));
        }
    }
    for (int t = 0; t < NT; t++) _mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

/* a tl_q8_packed_fn named name whose body, body(NT), is compiled for NT = 1-4 */
#define KDEF512(name, body)                                                                                            \
    __attribute__((target(T512))) static void name(const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n,      \
                                                   float *out, size_t os) {                                            \
        NT_SWITCH(body)                                                                                                \
    }
#define B_Q4_K(N) pq45k_n(b, xq, xs, n, out, os, 0, N)
#define B_Q5_K(N) pq45k_n(b, xq, xs, n, out, os, 1, N)
#define B_Q6_K(N) pq6k_n(b, xq, xs, n, out, os, N)
KDEF512(pq4k_512, B_Q4_K)
KDEF512(pq5k_512, B_Q5_K)
KDEF512(pq6k_512, B_Q6_K)


__attribute__((target(T512))) static inline __m512i srl16(__m512i v, int s) {
    return _mm512_srl_epi16(v, _mm_cvtsi32_si128(s));
}

__attribute__((target(T512))) static void unpack45(const uint8_t *b, int n, uint8_t *u, int five) {
    const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1), lo16 = _mm512_set1_epi32(0x00ff00ff);
    const __m512i sel0 = _mm512_set4_epi32((int)0x8080800c, (int)0x80808008, (int)0x80808004, (int)0x80808000);
    const size_t bb = five ? 176 : 144, qo = five ? 768 : 256;
    for (int k = 0; k < n / 256; k++, b += 16 * bb, u += KQU_BYTES(0)) {
        for (size_t l = 0; l < 16 * bb; l += 64) _mm_prefetch((const char *)b + KPF + l, TL_PACKED_PF_HINT);
        __m512i slo, shi, mlo, mhi;
        kscales512(b, &slo, &shi, &mlo, &mhi);
        __m512i *sc = (__m512i *)(void *)(u + KQU_LINES);
        for (int j = 0; j < 8; j++)
            _mm512_storeu_si512(
                sc + j, _mm512_shuffle_epi8(j < 4 ? slo : shi, _mm512_add_epi32(sel0, _mm512_set1_epi32(j % 4))));
        _mm512_storeu_si512(sc + 8, _mm512_and_si512(mlo, lo16));
        _mm512_storeu_si512(sc + 9, _mm512_srli_epi16(mlo, 8));
        _mm512_storeu_si512(sc + 10, _mm512_and_si512(mhi, lo16));
        _mm512_storeu_si512(sc + 11, _mm512_srli_epi16(mhi, 8));
        memcpy(sc + 12, b, 64); /* d[16], dmin[16] */
        for (int p = 0; p < 4; p++)
            for (int c = 0; c < 8; c++) {
                /* low nibbles: sub-block 2 p, high: 2 p + 1; fifth bits at bits 2 p, 2 p + 1 of qh */
                const __m512i v = _mm512_loadu_si512((const void *)(b + qo + 512 * p + 64 * c));
                __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                if (five) {
                    const __m512i qh = _mm512_loadu_si512((const void *)(b + 256 + 64 * c));
                    lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(srl16(qh, 2 * p), one), 4));
                    hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(srl16(qh, 2 * p + 1), one), 4));
                }
                _mm512_storeu_si512((void *)(u + 64 * (16 * p + c)), lo);
                _mm512_storeu_si512((void *)(u + 64 * (16 * p + 8 + c)), hi);
            }
    }
}

__attribute__((target(T512))) static void unpack6(const uint8_t *b, int n, uint8_t *u) {
    const __m512i m63 = _mm512_set1_epi8(63), mf0 = _mm512_set1_epi8((char)0xf0), mc0 = _mm512_set1_epi8((char)0xc0);
    const __m512i top0 = _mm512_set4_epi32(12 << 24, 8 << 24, 4 << 24, 0);
    for (int k = 0; k < n / 256; k++, b += 16 * 210, u += KQU_BYTES(1)) {
        for (int l = 0; l < 16 * 210; l += 64) _mm_prefetch((const char *)b + KPF + l, TL_PACKED_PF_HINT);
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 8; c++) {
                const uint8_t *p = b + 192 * (8 * h + c);
                const __m512i p0 = _mm512_loadu_si512((const void *)p), p1 = _mm512_loadu_si512((const void *)(p + 64)),
                              p2 = _mm512_loadu_si512((const void *)(p + 128));
                /* run 3 as pq6k_n makes it (4 times the value), shifted back */
                const __m512i t12 = _mm512_ternarylogic_epi32(p2, _mm512_srli_epi16(p1, 2), mc0, 0xE4);
                const __m512i w3 =
                    _mm512_ternarylogic_epi32(t12, _mm512_srli_epi16(_mm512_andnot_si512(m63, p0), 4), mf0, 0xE4);
                const __m512i w[4] = {_mm512_and_si512(p0, m63), _mm512_and_si512(p1, m63), _mm512_and_si512(p2, m63),
                                      _mm512_and_si512(_mm512_srli_epi16(w3, 2), m63)};
                for (int l = 0; l < 4; l++) /* elements 128 h + 32 l + 4 c: line 32 h + 8 l + c */
                    _mm512_storeu_si512((void *)(u + 64 * (32 * h + 8 * l + c)), w[l]);
            }
        __m512i *sc = (__m512i *)(void *)(u + KQU_LINES);
        for (int g = 0; g < 16; g++)
            _mm512_storeu_si512(
                sc + g,
                _mm512_srai_epi32(_mm512_shuffle_epi8(_mm512_loadu_si512((const void *)(b + 3072 + 64 * (g / 4))),
                                                      _mm512_add_epi32(top0, _mm512_set1_epi32((g % 4) << 24))),
                                  24));
        memcpy(sc + 16, b + 16 * 208, 32); /* d[16] */
    }
}

/* G groups (16 G rows) of unpacked super-blocks at u0 (and u1), per pass Q =
 * 4 / G 16-element groups: with G = 2 each token's broadcast of 4
 * activations feeds both groups' lines, 0.75 loads per vpdpbusd instead of
 * 1.25 with G = 1 (one thread on the Zen 5 VM: 4.2 -> 5.2 G vpdpbusd/s, where
 * a loop of register operands alone reaches 7.1); 16 chains either way (G x
 * 4 tokens x Q).  out[t * os + 16 g + r]. */
__attribute__((target(T512), always_inline)) static inline void uq_n(const uint8_t *u0, const uint8_t *u1,
                                                                     const uint8_t *xq, size_t xs, int n, float *out,
                                                                     size_t os, const int G, const int SIX,
                                                                     const int NT) {
    const int Q = 4 / G;
    __m512 acc[2][4];
    for (int g = 0; g < G; g++)
        for (int t = 0; t < NT; t++) acc[g][t] = _mm512_setzero_ps();
    const size_t ub = KQU_BYTES(SIX);
    for (int k = 0; k < n / 256; k++) {
        const uint8_t *ug[2] = {u0 + (size_t)k * ub, G > 1 ? u1 + (size_t)k * ub : NULL};
        __m512i isum[2][4];
        for (int g = 0; g < G; g++)
            for (int t = 0; t < NT; t++) isum[g][t] = _mm512_setzero_si512();
        for (int jp = 0; jp < 16 / Q; jp++) { /* 16-element groups Q jp .. Q jp + Q - 1 */
            __m512i s[2][4][4];
            for (int t = 0; t < NT; t++) {
                const int16_t *bs = kbsums(xq + (size_t)t * xs, n, k);
                for (int q = 0; q < Q; q++)
                    for (int g = 0; g < G; g++)
                        s[g][t][q] = SIX ? _mm512_set1_epi32(-32 * bs[Q * jp + q]) : _mm512_setzero_si512();
            }
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                for (int q = 0; q < Q; q++) {
                    __m512i w[2];
                    for (int g = 0; g < G; g++)
                        w[g] = _mm512_loadu_si512((const void *)(ug[g] + 64 * (4 * (Q * jp + q) + c)));
                    for (int t = 0; t < NT; t++) {
                        const __m512i b = bcast4(xq + (size_t)t * xs + 256 * k + 16 * (Q * jp + q) + 4 * c);
                        for (int g = 0; g < G; g++) s[g][t][q] = _mm512_dpbusd_epi32(s[g][t][q], w[g], b);
                    }
                }
            for (int g = 0; g < G; g++) {
                const __m512i *sc = (const __m512i *)(const void *)(ug[g] + KQU_LINES);
                for (int t = 0; t < NT; t++)
                    for (int q = 0; q < Q; q += 2) { /* Q6_K: a scale per 16, Q4_K/Q5_K per 32 */
                        const int e = Q * jp + q;
                        const __m512i v =
                            SIX ? _mm512_add_epi32(_mm512_mullo_epi32(s[g][t][q], _mm512_loadu_si512(sc + e)),
                                                   _mm512_mullo_epi32(s[g][t][q + 1], _mm512_loadu_si512(sc + e + 1)))
                                : _mm512_mullo_epi32(_mm512_add_epi32(s[g][t][q], s[g][t][q + 1]),
                                                     _mm512_loadu_si512(sc + e / 2));
                        isum[g][t] = _mm512_add_epi32(isum[g][t], v);
                    }
            }
        }
        for (int g = 0; g < G; g++) {
            const __m512i *sc = (const __m512i *)(const void *)(ug[g] + KQU_LINES);
            const uint8_t *dd = (const uint8_t *)(sc + (SIX ? 16 : 12));
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)dd));
            for (int t = 0; t < NT; t++) {
                const float *xd = (const float *)(const void *)(xq + (size_t)t * xs + n);
                if (SIX) {
                    acc[g][t] =
                        _mm512_add_ps(acc[g][t], _mm512_mul_ps(_mm512_set1_ps(xd[k]),
                                                               _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[g][t]))));
                } else {
                    const __m512i mp[4] = {_mm512_loadu_si512(sc + 8), _mm512_loadu_si512(sc + 9),
                                           _mm512_loadu_si512(sc + 10), _mm512_loadu_si512(sc + 11)};
                    const __m512i msum = kmins512(mp, kbsums(xq + (size_t)t * xs, n, k));
                    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(dd + 32)));
                    const __m512 v = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[g][t])),
                                                   _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(msum)));
                    acc[g][t] = _mm512_add_ps(acc[g][t], _mm512_mul_ps(_mm512_set1_ps(xd[k]), v));
                }
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(out + (size_t)t * os + 16 * g, acc[g][t]);
}

#define B_U2_45(N) uq_n(u0, u1, xq, xs, n, out, os, 2, 0, N)
#define B_U2_6(N) uq_n(u0, u1, xq, xs, n, out, os, 2, 1, N)
__attribute__((target(T512))) static void uq2_45_512(const uint8_t *u0, const uint8_t *u1, const uint8_t *xq, size_t xs,
                                                     int nt, int n, float *out, size_t os) {
    NT_SWITCH(B_U2_45)
}
__attribute__((target(T512))) static void uq2_6_512(const uint8_t *u0, const uint8_t *u1, const uint8_t *xq, size_t xs,
                                                    int nt, int n, float *out, size_t os) {
    NT_SWITCH(B_U2_6)
}

#define B_U45(N) uq_n(b, NULL, xq, xs, n, out, os, 1, 0, N)
#define B_U6(N) uq_n(b, NULL, xq, xs, n, out, os, 1, 1, N)
KDEF512(uq45_512, B_U45)
KDEF512(uq6_512, B_U6)

/* ------------------------------------------------------- AVX2, AVX-VNNI */

#define TGT "avx2,fma,f16c"
#define SFX(f) f##_avx2
#define KVNNI 0
#include "matvec_quant_kpack_avx2.inc"
#undef TGT
#undef SFX
#undef KVNNI

#define TGT "avx2,fma,f16c,avxvnni"
#define SFX(f) f##_avxvnni
#define KVNNI 1
#include "matvec_quant_kpack_avx2.inc"
#undef TGT
#undef SFX
#undef KVNNI
#endif /* x86 */

/* ISA i's kernel for type (Q4_K, Q5_K, Q6_K), NULL where only the portable one runs. */
static tl_q8_packed_fn simd_kernel(tl_q8_isa i, uint32_t type) {
#ifdef TL_X86
    static const tl_q8_packed_fn k512[3] = {pq4k_512, pq5k_512, pq6k_512},
                                 kvnni[3] = {pq4k_avxvnni, pq5k_avxvnni, pq6k_avxvnni},
                                 kavx2[3] = {pq4k_avx2, pq5k_avx2, pq6k_avx2};
    const int j = type == TL_GGML_Q4_K ? 0 : type == TL_GGML_Q5_K ? 1 : 2;
    if (i == TL_Q8_AVX512VNNI) return k512[j];
    if (i == TL_Q8_AVXVNNI) return kvnni[j];
    if (i == TL_Q8_AVX2) return kavx2[j];
#else
    (void)i, (void)type;
#endif
    return NULL;
}

void tl_kq_packed_dot(tl_q8_isa i, uint32_t type, const uint8_t *b, const uint8_t *xq, size_t xs, int nt, int n,
                      float *out, size_t os) {
    const tl_q8_packed_fn f = simd_kernel(i, type);
    for (int t = 0; t < nt; t += 4) {
        const int m = nt - t < 4 ? nt - t : 4;
        const uint8_t *x = xq + (size_t)t * xs;
        float *o = out + (size_t)t * os;
        if (f)
            f(b, x, xs, m, n, o, os);
        else if (type == TL_GGML_Q6_K)
            c_q6_k(b, x, xs, m, n, o, os);
        else
            c_q45_k(b, x, xs, m, n, o, os, type == TL_GGML_Q5_K);
    }
}

size_t tl_kq_unpacked_bytes(uint32_t type, int n) { return (size_t)(n / 256) * KQU_BYTES(type == TL_GGML_Q6_K); }

int tl_kq_unpack_from(tl_q8_isa i, uint32_t type) {
#ifdef TL_X86
    /* where unpacking a group paid for itself in batched products of one
     * thread over 12 matrices of 5632 x 2048 streamed from memory, with and
     * without it, on the Zen 5 VM (docs/inference.md); AVX2's Q4_K never did
     * (its packed kernel unpacks a nibble pair in three operations) */
    const int j = type == TL_GGML_Q4_K ? 0 : type == TL_GGML_Q5_K ? 1 : type == TL_GGML_Q6_K ? 2 : -1;
    static const int from[3][3] = {{64, 32, 8}, /* AVX512-VNNI: Q4_K, Q5_K, Q6_K */
                                   {32, 16, 8}, /* AVX-VNNI */
                                   {0, 16, 8}}; /* AVX2 */
    if (j < 0) return 0;
    if (i == TL_Q8_AVX512VNNI) return from[0][j];
    if (i == TL_Q8_AVXVNNI) return from[1][j];
    if (i == TL_Q8_AVX2) return from[2][j];
#else
    (void)i, (void)type;
#endif
    return 0;
}

void tl_kq_unpack(tl_q8_isa i, uint32_t type, const uint8_t *b, int n, void *dst) {
#ifdef TL_X86
    const int wide = i == TL_Q8_AVX512VNNI;
    if (type == TL_GGML_Q6_K)
        (wide ? unpack6 : unpack6_256)(b, n, dst);
    else
        (wide ? unpack45 : unpack45_256)(b, n, dst, type == TL_GGML_Q5_K);
#else
    (void)i, (void)type, (void)b, (void)n, (void)dst;
#endif
}

#ifdef TL_X86
static tl_q8_packed_fn unpacked_kernel(tl_q8_isa i, uint32_t type) {
    const int six = type == TL_GGML_Q6_K;
    if (i == TL_Q8_AVX512VNNI) return six ? uq6_512 : uq45_512;
    if (i == TL_Q8_AVXVNNI) return six ? uq6_avxvnni : uq45_avxvnni;
    return six ? uq6_avx2 : uq45_avx2;
}
#endif

void tl_kq_unpacked_dot(tl_q8_isa i, uint32_t type, const void *u, const uint8_t *xq, size_t xs, int nt, int n,
                        float *out, size_t os) {
#ifdef TL_X86
    const tl_q8_packed_fn f = unpacked_kernel(i, type);
    for (int t = 0; t < nt; t += 4) {
        const int m = nt - t < 4 ? nt - t : 4;
        f(u, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
    }
#else
    (void)i, (void)type, (void)u, (void)xq, (void)xs, (void)nt, (void)n, (void)out, (void)os;
#endif
}

void tl_kq_unpacked_dot2(tl_q8_isa i, uint32_t type, const void *u0, const void *u1, const uint8_t *xq, size_t xs,
                         int nt, int n, float *out, size_t os) {
#ifdef TL_X86
    if (i != TL_Q8_AVX512VNNI) { /* the 256-bit kernels have no registers to spare: one group after the other */
        tl_kq_unpacked_dot(i, type, u0, xq, xs, nt, n, out, os);
        tl_kq_unpacked_dot(i, type, u1, xq, xs, nt, n, out + 16, os);
        return;
    }
    for (int t = 0; t < nt; t += 4) {
        const int m = nt - t < 4 ? nt - t : 4;
        if (type == TL_GGML_Q6_K)
            uq2_6_512(u0, u1, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
        else
            uq2_45_512(u0, u1, xq + (size_t)t * xs, xs, m, n, out + (size_t)t * os, os);
    }
#else
    (void)i, (void)type, (void)u0, (void)u1, (void)xq, (void)xs, (void)nt, (void)n, (void)out, (void)os;
#endif
}

/* AVX-512 prompt kernel for float weights (F32/F16/BF16) times float activations: the AVX2
   kernel's products (tl_gemm_float_avx2, gemm_avx2.c) bit for bit, twice as wide per FMA.

   The AVX2 kernel computes each element (row r, token t) as one 8-lane accumulator, lane l
   adding fma(w[r][i + l], x[t][i + l], acc) for i = 0, 8, 16, ... while i + 8 <= n, then
   hsum_ps and the scalar tail k = i..n-1 in order. Here one 512-bit register holds two such
   accumulators side by side: the low 256 bits are row r's, the high 256 bits row r + 1's, and the
   token's 8 floats are broadcast to both halves. Every 512-bit FMA is then exactly two of the
   AVX2 kernel's FMAs, lane for lane (F16 and BF16 convert to float exactly either way). At the
   end each half gets hsum_ps's additions (the same operands in the same order, done for 8
   accumulators at once, hsum16) and then the same scalar tail. A tile is PAIRS row pairs by
   TOKS tokens (3 x 8: 24 accumulators, 3 weight registers and one token fill 28 of the 32 zmm
   registers, and each pair of weight loads feeds 8 FMAs); the last odd row goes to the AVX2
   kernel, which gives the same bits by construction. Only AVX512F is used beyond AVX2 (the
   256-bit moves go through the f64x4 forms, not AVX512DQ's f32x8 ones: the same bits). */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_VNNI_BEGIN

#include "avx2_util.h"

#define PAIRS 3 /* row pairs per tile */
#define TOKS 8  /* tokens per tile */

/* w0[i..i+7] in the low half, w1[i..i+7] in the high half, as floats. */
TL_INLINE __m512 load_pair(int wtype, const uint8_t *w0, const uint8_t *w1, int64_t i) {
    if (wtype == TL_F32) {
        __m256d lo = _mm256_loadu_pd((const double *)((const float *)w0 + i));
        __m256d hi = _mm256_loadu_pd((const double *)((const float *)w1 + i));
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
    }
    __m128i lo = _mm_loadu_si128((const __m128i *)((const uint16_t *)w0 + i));
    __m128i hi = _mm_loadu_si128((const __m128i *)((const uint16_t *)w1 + i));
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    if (wtype == TL_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* x[0..7] in both halves (one broadcast load). */
TL_INLINE __m512 bcast8(const float *x) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)x)));
}

/* hsum_ps of both halves of 8 accumulators at once: out[2k + h] = hsum_ps(half h of a[k]).
   hsum_ps adds, per half v: s_j = v_j + v_{j+4}, then s_0 + s_2 and s_1 + s_3, then those two;
   these are the same additions (the same operands, in the same order), 16 lanes at a time. */
TL_INLINE void hsum16(const __m512 a[8], float out[16]) {
    __m512 s1[4], s2[2];
    for (int k = 0; k < 4; k++) {  /* 128-bit lanes: [a_2k.h0, a_2k.h1, a_2k+1.h0, a_2k+1.h1] */
        __m512 u = a[2 * k], v = a[2 * k + 1];
        s1[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int m = 0; m < 2; m++) {  /* per 128-bit lane: [u0 + u2, u1 + u3, v0 + v2, v1 + v3] */
        __m512 u = s1[2 * m], v = s1[2 * m + 1];
        s2[m] = _mm512_add_ps(_mm512_shuffle_ps(u, v, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(u, v, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    /* per 128-bit lane: [u0 + u1, u2 + u3, v0 + v1, v2 + v3] */
    __m512 f = _mm512_add_ps(_mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* f[4q + e] is lane q of s1[e], that is half q & 1 of a[2e + q / 2]: a 4 x 4 transpose */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, f));
}

/* Rows 0..2P-1 (rb bytes apart) times tokens 0..T-1 (ldx floats apart) into y[t * ldy + r]. */
TL_INLINE void float_tile(int wtype, int P, int T, const uint8_t *w, size_t rb, const float *x,
                          int64_t ldx, int64_t n, float *y, int64_t ldy) {
    __m512 acc[PAIRS][TOKS];
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++) acc[p][t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512 wv[PAIRS];
        for (int p = 0; p < P; p++)
            wv[p] = load_pair(wtype, w + 2 * p * rb, w + (2 * p + 1) * rb, i);
        for (int t = 0; t < T; t++) {
            __m512 xv = bcast8(x + t * ldx + i);
            for (int p = 0; p < P; p++) acc[p][t] = _mm512_fmadd_ps(wv[p], xv, acc[p][t]);
        }
    }
    /* sums[2 (p T + t) + h]: hsum_ps of row 2p + h, token t; then the scalar tail in order */
    float sums[2 * PAIRS * TOKS + 16];  /* + 16: the last group of 8 may be partial */
    for (int g = 0; g < P * T; g += 8) {
        __m512 a[8];
        for (int k = 0; k < 8; k++)
            a[k] = g + k < P * T ? acc[(g + k) / T][(g + k) % T] : _mm512_setzero_ps();
        hsum16(a, sums + 2 * g);
    }
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < 2; h++) {
                const uint8_t *wr = w + (2 * p + h) * rb;
                float s = sums[2 * (p * T + t) + h];
                for (int64_t k = i; k < n; k++) s += scalar_w(wtype, wr, k) * x[t * ldx + k];
                y[t * ldy + 2 * p + h] = s;
            }
}

/* One function per weight type, a tile of P (PAIRS or 1) pairs by T (1..TOKS) tokens. */
#define FLOAT_TILE_CASE(WT, P, T)                                                               \
    case T: float_tile(WT, P, T, w, rb, x, ldx, n, y, ldy); break;
#define FLOAT_TILE_SWITCH(WT, P)                                                                \
    switch (T) {                                                                                \
        FLOAT_TILE_CASE(WT, P, 1) FLOAT_TILE_CASE(WT, P, 2) FLOAT_TILE_CASE(WT, P, 3)           \
        FLOAT_TILE_CASE(WT, P, 4) FLOAT_TILE_CASE(WT, P, 5) FLOAT_TILE_CASE(WT, P, 6)           \
        FLOAT_TILE_CASE(WT, P, 7) FLOAT_TILE_CASE(WT, P, 8)                                     \
    }
static_assert(TOKS == 8, "FLOAT_TILE_SWITCH has a case for each token count 1..TOKS");

#define FLOAT_TILES(NAME, WT)                                                                   \
    static void NAME(int P, int T, const uint8_t *w, size_t rb, const float *x, int64_t ldx,   \
                     int64_t n, float *y, int64_t ldy) {                                        \
        if (P == PAIRS) FLOAT_TILE_SWITCH(WT, PAIRS)                                            \
        else FLOAT_TILE_SWITCH(WT, 1)                                                           \
    }

FLOAT_TILES(tiles_f32, TL_F32)
FLOAT_TILES(tiles_f16, TL_F16)
FLOAT_TILES(tiles_bf16, TL_BF16)

void tl_gemm_float_avx512(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr,
                          const float *x, int64_t ldx, int64_t nt, int64_t n_in, float *y,
                          int64_t ldy) {
    void (*fn)(int, int, const uint8_t *, size_t, const float *, int64_t, int64_t, float *,
               int64_t) = wtype == TL_F32 ? tiles_f32 : wtype == TL_F16 ? tiles_f16 : tiles_bf16;
    int64_t r = 0;
    while (nr - r >= 2) {
        int P = nr - r >= 2 * PAIRS ? PAIRS : 1;
        for (int64_t t = 0; t < nt; t += TOKS) {
            int T = nt - t >= TOKS ? TOKS : (int)(nt - t);
            fn(P, T, w + r * row_bytes, row_bytes, x + t * ldx, ldx, n_in, y + t * ldy + r, ldy);
        }
        r += 2 * P;
    }
    if (r < nr)  /* one odd row */
        tl_gemm_float_avx2(wtype, w + r * row_bytes, row_bytes, nr - r, x, ldx, nt, n_in, y + r,
                           ldy);
}

TL_VNNI_END
#endif

/* AVX2 tile kernels of TL_PATH_PACKED (packed.h): one tile of 8 repacked rows against 1..4
   tokens. Each 256-bit weight load serves 8 rows (one per 32-bit lane) and every token of the
   step; a token's 4 matching activation bytes are broadcast to all lanes and maddubs gives the
   8 rows' partial sums in lanes, so no horizontal sums are needed. Twins of the _ref kernels in
   packed.c, with the same operations in the same order (bit-identical results). */
#include "packed.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"

#ifndef TL_RP_PF
#define TL_RP_PF 4096 /* bytes ahead of the tile stream: about twice the row dots' distance, */
#endif                  /* as a tile block costs a third of their work per byte */
#ifndef TL_RP_NPF
#define TL_RP_NPF 3     /* lines prefetched per 32-element block (2.5 lines for Q4_1) */
#endif

/* The 4 activation bytes at p in every 32-bit lane. */
TL_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

TL_INLINE void store8(__m256 v, float *y, int64_t nr) {
    if (nr >= TL_RP_ROWS) {
        _mm256_storeu_ps(y, v);
        return;
    }
    float tmp[TL_RP_ROWS];
    _mm256_storeu_ps(tmp, v);
    for (int64_t r = 0; r < nr; r++) y[r] = tmp[r];
}

/* 4-bit quants: per block, 4 loads give the 8 chunks of 4 elements (low and high nibbles); the
   8 maddubs products per token are summed in int16 (8 * 2 * 15 * 127 < 2^15), then widened. */
TL_INLINE void q4_tile(int q41, int NT, const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *act,
                       int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    const size_t step = q41 ? sizeof(tl_rp_q4) : sizeof(tl_rp_q40);
    for (int64_t b = 0; b < nb; b++) {
        const tl_rp_q4 *blk = (const tl_rp_q4 *)((const uint8_t *)p + (size_t)b * step);
        for (int k = 0; k < TL_RP_NPF; k++)
            _mm_prefetch((const char *)blk + TL_RP_PF + 64 * k, _MM_HINT_T0);
        const tl_act_q8 *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i s16[4];
        for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
        for (int g = 0; g < 4; g++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)blk->q[g]);
            __m256i lo = _mm256_and_si256(raw, low);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            for (int t = 0; t < NT; t++) {
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast4(x[t]->qs + 4 * g)));
                s16[t] = _mm256_add_epi16(s16[t],
                                          _mm256_maddubs_epi16(hi, bcast4(x[t]->qs + 16 + 4 * g)));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
        __m256 m = q41 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->m))
                       : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
        for (int t = 0; t < NT; t++) {
            __m256 isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16[t], ones));
            acc[t] = _mm256_fmadd_ps(isum, _mm256_mul_ps(d, _mm256_set1_ps(x[t]->d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(x[t]->s), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) store8(acc[t], y + t * ldy, nr);
}

/* Signed 8-bit quants: |w| times x with w's sign, widened to int32 per chunk. */
TL_INLINE void q8_tile(int NT, const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *act, int64_t as,
                       float *y, int64_t ldy, int64_t nr) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const tl_rp_q8 *blk = p + b;
        _mm_prefetch((const char *)blk + TL_RP_PF, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + TL_RP_PF + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + TL_RP_PF + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + TL_RP_PF + 192, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + TL_RP_PF + 256, _MM_HINT_T0);
        const tl_act_q8 *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i s32[4];
        for (int t = 0; t < NT; t++) s32[t] = _mm256_setzero_si256();
        for (int c = 0; c < 8; c++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)blk->q[c]);
            __m256i aw = _mm256_sign_epi8(wv, wv);
            for (int t = 0; t < NT; t++) {
                __m256i xs = _mm256_sign_epi8(bcast4(x[t]->qs + 4 * c), wv);
                s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
        for (int t = 0; t < NT; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]),
                                     _mm256_mul_ps(d, _mm256_set1_ps(x[t]->d)), acc[t]);
    }
    for (int t = 0; t < NT; t++) store8(acc[t], y + t * ldy, nr);
}

/* The 8 rows' bytes v[0..7] as int16 pairs (v, v) in 32-bit lanes: a madd against int16 pairs
   (a, b) gives v * (a + b) per row. */
TL_INLINE __m256i pairs8(const uint8_t *v) {
    __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)v));
    return _mm256_or_si256(w, _mm256_slli_epi32(w, 16));
}

/* Q4_K: per sub-block s (32 elements, 8 groups of 4) the maddubs products sum in int16 as in
   q4_tile, then one madd with the scale pairs widens and scales them (|sum| < 2^15, sc < 64);
   the mins meet the activations' 16-element sums the same way. Sub-blocks are taken in order
   0..7, each by its own pass over its 8 weight loads, so 12 accumulators fit in registers. */
TL_INLINE void q4k_tile(int NT, const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *act,
                        int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const tl_rp_q4k *blk = p + b;
        for (int k = 0; k < 19; k++)
            _mm_prefetch((const char *)blk + TL_RP_PF + 64 * k, _MM_HINT_T0);
        const tl_block_q8_K *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i isum[4], msum[4];
        for (int t = 0; t < NT; t++) isum[t] = msum[t] = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            __m256i s16[4];
            for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
            for (int gg = 0; gg < 8; gg++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)blk->q[8 * (s / 2) + gg]);
                __m256i wv = s % 2 ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), low)
                                   : _mm256_and_si256(raw, low);
                for (int t = 0; t < NT; t++)
                    s16[t] = _mm256_add_epi16(
                        s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 32 * s + 4 * gg)));
            }
            __m256i sc = pairs8(blk->sc[s]), mn = pairs8(blk->mn[s]);
            for (int t = 0; t < NT; t++) {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
                __m256i bs;
                int32_t pair;
                memcpy(&pair, &x[t]->bsums[2 * s], 4);
                bs = _mm256_set1_epi32(pair);
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mn, bs));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
        __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->dmin));
        for (int t = 0; t < NT; t++) {
            __m256 dx = _mm256_set1_ps(x[t]->d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, dx), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dm, dx), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) store8(acc[t], y + t * ldy, nr);
}

#define RP_Q4K(NAME, NT)                                                                        \
    static void NAME(const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *a, int64_t as,        \
                     float *y, int64_t ldy, int64_t nr) {                                       \
        q4k_tile(NT, p, nb, a, as, y, ldy, nr);                                                 \
    }

RP_Q4K(q4k_1, 1) RP_Q4K(q4k_2, 2) RP_Q4K(q4k_3, 3) RP_Q4K(q4k_4, 4)

#define RP_Q4(NAME, Q41, NT)                                                                    \
    static void NAME(const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *a, int64_t as, float *y,   \
                     int64_t ldy, int64_t nr) {                                                 \
        q4_tile(Q41, NT, p, nb, a, as, y, ldy, nr);                                             \
    }
#define RP_Q8(NAME, NT)                                                                         \
    static void NAME(const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *a, int64_t as, float *y,   \
                     int64_t ldy, int64_t nr) {                                                 \
        q8_tile(NT, p, nb, a, as, y, ldy, nr);                                                  \
    }

RP_Q4(q40_1, 0, 1) RP_Q4(q40_2, 0, 2) RP_Q4(q40_3, 0, 3) RP_Q4(q40_4, 0, 4)
RP_Q4(q41_1, 1, 1) RP_Q4(q41_2, 1, 2) RP_Q4(q41_3, 1, 3) RP_Q4(q41_4, 1, 4)
RP_Q8(q80_1, 1) RP_Q8(q80_2, 2) RP_Q8(q80_3, 3) RP_Q8(q80_4, 4)

typedef void (*q4_fn)(const tl_rp_q4 *, int64_t, const tl_act_q8 *, int64_t, float *, int64_t,
                      int64_t);
typedef void (*q8_fn)(const tl_rp_q8 *, int64_t, const tl_act_q8 *, int64_t, float *, int64_t,
                      int64_t);

void tl_rp_tile_q4_avx2(int wtype, const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *act,
                        int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr) {
    static const q4_fn fns[2][4] = {{q40_1, q40_2, q40_3, q40_4}, {q41_1, q41_2, q41_3, q41_4}};
    if (nt < 1 || nt > 4) return;
    fns[wtype == TL_Q4_1][nt - 1](p, nb, act, as, y, ldy, nr);
}

typedef void (*q4k_fn)(const tl_rp_q4k *, int64_t, const tl_block_q8_K *, int64_t, float *,
                       int64_t, int64_t);

void tl_rp_tile_q4k_avx2(const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *act, int64_t as,
                         int64_t nt, float *y, int64_t ldy, int64_t nr) {
    static const q4k_fn fns[4] = {q4k_1, q4k_2, q4k_3, q4k_4};
    if (nt < 1 || nt > 4) return;
    fns[nt - 1](p, nb, act, as, y, ldy, nr);
}

void tl_rp_tile_q8_avx2(const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *act, int64_t as,
                        int64_t nt, float *y, int64_t ldy, int64_t nr) {
    static const q8_fn fns[4] = {q80_1, q80_2, q80_3, q80_4};
    if (nt < 1 || nt > 4) return;
    fns[nt - 1](p, nb, act, as, y, ldy, nr);
}

TL_AVX2_END
#endif

/* AVX2 tile kernels of TL_PATH_PACKED (packed.h) for the K formats (Q4_K, Q5_K, Q6_K) against
   Q8_K activations: one tile of 8 repacked rows against 1..4 tokens, one row per 32-bit lane
   as in packed_avx2.c. Twins of the _ref kernels in packed_k.c, with the same operations in the
   same order (bit-identical results). */
#include "packed.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"
#include "packed_avx2.h"

/* The 8 rows' bytes v[0..7] as int16 pairs (v, v) in 32-bit lanes: a madd against int16 pairs
   (a, b) gives v * (a + b) per row. */
TL_INLINE __m256i pairs8(const uint8_t *v) {
    __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)v));
    return _mm256_or_si256(w, _mm256_slli_epi32(w, 16));
}

/* The activations' group sums bsums[2s], bsums[2s + 1] as an int16 pair in every lane. */
TL_INLINE __m256i bsum_pair(const tl_block_q8_K *x, int s) {
    int32_t pair;
    memcpy(&pair, &x->bsums[2 * s], 4);
    return _mm256_set1_epi32(pair);
}

/* Q4_K and Q5_K: per sub-block s (32 elements, 8 chunks of 4) the maddubs products sum in
   int16 (Q4_K: 8 chunks * 2 * 15 * 127 < 2^15; Q5_K, its fifth bits moved in from the rows' qh
   chunk: 4 chunks * 2 * 31 * 127 < 2^15, so two widenings per sub-block), and a madd with the
   scale pairs widens and scales them (sc < 64); the mins meet the activations' 16-element sums
   the same way. Sub-blocks are taken in order 0..7, each by its own pass over its 8 weight
   loads, so 12 accumulators fit in registers. */
TL_INLINE void q45k_tile(int five, int NT, const uint8_t *p, int64_t nb, const tl_block_q8_K *act,
                         int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    const size_t step = five ? sizeof(tl_rp_q5k) : sizeof(tl_rp_q4k);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *raw_blk = p + (size_t)b * step;
        const tl_rp_q4k *b4 = (const tl_rp_q4k *)raw_blk;
        const tl_rp_q5k *b5 = (const tl_rp_q5k *)raw_blk;
        rp_prefetch(raw_blk, five ? 23 : 19);
        const tl_block_q8_K *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i isum[4], msum[4];
        for (int t = 0; t < NT; t++) isum[t] = msum[t] = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            __m256i sc = pairs8(five ? b5->sc[s] : b4->sc[s]);
            __m256i mn = pairs8(five ? b5->mn[s] : b4->mn[s]);
            __m256i s16[4];
            for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                __m256i wv = nibble(_mm256_loadu_si256((const __m256i *)b4->q[8 * (s / 2) + c]),
                                    s % 2);
                if (five) {
                    __m256i qh = _mm256_loadu_si256((const __m256i *)b5->qh[c]);
                    wv = _mm256_or_si256(wv, _mm256_and_si256(move_bits(qh, s, 4), bit4));
                }
                for (int t = 0; t < NT; t++)
                    s16[t] = _mm256_add_epi16(
                        s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 32 * s + 4 * c)));
                if (five && c == 3)
                    for (int t = 0; t < NT; t++) {
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
                        s16[t] = _mm256_setzero_si256();
                    }
            }
            for (int t = 0; t < NT; t++) {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mn, bsum_pair(x[t], s)));
            }
        }
        const tl_half *dh = five ? b5->d : b4->d, *dmh = five ? b5->dmin : b4->dmin;
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
        __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dmh));
        for (int t = 0; t < NT; t++) {
            __m256 dx = _mm256_set1_ps(x[t]->d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, dx), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dm, dx), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) store8(acc[t], y + t * ldy, nr);
}

/* Q6_K: u = low nibble | high 2 bits << 4 (0..63), moved in from the group's qh load; per
   group of 16 (4 chunks) the maddubs products sum in int16 two chunks at a time (2 * 2 * 63 *
   127 < 2^15) and a madd with the group's scale, duplicated, widens them; the offset -32 comes
   in once per super-block as 32 * sum_j sc_j * bsum_j (a madd of the scale pairs with the
   activations' group sums per sub-block). */
TL_INLINE void q6k_tile(int NT, const tl_rp_q6k *p, int64_t nb, const tl_block_q8_K *act,
                        int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i bits45 = _mm256_set1_epi8(0x30);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const tl_rp_q6k *blk = p + b;
        rp_prefetch(blk, 27);
        const tl_block_q8_K *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i usum[4], msum[4];
        for (int t = 0; t < NT; t++) usum[t] = msum[t] = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            /* lane r: (sc[2s], sc[2s + 1]) of row r, then each duplicated */
            __m256i pair = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->sc[s]));
            __m256i dup[2] = {_mm256_blend_epi16(pair, _mm256_slli_epi32(pair, 16), 0xAA),
                              _mm256_blend_epi16(_mm256_srli_epi32(pair, 16), pair, 0xAA)};
            for (int half = 0; half < 2; half++) {
                __m256i qh = _mm256_loadu_si256((const __m256i *)blk->qh[2 * s + half]);
                __m256i s16[4];
                for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
                for (int c4 = 0; c4 < 4; c4++) {
                    int c = 4 * half + c4;
                    __m256i raw = _mm256_loadu_si256((const __m256i *)blk->ql[8 * (s / 2) + c]);
                    __m256i wv = _mm256_or_si256(
                        nibble(raw, s % 2), _mm256_and_si256(move_bits(qh, 2 * c4, 4), bits45));
                    for (int t = 0; t < NT; t++)
                        s16[t] = _mm256_add_epi16(
                            s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 32 * s + 4 * c)));
                    if (c4 % 2 == 1)
                        for (int t = 0; t < NT; t++) {
                            usum[t] = _mm256_add_epi32(usum[t], _mm256_madd_epi16(s16[t], dup[half]));
                            s16[t] = _mm256_setzero_si256();
                        }
                }
            }
            for (int t = 0; t < NT; t++)
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(pair, bsum_pair(x[t], s)));
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
        for (int t = 0; t < NT; t++) {
            __m256i isum = _mm256_sub_epi32(usum[t], _mm256_slli_epi32(msum[t], 5));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                     _mm256_mul_ps(d, _mm256_set1_ps(x[t]->d)), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) store8(acc[t], y + t * ldy, nr);
}

#define Q4K_CALL(NT) q45k_tile(0, NT, p, nb, act, as, y, ldy, nr)
#define Q5K_CALL(NT) q45k_tile(1, NT, p, nb, act, as, y, ldy, nr)
#define Q6K_CALL(NT) q6k_tile(NT, p, nb, act, as, y, ldy, nr)

TL_RP_TILE(tl_rp_tile_q4_k_avx2) { RP_BY_COUNT(Q4K_CALL) }
TL_RP_TILE(tl_rp_tile_q5_k_avx2) { RP_BY_COUNT(Q5K_CALL) }
TL_RP_TILE(tl_rp_tile_q6_k_avx2) { RP_BY_COUNT(Q6K_CALL) }

TL_AVX2_END
#endif

/* AVX2 tile kernels of TL_PATH_PACKED (packed.h) for the 32-element formats: one tile of 8
   repacked rows against 1..4 tokens. Each 256-bit weight load serves 8 rows (one per 32-bit
   lane) and every token of the step; a token's 4 matching activation bytes are broadcast to all
   lanes and maddubs gives the 8 rows' partial sums in lanes, so no horizontal sums are needed.
   Twins of the _ref kernels in packed.c, with the same operations in the same order
   (bit-identical results). The K formats: packed_avx2_k.c. */
#include "packed.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"
#include "packed_avx2.h"

/* 4- and 5-bit quants: per block, 4 loads give the 8 chunks of 4 elements (low and high
   nibbles, Q5 adding its fifth bits from one load of the rows' rearranged qh words). The
   maddubs products per token are summed in int16 (4-bit: 8 products * 2 * 15 * 127 < 2^15;
   5-bit: 4 products * 2 * 31 * 127 < 2^15, so two widenings per block), then widened. */
TL_INLINE void nibble_tile(int five, int has_m, int NT, const uint8_t *p, int64_t nb,
                           const tl_act_q8 *act, int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i ones = _mm256_set1_epi16(1), bit4 = _mm256_set1_epi8(0x10);
    const size_t step = five ? (has_m ? sizeof(tl_rp_q5) : sizeof(tl_rp_q50))
                             : (has_m ? sizeof(tl_rp_q4) : sizeof(tl_rp_q40));
    const int per_widening = five ? 2 : 4;  /* groups g summed in int16 before a madd */
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = p + (size_t)b * step;
        const tl_rp_q4 *b4 = (const tl_rp_q4 *)blk;
        const tl_rp_q5 *b5 = (const tl_rp_q5 *)blk;
        rp_prefetch(blk, 3);
        const tl_act_q8 *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
        __m256i s32[4], s16[4];
        for (int t = 0; t < NT; t++) s32[t] = s16[t] = _mm256_setzero_si256();
        for (int g = 0; g < 4; g++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)b4->q[g]);  /* q leads both */
            __m256i lo = nibble(raw, 0), hi = nibble(raw, 1);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_and_si256(move_bits(qh, 2 * g, 4), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(move_bits(qh, 2 * g + 1, 4), bit4));
            }
            for (int t = 0; t < NT; t++) {
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast4(x[t]->qs + 4 * g)));
                s16[t] = _mm256_add_epi16(s16[t],
                                          _mm256_maddubs_epi16(hi, bcast4(x[t]->qs + 16 + 4 * g)));
            }
            if ((g + 1) % per_widening == 0)
                for (int t = 0; t < NT; t++) {
                    s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
                    s16[t] = _mm256_setzero_si256();
                }
        }
        const tl_half *dh = five ? b5->d : b4->d, *mh = five ? b5->m : b4->m;
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
        __m256 m = has_m ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)mh))
                         : _mm256_mul_ps(d, _mm256_set1_ps(five ? -16.0f : -8.0f));
        for (int t = 0; t < NT; t++) {
            __m256 isum = _mm256_cvtepi32_ps(s32[t]);
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
        rp_prefetch(blk, 5);
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

#define Q40_CALL(NT) nibble_tile(0, 0, NT, p, nb, act, as, y, ldy, nr)
#define Q41_CALL(NT) nibble_tile(0, 1, NT, p, nb, act, as, y, ldy, nr)
#define Q50_CALL(NT) nibble_tile(1, 0, NT, p, nb, act, as, y, ldy, nr)
#define Q51_CALL(NT) nibble_tile(1, 1, NT, p, nb, act, as, y, ldy, nr)
#define Q80_CALL(NT) q8_tile(NT, p, nb, act, as, y, ldy, nr)

TL_RP_TILE(tl_rp_tile_q4_0_avx2) { RP_BY_COUNT(Q40_CALL) }
TL_RP_TILE(tl_rp_tile_q4_1_avx2) { RP_BY_COUNT(Q41_CALL) }
TL_RP_TILE(tl_rp_tile_q5_0_avx2) { RP_BY_COUNT(Q50_CALL) }
TL_RP_TILE(tl_rp_tile_q5_1_avx2) { RP_BY_COUNT(Q51_CALL) }
TL_RP_TILE(tl_rp_tile_q8_0_avx2) { RP_BY_COUNT(Q80_CALL) }

TL_AVX2_END
#endif

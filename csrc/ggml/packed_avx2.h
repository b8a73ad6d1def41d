/* Private AVX2 helpers of the tile kernels (packed_avx2.c, packed_avx2_k.c). Include only
   between TL_AVX2_BEGIN and TL_AVX2_END, after avx2_util.h. */
#ifndef TL_PACKED_AVX2_H
#define TL_PACKED_AVX2_H

#include "packed.h"

#ifndef TL_RP_PF
#define TL_RP_PF 4096 /* bytes ahead of the tile stream: about twice the row dots' distance, */
#endif                  /* as a tile block costs a third of their work per byte */

/* Prefetch the n lines TL_RP_PF bytes ahead of a block. */
TL_INLINE void rp_prefetch(const void *blk, int n) {
    for (int k = 0; k < n; k++) _mm_prefetch((const char *)blk + TL_RP_PF + 64 * k, _MM_HINT_T0);
}

/* The 4 activation bytes at p in every 32-bit lane. */
TL_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Lanes r < nr of v to y[r]. */
TL_INLINE void store8(__m256 v, float *y, int64_t nr) {
    if (nr >= TL_RP_ROWS) {
        _mm256_storeu_ps(y, v);
        return;
    }
    float tmp[TL_RP_ROWS];
    _mm256_storeu_ps(tmp, v);
    for (int64_t r = 0; r < nr; r++) y[r] = tmp[r];
}

/* v shifted in 16-bit words so that bit `from` of each byte lands at bit `to`. The bits that
   cross into the other byte of a word land in its lowest (left shift) or highest (right shift)
   |to - from| bits, where the callers' masks never look: they shift at most 4 left and 3 right
   for a mask of bit 4, 2 right for one of bits 4-5. */
TL_INLINE __m256i move_bits(__m256i v, int from, int to) {
    if (to > from) return _mm256_sll_epi16(v, _mm_cvtsi32_si128(to - from));
    if (to < from) return _mm256_srl_epi16(v, _mm_cvtsi32_si128(from - to));
    return v;
}

/* Nibble (high or low) of each byte of a weight load. */
TL_INLINE __m256i nibble(__m256i raw, int high) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    return high ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), low) : _mm256_and_si256(raw, low);
}

/* The body of a format's entry point: CALL(NT) for nt = 1..4, each unrolled for its count so
   that the accumulators live in registers. */
#define RP_BY_COUNT(CALL)                                                                      \
    switch (nt) {                                                                              \
    case 1: CALL(1); break;                                                                    \
    case 2: CALL(2); break;                                                                    \
    case 3: CALL(3); break;                                                                    \
    case 4: CALL(4); break;                                                                    \
    default: break;                                                                            \
    }

#endif

/* Private AVX2 helpers shared by the kernel files. Include only between TL_AVX2_BEGIN and
   TL_AVX2_END (inside #if TL_HAVE_X86), so the helpers are compiled for AVX2 too. */
#ifndef TL_AVX2_UTIL_H
#define TL_AVX2_UTIL_H

#include <immintrin.h>
#include <string.h>

#include "blocks.h"

#define TL_INLINE static inline __attribute__((always_inline))

TL_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bytes of nibble pairs -> 32 bytes: low nibbles first (elements 0-15), then high ones. */
TL_INLINE __m256i nibbles32(const uint8_t *qs) {
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    q = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
}

/* Bit j of the 32-bit little-endian word at qh -> byte j = 0x10 (set) or 0 (clear). */
TL_INLINE __m256i fifth_bits32(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    __m256i v = _mm256_set1_epi32((int)bits);
    const __m256i spread = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                              0x0202020202020202, 0x0303030303030303);
    v = _mm256_shuffle_epi8(v, spread);  /* byte j holds byte j/8 of the word */
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* The 32 quants of a simple-format block as bytes (unsigned, or signed for Q8_0). */
TL_INLINE __m256i block_quants(int wtype, const uint8_t *blk) {
    switch (wtype) {
    case TL_Q4_0: return nibbles32(blk + 2);
    case TL_Q4_1: return nibbles32(blk + 4);
    case TL_Q5_0: return _mm256_or_si256(nibbles32(blk + 6), fifth_bits32(blk + 2));
    case TL_Q5_1: return _mm256_or_si256(nibbles32(blk + 8), fifth_bits32(blk + 4));
    default: return _mm256_loadu_si256((const __m256i *)(blk + 2)); /* TL_Q8_0 */
    }
}

/* In place: v[r] holds dwords c = 0..7 of row r; afterwards v[c] holds dword c of rows 0..7. */
TL_INLINE void transpose8_epi32(__m256i v[8]) {
    __m256i t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        u[4 * k + 0] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int c = 0; c < 4; c++) {
        v[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
        v[c + 4] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
    }
}

/* 8 weights at w[i..i+7] of a float row (F32, F16 or BF16) as floats. */
TL_INLINE __m256 load_w8(int wtype, const uint8_t *w, int64_t i) {
    if (wtype == TL_F32) return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (wtype == TL_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TL_INLINE float scalar_w(int wtype, const uint8_t *w, int64_t i) {
    if (wtype == TL_F32) return ((const float *)w)[i];
    uint16_t h;
    memcpy(&h, w + 2 * i, 2);
    return wtype == TL_F16 ? _cvtsh_ss(h) : tl_bf16_to_float(h);
}

#endif

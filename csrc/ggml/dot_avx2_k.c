/* AVX2 row dots of the K formats with Q8_K activations. Twins of dot_ref_k.c: per super-block the
   integer sums sum_j scale_j * sum_{i in j} q_i x_i stay in int32 lanes, mins and fixed offsets
   go through the activation's bsums, and one float FMA per super-block finishes.
   Scales are decoded bit-parallel (four at a time in 32-bit words) and spread to the lanes that
   need them with byte shuffles against constant masks. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"

TL_INLINE int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

TL_INLINE int hsum_epi32_128(__m128i s) {
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

TL_INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

TL_INLINE uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* From 16 scale bytes in both 128-bit halves of s: 16 int16 lanes, lanes 0-7 = byte a, lanes
   8-15 = byte b, zero-extended (spread_u8) or sign-extended (spread_s8). */
TL_INLINE __m256i spread_u8(__m256i s, int a, int b) {
    __m256i mask = _mm256_setr_m128i(_mm_set1_epi16((short)(0x8000 | a)), _mm_set1_epi16((short)(0x8000 | b)));
    return _mm256_shuffle_epi8(s, mask);
}

TL_INLINE __m256i spread_s8(__m256i s, int a, int b) {
    __m256i mask = _mm256_setr_m128i(_mm_set1_epi16((short)(a << 8 | a)), _mm_set1_epi16((short)(b << 8 | b)));
    return _mm256_srai_epi16(_mm256_shuffle_epi8(s, mask), 8);
}

/* The 8 scales and 8 mins of Q4_K / Q5_K as bytes (see tl_k_scales_mins), four per word. */
TL_INLINE void k_scales_mins_fast(const uint8_t s[12], __m128i *sc, __m128i *mn) {
    uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
    uint32_t sc_lo = u0 & 0x3f3f3f3fu, mn_lo = u1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
    *sc = _mm_setr_epi32((int)sc_lo, (int)sc_hi, 0, 0);
    *mn = _mm_setr_epi32((int)mn_lo, (int)mn_hi, 0, 0);
}

/* The 16 signed scales of Q3_K as bytes (see tl_q3_k_scales). */
TL_INLINE __m128i q3_k_scales_fast(const uint8_t s[12]) {
    uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
    const uint32_t lo = 0x0f0f0f0fu, hi = 0x30303030u;
    __m128i v = _mm_setr_epi32((int)((u0 & lo) | ((u2 << 4) & hi)), (int)((u1 & lo) | ((u2 << 2) & hi)),
                               (int)(((u0 >> 4) & lo) | (u2 & hi)), (int)(((u1 >> 4) & lo) | ((u2 >> 2) & hi)));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

/* sum_j mins[j] * (bsums[2j] + bsums[2j+1]) for 8 mins given as bytes in the low 8 of mn. */
TL_INLINE int k_mins_sum(__m128i mn, const int16_t *bsums) {
    __m256i bs = load32(bsums);
    __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return hsum_epi32_128(_mm_madd_epi16(_mm_cvtepu8_epi16(mn), pairs));
}

/* sum_j scales16[j] * bsums[j] over the 16 groups, scales given as 16 int16. */
TL_INLINE int scaled_bsums(__m256i scales16, const int16_t *bsums) {
    return hsum_epi32(_mm256_madd_epi16(scales16, load32(bsums)));
}

void tl_dot_q2_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q2_K *blk = (const tl_block_q2_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + 1024, _MM_HINT_T0);
            __m256i sc8 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)blk[b].scales));
            __m256i scales = _mm256_and_si256(sc8, m4);
            __m256i mins = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(_mm256_and_si256(_mm256_srli_epi16(sc8, 4), m4)));
            int summ = scaled_bsums(mins, x[b].bsums);
            __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i qv = load32(blk[b].qs + 32 * h);
#pragma GCC unroll 4
                for (int s = 0; s < 4; s++) {
                    __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, spread_u8(scales, j, j + 1)));
                }
            }
            float d = x[b].d * _cvtsh_ss(blk[b].d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            accm += x[b].d * _cvtsh_ss(blk[b].dmin) * (float)summ;
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

void tl_dot_q3_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q3_K *blk = (const tl_block_q3_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + 1024, _MM_HINT_T0);
            __m128i sc = q3_k_scales_fast(blk[b].scales);
            __m256i scales = _mm256_broadcastsi128_si256(sc);
            /* quants as 0..7 (the high bit adds 4); the -4 goes through the bsums */
            int offset = 4 * scaled_bsums(_mm256_cvtepi8_epi16(sc), x[b].bsums);
            __m256i hm = load32(blk[b].hmask);
            __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i qv = load32(blk[b].qs + 32 * h);
#pragma GCC unroll 4
                for (int s = 0; s < 4; s++) {
                    __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + s), one);
                    __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, spread_s8(scales, j, j + 1)));
                }
            }
            float d = x[b].d * _cvtsh_ss(blk[b].d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            accm += d * (float)offset;
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

/* Q4_K and Q5_K (qh NULL for Q4_K): one super-block's contribution. */
TL_INLINE void q45_k_block(const uint8_t scales[12], const uint8_t *qs, const uint8_t *qh,
                           tl_half d16, tl_half dmin16, const tl_block_q8_K *x, __m256 *acc,
                           float *accm) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m128i sc, mn;
    k_scales_mins_fast(scales, &sc, &mn);
    __m256i scv = _mm256_broadcastsi128_si256(sc);
    __m256i hb = qh ? load32(qh) : _mm256_setzero_si256();
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m256i qv = load32(qs + 32 * c);
        __m256i lo = _mm256_and_si256(qv, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
        if (qh) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
        }
        __m256i p0 = _mm256_maddubs_epi16(lo, load32(x->qs + 64 * c));
        __m256i p1 = _mm256_maddubs_epi16(hi, load32(x->qs + 64 * c + 32));
        p0 = _mm256_madd_epi16(p0, spread_u8(scv, 2 * c, 2 * c));
        p1 = _mm256_madd_epi16(p1, spread_u8(scv, 2 * c + 1, 2 * c + 1));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * _cvtsh_ss(d16)), _mm256_cvtepi32_ps(sumi), *acc);
    *accm += x->d * _cvtsh_ss(dmin16) * (float)k_mins_sum(mn, x->bsums);
}

void tl_dot_q4_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q4_K *blk = (const tl_block_q4_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + 1024, _MM_HINT_T0);
            q45_k_block(blk[b].scales, blk[b].qs, NULL, blk[b].d, blk[b].dmin, &x[b], &acc, &accm);
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

void tl_dot_q5_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q5_K *blk = (const tl_block_q5_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + 1024, _MM_HINT_T0);
            q45_k_block(blk[b].scales, blk[b].qs, blk[b].qh, blk[b].d, blk[b].dmin, &x[b], &acc, &accm);
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

void tl_dot_q6_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q6_K *blk = (const tl_block_q6_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + 1024, _MM_HINT_T0);
            __m128i sc = _mm_loadu_si128((const __m128i *)blk[b].scales);
            __m256i scales = _mm256_broadcastsi128_si256(sc);
            /* quants as 0..63; the -32 goes through the bsums */
            int offset = 32 * scaled_bsums(_mm256_cvtepi8_epi16(sc), x[b].bsums);
            __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = load32(blk[b].ql + 64 * h), ql1 = load32(blk[b].ql + 64 * h + 32);
                __m256i qh = load32(blk[b].qh + 32 * h);
                __m256i lows[4] = {
                    _mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                };
#pragma GCC unroll 4
                for (int s = 0; s < 4; s++) {
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), m3);
                    __m256i q = _mm256_or_si256(lows[s], _mm256_slli_epi16(hi, 4));
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, spread_s8(scales, j, j + 1)));
                }
            }
            float d = x[b].d * _cvtsh_ss(blk[b].d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            accm += d * (float)offset;
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

TL_AVX2_END
#endif

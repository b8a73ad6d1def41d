/* AVX2 row dots of the K formats with Q8_K activations. Twins of dot_ref_k.c: per super-block the
   integer sums sum_j scale_j * sum_{i in j} q_i x_i stay in int32 lanes, mins and fixed offsets
   go through the activation's bsums, and one float FMA per super-block finishes. */
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

TL_INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* Scale vector for one 32-element step covering two 16-element groups: lanes 0-7 = a, 8-15 = b. */
TL_INLINE __m256i scale_pair(int a, int b) {
    return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

/* sum_j scales16[j] * bsums[j] over the 16 groups, scales given as 16 int16. */
TL_INLINE int scaled_bsums(__m256i scales16, const int16_t *bsums) {
    return hsum_epi32(_mm256_madd_epi16(scales16, load32(bsums)));
}

void tl_dot_q2_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q2_K *blk = (const tl_block_q2_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            __m128i sc8 = _mm_loadu_si128((const __m128i *)blk[b].scales);
            __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0f)));
            int summ = scaled_bsums(mins, x[b].bsums);
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i qv = load32(blk[b].qs + 32 * h);
                for (int s = 0; s < 4; s++) {
                    __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    __m256i sc = scale_pair(blk[b].scales[j] & 0x0f, blk[b].scales[j + 1] & 0x0f);
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
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
        for (int64_t b = 0; b < nb; b++) {
            int8_t sc[16];
            tl_q3_k_scales(blk[b].scales, sc);
            /* quants as 0..7 (the high bit adds 4); the -4 goes through the bsums */
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            int offset = 4 * scaled_bsums(sc16, x[b].bsums);
            __m256i hm = load32(blk[b].hmask);
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i qv = load32(blk[b].qs + 32 * h);
                for (int s = 0; s < 4; s++) {
                    __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + s), one);
                    __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc[j], sc[j + 1])));
                }
            }
            float d = x[b].d * _cvtsh_ss(blk[b].d);
            __m256i total = _mm256_sub_epi32(sumi, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(total), acc);
        }
        out[r] = hsum_ps(acc);
    }
}

/* Shared by Q4_K and Q5_K: the super-block's float result given its int sums. */
TL_INLINE __m256 k_finish(__m256 acc, const tl_block_q8_K *x, uint16_t d, __m256i sumi) {
    return _mm256_fmadd_ps(_mm256_set1_ps(x->d * _cvtsh_ss(d)), _mm256_cvtepi32_ps(sumi), acc);
}

/* sum_j mins[j] * (bsums[2j] + bsums[2j+1]). */
TL_INLINE int k_mins_sum(const uint8_t mn[8], const int16_t *bsums) {
    int s = 0;
    for (int j = 0; j < 8; j++) s += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
    return s;
}

void tl_dot_q4_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q4_K *blk = (const tl_block_q4_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t sc[8], mn[8];
            tl_k_scales_mins(blk[b].scales, sc, mn);
            __m256i sumi = _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i qv = load32(blk[b].qs + 32 * c);
                __m256i lo = _mm256_and_si256(qv, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
                __m256i p0 = _mm256_maddubs_epi16(lo, load32(x[b].qs + 64 * c));
                __m256i p1 = _mm256_maddubs_epi16(hi, load32(x[b].qs + 64 * c + 32));
                p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c]));
                p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            }
            acc = k_finish(acc, &x[b], blk[b].d, sumi);
            accm += x[b].d * _cvtsh_ss(blk[b].dmin) * (float)k_mins_sum(mn, x[b].bsums);
        }
        out[r] = hsum_ps(acc) - accm;
    }
}

void tl_dot_q5_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q5_K *blk = (const tl_block_q5_K *)((const uint8_t *)w + r * rb);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t sc[8], mn[8];
            tl_k_scales_mins(blk[b].scales, sc, mn);
            __m256i hb = load32(blk[b].qh);
            __m256i sumi = _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i qv = load32(blk[b].qs + 32 * c);
                __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one);
                __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one);
                __m256i lo = _mm256_or_si256(_mm256_and_si256(qv, m4), _mm256_slli_epi16(h0, 4));
                __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 4), m4),
                                             _mm256_slli_epi16(h1, 4));
                __m256i p0 = _mm256_maddubs_epi16(lo, load32(x[b].qs + 64 * c));
                __m256i p1 = _mm256_maddubs_epi16(hi, load32(x[b].qs + 64 * c + 32));
                p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c]));
                p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            }
            acc = k_finish(acc, &x[b], blk[b].d, sumi);
            accm += x[b].d * _cvtsh_ss(blk[b].dmin) * (float)k_mins_sum(mn, x[b].bsums);
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
        for (int64_t b = 0; b < nb; b++) {
            const int8_t *sc = blk[b].scales;
            /* quants as 0..63; the -32 goes through the bsums */
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            int offset = 32 * scaled_bsums(sc16, x[b].bsums);
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = load32(blk[b].ql + 64 * h), ql1 = load32(blk[b].ql + 64 * h + 32);
                __m256i qh = load32(blk[b].qh + 32 * h);
                __m256i lows[4] = {
                    _mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                };
                for (int s = 0; s < 4; s++) {
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), m3);
                    __m256i q = _mm256_or_si256(lows[s], _mm256_slli_epi16(hi, 4));
                    __m256i p = _mm256_maddubs_epi16(q, load32(x[b].qs + 128 * h + 32 * s));
                    int j = 8 * h + 2 * s;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc[j], sc[j + 1])));
                }
            }
            float d = x[b].d * _cvtsh_ss(blk[b].d);
            __m256i total = _mm256_sub_epi32(sumi, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(total), acc);
        }
        out[r] = hsum_ps(acc);
    }
}

TL_AVX2_END
#endif

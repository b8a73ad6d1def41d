/* Private AVX2 math helpers shared by the op and attention kernels: exp, sigmoid, horizontal sum;
   and exp on AVX-512 with the AVX2 version's bits. */
#ifndef TL_VMATH_H
#define TL_VMATH_H

#include "../tl_common.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

/* e^x for 8 floats, within about 2 ulp of the exact value over the whole float range.
   x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so n*ln2_hi is exact), e^r by its Taylor
   series to degree 7 (truncation error below 6e-9), then 2^n applied as two factors so that
   n in [-150, 128] needs no special cases: results overflow to +inf and underflow gradually.
   Inputs below -104 give exactly 0; NaN stays NaN. */
static inline __m256 tl_exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.8f), lo = _mm256_set1_ps(-104.0f);
    __m256 below = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_max_ps(lo, _mm256_min_ps(hi, x)); /* NaN x passes through */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h1 = _mm256_srai_epi32(ni, 1);
    __m256i h2 = _mm256_sub_epi32(ni, h1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, bias), 23));
    return _mm256_andnot_ps(below, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

/* Sum of the 8 lanes. */
static inline float tl_hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* Maximum of the 8 lanes. */
static inline float tl_hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

TL_AVX2_END

TL_VNNI_BEGIN

/* tl_exp8 on 16 lanes: the same operations lane for lane, so the same bits. */
static inline __m512 tl_exp16(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.8f), lo = _mm512_set1_ps(-104.0f);
    __mmask16 below = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __m512 xc = _mm512_max_ps(lo, _mm512_min_ps(hi, x)); /* NaN x passes through */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i h1 = _mm512_srai_epi32(ni, 1);
    __m512i h2 = _mm512_sub_epi32(ni, h1);
    const __m512i bias = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h1, bias), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h2, bias), 23));
    return _mm512_maskz_mov_ps((__mmask16)~below, _mm512_mul_ps(_mm512_mul_ps(p, s1), s2));
}

TL_VNNI_END

#endif /* TL_HAVE_X86 */

#endif

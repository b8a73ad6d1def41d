/* Activation quantization for the integer matmul paths: f32 rows to int8 blocks with a scale.
   Scalar and AVX2 versions produce identical bytes (same scale, round half to even). */
#include <math.h>

#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

/* Round to nearest (ties to even, like cvtps2dq) and clamp to [-127, 127]; NaN becomes -127, as
   in the AVX2 version (garbage in, but never undefined behaviour). */
static inline int8_t quant_one(float v) {
    float r = nearbyintf(v);
    if (!(r >= -127.0f)) r = -127.0f;  /* below range or NaN */
    if (r > 127.0f) r = 127.0f;
    return (int8_t)(int)r;
}

/* Scale of a block with largest magnitude amax: d for dequantization, id = 1/d for quantization. */
static inline void block_scale(float amax, float *d, float *id) {
    *d = amax / 127.0f;
    *id = amax > 0.0f ? 127.0f / amax : 0.0f;
}

void tl_act_quant_q8_ref(const float *x, tl_act_q8 *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK; b++) {
        const float *xb = x + b * TL_QK;
        float amax = 0.0f;
        for (int i = 0; i < TL_QK; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d, id;
        block_scale(amax, &d, &id);
        int sum = 0;
        for (int i = 0; i < TL_QK; i++) {
            out[b].qs[i] = quant_one(xb[i] * id);
            sum += out[b].qs[i];
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

void tl_act_quant_q8k_ref(const float *x, tl_block_q8_K *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK_K; b++) {
        const float *xb = x + b * TL_QK_K;
        float amax = 0.0f;
        for (int i = 0; i < TL_QK_K; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d, id;
        block_scale(amax, &d, &id);
        for (int g = 0; g < TL_QK_K / 16; g++) {
            int sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                out[b].qs[i] = quant_one(xb[i] * id);
                sum += out[b].qs[i];
            }
            out[b].bsums[g] = (int16_t)sum;
        }
        out[b].d = d;
    }
}

#if TL_HAVE_X86
TL_AVX2_BEGIN

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Largest |x| over n (a multiple of 32) floats. NaN lanes are ignored, like the scalar compare. */
static inline float amax_avx2(const float *x, int n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m);
    return hmax8(m);
}

/* Quantize 32 floats with multiplier id into 32 int8 at q; sums[0], sums[1]: sums of the two
   halves of 16. */
static inline void quant32(const float *x, __m256 id, int8_t *q, int sums[2]) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i v[4];
    for (int k = 0; k < 4; k++) {
        __m256 f = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id);
        f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);  /* max_ps(NaN, lo) = lo */
        v[k] = _mm256_cvtps_epi32(f);
    }
    __m256i h = _mm256_hadd_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
    __m128i h4 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    h4 = _mm_hadd_epi32(h4, h4);
    sums[0] = _mm_cvtsi128_si32(h4);
    sums[1] = _mm_extract_epi32(h4, 1);
    __m256i p01 = _mm256_packs_epi32(v[0], v[1]);   /* lanes interleave by 128-bit halves */
    __m256i p23 = _mm256_packs_epi32(v[2], v[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p);
}

void tl_act_quant_q8_avx2(const float *x, tl_act_q8 *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK; b++) {
        const float *xb = x + b * TL_QK;
        float d, id;
        block_scale(amax_avx2(xb, TL_QK), &d, &id);
        int sums[2];
        quant32(xb, _mm256_set1_ps(id), out[b].qs, sums);
        out[b].d = d;
        out[b].s = d * (float)(sums[0] + sums[1]);
    }
}

void tl_act_quant_q8k_avx2(const float *x, tl_block_q8_K *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK_K; b++) {
        const float *xb = x + b * TL_QK_K;
        float d, id;
        block_scale(amax_avx2(xb, TL_QK_K), &d, &id);
        __m256 vid = _mm256_set1_ps(id);
        for (int k = 0; k < TL_QK_K / 32; k++) {
            int sums[2];
            quant32(xb + 32 * k, vid, out[b].qs + 32 * k, sums);
            out[b].bsums[2 * k] = (int16_t)sums[0];
            out[b].bsums[2 * k + 1] = (int16_t)sums[1];
        }
        out[b].d = d;
    }
}

TL_AVX2_END
#endif

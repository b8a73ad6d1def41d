/* Activation quantization for the integer matmul paths: f32 rows to int8 blocks with a scale.
   Scalar and AVX2 versions produce identical bytes (same scale, round half to even).

   The x2 variants are for TL_PATH_PRECISE: x ~ hi + lo, where hi is the plain int8 encoding and
   lo the int8 encoding (own scale per block) of the residual x - hi. |residual| <= hi's d / 2, so
   lo's step is about 1/254 of hi's: roughly 15-bit activations out of the same int8 kernels. */
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

static void q8_block_ref(const float *xb, tl_act_q8 *out) {
    float amax = 0.0f;
    for (int i = 0; i < TL_QK; i++) {
        float a = fabsf(xb[i]);
        amax = a > amax ? a : amax;
    }
    float d, id;
    block_scale(amax, &d, &id);
    int sum = 0;
    for (int i = 0; i < TL_QK; i++) {
        out->qs[i] = quant_one(xb[i] * id);
        sum += out->qs[i];
    }
    out->d = d;
    out->s = d * (float)sum;
}

static void q8k_block_ref(const float *xb, tl_block_q8_K *out) {
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
            out->qs[i] = quant_one(xb[i] * id);
            sum += out->qs[i];
        }
        out->bsums[g] = (int16_t)sum;
    }
    out->d = d;
}

/* r[i] = x[i] - d * q[i]: what the int8 encoding missed. Product and difference are separate
   statements so that no compiler fuses them (the AVX2 twin rounds the product too). */
static void residual_ref(const float *x, float d, const int8_t *q, int n, float *r) {
    for (int i = 0; i < n; i++) {
        float p = d * (float)q[i];
        r[i] = x[i] - p;
    }
}

void tl_act_quant_q8_ref(const float *x, tl_act_q8 *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK; b++) q8_block_ref(x + b * TL_QK, &out[b]);
}

void tl_act_quant_q8k_ref(const float *x, tl_block_q8_K *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK_K; b++) q8k_block_ref(x + b * TL_QK_K, &out[b]);
}

void tl_act_quant_q8x2_ref(const float *x, tl_act_q8 *hi, tl_act_q8 *lo, int64_t n) {
    float r[TL_QK];
    for (int64_t b = 0; b < n / TL_QK; b++) {
        q8_block_ref(x + b * TL_QK, &hi[b]);
        residual_ref(x + b * TL_QK, hi[b].d, hi[b].qs, TL_QK, r);
        q8_block_ref(r, &lo[b]);
    }
}

void tl_act_quant_q8kx2_ref(const float *x, tl_block_q8_K *hi, tl_block_q8_K *lo, int64_t n) {
    float r[TL_QK_K];
    for (int64_t b = 0; b < n / TL_QK_K; b++) {
        q8k_block_ref(x + b * TL_QK_K, &hi[b]);
        residual_ref(x + b * TL_QK_K, hi[b].d, hi[b].qs, TL_QK_K, r);
        q8k_block_ref(r, &lo[b]);
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

static inline void q8_block_avx2(const float *xb, tl_act_q8 *out) {
    float d, id;
    block_scale(amax_avx2(xb, TL_QK), &d, &id);
    int sums[2];
    quant32(xb, _mm256_set1_ps(id), out->qs, sums);
    out->d = d;
    out->s = d * (float)(sums[0] + sums[1]);
}

static inline void q8k_block_avx2(const float *xb, tl_block_q8_K *out) {
    float d, id;
    block_scale(amax_avx2(xb, TL_QK_K), &d, &id);
    __m256 vid = _mm256_set1_ps(id);
    for (int k = 0; k < TL_QK_K / 32; k++) {
        int sums[2];
        quant32(xb + 32 * k, vid, out->qs + 32 * k, sums);
        out->bsums[2 * k] = (int16_t)sums[0];
        out->bsums[2 * k + 1] = (int16_t)sums[1];
    }
    out->d = d;
}

/* r = x - d * q over n (a multiple of 8) elements, product rounded before the difference. */
static inline void residual_avx2(const float *x, float d, const int8_t *q, int n, float *r) {
    __m256 vd = _mm256_set1_ps(d);
    for (int i = 0; i < n; i += 8) {
        __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i))));
        _mm256_storeu_ps(r + i, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_mul_ps(vd, qf)));
    }
}

void tl_act_quant_q8_avx2(const float *x, tl_act_q8 *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK; b++) q8_block_avx2(x + b * TL_QK, &out[b]);
}

void tl_act_quant_q8k_avx2(const float *x, tl_block_q8_K *out, int64_t n) {
    for (int64_t b = 0; b < n / TL_QK_K; b++) q8k_block_avx2(x + b * TL_QK_K, &out[b]);
}

void tl_act_quant_q8x2_avx2(const float *x, tl_act_q8 *hi, tl_act_q8 *lo, int64_t n) {
    float r[TL_QK];
    for (int64_t b = 0; b < n / TL_QK; b++) {
        q8_block_avx2(x + b * TL_QK, &hi[b]);
        residual_avx2(x + b * TL_QK, hi[b].d, hi[b].qs, TL_QK, r);
        q8_block_avx2(r, &lo[b]);
    }
}

void tl_act_quant_q8kx2_avx2(const float *x, tl_block_q8_K *hi, tl_block_q8_K *lo, int64_t n) {
    float r[TL_QK_K];
    for (int64_t b = 0; b < n / TL_QK_K; b++) {
        q8k_block_avx2(x + b * TL_QK_K, &hi[b]);
        residual_avx2(x + b * TL_QK_K, hi[b].d, hi[b].qs, TL_QK_K, r);
        q8k_block_avx2(r, &lo[b]);
    }
}

TL_AVX2_END
#endif

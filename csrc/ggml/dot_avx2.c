/* AVX2 row dots of the float and 32-element formats (the decode path: one activation row, many
   weight rows). Twins of dot_ref.c; used only when the pool reports TL_CPU_AVX2_SET. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"

/* ---- float weights ---- */

TL_INLINE void dot_float(int wtype, const void *w, size_t rb, int64_t nr, const void *a, int64_t n,
                         float *out) {
    const float *x = a;
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) {
            acc0 = _mm256_fmadd_ps(load_w8(wtype, row, i), _mm256_loadu_ps(x + i), acc0);
            acc1 = _mm256_fmadd_ps(load_w8(wtype, row, i + 8), _mm256_loadu_ps(x + i + 8), acc1);
            acc2 = _mm256_fmadd_ps(load_w8(wtype, row, i + 16), _mm256_loadu_ps(x + i + 16), acc2);
            acc3 = _mm256_fmadd_ps(load_w8(wtype, row, i + 24), _mm256_loadu_ps(x + i + 24), acc3);
        }
        for (; i + 8 <= n; i += 8)
            acc0 = _mm256_fmadd_ps(load_w8(wtype, row, i), _mm256_loadu_ps(x + i), acc0);
        float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
        for (; i < n; i++) sum += scalar_w(wtype, row, i) * x[i];
        out[r] = sum;
    }
}

void tl_dot_f32_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_float(TL_F32, w, rb, nr, a, n, out);
}

void tl_dot_f16_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_float(TL_F16, w, rb, nr, a, n, out);
}

void tl_dot_bf16_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_float(TL_BF16, w, rb, nr, a, n, out);
}

/* ---- 32-element formats ---- */

/* sum of u[i] * s[i] over 32 bytes, as 8 float lanes (u unsigned, s signed, |pairs| < 2^15). */
TL_INLINE __m256 dot_u8s8(__m256i u, __m256i s) {
    __m256i p = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* [h0, h1, 0, 0] as floats from two halves at p. */
TL_INLINE __m128 two_halves(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(v));
}

/* [h, h, 0, 0] as floats from the half at p. */
TL_INLINE __m128 half_twice(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return _mm_moveldup_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(v)));
}

/* One weight block against one activation block: acc += d*dx * sum(q*x) in 8 lanes, and lane 1
   of macc += m' * s, where m' is the min (Q4_1, Q5_1) or d (Q4_0, Q5_0, whose offsets -8d, -16d
   are applied at the end; see min_factor). */
TL_INLINE void block_dot(int wtype, const uint8_t *blk, const tl_act_q8 *xb, __m256 *acc,
                         __m128 *macc) {
    __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
    __m128 ds = _mm_castpd_ps(_mm_load_sd((const double *)(const void *)xb)); /* [dx, s, 0, 0] */
    __m128 dm; /* [d, m', 0, 0] */
    __m256i q = block_quants(wtype, blk);
    if (wtype == TL_Q4_1 || wtype == TL_Q5_1) {
        dm = two_halves(blk);
    } else {
        dm = half_twice(blk);
    }
    if (wtype == TL_Q8_0) { /* make the weight unsigned, move its sign onto x */
        xq = _mm256_sign_epi8(xq, q);
        q = _mm256_sign_epi8(q, q);
    }
    __m128 prod = _mm_mul_ps(dm, ds); /* [d*dx, m'*s, 0, 0] */
    if (wtype != TL_Q8_0) *macc = _mm_add_ps(*macc, prod);
    *acc = _mm256_fmadd_ps(dot_u8s8(q, xq), _mm256_broadcastss_ps(prod), *acc);
}

/* Factor of the per-block term macc in the result (see block_dot). */
TL_INLINE float min_factor(int wtype) {
    return wtype == TL_Q4_0 ? -8.0f : wtype == TL_Q5_0 ? -16.0f : wtype == TL_Q8_0 ? 0.0f : 1.0f;
}

TL_INLINE float lane1(__m128 v) { return _mm_cvtss_f32(_mm_movehdup_ps(v)); }

#ifndef TL_DOT_PF
#define TL_DOT_PF 2048 /* bytes ahead of the row stream; measured best of 0..4096 */
#endif

/* One row at a time (a single sequential stream through memory, which the prefetchers follow
   better than several interleaved rows), two blocks per step into two accumulators so that
   consecutive blocks' FMA chains overlap. */
TL_INLINE void dot_simple(int wtype, size_t bytes, const void *w, size_t rb, int64_t nr,
                          const void *a, int64_t n, float *out) {
    const tl_act_q8 *x = a;
    int64_t nb = n / TL_QK;
    float k = min_factor(wtype);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m128 m0 = _mm_setzero_ps(), m1 = _mm_setzero_ps();
        int64_t b = 0;
        for (; b + 2 <= nb; b += 2) {
#if TL_DOT_PF
            _mm_prefetch((const char *)row + b * bytes + TL_DOT_PF, _MM_HINT_T0);
#endif
            block_dot(wtype, row + b * bytes, x + b, &acc0, &m0);
            block_dot(wtype, row + (b + 1) * bytes, x + b + 1, &acc1, &m1);
        }
        if (b < nb) block_dot(wtype, row + b * bytes, x + b, &acc0, &m0);
        out[r] = hsum_ps(_mm256_add_ps(acc0, acc1)) + k * lane1(_mm_add_ps(m0, m1));
    }
}

void tl_dot_q4_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple(TL_Q4_0, sizeof(tl_block_q4_0), w, rb, nr, a, n, out);
}

void tl_dot_q4_1_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple(TL_Q4_1, sizeof(tl_block_q4_1), w, rb, nr, a, n, out);
}

void tl_dot_q5_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple(TL_Q5_0, sizeof(tl_block_q5_0), w, rb, nr, a, n, out);
}

void tl_dot_q5_1_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple(TL_Q5_1, sizeof(tl_block_q5_1), w, rb, nr, a, n, out);
}

void tl_dot_q8_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple(TL_Q8_0, sizeof(tl_block_q8_0), w, rb, nr, a, n, out);
}

TL_AVX2_END
#endif

/* Element-wise and row-wise transformer ops: rmsnorm, layernorm, rope, swiglu, geglu and gelu
   with a scalar reference kernel and an AVX2 twin each; add, scale, softcap and bias rows as
   plain loops (a few floats per step); the split of the work over the pool.

   Batch invariance: each kernel gives an element the same bits whatever its offset in the
   buffer, the number of rows and the thread count. Row ops (rmsnorm, rope) treat every row alike
   (a row's split into vectors and a scalar tail depends only on its length); the element-wise
   ones run every element through the same code. (Where the compiler fuses a*b+c into an FMA it
   does so for the expression, in a vector body and a scalar tail alike.) */
#include "pool.h"

#include <math.h>
#include <string.h>

#include "../tl_common.h"
#include "vmath.h"

/* Below this many floats a pool dispatch costs more than the second thread saves. */
#define PAR_MIN_ELEMS 16384
/* Rope keeps the inverse frequencies of every rotated pair on the stack: n_rot <= 2 * this. */
#define ROPE_MAX_PAIRS 512
/* Rope computes the angles of this many pairs at a time, then rotates every head with them. */
#define ROPE_BLOCK 64

static int pool_avx2(const tl_pool *pool) {
    return TL_HAVE_X86 && (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET;
}

/* ---------------------------------------------------------------- rmsnorm */

/* Sum of squares in double: the 1/rms factor is then good to a float ulp whatever the length. */
static void rmsnorm_row_ref(const float *x, const float *w, float *y, int64_t n, float eps) {
    double ss[4] = {0.0, 0.0, 0.0, 0.0}; /* four independent sums: no wait on one add chain */
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) ss[k] += (double)x[i + k] * x[i + k];
    for (; i < n; i++) ss[0] += (double)x[i] * x[i];
    double sum = (ss[0] + ss[1]) + (ss[2] + ss[3]);
    float r = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
    if (w) {
        for (i = 0; i < n; i++) y[i] = x[i] * r * w[i];
    } else {
        for (i = 0; i < n; i++) y[i] = x[i] * r;
    }
}

#if TL_HAVE_X86
TL_AVX2_BEGIN
static void rmsnorm_row_avx2(const float *x, const float *w, float *y, int64_t n, float eps) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), rv);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) y[i] = w ? x[i] * r * w[i] : x[i] * r;
}
TL_AVX2_END
#endif

typedef struct {
    const float *x, *w;
    float *y;
    int64_t n_rows, n;
    float eps;
    int avx2;
} rmsnorm_job;

static void rmsnorm_rows(void *arg, long r0, long r1, int ith, int first) {
    (void)ith, (void)first;
    const rmsnorm_job *J = arg;
    for (long r = r0; r < r1; r++) {
        const float *x = J->x + r * J->n;
        float *y = J->y + r * J->n;
#if TL_HAVE_X86
        if (J->avx2) { rmsnorm_row_avx2(x, J->w, y, J->n, J->eps); continue; }
#endif
        rmsnorm_row_ref(x, J->w, y, J->n, J->eps);
    }
}

int tl_rmsnorm(tl_pool *pool, const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
               float eps) {
    if (!pool || n_rows < 0 || n <= 0 || !(eps >= 0.0f)) return TL_ERR_ARG;
    if (n_rows == 0) return TL_OK;
    if (!x || !y) return TL_ERR_ARG;
    rmsnorm_job J = {x, w, y, n_rows, n, eps, pool_avx2(pool)};
    if (n_rows >= 2 && n_rows * n >= PAR_MIN_ELEMS) tl_pool_for(pool, rmsnorm_rows, &J, (long)n_rows, 0);
    else rmsnorm_rows(&J, 0, (long)n_rows, 0, 1);
    return TL_OK;
}

/* ---------------------------------------------------------------- layernorm */

/* Mean and variance in double (two passes over a row that stays in L1), then one float scale:
   used by encoder models (BERT), where it runs once per layer over short rows. */
static void layernorm_row(const float *x, const float *w, const float *b, float *y, int64_t n,
                          float eps) {
    double sum = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps)), mf = (float)mean;
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - mf) * r;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

#if TL_HAVE_X86
TL_AVX2_BEGIN
/* Sum of x[i] - c over a row, in double: 8 floats a step into two 4-lane accumulators, the
   lanes added in a fixed order, then the tail. Used with c = 0 (the mean) and squared (the
   variance), so the twin of layernorm_row's two passes, to double rounding. */
static double sum_pd(const float *x, int64_t n, double c, int squared) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), cv = _mm256_set1_pd(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), cv);
        __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), cv);
        if (squared) {
            a0 = _mm256_fmadd_pd(lo, lo, a0);
            a1 = _mm256_fmadd_pd(hi, hi, a1);
        } else {
            a0 = _mm256_add_pd(a0, lo);
            a1 = _mm256_add_pd(a1, hi);
        }
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) {
        double d = (double)x[i] - c;
        s += squared ? d * d : d;
    }
    return s;
}

static void layernorm_row_avx2(const float *x, const float *w, const float *b, float *y,
                               int64_t n, float eps) {
    double mean = sum_pd(x, n, 0.0, 0) / (double)n;
    double ss = sum_pd(x, n, mean, 1);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps)), mf = (float)mean;
    __m256 rv = _mm256_set1_ps(r), mv = _mm256_set1_ps(mf);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {   /* the scalar tail's operations, in its order */
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) {
        float v = (x[i] - mf) * r;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}
TL_AVX2_END
#endif

typedef struct {
    const float *x, *w, *b;
    float *y;
    int64_t n_rows, n;
    float eps;
    int avx2;
} layernorm_job;

static void layernorm_rows(void *arg, long r0, long r1, int ith, int first) {
    (void)ith, (void)first;
    const layernorm_job *J = arg;
    for (long r = r0; r < r1; r++) {
        const float *x = J->x + r * J->n;
        float *y = J->y + r * J->n;
#if TL_HAVE_X86
        if (J->avx2) { layernorm_row_avx2(x, J->w, J->b, y, J->n, J->eps); continue; }
#endif
        layernorm_row(x, J->w, J->b, y, J->n, J->eps);
    }
}

int tl_layernorm(tl_pool *pool, const float *x, const float *w, const float *b, float *y,
                 int64_t n_rows, int64_t n, float eps) {
    if (!pool || n_rows < 0 || n <= 0 || !(eps >= 0.0f)) return TL_ERR_ARG;
    if (n_rows == 0) return TL_OK;
    if (!x || !y) return TL_ERR_ARG;
    layernorm_job J = {x, w, b, y, n_rows, n, eps, pool_avx2(pool)};
    if (n_rows >= 2 && n_rows * n >= PAR_MIN_ELEMS) tl_pool_for(pool, layernorm_rows, &J, (long)n_rows, 0);
    else layernorm_rows(&J, 0, (long)n_rows, 0, 1);
    return TL_OK;
}

/* ---------------------------------------------------------------- rope */

typedef struct {
    float *x;
    int64_t n_tok;
    int n_heads, head_dim, n_rot, neox;
    const int32_t *pos;
    double freq_scale;
    float mscale;  /* LongRoPE's attention factor: cos and sin are scaled by it */
    int avx2;
    double inv_freq[ROPE_MAX_PAIRS]; /* base^(-2i/n_rot), computed once per call */
} rope_job;

/* Rotate pairs [i0, i0 + np) of one head by the angles whose cosines and sines are c, s. */
static void rope_head_ref(float *x, int half, int neox, int i0, int np, const float *c,
                          const float *s) {
    if (neox) {
        float *a = x + i0, *b = x + i0 + half;
        for (int j = 0; j < np; j++) {
            float x0 = a[j], x1 = b[j];
            a[j] = x0 * c[j] - x1 * s[j];
            b[j] = x0 * s[j] + x1 * c[j];
        }
    } else {
        float *a = x + 2 * i0;
        for (int j = 0; j < np; j++) {
            float x0 = a[2 * j], x1 = a[2 * j + 1];
            a[2 * j] = x0 * c[j] - x1 * s[j];
            a[2 * j + 1] = x0 * s[j] + x1 * c[j];
        }
    }
}

#if TL_HAVE_X86
TL_AVX2_BEGIN
static void rope_head_avx2(float *x, int half, int neox, int i0, int np, const float *c,
                           const float *s) {
    int j = 0;
    if (neox) {
        for (; j + 8 <= np; j += 8) {
            float *a = x + i0 + j, *b = a + half;
            __m256 x0 = _mm256_loadu_ps(a), x1 = _mm256_loadu_ps(b);
            __m256 cv = _mm256_loadu_ps(c + j), sv = _mm256_loadu_ps(s + j);
            _mm256_storeu_ps(a, _mm256_fmsub_ps(x0, cv, _mm256_mul_ps(x1, sv)));
            _mm256_storeu_ps(b, _mm256_fmadd_ps(x0, sv, _mm256_mul_ps(x1, cv)));
        }
    } else {
        /* 4 adjacent pairs per vector: y = x * (c0 c0 c1 c1 ..) + swap(x) * (-s0 s0 -s1 s1 ..). */
        const __m256 sign = _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
        const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        for (; j + 4 <= np; j += 4) {
            float *a = x + 2 * (i0 + j);
            __m256 v = _mm256_loadu_ps(a);
            __m256 cv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c + j)), dup);
            __m256 sv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + j)), dup);
            sv = _mm256_xor_ps(sv, sign);
            __m256 sw = _mm256_permute_ps(v, 0xB1); /* (x1 x0 x3 x2 ..) */
            _mm256_storeu_ps(a, _mm256_fmadd_ps(v, cv, _mm256_mul_ps(sw, sv)));
        }
    }
    if (j < np) rope_head_ref(x, half, neox, i0 + j, np - j, c + j, s + j);
}
TL_AVX2_END
#endif

/* sin and cos of x in double, for |x| up to ~1e9: x = n pi/2 + r with |r| <= pi/4 (pi/2 split
   in two so n * PIO2_HI is exact for |n| < 2^29), then Taylor series of sin r and cos r to
   degree 13 and 12 (truncation below 1e-11), and the quadrant n mod 4 picks signs and order.
   About 4x faster than libm's sin + cos here, and far more accurate than rope needs (~1e-8). */
#define PIO2_HI 1.57079637050628662109375        /* pi/2 rounded to float */
#define PIO2_LO (-4.37113900018624283e-8)         /* pi/2 - PIO2_HI */
static void sincos_rope(double x, float *s, float *c) {
    double n = nearbyint(x * 0.63661977236758134308);  /* 2/pi */
    double r = (x - n * PIO2_HI) - n * PIO2_LO;
    double r2 = r * r;
    double sp = r + r * r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 +
                r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800.0))))));
    double cp = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 +
                r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600.0))))));
    switch ((int64_t)n & 3) {
    case 0: *s = (float)sp; *c = (float)cp; break;
    case 1: *s = (float)cp; *c = (float)-sp; break;
    case 2: *s = (float)-sp; *c = (float)-cp; break;
    default: *s = (float)-cp; *c = (float)sp; break;
    }
}

static void rope_tokens(void *arg, long t0, long t1, int ith, int first) {
    (void)ith, (void)first;
    const rope_job *J = arg;
    int half = J->n_rot / 2;
    float c[ROPE_BLOCK], s[ROPE_BLOCK];
    for (long t = t0; t < t1; t++) {
        double p = (double)J->pos[t] * J->freq_scale;
        float *xt = J->x + t * (int64_t)J->n_heads * J->head_dim;
        for (int i0 = 0; i0 < half; i0 += ROPE_BLOCK) {
            int np = half - i0 < ROPE_BLOCK ? half - i0 : ROPE_BLOCK;
            for (int j = 0; j < np; j++) {
                /* The angle in double: at position 32k a float angle would be off by ~2e-3 rad. */
                sincos_rope(p * J->inv_freq[i0 + j], &s[j], &c[j]);
                c[j] *= J->mscale;
                s[j] *= J->mscale;
            }
            for (int h = 0; h < J->n_heads; h++) {
                float *xh = xt + (int64_t)h * J->head_dim;
#if TL_HAVE_X86
                if (J->avx2) { rope_head_avx2(xh, half, J->neox, i0, np, c, s); continue; }
#endif
                rope_head_ref(xh, half, J->neox, i0, np, c, s);
            }
        }
    }
}

int tl_rope(tl_pool *pool, float *x, int64_t n_tok, int n_heads, int head_dim, int n_rot,
            const int32_t *pos, float base, float freq_scale, int neox, const float *factors,
            float mscale) {
    if (!pool || n_tok < 0 || n_heads <= 0 || head_dim <= 0 || n_rot < 0 || n_rot % 2 != 0 ||
        n_rot > head_dim || n_rot > 2 * ROPE_MAX_PAIRS || !(base > 0.0f) || !isfinite(base) ||
        !isfinite(freq_scale) || !(mscale > 0.0f) || !isfinite(mscale))
        return TL_ERR_ARG;
    if (n_tok == 0 || n_rot == 0) return TL_OK;
    if (!x || !pos) return TL_ERR_ARG;
    if (factors)
        for (int i = 0; i < n_rot / 2; i++)
            if (!(factors[i] > 0.0f) || !isfinite(factors[i])) return TL_ERR_ARG;
    rope_job J;
    J.x = x;
    J.n_tok = n_tok;
    J.n_heads = n_heads;
    J.head_dim = head_dim;
    J.n_rot = n_rot;
    J.neox = neox != 0;
    J.pos = pos;
    J.freq_scale = freq_scale;
    J.mscale = mscale;
    J.avx2 = pool_avx2(pool);
    /* base^(-2i/n_rot) as powers of one ratio: 512 products drift by < 1e-13, and one pow per
       call instead of one per pair keeps a decode-step rope near a microsecond. */
    double ratio = pow((double)base, -2.0 / n_rot), f = 1.0;
    for (int i = 0; i < n_rot / 2; i++, f *= ratio) J.inv_freq[i] = factors ? f / factors[i] : f;
    if (n_tok >= 2 && n_tok * n_heads * n_rot >= PAR_MIN_ELEMS / 4) tl_pool_for(pool, rope_tokens, &J, (long)n_tok, 0);
    else rope_tokens(&J, 0, (long)n_tok, 0, 1);
    return TL_OK;
}

/* ---------------------------------------------------------------- gated activations */

/* Both activations are gate * sigmoid(k * u(gate)) * up: silu(g) = g sigmoid(g), and
   gelu_tanh(g) = 0.5 g (1 + tanh(u)) = g sigmoid(2u) with u = sqrt(2/pi) (g + 0.044715 g^3).
   The sigmoid form has no cancellation for negative g, where 1 + tanh(u) loses every digit. */
#define GELU_2C 1.5957691216057308f   /* 2 sqrt(2/pi) */
#define GELU_A 0.044715f

static void swiglu_ref(const float *g, const float *u, float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = g[i] * u[i] / (1.0f + expf(-g[i]));
}

static void geglu_ref(const float *g, const float *u, float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        float z = GELU_2C * x * (1.0f + GELU_A * x * x);
        o[i] = x * u[i] / (1.0f + expf(-z));
    }
}

/* The AVX2 twins compute every element with the same vector code, a tail of fewer than 8 too
   (through a padded copy): an element's bits never depend on where it sits in the buffer, so a
   token's row gives the same result whatever the batch around it and the thread split. */
#if TL_HAVE_X86
TL_AVX2_BEGIN
static inline __m256 swiglu8(__m256 x, __m256 u) {
    __m256 e = tl_exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(_mm256_mul_ps(x, u), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 geglu8(__m256 x, __m256 u) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_A), x), x, one);
    __m256 e = tl_exp8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-GELU_2C), x), t));
    return _mm256_div_ps(_mm256_mul_ps(x, u), _mm256_add_ps(one, e));
}

static void swiglu_avx2(const float *g, const float *u, float *o, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, swiglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        _Alignas(32) float gb[8] = {0}, ub[8] = {0};
        memcpy(gb, g + i, sizeof(float) * (size_t)(n - i));
        memcpy(ub, u + i, sizeof(float) * (size_t)(n - i));
        _mm256_store_ps(gb, swiglu8(_mm256_load_ps(gb), _mm256_load_ps(ub)));
        memcpy(o + i, gb, sizeof(float) * (size_t)(n - i));
    }
}

static void geglu_avx2(const float *g, const float *u, float *o, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, geglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        _Alignas(32) float gb[8] = {0}, ub[8] = {0};
        memcpy(gb, g + i, sizeof(float) * (size_t)(n - i));
        memcpy(ub, u + i, sizeof(float) * (size_t)(n - i));
        _mm256_store_ps(gb, geglu8(_mm256_load_ps(gb), _mm256_load_ps(ub)));
        memcpy(o + i, gb, sizeof(float) * (size_t)(n - i));
    }
}
/* erfc(z) for z >= 0 as t exp(-z^2 + P(t)), t = 1 / (1 + z/2), P of degree 9 (the Chebyshev
   fit of Numerical Recipes' erfcc): relative error below 1.2e-7 for every z >= 0. ERFC_P holds
   P's coefficients, lowest first, for both widths. */
static const float ERFC_P[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f,
                                 -0.18628806f, 0.27886807f, -1.13520398f, 1.48851587f,
                                 -0.82215223f, 0.17087277f};
static inline __m256 erfc_pos8(__m256 z) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, one));
    __m256 p = _mm256_set1_ps(ERFC_P[9]);
    for (int k = 8; k >= 0; k--) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERFC_P[k]));
    return _mm256_mul_ps(t, tl_exp8(_mm256_fnmadd_ps(z, z, p)));
}

/* x Phi(x) = x erfc(-x / sqrt 2) / 2, with erfc(-z) = 2 - erfc(z) for the positive side. */
static inline __m256 gelu8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(-0.70710678118654752f));     /* -x / sqrt 2 */
    __m256 e = erfc_pos8(_mm256_andnot_ps(sign, z));
    __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
    e = _mm256_blendv_ps(e, _mm256_sub_ps(_mm256_set1_ps(2.0f), e), neg);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), e);
}

static void gelu_avx2(const float *g, const float *u, float *o, int64_t n) {
    (void)u;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, gelu8(_mm256_loadu_ps(g + i)));
    if (i < n) {
        _Alignas(32) float gb[8] = {0};
        memcpy(gb, g + i, sizeof(float) * (size_t)(n - i));
        _mm256_store_ps(gb, gelu8(_mm256_load_ps(gb)));
        memcpy(o + i, gb, sizeof(float) * (size_t)(n - i));
    }
}

TL_AVX2_END

TL_VNNI_BEGIN
/* gelu8 on 16 lanes where the pool has AVX-512: the same operations lane for lane (division and
   FMA round alike at any width), so the AVX2 twin's bits (test_ops). */
static inline __m512 erfc_pos16(__m512 z) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.5f), z, one));
    __m512 p = _mm512_set1_ps(ERFC_P[9]);
    for (int k = 8; k >= 0; k--) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERFC_P[k]));
    return _mm512_mul_ps(t, tl_exp16(_mm512_fnmadd_ps(z, z, p)));
}

static inline __m512 gelu16(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(-0.70710678118654752f));     /* -x / sqrt 2 */
    __m512 e = erfc_pos16(_mm512_abs_ps(z));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    e = _mm512_mask_blend_ps(neg, e, _mm512_sub_ps(_mm512_set1_ps(2.0f), e));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), e);
}

static void gelu_avx512(const float *g, const float *u, float *o, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, gelu16(_mm512_loadu_ps(g + i)));
    if (i < n) gelu_avx2(g + i, u, o + i, n - i);   /* the same bits by construction */
}
TL_VNNI_END
#endif

typedef void (*gated_fn)(const float *g, const float *u, float *o, int64_t n);

typedef struct {
    const float *g, *u;
    float *o;
    int64_t n;
    gated_fn fn;
} gated_job;

/* Blocks [b0, b1) of 64 floats, so every part but the last has whole vectors. */
static void gated_part(void *arg, long b0, long b1, int ith, int first) {
    (void)ith, (void)first;
    const gated_job *J = arg;
    int64_t s = (int64_t)b0 * 64, e = (int64_t)b1 * 64;
    if (e > J->n) e = J->n;
    if (s < e) J->fn(J->g + s, J->u + s, J->o + s, e - s);
}

static int gated_run(tl_pool *pool, const float *g, const float *u, float *o, int64_t n,
                     gated_fn ref, gated_fn avx2, gated_fn avx512) {
    if (!pool || n < 0) return TL_ERR_ARG;
    if (n == 0) return TL_OK;
    if (!g || !u || !o) return TL_ERR_ARG;
    gated_fn fn = pool_avx2(pool) && avx2 ? avx2 : ref;
    if (avx512 && fn == avx2 && (tl_pool_features(pool) & TL_CPU_AVX512VNNI)) fn = avx512;
    gated_job J = {g, u, o, n, fn};
    if (n >= PAR_MIN_ELEMS / 2) tl_pool_for(pool, gated_part, &J, (long)((n + 63) / 64), 0);
    else gated_part(&J, 0, (long)((n + 63) / 64), 0, 1);
    return TL_OK;
}

#if TL_HAVE_X86
#define SWIGLU_AVX2 swiglu_avx2
#define GEGLU_AVX2 geglu_avx2
#define GELU_AVX2 gelu_avx2
#define GELU_AVX512 gelu_avx512
#else
#define SWIGLU_AVX2 NULL
#define GEGLU_AVX2 NULL
#define GELU_AVX2 NULL
#define GELU_AVX512 NULL
#endif

int tl_swiglu(tl_pool *pool, const float *gate, const float *up, float *out, int64_t n) {
    return gated_run(pool, gate, up, out, n, swiglu_ref, SWIGLU_AVX2, NULL);
}

int tl_geglu(tl_pool *pool, const float *gate, const float *up, float *out, int64_t n) {
    return gated_run(pool, gate, up, out, n, geglu_ref, GEGLU_AVX2, NULL);
}

/* Exact GELU, x Phi(x) = 0.5 x erfc(-x / sqrt 2) (erfc keeps the digits for negative x), for
   encoder feed-forwards: the reference with libm's erfcf, its AVX2 twin (gelu8) within about
   3e-7 of it. Blocks of 64 elements, as the gated activations. */
static void gelu_ref(const float *g, const float *u, float *o, int64_t n) {
    (void)u;
    for (int64_t i = 0; i < n; i++) o[i] = 0.5f * g[i] * erfcf(-g[i] * 0.70710678118654752f);
}

int tl_gelu(tl_pool *pool, const float *x, float *out, int64_t n) {
    return gated_run(pool, x, x, out, n, gelu_ref, GELU_AVX2, GELU_AVX512);   /* "up" unused */
}

/* ---------------------------------------------------------------- add, scale */

/* Plain loops: the compiler vectorises them at the baseline ISA, and they have no pool to ask
   for wider SIMD; both are memory-bound on vectors of a few thousand floats. */
void tl_add(float *y, const float *x, int64_t n) {
    if (!y || !x) return;
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void tl_scale(float *y, float s, int64_t n) {
    if (!y) return;
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

int tl_softcap(float *y, float cap, int64_t n) {
    if (!y || n < 0 || !(cap > 0.0f) || !isfinite(cap)) return TL_ERR_ARG;
    float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++) y[i] = cap * tanhf(y[i] * inv);
    return TL_OK;
}

void tl_add_rows(float *y, const float *b, int64_t n_rows, int64_t n) {
    if (!y || !b) return;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) y[r * n + i] += b[i];
}

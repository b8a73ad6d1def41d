/* Encoding floats as Q4_K: per 256-element super-block, eight sub-blocks of 32 values decode as
   y = (d * sc) * q - (dmin * m) with q in 0..15, 6-bit sc and m, and f16 d and dmin.

   Our method, in three steps:
   1. For each sub-block, a float scale s >= 0 and offset m >= 0 (x ~ s * q - m) that minimise
      the squared error: try a ladder of step sizes over [min(x, 0), max(x)], and for each one
      alternate nearest-level assignment with the least-squares (s, m) for that assignment.
      (m >= 0 because the decoder subtracts dmin * m with dmin >= 0: zero is always in range.)
   2. d = max(s) / 63 and dmin = max(m) / 63 rounded to f16; sc and m rounded against them.
   3. Each sub-block tries sc +-1 and m +-1 with the real (f16, 6-bit) factors and keeps the pair
      whose decoded values, computed exactly as the decoder does, have the least squared error. */
#include <math.h>

#include "quants.h"

/* Errors are measured on the decoder's own f32 arithmetic. */
TL_NO_FP_CONTRACT

#define SUB 32                    /* elements per sub-block */
#define NSUB (TL_QK_K / SUB)      /* sub-blocks per super-block */
#define QMAX 15                   /* largest 4-bit quant */
#define SMAX 63                   /* largest 6-bit scale or min */
/* Step ladder of step 1: (hi - lo) / 13, / 13.5, ... / 17, each refined twice. A finer ladder
   (25 rungs, 3 rounds) gains 0.2% RMS error for 4x the time. */
#define N_STEPS 8
#define STEP_LO 13.0f
#define STEP_INC 0.5f
#define N_ITER 2

/* round(v) clamped to [0, hi]; NaN -> 0. (Not roundf: without SSE4.1 that is a libm call, and
   how exact ties round does not matter to this encoder.) */
static int round_clamp(float v, int hi) {
    if (!(v > 0.0f)) return 0;
    if (v >= (float)hi) return hi;
    return (int)(v + 0.5f);
}

/* Nearest levels of s * q - m for each x; returns the squared error (in double). */
static double assign(const float *x, float s, float m, uint8_t *q) {
    float inv = s > 0.0f ? 1.0f / s : 0.0f;
    double err = 0.0;
    for (int i = 0; i < SUB; i++) {
        q[i] = (uint8_t)round_clamp((x[i] + m) * inv, QMAX);
        double e = (double)s * q[i] - m - x[i];
        err += e * e;
    }
    return err;
}

/* Least-squares s and m (x ~ s * q - m) for a fixed assignment q, with s >= 0 and m >= 0.
   Leaves s and m unchanged when q is constant (the fit is then undetermined). */
static void refit(const float *x, const uint8_t *q, float *s, float *m) {
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < SUB; i++) {
        sq += q[i];
        sqq += (double)q[i] * q[i];
        sx += x[i];
        sqx += (double)q[i] * x[i];
    }
    double det = SUB * sqq - sq * sq;
    if (det <= 0) return;
    double slope = (SUB * sqx - sq * sx) / det;
    double offset = (sqq * sx - sq * sqx) / det;   /* x ~ slope * q + offset */
    if (offset > 0) {                               /* m >= 0: fit through the origin */
        offset = 0;
        slope = sqx / sqq;
    }
    *s = slope > 0 ? (float)slope : 0.0f;
    *m = (float)-offset;
}

/* Step 1: the float (s, m) of least squared error for one sub-block. */
static void fit_sub_block(const float *x, float *s_out, float *m_out) {
    float lo = 0.0f, hi = -INFINITY;
    for (int i = 0; i < SUB; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    if (!(hi > lo)) {               /* constant non-positive block (or NaN): all at -m */
        *s_out = 0.0f;
        *m_out = lo == lo ? -lo : 0.0f;
        return;
    }
    uint8_t q[SUB];
    float best_s = (hi - lo) / QMAX, best_m = -lo;
    double best = assign(x, best_s, best_m, q);
    for (int t = 0; t <= N_STEPS; t++) {
        float s = (hi - lo) / (STEP_LO + STEP_INC * (float)t), m = -lo;
        for (int iter = 0; iter < N_ITER; iter++) {
            double err = assign(x, s, m, q);
            if (err < best) {
                best = err;
                best_s = s;
                best_m = m;
            }
            refit(x, q, &s, &m);
        }
        double err = assign(x, s, m, q);
        if (err < best) {
            best = err;
            best_s = s;
            best_m = m;
        }
    }
    *s_out = best_s;
    *m_out = best_m;
}

/* Squared error of one sub-block decoded with 6-bit sc and m; fills the quants. */
static double try_scales(const float *x, float d, float dmin, int sc, int m, uint8_t *q) {
    float dl = d * (float)sc;
    float ml = dmin * (float)m;
    double err = 0.0;
    for (int i = 0; i < SUB; i++) {
        q[i] = dl > 0.0f ? (uint8_t)round_clamp((x[i] + ml) / dl, QMAX) : 0;
        float y = dl * (float)q[i];
        double e = (double)(y - ml) - x[i];
        err += e * e;
    }
    return err;
}

/* Step 3 for one sub-block: the best (sc, m) near the rounded pair, and its quants. */
static void refine_sub_block(const float *x, float d, float dmin, int *sc, int *m, uint8_t *q) {
    int sc0 = *sc, m0 = *m;
    uint8_t trial[SUB];
    double best = try_scales(x, d, dmin, sc0, m0, q);
    for (int dsc = -1; dsc <= 1; dsc++) {
        for (int dm = -1; dm <= 1; dm++) {
            int c = sc0 + dsc, n = m0 + dm;
            if ((dsc == 0 && dm == 0) || c < 0 || c > SMAX || n < 0 || n > SMAX) continue;
            double err = try_scales(x, d, dmin, c, n, trial);
            if (err < best) {
                best = err;
                *sc = c;
                *m = n;
                for (int i = 0; i < SUB; i++) q[i] = trial[i];
            }
        }
    }
}

static void pack_scales(const int sc[NSUB], const int m[NSUB], uint8_t out[TL_K_SCALE_BYTES]) {
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        out[j + 4] = (uint8_t)((m[j] & 63) | (m[j + 4] >> 4) << 6);
        out[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
}

static void quant_q4_K_block(const float *x, tl_block_q4_K *b) {
    float s[NSUB], mins[NSUB];
    float s_max = 0.0f, m_max = 0.0f;
    for (int j = 0; j < NSUB; j++) {
        fit_sub_block(x + j * SUB, &s[j], &mins[j]);
        s_max = fmaxf(s_max, s[j]);
        m_max = fmaxf(m_max, mins[j]);
    }
    b->d = tl_float_to_half(s_max / SMAX);
    b->dmin = tl_float_to_half(m_max / SMAX);
    float d = tl_half_to_float(b->d), dmin = tl_half_to_float(b->dmin);
    int sc[NSUB], m[NSUB];
    uint8_t q[NSUB][SUB];
    for (int j = 0; j < NSUB; j++) {
        sc[j] = d > 0.0f ? round_clamp(s[j] / d, SMAX) : 0;
        m[j] = dmin > 0.0f ? round_clamp(mins[j] / dmin, SMAX) : 0;
        refine_sub_block(x + j * SUB, d, dmin, &sc[j], &m[j], q[j]);
    }
    pack_scales(sc, m, b->scales);
    for (int j = 0; j < NSUB; j += 2) {
        for (int l = 0; l < SUB; l++) {
            b->qs[(j / 2) * 32 + l] = (uint8_t)(q[j][l] | q[j + 1][l] << 4);
        }
    }
}

void tl_quant_q4_K(const float *src, void *dst, int64_t nb) {
    tl_block_q4_K *b = dst;
    for (int64_t k = 0; k < nb; k++) quant_q4_K_block(src + k * TL_QK_K, &b[k]);
}

/* Scalar reference dots of the float and 32-element formats: the twins the AVX2 kernels are
   tested against, and the path a TL_POOL_SCALAR pool runs. */
#include "dot.h"

/* ---- float weights with f32 activations ---- */

void tl_dot_f32_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const float *x = a;
    for (int64_t r = 0; r < nr; r++) {
        const float *row = (const float *)((const uint8_t *)w + r * rb);
        float acc[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) acc[k] += row[i + k] * x[i + k];
        float sum = 0.0f;
        for (; i < n; i++) sum += row[i] * x[i];
        for (int k = 0; k < 8; k++) sum += acc[k];
        out[r] = sum;
    }
}

void tl_dot_f16_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const float *x = a;
    for (int64_t r = 0; r < nr; r++) {
        const tl_half *row = (const tl_half *)((const uint8_t *)w + r * rb);
        float acc[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) acc[k] += tl_half_to_float(row[i + k]) * x[i + k];
        float sum = 0.0f;
        for (; i < n; i++) sum += tl_half_to_float(row[i]) * x[i];
        for (int k = 0; k < 8; k++) sum += acc[k];
        out[r] = sum;
    }
}

void tl_dot_bf16_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const float *x = a;
    for (int64_t r = 0; r < nr; r++) {
        const tl_bf16 *row = (const tl_bf16 *)((const uint8_t *)w + r * rb);
        float acc[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) acc[k] += tl_bf16_to_float(row[i + k]) * x[i + k];
        float sum = 0.0f;
        for (; i < n; i++) sum += tl_bf16_to_float(row[i]) * x[i];
        for (int k = 0; k < 8; k++) sum += acc[k];
        out[r] = sum;
    }
}

/* ---- 32-element formats with tl_act_q8 activations ---- */

/* The 32 quants of a 4-bit block: element j in the low nibble of qs[j], j+16 in the high one. */
static inline void nibbles(const uint8_t qs[16], uint8_t q[32]) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

/* Adds the fifth bit (bit j of the little-endian qh word) to each of 32 quants. */
static inline void fifth_bits(const uint8_t qh_bytes[4], uint8_t q[32]) {
    uint32_t qh = (uint32_t)qh_bytes[0] | (uint32_t)qh_bytes[1] << 8 | (uint32_t)qh_bytes[2] << 16 |
                  (uint32_t)qh_bytes[3] << 24;
    for (int j = 0; j < 32; j++) q[j] |= (uint8_t)(((qh >> j) & 1u) << 4);
}

/* One 32-element block of a simple format as bytes q (unsigned, or signed for Q8_0), a scale d
   and a min m, so that weight[i] = d * q[i] + m (Q4_0: m = -8d; Q5_0: m = -16d; Q8_0: m = 0). */
static inline void unpack_block(int wtype, const void *blk, uint8_t q[TL_QK], float *d, float *m) {
    switch (wtype) {
    case TL_Q4_0: {
        const tl_block_q4_0 *b = blk;
        nibbles(b->qs, q);
        *d = tl_half_to_float(b->d);
        *m = -8.0f * *d;
        break;
    }
    case TL_Q4_1: {
        const tl_block_q4_1 *b = blk;
        nibbles(b->qs, q);
        *d = tl_half_to_float(b->d);
        *m = tl_half_to_float(b->m);
        break;
    }
    case TL_Q5_0: {
        const tl_block_q5_0 *b = blk;
        nibbles(b->qs, q);
        fifth_bits(b->qh, q);
        *d = tl_half_to_float(b->d);
        *m = -16.0f * *d;
        break;
    }
    case TL_Q5_1: {
        const tl_block_q5_1 *b = blk;
        nibbles(b->qs, q);
        fifth_bits(b->qh, q);
        *d = tl_half_to_float(b->d);
        *m = tl_half_to_float(b->m);
        break;
    }
    default: { /* TL_Q8_0 */
        const tl_block_q8_0 *b = blk;
        memcpy(q, b->qs, TL_QK);
        *d = tl_half_to_float(b->d);
        *m = 0.0f;
        break;
    }
    }
}

/* sum_j q[j] * x[j] with q unsigned (0..31) or, for signed, reinterpreted as int8. */
static inline int isum_u8(const uint8_t q[32], const int8_t x[32]) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * x[j];
    return s;
}

static inline int isum_s8(const int8_t q[32], const int8_t x[32]) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * x[j];
    return s;
}

/* The block dot is d * dx * isum + m * s: the min (or offset) meets the activation sum. */
static inline void dot_simple_ref(int wtype, size_t bytes, const void *w, size_t rb, int64_t nr,
                           const void *a, int64_t n, float *out) {
    const tl_act_q8 *x = a;
    int64_t nb = n / TL_QK;
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rb;
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t q[TL_QK];
            float d, m;
            unpack_block(wtype, row + b * bytes, q, &d, &m);
            int is = wtype == TL_Q8_0 ? isum_s8((const int8_t *)q, x[b].qs) : isum_u8(q, x[b].qs);
            sum += d * x[b].d * (float)is + m * x[b].s;
        }
        out[r] = sum;
    }
}

void tl_dot_q4_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple_ref(TL_Q4_0, sizeof(tl_block_q4_0), w, rb, nr, a, n, out);
}

void tl_dot_q4_1_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple_ref(TL_Q4_1, sizeof(tl_block_q4_1), w, rb, nr, a, n, out);
}

void tl_dot_q5_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple_ref(TL_Q5_0, sizeof(tl_block_q5_0), w, rb, nr, a, n, out);
}

void tl_dot_q5_1_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple_ref(TL_Q5_1, sizeof(tl_block_q5_1), w, rb, nr, a, n, out);
}

void tl_dot_q8_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    dot_simple_ref(TL_Q8_0, sizeof(tl_block_q8_0), w, rb, nr, a, n, out);
}

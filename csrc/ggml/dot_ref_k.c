/* Scalar reference dots of the K formats (256-element super-blocks) with Q8_K activations.
   Each works in integers per super-block: sum_j scale_j * sum_{i in j} q_i x_i, with the mins (or
   the fixed offsets) applied through the activation's group sums (bsums), then one float step. */
#include "dot.h"

/* Sum of q[i] * x[i] over n elements. */
static inline int isum(const int8_t *q, const int8_t *x, int n) {
    int s = 0;
    for (int i = 0; i < n; i++) s += q[i] * x[i];
    return s;
}

/* The 8 six-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes:
   bytes 0-3: scales 0-3 (low 6 bits), high 2 bits of scales 4-7;
   bytes 4-7: mins 0-3 (low 6 bits), high 2 bits of mins 4-7;
   bytes 8-11: low nibble = low 4 bits of scale 4+j, high nibble = low 4 bits of min 4+j. */
void tl_k_scales_mins(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* The 16 six-bit scales of Q3_K (stored biased by 32): low nibbles in bytes 0-7 (scale j < 8 in
   the low nibble of byte j, scale j + 8 in its high nibble), high 2 bits in bytes 8-11 (scale j
   at bits 2*(j/4) of byte 8 + j%4). */
void tl_q3_k_scales(const uint8_t s[12], int8_t sc[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = (s[j % 8] >> (4 * (j / 8))) & 0x0f;
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | hi << 4) - 32);
    }
}

void tl_dot_q2_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q2_K *blk = (const tl_block_q2_K *)((const uint8_t *)w + r * rb);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int8_t q[TL_QK_K];
            /* element 128h + 32s + l: bits 2s of qs[32h + l] */
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 4; s++)
                    for (int l = 0; l < 32; l++)
                        q[128 * h + 32 * s + l] = (int8_t)((blk[b].qs[32 * h + l] >> (2 * s)) & 3);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 16; j++) {
                sumi += (blk[b].scales[j] & 0x0f) * isum(q + 16 * j, x[b].qs + 16 * j, 16);
                summ += (blk[b].scales[j] >> 4) * x[b].bsums[j];
            }
            sum += x[b].d * (tl_half_to_float(blk[b].d) * (float)sumi -
                             tl_half_to_float(blk[b].dmin) * (float)summ);
        }
        out[r] = sum;
    }
}

void tl_dot_q3_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q3_K *blk = (const tl_block_q3_K *)((const uint8_t *)w + r * rb);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int8_t q[TL_QK_K], sc[16];
            /* element 128h + 32s + l: low bits 2s of qs[32h + l], high bit 4h + s of hmask[l];
               a clear high bit means -4 */
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 4; s++)
                    for (int l = 0; l < 32; l++) {
                        int lo = (blk[b].qs[32 * h + l] >> (2 * s)) & 3;
                        int hi = (blk[b].hmask[l] >> (4 * h + s)) & 1;
                        q[128 * h + 32 * s + l] = (int8_t)(lo - (hi ? 0 : 4));
                    }
            tl_q3_k_scales(blk[b].scales, sc);
            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += sc[j] * isum(q + 16 * j, x[b].qs + 16 * j, 16);
            sum += x[b].d * tl_half_to_float(blk[b].d) * (float)sumi;
        }
        out[r] = sum;
    }
}

void tl_dot_q4_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q4_K *blk = (const tl_block_q4_K *)((const uint8_t *)w + r * rb);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int8_t q[TL_QK_K];
            uint8_t sc[8], mn[8];
            /* element 64c + 32k + l: nibble k of qs[32c + l] */
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    q[64 * c + l] = (int8_t)(blk[b].qs[32 * c + l] & 0x0f);
                    q[64 * c + 32 + l] = (int8_t)(blk[b].qs[32 * c + l] >> 4);
                }
            tl_k_scales_mins(blk[b].scales, sc, mn);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; j++) {
                sumi += sc[j] * isum(q + 32 * j, x[b].qs + 32 * j, 32);
                summ += mn[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
            }
            sum += x[b].d * (tl_half_to_float(blk[b].d) * (float)sumi -
                             tl_half_to_float(blk[b].dmin) * (float)summ);
        }
        out[r] = sum;
    }
}

void tl_dot_q5_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q5_K *blk = (const tl_block_q5_K *)((const uint8_t *)w + r * rb);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int8_t q[TL_QK_K];
            uint8_t sc[8], mn[8];
            /* element 64c + 32k + l: nibble k of qs[32c + l], fifth bit 2c + k of qh[l] */
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    int h0 = (blk[b].qh[l] >> (2 * c)) & 1, h1 = (blk[b].qh[l] >> (2 * c + 1)) & 1;
                    q[64 * c + l] = (int8_t)((blk[b].qs[32 * c + l] & 0x0f) | h0 << 4);
                    q[64 * c + 32 + l] = (int8_t)((blk[b].qs[32 * c + l] >> 4) | h1 << 4);
                }
            tl_k_scales_mins(blk[b].scales, sc, mn);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; j++) {
                sumi += sc[j] * isum(q + 32 * j, x[b].qs + 32 * j, 32);
                summ += mn[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
            }
            sum += x[b].d * (tl_half_to_float(blk[b].d) * (float)sumi -
                             tl_half_to_float(blk[b].dmin) * (float)summ);
        }
        out[r] = sum;
    }
}

void tl_dot_q6_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out) {
    const tl_block_q8_K *x = a;
    int64_t nb = n / TL_QK_K;
    for (int64_t r = 0; r < nr; r++) {
        const tl_block_q6_K *blk = (const tl_block_q6_K *)((const uint8_t *)w + r * rb);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int8_t q[TL_QK_K];
            /* element 128h + i (i < 128): low 4 bits from nibble i/64 of ql[64h + i%64], high 2
               bits from bits 2*(i/32) of qh[32h + i%32]; stored biased by 32 */
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 128; i++) {
                    int lo = (blk[b].ql[64 * h + i % 64] >> (4 * (i / 64))) & 0x0f;
                    int hi = (blk[b].qh[32 * h + i % 32] >> (2 * (i / 32))) & 3;
                    q[128 * h + i] = (int8_t)((lo | hi << 4) - 32);
                }
            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += blk[b].scales[j] * isum(q + 16 * j, x[b].qs + 16 * j, 16);
            sum += x[b].d * tl_half_to_float(blk[b].d) * (float)sumi;
        }
        out[r] = sum;
    }
}

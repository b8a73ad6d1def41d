/* Decoding the 256-element super-block formats (Q2_K ... Q8_K). Scalar reference code.

   Shared layout facts: element e of a super-block lies in 16-element group e / 16 (Q2_K, Q3_K,
   Q6_K scales) or 32-element sub-block e / 32 (Q4_K, Q5_K scales). Bit planes are interleaved
   per 32 bytes: a byte array `qs` holding b-bit fields stores element e at byte
   (e / (32 * 8 / b)) * 32 + e % 32, field (e / 32) % (8 / b); Q6_K's low nibbles alone use
   64-byte planes. */
#include "quants.h"

/* The scale products and the final multiply-subtract each round to f32: never fuse. */
TL_NO_FP_CONTRACT

void tl_dequant_q2_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q2_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        float d = tl_half_to_float(b[k].d);
        float dmin = tl_half_to_float(b[k].dmin);
        for (int c = 0; c < TL_QK_K / 32; c++) {       /* 32 elements: one 2-bit field */
            const uint8_t *qs = b[k].qs + (c / 4) * 32;
            int shift = 2 * (c % 4);
            for (int h = 0; h < 2; h++) {               /* two groups of 16 per column */
                int g = 2 * c + h;
                float dl = d * (float)(b[k].scales[g] & 15);
                float ml = dmin * (float)(b[k].scales[g] >> 4);
                for (int l = 16 * h; l < 16 * h + 16; l++) {
                    float y = dl * (float)((qs[l] >> shift) & 3);
                    dst[c * 32 + l] = y - ml;
                }
            }
        }
    }
}

/* Q3_K's sixteen 6-bit scales, stored with an offset of 32: the low nibbles of scales 0-7 and
   8-15 are the low and high nibbles of bytes 0-7; their top two bits are the 2-bit fields of
   bytes 8-11 (scale i in byte 8 + i % 4, field i / 4). */
static void q3_K_scales(const uint8_t s[12], int out[16]) {
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? s[i] & 15 : s[i - 8] >> 4;
        int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = (lo | hi << 4) - 32;
    }
}

void tl_dequant_q3_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q3_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        float d = tl_half_to_float(b[k].d);
        int sc[16];
        q3_K_scales(b[k].scales, sc);
        for (int c = 0; c < TL_QK_K / 32; c++) {
            const uint8_t *qs = b[k].qs + (c / 4) * 32;
            int shift = 2 * (c % 4);
            for (int h = 0; h < 2; h++) {
                float dl = d * (float)sc[2 * c + h];
                for (int l = 16 * h; l < 16 * h + 16; l++) {
                    int low = (qs[l] >> shift) & 3;
                    int high_set = (b[k].hmask[l] >> c) & 1;
                    int q = low - (high_set ? 0 : 4);   /* a clear high bit means q - 4 */
                    dst[c * 32 + l] = dl * (float)q;
                }
            }
        }
    }
}

void tl_dequant_q4_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q4_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        float d = tl_half_to_float(b[k].d);
        float dmin = tl_half_to_float(b[k].dmin);
        for (int j = 0; j < TL_QK_K / 32; j++) {
            int sc, m;
            tl_k_scale_min(b[k].scales, j, &sc, &m);
            float dl = d * (float)sc;
            float ml = dmin * (float)m;
            const uint8_t *qs = b[k].qs + (j / 2) * 32;
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                float y = dl * (float)((qs[l] >> shift) & 15);
                dst[j * 32 + l] = y - ml;
            }
        }
    }
}

void tl_dequant_q5_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q5_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        float d = tl_half_to_float(b[k].d);
        float dmin = tl_half_to_float(b[k].dmin);
        for (int j = 0; j < TL_QK_K / 32; j++) {
            int sc, m;
            tl_k_scale_min(b[k].scales, j, &sc, &m);
            float dl = d * (float)sc;
            float ml = dmin * (float)m;
            const uint8_t *qs = b[k].qs + (j / 2) * 32;
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                int q = ((qs[l] >> shift) & 15) | ((b[k].qh[l] >> j) & 1) << 4;
                float y = dl * (float)q;
                dst[j * 32 + l] = y - ml;
            }
        }
    }
}

void tl_dequant_q6_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q6_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        float d = tl_half_to_float(b[k].d);
        for (int c = 0; c < TL_QK_K / 32; c++) {
            /* low nibbles: 64-byte planes, two fields each; high pairs: 32-byte planes, four */
            const uint8_t *ql = b[k].ql + (c / 4) * 64 + (c % 2) * 32;
            const uint8_t *qh = b[k].qh + (c / 4) * 32;
            int lshift = 4 * ((c / 2) % 2), hshift = 2 * (c % 4);
            for (int h = 0; h < 2; h++) {
                float dl = d * (float)b[k].scales[2 * c + h];
                for (int l = 16 * h; l < 16 * h + 16; l++) {
                    int q = ((ql[l] >> lshift) & 15) | ((qh[l] >> hshift) & 3) << 4;
                    dst[c * 32 + l] = dl * (float)(q - 32);
                }
            }
        }
    }
}

void tl_dequant_q8_K(const void *src, float *dst, int64_t nb) {
    const tl_block_q8_K *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK_K) {
        for (int e = 0; e < TL_QK_K; e++) dst[e] = b[k].d * (float)b[k].qs[e];
    }
}

/* Decoding the float formats and the 32-element block formats (Q4_0 ... Q8_1), and the
   tl_dequantize entry point (the decoder comes from the type table). Scalar reference code. */
#include <string.h>

#include "quants.h"
#include "types.h"

/* d * q + m must round twice, as the format's definition does: never fuse into an FMA. */
TL_NO_FP_CONTRACT

void tl_dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void tl_dequant_f16(const void *src, float *dst, int64_t n) {
    const tl_half *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = tl_half_to_float(h[i]);
}

void tl_dequant_bf16(const void *src, float *dst, int64_t n) {
    const tl_bf16 *b = src;
    for (int64_t i = 0; i < n; i++) dst[i] = tl_bf16_to_float(b[i]);
}

/* The 4-bit formats hold element i (< 16) in the low nibble of qs[i], element i + 16 in the
   high nibble. The 5-bit ones add bit i of the little-endian 32-bit word qh as bit 4. */
static inline uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

void tl_dequant_q4_0(const void *src, float *dst, int64_t nb) {
    const tl_block_q4_0 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        for (int i = 0; i < TL_QK / 2; i++) {
            dst[i] = d * (float)((b[k].qs[i] & 15) - 8);
            dst[i + TL_QK / 2] = d * (float)((b[k].qs[i] >> 4) - 8);
        }
    }
}

void tl_dequant_q4_1(const void *src, float *dst, int64_t nb) {
    const tl_block_q4_1 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        float m = tl_half_to_float(b[k].m);
        for (int i = 0; i < TL_QK / 2; i++) {
            float lo = d * (float)(b[k].qs[i] & 15);
            float hi = d * (float)(b[k].qs[i] >> 4);
            dst[i] = lo + m;
            dst[i + TL_QK / 2] = hi + m;
        }
    }
}

void tl_dequant_q5_0(const void *src, float *dst, int64_t nb) {
    const tl_block_q5_0 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        uint32_t qh = load_qh(b[k].qh);
        for (int i = 0; i < TL_QK / 2; i++) {
            int lo = (b[k].qs[i] & 15) | (int)((qh >> i) & 1) << 4;
            int hi = (b[k].qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            dst[i] = d * (float)(lo - 16);
            dst[i + TL_QK / 2] = d * (float)(hi - 16);
        }
    }
}

void tl_dequant_q5_1(const void *src, float *dst, int64_t nb) {
    const tl_block_q5_1 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        float m = tl_half_to_float(b[k].m);
        uint32_t qh = load_qh(b[k].qh);
        for (int i = 0; i < TL_QK / 2; i++) {
            int lo = (b[k].qs[i] & 15) | (int)((qh >> i) & 1) << 4;
            int hi = (b[k].qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            float dlo = d * (float)lo;
            float dhi = d * (float)hi;
            dst[i] = dlo + m;
            dst[i + TL_QK / 2] = dhi + m;
        }
    }
}

void tl_dequant_q8_0(const void *src, float *dst, int64_t nb) {
    const tl_block_q8_0 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        for (int i = 0; i < TL_QK; i++) dst[i] = d * (float)b[k].qs[i];
    }
}

/* Q8_1 is Q8_0 plus s = d * sum(qs), which decoding does not need. */
void tl_dequant_q8_1(const void *src, float *dst, int64_t nb) {
    const tl_block_q8_1 *b = src;
    for (int64_t k = 0; k < nb; k++, dst += TL_QK) {
        float d = tl_half_to_float(b[k].d);
        for (int i = 0; i < TL_QK; i++) dst[i] = d * (float)b[k].qs[i];
    }
}

int tl_dequantize(int type, const void *src, float *dst, int64_t n) {
    const tl_type_traits *ty = tl_traits(type);
    if (!ty) return TL_ERR_TYPE;
    if (n < 0 || n % ty->block_elems != 0) return TL_ERR_SIZE;
    if (n == 0) return TL_OK;
    if (src == NULL || dst == NULL) return TL_ERR_ARG;
    ty->dequant(src, dst, n / ty->block_elems);
    return TL_OK;
}

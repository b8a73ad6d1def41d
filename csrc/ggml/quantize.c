/* Encoding floats as F32, F16, BF16, Q8_0 and Q4_0 (Q4_K lives in quantize_k.c), and the
   tl_quantize entry point. Q8_0 and Q4_0 follow the reference scheme of the GGML format, so the
   bytes equal those of other conforming encoders. */
#include <math.h>
#include <string.h>

#include "quants.h"
#include "types.h"

/* x * id + 8.5 rounds twice in the reference scheme: never fuse into an FMA. */
TL_NO_FP_CONTRACT

void tl_quant_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void tl_quant_f16(const float *src, void *dst, int64_t n) {
    tl_half *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = tl_float_to_half(src[i]);
}

/* Round to nearest even on the top 16 bits; a NaN stays a NaN (quiet bit set). */
static tl_bf16 float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (tl_bf16)((x >> 16) | 0x40u);
    return (tl_bf16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

void tl_quant_bf16(const float *src, void *dst, int64_t n) {
    tl_bf16 *b = dst;
    for (int64_t i = 0; i < n; i++) b[i] = float_to_bf16(src[i]);
}

/* Q8_0: d = max|x| / 127, q = x / d rounded half away from zero. */
void tl_quant_q8_0(const float *src, void *dst, int64_t nb) {
    tl_block_q8_0 *b = dst;
    for (int64_t k = 0; k < nb; k++, src += TL_QK) {
        float amax = 0.0f;
        for (int i = 0; i < TL_QK; i++) amax = fmaxf(amax, fabsf(src[i]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[k].d = tl_float_to_half(d);
        for (int i = 0; i < TL_QK; i++) {
            float q = roundf(src[i] * id);
            b[k].qs[i] = (int8_t)(q >= -127.0f && q <= 127.0f ? q : 0.0f); /* NaN -> 0 */
        }
    }
}

/* Q4_0: m = the value of largest magnitude (the first, on ties), d = m / -8, so m itself maps to
   q = 0 and the rest to q = trunc(x / d + 8.5) clamped to 0..15. */
void tl_quant_q4_0(const float *src, void *dst, int64_t nb) {
    tl_block_q4_0 *b = dst;
    for (int64_t k = 0; k < nb; k++, src += TL_QK) {
        float amax = 0.0f, m = 0.0f;
        for (int i = 0; i < TL_QK; i++) {
            if (fabsf(src[i]) > amax) {
                amax = fabsf(src[i]);
                m = src[i];
            }
        }
        float d = m / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[k].d = tl_float_to_half(d);
        uint8_t q[TL_QK];
        for (int i = 0; i < TL_QK; i++) {
            float scaled = src[i] * id;
            float v = scaled + 8.5f;
            q[i] = !(v >= 0.0f) ? 0 : v >= 15.0f ? 15 : (uint8_t)v;   /* trunc; NaN -> 0 */
        }
        for (int i = 0; i < TL_QK / 2; i++) b[k].qs[i] = (uint8_t)(q[i] | q[i + TL_QK / 2] << 4);
    }
}

int tl_quantize(int type, const float *src, void *dst, int64_t n) {
    const tl_type_traits *ty = tl_traits(type);
    if (!ty || !ty->quant) return TL_ERR_TYPE;
    if (n < 0 || n % ty->block_elems != 0) return TL_ERR_SIZE;
    if (n == 0) return TL_OK;
    if (src == NULL || dst == NULL) return TL_ERR_ARG;
    ty->quant(src, dst, n / ty->block_elems);
    return TL_OK;
}

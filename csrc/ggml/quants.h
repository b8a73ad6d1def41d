/* Per-format block codecs shared inside csrc/ggml (not part of the cffi API). */
#ifndef TL_QUANTS_H
#define TL_QUANTS_H

#include <stdint.h>

#include "../tl_common.h"
#include "blocks.h"

/* Bit-exact codecs need every multiply and add rounded on its own: no FMA contraction. clang
   honours the standard pragma; GCC ignores it, but never contracts in ISO C mode (-std=c11).
   The code also keeps each rounding step in its own statement, where no compiler fuses. */
#if defined(__clang__)
#define TL_NO_FP_CONTRACT _Pragma("STDC FP_CONTRACT OFF")
#else
#define TL_NO_FP_CONTRACT
#endif

/* Decode nb consecutive blocks of one format at src into nb * block_elems floats.
   The arithmetic follows the format's reference definition step by step, rounding to f32 after
   every operation, so results are bit-exact (the files compile with FP_CONTRACT off). */
typedef void (*tl_dequant_fn)(const void *src, float *dst, int64_t nb);

void tl_dequant_f32(const void *src, float *dst, int64_t nb);
void tl_dequant_f16(const void *src, float *dst, int64_t nb);
void tl_dequant_bf16(const void *src, float *dst, int64_t nb);

void tl_dequant_q4_0(const void *src, float *dst, int64_t nb);
void tl_dequant_q4_1(const void *src, float *dst, int64_t nb);
void tl_dequant_q5_0(const void *src, float *dst, int64_t nb);
void tl_dequant_q5_1(const void *src, float *dst, int64_t nb);
void tl_dequant_q8_0(const void *src, float *dst, int64_t nb);
void tl_dequant_q8_1(const void *src, float *dst, int64_t nb);
void tl_dequant_q2_K(const void *src, float *dst, int64_t nb);
void tl_dequant_q3_K(const void *src, float *dst, int64_t nb);
void tl_dequant_q4_K(const void *src, float *dst, int64_t nb);
void tl_dequant_q5_K(const void *src, float *dst, int64_t nb);
void tl_dequant_q6_K(const void *src, float *dst, int64_t nb);
void tl_dequant_q8_K(const void *src, float *dst, int64_t nb);

/* Encode nb blocks of floats (nb * block_elems values) into one format. */
typedef void (*tl_quant_fn)(const float *src, void *dst, int64_t nb);

void tl_quant_f32(const float *src, void *dst, int64_t nb);
void tl_quant_f16(const float *src, void *dst, int64_t nb);
void tl_quant_bf16(const float *src, void *dst, int64_t nb);
void tl_quant_q8_0(const float *src, void *dst, int64_t nb);
void tl_quant_q4_0(const float *src, void *dst, int64_t nb);
void tl_quant_q4_K(const float *src, void *dst, int64_t nb);

/* Q4_K / Q5_K pack eight 6-bit scales and eight 6-bit mins into 12 bytes:
   bytes 0-3:  low 6 bits = scale j (j < 4),   top 2 bits = bits 4-5 of scale j+4
   bytes 4-7:  low 6 bits = min j (j < 4),     top 2 bits = bits 4-5 of min j+4
   bytes 8-11: low nibble = bits 0-3 of scale j+4, high nibble = bits 0-3 of min j+4 */
static inline void tl_k_scale_min(const uint8_t *s, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

#endif

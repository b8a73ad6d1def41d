/* Shared by every subsystem inside csrc: the public API (tl_api.h), the AVX2 and AVX-512 VNNI
   region macros, fp16 helpers. */
#ifndef TL_COMMON_H
#define TL_COMMON_H

#include <stdint.h>
#include <string.h>

#include "tl_api.h"


#define TL_CPU_AVX2_SET (TL_CPU_AVX2 | TL_CPU_FMA | TL_CPU_F16C)

/* Functions between TL_AVX2_BEGIN and TL_AVX2_END are compiled for AVX2+FMA+F16C whatever the
   baseline, those between TL_VNNI_BEGIN and TL_VNNI_END for that plus AVX512F/BW/VL/VNNI;
   callers must have checked tl_cpu_features() first. */
#if defined(__x86_64__) && defined(__clang__)
#define TL_HAVE_X86 1
#define TL_AVX2_BEGIN _Pragma("clang attribute push (__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define TL_AVX2_END _Pragma("clang attribute pop")
#define TL_VNNI_BEGIN _Pragma("clang attribute push (__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\"))), apply_to = function)")
#define TL_VNNI_END _Pragma("clang attribute pop")
#elif defined(__x86_64__) && defined(__GNUC__)
#define TL_HAVE_X86 1
#define TL_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define TL_AVX2_END _Pragma("GCC pop_options")
#define TL_VNNI_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\")")
#define TL_VNNI_END _Pragma("GCC pop_options")
#else
#define TL_HAVE_X86 0
#define TL_AVX2_BEGIN
#define TL_AVX2_END
#define TL_VNNI_BEGIN
#define TL_VNNI_END
#endif

/* IEEE binary16 <-> binary32, exact (round to nearest even on the way down). */
static inline float tl_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do { e++; mant <<= 1; } while ((mant & 0x400u) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t tl_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0));
    }
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;           /* 14 .. 24 */
        uint32_t half_mant = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (half_mant & 1u))) half_mant++;
        return (uint16_t)(sign | half_mant);
    }
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1u); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float tl_bf16_to_float(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

#endif

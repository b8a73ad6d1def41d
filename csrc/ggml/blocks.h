/* GGML block formats: the block sizes as macros for the kernels, tied by static_asserts to the
   structs (declared in tl_api.h) that mirror the bytes on disk. */
#ifndef TL_BLOCKS_H
#define TL_BLOCKS_H

#include <stdint.h>
#include <assert.h>

#include "../tl_api.h"

#define TL_QK 32      /* elements per block of the simple formats */
#define TL_QK_K 256   /* elements per super-block of the K formats */
#define TL_K_SCALE_BYTES 12


#define TL_FIELD_LEN(type, field) (sizeof(((type *)0)->field) / sizeof(((type *)0)->field[0]))
static_assert(TL_FIELD_LEN(tl_block_q4_0, qs) == TL_QK / 2, "q4_0 qs");
static_assert(TL_FIELD_LEN(tl_block_q5_0, qh) * 8 == TL_QK, "q5_0 qh");
static_assert(TL_FIELD_LEN(tl_block_q8_0, qs) == TL_QK, "q8_0 qs");
static_assert(TL_FIELD_LEN(tl_block_q2_K, scales) == TL_QK_K / 16, "q2_K scales");
static_assert(TL_FIELD_LEN(tl_block_q2_K, qs) == TL_QK_K / 4, "q2_K qs");
static_assert(TL_FIELD_LEN(tl_block_q3_K, hmask) == TL_QK_K / 8, "q3_K hmask");
static_assert(TL_FIELD_LEN(tl_block_q4_K, scales) == TL_K_SCALE_BYTES, "q4_K scales");
static_assert(TL_FIELD_LEN(tl_block_q4_K, qs) == TL_QK_K / 2, "q4_K qs");
static_assert(TL_FIELD_LEN(tl_block_q5_K, qh) == TL_QK_K / 8, "q5_K qh");
static_assert(TL_FIELD_LEN(tl_block_q6_K, ql) == TL_QK_K / 2, "q6_K ql");
static_assert(TL_FIELD_LEN(tl_block_q6_K, qh) == TL_QK_K / 4, "q6_K qh");
static_assert(TL_FIELD_LEN(tl_block_q6_K, scales) == TL_QK_K / 16, "q6_K scales");
static_assert(TL_FIELD_LEN(tl_block_q8_K, qs) == TL_QK_K, "q8_K qs");
static_assert(TL_FIELD_LEN(tl_block_q8_K, bsums) == TL_QK_K / 16, "q8_K bsums");

static_assert(sizeof(tl_block_q4_0) == 18, "q4_0 size");
static_assert(sizeof(tl_block_q4_1) == 20, "q4_1 size");
static_assert(sizeof(tl_block_q5_0) == 22, "q5_0 size");
static_assert(sizeof(tl_block_q5_1) == 24, "q5_1 size");
static_assert(sizeof(tl_block_q8_0) == 34, "q8_0 size");
static_assert(sizeof(tl_block_q8_1) == 36, "q8_1 size");
static_assert(sizeof(tl_block_q2_K) == 84, "q2_K size");
static_assert(sizeof(tl_block_q3_K) == 110, "q3_K size");
static_assert(sizeof(tl_block_q4_K) == 144, "q4_K size");
static_assert(sizeof(tl_block_q5_K) == 176, "q5_K size");
static_assert(sizeof(tl_block_q6_K) == 210, "q6_K size");
static_assert(sizeof(tl_block_q8_K) == 292, "q8_K size");

#endif

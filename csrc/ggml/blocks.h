/* GGML block formats: structs that mirror the bytes on disk, one per quantized type. */
#ifndef TL_BLOCKS_H
#define TL_BLOCKS_H

#include <stdint.h>
#include <assert.h>

#define TL_QK 32      /* elements per block of the simple formats */
#define TL_QK_K 256   /* elements per super-block of the K formats */
#define TL_K_SCALE_BYTES 12

/* The section below is also read by cffi, whose cdef expands no macros: array sizes are written
   out (TL_QK = 32, TL_QK_K = 256); the static_asserts after it tie them to the macros. */
/* @cdef-begin */
typedef uint16_t tl_half;   /* IEEE 754 binary16, stored as raw bits */
typedef uint16_t tl_bf16;   /* bfloat16, stored as raw bits */

/* GGML type ids, as written in GGUF tensor infos. */
enum tl_type {
    TL_F32 = 0, TL_F16 = 1, TL_Q4_0 = 2, TL_Q4_1 = 3, TL_Q5_0 = 6, TL_Q5_1 = 7,
    TL_Q8_0 = 8, TL_Q8_1 = 9, TL_Q2_K = 10, TL_Q3_K = 11, TL_Q4_K = 12, TL_Q5_K = 13,
    TL_Q6_K = 14, TL_Q8_K = 15, TL_BF16 = 30,
};

typedef struct { tl_half d; uint8_t qs[16]; } tl_block_q4_0;
typedef struct { tl_half d; tl_half m; uint8_t qs[16]; } tl_block_q4_1;
typedef struct { tl_half d; uint8_t qh[4]; uint8_t qs[16]; } tl_block_q5_0;
typedef struct { tl_half d; tl_half m; uint8_t qh[4]; uint8_t qs[16]; } tl_block_q5_1;
typedef struct { tl_half d; int8_t qs[32]; } tl_block_q8_0;
typedef struct { tl_half d; tl_half s; int8_t qs[32]; } tl_block_q8_1;

typedef struct {
    uint8_t scales[16];   /* 4-bit scale | 4-bit min, per 16 elements */
    uint8_t qs[64];       /* 2-bit quants */
    tl_half d;            /* super-block scale for the scales */
    tl_half dmin;         /* super-block scale for the mins */
} tl_block_q2_K;

typedef struct {
    uint8_t hmask[32];    /* high bit of each 3-bit quant */
    uint8_t qs[64];       /* low 2 bits */
    uint8_t scales[12];   /* 16 6-bit scales */
    tl_half d;
} tl_block_q3_K;

typedef struct {
    tl_half d;
    tl_half dmin;
    uint8_t scales[12];   /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[128];
} tl_block_q4_K;

typedef struct {
    tl_half d;
    tl_half dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} tl_block_q5_K;

typedef struct {
    uint8_t ql[128];      /* low 4 bits */
    uint8_t qh[64];       /* high 2 bits */
    int8_t scales[16];    /* 8-bit scales, per 16 elements */
    tl_half d;
} tl_block_q6_K;

typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];    /* sums of qs in groups of 16 */
} tl_block_q8_K;
/* @cdef-end */

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

/* The type table (types.h): one entry per GGML type, and the public functions that answer from
   it (tl_type_info, tl_row_bytes) or walk it (tl_get_rows). */
#include "types.h"

#if TL_HAVE_X86
#define AVX2(f) f
#else
#define AVX2(f) NULL
#endif

/* Every type: block size and bytes, decoder, encoder (NULL: tl_quantize refuses it). */
#define CODEC(ELEMS, BYTES, DEQ, Q)                                                            \
    .block_elems = (ELEMS), .block_bytes = (BYTES), .dequant = (DEQ), .quant = (Q)
/* A type that is no weight of tl_matmul (TL_PACK_NONE is not 0, so it is written out). */
#define NO_MATMUL .pack = TL_PACK_NONE
/* A weight type of tl_matmul: its activations, scalar and AVX2 row dots, packing kind of the
   tiled prompt kernels and the decode batch up to which TL_PATH_AUTO keeps the row dots. */
#define MATMUL(ACT, DOT, PACK, DECODE_MAX)                                                     \
    .act = (ACT), .dot_ref = DOT##_ref, .dot_avx2 = AVX2(DOT##_avx2), .pack = (PACK),         \
    .decode_max = (DECODE_MAX)
/* A repacked decode layout (packed.h): bytes of a block of TL_RP_ROWS rows, packer, tile kernels. */
#define REPACK(RP_TYPE, PACKER, TILE)                                                          \
    .rp_bytes = sizeof(RP_TYPE), .rp_pack = (PACKER), .rp_ref = TILE##_ref,                   \
    .rp_avx2 = AVX2(TILE##_avx2)

const tl_type_traits tl_type_table[TL_TYPE_COUNT] = {
    [TL_F32] = {CODEC(1, 4, tl_dequant_f32, tl_quant_f32),
                MATMUL(TL_ACT_F32, tl_dot_f32, TL_PACK_NONE, 1)},
    [TL_F16] = {CODEC(1, 2, tl_dequant_f16, tl_quant_f16), .kv_cache = 1,
                MATMUL(TL_ACT_F32, tl_dot_f16, TL_PACK_NONE, 1)},
    [TL_BF16] = {CODEC(1, 2, tl_dequant_bf16, tl_quant_bf16),
                 MATMUL(TL_ACT_F32, tl_dot_bf16, TL_PACK_NONE, 1)},
    [TL_Q4_0] = {CODEC(TL_QK, sizeof(tl_block_q4_0), tl_dequant_q4_0, tl_quant_q4_0), .kv_cache = 1,
                 MATMUL(TL_ACT_Q8, tl_dot_q4_0, TL_PACK_Q4, 2),
                 REPACK(tl_rp_q40, tl_rp_pack_q4_0, tl_rp_tile_q4_0)},
    [TL_Q4_1] = {CODEC(TL_QK, sizeof(tl_block_q4_1), tl_dequant_q4_1, NULL),
                 MATMUL(TL_ACT_Q8, tl_dot_q4_1, TL_PACK_Q4, 2),
                 REPACK(tl_rp_q4, tl_rp_pack_q4_1, tl_rp_tile_q4_1)},
    [TL_Q5_0] = {CODEC(TL_QK, sizeof(tl_block_q5_0), tl_dequant_q5_0, NULL),
                 MATMUL(TL_ACT_Q8, tl_dot_q5_0, TL_PACK_Q5, 2),
                 REPACK(tl_rp_q50, tl_rp_pack_q5_0, tl_rp_tile_q5_0)},
    [TL_Q5_1] = {CODEC(TL_QK, sizeof(tl_block_q5_1), tl_dequant_q5_1, NULL),
                 MATMUL(TL_ACT_Q8, tl_dot_q5_1, TL_PACK_Q5, 2),
                 REPACK(tl_rp_q5, tl_rp_pack_q5_1, tl_rp_tile_q5_1)},
    [TL_Q8_0] = {CODEC(TL_QK, sizeof(tl_block_q8_0), tl_dequant_q8_0, tl_quant_q8_0), .kv_cache = 1,
                 MATMUL(TL_ACT_Q8, tl_dot_q8_0, TL_PACK_Q8, 2),
                 REPACK(tl_rp_q8, tl_rp_pack_q8_0, tl_rp_tile_q8_0)},
    [TL_Q8_1] = {CODEC(TL_QK, sizeof(tl_block_q8_1), tl_dequant_q8_1, NULL), NO_MATMUL},
    [TL_Q2_K] = {CODEC(TL_QK_K, sizeof(tl_block_q2_K), tl_dequant_q2_K, NULL),
                 MATMUL(TL_ACT_Q8K, tl_dot_q2_k, TL_PACK_K, 1)},
    [TL_Q3_K] = {CODEC(TL_QK_K, sizeof(tl_block_q3_K), tl_dequant_q3_K, NULL),
                 MATMUL(TL_ACT_Q8K, tl_dot_q3_k, TL_PACK_K, 1)},
    [TL_Q4_K] = {CODEC(TL_QK_K, sizeof(tl_block_q4_K), tl_dequant_q4_K, tl_quant_q4_K),
                 MATMUL(TL_ACT_Q8K, tl_dot_q4_k, TL_PACK_K, 1),
                 REPACK(tl_rp_q4k, tl_rp_pack_q4_k, tl_rp_tile_q4_k)},
    [TL_Q5_K] = {CODEC(TL_QK_K, sizeof(tl_block_q5_K), tl_dequant_q5_K, NULL),
                 MATMUL(TL_ACT_Q8K, tl_dot_q5_k, TL_PACK_K, 1),
                 REPACK(tl_rp_q5k, tl_rp_pack_q5_k, tl_rp_tile_q5_k)},
    [TL_Q6_K] = {CODEC(TL_QK_K, sizeof(tl_block_q6_K), tl_dequant_q6_K, NULL),
                 MATMUL(TL_ACT_Q8K, tl_dot_q6_k, TL_PACK_K, 1),
                 REPACK(tl_rp_q6k, tl_rp_pack_q6_k, tl_rp_tile_q6_k)},
    [TL_Q8_K] = {CODEC(TL_QK_K, sizeof(tl_block_q8_K), tl_dequant_q8_K, NULL), NO_MATMUL},
};

int tl_type_info(int type, tl_type_desc *out) {
    const tl_type_traits *ty = tl_traits(type);
    if (!ty) return TL_ERR_TYPE;
    if (!out) return TL_ERR_ARG;
    *out = (tl_type_desc){
        .type = type,
        .block_elems = ty->block_elems,
        .block_bytes = ty->block_bytes,
        .quantize = ty->quant != NULL,
        .matmul = ty->dot_ref != NULL,
        .pack = ty->pack,
        .repack = ty->rp_pack != NULL,
        .kv_cache = ty->kv_cache,
    };
    return TL_OK;
}

int tl_row_bytes(int type, int64_t n, int64_t *bytes) {
    const tl_type_traits *ty = tl_traits(type);
    if (!ty) return TL_ERR_TYPE;
    if (!bytes) return TL_ERR_ARG;
    if (n < 0 || n % ty->block_elems != 0) return TL_ERR_SIZE;
    if (n / ty->block_elems > INT64_MAX / ty->block_bytes) return TL_ERR_SIZE;
    *bytes = n / ty->block_elems * ty->block_bytes;
    return TL_OK;
}

int tl_get_rows(int type, const void *table, int64_t row_len, int64_t n_rows,
                const int32_t *ids, int64_t n_ids, float *out) {
    int64_t row_bytes;
    int status = tl_row_bytes(type, row_len, &row_bytes);
    if (status != TL_OK) return status;
    const tl_type_traits *ty = tl_traits(type);
    if (n_rows < 0 || n_ids < 0) return TL_ERR_ARG;
    if (n_ids == 0) return TL_OK;
    if (ids == NULL || out == NULL || (table == NULL && row_bytes > 0)) return TL_ERR_ARG;
    /* every id is checked before anything is written */
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= n_rows) return TL_ERR_ARG;
    }
    const uint8_t *base = table;
    int64_t nb = row_len / ty->block_elems;
    for (int64_t i = 0; i < n_ids; i++)
        if (row_len > 0) ty->dequant(base + (int64_t)ids[i] * row_bytes, out + i * row_len, nb);
    return TL_OK;
}

/* The GGML type table (elements and bytes per block) and row gathering over it. */
#include "quants.h"

int tl_type_block_elems(int type) {
    switch (type) {
    case TL_F32: case TL_F16: case TL_BF16:
        return 1;
    case TL_Q4_0: case TL_Q4_1: case TL_Q5_0: case TL_Q5_1: case TL_Q8_0: case TL_Q8_1:
        return TL_QK;
    case TL_Q2_K: case TL_Q3_K: case TL_Q4_K: case TL_Q5_K: case TL_Q6_K: case TL_Q8_K:
        return TL_QK_K;
    default:
        return 0;
    }
}

int tl_type_block_bytes(int type) {
    switch (type) {
    case TL_F32: return 4;
    case TL_F16: return 2;
    case TL_BF16: return 2;
    case TL_Q4_0: return (int)sizeof(tl_block_q4_0);
    case TL_Q4_1: return (int)sizeof(tl_block_q4_1);
    case TL_Q5_0: return (int)sizeof(tl_block_q5_0);
    case TL_Q5_1: return (int)sizeof(tl_block_q5_1);
    case TL_Q8_0: return (int)sizeof(tl_block_q8_0);
    case TL_Q8_1: return (int)sizeof(tl_block_q8_1);
    case TL_Q2_K: return (int)sizeof(tl_block_q2_K);
    case TL_Q3_K: return (int)sizeof(tl_block_q3_K);
    case TL_Q4_K: return (int)sizeof(tl_block_q4_K);
    case TL_Q5_K: return (int)sizeof(tl_block_q5_K);
    case TL_Q6_K: return (int)sizeof(tl_block_q6_K);
    case TL_Q8_K: return (int)sizeof(tl_block_q8_K);
    default: return 0;
    }
}

int64_t tl_row_bytes(int type, int64_t n) {
    int elems = tl_type_block_elems(type);
    if (elems == 0 || n < 0 || n % elems != 0) return -1;
    return n / elems * tl_type_block_bytes(type);
}

int tl_get_rows(int type, const void *table, int64_t row_len, int64_t n_rows,
                const int32_t *ids, int64_t n_ids, float *out) {
    if (tl_type_block_elems(type) == 0) return TL_ERR_TYPE;
    int64_t row_bytes = tl_row_bytes(type, row_len);
    if (row_bytes < 0) return TL_ERR_SIZE;
    if (n_rows < 0 || n_ids < 0) return TL_ERR_ARG;
    if (n_ids == 0) return TL_OK;
    if (ids == NULL || out == NULL || (table == NULL && row_bytes > 0)) return TL_ERR_ARG;
    /* every id is checked before anything is written */
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= n_rows) return TL_ERR_ARG;
    }
    const uint8_t *base = table;
    for (int64_t i = 0; i < n_ids; i++) {
        int status = tl_dequantize(type, base + (int64_t)ids[i] * row_bytes, out + i * row_len,
                                   row_len);
        if (status != TL_OK) return status;
    }
    return TL_OK;
}

/* Tensor block formats and quantized products: the flat API over csrc/ggml. */
#ifndef TL_GGML_H
#define TL_GGML_H

#include <stdint.h>

#include "../tl_common.h"
#include "blocks.h"
#include "pool.h"

/* @cdef-begin */
/* Elements and bytes per block of a GGML type (F32/F16/BF16 count as blocks of 1); 0 if unknown. */
int tl_type_block_elems(int type);
int tl_type_block_bytes(int type);
/* Bytes of a row of n elements, or -1 if the type is unknown or n is not a whole number of blocks. */
int64_t tl_row_bytes(int type, int64_t n);

/* Decode n elements of `type` at src into floats. Returns a tl_status. */
int tl_dequantize(int type, const void *src, float *dst, int64_t n);
/* Encode n floats as `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_K). Returns a tl_status. */
int tl_quantize(int type, const float *src, void *dst, int64_t n);

/* Gather rows: out[i] = dequantized row ids[i] of a [n_rows][row_len] table. */
int tl_get_rows(int type, const void *table, int64_t row_len, int64_t n_rows,
                const int32_t *ids, int64_t n_ids, float *out);

/* y[t][o] = sum_i W[o][i] * x[t][i] for t < n_tok, o < n_out.
   W: n_out rows of n_in elements of wtype (GGML layout, rows contiguous); x: f32 [n_tok][n_in];
   y: f32 [n_tok][n_out]. Quantized weights are multiplied with int8-quantized activations; F32, F16
   and BF16 weights with f32 activations. Uses the pool's threads and SIMD level. */
int tl_matmul(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y);

/* The kernels tl_matmul may use. Each sums a row in its own order, so a token's result depends
   on the path (and TL_PATH_PRECISE) only, never on the other tokens: callers that need a token's
   bits to be the same in any batch (continuous batching) pick the path by the token's role, not
   the batch size. */
enum tl_matmul_path {
    TL_PATH_AUTO = 0,      /* row dots for a few tokens, tiled kernels for more */
    TL_PATH_ROW_DOTS = 1,  /* per-token dot products, one pass over the weights: decode */
    TL_PATH_TILED = 2,     /* register-tiled kernels over packed weight tiles: prompts (AVX2,
                              or AVX-512 VNNI where the pool has it: the same bits) */
    TL_PATH_PACKED = 3,    /* w repacked by tl_repack_new (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/
                              Q6_K): decode */
    /* Flag, OR'ed into AUTO, ROW_DOTS or TILED (not PACKED): quantized weights see ~15-bit activations instead of
       int8 (x ~ hi + lo, each int8 per block; two products through the same kernels, added),
       at up to twice the arithmetic. No effect on float weights. */
    TL_PATH_PRECISE = 16,
};
int tl_matmul_path(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                   const float *x, int64_t n_tok, float *y, int path);

/* Weights repacked once (at load) for TL_PATH_PACKED: 8 rows interleaved per block, about the
   bytes of the GGML rows (the same for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q6_K, +3% for Q4_K, +2% for Q5_K;
   rows rounded up to a multiple of 8), so decode reads each weight once per step for all of its
   tokens and a token's bits do not depend on how many others share the step. w of tl_matmul_path(..., TL_PATH_PACKED) must come from tl_repack_new with the same
   wtype, n_out and n_in.
   tl_repack_bytes: size of the repacked matrix, 0 if wtype cannot be repacked (or bad sizes).
   tl_repack_new: a 64-byte aligned copy in the repacked layout, NULL if unsupported or out of
   memory; free it with tl_repack_free. */
int64_t tl_repack_bytes(int wtype, int64_t n_out, int64_t n_in);
void *tl_repack_new(int wtype, const void *w, int64_t n_out, int64_t n_in);
void tl_repack_free(void *packed);
/* @cdef-end */

#endif

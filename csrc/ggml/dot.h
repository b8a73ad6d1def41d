/* Private to csrc/ggml: activation blocks and the kernels behind tl_matmul (scalar and AVX2). */
#ifndef TL_DOT_H
#define TL_DOT_H

#include <stddef.h>
#include <stdint.h>

#include "../tl_common.h"
#include "blocks.h"

/* Activations of the 32-element formats, quantized per block: x[i] ~ d * qs[i] with |qs| <= 127,
   and s = d * sum(qs), which the formats with a min (or an offset, such as Q4_0's -8) need. */
typedef struct {
    float d;
    float s;
    int8_t qs[TL_QK];
} tl_act_q8;

/* How a weight type wants its activations. */
enum tl_act_kind {
    TL_ACT_F32 = 0,  /* plain floats: F32, F16, BF16 weights */
    TL_ACT_Q8 = 1,   /* tl_act_q8 per 32 */
    TL_ACT_Q8K = 2,  /* tl_block_q8_K per 256 */
};

/* out[r] = dot(row r of W, one activation row) for r < nr; W's rows start row_bytes apart, the
   activation row holds n_in elements in the type's activation encoding. */
typedef void (*tl_rowdot_fn)(const void *w, size_t row_bytes, int64_t nr, const void *act,
                             int64_t n_in, float *out);

/* Activation quantization, n a multiple of the block (32 or 256). */
void tl_act_quant_q8_ref(const float *x, tl_act_q8 *out, int64_t n);
void tl_act_quant_q8k_ref(const float *x, tl_block_q8_K *out, int64_t n);
/* Two-part encoding x ~ hi + lo (lo encodes the residual x - hi), for TL_PATH_PRECISE. */
void tl_act_quant_q8x2_ref(const float *x, tl_act_q8 *hi, tl_act_q8 *lo, int64_t n);
void tl_act_quant_q8kx2_ref(const float *x, tl_block_q8_K *hi, tl_block_q8_K *lo, int64_t n);

/* Scalar reference dots (dot_ref.c, dot_ref_k.c). */
void tl_dot_f32_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_f16_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_bf16_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_1_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_1_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q8_0_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q2_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q3_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q6_k_ref(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);

/* The 8 six-bit scales and mins of a Q4_K / Q5_K super-block, and the 16 signed scales of Q3_K. */
void tl_k_scales_mins(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]);
void tl_q3_k_scales(const uint8_t s[12], int8_t sc[16]);

/* Row-interleaved weights for the prompt kernels: TL_PK_ROWS rows, one 32-element block each;
   q[c][r] holds elements 4c..4c+3 of row r, so one 256-bit load covers 4 elements of 8 rows. */
#define TL_PK_ROWS 8
typedef struct {
    uint8_t q[TL_QK / 4][TL_PK_ROWS][4];
    float d[TL_PK_ROWS];
    float m[TL_PK_ROWS];
} tl_pack_blk;

/* The K formats packed the same way, one super-block of 8 rows, in one common shape (see
   gemm_k_avx2.c): unsigned quants q, per-16 scales sc and mins mi (int16, each duplicated or
   paired per row so that madd applies them lane-wise), and per-row float factors d and dm. */
typedef struct {
    uint8_t q[TL_QK_K / 4][TL_PK_ROWS][4];
    int16_t sc[16][TL_PK_ROWS][2];   /* scale of group g, twice */
    int16_t mi[8][TL_PK_ROWS][2];    /* mins of groups 2p and 2p+1 */
    float d[TL_PK_ROWS];
    float dm[TL_PK_ROWS];
} tl_pack_kblk;

/* The same for the AVX-512 VNNI prompt kernels (gemm_vnni.c, gemm_k_vnni.c): tiles of 16 rows,
   so one 512-bit register holds 4 consecutive quants of each of the 16 rows. Q8_0 keeps its
   signed quants and, instead of m, bias[r] = -128 * (the row's block sum): the kernel multiplies
   them with activations offset by +128 (unsigned), and the bias takes the offset out again. */
#define TL_PK16_ROWS 16
typedef struct {
    uint8_t q[TL_QK / 4][TL_PK16_ROWS][4];
    float d[TL_PK16_ROWS];
    union {
        float m[TL_PK16_ROWS];
        int32_t bias[TL_PK16_ROWS];
    };
} tl_pack16_blk;

/* K formats: sc[g][r] is the scale of group g as an int32 (Q5_K, Q6_K) or as the int16 pair
   (scale, 0) (Q2_K..Q4_K, whose group sums fit in int16); mi as in tl_pack_kblk. */
typedef struct {
    uint8_t q[TL_QK_K / 4][TL_PK16_ROWS][4];
    int32_t sc[16][TL_PK16_ROWS];
    int16_t mi[8][TL_PK16_ROWS][2];
    float d[TL_PK16_ROWS];
    float dm[TL_PK16_ROWS];
} tl_pack16_kblk;

static_assert(sizeof(tl_pack_blk) % 64 == 0, "packed blocks keep 64-byte alignment");
static_assert(sizeof(tl_pack_kblk) % 64 == 0, "packed blocks keep 64-byte alignment");
static_assert(sizeof(tl_pack16_blk) == 2 * sizeof(tl_pack_blk), "a 16-row tile is two 8-row ones");
static_assert(sizeof(tl_pack16_kblk) == 2 * sizeof(tl_pack_kblk), "a 16-row tile is two 8-row ones");

#if TL_HAVE_X86
void tl_act_quant_q8_avx2(const float *x, tl_act_q8 *out, int64_t n);
void tl_act_quant_q8k_avx2(const float *x, tl_block_q8_K *out, int64_t n);
void tl_act_quant_q8x2_avx2(const float *x, tl_act_q8 *hi, tl_act_q8 *lo, int64_t n);
void tl_act_quant_q8kx2_avx2(const float *x, tl_block_q8_K *hi, tl_block_q8_K *lo, int64_t n);

void tl_dot_f32_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_f16_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_bf16_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_1_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_1_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q8_0_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q2_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q3_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q4_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q5_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);
void tl_dot_q6_k_avx2(const void *w, size_t rb, int64_t nr, const void *a, int64_t n, float *out);

/* Pack nr (<= TL_PK_ROWS) rows of nb blocks into nb tl_pack_blk; missing rows become zeros. */
void tl_pack_rows_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nb,
                       tl_pack_blk *out);

/* Prompt kernels (gemm_avx2.c). Results go to y[t * ldy + r] for token t, row r. */
/* ntiles packed tiles (TL_PK_ROWS rows each, nb blocks per tile, tile after tile; nr rows in all,
   the last tile may be partial) times nt tokens of tl_act_q8 (token t at act + t * act_stride).
   kind: TL_PACK_Q4 (4-bit unsigned quants), TL_PACK_Q5 (5-bit unsigned), TL_PACK_Q8 (signed
   8-bit). */
void tl_gemm_packed_avx2(int kind, const tl_pack_blk *pk, int64_t ntiles, int64_t nb,
                         const tl_act_q8 *act, int64_t act_stride, int64_t nt, float *y,
                         int64_t ldy, int64_t nr);
/* K formats: pack nr (<= TL_PK_ROWS) rows of nsb super-blocks; multiply ntiles packed tiles by nt
   tokens of Q8_K activations (token t at act + t * act_stride). */
void tl_pack_k_rows_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nsb,
                         tl_pack_kblk *out);
void tl_gemm_packed_k_avx2(int wtype, const tl_pack_kblk *pk, int64_t ntiles, int64_t nsb,
                           const tl_block_q8_K *act, int64_t act_stride, int64_t nt, float *y,
                           int64_t ldy, int64_t nr);
/* AVX-512 VNNI prompt kernels (gemm_vnni.c, gemm_k_vnni.c): the same products as the AVX2 ones
   above over 16-row tiles, bit for bit (the same integer sums, the same float operations in the
   same order). Pack nr (<= TL_PK16_ROWS) rows; missing rows become zeros. For TL_PACK_Q8 (Q8_0) the
   activation quants must be offset by +128 first (tl_act_offset_vnni). */
void tl_pack_rows_vnni(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nb,
                       tl_pack16_blk *out);
void tl_gemm_packed_vnni(int kind, const tl_pack16_blk *pk, int64_t ntiles, int64_t nb,
                         const tl_act_q8 *act, int64_t act_stride, int64_t nt, float *y,
                         int64_t ldy, int64_t nr);
void tl_act_offset_vnni(tl_act_q8 *act, int64_t nblocks);
void tl_pack_k_rows_vnni(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nsb,
                         tl_pack16_kblk *out);
void tl_gemm_packed_k_vnni(int wtype, const tl_pack16_kblk *pk, int64_t ntiles, int64_t nsb,
                           const tl_block_q8_K *act, int64_t act_stride, int64_t nt, float *y,
                           int64_t ldy, int64_t nr);
/* Float weights (F32/F16/BF16 by wtype) times f32 activations: nr rows x nt tokens. */
void tl_gemm_float_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr,
                        const float *x, int64_t ldx, int64_t nt, int64_t n_in, float *y,
                        int64_t ldy);
/* The same product with AVX-512 (gemm_float_avx512.c; the pool must have TL_CPU_AVX512VNNI),
   bit for bit: each 512-bit accumulator holds two rows' 8-lane AVX2 accumulators. */
void tl_gemm_float_avx512(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr,
                          const float *x, int64_t ldx, int64_t nt, int64_t n_in, float *y,
                          int64_t ldy);
#endif

#endif

/* Private to csrc/ggml: the repacked decode layout behind TL_PATH_PACKED (packed.c).

   A repacked matrix is a run of tiles of TL_RP_ROWS (8) rows, tile after tile; a tile is its nb
   blocks in order, and a block holds one 32-element block of each of the 8 rows, interleaved so
   that one 256-bit load gives 4 consecutive quants of every row (one row per 32-bit lane). The
   bytes per row and block are those of the GGML format (20 for Q4_1), so decode reads no more
   memory than the GGML rows, and the tile kernels never unpack more than once per step however
   many tokens go by. Rows past n_out in the last tile are zeros. */
#ifndef TL_PACKED_H
#define TL_PACKED_H

#include <stdint.h>

#include "dot.h"
#include "pool.h"

#define TL_RP_ROWS 8

/* Q4_1: q[g][r] = bytes 4g..4g+3 of row r's nibble array, i.e. elements 4g..4g+3 in the low
   nibbles and 16+4g..16+4g+3 in the high ones; d and m: the rows' scales and mins. */
typedef struct {
    uint8_t q[4][TL_RP_ROWS][4];
    tl_half d[TL_RP_ROWS];
    tl_half m[TL_RP_ROWS];
} tl_rp_q4;

/* Q4_0: the same without m (its offset -8 d is applied by the kernels, exactly). The kernels
   read both through tl_rp_q4 pointers, stepping sizeof(tl_rp_q40) bytes and never touching m. */
typedef struct {
    uint8_t q[4][TL_RP_ROWS][4];
    tl_half d[TL_RP_ROWS];
} tl_rp_q40;

/* Q8_0: q[c][r] = elements 4c..4c+3 of row r. */
typedef struct {
    int8_t q[8][TL_RP_ROWS][4];
    tl_half d[TL_RP_ROWS];
} tl_rp_q8;

/* Q4_K, one super-block of 256 per block: q[g][r] = bytes 4g..4g+3 of row r's qs (group g lies
   in 64-element part g / 8: low nibbles in sub-block 2 (g / 8), high ones in the next); the six-bit
   scales and mins unpacked to bytes, per sub-block s and row r; d and dmin per row. 148 bytes a
   row against GGML's 144: the unpacked scales save the kernels a shuffle per sub-block. */
typedef struct {
    uint8_t q[32][TL_RP_ROWS][4];
    uint8_t sc[8][TL_RP_ROWS];
    uint8_t mn[8][TL_RP_ROWS];
    tl_half d[TL_RP_ROWS];
    tl_half dmin[TL_RP_ROWS];
} tl_rp_q4k;

static_assert(sizeof(tl_rp_q4k) == TL_RP_ROWS * 148, "a Q4_K block: GGML's 144 + 4 bytes a row");
static_assert(sizeof(tl_rp_q4) == TL_RP_ROWS * 20, "a Q4_1 block keeps the GGML size");
static_assert(sizeof(tl_rp_q40) == TL_RP_ROWS * 18, "a Q4_0 block keeps the GGML size");
static_assert(sizeof(tl_rp_q8) == TL_RP_ROWS * 34, "a Q8 block keeps the GGML size");

/* One tile (nb blocks; Q4_0 tiles are tl_rp_q40 blocks behind the tl_rp_q4 pointer) against nt (1..4) tokens of tl_act_q8 (token t at act + t * as); the
   results go to y[t * ldy + r] for r < nr (<= 8). Each token's sum runs over the blocks in order
   with the same operations whatever nt is, so a token's bits never depend on its neighbours:
   acc = fma(float(isum_b), d_b * dx_b, acc), then, for Q4, acc = fma(m'_b, s_b, acc).
   The scalar and AVX2 versions give identical bits. */
void tl_rp_tile_q4_ref(int wtype, const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *act,
                       int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr);
void tl_rp_tile_q8_ref(const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *act, int64_t as,
                       int64_t nt, float *y, int64_t ldy, int64_t nr);
/* Q4_K against Q8_K activations: isum = sum_s sc_s * dot_s (exact), msum = sum_s mn_s * bsum_s;
   acc = fma(float(isum), d * dx, acc), then acc = fma(-float(msum), dmin * dx, acc). */
void tl_rp_tile_q4k_ref(const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *act, int64_t as,
                        int64_t nt, float *y, int64_t ldy, int64_t nr);
#if TL_HAVE_X86
void tl_rp_tile_q4k_avx2(const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *act, int64_t as,
                         int64_t nt, float *y, int64_t ldy, int64_t nr);
void tl_rp_tile_q4_avx2(int wtype, const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *act,
                        int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr);
void tl_rp_tile_q8_avx2(const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *act, int64_t as,
                        int64_t nt, float *y, int64_t ldy, int64_t nr);
#endif

/* TL_PATH_PACKED of tl_matmul_path: w is a repacked matrix (tl_repack_new). */
int tl_matmul_packed(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                     const float *x, int64_t n_tok, float *y);

#endif

/* Private to csrc/ggml: the repacked decode layouts behind TL_PATH_PACKED (packed.c, packed_k.c).

   A repacked matrix is a run of tiles of TL_RP_ROWS (8) rows, tile after tile; a tile is its nb
   blocks in order, and a block holds one block (32 elements, or a 256-element super-block) of
   each of the 8 rows, interleaved so that one 256-bit load gives 4 consecutive quants of every
   row (one row per 32-bit lane). The bytes per row and block are those of the GGML format (20
   for Q4_1) or a few more (K formats with six-bit scales, unpacked to bytes), so decode reads
   about the memory of the GGML rows, and the tile kernels never unpack more than once per step
   however many tokens go by. Rows past n_out in the last tile are zeros. */
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

/* Q5_1: the nibbles as in Q4_1; qh[r] holds row r's 32 fifth bits rearranged so that bit 2g of
   byte k is element 4g+k's and bit 2g+1 element 16+4g+k's: a fixed shift of the 8 rows' words
   puts group g's bits at bit 4 of the right bytes. */
typedef struct {
    uint8_t q[4][TL_RP_ROWS][4];
    uint8_t qh[TL_RP_ROWS][4];
    tl_half d[TL_RP_ROWS];
    tl_half m[TL_RP_ROWS];
} tl_rp_q5;

/* Q5_0: the same without m (offset -16 d), read through tl_rp_q5 pointers like Q4_0. */
typedef struct {
    uint8_t q[4][TL_RP_ROWS][4];
    uint8_t qh[TL_RP_ROWS][4];
    tl_half d[TL_RP_ROWS];
} tl_rp_q50;

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

/* Q5_K: Q4_K plus qh[c][r] = bytes 4c..4c+3 of row r's qh, as in GGML: bit s of byte k is the
   fifth bit of element 32s + 4c + k. 180 bytes a row against GGML's 176. */
typedef struct {
    uint8_t q[32][TL_RP_ROWS][4];
    uint8_t qh[8][TL_RP_ROWS][4];
    uint8_t sc[8][TL_RP_ROWS];
    uint8_t mn[8][TL_RP_ROWS];
    tl_half d[TL_RP_ROWS];
    tl_half dmin[TL_RP_ROWS];
} tl_rp_q5k;

/* Q6_K, quants u = q + 32 in 0..63: ql holds their low nibbles laid out as Q4_K's q (sub-block
   s in chunks 8 (s / 2) .. +7, low nibbles for even s, high for odd); qh[2s + c / 4][r] holds the
   high 2 bits of sub-block s, chunk c: bits 2 (c % 4) of byte k are element 32s + 4c + k's. sc[s][r]:
   the 8-bit scales of the sub-block's two groups of 16, as an (even, odd) pair. Keeps GGML's 210
   bytes a row. */
typedef struct {
    uint8_t ql[32][TL_RP_ROWS][4];
    uint8_t qh[16][TL_RP_ROWS][4];
    int8_t sc[8][TL_RP_ROWS][2];
    tl_half d[TL_RP_ROWS];
} tl_rp_q6k;

static_assert(sizeof(tl_rp_q4) == TL_RP_ROWS * 20, "a Q4_1 block keeps the GGML size");
static_assert(sizeof(tl_rp_q40) == TL_RP_ROWS * 18, "a Q4_0 block keeps the GGML size");
static_assert(sizeof(tl_rp_q5) == TL_RP_ROWS * 24, "a Q5_1 block keeps the GGML size");
static_assert(sizeof(tl_rp_q50) == TL_RP_ROWS * 22, "a Q5_0 block keeps the GGML size");
static_assert(sizeof(tl_rp_q8) == TL_RP_ROWS * 34, "a Q8 block keeps the GGML size");
static_assert(sizeof(tl_rp_q4k) == TL_RP_ROWS * 148, "a Q4_K block: GGML's 144 + 4 bytes a row");
static_assert(sizeof(tl_rp_q5k) == TL_RP_ROWS * 180, "a Q5_K block: GGML's 176 + 4 bytes a row");
static_assert(sizeof(tl_rp_q6k) == TL_RP_ROWS * 210, "a Q6_K block keeps the GGML size");

/* A tile kernel: one tile p (nb blocks of its format) against nt (1..4) tokens of activations
   (tl_act_q8 per 32 elements, or tl_block_q8_K per 256 for the K formats; token t at act + t *
   as blocks); the results go to y[t * ldy + r] for r < nr (<= 8). Each token's sum runs over the
   blocks in order with the same operations whatever nt is, so a token's bits never depend on its
   neighbours. Per block, the integer sum isum of quants times activation quants is exact, then:
     Q4_0/Q4_1/Q5_0/Q5_1: acc = fma(float(isum), d * dx, acc); acc = fma(m, s_x, acc)
                          (m = -8 d for Q4_0, -16 d for Q5_0);
     Q8_0:                acc = fma(float(isum), d * dx, acc);
     Q4_K/Q5_K:           isum = sum_s sc_s * dot_s, msum = sum_s mn_s * bsum_s;
                          acc = fma(float(isum), d * dx, acc); acc = fma(-float(msum), dmin * dx, acc);
     Q6_K:                isum = sum_j sc_j * (dot_j(u) - 32 bsum_j) over the 16 groups;
                          acc = fma(float(isum), d * dx, acc).
   The scalar (_ref) and AVX2 versions give identical bits. */
typedef void (*tl_rp_tile_fn)(const void *p, int64_t nb, const void *act, int64_t as, int64_t nt,
                              float *y, int64_t ldy, int64_t nr);

#define TL_RP_TILE(NAME)                                                                       \
    void NAME(const void *p, int64_t nb, const void *act, int64_t as, int64_t nt, float *y,    \
              int64_t ldy, int64_t nr)

TL_RP_TILE(tl_rp_tile_q4_0_ref); TL_RP_TILE(tl_rp_tile_q4_1_ref);
TL_RP_TILE(tl_rp_tile_q5_0_ref); TL_RP_TILE(tl_rp_tile_q5_1_ref);
TL_RP_TILE(tl_rp_tile_q8_0_ref);
TL_RP_TILE(tl_rp_tile_q4_k_ref); TL_RP_TILE(tl_rp_tile_q5_k_ref); TL_RP_TILE(tl_rp_tile_q6_k_ref);
#if TL_HAVE_X86
TL_RP_TILE(tl_rp_tile_q4_0_avx2); TL_RP_TILE(tl_rp_tile_q4_1_avx2);
TL_RP_TILE(tl_rp_tile_q5_0_avx2); TL_RP_TILE(tl_rp_tile_q5_1_avx2);
TL_RP_TILE(tl_rp_tile_q8_0_avx2);
TL_RP_TILE(tl_rp_tile_q4_k_avx2); TL_RP_TILE(tl_rp_tile_q5_k_avx2); TL_RP_TILE(tl_rp_tile_q6_k_avx2);
#endif

/* Repack n_out GGML rows of nb blocks (w, rows contiguous) into tiles at out (packed_k.c for the
   K formats); rows past n_out in the last tile become zeros. */
typedef void (*tl_rp_pack_fn)(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q4_0(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q4_1(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q5_0(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q5_1(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q8_0(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q4_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q5_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);
void tl_rp_pack_q6_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);

/* TL_PATH_PACKED of tl_matmul_path: w is a repacked matrix (tl_repack_new). */
int tl_matmul_packed(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                     const float *x, int64_t n_tok, float *y);

#endif

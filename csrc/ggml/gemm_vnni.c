/* AVX-512 VNNI prompt kernels for the 32-element formats: many tokens against a tile of 16 weight
   rows, the AVX2 kernels' products (gemm_avx2.c) bit for bit, with fewer instructions.

   A tile packs 16 rows so that one 512-bit register holds 4 consecutive quants of each row; a
   token's 4 matching activation bytes are broadcast to all lanes and vpdpbusd (unsigned bytes
   times signed bytes, 4 products summed into each int32 lane) adds the row's partial sum in one
   instruction, where AVX2 needs maddubs + add (+ madd). The block's integer sums are exact either
   way, and the float steps per block (convert, scale by d * dx, add m * s) are the same
   operations in the same order, lane by lane, so every result has the AVX2 path's bits.
   Q8_0's quants are signed on both sides: the activations are offset by +128 (unsigned) and the
   packed tile's bias (-128 * the row's block sum) starts each block's sum, which takes the
   offset out exactly. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_VNNI_BEGIN

#include "avx2_util.h"

#define NT_MAX 8  /* tokens per register tile: 2 x 8 zmm accumulators of the 32 */

/* 8 floats at lo, then 8 at hi. */
TL_INLINE __m512 join8(const float *lo, const float *hi) {
    __m512d v = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_load_ps(lo)));
    return _mm512_castpd_ps(_mm512_insertf64x4(v, _mm256_castps_pd(_mm256_load_ps(hi)), 1));
}

void tl_pack_rows_vnni(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nb,
                       tl_pack16_blk *out) {
    size_t bytes = row_bytes / (size_t)nb;
    _Alignas(64) tl_pack_blk half[2];
    for (int64_t b = 0; b < nb; b++) {
        /* the AVX2 packer does each half of 8 rows (the same quants and float factors) */
        for (int h = 0; h < 2; h++) {
            int64_t rows = nr - TL_PK_ROWS * h;
            if (rows <= 0) {
                memset(&half[h], 0, sizeof half[h]);
                continue;
            }
            tl_pack_rows_avx2(wtype, w + (size_t)(TL_PK_ROWS * h) * row_bytes + (size_t)b * bytes,
                              row_bytes, rows < TL_PK_ROWS ? rows : TL_PK_ROWS, 1, &half[h]);
        }
        tl_pack16_blk *pk = &out[b];
        for (int c = 0; c < TL_QK / 4; c++) {
            __m256i lo = _mm256_load_si256((const __m256i *)half[0].q[c]);
            __m256i hi = _mm256_load_si256((const __m256i *)half[1].q[c]);
            _mm512_store_si512(pk->q[c], _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        }
        _mm512_store_ps(pk->d, join8(half[0].d, half[1].d));
        if (wtype == TL_Q8_0) {
            __m512i sum = _mm512_setzero_si512();
            for (int c = 0; c < TL_QK / 4; c++)
                sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), _mm512_load_si512(pk->q[c]));
            _mm512_store_si512(pk->bias, _mm512_sub_epi32(_mm512_setzero_si512(),
                                                          _mm512_slli_epi32(sum, 7)));
        } else {
            _mm512_store_ps(pk->m, join8(half[0].m, half[1].m));
        }
    }
}

void tl_act_offset_vnni(tl_act_q8 *act, int64_t nblocks) {
    const __m256i offset = _mm256_set1_epi8((char)0x80);
    for (int64_t i = 0; i < nblocks; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)act[i].qs);
        _mm256_storeu_si256((__m256i *)act[i].qs, _mm256_xor_si256(q, offset));
    }
}

/* The 4 activation bytes at p in every 32-bit lane. */
TL_INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Writes nt rows of 16 results (only the first nr of each) to y[t * ldy + r]. */
TL_INLINE void store_tile16(const __m512 *acc, int nt, float *y, int64_t ldy, int64_t nr) {
    __mmask16 keep = nr >= TL_PK16_ROWS ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + t * ldy, keep, acc[t]);
}

/* One tile (16 rows) against NT (1..NT_MAX) tokens over all nb blocks. TL_PACK_Q4 and
   TL_PACK_Q5 (4- and 5-bit unsigned quants): weights unsigned, activations signed; TL_PACK_Q8 (Q8_0): activations
   offset to unsigned, weights signed, the sum starting at the tile's bias. */
TL_INLINE void tile16_kernel(int kind, int NT, const tl_pack16_blk *pk, int64_t nb,
                             const tl_act_q8 *act, int64_t as, float *y, int64_t ldy, int64_t nr) {
    __m512 acc[NT_MAX];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const tl_pack16_blk *p = pk + b;
        const tl_act_q8 *x[NT_MAX];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m512i s32[NT_MAX];
        __m512i start = kind == TL_PACK_Q8 ? _mm512_load_si512(p->bias) : _mm512_setzero_si512();
        for (int t = 0; t < NT; t++) s32[t] = start;
        for (int c = 0; c < TL_QK / 4; c++) {
            __m512i wv = _mm512_load_si512(p->q[c]);
            for (int t = 0; t < NT; t++)
                s32[t] = kind == TL_PACK_Q8 ? _mm512_dpbusd_epi32(s32[t], bcast4(x[t]->qs + 4 * c), wv)
                                   : _mm512_dpbusd_epi32(s32[t], wv, bcast4(x[t]->qs + 4 * c));
        }
        __m512 dv = _mm512_load_ps(p->d);
        for (int t = 0; t < NT; t++) {
            __m512 scale = _mm512_mul_ps(dv, _mm512_set1_ps(x[t]->d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[t]), scale, acc[t]);
        }
        if (kind != TL_PACK_Q8) {
            __m512 mv = _mm512_load_ps(p->m);
            for (int t = 0; t < NT; t++)
                acc[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(x[t]->s), acc[t]);
        }
    }
    store_tile16(acc, NT, y, ldy, nr);
}

typedef void (*tile16_fn)(const tl_pack16_blk *, int64_t, const tl_act_q8 *, int64_t, float *,
                          int64_t, int64_t);

#define TILE16(KIND, NT)                                                                        \
    static void tile16_##KIND##_##NT(const tl_pack16_blk *pk, int64_t nb, const tl_act_q8 *a,  \
                                     int64_t as, float *y, int64_t ldy, int64_t nr) {          \
        tile16_kernel(KIND, NT, pk, nb, a, as, y, ldy, nr);                                    \
    }
#define TILE16_ALL(KIND)                                                                        \
    TILE16(KIND, 1) TILE16(KIND, 2) TILE16(KIND, 3) TILE16(KIND, 4)                             \
    TILE16(KIND, 5) TILE16(KIND, 6) TILE16(KIND, 7) TILE16(KIND, 8)
static_assert(TL_PACK_Q4 == 0 && TL_PACK_Q5 == 1 && TL_PACK_Q8 == 2, "tile16_fns rows");
TILE16_ALL(0)
TILE16_ALL(1)
TILE16_ALL(2)

#define TILE16_ROW(KIND)                                                                        \
    {tile16_##KIND##_1, tile16_##KIND##_2, tile16_##KIND##_3, tile16_##KIND##_4,                \
     tile16_##KIND##_5, tile16_##KIND##_6, tile16_##KIND##_7, tile16_##KIND##_8}
static const tile16_fn tile16_fns[3][NT_MAX] = {TILE16_ROW(0), TILE16_ROW(1), TILE16_ROW(2)};

void tl_gemm_packed_vnni(int kind, const tl_pack16_blk *pk, int64_t ntiles, int64_t nb,
                         const tl_act_q8 *act, int64_t as, int64_t nt, float *y, int64_t ldy,
                         int64_t nr) {
    for (int64_t t = 0; t < nt; t += NT_MAX) {
        int64_t n = nt - t < NT_MAX ? nt - t : NT_MAX;
        tile16_fn fn = tile16_fns[kind][n - 1];
        for (int64_t i = 0; i < ntiles; i++) {
            int64_t rows = nr - i * TL_PK16_ROWS;
            fn(pk + i * nb, nb, act + t * as, as, y + t * ldy + i * TL_PK16_ROWS, ldy,
               rows < TL_PK16_ROWS ? rows : TL_PK16_ROWS);
        }
    }
}

TL_VNNI_END
#endif

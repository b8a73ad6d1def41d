/* AVX2 prompt kernels: many tokens against a tile of weight rows, with register tiling so each
   unpacked weight vector is reused across several tokens.

   Integer path: 8 weight rows are packed (tl_pack_rows_avx2) so that one 256-bit register holds 4
   consecutive quants of each of the 8 rows; a token's 4 matching activation bytes are broadcast
   to all lanes, and maddubs yields per-row partial sums directly in lanes: no horizontal sums,
   and one float FMA per block serves 8 rows. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"

TL_INLINE short half_bits(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return (short)h;
}

/* The halves at p, p + stride, ..., p + 7 * stride. */
TL_INLINE __m128i gather_halves(const uint8_t *p, size_t s) {
    return _mm_setr_epi16(half_bits(p), half_bits(p + s), half_bits(p + 2 * s), half_bits(p + 3 * s),
                          half_bits(p + 4 * s), half_bits(p + 5 * s), half_bits(p + 6 * s),
                          half_bits(p + 7 * s));
}

void tl_pack_rows_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nb,
                       tl_pack_blk *out) {
    size_t bytes = row_bytes / (size_t)nb;
    int has_min = wtype == TL_Q4_1 || wtype == TL_Q5_1;
    float offset = wtype == TL_Q4_0 ? -8.0f : wtype == TL_Q5_0 ? -16.0f : 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk0 = w + (size_t)b * bytes;
        __m256i q[TL_PK_ROWS];
        __m128i dh, mh = _mm_setzero_si128();
        if (nr >= TL_PK_ROWS) {
            for (int r = 0; r < TL_PK_ROWS; r++) q[r] = block_quants(wtype, blk0 + (size_t)r * row_bytes);
            dh = gather_halves(blk0, row_bytes);
            if (has_min) mh = gather_halves(blk0 + 2, row_bytes);
        } else { /* a partial tile: the missing rows are zeros */
            uint16_t d16[TL_PK_ROWS] = {0}, m16[TL_PK_ROWS] = {0};
            for (int r = 0; r < TL_PK_ROWS; r++) {
                q[r] = _mm256_setzero_si256();
                if (r >= nr) continue;
                const uint8_t *blk = blk0 + (size_t)r * row_bytes;
                q[r] = block_quants(wtype, blk);
                memcpy(&d16[r], blk, 2);
                if (has_min) memcpy(&m16[r], blk + 2, 2);
            }
            dh = _mm_loadu_si128((const __m128i *)d16);
            mh = _mm_loadu_si128((const __m128i *)m16);
        }
        transpose8_epi32(q);
        tl_pack_blk *pk = &out[b];
        for (int c = 0; c < TL_QK / 4; c++) _mm256_store_si256((__m256i *)pk->q[c], q[c]);
        __m256 d = _mm256_cvtph_ps(dh);
        __m256 m = has_min ? _mm256_cvtph_ps(mh) : _mm256_mul_ps(d, _mm256_set1_ps(offset));
        _mm256_store_ps(pk->d, d);
        _mm256_store_ps(pk->m, m);
    }
}

/* The 4 activation bytes x[4c..4c+3] in every 32-bit lane. */
TL_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Writes nt rows of 8 results (only the first nr of each) to y[t * ldy + r]. */
TL_INLINE void store_tile(const __m256 *acc, int nt, float *y, int64_t ldy, int64_t nr) {
    for (int t = 0; t < nt; t++) {
        if (nr >= TL_PK_ROWS) {
            _mm256_storeu_ps(y + t * ldy, acc[t]);
        } else {
            float tmp[TL_PK_ROWS];
            _mm256_storeu_ps(tmp, acc[t]);
            for (int64_t r = 0; r < nr; r++) y[t * ldy + r] = tmp[r];
        }
    }
}

/* One tile (8 rows) against NT (1..4) tokens over all nb blocks.
   TL_PACK_Q4: 4-bit unsigned quants: 8 maddubs steps summed in int16 (16 * 15 * 127 < 2^15);
   TL_PACK_Q5: 5-bit unsigned: int16 sums over 4 steps at a time (16 * 31 * 127 / 2 < 2^15);
   TL_PACK_Q8: signed 8-bit (Q8_0): |w| times x with w's sign, widened every step. */
TL_INLINE void tile_kernel(int kind, int NT, const tl_pack_blk *pk, int64_t nb,
                           const tl_act_q8 *act, int64_t as, float *y, int64_t ldy, int64_t nr) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const tl_pack_blk *p = pk + b;
        const tl_act_q8 *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i s32[4];
        if (kind == TL_PACK_Q4) {
            __m256i s16[4];
            for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                __m256i wv = _mm256_load_si256((const __m256i *)p->q[c]);
                for (int t = 0; t < NT; t++)
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 4 * c)));
            }
            for (int t = 0; t < NT; t++) s32[t] = _mm256_madd_epi16(s16[t], ones);
        } else if (kind == TL_PACK_Q5) {
            for (int t = 0; t < NT; t++) s32[t] = _mm256_setzero_si256();
            for (int half = 0; half < 2; half++) {
                __m256i s16[4];
                for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
                for (int c = 4 * half; c < 4 * half + 4; c++) {
                    __m256i wv = _mm256_load_si256((const __m256i *)p->q[c]);
                    for (int t = 0; t < NT; t++)
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 4 * c)));
                }
                for (int t = 0; t < NT; t++) s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
            }
        } else {
            for (int t = 0; t < NT; t++) s32[t] = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                __m256i wv = _mm256_load_si256((const __m256i *)p->q[c]);
                __m256i aw = _mm256_sign_epi8(wv, wv);
                for (int t = 0; t < NT; t++) {
                    __m256i xs = _mm256_sign_epi8(bcast4(x[t]->qs + 4 * c), wv);
                    s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
                }
            }
        }
        __m256 dv = _mm256_load_ps(p->d);
        for (int t = 0; t < NT; t++) {
            __m256 scale = _mm256_mul_ps(dv, _mm256_set1_ps(x[t]->d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), scale, acc[t]);
        }
        if (kind != TL_PACK_Q8) {
            __m256 mv = _mm256_load_ps(p->m);
            for (int t = 0; t < NT; t++) acc[t] = _mm256_fmadd_ps(mv, _mm256_set1_ps(x[t]->s), acc[t]);
        }
    }
    store_tile(acc, NT, y, ldy, nr);
}

#define TILE_KERNELS(KIND)                                                                      \
    static void tile_##KIND##_1(const tl_pack_blk *pk, int64_t nb, const tl_act_q8 *act,       \
                                int64_t as, float *y, int64_t ldy, int64_t nr) {               \
        tile_kernel(KIND, 1, pk, nb, act, as, y, ldy, nr);                                      \
    }                                                                                           \
    static void tile_##KIND##_2(const tl_pack_blk *pk, int64_t nb, const tl_act_q8 *act,       \
                                int64_t as, float *y, int64_t ldy, int64_t nr) {               \
        tile_kernel(KIND, 2, pk, nb, act, as, y, ldy, nr);                                      \
    }                                                                                           \
    static void tile_##KIND##_3(const tl_pack_blk *pk, int64_t nb, const tl_act_q8 *act,       \
                                int64_t as, float *y, int64_t ldy, int64_t nr) {               \
        tile_kernel(KIND, 3, pk, nb, act, as, y, ldy, nr);                                      \
    }                                                                                           \
    static void tile_##KIND##_4(const tl_pack_blk *pk, int64_t nb, const tl_act_q8 *act,       \
                                int64_t as, float *y, int64_t ldy, int64_t nr) {               \
        tile_kernel(KIND, 4, pk, nb, act, as, y, ldy, nr);                                      \
    }

/* One set per packing kind, by its value (the macros paste it into the names). */
static_assert(TL_PACK_Q4 == 0 && TL_PACK_Q5 == 1 && TL_PACK_Q8 == 2, "tile_fns rows");
TILE_KERNELS(0)
TILE_KERNELS(1)
TILE_KERNELS(2)

typedef void (*tile_fn)(const tl_pack_blk *, int64_t, const tl_act_q8 *, int64_t, float *,
                        int64_t, int64_t);

static const tile_fn tile_fns[3][4] = {
    {tile_0_1, tile_0_2, tile_0_3, tile_0_4},
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
};

void tl_gemm_packed_avx2(int kind, const tl_pack_blk *pk, int64_t ntiles, int64_t nb,
                         const tl_act_q8 *act, int64_t as, int64_t nt, float *y, int64_t ldy,
                         int64_t nr) {
    for (int64_t t = 0; t < nt; t += 4) {
        int64_t n4 = nt - t < 4 ? nt - t : 4;
        tile_fn fn = tile_fns[kind][n4 - 1];
        for (int64_t i = 0; i < ntiles; i++) {
            int64_t rows = nr - i * TL_PK_ROWS;
            fn(pk + i * nb, nb, act + t * as, as, y + t * ldy + i * TL_PK_ROWS, ldy,
               rows < TL_PK_ROWS ? rows : TL_PK_ROWS);
        }
    }
}

/* ---- float weights: R rows x T tokens of 8-lane FMA accumulators ----
   The main tile is 3 rows x 4 tokens: 12 accumulators, 3 weight vectors (each converted once
   from F16/BF16) and one token vector fill the 16 registers, and every weight load feeds four
   FMAs. Each element is the same 8-lane sum over the row, then its horizontal sum and tail,
   whatever the tile: a token's bits do not depend on the tokens or rows beside it. */

TL_INLINE void float_kernel(int wtype, int R, int T, const uint8_t *w, size_t rb, const float *x,
                            int64_t ldx, int64_t n, float *y, int64_t ldy) {
    __m256 acc[3][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[3];
        for (int r = 0; r < R; r++) wv[r] = load_w8(wtype, w + r * rb, i);
        for (int t = 0; t < T; t++) {
            __m256 xv = _mm256_loadu_ps(x + t * ldx + i);
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float s = hsum_ps(acc[r][t]);
            for (int64_t k = i; k < n; k++) s += scalar_w(wtype, w + r * rb, k) * x[t * ldx + k];
            y[t * ldy + r] = s;
        }
}

#define FLOAT_KERNELS(NAME, WT)                                                                 \
    static void NAME(int R, int T, const uint8_t *w, size_t rb, const float *x, int64_t ldx,   \
                     int64_t n, float *y, int64_t ldy) {                                        \
        if (R == 3) {                                                                           \
            if (T == 4) float_kernel(WT, 3, 4, w, rb, x, ldx, n, y, ldy);                       \
            else if (T == 3) float_kernel(WT, 3, 3, w, rb, x, ldx, n, y, ldy);                  \
            else if (T == 2) float_kernel(WT, 3, 2, w, rb, x, ldx, n, y, ldy);                  \
            else float_kernel(WT, 3, 1, w, rb, x, ldx, n, y, ldy);                              \
        } else if (T == 4) float_kernel(WT, 1, 4, w, rb, x, ldx, n, y, ldy);                    \
        else if (T == 3) float_kernel(WT, 1, 3, w, rb, x, ldx, n, y, ldy);                      \
        else if (T == 2) float_kernel(WT, 1, 2, w, rb, x, ldx, n, y, ldy);                      \
        else float_kernel(WT, 1, 1, w, rb, x, ldx, n, y, ldy);                                  \
    }

FLOAT_KERNELS(float_f32, TL_F32)
FLOAT_KERNELS(float_f16, TL_F16)
FLOAT_KERNELS(float_bf16, TL_BF16)

void tl_gemm_float_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr,
                        const float *x, int64_t ldx, int64_t nt, int64_t n_in, float *y,
                        int64_t ldy) {
    void (*fn)(int, int, const uint8_t *, size_t, const float *, int64_t, int64_t, float *,
               int64_t) = wtype == TL_F32 ? float_f32 : wtype == TL_F16 ? float_f16 : float_bf16;
    for (int64_t r = 0; r < nr;) {
        int R = nr - r >= 3 ? 3 : 1;
        for (int64_t t = 0; t < nt; t += 4) {
            int T = nt - t >= 4 ? 4 : (int)(nt - t);
            fn(R, T, w + r * row_bytes, row_bytes, x + t * ldx, ldx, n_in, y + t * ldy + r, ldy);
        }
        r += R;
    }
}

TL_AVX2_END
#endif

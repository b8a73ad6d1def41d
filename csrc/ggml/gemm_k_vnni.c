/* AVX-512 VNNI prompt kernels for the K formats: the AVX2 kernels' products (gemm_k_avx2.c) bit
   for bit over tiles of 16 rows, in the same common shape (unsigned quants, a scale per 16, mins
   that meet the Q8_K group sums, two float factors per row):
       row . x = dx * (d * sum_g sc_g * sum_{i in g} q_i x_i  -  dm * sum_g mi_g * bsum_g).
   Each group's sum is vpdpbusd steps into int32 lanes, then times its scale, in one of three ways
   (the cheapest that is exact for the format):
     Q4_K, Q5_K: the two groups of 32 elements that share a scale are summed together (8 steps),
     then an int32 multiply;
     Q2_K, Q3_K: per group of 16 (4 steps), vpdpwssd with the scale packed as the int16 pair
     (sc, 0): their group sums fit in int16 (16 * 7 * 127 < 2^15), the upper half meets a zero;
     Q6_K: per group of 16, an int32 multiply.
   The mins' term is vpdpwssd over the (mi, mi) and bsums pairs. The integer sums are exact, and
   the float steps per super-block are the AVX2 kernel's, lane by lane. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_VNNI_BEGIN

#include "avx2_util.h"

#define NT_MAX 8  /* tokens per register tile: 3 x 8 zmm of the 32 */

/* How a format's scales are applied (see above). */
enum { SCALE_PAIR32 = 0, SCALE_DPWSSD16 = 1, SCALE_MUL16 = 2 };
static int scale_mode(int wtype) {
    if (wtype == TL_Q4_K || wtype == TL_Q5_K) return SCALE_PAIR32;
    return wtype == TL_Q6_K ? SCALE_MUL16 : SCALE_DPWSSD16;
}

void tl_pack_k_rows_vnni(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nsb,
                         tl_pack16_kblk *out) {
    size_t bytes = row_bytes / (size_t)nsb;
    int pair16 = scale_mode(wtype) == SCALE_DPWSSD16;  /* (sc, 0); else sc as an int32 */
    _Alignas(64) tl_pack_kblk half[2];
    for (int64_t b = 0; b < nsb; b++) {
        /* the AVX2 packer does each half of 8 rows (the same quants, scales and factors) */
        for (int h = 0; h < 2; h++) {
            int64_t rows = nr - TL_PK_ROWS * h;
            if (rows <= 0) {
                memset(&half[h], 0, sizeof half[h]);
                continue;
            }
            tl_pack_k_rows_avx2(wtype, w + (size_t)(TL_PK_ROWS * h) * row_bytes + (size_t)b * bytes,
                                row_bytes, rows < TL_PK_ROWS ? rows : TL_PK_ROWS, 1, &half[h]);
        }
        tl_pack16_kblk *pk = &out[b];
        for (int c = 0; c < TL_QK_K / 4; c++) {
            __m256i lo = _mm256_load_si256((const __m256i *)half[0].q[c]);
            __m256i hi = _mm256_load_si256((const __m256i *)half[1].q[c]);
            _mm512_store_si512(pk->q[c], _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        }
        for (int h = 0; h < 2; h++) {
            for (int r = 0; r < TL_PK_ROWS; r++) {
                int r16 = TL_PK_ROWS * h + r;
                for (int g = 0; g < 16; g++) {
                    int16_t sc = half[h].sc[g][r][0];
                    pk->sc[g][r16] = pair16 ? (int32_t)(uint16_t)sc : (int32_t)sc;
                }
                for (int p = 0; p < 8; p++) {
                    pk->mi[p][r16][0] = half[h].mi[p][r][0];
                    pk->mi[p][r16][1] = half[h].mi[p][r][1];
                }
                pk->d[r16] = half[h].d[r];
                pk->dm[r16] = half[h].dm[r];
            }
        }
    }
}

TL_INLINE __m512i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* One tile (16 rows) against NT (1..NT_MAX) tokens over nsb super-blocks. */
TL_INLINE void ktile16_kernel(int MODE, int NT, const tl_pack16_kblk *pk, int64_t nsb,
                              const tl_block_q8_K *act, int64_t as, float *y, int64_t ldy,
                              int64_t nr) {
    __m512 acc[NT_MAX];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const tl_pack16_kblk *p = pk + b;
        const tl_block_q8_K *x[NT_MAX];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m512i sumi[NT_MAX], gs[NT_MAX];
        for (int t = 0; t < NT; t++) sumi[t] = _mm512_setzero_si512();
        const int width = MODE == SCALE_PAIR32 ? 2 : 1;  /* groups of 16 per scale */
        for (int g = 0; g < 16; g += width) {
            for (int t = 0; t < NT; t++) gs[t] = _mm512_setzero_si512();
            for (int c = 4 * g; c < 4 * (g + width); c++) {
                __m512i wv = _mm512_load_si512(p->q[c]);
                for (int t = 0; t < NT; t++)
                    gs[t] = _mm512_dpbusd_epi32(gs[t], wv, bcast4(x[t]->qs + 4 * c));
            }
            __m512i sc = _mm512_load_si512(p->sc[g]);
            for (int t = 0; t < NT; t++)
                sumi[t] = MODE == SCALE_DPWSSD16
                              ? _mm512_dpwssd_epi32(sumi[t], gs[t], sc)
                              : _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(gs[t], sc));
        }
        __m512 d = _mm512_load_ps(p->d), dm = _mm512_load_ps(p->dm);
        for (int t = 0; t < NT; t++) {
            __m512i msum = _mm512_setzero_si512();
            for (int q = 0; q < 8; q++)
                msum = _mm512_dpwssd_epi32(msum, _mm512_load_si512(p->mi[q]),
                                           bcast4(x[t]->bsums + 2 * q));
            __m512 dx = _mm512_set1_ps(x[t]->d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(d, dx), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dm, dx), acc[t]);
        }
    }
    __mmask16 keep = nr >= TL_PK16_ROWS ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
    for (int t = 0; t < NT; t++) _mm512_mask_storeu_ps(y + t * ldy, keep, acc[t]);
}

typedef void (*ktile16_fn)(const tl_pack16_kblk *, int64_t, const tl_block_q8_K *, int64_t,
                           float *, int64_t, int64_t);

#define KTILE16(MODE, NT)                                                                       \
    static void ktile16_##MODE##_##NT(const tl_pack16_kblk *pk, int64_t nsb,                    \
                                      const tl_block_q8_K *a, int64_t as, float *y,             \
                                      int64_t ldy, int64_t nr) {                                \
        ktile16_kernel(MODE, NT, pk, nsb, a, as, y, ldy, nr);                                  \
    }
#define KTILE16_ALL(MODE)                                                                       \
    KTILE16(MODE, 1) KTILE16(MODE, 2) KTILE16(MODE, 3) KTILE16(MODE, 4)                         \
    KTILE16(MODE, 5) KTILE16(MODE, 6) KTILE16(MODE, 7) KTILE16(MODE, 8)
KTILE16_ALL(0)
KTILE16_ALL(1)
KTILE16_ALL(2)

#define KTILE16_ROW(MODE)                                                                       \
    {ktile16_##MODE##_1, ktile16_##MODE##_2, ktile16_##MODE##_3, ktile16_##MODE##_4,            \
     ktile16_##MODE##_5, ktile16_##MODE##_6, ktile16_##MODE##_7, ktile16_##MODE##_8}
static const ktile16_fn ktile16_fns[3][NT_MAX] = {KTILE16_ROW(0), KTILE16_ROW(1), KTILE16_ROW(2)};
static_assert(SCALE_PAIR32 == 0 && SCALE_DPWSSD16 == 1 && SCALE_MUL16 == 2, "ktile16_fns rows");

void tl_gemm_packed_k_vnni(int wtype, const tl_pack16_kblk *pk, int64_t ntiles, int64_t nsb,
                           const tl_block_q8_K *act, int64_t as, int64_t nt, float *y,
                           int64_t ldy, int64_t nr) {
    int mode = scale_mode(wtype);
    for (int64_t t = 0; t < nt; t += NT_MAX) {
        int64_t n = nt - t < NT_MAX ? nt - t : NT_MAX;
        ktile16_fn fn = ktile16_fns[mode][n - 1];
        for (int64_t i = 0; i < ntiles; i++) {
            int64_t rows = nr - i * TL_PK16_ROWS;
            fn(pk + i * nsb, nsb, act + t * as, as, y + t * ldy + i * TL_PK16_ROWS, ldy,
               rows < TL_PK16_ROWS ? rows : TL_PK16_ROWS);
        }
    }
}

TL_VNNI_END
#endif

/* AVX2 prompt kernels for the K formats: 8 weight rows packed per super-block like the 32-element
   formats (gemm_avx2.c), with every format brought to one shape: unsigned quants (2 to 6 bits),
   a signed integer scale per 16 elements, a per-16 integer "min" that meets the Q8_K group sums
   (bsums), and two float factors per row:
       row . x = dx * (d * sum_g sc_g * sum_{i in g} q_i x_i  -  dm * sum_g mi_g * bsum_g).
   Q4_K/Q5_K: sc = 6-bit scale, mi = 6-bit min, dm = dmin.   Q2_K: sc = low nibble, mi = high
   nibble, dm = dmin.   Q6_K: q biased by 32, so mi = 32 * sc, dm = d.   Q3_K: q biased by 4, so
   mi = 4 * sc, dm = d. */
#include "dot.h"

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN

#include "avx2_util.h"

/* One row's super-block as 256 unsigned quant bytes (element order) and its per-16 scales. */
typedef struct {
    uint8_t q[TL_QK_K];
    int16_t sc[16];
    int16_t mi[16];
    float d, dm;
} k_row;

TL_INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
TL_INLINE void store32(void *p, __m256i v) { _mm256_storeu_si256((__m256i *)p, v); }

static void unpack_q2_k(const tl_block_q2_K *b, k_row *o) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i qv = load32(b->qs + 32 * h);
        for (int s = 0; s < 4; s++)
            store32(o->q + 128 * h + 32 * s, _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3));
    }
    for (int g = 0; g < 16; g++) {
        o->sc[g] = b->scales[g] & 0x0f;
        o->mi[g] = b->scales[g] >> 4;
    }
    o->d = _cvtsh_ss(b->d);
    o->dm = _cvtsh_ss(b->dmin);
}

static void unpack_q3_k(const tl_block_q3_K *b, k_row *o) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    __m256i hm = load32(b->hmask);
    for (int h = 0; h < 2; h++) {
        __m256i qv = load32(b->qs + 32 * h);
        for (int s = 0; s < 4; s++) {
            __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + s), one);
            store32(o->q + 128 * h + 32 * s, _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2)));
        }
    }
    int8_t sc[16];
    tl_q3_k_scales(b->scales, sc);
    for (int g = 0; g < 16; g++) {
        o->sc[g] = sc[g];
        o->mi[g] = (int16_t)(4 * sc[g]);
    }
    o->d = o->dm = _cvtsh_ss(b->d);
}

/* Q4_K and Q5_K (qh NULL for Q4_K). */
static void unpack_q45_k(const uint8_t scales[12], const uint8_t *qs, const uint8_t *qh,
                         tl_half d, tl_half dmin, k_row *o) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256i hb = qh ? load32(qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i qv = load32(qs + 32 * c);
        __m256i lo = _mm256_and_si256(qv, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
        if (qh) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
        }
        store32(o->q + 64 * c, lo);
        store32(o->q + 64 * c + 32, hi);
    }
    uint8_t sc[8], mn[8];
    tl_k_scales_mins(scales, sc, mn);
    for (int g = 0; g < 16; g++) {
        o->sc[g] = sc[g / 2];
        o->mi[g] = mn[g / 2];
    }
    o->d = _cvtsh_ss(d);
    o->dm = _cvtsh_ss(dmin);
}

static void unpack_q6_k(const tl_block_q6_K *b, k_row *o) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = load32(b->ql + 64 * h), ql1 = load32(b->ql + 64 * h + 32);
        __m256i qh = load32(b->qh + 32 * h);
        __m256i lows[4] = {
            _mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
        };
        for (int s = 0; s < 4; s++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), m3);
            store32(o->q + 128 * h + 32 * s, _mm256_or_si256(lows[s], _mm256_slli_epi16(hi, 4)));
        }
    }
    for (int g = 0; g < 16; g++) {
        o->sc[g] = b->scales[g];
        o->mi[g] = (int16_t)(32 * b->scales[g]);
    }
    o->d = o->dm = _cvtsh_ss(b->d);
}

static void unpack_k(int wtype, const uint8_t *blk, k_row *o) {
    switch (wtype) {
    case TL_Q2_K: unpack_q2_k((const tl_block_q2_K *)blk, o); break;
    case TL_Q3_K: unpack_q3_k((const tl_block_q3_K *)blk, o); break;
    case TL_Q4_K: {
        const tl_block_q4_K *b = (const tl_block_q4_K *)blk;
        unpack_q45_k(b->scales, b->qs, NULL, b->d, b->dmin, o);
        break;
    }
    case TL_Q5_K: {
        const tl_block_q5_K *b = (const tl_block_q5_K *)blk;
        unpack_q45_k(b->scales, b->qs, b->qh, b->d, b->dmin, o);
        break;
    }
    default: unpack_q6_k((const tl_block_q6_K *)blk, o); break;
    }
}

void tl_pack_k_rows_avx2(int wtype, const uint8_t *w, size_t row_bytes, int64_t nr, int64_t nsb,
                         tl_pack_kblk *out) {
    size_t bytes = row_bytes / (size_t)nsb;
    k_row rows[TL_PK_ROWS];
    for (int64_t b = 0; b < nsb; b++) {
        for (int r = 0; r < TL_PK_ROWS; r++) {
            if (r < nr) unpack_k(wtype, w + (size_t)r * row_bytes + (size_t)b * bytes, &rows[r]);
            else memset(&rows[r], 0, sizeof rows[r]);
        }
        tl_pack_kblk *pk = &out[b];
        for (int k = 0; k < TL_QK_K / 32; k++) {
            __m256i v[TL_PK_ROWS];
            for (int r = 0; r < TL_PK_ROWS; r++) v[r] = load32(rows[r].q + 32 * k);
            transpose8_epi32(v);
            for (int c = 0; c < 8; c++) _mm256_store_si256((__m256i *)pk->q[8 * k + c], v[c]);
        }
        for (int r = 0; r < TL_PK_ROWS; r++) {
            for (int g = 0; g < 16; g++) pk->sc[g][r][0] = pk->sc[g][r][1] = rows[r].sc[g];
            for (int p = 0; p < 8; p++) {
                pk->mi[p][r][0] = rows[r].mi[2 * p];
                pk->mi[p][r][1] = rows[r].mi[2 * p + 1];
            }
            pk->d[r] = rows[r].d;
            pk->dm[r] = rows[r].dm;
        }
    }
}

TL_INLINE __m256i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* One tile (8 rows) against NT (1..4) tokens over nsb super-blocks. SIX: 6-bit quants, whose
   int16 sums hold only 2 steps (2 * 2 * 63 * 127 < 2^15); up to 5 bits they hold 4. */
TL_INLINE void ktile_kernel(int SIX, int NT, const tl_pack_kblk *pk, int64_t nsb,
                            const tl_block_q8_K *act, int64_t as, float *y, int64_t ldy,
                            int64_t nr) {
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const tl_pack_kblk *p = pk + b;
        const tl_block_q8_K *x[4];
        for (int t = 0; t < NT; t++) x[t] = act + t * as + b;
        __m256i sumi[4], s16[4];
        for (int t = 0; t < NT; t++) sumi[t] = _mm256_setzero_si256();
        for (int g = 0; g < 16; g++) {
            __m256i sc = _mm256_load_si256((const __m256i *)p->sc[g]);
            for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
            for (int c = 4 * g; c < 4 * g + 4; c++) {
                __m256i wv = _mm256_load_si256((const __m256i *)p->q[c]);
                for (int t = 0; t < NT; t++)
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wv, bcast4(x[t]->qs + 4 * c)));
                if (SIX && (c & 1)) {
                    for (int t = 0; t < NT; t++) {
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s16[t], sc));
                        s16[t] = _mm256_setzero_si256();
                    }
                }
            }
            if (!SIX)
                for (int t = 0; t < NT; t++) sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s16[t], sc));
        }
        __m256 d = _mm256_load_ps(p->d), dm = _mm256_load_ps(p->dm);
        for (int t = 0; t < NT; t++) {
            __m256i msum = _mm256_setzero_si256();
            for (int q = 0; q < 8; q++)
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)p->mi[q]),
                                                                bcast4(x[t]->bsums + 2 * q)));
            __m256 dx = _mm256_set1_ps(x[t]->d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(d, dx), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dm, dx), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) {
        if (nr >= TL_PK_ROWS) {
            _mm256_storeu_ps(y + t * ldy, acc[t]);
        } else {
            float tmp[TL_PK_ROWS];
            _mm256_storeu_ps(tmp, acc[t]);
            for (int64_t r = 0; r < nr; r++) y[t * ldy + r] = tmp[r];
        }
    }
}

typedef void (*ktile_fn)(const tl_pack_kblk *, int64_t, const tl_block_q8_K *, int64_t, float *,
                         int64_t, int64_t);

#define KTILE(SIX, NT)                                                                          \
    static void ktile_##SIX##_##NT(const tl_pack_kblk *pk, int64_t nsb, const tl_block_q8_K *a, \
                                   int64_t as, float *y, int64_t ldy, int64_t nr) {             \
        ktile_kernel(SIX, NT, pk, nsb, a, as, y, ldy, nr);                                      \
    }
KTILE(0, 1) KTILE(0, 2) KTILE(0, 3) KTILE(0, 4)
KTILE(1, 1) KTILE(1, 2) KTILE(1, 3) KTILE(1, 4)

static const ktile_fn ktile_fns[2][4] = {
    {ktile_0_1, ktile_0_2, ktile_0_3, ktile_0_4},
    {ktile_1_1, ktile_1_2, ktile_1_3, ktile_1_4},
};

void tl_gemm_packed_k_avx2(int wtype, const tl_pack_kblk *pk, int64_t ntiles, int64_t nsb,
                           const tl_block_q8_K *act, int64_t as, int64_t nt, float *y,
                           int64_t ldy, int64_t nr) {
    int six = wtype == TL_Q6_K;
    for (int64_t t = 0; t < nt; t += 4) {
        int64_t n4 = nt - t < 4 ? nt - t : 4;
        ktile_fn fn = ktile_fns[six][n4 - 1];
        for (int64_t i = 0; i < ntiles; i++) {
            int64_t rows = nr - i * TL_PK_ROWS;
            fn(pk + i * nsb, nsb, act + t * as, as, y + t * ldy + i * TL_PK_ROWS, ldy,
               rows < TL_PK_ROWS ? rows : TL_PK_ROWS);
        }
    }
}

TL_AVX2_END
#endif

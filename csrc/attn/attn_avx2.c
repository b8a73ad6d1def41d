/* The AVX2 range kernel of attention, for every cache type (the scalar twin is attn_ref.c).

   Rows are streamed in tiles of TILE positions. A tile's scores come first: every query head of
   the group against each K row as the row is read, so one row read from memory serves the
   whole group. f16 keys: float dot products, two rows at a time for independent FMA chains.
   Block keys (Q8_0, Q4_0): per 32-element block an exact integer dot of the stored quants,
   widened to 16 bits, with the 16-bit query (madd), eight rows' sums reduced together, then
   converted and scaled by the query's and the row's block scales in the same order as the
   scalar twin (same bits).
   Then one online-softmax step per head (new maximum, rescale factor, weights exp(s - m)), and
   the weighted V rows added into the accumulators 16 columns at a time; a block type's weights
   are first multiplied by each row's block scale, so its quants convert straight to floats.
   The next tile's rows are prefetched while this one is computed. */
#pragma STDC FP_CONTRACT OFF
#include <math.h>
#include <stdint.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "../ggml/vmath.h"
#include "kv_internal.h"

#if TL_HAVE_X86
TL_AVX2_BEGIN
#include "../ggml/avx2_util.h"

#define GMAX TL_ATTN_GMAX
#define TILE TL_ATTN_TILE

static inline __m256 load_h8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The 8 lane sums of v[0..7], as one vector (lane r: the sum of v[r]). */
static inline __m256 sum8x8(const __m256 *v) {
    __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    /* a: low half sums the low 4 lanes of v0..v3, high half their high 4 lanes; b for v4..v7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* The f16 scales at byte offset off of 8 rows, as floats. */
static inline __m256 gather_d8(const uint8_t *const rows[8], int64_t off) {
    uint16_t h[8];
    for (int r = 0; r < 8; r++) memcpy(&h[r], rows[r] + off, 2);
    return _mm256_cvtph_ps(_mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3],
                                          (short)h[4], (short)h[5], (short)h[6], (short)h[7]));
}

/* Pointers to rows j8 .. j8 + 7 of a tile, the last valid one repeated past its end. */
static inline void tile_rows(const uint8_t *t, int64_t stride, int j8, int jn,
                             const uint8_t *rows[8]) {
    const uint8_t *row = t + (int64_t)j8 * stride;
    for (int r = 0; r < 8; r++, row += stride) rows[r] = r < jn ? row : rows[r - 1];
}

/* Bring n rows' bytes [0, bytes) at p (rows stride apart) into L2: whole rows are one run. */
static inline void prefetch_rows(const uint8_t *p, int64_t stride, int n, int64_t bytes) {
    if (bytes == stride) {
        for (int64_t b = 0; b < n * stride; b += 64) _mm_prefetch((const char *)p + b, _MM_HINT_T1);
        return;
    }
    for (int j = 0; j < n; j++)
        for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)p + j * stride + b,
                                                             _MM_HINT_T1);
}

/* ---------------------------------------------------------------- scores */

static inline __attribute__((always_inline)) void scores_f16(const tl_attn_q *Q,
                                                            const tl_attn_group *G,
                                                            const uint8_t *kt, int nt,
                                                            const int gs, float s[][TILE]) {
    const int hd = Q->head_dim;
    const int64_t stride = Q->stride / 2; /* in halves */
    const uint16_t *k = (const uint16_t *)kt;
    const float *qs = G->qs;
    for (int j8 = 0; j8 < nt; j8 += 8) {
        const int jn = nt - j8 < 8 ? nt - j8 : 8;
        __m256 D[GMAX][8];
        for (int jj = 0; jj < jn; jj += 2) {
            const uint16_t *k0 = k + (j8 + jj) * stride;
            const uint16_t *k1 = jj + 1 < jn ? k0 + stride : k0;
            __m256 d0[GMAX], d1[GMAX];
            for (int g = 0; g < gs; g++) d0[g] = d1[g] = _mm256_setzero_ps();
            for (int c = 0; c < hd; c += 8) {
                __m256 x0 = load_h8(k0 + c), x1 = load_h8(k1 + c);
                for (int g = 0; g < gs; g++) {
                    __m256 qv = _mm256_loadu_ps(qs + g * hd + c);
                    d0[g] = _mm256_fmadd_ps(qv, x0, d0[g]);
                    d1[g] = _mm256_fmadd_ps(qv, x1, d1[g]);
                }
            }
            for (int g = 0; g < gs; g++) {
                D[g][jj] = d0[g];
                D[g][jj + 1] = d1[g];
            }
        }
        for (int jj = (jn + 1) & ~1; jj < 8; jj++)
            for (int g = 0; g < gs; g++) D[g][jj] = _mm256_setzero_ps();
        for (int g = 0; g < gs; g++) _mm256_store_ps(&s[g][j8], sum8x8(D[g]));
    }
}

/* The 32 quants of a block (qs points at them) as int16: elements 0-15 in k0, 16-31 in k1. */
static inline void k_block16(const uint8_t *qs, const int q4, __m256i *k0, __m256i *k1) {
    if (q4) {
        __m128i raw = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0f);
        *k0 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m));
        *k1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m));
    } else {
        *k0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        *k1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
    }
}

/* Block-type scores, 8 rows at a time: each row's block is widened once and multiplied with
   every head's 16-bit query block (madd), the rows' sums reduced pair by pair as isum8x8 does
   (exact integers), then scaled in the scalar twin's order. */
static inline __attribute__((always_inline)) void scores_block(const tl_attn_q *Q,
                                                              const tl_attn_group *G,
                                                              const uint8_t *kt, int nt,
                                                              const int gs, const int q4,
                                                              float s[][TILE]) {
    const int nb = Q->head_dim / TL_QK;
    const int64_t bb = q4 ? (int64_t)sizeof(tl_block_q4_0) : (int64_t)sizeof(tl_block_q8_0);
    for (int j8 = 0; j8 < nt; j8 += 8) {
        const uint8_t *rows[8];
        tile_rows(kt, Q->stride, j8, nt - j8 < 8 ? nt - j8 : 8, rows);
        __m256 S[GMAX];
        for (int g = 0; g < gs; g++) S[g] = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const int64_t off = b * bb;
            const __m256 dk = gather_d8(rows, off);
            __m256i A[GMAX], H[GMAX][2];
            for (int r = 0; r < 8; r += 2) {
                __m256i a0, a1, b0, b1;
                k_block16(rows[r] + off + 2, q4, &a0, &a1);
                k_block16(rows[r + 1] + off + 2, q4, &b0, &b1);
                for (int g = 0; g < gs; g++) {
                    const int16_t *qs = G->qq[g * nb + b].qs;
                    const __m256i q0 = _mm256_loadu_si256((const __m256i *)qs);
                    const __m256i q1 = _mm256_loadu_si256((const __m256i *)(qs + 16));
                    __m256i pa = _mm256_add_epi32(_mm256_madd_epi16(a0, q0),
                                                  _mm256_madd_epi16(a1, q1));
                    __m256i pb = _mm256_add_epi32(_mm256_madd_epi16(b0, q0),
                                                  _mm256_madd_epi16(b1, q1));
                    __m256i h = _mm256_hadd_epi32(pa, pb);
                    if ((r & 2) == 0) A[g] = h;
                    else H[g][r >> 2] = _mm256_hadd_epi32(A[g], h);
                }
            }
            for (int g = 0; g < gs; g++) {
                const tl_attn_qblk *qb = G->qq + g * nb + b;
                __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(H[g][0], H[g][1], 0x20),
                                                _mm256_permute2x128_si256(H[g][0], H[g][1], 0x31));
                if (q4) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * qb->sum));
                __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(qb->d));
                t = _mm256_mul_ps(t, dk);
                S[g] = _mm256_add_ps(S[g], t);
            }
        }
        for (int g = 0; g < gs; g++) _mm256_store_ps(&s[g][j8], S[g]);
    }
}

/* ---------------------------------------------------------------- softmax step */

/* New maximum, rescale factor corr and weights exp(s - m) in place, for nt scores per head. */
static inline __attribute__((always_inline)) void softmax_step(float s[][TILE], int nt,
                                                              const int gs, float *m, float *l,
                                                              float *corr) {
    const int nv = (nt + 7) & ~7;
    for (int g = 0; g < gs; g++) {
        for (int i = nt; i < nv; i++) s[g][i] = -INFINITY;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (int i = 0; i < nv; i += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(&s[g][i]));
        float mt = tl_hmax8(mx);
        float mn = mt > m[g] ? mt : m[g];
        corr[g] = m[g] == -INFINITY ? 0.0f : expf(m[g] - mn);
        __m256 mv = _mm256_set1_ps(mn), sum = _mm256_setzero_ps();
        for (int i = 0; i < nv; i += 8) {
            __m256 e = tl_exp8(_mm256_sub_ps(_mm256_load_ps(&s[g][i]), mv));
            _mm256_store_ps(&s[g][i], e);
            sum = _mm256_add_ps(sum, e);
        }
        l[g] = l[g] * corr[g] + tl_hsum8(sum);
        m[g] = mn;
    }
}

/* ---------------------------------------------------------------- weighted V rows */

static inline __attribute__((always_inline)) void accumulate_f16(const tl_attn_q *Q,
                                                                const uint8_t *vt, int nt,
                                                                const int gs, float s[][TILE],
                                                                const float *corr, float *acc) {
    const int hd = Q->head_dim;
    const int64_t stride = Q->stride / 2;
    const uint16_t *v = (const uint16_t *)vt;
    int c = 0;
    for (; c + 16 <= hd; c += 16) {
        __m256 a0[GMAX], a1[GMAX];
        for (int g = 0; g < gs; g++) {
            __m256 cv = _mm256_set1_ps(corr[g]);
            a0[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c), cv);
            a1[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c + 8), cv);
        }
        for (int jj = 0; jj < nt; jj++) {
            const uint16_t *vr = v + jj * stride + c;
            __m256 x0 = load_h8(vr), x1 = load_h8(vr + 8);
            for (int g = 0; g < gs; g++) {
                __m256 w = _mm256_broadcast_ss(&s[g][jj]);
                a0[g] = _mm256_fmadd_ps(w, x0, a0[g]);
                a1[g] = _mm256_fmadd_ps(w, x1, a1[g]);
            }
        }
        for (int g = 0; g < gs; g++) {
            _mm256_storeu_ps(acc + g * hd + c, a0[g]);
            _mm256_storeu_ps(acc + g * hd + c + 8, a1[g]);
        }
    }
    if (c < hd) {
        __m256 a0[GMAX];
        for (int g = 0; g < gs; g++)
            a0[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c), _mm256_set1_ps(corr[g]));
        for (int jj = 0; jj < nt; jj++) {
            __m256 x0 = load_h8(v + jj * stride + c);
            for (int g = 0; g < gs; g++)
                a0[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(&s[g][jj]), x0, a0[g]);
        }
        for (int g = 0; g < gs; g++) _mm256_storeu_ps(acc + g * hd + c, a0[g]);
    }
}

/* 16 quants of a block (elements o .. o + 15, o = 0 or 16) as two vectors of floats. */
static inline void block_quants16(const uint8_t *qs, int o, const int q4, __m256 *x0,
                                  __m256 *x1) {
    __m128i lo, hi;
    if (q4) {
        __m128i raw = _mm_loadu_si128((const __m128i *)qs);
        __m128i nib = _mm_and_si128(o ? _mm_srli_epi16(raw, 4) : raw, _mm_set1_epi8(0x0f));
        nib = _mm_sub_epi8(nib, _mm_set1_epi8(8));
        lo = nib;
        hi = _mm_srli_si128(nib, 8);
    } else {
        lo = _mm_loadl_epi64((const __m128i *)(qs + o));
        hi = _mm_loadl_epi64((const __m128i *)(qs + o + 8));
    }
    *x0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    *x1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
}

static inline __attribute__((always_inline)) void accumulate_block(const tl_attn_q *Q,
                                                                  const uint8_t *vt, int nt,
                                                                  const int gs, const int q4,
                                                                  float s[][TILE],
                                                                  const float *corr,
                                                                  float *acc) {
    const int hd = Q->head_dim, nb = hd / TL_QK;
    const int64_t bb = q4 ? (int64_t)sizeof(tl_block_q4_0) : (int64_t)sizeof(tl_block_q8_0);
    float *ws = Q->ws;  /* ws[(g * nb + b) * TILE + j]: weight of row j times its V scale */
    for (int j8 = 0; j8 < nt; j8 += 8) {
        const uint8_t *rows[8];
        tile_rows(vt, Q->stride, j8, nt - j8 < 8 ? nt - j8 : 8, rows);
        for (int b = 0; b < nb; b++) {
            const __m256 dv = gather_d8(rows, b * bb);
            for (int g = 0; g < gs; g++)
                _mm256_store_ps(ws + (g * nb + b) * TILE + j8,
                                _mm256_mul_ps(_mm256_load_ps(&s[g][j8]), dv));
        }
    }
    for (int c = 0; c < hd; c += 16) {
        const int b = c / TL_QK, o = c % TL_QK;
        __m256 a0[GMAX], a1[GMAX];
        for (int g = 0; g < gs; g++) {
            __m256 cv = _mm256_set1_ps(corr[g]);
            a0[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c), cv);
            a1[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c + 8), cv);
        }
        const uint8_t *blk = vt + b * bb + 2;
        const float *wb = ws + b * TILE;  /* head g's weights at wb + g * nb * TILE */
        for (int jj = 0; jj < nt; jj++, blk += Q->stride) {
            __m256 x0, x1;
            block_quants16(blk, o, q4, &x0, &x1);
            for (int g = 0; g < gs; g++) {
                __m256 w = _mm256_broadcast_ss(wb + g * nb * TILE + jj);
                a0[g] = _mm256_fmadd_ps(w, x0, a0[g]);
                a1[g] = _mm256_fmadd_ps(w, x1, a1[g]);
            }
        }
        for (int g = 0; g < gs; g++) {
            _mm256_storeu_ps(acc + g * hd + c, a0[g]);
            _mm256_storeu_ps(acc + g * hd + c + 8, a1[g]);
        }
    }
}

/* ---------------------------------------------------------------- range */

/* One tile of nt rows into one group's state. gs and type are compile-time constants at every
   call site, so the per-head arrays of vectors live in registers and each type's loop is its
   own code. */
static inline __attribute__((always_inline)) void tile_g(const tl_attn_q *Q,
                                                        const tl_attn_group *G,
                                                        const uint8_t *kt, const uint8_t *vt,
                                                        int nt, const int gs, const int type) {
    _Alignas(32) float s[GMAX][TILE];
    float corr[GMAX];
    kt += G->offset;
    vt += G->offset;
    if (type == TL_F16) scores_f16(Q, G, kt, nt, gs, s);
    else scores_block(Q, G, kt, nt, gs, type == TL_Q4_0, s);
    softmax_step(s, nt, gs, G->m, G->l, corr);
    if (type == TL_F16) accumulate_f16(Q, vt, nt, gs, s, corr, G->acc);
    else accumulate_block(Q, vt, nt, gs, type == TL_Q4_0, s, corr, G->acc);
}

#define TILE_GS(type)                                              \
    switch (G->gs) {                                               \
    case 1: tile_g(Q, G, kt, vt, nt, 1, type); break;              \
    case 2: tile_g(Q, G, kt, vt, nt, 2, type); break;              \
    case 3: tile_g(Q, G, kt, vt, nt, 3, type); break;              \
    default: tile_g(Q, G, kt, vt, nt, 4, type); break;             \
    }

static void tile_any(const tl_attn_q *Q, const tl_attn_group *G, const uint8_t *kt,
                     const uint8_t *vt, int nt) {
    switch (Q->kv_type) {
    case TL_Q8_0: TILE_GS(TL_Q8_0); break;
    case TL_Q4_0: TILE_GS(TL_Q4_0); break;
    default: TILE_GS(TL_F16); break;
    }
}

/* Tile by tile, every group of the unit in turn: a tile's rows (a few KiB) are read from memory
   once and stay in L1 for all the groups, and the next tile is prefetched meanwhile. */
void tl_attn_range_avx2(const tl_attn_q *Q, const uint8_t *k, const uint8_t *v, int64_t n) {
    for (int64_t p0 = 0; p0 < n; p0 += TILE) {
        const int nt = n - p0 < TILE ? (int)(n - p0) : TILE;
        const uint8_t *kt = k + p0 * Q->stride, *vt = v + p0 * Q->stride;
        if (p0 + TILE < n) { /* into L2: L1 holds the tile being computed */
            const int next = n - p0 - TILE < TILE ? (int)(n - p0 - TILE) : TILE;
            prefetch_rows(kt + TILE * Q->stride + Q->lo, Q->stride, next, Q->hi - Q->lo);
            prefetch_rows(vt + TILE * Q->stride + Q->lo, Q->stride, next, Q->hi - Q->lo);
        }
        for (int gi = 0; gi < Q->n_groups; gi++) tile_any(Q, Q->groups + gi, kt, vt, nt);
    }
}

TL_AVX2_END
#endif

/* TL_PATH_PACKED for the K formats (Q4_K, Q5_K, Q6_K): their repacked layouts (packed.h) and
   the scalar twins of their tile kernels (bit-identical to packed_avx2_k.c). */
#include <math.h>

#include "packed.h"

static int64_t n_tiles(int64_t n_out) { return n_out / TL_RP_ROWS + (n_out % TL_RP_ROWS != 0); }

/* Row i * 8 + r's super-block b, or NULL for the zero rows past n_out. */
static const uint8_t *ggml_block(const uint8_t *w, size_t bytes, int64_t n_out, int64_t nb,
                                 int64_t i, int r, int64_t b) {
    int64_t row = i * TL_RP_ROWS + r;
    return row < n_out ? w + ((size_t)row * (size_t)nb + (size_t)b) * bytes : NULL;
}

/* Q4_K and Q5_K share the quants' nibbles, the scales, the mins and the factors. */
static void place_q45k(const uint8_t *qs, const uint8_t scales[12], tl_half d, tl_half dmin,
                       int r, uint8_t q[32][TL_RP_ROWS][4], uint8_t sc[8][TL_RP_ROWS],
                       uint8_t mn[8][TL_RP_ROWS], tl_half *dd, tl_half *dm) {
    uint8_t s8[8], m8[8];
    tl_k_scales_mins(scales, s8, m8);
    for (int s = 0; s < 8; s++) {
        sc[s][r] = s8[s];
        mn[s][r] = m8[s];
    }
    dd[r] = d;
    dm[r] = dmin;
    for (int g = 0; g < 32; g++) memcpy(q[g][r], qs + 4 * g, 4);
}

void tl_rp_pack_q4_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {
    tl_rp_q4k *tiles = (tl_rp_q4k *)out;
    for (int64_t i = 0; i < n_tiles(n_out); i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q4k *p = &tiles[i * nb + b];
            memset(p, 0, sizeof *p);
            for (int r = 0; r < TL_RP_ROWS; r++) {
                const tl_block_q4_K *blk =
                    (const tl_block_q4_K *)ggml_block(w, sizeof *blk, n_out, nb, i, r, b);
                if (!blk) break;
                place_q45k(blk->qs, blk->scales, blk->d, blk->dmin, r, p->q, p->sc, p->mn, p->d,
                           p->dmin);
            }
        }
}

void tl_rp_pack_q5_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {
    tl_rp_q5k *tiles = (tl_rp_q5k *)out;
    for (int64_t i = 0; i < n_tiles(n_out); i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q5k *p = &tiles[i * nb + b];
            memset(p, 0, sizeof *p);
            for (int r = 0; r < TL_RP_ROWS; r++) {
                const tl_block_q5_K *blk =
                    (const tl_block_q5_K *)ggml_block(w, sizeof *blk, n_out, nb, i, r, b);
                if (!blk) break;
                place_q45k(blk->qs, blk->scales, blk->d, blk->dmin, r, p->q, p->sc, p->mn, p->d,
                           p->dmin);
                for (int c = 0; c < 8; c++) memcpy(p->qh[c][r], blk->qh + 4 * c, 4);
            }
        }
}

/* The 256 quants of a Q6_K super-block plus 32 (0..63): element 128h + i (i < 128) has its low
   4 bits in nibble i / 64 of ql[64h + i % 64] and its high 2 bits at bit 2 (i / 32) of
   qh[32h + i % 32]. */
static void q6_k_quants(const tl_block_q6_K *blk, uint8_t u[TL_QK_K]) {
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 128; i++) {
            int lo = (blk->ql[64 * h + i % 64] >> (4 * (i / 64))) & 0x0f;
            int hi = (blk->qh[32 * h + i % 32] >> (2 * (i / 32))) & 3;
            u[128 * h + i] = (uint8_t)(lo | hi << 4);
        }
}

void tl_rp_pack_q6_k(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {
    tl_rp_q6k *tiles = (tl_rp_q6k *)out;
    for (int64_t i = 0; i < n_tiles(n_out); i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q6k *p = &tiles[i * nb + b];
            memset(p, 0, sizeof *p);
            for (int r = 0; r < TL_RP_ROWS; r++) {
                const tl_block_q6_K *blk =
                    (const tl_block_q6_K *)ggml_block(w, sizeof *blk, n_out, nb, i, r, b);
                if (!blk) break;
                uint8_t u[TL_QK_K];
                q6_k_quants(blk, u);
                for (int part = 0; part < 4; part++)  /* sub-blocks 2 part and 2 part + 1 */
                    for (int c = 0; c < 8; c++)
                        for (int k = 0; k < 4; k++)
                            p->ql[8 * part + c][r][k] =
                                (uint8_t)((u[64 * part + 4 * c + k] & 0x0f) |
                                          (u[64 * part + 32 + 4 * c + k] & 0x0f) << 4);
                for (int s = 0; s < 8; s++)
                    for (int c = 0; c < 8; c++)
                        for (int k = 0; k < 4; k++)
                            p->qh[2 * s + c / 4][r][k] |=
                                (uint8_t)((u[32 * s + 4 * c + k] >> 4) << (2 * (c % 4)));
                for (int s = 0; s < 8; s++) {
                    p->sc[s][r][0] = blk->scales[2 * s];
                    p->sc[s][r][1] = blk->scales[2 * s + 1];
                }
                p->d[r] = blk->d;
            }
        }
}

/* ---- scalar twins of the tile kernels ---- */

static void store_rows(const float *acc, int64_t nr, float *y) {
    for (int64_t r = 0; r < nr; r++) y[r] = acc[r];
}

/* Q4_K (qh NULL) and Q5_K: row r's quant k of chunk c in sub-block s. */
static inline int q45k_quant(const uint8_t q[32][TL_RP_ROWS][4], const uint8_t (*qh)[TL_RP_ROWS][4],
                             int s, int c, int r, int k) {
    uint8_t v = q[8 * (s / 2) + c][r][k];
    int u = s % 2 ? v >> 4 : v & 0x0f;
    return qh ? u | ((qh[c][r][k] >> s) & 1) << 4 : u;
}

/* Both layouts begin with the same q and differ only in what follows; the factors are read
   through these pointers. */
static void q45k_tile_ref(int five, const void *p, int64_t nb, const tl_block_q8_K *act,
                          int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr) {
    size_t step = five ? sizeof(tl_rp_q5k) : sizeof(tl_rp_q4k);
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *raw = (const uint8_t *)p + (size_t)b * step;
            const tl_rp_q4k *b4 = (const tl_rp_q4k *)raw;
            const tl_rp_q5k *b5 = (const tl_rp_q5k *)raw;
            const uint8_t (*sc)[TL_RP_ROWS] = five ? b5->sc : b4->sc;
            const uint8_t (*mn)[TL_RP_ROWS] = five ? b5->mn : b4->mn;
            const tl_half *d = five ? b5->d : b4->d, *dmin = five ? b5->dmin : b4->dmin;
            const tl_block_q8_K *x = &act[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t isum = 0, msum = 0;
                for (int s = 0; s < 8; s++) {
                    int32_t dot = 0;
                    for (int c = 0; c < 8; c++)
                        for (int k = 0; k < 4; k++)
                            dot += q45k_quant(b4->q, five ? b5->qh : NULL, s, c, r, k) *
                                   x->qs[32 * s + 4 * c + k];
                    isum += sc[s][r] * dot;
                    msum += mn[s][r] * (x->bsums[2 * s] + x->bsums[2 * s + 1]);
                }
                acc[r] = fmaf((float)isum, tl_half_to_float(d[r]) * x->d, acc[r]);
                acc[r] = fmaf(-(float)msum, tl_half_to_float(dmin[r]) * x->d, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

TL_RP_TILE(tl_rp_tile_q4_k_ref) { q45k_tile_ref(0, p, nb, act, as, nt, y, ldy, nr); }
TL_RP_TILE(tl_rp_tile_q5_k_ref) { q45k_tile_ref(1, p, nb, act, as, nt, y, ldy, nr); }

TL_RP_TILE(tl_rp_tile_q6_k_ref) {
    const tl_rp_q6k *tile = p;
    const tl_block_q8_K *a = act;
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const tl_rp_q6k *blk = &tile[b];
            const tl_block_q8_K *x = &a[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t usum = 0, msum = 0;  /* sum sc * dot(u, x) and sum sc * bsum */
                for (int s = 0; s < 8; s++)
                    for (int half = 0; half < 2; half++) {
                        int32_t dot = 0;
                        for (int c = 4 * half; c < 4 * half + 4; c++)
                            for (int k = 0; k < 4; k++) {
                                uint8_t v = blk->ql[8 * (s / 2) + c][r][k];
                                int lo = s % 2 ? v >> 4 : v & 0x0f;
                                int hi = (blk->qh[2 * s + half][r][k] >> (2 * (c % 4))) & 3;
                                dot += (lo | hi << 4) * x->qs[32 * s + 4 * c + k];
                            }
                        usum += blk->sc[s][r][half] * dot;
                        msum += blk->sc[s][r][half] * x->bsums[2 * s + half];
                    }
                int32_t isum = usum - 32 * msum;
                acc[r] = fmaf((float)isum, tl_half_to_float(blk->d[r]) * x->d, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

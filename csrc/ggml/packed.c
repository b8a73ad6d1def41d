/* TL_PATH_PACKED: decode rows against weights repacked once at load time (packed.h).

   The row dots re-unpack every weight block for every token, so 4 decode tokens cost 4 times
   the arithmetic of one and the step turns compute-bound. The tile kernels here unpack each
   block once per step and apply it to every token of the step (up to 4 at a time in registers,
   more in further passes while the tile sits in L1), and read the same bytes as the GGML rows,
   so one token stays bandwidth-bound. Each thread takes a contiguous run of tiles (one
   sequential stream) and quantizes the few tokens itself, so one pool_run does the step. */
#include <math.h>
#include <stdlib.h>

#include "ggml.h"
#include "packed.h"

static int64_t rp_block_bytes(int wtype) {
    switch (wtype) {
    case TL_Q4_0: return (int64_t)sizeof(tl_rp_q40);
    case TL_Q4_1: return (int64_t)sizeof(tl_rp_q4);
    case TL_Q8_0: return (int64_t)sizeof(tl_rp_q8);
    case TL_Q4_K: return (int64_t)sizeof(tl_rp_q4k);
    default: return 0;
    }
}

/* Elements per block of a repackable type. */
static int64_t rp_block_elems(int wtype) { return wtype == TL_Q4_K ? TL_QK_K : TL_QK; }

int64_t tl_repack_bytes(int wtype, int64_t n_out, int64_t n_in) {
    int64_t bb = rp_block_bytes(wtype), be = rp_block_elems(wtype);
    if (!bb || n_out < 0 || n_in < 0 || n_in % be) return 0;
    return (n_out + TL_RP_ROWS - 1) / TL_RP_ROWS * (n_in / be) * bb;
}

static void pack_q4(int wtype, const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {
    int q41 = wtype == TL_Q4_1;
    size_t bytes = q41 ? sizeof(tl_block_q4_1) : sizeof(tl_block_q4_0);
    size_t out_bytes = q41 ? sizeof(tl_rp_q4) : sizeof(tl_rp_q40);
    size_t row_bytes = (size_t)nb * bytes;
    int64_t ntiles = (n_out + TL_RP_ROWS - 1) / TL_RP_ROWS;
    for (int64_t i = 0; i < ntiles; i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q4 p;
            memset(&p, 0, sizeof p);
            for (int r = 0; r < TL_RP_ROWS && i * TL_RP_ROWS + r < n_out; r++) {
                const uint8_t *blk = w + (size_t)(i * TL_RP_ROWS + r) * row_bytes + (size_t)b * bytes;
                memcpy(&p.d[r], blk, 2);
                if (q41) memcpy(&p.m[r], blk + 2, 2);
                for (int g = 0; g < 4; g++) memcpy(p.q[g][r], blk + (q41 ? 4 : 2) + 4 * g, 4);
            }
            memcpy(out + (size_t)(i * nb + b) * out_bytes, &p, out_bytes);
        }
}

static void pack_q8(const uint8_t *w, int64_t n_out, int64_t nb, tl_rp_q8 *out) {
    size_t row_bytes = (size_t)nb * sizeof(tl_block_q8_0);
    int64_t ntiles = (n_out + TL_RP_ROWS - 1) / TL_RP_ROWS;
    for (int64_t i = 0; i < ntiles; i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q8 *p = &out[i * nb + b];
            memset(p, 0, sizeof *p);
            for (int r = 0; r < TL_RP_ROWS && i * TL_RP_ROWS + r < n_out; r++) {
                const uint8_t *blk = w + (size_t)(i * TL_RP_ROWS + r) * row_bytes +
                                     (size_t)b * sizeof(tl_block_q8_0);
                memcpy(&p->d[r], blk, 2);
                for (int c = 0; c < 8; c++) memcpy(p->q[c][r], blk + 2 + 4 * c, 4);
            }
        }
}

static void pack_q4k(const uint8_t *w, int64_t n_out, int64_t nb, tl_rp_q4k *out) {
    size_t row_bytes = (size_t)nb * sizeof(tl_block_q4_K);
    int64_t ntiles = (n_out + TL_RP_ROWS - 1) / TL_RP_ROWS;
    for (int64_t i = 0; i < ntiles; i++)
        for (int64_t b = 0; b < nb; b++) {
            tl_rp_q4k *p = &out[i * nb + b];
            memset(p, 0, sizeof *p);
            for (int r = 0; r < TL_RP_ROWS && i * TL_RP_ROWS + r < n_out; r++) {
                const tl_block_q4_K *blk = (const tl_block_q4_K *)(w + (size_t)(i * TL_RP_ROWS + r) *
                                                                       row_bytes) + b;
                uint8_t sc[8], mn[8];
                tl_k_scales_mins(blk->scales, sc, mn);
                for (int s = 0; s < 8; s++) {
                    p->sc[s][r] = sc[s];
                    p->mn[s][r] = mn[s];
                }
                p->d[r] = blk->d;
                p->dmin[r] = blk->dmin;
                for (int g = 0; g < 32; g++) memcpy(p->q[g][r], blk->qs + 4 * g, 4);
            }
        }
}

void *tl_repack_new(int wtype, const void *w, int64_t n_out, int64_t n_in) {
    int64_t bytes = tl_repack_bytes(wtype, n_out, n_in);
    if (bytes <= 0 || !w) return NULL;
    void *out = aligned_alloc(64, (size_t)(bytes + 63) & ~(size_t)63);
    if (!out) return NULL;
    int64_t nb = n_in / rp_block_elems(wtype);
    if (wtype == TL_Q8_0)
        pack_q8(w, n_out, nb, out);
    else if (wtype == TL_Q4_K)
        pack_q4k(w, n_out, nb, out);
    else
        pack_q4(wtype, w, n_out, nb, out);
    return out;
}

void tl_repack_free(void *packed) { free(packed); }

/* ---- scalar twins of the tile kernels (bit-identical to packed_avx2.c) ---- */

static void store_rows(const float *acc, int64_t nr, float *y) {
    for (int64_t r = 0; r < nr; r++) y[r] = acc[r];
}

void tl_rp_tile_q4_ref(int wtype, const tl_rp_q4 *p, int64_t nb, const tl_act_q8 *act,
                       int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr) {
    size_t step = wtype == TL_Q4_1 ? sizeof(tl_rp_q4) : sizeof(tl_rp_q40);
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const tl_rp_q4 *blk = (const tl_rp_q4 *)((const uint8_t *)p + (size_t)b * step);
            const tl_act_q8 *x = &act[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t isum = 0;
                for (int g = 0; g < 4; g++)
                    for (int k = 0; k < 4; k++) {
                        uint8_t v = blk->q[g][r][k];
                        isum += (v & 0x0f) * x->qs[4 * g + k] + (v >> 4) * x->qs[16 + 4 * g + k];
                    }
                float d = tl_half_to_float(blk->d[r]);
                float m = wtype == TL_Q4_1 ? tl_half_to_float(blk->m[r]) : d * -8.0f;
                acc[r] = fmaf((float)isum, d * x->d, acc[r]);
                acc[r] = fmaf(m, x->s, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

void tl_rp_tile_q8_ref(const tl_rp_q8 *p, int64_t nb, const tl_act_q8 *act, int64_t as,
                       int64_t nt, float *y, int64_t ldy, int64_t nr) {
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const tl_rp_q8 *blk = &p[b];
            const tl_act_q8 *x = &act[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t isum = 0;
                for (int c = 0; c < 8; c++)
                    for (int k = 0; k < 4; k++) isum += blk->q[c][r][k] * x->qs[4 * c + k];
                acc[r] = fmaf((float)isum, tl_half_to_float(blk->d[r]) * x->d, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

void tl_rp_tile_q4k_ref(const tl_rp_q4k *p, int64_t nb, const tl_block_q8_K *act, int64_t as,
                        int64_t nt, float *y, int64_t ldy, int64_t nr) {
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const tl_rp_q4k *blk = &p[b];
            const tl_block_q8_K *x = &act[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t isum = 0, msum = 0;
                for (int s = 0; s < 8; s++) {
                    int32_t dot = 0;
                    for (int gg = 0; gg < 8; gg++) {
                        const uint8_t *q = blk->q[8 * (s / 2) + gg][r];
                        const int8_t *xs = x->qs + 32 * s + 4 * gg;
                        for (int k = 0; k < 4; k++)
                            dot += (s % 2 ? q[k] >> 4 : q[k] & 0x0f) * xs[k];
                    }
                    isum += blk->sc[s][r] * dot;
                    msum += blk->mn[s][r] * (x->bsums[2 * s] + x->bsums[2 * s + 1]);
                }
                acc[r] = fmaf((float)isum, tl_half_to_float(blk->d[r]) * x->d, acc[r]);
                acc[r] = fmaf(-(float)msum, tl_half_to_float(blk->dmin[r]) * x->d, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

/* ---- the matmul ---- */

typedef struct {
    int wtype, simd;
    const uint8_t *w;
    int64_t n_out, n_in, n_tok, nb;  /* nb: blocks per row (32 or 256 elements) */
    size_t tile_bytes, act_bytes, per_thread_bytes;  /* act_bytes: one token's activations */
    const float *x;
    float *y;
    uint8_t *scratch;
} rp_job;

#define RP_TOKENS 4 /* tokens per tile pass: the kernels' register budget */

static void run_tile(const rp_job *j, const uint8_t *tile, const uint8_t *a, int64_t nt,
                     float *y, int64_t nr) {
    int64_t as = j->nb;
    const tl_act_q8 *act = (const tl_act_q8 *)a;
    const tl_block_q8_K *act_k = (const tl_block_q8_K *)a;
#if TL_HAVE_X86
    if (j->simd) {
        if (j->wtype == TL_Q4_K)
            tl_rp_tile_q4k_avx2((const tl_rp_q4k *)tile, j->nb, act_k, as, nt, y, j->n_out, nr);
        else if (j->wtype == TL_Q8_0)
            tl_rp_tile_q8_avx2((const tl_rp_q8 *)tile, j->nb, act, as, nt, y, j->n_out, nr);
        else
            tl_rp_tile_q4_avx2(j->wtype, (const tl_rp_q4 *)tile, j->nb, act, as, nt, y, j->n_out, nr);
        return;
    }
#endif
    if (j->wtype == TL_Q4_K)
        tl_rp_tile_q4k_ref((const tl_rp_q4k *)tile, j->nb, act_k, as, nt, y, j->n_out, nr);
    else if (j->wtype == TL_Q8_0)
        tl_rp_tile_q8_ref((const tl_rp_q8 *)tile, j->nb, act, as, nt, y, j->n_out, nr);
    else
        tl_rp_tile_q4_ref(j->wtype, (const tl_rp_q4 *)tile, j->nb, act, as, nt, y, j->n_out, nr);
}

static void packed_task(void *arg, int ith, int nth) {
    const rp_job *j = arg;
    long t0, t1;
    tl_split((long)((j->n_out + TL_RP_ROWS - 1) / TL_RP_ROWS), ith, nth, &t0, &t1);
    if (t0 >= t1) return;
    uint8_t *act = j->scratch + (size_t)ith * j->per_thread_bytes;
    for (int64_t t = 0; t < j->n_tok; t++) {
        const float *xt = j->x + t * j->n_in;
        void *at = act + (size_t)t * j->act_bytes;
        if (j->wtype == TL_Q4_K) {
#if TL_HAVE_X86
            if (j->simd) { tl_act_quant_q8k_avx2(xt, at, j->n_in); continue; }
#endif
            tl_act_quant_q8k_ref(xt, at, j->n_in);
            continue;
        }
#if TL_HAVE_X86
        if (j->simd) { tl_act_quant_q8_avx2(xt, at, j->n_in); continue; }
#endif
        tl_act_quant_q8_ref(xt, at, j->n_in);
    }
    for (long i = t0; i < t1; i++) {
        const uint8_t *tile = j->w + (size_t)i * j->tile_bytes;
        int64_t nr = j->n_out - i * TL_RP_ROWS;
        nr = nr < TL_RP_ROWS ? nr : TL_RP_ROWS;
        for (int64_t t = 0; t < j->n_tok; t += RP_TOKENS) {
            int64_t nt = j->n_tok - t < RP_TOKENS ? j->n_tok - t : RP_TOKENS;
            run_tile(j, tile, act + (size_t)t * j->act_bytes, nt,
                     j->y + t * j->n_out + i * TL_RP_ROWS, nr);
        }
    }
}

int tl_matmul_packed(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                     const float *x, int64_t n_tok, float *y) {
    if (!rp_block_bytes(wtype)) return TL_ERR_TYPE;
    if (!pool || n_out < 0 || n_in < 0 || n_tok < 0) return TL_ERR_ARG;
    if (n_in % rp_block_elems(wtype) != 0) return TL_ERR_SIZE;
    if (n_tok == 0 || n_out == 0) return TL_OK;
    if (!y) return TL_ERR_ARG;
    if (n_in == 0) {
        memset(y, 0, (size_t)(n_tok * n_out) * sizeof(float));
        return TL_OK;
    }
    if (!w || !x) return TL_ERR_ARG;
    rp_job j = {0};
    j.wtype = wtype;
    j.simd = (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET && TL_HAVE_X86;
    j.w = w;
    j.n_out = n_out;
    j.n_in = n_in;
    j.n_tok = n_tok;
    j.nb = n_in / rp_block_elems(wtype);
    j.tile_bytes = (size_t)(j.nb * rp_block_bytes(wtype));
    j.act_bytes = (size_t)j.nb * (wtype == TL_Q4_K ? sizeof(tl_block_q8_K) : sizeof(tl_act_q8));
    j.per_thread_bytes = ((size_t)n_tok * j.act_bytes + 63) & ~(size_t)63;
    j.x = x;
    j.y = y;
    j.scratch = tl_pool_scratch(pool, j.per_thread_bytes * (size_t)tl_pool_threads(pool));
    if (!j.scratch) return TL_ERR_MEMORY;
    tl_pool_run(pool, packed_task, &j);
    return TL_OK;
}

/* TL_PATH_PACKED: decode rows against weights repacked once at load time (packed.h).

   The row dots re-unpack every weight block for every token, so 4 decode tokens cost 4 times
   the arithmetic of one and the step turns compute-bound. The tile kernels here unpack each
   block once per step and apply it to every token of the step (up to 4 at a time in registers,
   more in further passes while the tile sits in L1), and read about the bytes of the GGML rows,
   so one token stays bandwidth-bound. Each thread takes a contiguous run of tiles (one
   sequential stream) and quantizes the few tokens itself, so one pool_run does the step.
   This file: the 32-element formats' layouts and scalar
   kernels, and the matmul; packed_k.c holds the K formats' layouts and scalar kernels. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "packed.h"
#include "types.h"

static void pack_simple(int wtype, const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out);

/* The packers of the 32-element formats, named in the type table (types.c). */
#define RP_PACK_SIMPLE(NAME, WTYPE)                                                            \
    void NAME(const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {                     \
        pack_simple(WTYPE, w, n_out, nb, out);                                                 \
    }
RP_PACK_SIMPLE(tl_rp_pack_q4_0, TL_Q4_0) RP_PACK_SIMPLE(tl_rp_pack_q4_1, TL_Q4_1)
RP_PACK_SIMPLE(tl_rp_pack_q5_0, TL_Q5_0) RP_PACK_SIMPLE(tl_rp_pack_q5_1, TL_Q5_1)
RP_PACK_SIMPLE(tl_rp_pack_q8_0, TL_Q8_0)

/* The type's entry if it has a repacked layout, else NULL. */
static const tl_type_traits *find_format(int wtype) {
    const tl_type_traits *ty = tl_traits(wtype);
    return ty && ty->rp_pack ? ty : NULL;
}

/* 1: 256-element super-blocks against Q8_K activations (the K formats). */
static int is_k(const tl_type_traits *f) { return f->act == TL_ACT_Q8K; }

static int64_t block_elems(const tl_type_traits *f) { return f->block_elems; }

static int64_t n_tiles(int64_t n_out) { return n_out / TL_RP_ROWS + (n_out % TL_RP_ROWS != 0); }

/* TL_ERR_SIZE unless the whole size (rounded up to 64 for the allocation) fits int64_t and
   size_t. */
int tl_repack_bytes(int wtype, int64_t n_out, int64_t n_in, int64_t *bytes) {
    const tl_type_traits *f = find_format(wtype);
    if (!f) return TL_ERR_TYPE;
    if (!bytes) return TL_ERR_ARG;
    if (n_out <= 0 || n_in <= 0 || n_in % block_elems(f)) return TL_ERR_SIZE;
    int64_t tiles = n_tiles(n_out), nb = n_in / block_elems(f), bb = (int64_t)f->rp_bytes;
    if (nb > INT64_MAX / tiles || tiles * nb > (INT64_MAX - 63) / bb) return TL_ERR_SIZE;
    int64_t total = tiles * nb * bb;
    if ((uint64_t)total > (uint64_t)(SIZE_MAX - 63)) return TL_ERR_SIZE;
    *bytes = total;
    return TL_OK;
}

int tl_repack_new(int wtype, const void *w, int64_t n_out, int64_t n_in, void **packed) {
    if (!packed) return TL_ERR_ARG;
    *packed = NULL;
    int64_t bytes;
    int status = tl_repack_bytes(wtype, n_out, n_in, &bytes);
    if (status != TL_OK) return status;
    if (!w) return TL_ERR_ARG;
    void *out = aligned_alloc(64, ((size_t)bytes + 63) & ~(size_t)63);
    if (!out) return TL_ERR_MEMORY;
    const tl_type_traits *f = find_format(wtype);
    f->rp_pack(w, n_out, n_in / block_elems(f), out);
    *packed = out;
    return TL_OK;
}

void tl_repack_free(void *packed) { free(packed); }

/* ---- the 32-element formats ---- */

/* Q5's 32 fifth bits (bit j: element j) rearranged for the tile: bit 2g of byte k is element
   4g + k's, bit 2g + 1 is element 16 + 4g + k's. */
static void q5_high_bits(const uint8_t qh[4], uint8_t out[4]) {
    uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 |
                 (uint32_t)qh[3] << 24;
    for (int k = 0; k < 4; k++) {
        out[k] = 0;
        for (int g = 0; g < 4; g++)
            out[k] |= (uint8_t)(((h >> (4 * g + k)) & 1u) << (2 * g) |
                                ((h >> (16 + 4 * g + k)) & 1u) << (2 * g + 1));
    }
}

/* Row r of one repacked block from one GGML block. Field offsets: packed.h, blocks.h. */
static void place_simple(int wtype, const uint8_t *blk, void *p, int r) {
    switch (wtype) {
    case TL_Q8_0: {
        tl_rp_q8 *b = (tl_rp_q8 *)p;
        memcpy(&b->d[r], blk, 2);
        for (int c = 0; c < 8; c++) memcpy(b->q[c][r], blk + 2 + 4 * c, 4);
        return;
    }
    case TL_Q4_0:
    case TL_Q4_1: {
        tl_rp_q4 *b = (tl_rp_q4 *)p;  /* Q4_0 blocks stop before m */
        size_t qs = wtype == TL_Q4_1 ? offsetof(tl_block_q4_1, qs) : offsetof(tl_block_q4_0, qs);
        memcpy(&b->d[r], blk, 2);
        if (wtype == TL_Q4_1) memcpy(&b->m[r], blk + offsetof(tl_block_q4_1, m), 2);
        for (int g = 0; g < 4; g++) memcpy(b->q[g][r], blk + qs + 4 * g, 4);
        return;
    }
    default: { /* TL_Q5_0, TL_Q5_1 */
        tl_rp_q5 *b = (tl_rp_q5 *)p;  /* Q5_0 blocks stop before m */
        int q51 = wtype == TL_Q5_1;
        size_t qs = q51 ? offsetof(tl_block_q5_1, qs) : offsetof(tl_block_q5_0, qs);
        size_t qh = q51 ? offsetof(tl_block_q5_1, qh) : offsetof(tl_block_q5_0, qh);
        memcpy(&b->d[r], blk, 2);
        if (q51) memcpy(&b->m[r], blk + offsetof(tl_block_q5_1, m), 2);
        q5_high_bits(blk + qh, b->qh[r]);
        for (int g = 0; g < 4; g++) memcpy(b->q[g][r], blk + qs + 4 * g, 4);
        return;
    }
    }
}

static void pack_simple(int wtype, const uint8_t *w, int64_t n_out, int64_t nb, uint8_t *out) {
    size_t bytes = (size_t)tl_traits(wtype)->block_bytes;
    size_t out_bytes = find_format(wtype)->rp_bytes;
    size_t row_bytes = (size_t)nb * bytes;
    union { tl_rp_q4 q4; tl_rp_q5 q5; tl_rp_q8 q8; } p;  /* Q4_0 / Q5_0: their prefix */
    for (int64_t i = 0; i < n_tiles(n_out); i++)
        for (int64_t b = 0; b < nb; b++) {
            memset(&p, 0, sizeof p);
            for (int r = 0; r < TL_RP_ROWS && i * TL_RP_ROWS + r < n_out; r++)
                place_simple(wtype, w + (size_t)(i * TL_RP_ROWS + r) * row_bytes + (size_t)b * bytes,
                             &p, r);
            memcpy(out + (size_t)(i * nb + b) * out_bytes, &p, out_bytes);
        }
}

/* ---- scalar twins of the 32-element tile kernels (bit-identical to packed_avx2.c) ---- */

static void store_rows(const float *acc, int64_t nr, float *y) {
    for (int64_t r = 0; r < nr; r++) y[r] = acc[r];
}

/* Q4_0, Q4_1, Q5_0, Q5_1: unsigned quants, a scale and a min (or the offset -8 d / -16 d). */
static void nibble_tile_ref(int wtype, const void *p, int64_t nb, const tl_act_q8 *act,
                            int64_t as, int64_t nt, float *y, int64_t ldy, int64_t nr) {
    int five = wtype == TL_Q5_0 || wtype == TL_Q5_1;
    int has_m = wtype == TL_Q4_1 || wtype == TL_Q5_1;
    size_t step = find_format(wtype)->rp_bytes;
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)p + (size_t)b * step;
            const tl_rp_q4 *b4 = (const tl_rp_q4 *)blk;
            const tl_rp_q5 *b5 = (const tl_rp_q5 *)blk;
            const tl_act_q8 *x = &act[t * as + b];
            for (int r = 0; r < TL_RP_ROWS; r++) {
                int32_t isum = 0;
                for (int g = 0; g < 4; g++)
                    for (int k = 0; k < 4; k++) {
                        uint8_t v = five ? b5->q[g][r][k] : b4->q[g][r][k];
                        int lo = v & 0x0f, hi = v >> 4;
                        if (five) {
                            lo |= ((b5->qh[r][k] >> (2 * g)) & 1) << 4;
                            hi |= ((b5->qh[r][k] >> (2 * g + 1)) & 1) << 4;
                        }
                        isum += lo * x->qs[4 * g + k] + hi * x->qs[16 + 4 * g + k];
                    }
                float d = tl_half_to_float(five ? b5->d[r] : b4->d[r]);
                float m = has_m ? tl_half_to_float(five ? b5->m[r] : b4->m[r])
                                : d * (five ? -16.0f : -8.0f);
                acc[r] = fmaf((float)isum, d * x->d, acc[r]);
                acc[r] = fmaf(m, x->s, acc[r]);
            }
        }
        store_rows(acc, nr, y + t * ldy);
    }
}

#define RP_NIBBLE_REF(NAME, WTYPE)                                                             \
    TL_RP_TILE(NAME) { nibble_tile_ref(WTYPE, p, nb, act, as, nt, y, ldy, nr); }
RP_NIBBLE_REF(tl_rp_tile_q4_0_ref, TL_Q4_0) RP_NIBBLE_REF(tl_rp_tile_q4_1_ref, TL_Q4_1)
RP_NIBBLE_REF(tl_rp_tile_q5_0_ref, TL_Q5_0) RP_NIBBLE_REF(tl_rp_tile_q5_1_ref, TL_Q5_1)

TL_RP_TILE(tl_rp_tile_q8_0_ref) {
    const tl_rp_q8 *tile = p;
    const tl_act_q8 *a = act;
    for (int64_t t = 0; t < nt; t++) {
        float acc[TL_RP_ROWS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const tl_rp_q8 *blk = &tile[b];
            const tl_act_q8 *x = &a[t * as + b];
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

/* ---- the matmul ---- */

typedef struct {
    const tl_type_traits *f;
    int simd;
    const uint8_t *w;
    int64_t n_out, n_in, n_tok, nb;  /* nb: blocks per row (32 or 256 elements) */
    size_t tile_bytes, act_bytes, per_thread_bytes;  /* act_bytes: one token's activations */
    const float *x;
    float *y;
    uint8_t *scratch;
} rp_job;

#define RP_TOKENS 4 /* tokens per tile pass: the kernels' register budget */

static void quantize_token(const rp_job *j, const float *x, void *out) {
#if TL_HAVE_X86
    if (j->simd) {
        if (is_k(j->f))
            tl_act_quant_q8k_avx2(x, out, j->n_in);
        else
            tl_act_quant_q8_avx2(x, out, j->n_in);
        return;
    }
#endif
    if (is_k(j->f))
        tl_act_quant_q8k_ref(x, out, j->n_in);
    else
        tl_act_quant_q8_ref(x, out, j->n_in);
}

/* Tiles [t0, t1); a thread quantizes the tokens into its own area before its first part. */
static void packed_part(void *arg, long t0, long t1, int ith, int first) {
    const rp_job *j = arg;
    uint8_t *act = j->scratch + (size_t)ith * j->per_thread_bytes;
    if (first)
        for (int64_t t = 0; t < j->n_tok; t++)
            quantize_token(j, j->x + t * j->n_in, act + (size_t)t * j->act_bytes);
    tl_rp_tile_fn tile_fn = j->simd ? j->f->rp_avx2 : j->f->rp_ref;
    for (long i = t0; i < t1; i++) {
        const uint8_t *tile = j->w + (size_t)i * j->tile_bytes;
        int64_t nr = j->n_out - i * TL_RP_ROWS;
        nr = nr < TL_RP_ROWS ? nr : TL_RP_ROWS;
        for (int64_t t = 0; t < j->n_tok; t += RP_TOKENS) {
            int64_t nt = j->n_tok - t < RP_TOKENS ? j->n_tok - t : RP_TOKENS;
            tile_fn(tile, j->nb, act + (size_t)t * j->act_bytes, j->nb, nt,
                    j->y + t * j->n_out + i * TL_RP_ROWS, j->n_out, nr);
        }
    }
}

int tl_matmul_packed(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                     const float *x, int64_t n_tok, float *y) {
    const tl_type_traits *f = find_format(wtype);
    if (!f) return TL_ERR_TYPE;
    if (!pool || n_out < 0 || n_in < 0 || n_tok < 0) return TL_ERR_ARG;
    if (n_in % block_elems(f) != 0) return TL_ERR_SIZE;
    if (n_tok == 0 || n_out == 0) return TL_OK;
    if (!y) return TL_ERR_ARG;
    if (n_out > INT64_MAX / n_tok || (uint64_t)(n_tok * n_out) > SIZE_MAX / sizeof(float))
        return TL_ERR_SIZE;
    if (n_in == 0) {
        memset(y, 0, (size_t)(n_tok * n_out) * sizeof(float));
        return TL_OK;
    }
    if (!w || !x) return TL_ERR_ARG;
    int64_t packed_bytes;
    if (tl_repack_bytes(wtype, n_out, n_in, &packed_bytes) != TL_OK) return TL_ERR_SIZE;
    rp_job j = {0};
    j.f = f;
    j.simd = (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET && f->rp_avx2 != NULL;
    j.w = w;
    j.n_out = n_out;
    j.n_in = n_in;
    j.n_tok = n_tok;
    j.nb = n_in / block_elems(f);
    j.tile_bytes = (size_t)j.nb * f->rp_bytes;
    j.act_bytes = (size_t)j.nb * (is_k(f) ? sizeof(tl_block_q8_K) : sizeof(tl_act_q8));
    size_t nth = (size_t)tl_pool_threads(pool);
    if ((uint64_t)n_tok > (SIZE_MAX / nth - 63) / j.act_bytes) return TL_ERR_SIZE;
    j.per_thread_bytes = ((size_t)n_tok * j.act_bytes + 63) & ~(size_t)63;
    j.x = x;
    j.y = y;
    j.scratch = tl_pool_scratch(pool, j.per_thread_bytes * nth);
    if (!j.scratch) return TL_ERR_MEMORY;
    tl_pool_for(pool, packed_part, &j, (long)n_tiles(n_out), 0);
    return TL_OK;
}

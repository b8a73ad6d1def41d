/* tl_matmul: picks the kernels for a weight type, quantizes the activations and spreads the work
   over the pool.

   Work is cut into parts that the threads take as they come (tl_pool_for), so a thread the OS
   has descheduled leaves its share to the others instead of holding them up.
   Decode (one token, or up to a per-format few): one pool_run; every thread quantizes the short
   activations itself before its first part, so no second synchronisation is needed, then runs
   row dots over the contiguous rows of each part it takes.
   Prompt (more tokens): a first pool_run quantizes the tokens in parallel into the pool's
   scratch; a second multiplies. With AVX2, each part packs a group of 8-row tiles of its rows
   (row-interleaved: gemm_avx2.c for the 32-element formats, gemm_k_avx2.c for the K formats) and
   runs the group against its tokens; float weights use register-tiled FMA kernels. Scalar pools
   run the row dots for every token, a chunk of rows at a time.
   Where the pool has AVX-512 VNNI (TL_CPU_AVX512VNNI), the quantized formats' tiles hold 16 rows
   and take the VNNI kernels (gemm_vnni.c, gemm_k_vnni.c), whose results have the AVX2 kernels'
   bits; Q8_0's activations are first offset to unsigned bytes (tl_act_offset_vnni). Float
   weights take the AVX-512 FMA kernel there (gemm_float_avx512.c), with the AVX2 one's bits.
   TL_PATH_PACKED hands over to packed.c: decode rows against weights repacked at load time.
   TL_PATH_PRECISE (a flag on the row-dot or tiled path): each token's activations are quantized in two parts,
   hi and the residual lo (act_quant.c), stored side by side; every kernel above runs once per
   part (the lo part reusing the packed tiles), the lo products go to a small per-thread buffer
   and are added to y at once, so a token's bits still depend only on its path and flag. */
#include <stdlib.h>

#include "dot.h"
#include "packed.h"
#include "types.h"

#define SCALAR_DECODE_MAX_TOK 3  /* scalar pools: row dots with per-thread quantization */
#define PACK_GROUP_BYTES (96 * 1024)  /* packed tiles per group: about an L2's share */
#define DOT_CHUNK_BYTES (16 * 1024)   /* rows per chunk in the generic multi-token path */
#define LO_TOK_CHUNK 32               /* TL_PATH_PRECISE, tiled: tokens per hi/lo/add round */
#define FLOAT_ROW_UNIT 12             /* float weights: rows per unit, whole 3-row (AVX2) and 6-row (AVX-512) tiles */

/* Everything a task needs; shared read-only by the threads of one call. */
typedef struct {
    const tl_type_traits *ty;  /* the weight type's entry in the type table */
    int wtype;
    int simd;
    int vnni;              /* tiled path with the AVX-512 kernels (quantized: 16-row tiles) */
    const uint8_t *w;
    size_t row_bytes;
    int64_t n_out, n_in, n_tok;
    const float *x;
    float *y;
    size_t act_bytes;      /* one token's activations in the type's encoding (one part) */
    int parts;             /* 1, or 2 for TL_PATH_PRECISE: hi then lo, act_bytes apart */
    size_t tok_bytes;      /* parts * act_bytes: a token's activations */
    size_t lo_offset;      /* parts == 2: where in a thread's area its lo products go */
    uint8_t *act;          /* prompt: all tokens' activations */
    uint8_t *per_thread;   /* thread i's area: per_thread + i * per_thread_bytes */
    size_t per_thread_bytes;
    int rows;              /* tiled prompt paths: the product is cut by rows (else by tokens) */
} mm_job;

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Units of `unit` rows in n rows (the last may be short), and rows [*s, *e) of units [a, b). */
static long row_units(int64_t n, int64_t unit) { return (long)((n + unit - 1) / unit); }

static void unit_rows(int64_t n, int64_t unit, long a, long b, int64_t *s, int64_t *e) {
    *s = a * unit < n ? a * unit : n;
    *e = b * unit < n ? b * unit : n;
}

/* Quantize tokens [t0, t1) of x into dst (tok_bytes apart). */
static void quantize_tokens(const mm_job *j, int64_t t0, int64_t t1, uint8_t *dst) {
    for (int64_t t = t0; t < t1; t++) {
        const float *xt = j->x + t * j->n_in;
        void *out = dst + (size_t)(t - t0) * j->tok_bytes;
        if (j->parts == 2) {
            void *lo = (uint8_t *)out + j->act_bytes;
            if (j->ty->act == TL_ACT_Q8) {
#if TL_HAVE_X86
                if (j->simd) { tl_act_quant_q8x2_avx2(xt, out, lo, j->n_in); continue; }
#endif
                tl_act_quant_q8x2_ref(xt, out, lo, j->n_in);
            } else {
#if TL_HAVE_X86
                if (j->simd) { tl_act_quant_q8kx2_avx2(xt, out, lo, j->n_in); continue; }
#endif
                tl_act_quant_q8kx2_ref(xt, out, lo, j->n_in);
            }
            continue;
        }
        if (j->ty->act == TL_ACT_Q8) {
#if TL_HAVE_X86
            if (j->simd) { tl_act_quant_q8_avx2(xt, out, j->n_in); continue; }
#endif
            tl_act_quant_q8_ref(xt, out, j->n_in);
        } else {
#if TL_HAVE_X86
            if (j->simd) { tl_act_quant_q8k_avx2(xt, out, j->n_in); continue; }
#endif
            tl_act_quant_q8k_ref(xt, out, j->n_in);
        }
    }
}

static tl_rowdot_fn dot_of(const mm_job *j) { return j->simd ? j->ty->dot_avx2 : j->ty->dot_ref; }

/* Rows per chunk of the row dots when several activation rows go by. */
static int64_t dot_chunk_rows(const mm_job *j) {
    int64_t chunk = (int64_t)(DOT_CHUNK_BYTES / j->row_bytes);
    return chunk < 1 ? 1 : chunk;
}

/* Rows [r0, r1) for all tokens with the row dots, a chunk of rows at a time so that the chunk
   stays in L1 while the tokens (and their parts) go by. act: token t's activations at
   act + t * stride, its lo part (parts == 2) act_bytes further; the lo products go to lo
   (dot_chunk_rows floats, the thread's own) and are added to y at once. */
static void dot_rows(const mm_job *j, int64_t r0, int64_t r1, const uint8_t *act, size_t stride,
                     float *lo) {
    tl_rowdot_fn dot = dot_of(j);
    int64_t chunk = j->n_tok * j->parts == 1 ? r1 - r0 : dot_chunk_rows(j);
    for (int64_t r = r0; r < r1; r += chunk) {
        int64_t nr = r1 - r < chunk ? r1 - r : chunk;
        for (int64_t t = 0; t < j->n_tok; t++) {
            float *y = j->y + t * j->n_out + r;
            dot(j->w + r * j->row_bytes, j->row_bytes, nr, act + t * stride, j->n_in, y);
            if (j->parts == 2) {
                dot(j->w + r * j->row_bytes, j->row_bytes, nr, act + t * stride + j->act_bytes,
                    j->n_in, lo);
                for (int64_t i = 0; i < nr; i++) y[i] += lo[i];
            }
        }
    }
}

/* Row units [a, b) (8 rows each); a thread quantizes the few tokens itself before its first. */
static void decode_part(void *arg, long a, long b, int ith, int first) {
    const mm_job *j = arg;
    int64_t r0, r1;
    unit_rows(j->n_out, 8, a, b, &r0, &r1);
    if (j->ty->act == TL_ACT_F32) {
        dot_rows(j, r0, r1, (const uint8_t *)j->x, (size_t)j->n_in * sizeof(float), NULL);
        return;
    }
    uint8_t *mine = j->per_thread + (size_t)ith * j->per_thread_bytes;
    if (first) quantize_tokens(j, 0, j->n_tok, mine);
    dot_rows(j, r0, r1, mine, j->tok_bytes, (float *)(mine + j->lo_offset));
}

static void quantize_part(void *arg, long t0, long t1, int ith, int first) {
    (void)ith, (void)first;
    const mm_job *j = arg;
    quantize_tokens(j, t0, t1, j->act + (size_t)t0 * j->tok_bytes);
#if TL_HAVE_X86
    if (j->vnni && j->ty->pack == TL_PACK_Q8)  /* both parts, side by side, in one run */
        tl_act_offset_vnni((tl_act_q8 *)(j->act + (size_t)t0 * j->tok_bytes),
                           (int64_t)(t1 - t0) * j->parts * (j->n_in / TL_QK));
#endif
}

/* The (rows x tokens) product is cut by rows when there are enough row units for every thread
   (units of `unit` rows), else by tokens (units of one token, a part per thread). */
static int by_rows(const mm_job *j, int64_t unit, int nth) {
    return row_units(j->n_out, unit) >= 2 * nth || j->n_tok < nth;
}

/* Rows [r0, r1) and tokens [t0, t1) of units [a, b) of the product, cut as by_rows says. */
static void work_of(const mm_job *j, int64_t unit, long a, long b, int64_t *r0, int64_t *r1,
                    int64_t *t0, int64_t *t1) {
    if (j->rows) {
        unit_rows(j->n_out, unit, a, b, r0, r1);
        *t0 = 0;
        *t1 = j->n_tok;
    } else {
        *r0 = 0;
        *r1 = j->n_out;
        *t0 = a;
        *t1 = b;
    }
}

/* tl_pool_for over the product cut as by_rows says (sets j->rows). */
static void for_work(tl_pool *pool, mm_job *j, int64_t unit, tl_part_fn fn) {
    int nth = tl_pool_threads(pool);
    j->rows = by_rows(j, unit, nth);
    if (j->rows) tl_pool_for(pool, fn, j, row_units(j->n_out, unit), 2 * nth);
    else tl_pool_for(pool, fn, j, (long)j->n_tok, nth);
}

#if TL_HAVE_X86
/* Rows of one packed tile: TL_PK_ROWS (AVX2) or TL_PK16_ROWS (VNNI). */
static int64_t tile_rows(const mm_job *j) { return j->vnni ? TL_PK16_ROWS : TL_PK_ROWS; }

/* Bytes of one packed tile of a row of n_in elements. */
static size_t packed_tile_bytes(const mm_job *j) {
    size_t per_8_rows = j->ty->pack == TL_PACK_K
                            ? (size_t)(j->n_in / TL_QK_K) * sizeof(tl_pack_kblk)
                            : (size_t)(j->n_in / TL_QK) * sizeof(tl_pack_blk);
    return j->vnni ? 2 * per_8_rows : per_8_rows;  /* 16-row tiles: twice the 8-row ones */
}

static int64_t pack_group_tiles(const mm_job *j) {
    int64_t g = PACK_GROUP_BYTES / (int64_t)packed_tile_bytes(j);
    return g < 1 ? 1 : g;
}

/* Pack rows [src, src + rows) (rows <= tile_rows) into one tile at dst. */
static void pack_tile(const mm_job *j, const uint8_t *src, int64_t rows, int64_t nb, uint8_t *dst) {
    int wt = j->wtype;
    if (j->vnni && j->ty->pack == TL_PACK_K)
        tl_pack_k_rows_vnni(wt, src, j->row_bytes, rows, nb, (tl_pack16_kblk *)dst);
    else if (j->vnni)
        tl_pack_rows_vnni(wt, src, j->row_bytes, rows, nb, (tl_pack16_blk *)dst);
    else if (j->ty->pack == TL_PACK_K)
        tl_pack_k_rows_avx2(wt, src, j->row_bytes, rows, nb, (tl_pack_kblk *)dst);
    else
        tl_pack_rows_avx2(wt, src, j->row_bytes, rows, nb, (tl_pack_blk *)dst);
}

/* ntiles packed tiles (nr rows) times nt tokens of one activation part. */
static void gemm_tiles(const mm_job *j, const uint8_t *pk, int64_t ntiles, int64_t nb,
                       const uint8_t *a, int64_t as, int64_t nt, float *y, int64_t ldy,
                       int64_t nr) {
    int wt = j->wtype, kind = j->ty->pack;
    if (j->vnni && kind == TL_PACK_K)
        tl_gemm_packed_k_vnni(wt, (const tl_pack16_kblk *)pk, ntiles, nb,
                              (const tl_block_q8_K *)a, as, nt, y, ldy, nr);
    else if (j->vnni)
        tl_gemm_packed_vnni(kind, (const tl_pack16_blk *)pk, ntiles, nb, (const tl_act_q8 *)a,
                            as, nt, y, ldy, nr);
    else if (kind == TL_PACK_K)
        tl_gemm_packed_k_avx2(wt, (const tl_pack_kblk *)pk, ntiles, nb,
                              (const tl_block_q8_K *)a, as, nt, y, ldy, nr);
    else
        tl_gemm_packed_avx2(kind, (const tl_pack_blk *)pk, ntiles, nb, (const tl_act_q8 *)a, as,
                            nt, y, ldy, nr);
}

/* A part: pack a group of tiles of its rows at a time, then run the group against its tokens. */
static void packed_part(void *arg, long a, long b, int ith, int first) {
    (void)first;
    const mm_job *j = arg;
    int64_t r0, r1, t0, t1, unit = tile_rows(j);
    work_of(j, unit, a, b, &r0, &r1, &t0, &t1);
    if (r0 >= r1 || t0 >= t1) return;
    int64_t nb = j->n_in / j->ty->block_elems;
    int64_t group = pack_group_tiles(j) * unit;
    uint8_t *pk = j->per_thread + (size_t)ith * j->per_thread_bytes;
    size_t tile_bytes = packed_tile_bytes(j);
    const uint8_t *act = j->act + (size_t)t0 * j->tok_bytes;
    int64_t act_stride = nb * j->parts;  /* in blocks (tl_act_q8 or tl_block_q8_K) */
    for (int64_t r = r0; r < r1; r += group) {
        int64_t nr = r1 - r < group ? r1 - r : group;
        int64_t ntiles = (nr + unit - 1) / unit;
        for (int64_t i = 0; i < ntiles; i++) {
            int64_t rows = nr - i * unit;
            pack_tile(j, j->w + (r + i * unit) * j->row_bytes, rows < unit ? rows : unit, nb,
                      pk + i * tile_bytes);
        }
        /* parts == 2: a few tokens at a time, hi into y, lo (reusing the packed group) into
           the thread's lo area [tokens][nr], then added while both are in cache. */
        int64_t tc = j->parts == 2 ? LO_TOK_CHUNK : t1 - t0;
        for (int64_t t = t0; t < t1; t += tc) {
            int64_t nt = t1 - t < tc ? t1 - t : tc;
            const uint8_t *a = act + (size_t)(t - t0) * j->tok_bytes;
            float *y = j->y + t * j->n_out + r;
            float *lo = (float *)(pk + j->lo_offset);
            for (int p = 0; p < j->parts; p++)
                gemm_tiles(j, pk, ntiles, nb, a + (size_t)p * j->act_bytes, act_stride, nt,
                           p ? lo : y, p ? nr : j->n_out, nr);
            if (j->parts == 2)
                for (int64_t k = 0; k < nt; k++)
                    for (int64_t i = 0; i < nr; i++) y[k * j->n_out + i] += lo[k * nr + i];
        }
    }
}

static void float_part(void *arg, long a, long b, int ith, int first) {
    (void)ith, (void)first;
    const mm_job *j = arg;
    int64_t r0, r1, t0, t1;
    work_of(j, FLOAT_ROW_UNIT, a, b, &r0, &r1, &t0, &t1);
    const int64_t token_block = 32;
    for (int64_t t = t0; t < t1; t += token_block) {
        int64_t nt = t1 - t < token_block ? t1 - t : token_block;
        const float *x = j->x + t * j->n_in;
        float *y = j->y + t * j->n_out + r0;
        if (j->vnni)
            tl_gemm_float_avx512(j->wtype, j->w + r0 * j->row_bytes, j->row_bytes, r1 - r0, x,
                                 j->n_in, nt, j->n_in, y, j->n_out);
        else
            tl_gemm_float_avx2(j->wtype, j->w + r0 * j->row_bytes, j->row_bytes, r1 - r0, x,
                               j->n_in, nt, j->n_in, y, j->n_out);
    }
}
#endif

/* Prompt path without a packed kernel (scalar pools, K formats): row dots, units of 8 rows. */
static void generic_part(void *arg, long a, long b, int ith, int first) {
    (void)first;
    const mm_job *j = arg;
    int64_t r0, r1;
    unit_rows(j->n_out, 8, a, b, &r0, &r1);
    if (j->ty->act == TL_ACT_F32)
        dot_rows(j, r0, r1, (const uint8_t *)j->x, (size_t)j->n_in * sizeof(float), NULL);
    else
        dot_rows(j, r0, r1, j->act, j->tok_bytes,
                 (float *)(j->per_thread + (size_t)ith * j->per_thread_bytes + j->lo_offset));
}

int tl_matmul(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y) {
    return tl_matmul_path(pool, wtype, w, n_out, n_in, x, n_tok, y, TL_PATH_AUTO);
}

int tl_matmul_path(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                   const float *x, int64_t n_tok, float *y, int path) {
    if (path == TL_PATH_PACKED) return tl_matmul_packed(pool, wtype, w, n_out, n_in, x, n_tok, y);
    const tl_type_traits *ty = tl_traits(wtype);
    if (!ty || !ty->dot_ref) return TL_ERR_TYPE;
    int precise = (path & TL_PATH_PRECISE) != 0;
    path &= ~TL_PATH_PRECISE;
    if (path < TL_PATH_AUTO || path > TL_PATH_TILED) return TL_ERR_ARG;
    if (!pool || n_out < 0 || n_in < 0 || n_tok < 0) return TL_ERR_ARG;
    if (n_in % ty->block_elems != 0) return TL_ERR_SIZE;
    if (n_tok == 0 || n_out == 0) return TL_OK;
    if (!y) return TL_ERR_ARG;
    if (n_out > INT64_MAX / n_tok || (uint64_t)(n_tok * n_out) > SIZE_MAX / sizeof(float))
        return TL_ERR_SIZE;
    if (n_in == 0) {
        memset(y, 0, (size_t)(n_tok * n_out) * sizeof(float));
        return TL_OK;
    }
    if (!w || !x) return TL_ERR_ARG;

    mm_job j = {0};
    j.ty = ty;
    j.wtype = wtype;
    j.simd = (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET && ty->dot_avx2 != NULL;
    j.w = w;
    j.row_bytes = (size_t)(n_in / ty->block_elems) * (size_t)ty->block_bytes;
    j.n_out = n_out;
    j.n_in = n_in;
    j.n_tok = n_tok;
    j.x = x;
    j.y = y;
    j.act_bytes = ty->act == TL_ACT_Q8    ? (size_t)(n_in / TL_QK) * sizeof(tl_act_q8)
                  : ty->act == TL_ACT_Q8K ? (size_t)(n_in / TL_QK_K) * sizeof(tl_block_q8_K)
                                          : 0;
    j.parts = precise && ty->act != TL_ACT_F32 ? 2 : 1;
    j.tok_bytes = (size_t)j.parts * j.act_bytes;
    /* parts == 2: each thread's area ends with room for its lo products (dot_rows' chunk) */
    size_t lo_bytes = j.parts == 2 ? round64((size_t)dot_chunk_rows(&j) * sizeof(float)) : 0;
    int nth = tl_pool_threads(pool);
    int64_t row_dot_max = j.simd ? ty->decode_max : SCALAR_DECODE_MAX_TOK;
    if (path == TL_PATH_ROW_DOTS || (path == TL_PATH_AUTO && n_tok <= row_dot_max)) {
        j.lo_offset = round64((size_t)n_tok * j.tok_bytes);
        j.per_thread_bytes = j.lo_offset + lo_bytes;
        if (j.per_thread_bytes) {
            j.per_thread = tl_pool_scratch(pool, j.per_thread_bytes * (size_t)nth);
            if (!j.per_thread) return TL_ERR_MEMORY;
        }
        tl_pool_for(pool, decode_part, &j, row_units(n_out, 8), 0);
        return TL_OK;
    }

    tl_part_fn compute = generic_part;
    int64_t tiled_unit = 0;    /* the tiled paths: rows per unit of the row-or-token cut */
#if TL_HAVE_X86
    if (j.simd && ty->pack != TL_PACK_NONE) {
        compute = packed_part;
        j.vnni = (tl_pool_features(pool) & TL_CPU_AVX512VNNI) != 0;
        j.lo_offset = round64((size_t)pack_group_tiles(&j) * packed_tile_bytes(&j));
        if (j.parts == 2)
            lo_bytes = round64((size_t)(LO_TOK_CHUNK * pack_group_tiles(&j) * tile_rows(&j)) *
                               sizeof(float));
        j.per_thread_bytes = j.lo_offset + lo_bytes;
        tiled_unit = tile_rows(&j);
    } else if (j.simd && ty->act == TL_ACT_F32) {
        compute = float_part;
        j.vnni = (tl_pool_features(pool) & TL_CPU_AVX512VNNI) != 0;
        tiled_unit = FLOAT_ROW_UNIT;
    }
#endif
    if (compute == generic_part) j.per_thread_bytes = lo_bytes;  /* lo_offset 0 */
    size_t act_total = round64((size_t)n_tok * j.tok_bytes);
    size_t total = act_total + j.per_thread_bytes * (size_t)nth;
    if (total) {
        uint8_t *scratch = tl_pool_scratch(pool, total);
        if (!scratch) return TL_ERR_MEMORY;
        j.act = scratch;
        j.per_thread = scratch + act_total;
    }
    if (ty->act != TL_ACT_F32) tl_pool_for(pool, quantize_part, &j, (long)n_tok, 0);
    if (tiled_unit) for_work(pool, &j, tiled_unit, compute);
    else tl_pool_for(pool, compute, &j, row_units(n_out, 8), 0);
    return TL_OK;
}

/* Causal grouped-query attention over an f16, Q8_0 or Q4_0 KV cache, in the online-softmax
   ("flash") form, reading the cache's own blocks (no dequantized copy is ever made).

   A token's positions are cut into chunks of CHUNK positions counted from its first attended
   position. A chunk is streamed by a range kernel (attn_ref.c, attn_avx2.c), scoring every query
   head of the group against each K row as the row is read (so a K/V row read from memory serves
   the whole group), keeping per query head a running maximum m, a running sum l of
   exp(score - m) and an accumulator of exp(score - m) * V. No score matrix beyond one tile is
   ever held. Chunk 0's (m, l, acc) is then folded with chunks 1, 2, ... in that order
   (fold_chunk) and divided out. For a block type the group's queries are first quantized to
   16 bits per 32-element block (the same bytes on every path), so a K block's score is an
   exact integer dot.

   A work unit covers one token and a run of its KV heads: all of them, so that the kernel reads
   whole cache rows front to back (measured: about 2.5x the bandwidth of reading one head's slice
   of every row), or one each when there would be too few units for the threads (short decodes).

   Batch invariance: the chunks of a token depend only on its own position and the window, each
   chunk starts from a fresh state, a head's arithmetic does not depend on which other heads
   share its unit, and the fold order is fixed, so a token's output has the same bits whatever
   else is in the batch and however many threads run. Only the schedule changes: a unit's chunks
   run in sequence, or, when whole-token units cannot keep the threads busy (decode), a unit is
   one chunk whose partial result is stored and folded by merge_partials with the same function.
   Long contexts are thus split across threads over blocks of KV positions. */
#pragma STDC FP_CONTRACT OFF /* a*b+c must round twice in every copy of the code: same bits */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "../ggml/pool.h"
#include "kv_internal.h"
#include "../ggml/types.h"

#define GMAX TL_ATTN_GMAX
#define CHUNK 256     /* positions per chunk (a multiple of TL_ATTN_TILE) */

typedef struct {
    const uint8_t *k, *v;
    int kv_type;
    int64_t n_cache;        /* rows per slot; position p is row p mod n_cache */
    int64_t row_bytes;      /* bytes of one row (kv_dim elements) */
    int64_t head_bytes;     /* bytes of one KV head's slice of a row */
    const float *q;
    float *out;
    const int32_t *slot, *pos;
    int64_t n_tok;
    int n_head, n_kv_head, head_dim, group, window;
    float scale;
    int avx2;
    int hpu;                /* KV heads per unit */
    int n_hb;               /* units per token (chunk): ceil(n_kv_head / hpu) */
    int split;              /* 1: a unit is one chunk of one token's heads; 0: all its chunks */
    const int64_t *chunk0;  /* split: first chunk (global index) of each token, n_tok + 1 */
    float *partial;         /* split: per (chunk, KV head), group x (2 + head_dim) floats */
    char *scratch;          /* per thread, scratch_bytes each */
    int64_t scratch_bytes;
    int64_t n_units;
    atomic_llong next;      /* the next unit to hand out (dynamic scheduling) */
} attn_job;

/* First cache position token t attends to (the last is pos[t]). */
static int64_t first_pos(const attn_job *J, int64_t t) {
    int64_t p = J->pos[t];
    if (J->window > 0 && p - J->window + 1 > 0) return p - J->window + 1;
    return 0;
}

/* Chunk c of a token covers positions [first + c CHUNK, first + (c + 1) CHUNK) up to its own. */
static int64_t token_chunks(const attn_job *J, int64_t t) {
    return ((int64_t)J->pos[t] - first_pos(J, t) + CHUNK) / CHUNK;
}

/* ---------------------------------------------------------------- scratch */

/* A thread's scratch for a unit of up to hpu KV heads (hu = hpu * group query heads). */
typedef struct {
    float *qs, *O, *acc, *M, *L, *m, *l, *kr, *vr, *ws;
    tl_attn_qblk *qq;
    tl_attn_group *groups;
} unit_scratch;

static int64_t align64(int64_t n) { return (n + 63) & ~(int64_t)63; }

/* Bytes of one thread's scratch, and (when base is given) its pieces. */
static int64_t carve_scratch(const attn_job *J, char *base, unit_scratch *S) {
    const int64_t hd = J->head_dim, nb = J->head_dim / TL_QK ? J->head_dim / TL_QK : 1;
    const int64_t hu = (int64_t)J->hpu * J->group, ngroups = J->hpu * ((J->group + GMAX - 1) / GMAX);
    const int64_t sizes[12] = {
        4 * hu * hd, 4 * hu * hd, 4 * hu * hd, 4 * hu, 4 * hu, 4 * hu, 4 * hu, 4 * hd, 4 * hd,
        4 * GMAX * nb * TL_ATTN_TILE, (int64_t)sizeof(tl_attn_qblk) * hu * nb,
        (int64_t)sizeof(tl_attn_group) * ngroups,
    };
    void *at[12];
    int64_t off = 0;
    for (int i = 0; i < 12; i++) {
        at[i] = base ? base + off : NULL;
        off += align64(sizes[i]);
    }
    if (base) {
        S->qs = at[0]; S->O = at[1]; S->acc = at[2]; S->M = at[3]; S->L = at[4]; S->m = at[5];
        S->l = at[6]; S->kr = at[7]; S->vr = at[8]; S->ws = at[9]; S->qq = at[10];
        S->groups = at[11];
    }
    return off;
}

/* ---------------------------------------------------------------- folding */

/* Fold one chunk's (m, l, acc) into the running state (M, L, O) of a head: every token's result
   is chunk 0's state folded with chunks 1, 2, ... in that order, by this one function, whichever
   thread computed each chunk. */
static void fold_chunk(float *M, float *L, float *O, float m, float l, const float *acc, int hd) {
    float mn = m > *M ? m : *M;
    if (mn == -INFINITY) return; /* both empty: nothing to weigh */
    float ca = expf(*M - mn), cb = expf(m - mn);
    *L = *L * ca + l * cb;
    for (int i = 0; i < hd; i++) O[i] = O[i] * ca + acc[i] * cb;
    *M = mn;
}

static void finish_head(float *out, float L, const float *O, int hd) {
    float inv = 1.0f / L;
    for (int i = 0; i < hd; i++) out[i] = O[i] * inv;
}

/* ---------------------------------------------------------------- work units */

/* x ~ d * q with |q| <= 32767 per 32-element block, rounded to nearest even (NaN -> 0). */
static void quantize_query_block(const float *x, tl_attn_qblk *out) {
    float amax = 0.0f;
    for (int i = 0; i < TL_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 32767.0f, id = amax > 0.0f ? 32767.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < TL_QK; i++) {
        float r = nearbyintf(x[i] * id);
        int16_t q = r >= -32767.0f && r <= 32767.0f ? (int16_t)r : 0;
        out->qs[i] = q;
        sum += q;
    }
    out->d = d;
    out->sum = sum;
}

/* The queries of heads [h0, h0 + hu) of token t as the cache type wants them: scaled floats, and
   for a block type their 16-bit encoding per block (one function, so the scalar and AVX2 paths
   read the same bytes). Then the unit's groups: each KV head's query heads, GMAX at a time. */
static int prepare_unit(const attn_job *J, int64_t t, int kh0, int kh1, unit_scratch *S,
                        tl_attn_q *Q) {
    const int hd = J->head_dim, nb = hd / TL_QK;
    const int64_t n = (int64_t)(kh1 - kh0) * J->group * hd;
    const float *qt = J->q + (t * J->n_head + (int64_t)kh0 * J->group) * hd;
    for (int64_t i = 0; i < n; i++) S->qs[i] = qt[i] * J->scale;
    if (J->kv_type != TL_F16)
        for (int64_t b = 0; b < n / TL_QK; b++) quantize_query_block(S->qs + b * TL_QK, &S->qq[b]);
    int ng = 0;
    for (int kh = kh0; kh < kh1; kh++) {
        for (int g0 = 0; g0 < J->group; g0 += GMAX) {
            const int64_t h = (int64_t)(kh - kh0) * J->group + g0; /* head within the unit */
            tl_attn_group *G = &S->groups[ng++];
            G->gs = J->group - g0 < GMAX ? J->group - g0 : GMAX;
            G->offset = kh * J->head_bytes;
            G->qs = S->qs + h * hd;
            G->qq = S->qq + h * nb;
            G->m = S->m + h;
            G->l = S->l + h;
            G->acc = S->acc + h * hd;
        }
    }
    *Q = (tl_attn_q){.kv_type = J->kv_type, .head_dim = hd, .stride = J->row_bytes,
                     .n_groups = ng, .groups = S->groups, .lo = kh0 * J->head_bytes,
                     .hi = kh1 * J->head_bytes, .kr = S->kr, .vr = S->vr, .ws = S->ws};
    return (kh1 - kh0) * J->group;
}

/* Chunk c of token t into the unit's fresh chunk state (m, l, acc of every head). */
static void run_chunk(const attn_job *J, int64_t t, int64_t c, const tl_attn_q *Q, int hu,
                      unit_scratch *S) {
    int64_t p0 = first_pos(J, t) + c * CHUNK, p1 = p0 + CHUNK;
    if (p1 > (int64_t)J->pos[t] + 1) p1 = (int64_t)J->pos[t] + 1;
    for (int64_t i = 0; i < (int64_t)hu * J->head_dim; i++) S->acc[i] = 0.0f;
    for (int h = 0; h < hu; h++) {
        S->m[h] = -INFINITY;
        S->l[h] = 0.0f;
    }
    /* Rows [p0, p1) mod n_cache: one run, or two where a ring wraps (the same two for the same
       positions in any batch). */
    const int64_t slot_row = (int64_t)J->slot[t] * J->n_cache;
    while (p0 < p1) {
        int64_t r = p0 % J->n_cache, n = p1 - p0;
        if (n > J->n_cache - r) n = J->n_cache - r;
        int64_t off = (slot_row + r) * J->row_bytes;
#if TL_HAVE_X86
        if (J->avx2) tl_attn_range_avx2(Q, J->k + off, J->v + off, n);
        else
#endif
            tl_attn_range_ref(Q, J->k + off, J->v + off, n);
        p0 += n;
    }
}

/* Unit u: a token's heads [kh0, kh1) with their chunks folded in order, or (split) one chunk of
   them, left as partial results for merge_partials. */
static void run_unit(const attn_job *J, int64_t u, char *scratch) {
    const int hd = J->head_dim;
    int64_t t, c0 = 0, ci = 0;
    const int64_t hb = u % J->n_hb, tu = u / J->n_hb; /* head block; token (or chunk) index */
    if (!J->split) {
        t = tu;
    } else {
        ci = tu;                                   /* global chunk index */
        int64_t lo = 0, hi = J->n_tok - 1;         /* the token that owns it */
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (J->chunk0[mid] <= ci) lo = mid;
            else hi = mid - 1;
        }
        t = lo;
        c0 = ci - J->chunk0[t];
    }
    const int kh0 = (int)hb * J->hpu;
    const int kh1 = kh0 + J->hpu < J->n_kv_head ? kh0 + J->hpu : J->n_kv_head;
    unit_scratch S;
    carve_scratch(J, scratch, &S);
    tl_attn_q Q;
    const int hu = prepare_unit(J, t, kh0, kh1, &S, &Q);
    const size_t state = sizeof(float) * (size_t)hu * (size_t)hd;
    if (J->split) {
        run_chunk(J, t, c0, &Q, hu, &S);
        for (int h = 0; h < hu; h++) {
            float *P = J->partial + ((ci * J->n_kv_head + kh0) * J->group + h) * (int64_t)(2 + hd);
            P[0] = S.m[h];
            P[1] = S.l[h];
            memcpy(P + 2, S.acc + (int64_t)h * hd, sizeof(float) * (size_t)hd);
        }
        return;
    }
    const int64_t n_chunks = token_chunks(J, t);
    run_chunk(J, t, 0, &Q, hu, &S);
    memcpy(S.M, S.m, sizeof(float) * (size_t)hu);
    memcpy(S.L, S.l, sizeof(float) * (size_t)hu);
    memcpy(S.O, S.acc, state);
    for (int64_t c = 1; c < n_chunks; c++) {
        run_chunk(J, t, c, &Q, hu, &S);
        for (int h = 0; h < hu; h++)
            fold_chunk(&S.M[h], &S.L[h], S.O + (int64_t)h * hd, S.m[h], S.l[h],
                       S.acc + (int64_t)h * hd, hd);
    }
    float *out = J->out + (t * J->n_head + (int64_t)kh0 * J->group) * hd;
    for (int h = 0; h < hu; h++)
        finish_head(out + (int64_t)h * hd, S.L[h], S.O + (int64_t)h * hd, hd);
}

static void attn_worker(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *J = arg;
    char *scr = J->scratch + ith * J->scratch_bytes;
    for (;;) {
        int64_t u = atomic_fetch_add_explicit(&J->next, 1, memory_order_relaxed);
        if (u >= J->n_units) break;
        /* Whole tokens go latest first: the longest units start first and the tail stays short. */
        run_unit(J, J->split ? u : J->n_units - 1 - u, scr);
    }
}

/* Fold the partial results of every split token's chunks, in chunk order, into out. */
static void merge_partials(const attn_job *J) {
    const int hd = J->head_dim;
    const int64_t stride = 2 + hd, heads = (int64_t)J->n_kv_head * J->group;
    for (int64_t t = 0; t < J->n_tok; t++) {
        const int64_t c0 = J->chunk0[t], n_chunks = J->chunk0[t + 1] - c0;
        for (int64_t h = 0; h < heads; h++) {
            float *o = J->out + (t * J->n_head + h) * hd;
            const float *P = J->partial + (c0 * heads + h) * stride;
            float M = P[0], L = P[1];
            memcpy(o, P + 2, sizeof(float) * (size_t)hd); /* o holds O until the end */
            for (int64_t c = 1; c < n_chunks; c++) {
                P = J->partial + ((c0 + c) * heads + h) * stride;
                fold_chunk(&M, &L, o, P[0], P[1], P + 2, hd);
            }
            finish_head(o, L, o, hd);
        }
    }
}

/* ---------------------------------------------------------------- entry point */

int tl_attention(tl_pool *pool, int kv_type, const void *k_cache, const void *v_cache,
                 int64_t n_cache, const float *q, int64_t n_tok, const int32_t *slot,
                 const int32_t *pos, int n_head, int n_kv_head, int head_dim, float scale,
                 int window, float *out) {
    if (!pool || n_cache <= 0 || n_tok < 0 || n_head <= 0 || n_kv_head <= 0 || head_dim <= 0 ||
        n_head % n_kv_head != 0 || window < 0 || window > n_cache || !isfinite(scale))
        return TL_ERR_ARG;
    int64_t kv_dim = (int64_t)n_kv_head * head_dim;
    int64_t row;
    int status = tl_kv_row_bytes(kv_type, kv_dim, &row);
    if (status != TL_OK) return status;
    if (head_dim % tl_traits(kv_type)->block_elems != 0) return TL_ERR_SIZE; /* whole blocks */
    if (n_tok == 0) return TL_OK;
    if (!k_cache || !v_cache || !q || !slot || !pos || !out) return TL_ERR_ARG;
    int64_t lmax = 0, lsum = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        if (slot[t] < 0 || pos[t] < 0 || (window == 0 && pos[t] >= n_cache)) return TL_ERR_ARG;
        int64_t len = pos[t] + 1;
        if (window > 0 && len > window) len = window;
        if (len > lmax) lmax = len;
        lsum += len;
    }

    attn_job J;
    J.k = k_cache;
    J.v = v_cache;
    J.kv_type = kv_type;
    J.n_cache = n_cache;
    J.row_bytes = row;
    J.head_bytes = row / n_kv_head;
    J.q = q;
    J.out = out;
    J.slot = slot;
    J.pos = pos;
    J.n_tok = n_tok;
    J.n_head = n_head;
    J.n_kv_head = n_kv_head;
    J.head_dim = head_dim;
    J.group = n_head / n_kv_head;
    J.window = window;
    J.scale = scale;
    J.avx2 = TL_HAVE_X86 && head_dim % 8 == 0 &&
             (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET;
    atomic_init(&J.next, 0);

    /* Split into one unit per chunk when whole-token units cannot keep every thread busy: too
       few of them, or one so long that it alone outlasts an even share of the work. Tokens of one
       chunk gain nothing from splitting. Units take all of a token's KV heads, unless that
       leaves fewer units than threads. */
    int nth = tl_pool_threads(pool);
    J.split = nth > 1 && lmax > CHUNK && (n_tok < 4 * (int64_t)nth || 2 * lmax * nth > lsum);
    int64_t n_chunks = 0;
    if (J.split)
        for (int64_t t = 0; t < n_tok; t++) n_chunks += token_chunks(&J, t);
    J.hpu = (J.split ? n_chunks : n_tok) >= nth ? n_kv_head : 1;
    J.n_hb = (n_kv_head + J.hpu - 1) / J.hpu;
    J.n_units = (J.split ? n_chunks : n_tok) * J.n_hb;

    /* Scratch: per thread the queries, states, converted rows and tile weights; when split, the
       chunk table and the partial results. */
    int64_t per_thread = carve_scratch(&J, NULL, NULL);
    int64_t table_bytes = 0, partial_bytes = 0;
    if (J.split) {
        table_bytes = align64((n_tok + 1) * 8);
        partial_bytes = align64(4 * n_chunks * n_head * (int64_t)(2 + head_dim));
    }
    size_t bytes = (size_t)(table_bytes + partial_bytes + per_thread * nth);
    char *mem = tl_pool_scratch(pool, bytes);
    if (!mem) return TL_ERR_MEMORY;
    J.scratch = mem + table_bytes + partial_bytes;
    J.scratch_bytes = per_thread;
    J.chunk0 = NULL;
    J.partial = NULL;
    if (J.split) {
        int64_t *chunk0 = (int64_t *)mem;
        chunk0[0] = 0;
        for (int64_t t = 0; t < n_tok; t++) chunk0[t + 1] = chunk0[t] + token_chunks(&J, t);
        J.chunk0 = chunk0;
        J.partial = (float *)(mem + table_bytes);
    }

    if (nth > 1 && J.n_units > 1) tl_pool_run(pool, attn_worker, &J);
    else attn_worker(&J, 0, 1);
    if (J.split) merge_partials(&J);
    return TL_OK;
}

/* Causal grouped-query attention over an f16 KV cache, in the online-softmax ("flash") form.

   A token's positions are cut into chunks of CHUNK positions counted from its first attended
   position. A chunk is streamed in tiles of TILE rows, scoring every query head of the group
   against each K row as the row is read (so a K/V row read from memory serves the whole group),
   keeping per query head a running maximum m, a running sum l of exp(score - m) and an
   accumulator of exp(score - m) * V. No score matrix beyond one tile is ever held. Chunk 0's
   (m, l, acc) is then folded with chunks 1, 2, ... in that order (fold_chunk) and divided out.

   Batch invariance: the chunks of a token depend only on its own position and the window, each
   chunk starts from a fresh state, and the fold order is fixed, so a token's output has the same
   bits whatever else is in the batch and however many threads run. Only the schedule changes:
   a work unit is a whole (token, KV head), its chunks run in sequence, or, when those units
   cannot keep the threads busy (decode), one chunk whose partial result is stored and folded
   by merge_partials with the same function. */
#pragma STDC FP_CONTRACT OFF /* a*b+c must round twice in every copy of the code: same bits */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "../ggml/vmath.h"
#include "attn.h"
#include "kv_internal.h"

#define GMAX 4        /* query heads scored together against one K row */
#define TILE 32       /* positions scored before one online-softmax step */
#define CHUNK 256     /* positions per chunk (a multiple of TILE) */

typedef struct {
    const uint16_t *k, *v;
    int64_t n_cache, kv_dim; /* rows per slot; position p is row p mod n_cache */
    const float *q;
    float *out;
    const int32_t *slot, *pos;
    int64_t n_tok;
    int n_head, n_kv_head, head_dim, group, window;
    float scale;
    int avx2;
    int split;              /* 1: a unit is one chunk of one (token, KV head); 0: all its chunks */
    const int64_t *unit0;   /* split: first unit of each token, n_tok + 1 entries */
    float *partial;         /* split: per unit, group x (2 + head_dim) floats: m, l, acc */
    float *scratch;         /* per thread, scratch_floats each */
    int64_t scratch_floats;
    int64_t n_units;
    atomic_llong next;      /* the next unit to hand out (dynamic scheduling) */
} attn_job;

/* First cache position token t attends to (the last is pos[t]). */
static int64_t first_pos(const attn_job *J, int64_t t) {
    int64_t p = J->pos[t];
    if (J->window > 0 && p - J->window + 1 > 0) return p - J->window + 1;
    return 0;
}

/* ---------------------------------------------------------------- scalar reference */

/* One position at a time: score each head, rescale its state when the maximum grows, add the
   weighted V row. k and v point at the first row; rows are `stride` elements apart. */
static void range_ref(const float *qs, const uint16_t *k, const uint16_t *v, int64_t stride,
                      int64_t n, int hd, int gs, float *m, float *l, float *acc, float *kr,
                      float *vr) {
    for (int64_t j = 0; j < n; j++) {
        for (int i = 0; i < hd; i++) kr[i] = tl_half_to_float(k[j * stride + i]);
        for (int i = 0; i < hd; i++) vr[i] = tl_half_to_float(v[j * stride + i]);
        for (int g = 0; g < gs; g++) {
            const float *qg = qs + (int64_t)g * hd;
            float *a = acc + (int64_t)g * hd;
            float s = 0.0f;
            for (int i = 0; i < hd; i++) s += qg[i] * kr[i];
            if (s > m[g]) {
                float c = m[g] == -INFINITY ? 0.0f : expf(m[g] - s);
                l[g] *= c;
                for (int i = 0; i < hd; i++) a[i] *= c;
                m[g] = s;
            }
            float p = expf(s - m[g]);
            l[g] += p;
            for (int i = 0; i < hd; i++) a[i] += p * vr[i];
        }
    }
}

/* ---------------------------------------------------------------- AVX2 */

#if TL_HAVE_X86
TL_AVX2_BEGIN

static inline __m256 load_h8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The 8 lane sums of v[0..7], as one vector. */
static inline __m256 sum8x8(const __m256 *v) {
    __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    /* a: low half sums the low 4 lanes of v0..v3, high half their high 4 lanes; b for v4..v7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* gs is a compile-time constant at every call site, so the per-head arrays of vectors below
   live in registers. hd is a multiple of 8. */
static inline __attribute__((always_inline)) void range_avx2_g(
    const float *qs, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n, int hd,
    const int gs, float *m, float *l, float *acc) {
    _Alignas(32) float s[GMAX][TILE];
    float corr[GMAX];
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t p0 = 0; p0 < n; p0 += TILE) {
        const int nt = n - p0 < TILE ? (int)(n - p0) : TILE;
        const uint16_t *kt = k + p0 * stride, *vt = v + p0 * stride;

        /* Scores, two K rows at a time for independent FMA chains; the dot-product vectors of
           8 rows are summed across lanes together (sum8x8) rather than one by one. */
        for (int j8 = 0; j8 < nt; j8 += 8) {
            const int jn = nt - j8 < 8 ? nt - j8 : 8;
            __m256 D[GMAX][8];
            for (int jj = 0; jj < jn; jj += 2) {
                const uint16_t *k0 = kt + (j8 + jj) * stride;
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

        /* Online softmax step: new maximum, rescale factor, weights exp(s - m) in place. */
        const int nv = (nt + 7) & ~7;
        for (int g = 0; g < gs; g++) {
            for (int i = nt; i < nv; i++) s[g][i] = -INFINITY;
            __m256 mx = ninf;
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

        /* acc = acc * corr + sum_j w_j V_j, 16 columns at a time for independent chains. */
        int c = 0;
        for (; c + 16 <= hd; c += 16) {
            __m256 a0[GMAX], a1[GMAX];
            for (int g = 0; g < gs; g++) {
                __m256 cv = _mm256_set1_ps(corr[g]);
                a0[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c), cv);
                a1[g] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + c + 8), cv);
            }
            for (int jj = 0; jj < nt; jj++) {
                const uint16_t *vr = vt + jj * stride + c;
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
                __m256 x0 = load_h8(vt + jj * stride + c);
                for (int g = 0; g < gs; g++)
                    a0[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(&s[g][jj]), x0, a0[g]);
            }
            for (int g = 0; g < gs; g++) _mm256_storeu_ps(acc + g * hd + c, a0[g]);
        }
    }
}

static void range_avx2(const float *qs, const uint16_t *k, const uint16_t *v, int64_t stride,
                       int64_t n, int hd, int gs, float *m, float *l, float *acc) {
    switch (gs) {
    case 1: range_avx2_g(qs, k, v, stride, n, hd, 1, m, l, acc); break;
    case 2: range_avx2_g(qs, k, v, stride, n, hd, 2, m, l, acc); break;
    case 3: range_avx2_g(qs, k, v, stride, n, hd, 3, m, l, acc); break;
    default: range_avx2_g(qs, k, v, stride, n, hd, 4, m, l, acc); break;
    }
}

TL_AVX2_END
#endif

/* ---------------------------------------------------------------- work units */

/* Chunk c of a token covers positions [first + c CHUNK, first + (c + 1) CHUNK) up to its own. */
static int64_t token_chunks(const attn_job *J, int64_t t) {
    return ((int64_t)J->pos[t] - first_pos(J, t) + CHUNK) / CHUNK;
}

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

/* One chunk of one token for gs query heads from qs (already scaled): fresh (m, l, acc). */
static void run_chunk(const attn_job *J, int64_t t, int64_t kh, int64_t c, const float *qs,
                      int gs, float *m, float *l, float *acc, float *kr, float *vr) {
    const int hd = J->head_dim;
    int64_t p0 = first_pos(J, t) + c * CHUNK, p1 = p0 + CHUNK;
    if (p1 > (int64_t)J->pos[t] + 1) p1 = (int64_t)J->pos[t] + 1;
    for (int64_t i = 0; i < (int64_t)gs * hd; i++) acc[i] = 0.0f;
    for (int g = 0; g < gs; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    /* Rows [p0, p1) mod n_cache: one run, or two where a ring wraps (the same two for the same
       positions in any batch). */
    const int64_t slot_row = (int64_t)J->slot[t] * J->n_cache;
    while (p0 < p1) {
        int64_t r = p0 % J->n_cache, n = p1 - p0;
        if (n > J->n_cache - r) n = J->n_cache - r;
        int64_t row0 = (slot_row + r) * J->kv_dim + kh * hd;
        const uint16_t *kb = J->k + row0, *vb = J->v + row0;
#if TL_HAVE_X86
        if (J->avx2) range_avx2(qs, kb, vb, J->kv_dim, n, hd, gs, m, l, acc);
        else
#endif
            range_ref(qs, kb, vb, J->kv_dim, n, hd, gs, m, l, acc, kr, vr);
        p0 += n;
    }
}

/* Unit u: a whole (token, KV head) with its chunks folded in order, or (split) one chunk of one,
   left as a partial result for merge_partials. */
static void run_unit(const attn_job *J, int64_t u, float *scr) {
    const int hd = J->head_dim, group = J->group;
    int64_t t, kh, c0, c1;
    if (!J->split) {
        t = u / J->n_kv_head;
        kh = u % J->n_kv_head;
        c0 = 0;
        c1 = token_chunks(J, t);
    } else {
        int64_t lo = 0, hi = J->n_tok - 1; /* the token whose units hold u */
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (J->unit0[mid] <= u) lo = mid;
            else hi = mid - 1;
        }
        t = lo;
        int64_t r = u - J->unit0[t];
        kh = r % J->n_kv_head;
        c0 = r / J->n_kv_head;
        c1 = c0 + 1;
    }
    float *qs = scr, *O = qs + GMAX * hd, *acc = O + GMAX * hd, *kr = acc + GMAX * hd;
    float *vr = kr + hd;
    for (int h0 = 0; h0 < group; h0 += GMAX) {
        const int gs = group - h0 < GMAX ? group - h0 : GMAX;
        const int64_t h = kh * group + h0;
        const float *qt = J->q + (t * J->n_head + h) * hd;
        for (int64_t i = 0; i < (int64_t)gs * hd; i++) qs[i] = qt[i] * J->scale;
        float M[GMAX], L[GMAX], m[GMAX], l[GMAX];
        if (J->split) {
            run_chunk(J, t, kh, c0, qs, gs, m, l, acc, kr, vr);
            for (int g = 0; g < gs; g++) {
                float *P = J->partial + (u * group + h0 + g) * (int64_t)(2 + hd);
                P[0] = m[g];
                P[1] = l[g];
                memcpy(P + 2, acc + (int64_t)g * hd, sizeof(float) * (size_t)hd);
            }
            continue;
        }
        run_chunk(J, t, kh, 0, qs, gs, M, L, O, kr, vr);
        for (int64_t c = 1; c < c1; c++) {
            run_chunk(J, t, kh, c, qs, gs, m, l, acc, kr, vr);
            for (int g = 0; g < gs; g++)
                fold_chunk(&M[g], &L[g], O + (int64_t)g * hd, m[g], l[g], acc + (int64_t)g * hd,
                           hd);
        }
        for (int g = 0; g < gs; g++)
            finish_head(J->out + (t * J->n_head + h + g) * hd, L[g], O + (int64_t)g * hd, hd);
    }
}

static void attn_worker(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *J = arg;
    float *scr = J->scratch + ith * J->scratch_floats;
    for (;;) {
        int64_t u = atomic_fetch_add_explicit(&J->next, 1, memory_order_relaxed);
        if (u >= J->n_units) break;
        /* Whole tokens go latest first: the longest units start first and the tail stays short. */
        run_unit(J, J->split ? u : J->n_units - 1 - u, scr);
    }
}

/* Fold the partial results of every split token's chunks, in chunk order, into out. */
static void merge_partials(const attn_job *J) {
    const int hd = J->head_dim, group = J->group;
    const int64_t stride = 2 + hd;
    for (int64_t t = 0; t < J->n_tok; t++) {
        int64_t n_chunks = (J->unit0[t + 1] - J->unit0[t]) / J->n_kv_head;
        for (int64_t kh = 0; kh < J->n_kv_head; kh++) {
            for (int g = 0; g < group; g++) {
                float *o = J->out + (t * J->n_head + kh * group + g) * hd;
                const float *P = J->partial + ((J->unit0[t] + kh) * group + g) * stride;
                float M = P[0], L = P[1];
                memcpy(o, P + 2, sizeof(float) * (size_t)hd); /* o holds O until the end */
                for (int64_t c = 1; c < n_chunks; c++) {
                    P = J->partial + ((J->unit0[t] + c * J->n_kv_head + kh) * group + g) * stride;
                    fold_chunk(&M, &L, o, P[0], P[1], P + 2, hd);
                }
                finish_head(o, L, o, hd);
            }
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
    int64_t row = tl_kv_row_bytes(kv_type, kv_dim);
    if (row < 0) return (int)-row;
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
    J.n_cache = n_cache;
    J.kv_dim = kv_dim;
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

    /* Split into one unit per chunk when whole (token, KV head) units cannot keep every thread
       busy: too few of them, or one so long that it alone outlasts an even share of the work.
       Tokens of one chunk gain nothing from splitting. */
    int nth = tl_pool_threads(pool);
    int64_t base_units = n_tok * n_kv_head;
    J.split = nth > 1 && lmax > CHUNK && (base_units < 4 * (int64_t)nth || 2 * lmax * nth > lsum);

    /* Scratch: per thread the scaled queries, two accumulators and two converted rows; when
       split, the unit table and the partial results. */
    int64_t per_thread = ((int64_t)(3 * GMAX + 2) * head_dim + 15) & ~(int64_t)15;
    int64_t table_bytes = 0, partial_floats = 0;
    if (J.split) {
        J.n_units = 0;
        for (int64_t t = 0; t < n_tok; t++) J.n_units += token_chunks(&J, t) * n_kv_head;
        table_bytes = ((n_tok + 1) * 8 + 63) & ~(int64_t)63;
        partial_floats = (J.n_units * J.group * (int64_t)(2 + head_dim) + 15) & ~(int64_t)15;
    } else {
        J.n_units = base_units;
    }
    size_t bytes = (size_t)table_bytes + 4 * (size_t)(partial_floats + per_thread * nth);
    char *mem = tl_pool_scratch(pool, bytes);
    if (!mem) return TL_ERR_MEMORY;
    J.scratch = (float *)(mem + table_bytes + 4 * partial_floats);
    J.scratch_floats = per_thread;
    J.unit0 = NULL;
    J.partial = NULL;
    if (J.split) {
        int64_t *unit0 = (int64_t *)mem;
        unit0[0] = 0;
        for (int64_t t = 0; t < n_tok; t++)
            unit0[t + 1] = unit0[t] + token_chunks(&J, t) * n_kv_head;
        J.unit0 = unit0;
        J.partial = (float *)(mem + table_bytes);
    }

    if (nth > 1 && J.n_units > 1) tl_pool_run(pool, attn_worker, &J);
    else attn_worker(&J, 0, 1);
    if (J.split) merge_partials(&J);
    return TL_OK;
}

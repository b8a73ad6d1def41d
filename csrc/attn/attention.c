/* Causal grouped-query attention over an f16 KV cache, in the online-softmax ("flash") form.

   A work unit is one token, one KV head and a run of cache positions. It streams over those
   positions in tiles of TILE rows, scoring every query head of the group against each K row as
   the row is read (so a K/V row read from memory serves the whole group), and keeps per query
   head a running maximum m, a running sum l of exp(score - m) and an accumulator of
   exp(score - m) * V. No score matrix beyond one tile is ever held.

   When the (token, KV head) pairs cannot be shared evenly by the threads (decode), each
   token's positions are split into chunks; every chunk leaves its (m, l, acc) as a partial
   result and the partials are merged at the end: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "../ggml/vmath.h"
#include "attn.h"
#include "kv_internal.h"

#define GMAX 4        /* query heads scored together against one K row */
#define TILE 32       /* positions scored before one online-softmax step */
#define SPLIT_MIN 64  /* fewest positions in a unit of a split token */

typedef struct {
    const uint16_t *k, *v;
    int64_t n_ctx, kv_dim;
    const float *q;
    float *out;
    const int32_t *slot, *pos;
    int64_t n_tok;
    int n_head, n_kv_head, head_dim, group, window;
    float scale;
    int avx2;
    int64_t chunk;          /* positions per unit when split; 0: a unit is a whole token */
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

static void run_unit(const attn_job *J, int64_t u, float *scr) {
    const int hd = J->head_dim, group = J->group;
    int64_t t, kh, p0, p1;
    if (J->chunk == 0) {
        t = u / J->n_kv_head;
        kh = u % J->n_kv_head;
        p0 = first_pos(J, t);
        p1 = (int64_t)J->pos[t] + 1;
    } else {
        t = 0;
        while (J->unit0[t + 1] <= u) t++;
        int64_t r = u - J->unit0[t];
        kh = r % J->n_kv_head;
        p0 = first_pos(J, t) + (r / J->n_kv_head) * J->chunk;
        p1 = p0 + J->chunk;
        if (p1 > (int64_t)J->pos[t] + 1) p1 = (int64_t)J->pos[t] + 1;
    }
    int64_t row0 = ((int64_t)J->slot[t] * J->n_ctx + p0) * J->kv_dim + kh * hd;
    const uint16_t *kb = J->k + row0, *vb = J->v + row0;
    float *qs = scr, *acc = scr + GMAX * hd, *kr = acc + GMAX * hd, *vr = kr + hd;
    for (int h0 = 0; h0 < group; h0 += GMAX) {
        const int gs = group - h0 < GMAX ? group - h0 : GMAX;
        const int64_t h = kh * group + h0;
        const float *qt = J->q + (t * J->n_head + h) * hd;
        float m[GMAX], l[GMAX];
        for (int64_t i = 0; i < (int64_t)gs * hd; i++) {
            qs[i] = qt[i] * J->scale;
            acc[i] = 0.0f;
        }
        for (int g = 0; g < gs; g++) {
            m[g] = -INFINITY;
            l[g] = 0.0f;
        }
#if TL_HAVE_X86
        if (J->avx2) range_avx2(qs, kb, vb, J->kv_dim, p1 - p0, hd, gs, m, l, acc);
        else
#endif
            range_ref(qs, kb, vb, J->kv_dim, p1 - p0, hd, gs, m, l, acc, kr, vr);
        for (int g = 0; g < gs; g++) {
            const float *a = acc + (int64_t)g * hd;
            if (J->chunk == 0) {
                float *o = J->out + (t * J->n_head + h + g) * hd;
                float inv = 1.0f / l[g];
                for (int i = 0; i < hd; i++) o[i] = a[i] * inv;
            } else {
                float *P = J->partial + (u * group + h0 + g) * (int64_t)(2 + hd);
                P[0] = m[g];
                P[1] = l[g];
                for (int i = 0; i < hd; i++) P[2 + i] = a[i];
            }
        }
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
        run_unit(J, J->chunk == 0 ? J->n_units - 1 - u : u, scr);
    }
}

/* Combine the chunks of every split token into out. */
static void merge_partials(const attn_job *J) {
    const int hd = J->head_dim, group = J->group;
    for (int64_t t = 0; t < J->n_tok; t++) {
        int64_t n_chunks = (J->unit0[t + 1] - J->unit0[t]) / J->n_kv_head;
        for (int64_t kh = 0; kh < J->n_kv_head; kh++) {
            for (int g = 0; g < group; g++) {
                float *o = J->out + (t * J->n_head + kh * group + g) * hd;
                float mx = -INFINITY, sum = 0.0f;
                for (int64_t c = 0; c < n_chunks; c++) {
                    int64_t u = J->unit0[t] + c * J->n_kv_head + kh;
                    float mc = J->partial[(u * group + g) * (int64_t)(2 + hd)];
                    if (mc > mx) mx = mc;
                }
                for (int i = 0; i < hd; i++) o[i] = 0.0f;
                for (int64_t c = 0; c < n_chunks; c++) {
                    int64_t u = J->unit0[t] + c * J->n_kv_head + kh;
                    const float *P = J->partial + (u * group + g) * (int64_t)(2 + hd);
                    float w = expf(P[0] - mx);
                    sum += w * P[1];
                    for (int i = 0; i < hd; i++) o[i] += w * P[2 + i];
                }
                float inv = 1.0f / sum;
                for (int i = 0; i < hd; i++) o[i] *= inv;
            }
        }
    }
}

/* ---------------------------------------------------------------- entry point */

int tl_attention(tl_pool *pool, int kv_type, const void *k_cache, const void *v_cache,
                 int64_t n_ctx, const float *q, int64_t n_tok, const int32_t *slot,
                 const int32_t *pos, int n_head, int n_kv_head, int head_dim, float scale,
                 int window, float *out) {
    if (!pool || n_ctx <= 0 || n_tok < 0 || n_head <= 0 || n_kv_head <= 0 || head_dim <= 0 ||
        n_head % n_kv_head != 0 || window < 0 || !isfinite(scale))
        return TL_ERR_ARG;
    int64_t kv_dim = (int64_t)n_kv_head * head_dim;
    int64_t row = tl_kv_row_bytes(kv_type, kv_dim);
    if (row < 0) return (int)-row;
    if (n_tok == 0) return TL_OK;
    if (!k_cache || !v_cache || !q || !slot || !pos || !out) return TL_ERR_ARG;
    int64_t lmax = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        if (slot[t] < 0 || pos[t] < 0 || pos[t] >= n_ctx) return TL_ERR_ARG;
        int64_t len = pos[t] + 1;
        if (window > 0 && len > window) len = window;
        if (len > lmax) lmax = len;
    }

    attn_job J;
    J.k = k_cache;
    J.v = v_cache;
    J.n_ctx = n_ctx;
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

    /* Split tokens into chunks of positions when whole (token, KV head) units cannot keep every
       thread equally busy: the fewest chunks that make the unit count a multiple of the thread
       count (each unit and the merge cost a little, so more units only add overhead). */
    int nth = tl_pool_threads(pool);
    int64_t base_units = n_tok * n_kv_head;
    J.chunk = 0;
    if (nth > 1 && base_units < 4 * (int64_t)nth) {
        int64_t a = base_units, b = nth;
        while (b) { int64_t r = a % b; a = b; b = r; }
        int64_t n_chunks = nth / a;
        int64_t chunk = (lmax + n_chunks - 1) / n_chunks;
        chunk = (chunk + TILE - 1) / TILE * TILE;
        if (chunk < SPLIT_MIN) chunk = SPLIT_MIN;
        if (chunk < lmax) J.chunk = chunk;
    }

    /* Scratch: per thread the scaled queries, accumulators and two converted rows; when split,
       the unit table and the partial results. */
    int64_t per_thread = ((int64_t)(2 * GMAX + 2) * head_dim + 15) & ~(int64_t)15;
    int64_t table_bytes = 0, partial_floats = 0;
    if (J.chunk) {
        J.n_units = 0;
        for (int64_t t = 0; t < n_tok; t++) {
            int64_t len = pos[t] - first_pos(&J, t) + 1;
            J.n_units += (len + J.chunk - 1) / J.chunk * n_kv_head;
        }
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
    if (J.chunk) {
        int64_t *unit0 = (int64_t *)mem;
        unit0[0] = 0;
        for (int64_t t = 0; t < n_tok; t++) {
            int64_t len = pos[t] - first_pos(&J, t) + 1;
            unit0[t + 1] = unit0[t] + (len + J.chunk - 1) / J.chunk * n_kv_head;
        }
        J.unit0 = unit0;
        J.partial = (float *)(mem + table_bytes);
    }

    if (nth > 1 && J.n_units > 1) tl_pool_run(pool, attn_worker, &J);
    else attn_worker(&J, 0, 1);
    if (J.chunk) merge_partials(&J);
    return TL_OK;
}

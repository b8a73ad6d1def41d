/* KV cache storage: one layer's keys (or values) are [n_slots][n_cache] rows of kv_dim elements of
   the cache type: F16, or the GGML block types Q8_0 and Q4_0, whose rows are whole numbers of
   32-element blocks (the GGUF tensor layout), quantized by GGML's reference encoders as each
   token's row is stored. A layer with a sliding window may keep fewer rows than the context (a
   ring: position p in row p mod n_cache). */
#include <stdint.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "kv_internal.h"
#include "../ggml/types.h"

int tl_kv_row_bytes(int kv_type, int64_t kv_dim, int64_t *bytes) {
    const tl_type_traits *ty = tl_traits(kv_type);
    if (!ty || !ty->kv_cache) return TL_ERR_TYPE;
    if (kv_dim <= 0 || kv_dim > INT64_MAX / 2) return TL_ERR_ARG;
    if (kv_dim % ty->block_elems != 0) return TL_ERR_SIZE;
    *bytes = kv_dim / ty->block_elems * ty->block_bytes;
    return TL_OK;
}

int tl_kv_bytes(int kv_type, int64_t n_slots, int64_t n_cache, int64_t kv_dim, int64_t *bytes) {
    if (!bytes) return TL_ERR_ARG;
    int64_t row;
    int status = tl_kv_row_bytes(kv_type, kv_dim, &row);
    if (status != TL_OK) return status;
    if (n_slots < 0 || n_cache < 0) return TL_ERR_ARG;
    if (n_slots == 0 || n_cache == 0) {
        *bytes = 0;
        return TL_OK;
    }
    if (n_cache > INT64_MAX / row / n_slots) return TL_ERR_SIZE;
    *bytes = n_slots * n_cache * row;
    return TL_OK;
}

#if TL_HAVE_X86
#include <immintrin.h>

TL_AVX2_BEGIN
/* F16 rows with F16C: vcvtps2ph rounds to nearest even, overflows to infinity and keeps a NaN a
   quiet NaN with the top of its payload, the bits tl_float_to_half gives (test_kv_store). */
static void store_f16_f16c(tl_half *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = tl_float_to_half(src[i]);
}
TL_AVX2_END
#endif

/* The type's encoder (GGML's reference encodings for the block types, rounding for F16; F16
   through F16C where the pool has AVX2: the same bits, a tenth of the time). */
static void store_row(const tl_type_traits *ty, int f16c, void *dst, const float *src,
                      int64_t n) {
#if TL_HAVE_X86
    if (f16c) { store_f16_f16c(dst, src, n); return; }
#else
    (void)f16c;
#endif
    ty->quant(src, dst, n / ty->block_elems);
}

/* Every (slot, pos) is checked before anything is written: a bad token leaves the cache as it was.
   Slots are not bounded here (the header carries no n_slots): the caller owns that bound. */
int tl_kv_store(tl_pool *pool, int kv_type, void *k_cache, void *v_cache, int64_t n_cache,
                int64_t kv_dim,
                const float *k, const float *v, int64_t n_tok, const int32_t *slot,
                const int32_t *pos, int window) {
    int64_t row;
    int status = tl_kv_row_bytes(kv_type, kv_dim, &row);
    if (status != TL_OK) return status;
    if (n_cache <= 0 || n_tok < 0 || window < 0 || window > n_cache) return TL_ERR_ARG;
    if (!pool) return TL_ERR_ARG;
    if (n_tok == 0) return TL_OK;
    if (!k_cache || !v_cache || !k || !v || !slot || !pos) return TL_ERR_ARG;
    for (int64_t t = 0; t < n_tok; t++)
        if (slot[t] < 0 || pos[t] < 0 || (window == 0 && pos[t] >= n_cache)) return TL_ERR_ARG;
    const tl_type_traits *ty = tl_traits(kv_type);
    int f16c = kv_type == TL_F16 && (tl_pool_features(pool) & TL_CPU_AVX2_SET) == TL_CPU_AVX2_SET;
    for (int64_t t = 0; t < n_tok; t++) {
        int64_t r = (int64_t)slot[t] * n_cache + pos[t] % n_cache;
        store_row(ty, f16c, (char *)k_cache + r * row, k + t * kv_dim, kv_dim);
        store_row(ty, f16c, (char *)v_cache + r * row, v + t * kv_dim, kv_dim);
    }
    return TL_OK;
}

/* Private to csrc/attn: the cache layout shared by the store and attention code, and the
   interface between attention's work units (attention.c) and its range kernels (attn_ref.c,
   attn_avx2.c). */
#ifndef TL_KV_INTERNAL_H
#define TL_KV_INTERNAL_H

#include <stdint.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"

#define TL_ATTN_GMAX 4    /* query heads scored together against one K row */
#define TL_ATTN_TILE 32   /* positions scored before one online-softmax step (AVX2) */

/* Bytes of one cache row of kv_dim elements of kv_type (a type the table marks kv_cache) into
   *bytes; TL_ERR_TYPE for another type, TL_ERR_SIZE when a block type's row is not a whole
   number of blocks, TL_ERR_ARG for kv_dim <= 0. */
int tl_kv_row_bytes(int kv_type, int64_t kv_dim, int64_t *bytes);

/* A query block for the block-type keys: x[i] ~ d * qs[i], |qs| <= 32767 (16-bit, so the
   query adds about 1e-5 to the error of the cache's own quantization), and sum = sum(qs), which
   Q4_0's offset (quants stored as n + 8) needs. */
typedef struct {
    float d;
    int32_t sum;
    int16_t qs[TL_QK];
} tl_attn_qblk;

/* One group of gs <= TL_ATTN_GMAX query heads sharing a KV head, and its online-softmax state:
   running maximum m, running sum l of exp(score - m), accumulator acc ([gs][head_dim]) of
   exp(score - m) * V. f16 keys are dotted with the float queries qs (already multiplied by the
   score scale), block keys (Q8_0, Q4_0) with qq, the queries quantized per 32-element block
   (the same bytes on every path), so that a block's score is an exact integer dot. */
typedef struct {
    int gs;
    int64_t offset;            /* bytes from the start of a row to the group's KV head */
    const float *qs;           /* [gs][head_dim] */
    const tl_attn_qblk *qq;    /* [gs][head_dim / 32] (block types only) */
    float *m, *l, *acc;
} tl_attn_group;

/* What a range kernel streams rows into: the groups of one work unit (one or more KV heads of
   one token). Scratch: kr and vr one converted row each (scalar path), ws the per-block
   attention weights of a tile (AVX2 path). */
typedef struct {
    int kv_type;
    int head_dim;
    int64_t stride;            /* bytes between consecutive rows of the cache (one row) */
    int n_groups;
    const tl_attn_group *groups;
    int64_t lo, hi;            /* bytes [lo, hi) of a row that the groups read */
    float *kr, *vr;            /* head_dim floats each */
    float *ws;                 /* [TL_ATTN_GMAX][head_dim / 32][TL_ATTN_TILE] */
} tl_attn_q;

/* Stream n consecutive rows (k and v point at the start of the first) into every group's
   state, whole rows at a time so the cache is read front to back. */
void tl_attn_range_ref(const tl_attn_q *Q, const uint8_t *k, const uint8_t *v, int64_t n);
#if TL_HAVE_X86
void tl_attn_range_avx2(const tl_attn_q *Q, const uint8_t *k, const uint8_t *v, int64_t n);
#endif

#endif

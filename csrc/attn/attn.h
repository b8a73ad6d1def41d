/* KV cache storage and causal grouped-query attention in the online-softmax form. */
#ifndef TL_ATTN_H
#define TL_ATTN_H

#include <stdint.h>

#include "../ggml/pool.h"

/* @cdef-begin */
/* The KV cache of one layer is two arrays, keys and values, each [n_slots][n_cache] rows of
   kv_dim = n_kv_head * head_dim elements of kv_type: TL_F16, TL_Q8_0 or TL_Q4_0, a block type's
   row being kv_dim / 32 GGML blocks (TL_ERR_SIZE if kv_dim is not a multiple of 32; attention
   over a block type also needs head_dim to be one). Without a window (window = 0) position p is row p and n_cache is the
   context. A layer with a sliding window (window > 0) may keep fewer rows: position p is row
   p mod n_cache, a ring, and n_cache >= window. Bytes of one such array, or a negative tl_status: */
int64_t tl_kv_bytes(int kv_type, int64_t n_slots, int64_t n_cache, int64_t kv_dim);

/* Write k and v ([n_tok][kv_dim] f32) of token t into the cache at (slot[t], pos[t]), rounded
   to f16 or quantized (GGML's reference encoding of Q8_0 / Q4_0) as the row is stored. */
int tl_kv_store(int kv_type, void *k_cache, void *v_cache, int64_t n_cache, int64_t kv_dim,
                const float *k, const float *v, int64_t n_tok, const int32_t *slot,
                const int32_t *pos, int window);

/* out[t] = softmax(scale * q[t] . K^T) V for every head, token t attending to cache positions
   p' <= pos[t] of slot[t] (and pos[t] - p' < window when window > 0). Query head h reads KV head
   h / (n_head / n_kv_head). q and out are [n_tok][n_head * head_dim] f32. The cache must already
   hold the keys and values of every position attended to: with a ring (window > 0, n_cache rows)
   a call's tokens must not have overwritten positions another of its tokens attends to, so a
   batch of n tokens of one sequence needs n_cache >= window + n - 1. pos[t] is the last position
   token t sees: its own position for causal attention, the sequence's last for bidirectional.
   Block-type keys are read as blocks and dotted with the queries quantized to int8 per block;
   values are read as blocks too: no dequantized copy of the cache is made. */
int tl_attention(tl_pool *pool, int kv_type, const void *k_cache, const void *v_cache,
                 int64_t n_cache, const float *q, int64_t n_tok, const int32_t *slot,
                 const int32_t *pos, int n_head, int n_kv_head, int head_dim, float scale,
                 int window, float *out);
/* @cdef-end */

#endif

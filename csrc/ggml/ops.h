/* Element-wise and row-wise operations of a transformer layer (norms, rope, activations). */
#ifndef TL_OPS_H
#define TL_OPS_H

#include <stdint.h>

#include "pool.h"

/* @cdef-begin */
/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w  (w may be NULL: no weight), rows of n floats.
   y may equal x. */
int tl_rmsnorm(tl_pool *pool, const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
               float eps);
/* y[r] = (x[r] - mean(x[r])) / sqrt(var(x[r]) + eps) * w + b (w, b may be NULL), rows of n
   floats; y may equal x. */
int tl_layernorm(tl_pool *pool, const float *x, const float *w, const float *b, float *y,
                 int64_t n_rows, int64_t n, float eps);
/* Rotary position embedding, in place, on x [n_tok][n_heads][head_dim]; the first n_rot dims of
   each head rotate by pos[t] * freq_scale * base^(-2i/n_rot) / factors[i] (factors: NULL, or
   n_rot/2 positive floats, as LongRoPE's per-frequency factors), and the rotated dims are then
   scaled by mscale > 0 (LongRoPE's attention factor multiplies cos and sin; 1 for plain RoPE).
   neox=0 rotates adjacent pairs (2i, 2i+1); neox=1 rotates (i, i + n_rot/2). */
int tl_rope(tl_pool *pool, float *x, int64_t n_tok, int n_heads, int head_dim, int n_rot,
            const int32_t *pos, float base, float freq_scale, int neox, const float *factors,
            float mscale);
/* out = silu(gate) * up, and out = gelu_tanh(gate) * up, over n floats (out may alias either). */
int tl_swiglu(tl_pool *pool, const float *gate, const float *up, float *out, int64_t n);
int tl_geglu(tl_pool *pool, const float *gate, const float *up, float *out, int64_t n);
/* out = gelu(x) = x Phi(x) with the exact normal CDF (erf), over n floats (out may alias x). */
int tl_gelu(tl_pool *pool, const float *x, float *out, int64_t n);
/* y += x; y *= s; y = cap * tanh(y / cap) (soft-capping, cap > 0), over n floats. */
void tl_add(float *y, const float *x, int64_t n);
void tl_scale(float *y, float s, int64_t n);
int tl_softcap(float *y, float cap, int64_t n);
/* y[r] += b for each of n_rows rows of n floats (a bias). */
void tl_add_rows(float *y, const float *b, int64_t n_rows, int64_t n);
/* @cdef-end */

#endif

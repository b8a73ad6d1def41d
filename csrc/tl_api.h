/* The public C API of trio-llm's kernels: every declaration Python calls through cffi, and
   nothing else. The internal headers (tl_common.h and those under csrc/ggml and csrc/attn)
   include this one and add what stays inside csrc.

   build_ext.py hands this file to cffi's cdef with its preprocessor lines (those starting with
   '#': the include guard and <stdint.h>) left out, so the rest must stay plain C that cffi can
   parse: no macros, no inline functions, array sizes written as numbers (the static_asserts in
   csrc/ggml/blocks.h tie them to the macros the kernels use). */
#ifndef TL_API_H
#define TL_API_H

#include <stdint.h>

/* ---- status codes ---- */

/* Status codes. Every tl_ function that can fail returns one (0 = success) and nothing else:
   a size, a pointer or a handle it makes goes to an out-parameter, written only on success
   (pointer results are set to NULL first). The functions that cannot fail return void or a
   plain count (tl_pool_threads, the feature queries, tl_physical_cores). */
enum tl_status {
    TL_OK = 0,
    TL_ERR_TYPE = 1,      /* unknown or unsupported tensor type */
    TL_ERR_SIZE = 2,      /* a length that is not a whole number of blocks, or out of range */
    TL_ERR_MEMORY = 3,    /* allocation failed */
    TL_ERR_ARG = 4,       /* any other invalid argument */
};

/* CPU feature bits, as reported by tl_cpu_features(). TL_CPU_AVX512VNNI: AVX512F, BW, VL and
   VNNI, with the OS saving the opmask and zmm state. */
enum tl_cpu_feature { TL_CPU_AVX2 = 1, TL_CPU_FMA = 2, TL_CPU_F16C = 4, TL_CPU_AVX512VNNI = 8 };

/* ---- GGML block formats (the bytes on disk) ---- */

typedef uint16_t tl_half;   /* IEEE 754 binary16, stored as raw bits */
typedef uint16_t tl_bf16;   /* bfloat16, stored as raw bits */

/* GGML type ids, as written in GGUF tensor infos. */
enum tl_type {
    TL_F32 = 0, TL_F16 = 1, TL_Q4_0 = 2, TL_Q4_1 = 3, TL_Q5_0 = 6, TL_Q5_1 = 7,
    TL_Q8_0 = 8, TL_Q8_1 = 9, TL_Q2_K = 10, TL_Q3_K = 11, TL_Q4_K = 12, TL_Q5_K = 13,
    TL_Q6_K = 14, TL_Q8_K = 15, TL_BF16 = 30,
};

typedef struct { tl_half d; uint8_t qs[16]; } tl_block_q4_0;
typedef struct { tl_half d; tl_half m; uint8_t qs[16]; } tl_block_q4_1;
typedef struct { tl_half d; uint8_t qh[4]; uint8_t qs[16]; } tl_block_q5_0;
typedef struct { tl_half d; tl_half m; uint8_t qh[4]; uint8_t qs[16]; } tl_block_q5_1;
typedef struct { tl_half d; int8_t qs[32]; } tl_block_q8_0;
typedef struct { tl_half d; tl_half s; int8_t qs[32]; } tl_block_q8_1;

typedef struct {
    uint8_t scales[16];   /* 4-bit scale | 4-bit min, per 16 elements */
    uint8_t qs[64];       /* 2-bit quants */
    tl_half d;            /* super-block scale for the scales */
    tl_half dmin;         /* super-block scale for the mins */
} tl_block_q2_K;

typedef struct {
    uint8_t hmask[32];    /* high bit of each 3-bit quant */
    uint8_t qs[64];       /* low 2 bits */
    uint8_t scales[12];   /* 16 6-bit scales */
    tl_half d;
} tl_block_q3_K;

typedef struct {
    tl_half d;
    tl_half dmin;
    uint8_t scales[12];   /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[128];
} tl_block_q4_K;

typedef struct {
    tl_half d;
    tl_half dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} tl_block_q5_K;

typedef struct {
    uint8_t ql[128];      /* low 4 bits */
    uint8_t qh[64];       /* high 2 bits */
    int8_t scales[16];    /* 8-bit scales, per 16 elements */
    tl_half d;
} tl_block_q6_K;

typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];    /* sums of qs in groups of 16 */
} tl_block_q8_K;

/* Packing kinds of the tiled prompt kernels (TL_PATH_TILED): how a weight type's rows are
   interleaved into tiles and which kernel family multiplies them. */
enum tl_pack_kind {
    TL_PACK_NONE = -1,  /* no tiled kernels: float weights (FMA kernels), or no weight type */
    TL_PACK_Q4 = 0,     /* 32-element blocks of 4-bit unsigned quants (Q4_0, Q4_1) */
    TL_PACK_Q5 = 1,     /* 32-element blocks of 5-bit unsigned quants (Q5_0, Q5_1) */
    TL_PACK_Q8 = 2,     /* 32-element blocks of signed 8-bit quants (Q8_0) */
    TL_PACK_K = 3,      /* 256-element super-blocks of the K formats, against Q8_K activations */
};

/* The facts of one type, from the type table (csrc/ggml/types.c), for tl_type_info. */
typedef struct {
    int type;           /* enum tl_type */
    int block_elems;    /* elements per block (1 for F32, F16, BF16) */
    int block_bytes;    /* bytes per block */
    int quantize;       /* 1: tl_quantize encodes it */
    int matmul;         /* 1: tl_matmul takes it as weights */
    int pack;           /* enum tl_pack_kind of its tiled prompt kernels */
    int repack;         /* 1: tl_repack_new has a decode layout for it (TL_PATH_PACKED) */
    int kv_cache;       /* 1: a KV cache type (tl_kv_store, tl_attention) */
} tl_type_desc;

/* ---- the thread pool ---- */

typedef struct tl_pool tl_pool;

/* Pool flags. The environment variable TRIO_LLM_NO_VNNI=1 has the effect of TL_POOL_NO_VNNI on
   every pool (to compare both paths end to end on one machine). */
enum tl_pool_flag {
    TL_POOL_SCALAR = 1,   /* ignore SIMD paths: scalar reference kernels only */
    TL_POOL_NO_VNNI = 2,  /* AVX2 kernels even where the CPU has AVX-512 VNNI */
};
/* A new pool into *pool (n_threads <= 0: the number of physical cores); TL_ERR_MEMORY. */
int tl_pool_new(int n_threads, int flags, tl_pool **pool);
void tl_pool_free(tl_pool *pool);
int tl_pool_threads(const tl_pool *pool);
int tl_pool_features(const tl_pool *pool);      /* TL_CPU_* bits in use (0 when TL_POOL_SCALAR) */
int tl_cpu_features(void);                      /* TL_CPU_* bits of this CPU */
int tl_physical_cores(void);

/* ---- tensor types and quantized products (csrc/ggml) ---- */

/* The facts of a type into *out; TL_ERR_TYPE for an id that names no type. */
int tl_type_info(int type, tl_type_desc *out);
/* Bytes of a row of n elements into *bytes; TL_ERR_TYPE for an unknown type, TL_ERR_SIZE if n
   is negative, not a whole number of blocks or too large. */
int tl_row_bytes(int type, int64_t n, int64_t *bytes);

/* Decode n elements of `type` at src into floats. Returns a tl_status. */
int tl_dequantize(int type, const void *src, float *dst, int64_t n);
/* Encode n floats as `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_K). Returns a tl_status. */
int tl_quantize(int type, const float *src, void *dst, int64_t n);

/* Gather rows: out[i] = dequantized row ids[i] of a [n_rows][row_len] table. */
int tl_get_rows(int type, const void *table, int64_t row_len, int64_t n_rows,
                const int32_t *ids, int64_t n_ids, float *out);

/* y[t][o] = sum_i W[o][i] * x[t][i] for t < n_tok, o < n_out.
   W: n_out rows of n_in elements of wtype (GGML layout, rows contiguous); x: f32 [n_tok][n_in];
   y: f32 [n_tok][n_out]. Quantized weights are multiplied with int8-quantized activations; F32, F16
   and BF16 weights with f32 activations. Uses the pool's threads and SIMD level. */
int tl_matmul(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y);

/* The kernels tl_matmul may use. Each sums a row in its own order, so a token's result depends
   on the path (and TL_PATH_PRECISE) only, never on the other tokens: callers that need a token's
   bits to be the same in any batch (continuous batching) pick the path by the token's role, not
   the batch size. */
enum tl_matmul_path {
    TL_PATH_AUTO = 0,      /* row dots for a few tokens, tiled kernels for more */
    TL_PATH_ROW_DOTS = 1,  /* per-token dot products, one pass over the weights: decode */
    TL_PATH_TILED = 2,     /* register-tiled kernels over packed weight tiles: prompts (AVX2,
                              or AVX-512 VNNI where the pool has it: the same bits) */
    TL_PATH_PACKED = 3,    /* w repacked by tl_repack_new (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/
                              Q6_K): decode */
    /* Flag, OR'ed into AUTO, ROW_DOTS or TILED (not PACKED): quantized weights see ~15-bit activations instead of
       int8 (x ~ hi + lo, each int8 per block; two products through the same kernels, added),
       at up to twice the arithmetic. No effect on float weights. */
    TL_PATH_PRECISE = 16,
};
int tl_matmul_path(tl_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                   const float *x, int64_t n_tok, float *y, int path);

/* Weights repacked once (at load) for TL_PATH_PACKED: 8 rows interleaved per block, about the
   bytes of the GGML rows (the same for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q6_K, +3% for Q4_K, +2% for Q5_K;
   rows rounded up to a multiple of 8), so decode reads each weight once per step for all of its
   tokens and a token's bits do not depend on how many others share the step. w of tl_matmul_path(..., TL_PATH_PACKED) must come from tl_repack_new with the same
   wtype, n_out and n_in.
   tl_repack_bytes: size of the repacked matrix into *bytes; TL_ERR_TYPE if wtype has no
   repacked layout (tl_type_desc.repack), TL_ERR_SIZE for sizes that are not positive, not
   whole blocks or overflow.
   tl_repack_new: a 64-byte aligned copy in the repacked layout into *packed (the same errors,
   and TL_ERR_MEMORY); free it with tl_repack_free. */
int tl_repack_bytes(int wtype, int64_t n_out, int64_t n_in, int64_t *bytes);
int tl_repack_new(int wtype, const void *w, int64_t n_out, int64_t n_in, void **packed);
void tl_repack_free(void *packed);

/* ---- element-wise and row-wise operations (csrc/ggml/ops.c) ---- */

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

/* ---- KV cache and attention (csrc/attn) ---- */

/* The KV cache of one layer is two arrays, keys and values, each [n_slots][n_cache] rows of
   kv_dim = n_kv_head * head_dim elements of kv_type: TL_F16, TL_Q8_0 or TL_Q4_0, a block type's
   row being kv_dim / 32 GGML blocks (TL_ERR_SIZE if kv_dim is not a multiple of 32; attention
   over a block type also needs head_dim to be one). Without a window (window = 0) position p is row p and n_cache is the
   context. A layer with a sliding window (window > 0) may keep fewer rows: position p is row
   p mod n_cache, a ring, and n_cache >= window. Bytes of one such array into *bytes: */
int tl_kv_bytes(int kv_type, int64_t n_slots, int64_t n_cache, int64_t kv_dim, int64_t *bytes);

/* Write k and v ([n_tok][kv_dim] f32) of token t into the cache at (slot[t], pos[t]), rounded
   to f16 (with F16C where the pool has AVX2: the same bits) or quantized (GGML's reference
   encoding of Q8_0 / Q4_0) as the row is stored. */
int tl_kv_store(tl_pool *pool, int kv_type, void *k_cache, void *v_cache, int64_t n_cache,
                int64_t kv_dim,
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

/* ---- programs: recorded kernel calls, replayed in one call (csrc/program) ---- */

/* A program is a list of kernel calls recorded with their arguments: tl_prog_X(prog, ...) takes
   the arguments of tl_X and appends the call (TL_ERR_MEMORY if it cannot grow). tl_program_run
   makes the calls in order, with the recorded pointers and values, and stops at the first that
   fails: its status, with its index into *failed (-1 when all succeed). The pointers must still
   be valid when it runs; the data behind them is read then, as the kernels would read it. */
typedef struct tl_program tl_program;
int tl_program_new(tl_program **out);
void tl_program_free(tl_program *prog);
int64_t tl_program_len(const tl_program *prog);
int tl_program_run(const tl_program *prog, int64_t *failed);
int tl_prog_get_rows(tl_program *prog, int type, const void *table, int64_t row_len,
                     int64_t n_rows, const int32_t *ids, int64_t n_ids, float *out);
int tl_prog_rmsnorm(tl_program *prog, tl_pool *pool, const float *x, const float *w, float *y,
                    int64_t n_rows, int64_t n, float eps);
int tl_prog_layernorm(tl_program *prog, tl_pool *pool, const float *x, const float *w,
                      const float *b, float *y, int64_t n_rows, int64_t n, float eps);
int tl_prog_matmul_path(tl_program *prog, tl_pool *pool, int wtype, const void *w,
                        int64_t n_out, int64_t n_in, const float *x, int64_t n_tok, float *y,
                        int path);
int tl_prog_rope(tl_program *prog, tl_pool *pool, float *x, int64_t n_tok, int n_heads,
                 int head_dim, int n_rot, const int32_t *pos, float base, float freq_scale,
                 int neox, const float *factors, float mscale);
int tl_prog_swiglu(tl_program *prog, tl_pool *pool, const float *gate, const float *up,
                   float *out, int64_t n);
int tl_prog_geglu(tl_program *prog, tl_pool *pool, const float *gate, const float *up,
                  float *out, int64_t n);
int tl_prog_gelu(tl_program *prog, tl_pool *pool, const float *x, float *out, int64_t n);
int tl_prog_add(tl_program *prog, float *y, const float *x, int64_t n);
int tl_prog_scale(tl_program *prog, float *y, float s, int64_t n);
int tl_prog_softcap(tl_program *prog, float *y, float cap, int64_t n);
int tl_prog_add_rows(tl_program *prog, float *y, const float *b, int64_t n_rows, int64_t n);
int tl_prog_kv_store(tl_program *prog, tl_pool *pool, int kv_type, void *k_cache, void *v_cache,
                     int64_t n_cache, int64_t kv_dim, const float *k, const float *v,
                     int64_t n_tok, const int32_t *slot, const int32_t *pos, int window);
int tl_prog_attention(tl_program *prog, tl_pool *pool, int kv_type, const void *k_cache,
                      const void *v_cache, int64_t n_cache, const float *q, int64_t n_tok,
                      const int32_t *slot, const int32_t *pos, int n_head, int n_kv_head,
                      int head_dim, float scale, int window, float *out);

#endif

/* Programs: a recorded list of kernel calls, made again in order by one tl_program_run.

   A decode step is some hundreds of kernel calls. Made one at a time from Python, each goes
   through the interpreter and takes the GIL back when it returns, so the interpreter's share of
   a step is serial time the kernels wait for, and a server thread holding the GIL (writing a
   token to a socket) stalls the step. A program records each call once, with the arguments of
   the kernel of the same name (tl_prog_X records tl_X), and replays them all in one C call.
   Pointers are recorded, not the data behind them: replaying runs the same kernels over what
   the buffers hold now (new tokens and positions written into the same arrays), so the results
   have the bits the calls made one by one would have.

   A call is stored as its kernel id and its arguments in order, sorted by kind: pointers,
   integers and floats. The program grows by doubling, with the byte count checked. */
#include <stdlib.h>

#include "../tl_common.h"

enum prog_op {
    OP_GET_ROWS, OP_RMSNORM, OP_LAYERNORM, OP_MATMUL, OP_ROPE, OP_SWIGLU, OP_GEGLU, OP_GELU,
    OP_ADD, OP_SCALE, OP_SOFTCAP, OP_ADD_ROWS, OP_KV_STORE, OP_ATTENTION,
};

typedef struct {
    int op;
    tl_pool *pool;
    void *p[6];       /* pointer arguments, in the kernel's order */
    int64_t i[8];     /* integer arguments, in order */
    float f[3];       /* float arguments, in order */
} prog_call;

struct tl_program {
    prog_call *calls;
    int64_t n, cap;
};

int tl_program_new(tl_program **out) {
    if (!out) return TL_ERR_ARG;
    *out = calloc(1, sizeof **out);
    return *out ? TL_OK : TL_ERR_MEMORY;
}

void tl_program_free(tl_program *prog) {
    if (!prog) return;
    free(prog->calls);
    free(prog);
}

int64_t tl_program_len(const tl_program *prog) { return prog ? prog->n : 0; }

static int push(tl_program *prog, const prog_call *call) {
    if (!prog) return TL_ERR_ARG;
    if (prog->n == prog->cap) {
        int64_t cap = prog->cap ? 2 * prog->cap : 64;
        if (cap > (int64_t)(SIZE_MAX / sizeof(prog_call))) return TL_ERR_MEMORY;
        prog_call *grown = realloc(prog->calls, (size_t)cap * sizeof(prog_call));
        if (!grown) return TL_ERR_MEMORY;
        prog->calls = grown;
        prog->cap = cap;
    }
    prog->calls[prog->n++] = *call;
    return TL_OK;
}

/* The recorders: each takes its kernel's arguments after the program. Casting const away only
   stores the pointer; run() hands it back to the kernel as the type the kernel declares. */
int tl_prog_get_rows(tl_program *prog, int type, const void *table, int64_t row_len,
                     int64_t n_rows, const int32_t *ids, int64_t n_ids, float *out) {
    prog_call c = {.op = OP_GET_ROWS, .p = {(void *)table, (void *)ids, out},
                   .i = {type, row_len, n_rows, n_ids}};
    return push(prog, &c);
}

int tl_prog_rmsnorm(tl_program *prog, tl_pool *pool, const float *x, const float *w, float *y,
                    int64_t n_rows, int64_t n, float eps) {
    prog_call c = {.op = OP_RMSNORM, .pool = pool, .p = {(void *)x, (void *)w, y},
                   .i = {n_rows, n}, .f = {eps}};
    return push(prog, &c);
}

int tl_prog_layernorm(tl_program *prog, tl_pool *pool, const float *x, const float *w,
                      const float *b, float *y, int64_t n_rows, int64_t n, float eps) {
    prog_call c = {.op = OP_LAYERNORM, .pool = pool,
                   .p = {(void *)x, (void *)w, (void *)b, y}, .i = {n_rows, n}, .f = {eps}};
    return push(prog, &c);
}

int tl_prog_matmul_path(tl_program *prog, tl_pool *pool, int wtype, const void *w,
                        int64_t n_out, int64_t n_in, const float *x, int64_t n_tok, float *y,
                        int path) {
    prog_call c = {.op = OP_MATMUL, .pool = pool, .p = {(void *)w, (void *)x, y},
                   .i = {wtype, n_out, n_in, n_tok, path}};
    return push(prog, &c);
}

int tl_prog_rope(tl_program *prog, tl_pool *pool, float *x, int64_t n_tok, int n_heads,
                 int head_dim, int n_rot, const int32_t *pos, float base, float freq_scale,
                 int neox, const float *factors, float mscale) {
    prog_call c = {.op = OP_ROPE, .pool = pool, .p = {x, (void *)pos, (void *)factors},
                   .i = {n_tok, n_heads, head_dim, n_rot, neox},
                   .f = {base, freq_scale, mscale}};
    return push(prog, &c);
}

static int push_pair(tl_program *prog, int op, tl_pool *pool, const float *a, const float *b,
                     float *out, int64_t n) {
    prog_call c = {.op = op, .pool = pool, .p = {(void *)a, (void *)b, out}, .i = {n}};
    return push(prog, &c);
}

int tl_prog_swiglu(tl_program *prog, tl_pool *pool, const float *gate, const float *up,
                   float *out, int64_t n) {
    return push_pair(prog, OP_SWIGLU, pool, gate, up, out, n);
}

int tl_prog_geglu(tl_program *prog, tl_pool *pool, const float *gate, const float *up,
                  float *out, int64_t n) {
    return push_pair(prog, OP_GEGLU, pool, gate, up, out, n);
}

int tl_prog_gelu(tl_program *prog, tl_pool *pool, const float *x, float *out, int64_t n) {
    return push_pair(prog, OP_GELU, pool, x, NULL, out, n);
}

int tl_prog_add(tl_program *prog, float *y, const float *x, int64_t n) {
    return push_pair(prog, OP_ADD, NULL, x, NULL, y, n);
}

int tl_prog_scale(tl_program *prog, float *y, float s, int64_t n) {
    prog_call c = {.op = OP_SCALE, .p = {y}, .i = {n}, .f = {s}};
    return push(prog, &c);
}

int tl_prog_softcap(tl_program *prog, float *y, float cap, int64_t n) {
    prog_call c = {.op = OP_SOFTCAP, .p = {y}, .i = {n}, .f = {cap}};
    return push(prog, &c);
}

int tl_prog_add_rows(tl_program *prog, float *y, const float *b, int64_t n_rows, int64_t n) {
    prog_call c = {.op = OP_ADD_ROWS, .p = {y, (void *)b}, .i = {n_rows, n}};
    return push(prog, &c);
}

int tl_prog_kv_store(tl_program *prog, tl_pool *pool, int kv_type, void *k_cache,
                     void *v_cache, int64_t n_cache, int64_t kv_dim, const float *k,
                     const float *v, int64_t n_tok, const int32_t *slot, const int32_t *pos,
                     int window) {
    prog_call c = {.op = OP_KV_STORE, .pool = pool,
                   .p = {k_cache, v_cache, (void *)k, (void *)v, (void *)slot, (void *)pos},
                   .i = {kv_type, n_cache, kv_dim, n_tok, window}};
    return push(prog, &c);
}

int tl_prog_attention(tl_program *prog, tl_pool *pool, int kv_type, const void *k_cache,
                      const void *v_cache, int64_t n_cache, const float *q, int64_t n_tok,
                      const int32_t *slot, const int32_t *pos, int n_head, int n_kv_head,
                      int head_dim, float scale, int window, float *out) {
    prog_call c = {.op = OP_ATTENTION, .pool = pool,
                   .p = {(void *)k_cache, (void *)v_cache, (void *)q, (void *)slot, (void *)pos,
                         out},
                   .i = {kv_type, n_cache, n_tok, n_head, n_kv_head, head_dim, window},
                   .f = {scale}};
    return push(prog, &c);
}

static int run_call(const prog_call *c) {
    void *const *p = c->p;
    const int64_t *i = c->i;
    const float *f = c->f;
    switch (c->op) {
    case OP_GET_ROWS:
        return tl_get_rows((int)i[0], p[0], i[1], i[2], p[1], i[3], p[2]);
    case OP_RMSNORM:
        return tl_rmsnorm(c->pool, p[0], p[1], p[2], i[0], i[1], f[0]);
    case OP_LAYERNORM:
        return tl_layernorm(c->pool, p[0], p[1], p[2], p[3], i[0], i[1], f[0]);
    case OP_MATMUL:
        return tl_matmul_path(c->pool, (int)i[0], p[0], i[1], i[2], p[1], i[3], p[2], (int)i[4]);
    case OP_ROPE:
        return tl_rope(c->pool, p[0], i[0], (int)i[1], (int)i[2], (int)i[3], p[1], f[0], f[1],
                       (int)i[4], p[2], f[2]);
    case OP_SWIGLU:
        return tl_swiglu(c->pool, p[0], p[1], p[2], i[0]);
    case OP_GEGLU:
        return tl_geglu(c->pool, p[0], p[1], p[2], i[0]);
    case OP_GELU:
        return tl_gelu(c->pool, p[0], p[2], i[0]);
    case OP_ADD:
        tl_add(p[2], p[0], i[0]);
        return TL_OK;
    case OP_SCALE:
        tl_scale(p[0], f[0], i[0]);
        return TL_OK;
    case OP_SOFTCAP:
        return tl_softcap(p[0], f[0], i[0]);
    case OP_ADD_ROWS:
        tl_add_rows(p[0], p[1], i[0], i[1]);
        return TL_OK;
    case OP_KV_STORE:
        return tl_kv_store(c->pool, (int)i[0], p[0], p[1], i[1], i[2], p[2], p[3], i[3], p[4], p[5],
                           (int)i[4]);
    case OP_ATTENTION:
        return tl_attention(c->pool, (int)i[0], p[0], p[1], i[1], p[2], i[2], p[3], p[4],
                            (int)i[3], (int)i[4], (int)i[5], f[0], (int)i[6], p[5]);
    default:
        return TL_ERR_ARG;
    }
}

int tl_program_run(const tl_program *prog, int64_t *failed) {
    if (!prog || !failed) return TL_ERR_ARG;
    *failed = -1;
    for (int64_t k = 0; k < prog->n; k++) {
        int status = run_call(&prog->calls[k]);
        if (status != TL_OK) {
            *failed = k;
            return status;
        }
    }
    return TL_OK;
}

/* Temporary weak placeholders so the extension links while kernels are written; each is replaced
   by the real (strong) definition and this file is deleted before the work lands. */
#include "ggml/ggml.h"
#include "ggml/ops.h"
#include "attn/attn.h"
#define W __attribute__((weak))
W int tl_type_block_elems(int type) { (void)type; return 0; }
W int tl_type_block_bytes(int type) { (void)type; return 0; }
W int64_t tl_row_bytes(int type, int64_t n) { (void)type; (void)n; return -1; }
W int tl_dequantize(int t, const void *s, float *d, int64_t n) { (void)t; (void)s; (void)d; (void)n; return TL_ERR_TYPE; }
W int tl_quantize(int t, const float *s, void *d, int64_t n) { (void)t; (void)s; (void)d; (void)n; return TL_ERR_TYPE; }
W int tl_get_rows(int t, const void *tb, int64_t rl, int64_t nr, const int32_t *ids, int64_t ni, float *o) { (void)t; (void)tb; (void)rl; (void)nr; (void)ids; (void)ni; (void)o; return TL_ERR_TYPE; }
W int tl_matmul(tl_pool *p, int wt, const void *w, int64_t no, int64_t ni, const float *x, int64_t nt, float *y) { (void)p; (void)wt; (void)w; (void)no; (void)ni; (void)x; (void)nt; (void)y; return TL_ERR_TYPE; }
W int tl_rmsnorm(tl_pool *p, const float *x, const float *w, float *y, int64_t r, int64_t n, float e) { (void)p; (void)x; (void)w; (void)y; (void)r; (void)n; (void)e; return TL_ERR_ARG; }
W int tl_rope(tl_pool *p, float *x, int64_t nt, int nh, int hd, int nr, const int32_t *pos, float b, float fs, int nx) { (void)p; (void)x; (void)nt; (void)nh; (void)hd; (void)nr; (void)pos; (void)b; (void)fs; (void)nx; return TL_ERR_ARG; }
W int tl_swiglu(tl_pool *p, const float *g, const float *u, float *o, int64_t n) { (void)p; (void)g; (void)u; (void)o; (void)n; return TL_ERR_ARG; }
W int tl_geglu(tl_pool *p, const float *g, const float *u, float *o, int64_t n) { (void)p; (void)g; (void)u; (void)o; (void)n; return TL_ERR_ARG; }
W void tl_add(float *y, const float *x, int64_t n) { (void)y; (void)x; (void)n; }
W void tl_scale(float *y, float s, int64_t n) { (void)y; (void)s; (void)n; }
W int64_t tl_kv_bytes(int t, int64_t s, int64_t c, int64_t d) { (void)t; (void)s; (void)c; (void)d; return -1; }
W int tl_kv_store(int t, void *kc, void *vc, int64_t c, int64_t d, const float *k, const float *v, int64_t n, const int32_t *s, const int32_t *p) { (void)t; (void)kc; (void)vc; (void)c; (void)d; (void)k; (void)v; (void)n; (void)s; (void)p; return TL_ERR_ARG; }
W int tl_attention(tl_pool *pl, int t, const void *kc, const void *vc, int64_t c, const float *q, int64_t n, const int32_t *s, const int32_t *p, int nh, int nkv, int hd, float sc, int w, float *o) { (void)pl; (void)t; (void)kc; (void)vc; (void)c; (void)q; (void)n; (void)s; (void)p; (void)nh; (void)nkv; (void)hd; (void)sc; (void)w; (void)o; return TL_ERR_ARG; }

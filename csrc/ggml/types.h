/* Private to csrc: the one table of per-type facts, indexed by GGML type id. Everything that
   differs between block formats outside the kernels themselves is read from here: block size and
   bytes, the codecs, the row dots of tl_matmul, the tiled prompt kernels' packing kind and the
   repacked decode layout. Adding a format is one entry in types.c plus its kernels; the
   kernels are chosen once per call (per matmul, per dequantize), never per block. */
#ifndef TL_TYPES_H
#define TL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "dot.h"
#include "packed.h"
#include "quants.h"

#define TL_TYPE_COUNT 31  /* type ids 0 .. TL_BF16 */

typedef struct {
    int block_elems;          /* elements per block (1 for F32/F16/BF16); 0: no such type */
    int block_bytes;          /* bytes per block, the on-disk struct's size */
    tl_dequant_fn dequant;    /* every known type decodes */
    tl_quant_fn quant;        /* NULL: tl_quantize does not encode it */
    int kv_cache;             /* 1: a KV cache type (the attention kernels read it in place) */
    /* tl_matmul (matmul.c): */
    int act;                  /* enum tl_act_kind: how it wants its activations */
    tl_rowdot_fn dot_ref;     /* the scalar row dot; NULL: not a weight type */
    tl_rowdot_fn dot_avx2;    /* its AVX2 twin (NULL without x86) */
    int pack;                 /* enum tl_pack_kind of the tiled prompt kernels */
    int decode_max;           /* TL_PATH_AUTO: up to this many tokens take the row dots */
    /* TL_PATH_PACKED (packed.c): the repacked decode layout, rp_pack NULL when none */
    size_t rp_bytes;          /* one repacked block of TL_RP_ROWS rows */
    tl_rp_pack_fn rp_pack;
    tl_rp_tile_fn rp_ref, rp_avx2;
} tl_type_traits;

extern const tl_type_traits tl_type_table[TL_TYPE_COUNT];

/* The entry of a type id, or NULL for an id that names no type. */
static inline const tl_type_traits *tl_traits(int type) {
    if (type < 0 || type >= TL_TYPE_COUNT || tl_type_table[type].block_elems == 0) return NULL;
    return &tl_type_table[type];
}

#endif

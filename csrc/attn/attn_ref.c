/* The scalar reference of attention's range kernel, for every cache type: one position at a
   time, score each head, rescale its state when the maximum grows, add the weighted V row.

   A block type's score is the same arithmetic on every path, step for step: per block an exact
   integer dot of the 16-bit query with the stored quants, then
   score = ((float)isum_0 * dq_0) * dk_0 + ((float)isum_1 * dq_1) * dk_1 + ... from 0.0f, each
   product and sum rounded on its own, so the AVX2 twin's scores have the same bits. */
#pragma STDC FP_CONTRACT OFF
#include <math.h>
#include <stdint.h>

#include "../tl_common.h"
#include "../ggml/blocks.h"
#include "kv_internal.h"

/* A row's head slice of hd elements as floats (V rows, and f16 K rows). */
static void row_to_float(int kv_type, const uint8_t *row, int hd, float *out) {
    if (kv_type == TL_F16) {
        const uint16_t *h = (const uint16_t *)row;
        for (int i = 0; i < hd; i++) out[i] = tl_half_to_float(h[i]);
        return;
    }
    for (int b = 0; b < hd / TL_QK; b++) {
        float *o = out + b * TL_QK;
        if (kv_type == TL_Q8_0) {
            const tl_block_q8_0 *blk = (const tl_block_q8_0 *)row + b;
            float d = tl_half_to_float(blk->d);
            for (int i = 0; i < TL_QK; i++) o[i] = d * (float)blk->qs[i];
        } else {
            const tl_block_q4_0 *blk = (const tl_block_q4_0 *)row + b;
            float d = tl_half_to_float(blk->d);
            for (int i = 0; i < TL_QK / 2; i++) {
                o[i] = d * (float)((blk->qs[i] & 15) - 8);
                o[i + TL_QK / 2] = d * (float)((blk->qs[i] >> 4) - 8);
            }
        }
    }
}

/* The exact integer dot of block b of a K row with query block qq (Q4_0: quants n - 8). */
static int32_t block_isum(int kv_type, const uint8_t *row, int b, const tl_attn_qblk *qq) {
    int32_t s = 0;
    if (kv_type == TL_Q8_0) {
        const tl_block_q8_0 *blk = (const tl_block_q8_0 *)row + b;
        for (int i = 0; i < TL_QK; i++) s += (int32_t)blk->qs[i] * qq->qs[i];
        return s;
    }
    const tl_block_q4_0 *blk = (const tl_block_q4_0 *)row + b;
    for (int i = 0; i < TL_QK / 2; i++)
        s += (blk->qs[i] & 15) * qq->qs[i] + (blk->qs[i] >> 4) * qq->qs[i + TL_QK / 2];
    return s - 8 * qq->sum;
}

static float block_d(int kv_type, const uint8_t *row, int b) {
    if (kv_type == TL_Q8_0) return tl_half_to_float(((const tl_block_q8_0 *)row)[b].d);
    return tl_half_to_float(((const tl_block_q4_0 *)row)[b].d);
}

/* Score of head g of group G against one K row (krow points at the group's KV head). */
static float score_ref(const tl_attn_q *Q, const tl_attn_group *G, const uint8_t *krow, int g) {
    const int hd = Q->head_dim;
    float s = 0.0f;
    if (Q->kv_type == TL_F16) {
        const float *qg = G->qs + (int64_t)g * hd;
        for (int i = 0; i < hd; i++) s += qg[i] * Q->kr[i];
        return s;
    }
    const int nb = hd / TL_QK;
    for (int b = 0; b < nb; b++) {
        int32_t isum = block_isum(Q->kv_type, krow, b, G->qq + g * nb + b);
        float t = (float)isum * G->qq[g * nb + b].d;
        t = t * block_d(Q->kv_type, krow, b);
        s = s + t;
    }
    return s;
}

void tl_attn_range_ref(const tl_attn_q *Q, const uint8_t *k, const uint8_t *v, int64_t n) {
    const int hd = Q->head_dim;
    float *vr = Q->vr;
    for (int64_t j = 0; j < n; j++) {
        for (int gi = 0; gi < Q->n_groups; gi++) {
            const tl_attn_group *G = Q->groups + gi;
            const uint8_t *krow = k + j * Q->stride + G->offset;
            if (Q->kv_type == TL_F16) row_to_float(TL_F16, krow, hd, Q->kr);
            row_to_float(Q->kv_type, v + j * Q->stride + G->offset, hd, vr);
            for (int g = 0; g < G->gs; g++) {
                float *a = G->acc + (int64_t)g * hd, *m = G->m + g, *l = G->l + g;
                float s = score_ref(Q, G, krow, g);
                if (s > *m) {
                    float c = *m == -INFINITY ? 0.0f : expf(*m - s);
                    *l *= c;
                    for (int i = 0; i < hd; i++) a[i] *= c;
                    *m = s;
                }
                float p = expf(s - *m);
                *l += p;
                for (int i = 0; i < hd; i++) a[i] += p * vr[i];
            }
        }
    }
}

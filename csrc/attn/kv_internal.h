/* Private to csrc/attn: facts about the cache layout shared by the store and attention code. */
#ifndef TL_KV_INTERNAL_H
#define TL_KV_INTERNAL_H

#include <stdint.h>

/* Bytes of one cache row of kv_dim elements of kv_type, or a negated tl_status. */
int64_t tl_kv_row_bytes(int kv_type, int64_t kv_dim);

#endif

/* A persistent thread pool: threads are created once and reused for every parallel operation.
   The public functions (tl_pool_new, ...) are in tl_api.h; this is the part kernels use. */
#ifndef TL_POOL_H
#define TL_POOL_H

#include <stddef.h>

#include "../tl_api.h"

/* One unit of parallel work: called once on every thread, ith in [0, nth). */
typedef void (*tl_task_fn)(void *arg, int ith, int nth);


/* Run fn on every thread of the pool (the caller is thread 0) and return when all are done. */
void tl_pool_run(tl_pool *pool, tl_task_fn fn, void *arg);

/* Scratch memory owned by the pool, at least `bytes` long, 64-byte aligned; valid until the next
   call. Used for quantized activations; never shared between concurrent pool_run calls. */
void *tl_pool_scratch(tl_pool *pool, size_t bytes);

/* The half-open range [*start, *end) of n items that thread ith of nth handles. */
static inline void tl_split(long n, int ith, int nth, long *start, long *end) {
    long per = (n + nth - 1) / nth;
    long s = per * ith;
    long e = s + per;
    *start = s < n ? s : n;
    *end = e < n ? e : n;
}

#endif

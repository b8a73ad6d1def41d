/* A persistent thread pool: threads are created once and reused for every parallel operation. */
#ifndef TL_POOL_H
#define TL_POOL_H

#include <stddef.h>

typedef struct tl_pool tl_pool;

/* One unit of parallel work: called once on every thread, ith in [0, nth). */
typedef void (*tl_task_fn)(void *arg, int ith, int nth);

/* @cdef-begin */
/* Pool flags. The environment variable TRIO_LLM_NO_VNNI=1 has the effect of TL_POOL_NO_VNNI on
   every pool (to compare both paths end to end on one machine). */
enum tl_pool_flag {
    TL_POOL_SCALAR = 1,   /* ignore SIMD paths: scalar reference kernels only */
    TL_POOL_NO_VNNI = 2,  /* AVX2 kernels even where the CPU has AVX-512 VNNI */
};
tl_pool *tl_pool_new(int n_threads, int flags);  /* n_threads <= 0: number of physical cores */
void tl_pool_free(tl_pool *pool);
int tl_pool_threads(const tl_pool *pool);
int tl_pool_features(const tl_pool *pool);      /* TL_CPU_* bits in use (0 when TL_POOL_SCALAR) */
int tl_cpu_features(void);                      /* TL_CPU_* bits of this CPU */
int tl_physical_cores(void);
/* @cdef-end */

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

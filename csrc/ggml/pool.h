/* A persistent thread pool: threads are created once and reused for every parallel operation.
   The public functions (tl_pool_new, ...) are in tl_api.h; this is the part kernels use. */
#ifndef TL_POOL_H
#define TL_POOL_H

#include <stddef.h>

#include "../tl_api.h"

/* A task of tl_pool_run: called on the caller (ith 0) and on each worker that comes in time,
   ith in [0, nth) naming the thread (its scratch area). Not every ith is called: a task takes
   its work in parts from a shared counter, never a fixed share per thread. */
typedef void (*tl_task_fn)(void *arg, int ith, int nth);

/* Run fn on the caller and on the workers free to join, and return when all that joined are
   done. Prefer tl_pool_for, which hands out the parts. */
void tl_pool_run(tl_pool *pool, tl_task_fn fn, void *arg);

/* One part of a tl_pool_for loop: units [start, end) on thread ith (the index of its scratch
   area); first is 1 on a thread's first part of the loop (for per-thread set-up). */
typedef void (*tl_part_fn)(void *arg, long start, long end, int ith, int first);

#define TL_PARTS_PER_THREAD 4   /* tl_pool_for's default cut: enough parts to even out */

/* fn over units [0, n_units), cut into n_parts parts (0: TL_PARTS_PER_THREAD per thread) that
   the threads take in turn, so one the OS has descheduled leaves its share to the others. */
void tl_pool_for(tl_pool *pool, tl_part_fn fn, void *arg, long n_units, long n_parts);

/* Scratch memory owned by the pool, at least `bytes` long, 64-byte aligned; valid until the next
   call. Used for quantized activations; never shared between concurrent pool_run calls. */
void *tl_pool_scratch(tl_pool *pool, size_t bytes);

#endif

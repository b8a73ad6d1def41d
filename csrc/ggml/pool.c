/* Persistent thread pool: workers spin briefly for new work, then sleep on a condition variable. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../tl_common.h"

#if TL_HAVE_X86
#include <cpuid.h>
#include <immintrin.h>
#define TL_SPIN_PAUSE() _mm_pause()
#else
#define TL_SPIN_PAUSE() ((void)0)
#endif

#define TL_MAX_THREADS 64
#define TL_SPIN_NS 200000L      /* a worker spins this long for new work, then sleeps */

struct tl_pool {
    int n_threads;
    int features;
    pthread_t threads[TL_MAX_THREADS];
    tl_task_fn fn;
    void *arg;
    atomic_uint generation;   /* bumped once per pool_run */
    atomic_int pending;       /* workers that have not finished the current generation */
    atomic_int sleepers;
    atomic_int stop;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    void *scratch;
    size_t scratch_size;
};

typedef struct { tl_pool *pool; int ith; } worker_arg;

int tl_cpu_features(void) {
#if TL_HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return 0; /* the OS does not save YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b >> 5) & 1;
    /* AVX-512: F (leaf 7 EBX bit 16), BW (30), VL (31), VNNI (ECX bit 11); XCR0 must enable the
       opmask (bit 5) and both upper zmm states (6, 7) besides SSE and AVX (1, 2). */
    int avx512 = ((b >> 16) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    int vnni = avx512 && ((c >> 11) & 1) && (xlo & 0xe6) == 0xe6;
    return (avx2 ? TL_CPU_AVX2 : 0) | (fma ? TL_CPU_FMA : 0) | (f16c ? TL_CPU_F16C : 0) |
           (vnni ? TL_CPU_AVX512VNNI : 0);
#else
    return 0;
#endif
}

int tl_physical_cores(void) {
    /* Count distinct (physical id, core id) pairs in /proc/cpuinfo; fall back to online CPUs. */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    int cores = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        int seen[1024][2];
        int phys = -1, core = -1;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "physical id", 11) == 0) phys = atoi(strchr(line, ':') + 1);
            else if (strncmp(line, "core id", 7) == 0) {
                core = atoi(strchr(line, ':') + 1);
                int known = 0;
                for (int i = 0; i < cores; i++) known |= seen[i][0] == phys && seen[i][1] == core;
                if (!known && cores < 1024) { seen[cores][0] = phys; seen[cores][1] = core; cores++; }
            }
        }
        fclose(f);
    }
    if (cores <= 0 || cores > online) cores = (int)online;
    return cores;
}

/* An environment switch: set to anything but "" or "0". */
static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    tl_pool *pool = wa->pool;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0; /* a new pool is at generation 0: work posted before we ran is still ours */
    for (;;) {
        unsigned gen;
        unsigned spins = 0;
        long spin_until = now_ns() + TL_SPIN_NS;
        while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (atomic_load(&pool->stop)) return NULL;
            if (++spins % 16 || now_ns() < spin_until) { TL_SPIN_PAUSE(); continue; }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
            spin_until = now_ns() + TL_SPIN_NS;
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = gen;
        pool->fn(pool->arg, ith, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
}

int tl_pool_new(int n_threads, int flags, tl_pool **out) {
    if (!out) return TL_ERR_ARG;
    *out = NULL;
    if (n_threads <= 0) n_threads = tl_physical_cores();
    if (n_threads > TL_MAX_THREADS) n_threads = TL_MAX_THREADS;
    tl_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return TL_ERR_MEMORY;
    pool->n_threads = n_threads;
    int cpu = tl_cpu_features();
    pool->features = (flags & TL_POOL_SCALAR) || (cpu & TL_CPU_AVX2_SET) != TL_CPU_AVX2_SET ? 0 : cpu;
    if ((flags & TL_POOL_NO_VNNI) || env_flag("TRIO_LLM_NO_VNNI"))
        pool->features &= ~TL_CPU_AVX512VNNI;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { pool->n_threads = i; break; }
        wa->pool = pool;
        wa->ith = i;
        if (pthread_create(&pool->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            pool->n_threads = i;
            break;
        }
    }
    *out = pool;
    return TL_OK;
}

void tl_pool_free(tl_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    free(pool->scratch);
    free(pool);
}

int tl_pool_threads(const tl_pool *pool) { return pool->n_threads; }
int tl_pool_features(const tl_pool *pool) { return pool->features; }

void tl_pool_run(tl_pool *pool, tl_task_fn fn, void *arg) {
    if (pool->n_threads == 1) { fn(arg, 0, 1); return; }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    fn(arg, 0, pool->n_threads);
    /* On an oversubscribed machine a worker may be descheduled: yield now and then. */
    for (unsigned spins = 1; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
        if (spins % 1024 == 0) sched_yield();
        else TL_SPIN_PAUSE();
    }
}

void *tl_pool_scratch(tl_pool *pool, size_t bytes) {
    if (bytes <= pool->scratch_size) return pool->scratch;
    free(pool->scratch);
    size_t size = (bytes + 63) & ~(size_t)63;
    pool->scratch = aligned_alloc(64, size);
    pool->scratch_size = pool->scratch ? size : 0;
    return pool->scratch;
}

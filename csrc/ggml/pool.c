/* Persistent thread pool: workers spin briefly for new work, then sleep on a condition variable.

   A run is open to every worker that comes for it in time, not waited for by all of them: the
   caller posts the task, works on it itself, then closes the run and waits only for the workers
   that entered it. The tasks hand out their work in parts (tl_pool_for, or an atomic counter of
   their own), so a worker that the OS has descheduled -- another process, the server's event
   loop, a second model's pool on the same cores -- takes no part, and the others do its share
   instead of spinning until it runs again. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
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
    unsigned run;             /* the caller's count of runs (the current one's number) */
    _Atomic uint64_t gate;    /* run number << 32 | CLOSED | workers inside the run */
    atomic_int sleepers;
    atomic_int stop;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    void *scratch;
    size_t scratch_size;
};

#define GATE_CLOSED ((uint64_t)1 << 31)
#define GATE_INSIDE (GATE_CLOSED - 1)

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

static unsigned gate_run(uint64_t gate) { return (unsigned)(gate >> 32); }

/* Enter run `run` if it is still open (1), or not (0: closed, or already followed by another). */
static int enter_run(tl_pool *pool, unsigned run) {
    uint64_t g = atomic_load_explicit(&pool->gate, memory_order_acquire);
    while (gate_run(g) == run && !(g & GATE_CLOSED)) {
        if (atomic_compare_exchange_weak_explicit(&pool->gate, &g, g + 1, memory_order_acquire,
                                                  memory_order_acquire))
            return 1;
    }
    return 0;
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    tl_pool *pool = wa->pool;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0; /* runs are numbered from 1: a run posted before we started is still ours */
    for (;;) {
        unsigned run;
        unsigned spins = 0;
        long spin_until = now_ns() + TL_SPIN_NS;
        while ((run = gate_run(atomic_load_explicit(&pool->gate, memory_order_acquire))) == seen) {
            if (atomic_load(&pool->stop)) return NULL;
            if (++spins % 16 || now_ns() < spin_until) { TL_SPIN_PAUSE(); continue; }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while (gate_run(atomic_load(&pool->gate)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
            spin_until = now_ns() + TL_SPIN_NS;
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = run;
        if (!enter_run(pool, run)) continue;   /* too late: the others did the work */
        pool->fn(pool->arg, ith, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->gate, 1, memory_order_release);
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
    /* No worker is inside (the last run was closed and emptied): fn and arg are ours to set. */
    pool->fn = fn;
    pool->arg = arg;
    if (++pool->run == 0) pool->run = 1;   /* 0 is the workers' "seen nothing yet" */
    atomic_store(&pool->gate, (uint64_t)pool->run << 32);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    fn(arg, 0, pool->n_threads);
    /* Close the run, then wait for the workers inside it (each finishing the part it took). */
    atomic_fetch_or_explicit(&pool->gate, GATE_CLOSED, memory_order_acq_rel);
    for (unsigned spins = 1;
         atomic_load_explicit(&pool->gate, memory_order_acquire) & GATE_INSIDE; spins++) {
        if (spins % 1024 == 0) sched_yield();
        else TL_SPIN_PAUSE();
    }
}

/* tl_pool_for's units: one contiguous range per thread, taken part by part from the front. A
   thread works through its own range first (one sequential stream, as a fixed split would
   give), then takes what is left of the others': a thread that never came has its range done
   by those that did. */
typedef struct {
    atomic_long next;   /* the range's next unit */
    long end;
    char pad[64 - sizeof(atomic_long) - sizeof(long)];  /* a cache line each: no false sharing */
} for_range;

typedef struct {
    tl_part_fn fn;
    void *arg;
    long per_part;
    int n_ranges;
    for_range *ranges;
} for_job;

static void for_task(void *p, int ith, int nth) {
    (void)nth;
    const for_job *J = p;
    int first = 1;
    for (int k = 0; k < J->n_ranges; k++) {
        for_range *r = &J->ranges[(ith + k) % J->n_ranges];
        for (;;) {
            long s = atomic_fetch_add_explicit(&r->next, J->per_part, memory_order_relaxed);
            if (s >= r->end) break;
            J->fn(J->arg, s, s + J->per_part < r->end ? s + J->per_part : r->end, ith, first);
            first = 0;
        }
    }
}

void tl_pool_for(tl_pool *pool, tl_part_fn fn, void *arg, long n_units, long n_parts) {
    if (n_units <= 0) return;
    int nth = pool->n_threads;
    if (nth == 1) { fn(arg, 0, n_units, 0, 1); return; }
    if (n_parts <= 0) n_parts = (long)nth * TL_PARTS_PER_THREAD;
    if (n_parts > n_units) n_parts = n_units;
    for_range ranges[TL_MAX_THREADS];
    long per_range = (n_units + nth - 1) / nth;
    for (int i = 0; i < nth; i++) {
        long s = per_range * i, e = s + per_range;
        atomic_init(&ranges[i].next, s < n_units ? s : n_units);
        ranges[i].end = e < n_units ? e : n_units;
    }
    for_job J = {fn, arg, (n_units + n_parts - 1) / n_parts, nth, ranges};
    tl_pool_run(pool, for_task, &J);
}

void *tl_pool_scratch(tl_pool *pool, size_t bytes) {
    if (bytes <= pool->scratch_size) return pool->scratch;
    free(pool->scratch);
    size_t size = (bytes + 63) & ~(size_t)63;
    pool->scratch = aligned_alloc(64, size);
    pool->scratch_size = pool->scratch ? size : 0;
    return pool->scratch;
}

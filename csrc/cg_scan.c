/*
 * cg_scan.c -- the scan driver: blocks, threads, dispatch, scores and top-k.
 *
 * The pool is cut into blocks of rows (sized so a block decoded to f32 fits
 * in L2).  Worker threads take blocks from a shared counter (dynamic
 * scheduling: a core slowed by another process does not hold the scan up);
 * for each block a worker
 *   1. lists the block's rows, skipping rows the allow-list excludes,
 *   2. for a batch of queries on AVX2, copies those rows to a dense f32
 *      block (converting f16 / int8 exactly) that stays in L2 while every
 *      query is scored against it,
 *   3. scores every query against every listed row with one tile kernel
 *      (cg_dot.h / cg_spatial.h), and
 *   4. turns raw sums into scores (int8 scale, cosine) and either stores
 *      them (cg_scores) or offers them to its per-query bounded heaps
 *      (cg_topk).
 * After the join the per-thread heaps of each query are merged and sorted.
 *
 * Threads: opts->threads (0 = online CPUs), at most one per block and at
 * most CG_MAX_THREADS; 1 runs everything on the calling thread.  The
 * caller (cffi) has released the GIL.
 */
#include <pthread.h>
#include <stdlib.h>

#include "cg_common.h"
#include "cg_convert.h"
#include "cg_dot.h"
#include "cg_spatial.h"
#include "cg_topk.h"

#define CG_MODE_SCORES 0
#define CG_MODE_TOPK 1

/* Bytes of f32 rows per block when several queries share it (the decoded
 * copy and the rows the query groups re-read must stay in L2, 512 KiB per
 * core on Zen 3); a single query reads each row once, so its blocks are just
 * units of work (larger: fewer restarts of the prefetch). */
#define CG_BLOCK_BYTES (128 * 1024)
#define CG_BLOCK_BYTES_1Q (512 * 1024)
#define CG_BLOCK_MIN 16
#define CG_BLOCK_MAX 8192
/* More threads than this are never started (results do not depend on it). */
#define CG_MAX_THREADS 256
/* Below this many multiply-adds a call runs on one thread. */
#define CG_MIN_PARALLEL_WORK (1 << 20)
/* Copy / decode blocks to dense f32 when at least this many queries share them. */
#define CG_DECODE_MIN_QUERIES 2

typedef struct cg_job {
    const uint8_t *base;
    int64_t n, dim, dimp, stride;
    int32_t dtype, metric;
    const float *scales, *norms;
    const uint64_t *allow;
    const float *q; /* padded queries: nq rounded up to 4, dimp floats each */
    int64_t nq;
    const double *qnorm; /* cosine: query norms */
    cg_tile_fn tile;
    cg_decode_fn decode; /* non-NULL: decode rows, then run tile (an f32 kernel) */
    int64_t block, nblocks;
    int mode;
    float *out;   /* scores mode: nq x n */
    int64_t kcap; /* top-k mode: heap capacity */
    int64_t next; /* next block (atomic) */
    int err;      /* first error (atomic) */
} cg_job;

typedef struct cg_worker {
    cg_job *job;
    int64_t *idx;
    const uint8_t **rowp;
    float *rs;   /* int8 l2: row scales */
    float *dec;  /* decoded rows */
    float *tile; /* raw sums, nq x block (top-k mode) */
    float *rr;   /* cosine without precomputed norms */
    double *rn;  /* cosine: row norms */
    double *rs2; /* cosine: row scales */
    cg_heap *heaps;
    pthread_t thread;
    int started;
} cg_worker;

static cg_tile_fn cg_pick_tile(int isa, int dtype, int l2) {
#if CG_X86
    if (isa == CG_ISA_AVX2) {
        if (dtype == CG_F32) return l2 ? l2sq_f32_avx2 : dot_f32_avx2;
        if (dtype == CG_F16) return l2 ? l2sq_f16_avx2 : dot_f16_avx2;
        return l2 ? l2sq_i8_avx2 : dot_i8_avx2;
    }
#else
    (void)isa;
#endif
    if (dtype == CG_F32) return l2 ? l2sq_f32_serial : dot_f32_serial;
    if (dtype == CG_F16) return l2 ? l2sq_f16_serial : dot_f16_serial;
    return l2 ? l2sq_i8_serial : dot_i8_serial;
}

static int64_t cg_itemsize(int32_t dtype) {
    return dtype == CG_F32 ? 4 : dtype == CG_F16 ? 2 : 1;
}

static void *cg_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

/* List the rows of [r0, r1) that the allow-list lets through. */
static int64_t cg_list_rows(const cg_job *J, int64_t r0, int64_t r1, int64_t *idx) {
    int64_t m = 0;
    if (!J->allow) {
        for (int64_t r = r0; r < r1; r++) idx[m++] = r;
        return m;
    }
    for (int64_t r = r0; r < r1;) {
        const int64_t wbase = r & ~(int64_t)63;
        uint64_t word = J->allow[r >> 6] & (~0ull << (r & 63));
        if (r1 - wbase < 64) word &= (1ull << (r1 - wbase)) - 1;
        while (word) {
            idx[m++] = wbase + __builtin_ctzll(word);
            word &= word - 1;
        }
        r = wbase + 64;
    }
    return m;
}

/* Prefetch (towards L2) part [part, part + 1) of nparts of the rows of
 * block b, while the current block is being scored by a batch. */
static void cg_prefetch_block(const cg_job *J, int64_t b, int64_t part, int64_t nparts) {
    if (b >= J->nblocks) return;
    const int64_t r0 = b * J->block;
    const int64_t r1 = r0 + J->block < J->n ? r0 + J->block : J->n;
    const int64_t lo = r0 + (r1 - r0) * part / nparts, hi = r0 + (r1 - r0) * (part + 1) / nparts;
    const int64_t bytes = J->dim * (J->dtype == CG_F32 ? 4 : J->dtype == CG_F16 ? 2 : 1);
    for (int64_t r = lo; r < hi; r++) {
        if (J->allow && !((J->allow[r >> 6] >> (r & 63)) & 1)) continue;
        const char *p = (const char *)(J->base + r * J->stride);
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 2);
    }
}

static int cg_run_block(cg_worker *w, int64_t b, int64_t b_next) {
    const cg_job *J = w->job;
    const int64_t r0 = b * J->block;
    const int64_t r1 = r0 + J->block < J->n ? r0 + J->block : J->n;
    const int64_t m = cg_list_rows(J, r0, r1, w->idx);
    const int i8 = J->dtype == CG_I8;
    if (m == 0) return CG_OK;

    for (int64_t j = 0; j < m; j++) w->rowp[j] = J->base + w->idx[j] * J->stride;

    cg_tile t;
    t.rows = w->rowp;
    t.row_scale = NULL;
    if (i8 && J->metric == CG_L2) {
        for (int64_t j = 0; j < m; j++) w->rs[j] = J->scales[w->idx[j]];
        t.row_scale = w->rs;
    }
    t.nrows = m;
    t.q = J->q;
    t.q_ld = J->dimp;
    t.nq = J->nq;
    t.dim = J->dim;
    if (J->mode == CG_MODE_SCORES && !J->allow) {
        t.out = J->out + r0;
        t.out_ld = J->n;
    } else {
        t.out = w->tile;
        t.out_ld = m;
    }
    t.rr = (J->metric == CG_COS && !J->norms) ? w->rr : NULL;
    t.batch = J->nq > 1;
    if (J->decode) {
        /* A batch: the copy now sits in L2 and the queries are compute
         * bound; score them 4 at a time and meanwhile pull the next block
         * this thread will take towards L2, so the next copy does not wait
         * for DRAM. */
        J->decode(w->rowp, m, J->dim, J->dimp, w->dec);
        const int64_t ngroups = (J->nq + 3) / 4;
        float *out0 = t.out;
        const float *q0 = t.q;
        for (int64_t g = 0; g < ngroups; g++) {
            t.q = q0 + 4 * g * t.q_ld;
            t.out = out0 + 4 * g * t.out_ld;
            t.nq = J->nq - 4 * g < 4 ? J->nq - 4 * g : 4;
            if (g) t.rr = NULL;
            J->tile(&t);
            cg_prefetch_block(J, b_next, g, ngroups);
        }
        t.q = q0;
        t.out = out0;
        t.nq = J->nq;
        t.rr = (J->metric == CG_COS && !J->norms) ? w->rr : NULL;
    } else {
        J->tile(&t);
    }

    /* raw sums -> scores (in place), row factors first, then query-major */
    if (J->metric == CG_COS) {
        for (int64_t j = 0; j < m; j++) {
            const int64_t row = w->idx[j];
            const double s = i8 ? (double)J->scales[row] : 1.0;
            const double rn = J->norms ? (double)J->norms[row] : sqrt((double)t.rr[j]) * fabs(s);
            w->rs2[j] = s;
            w->rn[j] = rn;
        }
        for (int64_t qi = 0; qi < J->nq; qi++) {
            float *o = t.out + qi * t.out_ld;
            const double qn = J->qnorm[qi];
            for (int64_t j = 0; j < m; j++) {
                const double den = qn * w->rn[j];
                o[j] = (den == 0.0) ? 0.0f : (float)((double)o[j] * w->rs2[j] / den);
            }
        }
    } else if (J->metric == CG_DOT && i8) {
        for (int64_t qi = 0; qi < J->nq; qi++) {
            float *o = t.out + qi * t.out_ld;
            for (int64_t j = 0; j < m; j++) o[j] *= J->scales[w->idx[j]];
        }
    }

    if (J->mode == CG_MODE_SCORES) return CG_OK;

    const int neg = J->metric == CG_L2;
    for (int64_t qi = 0; qi < J->nq; qi++) {
        cg_heap *h = &w->heaps[qi];
        const float *o = t.out + qi * t.out_ld;
        int64_t j = 0;
        for (; j < m && h->len < h->cap; j++) { /* filling */
            float key = neg ? -o[j] : o[j];
            if (key != key) key = -INFINITY;
            if (cg_heap_push(h, key, o[j], w->idx[j]) != CG_OK) return CG_ENOMEM;
        }
        /* full: most rows of a large scan lose to the root at the first
         * comparison (a NaN key fails it too and is mapped to -inf below) */
        float thr = j < m ? h->e[0].key : 0.0f;
        for (; j < m; j++) {
            float key;
            if (neg) { /* two loops: the metric test stays out of the hot one */
                for (; j < m && -o[j] < thr; j++) {
                }
                if (j == m) break;
                key = -o[j];
            } else {
                for (; j < m && o[j] < thr; j++) {
                }
                if (j == m) break;
                key = o[j];
            }
            if (key != key) key = -INFINITY;
            if (!cg_better(key, w->idx[j], h->e[0].key, h->e[0].row)) continue;
            h->e[0].key = key;
            h->e[0].score = o[j];
            h->e[0].row = w->idx[j];
            cg_heap_sift_down(h->e, h->len, 0);
            thr = h->e[0].key;
        }
    }
    return CG_OK;
}

static void *cg_worker_main(void *arg) {
    cg_worker *w = (cg_worker *)arg;
    cg_job *J = w->job;
    /* the next block is claimed before the current one runs, so a batch can
     * prefetch it */
    int64_t b = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
    while (b < J->nblocks) {
        if (__atomic_load_n(&J->err, __ATOMIC_RELAXED)) break;
        const int64_t b_next = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
        const int rc = cg_run_block(w, b, b_next);
        b = b_next;
        if (rc != CG_OK) {
            int zero = 0;
            __atomic_compare_exchange_n(&J->err, &zero, rc, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
            break;
        }
    }
    return NULL;
}

static void cg_worker_free(cg_worker *w, int64_t nq) {
    free(w->idx);
    free(w->rowp);
    free(w->rs);
    free(w->dec);
    free(w->tile);
    free(w->rr);
    free(w->rn);
    free(w->rs2);
    if (w->heaps) {
        for (int64_t qi = 0; qi < nq; qi++) free(w->heaps[qi].e);
        free(w->heaps);
    }
}

static int cg_worker_init(cg_worker *w, cg_job *J) {
    const size_t B = (size_t)J->block;
    memset(w, 0, sizeof *w);
    w->job = J;
    w->idx = (int64_t *)malloc(B * sizeof(int64_t));
    w->rowp = (const uint8_t **)malloc(B * sizeof(*w->rowp));
    if (!w->idx || !w->rowp) return CG_ENOMEM;
    if (J->dtype == CG_I8 && J->metric == CG_L2 && !(w->rs = (float *)malloc(B * sizeof(float))))
        return CG_ENOMEM;
    if (J->decode && !(w->dec = (float *)cg_alloc(B * (size_t)J->dimp * sizeof(float))))
        return CG_ENOMEM;
    if (J->metric == CG_COS && !J->norms && !(w->rr = (float *)malloc(B * sizeof(float))))
        return CG_ENOMEM;
    if (J->metric == CG_COS && (!(w->rn = (double *)malloc(B * sizeof(double))) ||
                                !(w->rs2 = (double *)malloc(B * sizeof(double)))))
        return CG_ENOMEM;
    if (J->mode == CG_MODE_TOPK) {
        if (!(w->tile = (float *)cg_alloc(B * (size_t)J->nq * sizeof(float)))) return CG_ENOMEM;
        if (!(w->heaps = (cg_heap *)calloc((size_t)J->nq, sizeof(cg_heap)))) return CG_ENOMEM;
        for (int64_t qi = 0; qi < J->nq; qi++) w->heaps[qi].cap = J->kcap;
    }
    return CG_OK;
}

static int cg_check(const cg_pool *p, const float *queries, int64_t nq, const cg_opts *o) {
    if (!p || !o || nq < 0 || (nq > 0 && !queries)) return CG_EINVAL;
    if (p->dtype != CG_F32 && p->dtype != CG_F16 && p->dtype != CG_I8) return CG_EINVAL;
    if (o->metric != CG_DOT && o->metric != CG_COS && o->metric != CG_L2) return CG_EINVAL;
    if (p->n < 0 || p->dim < 1 || p->dim > ((int64_t)1 << 40) || o->threads < 0 || o->block_rows < 0)
        return CG_EINVAL;
    if (p->n == 0) return CG_OK;
    const int64_t rowbytes = p->dim * cg_itemsize(p->dtype);
    if (!p->data || p->stride < rowbytes) return CG_EINVAL;
    if ((uint64_t)(p->n - 1) > (UINT64_MAX - (uint64_t)rowbytes) / (uint64_t)p->stride) return CG_EINVAL;
    if (p->nbytes < (uint64_t)(p->n - 1) * (uint64_t)p->stride + (uint64_t)rowbytes) return CG_EINVAL;
    if (p->dtype == CG_I8 && !p->scales) return CG_EINVAL;
    return CG_OK;
}

static int cg_scan(const cg_pool *p, const float *queries, int64_t nq, const cg_opts *o,
                   int mode, int64_t kk, float *out, int64_t *out_rows, float *out_scores) {
    const int64_t n = p->n, dim = p->dim;
    const int32_t isa = cg_select_isa(o->caps, p->dtype, dim, o->simd_threshold);
    const int64_t dimp = (dim + 7) & ~(int64_t)7;
    const int64_t nq_pad = (nq + 3) & ~(int64_t)3;
    int rc = CG_OK;
    cg_job J;
    memset(&J, 0, sizeof J);

    /* queries: zero-padded to dimp elements and to a multiple of 4 queries */
    float *qbuf = (float *)cg_alloc((size_t)nq_pad * (size_t)dimp * sizeof(float));
    double *qnorm = (double *)malloc((size_t)(nq ? nq : 1) * sizeof(double));
    cg_worker *workers = NULL;
    if (!qbuf || !qnorm) {
        rc = CG_ENOMEM;
        goto done;
    }
    memset(qbuf, 0, (size_t)nq_pad * (size_t)dimp * sizeof(float));
    for (int64_t qi = 0; qi < nq; qi++) {
        double ss = 0.0;
        memcpy(qbuf + qi * dimp, queries + qi * dim, (size_t)dim * sizeof(float));
        for (int64_t i = 0; i < dim; i++) ss += (double)queries[qi * dim + i] * queries[qi * dim + i];
        qnorm[qi] = sqrt(ss);
    }

    J.base = (const uint8_t *)p->data;
    J.n = n;
    J.dim = dim;
    J.dimp = dimp;
    J.stride = p->stride;
    J.dtype = p->dtype;
    J.metric = o->metric;
    J.scales = p->scales;
    J.norms = o->metric == CG_COS ? p->norms : NULL;
    J.allow = o->allow;
    J.q = qbuf;
    J.nq = nq;
    J.qnorm = qnorm;
    J.mode = mode;
    J.out = out;
    J.kcap = kk;
    J.tile = cg_pick_tile(isa, p->dtype, o->metric == CG_L2);
#if CG_X86
    if (isa == CG_ISA_AVX2 && nq >= CG_DECODE_MIN_QUERIES) {
        J.decode = p->dtype == CG_F32   ? decode_f32_avx2
                   : p->dtype == CG_F16 ? decode_f16_avx2
                                        : decode_i8_avx2;
        J.tile = cg_pick_tile(isa, CG_F32, o->metric == CG_L2);
    }
#endif
    if (o->block_rows > 0) {
        J.block = o->block_rows;
    } else {
        J.block = nq == 1 ? CG_BLOCK_BYTES_1Q / (dim * cg_itemsize(p->dtype))
                          : CG_BLOCK_BYTES / (dimp * 4);
        if (J.block < CG_BLOCK_MIN) J.block = CG_BLOCK_MIN;
        if (J.block > CG_BLOCK_MAX) J.block = CG_BLOCK_MAX;
    }
    if (J.block > n) J.block = n;
    J.nblocks = (n + J.block - 1) / J.block;

    int64_t nthreads = o->threads ? o->threads : cg_online_cpus();
    if (nthreads > CG_MAX_THREADS) nthreads = CG_MAX_THREADS;
    if (nthreads > J.nblocks) nthreads = J.nblocks;
    if (o->block_rows == 0 && (double)n * (double)dim * (double)nq < (double)CG_MIN_PARALLEL_WORK)
        nthreads = 1;
    if (nthreads < 1) nthreads = 1;

    workers = (cg_worker *)calloc((size_t)nthreads, sizeof(cg_worker));
    if (!workers) {
        rc = CG_ENOMEM;
        goto done;
    }
    for (int64_t t = 0; t < nthreads; t++) {
        if ((rc = cg_worker_init(&workers[t], &J)) != CG_OK) {
            nthreads = t + 1; /* free what was allocated */
            goto done;
        }
    }
    /* worker 0 runs on this thread; a thread that cannot be created simply
     * leaves its blocks to the others */
    for (int64_t t = 1; t < nthreads; t++)
        workers[t].started =
            pthread_create(&workers[t].thread, NULL, cg_worker_main, &workers[t]) == 0;
    cg_worker_main(&workers[0]);
    for (int64_t t = 1; t < nthreads; t++)
        if (workers[t].started) pthread_join(workers[t].thread, NULL);
    rc = J.err;
    if (rc != CG_OK || mode != CG_MODE_TOPK) goto done;

    /* merge the per-thread heaps of each query, best first */
    {
        int64_t most = 0;
        for (int64_t qi = 0; qi < nq; qi++) {
            int64_t total = 0;
            for (int64_t t = 0; t < nthreads; t++) total += workers[t].heaps[qi].len;
            if (total > most) most = total;
        }
        cg_entry *all = (cg_entry *)malloc((size_t)(most ? most : 1) * sizeof(cg_entry));
        if (!all) {
            rc = CG_ENOMEM;
            goto done;
        }
        for (int64_t qi = 0; qi < nq; qi++) {
            int64_t total = 0;
            for (int64_t t = 0; t < nthreads; t++) {
                const cg_heap *h = &workers[t].heaps[qi];
                if (h->len) memcpy(all + total, h->e, (size_t)h->len * sizeof(cg_entry));
                total += h->len;
            }
            qsort(all, (size_t)total, sizeof(cg_entry), cg_entry_cmp);
            for (int64_t i = 0; i < kk; i++) {
                out_rows[qi * kk + i] = all[i].row;
                out_scores[qi * kk + i] = all[i].score;
            }
        }
        free(all);
    }

done:
    if (workers) {
        for (int64_t t = 0; t < nthreads; t++) cg_worker_free(&workers[t], nq);
        free(workers);
    }
    free(qbuf);
    free(qnorm);
    return rc;
}

int32_t cg_scores(const cg_pool *pool, const float *queries, int64_t nq, const cg_opts *opts,
                  float *out) {
    int rc = cg_check(pool, queries, nq, opts);
    if (rc != CG_OK) return rc;
    if (opts->allow) return CG_EINVAL; /* every row gets a score */
    if (pool->n == 0 || nq == 0) return CG_OK;
    if (!out) return CG_EINVAL;
    return cg_scan(pool, queries, nq, opts, CG_MODE_SCORES, 0, out, NULL, NULL);
}

int32_t cg_topk(const cg_pool *pool, const float *queries, int64_t nq, int64_t k,
                const cg_opts *opts, int64_t *out_rows, float *out_scores) {
    int rc = cg_check(pool, queries, nq, opts);
    if (rc != CG_OK) return rc;
    if (k < 1) return CG_EINVAL;
    const int64_t cand = cg_count_allowed(opts->allow, pool->n);
    const int64_t kk = k < cand ? k : cand;
    if (kk == 0 || nq == 0) return CG_OK;
    if (!out_rows || !out_scores) return CG_EINVAL;
    return cg_scan(pool, queries, nq, opts, CG_MODE_TOPK, kk, NULL, out_rows, out_scores);
}

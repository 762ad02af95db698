/*
 * cg_kernel.h -- public interface of the codegraph_store vector-scan kernel.
 *
 * Brute-force scoring of f32 queries against a pool of fixed-stride rows
 * (f32, IEEE f16, or int8 with a per-row f32 scale) and a top-k selection.
 *
 * The Python binding (codegraph_store/kernel.py) validates every argument
 * before calling in; the C side still refuses obviously bad values with
 * CG_EINVAL instead of reading out of bounds.  The cffi cdef in
 * build_kernel.py mirrors this header: keep the two in step.
 *
 * Determinism: a score does not depend on the thread count, the block size,
 * the allow-list or the other queries of a batch; every (query, row) pair is
 * computed by the same sequence of floating-point operations wherever it
 * runs.  (One query alone and a batch of several use different register
 * blockings, which sum in different orders: those agree to rounding.)  Top-k
 * ranks by (score, row index), a strict total order, so the rows returned do
 * not depend on how the scan was split among threads.
 */
#ifndef CG_KERNEL_H
#define CG_KERNEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Row element types. */
#define CG_F32 0
#define CG_F16 1
#define CG_I8 2

/* Metrics.  DOT and COS: larger is better.  L2 (squared Euclidean distance):
 * smaller is better. */
#define CG_DOT 0
#define CG_COS 1
#define CG_L2 2

/* Capability bits (cg_detect_caps, cg_opts.caps). */
#define CG_CAP_AVX2 1u
#define CG_CAP_FMA 2u
#define CG_CAP_F16C 4u

/* Kernel families chosen by cg_select_isa. */
#define CG_ISA_SERIAL 0
#define CG_ISA_AVX2 1

/* Return codes. */
#define CG_OK 0
#define CG_EINVAL (-1)
#define CG_ENOMEM (-2)

typedef struct cg_pool {
    const void *data;     /* first byte of row 0                               */
    uint64_t nbytes;      /* bytes readable from data                          */
    int64_t n;            /* rows                                              */
    int64_t dim;          /* elements per row (>= 1)                           */
    int64_t stride;       /* bytes from one row to the next (>= dim*itemsize)  */
    int32_t dtype;        /* CG_F32, CG_F16, CG_I8                             */
    const float *scales;  /* CG_I8 only: n per-row scales (value = i8 * scale) */
    const float *norms;   /* CG_COS only, optional: n precomputed row norms    */
} cg_pool;

typedef struct cg_opts {
    int32_t metric;         /* CG_DOT, CG_COS, CG_L2                           */
    int32_t threads;        /* 0 = online CPUs, 1 = run on the calling thread   */
    int32_t simd_threshold; /* dim < simd_threshold uses the serial kernels     */
    uint32_t caps;          /* CG_CAP_* bits the kernels may use                */
    int64_t block_rows;     /* rows per work block, 0 = chosen from dim         */
    const uint64_t *allow;  /* optional bitmap, bit i of word i>>6 = row i      */
} cg_opts;

/* Capabilities of this CPU (and OS), detected once. */
uint32_t cg_detect_caps(void);

/* Which kernel family a scan with these arguments uses (CG_ISA_*). */
int32_t cg_select_isa(uint32_t caps, int32_t dtype, int64_t dim, int32_t simd_threshold);

/* Number of online CPUs (>= 1). */
int32_t cg_online_cpus(void);

/* Rows i < n whose allow bit is set (n when allow is NULL). */
int64_t cg_count_allowed(const uint64_t *allow, int64_t n);

/* out[qi * n + row] = score of query qi against row, for every row.
 * queries: nq * dim floats, row-major.  opts->allow must be NULL. */
int32_t cg_scores(const cg_pool *pool, const float *queries, int64_t nq,
                  const cg_opts *opts, float *out);

/* The best min(k, allowed rows) rows for each query, best first, ties broken
 * by the lower row index.  out_rows / out_scores: nq * kk entries, row-major,
 * where kk = min(k, cg_count_allowed(opts->allow, pool->n)). */
int32_t cg_topk(const cg_pool *pool, const float *queries, int64_t nq, int64_t k,
                const cg_opts *opts, int64_t *out_rows, float *out_scores);

#ifdef __cplusplus
}
#endif

#endif /* CG_KERNEL_H */

/*
 * cg_common.h -- shared definitions of the kernel families.
 *
 * Every kernel, serial or SIMD, has the same "tile" shape (cg_tile_fn): it
 * scores a list of rows (given by pointer, so allow-listed gathers cost
 * nothing extra) against a group of queries and writes raw sums:
 *
 *     dot family  : out[qi][j] = sum_i q[qi][i] * v[j][i]
 *     l2 family   : out[qi][j] = sum_i (q[qi][i] - s[j] * v[j][i])^2
 *     rr (option) : rr[j]      = sum_i v[j][i]^2
 *
 * where v is the stored element converted to f32 exactly (f16 -> f32 and
 * int8 -> f32 are exact) and s the row's int8 scale (1 for f32 and f16).
 * The driver (cg_scan.c) turns raw sums into scores (int8 scale, cosine).
 *
 * SIMD kernels are compiled with per-function target attributes so one build
 * (without -mavx2) runs on every x86-64; they are only called when
 * cg_select_isa() says the CPU has the features.  Non-x86 builds compile the
 * serial kernels only.
 */
#ifndef CG_COMMON_H
#define CG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "cg_kernel.h"

#if defined(__x86_64__)
#define CG_X86 1
#include <immintrin.h>
/* f32 and int8 kernels need AVX2 + FMA; f16 kernels also need F16C. */
#define CG_AVX2 __attribute__((target("avx2,fma")))
#define CG_AVX2_F16 __attribute__((target("avx2,fma,f16c")))
#else
#define CG_X86 0
#endif

#define CG_INLINE static inline __attribute__((always_inline))

/* One tile of work: nrows rows against nq queries. */
typedef struct cg_tile {
    const uint8_t *const *rows; /* nrows row pointers                          */
    const float *row_scale;     /* nrows scales (int8 l2 only), else NULL      */
    int64_t nrows;
    const float *q;             /* queries, q_ld floats apart, zero-padded to
                                   a multiple of 8 elements and of 4 queries   */
    int64_t q_ld;
    int64_t nq;
    int64_t dim;
    float *out;                 /* out[qi * out_ld + j]                        */
    int64_t out_ld;
    float *rr;                  /* optional: rr[j] = sum v^2                   */
    int32_t batch;              /* use the batch kernels even when nq == 1     */
} cg_tile;

typedef void (*cg_tile_fn)(const cg_tile *t);

/* Decode nrows rows to f32 (exact), each dst row dimp floats, zero-padded;
 * the row pointers are redirected to the decoded copies. */
typedef void (*cg_decode_fn)(const uint8_t **rows, int64_t nrows, int64_t dim,
                             int64_t dimp, float *dst);

/* ---- portable IEEE half -> float ------------------------------------- */

CG_INLINE float cg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in f32 */
        f = (float)mant * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13); /* inf / nan (payload kept) */
    else
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    memcpy(&f, &bits, sizeof f);
    return f;
}

CG_INLINE uint16_t cg_load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

CG_INLINE float cg_load_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if CG_X86
/* Horizontal sum of 8 lanes in a fixed order (so every path that ends with
 * it rounds the same way). */
CG_INLINE CG_AVX2 float cg_hsum_avx2(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    hi = _mm_movehl_ps(lo, lo);
    lo = _mm_add_ps(lo, hi);
    hi = _mm_shuffle_ps(lo, lo, 1);
    lo = _mm_add_ss(lo, hi);
    return _mm_cvtss_f32(lo);
}

/* Partial last step of a row: the nt (< 8) remaining elements, converted to
 * f32 and zero-padded to 8 lanes.  Never reads past the row's last element
 * (the pool may end exactly there, e.g. at the end of an mmap). */
CG_INLINE CG_AVX2_F16 __m256 cg_tail_f16_avx2(const uint8_t *p, int64_t nt) {
    uint16_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(b, p, (size_t)nt * 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b));
}

CG_INLINE CG_AVX2 __m256 cg_tail_i8_avx2(const uint8_t *p, int64_t nt) {
    int8_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(b, p, (size_t)nt);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)b)));
}

/* Lane mask selecting the first nt (0..8) lanes. */
CG_INLINE CG_AVX2 __m256i cg_tailmask_avx2(int64_t nt) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - nt));
}
#endif

#endif /* CG_COMMON_H */

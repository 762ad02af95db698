/*
 * cg_dot.h -- dot-product family: dot_<dtype>_<isa>.
 *
 *   out[qi][j] = sum_i q[qi][i] * v[j][i]      (v: the stored element as f32)
 *   rr[j]      = sum_i v[j][i]^2               (when t->rr is set: cosine)
 *
 * Cosine is this family plus the row's squared norm (computed in the same
 * pass over the row, or taken from the precomputed norms); the driver
 * divides.  For int8 rows the driver multiplies by the row scale afterwards.
 */
#ifndef CG_DOT_H
#define CG_DOT_H

#include "cg_common.h"

/* ---- serial (portable C) ---------------------------------------------- */
/* Four accumulators in a fixed order: element i goes to accumulator i % 4,
 * the tail to accumulator 0; the result is (a0 + a1) + (a2 + a3). */

#define CG_SERIAL_DOT(NAME, LOADV)                                                   \
    static float NAME##_pair(const float *q, const uint8_t *p, int64_t dim) {        \
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;                                \
        int64_t i = 0;                                                               \
        for (; i + 4 <= dim; i += 4) {                                               \
            a0 += q[i] * LOADV(p, i);                                                \
            a1 += q[i + 1] * LOADV(p, i + 1);                                        \
            a2 += q[i + 2] * LOADV(p, i + 2);                                        \
            a3 += q[i + 3] * LOADV(p, i + 3);                                        \
        }                                                                            \
        for (; i < dim; i++) a0 += q[i] * LOADV(p, i);                               \
        return (a0 + a1) + (a2 + a3);                                                \
    }                                                                                \
    static float NAME##_sumsq(const uint8_t *p, int64_t dim) {                       \
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;                                \
        int64_t i = 0;                                                               \
        for (; i + 4 <= dim; i += 4) {                                               \
            float v0 = LOADV(p, i), v1 = LOADV(p, i + 1);                            \
            float v2 = LOADV(p, i + 2), v3 = LOADV(p, i + 3);                        \
            a0 += v0 * v0;                                                           \
            a1 += v1 * v1;                                                           \
            a2 += v2 * v2;                                                           \
            a3 += v3 * v3;                                                           \
        }                                                                            \
        for (; i < dim; i++) {                                                       \
            float v = LOADV(p, i);                                                   \
            a0 += v * v;                                                             \
        }                                                                            \
        return (a0 + a1) + (a2 + a3);                                                \
    }                                                                                \
    static void NAME(const cg_tile *t) {                                             \
        for (int64_t qi = 0; qi < t->nq; qi++) {                                     \
            const float *q = t->q + qi * t->q_ld;                                    \
            for (int64_t j = 0; j < t->nrows; j++)                                   \
                t->out[qi * t->out_ld + j] = NAME##_pair(q, t->rows[j], t->dim);     \
        }                                                                            \
        if (t->rr)                                                                   \
            for (int64_t j = 0; j < t->nrows; j++)                                   \
                t->rr[j] = NAME##_sumsq(t->rows[j], t->dim);                         \
    }

#define CG_LOADV_F32(p, i) cg_load_f32((p) + 4 * (i))
#define CG_LOADV_F16(p, i) cg_f16_to_f32(cg_load_u16((p) + 2 * (i)))
#define CG_LOADV_I8(p, i) ((float)((const int8_t *)(p))[i])

CG_SERIAL_DOT(dot_f32_serial, CG_LOADV_F32)
CG_SERIAL_DOT(dot_f16_serial, CG_LOADV_F16)
CG_SERIAL_DOT(dot_i8_serial, CG_LOADV_I8)

/* ---- AVX2 + FMA (+ F16C) ---------------------------------------------- */
#if CG_X86

#define CGT_NAME dot_f32_avx2
#define CGT_TARGET CG_AVX2
#define CGT_DT CG_F32
#define CGT_L2 0
#include "cg_tile_avx2.inc"

#define CGT_NAME dot_f16_avx2
#define CGT_TARGET CG_AVX2_F16
#define CGT_DT CG_F16
#define CGT_L2 0
#include "cg_tile_avx2.inc"

#define CGT_NAME dot_i8_avx2
#define CGT_TARGET CG_AVX2
#define CGT_DT CG_I8
#define CGT_L2 0
#include "cg_tile_avx2.inc"

#endif /* CG_X86 */

#endif /* CG_DOT_H */

/*
 * cg_spatial.h -- squared Euclidean distance family: l2sq_<dtype>_<isa>.
 *
 *   out[qi][j] = sum_i (q[qi][i] - s[j] * v[j][i])^2
 *
 * computed directly (never as |q|^2 + |v|^2 - 2 q.v, which loses all
 * precision for near neighbours).  s is the int8 row scale (t->row_scale);
 * s * v is rounded to f32 before the subtraction on every path, so the
 * decoded batch path and the direct path agree bit for bit.
 */
#ifndef CG_SPATIAL_H
#define CG_SPATIAL_H

#include "cg_common.h"
#include "cg_dot.h" /* CG_LOADV_* */

/* ---- serial (portable C) ---------------------------------------------- */

#define CG_SERIAL_L2(NAME, LOADV)                                                    \
    static float NAME##_pair(const float *q, const uint8_t *p, int64_t dim, float s, \
                             int scaled) {                                           \
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;                                \
        int64_t i = 0;                                                               \
        for (; i + 4 <= dim; i += 4) {                                               \
            float v0 = LOADV(p, i), v1 = LOADV(p, i + 1);                            \
            float v2 = LOADV(p, i + 2), v3 = LOADV(p, i + 3);                        \
            if (scaled) {                                                            \
                v0 *= s;                                                             \
                v1 *= s;                                                             \
                v2 *= s;                                                             \
                v3 *= s;                                                             \
            }                                                                        \
            float d0 = q[i] - v0, d1 = q[i + 1] - v1;                                \
            float d2 = q[i + 2] - v2, d3 = q[i + 3] - v3;                            \
            a0 += d0 * d0;                                                           \
            a1 += d1 * d1;                                                           \
            a2 += d2 * d2;                                                           \
            a3 += d3 * d3;                                                           \
        }                                                                            \
        for (; i < dim; i++) {                                                       \
            float v = LOADV(p, i);                                                   \
            if (scaled) v *= s;                                                      \
            float d = q[i] - v;                                                      \
            a0 += d * d;                                                             \
        }                                                                            \
        return (a0 + a1) + (a2 + a3);                                                \
    }                                                                                \
    static void NAME(const cg_tile *t) {                                             \
        for (int64_t qi = 0; qi < t->nq; qi++) {                                     \
            const float *q = t->q + qi * t->q_ld;                                    \
            for (int64_t j = 0; j < t->nrows; j++)                                   \
                t->out[qi * t->out_ld + j] =                                         \
                    NAME##_pair(q, t->rows[j], t->dim,                               \
                                t->row_scale ? t->row_scale[j] : 1.f,                \
                                t->row_scale != NULL);                               \
        }                                                                            \
    }

CG_SERIAL_L2(l2sq_f32_serial, CG_LOADV_F32)
CG_SERIAL_L2(l2sq_f16_serial, CG_LOADV_F16)
CG_SERIAL_L2(l2sq_i8_serial, CG_LOADV_I8)

/* ---- AVX2 + FMA (+ F16C) ---------------------------------------------- */
#if CG_X86

#define CGT_NAME l2sq_f32_avx2
#define CGT_TARGET CG_AVX2
#define CGT_DT CG_F32
#define CGT_L2 1
#include "cg_tile_avx2.inc"

#define CGT_NAME l2sq_f16_avx2
#define CGT_TARGET CG_AVX2_F16
#define CGT_DT CG_F16
#define CGT_L2 1
#include "cg_tile_avx2.inc"

#define CGT_NAME l2sq_i8_avx2
#define CGT_TARGET CG_AVX2
#define CGT_DT CG_I8
#define CGT_L2 1
#include "cg_tile_avx2.inc"

#endif /* CG_X86 */

#endif /* CG_SPATIAL_H */

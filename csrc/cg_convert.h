/*
 * cg_convert.h -- element conversion family: decode_<dtype>_<isa>.
 *
 * A batch of queries scores every row of a block several times; decoding the
 * block's f16 / int8 rows to f32 once (exactly: both conversions are exact)
 * and running the f32 kernels on the copy costs one conversion per element
 * instead of one per element and query group.  The copy holds the raw int8
 * values, not value * scale: the scale is applied where the direct kernels
 * apply it, so both paths round identically.
 */
#ifndef CG_CONVERT_H
#define CG_CONVERT_H

#include "cg_common.h"

#if CG_X86

static CG_AVX2_F16 void decode_f16_avx2(const uint8_t **rows, int64_t nrows, int64_t dim,
                                        int64_t dimp, float *dst) {
    for (int64_t j = 0; j < nrows; j++) {
        const uint8_t *p = rows[j];
        float *d = dst + j * dimp;
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
        if (i < dim) _mm256_storeu_ps(d + i, cg_tail_f16_avx2(p + 2 * i, dim - i));
        rows[j] = (const uint8_t *)d;
    }
}

static CG_AVX2 void decode_i8_avx2(const uint8_t **rows, int64_t nrows, int64_t dim,
                                   int64_t dimp, float *dst) {
    for (int64_t j = 0; j < nrows; j++) {
        const uint8_t *p = rows[j];
        float *d = dst + j * dimp;
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                        _mm_loadl_epi64((const __m128i *)(p + i)))));
        if (i < dim) _mm256_storeu_ps(d + i, cg_tail_i8_avx2(p + i, dim - i));
        rows[j] = (const uint8_t *)d;
    }
}

#endif /* CG_X86 */

#endif /* CG_CONVERT_H */

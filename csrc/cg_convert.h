/*
 * cg_convert.h -- element conversion family: decode_<dtype>_<isa>.
 *
 * A batch of queries scores every row of a block several times.  The block
 * is first copied, front to back, into a dense f32 scratch buffer that stays
 * in L2 (decode_f32 is a plain copy; f16 and int8 are converted exactly, once
 * per element instead of once per element and query group), and the f32
 * batch kernels run on the copy.  Reading the pool sequentially keeps the
 * hardware prefetchers streaming, which the register-blocked batch kernel,
 * touching several rows at once, would not.  The copy holds the raw int8
 * values, not value * scale: the l2 kernel applies the scale itself.
 */
#ifndef CG_CONVERT_H
#define CG_CONVERT_H

#include "cg_common.h"

#if CG_X86

static CG_AVX2 void decode_f32_avx2(const uint8_t **rows, int64_t nrows, int64_t dim,
                                    int64_t dimp, float *dst) {
    for (int64_t j = 0; j < nrows; j++) {
        const float *p = (const float *)rows[j];
        float *d = dst + j * dimp;
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(p + i));
        if (i < dim) _mm256_storeu_ps(d + i, _mm256_maskload_ps(p + i, cg_tailmask_avx2(dim - i)));
        rows[j] = (const uint8_t *)d;
    }
}

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

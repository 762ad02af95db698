/*
 * cg_caps.c -- capability detection and kernel-family selection.
 *
 * The CPU is asked once (__builtin_cpu_supports checks the OS saves the YMM
 * registers too); callers pass the subset they allow in cg_opts.caps (the
 * Python layer uses this to force the serial path or to mask single features
 * in tests), and cg_select_isa never grants a feature the CPU lacks.
 */
#include <unistd.h>

#include "cg_common.h"

static uint32_t cg_probe_caps(void) {
    uint32_t caps = 0;
#if CG_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) caps |= CG_CAP_AVX2;
    if (__builtin_cpu_supports("fma")) caps |= CG_CAP_FMA;
    if (__builtin_cpu_supports("f16c")) caps |= CG_CAP_F16C;
#endif
    return caps;
}

uint32_t cg_detect_caps(void) {
    /* bit 31 marks "probed"; probing twice from two threads is harmless */
    static uint32_t cached = 0;
    uint32_t c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!(c & 0x80000000u)) {
        c = cg_probe_caps() | 0x80000000u;
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c & 0x7fffffffu;
}

int32_t cg_select_isa(uint32_t caps, int32_t dtype, int64_t dim, int32_t simd_threshold) {
#if CG_X86
    uint32_t need = CG_CAP_AVX2 | CG_CAP_FMA | (dtype == CG_F16 ? CG_CAP_F16C : 0u);
    caps &= cg_detect_caps();
    if ((caps & need) == need && dim >= (int64_t)simd_threshold) return CG_ISA_AVX2;
#else
    (void)caps;
    (void)dtype;
    (void)dim;
    (void)simd_threshold;
#endif
    return CG_ISA_SERIAL;
}

int32_t cg_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > 4096) return 4096;
    return (int32_t)n;
}

int64_t cg_count_allowed(const uint64_t *allow, int64_t n) {
    if (n <= 0) return 0;
    if (!allow) return n;
    int64_t full = n >> 6, count = 0;
    for (int64_t w = 0; w < full; w++) count += __builtin_popcountll(allow[w]);
    if (n & 63) count += __builtin_popcountll(allow[full] & ((1ull << (n & 63)) - 1));
    return count;
}

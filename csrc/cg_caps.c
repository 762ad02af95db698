/*
 * cg_caps.c -- capability detection and kernel-family selection.
 *
 * The CPU is asked once (cpuid, and xgetbv for whether the OS saves the YMM
 * registers); callers pass the subset they allow in cg_opts.caps (the
 * Python layer uses this to force the serial path or to mask single features
 * in tests), and cg_select_isa never grants a feature the CPU lacks.
 */
#include <unistd.h>

#include "cg_common.h"

#if CG_X86
#include <cpuid.h>

/* XCR0: may the OS-saved state include the YMM registers? */
static uint64_t cg_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static uint32_t cg_probe_caps(void) {
    uint32_t caps = 0;
#if CG_X86
    /* cpuid directly (not __builtin_cpu_supports, whose feature names vary
     * across compiler versions) */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx || (cg_xgetbv0() & 6) != 6) return 0; /* no usable YMM state */
    if ((c >> 12) & 1) caps |= CG_CAP_FMA;
    if ((c >> 29) & 1) caps |= CG_CAP_F16C;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if ((b >> 5) & 1) caps |= CG_CAP_AVX2;
    }
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

"""cffi builder of ``codegraph_store._kernel`` (API mode, out-of-line).

Used by the package build through ``setup.py``::

    setup(cffi_modules=["csrc/build_kernel.py:ffibuilder"])

and runnable by hand for an in-place build next to the sources::

    python csrc/build_kernel.py          # writes codegraph_store/_kernel.*.so

The kernels are compiled without ``-mavx2``/``-march``: the AVX2/FMA/F16C
functions carry ``__attribute__((target(...)))`` and are only called when the
CPU reports those features at run time, so one build runs on any x86-64 (and
the serial kernels alone are compiled elsewhere, e.g. on ARM).
"""

from __future__ import annotations

import os
import sys

import cffi

# Source paths relative to the working directory when they are below it:
# setuptools runs this file from the repository root (and distutils wants
# relative source paths there); from elsewhere the absolute path is used.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


CSRC = _rel(_HERE)
SOURCE_NAMES = ("cg_caps.c", "cg_scan.c")
HEADER_NAMES = (
    "cg_kernel.h",
    "cg_common.h",
    "cg_dot.h",
    "cg_spatial.h",
    "cg_convert.h",
    "cg_topk.h",
    "cg_tile_avx2.inc",
)

CDEF = """
#define CG_F32 0
#define CG_F16 1
#define CG_I8 2
#define CG_DOT 0
#define CG_COS 1
#define CG_L2 2
#define CG_CAP_AVX2 1
#define CG_CAP_FMA 2
#define CG_CAP_F16C 4
#define CG_ISA_SERIAL 0
#define CG_ISA_AVX2 1
#define CG_OK 0
#define CG_EINVAL -1
#define CG_ENOMEM -2

typedef struct cg_pool {
    const void *data;
    uint64_t nbytes;
    int64_t n;
    int64_t dim;
    int64_t stride;
    int32_t dtype;
    const float *scales;
    const float *norms;
} cg_pool;

typedef struct cg_opts {
    int32_t metric;
    int32_t threads;
    int32_t simd_threshold;
    uint32_t caps;
    int64_t block_rows;
    const uint64_t *allow;
} cg_opts;

uint32_t cg_detect_caps(void);
int32_t cg_select_isa(uint32_t caps, int32_t dtype, int64_t dim, int32_t simd_threshold);
int32_t cg_online_cpus(void);
int64_t cg_count_allowed(const uint64_t *allow, int64_t n);
int32_t cg_scores(const cg_pool *pool, const float *queries, int64_t nq,
                  const cg_opts *opts, float *out);
int32_t cg_topk(const cg_pool *pool, const float *queries, int64_t nq, int64_t k,
                const cg_opts *opts, int64_t *out_rows, float *out_scores);
"""

_COMPILE_ARGS = []
_LINK_ARGS = []
_LIBRARIES = []
if sys.platform != "win32":
    _COMPILE_ARGS = [
        "-O3",
        "-std=gnu11",
        "-pthread",
        # IEEE semantics: no reassociation, and no silent fusing of a*b+c in
        # the serial kernels (the SIMD kernels use explicit FMA intrinsics).
        "-ffp-contract=off",
        "-fno-math-errno",
    ]
    _LINK_ARGS = ["-pthread"]
    _LIBRARIES = ["m"]


def make_ffi(absolute: bool = False, extra_flags: tuple[str, ...] = ()) -> cffi.FFI:
    """The FFI of ``codegraph_store._kernel``; ``absolute`` gives absolute
    source paths (cffi's own ``compile()`` runs the compiler elsewhere);
    ``extra_flags`` go to the compiler and the linker after the usual ones
    (tests/sanitize/build.py passes the sanitizer flags)."""
    csrc = _HERE if absolute else CSRC
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "codegraph_store._kernel",
        '#include "cg_kernel.h"\n',
        sources=[os.path.join(csrc, name) for name in SOURCE_NAMES],
        include_dirs=[csrc],
        depends=[os.path.join(csrc, name) for name in HEADER_NAMES],
        extra_compile_args=_COMPILE_ARGS + list(extra_flags),
        extra_link_args=_LINK_ARGS + list(extra_flags),
        libraries=_LIBRARIES,
    )
    return ffi


ffibuilder = make_ffi()


def build_inplace() -> str:
    """Compile into a temporary directory and copy the extension next to
    ``codegraph_store/__init__.py``; return its path."""
    import glob
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cg_kernel_build_") as tmp:
        built = make_ffi(absolute=True).compile(tmpdir=tmp, verbose=False)
        dest_dir = os.path.join(_ROOT, "codegraph_store")
        dest = os.path.join(dest_dir, os.path.basename(built))
        for old in glob.glob(os.path.join(dest_dir, "_kernel.*")):
            if old.endswith((".so", ".pyd")):
                os.remove(old)
        shutil.copy2(built, dest)
    return dest


if __name__ == "__main__":
    print(build_inplace())

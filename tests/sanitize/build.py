"""Build the C kernel with AddressSanitizer and UBSan, and a scratch module with
a known out-of-bounds read and a signed overflow, for tests/sanitize/run.

``python tests/sanitize/build.py DIR`` compiles both into DIR/kernel and
DIR/scratch (the package's own extension is not touched) and prints the
sanitized kernel's path, which the run passes to the package as
$CODEGRAPH_KERNEL_MODULE. Building happens here, before
the tests start, so no compiler runs with libasan preloaded.
"""

from __future__ import annotations

import os
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "csrc"))

import build_kernel  # noqa: E402

# The flags of the kernel's sanitized build, and of the scratch module that proves
# they catch what they should. After the usual flags, so -O1 overrides -O3.
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer", "-O1", "-g",
                  # Python builds extensions with -fwrapv, under which signed
                  # overflow is defined and UBSan cannot report it.
                  "-fno-wrapv")

SCRATCH_NAME = "cg_sanitize_scratch"
SCRATCH_CDEF = "int read_last(int n); int read_past_end(int n); int add_one(int x);"
SCRATCH_SOURCE = r"""
#include <stdlib.h>
/* Reads a[n - 1] of an n-element heap array: in bounds. */
int read_last(int n) {
    int *a = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) a[i] = i;
    int v = a[n - 1];
    free(a);
    return v;
}
/* Reads a[n] of an n-element heap array: one element past the end. */
int read_past_end(int n) {
    int *a = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) a[i] = i;
    int v = a[n];
    free(a);
    return v;
}
/* Signed overflow for x == INT_MAX. */
int add_one(int x) { return x + 1; }
"""


def build_kernel_sanitized(outdir: str) -> str:
    ffi = build_kernel.make_ffi(absolute=True, extra_flags=SANITIZE_FLAGS)
    return ffi.compile(tmpdir=os.path.join(outdir, "kernel"), verbose=False)


def build_scratch(outdir: str) -> str:
    ffi = cffi.FFI()
    ffi.cdef(SCRATCH_CDEF)
    ffi.set_source(SCRATCH_NAME, SCRATCH_SOURCE, extra_compile_args=list(SANITIZE_FLAGS),
                   extra_link_args=list(SANITIZE_FLAGS))
    return ffi.compile(tmpdir=os.path.join(outdir, "scratch"), verbose=False)


if __name__ == "__main__":
    out = os.path.abspath(sys.argv[1])
    build_scratch(out)
    print(build_kernel_sanitized(out))

"""Checks of the sanitized run itself (tests/sanitize/run passes this file to
pytest; it is not collected by the normal suite): the package really loaded
the sanitized kernel with libasan in the process, and the same build flags turn
an out-of-bounds read and a signed overflow into a failing exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from codegraph_store import kernel

if not os.environ.get(kernel.KERNEL_MODULE_ENV):
    pytest.skip("run through tests/sanitize/run", allow_module_level=True)

SCRATCH_DIR = os.environ["CODEGRAPH_SANITIZE_SCRATCH"]  # set by tests/sanitize/run


def test_the_sanitized_kernel_and_libasan_are_loaded():
    assert kernel._module.__file__ == os.environ[kernel.KERNEL_MODULE_ENV]
    assert sys.modules["codegraph_store._kernel"] is kernel._module
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert "libasan" in maps and "libubsan" in maps


def call_scratch(expr: str) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {SCRATCH_DIR!r}); import cg_sanitize_scratch as m; print(m.lib.{expr})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_an_out_of_bounds_read_fails_the_run():
    inside = call_scratch("read_last(4)")
    assert (inside.returncode, inside.stdout.strip()) == (0, "3"), inside.stderr
    bad = call_scratch("read_past_end(4)")
    assert bad.returncode != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in bad.stderr
    assert "READ of size 4" in bad.stderr and "read_past_end" in bad.stderr


def test_a_signed_overflow_fails_the_run():
    fine = call_scratch("add_one(41)")
    assert (fine.returncode, fine.stdout.strip()) == (0, "42")
    bad = call_scratch("add_one(2**31 - 1)")
    assert bad.returncode != 0
    assert "runtime error: signed integer overflow" in bad.stderr

"""Python binding of the C vector-scan kernel (``codegraph_store._kernel``).

Brute-force scoring of f32 queries against a pool of fixed-stride rows and a
top-k selection, in C, on several threads, with the GIL released.

The pool
--------
A pool is ``n`` rows of ``dim`` elements of one dtype:

``float32``
    the value itself.
``float16``
    IEEE half precision (converted exactly to f32 for scoring).
``int8``
    value = int8 * ``scales[row]`` (a float32 per row, passed separately).

Row ``i`` starts ``i * stride`` bytes after the first byte of the buffer.
How ``pool`` is read:

* a 2-D C-contiguous ``numpy.uint8`` array of shape ``(>= n, stride)``: raw
  rows, the stride is ``pool.shape[1]`` bytes (what :func:`pack_rows` makes and
  what an mmap'd pool file viewed as ``(rows, stride)`` looks like);
* a 2-D C-contiguous array of the pool dtype, shape ``(>= n, >= dim)``: typed
  rows, the stride is ``pool.shape[1] * itemsize``;
* anything else exposing a contiguous buffer (bytes, bytearray, memoryview,
  mmap, a 1-D array): raw bytes, the stride is ``stride`` (default
  :func:`row_stride`, i.e. ``dim * itemsize`` rounded up to 64 bytes).

A stride must be at least ``dim * itemsize`` and a multiple of the item size;
the pool format uses multiples of 64 (cache-line aligned rows) but the kernels
do not need it.  The buffer must hold ``(n - 1) * stride + dim * itemsize``
bytes and start at an address aligned to the item size.  Non-contiguous pools
are refused (copying a pool per query would defeat the kernel).

Metrics
-------
``"dot"`` (larger is better), ``"cosine"`` (larger is better; a zero-norm row
or query scores 0; row norms may be passed as ``norms`` or are computed in the
same pass), ``"l2"`` (squared Euclidean distance, smaller is better, returned
as is).

Precision
---------
Rows are converted to f32 exactly (f16 and int8 conversions are exact) and
sums are accumulated in f32, with FMA on AVX2; the query is never quantized,
also for int8 pools (an int8 score is ``sum(q * int8) * scale``).  The error
of a score is at most ``(dim + 6) * 2**-24`` times the sum of the absolute
terms (|q_i v_i| for dot and cosine's numerator, (q_i - v_i)^2 for l2, plus
``2 * 2**-24 * sum |q_i - v_i| |v_i|`` for int8 l2, whose ``scale * int8`` is
rounded to f32 first), plus ``((dim + 6) / 2 + 4) * 2**-24 * |cos|`` for
cosine; tests/test_kernel.py checks exactly these bounds against float64.
f32 sums overflow past ~1e19 per element and squared norms underflow below
~1e-19 per element (such a row counts as zero-norm under cosine).

Determinism
-----------
On one kernel family (AVX2 or serial), a score does not depend on the thread
count, the block size, the allow-list or the other queries of a batch.  One
query (``(dim,)`` or ``(1, dim)``) and a batch of several use different
register blockings (one query streams rows front to back, a batch works on
tiles of 4 queries x 3 rows), whose sums agree to rounding, not bit for bit.  Top-k
ranks by (score, row index): equal scores come back lower row first,
whatever the threads.  NaN scores (NaN in the pool) rank last.

Threads and batches
-------------------
``threads``: 0 = all online CPUs, 1 = the calling thread only; the GIL is
released during the scan.  A ``(q, dim)`` batch is scored in one pass over
the pool: rows are copied block by block (converted to f32) into a buffer
that stays in L2 and every query is scored against it, so a batch costs far
less than ``q`` single scans.  ``block_rows`` (0 = automatic) sets the rows
per work block; it exists for tests and tuning and never changes results.

Kernel selection
----------------
AVX2+FMA kernels (F16C too for float16) run when the CPU has them and
``dim >= simd_threshold``; otherwise portable serial kernels.
``CODEGRAPH_FORCE_SCALAR=1`` in the environment at import, or
:func:`set_force_scalar`, forces the serial kernels; :func:`set_capabilities`
masks single CPU features (for tests).

Which compiled module
---------------------
The package's own ``codegraph_store._kernel``, unless the environment names
another build of the same sources in ``CODEGRAPH_KERNEL_MODULE`` (a path to
the extension file) when this module is first imported: tests/sanitize/run
loads a copy built with AddressSanitizer and UBSan that way. Only the process
environment is read; nothing in a store file, its configuration or the
configuration TOML can name a module to load.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError

KERNEL_MODULE_ENV = "CODEGRAPH_KERNEL_MODULE"


def _load_kernel_module():
    """The compiled kernel: the package's own, or the build named by $CODEGRAPH_KERNEL_MODULE."""
    path = os.environ.get(KERNEL_MODULE_ENV)
    if not path:
        from . import _kernel
        return _kernel
    import importlib.machinery
    import importlib.util
    import sys

    if not os.path.isfile(path):
        raise ImportError(f"{KERNEL_MODULE_ENV}={path!r}: no such extension module")
    name = __package__ + "._kernel"  # the init symbol (PyInit__kernel) is named after it
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.ExtensionFileLoader(name, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


_module = _load_kernel_module()
ffi, lib = _module.ffi, _module.lib

__all__ = [
    "CAPABILITY_NAMES",
    "METRICS",
    "DTYPES",
    "scores",
    "topk",
    "quantize_int8",
    "to_f16",
    "pack_rows",
    "row_stride",
    "allow_bitmap",
    "capabilities",
    "detected_capabilities",
    "set_capabilities",
    "set_force_scalar",
    "force_scalar",
    "active_isa",
    "online_cpus",
]

CAPABILITY_NAMES = {"avx2": lib.CG_CAP_AVX2, "fma": lib.CG_CAP_FMA, "f16c": lib.CG_CAP_F16C}
METRICS = {"dot": lib.CG_DOT, "cosine": lib.CG_COS, "l2": lib.CG_L2}
DTYPES = {
    np.dtype(np.float32): lib.CG_F32,
    np.dtype(np.float16): lib.CG_F16,
    np.dtype(np.int8): lib.CG_I8,
}
_DTYPE_ALIASES = {"f32": "float32", "f16": "float16", "i8": "int8", "half": "float16"}
_ISA_NAMES = {lib.CG_ISA_SERIAL: "serial", lib.CG_ISA_AVX2: "avx2"}

_DETECTED = int(lib.cg_detect_caps())


def ensure(cond: Any, *args: Any, raising: type[Exception] = InvalidArgumentError) -> None:
    """Raise ``raising(*args)`` unless ``cond`` holds (the PyNaCl guard)."""
    if not cond:
        raise raising(*args)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class _State:
    """Process-wide kernel switches (read once per call)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mask = _DETECTED
        self.force_scalar = _env_flag("CODEGRAPH_FORCE_SCALAR")

    def caps(self) -> int:
        return 0 if self.force_scalar else self.mask


_state = _State()


# ---------------------------------------------------------------------------
# capabilities


def _names(mask: int) -> frozenset[str]:
    return frozenset(name for name, bit in CAPABILITY_NAMES.items() if mask & bit)


def detected_capabilities() -> frozenset[str]:
    """The features this CPU (and OS) offer, e.g. ``{"avx2", "fma", "f16c"}``."""
    return _names(_DETECTED)


def capabilities() -> frozenset[str]:
    """The features the kernels may use now (detected, minus masked ones;
    empty while the serial path is forced)."""
    return _names(_state.caps())


def set_capabilities(caps: Iterable[str] | int | None) -> frozenset[str]:
    """Allow only these features (names or a ``CG_CAP_*`` bitmask); ``None``
    allows every detected one.  Features the CPU lacks stay off.  Returns the
    features now allowed (ignoring :func:`set_force_scalar`)."""
    if caps is None:
        mask = _DETECTED
    elif isinstance(caps, (int, np.integer)) and not isinstance(caps, bool):
        mask = int(caps)
        ensure(0 <= mask and not mask & ~sum(CAPABILITY_NAMES.values()),
               f"unknown capability bits in {mask:#x}")
    else:
        ensure(not isinstance(caps, (str, bytes)),
               "set_capabilities takes a collection of names, not one string",
               raising=InvalidTypeError)
        try:
            names = list(caps)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidTypeError(
                f"capabilities must be names, a bitmask or None, not {type(caps).__name__}"
            ) from None
        mask = 0
        for name in names:
            ensure(isinstance(name, str), f"capability names are str, not {type(name).__name__}",
                   raising=InvalidTypeError)
            ensure(name in CAPABILITY_NAMES,
                   f"unknown capability {name!r}; known: {sorted(CAPABILITY_NAMES)}")
            mask |= CAPABILITY_NAMES[name]
    with _state.lock:
        _state.mask = mask & _DETECTED
        return _names(_state.mask)


def set_force_scalar(flag: bool) -> None:
    """Force (True) or stop forcing (False) the portable serial kernels."""
    with _state.lock:
        _state.force_scalar = bool(flag)


def force_scalar() -> bool:
    """Whether the serial kernels are forced."""
    return _state.force_scalar


def active_isa(dtype: Any = "float32", dim: int | None = None, simd_threshold: int = 64) -> str:
    """The kernel family a scan of ``dtype`` rows would use now: ``"avx2"`` or
    ``"serial"``.  With ``dim`` given, ``simd_threshold`` is applied too."""
    code = _dtype_code(dtype)
    if dim is None:
        dim, simd_threshold = 1, 0
    _check_int(dim, "dim", 1)
    _check_int(simd_threshold, "simd_threshold", 0, 2**31 - 1)
    return _ISA_NAMES[int(lib.cg_select_isa(_state.caps(), code, dim, simd_threshold))]


def online_cpus() -> int:
    """Online CPUs (what ``threads=0`` uses)."""
    return int(lib.cg_online_cpus())


# ---------------------------------------------------------------------------
# helpers for building pools


def row_stride(dim: int, dtype: Any, align: int = 64) -> int:
    """Bytes per row of the pool format: ``dim * itemsize`` rounded up to ``align``."""
    _check_int(dim, "dim", 1)
    _check_int(align, "align", 1)
    item = np.dtype(_dtype_name(dtype)).itemsize
    return -(-dim * item // align) * align


def pack_rows(rows: np.ndarray, stride: int | None = None) -> np.ndarray:
    """Copy a 2-D float32 / float16 / int8 array into a zero-padded
    ``(n, stride)`` uint8 array (``stride`` default :func:`row_stride`)."""
    ensure(isinstance(rows, np.ndarray), "rows must be a numpy array", raising=InvalidTypeError)
    ensure(rows.ndim == 2, f"rows must be 2-D, got shape {rows.shape}")
    ensure(rows.dtype in DTYPES, f"rows must be float32, float16 or int8, not {rows.dtype}",
           raising=InvalidTypeError)
    n, dim = rows.shape
    item = rows.dtype.itemsize
    if stride is None:
        stride = row_stride(max(dim, 1), rows.dtype)
    _check_int(stride, "stride", 1)
    ensure(stride >= dim * item, f"stride {stride} < dim * itemsize = {dim * item}")
    out = np.zeros((n, stride), dtype=np.uint8)
    if n and dim:
        out[:, : dim * item] = np.ascontiguousarray(rows).view(np.uint8).reshape(n, dim * item)
    return out


def allow_bitmap(rows: Iterable[int] | np.ndarray, n: int) -> np.ndarray:
    """The allow-list bitmap (uint64 words, bit i of word i >> 6) of ``rows``."""
    _check_int(n, "n", 0)
    idx = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64).ravel()
    ensure(idx.size == 0 or (idx.min() >= 0 and idx.max() < n), "row index out of range")
    bits = np.zeros(-(-n // 64) * 64, dtype=np.uint8)
    bits[idx] = 1
    return np.packbits(bits, bitorder="little").view(np.uint64).copy()


def quantize_int8(vectors: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 quantization: ``scale = max|x| / 127`` (0 for a
    zero row), ``q = round(x / scale)``; returns ``(int8 (n, dim), float32 (n,))``.
    The dequantized row is ``q * scale``."""
    x = _float_matrix(vectors, "vectors")
    amax = np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scales = (amax.astype(np.float64) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float64)
    q = np.rint(x.astype(np.float64) / safe[:, None])
    q = np.clip(q, -127, 127).astype(np.int8)
    return q, scales


def to_f16(vectors: Any) -> np.ndarray:
    """float16 copy of finite vectors (round to nearest even); values beyond
    the float16 range (|x| > 65504) are refused instead of becoming inf."""
    x = _float_matrix(vectors, "vectors", allow_1d=True)
    ensure(not x.size or float(np.max(np.abs(x))) < 65520.0,
           "value out of float16 range (|x| >= 65520)")
    return x.astype(np.float16)


# ---------------------------------------------------------------------------
# scans


def scores(
    pool: Any,
    n: int,
    dim: int,
    dtype: Any,
    queries: Any,
    metric: str,
    *,
    scales: Any = None,
    norms: Any = None,
    stride: int | None = None,
    threads: int = 0,
    simd_threshold: int = 64,
    block_rows: int = 0,
) -> np.ndarray:
    """Every score: float32 ``(q, n)`` for a ``(q, dim)`` query matrix, ``(n,)``
    for one ``(dim,)`` query."""
    p, opts, q, single, keep = _prepare(pool, n, dim, dtype, queries, metric, scales, norms,
                                        None, stride, threads, simd_threshold, block_rows)
    nq = q.shape[0]
    out = np.empty((nq, n), dtype=np.float32)
    if n and nq:
        rc = lib.cg_scores(p, ffi.from_buffer("float[]", q), nq, opts,
                           ffi.from_buffer("float[]", out, require_writable=True))
        _check_rc(rc)
    del keep
    return out[0] if single else out


def topk(
    pool: Any,
    n: int,
    dim: int,
    dtype: Any,
    queries: Any,
    k: int,
    metric: str,
    *,
    scales: Any = None,
    norms: Any = None,
    allow: Any = None,
    stride: int | None = None,
    threads: int = 0,
    simd_threshold: int = 64,
    block_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k' = min(k, allowed rows)`` best rows per query, best first (ties:
    lower row first): ``(rows int64 (q, k'), scores float32 (q, k'))``, or 1-D
    arrays for one ``(dim,)`` query.  ``allow``: optional uint64 bitmap (see
    :func:`allow_bitmap`); rows it excludes are not scored at all."""
    _check_int(k, "k", 1)
    p, opts, q, single, keep = _prepare(pool, n, dim, dtype, queries, metric, scales, norms,
                                        allow, stride, threads, simd_threshold, block_rows)
    nq = q.shape[0]
    kk = min(k, int(lib.cg_count_allowed(opts.allow, n)))
    rows = np.empty((nq, kk), dtype=np.int64)
    vals = np.empty((nq, kk), dtype=np.float32)
    if kk and nq:
        rc = lib.cg_topk(p, ffi.from_buffer("float[]", q), nq, k, opts,
                         ffi.from_buffer("int64_t[]", rows, require_writable=True),
                         ffi.from_buffer("float[]", vals, require_writable=True))
        _check_rc(rc)
    del keep
    if single:
        return rows[0], vals[0]
    return rows, vals


# ---------------------------------------------------------------------------
# validation


def _check_int(value: Any, name: str, lo: int, hi: int | None = None) -> None:
    ensure(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
           f"{name} must be an int, not {type(value).__name__}", raising=InvalidTypeError)
    ensure(value >= lo, f"{name} must be >= {lo}, got {value}")
    if hi is not None:
        ensure(value <= hi, f"{name} must be <= {hi}, got {value}")


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        dtype = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidTypeError(f"unknown dtype {dtype!r}") from None
    ensure(dt in DTYPES, f"pool dtype must be float32, float16 or int8, not {dt}",
           raising=InvalidTypeError)
    return dt.name


def _dtype_code(dtype: Any) -> int:
    return DTYPES[np.dtype(_dtype_name(dtype))]


def _float_matrix(values: Any, name: str, allow_1d: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    ensure(arr.dtype.kind in "fiu", f"{name} must be numeric, not {arr.dtype}",
           raising=InvalidTypeError)
    ensure(arr.ndim == 2 or (allow_1d and arr.ndim == 1),
           f"{name} must be {'1-D or ' if allow_1d else ''}2-D, got shape {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    ensure(bool(np.isfinite(arr).all()), f"{name} contains NaN or inf (or overflows float32)")
    return arr


def _row_array(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    ensure(arr.dtype.kind in "fiu", f"{name} must be a float32 array, not {arr.dtype}",
           raising=InvalidTypeError)
    ensure(arr.ndim == 1, f"{name} must be 1-D, got shape {arr.shape}")
    ensure(arr.shape[0] >= n, f"{name} has {arr.shape[0]} entries, the pool has {n} rows")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _prepare(pool, n, dim, dtype, queries, metric, scales, norms, allow, stride, threads,
             simd_threshold, block_rows):
    _check_int(n, "n", 0, 2**62)
    _check_int(dim, "dim", 1, 2**31 - 1)
    _check_int(threads, "threads", 0, 4096)
    _check_int(simd_threshold, "simd_threshold", 0, 2**31 - 1)
    _check_int(block_rows, "block_rows", 0, 2**40)
    ensure(isinstance(metric, str), f"metric must be a str, not {type(metric).__name__}",
           raising=InvalidTypeError)
    ensure(metric in METRICS, f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    dt = np.dtype(_dtype_name(dtype))
    code = DTYPES[dt]
    item = dt.itemsize
    keep: list[Any] = []

    # queries: (q, dim) or (dim,), finite, copied to C-contiguous float32
    q = np.asarray(queries)
    ensure(q.dtype.kind in "fiu", f"queries must be numeric, not {q.dtype}",
           raising=InvalidTypeError)
    ensure(q.ndim in (1, 2), f"queries must be 1-D or 2-D, got shape {q.shape}")
    single = q.ndim == 1
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf -> refused below
        q = np.ascontiguousarray(q.reshape(1, -1) if single else q, dtype=np.float32)
    ensure(q.shape[1] == dim, f"queries have {q.shape[1]} elements, dim is {dim}")
    ensure(bool(np.isfinite(q).all()), "queries contain NaN or inf (or overflow float32)")

    # pool -> (pointer, bytes, stride)
    if isinstance(pool, np.ndarray) and pool.ndim == 2:
        ensure(pool.flags.c_contiguous, "pool must be C-contiguous (copying it per call would "
               "defeat the scan); pass np.ascontiguousarray(pool) once")
        if pool.dtype == np.uint8:
            arr_stride = pool.shape[1]
        else:
            ensure(pool.dtype == dt, f"pool array is {pool.dtype} but dtype is {dt}",
                   raising=InvalidTypeError)
            ensure(pool.shape[1] >= dim, f"pool rows have {pool.shape[1]} elements, dim is {dim}")
            arr_stride = pool.shape[1] * item
        ensure(pool.shape[0] >= n, f"pool has {pool.shape[0]} rows, n is {n}")
        ensure(stride is None or stride == arr_stride,
               f"stride {stride} disagrees with the pool array's row size {arr_stride}")
        stride = arr_stride
    elif isinstance(pool, np.ndarray):
        ensure(pool.flags.c_contiguous, "pool must be C-contiguous")
    if stride is None:
        stride = row_stride(dim, dt)
    _check_int(stride, "stride", 1)
    ensure(stride >= dim * item, f"stride {stride} < dim * itemsize = {dim * item}")
    ensure(stride % item == 0, f"stride {stride} is not a multiple of the item size {item}")
    try:
        buf = ffi.from_buffer("char[]", pool)
    except TypeError:
        raise InvalidTypeError(
            f"pool must be a numpy array or a contiguous buffer, not {type(pool).__name__}"
        ) from None
    except (BufferError, ValueError) as exc:
        raise InvalidArgumentError(f"pool must be a C-contiguous buffer ({exc})") from None
    keep.append(buf)
    nbytes = len(buf)
    if n:
        need = (n - 1) * stride + dim * item
        ensure(nbytes >= need, f"pool buffer has {nbytes} bytes, {n} rows of stride {stride} "
               f"need {need}")
        ensure(int(ffi.cast("uintptr_t", buf)) % item == 0,
               f"pool buffer is not aligned to its item size {item}")

    p = ffi.new("cg_pool *")
    p.data = buf
    p.nbytes = nbytes
    p.n = n
    p.dim = dim
    p.stride = stride
    p.dtype = code

    if code == lib.CG_I8:
        ensure(scales is not None, "an int8 pool needs scales (one float32 per row)")
        s = _row_array(scales, n, "scales")
        sb = ffi.from_buffer("float[]", s)
        keep += [s, sb]
        p.scales = sb
    else:
        ensure(scales is None, f"scales apply to int8 pools only, this one is {dt}")
    if norms is not None and metric == "cosine":
        nr = _row_array(norms, n, "norms")
        nb = ffi.from_buffer("float[]", nr)
        keep += [nr, nb]
        p.norms = nb
    elif norms is not None:
        _row_array(norms, n, "norms")  # validated, unused by this metric

    o = ffi.new("cg_opts *")
    o.metric = METRICS[metric]
    o.threads = threads
    o.simd_threshold = simd_threshold
    o.caps = _state.caps()
    o.block_rows = block_rows
    if allow is not None:
        ensure(isinstance(allow, np.ndarray), "allow must be a numpy uint64 array",
               raising=InvalidTypeError)
        ensure(allow.dtype == np.uint64, f"allow must be uint64, not {allow.dtype}",
               raising=InvalidTypeError)
        ensure(allow.ndim == 1, f"allow must be 1-D, got shape {allow.shape}")
        words = -(-n // 64)
        ensure(allow.shape[0] >= words,
               f"allow has {allow.shape[0]} words, {n} rows need {words}")
        a = np.ascontiguousarray(allow)
        ab = ffi.from_buffer("uint64_t[]", a)
        keep += [a, ab]
        o.allow = ab
    keep += [p, o]
    return p, o, q, single, keep


def _check_rc(rc: int) -> None:
    if rc == lib.CG_ENOMEM:
        raise MemoryError("the vector kernel could not allocate its buffers")
    ensure(rc == lib.CG_OK, f"the vector kernel refused its arguments (code {rc})")

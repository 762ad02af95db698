"""Tests of the C vector-scan kernel (codegraph_store.kernel / _kernel).

Every kernel (dtype x metric x ISA path) is checked against a float64 numpy
reference computed from the same dequantized values.  The tolerance is the
rounding-error bound of the kernel's arithmetic, not a guess:

* a sum of m terms in f32, in any order, with or without FMA, is within
  (m + 1) u sum|terms| of the exact sum (u = 2**-24, first order); a few more
  roundings come from the int8 scale and the cosine division;
* l2 rounds the difference q - v once (and for int8 the product s * v once
  more, which adds 2 u |d| |s v| per element).

So the bounds below are (dim + c) u * (sum of |terms|), with small constants
for the extra roundings listed in ``_tolerance``.  Pool values are kept away
from f32 overflow/underflow (|x| either 0 or in [1e-3, 1e3]).

Top-k is checked exactly against the kernel's own ``scores`` (same ISA path,
same arithmetic), which checks ranking and tie-breaking independently of the
rounding of the scores themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegraph_store import kernel as K
from codegraph_store.errors import InvalidArgumentError, InvalidTypeError

U = 2.0**-24
DTYPES = ["float32", "float16", "int8"]
METRICS = ["dot", "cosine", "l2"]
DETECTED = K.detected_capabilities()
HAS_AVX2 = {"avx2", "fma"} <= DETECTED
HAS_AVX2_F16 = {"avx2", "fma", "f16c"} <= DETECTED


def _isa_params(dtype: str | None = None):
    need = HAS_AVX2_F16 if dtype == "float16" else HAS_AVX2
    return [
        pytest.param("avx2", marks=pytest.mark.skipif(not need, reason="CPU lacks AVX2/FMA/F16C")),
        "serial",
    ]


ISAS = _isa_params("float16")  # the strictest requirement, for loops over all dtypes


@contextlib.contextmanager
def isa_mode(isa: str):
    """Run the block with the AVX2 kernels (the callers pass simd_threshold=0
    so every dim uses them) or with the serial kernels forced."""
    prev_force = K.force_scalar()
    K.set_force_scalar(False)
    prev_caps = K.capabilities()
    try:
        K.set_capabilities(None)
        K.set_force_scalar(isa == "serial")
        yield
    finally:
        K.set_capabilities(prev_caps)
        K.set_force_scalar(prev_force)


# ---------------------------------------------------------------------------
# data


def _values(rng: np.random.Generator, shape, pattern: str) -> np.ndarray:
    """float32 values of moderate magnitude (0 or |x| in [1e-3, 1e3])."""
    if pattern == "ints":  # small integers: many exact ties
        x = rng.integers(-3, 4, size=shape).astype(np.float32)
    elif pattern == "wide":  # magnitudes over six decades
        mag = 10.0 ** rng.uniform(-3, 3, size=shape)
        x = (mag * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        x[np.abs(x) < 1e-3] = 0.0
    return x


class Pool:
    """A pool of one dtype plus its float64 dequantized reference values."""

    def __init__(self, dtype: str, x: np.ndarray, rng: np.random.Generator):
        self.dtype = dtype
        self.n, self.dim = x.shape
        self.scales = None
        if dtype == "float32":
            self.rows = x.astype(np.float32)
            self.ref = self.rows.astype(np.float64)
        elif dtype == "float16":
            self.rows = np.clip(x, -60000, 60000).astype(np.float16)
            self.ref = self.rows.astype(np.float64)
        else:
            self.rows = rng.integers(-128, 128, size=x.shape).astype(np.int8)
            # reuse the pattern's duplicates / zero rows
            self.rows[np.all(x == 0, axis=1)] = 0
            self.scales = (10.0 ** rng.uniform(-3, 1, size=self.n)).astype(np.float32)
            self.scales[rng.random(self.n) < 0.2] *= -1.0  # a scale may be negative
            self.scales[rng.random(self.n) < 0.1] = 0.0
            self.ref = self.rows.astype(np.float64) * self.scales.astype(np.float64)[:, None]
        self.kw = {"scales": self.scales} if self.scales is not None else {}

    def padded(self, extra: int, fill: int = 0xFF) -> np.ndarray:
        """Raw (n, stride) uint8 rows whose padding bytes are ``fill`` (NaN
        for floats): padding must never reach a score."""
        item = self.rows.dtype.itemsize
        stride = (self.dim + extra) * item
        raw = np.full((self.n, stride), fill, dtype=np.uint8)
        if self.n:
            raw[:, : self.dim * item] = self.rows.view(np.uint8).reshape(self.n, -1)
        return raw


def reference(pool: Pool, q: np.ndarray, metric: str) -> np.ndarray:
    qd = q.astype(np.float64)
    v = pool.ref
    if metric == "dot":
        return qd @ v.T
    if metric == "l2":
        return ((qd[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    qn = np.linalg.norm(qd, axis=1)[:, None]
    rn = np.linalg.norm(v, axis=1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (qd @ v.T) / (qn * rn)
    return np.where((qn == 0) | (rn == 0), 0.0, c)


def _tolerance(pool: Pool, q: np.ndarray, metric: str, ref: np.ndarray) -> np.ndarray:
    qd = q.astype(np.float64)
    v = pool.ref
    dim = pool.dim
    if metric == "l2":
        d = np.abs(qd[:, None, :] - v[None, :, :])
        tol = (dim + 6) * U * (d**2).sum(-1)
        if pool.dtype == "int8":
            tol += 2.01 * U * (d * np.abs(v)[None]).sum(-1)
        return tol * 1.01 + 1e-30
    absdot = np.abs(qd) @ np.abs(v).T
    tol = (dim + 6) * U * absdot  # +1 rounding for the int8 scale
    if metric == "cosine":
        qn = np.linalg.norm(qd, axis=1)[:, None]
        rn = np.linalg.norm(v, axis=1)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            tol = np.where((qn == 0) | (rn == 0), 0.0, tol / (qn * rn))
        # row norm from an f32 sum of squares (half its error after sqrt),
        # the division and the final rounding
        tol = tol + ((dim + 6) / 2 + 4) * U * np.abs(ref)
    return tol * 1.01 + 1e-30


def assert_close(pool: Pool, q: np.ndarray, metric: str, got: np.ndarray) -> None:
    ref = reference(pool, q, metric)
    tol = _tolerance(pool, q, metric, ref)
    assert got.shape == ref.shape
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} scores out of bound; first at {i}: got {got[i]!r}, "
            f"ref {ref[i]!r}, err {err[i]:.3g} > tol {tol[i]:.3g}"
        )


def expected_topk(sc: np.ndarray, k: int, metric: str, allowed: np.ndarray | None = None):
    """Top-k by (score, row) from a (q, n) score matrix: NaN ranks last."""
    nq, n = sc.shape
    rows_all = np.arange(n)
    if allowed is not None:
        rows_all = rows_all[allowed]
    kk = min(k, rows_all.size)
    rows = np.empty((nq, kk), np.int64)
    vals = np.empty((nq, kk), np.float32)
    for i in range(nq):
        s = sc[i, rows_all]
        key = -s.astype(np.float64) if metric == "l2" else s.astype(np.float64)
        key = np.where(np.isnan(key), -np.inf, key)
        order = np.lexsort((rows_all, -key))[:kk]
        rows[i] = rows_all[order]
        vals[i] = s[order]
    return rows, vals


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (NaN == NaN)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


DIMS = st.one_of(
    st.integers(1, 40),
    st.sampled_from([63, 64, 65, 127, 128, 129, 255, 256, 257, 383, 384, 385, 511, 767, 768,
                     1000, 1023, 1024]),
    st.integers(1, 1024),
)


@st.composite
def cases(draw):
    dim = draw(DIMS)
    n = draw(st.integers(0, 48 if dim > 256 else 96))
    nq = draw(st.integers(1, 6))
    pattern = draw(st.sampled_from(["normal", "ints", "wide"]))
    seed = draw(st.integers(0, 2**32 - 1))
    dups = draw(st.booleans())
    zeros = draw(st.booleans())
    k = draw(st.integers(1, n + 5))
    return dim, n, nq, pattern, seed, dups, zeros, k


def build(dtype: str, dim, n, nq, pattern, seed, dups, zeros):
    rng = np.random.default_rng(seed)
    x = _values(rng, (n, dim), pattern)
    if dups and n >= 2:  # duplicate rows: ties broken by the lower row
        src = rng.integers(0, n, size=max(1, n // 3))
        dst = rng.integers(0, n, size=src.size)
        x[dst] = x[src]
    if zeros and n:
        x[rng.integers(0, n, size=max(1, n // 8))] = 0.0
    pool = Pool(dtype, x, rng)
    if dups and n >= 2 and dtype == "int8":
        pool.rows[dst] = pool.rows[src]
        pool.scales[dst] = pool.scales[src]
        pool.ref = pool.rows.astype(np.float64) * pool.scales.astype(np.float64)[:, None]
    q = _values(rng, (nq, dim), pattern)
    if zeros:
        q[0] = 0.0
    if n and rng.random() < 0.3:  # a query equal to a row: l2 = 0, cosine = 1
        q[-1] = pool.ref[rng.integers(0, n)].astype(np.float32)
    return pool, q


# ---------------------------------------------------------------------------
# every kernel against numpy


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_kernel_matches_numpy(isa, dtype, metric, case):
    dim, n, nq, pattern, seed, dups, zeros, k = case
    pool, q = build(dtype, dim, n, nq, pattern, seed, dups, zeros)
    with isa_mode(isa):
        assert K.active_isa(dtype, dim, simd_threshold=0) == isa
        kw = dict(pool.kw, simd_threshold=0)
        batch = K.scores(pool.rows, n, dim, dtype, q, metric, **kw)
        assert_close(pool, q, metric, batch)
        single = np.stack([K.scores(pool.rows, n, dim, dtype, q[i], metric, **kw)
                           for i in range(nq)]) if n else np.empty((nq, 0), np.float32)
        assert_close(pool, q, metric, single)

        # top-k, one query and the batch, against the kernel's own scores
        r1, v1 = K.topk(pool.rows, n, dim, dtype, q[0], k, metric, **kw)
        er, ev = expected_topk(single[:1], k, metric)
        assert same(r1, er[0]) and same(v1, ev[0])
        rb, vb = K.topk(pool.rows, n, dim, dtype, q, k, metric, **kw)
        er, ev = expected_topk(batch, k, metric)
        assert same(rb, er) and same(vb, ev)
        assert rb.shape == (nq, min(k, n))

        # precomputed norms give the same cosine within the bound
        if metric == "cosine":
            norms = np.linalg.norm(pool.ref, axis=1).astype(np.float32)
            got = K.scores(pool.rows, n, dim, dtype, q, metric, norms=norms, **kw)
            assert_close(pool, q, metric, got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=15, deadline=None)
@given(case=cases(), threads=st.integers(2, 4), block=st.integers(1, 9),
       metric=st.sampled_from(METRICS))
def test_threads_and_blocks_do_not_change_results(isa, dtype, case, threads, block, metric):
    dim, n, nq, pattern, seed, dups, zeros, k = case
    pool, q = build(dtype, dim, n, nq, pattern, seed, dups, zeros)
    kw = dict(pool.kw, simd_threshold=0)
    with isa_mode(isa):
        for qq in (q[0], q):
            base_s = K.scores(pool.rows, n, dim, dtype, qq, metric, threads=1, **kw)
            base_t = K.topk(pool.rows, n, dim, dtype, qq, k, metric, threads=1, **kw)
            s = K.scores(pool.rows, n, dim, dtype, qq, metric, threads=threads,
                         block_rows=block, **kw)
            t = K.topk(pool.rows, n, dim, dtype, qq, k, metric, threads=threads,
                       block_rows=block, **kw)
            assert same(s, base_s)
            assert same(t[0], base_t[0]) and same(t[1], base_t[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_batch_composition_does_not_change_scores(isa, dtype):
    rng = np.random.default_rng(7)
    dim, n = 77, 150
    pool = Pool(dtype, _values(rng, (n, dim), "normal"), rng)
    q = _values(rng, (9, dim), "normal")
    with isa_mode(isa):
        for metric in METRICS:
            full = K.scores(pool.rows, n, dim, dtype, q, metric, simd_threshold=0, **pool.kw)
            perm = rng.permutation(9)
            sub = K.scores(pool.rows, n, dim, dtype, q[perm[:5]], metric, simd_threshold=0,
                           **pool.kw)
            assert same(sub, full[perm[:5]])
            two = K.scores(pool.rows, n, dim, dtype, q[perm[:2]], metric, simd_threshold=0,
                           **pool.kw)
            assert same(two, full[perm[:2]])


# ---------------------------------------------------------------------------
# allow-lists


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=20, deadline=None)
@given(case=cases(), kind=st.sampled_from(["none", "one", "all", "random", "sparse"]),
       metric=st.sampled_from(METRICS), threads=st.integers(1, 3))
def test_allow_list(isa, dtype, case, kind, metric, threads):
    dim, n, nq, pattern, seed, dups, zeros, k = case
    pool, q = build(dtype, dim, n, nq, pattern, seed, dups, zeros)
    rng = np.random.default_rng(seed + 1)
    if kind == "none":
        allowed = np.zeros(n, bool)
    elif kind == "one":
        allowed = np.zeros(n, bool)
        if n:
            allowed[rng.integers(0, n)] = True
    elif kind == "all":
        allowed = np.ones(n, bool)
    else:
        allowed = rng.random(n) < (0.5 if kind == "random" else 0.05)
    bitmap = K.allow_bitmap(np.flatnonzero(allowed), n)
    # bits past n must be ignored
    if n % 64:
        bitmap[-1] |= np.uint64(~((1 << (n % 64)) - 1) & (2**64 - 1))
    kw = dict(pool.kw, simd_threshold=0)
    with isa_mode(isa):
        sc = K.scores(pool.rows, n, dim, dtype, q, metric, **kw)
        rows, vals = K.topk(pool.rows, n, dim, dtype, q, k, metric, allow=bitmap,
                            threads=threads, block_rows=7, **kw)
        er, ev = expected_topk(sc, k, metric, allowed)
        assert rows.shape == (nq, min(k, int(allowed.sum())))
        assert same(rows, er) and same(vals, ev)


def test_allow_list_skips_rows_instead_of_filtering_after():
    # the best rows are disallowed: k rows still come back
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    q = x[0] * 10
    best, _ = K.topk(x, 1000, 16, "float32", q, 50, "dot")
    allowed = np.setdiff1d(np.arange(1000), best)
    rows, _ = K.topk(x, 1000, 16, "float32", q, 50, "dot", allow=K.allow_bitmap(allowed, 1000))
    assert rows.shape == (50,)
    assert not set(rows) & set(best)


# ---------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("isa", ISAS)
def test_empty_pool(isa):
    with isa_mode(isa):
        for dtype in DTYPES:
            rows = np.zeros((0, 8), dtype=dtype)
            kw = {"scales": np.zeros(0, np.float32)} if dtype == "int8" else {}
            q = np.ones((3, 8), np.float32)
            assert K.scores(rows, 0, 8, dtype, q, "dot", **kw).shape == (3, 0)
            r, v = K.topk(rows, 0, 8, dtype, q, 5, "l2", **kw)
            assert r.shape == (3, 0) and v.shape == (3, 0)
            r, v = K.topk(b"", 0, 8, dtype, q[0], 5, "cosine", **kw)
            assert r.shape == (0,) and r.dtype == np.int64 and v.dtype == np.float32


def test_no_queries():
    x = np.ones((4, 8), np.float32)
    assert K.scores(x, 4, 8, "float32", np.zeros((0, 8), np.float32), "dot").shape == (0, 4)
    r, v = K.topk(x, 4, 8, "float32", np.zeros((0, 8), np.float32), 2, "dot")
    assert r.shape == (0, 2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_k_larger_than_pool_returns_every_row(isa, dtype):
    rng = np.random.default_rng(5)
    pool = Pool(dtype, _values(rng, (10, 33), "normal"), rng)
    with isa_mode(isa):
        for metric in METRICS:
            rows, vals = K.topk(pool.rows, 10, 33, dtype, np.ones(33, np.float32), 1000, metric,
                                **pool.kw)
            assert sorted(rows.tolist()) == list(range(10))
            if metric == "l2":
                assert np.all(np.diff(vals) >= 0)
            else:
                assert np.all(np.diff(vals) <= 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_lower_row_first(isa, dtype):
    rng = np.random.default_rng(11)
    base = _values(rng, (1, 70), "normal")
    x = np.repeat(base, 200, axis=0)
    pool = Pool(dtype, x, rng)
    if dtype == "int8":
        pool.rows[:] = pool.rows[0]
        pool.scales[:] = 0.5
        pool.kw = {"scales": pool.scales}
    q = _values(rng, (3, 70), "normal")
    with isa_mode(isa):
        for metric in METRICS:
            for threads in (1, 2, 3):
                rows, _ = K.topk(pool.rows, 200, 70, dtype, q, 17, metric, threads=threads,
                                 block_rows=5, simd_threshold=0, **pool.kw)
                assert (rows == np.arange(17)).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_vectors_under_cosine(isa, dtype):
    rng = np.random.default_rng(2)
    x = _values(rng, (20, 40), "normal")
    x[[3, 7]] = 0
    pool = Pool(dtype, x, rng)
    q = _values(rng, (2, 40), "normal")
    q[1] = 0
    with isa_mode(isa):
        for norms in (None, np.linalg.norm(pool.ref, axis=1).astype(np.float32)):
            s = K.scores(pool.rows, 20, 40, dtype, q, "cosine", norms=norms, simd_threshold=0,
                         **pool.kw)
            assert (s[1] == 0).all()
            assert s[0, 3] == 0 and s[0, 7] == 0
            assert np.isfinite(s).all()


def test_nan_in_pool_ranks_last():
    x = np.arange(40, dtype=np.float32).reshape(5, 8)
    x[4, 2] = np.nan
    for metric in METRICS:
        rows, vals = K.topk(x, 5, 8, "float32", np.ones(8, np.float32), 5, metric)
        assert rows[-1] == 4 and np.isnan(vals[-1])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_and_raw_buffers(isa, dtype):
    """Rows with garbage (NaN) padding, raw uint8 arrays, bytes and
    memoryviews, and typed arrays wider than dim all score alike."""
    rng = np.random.default_rng(9)
    n, dim = 37, 45
    pool = Pool(dtype, _values(rng, (n, dim), "normal"), rng)
    q = _values(rng, (3, dim), "normal")
    item = pool.rows.dtype.itemsize
    with isa_mode(isa):
        for metric in METRICS:
            kw = dict(pool.kw, simd_threshold=0)
            want = K.scores(pool.rows, n, dim, dtype, q, metric, **kw)
            assert_close(pool, q, metric, want)
            raw = pool.padded(extra=64 // item + 3)
            assert same(K.scores(raw, n, dim, dtype, q, metric, **kw), want)
            assert same(K.scores(raw.tobytes(), n, dim, dtype, q, metric, stride=raw.shape[1],
                                 **kw), want)
            assert same(K.scores(memoryview(raw.tobytes()), n, dim, dtype, q, metric,
                                 stride=raw.shape[1], **kw), want)
            wide = raw.view(pool.rows.dtype)  # typed (n, dim + pad) array
            assert same(K.scores(wide, n, dim, dtype, q, metric, **kw), want)
            packed = K.pack_rows(pool.rows)
            assert packed.shape[1] % 64 == 0
            assert same(K.scores(packed, n, dim, dtype, q, metric, **kw), want)
            # only the first n rows of a larger pool are scanned
            assert same(K.scores(raw, n - 5, dim, dtype, q, metric, **kw), want[:, : n - 5])


@pytest.mark.skipif(sys.platform != "linux", reason="uses mprotect")
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_never_reads_past_the_last_row(isa, dtype):
    """The pool ends right before an unreadable page: the tail of the last
    row must be read exactly (a SIMD over-read would crash the process)."""
    page = mmap.PAGESIZE
    mm = mmap.mmap(-1, 2 * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + page, page, 0) == 0  # PROT_NONE
    try:
        rng = np.random.default_rng(4)
        item = np.dtype(dtype).itemsize
        for dim in (1, 7, 13, 37):
            n = 5
            pool = Pool(dtype, _values(rng, (n, dim), "normal"), rng)
            need = n * dim * item
            start = page - need
            view = memoryview(mm)[start:page]
            view[:] = pool.rows.tobytes()
            q = _values(rng, (3, dim), "normal")
            with isa_mode(isa):
                for metric in METRICS:
                    for qq in (q, q[0]):
                        got = K.scores(view, n, dim, dtype, qq, metric, stride=dim * item,
                                       simd_threshold=0, **pool.kw)
                        assert_close(pool, np.atleast_2d(qq), metric, np.atleast_2d(got))
                        K.topk(view, n, dim, dtype, qq, 3, metric, stride=dim * item,
                               simd_threshold=0, **pool.kw)
            view.release()
    finally:
        libc.mprotect(addr + page, page, 3)  # PROT_READ | PROT_WRITE
        mm.close()


def test_int8_scores_equal_dequantized_products():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 384)).astype(np.float32)
    q8, s8 = K.quantize_int8(x)
    assert q8.dtype == np.int8 and s8.dtype == np.float32
    assert np.abs(q8).max() <= 127
    deq = q8.astype(np.float64) * s8[:, None]
    assert np.abs(deq - x).max() <= s8.max() / 2 * 1.0001
    qv = rng.standard_normal(384).astype(np.float32)
    got = K.scores(q8, 300, 384, "int8", qv, "dot", scales=s8)
    want = deq @ qv.astype(np.float64)
    tol = 390 * U * (np.abs(deq) @ np.abs(qv.astype(np.float64)))
    assert (np.abs(got - want) <= tol).all()
    zq, zs = K.quantize_int8(np.zeros((2, 5)))
    assert (zq == 0).all() and (zs == 0).all()


def test_to_f16():
    x = np.array([[1.0, -2.5, 65504.0]], np.float32)
    assert K.to_f16(x).dtype == np.float16
    with pytest.raises(InvalidArgumentError):
        K.to_f16(np.array([[70000.0]]))
    with pytest.raises(InvalidArgumentError):
        K.to_f16(np.array([[np.nan]]))


def test_simd_threshold_selects_serial_for_small_dims():
    if not HAS_AVX2:
        pytest.skip("CPU lacks AVX2/FMA")
    with isa_mode("avx2"):
        assert K.active_isa("float32", 32, simd_threshold=64) == "serial"
        assert K.active_isa("float32", 64, simd_threshold=64) == "avx2"
        rng = np.random.default_rng(0)
        x = _values(rng, (50, 32), "normal")
        q = _values(rng, (1, 32), "normal")
        a = K.scores(x, 50, 32, "float32", q, "dot", simd_threshold=64)
        K.set_force_scalar(True)
        b = K.scores(x, 50, 32, "float32", q, "dot", simd_threshold=64)
        assert same(a, b)  # both serial


# ---------------------------------------------------------------------------
# capabilities and switches


def test_capabilities_and_masks():
    with isa_mode("avx2" if HAS_AVX2 else "serial"):
        assert K.capabilities() == DETECTED
        assert K.set_capabilities(["avx2", "fma"]) == frozenset({"avx2", "fma"}) & DETECTED
        assert K.active_isa("float16") == "serial"  # no F16C
        assert K.active_isa("float32") == ("avx2" if HAS_AVX2 else "serial")
        assert K.set_capabilities(0) == frozenset()
        assert K.active_isa("float32") == "serial"
        assert K.set_capabilities(["avx2"]) == frozenset({"avx2"}) & DETECTED
        assert K.active_isa("int8") == "serial"  # AVX2 without FMA: serial
        K.set_capabilities(None)
        assert K.capabilities() == DETECTED
        K.set_force_scalar(True)
        assert K.force_scalar() and K.capabilities() == frozenset()
        assert all(K.active_isa(d) == "serial" for d in DTYPES)
    with pytest.raises(InvalidArgumentError):
        K.set_capabilities(["avx512f"])
    with pytest.raises(InvalidTypeError):
        K.set_capabilities("avx2")
    with pytest.raises(InvalidArgumentError):
        K.set_capabilities(1 << 10)


def test_force_scalar_environment_variable():
    code = (
        "from codegraph_store import kernel as K; "
        "print(K.force_scalar(), K.active_isa('float32'), sorted(K.capabilities()))"
    )
    env = dict(os.environ, CODEGRAPH_FORCE_SCALAR="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(K.__file__)))
    assert out.stdout.split() == ["True", "serial", "[]"]


def test_online_cpus():
    assert K.online_cpus() >= 1


# ---------------------------------------------------------------------------
# argument errors


def _ok_args():
    x = np.ones((10, 8), np.float32)
    return x, np.ones(8, np.float32)


def test_rejects_nan_and_inf_queries():
    x, q = _ok_args()
    for bad in (np.nan, np.inf, -np.inf):
        qb = q.copy()
        qb[3] = bad
        with pytest.raises(InvalidArgumentError):
            K.topk(x, 10, 8, "float32", qb, 3, "dot")
        with pytest.raises(InvalidArgumentError):
            K.scores(x, 10, 8, "float32", qb, "dot")
    with pytest.raises(InvalidArgumentError):  # overflows float32
        K.scores(x, 10, 8, "float32", np.full(8, 1e300), "dot")


def test_rejects_bad_types():
    x, q = _ok_args()
    with pytest.raises(InvalidTypeError):
        K.scores(x.astype(np.float64), 10, 8, "float64", q, "dot")
    with pytest.raises(InvalidTypeError):  # array dtype disagrees with dtype
        K.scores(x, 10, 8, "float16", q, "dot")
    with pytest.raises(InvalidTypeError):
        K.scores(x, 10, 8, "float32", np.array(["a"] * 8), "dot")
    with pytest.raises(InvalidTypeError):
        K.scores(object(), 10, 8, "float32", q, "dot")
    with pytest.raises(InvalidTypeError):
        K.topk(x, 10, 8, "float32", q, 2.0, "dot")
    with pytest.raises(InvalidTypeError):
        K.topk(x, 10, 8, "float32", q, 2, "dot", allow=np.ones(1, np.int32))
    with pytest.raises(InvalidTypeError):
        K.topk(x, 10, 8, "float32", q, 2, "dot", allow=[1])
    with pytest.raises(InvalidTypeError):
        K.scores(x, 10, 8, "float32", q, 3)
    with pytest.raises(InvalidTypeError):
        K.scores(x, 10, 8, "float32", q, "dot", threads=True)


def test_rejects_bad_values():
    x, q = _ok_args()
    for k in (0, -1):
        with pytest.raises(InvalidArgumentError):
            K.topk(x, 10, 8, "float32", q, k, "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(x, 10, 8, "float32", q, "euclid")
    with pytest.raises(InvalidArgumentError):  # short bitmap
        K.topk(np.ones((65, 8), np.float32), 65, 8, "float32", q, 2, "dot",
               allow=np.ones(1, np.uint64))
    with pytest.raises(InvalidArgumentError):  # query length
        K.scores(x, 10, 8, "float32", np.ones(7, np.float32), "dot")
    with pytest.raises(InvalidArgumentError):  # queries 3-D
        K.scores(x, 10, 8, "float32", np.ones((1, 1, 8), np.float32), "dot")
    with pytest.raises(InvalidArgumentError):  # more rows than the array has
        K.scores(x, 11, 8, "float32", q, "dot")
    with pytest.raises(InvalidArgumentError):  # dim wider than the rows
        K.scores(x, 10, 9, "float32", np.ones(9, np.float32), "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(x, 10, 0, "float32", np.ones(0, np.float32), "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(x, -1, 8, "float32", q, "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(x, 10, 8, "float32", q, "dot", threads=-1)
    with pytest.raises(InvalidArgumentError):  # non-contiguous pool
        K.scores(np.ones((10, 16), np.float32)[:, ::2], 10, 8, "float32", q, "dot")
    with pytest.raises(InvalidArgumentError):  # non-contiguous raw buffer
        K.scores(memoryview(np.ones(160, np.float32))[::2], 2, 8, "float32", q, "dot",
                 stride=32)


def test_rejects_bad_strides_and_buffers():
    x, q = _ok_args()
    raw = x.tobytes()
    with pytest.raises(InvalidArgumentError):  # stride < dim * itemsize
        K.scores(raw, 10, 8, "float32", q, "dot", stride=16)
    with pytest.raises(InvalidArgumentError):  # not a multiple of the item size
        K.scores(raw, 5, 8, "float32", q, "dot", stride=34)
    with pytest.raises(InvalidArgumentError):  # disagrees with the array
        K.scores(x, 10, 8, "float32", q, "dot", stride=64)
    with pytest.raises(InvalidArgumentError):  # buffer too short (default stride 64)
        K.scores(raw, 10, 8, "float32", q, "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(raw[:-1], 10, 8, "float32", q, "dot", stride=32)
    with pytest.raises(InvalidArgumentError):
        K.scores(raw, 10, 8, "float32", q, "dot", stride=0)
    # exact size is fine
    assert K.scores(raw, 10, 8, "float32", q, "dot", stride=32).shape == (10,)


def test_rejects_bad_scales_and_norms():
    q8 = np.ones((10, 8), np.int8)
    q = np.ones(8, np.float32)
    with pytest.raises(InvalidArgumentError):  # int8 needs scales
        K.scores(q8, 10, 8, "int8", q, "dot")
    with pytest.raises(InvalidArgumentError):
        K.scores(q8, 10, 8, "int8", q, "dot", scales=np.ones(9, np.float32))
    with pytest.raises(InvalidArgumentError):  # scales only for int8
        K.scores(np.ones((10, 8), np.float32), 10, 8, "float32", q, "dot",
                 scales=np.ones(10, np.float32))
    with pytest.raises(InvalidArgumentError):
        K.scores(q8, 10, 8, "int8", q, "cosine", scales=np.ones(10, np.float32),
                 norms=np.ones(3, np.float32))
    with pytest.raises(InvalidTypeError):
        K.scores(q8, 10, 8, "int8", q, "dot", scales=np.array(["x"] * 10))


def test_non_contiguous_queries_are_copied():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    qs = rng.standard_normal((4, 16)).astype(np.float64)[:, ::2]
    got = K.scores(x, 30, 8, "float32", qs, "dot")
    want = K.scores(x, 30, 8, "float32", np.ascontiguousarray(qs, np.float32), "dot")
    assert same(got, want)


def test_gil_is_released():
    """Another Python thread runs while a scan is inside C (the call does not
    hold the GIL)."""
    import threading
    import time

    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 64)).astype(np.float32)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        K.topk(x, 100_000, 64, "float32", q, 10, "dot", threads=1)  # one long C call
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if t0 < x < t1]
    if t1 - t0 < 0.02:
        pytest.skip("scan too fast to observe")
    assert len(during) >= 3


# --------------------------------------------------------------------------- #
# Which compiled module is loaded


def test_the_kernel_module_is_the_packages_own_unless_the_environment_names_one():
    import codegraph_store
    named = os.environ.get(K.KERNEL_MODULE_ENV)
    if named:  # tests/sanitize/run
        assert K._module.__file__ == named
    else:
        assert os.path.dirname(K._module.__file__) == os.path.dirname(codegraph_store.__file__)
    assert sys.modules["codegraph_store._kernel"] is K._module


def test_a_kernel_module_named_by_the_environment_must_exist():
    env = {**os.environ, K.KERNEL_MODULE_ENV: "/nonexistent/_kernel.so"}
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([sys.executable, "-c", "import codegraph_store.kernel"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert ("ImportError: CODEGRAPH_KERNEL_MODULE='/nonexistent/_kernel.so': no such extension module"
            in proc.stderr)


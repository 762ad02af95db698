"""Performance monitor: measured latency, throughput and memory of one Store.

With ``[performance_targets] enable_monitoring = true`` the Store hands itself to
a :class:`PerformanceMonitor`, which replaces the store's public query and write
methods *on that instance* with timed wrappers. With monitoring off nothing is
wrapped, so the off path costs nothing at all.

* Latencies go into :class:`LatencyHistogram`: log-linear buckets (16 per power
  of two, so any percentile is within ~3% of the true value) in a fixed-size
  list, constant memory however many calls are recorded.
* Throughput: calls and rows written (the int that write methods return), over
  the time since the monitor started.
* Memory gauges, read on demand: process RSS, SQLite page cache of the store's
  connections, embedding pool bytes mapped and resident (``/proc/self/smaps``),
  node-cache bytes.
* :meth:`PerformanceMonitor.targets_achieved` judges measurements against
  ``[performance_targets]``; :func:`append_run` / :func:`load_runs` keep a
  history of runs in a JSON-lines file, and :func:`trends` flags a metric whose
  latest value is worse than the history's median by more than the noise the
  history itself shows (a multiple of its median absolute deviation).
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .config import PerformanceTargets
from .errors import InvalidArgumentError

# Sub-buckets per power of two. 16 keeps the relative width of a bucket at
# 1/16, so the bucket midpoint is within 1/32 (~3%) of any value in it.
_SUB_BITS = 4
_SUB = 1 << _SUB_BITS
_N_BUCKETS = (64 - _SUB_BITS - 1) * _SUB + 2 * _SUB  # covers every int64 of nanoseconds


def bucket_of(ns: int) -> int:
    """Bucket index of a duration in ns: exact below 32 ns, then 16 per octave."""
    if ns < 2 * _SUB:
        return ns if ns > 0 else 0
    shift = ns.bit_length() - _SUB_BITS - 1
    return (shift << _SUB_BITS) + (ns >> shift)


def bucket_indexes(ns: np.ndarray) -> np.ndarray:
    """:func:`bucket_of` of every element of a non-negative int64 array."""
    # frexp's exponent is the bit length, exact for integers below 2**53 (104 days in ns).
    bits = np.frexp(ns.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(bits - _SUB_BITS - 1, 0)
    return np.where(ns < 2 * _SUB, ns, (shift << _SUB_BITS) + (ns >> shift))


def bucket_bounds(index: int) -> tuple[int, int]:
    """``[low, high)`` in ns of a bucket (the inverse of :func:`bucket_of`)."""
    if index < 2 * _SUB:
        return index, index + 1
    shift = (index >> _SUB_BITS) - 1
    mantissa = _SUB + (index & (_SUB - 1))
    return mantissa << shift, (mantissa + 1) << shift


# Durations wait in a short list and are folded into the buckets in one numpy
# pass when it fills (or when read): an append is the only per-call work.
PENDING = 4096


class LatencyHistogram:
    """Counts of durations (ns) in log-linear buckets, plus exact count, sum, min, max.

    Memory is constant: the buckets plus at most :data:`PENDING` unfolded values.
    Safe to record from several threads (list appends are atomic; folding is locked)."""

    __slots__ = ("counts", "_count", "_total", "_min", "_max", "pending", "_lock")

    def __init__(self) -> None:
        self.counts = np.zeros(_N_BUCKETS, np.int64)
        self._count = self._total = self._min = self._max = 0
        self.pending: list[int] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        self.fold()
        return self._count

    @property
    def total(self) -> int:
        """Sum of the durations, ns."""
        self.fold()
        return self._total

    @property
    def min(self) -> int:
        self.fold()
        return self._min

    @property
    def max(self) -> int:
        self.fold()
        return self._max

    def record(self, ns: int) -> None:
        self.pending.append(ns)
        if len(self.pending) >= PENDING:
            self.fold()

    def fold(self) -> None:
        """Move the pending durations into the buckets."""
        with self._lock:
            pending = self.pending
            values = pending[:]
            del pending[:len(values)]  # appends made meanwhile stay pending
            if not values:
                return
            ns = np.maximum(np.array(values, dtype=np.int64), 0)
            self.counts += np.bincount(bucket_indexes(ns), minlength=_N_BUCKETS)
            low, high = int(ns.min()), int(ns.max())
            self._min = low if not self._count else min(self._min, low)
            self._max = max(self._max, high)
            self._count += len(values)
            self._total += int(ns.sum())

    def state(self) -> dict[str, Any]:
        """The histogram as JSON-compatible data (non-empty buckets only), for
        merging histograms recorded in other processes."""
        self.fold()
        nonzero = np.flatnonzero(self.counts)
        return {"buckets": nonzero.tolist(), "counts": self.counts[nonzero].tolist(),
                "count": self._count, "total": self._total, "min": self._min, "max": self._max}

    def merge(self, state: Mapping[str, Any]) -> None:
        """Add a histogram's :meth:`state` into this one."""
        if not state["count"]:
            return
        self.fold()
        with self._lock:
            np.add.at(self.counts, np.asarray(state["buckets"], np.int64),
                      np.asarray(state["counts"], np.int64))
            self._min = state["min"] if not self._count else min(self._min, state["min"])
            self._max = max(self._max, state["max"])
            self._count += state["count"]
            self._total += state["total"]

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) in ns, nearest rank; nan when empty.

        The value is the midpoint of the bucket holding that rank, clipped to the
        exact min and max; the first and last ranks are exact."""
        if not 0 <= p <= 100:
            raise InvalidArgumentError(f"percentile must be in 0..100, got {p!r}")
        self.fold()
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(p / 100.0 * self.count))
        if rank == 1:
            return float(self.min)
        if rank == self.count:
            return float(self.max)
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        low, high = bucket_bounds(index)
        return float(min(max((low + high - 1) / 2.0, self.min), self.max))

    def summary(self) -> dict[str, float | int | None]:
        """count, mean/p50/p95/p99/max in milliseconds (None when empty)."""
        self.fold()
        if not self.count:
            return {"count": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None,
                    "p99_ms": None, "max_ms": None}
        return {"count": self.count, "mean_ms": self.total / self.count / 1e6,
                "p50_ms": self.percentile(50) / 1e6, "p95_ms": self.percentile(95) / 1e6,
                "p99_ms": self.percentile(99) / 1e6, "max_ms": self.max / 1e6}


# Store methods that are timed, and whether their int result counts written rows.
TIMED_READS = ("get_node", "get_nodes", "find", "at", "neighbors", "edges_of", "traverse",
               "path", "search", "context")
TIMED_WRITES = ("add_nodes", "add_edges", "add_embeddings", "delete_nodes", "delete_edges")
GRAPH_QUERIES = ("get_node", "get_nodes", "neighbors", "edges_of", "traverse", "path")

# Which measured value each target is judged on (for metrics the monitor derives
# itself from a live store; bench/validate.py supplies its own measurements).
_MB = 1024 * 1024


def _timed_get_node(method: Callable, clock: Callable[[], int], pending: list,
                    fold: Callable[[], None]) -> Callable:
    """get_node's wrapper, taking get_node's own parameter: the point query is the call
    the monitor's overhead goal is judged on (bench/monitor_overhead.py), and a plain
    parameter skips packing and unpacking ``*args/**kwargs`` on every call, a share of
    that overhead. Positional and keyword calls work as on the method itself."""
    append = pending.append

    def get_node(node_id: int) -> Any:
        t0 = clock()
        try:
            return method(node_id)
        finally:
            append(clock() - t0)
            if len(pending) >= PENDING:
                fold()
    return get_node


class PerformanceMonitor:
    """Latency histograms, throughput counters and memory gauges of one Store."""

    def __init__(self, store: Any, targets: PerformanceTargets | None = None):
        self._store = store
        self.targets = targets if targets is not None else store.config.performance_targets
        self.started = time.time()
        self._started_ns = time.perf_counter_ns()
        self.histograms: dict[str, LatencyHistogram] = {}
        self.rows: dict[str, int] = {}
        for name in TIMED_READS + TIMED_WRITES:
            setattr(store, name, self._timed(name, getattr(store, name), name in TIMED_WRITES))

    def _timed(self, name: str, method: Callable, counts_rows: bool) -> Callable:
        hist = self.histograms[name] = LatencyHistogram()
        clock = time.perf_counter_ns
        pending, fold = hist.pending, hist.fold

        def record(ns: int) -> None:
            pending.append(ns)
            if len(pending) >= PENDING:
                fold()
        if counts_rows:
            self.rows[name] = 0
            rows = self.rows

            @functools.wraps(method)
            def timed_write(*args: Any, **kwargs: Any) -> Any:
                t0 = clock()
                try:
                    result = method(*args, **kwargs)
                finally:
                    record(clock() - t0)
                if type(result) is int:
                    rows[name] += result
                return result
            return timed_write

        if name == "get_node":
            return functools.wraps(method)(_timed_get_node(method, clock, pending, fold))

        # Reads are the hot path: the record step is inlined.
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return method(*args, **kwargs)
            finally:
                pending.append(clock() - t0)
                if len(pending) >= PENDING:
                    fold()
        return timed

    # ------------------------------------------------------------------ gauges

    def memory(self) -> dict[str, int]:
        """Bytes: process RSS, SQLite page cache of the store's connections, embedding
        pool mapped/resident, node cache."""
        store = self._store
        page_cache = 0
        conns = list(getattr(store, "_readers", ()))
        if getattr(store, "_writer", None) is not None:
            conns.append(store._writer)
        for conn in conns:
            page_cache += sqlite_cache_used(conn)
        mapped, resident = mapping_bytes(store.filename + "-pool")
        cache = getattr(store, "_cache", None)
        return {"rss_bytes": process_rss(), "sqlite_page_cache_bytes": page_cache,
                "pool_mapped_bytes": mapped, "pool_resident_bytes": resident,
                "node_cache_bytes": 0 if cache is None else cache.bytes}

    def throughput(self) -> dict[str, float]:
        """Calls per second of each operation and rows per second of each write,
        since the monitor started."""
        elapsed = max((time.perf_counter_ns() - self._started_ns) / 1e9, 1e-9)
        out = {f"{name}_per_sec": h.count / elapsed for name, h in self.histograms.items() if h.count}
        out.update({f"{name}_rows_per_sec": n / elapsed for name, n in self.rows.items() if n})
        return out

    # ----------------------------------------------------------------- verdicts

    def metrics(self) -> dict[str, float]:
        """What this monitor has observed, under the names of the targets it speaks to."""
        out: dict[str, float] = {}
        h = self.histograms
        if h["get_node"].count:
            out["node_query_latency_ms"] = h["get_node"].percentile(99) / 1e6
        traversal = [h[n].percentile(99) for n in ("neighbors", "traverse") if h[n].count]
        if traversal:
            out["edge_traversal_latency_ms"] = max(traversal) / 1e6
        if h["search"].count:
            out["vector_search_latency_ms"] = h["search"].percentile(50) / 1e6
        if h["context"].count:
            out["rag_latency_ms"] = h["context"].percentile(50) / 1e6
        mem = self.memory()
        out["graph_memory_mb"] = mem["rss_bytes"] / _MB
        out["cache_memory_mb"] = (mem["sqlite_page_cache_bytes"] + mem["node_cache_bytes"]) / _MB
        out["embedding_memory_mb"] = mem["pool_resident_bytes"] / _MB
        rates = self.throughput()
        queries = sum(rates.get(f"{n}_per_sec", 0.0) for n in GRAPH_QUERIES)
        if queries:
            out["concurrent_queries_per_sec"] = queries
        busy = h["add_nodes"].total
        if self.rows.get("add_nodes") and busy:
            out["node_processing_per_sec"] = self.rows["add_nodes"] / (busy / 1e9)
        return out

    def targets_achieved(self, measured: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Each target judged against ``measured`` (default: :meth:`metrics`)."""
        return judge(self.targets, self.metrics() if measured is None else measured)

    def report(self) -> str:
        """Everything as JSON: latencies, throughput, memory, targets."""
        return json.dumps({
            "started": self.started,
            "latency": {n: h.summary() for n, h in self.histograms.items() if h.count},
            "throughput": self.throughput(),
            "memory": self.memory(),
            "targets": self.targets_achieved(),
        }, indent=2, sort_keys=True)

    def record_run(self, path: str | os.PathLike | None = None, note: str = "") -> dict[str, Any]:
        """Append this monitor's metrics to the history (default ``<db>-perf.jsonl``)."""
        return append_run(path or self._store.filename + "-perf.jsonl", self.metrics(),
                          self.targets, note=note)


# ----------------------------------------------------------------- judging

def target_names(targets: PerformanceTargets) -> list[str]:
    """The [baseline, target] pairs of ``targets`` (every field that is a pair)."""
    return [name for name, value in _fields(targets) if isinstance(value, tuple)]


def _fields(targets: PerformanceTargets) -> Iterable[tuple[str, Any]]:
    import attrs
    return ((f.name, getattr(targets, f.name)) for f in attrs.fields(type(targets)))


def judge(targets: PerformanceTargets, measured: Mapping[str, float]) -> dict[str, Any]:
    """Pass/fail of every target with a measurement, and the share that passed.

    A target without a measurement is listed as not measured and left out of the
    share: an unmeasured target is never a pass."""
    results: dict[str, Any] = {}
    passed = judged = 0
    for name in target_names(targets):
        baseline, target = getattr(targets, name)
        value = measured.get(name)
        lower = targets.lower_is_better(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            results[name] = {"baseline": baseline, "target": target, "measured": None,
                             "passed": None, "lower_is_better": lower}
            continue
        ok = value < target if lower else value > target
        judged += 1
        passed += ok
        results[name] = {"baseline": baseline, "target": target, "measured": value,
                         "passed": ok, "lower_is_better": lower}
    return {"targets": results, "passed": passed, "judged": judged,
            "share": passed / judged if judged else None}


# ----------------------------------------------------------------- history

def append_run(path: str | os.PathLike, metrics: Mapping[str, float], targets: PerformanceTargets,
               note: str = "", extra: Mapping[str, Any] | None = None,
               when: float | None = None) -> dict[str, Any]:
    """Append one run (time, metrics, verdicts, load average) as a JSON line."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    run = {"time": time.time() if when is None else when, "note": note, "loadavg": load,
           "metrics": dict(metrics), "verdicts": judge(targets, metrics), **(extra or {})}
    line = json.dumps(run, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:  # one write per line: appends do not interleave
        f.write(line)
    return run


def load_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every run in the history, oldest first; a torn last line is skipped."""
    runs = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    run = json.loads(line)
                except ValueError:
                    continue
                if isinstance(run, dict) and isinstance(run.get("metrics"), dict):
                    runs.append(run)
    except FileNotFoundError:
        return []
    return sorted(runs, key=lambda r: r.get("time", 0))


# A regression must stand out from the history by this many robust standard
# deviations (1.4826 x MAD estimates sigma for normal noise).
NOISE_SIGMAS = 3.0
MAD_TO_SIGMA = 1.4826
# Needed before the history can say what its noise is.
MIN_HISTORY = 3


def _median(values: list[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2.0


def trends(runs: list[dict[str, Any]], targets: PerformanceTargets, days: float | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Per metric: its values over the last ``days``, the latest against the median of
    the ones before it, the noise band, and whether the latest is a regression.

    The band is ``NOISE_SIGMAS * 1.4826 * MAD`` of the earlier values (at least 1% of
    their median, so a perfectly flat history does not flag rounding). Fewer than
    ``MIN_HISTORY`` earlier values: no verdict."""
    if days is not None and not days > 0:
        raise InvalidArgumentError(f"days must be > 0, got {days!r}")
    now = time.time() if now is None else now
    window = [r for r in runs if days is None or r.get("time", 0) >= now - days * 86400]
    names = sorted({k for r in window for k in r["metrics"]})
    out: dict[str, Any] = {}
    for name in names:
        series = [(r["time"], float(r["metrics"][name])) for r in window
                  if isinstance(r["metrics"].get(name), (int, float))]
        if not series:
            continue
        latest = series[-1][1]
        earlier = [v for _, v in series[:-1]]
        entry: dict[str, Any] = {"values": series, "latest": latest, "median": None,
                                 "band": None, "regression": None}
        if len(earlier) >= MIN_HISTORY:
            med = _median(earlier)
            mad = _median([abs(v - med) for v in earlier])
            band = max(NOISE_SIGMAS * MAD_TO_SIGMA * mad, 0.01 * abs(med))
            lower = targets.lower_is_better(name)
            worse = latest - med if lower else med - latest
            entry.update(median=med, band=band, regression=worse > band)
        out[name] = entry
    return out


# ----------------------------------------------------------------- memory probes

def process_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def mapping_bytes(prefix: str) -> tuple[int, int]:
    """(mapped, resident) bytes of this process's mappings of files whose path
    starts with ``prefix``, from ``/proc/self/smaps``; (0, 0) without /proc."""
    mapped = resident = 0
    prefix = os.path.abspath(prefix)
    inside = False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":") or "-" in head:  # a mapping's first line
                    parts = line.split(None, 5)
                    inside = len(parts) == 6 and parts[5].rstrip("\n").startswith(prefix)
                elif inside and head == "Size:":
                    mapped += int(line.split()[1]) * 1024
                elif inside and head == "Rss:":
                    resident += int(line.split()[1]) * 1024
    except OSError:
        return 0, 0
    return mapped, resident


def sqlite_cache_used(conn: Any) -> int:
    """Bytes of page cache a connection holds (SQLITE_DBSTATUS_CACHE_USED)."""
    import apsw
    try:
        return int(conn.status(apsw.SQLITE_DBSTATUS_CACHE_USED)[0])
    except apsw.Error:  # closed connection
        return 0

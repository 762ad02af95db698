"""Shared helpers for the benchmark scripts in ``bench/``.

Every script prints the machine it ran on and the exact command, measures each
result beside a baseline taken in the same run (interleaved where possible,
since the machines are shared and noisy), prints one table and can write it as
JSON. Import from a script run as ``python bench/NAME.py``::

    from _common import Row, Samples, interleave, print_header, print_table, write_json

Nothing here imports ``codegraph_store``, so it is usable from any script.

Conventions
-----------
* Latencies are collected in nanoseconds (:func:`time.perf_counter_ns`) and
  reported in microseconds unless a script says otherwise.
* ``Row.ratio`` is the *slowdown factor* of ours against the baseline:
  ``ours / baseline`` for latencies (lower is better) and ``baseline / ours``
  for throughputs (higher is better), so 1.0 is parity and < 2 means "within
  2x" either way. :func:`Row.latency` and :func:`Row.throughput` compute it.
* ``--json FILE`` writes the table as a list of rows
  ``{"metric", "value", "unit", "baseline", "ratio"}`` (null where absent).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = BENCH_DIR / "out"  # git-ignored


# --------------------------------------------------------------------- statistics

def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, linear interpolation between
    closest ranks (numpy's default); ``nan`` for no values. Sorts a copy."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * (p / 100.0)
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


class Samples:
    """Latency samples in nanoseconds with summary statistics in any unit."""

    __slots__ = ("name", "ns", "_sorted")

    def __init__(self, name: str = "", ns: Iterable[int] = ()):
        self.name = name
        self.ns: list[int] = list(ns)
        self._sorted: list[int] | None = None

    def add(self, ns: int) -> None:
        self.ns.append(ns)
        self._sorted = None

    def extend(self, ns: Iterable[int]) -> None:
        self.ns.extend(ns)
        self._sorted = None

    def __len__(self) -> int:
        return len(self.ns)

    def pct(self, p: float, unit: str = "us") -> float:
        """Percentile ``p`` in ``unit`` (``ns``, ``us``, ``ms`` or ``s``)."""
        if self._sorted is None:
            self._sorted = sorted(self.ns)
        return _pct_sorted(self._sorted, p) / _UNIT[unit]

    def p50(self, unit: str = "us") -> float:
        return self.pct(50, unit)

    def p99(self, unit: str = "us") -> float:
        return self.pct(99, unit)

    def mean(self, unit: str = "us") -> float:
        return (sum(self.ns) / len(self.ns) / _UNIT[unit]) if self.ns else math.nan

    def summary(self, unit: str = "us") -> str:
        return (f"n={len(self)} p50={self.p50(unit):.2f} p90={self.pct(90, unit):.2f} "
                f"p99={self.p99(unit):.2f} mean={self.mean(unit):.2f} {unit}")


_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def _pct_sorted(data: list[int], p: float) -> float:
    if not data:
        return math.nan
    k = (len(data) - 1) * (p / 100.0)
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


# ------------------------------------------------------------------------ timing

class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``; also usable via
    :meth:`lap` to split one region into named phases."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0
        self.laps: list[tuple[str, float]] = []
        self._last = 0.0

    def __enter__(self) -> "Stopwatch":
        self.start = self._last = time.perf_counter()
        return self

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        dt = now - self._last
        self.laps.append((name, dt))
        self._last = now
        return dt

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def time_calls(fn: Callable[[Any], Any], args: Sequence[Any], out: Samples) -> None:
    """Call ``fn(arg)`` for each arg, appending each call's wall time (ns) to ``out``."""
    clock = time.perf_counter_ns
    add = out.ns.append
    for a in args:
        t0 = clock()
        fn(a)
        add(clock() - t0)
    out._sorted = None


def interleave(contenders: dict[str, Callable[[Any], Any]], args: Sequence[Any], *,
               block: int = 100, warmup: Sequence[Any] = ()) -> dict[str, Samples]:
    """Time every contender on the same ``args``, alternating in rounds.

    ``args`` is cut into blocks of ``block`` items; each block is run by every
    contender in turn, and the order rotates from block to block (and reverses
    every other full rotation), so drift in machine load hits all contenders
    alike. ``warmup`` args are run by each contender first, untimed.
    Returns a :class:`Samples` (ns per call) per contender.
    """
    names = list(contenders)
    for name in names:
        fn = contenders[name]
        for a in warmup:
            fn(a)
    result = {name: Samples(name) for name in names}
    k = len(names)
    for j, start in enumerate(range(0, len(args), block)):
        chunk = args[start:start + block]
        shift = j % k
        order = names[shift:] + names[:shift]
        if (j // k) % 2:
            order.reverse()
        for name in order:
            time_calls(contenders[name], chunk, result[name])
    return result


def rotated(items: Sequence[Any], rep: int) -> list[Any]:
    """``items`` rotated by ``rep`` and reversed on odd rotations: an order for
    repetition ``rep`` of a set of expensive runs (ABC, CBA-ish, BCA, ...)."""
    n = len(items)
    order = list(items[rep % n:]) + list(items[:rep % n])
    return order[::-1] if (rep // n) % 2 else order


class gc_frozen:
    """Collect and freeze everything alive (``gc.freeze``), so the big input
    data a benchmark holds is not rescanned by collections the measured code
    triggers; unfreezes on exit."""

    def __enter__(self) -> "gc_frozen":
        gc.collect()
        gc.freeze()
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.unfreeze()


# ---------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_description() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, SQLite and APSW versions (whatever is knowable)."""
    desc: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": None,
        "apsw": None,
        "loadavg": load_average(),
    }
    ram = _ram_bytes()
    if ram:
        desc["ram_gib"] = round(ram / 2**30, 1)
    try:
        import apsw
        desc["sqlite"] = apsw.sqlite_lib_version()
        desc["apsw"] = apsw.apsw_version() if hasattr(apsw, "apsw_version") else apsw.apswversion()
    except ImportError:
        pass
    return desc


def command_line() -> str:
    """The exact command that started this process, shell-quoted."""
    return shlex.join([sys.executable, *sys.argv])


def print_header(title: str, extra: dict[str, Any] | None = None, file=None) -> dict[str, Any]:
    """Print the title, machine description and exact command; returns the description."""
    out = file or sys.stdout
    desc = machine_description()
    print(f"== {title} ==", file=out)
    print(f"machine : {desc['cpu']}; {desc['logical_cores']} logical cores "
          f"({desc['usable_cores']} usable); {desc['ram_gib']} GiB RAM; {desc['os']}", file=out)
    print(f"software: {desc['python']}; SQLite {desc['sqlite']}; APSW {desc['apsw']}", file=out)
    if desc["loadavg"] is not None:
        la = ", ".join(f"{x:.2f}" for x in desc["loadavg"])
        print(f"load    : {la} (1/5/15 min) at start; the machine is shared, expect noise", file=out)
    print(f"command : {command_line()}", file=out)
    for k, v in (extra or {}).items():
        print(f"{k:<8}: {v}", file=out)
    out.flush()
    return desc


# ------------------------------------------------------------------------ table

@dataclass
class Row:
    """One result: ``value`` (ours), optional ``baseline`` and slowdown ``ratio``."""

    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None

    @classmethod
    def latency(cls, metric: str, ours: float, raw: float | None, unit: str = "us") -> "Row":
        """Lower is better: ratio = ours / raw."""
        ratio = None if raw in (None, 0) or ours is None else ours / raw
        return cls(metric, ours, unit, raw, ratio)

    @classmethod
    def throughput(cls, metric: str, ours: float, raw: float | None, unit: str) -> "Row":
        """Higher is better: ratio = raw / ours (still a slowdown factor)."""
        ratio = None if raw is None or not ours else raw / ours
        return cls(metric, ours, unit, raw, ratio)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": _json_num(self.value), "unit": self.unit,
                "baseline": _json_num(self.baseline), "ratio": _json_num(self.ratio)}


def _json_num(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 6)


def fmt_value(x: float | None) -> str:
    """Readable number: thousands separators for big values, 3 significant-ish digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    ax = abs(x)
    if ax >= 10_000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def print_table(rows: Sequence[Row], title: str | None = None, file=None,
                ratio_note: bool = True) -> None:
    """``metric | ours | raw baseline | ratio | unit`` as an aligned text table."""
    out = file or sys.stdout
    cells = [("metric", "ours", "raw baseline", "ratio", "unit")]
    for r in rows:
        cells.append((r.metric, fmt_value(r.value), fmt_value(r.baseline),
                      "-" if r.ratio is None else f"{r.ratio:.2f}x", r.unit))
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    if title:
        print(title, file=out)
    sep = "-+-".join("-" * w for w in widths)
    for n, c in enumerate(cells):
        line = " | ".join(c[i].ljust(widths[i]) if i in (0, 4) else c[i].rjust(widths[i])
                          for i in range(5))
        print(line.rstrip(), file=out)
        if n == 0:
            print(sep, file=out)
    if ratio_note:
        print("ratio = slowdown of ours vs the baseline: ours/raw for latency, raw/ours for "
              "throughput (1.00x = parity, < 2.00x = within 2x)", file=out)
    out.flush()


def print_kv_table(title: str, rows: Sequence[tuple[str, ...]], file=None) -> None:
    """A small free-form table (first row is the header)."""
    out = file or sys.stdout
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print(title, file=out)
    for n, r in enumerate(rows):
        print(" | ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                         for i, (v, w) in enumerate(zip(r, widths))).rstrip(), file=out)
        if n == 0:
            print("-+-".join("-" * w for w in widths), file=out)
    out.flush()


def write_json(path: str | os.PathLike, rows: Sequence[Row]) -> None:
    """Write the table as a JSON list of ``{"metric", "value", "unit", "baseline", "ratio"}``."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([r.as_dict() for r in rows], f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- verdicts

@dataclass
class Verdict:
    goal: str
    ok: bool | None  # None = not measured in this run
    detail: str

    @property
    def label(self) -> str:
        return "SKIP" if self.ok is None else ("PASS" if self.ok else "FAIL")


def print_verdicts(verdicts: Sequence[Verdict], file=None) -> None:
    out = file or sys.stdout
    print("goals:", file=out)
    for v in verdicts:
        print(f"  [{v.label}] {v.goal}: {v.detail}", file=out)
    failed = sum(1 for v in verdicts if v.ok is False)
    passed = sum(1 for v in verdicts if v.ok)
    print(f"  => {passed} passed, {failed} failed, "
          f"{sum(1 for v in verdicts if v.ok is None)} skipped", file=out)
    out.flush()


# ---------------------------------------------------------------------- files

def remove_db(path: str | os.PathLike) -> None:
    """Remove a SQLite file and its -wal/-shm/-journal companions, if present."""
    path = os.fspath(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]

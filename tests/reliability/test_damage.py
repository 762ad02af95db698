"""Damaged files: bytes flipped and files truncated at many offsets of the
database, its WAL and the embedding pool. Every read returns the right data or
raises a typed error; never a crash, a hang, an untyped exception. Runs in a
child process (damage.py) so a segfault or a hang is detected."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from codegraph_store import Edge, EdgeKind, Node, Store

import damage

pytestmark = pytest.mark.scenario(
    "damaged file (bit flip or truncation of the database, WAL or pool)", "right data or a typed"
    " error; never a crash, a hang or an untyped exception")

CASE_TIMEOUT_S = 60


def build(path: str, count: int, offset: int = 0, close: bool = True) -> Store:
    rng = np.random.default_rng(offset)
    nodes = [Node.new("function", f"f{i}", f"m{i % 7}.f{i}", file=f"m{i % 7}.py",
                      start_line=i + 1, end_line=i + 2,
                      metadata={"i": i, "doc": ("long text " * 200) if i % 4 == 0 else "short"})
             for i in range(offset, offset + count)]
    s = Store.open(path)
    with s.transaction():
        s.add_nodes(nodes)
        s.add_edges([Edge(a.id, EdgeKind.CALLS, b.id) for a, b in zip(nodes, nodes[1:])])
        s.add_embeddings([n.id for n in nodes], rng.standard_normal((count, 8)), space="s")
    if close:
        s.close()
    return s


WAL_WRITER = """
import os, sys
sys.path.insert(0, {here!r})
from test_damage import build
from codegraph_store import Store
kept = build({db!r}, 40, 1000, close=False)  # leave without closing: no checkpoint
os._exit(0)
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Two states: a cleanly closed store, and one whose last commits are still in the WAL."""
    base = tmp_path_factory.mktemp("pristine")
    states, expected = {}, {}
    for state in ("clean", "wal"):
        d = base / state
        d.mkdir()
        db = str(d / "d.cgdb")
        build(db, 200)
        if state == "wal":
            code = WAL_WRITER.format(here=os.path.dirname(__file__), db=db)
            subprocess.run([sys.executable, "-c", code], check=True)
            assert os.path.getsize(db + "-wal") > 0
        states[state] = str(d)
        copy = base / f"{state}-copy"
        copy.mkdir()
        for name in os.listdir(d):
            (copy / name).write_bytes((d / name).read_bytes())
        with Store.open(str(copy / "d.cgdb")) as s:
            expected[state] = str(base / f"{state}.json")
            with open(expected[state], "w") as f:
                json.dump(damage.dump(s), f)
    return states, expected


def cases(states: dict, count: int, rng: random.Random) -> list[dict]:
    out = []
    for state, source in states.items():
        for name in sorted(os.listdir(source)):
            if name.endswith("-shm"):
                continue
            size = os.path.getsize(os.path.join(source, name))
            if size == 0:
                continue
            # header bytes, the start of every page, and random offsets
            offsets = {rng.randrange(100) for _ in range(count // 4)}
            offsets |= {rng.randrange(0, size, 4096) + rng.randrange(16) for _ in range(count // 4)}
            offsets |= {rng.randrange(size) for _ in range(count // 2)}
            for at in sorted(offsets):
                out.append({"state": state, "source": source, "file": name, "op": "flip",
                            "at": at, "mask": 1 << rng.randrange(8)})
            # (A database truncated to 0 bytes is an empty file, which opens as a new store.)
            ends = {1, 100, size - 1} | ({0} if name != "d.cgdb" else set())
            for at in sorted({rng.randrange(1, size) for _ in range(count // 4)} | ends):
                out.append({"state": state, "source": source, "file": name, "op": "truncate", "at": at})
    return out


def run_cases(tmp_path, all_cases: list[dict], expected: dict) -> list[tuple[dict, str, str]]:
    """Outcome of every case; a worker that dies or hangs is the outcome of the
    case it was on, and a new worker continues after it."""
    spec_path = tmp_path / "cases.json"
    results: dict[int, tuple[str, str]] = {}
    skip = 0
    while skip < len(all_cases):
        spec_path.write_text(json.dumps({"expected": expected, "earlier": {"wal": "clean"},
                                         "cases": all_cases, "skip": skip}))
        proc = subprocess.Popen([sys.executable, damage.__file__, str(spec_path)],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.path.dirname(damage.__file__)})
        current = skip
        try:
            out, _ = proc.communicate(timeout=CASE_TIMEOUT_S * max(1, (len(all_cases) - skip) // 20))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in out.splitlines():
            word, n, *rest = line.split(" ", 2) + [""]
            if word == "start":
                current = int(n)
            elif word == "result":
                outcome, _, detail = rest[0].partition(" ")
                results[int(n)] = (outcome, detail)
        if current not in results:
            results[current] = ("crashed" if proc.returncode else "hung", f"exit {proc.returncode}")
        skip = max(results) + 1
    return [(all_cases[n], *results[n]) for n in sorted(results)]


# What each kind of damage may lead to. The pool is derived: any damage to it is
# rebuilt from SQLite. A damaged WAL loses the commits from the damaged frame on
# (SQLite's frame checksums), leaving the earlier state. Truncation is always
# seen. A flipped bit inside a database record can go unseen: SQLite keeps no
# page checksums (see docs/RELIABILITY.md).
ALLOWED = {
    ("pool", "flip"): {"ok"}, ("pool", "truncate"): {"ok"},
    ("wal", "flip"): {"ok", "earlier", "refused", "detected", "repaired"},
    ("wal", "truncate"): {"ok", "earlier", "refused", "detected", "repaired"},
    ("db", "truncate"): {"ok", "refused", "detected", "repaired"},
    ("db", "flip"): {"ok", "refused", "detected", "repaired", "undetected"},
}


def _kind(name: str) -> str:
    return "pool" if "-pool" in name else "wal" if name.endswith("-wal") else "db"


def outcome_table(results) -> dict:
    table: dict = {}
    for c, outcome, _detail in results:
        key = f'{_kind(c["file"])} {c["op"]}'
        table.setdefault(key, {}).setdefault(outcome, 0)
        table[key][outcome] += 1
    return table


def test_damaged_files_read_right_or_raise_typed_errors(tmp_path, pristine, stress, tally):
    t = tally()
    states, expected = pristine
    all_cases = cases(states, 400 if stress else 24, random.Random(7))
    results = run_cases(tmp_path, all_cases, expected)
    assert len(results) == len(all_cases)
    print(json.dumps(outcome_table(results), sort_keys=True))
    bad = [(c["state"], c["file"], c["op"], c["at"], outcome, detail)
           for c, outcome, detail in results if outcome not in ALLOWED[_kind(c["file"]), c["op"]]]
    t.iterations, t.failures = len(results), len(bad)
    for b in bad:
        print(b)
    assert bad == []

#!/usr/bin/env python
"""Ablation: one workload with every optimization on, then with each one off in turn.

    python bench/ablation.py [--nodes N] [--reps R] [--json FILE]

Each configuration ingests the same data into a fresh file (N nodes, default
50,000, a tenth with a 2 KiB docstring; 3 edges per node; a 384-dimension vector
per node), through ``store.transaction()`` blocks of 5,000 nodes, each filled by
calls of 10 nodes (30 edges), so the write buffer decides how many calls share one
``executemany``; then runs the same reads on it:

* random get_node over all nodes (cold: mostly misses for any cache),
* hot get_node: 500 ids asked 20 times each in random order,
* interactive walk: neighbors(i), then get_node of each neighbour, 300 starts,
* vector search top-10, 30 queries.

The reference is every switch on (enable_batching, enable_compression,
enable_prefetch, enable_cache, enable_simd) with the int8 pool; each other row
turns one off (or uses a float32 pool). The shipped defaults (cache and prefetch
off) are a row too. The table gives each figure and its ratio to the reference:
> 1.00x means the configuration is slower (or the file bigger) without that
optimization, i.e. the optimization gains that much; < 1.00x means it costs.
Configurations run in a rotating order per repetition; medians over ``--reps``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attrs  # noqa: E402
import numpy as np  # noqa: E402

from _common import DEFAULT_OUT_DIR, Row, print_header, print_kv_table, rotated, write_json  # noqa: E402

from codegraph_store import Store, perfcheck  # noqa: E402

ALL_ON = {"io_optimization": {"enable_batching": True, "enable_compression": True,
                              "enable_prefetch": True},
          "memory_optimization": {"enable_cache": True, "embedding_pool_dtype": "int8"},
          "cpu_optimization": {"enable_simd": True}}


def variant(section: str, key: str, value) -> dict:
    cfg = {s: dict(v) for s, v in ALL_ON.items()}
    cfg[section][key] = value
    return cfg


CONFIGS = {
    "all on (reference)": ALL_ON,
    "enable_batching off": variant("io_optimization", "enable_batching", False),
    "enable_compression off": variant("io_optimization", "enable_compression", False),
    "enable_prefetch off": variant("io_optimization", "enable_prefetch", False),
    "enable_cache off (prefetch needs it)": variant("memory_optimization", "enable_cache", False),
    "enable_simd off": variant("cpu_optimization", "enable_simd", False),
    "float32 pool instead of int8": variant("memory_optimization", "embedding_pool_dtype", "float32"),
    "shipped defaults": {},
}
COLUMNS = [("ingest_s", "ingest", "s"), ("file_mb", "file", "MB"),
           ("get_node_us", "get_node random p50", "us"), ("hot_us", "get_node hot p50", "us"),
           ("walk_ms", "walk p50", "ms"), ("search_ms", "search p50", "ms")]
CALL_ROWS = 10  # nodes per add_nodes call (3x that many edges per add_edges call)
DOC = "Explain how the resolver follows aliases through re-exports and base classes. " * 26


def make_data(n: int):
    rng = np.random.default_rng(perfcheck.SEED + 10)
    nodes = perfcheck.synthetic_nodes(n, 0, rng)
    nodes = [attrs.evolve(x, metadata={"docstring": DOC + str(i)}) if i % 10 == 0 else x
             for i, x in enumerate(nodes)]
    ids = np.array([x.id for x in nodes], np.int64)
    edges = perfcheck.synthetic_edges(ids, 3 * n, set(), rng)
    vectors = perfcheck.unit_rows(rng, n)
    queries = perfcheck.unit_rows(rng, 30)
    return nodes, edges, vectors, queries


def p50_us(fn, args) -> float:
    clock = time.perf_counter_ns
    out = []
    for a in args:
        t0 = clock()
        fn(a)
        out.append(clock() - t0)
    return statistics.median(out) / 1e3


def run_config(path: Path, config: dict, data) -> dict:
    nodes, edges, vectors, queries = data
    perfcheck.remove_store(path)
    ids = [x.id for x in nodes]
    with Store.open(path, config=config) as store:
        t0 = time.perf_counter()
        # Calls of a few rows (as an indexer adds one scope's symbols at a time) in
        # transactions of 5,000 nodes: the write buffer decides how many of those
        # calls share one executemany; calls of 5,000 rows would each be one anyway.
        for s in range(0, len(nodes), 5000):
            with store.transaction():
                for c in range(s, min(s + 5000, len(nodes)), CALL_ROWS):
                    store.add_nodes(nodes[c:c + CALL_ROWS])
        for s in range(0, len(edges), 15000):
            with store.transaction():
                for c in range(s, min(s + 15000, len(edges)), 3 * CALL_ROWS):
                    store.add_edges(edges[c:c + 3 * CALL_ROWS])
        with store.transaction():
            store.add_embeddings(ids, vectors, space="ablation")
        store.search(queries[0], k=10)  # pool built: part of ingest
        ingest = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")
               if not p.name.endswith("-pool1"))
    rng = random.Random(7)
    with Store.open(path, readonly=True, config=config) as store:
        store.search(queries[0], k=10)
        cold = rng.choices(ids, k=5000)
        hot_set = rng.sample(ids, 500)
        hot = [i for i in hot_set for _ in range(20)]
        rng.shuffle(hot)
        starts = rng.sample(ids, 300)

        def walk(i: int) -> None:
            for n in store.neighbors(i):
                store.get_node(n.id)
        result = {"ingest_s": ingest, "file_mb": size / 2**20,
                  "get_node_us": p50_us(store.get_node, cold),
                  "hot_us": p50_us(store.get_node, hot),
                  "walk_ms": p50_us(walk, starts) / 1e3,
                  "search_ms": p50_us(lambda q: store.search(q, k=10), list(queries)) / 1e3}
    perfcheck.remove_store(path)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    print_header("ablation: each optimization off in turn")
    data = make_data(args.nodes)
    path = DEFAULT_OUT_DIR / "ablation.cgdb"
    DEFAULT_OUT_DIR.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for rep in range(args.reps):
        for name in rotated(list(CONFIGS), rep):
            runs[name].append(run_config(path, CONFIGS[name], data))
            print(f"[{time.strftime('%H:%M:%S')}] rep {rep + 1}: {name}", file=sys.stderr, flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k, _, _ in COLUMNS}
           for name, rs in runs.items()}
    ref = med["all on (reference)"]
    header = ("configuration", *(f"{label} ({unit})" for _, label, unit in COLUMNS))
    table = [header]
    rows: list[Row] = []
    for name, m in med.items():
        cells = [name]
        for key, label, unit in COLUMNS:
            ratio = m[key] / ref[key] if ref[key] else float("nan")
            cells.append(f"{m[key]:.3g} ({ratio:.2f}x)")
            rows.append(Row(f"{name}: {label}", m[key], unit, ref[key], ratio))
        table.append(tuple(cells))
    print()
    print_kv_table(f"medians of {args.reps} runs, {args.nodes:,} nodes, {3 * args.nodes:,} edges, "
                   f"{args.nodes:,} x 384 vectors; (ratio to the reference: > 1.00x = that "
                   f"optimization gains this much)", table)
    la = ", ".join(f"{x:.2f}" for x in __import__("os").getloadavg())
    print(f"load average at end: {la}")
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

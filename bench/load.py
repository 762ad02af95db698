#!/usr/bin/env python
"""Load test: readers and writers on one store at once, then a check that every
acknowledged write is there and nothing else changed.

    python bench/load.py [--duration S] [--readers N] [--writers M] [--threads]
                         [--seed-nodes K] [--db PATH] [--json FILE]

1. Seeds a fresh store (default 20,000 nodes, 3 edges each, a 64-dimension
   vector each) and records a digest of every seeded row.
2. Runs N reader and M writer workers for ``--duration`` seconds, as processes
   that each open the store (default) or as threads of one Store (``--threads``).
   Readers mix get_node (40%), neighbors (25%), traverse depth 2 (15%) and
   search k=10 (20%) on seeded ids, and count as an error any answer that is
   wrong for seeded data (a missing node, a neighbour outside the seed).
   Writers run transactions of 20 new nodes, 20 edges (new -> seeded and
   new -> new) and 20 vectors; a transaction is acknowledged when its block
   returns, and the worker logs it.
3. Reports ops/s and p50/p99 per operation, and the errors (any exception).
4. check(): every acknowledged transaction's nodes, edges and vectors are present
   and equal to what was written; the counts are exactly seed + acknowledged
   (so no unacknowledged or partial transaction left rows); the seeded rows'
   digest is unchanged; Store.check() finds no problem.

Exit status 1 on any error, lost write or unexpected change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import DEFAULT_OUT_DIR, Row, print_header, print_table, remove_db, write_json  # noqa: E402

from codegraph_store import Edge, EdgeKind, Node, Store  # noqa: E402
from codegraph_store.monitor import LatencyHistogram  # noqa: E402

DIM = 64
SPACE = "load"
TXN_NODES = 20
READ_MIX = [("get_node", 40), ("neighbors", 25), ("traverse", 15), ("search", 20)]
SEED = 20261205


# ---------------------------------------------------------------- the data

def seed_nodes(n: int) -> list[Node]:
    return [Node.new("function", f"s{i}", f"seed.m{i // 50}.s{i}", file=f"seed/m{i // 50}.py",
                     start_line=1 + i % 50 * 10, end_line=9 + i % 50 * 10,
                     metadata={"signature": f"(x{i % 5}) -> int"}) for i in range(n)]


def vectors_for(ids: list[int]) -> np.ndarray:
    """Deterministic unit vectors per node id (so check() can recompute them)."""
    out = np.empty((len(ids), DIM), np.float32)
    for j, i in enumerate(ids):
        out[j] = np.random.default_rng(i & 0x7FFFFFFF).standard_normal(DIM, dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def txn_rows(writer: int, txn: int, seed_ids: list[int]) -> tuple[list[Node], list[Edge]]:
    """What writer ``writer`` writes in transaction ``txn``: a pure function of both."""
    path = f"load/w{writer}/t{txn}.py"
    nodes = [Node.new("function", f"f{k}", f"load.w{writer}.t{txn}.f{k}", file=path,
                      start_line=1 + 5 * k, end_line=4 + 5 * k, metadata={"txn": txn, "k": k})
             for k in range(TXN_NODES)]
    rng = random.Random(writer * 1_000_003 + txn)
    edges = []
    for k, node in enumerate(nodes):
        if k % 2:
            edges.append(Edge(node.id, EdgeKind.CALLS, nodes[k - 1].id, {"line": k}))
        else:
            edges.append(Edge(node.id, EdgeKind.REFERENCES, rng.choice(seed_ids)))
    return nodes, edges


def seed_store(path: str, n: int) -> tuple[list[int], str, tuple[int, int, int]]:
    for p in Path(path).parent.glob(Path(path).name + "*"):
        p.unlink()
    nodes = seed_nodes(n)
    ids = [x.id for x in nodes]
    rng = random.Random(SEED)
    edges = list({(ids[i], EdgeKind.CALLS, ids[rng.randrange(n)]): None
                  for i in range(n) for _ in range(3)})
    edges = [Edge(s, k, d) for s, k, d in edges if s != d]
    with Store.open(path) as store:
        with store.bulk_load():
            store.add_nodes(nodes)
            store.add_edges(edges)
        with store.transaction():
            store.add_embeddings(ids, vectors_for(ids), space=SPACE)
        store.search(vectors_for(ids[:1])[0], k=1)
        digest = seed_digest(store, ids)
        counts = counts_of(store)
    return ids, digest, counts


def seed_digest(store: Store, ids: list[int]) -> str:
    """A hash over every seeded node, its outgoing edges and its vector."""
    h = hashlib.sha256()
    for node in store.get_nodes(sorted(ids)):
        h.update(repr(node).encode())
    for i in sorted(ids):
        h.update(repr(sorted(store.edges_of(i), key=lambda e: (e.kind, e.dst))).encode())
        h.update(store.get_embedding(i, SPACE).tobytes())
    return h.hexdigest()


def counts_of(store: Store) -> tuple[int, int, int]:
    s = store.stats()
    return s["nodes"], s["edges"], store.spaces()[0]["vectors"]


# ---------------------------------------------------------------- workers

def reader_loop(store: Store, seed_ids: list[int], seed_set: set, stop_at: float, wid: int) -> dict:
    rng = random.Random(wid)
    hists = {name: LatencyHistogram() for name, _ in READ_MIX}
    ops = [name for name, w in READ_MIX for _ in range(w)]
    queries = vectors_for(list(range(1, 65)))
    errors: list[str] = []
    clock = time.perf_counter_ns
    while time.time() < stop_at:
        op = rng.choice(ops)
        i = rng.choice(seed_ids)
        t0 = clock()
        try:
            if op == "get_node":
                ok = store.get_node(i) is not None
            elif op == "neighbors":
                ok = all(n.id in seed_set for n in store.neighbors(i))  # seeded edges stay seeded
            elif op == "traverse":
                store.traverse(i, depth=2)
                ok = True
            else:
                ok = len(store.search(queries[rng.randrange(64)], k=10)) == 10
            if not ok:
                errors.append(f"{op}({i}): wrong answer")
        except Exception as e:  # every failure is counted, none stops the run
            errors.append(f"{op}: {type(e).__name__}: {e}")
        hists[op].record(clock() - t0)
    return {"hists": {k: h.state() for k, h in hists.items()}, "errors": errors, "acked": []}


def writer_loop(store: Store, seed_ids: list[int], stop_at: float, wid: int) -> dict:
    hist = LatencyHistogram()
    acked: list[int] = []
    errors: list[str] = []
    txn = 0
    clock = time.perf_counter_ns
    while time.time() < stop_at:
        nodes, edges = txn_rows(wid, txn, seed_ids)
        t0 = clock()
        try:
            with store.transaction():
                store.add_nodes(nodes)
                store.add_edges(edges)
                store.add_embeddings([n.id for n in nodes], vectors_for([n.id for n in nodes]),
                                     space=SPACE)
            acked.append(txn)  # the block returned: committed
        except Exception as e:
            errors.append(f"write txn {txn}: {type(e).__name__}: {e}")
        hist.record(clock() - t0)
        txn += 1
    return {"hists": {"write_txn": hist.state()}, "errors": errors, "acked": acked, "writer": wid,
            "attempted": txn}


def process_worker(role: str, wid: int, path: str, seed_ids: list[int], start_at: float,
                   duration: float, out: str) -> None:
    try:
        with Store.open(path, readonly=(role == "reader")) as store:
            seed_set = set(seed_ids)
            while time.time() < start_at:
                time.sleep(0.005)
            stop_at = start_at + duration
            if role == "reader":
                result = reader_loop(store, seed_ids, seed_set, stop_at, wid)
            else:
                result = writer_loop(store, seed_ids, stop_at, wid)
    except Exception:
        result = {"hists": {}, "errors": [traceback.format_exc()], "acked": [], "writer": wid}
    result["role"] = role
    Path(out).write_text(json.dumps(result))


# ---------------------------------------------------------------- checking

def check(path: str, seed_ids: list[int], digest: str, seed_counts: tuple[int, int, int],
          results: list[dict]) -> dict:
    """Every acknowledged write present and equal; nothing else added or changed."""
    lost: list[str] = []
    acked = [(r["writer"], t) for r in results if r["role"] == "writer" for t in r["acked"]]
    with Store.open(path, readonly=True) as store:
        for writer, txn in acked:
            nodes, edges = txn_rows(writer, txn, seed_ids)
            got = store.get_nodes([n.id for n in nodes])
            if got != nodes:
                lost.append(f"writer {writer} txn {txn}: nodes differ or missing")
                continue
            for n, e in zip(nodes, edges):
                if e not in store.edges_of(n.id):
                    lost.append(f"writer {writer} txn {txn}: edge {e} missing")
            vecs = vectors_for([n.id for n in nodes])
            for n, v in zip(nodes, vecs):
                stored = store.get_embedding(n.id, SPACE)
                if stored is None or not np.array_equal(stored, v):
                    lost.append(f"writer {writer} txn {txn}: vector of {n.id} differs or missing")
        counts = counts_of(store)
        expected = tuple(c + TXN_NODES * len(acked) for c in seed_counts)
        unexpected = []
        if counts != expected:
            unexpected.append(f"counts (nodes, edges, vectors) {counts}, expected {expected}")
        if seed_digest(store, seed_ids) != digest:
            unexpected.append("seeded rows changed")
        report = store.check()
        if not report.ok:
            unexpected.append(f"Store.check(): {report}")
    return {"acknowledged_txns": len(acked), "lost": lost, "unexpected": unexpected,
            "counts": counts}


# ---------------------------------------------------------------- main

def run(args: argparse.Namespace) -> dict:
    path = args.db or str(DEFAULT_OUT_DIR / "load.cgdb")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    seed_ids, digest, seed_counts = seed_store(path, args.seed_nodes)
    roles = [("reader", i) for i in range(args.readers)] + [("writer", i) for i in range(args.writers)]
    start_at = time.time() + (0.5 if args.threads else 3.0)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.threads:
            with Store.open(path) as store:
                seed_set = set(seed_ids)
                stop_at = start_at + args.duration

                def body(role: str, wid: int) -> None:
                    while time.time() < start_at:
                        time.sleep(0.005)
                    r = (reader_loop(store, seed_ids, seed_set, stop_at, wid) if role == "reader"
                         else writer_loop(store, seed_ids, stop_at, wid))
                    r["role"] = role
                    results.append(r)
                threads = [threading.Thread(target=body, args=rw) for rw in roles]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        else:
            ctx = mp.get_context("spawn")
            procs = []
            for role, wid in roles:
                out = os.path.join(tmp, f"{role}{wid}.json")
                p = ctx.Process(target=process_worker,
                                args=(role, wid, path, seed_ids, start_at, args.duration, out))
                p.start()
                procs.append((p, out, role, wid))
            for p, out, role, wid in procs:
                p.join()
                if p.exitcode != 0 or not os.path.exists(out):
                    results.append({"role": role, "writer": wid, "hists": {}, "acked": [],
                                    "errors": [f"{role} {wid} exited with {p.exitcode}"]})
                else:
                    results.append(json.loads(Path(out).read_text()))
    checked = check(path, seed_ids, digest, seed_counts, results)
    merged: dict[str, LatencyHistogram] = {}
    for r in results:
        for op, state in r["hists"].items():
            merged.setdefault(op, LatencyHistogram()).merge(state)
    errors = [e for r in results for e in r["errors"]]
    ops = {op: {"count": h.count, "per_sec": h.count / args.duration,
                "p50_ms": h.percentile(50) / 1e6 if h.count else None,
                "p99_ms": h.percentile(99) / 1e6 if h.count else None}
           for op, h in sorted(merged.items())}
    return {"mode": "threads" if args.threads else "processes", "readers": args.readers,
            "writers": args.writers, "duration_s": args.duration, "seed_nodes": args.seed_nodes,
            "ops": ops, "errors": len(errors), "error_samples": errors[:10],
            "attempted_txns": sum(r.get("attempted", 0) for r in results),
            **checked, "lost_writes": len(checked["lost"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--threads", action="store_true", help="threads of one Store, not processes")
    ap.add_argument("--seed-nodes", type=int, default=20_000)
    ap.add_argument("--db", help="store file (default bench/out/load.cgdb; recreated)")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    args = ap.parse_args(argv)
    print_header("load test")
    report = run(args)
    rows = [Row(f"{op} ops/s (p50 {o['p50_ms']:.3f} ms, p99 {o['p99_ms']:.3f} ms)", o["per_sec"], "/s")
            for op, o in report["ops"].items() if o["count"]]
    print_table(rows, ratio_note=False)
    print(f"mode {report['mode']}: {args.readers} readers, {args.writers} writers, {args.duration:g} s; "
          f"load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"errors: {report['errors']}" + "".join(f"\n  {e}" for e in report["error_samples"]))
    print(f"acknowledged transactions: {report['acknowledged_txns']} of {report['attempted_txns']} "
          f"attempted; lost writes: {report['lost_writes']}; unexpected changes: "
          f"{len(report['unexpected'])}" + "".join(f"\n  {e}" for e in report["lost"][:10]
                                                  + report["unexpected"]))
    print(f"final counts (nodes, edges, vectors): {report['counts']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if not (report["errors"] or report["lost"] or report["unexpected"]) else 1


if __name__ == "__main__":
    sys.exit(main())

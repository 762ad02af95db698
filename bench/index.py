"""Indexing benchmark: the Python standard library, full build, no-change re-run, one touched file.

    python bench/index.py [--quick] [--json FILE] [--root DIR] [--jobs N] [--repeat R]

The tree (default: this interpreter's standard library) is copied to a temporary
directory so one file can be touched. Baselines measured in the same run: a
bare ``ast.parse`` of every file in one process, and in ``--jobs`` processes
(the floor for any parser built on ``ast``). ``--quick`` indexes a few packages
of the standard library instead of all of it.
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import shutil
import sys
import sysconfig
import tempfile
import time

from _common import Row, Stopwatch, Verdict, median, print_header, print_table, print_verdicts, write_json

from codegraph_store import Store
from codegraph_store.indexer import index_tree, scan

QUICK_PACKAGES = ("json", "email", "asyncio", "collections", "importlib", "logging", "xml")


def _parse_only(paths: list[str]) -> int:
    ok = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                ast.parse(f.read())
            ok += 1
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    return ok


def parse_baseline(root: str, jobs: int) -> tuple[float, float]:
    """Seconds for ast.parse of every file: one process, and ``jobs`` processes."""
    rels, _ = scan(root)
    paths = [os.path.join(root, r) for r in rels]
    with Stopwatch() as one:
        _parse_only(paths)
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(jobs) as pool:
        pool.map(_parse_only, [[]] * jobs)  # start the workers outside the timing
        with Stopwatch() as many:
            pool.map(_parse_only, [paths[i::jobs * 8] for i in range(jobs * 8)])
    return one.seconds, many.seconds


def copy_tree(src: str, dst: str, quick: bool) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "site-packages", "*.pyc")
    if quick:
        os.makedirs(dst)
        for name in QUICK_PACKAGES:
            shutil.copytree(os.path.join(src, name), os.path.join(dst, name), ignore=ignore)
    else:
        shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--root", default=sysconfig.get_path("stdlib"))
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=None,
                        help="full builds to take the median of (default 3, 1 with --quick)")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    print_header("indexing", {"tree": args.root + (" (quick subset)" if args.quick else ""),
                              "jobs": args.jobs})

    work = tempfile.mkdtemp(prefix="cg-bench-index-")
    try:
        tree = os.path.join(work, "tree")
        copy_tree(args.root, tree, args.quick)
        db = os.path.join(work, "index.cgdb")
        full_times, base_one, base_many = [], [], []
        for rep in range(repeat):
            # Baseline and ours alternate so load drift hits both.
            one, many = parse_baseline(tree, args.jobs)
            base_one.append(one)
            base_many.append(many)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            with Store.open(db) as store:
                report = index_tree(store, tree, jobs=args.jobs)
            full_times.append(report.seconds)
            print(f"  run {rep + 1}: full build {report.seconds:.2f} s; ast.parse only "
                  f"{one:.2f} s (1 process), {many:.2f} s ({args.jobs} processes)", flush=True)

        with Store.open(db) as store:
            nochange = [index_tree(store, tree, jobs=args.jobs).seconds for _ in range(5)]
            touch_times = []
            target = os.path.join(tree, "json", "decoder.py")
            for i in range(5):
                with open(target, "a") as f:
                    f.write(f"\n\ndef _bench_touch_{i}():\n    return JSONDecoder()\n")
                touched = index_tree(store, tree, jobs=args.jobs)
                assert touched.parsed == 1, touched
                touch_times.append(touched.seconds)
            stats = store.stats()
            check_ok = store.check(full=False).ok

        symbols = sum(stats["nodes_by_kind"][k] for k in ("class", "function", "method"))
        rows = [
            Row.latency("full build wall", median(full_times), median(base_many), "s"),
            Row("ast.parse only, 1 process", median(base_one), "s"),
            Row.latency("re-run, nothing changed", median(nochange), None, "s"),
            Row.latency("re-run, one file touched", median(touch_times), None, "s"),
            Row("files", stats["files"], "count"),
            Row("files that failed to parse", stats["files_with_errors"], "count"),
            Row("class/function/method nodes", symbols, "count"),
            Row("nodes", stats["nodes"], "count"),
            Row("edges", stats["edges"], "count"),
            Row("nodes/s (full build)", stats["nodes"] / median(full_times), "nodes/s"),
            Row("database size", stats["file_bytes"] / 2**20, "MiB"),
        ]
        print()
        print_table(rows, title=f"baseline for the full build: ast.parse of every file in "
                                f"{args.jobs} processes, nothing else")
        verdicts = [Verdict("store check passes", check_ok, "check(full=False)")]
        if not args.quick:
            verdicts += [
                Verdict("full build <= 30 s", median(full_times) <= 30, f"{median(full_times):.2f} s"),
                Verdict("no-change re-run <= 2 s", median(nochange) <= 2, f"{median(nochange):.3f} s"),
                Verdict("one touched file <= 0.5 s", median(touch_times) <= 0.5,
                        f"{median(touch_times):.3f} s"),
                Verdict(">= 1,700 files", stats["files"] >= 1700, str(stats["files"])),
                Verdict(">= 70,000 class/function/method nodes", symbols >= 70000, str(symbols)),
                Verdict(">= 150,000 edges", stats["edges"] >= 150000, str(stats["edges"])),
            ]
        print_verdicts(verdicts)
        if args.json:
            write_json(args.json, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Damaged-file cases for test_damage.py, run in a child process so that a
segfault or a hang is seen as such.

``python damage.py CASES.json`` reads a list of cases, and for each copies the
pristine files to a scratch directory, applies the damage, opens the store,
reads everything and compares it with the expected dump. Before each case it
prints ``start <n>``; after it ``result <n> <outcome> <detail>``, where outcome
is one of:

``ok``          every read was right
``refused``     CorruptStoreError, NotAStoreError or SchemaTooNewError (named in detail)
``earlier``     every read was right for the state before the last commits (a WAL
                whose damaged frames SQLite's checksums discard)
``repaired``    a read was wrong, store.check() reported it and repair() made it right
``detected``    a read was wrong or raised another typed error, and store.check()
                reported the damage
``undetected``  a read was wrong and store.check() found nothing: a changed
                value inside a record, which SQLite cannot see without page checksums
``untyped``     any other exception (a bug)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np

from codegraph_store import Store
from codegraph_store.errors import CodegraphError

QUERIES = np.random.default_rng(99).standard_normal((3, 8)).astype(np.float32)


def dump(store: Store) -> dict:
    """Everything a user can read, in a comparable form."""
    nodes = [[n.id, n.kind.label, n.name, n.qualname, n.file, n.start_line, n.end_line, n.metadata]
             for n in store.iter_nodes()]
    edges = [[e.src, e.kind.label, e.dst, e.metadata] for e in store.iter_edges()]
    by_name = [[n.id for n in store.find(row[2])] for row in nodes[::7]]
    callers = [[n.id for n in store.callers(row[0])] for row in nodes[::5]]
    vectors = [None if (v := store.get_embedding(row[0], "s")) is None else v.tolist()
               for row in nodes[::3]]
    hits = [[[h.node.id, round(h.score, 6)] for h in hs] for hs in store.search(QUERIES, k=5, space="s")]
    return {"nodes": nodes, "edges": edges, "by_name": by_name, "callers": callers,
            "vectors": vectors, "hits": hits}


def apply_damage(path: str, case: dict) -> None:
    if case["op"] == "truncate":
        with open(path, "r+b") as f:
            f.truncate(case["at"])
    else:
        with open(path, "r+b") as f:
            f.seek(case["at"])
            byte = f.read(1)
            if not byte:
                return
            f.seek(case["at"])
            f.write(bytes([byte[0] ^ case["mask"]]))


REFUSALS = ("CorruptStoreError", "NotAStoreError", "SchemaTooNewError")


def run_case(case: dict, expected: dict, earlier: dict | None) -> tuple[str, str]:
    """The outcome of one damaged copy (see the module docstring for the names)."""
    scratch = tempfile.mkdtemp(prefix="damage-")
    try:
        for name in os.listdir(case["source"]):
            shutil.copyfile(os.path.join(case["source"], name), os.path.join(scratch, name))
        db = os.path.join(scratch, "d.cgdb")
        apply_damage(os.path.join(scratch, case["file"]), case)
        try:
            with Store.open(db) as store:
                try:
                    got = json.loads(json.dumps(dump(store)))
                except CodegraphError as e:
                    if type(e).__name__ in REFUSALS:
                        return "refused", type(e).__name__
                    got = {"error": type(e).__name__}
                if got == expected:
                    return "ok", ""
                if got == earlier:
                    return "earlier", ""
                problems = list(store.check().problems)
                if not problems:
                    return "undetected", json.dumps(sorted(k for k in got if got[k] != expected.get(k)))
                store.repair()
                if not store.check().problems and json.loads(json.dumps(dump(store))) == expected:
                    return "repaired", problems[0][:60]
                return "detected", problems[0][:60]
        except CodegraphError as e:
            if type(e).__name__ in REFUSALS:
                return "refused", type(e).__name__
            return "untyped", f"{type(e).__name__} on open: {e}"
        except Exception as e:  # noqa: BLE001 - reported to the test as a failure
            import traceback
            where = traceback.extract_tb(e.__traceback__)[-2:]
            return "untyped", f"{type(e).__name__}: {e} at {[(f.name, f.lineno) for f in where]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(cases_file: str) -> None:
    with open(cases_file) as f:
        spec = json.load(f)
    expected = {k: json.load(open(v)) for k, v in spec["expected"].items()}
    for n, case in enumerate(spec["cases"]):
        if n < spec.get("skip", 0):
            continue
        print(f"start {n}", flush=True)
        earlier = spec["earlier"].get(case["state"])
        outcome, detail = run_case(case, expected[case["state"]], earlier and expected[earlier])
        print(f"result {n} {outcome} {detail}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

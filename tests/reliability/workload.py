"""The numbered transactions the reliability tests write, and how they are checked.

Transaction ``i`` writes file ``t<i>.py``: NODES_PER_TXN function nodes (metadata
names the transaction, sometimes large enough to be compressed), a chain of
``calls`` edges between them and one DIM-dimensional vector per node, all in
one store transaction. Everything is a pure function of ``i``, so a checker in
another process knows exactly what an acknowledged transaction must have left.

Run as a script it is the child process of the crash and concurrency tests:
``python workload.py crash DB`` writes transactions from the first one missing
and prints each number after its commit returned.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from codegraph_store import Edge, EdgeKind, Node, Store

NODES_PER_TXN = 3
DIM = 16
SPACE = "rel"


def txn_nodes(i: int) -> list[Node]:
    pad = "x" * (2000 if i % 3 == 0 else 10)  # every third record above the compression threshold
    return [Node.new("function", f"f{i}_{j}", f"t{i}.f{i}_{j}", file=f"t{i}.py",
                     start_line=j * 10 + 1, end_line=j * 10 + 5,
                     metadata={"txn": i, "j": j, "pad": pad})
            for j in range(NODES_PER_TXN)]


def txn_edges(nodes: list[Node]) -> list[Edge]:
    return [Edge(a.id, EdgeKind.CALLS, b.id, {"w": k}) for k, (a, b) in enumerate(zip(nodes, nodes[1:]))]


def txn_vectors(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((NODES_PER_TXN, DIM)).astype(np.float32)


def write_txn(store: Store, i: int) -> None:
    nodes = txn_nodes(i)
    with store.transaction():
        store.add_nodes(nodes)
        store.add_edges(txn_edges(nodes))
        store.add_embeddings([n.id for n in nodes], txn_vectors(i), space=SPACE)


def template_store(directory) -> str:
    """A store holding transaction 0, for tests that copy it before each run."""
    path = os.path.join(str(directory), "template.cgdb")
    with Store.open(path) as s:
        write_txn(s, 0)
    return path


def present_txns(store: Store) -> set[int]:
    """Numbers of the transactions with at least one node in the store."""
    return {int(f.path[1:-3]) for f in store.files() if f.path.startswith("t")}


# Transactions whose vectors one check searches for, at most (evenly spaced over
# the checked ones): each query scans the whole pool, so searching for every
# vector of a store grown by hundreds of kills would cost its size squared.
SEARCH_SAMPLE = 2000


def check_txns(store: Store, acked: set[int], search: bool = True,
               skip: set[int] = frozenset()) -> set[int]:
    """Assert every acknowledged transaction is present and every present one whole
    (those in ``skip`` were checked whole before); with ``search``, that a search finds
    each checked vector (of at most SEARCH_SAMPLE checked transactions) with an
    exact score. Returns the transactions present."""
    present = present_txns(store)
    missing = acked - present
    assert not missing, f"acknowledged transactions lost: {sorted(missing)[:10]}"
    ids, vecs = [], []
    checked = sorted(present - skip)
    searched = set(checked[::-(-len(checked) // SEARCH_SAMPLE) or 1])
    for i in checked:
        want = txn_nodes(i)
        got = store.get_nodes([n.id for n in want])
        assert got == want, f"transaction {i} is not whole: {got}"
        assert store.find(file=f"t{i}.py") == want
        for a, b in zip(want, want[1:]):
            edges = store.edges_of(a.id)
            assert [(e.kind, e.dst) for e in edges] == [(EdgeKind.CALLS, b.id)], (i, edges)
        v = txn_vectors(i)
        for n, row in zip(want, v):
            got_vec = store.get_embedding(n.id, SPACE)
            assert got_vec is not None and np.array_equal(got_vec, row), f"vector of txn {i}"
        if i in searched:
            ids += [n.id for n in want]
            vecs.append(v)
    if search and ids:
        queries = np.concatenate(vecs)
        hits = store.search(queries, k=1, space=SPACE)
        for nid, q, h in zip(ids, queries, hits):
            assert h and h[0].node.id == nid, f"search for node {nid} found {h}"
            assert abs(h[0].score - 1.0) < 1e-6
    return present


def crash_writer(db: str) -> None:
    """Write transactions forever, acknowledging each on stdout after its commit."""
    out = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
    with Store.open(db) as store:
        i = max(present_txns(store), default=-1) + 1
        while True:
            write_txn(store, i)
            out.write(f"{i}\n")
            i += 1


# --------------------------------------------------------------- concurrency
# Group files g<k>.py hold members m0..m<c-1> and a node "count" whose metadata
# says c. A writer changes c and the members in one transaction, so a reader
# seeing a count that disagrees with the members saw a torn transaction.

GROUPS = 4
MAX_MEMBERS = 6


def group_nodes(k: int, c: int, tag: int) -> list[Node]:
    f = f"g{k}.py"
    members = [Node.new("variable", f"m{j}", f"g{k}.m{j}", file=f, start_line=j + 2, end_line=j + 2,
                        metadata={"tag": tag}) for j in range(c)]
    counter = Node.new("variable", "count", f"g{k}.count", file=f, start_line=1, end_line=1,
                       metadata={"count": c, "tag": tag})
    return members + [counter]


def write_group(store: Store, k: int, c: int, tag: int) -> None:
    nodes = group_nodes(k, c, tag)
    gone = [n.id for n in group_nodes(k, MAX_MEMBERS, tag)[c:MAX_MEMBERS]]
    vecs = np.random.default_rng(tag).standard_normal((len(nodes), DIM)).astype(np.float32)
    with store.transaction():
        store.delete_nodes(gone)
        store.add_nodes(nodes)
        store.add_embeddings([n.id for n in nodes], vecs, space=SPACE)


def group_is_whole(store: Store, k: int) -> bool:
    """One statement reads the group's nodes: the counter must match the members
    and every node must carry the same tag (written by one transaction)."""
    nodes = store.find(file=f"g{k}.py")
    if not nodes:
        return True
    counters = [n for n in nodes if n.name == "count"]
    tags = {n.metadata["tag"] for n in nodes}
    return len(counters) == 1 and counters[0].metadata["count"] == len(nodes) - 1 and len(tags) == 1


def group_writer(db: str, seed: str, count: str) -> None:
    """Write ``count`` random group changes; print how many raised BusyError."""
    from codegraph_store.errors import BusyError
    rng = np.random.default_rng(int(seed))
    busy = 0
    with Store.open(db) as store:
        for n in range(int(count)):
            try:
                write_group(store, int(rng.integers(GROUPS)), int(rng.integers(1, MAX_MEMBERS + 1)),
                            int(seed) * 1_000_000 + n)
            except BusyError:
                busy += 1
    print(busy, flush=True)


def group_reader(db: str, stop_file: str) -> None:
    """Check the groups until ``stop_file`` exists; print checks and torn reads."""
    checks = torn = 0
    with Store.open(db, readonly=True) as store:
        while not os.path.exists(stop_file) or checks == 0:
            for k in range(GROUPS):
                checks += 1
                torn += not group_is_whole(store, k)
            hits = store.search(np.ones(DIM, np.float32), k=5, space=SPACE) if store.spaces() else []
            torn += any(h.node.file is None or not h.node.file.startswith("g") for h in hits)
    print(checks, torn, flush=True)


if __name__ == "__main__":
    {"crash": crash_writer, "group_writer": group_writer,
     "group_reader": group_reader}[sys.argv[1]](*sys.argv[2:])

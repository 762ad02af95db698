"""Store.search / get_embedding / spaces / context: exact answers against a numpy
float64 reference, filters, batch queries, typed errors that write nothing, several
spaces, text queries on built-in embedder spaces, and graph-expanded context."""

from __future__ import annotations

import hashlib
import json

import apsw
import numpy as np
import pytest

from codegraph_store import Edge, EdgeKind, Node, NodeKind, Store
from codegraph_store.embedders import HashingEmbedder, node_text
from codegraph_store.errors import (InvalidArgumentError, InvalidTypeError, NotFoundError)

DIM = 16
FILES = ["src/a.py", "src/b.py", "src/sub/c.py", "lib/d.py", "srcx.py", "src.py"]
KINDS = ["function", "class", "method"]


# --------------------------------------------------------------------------- helpers


def corpus_nodes(n: int = 60) -> list[Node]:
    """Node i lives in FILES[i % 6] and has kind KINDS[(i // 6) % 3]."""
    return [Node.new(KINDS[(i // 6) % 3], f"n{i}", file=FILES[i % 6], start_line=i + 1)
            for i in range(n)]


def rand(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def ref_scores(metric, queries, vecs) -> np.ndarray:
    q = np.atleast_2d(np.asarray(queries, np.float32)).astype(np.float64)
    v = np.asarray(vecs, np.float32).astype(np.float64)
    if metric == "dot":
        return q @ v.T
    if metric == "cosine":
        return (q @ v.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(v, axis=1)[None, :]
    return ((q[:, None, :] - v[None, :, :]) ** 2).sum(-1)


def reference(metric, queries, ids, vecs, k, allowed=None):
    """Per query, [(id, score)] best first among ``allowed`` ids (all when None)."""
    keep = [j for j, i in enumerate(ids) if allowed is None or i in allowed]
    scores = ref_scores(metric, queries, np.asarray(vecs)[keep])
    out = []
    kept_ids = np.array([ids[j] for j in keep], dtype=np.int64)
    for row in scores:
        # Best first; equal scores: lower node id first (the store's tie order).
        order = np.lexsort((kept_ids, row if metric == "l2" else -row))[:k]
        out.append([(ids[keep[j]], float(row[j])) for j in order])
    return out


def pairs(hits):
    return [(h.node.id, h.score) for h in hits]


def same(a, b, tol=1e-12):
    """Two result lists agree: the same ids in the same order, scores within ``tol``
    (the float64 rescoring is a BLAS product whose last bit depends on the batch shape)."""
    return ([h.node.id for h in a] == [h.node.id for h in b]
            and all(abs(x.score - y.score) <= tol for x, y in zip(a, b)))


def assert_hits(hits, expected, tol=1e-9):
    assert [h.node.id for h in hits] == [i for i, _ in expected]
    for h, (_, s) in zip(hits, expected):
        assert abs(h.score - s) <= tol


def snapshot(store: Store) -> tuple:
    """Everything an embedding write could change, read with a separate connection."""
    conn = apsw.Connection(store._path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        emb = conn.execute("SELECT space_id, node_id, slot, vec FROM embeddings"
                           " ORDER BY space_id, node_id").fetchall()
        digest = hashlib.sha256(repr(emb).encode()).hexdigest()
        return (len(emb), digest,
                conn.execute("SELECT * FROM spaces ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM free_slots").fetchall(),
                conn.execute("SELECT * FROM sqlite_sequence ORDER BY name").fetchall(),
                conn.execute("SELECT count(*) FROM nodes").fetchone())
    finally:
        conn.close()


def pool_bytes(store: Store, space_id: int = 1) -> bytes:
    with open(f"{store._path}-pool{space_id}", "rb") as f:
        return f.read()


@pytest.fixture
def seeded(store):
    """The default-config store with 60 nodes and a cosine space 'sp' of 60 random vectors."""
    nodes = corpus_nodes()
    store.add_nodes(nodes)
    vecs = rand(60, 1)
    store.add_embeddings([n.id for n in nodes], vecs, space="sp")
    return store, nodes, vecs


Q = rand(8, 77)


# --------------------------------------------------------------------------- basics


def test_single_query_returns_exact_hits_with_nodes(seeded):
    store, nodes, vecs = seeded
    ids = [n.id for n in nodes]
    hits = store.search(Q[0], k=7)
    assert_hits(hits, reference("cosine", Q[0], ids, vecs, 7)[0])
    by_id = {n.id: n for n in nodes}
    assert [h.node for h in hits] == [by_id[h.node.id] for h in hits]
    # A list and a float64 array are the same query.
    assert pairs(store.search(Q[0].tolist(), k=7)) == pairs(hits)
    assert pairs(store.search(Q[0].astype(np.float64), k=7)) == pairs(hits)


def test_batch_results_equal_single_results(seeded):
    store, nodes, vecs = seeded
    batch = store.search(Q, k=6)
    assert isinstance(batch, list) and len(batch) == len(Q)
    singles = [store.search(q, k=6) for q in Q]
    assert all(same(b, one) for b, one in zip(batch, singles))
    exp = reference("cosine", Q, [n.id for n in nodes], vecs, 6)
    for hits, e in zip(batch, exp):
        assert_hits(hits, e)
    # A (1, dim) matrix is a batch of one.
    one = store.search(Q[:1], k=6)
    assert len(one) == 1 and same(one[0], batch[0])
    # An empty batch returns no lists.
    assert store.search(np.empty((0, DIM), np.float32), k=3) == []


@pytest.mark.parametrize("k", [60, 61, 1000])
def test_k_larger_than_the_vectors_returns_all_of_them(seeded, k):
    store, nodes, vecs = seeded
    hits = store.search(Q[1], k=k)
    assert len(hits) == 60
    assert_hits(hits, reference("cosine", Q[1], [n.id for n in nodes], vecs, 60)[0])
    batch = store.search(Q[:3], k=k)
    assert [len(b) for b in batch] == [60, 60, 60]


@pytest.mark.parametrize("k", [2**62, 2**63], ids=["2**62", "2**63"])
def test_a_huge_k_returns_every_vector(seeded, k):
    store, nodes, vecs = seeded
    assert len(store.search(Q[1], k=k)) == 60


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_metrics_rank_and_score_exactly(store, metric):
    nodes = corpus_nodes(40)
    store.add_nodes(nodes)
    vecs = rand(40, 3) * np.float32(2.0)
    store.add_embeddings([n.id for n in nodes], vecs, space="m", metric=metric)
    got = store.search(Q, k=5)
    for hits, e in zip(got, reference(metric, Q, [n.id for n in nodes], vecs, 5)):
        assert_hits(hits, e)
    assert store.spaces()[0]["metric"] == metric


def test_a_zero_query_is_fine_for_dot_and_l2(store):
    nodes = corpus_nodes(10)
    store.add_nodes(nodes)
    vecs = rand(10, 4)
    store.add_embeddings([n.id for n in nodes[:5]], vecs[:5], space="d", metric="dot")
    store.add_embeddings([n.id for n in nodes[5:]], vecs[5:], space="l", metric="l2")
    zero = np.zeros(DIM)
    hits = store.search(zero, k=5, space="d")
    assert sorted(pairs(hits)) == sorted((n.id, 0.0) for n in nodes[:5])
    hits = store.search(zero, k=5, space="l")
    assert_hits(hits, reference("l2", zero, [n.id for n in nodes[5:]], vecs[5:], 5)[0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("scale", [1e-25, 1e25])
def test_cosine_search_is_scale_invariant(seeded, scale):
    store, nodes, vecs = seeded
    q = Q[2]
    expected = store.search(q, k=5)
    got = store.search(q.astype(np.float64) * scale, k=5)
    assert [h.node.id for h in got] == [h.node.id for h in expected]
    for a, b in zip(got, expected):
        # The scaled query is rounded to float32 on the way in (2**-24 relative).
        assert a.score == pytest.approx(b.score, abs=1e-6)


def test_cosine_search_moderate_scales_give_the_same_answer(seeded):
    store, nodes, vecs = seeded
    base = pairs(store.search(Q[2], k=5))
    for scale in (1e-15, 1e-3, 1e3, 1e15):
        got = pairs(store.search(Q[2].astype(np.float64) * scale, k=5))
        assert [i for i, _ in got] == [i for i, _ in base]
        assert np.allclose([s for _, s in got], [s for _, s in base], atol=1e-9)


# --------------------------------------------------------------------------- filters


def _allowed(nodes, pred):
    return {n.id for n in nodes if pred(n)}


FILTERS = {
    "kind-str": ({"kinds": "class"}, lambda n: n.kind == NodeKind.CLASS),
    "kind-list": ({"kinds": ["class", "method"]}, lambda n: n.kind in (NodeKind.CLASS, NodeKind.METHOD)),
    "kind-enum": ({"kinds": NodeKind.METHOD}, lambda n: n.kind == NodeKind.METHOD),
    "kind-code": ({"kinds": 2}, lambda n: n.kind == NodeKind.CLASS),
    "file-str": ({"files": "src/a.py"}, lambda n: n.file == "src/a.py"),
    "file-list": ({"files": ["src/a.py", "lib/d.py"]}, lambda n: n.file in ("src/a.py", "lib/d.py")),
    "dir": ({"files": "src/"}, lambda n: n.file.startswith("src/")),
    "nested-dir": ({"files": ["src/sub/"]}, lambda n: n.file == "src/sub/c.py"),
    "dir-and-file": ({"files": ["src/sub/", "srcx.py"]}, lambda n: n.file in ("src/sub/c.py", "srcx.py")),
    "file-like-dir-name": ({"files": ["src.py"]}, lambda n: n.file == "src.py"),
    "kind-and-dir": ({"kinds": "function", "files": "src/"},
                     lambda n: n.kind == NodeKind.FUNCTION and n.file.startswith("src/")),
}


@pytest.mark.parametrize("name", list(FILTERS) + ["ids"])
def test_filters_return_k_allowed_hits_even_when_the_top_k_has_none(store, name):
    nodes = corpus_nodes(90)
    store.add_nodes(nodes)
    if name == "ids":
        kwargs, allowed = None, {n.id for n in nodes[3::7]}
        kwargs = {"ids": sorted(allowed)}
    else:
        kwargs, pred = FILTERS[name]
        allowed = _allowed(nodes, pred)
    assert 6 <= len(allowed) <= 60
    # Allowed nodes point away from the query, every other node towards it.
    noise = rand(90, 5) * np.float32(0.3)
    e0 = np.zeros(DIM, np.float32)
    e0[0] = 1
    vecs = np.stack([noise[i] + (-3 if n.id in allowed else 3) * e0 for i, n in enumerate(nodes)])
    store.add_embeddings([n.id for n in nodes], vecs, space="sp")
    ids = [n.id for n in nodes]
    k = 5
    unfiltered = store.search(e0, k=k)
    assert not {h.node.id for h in unfiltered} & allowed
    hits = store.search(e0, k=k, **kwargs)
    assert len(hits) == k
    assert {h.node.id for h in hits} <= allowed
    assert_hits(hits, reference("cosine", e0, ids, vecs, k, allowed)[0])
    # All of them when k exceeds the allowed count, and never a disallowed node.
    everything = store.search(e0, k=200, **kwargs)
    assert_hits(everything, reference("cosine", e0, ids, vecs, 200, allowed)[0])
    assert len(everything) == len(allowed)
    # A batch with the filter equals the single queries.
    batch = store.search(np.stack([e0, -e0, noise[0]]), k=k, **kwargs)
    assert all(same(b, store.search(q, k=k, **kwargs)) for b, q in zip(batch, (e0, -e0, noise[0])))


NOTHING = {
    "ids-empty": lambda nodes: {"ids": []},
    "kind-absent": lambda nodes: {"kinds": "variable"},
    "kinds-empty": lambda nodes: {"kinds": []},
    "file-absent": lambda nodes: {"files": ["nope.py"]},
    "dir-absent": lambda nodes: {"files": "nope/"},
    "dir-without-slash": lambda nodes: {"files": "src"},  # an exact path: no file is called 'src'
    "id-absent": lambda nodes: {"ids": [12345]},
    "disjoint": lambda nodes: {"kinds": "class",
                               "ids": [n.id for n in nodes if n.kind == NodeKind.FUNCTION]},
}


@pytest.mark.parametrize("case", list(NOTHING))
def test_filters_that_allow_nothing_return_no_hits(seeded, case):
    store, nodes, vecs = seeded
    kwargs = NOTHING[case](nodes)
    assert store.search(Q[0], k=5, **kwargs) == []
    assert store.search(Q[:3], k=5, **kwargs) == [[], [], []]


def test_an_empty_files_filter_allows_nothing(seeded):
    store, nodes, vecs = seeded
    assert store.search(Q[0], k=5, files=[]) == []


def test_a_filter_that_allows_one_node(seeded):
    store, nodes, vecs = seeded
    one = nodes[17]
    expected = [(one.id, float(ref_scores("cosine", Q[0], vecs[17:18])[0, 0]))]
    for kwargs in ({"ids": [one.id]}, {"ids": (one.id,)}, {"ids": iter([one.id])},
                   {"ids": [one.id], "kinds": ["class", "function", "method"]}):
        assert_hits(store.search(Q[0], k=5, **kwargs), expected)
    # A node that exists but has no vector in the space is never returned.
    extra = Node.new("function", "lonely", file="src/a.py", start_line=999)
    store.add_nodes([extra])
    assert_hits(store.search(Q[0], k=5, ids=[one.id, extra.id]), expected)


def test_filters_that_allow_every_node_equal_no_filter(seeded):
    store, nodes, vecs = seeded
    full = store.search(Q, k=60)
    for kwargs in ({"kinds": KINDS}, {"files": ["src/", "lib/", "srcx.py", "src.py"]},
                   {"files": FILES}, {"ids": [n.id for n in nodes]},
                   {"kinds": list(NodeKind)}):
        got = store.search(Q, k=60, **kwargs)
        assert all(same(a, b) for a, b in zip(got, full))


def test_a_node_without_a_file_passes_kind_filters_but_never_file_filters(seeded):
    store, nodes, vecs = seeded
    loose = Node.new("function", "loose", file=None)
    store.add_nodes([loose])
    v = Q[0] * 10
    store.add_embeddings([loose.id], v, space="sp")
    assert store.search(Q[0], k=1, kinds="function")[0].node.id == loose.id
    for files in ("src/", FILES, ["src/", "lib/", "srcx.py", "src.py"]):
        assert loose.id not in {h.node.id for h in store.search(Q[0], k=100, files=files)}


# --------------------------------------------------------------------------- bad input: writes


def _bad_vectors():
    good = np.ones((2, DIM), np.float32)
    nan, inf, ninf, big = good.copy(), good.copy(), good.copy(), good.astype(np.float64)
    nan[1, 3] = np.nan
    inf[0, 0] = np.inf
    ninf[1, 15] = -np.inf
    big[0, 2] = 1e39  # finite in float64, inf in float32
    return {
        "wrong-dim": (np.ones((2, DIM - 1)), InvalidArgumentError),
        "wider-dim": (np.ones((2, DIM + 1)), InvalidArgumentError),
        "zero-dim": (np.ones((2, 0)), InvalidArgumentError),
        "3-d": (np.ones((2, 1, DIM)), InvalidArgumentError),
        "strings": (np.array([["a"] * DIM] * 2), InvalidTypeError),
        "object": (np.array([[1.0] * DIM, [None] * DIM], dtype=object), InvalidTypeError),
        "object-numbers": (np.ones((2, DIM)).astype(object), InvalidTypeError),
        "str": ("0.5 " * DIM, InvalidTypeError),
        "bytes": (bytes(8 * DIM), InvalidTypeError),
        "ragged": ([[1.0] * DIM, [1.0] * (DIM - 1)], InvalidTypeError),
        "bool": (np.ones((2, DIM), bool), InvalidTypeError),
        "complex": (np.ones((2, DIM), complex), InvalidTypeError),
        "none": (None, InvalidTypeError),
        "nan": (nan, InvalidArgumentError),
        "inf": (inf, InvalidArgumentError),
        "-inf": (ninf, InvalidArgumentError),
        "beyond-float32": (big, InvalidArgumentError),
        "three-vectors-two-ids": (np.ones((3, DIM)), InvalidArgumentError),
        "one-vector-two-ids": (np.ones(DIM), InvalidArgumentError),
    }


BAD_VECTORS = _bad_vectors()


@pytest.mark.parametrize("space", ["sp", "fresh"])
@pytest.mark.parametrize("case", list(BAD_VECTORS))
def test_bad_vectors_raise_typed_errors_and_write_nothing(seeded, case, space):
    store, nodes, vecs = seeded
    vectors, error = BAD_VECTORS[case]
    if space == "fresh" and case in ("wrong-dim", "wider-dim"):
        error = None  # a new space takes any dimension: checked below as a success
    before, pool = snapshot(store), pool_bytes(store)
    if error is None:
        assert store.add_embeddings([nodes[0].id, nodes[1].id], vectors, space=space) == 2
        return
    with pytest.raises(error):
        store.add_embeddings([nodes[0].id, nodes[1].id], vectors, space=space)
    assert snapshot(store) == before
    assert pool_bytes(store) == pool


BAD_WRITES = {
    "missing-node": (lambda n: dict(node_ids=[n[0].id, 12345]), NotFoundError),
    "all-missing": (lambda n: dict(node_ids=[12345, 67890]), NotFoundError),
    "duplicate-ids": (lambda n: dict(node_ids=[n[0].id, n[0].id]), InvalidArgumentError),
    "id-zero": (lambda n: dict(node_ids=[0, n[0].id]), InvalidArgumentError),
    "id-negative": (lambda n: dict(node_ids=[-5, n[0].id]), InvalidArgumentError),
    "id-bool": (lambda n: dict(node_ids=[True, n[0].id]), InvalidTypeError),
    "id-str": (lambda n: dict(node_ids=["1", n[0].id]), InvalidTypeError),
    "ids-str": (lambda n: dict(node_ids="12"), InvalidTypeError),
    "ids-int": (lambda n: dict(node_ids=5), InvalidTypeError),
    "same-name-other-dim": (lambda n: dict(vectors=np.ones((2, 8))), InvalidArgumentError),
    "same-name-other-metric": (lambda n: dict(metric="l2"), InvalidArgumentError),
    "same-name-dot": (lambda n: dict(metric="dot"), InvalidArgumentError),
    "unknown-metric": (lambda n: dict(space="new", metric="euclid"), InvalidArgumentError),
    "metric-none": (lambda n: dict(space="new", metric=None), InvalidArgumentError),
    "empty-space-name": (lambda n: dict(space=""), InvalidArgumentError),
    "blank-space-name": (lambda n: dict(space="   "), InvalidArgumentError),
    "new-space-missing-node": (lambda n: dict(space="new", node_ids=[n[0].id, 12345]), NotFoundError),
    "new-space-nan": (lambda n: dict(space="new", vectors=np.full((2, DIM), np.nan)),
                      InvalidArgumentError),
}


@pytest.mark.parametrize("case", list(BAD_WRITES))
def test_bad_writes_raise_typed_errors_and_write_nothing(seeded, case):
    store, nodes, vecs = seeded
    make, error = BAD_WRITES[case]
    args = dict(node_ids=[nodes[0].id, nodes[1].id], vectors=np.ones((2, DIM)), space="sp",
                metric="cosine")
    args.update(make(nodes))
    before, pool = snapshot(store), pool_bytes(store)
    with pytest.raises(error):
        store.add_embeddings(**args)
    assert snapshot(store) == before
    assert pool_bytes(store) == pool
    assert [s["name"] for s in store.spaces()] == ["sp"]


def test_a_failed_add_inside_a_transaction_leaves_no_space_behind(seeded):
    store, nodes, vecs = seeded
    before = snapshot(store)
    with store.transaction():
        with pytest.raises(NotFoundError):
            store.add_embeddings([12345], np.ones(DIM), space="new")
    assert snapshot(store) == before


def test_a_space_name_of_the_wrong_type_is_a_type_error(seeded):
    store, nodes, vecs = seeded
    with pytest.raises(InvalidTypeError):
        store.add_embeddings([nodes[0].id], np.ones(DIM), space=5)


def test_a_space_name_of_the_wrong_type_writes_nothing(seeded):
    store, nodes, vecs = seeded
    before = snapshot(store)
    for space in (5, None, b"sp"):
        with pytest.raises((InvalidTypeError, InvalidArgumentError)):
            store.add_embeddings([nodes[0].id], np.ones(DIM), space=space)
    assert snapshot(store) == before


def test_delete_embeddings_errors_write_nothing(seeded):
    store, nodes, vecs = seeded
    before, pool = snapshot(store), pool_bytes(store)
    with pytest.raises(NotFoundError):
        store.delete_embeddings([nodes[0].id], space="nope")
    with pytest.raises(InvalidTypeError):
        store.delete_embeddings([nodes[0].id, "x"], space="sp")
    with pytest.raises(InvalidTypeError):
        store.delete_embeddings(nodes[0].id, space="sp")
    store.delete_embeddings([12345], space="sp")  # absent: ignored
    store.delete_embeddings([], space="sp")
    assert snapshot(store) == before
    assert pool_bytes(store) == pool


def test_an_empty_add_writes_nothing(seeded):
    store, nodes, vecs = seeded
    before = snapshot(store)
    assert store.add_embeddings([], np.empty((0, DIM)), space="sp") == 0
    assert store.add_embeddings([], np.empty((0, 4)), space="never") == 0
    assert snapshot(store) == before
    assert [s["name"] for s in store.spaces()] == ["sp"]


# --------------------------------------------------------------------------- bad input: queries


def _bad_queries():
    nan = Q[0].copy()
    nan[4] = np.nan
    inf = Q[0].copy()
    inf[0] = np.inf
    batch_nan = Q[:3].copy()
    batch_nan[2, 1] = np.nan
    batch_zero = Q[:3].copy()
    batch_zero[1] = 0
    return {
        "wrong-dim": ({"query": np.ones(DIM - 1)}, InvalidArgumentError),
        "wrong-dim-batch": ({"query": np.ones((2, DIM + 1))}, InvalidArgumentError),
        "3-d": ({"query": np.ones((1, 1, DIM))}, InvalidArgumentError),
        "strings": ({"query": np.array(["1"] * DIM)}, InvalidTypeError),
        "object": ({"query": np.array([1.0] * (DIM - 1) + [None], dtype=object)}, InvalidTypeError),
        "bytes": ({"query": bytes(4 * DIM)}, InvalidTypeError),
        "dict": ({"query": {"a": 1}}, InvalidTypeError),
        "none": ({"query": None}, InvalidTypeError),
        "bool": ({"query": np.ones(DIM, bool)}, InvalidTypeError),
        "nan": ({"query": nan}, InvalidArgumentError),
        "inf": ({"query": inf}, InvalidArgumentError),
        "nan-in-batch": ({"query": batch_nan}, InvalidArgumentError),
        "zero-cosine": ({"query": np.zeros(DIM)}, InvalidArgumentError),
        "zero-row-in-batch": ({"query": batch_zero}, InvalidArgumentError),
        "k-0": ({"k": 0}, InvalidArgumentError),
        "k-negative": ({"k": -3}, InvalidArgumentError),
        "k-float": ({"k": 2.0}, InvalidTypeError),
        "k-str": ({"k": "3"}, InvalidTypeError),
        "k-bool": ({"k": True}, InvalidTypeError),
        "k-none": ({"k": None}, InvalidTypeError),
        "unknown-space": ({"space": "nope"}, NotFoundError),
        "space-int": ({"space": 5}, InvalidTypeError),
        "text-on-external-space": ({"query": "parse json"}, InvalidArgumentError),
        "unknown-kind": ({"kinds": "nope"}, InvalidArgumentError),
        "kind-code-unknown": ({"kinds": 99}, InvalidArgumentError),
        "file-none": ({"files": [None]}, InvalidTypeError),
        "file-empty": ({"files": [""]}, InvalidArgumentError),
        "ids-int": ({"ids": 5}, InvalidTypeError),
        "ids-str": ({"ids": "12"}, InvalidTypeError),
        "id-str": ({"ids": ["x"]}, InvalidTypeError),
        "id-zero": ({"ids": [0]}, InvalidArgumentError),
    }


BAD_QUERIES = _bad_queries()


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_bad_queries_raise_typed_errors_and_write_nothing(seeded, case):
    store, nodes, vecs = seeded
    kwargs, error = BAD_QUERIES[case]
    args = {"query": Q[0], "k": 5}
    args.update(kwargs)
    before, pool = snapshot(store), pool_bytes(store)
    with pytest.raises(error):
        store.search(args.pop("query"), **args)
    assert snapshot(store) == before
    assert pool_bytes(store) == pool
    # The store still answers.
    assert len(store.search(Q[0], k=5)) == 5


@pytest.mark.parametrize("kinds", [1.5, b"class", {"class": 1}], ids=["float", "bytes", "dict"])
def test_a_kinds_filter_of_the_wrong_type_raises_invalid_type_error(seeded, kinds):
    store, nodes, vecs = seeded
    with pytest.raises(InvalidTypeError):
        store.search(Q[0], k=5, kinds=kinds)


def test_a_files_filter_of_the_wrong_type_raises_invalid_type_error(seeded):
    store, nodes, vecs = seeded
    with pytest.raises(InvalidTypeError):
        store.search(Q[0], k=5, files=5)


def test_search_without_any_space_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.search(np.ones(DIM), k=3)
    with pytest.raises(NotFoundError):
        store.get_embedding(12345)
    assert store.spaces() == []


def test_embedding_calls_on_a_closed_store(seeded):
    from codegraph_store.errors import StoreClosedError
    store, nodes, vecs = seeded
    store.close()
    calls = [lambda: store.search(Q[0], k=1), lambda: store.spaces(),
             lambda: store.get_embedding(nodes[0].id), lambda: store.context(Q[0]),
             lambda: store.add_embeddings([nodes[0].id], Q[0], space="sp"),
             lambda: store.delete_embeddings([nodes[0].id], space="sp"), lambda: store.compact()]
    for call in calls:
        with pytest.raises(StoreClosedError):
            call()


# --------------------------------------------------------------------------- several spaces


def test_several_spaces_in_one_store(seeded):
    store, nodes, vecs = seeded
    other = rand(40, 9, dim=8)
    store.add_embeddings([n.id for n in nodes[20:]], other, space="small", metric="l2")
    info = store.spaces()
    assert [(s["name"], s["dim"], s["metric"], s["vectors"]) for s in info] == \
           [("sp", DIM, "cosine", 60), ("small", 8, "l2", 40)]
    assert info[1]["pool"]["path"] == f"{store._path}-pool2"
    with pytest.raises(InvalidArgumentError, match="sp, small"):
        store.search(Q[0], k=3)
    with pytest.raises(InvalidArgumentError):
        store.context(Q[0], k=3)
    assert_hits(store.search(Q[0], k=4, space="sp"),
                reference("cosine", Q[0], [n.id for n in nodes], vecs, 4)[0])
    q8 = rand(1, 10, dim=8)[0]
    assert_hits(store.search(q8, k=4, space="small"),
                reference("l2", q8, [n.id for n in nodes[20:]], other, 4)[0])
    with pytest.raises(InvalidArgumentError):
        store.search(q8, k=4, space="sp")  # dimension of the other space
    # Deleting from one space leaves the other alone.
    store.delete_embeddings([nodes[30].id], space="small")
    assert store.get_embedding(nodes[30].id, space="small") is None
    assert np.array_equal(store.get_embedding(nodes[30].id, space="sp"), vecs[30])
    assert [s["vectors"] for s in store.spaces()] == [60, 39]
    # Filters apply per space.
    hits = store.search(q8, k=100, space="small", ids=[n.id for n in nodes[:25]])
    assert {h.node.id for h in hits} == {n.id for n in nodes[20:25]}


def test_a_space_name_is_tied_to_its_dimension_and_metric(seeded):
    store, nodes, vecs = seeded
    before = snapshot(store)
    with pytest.raises(InvalidArgumentError, match="16"):
        store.add_embeddings([nodes[0].id], np.ones(32), space="sp")
    with pytest.raises(InvalidArgumentError, match="cosine"):
        store.add_embeddings([nodes[0].id], np.ones(DIM), space="sp", metric="dot")
    assert snapshot(store) == before


# --------------------------------------------------------------------------- get_embedding


def test_get_embedding_round_trips_float32(seeded):
    store, nodes, vecs = seeded
    got = store.get_embedding(nodes[3].id)
    assert got.dtype == np.float32 and got.shape == (DIM,)
    assert np.array_equal(got, vecs[3])
    assert got.tobytes() == vecs[3].astype("<f4").tobytes()
    assert np.array_equal(store.get_embedding(nodes[3].id, space="sp"), vecs[3])
    got[0] = 1234  # a copy: the store is not affected
    assert np.array_equal(store.get_embedding(nodes[3].id), vecs[3])
    # float64 and int input are stored as float32.
    v64 = np.linspace(-1, 1, DIM) / 3
    store.add_embeddings([nodes[4].id], v64, space="sp")
    assert np.array_equal(store.get_embedding(nodes[4].id), v64.astype(np.float32))
    store.add_embeddings([nodes[5].id], list(range(1, DIM + 1)), space="sp")
    assert np.array_equal(store.get_embedding(nodes[5].id), np.arange(1, DIM + 1, dtype=np.float32))
    # Extremes survive exactly.
    extreme = np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0, 1e-45]
                       + [1.0] * (DIM - 4), np.float32)
    store.add_embeddings([nodes[6].id], extreme, space="sp")
    assert store.get_embedding(nodes[6].id).tobytes() == extreme.tobytes()
    # Absent vector / unknown node: None; unknown space: NotFoundError.
    extra = Node.new("function", "plain", file="src/a.py", start_line=500)
    store.add_nodes([extra])
    assert store.get_embedding(extra.id) is None
    assert store.get_embedding(987654321) is None
    with pytest.raises(NotFoundError):
        store.get_embedding(nodes[3].id, space="nope")
    with pytest.raises(InvalidTypeError):
        store.get_embedding("1")
    with pytest.raises(InvalidArgumentError):
        store.get_embedding(0)
    # Deleting the node deletes its vector.
    store.delete_nodes([nodes[3].id])
    assert store.get_embedding(nodes[3].id) is None


# --------------------------------------------------------------------------- context


@pytest.fixture
def ctx_store(store):
    """pkg/mod.py: module pkg.mod contains class C (contains method handle), functions
    caller (calls handle), callee (handle calls it), far (callee calls it), other."""
    f = "pkg/mod.py"
    m = Node.new("module", "mod", qualname="pkg.mod", file=f, start_line=1, end_line=60,
                 metadata={"source": "# the whole module\n" * 5})
    c = Node.new("class", "C", qualname="pkg.mod.C", file=f, start_line=2, end_line=10,
                 metadata={"signature": "(Base)", "docstring": "A C."})
    h = Node.new("method", "handle", qualname="pkg.mod.C.handle", file=f, start_line=3,
                 end_line=5, metadata={"source": "def handle(self):\n    return callee()\n"})
    caller = Node.new("function", "caller", qualname="pkg.mod.caller", file=f, start_line=12,
                      metadata={"source": "def caller(): return C().handle()\n"})
    callee = Node.new("function", "callee", qualname="pkg.mod.callee", file=f, start_line=20,
                      metadata={"source": "def callee(): return far()\n"})
    far = Node.new("function", "far", qualname="pkg.mod.far", file=f, start_line=30,
                   metadata={"source": "def far(): return 1\n"})
    other = Node.new("function", "other", qualname="pkg.mod.other", file=f, start_line=40,
                     metadata={"signature": "(x)"})
    nodes = dict(m=m, c=c, h=h, caller=caller, callee=callee, far=far, other=other)
    store.add_nodes(list(nodes.values()))
    store.add_edges([Edge(m.id, EdgeKind.CONTAINS, c.id), Edge(c.id, EdgeKind.CONTAINS, h.id),
                     Edge(m.id, EdgeKind.CONTAINS, caller.id), Edge(m.id, EdgeKind.CONTAINS, callee.id),
                     Edge(m.id, EdgeKind.CONTAINS, far.id), Edge(m.id, EdgeKind.CONTAINS, other.id),
                     Edge(caller.id, EdgeKind.CALLS, h.id), Edge(h.id, EdgeKind.CALLS, callee.id),
                     Edge(callee.id, EdgeKind.CALLS, far.id),
                     Edge(other.id, EdgeKind.REFERENCES, h.id)])
    order = ["h", "caller", "callee", "far", "c", "m", "other"]
    vecs = np.eye(8, dtype=np.float32)[:7]
    vecs[6, 0] = 0.2  # 'other' is the second best match for the query
    store.add_embeddings([nodes[k].id for k in order], vecs, space="sp")
    query = np.array([1, 0.05, 0, 0, 0, 0, 0, 0.1], np.float32)
    scores = ref_scores("cosine", query, vecs)[0]
    return store, nodes, query, dict(zip(order, scores.tolist()))


def _text(node):
    src = node.metadata.get("source")
    if src:
        return src
    doc = node.metadata.get("docstring")
    return (f"{node.kind.label} {node.qualname}{node.metadata.get('signature', '')}"
            + (f'\n    """{doc}"""' if doc else ""))


def _items(ctx):
    return [(i.node.name, i.reason, i.score) for i in ctx.items]


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_context_returns_the_hit_with_its_callers_callees_and_container(ctx_store):
    store, n, query, s = ctx_store
    ctx = store.context(query, k=1, hops=1)
    neighbours = sorted([("caller", "calls a match"), ("callee", "called by a match"),
                         ("C", "contains a match")],
                        key=lambda t: n[{"caller": "caller", "callee": "callee", "C": "c"}[t[0]]].id)
    # Relevance is rank-based: 1 for the first hit, halved per hop.
    assert _items(ctx) == [("handle", "match", approx(1.0))] + [
        (name, reason, approx(0.5)) for name, reason in neighbours]
    assert [i.text for i in ctx.items] == [_text(i.node) for i in ctx.items]
    assert ctx.items[0].text == "def handle(self):\n    return callee()\n"
    c_item = next(i for i in ctx.items if i.node.name == "C")
    assert c_item.text == 'class pkg.mod.C(Base)\n    """A C."""'
    assert ctx.used == sum(len(i.text) for i in ctx.items)
    assert ctx.budget == 12000 and ctx.query is None
    assert ctx.as_text() == "\n\n".join(
        f"# {i.node.qualname} ({i.node.kind.label}, pkg/mod.py:{i.node.start_line}; {i.reason})\n{i.text}"
        for i in ctx.items)
    assert ctx.as_text().startswith(
        "# pkg.mod.C.handle (method, pkg/mod.py:3; match)\ndef handle(self):\n    return callee()\n")


def test_context_hops_zero_gives_only_the_hits(ctx_store):
    store, n, query, s = ctx_store
    ctx = store.context(query, k=2, hops=0)
    assert _items(ctx) == [("handle", "match", approx(1.0)), ("other", "match", approx(0.5))]
    hits = store.search(query, k=2)
    assert [i.node for i in ctx.items] == [h.node for h in hits]


def test_context_two_hops_reaches_further_but_never_a_whole_module(ctx_store):
    store, n, query, s = ctx_store
    ctx = store.context(query, k=1, hops=2)
    names = [i.node.name for i in ctx.items]
    assert "mod" not in names  # the module contains a match's container: too coarse
    assert names[0] == "handle" and set(names[1:4]) == {"caller", "callee", "C"}
    assert names[4:] == ["far"]
    assert ctx.items[4].reason == "2 hops from a match"
    assert ctx.items[4].score == approx(0.25)
    # A module that is itself a hit is kept.
    ctx = store.context(np.eye(8, dtype=np.float32)[5], k=1, hops=0)
    assert _items(ctx) == [("mod", "match", pytest.approx(1.0, abs=1e-12))]


def test_context_decays_relevance_by_half_per_hop(ctx_store):
    store, n, query, s = ctx_store
    ctx = store.context(query, k=1, hops=2)
    far = next(i for i in ctx.items if i.node.name == "far")
    assert far.score == pytest.approx(0.25, abs=1e-12)


def test_context_respects_the_budget(ctx_store):
    store, n, query, s = ctx_store
    full = store.context(query, k=2, hops=1)
    texts = [i.text for i in full.items]
    for budget in (1, len(texts[0]) - 1, len(texts[0]), len(texts[0]) + len(texts[2]),
                   sum(map(len, texts)) - 1, sum(map(len, texts))):
        ctx = store.context(query, k=2, hops=1, budget=budget)
        # Greedy in rank order: an item that does not fit is skipped, smaller ones may follow.
        expected, used = [], 0
        for item in full.items:
            if used + len(item.text) <= budget:
                expected.append(item)
                used += len(item.text)
        assert list(ctx.items) == expected
        assert ctx.used == used <= budget and ctx.budget == budget


@pytest.mark.parametrize("kwargs, error", [
    ({"hops": -1}, InvalidArgumentError), ({"hops": 1.0}, InvalidArgumentError),
    ({"budget": 0}, InvalidArgumentError), ({"budget": True}, InvalidArgumentError),
    ({"k": 0}, InvalidArgumentError), ({"k": "2"}, InvalidTypeError),
    ({"query": np.stack([np.ones(8), np.ones(8)])}, InvalidArgumentError),
    ({"query": np.zeros(8)}, InvalidArgumentError),
    ({"query": "text"}, InvalidArgumentError),  # an external-model space
])
def test_context_bad_arguments(ctx_store, kwargs, error):
    store, n, query, s = ctx_store
    args = {"query": query}
    args.update(kwargs)
    with pytest.raises(error):
        store.context(args.pop("query"), **args)


def test_context_filters_the_hits(ctx_store):
    store, n, query, s = ctx_store
    ctx = store.context(query, k=1, hops=0, kinds="function")
    assert _items(ctx) == [("other", "match", approx(1.0))]
    ctx = store.context(query, k=1, hops=0, files="nope/")
    assert ctx.items == () and ctx.used == 0


def test_context_on_an_l2_space_puts_the_nearest_hit_first(store):
    near = Node.new("function", "near", file="x.py", metadata={"source": "N" * 10})
    far = Node.new("function", "far", file="x.py", start_line=2, metadata={"source": "F" * 10})
    store.add_nodes([near, far])
    store.add_embeddings([near.id, far.id], np.array([[0, 0, 0, 1.0], [0, 0, 5, 5]]),
                         space="l2", metric="l2")
    q = np.array([0, 0, 0, 1.1])
    assert [h.node.name for h in store.search(q, k=2)] == ["near", "far"]
    assert [i.node.name for i in store.context(q, k=2, hops=0).items] == ["near", "far"]
    assert [i.node.name for i in store.context(q, k=2, hops=0, budget=10).items] == ["near"]


# --------------------------------------------------------------------------- text queries

TEXT_NODES = [("function", "parse_json_value"), ("function", "render_html_page"),
              ("class", "DatabaseConnection"), ("method", "DatabaseConnection.open_cursor"),
              ("function", "compute_sha256_checksum"), ("function", "send_http_request")]


@pytest.fixture
def text_store(store):
    def build(space: str, dim: int):
        nodes = [Node.new(kind, q.rsplit(".", 1)[-1], qualname=q, file="app.py", start_line=i + 1)
                 for i, (kind, q) in enumerate(TEXT_NODES)]
        store.add_nodes(nodes)
        emb = HashingEmbedder(dim)
        vecs = emb.embed([node_text(n.kind.label, n.qualname, n.metadata) for n in nodes])
        store.add_embeddings([n.id for n in nodes], vecs, space=space)
        return nodes, emb, vecs
    return store, build


@pytest.mark.parametrize("space, dim", [("hashing-384", 384), ("hashing", 384), ("hashing-64", 64)])
def test_text_queries_on_a_builtin_embedder_space(text_store, space, dim):
    store, build = text_store
    nodes, emb, vecs = build(space, dim)
    ids = [n.id for n in nodes]
    for text, best in [("parse json", "parse_json_value"), ("open a database cursor", "open_cursor"),
                       ("sha256 checksum", "compute_sha256_checksum"), ("HTTP request", "send_http_request")]:
        hits = store.search(text, k=3)
        assert hits[0].node.name == best
        assert_hits(hits, reference("cosine", emb.embed([text]), ids, vecs, 3)[0], tol=1e-6)
        assert pairs(hits) == pairs(store.search(text, k=3, space=space))
        assert pairs(hits) == pairs(store.search(emb.embed([text])[0], k=3))
    ctx = store.context("parse json", k=1, hops=0)
    assert ctx.query == "parse json"
    assert [i.node.name for i in ctx.items] == ["parse_json_value"]
    # A text with no identifiers embeds to zeros: cosine is undefined.
    with pytest.raises(InvalidArgumentError):
        store.search("!!! ???", k=3)


@pytest.mark.parametrize("space, dim", [("my-model", 32), ("hashingish", 32), ("hashing-64", 32),
                                        ("hashing-x", 32)])
def test_text_queries_are_refused_on_other_spaces(store, space, dim):
    node = Node.new("function", "parse_json", file="app.py")
    store.add_nodes([node])
    store.add_embeddings([node.id], rand(1, 0, dim=dim), space=space)
    before = snapshot(store)
    with pytest.raises(InvalidArgumentError) as info:
        store.search("parse json", k=1)
    assert space in str(info.value)
    with pytest.raises(InvalidArgumentError):
        store.context("parse json", k=1)
    assert snapshot(store) == before
    # Vector queries still work there.
    assert store.search(rand(1, 0, dim=dim)[0], k=1)[0].node.id == node.id


def test_text_queries_need_a_space_name_when_there_are_several(text_store):
    store, build = text_store
    nodes, emb, vecs = build("hashing-64", 64)
    store.add_embeddings([nodes[0].id], np.ones(8), space="other")
    with pytest.raises(InvalidArgumentError):
        store.search("parse json", k=1)
    assert store.search("parse json", k=1, space="hashing-64")[0].node.name == "parse_json_value"

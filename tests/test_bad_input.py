"""Bad input: every case raises its specific typed error (which is also the matching
builtin exception) and leaves the store file exactly as it was."""

from __future__ import annotations

import math
import os
import shutil

import apsw
import attrs
import pytest

from codegraph_store import Config, Edge, EdgeKind, Node, NodeKind, Store
from codegraph_store import errors
from conftest import build_node

F, CALLS = NodeKind.FUNCTION, EdgeKind.CALLS


# --------------------------------------------------------------------------- helpers


def file_bytes(path) -> dict:
    """The bytes of the store file and of its WAL (None where absent)."""
    out = {}
    for suffix in ("", "-wal"):
        p = f"{path}{suffix}"
        if os.path.exists(p):
            with open(p, "rb") as f:
                out[suffix] = f.read()
        else:
            out[suffix] = b""  # an absent WAL and an empty one hold the same (nothing)
    return out


def raw_dump(path) -> tuple:
    """Every row of the user-visible tables, read over a separate read-only connection."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return tuple(tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall())
                     for t in ("nodes", "edges", "files"))
    finally:
        conn.close()


def snapshot(path) -> tuple:
    return file_bytes(path), raw_dump(path)


def refused(path, error: type, builtin: type, fn, *args, **kwargs) -> BaseException:
    """Call ``fn``, expect ``error`` (also a ``builtin``); the file must not change."""
    before = snapshot(path)
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, builtin)
    assert isinstance(info.value, errors.CodegraphError)
    assert snapshot(path) == before
    return info.value


A = Node(1, F, "a", "pkg.a", "pkg/a.py", 1, 0, 5, 0, {"doc": "a"})
B = Node(2, F, "b", "pkg.b", "pkg/a.py", 7, 0, 9, 0)
C = Node(3, NodeKind.CLASS, "C", "pkg.C", "pkg/c.py", 1, 0, 20, 0)


@pytest.fixture(scope="module")
def db_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad_input") / "template.cgdb"
    with Store.open(path) as s:
        s.add_nodes([A, B, C])
        s.add_edges([Edge(1, CALLS, 2, {"line": 3}), Edge(3, EdgeKind.REFERENCES, 1)])
    return path


@pytest.fixture
def db(db_template, store_path, open_store):
    """A store holding three nodes in two files and two edges (a copy of one template)."""
    shutil.copyfile(db_template, store_path)
    s = open_store()
    assert s.get_nodes([1, 2, 3]) == [A, B, C]
    return s


def good(**changes) -> Node:
    """A valid node (id 10) with some fields replaced."""
    return attrs.evolve(Node(10, F, "n", "pkg.n", "pkg/n.py", 2, 0, 4, 0), **changes)


# -------------------------------------------------------------------- bad nodes

NESTED_TOO_DEEP: list = []
for _ in range(150):
    NESTED_TOO_DEEP = [NESTED_TOO_DEEP]

BAD_NODES = {
    # wrong types
    "id-str": (good(id="10"), errors.InvalidTypeError, TypeError),
    "id-float": (good(id=10.0), errors.InvalidTypeError, TypeError),
    "id-bool": (good(id=True), errors.InvalidTypeError, TypeError),
    "id-none": (good(id=None), errors.InvalidTypeError, TypeError),
    "kind-name-str": (good(kind="function"), errors.InvalidTypeError, TypeError),
    "kind-plain-int": (good(kind=3), errors.InvalidTypeError, TypeError),
    "kind-edgekind": (good(kind=EdgeKind.CALLS), errors.InvalidTypeError, TypeError),
    "kind-none": (good(kind=None), errors.InvalidTypeError, TypeError),
    "kind-unknown-code": (good(kind=99), errors.InvalidArgumentError, ValueError),
    "kind-unknown-name": (good(kind="lambda"), errors.InvalidArgumentError, ValueError),
    "name-int": (good(name=5), errors.InvalidTypeError, TypeError),
    "name-none": (good(name=None), errors.InvalidTypeError, TypeError),
    "name-bytes": (good(name=b"n"), errors.InvalidTypeError, TypeError),
    "qualname-int": (good(qualname=1), errors.InvalidTypeError, TypeError),
    "file-bytes": (good(file=b"pkg/n.py"), errors.InvalidTypeError, TypeError),
    "start-line-str": (good(start_line="2"), errors.InvalidTypeError, TypeError),
    "end-line-float": (good(end_line=4.0), errors.InvalidTypeError, TypeError),
    "start-col-bool": (good(start_col=True), errors.InvalidTypeError, TypeError),
    # ids out of range
    "id-zero": (good(id=0), errors.InvalidArgumentError, ValueError),
    "id-negative": (good(id=-5), errors.InvalidArgumentError, ValueError),
    "id-2**63": (good(id=2**63), errors.InvalidArgumentError, ValueError),
    "id-huge": (good(id=2**100), errors.InvalidArgumentError, ValueError),
    # empty names
    "name-empty": (good(name=""), errors.InvalidArgumentError, ValueError),
    "name-blank": (good(name="  \t"), errors.InvalidArgumentError, ValueError),
    "qualname-empty": (good(qualname=""), errors.InvalidArgumentError, ValueError),
    "file-empty": (good(file=""), errors.InvalidArgumentError, ValueError),
    "file-blank": (good(file="   "), errors.InvalidArgumentError, ValueError),
    # negative positions and reversed ranges
    "start-line-negative": (good(start_line=-1), errors.InvalidArgumentError, ValueError),
    "end-line-negative": (good(start_line=0, end_line=-3), errors.InvalidArgumentError, ValueError),
    "start-col-negative": (good(start_col=-1), errors.InvalidArgumentError, ValueError),
    "end-col-negative": (good(end_col=-1), errors.InvalidArgumentError, ValueError),
    "lines-reversed": (good(start_line=10, end_line=5), errors.InvalidArgumentError, ValueError),
    "cols-reversed-on-one-line": (good(start_line=3, end_line=3, start_col=8, end_col=2),
                                  errors.InvalidArgumentError, ValueError),
    # invalid text
    "file-lone-surrogate": (good(file="pkg/\udcff.py"), errors.InvalidArgumentError, ValueError),
    "file-high-surrogate": (good(file="pkg/\ud800x.py"), errors.InvalidArgumentError, ValueError),
    "file-nul": (good(file="pkg/a\x00.py"), errors.InvalidArgumentError, ValueError),
    "name-surrogate": (good(name="n\udc80"), errors.InvalidArgumentError, ValueError),
    "qualname-nul": (good(qualname="pkg.\x00n"), errors.InvalidArgumentError, ValueError),
    # metadata that JSON would not round-trip
    "metadata-set": (good(metadata={1, 2}), errors.InvalidTypeError, TypeError),
    "metadata-bytes": (good(metadata=b"raw"), errors.InvalidTypeError, TypeError),
    "metadata-tuple": (good(metadata=(1, 2)), errors.InvalidTypeError, TypeError),
    "metadata-int-key": (good(metadata={1: "x"}), errors.InvalidTypeError, TypeError),
    "metadata-tuple-key": (good(metadata={("a",): "x"}), errors.InvalidTypeError, TypeError),
    "metadata-nested-set": (good(metadata={"a": [1, {"b": {3}}]}), errors.InvalidTypeError, TypeError),
    "metadata-object": (good(metadata=object()), errors.InvalidTypeError, TypeError),
    "metadata-nan": (good(metadata=math.nan), errors.InvalidArgumentError, ValueError),
    "metadata-nested-inf": (good(metadata={"x": [1.0, -math.inf]}), errors.InvalidArgumentError,
                            ValueError),
    "metadata-too-deep": (good(metadata=NESTED_TOO_DEEP), errors.InvalidArgumentError, ValueError),
    # not a node at all
    "not-a-node": ({"id": 10, "kind": "function", "name": "n"}, errors.InvalidTypeError, TypeError),
    "edge-as-node": (Edge(1, CALLS, 2), errors.InvalidTypeError, TypeError),
}


@pytest.mark.parametrize("case", list(BAD_NODES), ids=list(BAD_NODES))
def test_add_nodes_refuses_a_bad_node(db, store_path, case):
    node, error, builtin = BAD_NODES[case]
    refused(store_path, error, builtin, db.add_nodes, [node])
    # alone or after valid nodes of a new file: nothing of the batch is written
    refused(store_path, error, builtin, db.add_nodes,
            [good(id=11, file="pkg/new.py"), attrs.evolve(A, metadata="replaced"), node])
    assert db.get_node(A.id) == A
    assert db.get_node(11) is None


@pytest.mark.parametrize("nodes", ["abc", b"ab", 5, None, {1: A}, A],
                         ids=["str", "bytes", "int", "none", "dict", "single-node"])
def test_add_nodes_refuses_a_non_iterable_argument(db, store_path, nodes):
    refused(store_path, errors.InvalidTypeError, TypeError, db.add_nodes, nodes)


def test_bad_metadata_inside_a_transaction_rolls_it_back(db, store_path):
    before = snapshot(store_path)

    def body():
        with db.transaction():
            db.add_nodes([good(id=11, file="pkg/new.py")])
            db.add_edges([Edge(11, CALLS, 1)])
            db.add_nodes([good(id=12, metadata={"bad": {1, 2}})])

    with pytest.raises(errors.InvalidTypeError):
        body()
    assert snapshot(store_path) == before


def test_bad_metadata_caught_inside_a_transaction_writes_nothing(db, store_path):
    before = raw_dump(store_path)
    with db.transaction():
        with pytest.raises(errors.InvalidTypeError):
            db.add_nodes([good(id=11, file="pkg/new.py"), good(id=12, metadata={"bad": {1, 2}})])
    assert raw_dump(store_path) == before
    assert [f.path for f in db.files()] == ["pkg/a.py", "pkg/c.py"]


# -------------------------------------------------------------------- bad edges

BAD_EDGES = {
    "src-str": (Edge("1", CALLS, 2), errors.InvalidTypeError, TypeError),
    "dst-float": (Edge(1, CALLS, 2.0), errors.InvalidTypeError, TypeError),
    "src-zero": (Edge(0, CALLS, 2), errors.InvalidArgumentError, ValueError),
    "dst-negative": (Edge(1, CALLS, -2), errors.InvalidArgumentError, ValueError),
    "dst-2**63": (Edge(1, CALLS, 2**63), errors.InvalidArgumentError, ValueError),
    "kind-name-str": (Edge(1, "calls", 2), errors.InvalidTypeError, TypeError),
    "kind-nodekind": (Edge(1, NodeKind.CLASS, 2), errors.InvalidTypeError, TypeError),
    "kind-unknown-code": (Edge(1, 42, 2), errors.InvalidArgumentError, ValueError),
    "kind-unknown-name": (Edge(1, "overrides", 2), errors.InvalidArgumentError, ValueError),
    "kind-none": (Edge(1, None, 2), errors.InvalidTypeError, TypeError),
    "metadata-set": (Edge(1, CALLS, 2, {"x"}), errors.InvalidTypeError, TypeError),
    "metadata-bytes": (Edge(1, CALLS, 2, b"x"), errors.InvalidTypeError, TypeError),
    "metadata-int-key": (Edge(1, CALLS, 2, {3: 4}), errors.InvalidTypeError, TypeError),
    "metadata-nan": (Edge(1, CALLS, 2, [math.nan]), errors.InvalidArgumentError, ValueError),
    "not-an-edge": ((1, CALLS, 2), errors.InvalidTypeError, TypeError),
    "node-as-edge": (A, errors.InvalidTypeError, TypeError),
}


@pytest.mark.parametrize("case", list(BAD_EDGES), ids=list(BAD_EDGES))
def test_add_edges_refuses_a_bad_edge(db, store_path, case):
    edge, error, builtin = BAD_EDGES[case]
    refused(store_path, error, builtin, db.add_edges, [edge])
    refused(store_path, error, builtin, db.add_edges, [Edge(2, CALLS, 3), Edge(1, CALLS, 2, "new"), edge])
    assert db.edges_of(1) == [Edge(1, CALLS, 2, {"line": 3})]


@pytest.mark.parametrize("edge", [Edge(1, CALLS, 999), Edge(999, CALLS, 1), Edge(998, CALLS, 999)],
                         ids=["dst-missing", "src-missing", "both-missing"])
def test_edge_to_an_unknown_node_is_a_dangling_edge_error(db, store_path, edge):
    e = refused(store_path, errors.DanglingEdgeError, ValueError, db.add_edges,
                [Edge(2, CALLS, 3), edge])
    assert isinstance(e, errors.InvalidArgumentError)
    assert e.edges == [(edge.src, int(CALLS), edge.dst)]
    assert db.neighbors(2) == []


def test_dangling_edge_rolls_back_the_whole_explicit_transaction(db, store_path):
    before = snapshot(store_path)
    with pytest.raises(errors.DanglingEdgeError) as info:
        with db.transaction():
            db.add_nodes([good(id=11, file="pkg/new.py"), attrs.evolve(A, name="renamed")])
            db.add_edges([Edge(11, CALLS, 1), Edge(1, CALLS, 2, "changed")])
            db.delete_nodes([3])
            with db.transaction():
                db.add_edges([Edge(11, CALLS, 777)])
            db.add_nodes([good(id=12)])
            assert db.get_node(11) is not None  # visible inside the transaction
    assert isinstance(info.value, ValueError)
    assert info.value.edges == [(11, int(CALLS), 777)]
    assert snapshot(store_path) == before
    assert db.get_node(1) == A
    assert db.get_node(3) == C
    assert db.get_node(11) is None
    # the store is usable afterwards
    db.add_nodes([good(id=11)])
    assert db.get_node(11) == good(id=11)


def test_dangling_edge_in_bulk_load_rolls_back(db, store_path):
    before = snapshot(store_path)
    with pytest.raises(errors.DanglingEdgeError):
        with db.bulk_load():
            db.add_nodes([good(id=i) for i in range(20, 40)])
            db.add_edges([Edge(i, CALLS, i + 1) for i in range(20, 40)])  # 39 -> 40 dangles
    assert snapshot(store_path)[1] == before[1]
    assert db.stats()["nodes"] == 3
    assert db.check().ok  # the indexes dropped by the bulk load are back


# ------------------------------------------------------------ bad ids and filters


@pytest.mark.parametrize("node_id,error,builtin", [
    ("1", errors.InvalidTypeError, TypeError),
    (1.0, errors.InvalidTypeError, TypeError),
    (None, errors.InvalidTypeError, TypeError),
    (True, errors.InvalidTypeError, TypeError),
    ([1], errors.InvalidTypeError, TypeError),
    (0, errors.InvalidArgumentError, ValueError),
    (-1, errors.InvalidArgumentError, ValueError),
    (2**63, errors.InvalidArgumentError, ValueError),
    (-(2**63), errors.InvalidArgumentError, ValueError),
], ids=["str", "float", "none", "bool", "list", "zero", "negative", "2**63", "min-int64"])
def test_bad_node_id_is_refused_by_every_method(db, store_path, node_id, error, builtin):
    calls = [
        lambda: db.get_node(node_id),
        lambda: db.get_nodes([1, node_id]),
        lambda: db.delete_nodes([2, node_id]),
        lambda: db.delete_edges([(1, CALLS, node_id)]),
        lambda: db.neighbors(node_id),
        lambda: db.callers(node_id),
        lambda: db.callees(node_id),
        lambda: db.edges_of(node_id),
        lambda: db.traverse(node_id),
        lambda: db.impact(node_id),
        lambda: db.path(1, node_id),
        lambda: db.path(node_id, 1),
    ]
    for call in calls:
        refused(store_path, error, builtin, call)
    assert db.get_node(2) == B


@pytest.mark.parametrize("ids", ["12", b"12", 12, None, {1: 2}, 1.5],
                         ids=["str", "bytes", "int", "none", "dict", "float"])
def test_ids_argument_of_wrong_type(db, store_path, ids):
    refused(store_path, errors.InvalidTypeError, TypeError, db.get_nodes, ids)
    refused(store_path, errors.InvalidTypeError, TypeError, db.delete_nodes, ids)
    refused(store_path, errors.InvalidTypeError, TypeError, db.delete_edges, ids)


@pytest.mark.parametrize("item", [(1, 2), 5, (1, CALLS, 2, 4)], ids=["pair", "int", "four"])
def test_delete_edges_malformed_item(db, store_path, item):
    refused(store_path, errors.InvalidTypeError, TypeError, db.delete_edges, [item])


@pytest.mark.parametrize("kind,error,builtin", [
    ("bogus", errors.InvalidArgumentError, ValueError),
    (42, errors.InvalidArgumentError, ValueError),
    (None, errors.InvalidTypeError, TypeError),
    (True, errors.InvalidTypeError, TypeError),
], ids=["unknown-name", "unknown-code", "none", "bool"])
def test_delete_edges_bad_kind(db, store_path, kind, error, builtin):
    refused(store_path, error, builtin, db.delete_edges, [(1, kind, 2)])
    assert db.stats()["edges"] == 2


@pytest.mark.parametrize("direction", ["sideways", "OUT", "", None, 5, ["out"]])
def test_bad_direction(db, store_path, direction):
    refused(store_path, errors.InvalidArgumentError, ValueError, db.neighbors, 1, direction)
    refused(store_path, errors.InvalidArgumentError, ValueError, db.traverse, 1, direction)
    refused(store_path, errors.InvalidArgumentError, ValueError, db.path, 1, 2, direction=direction)
    refused(store_path, errors.InvalidArgumentError, ValueError, db.edges_of, 1, direction)


def test_edges_of_refuses_both(db, store_path):
    refused(store_path, errors.InvalidArgumentError, ValueError, db.edges_of, 1, "both")


@pytest.mark.parametrize("depth", [0, -1, 1.5, "2", True])
def test_bad_depth(db, store_path, depth):
    refused(store_path, errors.InvalidArgumentError, ValueError, db.traverse, 1, depth=depth)
    refused(store_path, errors.InvalidArgumentError, ValueError, db.impact, 1, depth=depth)
    refused(store_path, errors.InvalidArgumentError, ValueError, db.path, 1, 2, max_depth=depth)


@pytest.mark.parametrize("limit", [0, -1, 1.5, "10", True])
def test_bad_limit(db, store_path, limit):
    refused(store_path, errors.InvalidArgumentError, ValueError, db.find, "a", limit=limit)


@pytest.mark.parametrize("kinds,error,builtin", [
    ("bogus", errors.InvalidArgumentError, ValueError),
    (99, errors.InvalidArgumentError, ValueError),
    (["calls", "nope"], errors.InvalidArgumentError, ValueError),
    ([None], errors.InvalidTypeError, TypeError),
    ([1.5], errors.InvalidTypeError, TypeError),
], ids=["unknown-name", "unknown-code", "one-unknown", "none-member", "float-member"])
def test_bad_edge_kind_filter(db, store_path, kinds, error, builtin):
    refused(store_path, error, builtin, db.neighbors, 1, "out", kinds)
    refused(store_path, error, builtin, db.traverse, 1, kinds=kinds)
    refused(store_path, error, builtin, db.path, 1, 2, kinds=kinds)


@pytest.mark.parametrize("kinds", [1.5, object()], ids=["float", "object"])
def test_non_iterable_kind_filter(db, store_path, kinds):
    refused(store_path, errors.InvalidTypeError, TypeError, db.neighbors, 1, "out", kinds)
    refused(store_path, errors.InvalidTypeError, TypeError, db.find, "a", kind=kinds)


@pytest.mark.parametrize("kwargs,error,builtin", [
    ({}, errors.InvalidArgumentError, ValueError),
    ({"kind": "function"}, errors.InvalidArgumentError, ValueError),
    ({"name": 5}, errors.InvalidTypeError, TypeError),
    ({"qualname": b"pkg.a"}, errors.InvalidTypeError, TypeError),
    ({"name": ""}, errors.InvalidArgumentError, ValueError),
    ({"qualname": "", "prefix": True}, errors.InvalidArgumentError, ValueError),
    ({"file": ""}, errors.InvalidArgumentError, ValueError),
    ({"file": 3}, errors.InvalidTypeError, TypeError),
    ({"file": "pkg/\udcff.py"}, errors.InvalidArgumentError, ValueError),
    ({"name": "a", "kind": "lambda"}, errors.InvalidArgumentError, ValueError),
    ({"name": "a", "kind": [None]}, errors.InvalidTypeError, TypeError),
], ids=["nothing", "kind-only", "name-int", "qualname-bytes", "name-empty", "prefix-empty",
        "file-empty", "file-int", "file-surrogate", "kind-unknown", "kind-none"])
def test_bad_find_arguments(db, store_path, kwargs, error, builtin):
    refused(store_path, error, builtin, db.find, **kwargs)


@pytest.mark.parametrize("file,line,error,builtin", [
    ("pkg/a.py", 0, errors.InvalidArgumentError, ValueError),
    ("pkg/a.py", -4, errors.InvalidArgumentError, ValueError),
    ("pkg/a.py", "3", errors.InvalidTypeError, TypeError),
    ("pkg/a.py", 3.0, errors.InvalidTypeError, TypeError),
    ("pkg/a.py", None, errors.InvalidTypeError, TypeError),
    ("pkg/\udcff.py", 3, errors.InvalidArgumentError, ValueError),
    ("", 3, errors.InvalidArgumentError, ValueError),
    (None, 3, errors.InvalidTypeError, TypeError),
    ("pkg/missing.py", 3, errors.NotFoundError, LookupError),
], ids=["line-zero", "line-negative", "line-str", "line-float", "line-none", "file-surrogate",
        "file-empty", "file-none", "file-unknown"])
def test_bad_at_arguments(db, store_path, file, line, error, builtin):
    refused(store_path, error, builtin, db.at, file, line)


@pytest.mark.parametrize("path,error,builtin", [
    ("pkg/missing.py", errors.NotFoundError, LookupError),
    ("pkg/A.py", errors.NotFoundError, LookupError),  # paths are case-sensitive
    ("pkg/\udcff.py", errors.InvalidArgumentError, ValueError),
    ("pkg/\ud83d.py", errors.InvalidArgumentError, ValueError),
    ("", errors.InvalidArgumentError, ValueError),
    (b"pkg/a.py", errors.InvalidTypeError, TypeError),
    (None, errors.InvalidTypeError, TypeError),
], ids=["unknown", "wrong-case", "lone-low-surrogate", "lone-high-surrogate", "empty", "bytes", "none"])
def test_bad_delete_file(db, store_path, path, error, builtin):
    refused(store_path, error, builtin, db.delete_file, path)
    assert db.stats()["files"] == 2


def test_path_with_unknown_endpoint(db, store_path):
    refused(store_path, errors.NotFoundError, LookupError, db.path, 1, 555)


@pytest.mark.parametrize("page", [0, -1, "3", 1.5, None, True],
                         ids=["zero", "negative", "str", "float", "none", "bool"])
def test_bad_page_size(db, store_path, page):
    refused(store_path, errors.InvalidArgumentError, ValueError, lambda: list(db.iter_nodes(page=page)))
    refused(store_path, errors.InvalidArgumentError, ValueError, lambda: list(db.iter_edges(page=page)))


# ------------------------------------------------------------------ bad files


def test_non_sqlite_file_is_not_a_store(tmp_path):
    path = tmp_path / "notes.cgdb"
    path.write_bytes(b"just some text, not a database\n" * 100)
    before = file_bytes(path)
    for readonly in (False, True):
        with pytest.raises(errors.NotAStoreError) as info:
            Store.open(path, readonly=readonly)
        assert isinstance(info.value, ValueError)
        assert file_bytes(path) == before
    assert sorted(os.listdir(tmp_path)) == ["notes.cgdb"]


def _closed_store_with_data(path) -> None:
    with Store.open(path) as s:
        nodes = [build_node(f"f{i}", metadata={"pad": os.urandom(1500).hex(), "i": i})
                 for i in range(100)]
        s.add_nodes(nodes)
        s.add_edges([Edge(nodes[i].id, CALLS, nodes[i + 1].id) for i in range(99)])


@pytest.mark.parametrize("keep", [0.5, 0.9, 4096 + 100, 60], ids=["half", "most", "page-plus", "60-bytes"])
def test_truncated_store_is_corrupt(tmp_path, keep):
    full = tmp_path / "full.cgdb"
    _closed_store_with_data(full)
    data = full.read_bytes()
    assert len(data) > 100_000
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.cgdb"
    path.write_bytes(data[:cut])
    before = file_bytes(path)
    for readonly in (False, True):
        with pytest.raises(errors.CorruptStoreError) as info:
            Store.open(path, readonly=readonly)
        assert isinstance(info.value, RuntimeError)
        assert file_bytes(path) == before


def test_truncated_below_the_magic_is_not_a_store(tmp_path):
    full = tmp_path / "full.cgdb"
    _closed_store_with_data(full)
    path = tmp_path / "cut.cgdb"
    path.write_bytes(full.read_bytes()[:10])
    refused_open(path, errors.NotAStoreError, ValueError)


def refused_open(path, error, builtin, **kwargs):
    before = file_bytes(path)
    with pytest.raises(error) as info:
        Store.open(path, **kwargs)
    assert isinstance(info.value, builtin)
    assert file_bytes(path) == before


def _foreign_db(path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)")
    conn.close()


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "foreign.db"
    _foreign_db(path)
    for readonly in (False, True):
        with pytest.raises(errors.NotAStoreError) as info:
            Store.open(path, readonly=readonly)
        assert isinstance(info.value, ValueError)
        assert "not a codegraph store" in str(info.value)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_schema")] == ["t"]
    finally:
        conn.close()


def test_foreign_sqlite_database_opened_readonly_is_unchanged(tmp_path):
    path = tmp_path / "foreign.db"
    _foreign_db(path)
    refused_open(path, errors.NotAStoreError, ValueError, readonly=True)


def test_foreign_sqlite_database_file_is_unchanged(tmp_path):
    path = tmp_path / "foreign.db"
    _foreign_db(path)
    refused_open(path, errors.NotAStoreError, ValueError)


def test_empty_foreign_sqlite_database_with_an_application_id(tmp_path):
    path = tmp_path / "other.db"
    conn = apsw.Connection(str(path))
    conn.pragma("application_id", 1234)
    conn.close()
    assert path.stat().st_size > 0
    refused_open(path, errors.NotAStoreError, ValueError, readonly=True)


@pytest.mark.parametrize("readonly", [False, True], ids=["readwrite", "readonly"])
def test_newer_schema_is_refused(tmp_path, readonly):
    path = tmp_path / "new.cgdb"
    with Store.open(path) as s:
        s.add_nodes([A])
    conn = apsw.Connection(str(path))
    conn.pragma("user_version", 99)
    conn.close()
    before = file_bytes(path)
    with pytest.raises(errors.SchemaTooNewError) as info:
        Store.open(path, readonly=readonly)
    assert isinstance(info.value, RuntimeError)
    assert "schema 99" in str(info.value)
    assert file_bytes(path) == before


# ------------------------------------------------------------- readonly / closed


def test_writing_through_a_readonly_store(tmp_path):
    path = tmp_path / "ro.cgdb"
    with Store.open(path) as s:
        s.add_nodes([A, B, C])
        s.add_edges([Edge(1, CALLS, 2)])
    r = Store.open(path, readonly=True)
    try:
        writes = {
            "add_nodes": lambda: r.add_nodes([good()]),
            "add_nodes-replace": lambda: r.add_nodes([A]),
            "add_edges": lambda: r.add_edges([Edge(2, CALLS, 3)]),
            "delete_nodes": lambda: r.delete_nodes([1]),
            "delete_edges": lambda: r.delete_edges([(1, CALLS, 2)]),
            "delete_file": lambda: r.delete_file("pkg/a.py"),
            "compact": r.compact,
            "transaction": lambda: r.transaction().__enter__(),
            "bulk_load": lambda: r.bulk_load().__enter__(),
        }
        for name, write in writes.items():
            before = file_bytes(path)
            with pytest.raises(errors.ReadOnlyError) as info:
                write()
            assert isinstance(info.value, PermissionError), name
            assert file_bytes(path) == before, name
        assert r.get_node(1) == A
        assert r.stats()["edges"] == 1
    finally:
        r.close()


@pytest.mark.parametrize("method", ["add_nodes", "add_edges", "delete_nodes", "delete_edges"])
def test_empty_write_through_a_readonly_store(tmp_path, method):
    path = tmp_path / "ro.cgdb"
    Store.open(path).close()
    with Store.open(path, readonly=True) as r:
        refused(path, errors.ReadOnlyError, PermissionError, getattr(r, method), [])


def test_use_after_close(tmp_path):
    path = tmp_path / "closed.cgdb"
    s = Store.open(path)
    s.add_nodes([A, B, C])
    s.add_edges([Edge(1, CALLS, 2)])
    s.close()
    uses = {
        "get_node": lambda: s.get_node(1),
        "get_nodes": lambda: s.get_nodes([1]),
        "get_nodes-empty": lambda: s.get_nodes([]),
        "find": lambda: s.find("a"),
        "at": lambda: s.at("pkg/a.py", 1),
        "neighbors": lambda: s.neighbors(1),
        "callers": lambda: s.callers(2),
        "callees": lambda: s.callees(1),
        "edges_of": lambda: s.edges_of(1),
        "traverse": lambda: s.traverse(1),
        "impact": lambda: s.impact(1),
        "path": lambda: s.path(1, 2),
        "iter_nodes": lambda: list(s.iter_nodes()),
        "iter_edges": lambda: list(s.iter_edges()),
        "files": s.files,
        "stats": s.stats,
        "check": s.check,
        "compact": s.compact,
        "add_nodes": lambda: s.add_nodes([good()]),
        "add_edges": lambda: s.add_edges([Edge(2, CALLS, 3)]),
        "delete_nodes": lambda: s.delete_nodes([1]),
        "delete_edges": lambda: s.delete_edges([(1, CALLS, 2)]),
        "delete_file": lambda: s.delete_file("pkg/a.py"),
        "transaction": lambda: s.transaction().__enter__(),
        "bulk_load": lambda: s.bulk_load().__enter__(),
    }
    before = snapshot(path)
    for name, use in uses.items():
        with pytest.raises(errors.StoreClosedError) as info:
            use()
        assert isinstance(info.value, RuntimeError), name
    assert snapshot(path) == before
    s.close()  # still idempotent


@pytest.mark.parametrize("method", ["add_nodes", "add_edges", "delete_nodes", "delete_edges"])
def test_empty_write_after_close(tmp_path, method):
    path = tmp_path / "c.cgdb"
    s = Store.open(path)
    s.close()
    refused(path, errors.StoreClosedError, RuntimeError, getattr(s, method), [])


def test_close_inside_a_transaction_rolls_it_back(tmp_path):
    path = tmp_path / "t.cgdb"
    with Store.open(path) as s:
        s.add_nodes([A])
    before = raw_dump(path)
    s = Store.open(path)
    with pytest.raises(errors.StoreClosedError):
        with s.transaction():
            s.add_nodes([B])
            assert s.get_node(2) == B  # flushed into the open transaction
            s.close()
    assert raw_dump(path) == before
    with pytest.raises(errors.StoreClosedError):
        s.get_node(1)
    # a read after close inside the block raises StoreClosedError and rolls back
    s = Store.open(path)
    with pytest.raises(errors.StoreClosedError):
        with s.transaction():
            s.add_nodes([B])
            s.close()
            s.get_node(1)
    assert raw_dump(path) == before


@pytest.mark.parametrize("after_close", ["leave-block", "write"])
def test_use_after_close_inside_a_transaction(tmp_path, after_close):
    path = tmp_path / "t.cgdb"
    s = Store.open(path)
    with pytest.raises(errors.StoreClosedError):
        with s.transaction():
            s.add_nodes([A])
            s.get_node(1)
            s.close()
            if after_close == "write":
                s.add_nodes([C])
    with Store.open(path) as again:  # the transaction was rolled back
        assert list(again.iter_nodes()) == []
        assert again.files() == []


def test_transaction_misuse(db, store_path):
    before = snapshot(store_path)
    with db.transaction():
        with pytest.raises(errors.TransactionError) as info:
            db.compact()
        assert isinstance(info.value, RuntimeError)
        with pytest.raises(errors.TransactionError):
            with db.bulk_load():
                pass
    assert snapshot(store_path)[1] == before[1]


# ------------------------------------------------------------ bad open / config


@pytest.mark.parametrize("kwargs,error,builtin", [
    ({"path": 5}, errors.InvalidTypeError, TypeError),
    ({"path": None}, errors.InvalidTypeError, TypeError),
    ({"path": b"x.cgdb"}, errors.InvalidTypeError, TypeError),
    ({"path": ""}, errors.InvalidArgumentError, ValueError),
    ({"durability": "fast"}, errors.InvalidArgumentError, ValueError),
    ({"durability": None}, errors.InvalidArgumentError, ValueError),
    ({"config": 42}, errors.InvalidTypeError, TypeError),
    ({"config": ["io_optimization"]}, errors.InvalidTypeError, TypeError),
], ids=["path-int", "path-none", "path-bytes", "path-empty", "durability-unknown",
        "durability-none", "config-int", "config-list"])
def test_bad_open_arguments(db, store_path, kwargs, error, builtin):
    args = [kwargs.pop("path", store_path)]
    refused(store_path, error, builtin, Store.open, *args, **kwargs)


def test_open_a_directory(tmp_path, db, store_path):
    refused(store_path, errors.InvalidArgumentError, ValueError, Store.open, tmp_path)


BAD_CONFIGS = {
    "unknown-section": ({"disk_optimization": {"x": 1}}, "disk_optimization"),
    "unknown-key": ({"io_optimization": {"write_buffer_sz": 5}}, "io_optimization.write_buffer_sz"),
    "section-not-table": ({"io_optimization": 5}, "io_optimization"),
    "int-as-str": ({"io_optimization": {"write_buffer_size": "5"}}, "io_optimization.write_buffer_size"),
    "int-as-float": ({"io_optimization": {"read_batch_size": 10.0}}, "io_optimization.read_batch_size"),
    "int-as-bool": ({"memory_optimization": {"compact_cache_size": True}},
                    "memory_optimization.compact_cache_size"),
    "bool-as-int": ({"io_optimization": {"enable_batching": 1}}, "io_optimization.enable_batching"),
    "bool-as-str": ({"memory_optimization": {"enable_cache": "yes"}}, "memory_optimization.enable_cache"),
    "float-as-str": ({"memory_optimization": {"memory_pressure_threshold": "0.5"}},
                     "memory_optimization.memory_pressure_threshold"),
    "pair-as-str": ({"performance_targets": {"graph_memory_mb": "512"}},
                    "performance_targets.graph_memory_mb"),
    "pair-too-long": ({"performance_targets": {"graph_memory_mb": [1, 2, 3]}}, "graph_memory_mb"),
    "zero-buffer": ({"io_optimization": {"write_buffer_size": 0}}, "write_buffer_size"),
    "negative-threshold": ({"io_optimization": {"compression_threshold": -1}}, "compression_threshold"),
    "fraction-above-one": ({"memory_optimization": {"memory_pressure_threshold": 1.5}},
                           "memory_pressure_threshold"),
    "fraction-zero": ({"memory_optimization": {"memory_pressure_threshold": 0}},
                      "memory_pressure_threshold"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_names_the_key(db, store_path, case):
    overrides, key = BAD_CONFIGS[case]
    e = refused(store_path, errors.ConfigError, ValueError, Store.open, store_path, config=overrides)
    assert key in str(e)
    e = refused(store_path, errors.ConfigError, ValueError, Config.from_dict, overrides)
    assert key in str(e)


def test_bad_config_through_replace(db, store_path):
    base = Config.defaults()
    e = refused(store_path, errors.ConfigError, ValueError, base.replace, io_optimization__nope=1)
    assert "io_optimization.nope" in str(e)
    e = refused(store_path, errors.ConfigError, ValueError, base.replace, bogus__x=1)
    assert "bogus" in str(e)
    e = refused(store_path, errors.ConfigError, ValueError, base.replace,
                io_optimization__enable_batching="no")
    assert "io_optimization.enable_batching" in str(e)
    assert base.io_optimization.enable_batching is True


def test_bad_config_file(db, store_path, tmp_path):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text("[io_optimization]\nwrite_bufer_size = 10\n")
    e = refused(store_path, errors.ConfigError, ValueError, Store.open, store_path, config=str(bad_key))
    assert "io_optimization.write_bufer_size" in str(e)
    not_toml = tmp_path / "not.toml"
    not_toml.write_text("[io_optimization\nx = = 1\n")
    refused(store_path, errors.ConfigError, ValueError, Store.open, store_path, config=not_toml)
    refused(store_path, errors.ConfigError, ValueError, Store.open, store_path,
            config=tmp_path / "missing.toml")


def test_config_not_a_mapping():
    with pytest.raises(errors.ConfigError) as info:
        Config.from_dict([("io_optimization", {})])
    assert isinstance(info.value, ValueError)


def test_store_still_works_after_all_refusals(db, store_path):
    """A run of refused calls leaves a store that reads and writes normally."""
    for node, error, _ in list(BAD_NODES.values())[:10]:
        with pytest.raises(error):
            db.add_nodes([node])
    with pytest.raises(errors.DanglingEdgeError):
        db.add_edges([Edge(1, CALLS, 4040)])
    db.add_nodes([good()])
    db.add_edges([Edge(10, CALLS, 1)])
    assert db.callers(1) == [good()]
    assert db.check().ok


# ------------------------------------------------------------ search: k and ids


@pytest.fixture
def vectors_db(db):
    np = pytest.importorskip("numpy")
    db.add_embeddings([1, 2, 3], np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], np.float32),
                      "unit")
    query = np.array([1, 0, 0, 0], np.float32)
    assert [h.node.id for h in db.search(query, k=2)] == [1, 3]
    return db, query


@pytest.mark.parametrize("k,error,builtin", [
    ("3", errors.InvalidTypeError, TypeError),
    (1.5, errors.InvalidTypeError, TypeError),
    (None, errors.InvalidTypeError, TypeError),
    (True, errors.InvalidTypeError, TypeError),
    (0, errors.InvalidArgumentError, ValueError),
    (-1, errors.InvalidArgumentError, ValueError),
], ids=["str", "float", "none", "bool", "zero", "negative"])
def test_search_bad_k(vectors_db, store_path, k, error, builtin):
    db, query = vectors_db
    refused(store_path, error, builtin, db.search, query, k=k)


@pytest.mark.parametrize("ids,error,builtin", [
    ("12", errors.InvalidTypeError, TypeError),
    (5, errors.InvalidTypeError, TypeError),
    ([1.5], errors.InvalidTypeError, TypeError),
    (["1"], errors.InvalidTypeError, TypeError),
    ([0], errors.InvalidArgumentError, ValueError),
    ([-3], errors.InvalidArgumentError, ValueError),
    ([2**63], errors.InvalidArgumentError, ValueError),
], ids=["str", "int", "float-member", "str-member", "zero", "negative", "2**63"])
def test_search_bad_ids(vectors_db, store_path, ids, error, builtin):
    db, query = vectors_db
    refused(store_path, error, builtin, db.search, query, k=2, ids=ids)


def test_search_ids_dict_is_refused_like_get_nodes(vectors_db, store_path):
    db, query = vectors_db
    refused(store_path, errors.InvalidTypeError, TypeError, db.get_nodes, {1: 2})
    refused(store_path, errors.InvalidTypeError, TypeError, db.search, query, k=2, ids={1: 2})

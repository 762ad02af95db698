"""Unit tests of codegraph_store.Store: exact expected values for every public operation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import types

import apsw
import pytest

from codegraph_store import CheckReport, Config, Edge, EdgeKind, Node, NodeKind, Store
from codegraph_store import errors
from codegraph_store.schema import latest_version
from conftest import build_node

LATEST = latest_version()

CONTAINS, CALLS, IMPORTS, INHERITS, REFERENCES = (EdgeKind.CONTAINS, EdgeKind.CALLS,
                                                  EdgeKind.IMPORTS, EdgeKind.INHERITS,
                                                  EdgeKind.REFERENCES)


# --------------------------------------------------------------------------- helpers


def dump(store: Store) -> tuple:
    """Everything a user can see of a store's contents, in a stable order."""
    return (list(store.iter_nodes()), list(store.iter_edges()),
            [(f.path, f.node_count) for f in store.files()])


def raw_blob(path, table: str, where: str, params) -> bytes:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(f"SELECT metadata FROM {table} WHERE {where}", params).fetchone()[0]
    finally:
        conn.close()


def by_id(*nodes: Node) -> list[Node]:
    return sorted(nodes, key=lambda n: n.id)


def leveled(levels: dict) -> list[tuple[Node, int]]:
    """The expected traverse() answer for ``{node: distance}``: by distance, then id."""
    return sorted(levels.items(), key=lambda item: (item[1], item[0].id))


@pytest.fixture
def g(store):
    """A small two-file project:

    pkg/mod.py   module pkg.mod 1-100: class A 10-40 (methods run 12-20, stop 22-30),
                 class B(A) 50-60, function helper 70-75
    pkg/util.py  module pkg.util 1-50: function helper 5-10, function run 12-14

    calls:  A.run -> mod.helper -> util.helper -> util.run;  A.stop -> A.run
    util.run references mod.helper (a cycle with the calls); B inherits A;
    pkg.mod imports pkg.util; modules/classes contain their members.
    """
    M = build_node("mod", "module", qualname="pkg.mod", file="pkg/mod.py", start_line=1, end_line=100)
    A = build_node("A", "class", qualname="pkg.mod.A", file="pkg/mod.py", start_line=10, end_line=40)
    run = build_node("run", "method", qualname="pkg.mod.A.run", file="pkg/mod.py", start_line=12,
                     end_line=20)
    stop = build_node("stop", "method", qualname="pkg.mod.A.stop", file="pkg/mod.py", start_line=22,
                      end_line=30)
    B = build_node("B", "class", qualname="pkg.mod.B", file="pkg/mod.py", start_line=50, end_line=60)
    helper = build_node("helper", "function", qualname="pkg.mod.helper", file="pkg/mod.py",
                        start_line=70, end_line=75)
    U = build_node("util", "module", qualname="pkg.util", file="pkg/util.py", start_line=1, end_line=50)
    uhelper = build_node("helper", "function", qualname="pkg.util.helper", file="pkg/util.py",
                         start_line=5, end_line=10)
    urun = build_node("run", "function", qualname="pkg.util.run", file="pkg/util.py", start_line=12,
                      end_line=14)
    nodes = [M, A, run, stop, B, helper, U, uhelper, urun]
    edges = [Edge(M.id, CONTAINS, A.id), Edge(M.id, CONTAINS, B.id), Edge(M.id, CONTAINS, helper.id),
             Edge(A.id, CONTAINS, run.id), Edge(A.id, CONTAINS, stop.id),
             Edge(U.id, CONTAINS, uhelper.id), Edge(U.id, CONTAINS, urun.id),
             Edge(run.id, CALLS, helper.id), Edge(stop.id, CALLS, run.id),
             Edge(helper.id, CALLS, uhelper.id), Edge(uhelper.id, CALLS, urun.id),
             Edge(urun.id, REFERENCES, helper.id), Edge(B.id, INHERITS, A.id),
             Edge(M.id, IMPORTS, U.id)]
    assert len({n.id for n in nodes}) == len(nodes)
    assert store.add_nodes(nodes) == 9
    assert store.add_edges(edges) == 14
    return types.SimpleNamespace(store=store, nodes=nodes, edges=edges, M=M, A=A, run=run, stop=stop,
                                 B=B, helper=helper, U=U, uhelper=uhelper, urun=urun)


# --------------------------------------------------------------------- lifecycle


def test_open_creates_a_new_store_and_reopen_keeps_the_data(store_path):
    assert not store_path.exists()
    s = Store.open(store_path)
    try:
        assert store_path.exists()
        assert s.readonly is False
        st = s.stats()
        assert (st["schema_version"], st["files"], st["nodes"], st["edges"]) == (LATEST, 0, 0, 0)
        n = build_node("f", metadata={"doc": "hello"})
        s.add_nodes([n])
    finally:
        s.close()
    assert repr(s) == f"<Store {str(store_path)!r} closed>"
    s2 = Store.open(str(store_path))
    try:
        assert s2.get_node(n.id) == n
        assert s2.stats()["nodes"] == 1
        assert repr(s2) == f"<Store {str(store_path)!r} open>"
    finally:
        s2.close()


def test_filename_is_the_file_path_and_path_is_the_query(store, store_path):
    # Regression: a `path` property was shadowed by the path() shortest-path method.
    assert store.filename == str(store_path)
    assert callable(store.path)


def test_open_marks_the_file_as_a_codegraph_store(store, store_path):
    conn = apsw.Connection(str(store_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.pragma("application_id") == 0x43474442
        assert conn.pragma("user_version") == LATEST
        assert conn.pragma("journal_mode") == "wal"
    finally:
        conn.close()


def test_context_manager_closes_the_store(store_path):
    n = build_node("f")
    with Store.open(store_path) as s:
        assert isinstance(s, Store)
        s.add_nodes([n])
        assert s.get_node(n.id) == n
    with pytest.raises(errors.StoreClosedError):
        s.get_node(n.id)
    s.close()  # idempotent
    with Store.open(store_path) as s2:
        assert s2.get_node(n.id) == n


def test_context_manager_closes_on_exception(store_path):
    with pytest.raises(KeyError):
        with Store.open(store_path) as s:
            raise KeyError("boom")
    with pytest.raises(errors.StoreClosedError):
        s.stats()


# ------------------------------------------------------------------------- writes


def test_add_nodes_round_trips_every_field(store):
    n = Node(id=42, kind=NodeKind.METHOD, name="m", qualname="pkg.C.m", file="pkg/c.py",
             start_line=3, start_col=4, end_line=9, end_col=17,
             metadata={"doc": "d\u00e9j\u00e0 \U0001f600", "args": [1, 2.5, None, True, "x"],
                       "nested": {"k": {"j": []}}, "big": 2**62})
    nofile = Node(id=7, kind=NodeKind.MODULE, name="builtins", qualname="builtins")
    assert store.add_nodes([n, nofile]) == 2
    assert store.get_node(42) == n
    assert store.get_node(7) == nofile
    assert store.get_node(7).file is None
    assert store.add_nodes([]) == 0


def test_add_nodes_upsert_replaces_the_node_and_keeps_its_edges(store):
    a = build_node("a", metadata={"v": 1})
    b = build_node("b")
    c = build_node("c")
    store.add_nodes([a, b, c])
    store.add_edges([Edge(a.id, CALLS, b.id, {"line": 3}), Edge(c.id, REFERENCES, a.id)])
    a2 = Node(a.id, NodeKind.CLASS, "a2", "pkg.a2", "other.py", 5, 1, 8, 2, {"v": 2})
    assert store.add_nodes([a2]) == 1
    assert store.get_node(a.id) == a2
    assert store.stats()["nodes"] == 3
    # both the outgoing and the incoming edge survived the replacement
    assert store.edges_of(a.id, "out") == [Edge(a.id, CALLS, b.id, {"line": 3})]
    assert store.edges_of(a.id, "in") == [Edge(c.id, REFERENCES, a.id)]
    assert store.neighbors(a.id, "out") == [b]
    assert store.neighbors(a.id, "in") == [c]


def test_add_nodes_same_id_twice_in_one_call_last_wins(store):
    a = build_node("a", metadata=1)
    a2 = build_node("a", metadata=2)
    assert a.id == a2.id
    store.add_nodes([a, a2])
    assert store.get_node(a.id).metadata == 2
    assert store.stats()["nodes"] == 1


def test_add_edges_upsert_replaces_metadata(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    store.add_edges([Edge(a.id, CALLS, b.id, {"n": 1})])
    store.add_edges([Edge(a.id, CALLS, b.id, {"n": 2})])
    assert list(store.iter_edges()) == [Edge(a.id, CALLS, b.id, {"n": 2})]
    store.add_edges([Edge(a.id, CALLS, b.id)])  # metadata None replaces too
    assert list(store.iter_edges()) == [Edge(a.id, CALLS, b.id, None)]
    # a different kind between the same nodes is a second edge
    store.add_edges([Edge(a.id, REFERENCES, b.id, [1])])
    assert list(store.iter_edges()) == [Edge(a.id, CALLS, b.id), Edge(a.id, REFERENCES, b.id, [1])]
    assert store.stats()["edges"] == 2


def test_delete_nodes_cascades_edges(store):
    a, b, c = build_node("a"), build_node("b"), build_node("c")
    store.add_nodes([a, b, c])
    store.add_edges([Edge(a.id, CALLS, b.id), Edge(b.id, CALLS, c.id), Edge(a.id, CALLS, c.id),
                     Edge(b.id, REFERENCES, b.id)])
    store.delete_nodes([b.id, 123456])  # unknown ids are ignored
    assert store.get_node(b.id) is None
    assert list(store.iter_nodes()) == by_id(a, c)
    assert list(store.iter_edges()) == [Edge(a.id, CALLS, c.id)]
    assert store.neighbors(a.id) == [c]
    store.delete_nodes([])
    assert store.stats()["nodes"] == 2


def test_delete_edges_by_edge_and_by_triple(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    store.add_edges([Edge(a.id, CALLS, b.id), Edge(a.id, REFERENCES, b.id), Edge(b.id, CALLS, a.id)])
    store.delete_edges([Edge(a.id, CALLS, b.id, {"ignored": True})])
    store.delete_edges([(b.id, "calls", a.id), (a.id, INHERITS, b.id)])  # last one is absent
    assert list(store.iter_edges()) == [Edge(a.id, REFERENCES, b.id)]
    assert store.stats()["nodes"] == 2  # nodes untouched


def test_delete_file_removes_its_nodes_and_their_edges_in_both_directions(g):
    s = g.store
    assert s.delete_file("pkg/util.py") == 3
    assert [f.path for f in s.files()] == ["pkg/mod.py"]
    for n in (g.U, g.uhelper, g.urun):
        assert s.get_node(n.id) is None
    assert list(s.iter_nodes()) == by_id(g.M, g.A, g.run, g.stop, g.B, g.helper)
    gone = {g.U.id, g.uhelper.id, g.urun.id}
    kept = sorted(((e.src, e.kind, e.dst) for e in g.edges if e.src not in gone and e.dst not in gone))
    assert len(kept) == 8
    assert [(e.src, e.kind, e.dst) for e in s.iter_edges()] == kept
    assert s.callees(g.helper.id) == []  # helper -> util.helper (outgoing into the file)
    assert s.neighbors(g.helper.id, "in") == by_id(g.M, g.run)  # util.run -> helper (incoming)
    with pytest.raises(errors.NotFoundError):
        s.delete_file("pkg/util.py")


def test_delete_file_unknown_raises_not_found(store):
    store.add_nodes([build_node("f", file="a.py")])
    with pytest.raises(errors.NotFoundError) as info:
        store.delete_file("b.py")
    assert isinstance(info.value, LookupError)
    assert store.stats()["nodes"] == 1


def test_delete_file_of_a_file_without_nodes_returns_zero(store):
    a = build_node("f", file="a.py")
    store.add_nodes([a])
    store.delete_nodes([a.id])
    assert [(f.path, f.node_count) for f in store.files()] == [("a.py", 0)]
    assert store.delete_file("a.py") == 0
    assert store.files() == []


def test_files_lists_paths_language_and_counts(g):
    files = g.store.files()
    assert [(f.path, f.language, f.node_count) for f in files] == [
        ("pkg/mod.py", "python", 6), ("pkg/util.py", "python", 3)]


# -------------------------------------------------------------------------- reads


def test_get_node_and_get_nodes(g):
    s = g.store
    assert s.get_node(g.A.id) == g.A
    assert s.get_node(99) is None
    assert s.get_nodes([g.B.id, 99, g.A.id, g.B.id, g.A.id]) == [g.B, None, g.A, g.B, g.A]
    assert s.get_nodes([]) == []
    assert s.get_nodes(iter([g.M.id])) == [g.M]
    assert s.get_nodes(n.id for n in reversed(g.nodes)) == list(reversed(g.nodes))


def test_get_nodes_more_ids_than_a_read_batch(open_store):
    s = open_store(config={"io_optimization": {"read_batch_size": 3}})
    nodes = [build_node(f"n{i}", metadata=i) for i in range(10)]
    s.add_nodes(nodes)
    ids = [n.id for n in nodes]
    wanted = ids[::-1] + [5] + ids[:4]
    assert s.get_nodes(wanted) == nodes[::-1] + [None] + nodes[:4]


def test_find_by_name_qualname_kind_file_prefix(g):
    s = g.store
    assert s.find("helper") == [g.helper, g.uhelper]  # ordered by qualname
    assert s.find("run") == [g.run, g.urun]
    assert s.find("helper", file="pkg/util.py") == [g.uhelper]
    assert s.find("run", kind="method") == [g.run]
    assert s.find("run", kind=["function", NodeKind.CLASS]) == [g.urun]
    assert s.find(qualname="pkg.mod.A") == [g.A]
    assert s.find(qualname="pkg.mod.A", prefix=True) == [g.A, g.run, g.stop]
    assert s.find("he", prefix=True) == [g.helper, g.uhelper]
    assert s.find(qualname="pkg.", prefix=True, kind="module") == [g.M, g.U]
    assert s.find(file="pkg/mod.py", kind="method") == [g.run, g.stop]
    assert s.find(file="pkg/util.py") == [g.U, g.uhelper, g.urun]
    assert s.find("helper", limit=1) == [g.helper]
    assert s.find(qualname="pkg", prefix=True, limit=None) == sorted(g.nodes, key=lambda n: n.qualname)
    assert s.find("nothing") == []
    assert s.find("helper", kind=[]) == []
    assert s.find("helper", file="nope.py") == []


def test_find_orders_equal_qualnames_by_id(store):
    x1 = Node(900, NodeKind.FUNCTION, "f", "dup.f", "a.py", 1, 0, 1, 0)
    x2 = Node(100, NodeKind.FUNCTION, "f", "dup.f", "b.py", 1, 0, 1, 0)
    x3 = Node(500, NodeKind.FUNCTION, "f", "dup.e", "b.py", 1, 0, 1, 0)
    store.add_nodes([x1, x2, x3])
    assert store.find("f") == [x3, x2, x1]
    assert store.find("f", limit=2) == [x3, x2]


def test_at_returns_the_innermost_node(g):
    s = g.store
    assert s.at("pkg/mod.py", 15) == g.run
    assert s.at("pkg/mod.py", 12) == g.run
    assert s.at("pkg/mod.py", 20) == g.run
    assert s.at("pkg/mod.py", 22) == g.stop
    assert s.at("pkg/mod.py", 11) == g.A
    assert s.at("pkg/mod.py", 21) == g.A
    assert s.at("pkg/mod.py", 40) == g.A
    assert s.at("pkg/mod.py", 45) == g.M
    assert s.at("pkg/mod.py", 55) == g.B
    assert s.at("pkg/mod.py", 1) == g.M
    assert s.at("pkg/mod.py", 100) == g.M
    assert s.at("pkg/mod.py", 101) is None
    assert s.at("pkg/util.py", 13) == g.urun
    assert s.at("pkg/util.py", 11) == g.U
    with pytest.raises(errors.NotFoundError):
        s.at("pkg/other.py", 1)


def test_at_is_none_in_a_file_with_no_node_on_that_line(store):
    store.add_nodes([build_node("f", file="a.py", start_line=10, end_line=12)])
    assert store.at("a.py", 9) is None
    assert store.at("a.py", 13) is None
    assert store.at("a.py", 11).name == "f"


def test_neighbors_directions_and_kind_filters(g):
    s = g.store
    assert s.neighbors(g.A.id) == by_id(g.run, g.stop)
    assert s.neighbors(g.A.id, "out") == by_id(g.run, g.stop)
    assert s.neighbors(g.A.id, "in") == by_id(g.M, g.B)
    assert s.neighbors(g.A.id, "in", kinds="inherits") == [g.B]
    assert s.neighbors(g.A.id, "in", kinds=INHERITS) == [g.B]
    assert s.neighbors(g.A.id, "in", kinds=int(INHERITS)) == [g.B]
    assert s.neighbors(g.A.id, "both") == by_id(g.M, g.B, g.run, g.stop)
    assert s.neighbors(g.A.id, "both", kinds=["inherits", "calls"]) == [g.B]
    assert s.neighbors(g.helper.id, "in") == by_id(g.M, g.run, g.urun)
    assert s.neighbors(g.helper.id, "in", kinds=[CALLS, REFERENCES]) == by_id(g.run, g.urun)
    assert s.neighbors(g.helper.id, "in", kinds="contains") == [g.M]
    assert s.neighbors(g.helper.id, "out", kinds="imports") == []
    assert s.neighbors(123, "both") == []


def test_neighbors_both_lists_a_node_linked_both_ways_once(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    store.add_edges([Edge(a.id, CALLS, b.id), Edge(b.id, CALLS, a.id), Edge(a.id, REFERENCES, b.id)])
    assert store.neighbors(a.id, "both") == [b]


def test_callers_and_callees(g):
    s = g.store
    assert s.callers(g.helper.id) == [g.run]
    assert s.callees(g.helper.id) == [g.uhelper]
    assert s.callers(g.run.id) == [g.stop]
    assert s.callees(g.run.id) == [g.helper]
    assert s.callees(g.urun.id) == []  # a reference is not a call
    assert s.callers(g.M.id) == []


def test_edges_of(g):
    s = g.store
    assert s.edges_of(g.A.id, "out") == sorted([Edge(g.A.id, CONTAINS, g.run.id),
                                                Edge(g.A.id, CONTAINS, g.stop.id)],
                                               key=lambda e: e.dst)
    assert s.edges_of(g.A.id, "in") == sorted([Edge(g.M.id, CONTAINS, g.A.id),
                                               Edge(g.B.id, INHERITS, g.A.id)],
                                              key=lambda e: (e.kind, e.src))


def test_traverse_levels_and_depth(g):
    s = g.store
    level1 = {g.A: 1, g.B: 1, g.helper: 1, g.U: 1}
    level2 = {g.run: 2, g.stop: 2, g.uhelper: 2, g.urun: 2}
    assert s.traverse(g.M.id, "out", depth=1) == leveled(level1)
    assert s.traverse(g.M.id) == leveled({**level1, **level2})  # default: out, depth 2
    assert s.traverse(g.M.id, depth=None) == leveled({**level1, **level2})
    assert s.traverse(g.stop.id, kinds="calls", depth=None) == [
        (g.run, 1), (g.helper, 2), (g.uhelper, 3), (g.urun, 4)]
    assert s.traverse(g.stop.id, kinds="calls", depth=2) == [(g.run, 1), (g.helper, 2)]
    assert s.traverse(g.stop.id, kinds="calls", depth=1) == [(g.run, 1)]
    assert s.traverse(g.M.id, kinds="contains", depth=None) == leveled(
        {g.A: 1, g.B: 1, g.helper: 1, g.run: 2, g.stop: 2})
    assert s.traverse(g.A.id, "in", depth=None) == leveled({g.M: 1, g.B: 1})
    assert s.traverse(g.A.id, "both", depth=1) == leveled({g.M: 1, g.B: 1, g.run: 1, g.stop: 1})
    assert s.traverse(g.urun.id, "out", kinds="calls") == []
    assert s.traverse(424242) == []


def test_traverse_follows_cycles_once_and_excludes_the_start(g):
    s = g.store
    # util.helper -calls-> util.run -references-> mod.helper -calls-> util.helper
    assert s.traverse(g.uhelper.id, kinds=[CALLS, REFERENCES], depth=None) == [(g.urun, 1), (g.helper, 2)]
    assert s.traverse(g.uhelper.id, kinds=[CALLS, REFERENCES], depth=10) == [(g.urun, 1), (g.helper, 2)]


def test_traverse_self_loop(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    store.add_edges([Edge(a.id, CALLS, a.id), Edge(a.id, CALLS, b.id), Edge(b.id, CALLS, a.id)])
    assert store.traverse(a.id, depth=None) == [(b, 1)]
    assert store.neighbors(a.id) == by_id(a, b)


def test_impact_is_the_reverse_closure_over_dependency_edges(g):
    s = g.store
    assert s.impact(g.uhelper.id) == leveled({g.helper: 1, g.run: 2, g.urun: 2, g.stop: 3})
    assert s.impact(g.uhelper.id, depth=1) == [(g.helper, 1)]
    assert s.impact(g.uhelper.id, depth=2) == leveled({g.helper: 1, g.run: 2, g.urun: 2})
    assert s.impact(g.urun.id) == [(g.uhelper, 1), (g.helper, 2), (g.run, 3), (g.stop, 4)]
    # subclasses and importers count, containing scopes do not
    assert s.impact(g.A.id) == [(g.B, 1)]
    assert s.impact(g.U.id) == [(g.M, 1)]
    assert s.impact(g.M.id) == []
    assert s.impact(g.stop.id) == []


def test_path_shortest_and_unreachable(g):
    s = g.store
    assert s.path(g.stop.id, g.uhelper.id) == [g.stop, g.run, g.helper, g.uhelper]
    assert s.path(g.stop.id, g.uhelper.id, max_depth=3) == [g.stop, g.run, g.helper, g.uhelper]
    assert s.path(g.stop.id, g.uhelper.id, max_depth=2) is None
    assert s.path(g.M.id, g.urun.id) == [g.M, g.U, g.urun]
    assert s.path(g.M.id, g.urun.id, kinds="contains") is None
    assert s.path(g.M.id, g.urun.id, kinds=["contains", "imports"]) == [g.M, g.U, g.urun]
    assert s.path(g.M.id, g.urun.id, kinds=["contains", "calls"]) == [g.M, g.helper, g.uhelper, g.urun]
    assert s.path(g.M.id, g.run.id) == [g.M, g.A, g.run]
    assert s.path(g.M.id, g.run.id, max_depth=1) is None
    assert s.path(g.uhelper.id, g.stop.id) is None  # no route along edge directions
    assert s.path(g.uhelper.id, g.stop.id, direction="in") == [g.uhelper, g.helper, g.run, g.stop]
    assert s.path(g.uhelper.id, g.stop.id, direction="both") == [g.uhelper, g.helper, g.run, g.stop]
    assert s.path(g.A.id, g.A.id) == [g.A]
    assert s.path(g.A.id, g.A.id, direction="both") == [g.A]


def test_path_unknown_endpoint_raises_not_found(g):
    with pytest.raises(errors.NotFoundError):
        g.store.path(g.A.id, 31337)
    with pytest.raises(errors.NotFoundError):
        g.store.path(31337, g.A.id)
    with pytest.raises(errors.NotFoundError):
        g.store.path(31337, 31337)


def test_path_in_a_disconnected_graph_is_none(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    assert store.path(a.id, b.id, direction="both") is None


def test_path_on_a_long_chain(store):
    nodes = [Node(i, NodeKind.FUNCTION, f"f{i}", f"f{i}") for i in range(1, 31)]
    store.add_nodes(nodes)
    store.add_edges([Edge(i, CALLS, i + 1) for i in range(1, 30)])
    store.add_edges([Edge(1, REFERENCES, 20)])  # a shortcut
    assert [n.id for n in store.path(1, 30)] == [1, 20] + list(range(21, 31))
    assert [n.id for n in store.path(1, 30, kinds="calls")] == list(range(1, 31))
    assert store.path(1, 30, kinds="calls", max_depth=28) is None
    assert [n.id for n in store.path(30, 1, direction="both")] == list(range(30, 19, -1)) + [1]


def test_iter_nodes_and_iter_edges_page_through_everything_in_order(g):
    s = g.store
    expected_nodes = by_id(*g.nodes)
    expected_edges = sorted(g.edges, key=lambda e: (e.src, int(e.kind), e.dst))
    assert list(s.iter_nodes(page=3)) == expected_nodes
    assert list(s.iter_nodes(page=1)) == expected_nodes
    assert list(s.iter_nodes()) == expected_nodes
    assert list(s.iter_edges(page=3)) == expected_edges
    assert list(s.iter_edges(page=2)) == expected_edges
    assert list(s.iter_edges()) == expected_edges


def test_iter_edges_pages_across_edges_sharing_a_source(store):
    hub = Node(1, NodeKind.MODULE, "hub", "hub")
    leaves = [Node(i, NodeKind.FUNCTION, f"l{i}", f"l{i}") for i in range(2, 9)]
    store.add_nodes([hub, *leaves])
    edges = [Edge(1, k, leaf.id) for leaf in leaves for k in (CONTAINS, REFERENCES)]
    store.add_edges(edges)
    expected = sorted(edges, key=lambda e: (e.src, int(e.kind), e.dst))
    assert list(store.iter_edges(page=3)) == expected
    assert list(store.iter_nodes(page=3)) == [hub, *leaves]


def test_iter_on_an_empty_store(store):
    assert list(store.iter_nodes(page=3)) == []
    assert list(store.iter_edges(page=3)) == []


def test_stats_counts_by_kind_name(g):
    st = g.store.stats()
    assert set(st) == {"path", "schema_version", "files", "files_with_errors", "nodes", "edges",
                       "nodes_by_kind", "edges_by_kind", "unresolved_refs", "file_bytes", "wal_bytes",
                       "cache"}
    assert st["path"] == g.store._path
    assert st["schema_version"] == LATEST
    assert (st["files"], st["files_with_errors"], st["nodes"], st["edges"]) == (2, 0, 9, 14)
    assert st["nodes_by_kind"] == {"module": 2, "class": 2, "function": 3, "method": 2,
                                   "variable": 0, "import": 0, "attribute": 0, "parameter": 0}
    assert st["edges_by_kind"] == {"contains": 7, "calls": 4, "imports": 1, "inherits": 1,
                                   "references": 1}
    assert st["unresolved_refs"] == 0
    assert st["file_bytes"] == os.path.getsize(st["path"])
    assert st["file_bytes"] > 0
    assert st["cache"] is None  # the node cache is off by default


def test_stats_with_cache(open_store):
    s = open_store(config={"memory_optimization": {"enable_cache": True}})
    assert set(s.stats()["cache"]) == {"entries", "bytes", "hits", "misses"}


def test_stats_without_cache(open_store):
    s = open_store(config={"memory_optimization": {"enable_cache": False}})
    assert s.stats()["cache"] is None


# -------------------------------------------------------------------- maintenance


def test_check_is_ok_on_a_good_store(g):
    report = g.store.check()
    assert isinstance(report, CheckReport)
    assert report.ok, report.problems
    assert report.problems == ()
    assert report.checked[0] == "sqlite integrity"
    assert "node line ranges are ordered" in report.checked
    assert "metadata records decode" in report.checked
    quick = g.store.check(full=False)
    assert quick.ok
    assert "metadata records decode" not in quick.checked
    assert report.as_dict()["ok"] is True


def test_check_reports_a_reversed_line_range_written_through_raw_sql(g, store_path):
    conn = apsw.Connection(str(store_path))  # plain connection: no foreign keys, not defensive
    try:
        conn.execute("UPDATE nodes SET end_line = start_line - 1 WHERE id = ?", (g.A.id,))
    finally:
        conn.close()
    report = g.store.check()
    assert not report.ok
    assert report.problems == ("node line ranges are ordered: 1 violations",)
    assert report.as_dict()["ok"] is False


def test_check_reports_a_dangling_edge_and_bad_metadata_written_through_raw_sql(g, store_path):
    conn = apsw.Connection(str(store_path))
    try:
        assert conn.pragma("foreign_keys") == 0
        conn.execute("INSERT INTO edges (src, kind, dst) VALUES (?, 2, 999)", (g.A.id,))
        conn.execute("UPDATE nodes SET metadata = x'4a7b' WHERE id = ?", (g.B.id,))  # 'J{'
    finally:
        conn.close()
    report = g.store.check()
    assert not report.ok
    assert len(report.problems) == 2
    assert report.problems[0] == "dangling references: edges.dst -> nodes"
    assert report.problems[1].startswith(f"nodes id={g.B.id}: metadata does not decode")
    # the quick check does not decode metadata
    assert g.store.check(full=False).problems == ("dangling references: edges.dst -> nodes",)


def test_compact_shrinks_the_file_and_keeps_the_data(store, store_path):
    keep = [build_node(f"keep{i}", metadata={"i": i}) for i in range(5)]
    # random hex: 4 bits of entropy per character, so each record stays >= 1200 bytes
    junk = [build_node(f"junk{i}", file="junk.py", metadata={"pad": os.urandom(1200).hex()})
            for i in range(300)]
    store.add_nodes(keep + junk)
    store.add_edges([Edge(keep[0].id, CALLS, keep[1].id)])
    store.compact()
    size_full = os.path.getsize(store_path)
    assert store.stats()["wal_bytes"] == 0
    assert size_full > 300 * 1200
    assert store.delete_file("junk.py") == 300
    before = dump(store)
    store.compact()
    st = store.stats()
    assert st["wal_bytes"] == 0
    size_after = os.path.getsize(store_path)
    assert st["file_bytes"] == size_after
    assert size_full - size_after > 300 * 1000  # the junk's pages are gone
    assert dump(store) == before
    assert store.check().ok
    store.close()
    with Store.open(store_path) as again:
        assert dump(again) == before


# ----------------------------------------------------------------------- metadata


@pytest.mark.parametrize("value", [
    None, 0, -1, 2**63 - 1, 10**30, 1.5, -0.0, True, False, "", "t\u00eate \U0001f40d \x01",
    [], {}, [1, [2, [3, {"a": None}]]], {"k": {"nested": [True, None, 1e300]}},
])
def test_metadata_round_trip(store, value):
    n = build_node("f", metadata=value)
    b = build_node("g")
    store.add_nodes([n, b])
    store.add_edges([Edge(n.id, CALLS, b.id, value)])
    assert store.get_node(n.id).metadata == value
    assert type(store.get_node(n.id).metadata) is type(value)
    assert store.edges_of(n.id) == [Edge(n.id, CALLS, b.id, value)]


def test_large_metadata_is_compressed(store, store_path):
    big = {"doc": "lorem ipsum " * 1000, "lines": list(range(500))}
    n = build_node("f", metadata=big)
    b = build_node("g")
    small = build_node("h", metadata={"doc": "short"})
    store.add_nodes([n, b, small])
    store.add_edges([Edge(n.id, CALLS, b.id, big)])
    assert store.get_node(n.id).metadata == big
    assert store.edges_of(n.id)[0].metadata == big
    blob = raw_blob(store_path, "nodes", "id = ?", (n.id,))
    assert blob[:1] == b"Z"
    assert len(blob) < 5000
    assert raw_blob(store_path, "edges", "src = ?", (n.id,))[:1] == b"Z"
    assert raw_blob(store_path, "nodes", "id = ?", (small.id,)) == b'J{"doc":"short"}'
    assert raw_blob(store_path, "nodes", "id = ?", (b.id,)) is None


def test_compression_can_be_switched_off(open_store, store_path):
    s = open_store(config={"io_optimization": {"enable_compression": False}})
    big = {"doc": "lorem ipsum " * 1000}
    n = build_node("f", metadata=big)
    s.add_nodes([n])
    assert s.get_node(n.id).metadata == big
    blob = raw_blob(store_path, "nodes", "id = ?", (n.id,))
    assert blob[:1] == b"J"
    assert blob == b"J" + ('{"doc":"' + "lorem ipsum " * 1000 + '"}').encode()


def test_compression_threshold_override(open_store, store_path):
    s = open_store(config=Config.defaults().replace(io_optimization__compression_threshold=20))
    n = build_node("f", metadata="a" * 60)
    m = build_node("g", metadata="a" * 10)
    s.add_nodes([n, m])
    assert raw_blob(store_path, "nodes", "id = ?", (n.id,))[:1] == b"Z"
    assert raw_blob(store_path, "nodes", "id = ?", (m.id,)) == b'J"aaaaaaaaaa"'
    assert s.get_node(n.id).metadata == "a" * 60


def test_compressed_records_written_without_compression_still_read(open_store, store_path):
    n = build_node("f", metadata={"doc": "x" * 5000})
    s1 = open_store()
    s1.add_nodes([n])
    s1.close()
    s2 = open_store(config={"io_optimization": {"enable_compression": False}})
    assert s2.get_node(n.id) == n


# ------------------------------------------------------------------------- config


def test_config_overrides_by_dict(open_store):
    s = open_store(config={"io_optimization": {"write_buffer_size": 7, "enable_batching": False},
                           "memory_optimization": {"enable_cache": False}})
    defaults = Config.defaults()
    assert s.config.io_optimization.write_buffer_size == 7
    assert s.config.io_optimization.enable_batching is False
    assert s.config.memory_optimization.enable_cache is False
    assert s.config.io_optimization.read_batch_size == defaults.io_optimization.read_batch_size == 100
    assert s.config.cpu_optimization == defaults.cpu_optimization


def test_config_replace_returns_a_changed_copy(open_store):
    base = Config.defaults()
    changed = base.replace(io_optimization__enable_batching=False,
                           memory_optimization__compact_cache_size=10)
    assert base.io_optimization.enable_batching is True
    assert base.memory_optimization.compact_cache_size == 100000
    assert changed.io_optimization.enable_batching is False
    assert changed.memory_optimization.compact_cache_size == 10
    assert changed.as_dict()["cpu_optimization"] == base.as_dict()["cpu_optimization"]
    s = open_store(config=changed)
    assert s.config is changed


def test_config_from_a_toml_file(open_store, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[io_optimization]\nwrite_buffer_size = 3\nenable_prefetch = true\n")
    s = open_store(config=str(cfg))
    assert s.config.io_optimization.write_buffer_size == 3
    assert s.config.io_optimization.enable_prefetch is True
    assert s.config.memory_optimization.enable_cache is False  # untouched: the default


def test_defaults_match_the_packaged_file():
    c = Config.defaults()
    assert c.io_optimization.write_buffer_size == 1000
    assert c.io_optimization.read_batch_size == 100
    assert c.io_optimization.compression_threshold == 1024
    assert c.memory_optimization.memory_pressure_threshold == 0.8
    assert c.performance_targets.graph_memory_mb == (512.0, 256.0)


# ----------------------------------------------------------------------- readonly


def _file_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_readonly_store_reads_and_refuses_every_write(store_path):
    with Store.open(store_path) as w:
        a, b = build_node("a", file="a.py", start_line=1, end_line=5), build_node("b", file="a.py")
        w.add_nodes([a, b])
        w.add_edges([Edge(a.id, CALLS, b.id)])
    before = _file_bytes(store_path)
    r = Store.open(store_path, readonly=True)
    try:
        assert r.readonly is True
        assert repr(r) == f"<Store {str(store_path)!r} readonly>"
        assert r.get_node(a.id) == a
        assert r.get_nodes([b.id, a.id]) == [b, a]
        assert r.find("a") == [a]
        assert r.at("a.py", 3) == a
        assert r.callees(a.id) == [b]
        assert r.traverse(a.id) == [(b, 1)]
        assert r.path(a.id, b.id) == [a, b]
        assert list(r.iter_nodes()) == by_id(a, b)
        assert list(r.iter_edges()) == [Edge(a.id, CALLS, b.id)]
        assert r.stats()["nodes"] == 2
        assert r.check().ok
        writes = [
            lambda: r.add_nodes([build_node("c")]),
            lambda: r.add_nodes([a]),
            lambda: r.add_edges([Edge(b.id, CALLS, a.id)]),
            lambda: r.delete_nodes([a.id]),
            lambda: r.delete_edges([(a.id, CALLS, b.id)]),
            lambda: r.delete_file("a.py"),
            lambda: r.compact(),
        ]
        for write in writes:
            with pytest.raises(errors.ReadOnlyError) as info:
                write()
            assert isinstance(info.value, PermissionError)
        with pytest.raises(errors.ReadOnlyError):
            with r.transaction():
                pass
        with pytest.raises(errors.ReadOnlyError):
            with r.bulk_load():
                pass
        assert r.get_node(a.id) == a
        assert r.stats()["edges"] == 1
    finally:
        r.close()
    assert _file_bytes(store_path) == before
    wal = str(store_path) + "-wal"
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0


def test_readonly_store_sees_commits_of_a_writer(open_store, store_path):
    w = open_store()
    a = build_node("a", metadata=1)
    w.add_nodes([a])
    r = open_store(readonly=True)
    assert r.get_node(a.id).metadata == 1
    w.add_nodes([build_node("a", metadata=2)])
    assert r.get_node(a.id).metadata == 2


def test_readonly_open_of_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(errors.NotFoundError):
        Store.open(tmp_path / "missing.cgdb", readonly=True)
    assert not (tmp_path / "missing.cgdb").exists()


# ------------------------------------------------------------------- transactions


def test_transaction_commits_atomically(open_store):
    s = open_store()
    other = open_store()  # a second connection sees only committed data
    a, b = build_node("a"), build_node("b")
    with s.transaction() as t:
        assert t is s
        s.add_nodes([a, b])
        s.add_edges([Edge(a.id, CALLS, b.id)])
        assert other.get_node(a.id) is None
        assert other.stats()["nodes"] == 0
    assert other.get_node(a.id) == a
    assert other.callees(a.id) == [b]


def test_transaction_rolls_back_on_exception(store, make_node):
    keep = make_node("keep", metadata=1)
    store.add_nodes([keep])
    before = dump(store)
    with pytest.raises(RuntimeError, match="midway"):
        with store.transaction():
            store.add_nodes([make_node("a", file="new.py"), make_node("keep", metadata=2)])
            store.add_edges([Edge(keep.id, CALLS, keep.id)])
            store.delete_nodes([keep.id])
            raise RuntimeError("midway")
    assert dump(store) == before
    assert store.get_node(keep.id) == keep
    assert store.stats()["files"] == 1


def test_nested_savepoint_rollback_undoes_only_the_inner_block(store):
    a, b, c = build_node("a"), build_node("b", file="b.py"), build_node("c")
    with store.transaction():
        store.add_nodes([a])
        with pytest.raises(ValueError, match="inner"):
            with store.transaction():
                store.add_nodes([b])
                store.add_edges([Edge(a.id, CALLS, b.id)])
                store.delete_nodes([a.id])
                assert store.get_node(a.id) is None
                assert store.get_node(b.id) == b
                raise ValueError("inner")
        assert store.get_node(a.id) == a
        assert store.get_node(b.id) is None
        with store.transaction():  # a committed inner block stays
            store.add_nodes([c])
        store.add_edges([Edge(a.id, CALLS, c.id)])
    assert list(store.iter_nodes()) == by_id(a, c)
    assert list(store.iter_edges()) == [Edge(a.id, CALLS, c.id)]
    assert [f.path for f in store.files()] == ["mod.py"]


def test_nested_three_levels(store):
    a, b, c = build_node("a"), build_node("b"), build_node("c")
    with store.transaction():
        store.add_nodes([a])
        with store.transaction():
            store.add_nodes([b])
            with pytest.raises(KeyError):
                with store.transaction():
                    store.add_nodes([c])
                    raise KeyError
            assert store.get_node(c.id) is None
        assert store.get_nodes([a.id, b.id, c.id]) == [a, b, None]
    assert list(store.iter_nodes()) == by_id(a, b)


def test_outer_exception_undoes_committed_inner_blocks(store):
    a, b = build_node("a"), build_node("b")
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.add_nodes([a])
            with store.transaction():
                store.add_nodes([b])
            1 / 0
    assert list(store.iter_nodes()) == []


def test_reads_inside_a_transaction_see_its_buffered_writes(open_store):
    s = open_store(config={"io_optimization": {"write_buffer_size": 1000}})
    other = open_store()
    M = build_node("m", "module", file="p.py", start_line=1, end_line=20)
    f = build_node("f", file="p.py", start_line=2, end_line=5, metadata={"x": 1})
    h = build_node("h", file="p.py", start_line=7, end_line=9)
    with s.transaction():
        s.add_nodes([M, f, h])
        s.add_edges([Edge(M.id, CONTAINS, f.id), Edge(M.id, CONTAINS, h.id), Edge(f.id, CALLS, h.id)])
        # the rows are still in the write buffer, not yet in SQLite
        assert len(s._txn.buffer) == 6
        assert s.get_node(f.id) == f
        assert len(s._txn.buffer) == 0  # the read flushed them
        assert other.get_node(f.id) is None  # but did not commit them
        s.add_nodes([build_node("f", file="p.py", start_line=2, end_line=5, metadata={"x": 2})])
        assert len(s._txn.buffer) == 1
        assert s.get_nodes([f.id, h.id])[0].metadata == {"x": 2}
        s.delete_edges([(M.id, CONTAINS, h.id)])
        assert s.neighbors(M.id) == [s.get_node(f.id)]
        assert s.find("h", file="p.py") == [h]
        assert s.at("p.py", 8) == h
        assert s.traverse(M.id, depth=None) == [(s.get_node(f.id), 1), (h, 2)]
        assert s.path(M.id, h.id) == [M, s.get_node(f.id), h]
        assert s.callers(h.id) == [s.get_node(f.id)]
        s.delete_nodes([h.id])
        assert s.get_node(h.id) is None
        assert [n.id for n in s.iter_nodes(page=1)] == sorted([M.id, f.id])
        assert list(s.iter_edges()) == [Edge(M.id, CONTAINS, f.id)]
        assert s.stats()["nodes"] == 2
        assert s.edges_of(M.id) == [Edge(M.id, CONTAINS, f.id)]
        assert other.stats()["nodes"] == 0
    assert other.stats()["nodes"] == 2
    assert other.get_node(f.id).metadata == {"x": 2}


def test_write_from_another_thread_waits_for_the_open_transaction(store):
    a, b = build_node("a"), build_node("b")
    done = threading.Event()

    def other():
        store.add_nodes([b])
        done.set()

    with store.transaction():
        store.add_nodes([a])
        t = threading.Thread(target=other)
        t.start()
        assert not done.wait(0.3)  # blocked by our transaction
        assert store.get_node(b.id) is None
    t.join(10)
    assert done.is_set()
    assert list(store.iter_nodes()) == by_id(a, b)


def test_compact_and_bulk_load_refused_inside_a_transaction(store):
    with store.transaction():
        with pytest.raises(errors.TransactionError):
            store.compact()
        with pytest.raises(errors.TransactionError):
            with store.bulk_load():
                pass


def _workload(s: Store) -> None:
    """A fixed mix of upserts, replacements, deletions and reads, for comparing modes."""
    files = ["a.py", "b.py", "c/d.py"]
    nodes = [build_node(f"n{i}", ["function", "class", "method"][i % 3], file=files[i % 3],
                        start_line=i + 1, end_line=i + 3,
                        metadata=None if i % 4 == 0 else {"i": i, "pad": "p" * (i * 97 % 2000)})
             for i in range(40)]
    s.add_nodes(nodes[:25])
    s.add_edges([Edge(nodes[i].id, CALLS, nodes[(i * 7 + 3) % 25].id, {"i": i}) for i in range(25)])
    s.add_nodes(nodes[25:])
    s.add_edges([Edge(nodes[i].id, EdgeKind((i % 5) + 1), nodes[(i * 11) % 40].id) for i in range(40)])
    assert s.get_node(nodes[3].id) == nodes[3]
    s.add_nodes([build_node("n5", "class", file="c/d.py", start_line=9, end_line=9, metadata="replaced")])
    s.add_edges([Edge(nodes[0].id, CALLS, nodes[3].id, "replaced")])
    s.delete_nodes([nodes[7].id, nodes[8].id])
    s.delete_edges([(nodes[i].id, CALLS, nodes[(i * 7 + 3) % 25].id) for i in range(0, 25, 3)])
    s.add_nodes([nodes[8]])  # re-added without its old edges
    s.add_edges([Edge(nodes[8].id, REFERENCES, nodes[9].id)])
    s.add_nodes([build_node("extra", file="e.py")])
    s.delete_file("e.py")


def _load_workload(s: Store) -> None:
    """Upserts only (bulk_load refuses deletes): adds, replacements, edge metadata updates,
    edges added before their nodes, and reads in between."""
    files = ["a.py", "b.py", "c/d.py"]
    nodes = [build_node(f"n{i}", ["function", "class", "method"][i % 3], file=files[i % 3],
                        start_line=i + 1, end_line=i + 3,
                        metadata=None if i % 4 == 0 else {"i": i, "pad": "p" * (i * 97 % 2000)})
             for i in range(40)]
    s.add_nodes(nodes[:25])
    s.add_edges([Edge(nodes[i].id, CALLS, nodes[(i * 7 + 3) % 40].id, {"i": i}) for i in range(25)])
    assert s.get_node(nodes[3].id) == nodes[3]
    s.add_nodes(nodes[25:])  # some edges above pointed at these
    s.add_edges([Edge(nodes[i].id, EdgeKind((i % 5) + 1), nodes[(i * 11) % 40].id) for i in range(40)])
    assert s.callees(nodes[1].id) == by_id(nodes[10], nodes[11])
    s.add_nodes([build_node("n5", "class", file="c/d.py", start_line=9, end_line=9, metadata="replaced")])
    s.add_edges([Edge(nodes[0].id, CALLS, nodes[3].id, "replaced")])
    s.add_nodes([nodes[7], build_node("n7", file="b.py", metadata=[1, 2])])  # same id twice


def test_bulk_load_gives_the_same_result_as_transaction(open_store, tmp_path):
    results = []
    for mode, buffer in [("transaction", 1000), ("bulk_load", 1000), ("bulk_load", 4),
                         ("transaction", 4)]:
        s = open_store(tmp_path / f"{mode}{buffer}.cgdb",
                       config={"io_optimization": {"write_buffer_size": buffer}})
        with getattr(s, mode)():
            _load_workload(s)
        results.append(dump(s))
        assert s.check().ok
        # the secondary indexes exist again after a bulk load
        conn = apsw.Connection(s.stats()["path"], flags=apsw.SQLITE_OPEN_READONLY)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'"
                                            " AND sql IS NOT NULL")}
        conn.close()
        assert {"nodes_by_name", "nodes_by_qualname", "nodes_by_file_line",
                "edges_by_dst"} <= names
    assert len(results[0][0]) == 40 and len(results[0][1]) == 65
    n7 = build_node("n7", file="b.py", metadata=[1, 2])
    assert n7 in results[0][0]
    assert results[1] == results[0]
    assert results[2] == results[0]
    assert results[3] == results[0]


def test_bulk_load_rolls_back_on_exception_and_restores_indexes(store):
    a = build_node("a")
    store.add_nodes([a])
    before = dump(store)
    with pytest.raises(KeyError):
        with store.bulk_load():
            store.add_nodes([build_node(f"x{i}") for i in range(50)])
            store.add_nodes([build_node("a", metadata="replaced")])
            assert store.get_node(a.id).metadata == "replaced"
            raise KeyError
    assert dump(store) == before
    assert store.find("a") == [a]
    assert store.check().ok


def test_deletes_are_refused_inside_bulk_load(store):
    a, b = build_node("a"), build_node("b")
    store.add_nodes([a, b])
    store.add_edges([Edge(a.id, CALLS, b.id)])
    c = build_node("c")
    with store.bulk_load():
        store.add_nodes([c])
        with pytest.raises(errors.TransactionError):
            store.delete_nodes([a.id])
        with pytest.raises(errors.TransactionError):
            store.delete_edges([(a.id, CALLS, b.id)])
        store.add_edges([Edge(c.id, CALLS, a.id)])
    # the refused deletes did nothing; the rest of the load committed
    assert list(store.iter_nodes()) == by_id(a, b, c)
    assert list(store.iter_edges()) == sorted([Edge(a.id, CALLS, b.id), Edge(c.id, CALLS, a.id)],
                                              key=lambda e: e.src)
    assert store.check().ok


def test_delete_file_inside_bulk_load_is_refused(store):
    a = build_node("a", file="a.py")
    store.add_nodes([a])
    c = build_node("c", file="c.py")
    with store.bulk_load():
        store.add_nodes([c])
        with pytest.raises(errors.TransactionError):
            store.delete_file("a.py")
    assert list(store.iter_nodes()) == by_id(a, c)


def _queries(s: Store) -> list:
    ids = [n.id for n in s.iter_nodes()]
    out = [dump(s), s.get_nodes(ids + [1, ids[0]]), s.find("n1", prefix=True),
           s.find(file="a.py", kind="class"), s.at("b.py", 5)]
    for i in ids[::5]:
        out += [s.neighbors(i, "both"), s.traverse(i, depth=3), s.impact(i), s.get_node(i),
                s.path(ids[0], i, direction="both")]
    return out


@pytest.mark.parametrize("overrides", [
    {"io_optimization": {"enable_batching": False}},
    {"io_optimization": {"write_buffer_size": 2}},
    {"memory_optimization": {"enable_cache": False}},
    {"memory_optimization": {"compact_cache_size": 3}},
    {"io_optimization": {"enable_prefetch": False, "read_batch_size": 2}},
], ids=["no-batching", "tiny-buffer", "no-cache", "tiny-cache", "no-prefetch"])
def test_switches_do_not_change_results(open_store, tmp_path, overrides):
    reference = open_store(tmp_path / "ref.cgdb")
    other = open_store(tmp_path / "other.cgdb", config=overrides)
    results = []
    for s in (reference, other):
        _workload(s)  # one transaction per call
        with s.transaction():
            _workload(s)  # again, as one transaction (replacing everything)
        first = _queries(s)
        second = _queries(s)  # served from the cache when there is one
        assert first == second
        results.append(first)
    assert results[0] == results[1]


def test_mutating_returned_metadata_does_not_change_the_store(store):
    n = build_node("f", metadata={"k": "v", "list": [1]})
    store.add_nodes([n])
    got = store.get_node(n.id)
    got.metadata["k"] = "changed"
    got.metadata["list"].append(2)
    assert store.get_node(n.id).metadata == {"k": "v", "list": [1]}


def test_delete_file_then_re_add_in_one_transaction(store):
    a = build_node("f", file="a.py")
    b = build_node("g", file="b.py")
    store.add_nodes([a])
    with store.transaction():
        store.add_nodes([a])  # remembers the files row of a.py
        assert store.delete_file("a.py") == 1
        store.add_nodes([b])  # b.py gets a new files row (SQLite may reuse the deleted id)
        store.add_nodes([a])  # must create a new files row for a.py
    assert store.get_node(a.id).file == "a.py"
    assert store.get_node(b.id).file == "b.py"
    assert [(f.path, f.node_count) for f in store.files()] == [("a.py", 1), ("b.py", 1)]


def test_delete_file_then_re_add_same_file_in_one_transaction(store):
    a = build_node("f", file="a.py", metadata=1)
    store.add_nodes([a])
    a2 = build_node("f", file="a.py", metadata=2)
    with store.transaction():
        store.add_nodes([a])
        assert store.delete_file("a.py") == 1
        store.add_nodes([a2])
    assert store.get_node(a.id) == a2
    assert [(f.path, f.node_count) for f in store.files()] == [("a.py", 1)]


# ---------------------------------------------------------------------- staleness


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
def test_second_store_object_commit_is_seen_immediately(open_store, cache):
    s1 = open_store(config={"memory_optimization": {"enable_cache": cache}})
    s2 = open_store()
    a, b = build_node("a", metadata={"v": 1}), build_node("b")
    s1.add_nodes([a, b])
    # warm s1's cache
    assert s1.get_node(a.id) == a
    assert s1.get_nodes([a.id, b.id]) == [a, b]
    assert s1.neighbors(b.id, "in") == []
    a2 = build_node("a", metadata={"v": 2})
    s2.add_nodes([a2])
    s2.add_edges([Edge(a.id, CALLS, b.id)])
    assert s1.get_node(a.id) == a2
    assert s1.get_nodes([a.id])[0] == a2
    assert s1.callers(b.id) == [a2]
    s2.delete_nodes([a.id])
    assert s1.get_node(a.id) is None
    assert s1.callers(b.id) == []


_CHILD = textwrap.dedent("""
    import sys
    from codegraph_store import Node, Store
    path, node_id, value = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with Store.open(path) as s:
        old = s.get_node(node_id)
        if value == "DELETE":
            s.delete_nodes([node_id])
        else:
            s.add_nodes([Node(old.id, old.kind, value, old.qualname, old.file, old.start_line,
                              old.start_col, old.end_line, old.end_col, {"by": "child"})])
""")


def test_another_process_commit_is_seen_immediately(open_store, store_path):
    s = open_store()
    a = build_node("a", metadata={"by": "parent"})
    s.add_nodes([a])
    for _ in range(3):
        assert s.get_node(a.id) == a  # cached now
    subprocess.run([sys.executable, "-c", _CHILD, str(store_path), str(a.id), "renamed"],
                   check=True, timeout=60)
    got = s.get_node(a.id)
    assert (got.name, got.metadata) == ("renamed", {"by": "child"})
    assert s.get_nodes([a.id]) == [got]
    assert s.find("renamed") == [got]
    subprocess.run([sys.executable, "-c", _CHILD, str(store_path), str(a.id), "DELETE"],
                   check=True, timeout=60)
    assert s.get_node(a.id) is None


# ------------------------------------------------------------------------ threads


def test_concurrent_readers_get_correct_answers_while_a_thread_writes(open_store):
    s = open_store()
    static = [build_node(f"s{i}", metadata={"i": i}) for i in range(20)]
    hub = build_node("hub", "module")
    counter = build_node("counter", metadata={"v": 0})
    s.add_nodes(static + [hub, counter])
    s.add_edges([Edge(hub.id, CONTAINS, n.id) for n in static])
    expected_neighbors = by_id(*static)
    rounds = 150
    failures: list[str] = []
    seen_values: set[int] = set()
    iterations = [0] * 4
    stop = threading.Event()
    start = threading.Barrier(5)

    def reader(k: int) -> None:
        try:
            start.wait()
            last = 0
            while not stop.is_set():
                for n in static[k::4]:
                    got = s.get_node(n.id)
                    if got != n:
                        failures.append(f"static {n.name}: {got}")
                if s.neighbors(hub.id) != expected_neighbors:
                    failures.append("neighbors differ")
                v = s.get_node(counter.id).metadata["v"]
                if not last <= v <= rounds:
                    failures.append(f"counter went from {last} to {v}")
                last = v
                seen_values.add(v)
                iterations[k] += 1
                got = s.get_nodes([static[k].id, counter.id])
                if got[0] != static[k] or got[1].metadata["v"] < last:
                    failures.append(f"get_nodes: {got}")
        except Exception as e:  # pragma: no cover - reported below
            failures.append(repr(e))

    def writer() -> None:
        start.wait()
        for v in range(1, rounds + 1):
            s.add_nodes([build_node("counter", metadata={"v": v})])
            if v % 10 == 0:
                with s.transaction():
                    extra = build_node(f"tmp{v}")
                    s.add_nodes([extra])
                    s.delete_nodes([extra.id])

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    w = threading.Thread(target=writer)
    w.start()
    w.join(60)
    stop.set()
    for t in threads:
        t.join(60)
    assert not w.is_alive()
    assert failures == []
    assert all(iterations), iterations
    assert len(seen_values) >= 2, seen_values  # the reads really overlapped the writes
    # every reader thread now sees the final value
    finals = []

    def final() -> None:
        finals.append(s.get_node(counter.id).metadata["v"])

    ts = [threading.Thread(target=final) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert finals == [rounds] * 3
    assert s.get_node(counter.id).metadata == {"v": rounds}
    assert s.stats()["nodes"] == 22

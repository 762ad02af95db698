"""The set-based reference check equals SQLite's own foreign-key check."""

from __future__ import annotations

import apsw
import pytest

from codegraph_store import Edge, EdgeKind, Node, Store, schema
from codegraph_store.errors import DanglingEdgeError


def declared_references(conn: apsw.Connection) -> tuple[set, set]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
    single, composite = set(), set()
    for table in tables:
        by_id: dict[int, list] = {}
        for fk_id, _seq, parent, column, key, *_ in conn.execute(f'PRAGMA foreign_key_list("{table}")'):
            by_id.setdefault(fk_id, []).append((parent, column, key))
        for cols in by_id.values():
            if len(cols) == 1:
                (parent, column, key), = cols
                single.add((table, column, parent, key))
            else:
                composite.add(table)
    return single, composite


def test_the_check_list_covers_every_foreign_key_of_the_schema(tmp_path):
    with Store.open(tmp_path / "s.cgdb") as s:
        single, composite = declared_references(s._writer)
    assert {ref for ref, _sql in schema.REFERENCE_CHECKS} == single
    assert {table for table, _sql in schema.COMPOSITE_REFERENCE_CHECKS} == composite


@pytest.fixture
def raw(tmp_path):
    """A store with two nodes and an edge, and a raw connection with foreign keys off."""
    path = tmp_path / "s.cgdb"
    with Store.open(path) as s:
        a = Node.new("function", "a", file="m.py", start_line=1)
        b = Node.new("function", "b", file="m.py", start_line=2)
        s.add_nodes([a, b])
        s.add_edges([Edge(a.id, EdgeKind.CALLS, b.id)])
        s.add_embeddings([a.id], [[1.0, 0.0]], "e")
    conn = apsw.Connection(str(path))
    yield conn, a, b
    conn.close()


BREAKS = {
    "edge-dst": ("INSERT INTO edges (src, kind, dst) VALUES (:a, 2, 999)", "edges.dst -> nodes"),
    "edge-src": ("INSERT INTO edges (src, kind, dst) VALUES (998, 2, :a)", "edges.src -> nodes"),
    "edge-kind": ("INSERT INTO edges (src, kind, dst) VALUES (:a, 77, :b)", "edges.kind -> edge_kinds"),
    "node-file": ("UPDATE nodes SET file_id = 4242 WHERE id = :a", "nodes.file_id -> files"),
    "node-kind": ("UPDATE nodes SET kind = 99 WHERE id = :b", "nodes.kind -> node_kinds"),
    "alias": ("INSERT INTO aliases (node_id, target) VALUES (5, 'x')", "aliases.node_id -> nodes"),
    "ref-dst": ("INSERT INTO refs (src, kind, target, dst) VALUES (:a, 2, 't', 31337)", "refs.dst -> nodes"),
    "embedding-node": ("UPDATE embeddings SET node_id = 777", "embeddings.node_id -> nodes"),
    "ref-hop": ("INSERT INTO ref_hops (src, kind, target, hop) VALUES (:a, 2, 'nope', 'h')",
                "ref_hops -> its parent rows"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_kind_of_dangling_reference_is_found_like_sqlite_finds_it(raw, case):
    conn, a, b = raw
    sql, expected = BREAKS[case]
    assert schema.broken_references(conn) == []
    conn.execute(sql, {"a": a.id, "b": b.id})
    assert conn.execute("PRAGMA foreign_key_check").fetchall() != []
    assert schema.broken_references(conn) == [expected]


def test_nulls_do_not_dangle(raw):
    conn, a, _b = raw
    conn.execute("UPDATE nodes SET file_id = NULL WHERE id = ?", (a.id,))
    conn.execute("INSERT INTO refs (src, kind, target, dst) VALUES (?, 2, 'later', NULL)", (a.id,))
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert schema.broken_references(conn) == []


def test_a_bulk_load_with_a_dangling_edge_fails_whole(tmp_path):
    with Store.open(tmp_path / "s.cgdb") as s:
        a = Node.new("function", "a", file="m.py", start_line=1)
        with pytest.raises(DanglingEdgeError, match=f"{a.id} -\\[2\\]-> 12345") as info:
            with s.bulk_load():
                s.add_nodes([a])
                s.add_edges([Edge(a.id, EdgeKind.CALLS, 12345)])
        assert info.value.edges == [(a.id, 2, 12345)]
        assert s.stats()["nodes"] == 0 and s.stats()["edges"] == 0

"""Read queries over nodes and edges: lookups, neighbours, BFS levels, shortest path.

Every function takes an APSW connection and works in whole levels or batches:
a set of ids travels as one JSON array bound to ``json_each(?)``, so a BFS
level or a batch of ids is one statement, never one statement per node.
All SQL is parameterised; the only text ever spliced in is chosen from the
constant fragments in this module.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, Sequence

import apsw

from . import codec
from .errors import CorruptStoreError, InvalidTypeError
from .kinds import EdgeKind, NodeKind
from .model import Edge, Node

# The file path comes from a scalar subquery, not a LEFT JOIN: SQLite plans the
# point lookup about twice as fast that way (bench/graph_ops.py measured it).
NODE_COLUMNS = ("n.id, n.kind, n.name, n.qualname, (SELECT path FROM files WHERE id = n.file_id),"
                " n.start_line, n.start_col, n.end_line, n.end_col, n.metadata")
NODE_FROM = "nodes AS n"

SQL = {
    "node": f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id = ?",
    "nodes": f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN (SELECT value FROM json_each(?))",
    "neighbors_out": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                      " (SELECT dst FROM edges WHERE src = ?) ORDER BY n.id"),
    "neighbors_out_kinds": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                            " (SELECT dst FROM edges WHERE src = ? AND kind IN"
                            " (SELECT value FROM json_each(?))) ORDER BY n.id"),
    "neighbors_in": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                     " (SELECT src FROM edges WHERE dst = ?) ORDER BY n.id"),
    "neighbors_in_kinds": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                           " (SELECT src FROM edges WHERE dst = ? AND kind IN"
                           " (SELECT value FROM json_each(?))) ORDER BY n.id"),
    "neighbors_both": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                       " (SELECT dst FROM edges WHERE src = ? UNION SELECT src FROM edges WHERE dst = ?)"
                       " ORDER BY n.id"),
    "neighbors_both_kinds": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id IN"
                             " (SELECT dst FROM edges WHERE src = ?1 AND kind IN (SELECT value FROM json_each(?2))"
                             " UNION SELECT src FROM edges WHERE dst = ?1 AND kind IN"
                             " (SELECT value FROM json_each(?2))) ORDER BY n.id"),
    "out": "SELECT dst FROM edges WHERE src = ?",
    "out_kinds": "SELECT dst FROM edges WHERE src = ? AND kind IN (SELECT value FROM json_each(?))",
    "in": "SELECT src FROM edges WHERE dst = ?",
    "in_kinds": "SELECT src FROM edges WHERE dst = ? AND kind IN (SELECT value FROM json_each(?))",
    "level_out": "SELECT src, dst FROM edges WHERE src IN (SELECT value FROM json_each(?))",
    "level_out_kinds": ("SELECT src, dst FROM edges WHERE src IN (SELECT value FROM json_each(?))"
                        " AND kind IN (SELECT value FROM json_each(?))"),
    "level_in": "SELECT dst, src FROM edges WHERE dst IN (SELECT value FROM json_each(?))",
    "level_in_kinds": ("SELECT dst, src FROM edges WHERE dst IN (SELECT value FROM json_each(?))"
                       " AND kind IN (SELECT value FROM json_each(?))"),
    "at": (f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.file_id = ? AND n.start_line <= ?"
           " AND n.end_line >= ? ORDER BY n.end_line - n.start_line, n.start_line DESC, n.id LIMIT 1"),
    "file_id": "SELECT id FROM files WHERE path = ?",
    "iter_nodes": f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id > ? ORDER BY n.id LIMIT ?",
    "iter_edges": ("SELECT src, kind, dst, metadata FROM edges WHERE (src, kind, dst) > (?, ?, ?)"
                   " ORDER BY src, kind, dst LIMIT ?"),
    "edges_of_out": "SELECT src, kind, dst, metadata FROM edges WHERE src = ? ORDER BY kind, dst",
    "edges_of_in": "SELECT src, kind, dst, metadata FROM edges WHERE dst = ? ORDER BY kind, src",
}

_NODE_KINDS = {k.value: k for k in NodeKind}
_EDGE_KINDS = {k.value: k for k in EdgeKind}


def row_to_node(row: Sequence) -> Node:
    """Build a Node from a row of NODE_COLUMNS; a kind code we do not know is damage."""
    kind = _NODE_KINDS.get(row[1])
    if kind is None:
        raise CorruptStoreError(f"node {row[0]} has unknown kind code {row[1]!r}")
    blob = row[9]
    return Node(row[0], kind, row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                None if blob is None else codec.decode(blob))


def node_size(row: Sequence) -> int:
    """Approximate bytes a cached row occupies, for the cache's byte bound."""
    blob = row[9]
    return 200 + len(row[2]) + len(row[3]) + (0 if blob is None else len(blob))


def row_to_edge(row: Sequence) -> Edge:
    kind = _EDGE_KINDS.get(row[1])
    if kind is None:
        raise CorruptStoreError(f"edge {row[0]}->{row[2]} has unknown kind code {row[1]!r}")
    return Edge(row[0], kind, row[2], None if row[3] is None else codec.decode(row[3]))


def fetch_node_rows(conn: apsw.Connection, ids: Sequence[int], batch: int) -> list[tuple]:
    """Rows of the given ids (missing ids are absent), ``batch`` ids per statement."""
    if len(ids) == 1:
        row = conn.execute(SQL["node"], (ids[0],)).fetchone()
        return [] if row is None else [row]
    out: list[tuple] = []
    sql = SQL["nodes"]
    for i in range(0, len(ids), batch):
        out.extend(conn.execute(sql, (json.dumps(ids[i:i + batch]),)).fetchall())
    return out


def neighbor_rows(conn: apsw.Connection, node_id: int, direction: str,
                  kinds: list[int] | None) -> list[tuple]:
    """Node rows one edge away, sorted by id: one statement."""
    if kinds is None:
        if direction == "both":
            return conn.execute(SQL["neighbors_both"], (node_id, node_id)).fetchall()
        return conn.execute(SQL["neighbors_" + direction], (node_id,)).fetchall()
    return conn.execute(SQL["neighbors_" + direction + "_kinds"], (node_id, json.dumps(kinds))).fetchall()


def neighbor_ids(conn: apsw.Connection, node_id: int, direction: str,
                 kinds: list[int] | None) -> list[int]:
    """Ids adjacent to ``node_id`` (``out``, ``in`` or ``both``), sorted, without duplicates."""
    found: set[int] = set()
    for d in ("out", "in") if direction == "both" else (direction,):
        if kinds is None:
            cur = conn.execute(SQL[d], (node_id,))
        else:
            cur = conn.execute(SQL[d + "_kinds"], (node_id, json.dumps(kinds)))
        found.update(r[0] for r in cur)
    return sorted(found)


def expand_level(conn: apsw.Connection, frontier: list[int], direction: str,
                 kinds: list[int] | None) -> list[tuple[int, int]]:
    """``(from, to)`` pairs for every edge leaving the frontier: one statement per direction."""
    pairs: list[tuple[int, int]] = []
    ids = json.dumps(frontier)
    for d in ("out", "in") if direction == "both" else (direction,):
        if kinds is None:
            pairs.extend(conn.execute(SQL["level_" + d], (ids,)))
        else:
            pairs.extend(conn.execute(SQL["level_" + d + "_kinds"], (ids, json.dumps(kinds))))
    return pairs


def bfs_levels(conn: apsw.Connection, start: int, direction: str, kinds: list[int] | None,
               depth: int | None) -> dict[int, int]:
    """Every node reachable from ``start`` within ``depth`` hops, mapped to its distance."""
    seen = {start: 0}
    frontier = [start]
    level = 0
    while frontier and (depth is None or level < depth):
        level += 1
        nxt = []
        for _, to in expand_level(conn, frontier, direction, kinds):
            if to not in seen:
                seen[to] = level
                nxt.append(to)
        frontier = sorted(nxt)
    del seen[start]
    return seen


def shortest_path(conn: apsw.Connection, src: int, dst: int, direction: str,
                  kinds: list[int] | None, max_depth: int | None) -> list[int] | None:
    """Ids on a shortest path from ``src`` to ``dst``, both included, or None.

    Bidirectional BFS: each step expands the smaller frontier by one whole level.
    Frontiers are expanded in sorted order and ties between meeting points go to
    the lexicographically smallest path, so the answer does not depend on row order.
    """
    if src == dst:
        return [src]
    backward = {"out": "in", "in": "out", "both": "both"}[direction]
    fwd_parent: dict[int, int | None] = {src: None}
    bwd_parent: dict[int, int | None] = {dst: None}
    fwd, bwd = [src], [dst]
    hops = 0
    while fwd and bwd and (max_depth is None or hops < max_depth):
        hops += 1
        expand_forward = len(fwd) <= len(bwd)
        frontier = fwd if expand_forward else bwd
        parents = fwd_parent if expand_forward else bwd_parent
        others = bwd_parent if expand_forward else fwd_parent
        pairs = sorted(expand_level(conn, frontier, direction if expand_forward else backward, kinds))
        nxt = []
        meets = []
        for frm, to in pairs:
            if to in parents:
                continue
            parents[to] = frm
            nxt.append(to)
            if to in others:
                meets.append(to)
        if meets:
            best = None
            for meet in meets:
                path = _walk(fwd_parent, meet)[::-1] + _walk(bwd_parent, meet)[1:]
                if best is None or (len(path), path) < (len(best), best):
                    best = path
            return best
        nxt.sort()
        if expand_forward:
            fwd = nxt
        else:
            bwd = nxt
    return None


def _walk(parents: dict[int, int | None], node: int) -> list[int]:
    out = [node]
    while (node := parents[node]) is not None:
        out.append(node)
    return out


def iter_node_rows(conn_factory, page: int) -> Iterator[tuple]:
    """All node rows by id, one page per statement so no read transaction stays open."""
    last = 0
    while True:
        rows = conn_factory().execute(SQL["iter_nodes"], (last, page)).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def iter_edge_rows(conn_factory, page: int) -> Iterator[tuple]:
    last = (0, 0, 0)
    while True:
        rows = conn_factory().execute(SQL["iter_edges"], (*last, page)).fetchall()
        if not rows:
            return
        yield from rows
        last = tuple(rows[-1][:3])


def parse_kinds(kinds: Iterable | int | str | EdgeKind | None, enum=EdgeKind) -> list[int] | None:
    """Normalise a kind filter (one kind or several, by member, code or name) to codes."""
    if kinds is None:
        return None
    if isinstance(kinds, (str, int, enum)):
        kinds = [kinds]
    elif not isinstance(kinds, Iterable) or isinstance(kinds, (bytes, dict)):
        raise InvalidTypeError(f"a kind filter is a kind or an iterable of kinds, got {kinds!r}")
    return sorted({int(enum.parse(k)) for k in kinds})

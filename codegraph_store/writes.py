"""The write buffer of a transaction: rows queued in order, flushed with executemany.

Operations are kept as an ordered list of segments (consecutive operations of
one kind share a segment), so a flush replays them in exactly the order they
were made: add, delete and re-add of the same node end as a re-add.
"""

from __future__ import annotations

from typing import Any, Iterable

import apsw

from . import codec, schema
from .errors import CorruptStoreError, DanglingEdgeError, TransactionError
from .model import Edge, Node

# Upserts are ON CONFLICT DO UPDATE, never INSERT OR REPLACE: REPLACE deletes the
# old row, and the foreign-key cascade would silently drop the node's edges.
SQL = {
    "upsert_node": (
        "INSERT INTO nodes (id, kind, name, qualname, file_id, start_line, start_col, end_line,"
        " end_col, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,"
        " qualname = excluded.qualname, file_id = excluded.file_id,"
        " start_line = excluded.start_line, start_col = excluded.start_col,"
        " end_line = excluded.end_line, end_col = excluded.end_col, metadata = excluded.metadata"),
    "upsert_edge": (
        "INSERT INTO edges (src, kind, dst, metadata) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (src, kind, dst) DO UPDATE SET metadata = excluded.metadata"),
    "delete_node": "DELETE FROM nodes WHERE id = ?",
    "delete_edge": "DELETE FROM edges WHERE src = ? AND kind = ? AND dst = ?",
}

# Bulk loads append upserts to unindexed staging tables and merge them in key
# order: inserting into a B-tree in key order touches each page once, where
# random 63-bit ids would touch a random page per row. Later rows win, as they
# would in the same upserts made one by one.
STAGING = {
    "upsert_node": ("stage_nodes", "INSERT INTO temp.stage_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    "upsert_edge": ("stage_edges", "INSERT INTO temp.stage_edges VALUES (?, ?, ?, ?)"),
}
STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_nodes (id, kind, name, qualname, file_id, start_line,"
    " start_col, end_line, end_col, metadata)",
    "CREATE TEMP TABLE IF NOT EXISTS stage_edges (src, kind, dst, metadata)",
)
MERGE = {
    "stage_nodes": (
        "INSERT INTO nodes SELECT id, kind, name, qualname, file_id, start_line, start_col, end_line,"
        " end_col, metadata FROM temp.stage_nodes WHERE true ORDER BY id, rowid"
        " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,"
        " qualname = excluded.qualname, file_id = excluded.file_id,"
        " start_line = excluded.start_line, start_col = excluded.start_col,"
        " end_line = excluded.end_line, end_col = excluded.end_col, metadata = excluded.metadata"),
    "stage_edges": (
        "INSERT INTO edges SELECT src, kind, dst, metadata FROM temp.stage_edges WHERE true"
        " ORDER BY src, kind, dst, rowid"
        " ON CONFLICT (src, kind, dst) DO UPDATE SET metadata = excluded.metadata"),
}


class WriteBuffer:
    """Queued writes of one transaction on the writer connection."""

    def __init__(self, conn: apsw.Connection, capacity: int, batching: bool,
                 compression_threshold: int | None, bulk: bool = False):
        self._conn = conn
        self._capacity = capacity if batching else 1
        self._compression_threshold = compression_threshold
        self._segments: list[tuple[str, list[tuple]]] = []
        self._pending = 0
        self._file_ids: dict[str, int] = {}
        self._bulk = bulk
        self._staged: set[str] = set()
        if bulk:
            for ddl in STAGING_DDL:
                conn.execute(ddl)

    def __len__(self) -> int:
        return self._pending

    def _queue(self, op: str, rows: list[tuple]) -> None:
        if not rows:
            return
        if self._segments and self._segments[-1][0] == op:
            self._segments[-1][1].extend(rows)
        else:
            self._segments.append((op, rows))
        self._pending += len(rows)
        if self._pending >= self._capacity:
            self.flush(merge=False)

    def file_id(self, path: str | None) -> int | None:
        """The files row for ``path``, created on first use within this transaction."""
        if path is None:
            return None
        fid = self._file_ids.get(path)
        if fid is None:
            row = self._conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
            if row is None:
                language = "python" if path.endswith((".py", ".pyi")) else None
                row = self._conn.execute(
                    "INSERT INTO files (path, language) VALUES (?, ?) RETURNING id",
                    (path, language)).fetchone()
            fid = self._file_ids[path] = row[0]
        return fid

    def add_nodes(self, nodes: list[Node]) -> None:
        threshold = self._compression_threshold
        encode = codec.encode
        # Encode (and so validate) every metadata value before any files row is made.
        blobs = [None if n.metadata is None else encode(n.metadata, threshold) for n in nodes]
        ids = self._file_ids
        file_id = self.file_id
        rows = [(n.id, n.kind.value, n.name, n.qualname,
                 None if n.file is None else (ids.get(n.file) or file_id(n.file)),
                 n.start_line, n.start_col, n.end_line, n.end_col, blob)
                for n, blob in zip(nodes, blobs)]
        self._queue("upsert_node", rows)

    def forget_file(self, path: str) -> None:
        """The files row of ``path`` was deleted: do not hand out its id again."""
        self._file_ids.pop(path, None)

    def add_node_rows(self, rows: list[tuple]) -> None:
        """Rows already in table order with encoded metadata (the indexer's path)."""
        self._queue("upsert_node", rows)

    def add_edges(self, edges: list[Edge]) -> None:
        threshold = self._compression_threshold
        encode = codec.encode
        rows = [(e.src, int(e.kind), e.dst,
                 None if e.metadata is None else encode(e.metadata, threshold)) for e in edges]
        self._queue("upsert_edge", rows)

    def add_edge_rows(self, rows: list[tuple]) -> None:
        self._queue("upsert_edge", rows)

    def delete_nodes(self, ids: Iterable[int]) -> None:
        self.refuse_in_bulk()
        self._queue("delete_node", [(i,) for i in ids])

    def delete_edges(self, triples: Iterable[tuple[int, int, int]]) -> None:
        self.refuse_in_bulk()
        self._queue("delete_edge", [tuple(t) for t in triples])

    def refuse_in_bulk(self) -> None:
        if self._bulk:
            raise TransactionError("deletes are not allowed inside bulk_load(): foreign keys are"
                                   " checked only at its end, so deletes would not cascade")

    def flush(self, merge: bool = True) -> None:
        """Execute every queued operation, in order, on the writer connection.

        In a bulk load, upserts go to the staging tables; ``merge=True`` (what
        reads and commits need) also moves staged rows into the real tables.
        """
        conn = self._conn
        segments, self._segments, self._pending = self._segments, [], 0
        for op, rows in segments:
            if self._bulk and op in STAGING:
                table, sql = STAGING[op]
                self._staged.add(table)
            else:
                self._merge_staged()
                sql = SQL[op]
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            else:
                conn.executemany(sql, rows)
        if merge:
            self._merge_staged()

    def _merge_staged(self) -> None:
        # Nodes first: staged edges may point at staged nodes.
        for table in ("stage_nodes", "stage_edges"):
            if table in self._staged:
                self._conn.execute(MERGE[table])
                self._conn.execute(f"DELETE FROM temp.{table}")
                self._staged.discard(table)

    def discard(self) -> None:
        """Forget queued operations (on rollback) and the file ids of this transaction."""
        self._segments, self._pending = [], 0
        self._file_ids.clear()
        self._staged.clear()


def dangling_edges(conn: apsw.Connection, limit: int = 5) -> list[tuple[int, int, int]]:
    """Edges whose endpoints are missing, looked up after a deferred foreign-key failure."""
    rows = conn.execute(
        "SELECT src, kind, dst FROM edges AS e"
        " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = e.src)"
        " OR NOT EXISTS (SELECT 1 FROM nodes WHERE id = e.dst) LIMIT ?", (limit,)).fetchall()
    return [tuple(r) for r in rows]


def check_foreign_keys(conn: apsw.Connection) -> None:
    """Every reference of every table, checked as a set (bulk loads skip per-row checks)."""
    broken = schema.broken_references(conn)
    if not broken:
        return
    edges = dangling_edges(conn) if any(b.startswith(("edges.src", "edges.dst")) for b in broken) else []
    if edges:
        shown = ", ".join(f"{s} -[{k}]-> {d}" for s, k, d in edges)
        raise DanglingEdgeError(f"edges refer to nodes that do not exist: {shown}", edges)
    raise DanglingEdgeError(f"rows refer to rows that do not exist: {', '.join(broken)}")


def raise_for_commit_failure(conn: apsw.Connection, error: Exception) -> None:
    """Turn a failed COMMIT into the most specific typed error."""
    if isinstance(error, apsw.ConstraintError) and "FOREIGN KEY" in str(error):
        edges = dangling_edges(conn)
        if edges:
            shown = ", ".join(f"{s} -[{k}]-> {d}" for s, k, d in edges)
            raise DanglingEdgeError(f"edges refer to nodes that do not exist: {shown}", edges) from None
        raise DanglingEdgeError(f"a reference names a node that does not exist ({error})") from None
    if isinstance(error, apsw.CorruptError):
        raise CorruptStoreError(str(error)) from error
    raise error

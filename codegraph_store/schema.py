"""Schema versions: numbered ``.sql`` migrations applied in order, forward only.

The files ship inside the package (``codegraph_store/migrations``, mapped from
the repository's top-level ``migrations/``). The schema version is
``PRAGMA user_version``; ``PRAGMA application_id`` marks a file as ours, so a
foreign SQLite database is refused instead of being written into.
"""

from __future__ import annotations

import re
from importlib import resources

import apsw

from . import errors
from .storage import APPLICATION_ID

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    """``(version, filename, sql)`` of every packaged migration, in order."""
    found = []
    for entry in resources.files("codegraph_store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"packaged migrations are not numbered 1..n: {versions}")  # pragma: no cover
    return found


def latest_version() -> int:
    return len(available())


def _is_empty(conn: apsw.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0


def inspect(conn: apsw.Connection, path: str) -> int:
    """The file's schema version; refuses foreign and newer files. 0 = empty new file."""
    app_id = conn.pragma("application_id")
    version = conn.pragma("user_version")
    if app_id == 0 and version == 0 and _is_empty(conn):
        return 0
    if app_id != APPLICATION_ID:
        raise errors.NotAStoreError(
            f"{path}: a SQLite database, but not a codegraph store (application_id {app_id})")
    latest = latest_version()
    if version > latest:
        raise errors.SchemaTooNewError(
            f"{path}: written by a newer codegraph_store (schema {version}; this version knows "
            f"up to {latest}); upgrade codegraph_store to open it")
    if version > 0:
        check_objects(conn, path, version)
    return version


_expected: dict[int, dict[tuple[str, str], str]] = {}


def expected_objects(version: int) -> dict[tuple[str, str], str]:
    """``{(type, name): sql}`` of every table, index, view and trigger the migrations
    up to ``version`` create (replayed once per process in a memory database)."""
    if version not in _expected:
        mem = apsw.Connection(":memory:")
        try:
            for v, _name, sql in available():
                if v <= version:
                    mem.execute(sql)
            _expected[version] = _objects(mem)
        finally:
            mem.close()
    return _expected[version]


def _objects(conn: apsw.Connection) -> dict[tuple[str, str], str]:
    return {(t, n): sql for t, n, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'")}


def check_objects(conn: apsw.Connection, path: str, version: int) -> None:
    """Refuse a file whose schema is not exactly the one its version declares.

    A file shipped with a project may be crafted: a trigger of its own (or ours,
    redefined) would run on the store's writes and a view on the user's queries,
    so anything the migrations did not create, or created differently, is refused
    before the store uses the file."""
    found = _objects(conn)
    expected = expected_objects(version)
    foreign = sorted(f"{t} {n}" for (t, n), sql in found.items() if expected.get((t, n)) != sql)
    missing = sorted(f"{t} {n}" for (t, n) in expected if (t, n) not in found)
    if foreign or missing:
        what = "; ".join(filter(None, [
            foreign and "not created by codegraph_store or changed: " + ", ".join(foreign[:5]),
            missing and "missing: " + ", ".join(missing[:5])]))
        raise errors.NotAStoreError(f"{path}: the schema is not a codegraph store's ({what})")


def migrate(conn: apsw.Connection, path: str) -> int:
    """Apply every migration newer than the file, all in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = inspect(conn, path)  # re-read under the write lock
        for version, _name, sql in available():
            if version > current:
                conn.execute(sql)
                conn.pragma("user_version", version)
                current = version
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise
    return current


def secondary_indexes(conn: apsw.Connection) -> list[tuple[str, str]]:
    """``(name, CREATE INDEX sql)`` of every index the schema declares explicitly."""
    return [tuple(r) for r in conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name")]


# Every single-column foreign key of the schema, as (child table, column, parent
# table, parent column) with the query that finds one dangling value of it. The
# distinct values are read in index order, so the parent lookups walk the parent's
# B-tree in order: on 3M edges that is ~0.75 s where PRAGMA foreign_key_check,
# one random lookup per row and key, takes ~5 s (bench/graph_ops.py ingest).
# tests/test_schema.py checks this list against PRAGMA foreign_key_list.
REFERENCE_CHECKS = (
    (("nodes", "file_id", "files", "id"),
     "SELECT 1 FROM (SELECT DISTINCT file_id AS v FROM nodes WHERE file_id IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM files WHERE id = v) LIMIT 1"),
    (("nodes", "kind", "node_kinds", "code"),
     "SELECT 1 FROM (SELECT DISTINCT kind AS v FROM nodes WHERE kind IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM node_kinds WHERE code = v) LIMIT 1"),
    (("edges", "src", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT src AS v FROM edges WHERE src IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("edges", "dst", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT dst AS v FROM edges WHERE dst IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("edges", "kind", "edge_kinds", "code"),
     "SELECT 1 FROM (SELECT DISTINCT kind AS v FROM edges WHERE kind IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM edge_kinds WHERE code = v) LIMIT 1"),
    (("refs", "src", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT src AS v FROM refs WHERE src IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("refs", "dst", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT dst AS v FROM refs WHERE dst IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("refs", "kind", "edge_kinds", "code"),
     "SELECT 1 FROM (SELECT DISTINCT kind AS v FROM refs WHERE kind IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM edge_kinds WHERE code = v) LIMIT 1"),
    (("aliases", "node_id", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT node_id AS v FROM aliases WHERE node_id IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("embeddings", "space_id", "spaces", "id"),
     "SELECT 1 FROM (SELECT DISTINCT space_id AS v FROM embeddings WHERE space_id IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM spaces WHERE id = v) LIMIT 1"),
    (("embeddings", "node_id", "nodes", "id"),
     "SELECT 1 FROM (SELECT DISTINCT node_id AS v FROM embeddings WHERE node_id IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = v) LIMIT 1"),
    (("free_slots", "space_id", "spaces", "id"),
     "SELECT 1 FROM (SELECT DISTINCT space_id AS v FROM free_slots WHERE space_id IS NOT NULL)"
     " WHERE NOT EXISTS (SELECT 1 FROM spaces WHERE id = v) LIMIT 1"),
)
# Tables whose foreign keys span several columns: left to PRAGMA foreign_key_check.
COMPOSITE_REFERENCE_CHECKS = (
    ("ref_hops", "PRAGMA foreign_key_check(ref_hops)"),
)


def broken_references(conn: apsw.Connection) -> list[str]:
    """Each foreign key with at least one dangling value, as 'table.column -> parent'.

    Equivalent to ``PRAGMA foreign_key_check`` over the whole file (NULLs never
    dangle), but reads each child column's distinct values in order."""
    broken = []
    for (table, column, parent, _key), sql in REFERENCE_CHECKS:
        if conn.execute(sql).fetchone() is not None:
            broken.append(f"{table}.{column} -> {parent}")
    for table, sql in COMPOSITE_REFERENCE_CHECKS:
        if conn.execute(sql).fetchone() is not None:
            broken.append(f"{table} -> its parent rows")
    return broken

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

"""Consistency checks of a store file: SQLite's own and the store's invariants.

Each check is a named query that counts violations, so the report says what
was checked as well as what failed. Checks report damage; they never raise for it.
"""

from __future__ import annotations

import apsw
import attrs

from . import codec, schema
from .errors import CodegraphError
from .kinds import EdgeKind

# name -> SQL returning the number of violations of one invariant. Whether
# every reference points at a row is schema.broken_references().
INVARIANTS = {
    "node line ranges are ordered": "SELECT count(*) FROM nodes WHERE end_line < start_line OR start_line < 0",
    "node names are not empty": "SELECT count(*) FROM nodes WHERE trim(name) = '' OR trim(qualname) = ''",
    "files that failed to parse have no nodes": (
        "SELECT count(*) FROM files AS f WHERE f.parse_error IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM nodes WHERE file_id = f.id)"),
    "resolved references have their edge": (
        "SELECT count(*) FROM refs AS r WHERE r.dst IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM edges AS e WHERE e.src = r.src AND e.kind = r.kind AND e.dst = r.dst)"),
    "aliases belong to import nodes": (
        "SELECT count(*) FROM aliases AS a WHERE NOT EXISTS"
        " (SELECT 1 FROM nodes WHERE id = a.node_id AND kind = 6)"),
}


@attrs.frozen
class CheckReport:
    """What :meth:`Store.check` found. ``ok`` is true when ``problems`` is empty."""

    checked: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": list(self.checked), "problems": list(self.problems)}


def run_checks(conn: apsw.Connection, path: str, full: bool = True) -> CheckReport:
    checked: list[str] = []
    problems: list[str] = []

    def attempt(name: str, fn) -> None:
        checked.append(name)
        try:
            fn()
        except (apsw.Error, CodegraphError) as e:
            problems.append(f"{name}: {type(e).__name__}: {e}")

    def sqlite_integrity() -> None:
        rows = conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
        messages = [r[0] for r in rows if r[0] != "ok"]
        problems.extend(f"sqlite: {m}" for m in messages[:50])

    def schema_version() -> None:
        schema.inspect(conn, path)
        version = conn.pragma("user_version")
        if version != schema.latest_version():
            problems.append(f"schema version {version}, expected {schema.latest_version()}")

    def foreign_keys() -> None:
        problems.extend(f"dangling references: {b}" for b in schema.broken_references(conn))

    def invariant(name: str, sql: str):
        def run() -> None:
            count = conn.execute(sql).fetchone()[0]
            if count:
                problems.append(f"{name}: {count} violations")
        return run

    def kinds_match_enum() -> None:
        stored = dict(conn.execute("SELECT code, name FROM edge_kinds").fetchall())
        for kind in EdgeKind:
            if stored.get(kind.value) != kind.label:
                problems.append(f"edge kind {kind.value} is {stored.get(kind.value)!r} in the file, "
                                f"{kind.label!r} in the code")

    def metadata_decodes() -> None:
        bad = 0
        for table, key, sql in (("nodes", "id", "SELECT id, metadata FROM nodes WHERE metadata IS NOT NULL"),
                                ("edges", "src", "SELECT src, metadata FROM edges WHERE metadata IS NOT NULL")):
            for ident, blob in conn.execute(sql):
                try:
                    codec.decode(blob)
                except CodegraphError as e:
                    bad += 1
                    if bad <= 5:
                        problems.append(f"{table} {key}={ident}: metadata does not decode ({e})")
        if bad > 5:
            problems.append(f"... {bad} metadata records do not decode in all")

    attempt("sqlite integrity", sqlite_integrity)
    if problems:
        # A damaged b-tree makes every further query unreliable.
        return CheckReport(tuple(checked), tuple(problems))
    attempt("schema version", schema_version)
    attempt("foreign keys", foreign_keys)
    attempt("kind tables match the code", kinds_match_enum)
    for name, sql in INVARIANTS.items():
        attempt(name, invariant(name, sql))
    if full:
        attempt("metadata records decode", metadata_decodes)
    return CheckReport(tuple(checked), tuple(problems))

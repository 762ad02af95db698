"""Resolution of references by name (``json.JSONDecoder``) to node ids.

A reference's target is a fully qualified dotted name computed at parse time
from the referring file's imports and scopes. Resolution looks the name up
among node qualnames; when it finds an import node instead of a definition it
follows the import's target (``json.JSONDecoder`` -> ``json.decoder.JSONDecoder``),
and when only a prefix of the name is an import it rewrites that prefix
(``os.path.join`` -> ``posixpath.join``). The rewritten names are the ref's
*hops*; they are stored so that a change to a file defining one of them
re-resolves the ref.

Resolution is a pure function of the nodes present, so an incremental run that
re-resolves every ref whose target or hops fall under a changed module gives
exactly the result of a full rebuild: nodes of a file are always named under
the file's module, so only those names can answer differently.
"""

from __future__ import annotations

from typing import Callable, Iterable

import apsw

from ..kinds import EdgeKind, NodeKind

MAX_HOPS = 8

IMPORT = int(NodeKind.IMPORT)
_DEFINITIONS = {int(NodeKind.CLASS), int(NodeKind.FUNCTION), int(NodeKind.METHOD)}
# Which node kinds a reference of each edge kind may resolve to.
ALLOWED_TARGETS: dict[int, frozenset[int]] = {
    int(EdgeKind.CALLS): frozenset(_DEFINITIONS),
    int(EdgeKind.INHERITS): frozenset({int(NodeKind.CLASS)}),
    int(EdgeKind.IMPORTS): frozenset({int(NodeKind.MODULE)}),
    int(EdgeKind.REFERENCES): frozenset(_DEFINITIONS | {int(NodeKind.VARIABLE),
                                                        int(NodeKind.ATTRIBUTE),
                                                        int(NodeKind.MODULE)}),
}

# A candidate is (start_line, id, kind, alias_target_or_None); sorted, the first
# candidate is the earliest definition in its file, ties broken by id.
Candidate = tuple[int, int, int, "str | None"]
Lookup = Callable[[str], list[Candidate]]


def resolve(target: str, kind: int, lookup: Lookup) -> tuple[int | None, list[str]]:
    """``(node id or None, hops)`` for one reference."""
    allowed = ALLOWED_TARGETS[kind]
    hops: list[str] = []
    name = target
    seen = {name}
    for _ in range(MAX_HOPS):
        candidates = lookup(name)
        for _line, node_id, node_kind, _alias in candidates:
            if node_kind in allowed:
                return node_id, hops
        rewritten = _follow_alias(name, candidates, lookup)
        if rewritten is None or rewritten in seen:
            return None, hops
        seen.add(rewritten)
        hops.append(rewritten)
        name = rewritten
    return None, hops


def _follow_alias(name: str, candidates: list[Candidate], lookup: Lookup) -> str | None:
    """The name an import binding turns ``name`` into, or None."""
    for _line, _id, node_kind, alias in candidates:
        if node_kind == IMPORT and alias and alias != name:
            return alias
    if candidates:
        # The name exists but as something that cannot be followed (a variable,
        # or a definition of the wrong kind): stop here.
        return None
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        found = lookup(prefix)
        if not found:
            continue
        for _line, _id, node_kind, alias in found:
            if node_kind == IMPORT and alias and alias != prefix:
                return alias + "." + ".".join(parts[cut:])
        # The longest existing prefix is a real definition (a module or class
        # without that member): nothing to follow.
        return None
    return None


class MemoryLookup:
    """Name lookup over nodes held in memory: the full build's fast path."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[Candidate]] = {}

    def add(self, qualname: str, start_line: int, node_id: int, kind: int,
            alias: str | None) -> None:
        self._by_name.setdefault(qualname, []).append((start_line, node_id, kind, alias))

    def finish(self) -> None:
        for candidates in self._by_name.values():
            candidates.sort()

    def __call__(self, name: str) -> list[Candidate]:
        return self._by_name.get(name, [])


class SqlLookup:
    """Name lookup through the ``nodes_by_qualname`` index: the incremental path."""

    SQL = ("SELECT n.start_line, n.id, n.kind, a.target FROM nodes AS n"
           " LEFT JOIN aliases AS a ON a.node_id = n.id WHERE n.qualname = ?"
           " ORDER BY n.start_line, n.id")

    def __init__(self, conn: apsw.Connection):
        self._conn = conn
        self._memo: dict[str, list[Candidate]] = {}

    def __call__(self, name: str) -> list[Candidate]:
        found = self._memo.get(name)
        if found is None:
            found = self._memo[name] = [tuple(r) for r in self._conn.execute(self.SQL, (name,))]
        return found


def namespace_bounds(module: str) -> tuple[str, str]:
    """``(low, high)`` such that names under ``module.`` sort in ``[low, high)``."""
    # '/' is the character after '.', so "m/" bounds every "m.<anything>".
    return module + ".", module + "/"


def affected_refs(conn: apsw.Connection, modules: Iterable[str]) -> set[tuple[int, int, str]]:
    """Refs whose target or a hop is a module in ``modules`` or a name under one."""
    found: set[tuple[int, int, str]] = set()
    for module in modules:
        low, high = namespace_bounds(module)
        found.update(conn.execute(
            "SELECT src, kind, target FROM refs WHERE target = ? OR (target >= ? AND target < ?)",
            (module, low, high)))
        found.update(conn.execute(
            "SELECT src, kind, target FROM ref_hops WHERE hop = ? OR (hop >= ? AND hop < ?)",
            (module, low, high)))
    return found

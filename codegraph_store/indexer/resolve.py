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

from typing import Iterable

import apsw

from ..kinds import EdgeKind, NodeKind

# Lookups one reference may make before it is declared unresolvable.
MAX_STEPS = 32

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
# A base of a class: (the inherits ref's target, its hops, the base's qualname or
# None while unresolved), in the order the class statement lists them.
Base = tuple[str, list[str], "str | None"]

CLASS = int(NodeKind.CLASS)
INHERITS = int(EdgeKind.INHERITS)


class Lookup:
    """What resolution reads: nodes by qualname, and the bases of a class."""

    def __call__(self, name: str) -> list[Candidate]:  # pragma: no cover - interface
        raise NotImplementedError

    def bases(self, class_id: int) -> list[Base]:  # pragma: no cover - interface
        raise NotImplementedError


def resolve(target: str, kind: int, lookup: Lookup) -> tuple[int | None, list[str]]:
    """``(node id or None, hops)`` for one reference."""
    hops: list[str] = []
    # Bases are themselves resolved first (they are inherits refs), so an inherits
    # ref never looks through bases: the two passes would disagree.
    use_bases = kind != INHERITS
    dst = _resolve_name(target, ALLOWED_TARGETS[kind], lookup, hops, [MAX_STEPS], set(), use_bases)
    return dst, list(dict.fromkeys(hops))


def _resolve_name(name: str, allowed: frozenset[int], lookup: Lookup, hops: list[str],
                  budget: list[int], seen: set[str], use_bases: bool) -> int | None:
    while budget[0] > 0 and name not in seen:
        budget[0] -= 1
        seen.add(name)
        candidates = lookup(name)
        for _line, node_id, node_kind, _alias in candidates:
            if node_kind in allowed:
                return node_id
        alias = _first_alias(candidates, name)
        if alias is not None:
            hops.append(alias)
            name = alias
            continue
        if candidates:
            # The name exists but as something that cannot be followed (a
            # variable, or a definition of the wrong kind): stop here.
            return None
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:cut])
            found = lookup(prefix)
            if not found:
                continue
            rest = ".".join(parts[cut:])
            alias = _first_alias(found, prefix)
            if alias is not None:
                name = alias + "." + rest
                hops.append(name)
                break
            # The longest existing prefix is a definition. A class may inherit
            # the member: try its bases in order (an approximation of the MRO).
            if use_bases:
                for _line, node_id, node_kind, _alias in found:
                    if node_kind == CLASS:
                        return _resolve_in_bases(node_id, rest, allowed, lookup, hops, budget, seen)
            return None
        else:
            return None
    return None


def _resolve_in_bases(class_id: int, member: str, allowed: frozenset[int], lookup: Lookup,
                      hops: list[str], budget: list[int], seen: set[str]) -> int | None:
    bases = lookup.bases(class_id)
    # Every base's own resolution is a dependency, resolved or not: a change to
    # it changes where the member is found.
    for target, base_hops, _qualname in bases:
        hops.append(target)
        hops.extend(base_hops)
    for _target, _hops, qualname in bases:
        if qualname is None:
            continue
        candidate = qualname + "." + member
        hops.append(candidate)
        found = _resolve_name(candidate, allowed, lookup, hops, budget, seen, True)
        if found is not None:
            return found
    return None


def _first_alias(candidates: list[Candidate], name: str) -> str | None:
    for _line, _id, node_kind, alias in candidates:
        if node_kind == IMPORT and alias and alias != name:
            return alias
    return None


class MemoryLookup(Lookup):
    """Name lookup over nodes held in memory: the full build's fast path."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[Candidate]] = {}
        self._bases: dict[int, list[Base]] = {}

    def set_bases(self, class_id: int, bases: list[Base]) -> None:
        """``bases`` in declaration order (Python looks a member up in that order)."""
        self._bases[class_id] = list(bases)

    def bases(self, class_id: int) -> list[Base]:
        return self._bases.get(class_id, [])

    def add(self, qualname: str, start_line: int, node_id: int, kind: int,
            alias: str | None) -> None:
        self._by_name.setdefault(qualname, []).append((start_line, node_id, kind, alias))

    def finish(self) -> None:
        for candidates in self._by_name.values():
            candidates.sort()

    def __call__(self, name: str) -> list[Candidate]:
        return self._by_name.get(name, [])


class SqlLookup(Lookup):
    """Name lookup through the ``nodes_by_qualname`` index: the incremental path.

    Bases are read from the refs table, so inherits refs must be resolved before
    a SqlLookup is made for the other kinds.
    """

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

    def bases(self, class_id: int) -> list[Base]:
        out = []
        for target, qualname in self._conn.execute(
                "SELECT r.target, n.qualname FROM refs AS r LEFT JOIN nodes AS n ON n.id = r.dst"
                " WHERE r.src = ? AND r.kind = ? ORDER BY r.ordinal, r.target", (class_id, INHERITS)):
            hops = [h for (h,) in self._conn.execute(
                "SELECT hop FROM ref_hops WHERE src = ? AND kind = ? AND target = ? ORDER BY hop",
                (class_id, INHERITS, target))]
            out.append((target, hops, qualname))
        return out


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

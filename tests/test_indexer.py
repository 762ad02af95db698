"""Tests of the Python indexer (codegraph_store.indexer): exact graphs on a fixture
package, incremental re-indexing, incremental == full rebuild (hypothesis), and
robustness of the scan against odd files.

Expected sets are written by hand from tests/fixtures/samplepkg; see the comment at
the top of each fixture file for what it exercises.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegraph_store import EdgeKind, NodeKind, Store, stable_node_id
from codegraph_store.indexer import build, index_tree

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "samplepkg")

CONTAINS, CALLS, IMPORTS, INHERITS, REFERENCES = (
    int(EdgeKind.CONTAINS), int(EdgeKind.CALLS), int(EdgeKind.IMPORTS),
    int(EdgeKind.INHERITS), int(EdgeKind.REFERENCES))

P = "samplepkg."

# --------------------------------------------------------------------------- #
# helpers


def new_store(directory, name="g.cgdb") -> Store:
    return Store.open(os.path.join(str(directory), name))


def copy_fixture(tmp_path) -> str:
    """A private copy of the fixture (the index root holds samplepkg/)."""
    root = os.path.join(str(tmp_path), "src")
    shutil.copytree(FIXTURE, os.path.join(root, "samplepkg"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def write(root, rel, text) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def dump(store: Store) -> dict:
    """Everything the indexer writes: nodes and edges through the public API,
    refs, hops, aliases and files through raw SQL."""
    nodes = set()
    for n in store.iter_nodes():
        nodes.add((n.id, int(n.kind), n.name, n.qualname, n.file, n.start_line, n.start_col,
                   n.end_line, n.end_col, json.dumps(n.metadata, sort_keys=True)))
    edges = set()
    for e in store.iter_edges():
        edges.add((e.src, int(e.kind), e.dst, json.dumps(e.metadata)))
    conn = store._read_conn()[0]
    return {
        "nodes": nodes,
        "edges": edges,
        "refs": set(conn.execute("SELECT src, kind, target, dst FROM refs")),
        "ref_hops": set(conn.execute("SELECT src, kind, target, hop FROM ref_hops")),
        "aliases": set(conn.execute("SELECT node_id, target FROM aliases")),
        "files": set(conn.execute(
            "SELECT path, language, module, content_hash, size, parse_error FROM files")),
    }


def dump_diff(got: dict, want: dict) -> str:
    out = []
    for key in want:
        extra, missing = got[key] - want[key], want[key] - got[key]
        if extra or missing:
            out.append(f"{key}: extra={sorted(extra, key=repr)[:8]} missing={sorted(missing, key=repr)[:8]}")
    return "\n".join(out)


def assert_same(got: dict, want: dict) -> None:
    diff = dump_diff(got, want)
    assert not diff, diff


class Graph:
    """Qualname-level view of a store, for exact assertions on the fixture."""

    def __init__(self, store: Store):
        self.store = store
        self.by_id = {n.id: n for n in store.iter_nodes()}
        self.edges = [(e.src, int(e.kind), e.dst) for e in store.iter_edges()]

    def one(self, qualname: str, kind=None):
        found = self.store.find(qualname=qualname, kind=kind)
        assert len(found) == 1, (qualname, found)
        return found[0]

    def qn(self, nodes) -> set[str]:
        return {n.qualname for n in nodes}

    def edge_set(self, kind: int) -> set[tuple[str, str]]:
        return {(self.by_id[s].qualname, self.by_id[d].qualname)
                for s, k, d in self.edges if k == kind}

    def refs(self, unresolved_only=False) -> set[tuple[str, int, str, str | None]]:
        conn = self.store._read_conn()[0]
        out = set()
        for src, kind, target, dst in conn.execute("SELECT src, kind, target, dst FROM refs"):
            if unresolved_only and dst is not None:
                continue
            out.add((self.by_id[src].qualname, kind, target,
                     None if dst is None else self.by_id[dst].qualname))
        return out


def index_fixture(tmp_path, jobs=1, name="g.cgdb"):
    root = copy_fixture(tmp_path) if not os.path.isdir(os.path.join(str(tmp_path), "src")) \
        else os.path.join(str(tmp_path), "src")
    store = new_store(tmp_path, name)
    report = index_tree(store, root, jobs=jobs)
    return store, report, root


@pytest.fixture
def indexed(tmp_path):
    store, report, root = index_fixture(tmp_path)
    yield store, report, root
    store.close()


# --------------------------------------------------------------------------- #
# 1. exact sets on the fixture

EXPECTED_DEFS = {
    ("function", P + "base.register"),
    ("function", P + "base.helper"),
    ("class", P + "base.Base"),
    ("method", P + "base.Base.__init__"),
    ("method", P + "base.Base.start"),
    ("method", P + "base.Base.check"),
    ("class", P + "core.Engine"),
    ("method", P + "core.Engine.run"),
    ("method", P + "core.Engine.step"),
    ("class", P + "core.Turbo"),
    ("method", P + "core.Turbo.boost"),
    ("function", P + "core.build"),
    ("function", P + "core.build.configure"),
    ("function", P + "util.slugify"),
    ("function", P + "util.shout"),
    ("function", P + "relay.relay_call"),
    ("function", P + "relay.relay_default"),
    ("class", P + "sub.tools.Special"),
    ("method", P + "sub.tools.Special.run"),
    ("function", P + "sub.tools.make"),
    ("function", P + "sub.tools.tidy"),
}

EXPECTED_CALLS = {
    (P + "base.Base.start", P + "base.Base.check"),
    (P + "base.Base.check", P + "base.helper"),
    (P + "core.Engine.run", P + "core.Engine.step"),
    (P + "core.Engine.run", P + "base.Base.start"),  # self.start(): inherited from Base
    (P + "core.Engine.step", P + "base.helper"),
    (P + "core.Turbo.boost", P + "base.helper"),  # b.helper
    (P + "core.build", P + "core.build.configure"),  # nested function
    (P + "core.build", P + "core.Engine"),
    (P + "util.shout", P + "util.slugify"),
    (P + "relay.relay_call", P + "util.shout"),  # star import
    (P + "relay.relay_default", P + "base.helper"),
    (P + "sub.tools", P + "util.slugify"),  # NAME = util.slugify(...) at module level
    (P + "sub.tools.make", P + "core.Engine"),  # samplepkg.Engine, re-export
    (P + "sub.tools.make", P + "base.helper"),  # two alias hops
    (P + "sub.tools.tidy", P + "util.slugify"),
    (P + "sub.tools.Special.run", P + "core.Engine.step"),  # self.step(): inherited
}

EXPECTED_IMPORTS = {
    ("samplepkg", P + "core"),
    (P + "core", P + "base"),
    (P + "relay", P + "base"),
    (P + "relay", P + "util"),
    (P + "sub", P + "relay"),
    (P + "sub.tools", "samplepkg"),
    (P + "sub.tools", P + "util"),
    (P + "sub.tools", P + "sub"),
    (P + "sub.tools", P + "core"),
}

EXPECTED_INHERITS = {
    (P + "core.Engine", P + "base.Base"),
    (P + "core.Turbo", P + "base.Base"),
    (P + "sub.tools.Special", P + "core.Engine"),
}

EXPECTED_UNRESOLVED = {
    # `from X import name`: the name is a definition or an import, never a module
    ("samplepkg", IMPORTS, P + "core.Engine", None),
    (P + "core", IMPORTS, P + "base.Base", None),
    (P + "core", IMPORTS, P + "base.helper", None),
    (P + "core", IMPORTS, P + "base.register", None),
    (P + "relay", IMPORTS, P + "base.helper", None),
    (P + "sub", IMPORTS, P + "relay.helper", None),
    (P + "sub.tools", IMPORTS, P + "sub.helper", None),
    (P + "sub.tools", IMPORTS, P + "core.Engine", None),
    # slugify(text).upper(): a method of what slugify() returns, and slugify is a
    # function, so samplepkg.util.slugify.upper never resolves
    (P + "util.shout", CALLS, P + "util.slugify.upper", None),
}

ALL_FILES = {
    "samplepkg/__init__.py", "samplepkg/base.py", "samplepkg/core.py", "samplepkg/util.py",
    "samplepkg/relay.py", "samplepkg/broken.py", "samplepkg/sub/__init__.py",
    "samplepkg/sub/tools.py",
}


def test_fixture_definitions(indexed):
    store, report, _ = indexed
    defs = {(n.kind.label, n.qualname) for n in store.iter_nodes()
            if n.kind in (NodeKind.CLASS, NodeKind.FUNCTION, NodeKind.METHOD)}
    assert defs == EXPECTED_DEFS
    assert report.full_build is True
    assert report.files_seen == 8 and report.parsed == 8 and report.added == 8
    assert (report.nodes, report.edges, report.refs_resolved) == (44, 37 + 29, 29)
    assert {f.path for f in store.files()} == ALL_FILES


def test_fixture_modules_and_variables(indexed):
    store, _, _ = indexed
    kinds = {(n.kind.label, n.qualname) for n in store.iter_nodes()
             if n.kind in (NodeKind.MODULE, NodeKind.VARIABLE)}
    assert kinds == {
        ("module", "samplepkg"), ("module", P + "base"), ("module", P + "core"),
        ("module", P + "util"), ("module", P + "relay"), ("module", P + "sub"),
        ("module", P + "sub.tools"),
        ("variable", P + "VERSION"), ("variable", P + "core.LIMIT"),
        ("variable", P + "util.DEFAULT_NAME"), ("variable", P + "sub.tools.NAME"),
    }
    imports = {(n.qualname, n.metadata["target"]) for n in store.iter_nodes()
               if n.kind == NodeKind.IMPORT}
    assert imports == {
        (P + "Engine", P + "core.Engine"),
        (P + "core.b", P + "base"),
        (P + "core.Base", P + "base.Base"),
        (P + "core.helper", P + "base.helper"),
        (P + "core.register", P + "base.register"),
        (P + "relay.helper", P + "base.helper"),
        (P + "sub.helper", P + "relay.helper"),
        (P + "sub.tools.samplepkg", "samplepkg"),
        (P + "sub.tools.util", P + "util"),
        (P + "sub.tools.helper", P + "sub.helper"),
        (P + "sub.tools.CoreEngine", P + "core.Engine"),
    }


def test_fixture_calls_edges(indexed):
    store, _, _ = indexed
    g = Graph(store)
    assert g.edge_set(CALLS) == EXPECTED_CALLS


def test_fixture_callers_and_callees(indexed):
    store, _, _ = indexed
    g = Graph(store)
    helper = g.one(P + "base.helper")
    assert g.qn(store.callers(helper.id)) == {
        P + "base.Base.check", P + "core.Engine.step", P + "core.Turbo.boost",
        P + "relay.relay_default", P + "sub.tools.make"}
    assert store.callees(helper.id) == []
    slugify = g.one(P + "util.slugify")
    assert g.qn(store.callers(slugify.id)) == {P + "util.shout", P + "sub.tools",
                                               P + "sub.tools.tidy"}
    engine = g.one(P + "core.Engine", kind="class")
    assert g.qn(store.callers(engine.id)) == {P + "core.build", P + "sub.tools.make"}
    assert g.qn(store.callees(g.one(P + "core.build").id)) == {
        P + "core.build.configure", P + "core.Engine"}
    assert g.qn(store.callees(g.one(P + "sub.tools.make").id)) == {
        P + "core.Engine", P + "base.helper"}
    assert g.qn(store.callees(g.one(P + "core.Engine.run").id)) == {P + "core.Engine.step",
                                                                  P + "base.Base.start"}
    assert g.qn(store.callers(g.one(P + "core.Engine.step").id)) == {P + "core.Engine.run",
                                                                   P + "sub.tools.Special.run"}
    assert g.qn(store.callers(g.one(P + "util.shout").id)) == {P + "relay.relay_call"}
    assert store.callees(g.one(P + "core.build.configure").id) == []  # engine.run(): a parameter
    assert g.qn(store.callers(g.one(P + "base.Base.check").id)) == {P + "base.Base.start"}
    # references: the decorator
    assert g.edge_set(REFERENCES) == {(P + "core.Turbo.boost", P + "base.register")}


def test_fixture_inherits(indexed):
    store, _, _ = indexed
    g = Graph(store)
    assert g.edge_set(INHERITS) == EXPECTED_INHERITS
    for sub, base in EXPECTED_INHERITS:
        out = store.neighbors(g.one(sub).id, "out", EdgeKind.INHERITS)
        assert g.qn(out) == {base}
    # subclasses of Base (in-edges), and impact() reaches Special transitively
    base = g.one(P + "base.Base")
    assert g.qn(store.neighbors(base.id, "in", "inherits")) == {P + "core.Engine", P + "core.Turbo"}
    impacted = {n.qualname: d for n, d in store.impact(base.id)}
    assert impacted[P + "sub.tools.Special"] == 2


def test_fixture_import_edges(indexed):
    store, _, _ = indexed
    g = Graph(store)
    assert g.edge_set(IMPORTS) == EXPECTED_IMPORTS
    for s, k, d in g.edges:
        if k == IMPORTS:
            assert g.by_id[s].kind == NodeKind.MODULE and g.by_id[d].kind == NodeKind.MODULE


def test_fixture_refs(indexed):
    store, _, _ = indexed
    g = Graph(store)
    assert g.refs(unresolved_only=True) == EXPECTED_UNRESOLVED
    assert store.stats()["unresolved_refs"] == len(EXPECTED_UNRESOLVED) == 9
    resolved = {(s, k, d) for s, k, t, d in g.refs() if d is not None}
    assert resolved == ({(s, CALLS, d) for s, d in EXPECTED_CALLS}
                        | {(s, IMPORTS, d) for s, d in EXPECTED_IMPORTS}
                        | {(s, INHERITS, d) for s, d in EXPECTED_INHERITS}
                        | {(P + "core.Turbo.boost", REFERENCES, P + "base.register")})
    # the two-hop call records both hops
    conn = store._read_conn()[0]
    make = g.one(P + "sub.tools.make").id
    hops = set(conn.execute("SELECT target, hop FROM ref_hops WHERE src = ? AND kind = ?",
                            (make, CALLS)))
    assert hops == {(P + "sub.helper", P + "relay.helper"),
                    (P + "sub.helper", P + "base.helper"),
                    ("samplepkg.Engine", P + "core.Engine")}
    # members found through a base class record the base and the member name tried
    run = g.one(P + "core.Engine.run").id
    hops = set(conn.execute("SELECT target, hop FROM ref_hops WHERE src = ? AND kind = ?",
                            (run, CALLS)))
    assert hops == {(P + "core.Engine.start", P + "base.Base"),
                    (P + "core.Engine.start", P + "base.Base.start")}


def test_fixture_at(indexed):
    store, _, root = indexed
    with open(os.path.join(root, "samplepkg", "core.py")) as f:
        lines = f.read().split("\n")
    line = lines.index("        total = n + LIMIT") + 1
    node = store.at("samplepkg/core.py", line)
    assert (node.kind, node.qualname) == (NodeKind.METHOD, P + "core.Engine.step")
    line = lines.index("        return engine.run()") + 1
    assert store.at("samplepkg/core.py", line).qualname == P + "core.build.configure"
    line = lines.index("class Engine(Base):") + 1
    assert store.at("samplepkg/core.py", line).qualname == P + "core.Engine"
    assert store.at("samplepkg/core.py", 1).qualname == P + "core"


def test_fixture_syntax_error_file(indexed):
    store, report, _ = indexed
    assert report.failed == (("samplepkg/broken.py", "SyntaxError: invalid syntax (line 3)"),)
    assert store.find(file="samplepkg/broken.py") == []
    info = {f.path: f for f in store.files()}["samplepkg/broken.py"]
    assert info.parse_error == "SyntaxError: invalid syntax (line 3)"
    assert info.node_count == 0
    assert info.module == P + "broken"
    assert store.check().ok


def test_fixture_contains_is_a_tree(indexed):
    store, _, _ = indexed
    g = Graph(store)
    parent = {}
    for s, k, d in g.edges:
        if k == CONTAINS:
            assert d not in parent, f"{g.by_id[d].qualname} has two parents"
            parent[d] = s
    for node_id, node in g.by_id.items():
        if node.kind == NodeKind.MODULE:
            assert node_id not in parent
            continue
        assert node_id in parent, node.qualname
        p = g.by_id[parent[node_id]]
        assert p.file == node.file
        assert node.qualname.startswith(p.qualname + ".")
        # walking up ends at this file's module without cycles
        seen = {node_id}
        cur = node_id
        while cur in parent:
            cur = parent[cur]
            assert cur not in seen
            seen.add(cur)
        assert g.by_id[cur].kind == NodeKind.MODULE and g.by_id[cur].file == node.file
    # spot checks
    qn = {n.qualname: i for i, n in g.by_id.items()}
    assert parent[qn[P + "core.build.configure"]] == qn[P + "core.build"]
    assert parent[qn[P + "base.Base.ready"]] == qn[P + "base.Base"]
    assert parent[qn[P + "core.Engine.step"]] == qn[P + "core.Engine"]


def test_fixture_ids_are_stable_hashes(indexed):
    store, _, _ = indexed
    for n in store.iter_nodes():
        assert n.id == stable_node_id(n.file, n.qualname, 0)


def test_jobs2_builds_identical_store(tmp_path):
    s1, r1, root = index_fixture(tmp_path, jobs=1, name="one.cgdb")
    s2, r2, _ = index_fixture(tmp_path, jobs=2, name="two.cgdb")
    try:
        assert_same(dump(s2), dump(s1))
        assert r2.failed == r1.failed and r2.nodes == r1.nodes and r2.edges == r1.edges
    finally:
        s1.close()
        s2.close()


def test_jobs2_worker_processes_build_identical_store(tmp_path, monkeypatch):
    # The fixture is below INLINE_PARSE_LIMIT: force the worker-process path.
    monkeypatch.setattr(build, "INLINE_PARSE_LIMIT", 0)
    s1, r1, root = index_fixture(tmp_path, jobs=1, name="one.cgdb")
    s2, r2, _ = index_fixture(tmp_path, jobs=2, name="two.cgdb")
    try:
        assert_same(dump(s2), dump(s1))
        assert r2.failed == r1.failed
    finally:
        s1.close()
        s2.close()


def test_progress_reports_phases(tmp_path):
    root = copy_fixture(tmp_path)
    events = []
    with new_store(tmp_path) as store:
        index_tree(store, root, jobs=1, progress=lambda *e: events.append(e))
        assert events == [("scan", 8, 8)] + [("parse", i, 8) for i in range(1, 9)] + \
            [("resolve", 0, 1)]
        events.clear()
        index_tree(store, root, jobs=1, progress=lambda *e: events.append(e))
        assert events == [("scan", 8, 8)]


# --------------------------------------------------------------------------- #
# 2. incremental behaviour


def full_dump_of(root, directory) -> dict:
    with tempfile.TemporaryDirectory(dir=str(directory)) as d:
        with new_store(d, "fresh.cgdb") as fresh:
            index_tree(fresh, root, jobs=1)
            return dump(fresh)


def test_rerun_without_changes_changes_nothing(indexed):
    store, _, root = indexed
    before = dump(store)
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.unchanged, report.added, report.modified, report.deleted) == \
        (0, 8, 0, 0, 0)
    assert report.full_build is False and report.changed == ()
    assert report.failed == (("samplepkg/broken.py", "SyntaxError: invalid syntax (line 3)"),)
    assert_same(dump(store), before)


def test_modify_file_keeps_ids_and_fixes_incoming_edges(indexed, tmp_path):
    store, _, root = indexed
    original = dump(store)
    ids_before = {(n.qualname, n.file): n.id for n in store.iter_nodes()}
    util = os.path.join(root, "samplepkg", "util.py")
    with open(util) as f:
        util_src = f.read()
    # remove shout(), called from relay.relay_call through the star import
    write(root, "samplepkg/util.py", util_src.split("\n\ndef shout")[0] + "\n")
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.modified, report.added, report.deleted) == (1, 1, 0, 0)
    assert report.changed == ("samplepkg/util.py",)
    g = Graph(store)
    assert store.find(qualname=P + "util.shout") == []
    # unchanged symbols of the changed file keep their ids
    for qn in ("samplepkg.util", P + "util.slugify", P + "util.DEFAULT_NAME"):
        assert g.one(qn).id == ids_before[(qn, "samplepkg/util.py")]
    relay_call = g.one(P + "relay.relay_call")
    assert store.callees(relay_call.id) == []
    assert (P + "relay.relay_call", CALLS, P + "util.shout", None) in g.refs()
    assert g.edge_set(CALLS) == EXPECTED_CALLS - {(P + "relay.relay_call", P + "util.shout"),
                                                   (P + "util.shout", P + "util.slugify")}
    assert g.edge_set(IMPORTS) == EXPECTED_IMPORTS
    assert store.check().ok
    assert_same(dump(store), full_dump_of(root, tmp_path))
    # put it back: the edge comes back and the store equals the original one
    write(root, "samplepkg/util.py", util_src)
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.modified) == (1, 1)
    g = Graph(store)
    assert g.qn(store.callees(relay_call.id)) == {P + "util.shout"}
    assert g.one(P + "util.shout").id == ids_before[(P + "util.shout", "samplepkg/util.py")]
    assert_same(dump(store), original)


def test_remove_function_called_through_alias_hops(indexed, tmp_path):
    store, _, root = indexed
    original = dump(store)
    path = os.path.join(root, "samplepkg", "base.py")
    with open(path) as f:
        src = f.read()
    removed = src.replace("def helper(value):\n    return value\n\n\n", "")
    assert removed != src
    write(root, "samplepkg/base.py", removed)
    index_tree(store, root, jobs=1)
    g = Graph(store)
    assert store.find(qualname=P + "base.helper") == []
    callers = {P + "base.Base.check", P + "core.Engine.step", P + "core.Turbo.boost",
               P + "relay.relay_default", P + "sub.tools.make"}
    assert g.edge_set(CALLS) == {e for e in EXPECTED_CALLS if e[1] != P + "base.helper"}
    refs = g.refs()
    assert (P + "sub.tools.make", CALLS, P + "sub.helper", None) in refs  # two hops
    assert (P + "core.Turbo.boost", CALLS, P + "base.helper", None) in refs  # b.helper
    assert (P + "core.Engine.step", CALLS, P + "base.helper", None) in refs
    assert (P + "relay.relay_default", CALLS, P + "base.helper", None) in refs
    # base.Base.check's own `helper` is now an unbound name in base.py: no ref at all
    assert {r[0] for r in refs if r[1] == CALLS and r[3] is None} == \
        callers - {P + "base.Base.check"} | {P + "util.shout"}
    assert store.callees(g.one(P + "base.Base.check").id) == []
    assert_same(dump(store), full_dump_of(root, tmp_path))
    write(root, "samplepkg/base.py", src)
    index_tree(store, root, jobs=1)
    assert_same(dump(store), original)


@pytest.mark.parametrize("rel", sorted(ALL_FILES))
def test_shifted_lines_keep_ids_and_edges(indexed, tmp_path, rel):
    """Re-indexing a file whose symbols only moved down deletes and rewrites all its
    nodes: every edge into them from other files (found directly, through alias
    hops or through base classes) must be restored, with the same ids."""
    store, _, root = indexed
    before = dump(store)
    before_nodes = {n.id: n for n in store.iter_nodes()}
    path = os.path.join(root, rel)
    with open(path) as f:
        src = f.read()
    write(root, rel, "\n\n\n" + src)
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.modified) == (1, 1)
    after_nodes = {n.id: n for n in store.iter_nodes()}
    assert after_nodes.keys() == before_nodes.keys()
    for i, n in after_nodes.items():
        old = before_nodes[i]
        if n.file != rel:
            assert n == old
        elif n.kind == NodeKind.MODULE:
            assert (n.start_line, n.end_line) == (1, old.end_line + 3)
        else:
            assert (n.start_line, n.end_line) == (old.start_line + 3, old.end_line + 3)
            assert (n.qualname, n.kind, n.start_col, n.end_col) == \
                (old.qualname, old.kind, old.start_col, old.end_col)
    after = dump(store)
    for key in ("edges", "refs", "ref_hops", "aliases"):
        assert after[key] == before[key], key
    assert_same(after, full_dump_of(root, tmp_path))


def test_delete_file_removes_nodes_and_incoming_edges(indexed, tmp_path):
    store, _, root = indexed
    os.remove(os.path.join(root, "samplepkg", "util.py"))
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.deleted, report.unchanged, report.files_seen) == (0, 1, 7, 7)
    assert report.changed == ("samplepkg/util.py",)
    g = Graph(store)
    assert store.find(file="samplepkg/util.py") == []
    assert "samplepkg/util.py" not in {f.path for f in store.files()}
    assert all(not n.qualname.startswith(P + "util") for n in g.by_id.values())
    assert g.edge_set(CALLS) == {e for e in EXPECTED_CALLS if not e[1].startswith(P + "util")}
    assert g.edge_set(IMPORTS) == EXPECTED_IMPORTS - {(P + "relay", P + "util"),
                                                       (P + "sub.tools", P + "util")}
    assert g.refs(unresolved_only=True) == EXPECTED_UNRESOLVED - {
        (P + "util.shout", CALLS, P + "util.slugify.upper", None)} | {
        (P + "relay.relay_call", CALLS, P + "util.shout", None),
        (P + "sub.tools", CALLS, P + "util.slugify", None),
        (P + "sub.tools.tidy", CALLS, P + "util.slugify", None),
        (P + "relay", IMPORTS, P + "util", None),
        (P + "sub.tools", IMPORTS, P + "util", None),
    }
    assert store.check().ok
    assert_same(dump(store), full_dump_of(root, tmp_path))


def test_new_file_resolves_pending_refs(indexed, tmp_path):
    store, _, root = indexed
    write(root, "samplepkg/user.py", textwrap.dedent("""\
        from .later import soon
        from . import later


        def use():
            return soon() + later.Late()
        """))
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.added) == (1, 1)
    g = Graph(store)
    use = g.one(P + "user.use")
    assert store.callees(use.id) == []
    assert {r for r in g.refs() if r[0] in (P + "user", P + "user.use")} == {
        (P + "user", IMPORTS, P + "later", None),
        (P + "user", IMPORTS, P + "later.soon", None),
        (P + "user", IMPORTS, "samplepkg", "samplepkg"),
        (P + "user.use", CALLS, P + "later.soon", None),
        (P + "user.use", CALLS, P + "later.Late", None),
    }
    write(root, "samplepkg/later.py", textwrap.dedent("""\
        def soon():
            return 1


        class Late:
            def go(self):
                return soon()
        """))
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.added, report.unchanged) == (1, 1, 9)
    g = Graph(store)
    assert g.qn(store.callees(use.id)) == {P + "later.soon", P + "later.Late"}
    assert (P + "user", P + "later") in g.edge_set(IMPORTS)
    assert {r for r in g.refs() if r[0] in (P + "user", P + "user.use")} == {
        (P + "user", IMPORTS, P + "later", P + "later"),
        (P + "user", IMPORTS, P + "later.soon", None),
        (P + "user", IMPORTS, "samplepkg", "samplepkg"),
        (P + "user.use", CALLS, P + "later.soon", P + "later.soon"),
        (P + "user.use", CALLS, P + "later.Late", P + "later.Late"),
    }
    assert store.check().ok
    assert_same(dump(store), full_dump_of(root, tmp_path))


def test_deleted_then_restored_file_resolves_again(indexed):
    store, _, root = indexed
    original = dump(store)
    path = os.path.join(root, "samplepkg", "util.py")
    with open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    index_tree(store, root, jobs=1)
    with open(path, "wb") as f:
        f.write(data)
    report = index_tree(store, root, jobs=1)
    assert (report.added, report.parsed) == (1, 1)
    assert_same(dump(store), original)


def test_fixing_the_syntax_error(indexed, tmp_path):
    store, _, root = indexed
    write(root, "samplepkg/broken.py", "from .util import shout\n\n\ndef oops():\n    return shout('x')\n")
    report = index_tree(store, root, jobs=1)
    assert report.failed == ()
    g = Graph(store)
    assert (P + "broken.oops", P + "util.shout") in g.edge_set(CALLS)
    assert_same(dump(store), full_dump_of(root, tmp_path))
    write(root, "samplepkg/broken.py", "def oops(:\n")
    report = index_tree(store, root, jobs=1)
    assert report.failed == (("samplepkg/broken.py", "SyntaxError: invalid syntax (line 1)"),)
    assert store.find(file="samplepkg/broken.py") == []
    assert_same(dump(store), full_dump_of(root, tmp_path))


# --------------------------------------------------------------------------- #
# 3. incremental runs == full rebuild (hypothesis)
#
# A synthetic tree is a dict path -> module model; a model renders to source.
# The vocabularies below are chosen so that names collide across modules:
# imports bind names other modules define (or re-export, or alias again),
# calls and bases use those names, and edits move definitions around.

GEN_PATHS = ("pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/sub/__init__.py",
             "pkg/sub/d.py", "pkg/sub/e.py",
             # a second file for module pkg.c: two files define the same names
             "pkg/c/__init__.py",
             # outside the package: relative imports from here never resolve
             "top.py")
GEN_MODULES = ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d", "pkg.sub.e", "top")
# Few names, so that what one module imports another one likely defines, or
# imports again from a third one (alias chains), or re-exports in __init__.py.
GEN_FUNCS = ("f", "g")
GEN_CLASSES = ("C", "K")
GEN_METHODS = ("m", "n")
GEN_CALLS = ("f", "g", "C", "K", "C.m", "K.n", "A.f", "A.g", "A.C", "A.C.m", "A.K.n",
             "pkg.f", "pkg.C.m", "pkg.sub.K.n", "pkg.a.g", "top.C.m", "self.m", "self.n",
             "self.m", "self.n",
             # V0 = <call>() at module level: a method of what the call returns
             "V0.m", "C().n")
GEN_BASES = (None, "C", "K", "A.C", "A.K", "pkg.C", "pkg.sub.K", "top.K")
GEN_DECORATORS = (None, "f", "A.g", "pkg.V0", "A", "C.m")

# An import is (form, module, name, asname, relative):
#   from: `from <module> import <name> [as <asname>]`
#   mod:  `import <module> as A` (relative: `from <parent> import <leaf> as A`),
#         or `import <module>` when asname is None
#   star: `from <module> import *`
import_s = st.tuples(st.sampled_from(("from", "from", "from", "mod", "star")),
                     st.sampled_from(GEN_MODULES), st.sampled_from(GEN_FUNCS + GEN_CLASSES),
                     st.sampled_from((None, None, None, "f", "C", "A")), st.booleans())
calls_s = st.lists(st.sampled_from(GEN_CALLS), max_size=3).map(tuple)
# methods call other methods through self (inherited or not) more often
method_s = st.tuples(st.sampled_from(GEN_METHODS), st.lists(
    st.sampled_from(GEN_CALLS + ("self.m", "self.n") * 3), max_size=3).map(tuple))
def_s = st.one_of(
    # ("def", name, calls, decorator, nested function calling `calls` too)
    st.tuples(st.just("def"), st.sampled_from(GEN_FUNCS), calls_s,
              st.sampled_from(GEN_DECORATORS), st.booleans()),
    # ("class", name, base, methods)
    class_s := st.tuples(st.just("class"), st.sampled_from(GEN_CLASSES),
                         st.sampled_from(GEN_BASES), st.lists(method_s, min_size=1,
                                                              max_size=2).map(tuple)),
    class_s,
)
module_s = st.fixed_dictionaries({
    "imports": st.lists(import_s, min_size=1, max_size=4).map(tuple),
    "top": st.lists(st.sampled_from(GEN_CALLS), max_size=1).map(tuple),
    "defs": st.lists(def_s, min_size=2, max_size=4).map(tuple),
    "broken": st.integers(0, 7).map(lambda x: x == 0),
})
tree_s = st.dictionaries(st.sampled_from(GEN_PATHS), module_s, min_size=5, max_size=8)
ix = st.integers(0, 7)
edit_s = st.one_of(
    st.tuples(st.just("add_def"), ix, def_s),
    st.tuples(st.just("del_def"), ix, ix),
    st.tuples(st.just("rename"), ix, ix, st.sampled_from(GEN_FUNCS + GEN_CLASSES)),
    st.tuples(st.just("set_calls"), ix, ix, calls_s),
    st.tuples(st.just("set_base"), ix, ix, st.sampled_from(GEN_BASES)),
    st.tuples(st.just("add_module"), st.sampled_from(GEN_PATHS), module_s),
    st.tuples(st.just("del_module"), ix),
    st.tuples(st.just("set_import"), ix, ix, import_s),
    st.tuples(st.just("del_import"), ix, ix),
    st.tuples(st.just("toggle_broken"), ix),
    # a comment at the top: the same symbols, shifted one line down (every node of
    # the file is deleted and written again: all refs into it must be resolved again)
    touch_s := st.tuples(st.just("touch"), ix), touch_s, touch_s,
    st.tuples(st.just("rerun")),
)


def render_module_ref(path: str, module: str, relative: bool) -> str:
    """How the file at ``path`` names ``module`` in a from-import."""
    if not relative:
        return module
    parts = path[:-3].split("/")
    package = parts[:-1]  # for __init__.py the package is the directory itself
    target = module.split(".")
    level = 1
    while package:
        if target[:len(package)] == package:
            return "." * level + ".".join(target[len(package):])
        package = package[:-1]
        level += 1
    return "." * level + module  # beyond the top: never resolves


def render_import(path: str, imp: tuple) -> str:
    form, module, name, asname, relative = imp
    if form == "star":
        return f"from {render_module_ref(path, module, relative)} import *"
    if form == "mod":
        if asname is None:
            return f"import {module}"
        parent, _, leaf = module.rpartition(".")
        if relative and parent:
            return f"from {render_module_ref(path, parent, True)} import {leaf} as A"
        return f"import {module} as A"
    ref = render_module_ref(path, module, relative)
    return f"from {ref} import {name}" + (f" as {asname}" if asname and asname != name else "")


def render(path: str, mod: dict) -> str:
    lines = ["# touched"] * mod.get("touched", 0)
    lines += [render_import(path, imp) for imp in mod["imports"]]
    for i, expr in enumerate(mod["top"]):
        lines.append(f"V{i} = {expr}()")
    for d in mod["defs"]:
        if d[0] == "def":
            if d[3]:
                lines.append(f"@{d[3]}")
            lines.append(f"def {d[1]}():")
            if d[4]:
                lines.append("    def inner():")
                lines += [f"        {c}()" for c in d[2]] or ["        pass"]
                lines.append("    inner()")
            lines += [f"    return {c}()" if i == len(d[2]) - 1 else f"    {c}()"
                      for i, c in enumerate(d[2])] or ["    pass"]
        else:
            lines.append(f"class {d[1]}({d[2]}):" if d[2] else f"class {d[1]}:")
            body = []
            for name, calls in d[3]:
                body.append(f"    def {name}(self):")
                body += [f"        {c}()" for c in calls] or ["        pass"]
            lines += body or ["    pass"]
    if mod["broken"]:
        lines.append("def broken(:")
    return "\n".join(lines) + "\n"


def apply_edit(tree: dict, edit: tuple) -> dict:
    tree = {p: dict(m) for p, m in tree.items()}
    op = edit[0]
    if op == "rerun":
        return tree
    if op == "add_module":
        tree[edit[1]] = dict(edit[2])
        return tree
    if not tree:
        return tree
    path = sorted(tree)[edit[1] % len(tree)]
    mod = tree[path]
    defs = list(mod["defs"])
    imports = list(mod["imports"])
    if op == "del_module":
        del tree[path]
    elif op == "toggle_broken":
        mod["broken"] = not mod["broken"]
    elif op == "touch":
        mod["touched"] = mod.get("touched", 0) + 1
    elif op == "add_def":
        defs.append(edit[2])
    elif op == "set_import":
        if edit[2] < len(imports):
            imports[edit[2]] = edit[3]
        else:
            imports.append(edit[3])
    elif op == "del_import" and imports:
        del imports[edit[2] % len(imports)]
    elif defs and op in ("del_def", "rename", "set_calls"):
        i = edit[2] % len(defs)
        d = defs[i]
        if op == "del_def":
            del defs[i]
        elif op == "rename":
            defs[i] = (d[0], edit[3]) + d[2:]
        elif d[0] == "def":
            defs[i] = (d[0], d[1], edit[3]) + d[3:]
        else:
            methods = list(d[3]) or [("m", ())]
            methods[0] = (methods[0][0], edit[3])
            defs[i] = d[:3] + (tuple(methods),)
    elif op == "set_base":
        classes = [i for i, d in enumerate(defs) if d[0] == "class"]
        if classes:
            i = classes[edit[2] % len(classes)]
            defs[i] = defs[i][:2] + (edit[3],) + defs[i][3:]
    mod["defs"], mod["imports"] = tuple(defs), tuple(imports)
    return tree


def materialize(root: str, tree: dict) -> None:
    """Make the files under root exactly the rendered tree (rewriting only changed files)."""
    wanted = {p: render(p, m).encode("utf-8") for p, m in tree.items()}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel not in wanted:
                os.remove(os.path.join(dirpath, name))
    for rel, data in wanted.items():
        full = os.path.join(root, rel)
        try:
            with open(full, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def fresh_dump(root: str, directory: str) -> dict:
    path = os.path.join(directory, "fresh.cgdb")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    with Store.open(path) as fresh:
        index_tree(fresh, root, jobs=1)
        return dump(fresh)


# SQLite syncs its WAL at checkpoints: on tmpfs the property test runs much faster.
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def check_incremental_sequence(tree: dict, edits: list) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        root = os.path.join(tmp, "src")
        os.makedirs(root)
        materialize(root, tree)
        with Store.open(os.path.join(tmp, "inc.cgdb")) as store:
            index_tree(store, root, jobs=1)
            for step, edit in enumerate(edits):
                tree = apply_edit(tree, edit)
                materialize(root, tree)
                index_tree(store, root, jobs=1)
                diff = dump_diff(dump(store), fresh_dump(root, tmp))
                assert not diff, f"after edit {step} {edit!r}:\n{diff}\n" + "\n".join(
                    f"--- {p}\n{render(p, m)}" for p, m in sorted(tree.items()))
            assert store.check().ok


@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tree=tree_s, edits=st.lists(edit_s, min_size=1, max_size=8))
def test_incremental_runs_equal_full_rebuild(tree, edits):
    """After every edit, the store updated incrementally equals a store built from
    scratch from the same files: nodes, edges, refs (with hops), aliases, files.

    (Checked against mutations of the incremental path: ignoring ref_hops in
    affected_refs, not deleting superseded edges, or resolving bases after the
    other refs are each found within ~10 examples.)"""
    check_incremental_sequence(tree, edits)


# --------------------------------------------------------------------------- #
# 4. robustness of scan and index

LATIN1_BYTES = b"x = 1\ny = 2\ns = '\xff'\n"
BINARY_BYTES = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))


def make_odd_tree(tmp_path) -> tuple[str, str]:
    root = os.path.join(str(tmp_path), "root")
    outside = os.path.join(str(tmp_path), "outside")
    pkg = os.path.join(root, "pkg")
    os.makedirs(pkg)
    os.makedirs(outside)
    files = {
        "pkg/__init__.py": b"from .ok import f\n",
        "pkg/ok.py": b"def f():\n    return 1\n",
        "pkg/latin.py": LATIN1_BYTES,  # not UTF-8, no coding declaration
        "pkg/first_line.py": b"\xff\xfe = 1\n",  # the same on the first line
        "pkg/declared.py": b"# -*- coding: latin-1 -*-\ns = '\xff'\n",  # declared: fine
        "pkg/blob.py": BINARY_BYTES,  # a binary file named .py
        "pkg/nul.py": b"x = 1\x00\x00\x00\n",  # NUL bytes in otherwise valid text
        "pkg/empty.py": b"",
        "pkg/__pycache__/cached.py": b"def cached(): pass\n",  # excluded directory
        "pkg/.hidden/h.py": b"def h(): pass\n",  # excluded directory
    }
    for rel, data in files.items():
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    with open(os.path.join(outside, "secret.py"), "w") as f:
        f.write("def secret():\n    pass\n")
    os.symlink(pkg, os.path.join(pkg, "loop"))  # directory symlink loop
    os.symlink(outside, os.path.join(pkg, "elsewhere"))  # directory symlink out of the root
    os.symlink(os.path.join(outside, "secret.py"), os.path.join(pkg, "leak.py"))
    os.symlink(os.path.join(pkg, "ok.py"), os.path.join(pkg, "alias.py"))  # inside: kept
    os.symlink(os.path.join(pkg, "missing.py"), os.path.join(pkg, "dangling.py"))
    os.symlink(os.path.join(pkg, "cycle_b.py"), os.path.join(pkg, "cycle_a.py"))
    os.symlink(os.path.join(pkg, "cycle_a.py"), os.path.join(pkg, "cycle_b.py"))
    # a file name that is not valid UTF-8
    with open(os.path.join(os.fsencode(pkg), b"caf\xe9.py"), "wb") as f:
        f.write(b"x = 1\n")
    return root, outside


EXPECTED_ODD_FAILED = (
    ("pkg/blob.py", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80 in position 136:"
                    " invalid start byte (line 2)"),
    ("pkg/first_line.py", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0:"
                          " invalid start byte (line 1)"),
    ("pkg/latin.py", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 17:"
                     " invalid start byte (line 3)"),
    ("pkg/nul.py", "SyntaxError: source code string cannot contain null bytes"),
)
EXPECTED_ODD_SKIPPED = (
    ("pkg/caf\ufffd.py", "path is not valid UTF-8"),
    ("pkg/cycle_a.py", "cannot stat: Too many levels of symbolic links"),
    ("pkg/cycle_b.py", "cannot stat: Too many levels of symbolic links"),
    ("pkg/dangling.py", "cannot stat: No such file or directory"),
    ("pkg/leak.py", "symlink leaves the indexed root"),
)
EXPECTED_ODD_FILES = {"pkg/__init__.py", "pkg/ok.py", "pkg/latin.py", "pkg/first_line.py",
                      "pkg/declared.py", "pkg/blob.py", "pkg/nul.py", "pkg/empty.py",
                      "pkg/alias.py"}


def test_scan_of_odd_tree(tmp_path):
    root, _ = make_odd_tree(tmp_path)
    found, skipped = build.scan(root)
    assert found == sorted(EXPECTED_ODD_FILES)
    assert sorted(skipped) == list(EXPECTED_ODD_SKIPPED)


def test_index_odd_tree(tmp_path):
    root, _ = make_odd_tree(tmp_path)
    with new_store(tmp_path) as store:
        report = index_tree(store, root, jobs=1)
        assert report.failed == EXPECTED_ODD_FAILED
        assert report.skipped == EXPECTED_ODD_SKIPPED
        assert report.files_seen == len(EXPECTED_ODD_FILES)
        files = {f.path: f for f in store.files()}
        assert set(files) == EXPECTED_ODD_FILES
        for path, reason in EXPECTED_ODD_FAILED:
            assert files[path].parse_error == reason
            assert files[path].node_count == 0
            assert store.find(file=path) == []
        # nothing from excluded, looping or outside directories
        assert not any(n.file.startswith(("pkg/loop/", "pkg/elsewhere/", "pkg/__pycache__/",
                                          "pkg/.hidden/")) for n in store.iter_nodes())
        assert store.find("secret") == []
        # the empty file is a module and nothing else
        empty = [(n.kind, n.qualname, n.start_line, n.start_col, n.end_line, n.end_col)
                 for n in store.find(file="pkg/empty.py")]
        assert empty == [(NodeKind.MODULE, "pkg.empty", 1, 0, 1, 0)]
        assert files["pkg/empty.py"].parse_error is None and files["pkg/empty.py"].size == 0
        # the coding declaration is honoured
        assert {(n.kind, n.qualname) for n in store.find(file="pkg/declared.py")} == {
            (NodeKind.MODULE, "pkg.declared"), (NodeKind.VARIABLE, "pkg.declared.s")}
        # the symlink inside the root is indexed under its own path
        assert [n.qualname for n in store.find("f", kind="function")] == ["pkg.alias.f", "pkg.ok.f"]
        assert store.check().ok
        # and a second run over the same tree changes nothing
        before = dump(store)
        again = index_tree(store, root, jobs=1)
        assert (again.parsed, again.unchanged) == (0, len(EXPECTED_ODD_FILES))
        assert again.failed == EXPECTED_ODD_FAILED and again.skipped == EXPECTED_ODD_SKIPPED
        assert_same(dump(store), before)
        assert store.check().ok


def test_fixing_an_undecodable_file(tmp_path):
    root, _ = make_odd_tree(tmp_path)
    with new_store(tmp_path) as store:
        index_tree(store, root, jobs=1)
        write(root, "pkg/latin.py", "# -*- coding: utf-8 -*-\ns = 'ÿ'\n\n\ndef g():\n    pass\n")
        report = index_tree(store, root, jobs=1)
        assert (report.parsed, report.modified) == (1, 1)
        assert "pkg/latin.py" not in dict(report.failed)
        assert [n.qualname for n in store.find(file="pkg/latin.py", kind="function")] == ["pkg.latin.g"]
        assert store.check().ok
        assert_same(dump(store), full_dump_of(root, tmp_path))


def test_size_limit_skips_and_later_removes_a_file(tmp_path):
    root = os.path.join(str(tmp_path), "root")
    write(root, "pkg/__init__.py", "from .big import f\n\n\ndef use():\n    return f()\n")
    write(root, "pkg/big.py", "def f():\n    return 1\n")  # 22 bytes; __init__.py: 47
    with new_store(tmp_path) as store:
        report = index_tree(store, root, jobs=1, max_file_bytes=50)
        assert report.skipped == ()
        use = store.find(qualname="pkg.use")[0]
        assert [n.qualname for n in store.callees(use.id)] == ["pkg.big.f"]
        write(root, "pkg/big.py", "def f():\n    return 1\n\n\nX = '" + "x" * 40 + "'\n")
        report = index_tree(store, root, jobs=1, max_file_bytes=50)
        assert report.skipped == (("pkg/big.py", "larger than 50 bytes (71)"),)
        assert (report.deleted, report.files_seen) == (1, 1)
        assert store.find(file="pkg/big.py") == [] and store.callees(use.id) == []
        assert store.check().ok


def test_index_tree_argument_errors(tmp_path):
    from codegraph_store.errors import IndexingError, InvalidArgumentError
    root = os.path.join(str(tmp_path), "root")
    write(root, "m.py", "x = 1\n")
    with new_store(tmp_path) as store:
        with pytest.raises(IndexingError):
            index_tree(store, os.path.join(root, "m.py"), jobs=1)
        with pytest.raises(IndexingError):
            index_tree(store, os.path.join(root, "missing"), jobs=1)
        for jobs in (0, -1, True, 1.5, "2"):
            with pytest.raises(InvalidArgumentError):
                index_tree(store, root, jobs=jobs)
        with pytest.raises(InvalidArgumentError):
            index_tree(store, 42, jobs=1)
        assert store.files() == []  # nothing was written by the refused calls
        report = index_tree(store, root, jobs=1)
        assert report.files_seen == 1 and report.failed == ()


def test_inherited_member_follows_declaration_order_of_bases(tmp_path):
    root = os.path.join(str(tmp_path), "root")
    write(root, "pkg/m.py", textwrap.dedent("""\
        class Zeta:
            def m(self):
                pass


        class Alpha:
            def m(self):
                pass


        class D(Zeta, Alpha):
            def run(self):
                return self.m()
        """))
    with new_store(tmp_path) as store:
        index_tree(store, root, jobs=1)
        run = store.find(qualname="pkg.m.D.run")[0]
        # Python: D.__mro__ == (D, Zeta, Alpha, object), so self.m is Zeta.m
        assert [n.qualname for n in store.callees(run.id)] == ["pkg.m.Zeta.m"]


def big_tree(n_modules: int, defs_per_module: int, seed: int) -> dict[str, str]:
    """A deterministic tree of many modules that import and call one another."""
    import random
    rng = random.Random(seed)
    mods = [f"big/m{i}" for i in range(n_modules)]
    out = {"big/__init__.py": "from .m0 import f0\nfrom .m1 import C1 as K\n"}
    for i, mod in enumerate(mods):
        lines = []
        others = rng.sample(range(n_modules), 3)
        for j, o in enumerate(others):
            lines.append(f"from .m{o} import f{rng.randrange(defs_per_module)} as g{j}")
            lines.append(f"import big.m{o} as M{j}")
        lines.append("from big import f0, K")
        for k in range(defs_per_module):
            callees = [rng.choice([f"g{rng.randrange(3)}", f"M{rng.randrange(3)}.f{rng.randrange(defs_per_module)}",
                                   f"f{rng.randrange(defs_per_module)}", "f0", "K",
                                   f"M{rng.randrange(3)}.C{rng.randrange(defs_per_module)}.m"])
                       for _ in range(3)]
            lines.append(f"def f{k}(x):")
            lines += [f"    {c}(x)" for c in callees]
            base = rng.choice(["", "(K)", f"(M{rng.randrange(3)}.C{rng.randrange(defs_per_module)})"])
            lines.append(f"class C{k}{base}:")
            lines.append("    def m(self):")
            lines.append(f"        return self.m() or f{rng.randrange(defs_per_module)}(self)")
        out[mod + ".py"] = "\n".join(lines) + "\n"
    return out


def test_large_tree_bulk_incremental_and_workers_agree(tmp_path, monkeypatch):
    """More files than INLINE_PARSE_LIMIT and more rows than the write buffer:
    the bulk path, the incremental path (everything added to a non-empty store)
    and the worker-process path must build the same store."""
    tree = big_tree(24, 25, seed=5)
    root = os.path.join(str(tmp_path), "root")
    for rel, text in tree.items():
        write(root, rel, text)
    with new_store(tmp_path, "bulk.cgdb") as bulk:
        report = index_tree(bulk, root, jobs=1)
        assert report.full_build and report.failed == () and report.files_seen == 25
        assert report.nodes > 2000 and report.edges > 4000
        want = dump(bulk)
    with new_store(tmp_path, "workers.cgdb") as workers:
        index_tree(workers, root, jobs=2)
        assert_same(dump(workers), want)
    # incremental: start from one file, then add the other 24 in one run
    root2 = os.path.join(str(tmp_path), "root2")
    write(root2, "big/__init__.py", tree["big/__init__.py"])
    with new_store(tmp_path, "inc.cgdb") as inc:
        index_tree(inc, root2, jobs=1)
        for rel, text in tree.items():
            write(root2, rel, text)
        report = index_tree(inc, root2, jobs=2)
        assert (report.full_build, report.added, report.unchanged) == (False, 24, 1)
        assert_same(dump(inc), want)
        assert inc.check().ok


def test_dot_py_file_does_not_break_the_store(tmp_path):
    root = os.path.join(str(tmp_path), "root")
    write(root, ".py", "def f():\n    pass\n")
    write(root, "ok.py", "x = 1\n")
    with new_store(tmp_path) as store:
        index_tree(store, root, jobs=1, exclude=("__pycache__",))
        assert all(n.name.strip() and n.qualname.strip() for n in store.iter_nodes())
        assert store.check().ok


def test_resolution_does_not_depend_on_which_path_ran(tmp_path):
    from codegraph_store import Node
    root = os.path.join(str(tmp_path), "root")
    write(root, "pkg/a.py", "import os\n\n\ndef f():\n    return os.path.join('a')\n")
    write(root, "pkg/b.py", "x = 1\n")
    with new_store(tmp_path) as store:
        store.add_nodes([Node.new("function", "join", "os.path.join")])
        index_tree(store, root, jobs=1)
        f = store.find(qualname="pkg.a.f")[0]
        before = [n.qualname for n in store.callees(f.id)]
        with open(os.path.join(root, "pkg", "a.py"), "a") as fh:
            fh.write("\n")  # an edit that changes nothing f refers to
        index_tree(store, root, jobs=1)
        assert [n.qualname for n in store.callees(f.id)] == before


class _Stop(Exception):
    pass


def _stop_at(phase):
    def progress(p, done, total):
        if p == phase:
            raise _Stop(p)
    return progress


def test_interrupted_runs_write_nothing(tmp_path):
    root = copy_fixture(tmp_path)
    with new_store(tmp_path) as store:
        # a full build that fails before it commits leaves an empty store ...
        with pytest.raises(_Stop):
            index_tree(store, root, jobs=1, progress=_stop_at("resolve"))
        assert store.files() == [] and list(store.iter_nodes()) == []
        assert store.check().ok
        # ... which the next run builds completely
        index_tree(store, root, jobs=1)
        built = dump(store)
        assert_same(built, full_dump_of(root, tmp_path))
        # an incremental run that fails leaves the previous state
        write(root, "samplepkg/util.py", "def slugify(text):\n    return text\n")
        os.remove(os.path.join(root, "samplepkg", "relay.py"))
        with pytest.raises(_Stop):
            index_tree(store, root, jobs=1, progress=_stop_at("resolve"))
        assert_same(dump(store), built)
        assert store.check().ok
        report = index_tree(store, root, jobs=1)
        assert (report.modified, report.deleted) == (1, 1)
        assert_same(dump(store), full_dump_of(root, tmp_path))

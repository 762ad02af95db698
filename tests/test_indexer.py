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


def open_store(directory, name="g.cgdb") -> Store:
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
    store = open_store(tmp_path, name)
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


# --------------------------------------------------------------------------- #
# 2. incremental behaviour


def full_dump_of(root, directory) -> dict:
    with tempfile.TemporaryDirectory(dir=str(directory)) as d:
        with open_store(d, "fresh.cgdb") as fresh:
            index_tree(fresh, root, jobs=1)
            return dump(fresh)


def test_rerun_without_changes_changes_nothing(indexed):
    store, _, root = indexed
    before = dump(store)
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.unchanged, report.added, report.modified, report.deleted) == \
        (0, 8, 0, 0, 0)
    assert report.full_build is False
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
        callers - {P + "base.Base.check"}
    assert store.callees(g.one(P + "base.Base.check").id) == []
    assert_same(dump(store), full_dump_of(root, tmp_path))
    write(root, "samplepkg/base.py", src)
    index_tree(store, root, jobs=1)
    assert_same(dump(store), original)


def test_shifted_lines_keep_ids_and_edges(indexed):
    store, _, root = indexed
    before_nodes = {n.id: n for n in store.iter_nodes()}
    before_edges = {(e.src, int(e.kind), e.dst) for e in store.iter_edges()}
    path = os.path.join(root, "samplepkg", "core.py")
    with open(path) as f:
        src = f.read()
    write(root, "samplepkg/core.py", "\n\n\n" + src)
    index_tree(store, root, jobs=1)
    after_nodes = {n.id: n for n in store.iter_nodes()}
    assert after_nodes.keys() == before_nodes.keys()
    for i, n in after_nodes.items():
        old = before_nodes[i]
        if n.kind == NodeKind.MODULE and n.file == "samplepkg/core.py":
            assert (n.start_line, n.end_line) == (1, old.end_line + 3)
        elif n.file == "samplepkg/core.py":
            assert (n.start_line, n.end_line) == (old.start_line + 3, old.end_line + 3)
            assert (n.qualname, n.kind, n.start_col, n.end_col) == \
                (old.qualname, old.kind, old.start_col, old.end_col)
        else:
            assert n == before_nodes[i]
    assert {(e.src, int(e.kind), e.dst) for e in store.iter_edges()} == before_edges


def test_delete_file_removes_nodes_and_incoming_edges(indexed, tmp_path):
    store, _, root = indexed
    os.remove(os.path.join(root, "samplepkg", "util.py"))
    report = index_tree(store, root, jobs=1)
    assert (report.parsed, report.deleted, report.unchanged, report.files_seen) == (0, 1, 7, 7)
    g = Graph(store)
    assert store.find(file="samplepkg/util.py") == []
    assert "samplepkg/util.py" not in {f.path for f in store.files()}
    assert all(not n.qualname.startswith(P + "util") for n in g.by_id.values())
    assert g.edge_set(CALLS) == {e for e in EXPECTED_CALLS if not e[1].startswith(P + "util")}
    assert g.edge_set(IMPORTS) == EXPECTED_IMPORTS - {(P + "relay", P + "util"),
                                                       (P + "sub.tools", P + "util")}
    assert g.refs(unresolved_only=True) == EXPECTED_UNRESOLVED | {
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

"""Tests of codegraph_store.indexer.parse: one Python file -> graph records."""

from __future__ import annotations

import inspect
import json
import pickle
import sysconfig
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegraph_store import codec
from codegraph_store.indexer.parse import ParsedFile, module_name_for, parse_source
from codegraph_store.kinds import EdgeKind, NodeKind
from codegraph_store.model import stable_node_id

MODULE, CLASS, FUNCTION, METHOD = (int(NodeKind.MODULE), int(NodeKind.CLASS),
                                   int(NodeKind.FUNCTION), int(NodeKind.METHOD))
VARIABLE, IMPORT, ATTRIBUTE = int(NodeKind.VARIABLE), int(NodeKind.IMPORT), int(NodeKind.ATTRIBUTE)
CONTAINS, CALLS, IMPORTS = int(EdgeKind.CONTAINS), int(EdgeKind.CALLS), int(EdgeKind.IMPORTS)
INHERITS, REFERENCES = int(EdgeKind.INHERITS), int(EdgeKind.REFERENCES)


def parse(code: str | bytes, path: str = "pkg/mod.py", **kwargs) -> ParsedFile:
    source = code if isinstance(code, bytes) else textwrap.dedent(code).encode("utf-8")
    result = parse_source(path, source, **kwargs)
    assert result.error is None, result.error
    check_invariants(path, result)
    return result


def check_invariants(path: str, r: ParsedFile) -> None:
    """What holds for every result: ids, containment, refs and aliases are consistent."""
    assert isinstance(r, ParsedFile)
    assert r.module == module_name_for(path)
    if r.error is not None:
        assert isinstance(r.error, str) and "\n" not in r.error and r.error
        assert r.nodes == r.edges == r.refs == r.aliases == []
        return
    ids = [n[0] for n in r.nodes]
    assert len(ids) == len(set(ids)), "node ids must be unique within a file"
    by_id = {n[0]: n for n in r.nodes}
    modules = [n for n in r.nodes if n[1] == MODULE]
    assert len(modules) == 1 and r.nodes[0] is modules[0]
    mod = modules[0]
    assert mod[3] == r.module and mod[4] == 1 and mod[6] >= 1
    # Ids are stable_node_id(path, qualname, discriminator), discriminators 0, 1, ...
    seen: dict[str, int] = {}
    for n in r.nodes:
        disc = seen.get(n[3], 0)
        seen[n[3]] = disc + 1
        assert n[0] == stable_node_id(path, n[3], disc)
        assert n[1] in {int(k) for k in NodeKind}
        assert n[2] and n[3].endswith(n[2]) or n[1] == MODULE
        assert 1 <= n[4] <= n[6] <= mod[6]
        assert n[8] is None or isinstance(codec.decode(n[8]), dict)
    # Every node but the module has exactly one container, which is a node here.
    containers: dict[int, int] = {}
    for src, kind, dst in r.edges:
        assert kind == CONTAINS
        assert src in by_id and dst in by_id
        assert dst not in containers
        containers[dst] = src
    assert set(containers) == set(ids) - {mod[0]}
    # The containment tree is a tree rooted at the module (no cycles).
    for node_id in ids:
        hops = 0
        while node_id != mod[0]:
            node_id = containers[node_id]
            hops += 1
            assert hops <= len(ids)
    assert len(r.refs) == len(set(r.refs))
    for src, kind, target in r.refs:
        assert src in by_id and isinstance(target, str) and target
        assert kind in (CALLS, IMPORTS, INHERITS, REFERENCES)
    import_ids = {n[0] for n in r.nodes if n[1] == IMPORT}
    assert [a[0] for a in r.aliases] == [n[0] for n in r.nodes if n[1] == IMPORT]
    assert {a[0] for a in r.aliases} == import_ids


def nodes(r: ParsedFile) -> list[tuple]:
    """(kind, qualname, start_line, start_col, end_line, end_col) of every node, in order."""
    return [(n[1], n[3], n[4], n[5], n[6], n[7]) for n in r.nodes]


def node(r: ParsedFile, qualname: str, disc: int = 0) -> tuple:
    found = [n for n in r.nodes if n[3] == qualname]
    return found[disc]


def meta(r: ParsedFile, qualname: str, disc: int = 0):
    return codec.decode(node(r, qualname, disc)[8])


def refs(r: ParsedFile, kind: int | None = None) -> list[tuple[str, int, str]]:
    """Refs as (source qualname, kind, target); disambiguated qualnames get '#n'."""
    names = {}
    seen: dict[str, int] = {}
    for n in r.nodes:
        d = seen.get(n[3], 0)
        seen[n[3]] = d + 1
        names[n[0]] = n[3] if d == 0 else f"{n[3]}#{d}"
    return [(names[s], k, t) for s, k, t in r.refs if kind is None or k == kind]


def targets(r: ParsedFile, kind: int, src: str | None = None) -> list[str]:
    return [t for s, k, t in refs(r, kind) if src is None or s == src]


def parent_of(r: ParsedFile, node_id: int) -> int:
    [src] = [s for s, _k, d in r.edges if d == node_id]
    return src


# --------------------------------------------------------------------------- #
# module names


@pytest.mark.parametrize("path, name", [
    ("json/decoder.py", "json.decoder"),
    ("json/__init__.py", "json"),
    ("setup.py", "setup"),
    ("a/b/c.py", "a.b.c"),
    ("a/b/c.pyi", "a.b.c.pyi"),
    ("my-pkg/2to3.py", "my-pkg.2to3"),
    ("__init__.py", "__init__"),
    ("pkg/__init__/x.py", "pkg.__init__.x"),
])
def test_module_name_for(path, name):
    assert module_name_for(path) == name


# --------------------------------------------------------------------------- #
# nodes


def test_class_with_methods_kinds_qualnames_and_positions():
    r = parse('''\
        """Decoder module."""

        class JSONDecoder(object):
            """Decode."""

            def __init__(self, strict=True):
                self.strict = strict

            async def decode(self, s):
                return s
        ''', path="json/decoder.py")
    assert nodes(r) == [
        (MODULE, "json.decoder", 1, 0, 10, 16),
        (CLASS, "json.decoder.JSONDecoder", 3, 0, 10, 16),
        (METHOD, "json.decoder.JSONDecoder.__init__", 6, 4, 7, 28),
        (METHOD, "json.decoder.JSONDecoder.decode", 9, 4, 10, 16),
        (ATTRIBUTE, "json.decoder.JSONDecoder.strict", 7, 8, 7, 28),
    ]
    assert [n[2] for n in r.nodes] == ["decoder", "JSONDecoder", "__init__", "decode", "strict"]
    assert meta(r, "json.decoder") == {"docstring": "Decoder module."}
    cls, init, decode, strict = (node(r, q)[0] for q in (
        "json.decoder.JSONDecoder", "json.decoder.JSONDecoder.__init__",
        "json.decoder.JSONDecoder.decode", "json.decoder.JSONDecoder.strict"))
    mod = node(r, "json.decoder")[0]
    assert parent_of(r, cls) == mod
    assert parent_of(r, init) == parent_of(r, decode) == parent_of(r, strict) == cls
    assert meta(r, "json.decoder.JSONDecoder.decode") == {
        "signature": "(self, s)", "async": True,
        "source": "    async def decode(self, s):\n        return s"}
    assert meta(r, "json.decoder.JSONDecoder") == {
        "bases": ["object"], "docstring": "Decode.",
        "source": "\n".join(textwrap.dedent('''\
            class JSONDecoder(object):
                """Decode."""

                def __init__(self, strict=True):
                    self.strict = strict

                async def decode(self, s):
                    return s''').split("\n"))}
    assert meta(r, "json.decoder.JSONDecoder.strict") == {"source": "self.strict = strict"}


def test_empty_file_and_module_without_docstring():
    r = parse(b"")
    assert nodes(r) == [(MODULE, "pkg.mod", 1, 0, 1, 0)]
    assert r.nodes[0][2] == "mod" and r.nodes[0][8] is None
    assert r.edges == r.refs == r.aliases == []
    r = parse(b"x = 1\n\n\n")
    assert nodes(r)[0] == (MODULE, "pkg.mod", 1, 0, 3, 0)
    r = parse(b"x = 'caf\xc3\xa9'")  # no final newline; columns are UTF-8 bytes
    assert nodes(r)[0] == (MODULE, "pkg.mod", 1, 0, 1, 11)


def test_nested_functions_are_functions_without_locals_marker():
    r = parse('''\
        def outer():
            def inner():
                def innermost():
                    pass
            class Local:
                def m(self):
                    pass
        ''')
    assert [(k, q) for k, q, *_ in nodes(r)] == [
        (MODULE, "pkg.mod"),
        (FUNCTION, "pkg.mod.outer"),
        (FUNCTION, "pkg.mod.outer.inner"),
        (FUNCTION, "pkg.mod.outer.inner.innermost"),
        (CLASS, "pkg.mod.outer.Local"),
        (METHOD, "pkg.mod.outer.Local.m"),
    ]
    assert parent_of(r, node(r, "pkg.mod.outer.inner.innermost")[0]) == node(r, "pkg.mod.outer.inner")[0]
    assert parent_of(r, node(r, "pkg.mod.outer.Local")[0]) == node(r, "pkg.mod.outer")[0]


def test_property_getter_and_setter_get_discriminators():
    r = parse('''\
        class C:
            @property
            def x(self):
                return self._x

            @x.setter
            def x(self, value):
                self._x = value

        if True:
            def f(): pass
        else:
            def f(): pass
        ''')
    xs = [n for n in r.nodes if n[3] == "pkg.mod.C.x"]
    assert [(n[1], n[4]) for n in xs] == [(METHOD, 3), (METHOD, 7)]
    assert [n[0] for n in xs] == [stable_node_id("pkg/mod.py", "pkg.mod.C.x", 0),
                                  stable_node_id("pkg/mod.py", "pkg.mod.C.x", 1)]
    assert meta(r, "pkg.mod.C.x", 0)["decorators"] == ["property"]
    assert meta(r, "pkg.mod.C.x", 1)["decorators"] == ["x.setter"]
    assert meta(r, "pkg.mod.C.x", 1)["source"] == (
        "    @x.setter\n    def x(self, value):\n        self._x = value")
    fs = [n for n in r.nodes if n[3] == "pkg.mod.f"]
    assert [(n[1], n[4]) for n in fs] == [(FUNCTION, 11), (FUNCTION, 13)]
    # self._x is assigned in a method: one attribute node, the first occurrence.
    assert [n[4] for n in r.nodes if n[3] == "pkg.mod.C._x"] == [8]


def test_module_variables_unpacking_and_first_binding_only():
    r = parse('''\
        A = 1
        B, (C, *D) = 2, (3, 4, 5)
        [E, F] = G = 6, 7
        A = 2
        A += 3
        H: int = 8
        I: str
        obj.attr = 9
        seq[0] = 10
        if A:
            J = 11
        try:
            K = 12
        except ImportError:
            K = None
        for L in range(3):
            M = L
        with open(A) as N:
            O = 1
        def P(): pass
        P = 13
        ''')
    variables = [(n[2], n[4], n[6]) for n in r.nodes if n[1] == VARIABLE]
    assert variables == [("A", 1, 1), ("B", 2, 2), ("C", 2, 2), ("D", 2, 2), ("E", 3, 3),
                         ("F", 3, 3), ("G", 3, 3), ("H", 6, 6), ("I", 7, 7), ("J", 11, 11),
                         ("K", 13, 13), ("M", 17, 17), ("O", 19, 19)]
    assert meta(r, "pkg.mod.B") == {"source": "B, (C, *D) = 2, (3, 4, 5)"}
    assert meta(r, "pkg.mod.H") == {"source": "H: int = 8", "annotation": "int"}
    assert meta(r, "pkg.mod.I") == {"source": "I: str", "annotation": "str"}
    assert [n[1] for n in r.nodes if n[3] == "pkg.mod.P"] == [FUNCTION]
    # Module variables are contained by the module, even inside if/try/for/with.
    mod = r.nodes[0][0]
    assert all(parent_of(r, n[0]) == mod for n in r.nodes if n[1] == VARIABLE)


def test_variable_source_is_the_statement_and_is_truncated():
    r = parse("x = 1; y = [\n    1,\n    2]\nz = '" + "a" * 1000 + "'\n")
    assert meta(r, "pkg.mod.x") == {"source": "x = 1"}
    assert meta(r, "pkg.mod.y") == {"source": "y = [\n    1,\n    2]"}
    assert nodes(r)[2] == (VARIABLE, "pkg.mod.y", 1, 7, 3, 6)
    z = meta(r, "pkg.mod.z")["source"]
    assert len(z) == 500 and z.startswith("z = 'aaa")


def test_class_attributes_and_self_attributes():
    r = parse('''\
        class Point:
            dims = 2
            x: int
            y: int = 0
            if dims:
                z = 0

            def __init__(self, x):
                self.x = x                 # already an attribute
                self.label: str = "p"
                self.a, self.b = 1, 2
                self.cache = {}
                self.cache = None          # first occurrence only
                self.norm = 0              # a method of that name exists
                other.c = 3                # not self
                if x:
                    self.d = 4

            def norm(self):
                def helper():
                    self.e = 5             # nested function: not a method body
                return self.cache

            @staticmethod
            def build(self):
                self.f = 6                 # a staticmethod has no self

            @classmethod
            def make(cls):
                cls.g = 7                  # class attribute through cls
        ''')
    attrs = [(n[2], n[4]) for n in r.nodes if n[1] == ATTRIBUTE]
    assert attrs == [("dims", 2), ("x", 3), ("y", 4), ("z", 6),
                     ("label", 10), ("a", 11), ("b", 11), ("cache", 12), ("d", 17), ("g", 30)]
    cls = node(r, "pkg.mod.Point")[0]
    assert all(parent_of(r, n[0]) == cls for n in r.nodes if n[1] == ATTRIBUTE)
    assert meta(r, "pkg.mod.Point.label") == {"source": 'self.label: str = "p"', "annotation": "str"}
    assert meta(r, "pkg.mod.Point.cache") == {"source": "self.cache = {}"}
    assert meta(r, "pkg.mod.Point.y") == {"source": "y: int = 0", "annotation": "int"}
    assert [n[1] for n in r.nodes if n[3] == "pkg.mod.Point.norm"] == [METHOD]


def test_function_locals_are_not_nodes():
    r = parse('''\
        def f(a):
            b = a
            for c in b:
                d = c
            return d
        ''')
    assert [n[1] for n in r.nodes] == [MODULE, FUNCTION]


# --------------------------------------------------------------------------- #
# imports


def test_import_forms_nodes_aliases_and_imports_refs():
    r = parse('''\
        import os
        import os.path
        import xml.etree.ElementTree as ET
        from collections import OrderedDict, defaultdict as dd
        from . import sibling
        from .sibling import thing as t
        from .. import top
        from ..other.deep import name
        from __future__ import annotations

        def f():
            import json.decoder
            from . import lazy

        class C:
            from typing import Any
        ''', path="pkg/sub/mod.py")
    imports = [(n[3], n[4]) for n in r.nodes if n[1] == IMPORT]
    assert imports == [
        ("pkg.sub.mod.os", 1), ("pkg.sub.mod.os", 2), ("pkg.sub.mod.ET", 3),
        ("pkg.sub.mod.OrderedDict", 4), ("pkg.sub.mod.dd", 4), ("pkg.sub.mod.sibling", 5),
        ("pkg.sub.mod.t", 6), ("pkg.sub.mod.top", 7), ("pkg.sub.mod.name", 8),
        ("pkg.sub.mod.annotations", 9), ("pkg.sub.mod.f.json", 12), ("pkg.sub.mod.f.lazy", 13),
        ("pkg.sub.mod.C.Any", 16)]
    assert [a[1] for a in r.aliases] == [
        "os", "os", "xml.etree.ElementTree", "collections.OrderedDict",
        "collections.defaultdict", "pkg.sub.sibling", "pkg.sub.sibling.thing", "pkg.top",
        "pkg.other.deep.name", "__future__.annotations", "json", "pkg.sub.lazy", "typing.Any"]
    assert [n[2] for n in r.nodes if n[1] == IMPORT][:5] == ["os", "os", "ET", "OrderedDict", "dd"]
    assert meta(r, "pkg.sub.mod.ET") == {"target": "xml.etree.ElementTree"}
    # Imports are contained by the scope they appear in ...
    assert parent_of(r, node(r, "pkg.sub.mod.f.json")[0]) == node(r, "pkg.sub.mod.f")[0]
    assert parent_of(r, node(r, "pkg.sub.mod.C.Any")[0]) == node(r, "pkg.sub.mod.C")[0]
    # ... but IMPORTS always come from the module node.
    imports_refs = refs(r, IMPORTS)
    assert {s for s, _k, _t in imports_refs} == {"pkg.sub.mod"}
    assert [t for _s, _k, t in imports_refs] == [
        "os", "os.path", "xml.etree.ElementTree", "collections", "collections.OrderedDict",
        "collections.defaultdict", "pkg.sub", "pkg.sub.sibling", "pkg.sub.sibling.thing",
        "pkg", "pkg.top", "pkg.other.deep", "pkg.other.deep.name", "__future__",
        "__future__.annotations", "json.decoder", "pkg.sub.lazy", "typing", "typing.Any"]


def test_relative_imports_in_a_package_init():
    r = parse('''\
        from . import decoder
        from .scanner import make_scanner
        from .. import parent
        ''', path="pkg/json/__init__.py")
    assert r.module == "pkg.json"
    assert [a[1] for a in r.aliases] == ["pkg.json.decoder", "pkg.json.scanner.make_scanner",
                                         "pkg.parent"]


def test_relative_imports_above_the_top_keep_their_dots():
    r = parse('''\
        from .. import x
        from ...a.b import y
        from . import z
        ''', path="pkg/mod.py")
    assert [a[1] for a in r.aliases] == ["..x", "...a.b.y", "pkg.z"]
    assert targets(r, IMPORTS) == ["..x", "...a.b", "...a.b.y", "pkg", "pkg.z"]
    r = parse("from . import x\n", path="top.py")
    assert [a[1] for a in r.aliases] == [".x"]


def test_star_import_creates_no_node_and_is_the_fallback_for_unknown_names():
    r = parse('''\
        from os.path import *
        from json import *

        def f():
            join("a", "b")         # unknown -> first star module
            len("abc")             # a builtin, never the star module
            local = 1
            local()
        ''')
    assert [n[1] for n in r.nodes] == [MODULE, FUNCTION]
    assert r.aliases == []
    assert targets(r, IMPORTS) == ["os.path", "json"]
    assert targets(r, CALLS) == ["os.path.join"]


def test_relative_star_import_is_made_absolute():
    r = parse("from .helpers import *\nfoo()\n", path="pkg/sub/mod.py")
    assert targets(r, CALLS) == ["pkg.sub.helpers.foo"]


# --------------------------------------------------------------------------- #
# references


CALLS_SOURCE = '''\
import os.path
import numpy as np
from json import loads as parse_json
from .helpers import tool

CONSTANT = tool()

def helper(x):
    return x

class Base:
    def method(self):
        pass

class Widget(Base):
    size = helper(1)

    def __init__(self, parent):
        super().__init__()
        self.method()
        self.child.grow()
        parent.attach()
        helper(len(parent))
        os.path.join("a", "b")
        np.array([1]).sum()
        parse_json("{}")
        Widget.create()
        size()

    @classmethod
    def create(cls):
        return cls()

    @staticmethod
    def util(self):
        self.method()

def outer():
    def inner():
        return 1
    def helper():
        return 2
    inner()
    helper()
    undefined_name()
    print("x")
    return [inner() for inner in range(3)]
'''


def test_call_resolution():
    r = parse(CALLS_SOURCE, path="pkg/widgets.py")
    assert refs(r, CALLS) == [
        ("pkg.widgets", CALLS, "pkg.helpers.tool"),
        ("pkg.widgets.Widget", CALLS, "pkg.widgets.helper"),
        ("pkg.widgets.Widget.__init__", CALLS, "pkg.widgets.Widget.method"),
        ("pkg.widgets.Widget.__init__", CALLS, "pkg.widgets.Widget.child.grow"),
        ("pkg.widgets.Widget.__init__", CALLS, "pkg.widgets.helper"),
        ("pkg.widgets.Widget.__init__", CALLS, "os.path.join"),
        ("pkg.widgets.Widget.__init__", CALLS, "numpy.array"),
        # A method called on a call's result: never resolves (numpy.array is
        # a function), but emitted like Job().run() -> Job.run.
        ("pkg.widgets.Widget.__init__", CALLS, "numpy.array.sum"),
        ("pkg.widgets.Widget.__init__", CALLS, "json.loads"),
        ("pkg.widgets.Widget.__init__", CALLS, "pkg.widgets.Widget.create"),
        ("pkg.widgets.Widget.create", CALLS, "pkg.widgets.Widget"),
        ("pkg.widgets.outer", CALLS, "pkg.widgets.outer.inner"),
        ("pkg.widgets.outer", CALLS, "pkg.widgets.outer.helper"),
    ]
    # Not emitted: super(), parameters (parent.attach), builtins (len, print, range),
    # class attributes seen from a method (size()), a staticmethod's first
    # parameter, undefined names, comprehension variables shadowing a def.


def test_calls_resolve_through_enclosing_functions_and_later_definitions():
    r = parse('''\
        def outer(cb):
            import json as j
            def inner():
                j.dumps(1)          # the enclosing function's import
                later()             # a module def further down
                cb()                # an enclosing parameter
                sibling()
            def sibling():
                pass
            lambda later: later()   # a lambda parameter shadows the def
            inner()

        def later():
            pass
        ''')
    assert refs(r, CALLS) == [
        ("pkg.mod.outer.inner", CALLS, "json.dumps"),
        ("pkg.mod.outer.inner", CALLS, "pkg.mod.later"),
        ("pkg.mod.outer.inner", CALLS, "pkg.mod.outer.sibling"),
        ("pkg.mod.outer", CALLS, "pkg.mod.outer.inner"),
    ]


def test_global_and_nonlocal_declarations():
    r = parse('''\
        def target(): pass

        def f():
            global target
            target = 1
            target()

        def g():
            target = 1
            def h():
                nonlocal target
                target()
            target()
        ''')
    assert refs(r, CALLS) == [("pkg.mod.f", CALLS, "pkg.mod.target")]


def test_class_body_sees_its_own_names_but_methods_do_not():
    r = parse('''\
        def make(): pass

        class C:
            def make(): pass
            value = make()
            items = [make() for _ in range(2)]   # comprehension: class scope hidden

            def m(self):
                make()
        ''')
    assert refs(r, CALLS) == [
        ("pkg.mod.C", CALLS, "pkg.mod.C.make"),
        ("pkg.mod.C", CALLS, "pkg.mod.make"),
        ("pkg.mod.C.m", CALLS, "pkg.mod.make"),
    ]


def test_first_definition_or_import_wins_over_variables():
    r = parse('''\
        try:
            from _json import scanner as c_scanner
        except ImportError:
            c_scanner = None
        fallback = None
        def fallback(): pass
        def user():
            c_scanner()
            fallback()
        ''')
    assert targets(r, CALLS) == ["_json.scanner", "pkg.mod.fallback"]


def test_refs_are_deduplicated_in_order_of_first_appearance():
    r = parse('''\
        def a(): pass
        def b(): pass
        def f():
            b(); a(); b(); a()
            b()
        ''')
    assert refs(r, CALLS) == [("pkg.mod.f", CALLS, "pkg.mod.b"), ("pkg.mod.f", CALLS, "pkg.mod.a")]


def test_calls_in_nested_expressions_lambdas_and_comprehensions():
    r = parse('''\
        import m
        x = m.a(m.b(key=m.c()), *m.d(), **m.e())[m.f()].g(lambda y=m.h(): m.i(y))
        z = {m.j(): [m.k(q) for q in m.l() if m.n(q)]}
        w = f"{m.o()!r:>{m.p()}}"
        ''')
    # Source order, except that a comprehension's iterable and conditions come
    # before its element (the order they run in).
    assert targets(r, CALLS) == ["m.a", "m.b", "m.c", "m.d", "m.e", "m.f", "m.h", "m.i",
                                 "m.j", "m.l", "m.n", "m.k", "m.o", "m.p"]
    # .g() is called on a call's result: not a dotted name, not emitted.
    assert not any(t.endswith(".g") for t in targets(r, CALLS))


def test_method_called_on_a_call_result():
    r = parse('''\
        import json
        from pathlib import Path

        class Job:
            def run(self): pass

            @classmethod
            def make(cls):
                cls().run()                 # the class itself
                cls.other().run()           # cls.other -> Job.other

            def again(self):
                self().run()                # the instance's __call__: nothing
                self.factory().run()        # self.factory -> Job.factory

        def main(p, q):
            Job(setup()).run(arg())         # source order: Job, setup, Job.run, arg
            Path(p).exists()
            json.JSONDecoder(strict=False).decode(q)
            Job().a.run()                   # attribute chain on the result: nothing
            Job().run().stop()              # .stop on run()'s result: nothing
            len(p).bit_length()             # builtin: nothing
            super().close()                 # builtin: nothing
            p().run()                       # a parameter: nothing
            undefined().run()               # unbound name: nothing
            Job()[0].run()                  # subscript: nothing
        ''', path="pkg/main.py")
    assert refs(r, CALLS) == [
        ("pkg.main.Job.make", CALLS, "pkg.main.Job"),
        ("pkg.main.Job.make", CALLS, "pkg.main.Job.run"),
        ("pkg.main.Job.make", CALLS, "pkg.main.Job.other"),
        ("pkg.main.Job.make", CALLS, "pkg.main.Job.other.run"),
        ("pkg.main.Job.again", CALLS, "pkg.main.Job.factory"),
        ("pkg.main.Job.again", CALLS, "pkg.main.Job.factory.run"),
        ("pkg.main.main", CALLS, "pkg.main.Job"),
        ("pkg.main.main", CALLS, "pkg.main.Job.run"),
        ("pkg.main.main", CALLS, "pathlib.Path"),
        ("pkg.main.main", CALLS, "pathlib.Path.exists"),
        ("pkg.main.main", CALLS, "json.JSONDecoder"),
        ("pkg.main.main", CALLS, "json.JSONDecoder.decode"),
    ]
    # setup()/arg() are unbound, so nothing; with a star import the order shows.
    r = parse('''\
        from lib import *
        Job(setup()).run(arg())
        Thing().go()
        ''', path="pkg/main.py")
    assert targets(r, CALLS) == ["lib.Job", "lib.setup", "lib.Job.run", "lib.arg",
                                 "lib.Thing", "lib.Thing.go"]


def test_method_called_on_a_local_bound_once_to_a_call():
    r = parse('''\
        from pathlib import Path
        import json.decoder as jd

        class Job:
            def run(self): pass

        def use(p):
            j = Job()
            j.run()                         # Job.run
            j.stop.now()                    # two levels: nothing
            j()                             # a call of the instance: nothing
            if p:
                while p:
                    k = Path(p)             # any nesting level of the body
            k.exists()
            [j.size() for _ in p]           # comprehensions count
            lambda: j.wait()                # lambdas do not
            def inner():
                j.inner()                   # nor do nested functions
            f = p.make()                    # a variable's method: nothing
            f.go()
            g = make()()                    # not a dotted call: nothing
            g.go()
        ''', path="pkg/main.py")
    assert refs(r, CALLS) == [
        ("pkg.main.use", CALLS, "pkg.main.Job"),
        ("pkg.main.use", CALLS, "pkg.main.Job.run"),
        ("pkg.main.use", CALLS, "pathlib.Path"),
        ("pkg.main.use", CALLS, "pathlib.Path.exists"),
        ("pkg.main.use", CALLS, "pkg.main.Job.size"),
    ]


def test_no_inference_for_names_bound_more_than_once_or_otherwise():
    r = parse('''\
        class A:
            def m(self): pass
        class B(A): pass

        def negatives(param, items):
            again = A()
            again = A()                     # reassigned, even to the same class
            later = A()
            later = None
            before = None
            before = A()
            param = A()                     # a parameter
            for loop in items:
                loop = A()                  # a loop target
            if items:
                branch = A()
            else:
                branch = B()                # two classes: nothing
            aug = A()
            aug += 1
            (walrus := 1)
            walrus = A()
            with open(param) as ctx:
                ctx = A()
            try:
                exc = A()
            except Exception as exc:
                pass
            gone = A()
            del gone
            ann: A = A()                    # annotated: not a plain assignment
            chained = other = A()           # more than one target
            unpacked, _ = A(), 1
            import imported
            imported = A()
            def defined(): pass
            defined = A()
            again.m(); later.m(); before.m(); param.m(); loop.m(); branch.m()
            aug.m(); walrus.m(); ctx.m(); exc.m(); gone.m(); ann.m(); chained.m()
            unpacked.m(); imported.m(); defined.m()
        ''', path="pkg/main.py")
    # Only the constructors, and what the import/def binding resolves to anyway.
    assert targets(r, CALLS, "pkg.main.negatives") == [
        "pkg.main.A", "pkg.main.B", "imported.m", "pkg.main.negatives.defined.m"]


def test_module_level_names_bound_once_are_inferred_in_functions():
    r = parse('''\
        from .decoder import JSONDecoder
        from .encoder import JSONEncoder

        _default_decoder = JSONDecoder(object_hook=None)
        _default_decoder.decode("")         # at module level too
        _default_encoder = JSONEncoder()
        twice = JSONEncoder()
        twice = JSONEncoder()
        cache = JSONEncoder()
        conn = JSONEncoder()

        def loads(s):
            return _default_decoder.decode(s)

        def nested():
            def inner():
                return _default_decoder.raw_decode("")   # module names: any depth
            return [_default_encoder.encode(x) for x in ()]

        def shadowing(_default_decoder):
            _default_decoder.decode("")     # a parameter shadows it

        def rebinding():
            _default_encoder = None
            _default_encoder.encode(1)      # the function's own name: nothing

        def own():
            _default_encoder = JSONDecoder()
            _default_encoder.decode(1)      # ... or its own inference

        def reset():
            global cache
            cache = None

        def uses():
            twice.encode(1)
            cache.encode(1)                 # rebound through `global` elsewhere

        class Holder:
            conn.encode(1)                  # a class body uses the module name
            attr = JSONEncoder()            # class-level assignments: out of scope
            attr.encode(1)

            def __init__(self):
                self.enc = JSONEncoder()

            def method(self):
                self.enc.encode(1)          # self.x: out of scope (the usual Holder.enc.encode)
        ''', path="json/__init__.py")
    assert refs(r, CALLS) == [
        ("json", CALLS, "json.decoder.JSONDecoder"),
        ("json", CALLS, "json.decoder.JSONDecoder.decode"),
        ("json", CALLS, "json.encoder.JSONEncoder"),
        ("json.loads", CALLS, "json.decoder.JSONDecoder.decode"),
        ("json.nested.inner", CALLS, "json.decoder.JSONDecoder.raw_decode"),
        ("json.nested", CALLS, "json.encoder.JSONEncoder.encode"),
        ("json.own", CALLS, "json.decoder.JSONDecoder"),
        ("json.own", CALLS, "json.decoder.JSONDecoder.decode"),
        ("json.Holder", CALLS, "json.encoder.JSONEncoder.encode"),
        ("json.Holder", CALLS, "json.encoder.JSONEncoder"),
        ("json.Holder.__init__", CALLS, "json.encoder.JSONEncoder"),
        ("json.Holder.method", CALLS, "json.Holder.enc.encode"),
    ]


def test_nonlocal_rebinding_and_enclosing_functions_infer_nothing():
    r = parse('''\
        class A:
            def m(self): pass

        def early():
            global late
            late = None

        def outer():
            def close():
                nonlocal conn               # before the assignment in the source
                conn = None
            conn = A()
            def reopen():
                nonlocal conn
                conn = None
            conn.m()                        # rebound by close and reopen
            kept = A()
            def user():
                kept.m()                    # an enclosing function's local
            kept.m()
            late.m()                        # rebound by early

        late = A()
        ''', path="pkg/main.py")
    assert refs(r, CALLS) == [
        ("pkg.main.outer", CALLS, "pkg.main.A"),
        ("pkg.main.outer", CALLS, "pkg.main.A.m"),
        ("pkg.main", CALLS, "pkg.main.A"),
    ]


def test_stdlib_json_default_decoder_is_inferred():
    path = _STDLIB / "json/__init__.py"
    if not path.exists():  # pragma: no cover - a trimmed Python install
        pytest.skip("json/__init__.py not in this Python")
    r = parse_source("json/__init__.py", path.read_bytes())
    calls = refs(r, CALLS)
    assert ("json.loads", CALLS, "json.decoder.JSONDecoder.decode") in calls
    assert ("json.dumps", CALLS, "json.encoder.JSONEncoder.encode") in calls


def test_inherits():
    r = parse('''\
        import abc
        from typing import Generic, TypeVar
        from .base import Base as B
        T = TypeVar("T")

        class Local: pass

        class C(Local, B, abc.ABC, Generic[T], make_base(), metaclass=abc.ABCMeta):
            pass

        class D(object, unknown.Thing):
            pass
        ''')
    assert refs(r, INHERITS) == [
        ("pkg.mod.C", INHERITS, "pkg.mod.Local"),
        ("pkg.mod.C", INHERITS, "pkg.base.Base"),
        ("pkg.mod.C", INHERITS, "abc.ABC"),
        ("pkg.mod.C", INHERITS, "typing.Generic"),
    ]
    assert meta(r, "pkg.mod.C")["bases"] == ["Local", "B", "abc.ABC", "Generic[T]", "make_base()"]
    assert meta(r, "pkg.mod.D")["bases"] == ["object", "unknown.Thing"]


def test_decorators_references_versus_calls():
    r = parse('''\
        import functools
        from .registry import register

        def cache(f): return f

        @cache
        @functools.lru_cache(maxsize=None)
        @register.add
        @property
        def f():
            pass

        @functools.total_ordering
        @register("x")
        class K:
            @cache
            def m(self):
                pass
        ''')
    assert refs(r, REFERENCES) == [
        ("pkg.mod.f", REFERENCES, "pkg.mod.cache"),
        ("pkg.mod.f", REFERENCES, "pkg.registry.register.add"),
        ("pkg.mod.K", REFERENCES, "functools.total_ordering"),
        ("pkg.mod.K.m", REFERENCES, "pkg.mod.cache"),
    ]
    # Called decorators are calls from the enclosing scope.
    assert refs(r, CALLS) == [
        ("pkg.mod", CALLS, "functools.lru_cache"),
        ("pkg.mod", CALLS, "pkg.registry.register"),
    ]
    assert meta(r, "pkg.mod.f")["decorators"] == [
        "cache", "functools.lru_cache(maxsize=None)", "register.add", "property"]


def test_calls_in_defaults_and_annotations_belong_to_the_enclosing_scope():
    r = parse('''\
        def default(): pass

        class C:
            def m(self, a=default(), b: "int" = default()) -> default():
                pass
        ''')
    assert refs(r, CALLS) == [("pkg.mod.C", CALLS, "pkg.mod.default")]


# --------------------------------------------------------------------------- #
# metadata


def test_signatures():
    r = parse('''\
        def a(self, s, _w=WHITESPACE.match) -> str: pass
        def b(x, y, /, z=1, *args, k: int = 2, j, **kw: "Any") -> None: pass
        def c(*, only): pass
        def d(p: list[int] = [1, 2], q={"a": (1,
                                              2)}): pass
        def e(a, /): pass
        def f(*args: int): pass
        ''')
    assert meta(r, "pkg.mod.a")["signature"] == "(self, s, _w=WHITESPACE.match) -> str"
    assert meta(r, "pkg.mod.b")["signature"] == (
        '(x, y, /, z=1, *args, k: int = 2, j, **kw: "Any") -> None')
    assert meta(r, "pkg.mod.c")["signature"] == "(*, only)"
    assert meta(r, "pkg.mod.d")["signature"] == "(p: list[int] = [1, 2], q={'a': (1, 2)})"
    assert meta(r, "pkg.mod.e")["signature"] == "(a, /)"
    assert meta(r, "pkg.mod.f")["signature"] == "(*args: int)"


def test_docstrings_are_cleaned_and_truncated():
    r = parse('''\
        def f():
            """Summary line.

                Indented detail.
            More text here.
            """

        class C:
            "short"
        ''', max_docstring_chars=20)
    assert meta(r, "pkg.mod.f")["docstring"] == "Summary line.\n\n    I"
    assert meta(r, "pkg.mod.C")["docstring"] == "short"
    r = parse('def f():\n    """' + "x" * 2000 + '"""\n')
    assert meta(r, "pkg.mod.f")["docstring"] == "x" * 500
    r = parse('def f():\n    """doc"""\n', max_docstring_chars=0)
    assert "docstring" not in meta(r, "pkg.mod.f")


def test_source_with_decorators_and_crlf_line_endings():
    code = (b"import functools\r\n\r\n@functools.cache\r\n@staticmethod\r\n"
            b"def f(a,\r\n      b):\r\n    return a\r\n\r\nx = 1\r\n")
    r = parse(code)
    assert nodes(r) == [
        (MODULE, "pkg.mod", 1, 0, 9, 5),
        (IMPORT, "pkg.mod.functools", 1, 0, 1, 16),
        (FUNCTION, "pkg.mod.f", 5, 0, 7, 12),
        (VARIABLE, "pkg.mod.x", 9, 0, 9, 5),
    ]
    assert meta(r, "pkg.mod.f") == {
        "signature": "(a, b)",
        "decorators": ["functools.cache", "staticmethod"],
        "source": "@functools.cache\n@staticmethod\ndef f(a,\n      b):\n    return a",
    }
    # Old Mac line endings count as line breaks too, as they do for the parser.
    r = parse(b"x = 1\ry = 2\r")
    assert [(n[3], n[4]) for n in r.nodes] == [("pkg.mod", 1), ("pkg.mod.x", 1), ("pkg.mod.y", 2)]


def test_latin1_file_with_coding_declaration():
    code = ("# -*- coding: latin-1 -*-\n"
            "def caf\xe9(x='\xe9t\xe9'):\n"
            "    '''R\xe9sum\xe9.'''\n").encode("latin-1")
    r = parse(code)
    assert nodes(r)[1] == (FUNCTION, "pkg.mod.caf\xe9", 2, 0, 3, 19)  # UTF-8 columns
    assert meta(r, "pkg.mod.caf\xe9") == {
        "signature": "(x='\xe9t\xe9')", "docstring": "R\xe9sum\xe9.",
        "source": "def caf\xe9(x='\xe9t\xe9'):\n    '''R\xe9sum\xe9.'''"}


def test_utf8_bom_and_non_ascii_columns():
    r = parse("\ufeffclass Caf\xe9: x = '\u20ac'; y = 2\n".encode("utf-8"))
    assert nodes(r)[1:] == [
        (CLASS, "pkg.mod.Caf\xe9", 1, 0, 1, 29),
        (ATTRIBUTE, "pkg.mod.Caf\xe9.x", 1, 13, 1, 22),
        (ATTRIBUTE, "pkg.mod.Caf\xe9.y", 1, 24, 1, 29),
    ]
    assert meta(r, "pkg.mod.Caf\xe9.x") == {"source": "x = '\u20ac'"}


def test_metadata_is_compact_json_and_compressed_above_the_threshold():
    code = 'def f(a: "\u00e9" = "\\"\\n"):\n    """D\u00e9j\u00e0 "vu"\\t."""\n    return a\n'
    r = parse(code, compression_threshold=None)
    blob = node(r, "pkg.mod.f")[8]
    value = codec.decode(blob)
    assert blob == b"J" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert value["docstring"] == inspect.cleandoc('D\u00e9j\u00e0 "vu"\t.') == 'D\u00e9j\u00e0 "vu"       .'
    assert value["signature"] == '(a: "\u00e9" = "\\"\\n")'
    big = "def g():\n" + "    x = 1\n" * 400
    r = parse(big, compression_threshold=1024)
    assert node(r, "pkg.mod.g")[8][:1] == b"Z"
    assert codec.decode(node(r, "pkg.mod.g")[8])["source"] == big.rstrip("\n")
    r = parse(big, compression_threshold=None)
    assert node(r, "pkg.mod.g")[8][:1] == b"J"


def test_lone_surrogates_in_docstrings_survive_as_escapes():
    r = parse('def f():\n    "bad \\udcff here"\n')
    assert meta(r, "pkg.mod.f")["docstring"] == "bad \udcff here"
    assert node(r, "pkg.mod.f")[8].isascii()


def test_deprecation_warnings_as_errors_do_not_fail_a_file():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = parse_source("m.py", b"x = '\\d'\n")
    assert r.error is None


def test_result_pickles_and_is_deterministic():
    r = parse(CALLS_SOURCE)
    again = parse_source("pkg/mod.py", textwrap.dedent(CALLS_SOURCE).encode())
    assert again == r
    assert pickle.loads(pickle.dumps(r)) == r
    assert all(type(n) is tuple for n in r.nodes + r.edges + r.refs + r.aliases)


# --------------------------------------------------------------------------- #
# errors


@pytest.mark.parametrize("code, expected", [
    pytest.param(b"def f(:\n    pass\n", "SyntaxError: invalid syntax (line 1)", id="syntax"),
    pytest.param(b"x = 1\n\nif x\n", "SyntaxError: expected ':' (line 3)", id="syntax-line"),
    pytest.param(b"x = 1\xff\n", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in"
                 " position 5: invalid start byte (line 1)", id="bad-utf8-line-1"),
    pytest.param(b"x = 1\n# comment\ny = '\xe9'\n", "UnicodeDecodeError: 'utf-8' codec can't"
                 " decode byte 0xe9 in position 21: invalid continuation byte (line 3)",
                 id="bad-utf8-line-3"),
    pytest.param(b"# coding: nonesuch\nx = 1\n", "SyntaxError: unknown encoding: nonesuch",
                 id="unknown-encoding"),
    pytest.param(b"x = (" * 10000, "SyntaxError: too many nested parentheses (line 1)",
                 id="parentheses"),
    pytest.param(b"".join(b" " * i + b"if x:\n" for i in range(200)) + b" " * 200 + b"pass\n",
                 "IndentationError: too many levels of indentation (line 101)", id="nested-ifs"),
    pytest.param(b"x = " + b"+".join([b"1"] * 100_000), "RecursionError: nesting too deep",
                 id="long-sum"),
    pytest.param(b"x = " + b"-" * 100_000 + b"1",
                 "MemoryError: nesting too deep or file too large", id="deep-unary"),
])
def test_errors_become_one_line_reasons(code, expected):
    r = parse_source("pkg/bad.py", code)
    assert r == ParsedFile("pkg.bad", expected, [], [], [], [])


def test_null_bytes_are_an_error():
    r = parse_source("pkg/bad.py", b"x = 1\x00\n")
    # 3.11.4+ raise SyntaxError here, older versions ValueError.
    assert r.error in ("SyntaxError: source code string cannot contain null bytes",
                       "ValueError: source code string cannot contain null bytes")
    assert r.nodes == r.edges == r.refs == r.aliases == []


def test_non_bytes_input_is_an_error_not_an_exception():
    r = parse_source("pkg/bad.py", "x = 1")  # type: ignore[arg-type]
    assert r.error.startswith("TypeError: ")
    r = parse_source("pkg/ok.py", bytearray(b"x = 1"))  # type: ignore[arg-type]
    assert r.error is None and len(r.nodes) == 2


# --------------------------------------------------------------------------- #
# properties


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    r = parse_source("pkg/fuzz.py", data)
    check_invariants("pkg/fuzz.py", r)
    assert parse_source("pkg/fuzz.py", data) == r


_NAMES = st.sampled_from(["a", "b", "f", "g", "C", "D", "self", "x", "os", "len"])
_LEAVES = [
    "pass", "{n} = {n}", "{n}, {n} = 1, 2", "{n}.{n} = {n}({n})", "self.{n} = {n}",
    "import os.path", "from . import {n}", "from .{n} import {n} as {n}",
    "from os import *", "{n}: int = 1", "{n} += 1", "return {n}({n}.{n}())",
    "global {n}", "{n} = lambda {n}: {n}({n})", "[{n}({n}) for {n} in {n}]",
    "del {n}", "assert {n}({n})",
]
_BLOCKS = [
    "def {n}({n}, *{n}s):", "async def {n}():", "class {n}({n}):", "class {n}:",
    "if {n}:", "for {n} in {n}():", "while {n}:", "with {n}() as {n}:", "try:",
    "@{n}\ndef {n}(self):", "@{n}.{n}({n})\nclass {n}:",
]


@st.composite
def python_sources(draw, depth=0):
    """Small, mostly valid programs built from statement templates."""
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 4 and draw(st.booleans()):
            header = draw(st.sampled_from(_BLOCKS))
            body = draw(python_sources(depth + 1))
            lines.append(_fill(draw, header))
            lines.extend("    " + line for line in body.split("\n"))
            if header == "try:":
                lines.append("except {n}:\n    pass".replace("{n}", draw(_NAMES)))
        else:
            lines.append(_fill(draw, draw(st.sampled_from(_LEAVES))))
    return "\n".join(lines)


def _fill(draw, template: str) -> str:
    while "{n}" in template:
        template = template.replace("{n}", draw(_NAMES), 1)
    return template


@settings(max_examples=150, deadline=None)
@given(python_sources(), st.sampled_from(["pkg/gen.py", "pkg/__init__.py", "top.py"]),
       st.sampled_from([None, 0, 64, 1024]))
def test_generated_programs_keep_the_invariants(code, path, threshold):
    data = code.encode()
    r = parse_source(path, data, compression_threshold=threshold)
    check_invariants(path, r)
    assert parse_source(path, data, compression_threshold=threshold) == r
    if r.error is None:
        # Containment follows the nesting: no node starts before its container.
        by_id = {n[0]: n for n in r.nodes}
        for src, _k, dst in r.edges:
            assert by_id[src][4] <= by_id[dst][4] <= by_id[src][6]


_TRICKY_CHARS = st.one_of(
    st.sampled_from("`$?~!^\x7f\ue000\U0010fffd\"\\\t\x0c\x01\x1f\x85\u2028\xe9\u20ac"),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(_TRICKY_CHARS, max_size=30), min_size=1, max_size=4))
def test_source_metadata_round_trips_any_text(comments):
    """The per-file escaping (sentinel characters, ASCII fast path) gives exactly
    json.dumps(..., ensure_ascii=False) of the right lines."""
    lines = ["class C:"] + [f"    # {c}" for c in comments] + ["    def m(self):", "        pass"]
    code = "\n".join(lines) + "\n"
    r = parse_source("pkg/t.py", code.encode("utf-8"), compression_threshold=None)
    assert r.error is None, r.error
    blob = node(r, "pkg.t.C")[8]
    value = codec.decode(blob)
    assert value["source"] == "\n".join(lines)
    assert blob == b"J" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert codec.decode(node(r, "pkg.t.C.m")[8])["source"] == "\n".join(lines[-2:])


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(" \t\nab\x0c"), max_size=40))
def test_docstring_cleaning_matches_inspect(doc):
    from codegraph_store.indexer.parse import _cleandoc
    assert _cleandoc(doc) == inspect.cleandoc(doc)


_STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.mark.parametrize("rel", ["json/decoder.py", "collections/__init__.py",
                                 "asyncio/base_events.py", "typing.py", "dataclasses.py"])
def test_stdlib_files(rel):
    path = _STDLIB / rel
    if not path.exists():  # pragma: no cover - a trimmed Python install
        pytest.skip(f"{rel} not in this Python")
    r = parse_source(rel, path.read_bytes())
    assert r.error is None
    check_invariants(rel, r)
    if rel == "json/decoder.py":
        assert node(r, "json.decoder.JSONDecoder.decode")[1] == METHOD
        sig = meta(r, "json.decoder.JSONDecoder.decode")["signature"]
        assert sig == "(self, s, _w=WHITESPACE.match)"
        assert ("json.decoder.JSONDecoder.decode", CALLS,
                "json.decoder.JSONDecoder.raw_decode") in refs(r, CALLS)
        assert "json.scanner" in targets(r, IMPORTS)

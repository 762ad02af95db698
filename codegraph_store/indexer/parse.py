"""Extract one Python source file into graph records.

:func:`parse_source` runs inside indexer worker processes: it takes a path and
the file's bytes and returns a :class:`ParsedFile` made only of str, int, bytes,
tuples and lists, so the result pickles cheaply back to the parent. It touches no
store and keeps no state between calls (beyond the zstd compressor cached by
:mod:`codegraph_store.codec`). Only the standard library :mod:`ast` is used.

What comes out
--------------
``nodes``
    ``(id, kind_code, name, qualname, start_line, start_col, end_line, end_col,
    metadata_blob_or_None)`` for the module, its classes, functions, methods,
    module variables, class attributes (including ``self.x = ...`` in methods)
    and imports. Ids are :func:`~codegraph_store.model.stable_node_id` of the
    path, the qualified name and a discriminator counting earlier symbols with
    the same qualified name in the file. Columns are the UTF-8 byte offsets
    :mod:`ast` reports.
``edges``
    ``(parent_id, CONTAINS, child_id)`` for every node but the module.
``refs``
    ``(src_id, edge_kind_code, dotted_target)``: calls, decorator references,
    base classes and imported modules, named by the fully qualified dotted name
    they resolve to within the file. Another module matches them to nodes.
``aliases``
    ``(import_node_id, dotted_target)``, one per import node.

Name resolution follows Python's scoping rules as far as one file shows them:
function scopes see enclosing function scopes and the module, never class
scopes; a class body sees its own names. In a scope, the first ``def``/``class``/
``import`` binding of a name decides what it refers to; a name bound only by
assignments, parameters, loop targets and the like is a variable and refers to
nothing that can be named. Unbound names fall back to the first
``from X import *`` of the module (as ``X.name``), then to builtins (nothing).
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import tokenize
import warnings
from typing import NamedTuple

from ..codec import encode_text_trusted
from ..kinds import EdgeKind, NodeKind
from ..model import stable_node_id

__all__ = ["ParsedFile", "module_name_for", "parse_source"]

MODULE = int(NodeKind.MODULE)
CLASS = int(NodeKind.CLASS)
FUNCTION = int(NodeKind.FUNCTION)
METHOD = int(NodeKind.METHOD)
VARIABLE = int(NodeKind.VARIABLE)
IMPORT = int(NodeKind.IMPORT)
ATTRIBUTE = int(NodeKind.ATTRIBUTE)

CONTAINS = int(EdgeKind.CONTAINS)
CALLS = int(EdgeKind.CALLS)
IMPORTS = int(EdgeKind.IMPORTS)
INHERITS = int(EdgeKind.INHERITS)
REFERENCES = int(EdgeKind.REFERENCES)

#: Longest ``source`` kept for a variable or attribute statement.
MAX_VARIABLE_SOURCE = 500

_BUILTINS = frozenset(dir(builtins))


class ParsedFile(NamedTuple):
    """Everything extracted from one file; plain data, cheap to pickle."""

    module: str
    error: str | None
    nodes: list
    edges: list
    refs: list
    aliases: list


def module_name_for(relpath: str) -> str:
    """Dotted module name of a '/'-separated path relative to the indexed root.

    ``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``.
    Only a ``.py`` suffix is removed; parts are kept as they are. A root-level
    ``__init__.py`` has no package to stand for and is named ``__init__``.
    """
    path = relpath[:-3] if relpath.endswith(".py") else relpath
    parts = path.split("/")
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# --------------------------------------------------------------------------- #
# Helpers

_esc = json.encoder.encode_basestring  # the C escaper behind ensure_ascii=False
_esc_ascii = json.encoder.encode_basestring_ascii


def _json_bytes(meta: dict) -> bytes:
    """Compact JSON of a metadata dict whose values are str, list of str or True.

    Byte for byte what ``json.dumps(meta, ensure_ascii=False, separators=(",", ":"))``
    gives, without the encoder's per-call overhead.
    """
    text = _json_object(meta, _esc)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (from "\\udcff" escapes in a docstring, say) are not
        # UTF-8; \\u-escaped JSON still round-trips them exactly.
        return _json_object(meta, _esc_ascii).encode("ascii")


def _json_object(meta: dict, esc) -> str:
    parts = []
    for key, value in meta.items():
        t = type(value)
        if t is str:
            parts.append(esc(key) + ":" + esc(value))
        elif t is list:
            parts.append(esc(key) + ":[" + ",".join([esc(v) for v in value]) + "]")
        elif value is True:
            parts.append(esc(key) + ":true")
        else:  # pragma: no cover - the extractor only builds the types above
            parts.append(esc(key) + ":" + json.dumps(value, ensure_ascii=esc is _esc_ascii,
                                                     separators=(",", ":")))
    return "{" + ",".join(parts) + "}"


def _decode(source: bytes) -> str:
    """Source bytes to text the way the tokenizer sees it (PEP 263, universal newlines)."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    text = source.decode(encoding)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _format_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, RecursionError):
        return "RecursionError: nesting too deep"
    if isinstance(exc, MemoryError):
        return "MemoryError: " + (_one_line(str(exc)) or "nesting too deep or file too large")
    if isinstance(exc, SyntaxError):
        msg = _one_line(exc.msg or "") or "invalid syntax"
        if exc.lineno:
            return f"{name}: {msg} (line {exc.lineno})"
        return f"{name}: {msg}"
    msg = _one_line(str(exc))
    return f"{name}: {msg}" if msg else name


def _dotted(node) -> tuple[str, str] | None:
    """``a.b.c`` -> ``("a", ".b.c")``; ``None`` when the chain is not rooted at a name."""
    t = type(node)
    if t is _Name:
        return node.id, ""
    if t is not _Attribute:
        return None
    parts = [node.attr]
    v = node.value
    while type(v) is _Attribute:
        parts.append(v.attr)
        v = v.value
    if type(v) is not _Name:
        return None
    parts.append("")
    parts.reverse()
    return v.id, ".".join(parts)


_Name = ast.Name
_Constant = ast.Constant
_Attribute = ast.Attribute
_Call = ast.Call
_Lambda = ast.Lambda
_NamedExpr = ast.NamedExpr
_Starred = ast.Starred
_Tuple = ast.Tuple
_List = ast.List
_Subscript = ast.Subscript
_Expr = ast.Expr
_Assign = ast.Assign
_Return = ast.Return
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)

# Child expression fields of each expression type, in *reverse* source order
# (the walker pushes them on a stack). Types not listed fall back to _fields.
_EXPR_FIELDS: dict[type, tuple[str, ...]] = {
    ast.BoolOp: ("values",),
    ast.BinOp: ("right", "left"),
    ast.UnaryOp: ("operand",),
    ast.IfExp: ("orelse", "test", "body"),
    ast.Dict: ("values", "keys"),
    ast.Set: ("elts",),
    ast.Await: ("value",),
    ast.Yield: ("value",),
    ast.YieldFrom: ("value",),
    ast.Compare: ("comparators", "left"),
    ast.FormattedValue: ("format_spec", "value"),
    ast.JoinedStr: ("values",),
    ast.Subscript: ("slice", "value"),
    ast.Starred: ("value",),
    ast.List: ("elts",),
    ast.Tuple: ("elts",),
    ast.Slice: ("step", "upper", "lower"),
    ast.Name: (),
    ast.Constant: (),
    type(None): (),
}


def _generic_fields(t: type) -> tuple[str, ...]:
    fields = tuple(f for f in reversed(t._fields) if f not in ("ctx", "op", "ops"))
    _EXPR_FIELDS[t] = fields
    return fields


class _Scope:
    """Names bound in one scope. Values: str target, None (variable), _Self, or a marker."""

    __slots__ = ("is_class", "is_comp", "b", "parent")

    def __init__(self, is_class: bool, parent: "_Scope | None", is_comp: bool = False):
        self.is_class = is_class
        self.is_comp = is_comp
        self.b: dict = {}
        self.parent = parent

    def bind(self, name: str, value) -> None:
        b = self.b
        old = b.get(name, _MISSING)
        if old is _MISSING or (old is None and value is not None):
            b[name] = value


class _Self(NamedTuple):
    """The first parameter of a method: ``self.x`` is ``Class.x``."""

    cls_qualname: str
    is_cls: bool  # a classmethod's ``cls``: bare ``cls`` is the class itself


_MISSING = object()
_GLOBAL = 1
_NONLOCAL = 2


class _Frame:
    """A def/class/module node being filled: where new symbols go and refs come from."""

    __slots__ = ("id", "qn", "kind", "scope", "self_name", "cls", "attrs")

    def __init__(self, id_, qn, kind, scope, self_name=None, cls=None):
        self.id = id_
        self.qn = qn
        self.kind = kind  # MODULE, CLASS or FUNCTION
        self.scope = scope
        self.self_name = self_name  # name of `self` in a method body
        self.cls = cls  # the class frame of that method
        self.attrs = None  # class frames: self.x candidates {name: (stmt, annotation)}


# --------------------------------------------------------------------------- #
# The extractor


class _Extractor:
    def __init__(self, relpath: str, module: str, text: str, threshold, max_doc: int):
        self.relpath = relpath
        self.module = module
        self.lines = text.split("\n")
        self.threshold = threshold
        self.max_doc = max_doc
        self.nodes: list = []
        self.edges: list = []
        self.aliases: list = []
        self.raw: list = []  # (src, kind, scope, root name, suffix); scope None = resolved
        self.counts: dict[str, int] = {}
        self.star: str | None = None
        parts = module.split(".")
        if relpath.endswith("__init__.py") and relpath != "__init__.py":
            self.package = parts  # the package is the module itself
        else:
            self.package = parts[:-1]

    # ---- records ---------------------------------------------------------- #

    def _meta(self, meta: dict):
        if not meta:
            return None
        return encode_text_trusted(_json_bytes(meta), self.threshold)

    def _add(self, parent: _Frame | None, kind: int, name: str, qn: str, sl: int, sc: int,
             el: int, ec: int, meta: dict | None) -> int:
        counts = self.counts
        disc = counts.get(qn, 0)
        counts[qn] = disc + 1
        node_id = stable_node_id(self.relpath, qn, disc)
        self.nodes.append((node_id, kind, name, qn, sl, sc, el, ec, self._meta(meta)))
        if parent is not None:
            self.edges.append((parent.id, CONTAINS, node_id))
        return node_id

    def _docstring(self, body) -> str:
        if body:
            first = body[0]
            if type(first) is _Expr:
                v = first.value
                if type(v) is _Constant and type(v.value) is str:
                    doc = v.value
                    if "\n" in doc or "\t" in doc or doc[:1].isspace() or doc[-1:].isspace():
                        doc = _cleandoc(doc)
                    return doc[:self.max_doc]
        return ""

    def _segment(self, node) -> str:
        """Source text of an expression, on one line."""
        line_no = node.lineno
        end_no = node.end_lineno
        if line_no == end_no:
            line = self.lines[line_no - 1]
            if line.isascii():
                return line[node.col_offset:node.end_col_offset]
            return line.encode("utf-8")[node.col_offset:node.end_col_offset].decode("utf-8", "replace")
        try:
            return ast.unparse(node)
        except Exception:  # pragma: no cover - unparse of a parsed tree
            return _one_line(self._text(node, 10_000))

    def _text(self, node, limit: int) -> str:
        """Exact source text of a statement, cut after ``limit`` characters."""
        lines = self.lines
        first, last = node.lineno - 1, node.end_lineno - 1
        col, end_col = node.col_offset, node.end_col_offset
        if first == last:
            line = lines[first]
            if line.isascii():
                return line[col:end_col][:limit]
            return line.encode("utf-8")[col:end_col].decode("utf-8", "replace")[:limit]
        line = lines[first]
        parts = [line[col:] if line.isascii() else
                 line.encode("utf-8")[col:].decode("utf-8", "replace")]
        size = len(parts[0])
        i = first + 1
        while i < last and size <= limit:
            parts.append(lines[i])
            size += len(lines[i]) + 1
            i += 1
        if size <= limit:
            line = lines[last]
            parts.append(line[:end_col] if line.isascii() else
                         line.encode("utf-8")[:end_col].decode("utf-8", "replace"))
        return "\n".join(parts)[:limit]

    # ---- the walk --------------------------------------------------------- #

    def run(self, tree: ast.Module) -> list:
        module = self.module
        lines = self.lines
        n_lines = len(lines)
        if n_lines > 1 and lines[-1] == "":
            n_lines -= 1
        last = lines[n_lines - 1]
        end_col = len(last) if last.isascii() else len(last.encode("utf-8"))
        doc = self._docstring(tree.body)
        scope = _Scope(False, None)
        self.module_scope = scope
        mod_id = self._add(None, MODULE, module.rpartition(".")[2] or module, module,
                           1, 0, n_lines, end_col, {"docstring": doc} if doc else None)
        frame = _Frame(mod_id, module, MODULE, scope)
        self.module_frame = frame
        self._body(tree.body, frame)
        return self._resolve()

    def _body(self, stmts, fr: _Frame) -> None:
        expr = self._expr
        scope = fr.scope
        for st in stmts:
            t = type(st)
            if t is _Expr:
                expr(st.value, scope, fr.id)
            elif t is _Assign:
                expr(st.value, scope, fr.id)
                for target in st.targets:
                    self._target(target, fr, st, None)
            elif t is _Return:
                if st.value is not None:
                    expr(st.value, scope, fr.id)
            else:
                handler = _STMT.get(t)
                if handler is None:
                    self._generic_stmt(st, fr)
                else:
                    handler(self, st, fr)

    def _generic_stmt(self, st, fr: _Frame) -> None:
        # Statements of future Python versions: walk what looks like code.
        for name in st._fields:
            v = getattr(st, name, None)
            if isinstance(v, list):
                if v and isinstance(v[0], ast.stmt):
                    self._body(v, fr)
                else:
                    for x in v:
                        if isinstance(x, ast.expr):
                            self._expr(x, fr.scope, fr.id)
            elif isinstance(v, ast.expr):
                self._expr(v, fr.scope, fr.id)

    # statements

    def _s_def(self, st, fr: _Frame) -> None:
        scope = fr.scope
        src = fr.id
        decorators = st.decorator_list
        is_static = is_classmethod = False
        for d in decorators:
            if type(d) is _Call:
                self._expr(d, scope, src)
            else:
                dn = _dotted(d)
                if dn is None:
                    self._expr(d, scope, src)
                else:
                    last = dn[1].rpartition(".")[2] or dn[0]
                    if last == "staticmethod":
                        is_static = True
                    elif last == "classmethod":
                        is_classmethod = True
        args = st.args
        # Defaults and annotations are evaluated in the enclosing scope.
        for d in args.defaults:
            self._expr(d, scope, src)
        for d in args.kw_defaults:
            if d is not None:
                self._expr(d, scope, src)
        params = []
        for group in (args.posonlyargs, args.args, args.kwonlyargs):
            for a in group:
                params.append(a.arg)
                if a.annotation is not None:
                    self._expr(a.annotation, scope, src)
        for a in (args.vararg, args.kwarg):
            if a is not None:
                params.append(a.arg)
                if a.annotation is not None:
                    self._expr(a.annotation, scope, src)
        if st.returns is not None:
            self._expr(st.returns, scope, src)

        name = st.name
        qn = fr.qn + "." + name
        is_method = fr.kind == CLASS
        is_async = type(st) is ast.AsyncFunctionDef
        meta = {"signature": self._signature(args, st.returns)}
        doc = self._docstring(st.body)
        if doc:
            meta["docstring"] = doc
        if decorators:
            meta["decorators"] = [self._segment(d) for d in decorators]
        if is_async:
            meta["async"] = True
        first = st.lineno
        for d in decorators:
            if d.lineno < first:
                first = d.lineno
        meta["source"] = "\n".join(self.lines[first - 1:st.end_lineno])
        node_id = self._add(fr, METHOD if is_method else FUNCTION, name, qn, st.lineno,
                            st.col_offset, st.end_lineno, st.end_col_offset, meta)
        scope.bind(name, qn)
        self._decorator_refs(decorators, node_id, scope)

        inner = _Scope(False, scope)
        self_name = None
        if is_method and not is_static:
            first_arg = args.posonlyargs[:1] or args.args[:1]
            if first_arg:
                self_name = first_arg[0].arg
                inner.b[self_name] = _Self(fr.qn, is_classmethod)
        for p in params:
            inner.bind(p, None)
        body_frame = _Frame(node_id, qn, FUNCTION, inner, self_name, fr if self_name else None)
        self._body(st.body, body_frame)

    def _decorator_refs(self, decorators, node_id: int, scope: _Scope) -> None:
        for d in decorators:
            if type(d) is not _Call:
                dn = _dotted(d)
                if dn is not None:
                    self.raw.append((node_id, REFERENCES, scope, dn[0], dn[1]))

    def _signature(self, args: ast.arguments, returns) -> str:
        seg = self._segment
        out = []
        positional = args.posonlyargs + args.args
        defaults = args.defaults
        first_default = len(positional) - len(defaults)
        for i, a in enumerate(positional):
            text = a.arg
            if a.annotation is not None:
                text += ": " + seg(a.annotation)
            if i >= first_default:
                text += (" = " if a.annotation is not None else "=") + seg(defaults[i - first_default])
            out.append(text)
            if i == len(args.posonlyargs) - 1:
                out.append("/")
        if args.vararg is not None:
            a = args.vararg
            out.append("*" + a.arg + (": " + seg(a.annotation) if a.annotation is not None else ""))
        elif args.kwonlyargs:
            out.append("*")
        for a, d in zip(args.kwonlyargs, args.kw_defaults):
            text = a.arg
            if a.annotation is not None:
                text += ": " + seg(a.annotation)
            if d is not None:
                text += (" = " if a.annotation is not None else "=") + seg(d)
            out.append(text)
        if args.kwarg is not None:
            a = args.kwarg
            out.append("**" + a.arg + (": " + seg(a.annotation) if a.annotation is not None else ""))
        sig = "(" + ", ".join(out) + ")"
        if returns is not None:
            sig += " -> " + seg(returns)
        return sig

    def _s_class(self, st: ast.ClassDef, fr: _Frame) -> None:
        scope = fr.scope
        src = fr.id
        decorators = st.decorator_list
        for d in decorators:
            if type(d) is _Call or _dotted(d) is None:
                self._expr(d, scope, src)
        for b in st.bases:
            self._expr(b, scope, src)
        for k in st.keywords:
            self._expr(k.value, scope, src)
        name = st.name
        qn = fr.qn + "." + name
        meta = {}
        if st.bases:
            meta["bases"] = [self._segment(b) for b in st.bases]
        doc = self._docstring(st.body)
        if doc:
            meta["docstring"] = doc
        if decorators:
            meta["decorators"] = [self._segment(d) for d in decorators]
        first = st.lineno
        for d in decorators:
            if d.lineno < first:
                first = d.lineno
        meta["source"] = "\n".join(self.lines[first - 1:st.end_lineno])
        node_id = self._add(fr, CLASS, name, qn, st.lineno, st.col_offset,
                            st.end_lineno, st.end_col_offset, meta)
        scope.bind(name, qn)
        self._decorator_refs(decorators, node_id, scope)
        raw = self.raw
        for b in st.bases:
            if type(b) is _Subscript:  # Generic[T], Mapping[str, int]
                b = b.value
            dn = _dotted(b)
            if dn is not None:
                raw.append((node_id, INHERITS, scope, dn[0], dn[1]))

        body_frame = _Frame(node_id, qn, CLASS, _Scope(True, scope))
        body_frame.attrs = {}
        self._body(st.body, body_frame)
        counts = self.counts
        for attr, (stmt, annotation) in body_frame.attrs.items():
            aqn = qn + "." + attr
            if aqn in counts:
                continue
            meta = {"source": self._text(stmt, MAX_VARIABLE_SOURCE)}
            if annotation is not None:
                meta["annotation"] = self._segment(annotation)
            self._add(body_frame, ATTRIBUTE, attr, aqn, stmt.lineno, stmt.col_offset,
                      stmt.end_lineno, stmt.end_col_offset, meta)

    def _target(self, target, fr: _Frame, st, annotation) -> None:
        """Bind an assignment target; module and class level names become nodes."""
        t = type(target)
        if t is _Name:
            name = target.id
            fr.scope.bind(name, None)
            kind = fr.kind
            if kind != FUNCTION:
                qn = fr.qn + "." + name
                if qn not in self.counts:
                    meta = {"source": self._text(st, MAX_VARIABLE_SOURCE)}
                    if annotation is not None:
                        meta["annotation"] = self._segment(annotation)
                    self._add(fr, VARIABLE if kind == MODULE else ATTRIBUTE, name, qn,
                              st.lineno, st.col_offset, st.end_lineno, st.end_col_offset, meta)
        elif t is _Tuple or t is _List:
            for e in target.elts:
                self._target(e, fr, st, None)
        elif t is _Starred:
            self._target(target.value, fr, st, None)
        else:
            # a.b = ..., a[i] = ...: code runs in the target expression.
            self._expr(target, fr.scope, fr.id)
            if t is _Attribute and fr.self_name is not None:
                v = target.value
                if type(v) is _Name and v.id == fr.self_name:
                    attrs = fr.cls.attrs
                    if target.attr not in attrs:
                        attrs[target.attr] = (st, annotation)

    def _bind_local(self, target, scope: _Scope, src: int) -> None:
        """Bind names of a for/with/except target as variables (no nodes)."""
        t = type(target)
        if t is _Name:
            scope.bind(target.id, None)
        elif t is _Tuple or t is _List:
            for e in target.elts:
                self._bind_local(e, scope, src)
        elif t is _Starred:
            self._bind_local(target.value, scope, src)
        else:
            self._expr(target, scope, src)

    def _s_annassign(self, st: ast.AnnAssign, fr: _Frame) -> None:
        self._expr(st.annotation, fr.scope, fr.id)
        if st.value is not None:
            self._expr(st.value, fr.scope, fr.id)
        self._target(st.target, fr, st, st.annotation)

    def _s_augassign(self, st: ast.AugAssign, fr: _Frame) -> None:
        self._expr(st.value, fr.scope, fr.id)
        self._bind_local(st.target, fr.scope, fr.id)

    def _s_delete(self, st: ast.Delete, fr: _Frame) -> None:
        for target in st.targets:
            self._bind_local(target, fr.scope, fr.id)

    def _s_for(self, st, fr: _Frame) -> None:
        self._expr(st.iter, fr.scope, fr.id)
        self._bind_local(st.target, fr.scope, fr.id)
        self._body(st.body, fr)
        self._body(st.orelse, fr)

    def _s_while_if(self, st, fr: _Frame) -> None:
        self._expr(st.test, fr.scope, fr.id)
        self._body(st.body, fr)
        self._body(st.orelse, fr)

    def _s_with(self, st, fr: _Frame) -> None:
        for item in st.items:
            self._expr(item.context_expr, fr.scope, fr.id)
            if item.optional_vars is not None:
                self._bind_local(item.optional_vars, fr.scope, fr.id)
        self._body(st.body, fr)

    def _s_try(self, st, fr: _Frame) -> None:
        self._body(st.body, fr)
        for h in st.handlers:
            if h.type is not None:
                self._expr(h.type, fr.scope, fr.id)
            if h.name:
                fr.scope.bind(h.name, None)
            self._body(h.body, fr)
        self._body(st.orelse, fr)
        self._body(st.finalbody, fr)

    def _s_match(self, st, fr: _Frame) -> None:
        self._expr(st.subject, fr.scope, fr.id)
        for case in st.cases:
            stack = [case.pattern]
            while stack:
                p = stack.pop()
                for name in ("name", "rest"):
                    v = getattr(p, name, None)
                    if v:
                        fr.scope.bind(v, None)
                for name in ("pattern", "patterns", "kwd_patterns"):
                    v = getattr(p, name, None)
                    if v is None:
                        continue
                    if type(v) is list:
                        stack.extend(v)
                    else:
                        stack.append(v)
            if case.guard is not None:
                self._expr(case.guard, fr.scope, fr.id)
            self._body(case.body, fr)

    def _s_simple(self, st, fr: _Frame) -> None:
        # Raise, Assert, ...: every expression field.
        for name in st._fields:
            v = getattr(st, name)
            if isinstance(v, ast.expr):
                self._expr(v, fr.scope, fr.id)

    def _s_global(self, st, fr: _Frame) -> None:
        marker = _GLOBAL if type(st) is ast.Global else _NONLOCAL
        b = fr.scope.b
        for name in st.names:
            if fr.kind != MODULE:
                b[name] = marker

    def _s_pass(self, st, fr: _Frame) -> None:
        pass

    def _s_import(self, st: ast.Import, fr: _Frame) -> None:
        raw = self.raw
        mod_id = self.module_frame.id
        for alias in st.names:
            full = alias.name
            raw.append((mod_id, IMPORTS, None, full, ""))
            if alias.asname:
                bound, target = alias.asname, full
            else:
                bound = target = full.partition(".")[0]
            self._import_node(fr, st, bound, target)

    def _s_importfrom(self, st: ast.ImportFrom, fr: _Frame) -> None:
        raw = self.raw
        mod_id = self.module_frame.id
        base = self._absolute(st.level, st.module)
        if base.strip("."):
            raw.append((mod_id, IMPORTS, None, base, ""))
        sep = "" if base.endswith(".") else "."
        for alias in st.names:
            name = alias.name
            if name == "*":
                if self.star is None:
                    self.star = base
                continue
            target = base + sep + name
            raw.append((mod_id, IMPORTS, None, target, ""))
            self._import_node(fr, st, alias.asname or name, target)

    def _absolute(self, level: int, module: str | None) -> str:
        if not level:
            return module or ""
        package = self.package
        if level > len(package):
            # Beyond the top of the tree: keep the relative text; it never resolves.
            return "." * level + (module or "")
        parts = package[:len(package) - (level - 1)]
        if module:
            parts = parts + [module]
        return ".".join(parts)

    def _import_node(self, fr: _Frame, st, bound: str, target: str) -> None:
        node_id = self._add(fr, IMPORT, bound, fr.qn + "." + bound, st.lineno, st.col_offset,
                            st.end_lineno, st.end_col_offset, {"target": target})
        self.aliases.append((node_id, target))
        fr.scope.bind(bound, target)

    # expressions

    def _expr(self, node, scope: _Scope, src: int) -> None:
        """Record every call in an expression; descend into lambdas and comprehensions."""
        t = type(node)
        if t is _Name or t is _Constant:
            return
        raw_append = self.raw.append
        fields = _EXPR_FIELDS
        stack = [node]
        pop = stack.pop
        push = stack.append
        while stack:
            x = pop()
            t = type(x)
            if t is _Name or t is _Constant:
                continue
            if t is _Call:
                if x.keywords:
                    for k in reversed(x.keywords):
                        push(k.value)
                args = x.args
                if args:
                    stack += args[::-1]
                f = x.func
                tf = type(f)
                if tf is _Name:
                    raw_append((src, CALLS, scope, f.id, ""))
                elif tf is _Attribute:
                    parts = [f.attr]
                    v = f.value
                    while type(v) is _Attribute:
                        parts.append(v.attr)
                        v = v.value
                    if type(v) is _Name:
                        parts.append("")
                        parts.reverse()
                        raw_append((src, CALLS, scope, v.id, ".".join(parts)))
                    else:
                        push(v)
                else:
                    push(f)
            elif t is _Attribute:
                push(x.value)
            elif t is _Lambda:
                self._lambda(x, scope, src)
            elif t in _COMPREHENSIONS:
                self._comprehension(x, scope, src)
            elif t is _NamedExpr:
                push(x.value)
                target = x.target
                s = scope
                while s.is_comp:
                    s = s.parent  # a walrus in a comprehension binds outside it
                s.bind(target.id, None)
            else:
                names = fields.get(t)
                if names is None:
                    if not isinstance(x, ast.AST):
                        continue
                    names = _generic_fields(t)
                for name in names:
                    v = getattr(x, name)
                    if v is None:
                        continue
                    if type(v) is list:
                        stack += v[::-1]
                    elif isinstance(v, ast.AST):
                        push(v)

    def _lambda(self, x: ast.Lambda, scope: _Scope, src: int) -> None:
        args = x.args
        for d in args.defaults:
            self._expr(d, scope, src)
        for d in args.kw_defaults:
            if d is not None:
                self._expr(d, scope, src)
        inner = _Scope(False, scope)
        for group in (args.posonlyargs, args.args, args.kwonlyargs):
            for a in group:
                inner.b[a.arg] = None
        for a in (args.vararg, args.kwarg):
            if a is not None:
                inner.b[a.arg] = None
        self._expr(x.body, inner, src)

    def _comprehension(self, x, scope: _Scope, src: int) -> None:
        gens = x.generators
        # The first iterable is evaluated in the enclosing scope.
        self._expr(gens[0].iter, scope, src)
        inner = _Scope(False, scope, True)
        for i, g in enumerate(gens):
            self._bind_local(g.target, inner, src)
            if i:
                self._expr(g.iter, inner, src)
            for cond in g.ifs:
                self._expr(cond, inner, src)
        if type(x) is ast.DictComp:
            self._expr(x.key, inner, src)
            self._expr(x.value, inner, src)
        else:
            self._expr(x.elt, inner, src)

    # ---- resolution -------------------------------------------------------- #

    def _lookup(self, scope: _Scope, name: str):
        """The binding ``name`` has where ``scope`` uses it, or _MISSING."""
        s = scope
        first = True
        while s is not None:
            if first or not s.is_class:
                v = s.b.get(name, _MISSING)
                if v is not _MISSING:
                    if v is _GLOBAL:
                        return self.module_scope.b.get(name, _MISSING)
                    if v is not _NONLOCAL:
                        return v
            first = False
            s = s.parent
        return _MISSING

    def _resolve(self) -> list:
        out: dict = {}
        lookup = self._lookup
        star = self.star
        cache: dict = {}
        for src, kind, scope, name, suffix in self.raw:
            if scope is None:
                out[(src, kind, name)] = None
                continue
            key = (id(scope), name)
            v = cache.get(key, _MISSING)
            if v is _MISSING:
                v = cache[key] = lookup(scope, name)
            if v is None:
                continue
            if type(v) is str:
                target = v + suffix
            elif v is _MISSING:
                if star is None or name in _BUILTINS:
                    continue
                target = star + "." + name + suffix
            elif type(v) is _Self:
                if suffix:
                    target = v.cls_qualname + suffix
                elif v.is_cls:
                    target = v.cls_qualname
                else:
                    continue
            else:  # a comprehension marker or other non-name binding
                continue
            out[(src, kind, target)] = None
        return list(out)


_STMT = {
    ast.FunctionDef: _Extractor._s_def,
    ast.AsyncFunctionDef: _Extractor._s_def,
    ast.ClassDef: _Extractor._s_class,
    ast.AnnAssign: _Extractor._s_annassign,
    ast.AugAssign: _Extractor._s_augassign,
    ast.Delete: _Extractor._s_delete,
    ast.For: _Extractor._s_for,
    ast.AsyncFor: _Extractor._s_for,
    ast.While: _Extractor._s_while_if,
    ast.If: _Extractor._s_while_if,
    ast.With: _Extractor._s_with,
    ast.AsyncWith: _Extractor._s_with,
    ast.Try: _Extractor._s_try,
    ast.Match: _Extractor._s_match,
    ast.Raise: _Extractor._s_simple,
    ast.Assert: _Extractor._s_simple,
    ast.Global: _Extractor._s_global,
    ast.Nonlocal: _Extractor._s_global,
    ast.Pass: _Extractor._s_pass,
    ast.Break: _Extractor._s_pass,
    ast.Continue: _Extractor._s_pass,
    ast.Import: _Extractor._s_import,
    ast.ImportFrom: _Extractor._s_importfrom,
}
if hasattr(ast, "TryStar"):
    _STMT[ast.TryStar] = _Extractor._s_try


def _cleandoc(doc: str) -> str:
    """inspect.cleandoc, without importing inspect in every worker."""
    lines = doc.expandtabs().split("\n")
    margin = None
    for line in lines[1:]:
        content = len(line.lstrip())
        if content:
            indent = len(line) - content
            if margin is None or indent < margin:
                margin = indent
    lines[0] = lines[0].lstrip()
    if margin is not None:
        for i in range(1, len(lines)):
            lines[i] = lines[i][margin:]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def parse_source(relpath: str, source: bytes, compression_threshold: int | None = 1024,
                 max_docstring_chars: int = 500) -> ParsedFile:
    """Extract the symbols, containment, references and imports of one Python file.

    Never raises for any ``source`` bytes: a file that cannot be decoded or parsed
    comes back with ``error`` set to a one-line reason and no records.
    """
    module = module_name_for(relpath)
    try:
        source = bytes(source)
        text = _decode(source)
        with warnings.catch_warnings():
            # Invalid escape sequences and the like warn at parse time; under
            # ``-W error`` that would fail a perfectly valid file.
            warnings.simplefilter("ignore")
            tree = ast.parse(text, relpath)
        ex = _Extractor(relpath, module, text, compression_threshold, max(0, max_docstring_chars))
        refs = ex.run(tree)
        return ParsedFile(module, None, ex.nodes, ex.edges, refs, ex.aliases)
    except Exception as e:  # noqa: BLE001 - every failure becomes a reason string
        try:
            reason = _format_error(e)
            if isinstance(e, UnicodeDecodeError) and isinstance(e.object, bytes):
                line = e.object.count(b"\n", 0, e.start) + 1
                reason += f" (line {line})"
        except Exception:  # pragma: no cover - a str() that raises
            reason = type(e).__name__
        return ParsedFile(module, reason, [], [], [], [])

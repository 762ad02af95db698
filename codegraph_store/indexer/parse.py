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
    the same qualified name in the file. Lines are 1-based; columns are the
    UTF-8 byte offsets :mod:`ast` reports. Defs and classes span from their
    keyword to their last line; variables, attributes and imports span the
    whole statement that binds them.
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
nothing that can be named. A name bound nowhere is a builtin (nothing), else
falls back to the module's first ``from X import *`` (``X.name``), else nothing.

Method calls on instances whose class is known statically are resolved too, one
level deep: ``C(...).m()`` calls ``T.m`` when the call ``C(...)`` resolves to
``T``, and so does ``x.m()`` when ``x`` is bound exactly once in its function
(or, for a module-level name, in the module) and that binding is a plain
``x = C(...)``: a name that is also a parameter, a loop, ``with`` or ``except``
target, augmented, walrus or otherwise assigned, imported, defined, deleted, or
declared ``global``/``nonlocal`` by a nested scope infers nothing. Uses in the
function itself and its comprehensions count, not uses in nested functions or
lambdas (module-level names excepted). ``x.a.m()`` and ``self.x.m()`` infer
nothing, and neither do class-level assignments. ``T`` need not be a class; if
it is a function, ``T.m`` never resolves.

Speed matters here (the whole standard library is indexed in seconds), which is
why expressions are walked with an explicit stack, metadata JSON is assembled
from the C string escaper, the source text of every line is JSON-escaped once
per file rather than once per enclosing symbol, and the cycle collector is
paused for the duration of a call (the trees are acyclic; see parse_source).
While parsing, warnings are silenced too. Both are process-wide switches,
restored on return: harmless in worker processes, but a thread running beside
a call sees them.
"""

from __future__ import annotations

import ast
import builtins
import codecs
import gc
import hashlib
import io
import json
import tokenize
import warnings
from typing import NamedTuple

from ..codec import encode_text_trusted
from ..kinds import EdgeKind, NodeKind
from ..model import MAX_NODE_ID

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


def parse_source(relpath: str, source: bytes, compression_threshold: int | None = 1024,
                 max_docstring_chars: int = 500) -> ParsedFile:
    """Extract the symbols, containment, references and imports of one Python file.

    Never raises for any ``source`` bytes: a file that cannot be decoded or parsed
    comes back with ``error`` set to a one-line reason and no records.
    """
    module = module_name_for(relpath)
    # The syntax tree and everything built from it are free of reference
    # cycles, so reference counting frees them all; the cycle collector would
    # only traverse the young tree again and again while it is built (a fifth
    # of ast.parse's time). It is paused for the call and restored after.
    gc_was_enabled = gc.isenabled()
    if gc_was_enabled:
        gc.disable()
    try:
        source = bytes(source)
        # The text is decoded here for the lines metadata is cut from; the
        # parser gets the bytes (faster than a str) and applies the same PEP 263
        # decoding and newline translation, so line numbers and the UTF-8
        # column offsets agree with the decoded lines.
        text = _decode(source)
        with warnings.catch_warnings():
            # Invalid escape sequences and the like warn at parse time; under
            # ``-W error`` that would fail a perfectly valid file.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, relpath)
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
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- #
# Helpers


def _decode(source: bytes) -> str:
    """Source bytes to text the way the tokenizer sees them (PEP 263, universal newlines)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as e:
        if "invalid or missing encoding declaration" in str(e):
            # No cookie and the first lines are not UTF-8: name the bad byte.
            source.decode("utf-8")
        if source.startswith(codecs.BOM_UTF8) and e.msg == "encoding problem: utf-8":
            # A UTF-8 BOM and a cookie naming another encoding: tokenize names
            # the BOM's encoding; name the declared one, as the interpreter does.
            declared, _ = tokenize.detect_encoding(io.BytesIO(source[len(codecs.BOM_UTF8):]).readline)
            raise SyntaxError(f"encoding problem: {declared} with BOM") from None
        raise
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


_esc = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses
_esc_ascii = json.encoder.encode_basestring_ascii


def _json_bytes(text: str) -> bytes:
    """UTF-8 of JSON text built with :data:`_esc`, as ``json.dumps(..., ensure_ascii=False)``."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (from a "\udcff" escape in a docstring, say) are not
        # UTF-8; \u-escaped JSON round-trips them exactly.
        return json.dumps(json.loads(text), ensure_ascii=True, separators=(",", ":")).encode()


def _json_str_list(values) -> str:
    return "[" + ",".join([_esc(v) for v in values]) + "]"


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
_BinOp = ast.BinOp
_Compare = ast.Compare
_UnaryOp = ast.UnaryOp
_BoolOp = ast.BoolOp
_Expr = ast.Expr
_Assign = ast.Assign
_Return = ast.Return
_If = ast.If
_FunctionDef = ast.FunctionDef
_AsyncFunctionDef = ast.AsyncFunctionDef
_DictComp = ast.DictComp
_COMPREHENSIONS = frozenset({ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp})

# Child expression fields of each expression type, in *reverse* source order
# (the walker pushes them on a stack). Types not listed fall back to _fields.
_EXPR_FIELDS: dict[type, tuple[str, ...]] = {
    ast.BoolOp: ("values",),
    ast.BinOp: ("right", "left"),
    ast.UnaryOp: ("operand",),
    ast.IfExp: ("orelse", "body", "test"),
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
    type(None): (),  # the None key of {**d}
}


def _generic_fields(t: type) -> tuple[str, ...]:
    fields = tuple(f for f in reversed(getattr(t, "_fields", ())) if f not in ("ctx", "op", "ops"))
    _EXPR_FIELDS[t] = fields
    return fields


_MISSING = object()
_GLOBAL = 1
_NONLOCAL = 2
#: _Scope.inst value of a name bound other than by exactly one ``x = C(...)``.
_BAD = 0
#: Raw ref kind of ``C(...).m()``: the call ``C(...)`` resolved, plus ``.m``.
_CALLS_ON_RESULT = -CALLS


class _Scope:
    """Names bound in one scope: name -> str target, None (a variable), a self tuple or a marker.

    ``inst`` (function and module scopes only, else None) maps each name whose
    first binding was a plain ``name = C(...)`` to the ``(root, suffix)`` of
    ``C``, or to _BAD once anything else binds it (or a nested scope declares it
    global/nonlocal, before or after).
    """

    __slots__ = ("is_class", "is_comp", "b", "parent", "inst")

    def __init__(self, is_class: bool, parent: "_Scope | None", is_comp: bool = False,
                 inst: dict | None = None):
        self.is_class = is_class
        self.is_comp = is_comp
        self.b: dict = {}
        self.parent = parent
        self.inst = inst

    def bind(self, name: str, value) -> None:
        # The first def/class/import binding wins over variables and later ones.
        b = self.b
        old = b.get(name, _MISSING)
        if old is _MISSING or (old is None and value is not None):
            b[name] = value
        inst = self.inst
        if inst and name in inst:
            inst[name] = _BAD


# The binding of a method's first parameter: (_SELF, class qualname, is a
# classmethod's cls). ``self.x`` is ``Class.x``; a bare ``cls`` is the class.
_SELF = "self"


class _Frame:
    """A module/class/def node being filled: where new symbols go and refs come from."""

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
        self.text = text
        self.lines = text.split("\n")
        self._elines = None
        self.threshold = threshold
        self.max_doc = max_doc
        self.nodes: list = []
        self.edges: list = []
        self.aliases: list = []
        self.raw: list = []  # (src, kind, scope, root name, suffix); scope None = resolved
        self.counts: dict[str, int] = {}
        self.star: str | None = None
        # Same key as model.stable_node_id, with the constant prefix encoded once.
        self.id_prefix = f"{relpath or ''}\x00".encode("utf-8", "surrogatepass")
        parts = module.split(".")
        if relpath.endswith("__init__.py") and relpath != "__init__.py":
            self.package = parts  # the package is the module itself
        else:
            self.package = parts[:-1]

    # ---- records ---------------------------------------------------------- #

    def _add(self, parent: _Frame | None, kind: int, name: str, qn: str, sl: int, sc: int,
             el: int, ec: int, meta_json: str | None) -> int:
        counts = self.counts
        disc = counts.get(qn, 0)
        counts[qn] = disc + 1
        key = self.id_prefix + f"{qn}\x00{disc}".encode("utf-8", "surrogatepass")
        node_id = (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
                   & MAX_NODE_ID) or 1
        blob = None if meta_json is None else encode_text_trusted(_json_bytes(meta_json),
                                                                   self.threshold)
        self.nodes.append((node_id, kind, name, qn, sl, sc, el, ec, blob))
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

    def _source_json(self, first: int, last: int) -> str:
        """JSON string of lines ``first..last`` (1-based, inclusive) joined with newlines."""
        el = self._elines
        if el is None:
            # Escape the file once: one C call instead of one per enclosing symbol.
            # The lines are joined with a character the escaper keeps as it is
            # and the file does not contain, then split again. Pure ASCII text
            # (without DEL, which only the ASCII escaper escapes) can use the
            # faster ASCII escaper, whose output is then the same.
            lines = self.lines
            text = self.text
            el = None
            if text.isascii() and "\x7f" not in text:
                for sep in "`$?~!^":
                    if sep not in text:
                        el = _esc_ascii(sep.join(lines))[1:-1].split(sep)
                        break
            if el is None:
                for sep in ("\x7f", "\ue000", "\U0010fffd"):
                    if sep not in text:
                        el = _esc(sep.join(lines))[1:-1].split(sep)
                        break
                else:  # pragma: no cover - a file holding all three
                    el = [_esc(line)[1:-1] for line in lines]
            self._elines = el
        return '"' + "\\n".join(el[first - 1:last]) + '"'

    def _segment(self, node) -> str:
        """Source text of an expression, on one line."""
        line_no = node.lineno
        if line_no == node.end_lineno:
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

    def _variable_json(self, st, annotation) -> str:
        meta = '{"source":' + _esc(self._text(st, MAX_VARIABLE_SOURCE))
        if annotation is not None:
            meta += ',"annotation":' + _esc(self._segment(annotation))
        return meta + "}"

    # ---- statements -------------------------------------------------------- #

    def run(self, tree: ast.Module) -> list:
        module = self.module
        lines = self.lines
        n_lines = len(lines)
        if n_lines > 1 and lines[-1] == "":
            n_lines -= 1
        last = lines[n_lines - 1]
        end_col = len(last) if last.isascii() else len(last.encode("utf-8"))
        doc = self._docstring(tree.body)
        scope = _Scope(False, None, False, {})
        self.module_scope = scope
        mod_id = self._add(None, MODULE, module.rpartition(".")[2] or module, module,
                           1, 0, n_lines, end_col,
                           '{"docstring":' + _esc(doc) + "}" if doc else None)
        frame = _Frame(mod_id, module, MODULE, scope)
        self.module_frame = frame
        # One top-level statement at a time, each subtree freed as soon as it is
        # done (while it is still in the CPU cache), which also keeps the peak
        # memory of a big file down. Nothing kept refers to the tree.
        body = tree.body
        del tree
        for i in range(len(body)):
            self._body(body[i:i + 1], frame)
            body[i] = None
        return self._resolve()

    def _body(self, stmts, fr: _Frame) -> None:
        expr = self._expr
        scope = fr.scope
        src = fr.id
        in_function = fr.kind == FUNCTION
        for st in stmts:
            t = type(st)
            if t is _Expr:
                v = st.value
                tv = type(v)
                if tv is not _Constant and tv is not _Name:
                    expr(v, scope, src)
            elif t is _Assign:
                v = st.value
                tv = type(v)
                if tv is not _Constant and tv is not _Name:
                    expr(v, scope, src)
                targets = st.targets
                if tv is _Call and len(targets) == 1 and type(targets[0]) is _Name \
                        and scope.inst is not None:
                    self._assign_call(targets[0], v, fr, st)
                    continue
                for target in targets:
                    if in_function and type(target) is _Name:
                        scope.bind(target.id, None)
                    else:
                        self._target(target, fr, st, None)
            elif t is _Return:
                v = st.value
                if v is not None:
                    tv = type(v)
                    if tv is not _Constant and tv is not _Name:
                        expr(v, scope, src)
            elif t is _If:
                expr(st.test, scope, src)
                self._body(st.body, fr)
                if st.orelse:
                    self._body(st.orelse, fr)
            elif t is _FunctionDef or t is _AsyncFunctionDef:
                self._s_def(st, fr)
            else:
                handler = _STMT.get(t)
                if handler is None:
                    self._generic_stmt(st, fr)
                else:
                    handler(self, st, fr)

    def _assign_call(self, target: ast.Name, call: ast.Call, fr: _Frame, st) -> None:
        """Bind ``name = C(...)`` in a function or the module; note ``C`` for inference."""
        name = target.id
        scope = fr.scope
        inst = scope.inst
        fresh = name not in scope.b and name not in inst
        if fr.kind == FUNCTION:
            scope.bind(name, None)
        else:
            self._target(target, fr, st, None)
        # Bound before (or poisoned by a global/nonlocal elsewhere), or C(...)
        # is not a dotted name: nothing to infer, ever.
        inst[name] = (_dotted(call.func) or _BAD) if fresh else _BAD

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

    def _s_def(self, st, fr: _Frame) -> None:
        scope = fr.scope
        decorators = st.decorator_list
        is_static = is_classmethod = False
        for d in decorators:
            # Calls (and odd expressions) run in the enclosing scope; plain
            # dotted names become REFERENCES from the function, below.
            td = type(d)
            if td is _Name:
                last = d.id
            elif td is _Attribute and _dotted(d) is not None:
                last = d.attr
            else:
                self._expr(d, scope, fr.id)
                continue
            if last == "staticmethod":
                is_static = True
            elif last == "classmethod":
                is_classmethod = True

        args = st.args
        positional = args.args
        params = [a.arg for a in positional]
        simple = not (args.defaults or args.posonlyargs or args.vararg or args.kwonlyargs
                      or args.kwarg or st.returns)
        if simple:
            for a in positional:
                if a.annotation is not None:
                    simple = False
                    break
        if simple:
            signature = "(" + ", ".join(params) + ")"
        else:
            signature = self._signature(st, fr, params)
            if args.posonlyargs:
                positional = args.posonlyargs + positional

        name = st.name
        qn = fr.qn + "." + name
        meta = '{"signature":' + _esc(signature)
        doc = self._docstring(st.body)
        if doc:
            meta += ',"docstring":' + _esc(doc)
        first = st.lineno
        if decorators:
            seg = self._segment
            meta += ',"decorators":' + _json_str_list([seg(d) for d in decorators])
            for d in decorators:
                if d.lineno < first:
                    first = d.lineno
        if type(st) is _AsyncFunctionDef:
            meta += ',"async":true'
        meta += ',"source":' + self._source_json(first, st.end_lineno) + "}"
        is_method = fr.kind == CLASS
        node_id = self._add(fr, METHOD if is_method else FUNCTION, name, qn, st.lineno,
                            st.col_offset, st.end_lineno, st.end_col_offset, meta)
        scope.bind(name, qn)
        if decorators:
            self._decorator_refs(decorators, node_id, scope)

        inner = _Scope(False, scope, False, {})
        b = inner.b
        self_name = None
        if is_method and not is_static and positional:
            self_name = positional[0].arg
            b[self_name] = (_SELF, fr.qn, is_classmethod)
        for p in params:
            if p not in b:
                b[p] = None
        self._body(st.body, _Frame(node_id, qn, FUNCTION, inner, self_name,
                                   fr if self_name is not None else None))

    def _signature(self, st, fr: _Frame, params: list) -> str:
        """``(a, b=1, *, c: int = 2) -> str``; walks defaults and annotations, which are
        evaluated in the enclosing scope, and adds the other parameter names to ``params``."""
        scope = fr.scope
        src = fr.id
        expr = self._expr
        seg = self._segment
        args = st.args
        posonly = args.posonlyargs
        positional = posonly + args.args if posonly else args.args
        if posonly:
            params[:0] = [a.arg for a in posonly]
        defaults = args.defaults
        first_default = len(positional) - len(defaults)
        sig = []
        for i, a in enumerate(positional):
            ann = a.annotation
            if ann is None:
                text = a.arg
            else:
                expr(ann, scope, src)
                text = a.arg + ": " + seg(ann)
            if i >= first_default:
                d = defaults[i - first_default]
                expr(d, scope, src)
                text += ("=" if ann is None else " = ") + seg(d)
            sig.append(text)
            if posonly and i == len(posonly) - 1:
                sig.append("/")
        a = args.vararg
        if a is not None:
            params.append(a.arg)
            if a.annotation is None:
                sig.append("*" + a.arg)
            else:
                expr(a.annotation, scope, src)
                sig.append("*" + a.arg + ": " + seg(a.annotation))
        elif args.kwonlyargs:
            sig.append("*")
        for a, d in zip(args.kwonlyargs, args.kw_defaults):
            params.append(a.arg)
            ann = a.annotation
            if ann is None:
                text = a.arg
            else:
                expr(ann, scope, src)
                text = a.arg + ": " + seg(ann)
            if d is not None:
                expr(d, scope, src)
                text += ("=" if ann is None else " = ") + seg(d)
            sig.append(text)
        a = args.kwarg
        if a is not None:
            params.append(a.arg)
            if a.annotation is None:
                sig.append("**" + a.arg)
            else:
                expr(a.annotation, scope, src)
                sig.append("**" + a.arg + ": " + seg(a.annotation))
        signature = "(" + ", ".join(sig) + ")"
        if st.returns is not None:
            expr(st.returns, scope, src)
            signature += " -> " + seg(st.returns)
        return signature

    def _decorator_refs(self, decorators, node_id: int, scope: _Scope) -> None:
        for d in decorators:
            if type(d) is not _Call:
                dn = _dotted(d)
                if dn is not None:
                    self.raw.append((node_id, REFERENCES, scope, dn[0], dn[1]))

    def _s_class(self, st: ast.ClassDef, fr: _Frame) -> None:
        scope = fr.scope
        src = fr.id
        expr = self._expr
        seg = self._segment
        decorators = st.decorator_list
        for d in decorators:
            if _dotted(d) is None:
                expr(d, scope, src)
        for b in st.bases:
            expr(b, scope, src)
        for k in st.keywords:
            expr(k.value, scope, src)
        name = st.name
        qn = fr.qn + "." + name
        parts = []
        if st.bases:
            parts.append('"bases":' + _json_str_list([seg(b) for b in st.bases]))
        doc = self._docstring(st.body)
        if doc:
            parts.append('"docstring":' + _esc(doc))
        first = st.lineno
        if decorators:
            parts.append('"decorators":' + _json_str_list([seg(d) for d in decorators]))
            for d in decorators:
                if d.lineno < first:
                    first = d.lineno
        parts.append('"source":' + self._source_json(first, st.end_lineno))
        node_id = self._add(fr, CLASS, name, qn, st.lineno, st.col_offset,
                            st.end_lineno, st.end_col_offset, "{" + ",".join(parts) + "}")
        scope.bind(name, qn)
        if decorators:
            self._decorator_refs(decorators, node_id, scope)
        raw = self.raw
        for b in st.bases:
            if type(b) is _Subscript:  # Generic[T], Mapping[str, int]
                b = b.value
            dn = _dotted(b)
            if dn is not None:
                raw.append((node_id, INHERITS, scope, dn[0], dn[1]))

        body_frame = _Frame(node_id, qn, CLASS, _Scope(True, scope))
        body_frame.attrs = attrs = {}
        self._body(st.body, body_frame)
        # self.x = ... in the methods: one attribute per name the class body
        # did not already define.
        counts = self.counts
        for attr, (stmt, annotation) in attrs.items():
            aqn = qn + "." + attr
            if aqn not in counts:
                self._add(body_frame, ATTRIBUTE, attr, aqn, stmt.lineno, stmt.col_offset,
                          stmt.end_lineno, stmt.end_col_offset,
                          self._variable_json(stmt, annotation))

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
                    self._add(fr, VARIABLE if kind == MODULE else ATTRIBUTE, name, qn,
                              st.lineno, st.col_offset, st.end_lineno, st.end_col_offset,
                              self._variable_json(st, annotation))
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
        """Bind the names of a for/with/except/comprehension target as variables."""
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

    def _s_while(self, st, fr: _Frame) -> None:
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
            # Patterns hold no calls; their capture names are variables.
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

    def _s_exprs(self, st, fr: _Frame) -> None:
        # Raise, Assert: every expression field.
        for name in st._fields:
            v = getattr(st, name)
            if v is not None:
                self._expr(v, fr.scope, fr.id)

    def _s_global(self, st, fr: _Frame) -> None:
        if fr.kind != MODULE:
            is_global = type(st) is ast.Global
            marker = _GLOBAL if is_global else _NONLOCAL
            scope = fr.scope
            b = scope.b
            # The names may be rebound here, so whatever binds them outside
            # (the module; every enclosing function, to be safe) infers nothing.
            if is_global:
                outer = [scope.inst, self.module_scope.inst]
            else:
                outer = [scope.inst]
                s = scope.parent
                while s is not None and s.parent is not None:  # not the module
                    outer.append(s.inst)
                    s = s.parent
            for name in st.names:
                b[name] = marker
                for inst in outer:
                    if inst is not None:
                        inst[name] = _BAD

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
            # Above the top of the tree: keep the relative text; it never resolves.
            return "." * level + (module or "")
        parts = package[:len(package) - (level - 1)]
        if module:
            parts = parts + [module]
        return ".".join(parts)

    def _import_node(self, fr: _Frame, st, bound: str, target: str) -> None:
        node_id = self._add(fr, IMPORT, bound, fr.qn + "." + bound, st.lineno, st.col_offset,
                            st.end_lineno, st.end_col_offset, '{"target":' + _esc(target) + "}")
        self.aliases.append((node_id, target))
        fr.scope.bind(bound, target)

    # ---- expressions ------------------------------------------------------- #

    def _expr(self, node, scope: _Scope, src: int) -> None:
        """Record every call in an expression; descend into lambdas and comprehensions."""
        t = type(node)
        if t is _Name or t is _Constant:
            return
        if t is _Attribute:  # self.x, a.b.c: nothing to record
            node = node.value
            while type(node) is _Attribute:
                node = node.value
            t = type(node)
            if t is _Name or t is _Constant:
                return
        raw_append = self.raw.append
        stack = [node]
        pop = stack.pop
        push = stack.append
        while stack:
            x = pop()
            t = type(x)
            # Children are pushed in reverse so that calls come out in source order.
            if t is _Call:
                keywords = x.keywords
                if keywords:
                    for k in reversed(keywords):
                        push(k.value)
                args = x.args
                if args:
                    if len(args) == 1:
                        a = args[0]
                        ta = type(a)
                        if ta is not _Name and ta is not _Constant:
                            push(a)
                    else:
                        stack += args[::-1]
                f = x.func
                tf = type(f)
                if tf is _Name:
                    raw_append((src, CALLS, scope, f.id, ""))
                elif tf is _Attribute:
                    v = f.value
                    if type(v) is _Name:
                        raw_append((src, CALLS, scope, v.id, "." + f.attr))
                        continue
                    parts = [f.attr]
                    while type(v) is _Attribute:
                        parts.append(v.attr)
                        v = v.value
                    if type(v) is _Name:
                        parts.append("")
                        parts.reverse()
                        raw_append((src, CALLS, scope, v.id, ".".join(parts)))
                    elif type(v) is _Call and len(parts) == 1:
                        # C(...).m(): T.m where the call C(...) resolves to T,
                        # recorded after C(...)'s own calls, before .m()'s args.
                        dn = _dotted(v.func)
                        if dn is not None:
                            push((src, _CALLS_ON_RESULT, scope, dn[0], dn[1] + "." + f.attr))
                        push(v)
                    else:
                        push(v)  # f().x(), a[0].b(), "".join()
                else:
                    push(f)
            elif t is _Name or t is _Constant:
                continue
            elif t is _Attribute:
                v = x.value
                while type(v) is _Attribute:
                    v = v.value
                if type(v) is not _Name:
                    push(v)
            elif t is _Tuple or t is _List:
                stack += x.elts[::-1]
            elif t is _BinOp:
                push(x.right)
                push(x.left)
            elif t is _Subscript:
                push(x.slice)
                push(x.value)
            elif t is _Compare:
                stack += x.comparators[::-1]
                push(x.left)
            elif t is _UnaryOp:
                push(x.operand)
            elif t is _BoolOp:
                stack += x.values[::-1]
            elif t is _Lambda:
                self._lambda(x, scope, src)
            elif t in _COMPREHENSIONS:
                self._comprehension(x, scope, src)
            elif t is _NamedExpr:
                push(x.value)
                s = scope
                while s.is_comp:  # a walrus in a comprehension binds outside it
                    s = s.parent
                s.bind(x.target.id, None)
            elif t is tuple:  # a raw ref pushed to come out in source order
                raw_append(x)
            else:
                names = _EXPR_FIELDS.get(t)
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
        if type(x) is _DictComp:
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

    def _resolve_call(self, scope: _Scope, name: str, suffix: str) -> str | None:
        """What the call ``name + suffix`` made in ``scope`` resolves to, as in _resolve."""
        v = scope.b.get(name, _MISSING)
        if v is _MISSING or type(v) is int:
            v = self._lookup(scope, name)
        t = type(v)
        if t is str:
            return v + suffix
        if v is _MISSING:
            if self.star is None or name in _BUILTINS:
                return None
            return self.star + "." + name + suffix
        if t is tuple and (suffix or v[2]):
            return v[1] + suffix
        return None

    def _inferred(self, scope: _Scope, name: str, suffix: str) -> str | None:
        """``T.m`` for a call ``name.m`` on a variable bound once to ``C(...)``, ``C`` -> T."""
        s = scope
        first = True
        local = True  # still in the function (or class body) the call is made in
        while s is not None:
            if first or not s.is_class:
                v = s.b.get(name, _MISSING)
                if v is _GLOBAL:
                    s = self.module_scope
                    break
                if v is not _MISSING and v is not _NONLOCAL:
                    break
            if not s.is_comp:
                local = False
            first = False
            s = s.parent
        if s is None or s.inst is None or not (local or s.parent is None):
            return None
        c = s.inst.get(name)
        if not c:  # None or _BAD
            return None
        t = self._resolve_call(s, c[0], c[1])
        return None if t is None else t + suffix

    def _resolve(self) -> list:
        out: dict = {}
        lookup = self._lookup
        star = self.star
        missing = _MISSING
        # Identical raw refs (the same call made twice in a scope) resolve alike.
        for src, kind, scope, name, suffix in dict.fromkeys(self.raw):
            if scope is None:
                out[(src, kind, name)] = None
                continue
            if kind == _CALLS_ON_RESULT:
                inner, _, attr = suffix.rpartition(".")
                target = self._resolve_call(scope, name, inner)
                if target is not None:
                    out[(src, CALLS, target + "." + attr)] = None
                continue
            v = scope.b.get(name, missing)
            if v is missing or type(v) is int:  # not local, or global/nonlocal
                v = lookup(scope, name)
            t = type(v)
            if t is str:
                target = v + suffix
            elif v is None:
                # x.m() on a variable: T.m if x = C(...) is its one binding.
                if kind != CALLS or suffix.rfind(".") != 0:
                    continue
                if name in scope.b:  # bound right here, the usual case
                    inst = scope.inst
                    if not inst or not inst.get(name):
                        continue
                target = self._inferred(scope, name, suffix)
                if target is None:
                    continue
            elif v is missing:
                if star is None or name in _BUILTINS:
                    continue
                target = star + "." + name + suffix
            elif t is tuple:  # (_SELF, class qualname, is_cls)
                if suffix:
                    target = v[1] + suffix
                elif v[2]:
                    target = v[1]
                else:
                    continue
            else:
                continue
            out[(src, kind, target)] = None
        return list(out)


_STMT = {
    ast.ClassDef: _Extractor._s_class,
    ast.AnnAssign: _Extractor._s_annassign,
    ast.AugAssign: _Extractor._s_augassign,
    ast.Delete: _Extractor._s_delete,
    ast.For: _Extractor._s_for,
    ast.AsyncFor: _Extractor._s_for,
    ast.While: _Extractor._s_while,
    ast.With: _Extractor._s_with,
    ast.AsyncWith: _Extractor._s_with,
    ast.Try: _Extractor._s_try,
    ast.Match: _Extractor._s_match,
    ast.Raise: _Extractor._s_exprs,
    ast.Assert: _Extractor._s_exprs,
    ast.Global: _Extractor._s_global,
    ast.Nonlocal: _Extractor._s_global,
    ast.Pass: _Extractor._s_pass,
    ast.Break: _Extractor._s_pass,
    ast.Continue: _Extractor._s_pass,
    ast.Import: _Extractor._s_import,
    ast.ImportFrom: _Extractor._s_importfrom,
}
if hasattr(ast, "TryStar"):  # 3.11+
    _STMT[ast.TryStar] = _Extractor._s_try

"""The records users put in and get out: :class:`Node`, :class:`Edge`, :class:`FileInfo`.

They are plain frozen attrs classes without per-field validators: construction
sits on the ingest hot path, so validation happens once, in bulk, where records
enter the store (:func:`validate_node`, :func:`validate_edge`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from .errors import InvalidArgumentError, InvalidTypeError
from .kinds import EdgeKind, NodeKind

MAX_NODE_ID = (1 << 63) - 1


def stable_node_id(file: str | None, qualname: str, discriminator: int = 0) -> int:
    """A 63-bit id that depends only on where a symbol lives and what it is called.

    Re-indexing the same symbol in the same file yields the same id, so caches and
    embeddings keyed by id stay valid. ``discriminator`` separates symbols that share
    a qualified name in one file (a function redefined under ``if``/``else``).
    """
    key = f"{file or ''}\x00{qualname}\x00{discriminator}".encode("utf-8", "surrogatepass")
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & MAX_NODE_ID
    return value or 1


@attrs.frozen(slots=True)
class Node:
    """A symbol: module, class, function, method, variable, import, ...

    ``qualname`` is the fully qualified dotted name (``json.decoder.JSONDecoder``);
    ``file`` is the path relative to the indexed root, or ``None`` for nodes that
    belong to no file. Lines are 1-based and inclusive, columns 0-based.
    ``metadata`` is any JSON-compatible value.
    """

    id: int
    kind: NodeKind
    name: str
    qualname: str
    file: str | None = None
    start_line: int = 0
    start_col: int = 0
    end_line: int = 0
    end_col: int = 0
    metadata: Any = None

    @classmethod
    def new(cls, kind: NodeKind | str | int, name: str, qualname: str | None = None,
            file: str | None = None, start_line: int = 0, start_col: int = 0,
            end_line: int | None = None, end_col: int = 0, metadata: Any = None,
            discriminator: int = 0) -> "Node":
        """Build a node whose id is :func:`stable_node_id` of its file and qualname."""
        qualname = name if qualname is None else qualname
        return cls(
            id=stable_node_id(file, qualname, discriminator),
            kind=NodeKind.parse(kind),
            name=name,
            qualname=qualname,
            file=file,
            start_line=start_line,
            start_col=start_col,
            end_line=start_line if end_line is None else end_line,
            end_col=end_col,
            metadata=metadata,
        )


@attrs.frozen(slots=True)
class Edge:
    """A directed relation ``src --kind--> dst`` between two node ids."""

    src: int
    kind: EdgeKind
    dst: int
    metadata: Any = None


@attrs.frozen(slots=True)
class FileInfo:
    """One indexed file: where it is, what it held when indexed, and why it was skipped."""

    path: str
    language: str | None
    module: str | None
    content_hash: str | None
    size: int
    parse_error: str | None
    node_count: int


def _check_id(value: Any, what: str) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__}")
        value = int(value)
    if not 0 < value <= MAX_NODE_ID:
        raise InvalidArgumentError(f"{what} must be in 1..2**63-1, got {value}")
    return value


def check_node_id(value: Any) -> int:
    """Validate a node id given by a caller; returns it as a plain int."""
    return _check_id(value, "node id")


def validate_node(node: Any, _checked_paths: set | None = None) -> Node:
    """Reject a node the store cannot hold faithfully, with an error naming the field.

    ``_checked_paths`` lets a batch validate each distinct file path once.
    """
    if type(node) is not Node:
        if not isinstance(node, Node):
            raise InvalidTypeError(f"expected Node, got {type(node).__name__}")
    node_id = node.id
    if type(node_id) is not int or not 0 < node_id <= MAX_NODE_ID:
        _check_id(node_id, "Node.id")
    if type(node.kind) is not NodeKind:
        if not isinstance(node.kind, NodeKind):
            NodeKind.parse(node.kind)  # raises the precise error
            raise InvalidTypeError("Node.kind must be a NodeKind (use Node.new to convert names)")
    for field, value in (("name", node.name), ("qualname", node.qualname)):
        if type(value) is not str:
            raise InvalidTypeError(f"Node.{field} must be str, got {type(value).__name__}")
        if not value or (value[0].isspace() or value[-1].isspace()) and not value.strip():
            raise InvalidArgumentError(f"Node.{field} must not be empty (node {node_id})")
        if not value.isascii() or "\x00" in value:
            _check_text(value, f"Node.{field}")
    file = node.file
    if file is not None and (_checked_paths is None or file not in _checked_paths):
        check_path(file)
        if _checked_paths is not None:
            _checked_paths.add(file)
    start, end, scol, ecol = node.start_line, node.end_line, node.start_col, node.end_col
    if type(start) is not int or type(end) is not int or type(scol) is not int or type(ecol) is not int:
        for field, value in (("start_line", start), ("end_line", end),
                             ("start_col", scol), ("end_col", ecol)):
            if type(value) is not int:
                raise InvalidTypeError(f"Node.{field} must be int, got {type(value).__name__}")
    if start < 0 or end < 0 or scol < 0 or ecol < 0:
        for field, value in (("start_line", start), ("end_line", end),
                             ("start_col", scol), ("end_col", ecol)):
            if value < 0:
                raise InvalidArgumentError(
                    f"Node.{field} must be >= 0, got {value} (node {node.qualname})")
    if end < start or (end == start and ecol < scol and end != 0):
        raise InvalidArgumentError(
            f"node {node.qualname}: range {start}:{scol}-{end}:{ecol} is reversed")
    return node


def validate_edge(edge: Any) -> Edge:
    """Reject a malformed edge; whether its endpoints exist is checked at commit."""
    if not isinstance(edge, Edge):
        raise InvalidTypeError(f"expected Edge, got {type(edge).__name__}")
    _check_id(edge.src, "Edge.src")
    _check_id(edge.dst, "Edge.dst")
    if not isinstance(edge.kind, EdgeKind):
        EdgeKind.parse(edge.kind)
        raise InvalidTypeError("Edge.kind must be an EdgeKind")
    return edge


def check_path(path: Any) -> str:
    """A file path as the store keeps it: relative, '/'-separated, valid UTF-8."""
    if not isinstance(path, str):
        raise InvalidTypeError(f"file path must be str, got {type(path).__name__}")
    if not path or not path.strip():
        raise InvalidArgumentError("file path must not be empty")
    _check_text(path, "file path")
    return path


def _check_text(value: str, what: str) -> None:
    # Surrogates come from undecodable bytes (os.fsdecode); SQLite would store them
    # as invalid UTF-8, so they are refused here rather than corrupting the file.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid UTF-8: {value!r}") from None
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} contains a NUL character: {value!r}")

"""Typed errors of codegraph_store.

Every error the library raises on purpose derives from :class:`CodegraphError`
and, where one fits, from the matching builtin too (the PyNaCl pattern), so
callers can catch either ``codegraph_store.errors.InvalidArgumentError`` or a
plain ``ValueError``.
"""

from __future__ import annotations


class CodegraphError(Exception):
    """Base class of every error raised by codegraph_store."""


class InvalidArgumentError(CodegraphError, ValueError):
    """An argument has the right type but a value the store cannot accept."""


class InvalidTypeError(CodegraphError, TypeError):
    """An argument has the wrong type."""


class ConfigError(CodegraphError, ValueError):
    """The configuration names an unknown key or gives a value of the wrong type."""


class NotFoundError(CodegraphError, LookupError):
    """A node, file or path that was asked for does not exist."""


class DanglingEdgeError(InvalidArgumentError):
    """An edge names a source or destination node that does not exist.

    ``edges`` holds the offending ``(src, kind, dst)`` triples (at most a few).
    """

    def __init__(self, message: str, edges: list[tuple[int, int, int]] | None = None):
        super().__init__(message)
        self.edges = edges or []


class ReadOnlyError(CodegraphError, PermissionError):
    """A write was attempted through a store opened with ``readonly=True``."""


class StoreClosedError(CodegraphError, RuntimeError):
    """The store was used after :meth:`Store.close`."""


class TransactionError(CodegraphError, RuntimeError):
    """A transaction was used in a way that cannot work (e.g. from another thread)."""


class BusyError(CodegraphError, TimeoutError):
    """Another connection held the write lock for longer than the busy timeout."""


class NotAStoreError(CodegraphError, ValueError):
    """The file is not a codegraph store (not SQLite, or a foreign SQLite database)."""


class SchemaTooNewError(CodegraphError, RuntimeError):
    """The file was written by a newer codegraph_store whose schema this one does not know."""


class CorruptStoreError(CodegraphError, RuntimeError):
    """The file is damaged: truncated, failing an integrity check, or holding invalid data."""


class StoreIOError(CodegraphError, OSError):
    """The operating system refused a read or write (disk full, I/O error)."""


class IndexingError(CodegraphError, RuntimeError):
    """Indexing could not run at all (the root is missing, the workers died)."""

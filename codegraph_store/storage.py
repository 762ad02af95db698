"""SQLite connections through APSW: opening, pragmas, file checks, error mapping.

Each connection property is set by one small named function (the APSW
"bestpractice" style) and :func:`connect` applies them together, so what a
connection promises can be read in one place.

Durability (``durability=``):

``"normal"`` (default)
    WAL with ``synchronous=NORMAL``. Every committed transaction survives a
    crash of the process; after a power loss or OS crash the file is always
    consistent but the last transactions before the loss may be missing.
``"full"``
    WAL with ``synchronous=FULL``: the WAL is synced at every commit, so a
    committed transaction also survives power loss, at the cost of an fsync
    per commit.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator

import apsw

from . import errors

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x43474442  # "CGDB"
BUSY_TIMEOUT_MS = 5000
DURABILITY = {"normal": "NORMAL", "full": "FULL"}
# Internal: the SQLite VFS every store connection opens with (None: SQLite's
# default). Not an option of the public API; the reliability tests point it at
# APSW shims that inject I/O errors or simulate power loss.
VFS_NAME: str | None = None


class translated_errors:
    """``with translated_errors(path):`` re-raises APSW errors (and text that is not
    UTF-8) as the typed errors of :mod:`codegraph_store.errors`. A plain class, not a generator: it wraps every
    query, and a generator-based context manager costs microseconds per use."""

    __slots__ = ("path",)

    def __init__(self, path: str = ""):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if kind is not None and issubclass(kind, UnicodeDecodeError):
            # APSW decodes TEXT columns as UTF-8: bytes that are not come from a
            # damaged or crafted file (SQLite itself never checks them).
            raise errors.CorruptStoreError(f"{self.path}: text in the database is not valid UTF-8"
                                           f" ({error})") from error
        if kind is None or not issubclass(kind, apsw.Error):
            return False
        typed = translate(error, self.path)
        if typed is error:
            return False
        raise typed from error


def translate(e: apsw.Error, path: str) -> Exception:
    """The typed error for an APSW error (the APSW error itself if none fits)."""
    if isinstance(e, apsw.BusyError):
        return errors.BusyError(f"{path}: database is locked by another writer ({e})")
    if isinstance(e, apsw.NotADBError):
        return errors.NotAStoreError(f"{path}: not a SQLite database ({e})")
    if isinstance(e, apsw.CorruptError):
        return errors.CorruptStoreError(f"{path}: database file is damaged ({e})")
    if isinstance(e, apsw.ReadOnlyError):
        return errors.ReadOnlyError(f"{path}: the database cannot be written ({e})")
    if isinstance(e, (apsw.FullError, apsw.IOError, apsw.CantOpenError)):
        return errors.StoreIOError(f"{path}: {e}")
    return e


def check_file_header(path: str) -> None:
    """Refuse a file that is not SQLite, or is shorter than its header says.

    An empty or missing file is fine (it becomes a new store). The length check
    is skipped while a WAL file exists, since the WAL may hold the newer pages.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise errors.NotAStoreError(f"{path}: not a codegraph store (not a SQLite file)")
    if len(header) < 100:
        raise errors.CorruptStoreError(f"{path}: file is truncated ({size} bytes)")
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise errors.CorruptStoreError(f"{path}: header has an invalid page size {page_size}")
    pages, = struct.unpack(">I", header[28:32])
    change_counter, valid_for = struct.unpack(">I", header[24:28]), struct.unpack(">I", header[92:96])
    wal = path + "-wal"
    wal_present = os.path.exists(wal) and os.path.getsize(wal) > 0
    if change_counter == valid_for and not wal_present and pages * page_size > size:
        raise errors.CorruptStoreError(
            f"{path}: file is truncated ({size} bytes; its header says {pages * page_size})")


def _set_busy_timeout(conn: apsw.Connection) -> None:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)


def _set_defensive(conn: apsw.Connection) -> None:
    # A file from a stranger must not be able to run functions with side effects
    # from its views or triggers, nor corrupt itself through writable_schema.
    conn.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.pragma("trusted_schema", False)
    conn.pragma("cell_size_check", True)


def _load_sqlite_vec(conn: apsw.Connection) -> None:
    # The extension comes from the installed sqlite-vec package, never from a path
    # a file names; loading is switched back off at once so SQL cannot load more.
    import sqlite_vec
    conn.enable_load_extension(True)
    try:
        conn.load_extension(sqlite_vec.loadable_path())
    finally:
        conn.enable_load_extension(False)


def _register_functions(conn: apsw.Connection) -> None:
    """``cg_metadata(blob)``: a metadata record as JSON text, for SQL users."""
    from . import codec

    def cg_metadata(blob):
        if blob is None:
            return None
        return json.dumps(codec.decode(blob), ensure_ascii=False)

    conn.create_scalar_function("cg_metadata", cg_metadata, 1, deterministic=True)


def _set_foreign_keys(conn: apsw.Connection) -> None:
    conn.pragma("foreign_keys", True)


def _set_cache(conn: apsw.Connection, cache_kib: int) -> None:
    conn.pragma("cache_size", -int(cache_kib))
    conn.pragma("temp_store", "MEMORY")


def connect(path: str, *, readonly: bool, durability: str = "normal", cache_kib: int = 32768,
            create: bool = False) -> apsw.Connection:
    """Open one connection with every property of a store connection applied."""
    if durability not in DURABILITY:
        raise errors.InvalidArgumentError(
            f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}")
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    else:
        flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    flags |= apsw.SQLITE_OPEN_NOMUTEX  # each connection is used by one thread at a time
    with translated_errors(path):
        conn = apsw.Connection(path, flags=flags, vfs=VFS_NAME)
        try:
            _set_busy_timeout(conn)
            _set_defensive(conn)
            _set_foreign_keys(conn)
            _set_cache(conn, cache_kib)
            _load_sqlite_vec(conn)
            _register_functions(conn)
            if readonly:
                conn.pragma("query_only", True)
            else:
                conn.pragma("synchronous", DURABILITY[durability])
        except BaseException:
            conn.close()
            raise
    return conn


def enable_wal(conn: apsw.Connection) -> None:
    """Switch the file to WAL. Done only once the file is known to be ours: it
    rewrites the header, and a refused foreign file must be left untouched."""
    mode = conn.pragma("journal_mode", "wal")
    if str(mode).lower() != "wal":
        raise errors.StoreIOError(f"cannot switch the database to WAL mode (got {mode})")


def data_version(conn: apsw.Connection) -> int:
    """Changes whenever another connection (any process) commits to the file.

    """
    return conn.execute("PRAGMA data_version").fetchone()[0]


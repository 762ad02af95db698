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

import contextlib
import os
import struct
from typing import Iterator

import apsw

from . import errors

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x43474442  # "CGDB"
BUSY_TIMEOUT_MS = 5000
DURABILITY = {"normal": "NORMAL", "full": "FULL"}


@contextlib.contextmanager
def translated_errors(path: str = "") -> Iterator[None]:
    """Re-raise APSW errors as the typed errors of :mod:`codegraph_store.errors`."""
    try:
        yield
    except apsw.BusyError as e:
        raise errors.BusyError(f"{path}: database is locked by another writer ({e})") from e
    except apsw.NotADBError as e:
        raise errors.NotAStoreError(f"{path}: not a SQLite database ({e})") from e
    except apsw.CorruptError as e:
        raise errors.CorruptStoreError(f"{path}: database file is damaged ({e})") from e
    except apsw.ReadOnlyError as e:
        raise errors.ReadOnlyError(f"{path}: the database cannot be written ({e})") from e
    except (apsw.FullError, apsw.IOError, apsw.CantOpenError) as e:
        raise errors.StoreIOError(f"{path}: {e}") from e


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
        conn = apsw.Connection(path, flags=flags)
        try:
            _set_busy_timeout(conn)
            _set_defensive(conn)
            _set_foreign_keys(conn)
            _set_cache(conn, cache_kib)
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
    """Changes whenever another connection (any process) commits to the file."""
    return conn.execute("PRAGMA data_version").fetchone()[0]

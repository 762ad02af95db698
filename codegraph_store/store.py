"""The Store: one ``.cgdb`` file, one writer connection, a reader connection per thread.

Writes go through :meth:`Store.transaction` (implicitly, one transaction per call,
when no transaction is open): they are buffered and flushed in batches, and a
read inside the transaction flushes first, so the transaction sees its own
writes. Reads outside a transaction use the calling thread's reader connection
(APSW releases the GIL while SQLite works, so reader threads run in parallel)
and a shared node cache that is cleared whenever any connection observes a
commit, by this process or another (``PRAGMA data_version``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from typing import Any, Iterable, Iterator, Sequence

import apsw
import attrs

from . import graph, schema, storage
from .cache import LRUCache
from .config import Config
from .embeddings import Embeddings, check_vectors
from .errors import (CodegraphError, CorruptStoreError, InvalidArgumentError, InvalidTypeError, NotAStoreError,
                     NotFoundError, ReadOnlyError, StoreClosedError, TransactionError)
from .kinds import EdgeKind, NodeKind
from .model import (Edge, Node, check_node_id, check_path, validate_edge, validate_node)
from .writes import WriteBuffer, check_foreign_keys, raise_for_commit_failure

# Edge kinds along which a change propagates to dependants (used by impact()).
DEPENDENCY_KINDS = [int(EdgeKind.CALLS), int(EdgeKind.INHERITS), int(EdgeKind.IMPORTS),
                    int(EdgeKind.REFERENCES)]
DIRECTIONS = ("out", "in", "both")


class _Transaction:
    """State of the open transaction: its owner thread, nesting depth and buffer."""

    def __init__(self, thread: int, buffer: WriteBuffer):
        self.thread = thread
        self.depth = 0
        self.buffer = buffer
        self.bulk = False


class _ReaderState(threading.local):
    conn: apsw.Connection | None = None
    version: int = -1


class Store:
    """An open code-graph store. Create with :meth:`Store.open`."""

    # ----------------------------------------------------------------- lifecycle

    def __init__(self, path: str, readonly: bool, durability: str, config: Config):
        self._path = path
        self._readonly = readonly
        self._durability = durability
        self.config = config
        mem, io = config.memory_optimization, config.io_optimization
        self._cache_kib = mem.sqlite_cache_kib
        self._cache = (LRUCache(mem.compact_cache_size, mem.cache_max_bytes,
                                mem.memory_pressure_threshold) if mem.enable_cache else None)
        self._read_batch = io.read_batch_size
        self._compression = io.compression_threshold if io.enable_compression else None
        self._write_lock = threading.RLock()
        self._txn: _Transaction | None = None
        self._reader_state = _ReaderState()
        self._readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer: apsw.Connection | None = None
        self._prefetcher = None
        storage.check_file_header(path)
        if readonly:
            if not os.path.exists(path):
                raise NotFoundError(f"{path}: no such store")
            conn = self._reader()
            try:
                with storage.translated_errors(path):
                    version = schema.inspect(conn, path)
            except BaseException:
                self.close()
                raise
            if version == 0:
                self.close()
                raise NotAStoreError(f"{path}: empty file, not a codegraph store")
            if version < schema.latest_version():
                self.close()
                raise ReadOnlyError(
                    f"{path}: schema {version} needs upgrading; open it once without readonly=True")
        else:
            try:
                self._writer = storage.connect(path, readonly=False, durability=durability,
                                               cache_kib=self._cache_kib, create=True)
                with storage.translated_errors(path):
                    version = schema.inspect(self._writer, path)
                    storage.enable_wal(self._writer)
                    if version < schema.latest_version():
                        schema.migrate(self._writer, path)
            except BaseException:
                self.close()
                raise
        self._embeddings = Embeddings(path, not readonly, mem.embedding_pool_dtype,
                                      mem.embedding_pool_size, mem.arena_chunk_size)
        if io.enable_prefetch and io.prefetch_depth > 0 and self._cache is not None:
            from .prefetch import Prefetcher
            self._prefetcher = Prefetcher(self, io.prefetch_depth)
        # Wraps this instance's methods only when on, so off costs nothing per call.
        self.monitor = None
        if config.performance_targets.enable_monitoring:
            from .monitor import PerformanceMonitor
            self.monitor = PerformanceMonitor(self)

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False, durability: str = "normal",
             config: Config | str | os.PathLike | dict | None = None) -> "Store":
        """Open (or create) the store at ``path``.

        ``readonly=True`` opens a connection that can never write (and refuses
        writes with :class:`ReadOnlyError` before touching the file).
        ``durability`` is ``"normal"`` (committed transactions survive a process
        crash; a power loss may lose the last ones, never consistency) or
        ``"full"`` (they also survive power loss). ``config`` is a :class:`Config`,
        a TOML file path or a dict of overrides; default: the packaged defaults.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
        path = os.fspath(path)
        if isinstance(path, bytes):
            raise InvalidTypeError("path must be a str path")
        if not path:
            raise InvalidArgumentError("path must not be empty")
        if durability not in storage.DURABILITY:
            raise InvalidArgumentError(
                f"durability must be 'normal' or 'full', got {durability!r}")
        if config is None:
            config = Config.defaults()
        elif isinstance(config, dict):
            config = Config.from_dict(config)
        elif isinstance(config, (str, os.PathLike)):
            config = Config.from_file(config)
        elif not isinstance(config, Config):
            raise InvalidTypeError(f"config must be Config, dict or a path, got {type(config).__name__}")
        if os.path.isdir(path):
            raise InvalidArgumentError(f"{path} is a directory, not a store file")
        return cls(path, bool(readonly), durability, config)

    @property
    def filename(self) -> str:
        """The store file's path (``path()`` is the shortest-path query)."""
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("readonly" if self._readonly else "open")
        return f"<Store {self._path!r} {state}>"

    def close(self) -> None:
        """Close every connection. Idempotent; an open transaction is rolled back."""
        if self._closed:
            return
        self._closed = True
        self._txn = None  # close() rolls back; the transaction's block raises on exit
        if self._prefetcher is not None:
            self._prefetcher.stop()
        if hasattr(self, "_embeddings"):
            self._embeddings.close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        failed: list[apsw.Error] = []
        for conn in readers:
            try:
                conn.close()
            except apsw.Error as e:
                failed.append(e)
        if self._writer is not None:
            with contextlib.suppress(apsw.Error):
                if not self._writer.getautocommit():
                    self._writer.execute("ROLLBACK")
            writer, self._writer = self._writer, None
            try:
                writer.close()  # the final checkpoint may fail (I/O error, disk full)
            except apsw.Error as e:
                failed.append(e)
        if failed:
            # Every connection is closed by now; committed data is safe in the WAL.
            raise storage.translate(failed[0], self._path) from failed[0]

    # -------------------------------------------------------------- connections

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._path}: the store is closed")

    def _reader(self) -> apsw.Connection:
        state = self._reader_state
        conn = state.conn
        if conn is None:
            self._check_open()
            conn = storage.connect(self._path, readonly=True, cache_kib=self._cache_kib)
            with self._readers_lock:
                self._readers.append(conn)
            state.conn = conn
            state.version = storage.data_version(conn)
            # Entries cached before this connection existed may predate a commit
            # that this connection will never report as a change.
            if self._cache is not None:
                self._cache.clear()
        return conn

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise ReadOnlyError(f"{self._path}: the store was opened read-only")

    def _in_own_transaction(self) -> bool:
        txn = self._txn
        return txn is not None and txn.thread == threading.get_ident()

    def _read_conn(self) -> tuple[apsw.Connection, bool]:
        """The connection a read should use, and whether the cache may be used.

        Rows read from SQLite are always current; only a cache hit can be stale,
        so callers check :meth:`_cache_is_fresh` before serving one.
        """
        self._check_open()
        if self._in_own_transaction():
            self._txn.buffer.flush()
            return self._writer, False
        return self._reader(), self._cache is not None

    def _cache_is_fresh(self, conn: apsw.Connection) -> bool:
        """False (and the cache cleared) if any commit happened since this
        connection last looked. Misses need no check: rows put into the cache
        carry the epoch taken before their read, and a clear in between drops them."""
        state = self._reader_state
        version = storage.data_version(conn)
        if version == state.version:
            return True
        state.version = version
        self._cache.clear()
        return False

    def _conn_for_iteration(self) -> apsw.Connection:
        return self._read_conn()[0]

    # ------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
        """All writes in the block commit together or not at all.

        Nested blocks are savepoints: an exception leaving an inner block undoes
        only that block. A transaction belongs to the thread that opened it;
        other threads' writes wait for it to finish.
        """
        with self._transaction(bulk=False):
            yield self

    @contextlib.contextmanager
    def bulk_load(self) -> Iterator["Store"]:
        """A transaction tuned for loading many rows, e.g. a fresh build.

        Secondary indexes are dropped at the start and rebuilt in one sorted
        pass at the end, nodes and edges are staged and merged in key order, and
        references are checked once, as a set, before the commit (a dangling
        edge fails the commit with :class:`DanglingEdgeError`). Same atomicity
        and upsert semantics as :meth:`transaction`. Deletes are refused inside
        (they would not cascade); reads work but are slower until the end.
        """
        if self._in_own_transaction():
            raise TransactionError("bulk_load() must be the outermost transaction")
        with self._transaction(bulk=True):
            with storage.translated_errors(self._path):
                indexes = schema.secondary_indexes(self._writer)
                for name, _sql in indexes:
                    self._writer.execute(f'DROP INDEX "{name}"')
            yield self
            with storage.translated_errors(self._path):
                self._txn.buffer.flush()
                for _name, sql in indexes:
                    self._writer.execute(sql)
        # Move the load out of the WAL now, so the next small commit does not
        # pay for checkpointing it.
        with storage.translated_errors(self._path):
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _exec(self, sql: str, params: Any = (), merge: bool = True) -> apsw.Cursor:
        """Run one statement on the writer inside this thread's transaction, after
        the buffered writes (for the indexer's tables that have no buffer).

        ``merge=False`` leaves bulk-staged rows staged: for statements that do not
        read nodes or edges.
        """
        self._buffer.flush(merge=merge)
        return self._writer.execute(sql, params)

    def _execmany(self, sql: str, rows: list) -> None:
        self._buffer.flush()
        if rows:
            self._writer.executemany(sql, rows)

    @property
    def _buffer(self) -> WriteBuffer:
        """The open transaction's write buffer (the indexer writes through it)."""
        if not self._in_own_transaction():
            raise TransactionError("internal writes need an open transaction")
        return self._txn.buffer

    @contextlib.contextmanager
    def _transaction(self, bulk: bool) -> Iterator[None]:
        self._check_open()
        if self._readonly:
            raise ReadOnlyError(f"{self._path}: the store was opened read-only")
        self._write_lock.acquire()
        outer = False
        try:
            txn = self._txn
            if txn is None:
                io = self.config.io_optimization
                buffer = WriteBuffer(self._writer, io.write_buffer_size, io.enable_batching,
                                     self._compression, bulk=bulk)
                with storage.translated_errors(self._path):
                    if bulk:
                        # Checked once, as a set, before the commit (_commit), not per
                        # row as each row is staged. Can only change outside a txn.
                        self._writer.pragma("foreign_keys", False)
                    try:
                        self._writer.execute("BEGIN IMMEDIATE")
                    except BaseException:
                        self._writer.pragma("foreign_keys", True)
                        raise
                txn = self._txn = _Transaction(threading.get_ident(), buffer)
                txn.bulk = bulk
                outer = True
            else:
                outer = False
                with storage.translated_errors(self._path):
                    txn.buffer.flush()
                    self._writer.execute(f"SAVEPOINT sp{txn.depth + 1}")
            txn.depth += 1
            try:
                yield
            except BaseException:
                txn.depth -= 1
                if self._closed:
                    raise
                if outer:
                    self._rollback()
                else:
                    txn.buffer.discard()
                    with storage.translated_errors(self._path):
                        self._writer.execute(f"ROLLBACK TO sp{txn.depth + 1}")
                        self._writer.execute(f"RELEASE sp{txn.depth + 1}")
                raise
            txn.depth -= 1
            if self._closed:
                raise StoreClosedError(
                    f"{self._path}: the store was closed inside a transaction; nothing was committed")
            if outer:
                self._commit()
            else:
                with storage.translated_errors(self._path):
                    txn.buffer.flush()
                    self._writer.execute(f"RELEASE sp{txn.depth + 1}")
        finally:
            if outer and bulk and self._writer is not None:
                self._writer.pragma("foreign_keys", True)
            self._write_lock.release()

    def _commit(self) -> None:
        txn = self._txn
        try:
            with storage.translated_errors(self._path):
                txn.buffer.flush()
                if txn.bulk:
                    check_foreign_keys(self._writer)
                try:
                    self._writer.execute("COMMIT")
                except apsw.ConstraintError as e:
                    raise_for_commit_failure(self._writer, e)
        except BaseException:
            self._rollback()
            raise
        self._txn = None
        if self._cache is not None:
            self._cache.clear()
        try:
            with storage.translated_errors(self._path):
                self._embeddings.after_commit(self._writer)
        except (OSError, CodegraphError):
            # The commit stands; the pool stays behind and is caught up (or the
            # error reported) by the next search.
            pass

    def _rollback(self) -> None:
        txn, self._txn = self._txn, None
        self._embeddings.forget_touched()
        if txn is not None:
            txn.buffer.discard()
        with contextlib.suppress(apsw.Error):
            if self._writer is not None and not self._writer.getautocommit():
                self._writer.execute("ROLLBACK")
        if self._cache is not None:
            self._cache.clear()

    @contextlib.contextmanager
    def _write(self) -> Iterator[WriteBuffer]:
        """The current transaction's buffer, in a transaction of its own if none is open."""
        if self._in_own_transaction():
            with storage.translated_errors(self._path):
                yield self._txn.buffer
        else:
            with self.transaction():
                with storage.translated_errors(self._path):
                    yield self._txn.buffer

    # ------------------------------------------------------------------- writes

    def add_nodes(self, nodes: Iterable[Node]) -> int:
        """Insert nodes; a node whose id exists replaces it (its edges are kept).

        Every node is validated before anything is written. Returns the count.
        """
        self._check_writable()
        paths: set = set()
        nodes = [validate_node(n, paths) for n in _as_list(nodes, "nodes")]
        if nodes:
            with self._write() as buf:
                buf.add_nodes(nodes)
        return len(nodes)

    def add_edges(self, edges: Iterable[Edge]) -> int:
        """Insert edges; an existing ``(src, kind, dst)`` gets the new metadata.

        Endpoints are checked when the transaction commits: a missing node makes
        the commit fail with :class:`DanglingEdgeError` and nothing is written.
        """
        self._check_writable()
        edges = [validate_edge(e) for e in _as_list(edges, "edges")]
        if edges:
            with self._write() as buf:
                buf.add_edges(edges)
        return len(edges)

    def delete_nodes(self, ids: Iterable[int]) -> None:
        """Delete nodes by id with every edge touching them; unknown ids are ignored."""
        self._check_writable()
        ids = [check_node_id(i) for i in _as_list(ids, "ids")]
        if ids:
            with self._write() as buf:
                buf.delete_nodes(ids)

    def delete_edges(self, edges: Iterable[Edge | tuple[int, Any, int]]) -> None:
        """Delete edges given as Edge or ``(src, kind, dst)``; absent ones are ignored."""
        self._check_writable()
        triples = []
        for e in _as_list(edges, "edges"):
            if isinstance(e, Edge):
                src, kind, dst = e.src, e.kind, e.dst
            elif isinstance(e, (tuple, list)) and len(e) == 3:
                src, kind, dst = e
            else:
                raise InvalidTypeError(f"edges to delete must be Edge or (src, kind, dst), got {e!r}")
            triples.append((check_node_id(src), int(EdgeKind.parse(kind)), check_node_id(dst)))
        if triples:
            with self._write() as buf:
                buf.delete_edges(triples)

    def delete_file(self, path: str) -> int:
        """Delete a file with all its nodes and their edges; returns the nodes removed."""
        path = check_path(path)
        self._check_writable()
        with self._write() as buf:
            buf.refuse_in_bulk()
            buf.flush()
            buf.forget_file(path)
            conn = self._writer
            row = conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise NotFoundError(f"no file {path!r} in the store")
            count = conn.execute("SELECT count(*) FROM nodes WHERE file_id = ?", row).fetchone()[0]
            conn.execute("DELETE FROM files WHERE id = ?", row)
        return count

    # -------------------------------------------------------------------- reads

    def get_node(self, node_id: int) -> Node | None:
        """The node with this id, or ``None``."""
        node_id = check_node_id(node_id)
        conn, cached = self._read_conn()
        cache = self._cache
        if cached:
            # The cache holds rows, not Nodes: each caller gets its own metadata
            # object, so mutating a result can never change what others read.
            epoch = cache.epoch
            row = cache.get(node_id)
            if row is not None:
                if self._cache_is_fresh(conn):
                    return graph.row_to_node(row)
                epoch = cache.epoch
        with storage.translated_errors(self._path):
            row = conn.execute(graph.SQL["node"], (node_id,)).fetchone()
        if row is None:
            return None
        if cached:
            blob = row[9]
            cache.put_one_if_current(epoch, node_id, row,
                                     200 + len(row[3]) + (0 if blob is None else len(blob)))
        return graph.row_to_node(row)

    def get_nodes(self, ids: Iterable[int]) -> list[Node | None]:
        """Nodes for ``ids`` in the same order (``None`` where missing).

        Cache misses are fetched ``read_batch_size`` ids per statement.
        """
        ids = [check_node_id(i) for i in _as_list(ids, "ids")]
        conn, cached = self._read_conn()
        return self._load(conn, cached, ids)

    def _load(self, conn: apsw.Connection, cached: bool, ids: Sequence[int]) -> list[Node | None]:
        found: dict[int, Node] = {}
        missing = ids
        if cached:
            cache = self._cache
            epoch = cache.epoch
            missing = []
            for i in ids:
                row = cache.get(i)
                if row is None:
                    missing.append(i)
                else:
                    found[i] = graph.row_to_node(row)
            if found and not self._cache_is_fresh(conn):
                found, missing, epoch = {}, ids, cache.epoch
        if missing:
            unique = list(dict.fromkeys(missing))
            with storage.translated_errors(self._path):
                rows = graph.fetch_node_rows(conn, unique, self._read_batch)
            fresh = []
            for row in rows:
                found[row[0]] = graph.row_to_node(row)
                fresh.append((row[0], row, graph.node_size(row)))
            if cached and fresh:
                cache.put_if_current(epoch, fresh)
        # Duplicated ids get distinct Node objects too (metadata is mutable).
        seen: set[int] = set()
        out = []
        for i in ids:
            node = found.get(i)
            if node is not None and i in seen:
                node = attrs.evolve(node, metadata=copy.deepcopy(node.metadata))
            seen.add(i)
            out.append(node)
        return out

    def find(self, name: str | None = None, *, qualname: str | None = None,
             kind: NodeKind | str | int | Iterable | None = None, file: str | None = None,
             prefix: bool = False, limit: int | None = 1000) -> list[Node]:
        """Nodes matching every given criterion, ordered by qualname then id.

        ``prefix=True`` matches ``name``/``qualname`` as prefixes. ``kind`` may be
        one kind or several. At least one of name, qualname or file is required.
        """
        if name is None and qualname is None and file is None:
            raise InvalidArgumentError("find needs a name, qualname or file")
        where, params = [], []
        for column, value in (("n.name", name), ("n.qualname", qualname)):
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidTypeError(f"{column[2:]} must be str, got {type(value).__name__}")
            if not value:
                raise InvalidArgumentError(f"{column[2:]} must not be empty")
            if prefix:
                where.append(f"{column} >= ? AND {column} < ?")
                params += [value, value + "\U0010ffff"]
            else:
                where.append(f"{column} = ?")
                params.append(value)
        if file is not None:
            where.append("n.file_id = (SELECT id FROM files WHERE path = ?)")
            params.append(check_path(file))
        kinds = graph.parse_kinds(kind, NodeKind)
        if kinds is not None:
            where.append("n.kind IN (SELECT value FROM json_each(?))")
            params.append(_json(kinds))
        if limit is not None:
            if type(limit) is not int or limit <= 0:
                raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
        sql = (f"SELECT {graph.NODE_COLUMNS} FROM {graph.NODE_FROM} WHERE {' AND '.join(where)}"
               " ORDER BY n.qualname, n.id" + (" LIMIT ?" if limit is not None else ""))
        if limit is not None:
            params.append(limit)
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            return [graph.row_to_node(r) for r in conn.execute(sql, params)]

    def at(self, file: str, line: int) -> Node | None:
        """The innermost node of ``file`` whose line range contains ``line``."""
        file = check_path(file)
        if type(line) is not int:
            raise InvalidTypeError(f"line must be int, got {type(line).__name__}")
        if line < 1:
            raise InvalidArgumentError(f"line must be >= 1, got {line}")
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            row = conn.execute(graph.SQL["file_id"], (file,)).fetchone()
            if row is None:
                raise NotFoundError(f"no file {file!r} in the store")
            hit = conn.execute(graph.SQL["at"], (row[0], line, line)).fetchone()
        return None if hit is None else graph.row_to_node(hit)

    def neighbors(self, node_id: int, direction: str = "out",
                  kinds: EdgeKind | str | int | Iterable | None = None) -> list[Node]:
        """Nodes one edge away: ``out`` (node -> x), ``in`` (x -> node) or ``both``.

        ``kinds`` restricts the edge kinds. Sorted by id.
        """
        node_id = check_node_id(node_id)
        _check_direction(direction)
        kinds = graph.parse_kinds(kinds)
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            rows = graph.neighbor_rows(conn, node_id, direction, kinds)
        # One statement returns the rows; they do not go through the node cache
        # (filling it on every walk cost more than later hits saved).
        nodes = [graph.row_to_node(r) for r in rows]
        if self._prefetcher is not None and nodes:
            self._prefetcher.request([n.id for n in nodes], direction, kinds)
        return nodes

    def callers(self, node_id: int) -> list[Node]:
        """Nodes with a ``calls`` edge into ``node_id``."""
        return self.neighbors(node_id, "in", EdgeKind.CALLS)

    def callees(self, node_id: int) -> list[Node]:
        """Nodes that ``node_id`` has a ``calls`` edge to."""
        return self.neighbors(node_id, "out", EdgeKind.CALLS)

    def edges_of(self, node_id: int, direction: str = "out") -> list[Edge]:
        """The edges leaving (``out``) or entering (``in``) a node, with metadata."""
        node_id = check_node_id(node_id)
        if direction not in ("out", "in"):
            raise InvalidArgumentError(f"direction must be 'out' or 'in', got {direction!r}")
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            return [graph.row_to_edge(r) for r in conn.execute(graph.SQL["edges_of_" + direction],
                                                               (node_id,))]

    def traverse(self, start: int, direction: str = "out",
                 kinds: EdgeKind | str | int | Iterable | None = None,
                 depth: int | None = 2) -> list[tuple[Node, int]]:
        """Breadth-first walk: ``(node, distance)`` for every node within ``depth`` hops.

        One statement per level, not per node. ``depth=None`` walks until nothing
        new is reached. Ordered by distance, then id; ``start`` is not included.
        """
        start = check_node_id(start)
        _check_direction(direction)
        _check_depth(depth)
        kinds = graph.parse_kinds(kinds)
        conn, cached = self._read_conn()
        with storage.translated_errors(self._path):
            levels = graph.bfs_levels(conn, start, direction, kinds, depth)
        order = sorted(levels, key=lambda i: (levels[i], i))
        nodes = self._load(conn, cached, order)
        return [(n, levels[n.id]) for n in nodes if n is not None]

    def impact(self, node_id: int, depth: int | None = None) -> list[tuple[Node, int]]:
        """What may break if ``node_id`` changes: its callers, subclasses, importers and
        referrers, transitively (reverse closure over dependency edges)."""
        return self.traverse(node_id, "in", DEPENDENCY_KINDS, depth)

    def path(self, src: int, dst: int, kinds: EdgeKind | str | int | Iterable | None = None,
             direction: str = "out", max_depth: int | None = None) -> list[Node] | None:
        """A shortest path from ``src`` to ``dst`` as a list of nodes, or ``None``."""
        src, dst = check_node_id(src), check_node_id(dst)
        _check_direction(direction)
        _check_depth(max_depth)
        kinds = graph.parse_kinds(kinds)
        conn, cached = self._read_conn()
        missing = [i for i, n in zip((src, dst), self._load(conn, cached, [src, dst])) if n is None]
        if missing:
            raise NotFoundError(f"no node with id {missing[0]}")
        with storage.translated_errors(self._path):
            ids = graph.shortest_path(conn, src, dst, direction, kinds, max_depth)
        return None if ids is None else self._load(conn, cached, ids)

    def iter_nodes(self, page: int = 1000) -> Iterator[Node]:
        """Every node in id order, read one page per statement."""
        _check_page(page)
        with storage.translated_errors(self._path):
            for row in graph.iter_node_rows(self._conn_for_iteration, page):
                yield graph.row_to_node(row)

    def iter_edges(self, page: int = 1000) -> Iterator[Edge]:
        """Every edge in ``(src, kind, dst)`` order, read one page per statement."""
        _check_page(page)
        with storage.translated_errors(self._path):
            for row in graph.iter_edge_rows(self._conn_for_iteration, page):
                yield graph.row_to_edge(row)

    def files(self) -> list:
        """Every file row (path, language, module, hash, size, parse error, node count)."""
        from .model import FileInfo
        conn, _ = self._read_conn()
        sql = ("SELECT f.path, f.language, f.module, f.content_hash, f.size, f.parse_error,"
               " (SELECT count(*) FROM nodes WHERE file_id = f.id) FROM files AS f ORDER BY f.path")
        with storage.translated_errors(self._path):
            return [FileInfo(*r) for r in conn.execute(sql)]

    # --------------------------------------------------------------- embeddings

    def add_embeddings(self, node_ids: Iterable[int], vectors: Any, space: str,
                       metric: str = "cosine") -> int:
        """Store one vector per node in ``space`` (created on first use with the
        vectors' dimension and ``metric``: cosine, dot or l2). Replaces a node's
        existing vector. NaN/inf, a wrong dimension or an unknown node is an
        error and nothing is written. Returns the count."""
        self._check_writable()
        ids = [check_node_id(i) for i in _as_list(node_ids, "node_ids")]
        vecs = check_vectors(vectors, None)
        if not ids:
            return 0
        with self._write() as buf:
            buf.flush()
            self._embeddings.check_targets(self._writer, ids, vecs)
            target = self._embeddings.ensure_space(self._writer, space, vecs.shape[1], metric)
            check_vectors(vecs, target.dim)
            self._embeddings.write(self._writer, target, ids, vecs)
        return len(ids)

    def delete_embeddings(self, node_ids: Iterable[int], space: str) -> None:
        """Remove the vectors of these nodes from ``space`` (absent ones are ignored)."""
        ids = [check_node_id(i) for i in _as_list(node_ids, "node_ids")]
        with self._write() as buf:
            buf.flush()
            target = self._embeddings.space(self._writer, space)
            self._embeddings.delete(self._writer, target, ids)

    def get_embedding(self, node_id: int, space: str | None = None):
        """The node's float32 vector in ``space`` (a numpy array), or None."""
        import numpy as np
        node_id = check_node_id(node_id)
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            target = self._embeddings.space(conn, space)
            row = conn.execute("SELECT vec FROM embeddings WHERE space_id = ? AND node_id = ?",
                               (target.id, node_id)).fetchone()
        return None if row is None else np.frombuffer(row[0], "<f4").copy()

    def spaces(self) -> list[dict[str, Any]]:
        """Every embedding space with its vector count and pool statistics."""
        conn = self._search_conn()
        with storage.translated_errors(self._path):
            out = []
            for space in self._embeddings.spaces(conn):
                count = conn.execute("SELECT count(*) FROM embeddings WHERE space_id = ?",
                                     (space.id,)).fetchone()[0]
                pool = self._embeddings.pool(conn, space)
                out.append({"name": space.name, "dim": space.dim, "metric": space.metric,
                            "vectors": count, "pool": pool.stats()})
        return out

    def _search_conn(self) -> apsw.Connection:
        """Searches read committed vectors through this thread's reader, even
        inside a transaction (the pool only ever holds committed state)."""
        self._check_open()
        return self._reader()

    def search(self, query: Any, k: int = 10, space: str | None = None, kinds=None, files=None,
               ids=None):
        """The ``k`` nodes whose vectors are closest to ``query`` (exact scores).

        ``query`` is one vector (returns a list of :class:`SearchHit`) or a matrix
        of queries (returns one list per row), or a text when the space was made
        by a built-in embedder. ``kinds``, ``files`` (paths, or directories ending
        in '/') and ``ids`` restrict the candidates before the scan, so k hits
        come back whenever k vectors match.
        """
        from .search import SearchHit, run_search
        conn = self._search_conn()
        single = True
        with storage.translated_errors(self._path):
            query, single = self._query_vectors(conn, query, space)
            cpu = self.config.cpu_optimization
            _space, results = run_search(
                conn, self._embeddings, None, query, k, space, kinds, files, ids,
                cpu.thread_pool_size, cpu.simd_threshold if cpu.enable_simd else 1 << 30)
        # One load for every query's hits, then split per query.
        wanted = list(dict.fromkeys(i for hits in results for i, _ in hits))
        loaded = {n.id: n for n in self._load(conn, self._cache is not None, wanted) if n is not None}
        out = [[SearchHit(loaded[i], s) for i, s in hits if i in loaded] for hits in results]
        return out[0] if single else out

    def _query_vectors(self, conn: apsw.Connection, query: Any, space: str | None):
        """Embed a text query with the space's built-in embedder; pass vectors through."""
        import numpy as np
        if isinstance(query, str):
            from .embedders import embedder_for_space
            target = self._embeddings.space(conn, space)
            return embedder_for_space(target.name, target.dim).embed([query]), True
        try:
            arr = np.asarray(query) if not isinstance(query, (bytes, dict)) else query
        except (ValueError, TypeError) as e:  # ragged or otherwise not an array
            raise InvalidTypeError(f"query must be a numeric array: {e}") from None
        return query, getattr(arr, "ndim", 1) == 1

    def context(self, query: Any, k: int = 5, hops: int = 1, budget: int = 12000,
                space: str | None = None, kinds=None, files=None):
        """Retrieval for a question: the ``k`` best vector hits expanded through the
        graph (what they call, what calls them, what contains them) ``hops`` times,
        with their source text, ranked and cut to ``budget`` characters."""
        from .search import build_context, run_search
        if type(hops) is not int or hops < 0:
            raise InvalidArgumentError(f"hops must be an int >= 0, got {hops!r}")
        if type(budget) is not int or budget < 1:
            raise InvalidArgumentError(f"budget must be a positive int, got {budget!r}")
        conn = self._search_conn()
        with storage.translated_errors(self._path):
            vectors, single = self._query_vectors(conn, query, space)
            if not single:
                raise InvalidArgumentError("context takes one query, not a matrix")
            cpu = self.config.cpu_optimization
            _space, results = run_search(
                conn, self._embeddings, None, vectors, k, space, kinds, files, None,
                cpu.thread_pool_size, cpu.simd_threshold if cpu.enable_simd else 1 << 30)
            cached = self._cache is not None
            return build_context(conn, lambda ids: self._load(conn, cached, ids), results[0], hops,
                                 budget, query if isinstance(query, str) else None)

    # ------------------------------------------------------------- maintenance

    def stats(self) -> dict[str, Any]:
        """Counts of files, nodes and edges (also per kind, by name) and file sizes."""
        conn, _ = self._read_conn()
        with storage.translated_errors(self._path):
            files = conn.execute("SELECT count(*), count(parse_error) FROM files").fetchone()
            by_node = dict(conn.execute(
                "SELECT k.name, count(n.id) FROM node_kinds AS k LEFT JOIN nodes AS n"
                " ON n.kind = k.code GROUP BY k.code ORDER BY k.code").fetchall())
            by_edge = dict(conn.execute(
                "SELECT k.name, (SELECT count(*) FROM edges WHERE kind = k.code)"
                " FROM edge_kinds AS k ORDER BY k.code").fetchall())
            unresolved = conn.execute("SELECT count(*) FROM refs WHERE dst IS NULL").fetchone()[0]
            version = conn.pragma("user_version")
        size = os.path.getsize(self._path)
        wal = self._path + "-wal"
        return {
            "path": self._path,
            "schema_version": version,
            "files": files[0],
            "files_with_errors": files[1],
            "nodes": sum(by_node.values()),
            "edges": sum(by_edge.values()),
            "nodes_by_kind": by_node,
            "edges_by_kind": by_edge,
            "unresolved_refs": unresolved,
            "file_bytes": size,
            "wal_bytes": os.path.getsize(wal) if os.path.exists(wal) else 0,
            "cache": None if self._cache is None else {
                "entries": len(self._cache), "bytes": self._cache.bytes,
                "hits": self._cache.hits, "misses": self._cache.misses},
        }

    def check(self, full: bool = True) -> "CheckReport":
        """SQLite's integrity check plus the store's own consistency checks.

        ``full=False`` runs SQLite's quick check and skips decoding every metadata
        record. Never raises for damage it finds: it reports it.
        """
        from .checks import run_checks
        conn, _ = self._read_conn()
        return run_checks(conn, self._path, full)

    def repair(self) -> None:
        """Rebuild everything derivable from the rows: every index (REINDEX), the
        query planner's statistics and every embedding pool. Damaged table rows
        cannot be rebuilt; check() still reports them afterwards."""
        self._check_open()
        if self._readonly:
            raise ReadOnlyError(f"{self._path}: the store was opened read-only")
        with self._write_lock:
            if self._txn is not None:
                raise TransactionError("repair() cannot run inside a transaction")
            with storage.translated_errors(self._path):
                self._writer.execute("REINDEX")
                self._writer.execute("ANALYZE")
                self._embeddings.rebuild_all(self._writer)
        if self._cache is not None:
            self._cache.clear()

    def compact(self) -> None:
        """Reclaim space: renumber pool slots densely and rebuild each pool at its
        live size, then rebuild the file without free pages and truncate the WAL."""
        self._check_open()
        if self._readonly:
            raise ReadOnlyError(f"{self._path}: the store was opened read-only")
        with self.transaction():
            with storage.translated_errors(self._path):
                self._buffer.flush()
                self._embeddings.compact(self._writer)
        with self._write_lock:
            if self._txn is not None:
                raise TransactionError("compact() cannot run inside a transaction")
            with storage.translated_errors(self._path):
                self._writer.execute("PRAGMA optimize")
                self._writer.execute("VACUUM")
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _as_list(items: Any, what: str) -> list:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise InvalidTypeError(f"{what} must be an iterable of items, got {type(items).__name__}")
    return list(items)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise InvalidArgumentError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _check_page(page: int) -> None:
    if type(page) is not int or page < 1:
        raise InvalidArgumentError(f"page must be a positive int, got {page!r}")


def _check_depth(depth: int | None) -> None:
    if depth is not None and (type(depth) is not int or depth < 1):
        raise InvalidArgumentError(f"depth must be a positive int or None, got {depth!r}")


def _json(values: list[int]) -> str:
    import json
    return json.dumps(values)




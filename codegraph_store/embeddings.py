"""Embedding spaces: vectors in SQLite (the truth) and their pools (derived).

Writes assign each vector a pool slot inside the same SQLite transaction as the
nodes; after the commit the writer applies the logged changes to the pool
file. Any reader (any process) compares the pool's ``applied_seq`` with the
change log before searching and catches up or rebuilds, so rows and vectors can
never disagree after a crash: at worst the pool is behind, and behind is fixed
before it is read.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable

import apsw
import attrs
import numpy as np

from .errors import CorruptStoreError, InvalidArgumentError, InvalidTypeError, NotFoundError
from .pool import Pool, PoolDamaged

METRICS = ("cosine", "dot", "l2")
POOL_DTYPES = ("float32", "float16", "int8")
# Rows fetched per statement when rebuilding a pool from SQLite.
REBUILD_BATCH = 20000


def _end_snapshot(conn: apsw.Connection) -> None:
    """End a read snapshot opened with BEGIN. An I/O error inside it may have
    rolled it back already (SQLite does on IOERR and FULL); a COMMIT then would
    replace that error with "cannot commit - no transaction is active"."""
    if not conn.getautocommit():
        conn.execute("COMMIT")


@attrs.frozen
class SlotRows:
    """SQLite rows of some pool slots, in slot order: node ids and f32 vectors."""

    slots: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray


def _slot_rows(rows: list, space: Space) -> SlotRows:
    """``(slot, node_id, vec)`` rows as arrays. Each vec is checked to be ``dim``
    float32 values on its own: a short and a long one must not cancel out and
    shift every row after them."""
    width = space.dim * 4
    if any(len(r[2]) != width for r in rows):
        raise CorruptStoreError(f"an embedding of space {space.name!r} is not "
                                f"{space.dim} float32 values")
    n = len(rows)
    return SlotRows(np.fromiter((r[0] for r in rows), np.int64, n),
                    np.fromiter((r[1] for r in rows), np.int64, n),
                    np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(n, space.dim))


@attrs.frozen
class Space:
    """An embedding space: vectors of one model at one dimension."""

    id: int
    name: str
    dim: int
    metric: str


def check_vectors(vectors: Any, dim: int | None, what: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy of ``vectors``; NaN and inf refused."""
    if isinstance(vectors, (str, bytes)):
        raise InvalidTypeError(f"{what} must be a numeric array, got {type(vectors).__name__}")
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as e:
        raise InvalidTypeError(f"{what} must be a numeric array: {e}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{what} must be numeric, not {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"{what} must be 1-D or 2-D, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidArgumentError(f"{what} have dimension {arr.shape[1]}, the space has {dim}")
    if arr.shape[1] == 0:
        raise InvalidArgumentError(f"{what} have dimension 0")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.ascontiguousarray(arr, dtype="<f4")
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(f"{what} contain NaN or inf (or values beyond float32)")
    return arr


class Embeddings:
    """The store's embedding spaces and their pools (one instance per Store)."""

    def __init__(self, db_path: str, writable: bool, pool_dtype: str, initial_capacity: int,
                 chunk_bytes: int):
        if pool_dtype not in POOL_DTYPES:
            raise InvalidArgumentError(f"embedding_pool_dtype must be one of {POOL_DTYPES}")
        self.db_path = db_path
        self.writable = writable
        self.pool_dtype = pool_dtype
        self.initial_capacity = initial_capacity
        self.chunk_bytes = chunk_bytes
        self._pools: dict[int, Pool] = {}
        self._lock = threading.Lock()
        self._touched: set[int] = set()
        self._seen_seq = -1
        self.progress: Callable[[str, int, int], None] | None = None

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    # ----------------------------------------------------------------- spaces

    @staticmethod
    def spaces(conn: apsw.Connection) -> list[Space]:
        return [Space(*r) for r in conn.execute("SELECT id, name, dim, metric FROM spaces ORDER BY id")]

    def space(self, conn: apsw.Connection, name: str | None) -> Space:
        """The space called ``name``, or the only space when ``name`` is None."""
        spaces = self.spaces(conn)
        if name is None:
            if len(spaces) == 1:
                return spaces[0]
            if not spaces:
                raise NotFoundError("the store has no embeddings (index with --embed first)")
            raise InvalidArgumentError(
                f"the store has {len(spaces)} embedding spaces; name one of: "
                + ", ".join(s.name for s in spaces))
        if not isinstance(name, str):
            raise InvalidTypeError(f"space must be a str, got {type(name).__name__}")
        for s in spaces:
            if s.name == name:
                return s
        raise NotFoundError(f"no embedding space {name!r}; the store has: "
                            + (", ".join(s.name for s in spaces) or "none"))

    @staticmethod
    def ensure_space(conn: apsw.Connection, name: str, dim: int, metric: str) -> Space:
        if not isinstance(name, str):
            raise InvalidTypeError(f"space must be a str, got {type(name).__name__}")
        if not name.strip():
            raise InvalidArgumentError("space name must not be empty")
        if metric not in METRICS:
            raise InvalidArgumentError(f"metric must be one of {METRICS}, got {metric!r}")
        row = conn.execute("SELECT id, name, dim, metric FROM spaces WHERE name = ?", (name,)).fetchone()
        if row is not None:
            space = Space(*row)
            if space.dim != dim:
                raise InvalidArgumentError(
                    f"space {name!r} holds {space.dim}-dimensional vectors, got {dim}")
            if space.metric != metric:
                raise InvalidArgumentError(f"space {name!r} uses metric {space.metric}, got {metric}")
            return space
        (sid,) = conn.execute("INSERT INTO spaces (name, dim, metric) VALUES (?, ?, ?) RETURNING id",
                              (name, dim, metric)).fetchone()
        return Space(sid, name, dim, metric)

    # ----------------------------------------------------------------- writes

    @staticmethod
    def check_targets(conn: apsw.Connection, node_ids: list[int], vectors: np.ndarray) -> None:
        """Refuse vectors for missing or repeated nodes, before anything is written."""
        if len(node_ids) != vectors.shape[0]:
            raise InvalidArgumentError(f"{len(node_ids)} node ids but {vectors.shape[0]} vectors")
        if len(set(node_ids)) != len(node_ids):
            raise InvalidArgumentError("node ids repeat within one call")
        known = {r[0] for r in conn.execute(
            "SELECT id FROM nodes WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(node_ids),))}
        missing = [i for i in node_ids if i not in known]
        if missing:
            raise NotFoundError(f"no node with id {missing[0]} ({len(missing)} missing)")

    def write(self, conn: apsw.Connection, space: Space, node_ids: list[int],
              vectors: np.ndarray) -> None:
        """Upsert vectors inside the caller's transaction, assigning pool slots."""
        ids_json = json.dumps(node_ids)
        existing = dict(conn.execute(
            "SELECT node_id, slot FROM embeddings WHERE space_id = ? AND node_id IN"
            " (SELECT value FROM json_each(?))", (space.id, ids_json)))
        blobs = [v.tobytes() for v in vectors]
        updates = [(blob, space.id, nid) for nid, blob in zip(node_ids, blobs) if nid in existing]
        new = [(nid, blob) for nid, blob in zip(node_ids, blobs) if nid not in existing]
        if updates:
            conn.executemany("UPDATE embeddings SET vec = ? WHERE space_id = ? AND node_id = ?", updates)
        if new:
            reused = [r[0] for r in conn.execute(
                "SELECT slot FROM free_slots WHERE space_id = ? ORDER BY slot LIMIT ?",
                (space.id, len(new)))]
            if reused:
                conn.execute("DELETE FROM free_slots WHERE space_id = ? AND slot IN"
                             " (SELECT value FROM json_each(?))", (space.id, json.dumps(reused)))
            fresh = len(new) - len(reused)
            (start,) = conn.execute(
                "UPDATE spaces SET next_slot = next_slot + ? WHERE id = ? RETURNING next_slot - ?",
                (fresh, space.id, fresh)).fetchone()
            slots = reused + list(range(start, start + fresh))
            conn.executemany(
                "INSERT INTO embeddings (space_id, node_id, slot, vec) VALUES (?, ?, ?, ?)",
                [(space.id, nid, slot, blob) for (nid, blob), slot in zip(new, slots)])
        self._touched.add(space.id)

    def delete(self, conn: apsw.Connection, space: Space, node_ids: list[int]) -> None:
        conn.execute("DELETE FROM embeddings WHERE space_id = ? AND node_id IN"
                     " (SELECT value FROM json_each(?))", (space.id, json.dumps(node_ids)))
        self._touched.add(space.id)

    def forget_touched(self) -> None:
        """After a rollback: nothing to apply."""
        self._touched.clear()

    def after_commit(self, conn: apsw.Connection) -> None:
        """Apply the committed changes to the pools. Deleting nodes deletes their
        vectors by cascade, unseen by :meth:`write`, so the change log itself
        says whether anything moved."""
        self._touched.clear()
        if not self.writable:
            return
        seq = _current_seq(conn)
        if seq == self._seen_seq:
            return
        self._seen_seq = seq
        for space in self.spaces(conn):
            self.pool(conn, space)

    # ----------------------------------------------------------------- pools

    def pool_path(self, space: Space) -> str:
        return f"{self.db_path}-pool{space.id}"

    def pool(self, conn: apsw.Connection, space: Space) -> Pool:
        """The space's pool, caught up with every commit visible to ``conn``."""
        with self._lock:
            pool = self._pools.get(space.id)
            if pool is None:
                pool = self._open_pool(conn, space)
                self._pools[space.id] = pool
            self._sync(conn, space, pool)
            return pool

    def _store_uuid(self, conn: apsw.Connection) -> bytes:
        row = conn.execute("SELECT value FROM store_meta WHERE key = 'store_uuid'").fetchone()
        try:
            return bytes.fromhex(row[0])[:16].ljust(16, b"\0")
        except (TypeError, ValueError):
            return b"\0" * 16

    def _open_pool(self, conn: apsw.Connection, space: Space) -> Pool:
        path = self.pool_path(space)
        if not self.writable and not os.path.exists(path):
            path = None  # read-only store without a pool file: build one in memory
        return Pool(path, space.id, space.dim, space.metric, self.pool_dtype,
                    self._store_uuid(conn), self.initial_capacity, self.chunk_bytes, self.writable)

    def _sync(self, conn: apsw.Connection, space: Space, pool: Pool) -> None:
        """Catch ``pool`` up with the change log (or rebuild it) under its file lock."""
        conn.execute("BEGIN")  # one snapshot for the sequence, the log and the rows
        try:
            seq = _current_seq(conn)
            pruned = conn.execute("SELECT pruned_through FROM spaces WHERE id = ?",
                                  (space.id,)).fetchone()[0]
            pool._rw.acquire(True)  # no scan may run while the descriptor changes
            try:
                pool.ensure_open()
            except OSError:
                pool.close()
                pool.path = None  # unreadable or unwritable beside the database: in memory
            finally:
                pool._rw.release(True)
            with pool.lock(exclusive=False):
                current = self._refreshed(pool)
            if current and pool.header.applied_seq == seq:
                return
            if not self.writable and pool.path is not None:
                # A read-only store never writes the file: continue in memory.
                pool._rw.acquire(True)
                try:
                    pool.close()
                    pool.path = None
                finally:
                    pool._rw.release(True)
            with pool.lock(exclusive=True):
                current = self._refreshed(pool)
                if not current or not (pruned <= pool.header.applied_seq <= seq):
                    self._rebuild(conn, space, pool, seq)
                elif pool.header.applied_seq < seq:
                    self._catch_up(conn, space, pool, seq)
        finally:
            _end_snapshot(conn)

    @staticmethod
    def _refreshed(pool: Pool) -> bool:
        if pool.damaged:
            pool.header = None
            return False
        try:
            pool.refresh_mapping()
            return True
        except (PoolDamaged, ValueError, OSError):
            pool.header = None
            return False

    def _catch_up(self, conn: apsw.Connection, space: Space, pool: Pool, seq: int) -> None:
        """Apply the changed slots ``REBUILD_BATCH`` at a time (a load of a million
        vectors would otherwise hold every row in memory at once, several times over);
        only the last batch stamps ``seq``, so an interrupted catch-up is redone."""
        slots = [r[0] for r in conn.execute(
            "SELECT DISTINCT slot FROM embedding_changes WHERE seq > ? AND seq <= ? AND space_id = ?"
            " ORDER BY slot", (pool.header.applied_seq, seq, space.id))]
        before = pool.header.applied_seq
        for start in range(0, max(1, len(slots)), REBUILD_BATCH):
            batch = slots[start:start + REBUILD_BATCH]
            rows = conn.execute(
                "SELECT slot, node_id, vec FROM embeddings WHERE space_id = ? AND slot IN"
                " (SELECT value FROM json_each(?))", (space.id, json.dumps(batch))).fetchall()
            present = {r[0] for r in rows}
            freed = np.array([s for s in batch if s not in present], dtype=np.int64)
            last = start + REBUILD_BATCH >= len(slots)
            self._apply(pool, space, rows, freed, seq if last else before)
            if self.progress and len(slots) > REBUILD_BATCH:
                self.progress("catch up pool", min(start + REBUILD_BATCH, len(slots)), len(slots))

    def _rebuild(self, conn: apsw.Connection, space: Space, pool: Pool, seq: int) -> None:
        (total, top) = conn.execute(
            "SELECT count(*), coalesce(max(slot) + 1, 0) FROM embeddings WHERE space_id = ?",
            (space.id,)).fetchone()
        pool.create(top)
        pool.damaged = False
        done, last = 0, -1
        while True:
            rows = conn.execute(
                "SELECT slot, node_id, vec FROM embeddings WHERE space_id = ? AND slot > ?"
                " ORDER BY slot LIMIT ?", (space.id, last, REBUILD_BATCH)).fetchall()
            if not rows:
                break
            self._apply(pool, space, rows, np.empty(0, np.int64), pool.header.applied_seq)
            last = rows[-1][0]
            done += len(rows)
            if self.progress:
                self.progress("rebuild pool", done, total)
        pool.apply(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, space.dim), np.float32),
                   np.empty(0, np.int64), seq)

    @staticmethod
    def _apply(pool: Pool, space: Space, rows: list, freed: np.ndarray, seq: int) -> None:
        found = _slot_rows(rows, space)
        pool.apply(found.slots, found.ids, found.vectors, freed, seq)

    @staticmethod
    def candidate_rows(conn: apsw.Connection, space: Space, pool: Pool, slots: np.ndarray,
                       pool_ids: np.ndarray, pool_rows: np.ndarray) -> tuple[SlotRows, list[int]]:
        """The SQLite rows of candidate ``slots`` (sorted, distinct) and the slots
        whose pool copy (``pool_ids``, decoded ``pool_rows``, in the order of
        ``slots``) disagrees with them: no row, another node, or another vector.

        The pool has no checksum over its rows (keeping one current would cost a
        pass over every segment per commit); instead the few candidates a search
        rescores are checked against the rows it reads anyway."""
        rows = conn.execute(
            "SELECT slot, node_id, vec FROM embeddings WHERE space_id = ? AND slot IN"
            " (SELECT value FROM json_each(?)) ORDER BY slot",
            (space.id, json.dumps(slots.tolist()))).fetchall()
        found = _slot_rows(rows, space)
        at = np.searchsorted(slots, found.slots)  # each found slot is one of ``slots``
        same = pool_ids[at] == found.ids
        agree = np.zeros(len(slots), bool)
        if same.any():
            agree[at[same]] = pool.rows_agree(pool_rows[at[same]], found.vectors[same])
        return found, slots[~agree].tolist()

    def confirm_damage(self, conn: apsw.Connection, space: Space, slots: list[int]) -> bool:
        """After a search saw candidates disagree with SQLite: catch the pool up, and if
        those slots still disagree in one snapshot of the rows, mark the pool damaged so
        the next use rebuilds it. False when the disagreement was a concurrent commit."""
        pool = self.pool(conn, space)
        conn.execute("BEGIN")
        try:
            with pool.reading():
                if pool.header is None or pool.header.applied_seq != _current_seq(conn):
                    return False  # moved on meanwhile; the caller searches again
                arr = np.unique(np.asarray(slots, np.int64))
                ids, rows = pool.read_slots(arr)
                _found, bad = self.candidate_rows(conn, space, pool, arr, ids, rows)
        finally:
            _end_snapshot(conn)
        if bad:
            pool.damaged = True
        return bool(bad)

    def compact(self, conn: apsw.Connection) -> None:
        """Renumber every space's slots densely (run in a write transaction) and
        mark the change log pruned, so each pool is rebuilt at its live size."""
        for space in self.spaces(conn):
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS slot_map (old INTEGER PRIMARY KEY, new INTEGER)")
            conn.execute("DELETE FROM temp.slot_map")
            conn.execute("INSERT INTO temp.slot_map (old, new) SELECT slot, row_number() OVER"
                         " (ORDER BY slot) - 1 FROM embeddings WHERE space_id = ?", (space.id,))
            # Two steps so the unique (space_id, slot) index never sees a clash.
            conn.execute("UPDATE embeddings SET slot = -1 - (SELECT new FROM temp.slot_map WHERE old = slot)"
                         " WHERE space_id = ?", (space.id,))
            conn.execute("UPDATE embeddings SET slot = -1 - slot WHERE space_id = ?", (space.id,))
            live = conn.execute("SELECT count(*) FROM embeddings WHERE space_id = ?",
                                (space.id,)).fetchone()[0]
            conn.execute("DELETE FROM free_slots WHERE space_id = ?", (space.id,))
            conn.execute("DELETE FROM embedding_changes WHERE space_id = ?", (space.id,))
            conn.execute("UPDATE spaces SET next_slot = ?, pruned_through = ? WHERE id = ?",
                         (live, _current_seq(conn), space.id))
            self._touched.add(space.id)

    def rebuild_all(self, conn: apsw.Connection) -> None:
        """Rebuild every space's pool from SQLite, whatever state it is in (repair)."""
        for space in self.spaces(conn):
            with self._lock:
                pool = self._pools.get(space.id)
                if pool is None:
                    pool = self._pools[space.id] = self._open_pool(conn, space)
                conn.execute("BEGIN")
                try:
                    pool._rw.acquire(True)
                    try:
                        pool.ensure_open()
                    finally:
                        pool._rw.release(True)
                    with pool.lock(exclusive=True):
                        self._rebuild(conn, space, pool, _current_seq(conn))
                finally:
                    _end_snapshot(conn)

    def prune_log(self, conn: apsw.Connection) -> None:
        """Drop change-log rows every pool has applied (run inside a write transaction)."""
        for space in self.spaces(conn):
            pool = self._pools.get(space.id)
            if pool is None or pool.header is None or pool.path is None:
                continue
            through = pool.header.applied_seq
            conn.execute("DELETE FROM embedding_changes WHERE space_id = ? AND seq <= ?",
                         (space.id, through))
            conn.execute("UPDATE spaces SET pruned_through = max(pruned_through, ?) WHERE id = ?",
                         (through, space.id))


def _current_seq(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'embedding_changes'").fetchone()
    return row[0] if row else 0

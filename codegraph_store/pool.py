"""The embedding pool: an mmap'd, fixed-stride copy of one space's vectors.

SQLite is the truth (``embeddings`` rows, each with the ``slot`` it occupies);
the pool file beside the database is derived from it and can always be caught
up (replaying ``embedding_changes`` after the pool's ``applied_seq``) or rebuilt
(from every row). A pool that is missing, made for another database, behind a
pruned change log, or damaged in any way the header can tell, is rebuilt.

File layout (little-endian)::

    header   4096 bytes: magic, version, dtype, dim, stride, flags, segment
             count and capacities, live count, applied_seq, store uuid,
             space id, CRC-32 of everything before it
    segment  ids    capacity x int64   (node id in the slot, 0 = free)
             scales capacity x float32 (int8 pools: value = int8 * scale)
             rows   capacity x stride  (stride = dim * itemsize rounded up to 64)
    segment  ... each section 64-byte aligned

The pool grows by appending a segment (ftruncate + remap); existing rows never
move. Cosine spaces store L2-normalised rows, so the scan is a dot product.
Writers hold an exclusive ``flock`` on the file while they change it, searches
a shared one, so a reader in any process sees the pool before or after a
change, never half of one. Every size read from the header is checked against
the file before it is used.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import zlib
import numpy as np

from .errors import CorruptStoreError, StoreIOError

MAGIC = b"CGPOOL\x00\x01"
VERSION = 1
HEADER_SIZE = 4096
MAX_SEGMENTS = 48
DTYPE_CODES = {"float32": 0, "float16": 1, "int8": 2}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
FLAG_NORMALIZED = 1
# magic, version, dtype, dim, stride, flags, segments, count, applied_seq, uuid, space, caps[48]
_FIXED = struct.Struct("<8sIIIIII QQ 16s Q")
_CAPS = struct.Struct(f"<{MAX_SEGMENTS}Q")
_CRC_AT = _FIXED.size + _CAPS.size
_ALIGN = 64
F16_MAX = 65504.0


class PoolDamaged(Exception):
    """Internal: the pool file cannot be used as it is and must be rebuilt."""


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def stride_for(dim: int, dtype: str) -> int:
    return _align(dim * np.dtype(dtype).itemsize)


def segment_bytes(capacity: int, stride: int) -> int:
    return _align(capacity * 8) + _align(capacity * 4) + capacity * stride


class Segment:
    """Views into one segment of the mapping."""

    __slots__ = ("first_slot", "capacity", "ids", "scales", "rows")

    def __init__(self, buf: memoryview, offset: int, first_slot: int, capacity: int,
                 stride: int):
        self.first_slot = first_slot
        self.capacity = capacity
        ids_end = offset + _align(capacity * 8)
        scales_end = ids_end + _align(capacity * 4)
        self.ids = np.frombuffer(buf, np.int64, capacity, offset)
        self.scales = np.frombuffer(buf, np.float32, capacity, ids_end)
        self.rows = np.frombuffer(buf, np.uint8, capacity * stride, scales_end).reshape(capacity, stride)


class Header:
    """The parsed pool header; ``parse`` validates every field it returns."""

    def __init__(self, dtype: str, dim: int, stride: int, flags: int, caps: list[int],
                 count: int, applied_seq: int, uuid: bytes, space_id: int):
        self.dtype, self.dim, self.stride, self.flags = dtype, dim, stride, flags
        self.caps, self.count, self.applied_seq = caps, count, applied_seq
        self.uuid, self.space_id = uuid, space_id

    def pack(self) -> bytes:
        caps = self.caps + [0] * (MAX_SEGMENTS - len(self.caps))
        body = (_FIXED.pack(MAGIC, VERSION, DTYPE_CODES[self.dtype], self.dim, self.stride,
                            self.flags, len(self.caps), self.count, self.applied_seq,
                            self.uuid, self.space_id) + _CAPS.pack(*caps))
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def parse(cls, raw: bytes, file_size: int) -> "Header":
        if len(raw) < HEADER_SIZE:
            raise PoolDamaged(f"file is shorter than its header ({len(raw)} bytes)")
        (magic, version, dtype, dim, stride, flags, segments, count, applied, uuid,
         space) = _FIXED.unpack_from(raw)
        if magic != MAGIC:
            raise PoolDamaged("not a pool file (bad magic)")
        if version != VERSION:
            raise PoolDamaged(f"pool format version {version}, expected {VERSION}")
        (crc,) = struct.unpack_from("<I", raw, _CRC_AT)
        if crc != zlib.crc32(raw[:_CRC_AT]):
            raise PoolDamaged("header checksum mismatch")
        if dtype not in DTYPE_NAMES:
            raise PoolDamaged(f"unknown dtype code {dtype}")
        name = DTYPE_NAMES[dtype]
        if not 1 <= dim <= 16384 or stride != stride_for(dim, name):
            raise PoolDamaged(f"dim {dim} / stride {stride} are inconsistent")
        if not 1 <= segments <= MAX_SEGMENTS:
            raise PoolDamaged(f"segment count {segments} out of range")
        caps = list(_CAPS.unpack_from(raw, _FIXED.size)[:segments])
        if any(c <= 0 or c > 2**40 for c in caps):
            raise PoolDamaged("a segment capacity is out of range")
        expected = HEADER_SIZE + sum(segment_bytes(c, stride) for c in caps)
        if expected != file_size:
            raise PoolDamaged(f"header describes {expected} bytes, the file has {file_size}")
        if count > sum(caps):
            raise PoolDamaged("live count exceeds capacity")
        return cls(name, dim, stride, flags, caps, count, applied, uuid, space)


class Pool:
    """One space's pool file (or an in-memory pool for read-only stores)."""

    def __init__(self, path: str | None, space_id: int, dim: int, metric: str, dtype: str,
                 uuid: bytes, initial_capacity: int, chunk_bytes: int, writable: bool):
        self.path = path
        self.space_id, self.dim, self.metric, self.dtype = space_id, dim, metric, dtype
        self.uuid = uuid
        self.stride = stride_for(dim, dtype)
        self.initial_capacity = initial_capacity
        self.chunk_bytes = chunk_bytes
        self.writable = writable
        self.normalized = metric == "cosine"
        self._fd: int | None = None
        self._map: mmap.mmap | bytearray | None = None
        self.header: Header | None = None
        self.segments: list[Segment] = []
        self._live_cache: tuple[int, list[np.ndarray]] | None = None
        self._rw = RWLock()
        self._flock_guard = threading.Lock()
        self._shared_holders = 0
        self._locked_fd: int | None = None
        # Set when a search found rows that disagree with SQLite: rebuild on next use.
        self.damaged = False

    # ------------------------------------------------------------ mapping

    def close(self) -> None:
        self._live_cache = None
        self.header = None
        self._unmap()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _layout(self, header: Header, buf) -> None:
        view = memoryview(buf)
        self.segments = []
        offset, first = HEADER_SIZE, 0
        for cap in header.caps:
            self.segments.append(Segment(view, offset, first, cap, self.stride))
            offset += segment_bytes(cap, self.stride)
            first += cap
        self.header = header

    def _check_matches(self, header: Header) -> None:
        if header.uuid != self.uuid or header.space_id != self.space_id:
            raise PoolDamaged("pool belongs to another database or space")
        if header.dtype != self.dtype or header.dim != self.dim:
            raise PoolDamaged(f"pool holds {header.dtype} x {header.dim}, "
                              f"the store wants {self.dtype} x {self.dim}")
        if bool(header.flags & FLAG_NORMALIZED) != self.normalized:
            raise PoolDamaged("pool normalisation does not match the space's metric")

    def ensure_open(self) -> None:
        """Open the file descriptor (creating an empty file when writable), and reopen
        it if another process replaced the file. Raises FileNotFoundError for a
        read-only pool whose file does not exist."""
        if self.path is None:
            return
        if self._fd is not None:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return
            self.close()
        flags = (os.O_RDWR | os.O_CREAT) if self.writable else os.O_RDONLY
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)

    def refresh_mapping(self) -> None:
        """(Re)map the file after validating its header; call under the file lock.

        Raises PoolDamaged when the file is empty, lies, or belongs elsewhere.
        """
        if self.path is None:
            if self.header is None:
                raise PoolDamaged("in-memory pool not built yet")
            return
        size = os.fstat(self._fd).st_size
        if size < HEADER_SIZE:
            raise PoolDamaged(f"file is {size} bytes, shorter than a header")
        header = Header.parse(os.pread(self._fd, HEADER_SIZE, 0), size)
        self._check_matches(header)
        if self._map is None or len(self._map) != size:
            self._unmap()
            access = mmap.ACCESS_WRITE if self.writable else mmap.ACCESS_READ
            self._map = mmap.mmap(self._fd, size, access=access)
        self._layout(header, self._map)

    def _unmap(self) -> None:
        self.segments = []
        old, self._map = self._map, None
        if isinstance(old, mmap.mmap):
            try:
                old.close()
            except BufferError:
                pass  # a result still views it; unmapped when that view goes away

    def create(self, capacity: int) -> None:
        """Make the pool empty with room for ``capacity`` slots; call under the
        exclusive lock. The file is rewritten in place (same inode), so other
        processes holding it open see the new contents after they remap."""
        capacity = self._round_capacity(max(capacity, self.initial_capacity))
        header = Header(self.dtype, self.dim, self.stride, FLAG_NORMALIZED if self.normalized else 0,
                        [capacity], 0, 0, self.uuid, self.space_id)
        size = HEADER_SIZE + segment_bytes(capacity, self.stride)
        self._unmap()
        if self.path is None:
            self._map = bytearray(size)
            self._map[:_CRC_AT + 4] = header.pack()
            self._layout(header, self._map)
            return
        self.header = None
        self._resize(0)
        self._resize(size)
        os.pwrite(self._fd, header.pack(), 0)
        self._layout(header, self._map)

    def _round_capacity(self, rows: int) -> int:
        per_chunk = max(1, self.chunk_bytes // self.stride)
        return -(-rows // per_chunk) * per_chunk

    @property
    def capacity(self) -> int:
        return sum(self.header.caps) if self.header else 0

    def _grow_to(self, slots: int) -> None:
        """Append segments (doubling) until ``slots`` fit; rows already there stay put."""
        header = self.header
        caps = list(header.caps)
        while sum(caps) < slots:
            if len(caps) >= MAX_SEGMENTS:
                raise CorruptStoreError("embedding pool cannot grow past its segment limit")
            caps.append(self._round_capacity(max(sum(caps), self.initial_capacity)))
        if caps == header.caps:
            return
        size = HEADER_SIZE + sum(segment_bytes(c, self.stride) for c in caps)
        if self.path is None:
            self.segments = []
            self._map.extend(bytes(size - len(self._map)))
        else:
            self.header = None  # until the file has its new size; the next sync remaps
            self._resize(size)  # the new segment reads as zeros: all slots free
            self.header = header
        header.caps = caps
        self._write_header()

    def _resize(self, size: int) -> None:
        """Set the file's size and map it. Disk full (or any refusal) is a
        StoreIOError; the pool is left unmapped, to be remapped or rebuilt by the
        next sync, and SQLite, the truth, is untouched."""
        self._unmap()
        try:
            os.ftruncate(self._fd, size)
            if size:
                self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_WRITE)
        except OSError as e:
            raise StoreIOError(f"{self.path}: cannot size the embedding pool to {size} bytes: "
                               f"{e.strerror or e}") from e

    def _write_header(self) -> None:
        self._map[:_CRC_AT + 4] = self.header.pack()
        self._layout(self.header, self._map)

    # ------------------------------------------------------------ locking

    def lock(self, exclusive: bool):
        """Other processes: flock on the file. Other threads of this process share
        the descriptor (flock does not separate them), so an in-process
        reader/writer lock is taken too."""
        return _PoolLock(self, exclusive)

    def reading(self):
        """Held while scanning: no thread or process may remap or rewrite meanwhile."""
        return _PoolLock(self, False)

    # ------------------------------------------------------------ writes

    def _locate(self, slot: int) -> tuple[Segment, int]:
        for seg in self.segments:
            if slot < seg.first_slot + seg.capacity:
                return seg, slot - seg.first_slot
        raise IndexError(slot)

    def apply(self, slots: np.ndarray, node_ids: np.ndarray, vectors: np.ndarray,
              freed: np.ndarray, applied_seq: int) -> None:
        """Write ``vectors`` (f32, one per slot) with their node ids, free ``freed``
        slots, and stamp the header with ``applied_seq``. Vectorised per segment."""
        top = max(int(slots.max()) + 1 if len(slots) else 0, int(freed.max()) + 1 if len(freed) else 0)
        self._grow_to(top)
        if len(slots):
            rows = self._encode(np.ascontiguousarray(vectors, np.float32))
            scales = rows[1]
            for seg in self.segments:
                sel = (slots >= seg.first_slot) & (slots < seg.first_slot + seg.capacity)
                if not sel.any():
                    continue
                local = slots[sel] - seg.first_slot
                seg.rows[local, : rows[0].shape[1]] = rows[0][sel]
                seg.scales[local] = scales[sel]
                seg.ids[local] = node_ids[sel]
        for seg in self.segments:
            sel = (freed >= seg.first_slot) & (freed < seg.first_slot + seg.capacity)
            if sel.any():
                seg.ids[freed[sel] - seg.first_slot] = 0
        self.header.count = int(sum(int(np.count_nonzero(seg.ids)) for seg in self.segments))
        self.header.applied_seq = applied_seq
        self._write_header()

    def _encode(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows as bytes in the pool dtype, and their scales (1.0 unless int8)."""
        if self.normalized:
            norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64))
            vecs = (vecs / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
        ones = np.ones(vecs.shape[0], np.float32)
        if self.dtype == "float32":
            return vecs.view(np.uint8), ones
        if self.dtype == "float16":
            # Beyond f16's range a value saturates instead of becoming inf; exact
            # rescoring from the f32 rows keeps the returned scores right.
            clipped = np.clip(vecs, -F16_MAX, F16_MAX)
            return np.ascontiguousarray(clipped.astype(np.float16)).view(np.uint8), ones
        from . import kernel  # the compiled kernel loads on first use of a pool
        q, scales = kernel.quantize_int8(vecs)
        return q.view(np.uint8), scales.astype(np.float32)

    def reset(self, capacity: int) -> None:
        """Empty the pool (for a rebuild) with room for ``capacity`` slots."""
        self.create(capacity)

    # ------------------------------------------------------------ reads

    def live_masks(self) -> list[np.ndarray]:
        """Per segment, the allow-bitmap of occupied slots (cached per applied_seq)."""
        # Keyed by what the masks depend on: a remap of an unchanged pool
        # (every search refreshes the mapping) keeps them.
        key = (self.header.applied_seq, tuple(self.header.caps), id(self._map))
        if self._live_cache is None or self._live_cache[0] != key:
            masks = [seg.ids != 0 for seg in self.segments]
            if sum(int(np.count_nonzero(m)) for m in masks) != self.header.count:
                self.damaged = True  # ids were overwritten: the search rebuilds the pool
            self._live_cache = (key, [bitmap_from_mask(m) for m in masks])
        return self._live_cache[1]

    def scan_slots(self, queries: np.ndarray, k: int, allows: list[np.ndarray] | None,
                   threads: int, simd_threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best ``k`` (slots, node ids, pool scores) per query across every segment."""
        from . import kernel
        metric = "dot" if self.normalized else self.metric
        allows = allows if allows is not None else self.live_masks()
        parts_slots, parts_ids, parts_scores = [], [], []
        for seg, allow in zip(self.segments, allows):
            if not allow.any():
                continue
            rows, vals = kernel.topk(seg.rows, seg.capacity, self.dim, self.dtype, queries, k,
                                     metric, scales=seg.scales if self.dtype == "int8" else None,
                                     allow=allow, threads=threads, simd_threshold=simd_threshold)
            parts_slots.append(rows + seg.first_slot)
            parts_ids.append(seg.ids[rows])
            parts_scores.append(vals)
        nq = queries.shape[0]
        if not parts_ids:
            return (np.empty((nq, 0), np.int64), np.empty((nq, 0), np.int64),
                    np.empty((nq, 0), np.float32))
        slots = np.concatenate(parts_slots, axis=1)
        ids = np.concatenate(parts_ids, axis=1)
        vals = np.concatenate(parts_scores, axis=1)
        if len(parts_ids) > 1:
            order = np.argsort(vals if metric == "l2" else -vals, axis=1, kind="stable")[:, :k]
            slots = np.take_along_axis(slots, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
        return slots, ids, vals

    def read_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the node ids and the decoded float32 rows in ``slots`` (call
        under a lock), for checking candidates against their SQLite rows."""
        ids = np.empty(len(slots), np.int64)
        vecs = np.empty((len(slots), self.dim), np.float32)
        width = self.dim * np.dtype(self.dtype).itemsize
        placed = np.zeros(len(slots), bool)
        for seg in self.segments:
            sel = (slots >= seg.first_slot) & (slots < seg.first_slot + seg.capacity)
            if not sel.any():
                continue
            local = slots[sel] - seg.first_slot
            ids[sel] = seg.ids[local]
            raw = seg.rows[local, :width].view(self.dtype)
            vecs[sel] = raw * seg.scales[local][:, None] if self.dtype == "int8" else raw
            placed |= sel
        if not placed.all():
            raise IndexError(int(slots[~placed][0]))
        return ids, vecs

    def rows_agree(self, stored: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Per row, whether decoded pool rows ``stored`` are what encoding the
        float32 rows ``truth`` gives, within the rounding of the pool dtype.

        Garbage changes a row by at least one quantization step somewhere (int8),
        or beyond float16 rounding; such a row disagrees."""
        if self.normalized:
            norms = np.sqrt(np.einsum("ij,ij->i", truth, truth, dtype=np.float64))
            truth = truth / np.where(norms > 0, norms, 1.0)[:, None]
        if self.dtype == "float16":
            truth = np.clip(truth, -F16_MAX, F16_MAX)
        amax = np.max(np.abs(truth), axis=1, initial=0.0)
        rel = {"float32": 1e-6, "float16": 1e-3, "int8": 0.51 / 127 + 1e-6}[self.dtype]
        tol = amax * rel + 1e-30
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.max(np.abs(stored.astype(np.float64) - truth), axis=1, initial=0.0)
        return diff <= tol

    def slot_bitmaps(self, slots: np.ndarray) -> list[np.ndarray]:
        """Allow-bitmaps per segment that admit exactly ``slots`` (and only live ones)."""
        out = []
        for seg, live in zip(self.segments, self.live_masks()):
            local = slots[(slots >= seg.first_slot) & (slots < seg.first_slot + seg.capacity)]
            mask = np.zeros(seg.capacity, dtype=bool)
            mask[local - seg.first_slot] = True
            out.append(bitmap_from_mask(mask) & live)
        return out

    def stats(self) -> dict:
        cap = self.capacity
        live = self.header.count if self.header else 0
        return {"path": self.path, "dtype": self.dtype, "dim": self.dim, "stride": self.stride,
                "capacity": cap, "live": live, "segments": len(self.segments),
                "efficiency": (live / cap) if cap else 1.0,
                "bytes": HEADER_SIZE + sum(segment_bytes(s.capacity, self.stride) for s in self.segments),
                "applied_seq": self.header.applied_seq if self.header else 0}


def bitmap_from_mask(mask: np.ndarray) -> np.ndarray:
    """Bool mask -> uint64 words, bit i of word i >> 6 = row i (the kernel's allow format)."""
    n = mask.shape[0]
    padded = np.zeros(-(-n // 64) * 64, dtype=bool)
    padded[:n] = mask
    return np.packbits(padded, bitorder="little").view(np.uint64)


class RWLock:
    """Many readers or one writer, among the threads of one process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def acquire(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                while self._writer or self._readers:
                    self._cond.wait()
                self._writer = True
            else:
                while self._writer:
                    self._cond.wait()
                self._readers += 1

    def release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


class _PoolLock:
    """The in-process lock, then flock on the pool file (none for in-memory pools).

    Shared holders count per process: the file lock is taken by the first
    reader thread and dropped by the last, so one thread's unlock can never
    release another's hold."""

    def __init__(self, pool: "Pool", exclusive: bool):
        self._pool = pool
        self._exclusive = exclusive

    def __enter__(self):
        pool = self._pool
        pool._rw.acquire(self._exclusive)
        try:
            with pool._flock_guard:
                if self._exclusive or pool._shared_holders == 0:
                    if pool._fd is not None:
                        fcntl.flock(pool._fd, fcntl.LOCK_EX if self._exclusive else fcntl.LOCK_SH)
                    pool._locked_fd = pool._fd
                if not self._exclusive:
                    pool._shared_holders += 1
        except BaseException:
            pool._rw.release(self._exclusive)
            raise
        return self

    def __exit__(self, *exc):
        pool = self._pool
        try:
            with pool._flock_guard:
                if not self._exclusive:
                    pool._shared_holders -= 1
                if (self._exclusive or pool._shared_holders == 0) and pool._locked_fd is not None:
                    try:
                        fcntl.flock(pool._locked_fd, fcntl.LOCK_UN)
                    except OSError:
                        pass  # the descriptor was closed (and its lock with it) meanwhile
                    pool._locked_fd = None
        finally:
            pool._rw.release(self._exclusive)

"""APSW VFS shims for the reliability tests, installed through the internal
``codegraph_store.storage.VFS_NAME`` hook.

``FaultVFS`` counts file operations (reads, writes, syncs, truncates) across
every file SQLite opens and makes the Nth fail with SQLITE_IOERR or SQLITE_FULL,
once or from then on. ``PowerLossVFS`` keeps each file's writes pending until
that file's xSync; at a chosen sync it "loses power": the pending writes of
every file are dropped, written, or written garbled, and the VFS refuses all
later I/O, as if the machine had stopped. Reopening with the normal VFS then
shows what a disk would hold after the crash (the SQLite crash-test method).
"""

from __future__ import annotations

import contextlib
import random

import apsw

from codegraph_store import storage


class Fault:
    """Fail the ``at``-th counted operation (and, if persistent, every later one)."""

    def __init__(self, at: int | None, error=apsw.IOError, persistent: bool = False):
        self.at, self.error, self.persistent = at, error, persistent
        self.count = 0
        self.fired = 0

    def tick(self) -> None:
        if self.at is None:
            return
        self.count += 1
        if self.count == self.at or (self.persistent and self.count > self.at):
            self.fired += 1
            raise self.error("injected fault")


class FaultFile(apsw.VFSFile):
    def __init__(self, fault: Fault, name, flags):
        self.fault = fault
        super().__init__("", name, flags)

    def xRead(self, amount, offset):
        self.fault.tick()
        return super().xRead(amount, offset)

    def xWrite(self, data, offset):
        self.fault.tick()
        super().xWrite(data, offset)

    def xSync(self, flags):
        self.fault.tick()
        super().xSync(flags)

    def xTruncate(self, size):
        self.fault.tick()
        super().xTruncate(size)


class FaultVFS(apsw.VFS):
    def __init__(self, name: str = "cg-fault"):
        self.name = name
        self.fault = Fault(None)
        super().__init__(name, "")

    def xOpen(self, name, flags):
        return FaultFile(self.fault, name, flags)


class PowerCut(Exception):
    pass


class PowerLossFile(apsw.VFSFile):
    """Writes go to ``pending`` until xSync; reads see them (the OS page cache)."""

    def __init__(self, vfs: "PowerLossVFS", name, flags):
        self.vfs = vfs
        self.pending: dict[int, bytes] = {}
        self.size: int | None = None
        super().__init__("", name, flags)
        vfs.files.append(self)

    def _check(self):
        if self.vfs.dead:
            raise apsw.IOError("power is off")

    def _disk_size(self) -> int:
        return super().xFileSize()

    def xFileSize(self):
        self._check()
        return self.size if self.size is not None else self._disk_size()

    def xRead(self, amount, offset):
        self._check()
        size = self.xFileSize()
        if offset >= size:
            return b""  # a short read: APSW zero-fills and reports SQLITE_IOERR_SHORT_READ
        disk = bytearray(super().xRead(amount, offset) if offset < self._disk_size() else b"")
        disk = disk[:size - offset].ljust(min(amount, size - offset), b"\0")
        for at, data in self.pending.items():
            lo, hi = max(at, offset), min(at + len(data), offset + len(disk))
            if lo < hi:
                disk[lo - offset:hi - offset] = data[lo - at:hi - at]
        return bytes(disk)

    def xWrite(self, data, offset):
        self._check()
        self.pending[offset] = bytes(data)
        self.size = max(self.xFileSize(), offset + len(data))

    def xTruncate(self, size):
        self._check()
        self.pending = {at: d[:max(0, size - at)] for at, d in self.pending.items() if at < size}
        self.size = size

    def xSync(self, flags):
        self._check()
        self.vfs.syncs += 1
        if self.vfs.syncs == self.vfs.cut_at:
            self.vfs.lose_power()
            raise apsw.IOError("power lost")
        self.flush()

    def flush(self, mode: str = "write") -> None:
        rng = self.vfs.rng
        if self.size is not None and self.size < self._disk_size():
            super().xTruncate(self.size)
        for at, data in sorted(self.pending.items()):
            if mode == "drop" or (mode == "some" and rng.random() < 0.5):
                continue
            if mode == "garble":
                data = bytes(rng.getrandbits(8) for _ in range(len(data)))
            super().xWrite(data, at)
        self.pending.clear()
        self.size = None

    def xClose(self):
        # Closing without a sync keeps the data in the page cache, which a power
        # loss (later) may still lose; the tests only cut power before closing.
        if not self.vfs.dead:
            self.flush()
        super().xClose()


class PowerLossVFS(apsw.VFS):
    """``mode``: what happens to unsynced writes at the cut: "drop", "some" (each
    write independently kept or dropped) or "garble"."""

    def __init__(self, cut_at: int | None, mode: str, seed: int, name: str = "cg-power"):
        self.cut_at, self.mode = cut_at, mode
        self.rng = random.Random(seed)
        self.syncs = 0
        self.dead = False
        self.files: list[PowerLossFile] = []
        self.name = name
        super().__init__(name, "")

    def xOpen(self, name, flags):
        return PowerLossFile(self, name, flags)

    def lose_power(self) -> None:
        self.dead = True
        for f in self.files:
            f.flush(self.mode)


@contextlib.contextmanager
def installed(vfs: apsw.VFS):
    """Every store connection opened inside the block goes through ``vfs``."""
    old = storage.VFS_NAME
    storage.VFS_NAME = vfs.name
    try:
        yield vfs
    finally:
        storage.VFS_NAME = old
        vfs.unregister()

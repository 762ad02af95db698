"""A thread-safe LRU cache of node rows, bounded by entries and by bytes.

Staleness is handled by the store, not here: it clears the cache when any
connection sees another commit (``PRAGMA data_version``). ``epoch`` counts those
clears so a reader that fetched a row before a clear does not put it back after
(:meth:`put_if_current`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable


class LRUCache:
    """``max_entries`` and ``max_bytes`` bound it; past either it evicts down to
    ``low_water`` (a fraction) of the bound, so evictions come in bursts."""

    def __init__(self, max_entries: int, max_bytes: int, low_water: float = 0.8):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.low_water = low_water
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.epoch = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Any:
        """The cached value or ``None``; a hit becomes most recently used.

        No lock: dict lookups and ``move_to_end`` are atomic under the GIL, and a
        concurrent eviction between the two is harmless (the hit still returns
        the value it found). The counters are approximate under threads.
        """
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        try:
            self._data.move_to_end(key)
        except KeyError:
            pass
        self.hits += 1
        return item[0]

    def put_if_current(self, epoch: int, items: list[tuple[Hashable, Any, int]]) -> None:
        """Insert ``(key, value, size_in_bytes)`` read while ``epoch`` was current.

        Dropped if a clear happened since: the rows may predate another commit.
        """
        with self._lock:
            if epoch != self.epoch:
                return
            data = self._data
            for key, value, size in items:
                old = data.pop(key, None)
                if old is not None:
                    self._bytes -= old[1]
                data[key] = (value, size)
                self._bytes += size
            if len(data) > self.max_entries or self._bytes > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        target_entries = int(self.max_entries * self.low_water)
        target_bytes = int(self.max_bytes * self.low_water)
        data = self._data
        while data and (len(data) > target_entries or self._bytes > target_bytes):
            _, (_, size) = data.popitem(last=False)
            self._bytes -= size

    def put_one_if_current(self, epoch: int, key: Hashable, value: Any, size: int) -> None:
        """:meth:`put_if_current` for one item, without building a list (the get_node miss path)."""
        with self._lock:
            if epoch != self.epoch:
                return
            data = self._data
            old = data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            data[key] = (value, size)
            self._bytes += size
            if self._bytes > self.max_bytes or len(data) > self.max_entries:
                self._evict()

    def clear(self) -> None:
        """Drop everything and start a new epoch."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.epoch += 1

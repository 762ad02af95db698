"""Background prefetch of the next level of a walk into the node cache.

After ``neighbors()`` returns, a caller exploring the graph usually asks for the
neighbours of what it just got (callers of callers). The prefetcher loads up to
``prefetch_depth`` of those next-level nodes into the cache on its own thread
and connection while the caller is busy with the answer. Requests are dropped,
never queued without bound, when the thread falls behind: prefetching may only
ever save time.
"""

from __future__ import annotations

import queue
import threading

import apsw

from . import graph
from .errors import CodegraphError


class Prefetcher:
    def __init__(self, store, depth: int):
        self._store = store
        self._depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._run, name="codegraph-prefetch", daemon=True)
        self._thread.start()
        self.loaded = 0

    def request(self, ids: list[int], direction: str, kinds: list[int] | None) -> None:
        """Ask for the neighbours of ``ids`` to be cached; returns at once."""
        try:
            self._queue.put_nowait((ids[: self._depth], direction, kinds))
        except queue.Full:
            pass

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            # Make room for the stop signal; a dropped prefetch costs nothing.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        store = self._store
        while True:
            item = self._queue.get()
            if item is None:
                return
            ids, direction, kinds = item
            try:
                conn, cached = store._read_conn()
                if not cached:
                    continue
                wanted = []
                for _frm, to in graph.expand_level(conn, ids, direction, kinds):
                    if len(wanted) >= self._depth:
                        break
                    wanted.append(to)
                cache = store._cache
                wanted = [i for i in dict.fromkeys(wanted) if cache.get(i) is None]
                if wanted:
                    store._load(conn, True, wanted)
                    self.loaded += len(wanted)
            except (apsw.Error, CodegraphError):
                # The store is closing or the file changed under us; the next
                # real read reports any damage.
                continue

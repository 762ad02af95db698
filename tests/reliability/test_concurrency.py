"""Concurrency: two writer processes, reader processes and threads. An invariant
only a torn transaction could break is never seen broken, and a writer that
cannot get the lock waits within the busy timeout, then fails with BusyError."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import apsw
import numpy as np
import pytest

from codegraph_store import Store, storage
from codegraph_store.errors import BusyError

import workload

pytestmark = pytest.mark.scenario(
    "busy writer", "waits for the lock within the busy timeout, then BusyError; nothing half-written")

ENV = {**os.environ, "PYTHONPATH": os.path.dirname(workload.__file__)}


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, workload.__file__, *args], stdout=subprocess.PIPE,
                            text=True, env=ENV)


@pytest.mark.scenario("2 writer processes, 2 reader processes, 2 reader threads", "no reader sees a"
                      " torn transaction; no writer gives up within the busy timeout")
def test_readers_never_see_a_torn_transaction(tmp_path, stress, tally):
    reads_tally = tally()  # one iteration per group read checked
    db = str(tmp_path / "conc.cgdb")
    stop = str(tmp_path / "stop")
    writes = 2000 if stress else 150
    with Store.open(db) as store:
        for k in range(workload.GROUPS):
            workload.write_group(store, k, 1, k)
    readers = [spawn("group_reader", db, stop) for _ in range(2)]
    writers = [spawn("group_writer", db, str(seed), str(writes)) for seed in (1, 2)]
    thread_results: list[tuple[int, int]] = []

    def read_in_thread(store: Store) -> None:
        checks = torn = 0
        while not os.path.exists(stop) or checks == 0:
            for k in range(workload.GROUPS):
                checks += 1
                torn += not workload.group_is_whole(store, k)
        thread_results.append((checks, torn))

    with Store.open(db, readonly=True) as shared:
        threads = [threading.Thread(target=read_in_thread, args=(shared,)) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            busy = [int(w.communicate(timeout=600)[0]) for w in writers]
        finally:
            open(stop, "w").close()
            for t in threads:
                t.join()
        reads = [tuple(map(int, r.communicate(timeout=60)[0].split())) for r in readers]
    reads_tally.iterations = sum(checks for checks, _ in reads + thread_results)
    reads_tally.failures = sum(torn for _, torn in reads + thread_results) + sum(busy)
    assert [w.returncode for w in writers] == [0, 0]
    assert busy == [0, 0], "writers gave up inside the busy timeout"
    assert all(checks > 0 and torn == 0 for checks, torn in reads + thread_results), (reads, thread_results)
    with Store.open(db) as store:
        assert store.check().ok
        assert all(workload.group_is_whole(store, k) for k in range(workload.GROUPS))


def _hold_write_lock(db: str, seconds: float, locked: threading.Event) -> None:
    conn = apsw.Connection(db)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def test_a_busy_writer_waits_for_the_lock(tmp_path, make_node):
    db = str(tmp_path / "busy.cgdb")
    with Store.open(db) as store:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(db, 0.5, locked))
        holder.start()
        locked.wait()
        started = time.monotonic()
        store.add_nodes([make_node("after_wait")])
        waited = time.monotonic() - started
        holder.join()
        assert waited >= 0.4
        assert [n.name for n in store.find("after_wait")] == ["after_wait"]


def test_past_the_busy_timeout_a_writer_gets_busy_error(tmp_path, make_node, monkeypatch):
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_MS", 200)
    db = str(tmp_path / "busy.cgdb")
    with Store.open(db) as store:
        store.add_nodes([make_node("before")])
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(db, 1.5, locked))
        holder.start()
        locked.wait()
        started = time.monotonic()
        with pytest.raises(BusyError) as info:
            store.add_nodes([make_node("blocked")])
        assert isinstance(info.value, TimeoutError) and "locked by another writer" in str(info.value)
        assert 0.15 <= time.monotonic() - started < 1.4
        holder.join()
        # Nothing half-written, and the store works once the lock is free.
        assert store.find("blocked") == []
        store.add_nodes([make_node("after")])
        assert [n.name for n in store.find("after")] == ["after"]
        assert store.check().ok


@pytest.mark.scenario("torn-read check, self-test", "the invariant the readers check flags a torn group")
def test_the_invariant_check_sees_a_torn_group(tmp_path):
    with Store.open(str(tmp_path / "torn.cgdb")) as store:
        workload.write_group(store, 0, 3, tag=7)
        assert workload.group_is_whole(store, 0)
        store.add_nodes(workload.group_nodes(0, 5, tag=7)[-1:])  # the counter alone says 5
        assert not workload.group_is_whole(store, 0)
        store.add_nodes(workload.group_nodes(0, 3, tag=7)[-1:])
        assert workload.group_is_whole(store, 0)
        store.add_nodes(workload.group_nodes(0, 3, tag=8)[:1])  # counts agree, tags do not
        assert not workload.group_is_whole(store, 0)

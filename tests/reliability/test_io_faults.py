"""I/O faults: the Nth file operation SQLite makes fails with SQLITE_IOERR or
SQLITE_FULL, once or from then on, for N rising until the work completes. Each
failure is a typed error, nothing is half-written, and the store works and
passes its integrity check once the fault is gone. Disk full while the
embedding pool grows is a typed error too, and the pool recovers."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil

import apsw
import numpy as np
import pytest

from codegraph_store import Store, pool as pool_mod
from codegraph_store.errors import CodegraphError, StoreIOError

import vfs
import workload

pytestmark = pytest.mark.scenario(
    "I/O fault at the Nth file operation (IOERR or FULL, once or persistent)", "a typed StoreIOError,"
    " nothing half-written; the store works and checks clean once the fault is gone")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return workload.template_store(tmp_path_factory.mktemp("faults"))


AFTER = 100_000  # transactions written through the same store once the fault is gone


def work(db: str, i: int, shim: vfs.FaultVFS) -> tuple[set[int], CodegraphError | None]:
    """Under the fault: open, one transaction, reads, a search. If that fails, the
    fault is switched off and the same store must keep working. Returns the
    transactions known committed and the error."""
    store, error, committed = None, None, set()
    try:
        store = Store.open(db)
        workload.write_txn(store, i)
        committed.add(i)
        assert store.get_node(workload.txn_nodes(i)[0].id) is not None
        store.search(workload.txn_vectors(i)[0], k=3, space=workload.SPACE)
    except CodegraphError as e:
        error = e
    shim.fault.at = None
    if store is not None:
        if error is not None:
            workload.write_txn(store, AFTER + i)
            committed.add(AFTER + i)
            workload.check_txns(store, committed, search=True)
            assert store.check().ok
        with contextlib.suppress(CodegraphError):  # the close may meet the fault's aftermath
            store.close()
    return committed, error


@pytest.mark.parametrize("error", [apsw.IOError, apsw.FullError], ids=["ioerr", "full"])
@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
def test_io_faults_are_typed_errors_and_leave_the_store_whole(tmp_path, template, stress, error,
                                                               persistent, tally):
    t = tally()
    db = str(tmp_path / "f.cgdb")
    shutil.copyfile(template, db)
    limit = 2000 if stress else 400
    step = 1  # every position: step 3 skipped the two where a commit hid an I/O error
    done, failures, committed = False, 0, {0}
    for n, at in enumerate(range(1, limit, step), start=1):
        t.iterations += 1
        with vfs.installed(vfs.FaultVFS()) as shim:
            shim.fault = vfs.Fault(at, error, persistent)
            try:
                ok, err = work(db, n, shim)
            except CodegraphError as e:
                pytest.fail(f"fault at operation {at}: the store did not recover: {e!r}")
            except AssertionError:
                raise
            except Exception as e:  # noqa: BLE001 - any other exception is the bug
                pytest.fail(f"fault at operation {at}: untyped {type(e).__name__}: {e}")
            committed |= ok
            if err is not None:
                assert shim.fault.fired, f"an error without a fault: {err!r}"
                assert isinstance(err, StoreIOError), f"fault at operation {at}: {err!r}"
                failures += 1
            elif not shim.fault.fired:
                done = True
        # The fault is gone: the store opens, checks clean and holds whole transactions.
        with Store.open(db) as store:
            report = store.check()
            assert report.ok, (at, report.problems)
            present = workload.check_txns(store, committed)
            assert present <= committed | {n}  # the failing one may have committed before its error
            committed |= present
        if done:
            break
    print(f"completed at operation {at} after {failures} failures")
    assert done, "the work never completed: raise the limit"
    assert failures > 0


@pytest.mark.scenario("disk full while the pool grows", "the commits stand, the search is a StoreIOError"
                      " until space is back, then the pool catches up")
def test_disk_full_while_the_pool_grows(tmp_path, monkeypatch):
    cfg = {"memory_optimization": {"embedding_pool_size": 16, "arena_chunk_size": 4096,
                                   "embedding_pool_dtype": "float32"}}
    db = str(tmp_path / "g.cgdb")
    real_ftruncate = os.ftruncate
    full = {"on": False}

    def ftruncate(fd, size):
        if full["on"] and size > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_ftruncate(fd, size)

    monkeypatch.setattr(pool_mod.os, "ftruncate", ftruncate)
    with Store.open(db, config=cfg) as store:
        workload.write_txn(store, 0)
        full["on"] = True
        for i in range(1, 30):  # 90 vectors: past the pool's first 64 slots
            workload.write_txn(store, i)  # the commit stands; the pool stays behind
        with pytest.raises(StoreIOError, match="cannot size the embedding pool"):
            store.search(workload.txn_vectors(5)[0], k=1, space=workload.SPACE)
        assert store.check().ok
        full["on"] = False
        workload.check_txns(store, set(range(30)))  # the search catches the pool up
    with Store.open(db, config=cfg) as store:
        workload.check_txns(store, set(range(30)))

"""Power loss, simulated the way SQLite's crash tests do: a VFS shim holds every
write until its file is synced; at the Nth sync the unsynced writes are dropped,
partly kept, or garbled, and the machine "stops". Reopened with the normal VFS:
with durability="full" every committed transaction is there; with "normal" the
store is consistent and only the last transactions may be missing."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from codegraph_store import Store
from codegraph_store.errors import CodegraphError

import vfs
import workload

MODES = ("drop", "some", "garble")
PROMISE = {
    "full": "every committed transaction present and whole; store.check() passes",
    "normal": "consistent: the transactions present are whole and a prefix of those committed"
              " (the last ones may be missing); store.check() passes",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return workload.template_store(tmp_path_factory.mktemp("power"))


def run_until_power_loss(db: str, durability: str, cut_at: int, mode: str, txns: int) -> tuple[set[int], bool]:
    """Write transactions 1.. through the shim until the cut; returns the committed
    ones and whether the power was cut."""
    committed = {0}
    with vfs.installed(vfs.PowerLossVFS(cut_at, mode, seed=cut_at)) as shim:
        store = None
        try:
            store = Store.open(db, durability=durability)
            for i in range(1, txns + 1):
                workload.write_txn(store, i)
                committed.add(i)
        except CodegraphError:
            assert shim.dead, "an error without a power cut"
        finally:
            if not shim.dead:
                shim.lose_power()  # the machine stops after the last commit instead
            if store is not None:
                with contextlib.suppress(CodegraphError):
                    store.close()
    with contextlib.suppress(FileNotFoundError):
        os.remove(db + "-shm")  # shared memory does not survive a reboot
    return committed, shim.syncs >= cut_at


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_power_loss(tmp_path, template, stress, durability, tally):
    t = tally(f"power loss, durability={durability}", PROMISE[durability])
    db = str(tmp_path / "p.cgdb")
    cuts = range(1, 61 if stress else 13)
    txns = 40 if stress else 12
    cut_happened = 0
    for mode in MODES:
        for cut_at in cuts:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(db + suffix)
            shutil.copyfile(template, db)
            # "normal" syncs only at checkpoints, so most of its cuts come when the
            # machine stops after the writes: after cut_at of them, for variety.
            committed, cut = run_until_power_loss(db, durability, cut_at, mode,
                                                  txns if durability == "full" else cut_at)
            cut_happened += cut
            t.iterations += 1
            with Store.open(db) as store:
                report = store.check()
                assert report.ok, (mode, cut_at, report.problems)
                present = workload.check_txns(store, committed if durability == "full" else {0})
            assert present == set(range(len(present))), "lost a transaction but kept a later one"
            assert present <= committed | {max(committed) + 1}
    if durability == "full":
        assert cut_happened > len(cuts)  # most cuts fell inside the writes

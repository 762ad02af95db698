"""The load test (bench/load.py): a 20-second run of reader and writer processes
on one store ends with zero errors and zero lost writes, and its check() really
notices lost, partial and foreign writes."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from codegraph_store import Store

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("load_bench", ROOT / "bench" / "load.py")
load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load)


def test_twenty_seconds_of_readers_and_writers_lose_nothing(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--duration", "20",
                           "--readers", "2", "--writers", "2", "--seed-nodes", "5000",
                           "--db", str(tmp_path / "load.cgdb"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["errors"] == 0 and report["error_samples"] == []
    assert report["lost_writes"] == 0 and report["unexpected"] == []
    assert report["acknowledged_txns"] == report["attempted_txns"] > 0
    assert {"get_node", "neighbors", "traverse", "search", "write_txn"} <= set(report["ops"])
    assert report["counts"][0] == 5000 + load.TXN_NODES * report["acknowledged_txns"]


@pytest.fixture
def seeded(tmp_path):
    path = str(tmp_path / "s.cgdb")
    ids, digest, counts = load.seed_store(path, 200)
    return path, ids, digest, counts


def write_txn(path, ids, writer, txn):
    nodes, edges = load.txn_rows(writer, txn, ids)
    with Store.open(path) as store, store.transaction():
        store.add_nodes(nodes)
        store.add_edges(edges)
        store.add_embeddings([n.id for n in nodes], load.vectors_for([n.id for n in nodes]),
                             space=load.SPACE)


def writer_result(*txns):
    return [{"role": "writer", "writer": 0, "acked": list(txns), "hists": {}, "errors": []}]


def test_check_passes_when_exactly_the_acknowledged_writes_are_there(seeded):
    path, ids, digest, counts = seeded
    write_txn(path, ids, 0, 0)
    write_txn(path, ids, 0, 1)
    result = load.check(path, ids, digest, counts, writer_result(0, 1))
    assert result["lost"] == [] and result["unexpected"] == []


def test_check_reports_an_acknowledged_write_that_is_missing(seeded):
    path, ids, digest, counts = seeded
    write_txn(path, ids, 0, 0)
    result = load.check(path, ids, digest, counts, writer_result(0, 1))
    assert result["lost"] == ["writer 0 txn 1: nodes differ or missing"]


def test_check_reports_a_write_nobody_acknowledged(seeded):
    path, ids, digest, counts = seeded
    write_txn(path, ids, 0, 0)
    write_txn(path, ids, 0, 1)
    result = load.check(path, ids, digest, counts, writer_result(0))
    assert result["lost"] == [] and "counts" in result["unexpected"][0]


def test_check_reports_a_changed_seeded_node_and_a_changed_vector(seeded):
    path, ids, digest, counts = seeded
    with Store.open(path) as store:
        node = store.get_node(ids[7])
        store.add_nodes([node.__class__.new(node.kind, node.name, node.qualname, file=node.file,
                                            start_line=node.start_line + 1,
                                            end_line=node.end_line + 1, metadata=node.metadata)])
    assert load.check(path, ids, digest, counts, [])["unexpected"] == ["seeded rows changed"]
    write_txn(path, ids, 0, 0)
    nodes, _ = load.txn_rows(0, 0, ids)
    with Store.open(path) as store:
        store.add_embeddings([nodes[3].id], load.vectors_for([nodes[4].id]), space=load.SPACE)
    lost = load.check(path, ids, digest, counts, writer_result(0))["lost"]
    assert lost == [f"writer 0 txn 0: vector of {nodes[3].id} differs or missing"]

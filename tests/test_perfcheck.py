"""The performance validator's plumbing on a tiny store: every target gets a
measurement, the verdict follows the configured targets (a missed one exits 1),
and the synthetic data is what it claims to be. No timing is asserted."""

import json

import numpy as np
import pytest

from codegraph_store import Config, perfcheck
from codegraph_store.monitor import load_runs, target_names

TINY = perfcheck.Scale("quick", 3000, 9000, ("json",), point_queries=200, walk_queries=50,
                       vector_queries=3, rag_queries=3, seconds=0.3, ingest_nodes=500,
                       embed_texts=100)


def targets_config(lower_target: float, higher_target: float) -> Config:
    names = target_names(Config.defaults().performance_targets)
    pairs = {n: [1.0, higher_target if n.endswith("_per_sec") else lower_target] for n in names}
    return Config.from_dict({"performance_targets": pairs})


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(perfcheck.SCALES, "quick", TINY)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("perf")  # the tiny store is built once for the module


def run_validate(tmp_path, out_dir, monkeypatch, config, capsys):
    monkeypatch.setattr(perfcheck.Config, "defaults", classmethod(lambda cls: config))
    out = tmp_path / "table.json"
    code = perfcheck.validate(["--quick", "--out", str(out_dir), "--json", str(out)])
    return code, capsys.readouterr().out, json.loads(out.read_text())


def test_targets_met_exit_0_and_every_target_is_measured(tiny, tmp_path, out_dir, monkeypatch,
                                                         capsys):
    code, out, table = run_validate(tmp_path, out_dir, monkeypatch, targets_config(1e12, 0.0), capsys)
    assert code == 0
    judged = [r for r in table["rows"] if r["target"] is not None]
    assert len(judged) == 10 and all(r["pass"] is True and r["value"] > 0 for r in judged)
    assert set(judged[0]) >= {"metric", "value", "unit", "baseline", "ratio", "target", "pass"}
    assert "10 of 10 passed" in out and "vector searches/s" in out
    run = load_runs(out_dir / "perf-history.jsonl")[-1]
    assert run["scale"] == "quick" and run["verdicts"]["share"] == 1.0
    assert set(target_names(Config.defaults().performance_targets)) <= set(run["metrics"])


def test_a_missed_target_exits_1(tiny, tmp_path, out_dir, monkeypatch, capsys):
    code, out, table = run_validate(tmp_path, out_dir, monkeypatch, targets_config(1e-12, 1e15), capsys)
    assert code == 1
    assert all(r["pass"] is False for r in table["rows"] if r["target"] is not None)
    assert "0 of 10 passed" in out and "FAIL" in out


def test_synthetic_edges_are_distinct_new_and_between_the_ids():
    ids = np.arange(1, 51, dtype=np.int64)
    existing = {(1, 1, 2), (3, 1, 4)}
    edges = perfcheck.synthetic_edges(ids, 500, existing, np.random.default_rng(0))
    keys = [(e.src, int(e.kind), e.dst) for e in edges]
    assert len(keys) == len(set(keys)) == 500
    assert not set(keys) & existing
    assert all(e.src != e.dst and 1 <= e.src <= 50 and 1 <= e.dst <= 50 for e in edges)


def test_synthetic_nodes_have_distinct_ids_and_unit_rows_are_unit():
    nodes = perfcheck.synthetic_nodes(1000, 0, np.random.default_rng(0))
    assert len({n.id for n in nodes}) == 1000
    rows = perfcheck.unit_rows(np.random.default_rng(0), 10)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)


def test_the_raw_ingest_baseline_writes_the_rows_the_store_writes(tmp_path):
    """The ceiling is only a ceiling if it does the same work: same nodes table."""
    from codegraph_store import Store
    nodes = perfcheck.synthetic_nodes(300, 0, np.random.default_rng(1))
    raw = tmp_path / "raw.cgdb"
    assert perfcheck.raw_node_ingest(raw, nodes) > 0
    ours = tmp_path / "ours.cgdb"
    with Store.open(ours) as store, store.bulk_load():
        store.add_nodes(nodes)
    query = ("SELECT n.id, n.kind, n.name, n.qualname, f.path, n.start_line, n.end_line,"
             " n.metadata FROM nodes AS n JOIN files AS f ON f.id = n.file_id ORDER BY n.id")
    with Store.open(raw, readonly=True) as a, Store.open(ours, readonly=True) as b:
        got, want = a._reader().execute(query).fetchall(), b._reader().execute(query).fetchall()
        assert len(got) == 300 and got == want
        assert a.check().ok


def test_the_ingest_goal_shows_the_raw_baseline_beside_it():
    shown = dict((label, value) for label, _ok, value in perfcheck.goals(
        {"node_processing_per_sec": 250_000.0, "raw_node_insert_per_sec": 280_000.0}))
    assert shown[">= 300,000 nodes/s ingest"] == (
        "250,000 /s (raw SQL, same rows pre-built and sorted: 280,000 /s in the same run)")


def test_the_progress_log_prints_rate_and_time_left_and_each_completion(monkeypatch):
    import io

    from codegraph_store import progress as progress_mod
    clock = iter([0.0, 5.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    log = progress_mod.ProgressLog(interval=10.0, stream=out)
    log.update("parse", 0, 100)   # t=0: opens the phase, prints nothing before the interval
    log.update("parse", 10, 100)  # t=5: within the interval
    log.update("parse", 25, 100)  # t=10
    log.update("parse", 40, 100)  # t=20
    log.update("parse", 100, 100)  # t=30: done
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["parsing: 25/100 (25%), 2/s, 10 s, ~30 s left",
                     "parsing: 40/100 (40%), 2/s, 20 s, ~30 s left",
                     "parsing: 100/100 (100%), 3/s, 30 s"]

"""Performance monitor: histogram percentiles on known sequences, target verdicts,
run history and regression flagging, and the Store wiring (on and off)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from codegraph_store import Config, Edge, EdgeKind
from codegraph_store.errors import InvalidArgumentError
from codegraph_store.monitor import (LatencyHistogram, append_run, bucket_bounds, bucket_of, judge,
                                     load_runs, mapping_bytes, trends)

TARGETS = Config.defaults().performance_targets
MONITOR_ON = {"performance_targets": {"enable_monitoring": True}}


def nearest_rank(values, p):
    data = sorted(values)
    return data[max(1, math.ceil(p / 100 * len(data))) - 1]


@given(st.integers(min_value=0, max_value=2**62))
def test_every_duration_falls_in_its_bucket_and_buckets_are_narrow(ns):
    low, high = bucket_bounds(bucket_of(ns))
    assert low <= ns < high
    assert high - low <= max(1, low / 16)


def test_bucket_indexes_are_contiguous():
    indexes = [bucket_of(ns) for ns in range(0, 5000)]
    assert indexes == sorted(indexes)
    assert set(indexes) == set(range(indexes[0], indexes[-1] + 1))


def test_percentiles_of_one_to_a_thousand_microseconds():
    h = LatencyHistogram()
    for us in range(1, 1001):
        h.record(us * 1000)
    assert h.count == 1000 and h.min == 1000 and h.max == 1_000_000
    assert h.percentile(50) == pytest.approx(500_000, rel=1 / 32)
    assert h.percentile(95) == pytest.approx(950_000, rel=1 / 32)
    assert h.percentile(99) == pytest.approx(990_000, rel=1 / 32)
    assert h.percentile(100) == 1_000_000  # clipped to the exact max
    assert h.percentile(0) == 1000  # and min
    s = h.summary()
    assert s["p99_ms"] == pytest.approx(0.99, rel=1 / 32)
    assert s["mean_ms"] == pytest.approx(0.5005)
    assert s["max_ms"] == 1.0


def test_a_single_value_is_every_percentile():
    h = LatencyHistogram()
    h.record(123_456)
    assert {h.percentile(p) for p in (0, 50, 99, 100)} == {123_456.0}


def test_empty_histogram_and_bad_percentile():
    h = LatencyHistogram()
    assert math.isnan(h.percentile(50))
    assert h.summary()["p50_ms"] is None
    with pytest.raises(InvalidArgumentError):
        h.percentile(101)


def test_merged_states_equal_one_histogram_of_everything():
    values = np.random.default_rng(3).integers(1, 10**9, 3000).tolist()
    whole, a, b = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, v in enumerate(values):
        whole.record(v)
        (a if i % 3 else b).record(v)
    merged = LatencyHistogram()
    merged.merge(json.loads(json.dumps(a.state())))
    merged.merge(b.state())
    merged.merge(LatencyHistogram().state())
    assert merged.state() == whole.state()
    assert (merged.count, merged.min, merged.max) == (3000, min(values), max(values))


def test_memory_is_constant():
    h = LatencyHistogram()
    size = len(h.counts)
    for ns in np.random.default_rng(1).integers(1, 10**12, 20_000).tolist():
        h.record(ns)
    h.record(2**63 - 1)
    assert len(h.counts) == size


@settings(max_examples=60)
@given(st.lists(st.integers(min_value=1, max_value=10**11), min_size=1, max_size=400),
       st.sampled_from([1, 25, 50, 90, 95, 99, 100]))
def test_percentiles_are_within_three_percent_of_exact(values, p):
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    exact = nearest_rank(values, p)
    assert h.percentile(p) == pytest.approx(exact, rel=1 / 32, abs=0.5)


def test_judge_passes_fails_and_leaves_unmeasured_out():
    verdict = judge(TARGETS, {"node_query_latency_ms": 0.03,  # target < 50
                              "vector_search_latency_ms": 150.0,  # target < 100
                              "node_processing_per_sec": 50_000.0})  # target > 20,000
    t = verdict["targets"]
    assert t["node_query_latency_ms"]["passed"] is True
    assert t["vector_search_latency_ms"]["passed"] is False
    assert t["node_processing_per_sec"]["passed"] is True
    assert t["node_processing_per_sec"]["lower_is_better"] is False
    assert t["rag_latency_ms"]["passed"] is None and t["rag_latency_ms"]["measured"] is None
    assert (verdict["passed"], verdict["judged"]) == (2, 3)
    assert verdict["share"] == pytest.approx(2 / 3)
    assert "enable_monitoring" not in t


def test_judge_at_the_target_is_not_a_pass():
    t = judge(TARGETS, {"node_query_latency_ms": 50.0, "concurrent_queries_per_sec": 2000.0})
    assert t["passed"] == 0 and t["judged"] == 2


def history(tmp_path, values, metric="node_query_latency_ms", start=1_000_000.0):
    path = tmp_path / "h.jsonl"
    for i, v in enumerate(values):
        append_run(path, {metric: v}, TARGETS, when=start + i * 3600)
    return load_runs(path)


def test_history_round_trip_skips_a_torn_line(tmp_path):
    runs = history(tmp_path, [1.0, 2.0])
    with open(tmp_path / "h.jsonl", "a") as f:
        f.write('{"time": 5, "metr')
    again = load_runs(tmp_path / "h.jsonl")
    assert [r["metrics"]["node_query_latency_ms"] for r in again] == [1.0, 2.0] == \
        [r["metrics"]["node_query_latency_ms"] for r in runs]
    assert again[0]["verdicts"]["targets"]["node_query_latency_ms"]["passed"] is True
    assert load_runs(tmp_path / "missing.jsonl") == []


NOISY = [10.0, 10.4, 9.8, 10.1, 9.9, 10.3, 10.0]  # median 10.0, MAD 0.1 -> band 0.445


def test_latency_within_the_noise_is_not_a_regression(tmp_path):
    t = trends(history(tmp_path, NOISY + [10.4]), TARGETS, now=2e6)["node_query_latency_ms"]
    assert t["median"] == 10.0
    assert t["band"] == pytest.approx(3 * 1.4826 * 0.1)
    assert t["regression"] is False


def test_latency_beyond_the_noise_is_a_regression(tmp_path):
    t = trends(history(tmp_path, NOISY + [10.5]), TARGETS, now=2e6)["node_query_latency_ms"]
    assert t["regression"] is True
    assert t["latest"] == 10.5 and len(t["values"]) == 8


def test_faster_latency_is_never_a_regression(tmp_path):
    t = trends(history(tmp_path, NOISY + [5.0]), TARGETS, now=2e6)["node_query_latency_ms"]
    assert t["regression"] is False


def test_a_rate_regresses_downwards(tmp_path):
    rates = [20_000.0, 20_500.0, 19_800.0, 20_100.0]
    down = trends(history(tmp_path, rates + [15_000.0], metric="node_processing_per_sec"),
                  TARGETS, now=2e6)["node_processing_per_sec"]
    assert down["regression"] is True
    (tmp_path / "h.jsonl").unlink()
    up = trends(history(tmp_path, rates + [40_000.0], metric="node_processing_per_sec"),
                TARGETS, now=2e6)["node_processing_per_sec"]
    assert up["regression"] is False


def test_too_short_a_history_gives_no_verdict(tmp_path):
    t = trends(history(tmp_path, [10.0, 10.0, 30.0]), TARGETS, now=2e6)["node_query_latency_ms"]
    assert t["regression"] is None and t["band"] is None


def test_a_flat_history_flags_a_clear_change_but_not_rounding(tmp_path):
    flat = [10.0] * 5
    assert trends(history(tmp_path, flat + [10.05]), TARGETS, now=2e6)[
        "node_query_latency_ms"]["regression"] is False
    (tmp_path / "h.jsonl").unlink()
    assert trends(history(tmp_path, flat + [10.5]), TARGETS, now=2e6)[
        "node_query_latency_ms"]["regression"] is True


def test_days_limits_the_window(tmp_path):
    runs = history(tmp_path, NOISY + [11.0])  # one run per hour from t=1e6
    recent = trends(runs, TARGETS, days=2 / 24, now=1_000_000.0 + 7 * 3600)
    assert len(recent["node_query_latency_ms"]["values"]) == 3
    with pytest.raises(InvalidArgumentError):
        trends(runs, TARGETS, days=0)


# ------------------------------------------------------------------ the Store

def test_off_wraps_nothing(store):
    assert store.monitor is None
    assert "get_node" not in vars(store)


def test_timed_reads_take_the_same_calls_and_time_the_failing_ones(open_store, make_node):
    """get_node's wrapper takes get_node's own parameter; the others keep
    *args/**kwargs. Every form of call works and is timed, failing calls too."""
    import inspect

    from codegraph_store import Store
    from codegraph_store.errors import InvalidTypeError
    st = open_store(config=MONITOR_ON)
    a = make_node("a", file="m.py", start_line=3)
    st.add_nodes([a])
    assert st.get_node(a.id) == a and st.get_node(node_id=a.id) == a
    assert st.at("m.py", 3) == a and st.at(line=3, file="m.py") == a
    assert st.neighbors(a.id, direction="in") == [] and st.neighbors(node_id=a.id) == []
    with pytest.raises(InvalidTypeError):
        st.get_node("not an id")
    with pytest.raises(TypeError):
        st.get_node()
    with pytest.raises(TypeError):
        st.get_node(a.id, 2)
    hists = st.monitor.histograms
    # the TypeErrors never reached the store, as with the method itself
    assert (hists["get_node"].count, hists["at"].count, hists["neighbors"].count) == (3, 2, 2)
    assert inspect.signature(st.get_node) == inspect.signature(Store.get_node.__get__(st))
    assert st.get_node.__doc__ == Store.get_node.__doc__
    assert st.get_node.__code__.co_varnames[0] == "node_id"
    assert st.neighbors.__code__.co_varnames[:2] == ("args", "kwargs")


def test_on_times_every_call_and_counts_rows(open_store, make_node):
    st = open_store(config=MONITOR_ON)
    a, b = make_node("a"), make_node("b", start_line=5)
    assert st.add_nodes([a, b]) == 2
    st.add_edges([Edge(a.id, EdgeKind.CALLS, b.id)])
    for _ in range(5):
        assert st.get_node(a.id) == a
    assert [n.id for n in st.neighbors(a.id)] == [b.id]
    st.traverse(a.id, depth=2)
    m = st.monitor
    assert m.histograms["get_node"].count == 5
    assert m.histograms["neighbors"].count == 1
    assert m.rows["add_nodes"] == 2 and m.rows["add_edges"] == 1
    metrics = m.metrics()
    assert metrics["node_query_latency_ms"] == pytest.approx(
        m.histograms["get_node"].percentile(99) / 1e6)
    assert metrics["graph_memory_mb"] > 1
    assert metrics["node_processing_per_sec"] > 0
    report = json.loads(m.report())
    assert report["latency"]["get_node"]["count"] == 5
    assert report["targets"]["targets"]["node_query_latency_ms"]["passed"] is True
    assert report["memory"]["sqlite_page_cache_bytes"] > 0
    assert st.get_node.__name__ == "get_node"


def test_a_failing_call_is_still_timed(open_store):
    st = open_store(config=MONITOR_ON)
    with pytest.raises(InvalidArgumentError):
        st.neighbors(1, direction="sideways")
    assert st.monitor.histograms["neighbors"].count == 1


def test_memory_gauges_see_the_pool_and_the_node_cache(open_store, make_node):
    st = open_store(config={**MONITOR_ON, "memory_optimization": {"enable_cache": True}})
    nodes = [make_node(f"n{i}", start_line=i + 1) for i in range(50)]
    st.add_nodes(nodes)
    st.add_embeddings([n.id for n in nodes], np.random.default_rng(0).random((50, 64)), space="s")
    st.search(np.ones(64), k=3)
    st.get_node(nodes[0].id)
    mem = st.monitor.memory()
    assert mem["pool_mapped_bytes"] > 0
    assert 0 < mem["pool_resident_bytes"] <= mem["pool_mapped_bytes"]
    assert mem["node_cache_bytes"] > 0
    assert st.monitor.metrics()["vector_search_latency_ms"] > 0
    assert mapping_bytes(str(st.filename) + "-nothing") == (0, 0)


def test_record_run_appends_to_the_history_beside_the_store(open_store, make_node):
    st = open_store(config=MONITOR_ON)
    st.add_nodes([make_node("a")])
    st.get_node(make_node("a").id)
    st.monitor.record_run(note="first")
    st.monitor.record_run(note="second")
    runs = load_runs(str(st.filename) + "-perf.jsonl")
    assert [r["note"] for r in runs] == ["first", "second"]
    assert "node_query_latency_ms" in runs[0]["metrics"]

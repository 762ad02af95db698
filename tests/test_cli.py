"""The codegraph command: every command on a small tree, errors, export formats, docs."""

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from codegraph_store import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

SOURCES = {
    "app/__init__.py": "",
    "app/base.py": '''\
        class Base:
            """The base."""
            def run(self):
                return self.step()

            def step(self):
                return 1
        ''',
    "app/main.py": '''\
        from app.base import Base
        from app import util

        class Job(Base):
            def step(self):
                return util.helper(2)

        def start():
            return Job().run()
        ''',
    "app/util.py": '''\
        def helper(x):
            return x * 2
        ''',
    "app/broken.py": "def broken(:\n",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    for rel, text in SOURCES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture(scope="module")
def db(tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "t.cgdb"
    assert cli.main(["index", str(tree), "--db", str(path), "--jobs", "1", "--quiet"]) == 0
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_index_summary_lists_failures(tree, tmp_path, capsys):
    code, out, err = run(capsys, "index", str(tree), "--db", str(tmp_path / "x.cgdb"), "--jobs", "1")
    assert code == 0
    assert "app/broken.py: SyntaxError" in out
    assert "5 seen, 5 parsed" in out
    data = run_json(capsys, "index", str(tree), "--db", str(tmp_path / "x.cgdb"), "--jobs", "1")
    assert (data["parsed"], data["unchanged"]) == (0, 5)
    assert data["failed"][0]["path"] == "app/broken.py"


def test_stats_json_has_counts_by_kind_name(db, capsys):
    stats = run_json(capsys, "stats", "--db", db)
    assert stats["files"] == 5
    assert stats["nodes_by_kind"]["class"] == 2
    assert stats["nodes_by_kind"]["method"] == 3
    assert stats["nodes_by_kind"]["function"] == 2
    assert stats["edges_by_kind"]["inherits"] == 1
    assert stats["nodes"] == sum(stats["nodes_by_kind"].values())
    assert stats["edges"] == sum(stats["edges_by_kind"].values())


def test_find_and_show(db, capsys):
    found = run_json(capsys, "find", "Job", "--kind", "class", "--db", db)
    assert [(n["qualname"], n["file"], n["start_line"]) for n in found] == [("app.main.Job", "app/main.py", 4)]
    code, out, _ = run(capsys, "find", "nothing_here", "--db", db)
    assert code == 1 and "no match" in out
    shown = run_json(capsys, "show", "app.main.Job", "--db", db)
    assert {(e["kind"], e["qualname"]) for e in shown["out"]} >= {("inherits", "app.base.Base"),
                                                                 ("contains", "app.main.Job.step")}
    assert run_json(capsys, "show", "app/util.py:2", "--db", db)["qualname"] == "app.util.helper"


def test_callers_callees_impact_path(db, capsys):
    callers = run_json(capsys, "callers", "app.util.helper", "--db", db)
    assert [n["qualname"] for n in callers["results"]] == ["app.main.Job.step"]
    callees = run_json(capsys, "callees", "app.main.start", "--db", db)
    assert sorted(n["qualname"] for n in callees["results"]) == ["app.base.Base.run", "app.main.Job"]
    impact = run_json(capsys, "impact", "app.util.helper", "--db", db)
    assert [(n["qualname"], n["depth"]) for n in impact["results"]] == [("app.main.Job.step", 1)]
    path = run_json(capsys, "path", "app.main.start", "app.base.Base.step", "--db", db)
    assert [n["qualname"] for n in path] == ["app.main.start", "app.base.Base.run", "app.base.Base.step"]


def test_check_reports_consistent_store(db, capsys):
    report = run_json(capsys, "check", "--db", db)
    assert report["ok"] is True and report["problems"] == []


def test_export_jsonl_is_complete_and_stable(db, capsys):
    code, first, _ = run(capsys, "export", "--db", db)
    code2, second, _ = run(capsys, "export", "--db", db)
    assert code == code2 == 0 and first == second
    rows = [json.loads(line) for line in first.splitlines()]
    stats = run_json(capsys, "stats", "--db", db)
    assert sum(r["type"] == "node" for r in rows) == stats["nodes"]
    assert sum(r["type"] == "edge" for r in rows) == stats["edges"]


def test_export_graphml_reads_into_networkx(db, tmp_path, capsys):
    nx = pytest.importorskip("networkx")
    out = tmp_path / "g.graphml"
    assert run(capsys, "export", "--format", "graphml", "-o", str(out), "--db", db)[0] == 0
    graph = nx.read_graphml(out)
    stats = run_json(capsys, "stats", "--db", db)
    assert graph.number_of_nodes() == stats["nodes"]
    assert graph.number_of_edges() == stats["edges"]
    qualnames = nx.get_node_attributes(graph, "qualname")
    inherits = [(qualnames[a], qualnames[b]) for a, b, k in graph.edges(data="edge_kind") if k == "inherits"]
    assert inherits == [("app.main.Job", "app.base.Base")]


@pytest.mark.parametrize("argv, message", [
    (["find", "x", "--db", "/nonexistent/none.cgdb"], "no such store"),
    (["show", "nothing_named_so"], "no symbol named"),
    (["show", "app/nope.py:3"], "no file"),
    (["show", "999"], "no node with id"),
    (["find", "x", "--limit", "0"], "limit"),
])
def test_user_errors_print_one_line_and_exit_2(db, capsys, argv, message):
    if "--db" not in argv:
        argv = argv + ["--db", db]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_a_store_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.cgdb"
    path.write_text("hello, not a database\n" * 10)
    code, _, err = run(capsys, "stats", "--db", str(path))
    assert code == 2 and "not a codegraph store" in err
    assert path.read_text() == "hello, not a database\n" * 10


def test_ambiguous_name_lists_candidates(db, capsys):
    code, _, err = run(capsys, "callers", "step", "--db", db)
    assert code == 2 and "ambiguous" in err and "app.base.Base.step" in err


def test_console_script_runs_without_traceback(db):
    result = subprocess.run([sys.executable, "-m", "codegraph_store.cli", "find", "helper", "--db", db],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == "app/util.py:1\tfunction\tapp.util.helper"


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [name for name in commands if f"`codegraph {name}" not in readme]
    assert missing == []
    for name, sub in commands.items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--db", "--json", "--config"):
                    assert flag in readme, f"{name} {flag} is not in the README"


def test_perf_report_and_trends_read_the_recorded_runs(tmp_path, capsys):
    from codegraph_store.monitor import append_run
    targets = cli.Config.defaults().performance_targets
    history = tmp_path / "perf-history.jsonl"
    for i, ms in enumerate([10.0, 10.2, 9.8, 10.1, 30.0]):
        append_run(history, {"node_query_latency_ms": ms}, targets, when=1e9 + i,
                   extra={"scale": "full"})
    append_run(history, {"node_query_latency_ms": 1.0}, targets, extra={"scale": "quick"})
    report = run_json(capsys, "perf", "report", "--out", str(tmp_path))
    assert report["metrics"] == {"node_query_latency_ms": 30.0}
    assert report["verdicts"]["targets"]["node_query_latency_ms"]["passed"] is True
    quick = run_json(capsys, "perf", "report", "--quick", "--out", str(tmp_path))
    assert quick["metrics"] == {"node_query_latency_ms": 1.0}
    code, out, _ = run(capsys, "perf", "trends", "--out", str(tmp_path))
    assert code == 0
    assert re.search(r"node_query_latency_ms\s+5\s+10\.05\s+\S+\s+30\s+REGRESSION", out)
    trends = run_json(capsys, "perf", "trends", "--out", str(tmp_path))
    assert trends["node_query_latency_ms"]["regression"] is True


def test_perf_without_history_is_a_usage_error(tmp_path, capsys):
    for action in ("report", "trends"):
        code, _, err = run(capsys, "perf", action, "--out", str(tmp_path))
        assert code == 2 and "no recorded full run" in err
    code, _, err = run(capsys, "perf", "trends", "--days", "0", "--out", str(tmp_path))
    assert code == 2 and "--days" in err

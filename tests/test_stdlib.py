"""The main job end to end: index this interpreter's standard library (with
embeddings) through the CLI, then ask it questions whose answers we know."""

import json
import sysconfig

import pytest

from codegraph_store import Store, cli

STDLIB = sysconfig.get_path("stdlib")


@pytest.fixture(scope="module")
def stdlib_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("stdlib") / "stdlib.cgdb")
    assert cli.main(["index", STDLIB, "--db", db, "--embed", "--quiet"]) == 0
    return db


def run_json(capsys, *argv):
    capsys.readouterr()
    code = cli.main(list(argv) + ["--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None


def test_index_is_complete(stdlib_db, capsys):
    _, stats = run_json(capsys, "stats", "--db", stdlib_db)
    assert stats["files"] >= 1700
    symbols = sum(stats["nodes_by_kind"][k] for k in ("class", "function", "method"))
    assert symbols >= 70000
    assert stats["edges"] >= 150000
    # The standard library ships files that do not parse on purpose; each is
    # recorded with its reason.
    with Store.open(stdlib_db, readonly=True) as store:
        failed = {f.path: f.parse_error for f in store.files() if f.parse_error}
    assert "lib2to3/tests/data/py2_test_grammar.py" in failed
    assert all(reason.startswith(("SyntaxError", "UnicodeDecodeError")) for reason in failed.values())
    assert 5 <= len(failed) <= 20


def test_find_ordered_dict(stdlib_db, capsys):
    code, found = run_json(capsys, "find", "OrderedDict", "--kind", "class", "--db", stdlib_db)
    assert code == 0
    first = found[0]
    assert (first["qualname"], first["file"]) == ("collections.OrderedDict", "collections/__init__.py")
    with open(f"{STDLIB}/collections/__init__.py", encoding="utf-8") as f:
        line = next(i for i, text in enumerate(f, 1) if text.startswith("class OrderedDict("))
    assert first["start_line"] == line


def test_callers_of_json_loads_include_json_load(stdlib_db, capsys):
    code, result = run_json(capsys, "callers", "json.loads", "--db", stdlib_db)
    assert code == 0
    assert "json.load" in {n["qualname"] for n in result["results"]}


# (query, package the hits should come from, how many of the top 10 at least).
# The built-in embedder hashes identifiers; it finds the package, not the
# single best function, and the standard library's own tests compete.
@pytest.mark.parametrize("query, expected_prefix, at_least", [
    ("parse a JSON document", "json.", 2),
    ("decode a JSON string", "json.", 2),
    ("send an HTTP request", "http.", 3),
    ("parse email message headers", "email.", 3),
    ("unified diff of two sequences", "difflib.", 2),
    ("read rows from a csv file", "csv", 1),
])
def test_search_finds_the_right_package(stdlib_db, capsys, query, expected_prefix, at_least):
    code, hits = run_json(capsys, "search", query, "-k", "10", "--db", stdlib_db)
    assert code == 0 and len(hits) == 10
    assert hits == sorted(hits, key=lambda h: -h["score"])
    found = sum(h["qualname"].startswith(expected_prefix) for h in hits)
    assert found >= at_least, [h["qualname"] for h in hits]


def test_context_brings_source_and_neighbours(stdlib_db, capsys):
    code, ctx = run_json(capsys, "context", "decode a JSON document", "--db", stdlib_db,
                         "-k", "5", "--budget", "20000")
    assert code == 0
    assert ctx["used"] <= 20000
    reasons = {item["reason"] for item in ctx["items"]}
    assert "match" in reasons and len(reasons) > 1
    assert any(item["qualname"].startswith("json.") for item in ctx["items"])
    assert all(item["text"] for item in ctx["items"])


def test_sql_with_sqlite_vec(stdlib_db, capsys):
    with Store.open(stdlib_db, readonly=True) as store:
        conn, _ = store._read_conn()
        (vec,) = conn.execute(
            "SELECT e.vec FROM embeddings AS e JOIN nodes AS n ON n.id = e.node_id"
            " WHERE n.qualname = 'json.loads'").fetchone()
        rows = conn.execute(
            "SELECT n.qualname FROM embeddings AS e JOIN nodes AS n ON n.id = e.node_id"
            " ORDER BY vec_distance_cosine(e.vec, ?) LIMIT 1", (vec,)).fetchall()
    assert rows == [("json.loads",)]
    code, out = run_json(capsys, "sql", "SELECT kind, count(*) AS n FROM nodes_view"
                         " WHERE kind = 'class' GROUP BY kind", "--db", stdlib_db)
    assert code == 0 and out[0]["kind"] == "class" and out[0]["n"] >= 13000


def test_sql_is_read_only(stdlib_db, capsys):
    code = cli.main(["sql", "DELETE FROM nodes", "--db", stdlib_db])
    assert code == 2
    assert "read" in capsys.readouterr().err.lower()

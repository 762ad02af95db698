"""A .cgdb shipped with a project can be crafted. Each case builds such a file
and opens and uses it: the store refuses it with a typed error, or what the
file asks for is harmless. (Pool headers that lie are covered by
tests/test_pool.py::test_damaged_pool_is_rebuilt_transparently and fuzzed in
test_fuzz.py.)"""

from __future__ import annotations

import ast
import pathlib

import apsw
import numpy as np
import pytest
import zstandard

import codegraph_store
from codegraph_store import Node, Store, cli, storage
from codegraph_store.errors import CorruptStoreError, NotAStoreError

PACKAGE = pathlib.Path(codegraph_store.__file__).parent

pytestmark = pytest.mark.scenario(
    "hostile .cgdb", "refused with a typed error, or what the file asks for is harmless (no pickle,"
    " no extension loading, untrusted schema)")


def make_store(path, nodes=3) -> list[Node]:
    made = [Node.new("function", f"f{i}", file="m.py", start_line=i + 1, metadata={"i": i})
            for i in range(nodes)]
    with Store.open(path) as s:
        s.add_nodes(made)
    return made


def tamper(path, *statements: str, params=()) -> None:
    """Change the file behind the store's back, as a stranger's tool would."""
    conn = apsw.Connection(str(path))
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    for sql in statements:
        conn.execute(sql, params)
    conn.close()


def test_no_pickle_marshal_or_eval_in_the_package():
    banned_modules = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names = [node.func.id] if node.func.id in ("eval", "exec", "__import__") else []
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                names = ["allow_pickle"]
            else:
                continue
            found += [(path.name, n) for n in names if n in banned_modules | {"eval", "exec", "__import__", "allow_pickle"}]
    assert found == []


HOSTILE_SCHEMA = {
    # A trigger of the file's own that would run on the store's writes.
    "extra-trigger": ["CREATE TRIGGER evil AFTER INSERT ON nodes BEGIN DELETE FROM edges; END"],
    # One of ours, redefined: inserts would no longer reach the change log.
    "redefined-trigger": ["DROP TRIGGER embeddings_inserted",
                          "CREATE TRIGGER embeddings_inserted AFTER INSERT ON embeddings BEGIN"
                          " SELECT 1; END"],
    "trigger-loads-extension": ["CREATE TRIGGER evil AFTER INSERT ON nodes BEGIN"
                                " SELECT load_extension('/tmp/evil.so'); END"],
    "view-calls-a-function": ["CREATE VIEW evil AS SELECT load_extension('/tmp/evil.so') AS x"],
    "redefined-view": ["DROP VIEW nodes_view", "CREATE VIEW nodes_view AS SELECT cg_metadata(x'00') AS id"],
    "missing-index": ["DROP INDEX " + "nodes_by_name"],
    "extra-index": ["CREATE INDEX evil_idx ON nodes (abs(id))"],
}


def _index_name(path) -> str:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'nodes'"
                            " AND sql IS NOT NULL ORDER BY name").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(HOSTILE_SCHEMA))
def test_a_file_with_a_schema_of_its_own_is_refused(tmp_path, case, capsys):
    db = tmp_path / "h.cgdb"
    make_store(db)
    statements = [s.replace("nodes_by_name", _index_name(db)) for s in HOSTILE_SCHEMA[case]]
    tamper(db, *statements)
    before = db.read_bytes()
    for readonly in (False, True):
        with pytest.raises(NotAStoreError, match="schema is not a codegraph store"):
            Store.open(db, readonly=readonly)
    assert cli.main(["check", "--db", str(db)]) == 2
    assert "schema is not a codegraph store" in capsys.readouterr().err
    assert cli.main(["sql", "SELECT count(*) FROM nodes", "--db", str(db)]) == 2
    assert db.read_bytes() == before  # refused files are not written to


def test_connections_do_not_trust_the_schema(tmp_path):
    """Beneath the refusal: even a store connection opened on such a file runs no
    function with side effects from its views or triggers, and loads nothing."""
    db = tmp_path / "h.cgdb"
    make_store(db)
    tamper(db, "CREATE VIEW evil AS SELECT load_extension('/tmp/evil.so') AS x",
           "CREATE VIEW meta AS SELECT cg_metadata(metadata) AS m FROM nodes",
           "CREATE TRIGGER evil_t AFTER INSERT ON edge_kinds BEGIN SELECT load_extension('/tmp/e.so'); END")
    conn = storage.connect(str(db), readonly=False)
    try:
        for sql in ("SELECT * FROM evil", "SELECT * FROM meta",
                    "INSERT INTO edge_kinds (code, name) VALUES (99, 'x')"):
            with pytest.raises(apsw.SQLError, match="unsafe use of"):
                conn.execute(sql).fetchall()
        with pytest.raises(apsw.SQLError, match="not authorized"):
            conn.execute("SELECT load_extension('/tmp/evil.so')").fetchall()
    finally:
        conn.close()


def test_codegraph_sql_cannot_load_an_extension(tmp_path, capsys):
    db = tmp_path / "h.cgdb"
    make_store(db)
    assert cli.main(["sql", "SELECT load_extension('/tmp/evil.so')", "--db", str(db)]) == 2
    assert "not authorized" in capsys.readouterr().err


def _frame_claiming(size: int) -> bytes:
    """A valid zstd frame of a small JSON value whose header claims ``size`` bytes."""
    frame = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(b'{"a":1}'))
    # Frame header: magic (4), descriptor; rewrite it for an 8-byte content size.
    descriptor = frame[4]
    single = descriptor & 0x20
    fcs_flag = descriptor >> 6
    fcs_len = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
    header_end = 5 + (0 if single else 1) + [0, 1, 2, 4][descriptor & 3]
    body = frame[header_end + fcs_len:]
    new_desc = (descriptor & 0x3F) | (3 << 6) | 0x20
    return (bytes(frame[:4]) + bytes([new_desc]) + bytes(frame[5 + (0 if single else 1):header_end])
            + size.to_bytes(8, "little") + bytes(body))


@pytest.mark.parametrize("record", [
    pytest.param(lambda: b"Z" + _frame_claiming(1 << 40), id="frame-claims-1TiB"),
    pytest.param(lambda: b"Z" + _frame_claiming(3), id="frame-claims-less-than-it-holds"),
    pytest.param(lambda: b"Z" + _frame_claiming(4096), id="frame-claims-more-than-it-holds"),
    pytest.param(lambda: b"Z" + zstandard.ZstdCompressor(write_content_size=False).compress(b"{}"),
                 id="frame-without-size"),
    pytest.param(lambda: b"Z" + b"\x28\xb5\x2f\xfd" + b"\xff" * 20, id="frame-garbage"),
    pytest.param(lambda: b"J" + b"[" * 100_000, id="json-nested-100k"),
    pytest.param(lambda: b"J\xff\xfe", id="json-not-utf8"),
    pytest.param(lambda: b"P\x80\x04K\x01.", id="pickle-tag"),
])
def test_crafted_metadata_records_are_corrupt_store_errors(tmp_path, record):
    db = tmp_path / "h.cgdb"
    nodes = make_store(db)
    tamper(db, "UPDATE nodes SET metadata = ? WHERE id = ?", params=(record(), nodes[0].id))
    with Store.open(db) as s:
        with pytest.raises(CorruptStoreError, match="metadata"):
            s.get_node(nodes[0].id)
        assert s.get_node(nodes[1].id) == nodes[1]  # the rest of the file still reads
        report = s.check()
        assert not report.ok and any("metadata does not decode" in p for p in report.problems)
        s.add_nodes([nodes[0]])  # writing the node again heals it
        assert s.get_node(nodes[0].id) == nodes[0] and s.check().ok


def test_frame_claim_check_is_exercised():
    frame = _frame_claiming(1 << 40)
    assert zstandard.frame_content_size(frame) == 1 << 40


def test_text_that_is_not_utf8_is_a_corrupt_store_error(tmp_path):
    """Found by the stress run of test_damage.py: a flipped bit in a node's name
    made iter_nodes raise a bare UnicodeDecodeError (APSW decodes TEXT as UTF-8,
    SQLite never checks it)."""
    path = tmp_path / "s.cgdb"
    made = make_store(path)
    tamper(path, "UPDATE nodes SET name = CAST(x'66ae' AS TEXT) WHERE id = ?", params=(made[1].id,))
    with Store.open(path) as s:
        for read in (lambda: list(s.iter_nodes()), lambda: s.get_node(made[1].id),
                     lambda: s.find(file="m.py")):
            with pytest.raises(CorruptStoreError, match="text in the database is not valid UTF-8"):
                read()
        assert s.get_node(made[0].id) == made[0]


def test_vectors_of_the_wrong_length_are_corrupt_even_when_lengths_cancel_out(tmp_path):
    """A crafted embeddings table with one vector 4 bytes short and the next 4
    bytes long: the total length is right, so a check of the total alone would
    shift every row after the short one. Each vector's length is checked."""
    path = tmp_path / "s.cgdb"
    made = make_store(path)
    with Store.open(path) as s:
        s.add_embeddings([n.id for n in made], [[1.0, 0.0, 0.0, 0.0]] * 3, "e")
        assert [h.node.id for h in s.search([1.0, 0.0, 0.0, 0.0], k=3)] == sorted(n.id for n in made)
    short, long = np.float32([1, 0, 0]).tobytes(), np.float32([1, 0, 0, 0, 0]).tobytes()
    tamper(path, "UPDATE embeddings SET vec = ? WHERE node_id = ?", params=(short, made[0].id))
    tamper(path, "UPDATE embeddings SET vec = ? WHERE node_id = ?", params=(long, made[1].id))
    (tmp_path / "s.cgdb-pool1").unlink()  # the pool is rebuilt from the crafted rows
    with Store.open(path) as s:
        with pytest.raises(CorruptStoreError, match="is not 4 float32 values"):
            s.search([1.0, 0.0, 0.0, 0.0], k=3)

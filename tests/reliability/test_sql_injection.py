"""No SQL is built from values: every statement the package runs is parameterised.

The test walks the package's syntax trees and, for every ``execute`` /
``executemany`` call, proves its SQL argument constant: string literals,
f-strings, ``+`` and ``%`` over constant parts, module or class constants
(names in UPPER_CASE bound to such values, and subscripts of them), and local
names whose every assignment is constant. Anything else must be in ALLOWED,
with the reason the interpolated value cannot come from a caller.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import codegraph_store

PACKAGE = pathlib.Path(codegraph_store.__file__).parent
# The store's internal helpers pass their SQL to execute: their callers are checked too.
SQL_CALLS = {"execute", "executemany", "_exec", "_execmany"}

# (module, function, why the interpolated part is fixed by the code, not by input)
ALLOWED = {
    ("store.py", "bulk_load"): "index names and DDL are read from sqlite_master for the store's own"
                               " indexes (schema.secondary_indexes), after the schema was checked",
    ("perfcheck.py", "raw_node_ingest"): "index names and DDL are read from sqlite_master of a"
                                         " file just created from the packaged schema",
    ("store.py", "_transaction"): "savepoint names are 'sp' + the int nesting depth",
    ("store.py", "find"): "WHERE clauses are picked from literals; values are bound parameters",
    ("store.py", "_exec"): "passes its argument through; its callers are checked as SQL calls",
    ("store.py", "_execmany"): "passes its argument through; its callers are checked as SQL calls",
    ("search.py", "filter_slots"): "WHERE clauses are picked from literals; values are bound parameters",
    ("checks.py", "run"): "sql is a value of the constant INVARIANTS dict, passed in by invariant()",
    ("schema.py", "migrate"): "statements are the packaged migrations/*.sql files",
    ("schema.py", "expected_objects"): "statements are the packaged migrations/*.sql files",
    ("cli.py", "cmd_sql"): "`codegraph sql` runs the user's own statement, as documented, on a"
                           " query_only connection; nothing is interpolated into it",
}

pytestmark = pytest.mark.scenario("SQL scan, self-test", "the scan flags each way of building SQL"
                                  " from values and accepts constant SQL")


def _const_names(tree: ast.Module) -> set[str]:
    """UPPER_CASE names bound at module or class level (evaluated for constness below)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef)):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    for t in stmt.targets:
                        if isinstance(t, ast.Name) and t.id.isupper():
                            names[t.id] = stmt.value
    return names


class _Prover:
    def __init__(self, tree: ast.Module):
        self.consts = _const_names(tree)
        self._proving: set = set()

    def const(self, node: ast.AST, local: dict[str, list[ast.AST]]) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.JoinedStr):
            return all(self.const(v.value if isinstance(v, ast.FormattedValue) else v, local)
                       for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
            return self.const(node.left, local) and self.const(node.right, local)
        if isinstance(node, (ast.Tuple, ast.List)):
            return all(self.const(e, local) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(self.const(v, local) for v in node.values)
        if isinstance(node, ast.Subscript):  # SQL["node"]: one of a constant's values
            return self.const(node.value, local)
        if isinstance(node, ast.IfExp):
            return self.const(node.body, local) and self.const(node.orelse, local)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("items", "values") and not node.args):
            return self.const(node.func.value, local)
        if isinstance(node, ast.Attribute):  # graph.NODE_COLUMNS, self.FILE_SQL
            return node.attr.isupper()
        if isinstance(node, ast.Name):
            if node.id in local:
                key = ("local", node.id)
                if key in self._proving:
                    return True  # sql += ...: the other parts decide
                self._proving.add(key)
                try:
                    return all(self.const(v, local) for v in local[node.id])
                finally:
                    self._proving.discard(key)
            if node.id in self.consts and node.id not in self._proving:
                self._proving.add(node.id)
                try:
                    return self.const(self.consts[node.id], {})
                finally:
                    self._proving.discard(node.id)
            return False
        return False


def _local_assignments(func: ast.AST) -> dict[str, list[ast.AST]]:
    out: dict[str, list[ast.AST]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            out.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.For, ast.comprehension)):
            # A loop variable is as constant as what it iterates over.
            for t in ast.walk(node.target):
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.iter)
    return out


def _own_nodes(func: ast.AST):
    """The nodes of ``func``'s body, not descending into nested functions."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def unproven_sql(source: str, module: str) -> list[tuple[str, str, int]]:
    """(module, function, line) of every SQL call whose statement is not provably constant."""
    tree = ast.parse(source)
    prover = _Prover(tree)
    found = []

    def visit(func: ast.AST, outer: dict[str, list[ast.AST]]) -> None:
        local = {**outer, **_local_assignments(func)}  # closures see the enclosing names
        for arg in ast.walk(func.args):
            if isinstance(arg, ast.arg):  # a parameter can hold anything
                local[arg.arg] = [ast.Name("<parameter>")]
        for node in _own_nodes(func):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(node, local)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SQL_CALLS and node.args
                    and not prover.const(node.args[0], local)):
                found.append((module, getattr(func, "name", "<lambda>"), node.lineno))

    for node in _own_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(node, {})
    return sorted(found, key=lambda f: f[2])


def package_findings() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        found |= {(m, f) for m, f, _ in unproven_sql(path.read_text(), rel)}
    return found


@pytest.mark.scenario("SQL built from values", "every SQL statement in the package is a constant or"
                      " allow-listed with the reason")
def test_every_sql_statement_in_the_package_is_constant_or_allow_listed():
    found = package_findings()
    assert found - set(ALLOWED) == set(), "SQL built from non-constant values"
    assert set(ALLOWED) - found == set(), "allow-list entries no longer needed"


def test_the_scan_catches_each_way_of_building_sql():
    bad = '''
def a(conn, name):
    conn.execute(f"SELECT * FROM nodes WHERE name = '{name}'")
def b(conn, name):
    conn.execute("SELECT * FROM nodes WHERE name = '%s'" % name)
def c(conn, name):
    conn.execute("SELECT * FROM nodes WHERE name = '{}'".format(name))
def d(conn, name):
    conn.executemany("DELETE FROM nodes WHERE name = '" + name + "'", [])
def e(conn, name):
    sql = "SELECT 1"
    sql += " WHERE x = " + name
    conn.execute(sql)
def f(cur, table):
    for t in table:
        cur.execute(f"DELETE FROM {t}")
'''
    assert [f for _, f, _ in unproven_sql(bad, "m.py")] == ["a", "b", "c", "d", "e", "f"]


def test_the_scan_accepts_constant_and_parameterised_sql():
    good = '''
COLUMNS = "id, name"
SQL = {"one": f"SELECT {COLUMNS} FROM nodes WHERE id = ?"}
class W:
    FILE_SQL = "INSERT INTO files (path) VALUES (?)"
    def g(self, conn, path):
        conn.execute(self.FILE_SQL, (path,))
def a(conn, node_id, key):
    conn.execute(SQL[key], (node_id,))
    sql = "SELECT " + COLUMNS + " FROM nodes"
    conn.execute(sql + " WHERE id = ?", (node_id,))
    conn.execute("SELECT %s FROM nodes" % COLUMNS)
'''
    assert unproven_sql(good, "m.py") == []

"""Shared fixtures of the codegraph_store tests.

* ``store_path``: where a test's store file lives (inside ``tmp_path``).
* ``store``: a new, empty :class:`Store` on ``store_path`` with the default
  config, closed after the test. (The empty file is created once per session and
  copied: creating a store costs several fsyncs.)
* ``open_store``: ``open_store(path=None, **kwargs)`` opens further stores (other
  configs, read-only, a second handle on the same file); all are closed after
  the test.
* ``make_node``: builds a node with :meth:`Node.new` and test-friendly defaults.
* ``stress``: True under ``pytest --stress``. Reliability tests run a CI-sized
  number of iterations by default and their long form with ``--stress``
  (``python -m pytest tests/reliability --stress``); tests/reliability/tally.py
  counts their iterations (``--reliability-report PATH``).
"""

from __future__ import annotations

import shutil

import pytest

from codegraph_store import Node, Store

# The reliability tests' iteration counts (the ``tally`` fixture); a plugin
# rather than tests/reliability/conftest.py, which would shadow this module for
# the tests that import build_node from it.
pytest_plugins = ("reliability.tally",)


def build_node(name: str, kind="function", *, file: str | None = "mod.py", start_line: int = 1,
               end_line: int | None = None, qualname: str | None = None, metadata=None,
               **kwargs) -> Node:
    """``Node.new`` with defaults: a function ``name`` in ``mod.py`` at line 1.

    The id is ``stable_node_id(file, qualname)``, so distinct (file, qualname)
    pairs give distinct nodes and rebuilding the same pair replaces the node.
    """
    return Node.new(kind, name, qualname=qualname, file=file, start_line=start_line,
                    end_line=end_line, metadata=metadata, **kwargs)


def pytest_addoption(parser):
    parser.addoption("--stress", action="store_true", default=False,
                     help="run the reliability tests with their long iteration counts")
    parser.addoption("--reliability-report", metavar="PATH", default=None,
                     help="write the reliability tests' iteration and failure counts to PATH as JSON"
                          " (default: $CODEGRAPH_RELIABILITY_REPORT; see tests/reliability/tally.py)")


@pytest.fixture(scope="session")
def stress(request) -> bool:
    return bool(request.config.getoption("--stress"))


@pytest.fixture
def make_node():
    return build_node


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "test.cgdb"


@pytest.fixture
def open_store(store_path):
    opened: list[Store] = []

    def _open(path=None, **kwargs) -> Store:
        s = Store.open(store_path if path is None else path, **kwargs)
        opened.append(s)
        return s

    yield _open
    for s in reversed(opened):
        s.close()


@pytest.fixture(scope="session")
def empty_store_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "empty.cgdb"
    Store.open(path).close()
    return path


@pytest.fixture
def store(open_store, store_path, empty_store_template):
    shutil.copyfile(empty_store_template, store_path)
    return open_store()

"""pytest plugin (loaded by tests/conftest.py): iteration counts of the
reliability tests (those in this directory), collected so the table in
docs/RELIABILITY.md comes from a run rather than being typed.

A module names its scenario and what it promises with
``pytestmark = pytest.mark.scenario(name, promise)``. A test asks for
``tally()`` (or ``tally(name, promise)`` for a scenario of its own) and counts
on what it gets: ``t.iterations += 1`` per case run (a kill, a power cut, a
damaged file, a hypothesis example) and ``t.failures += 1`` per case that broke
the promise without stopping the test. A test that fails counts at least one
failure in each of its tallies; a test that takes no tally is one iteration of
its module's scenario. Rows of one scenario (parametrized tests, corpus files)
are summed.

At the end of the run the table is printed in the terminal summary, and
written as JSON to the file named by ``--reliability-report PATH`` or the
environment variable ``CODEGRAPH_RELIABILITY_REPORT``.
``python tests/reliability/tally.py A.json [B.json ...]`` prints the table of
reports, a scenario of a later one replacing the same scenario of an earlier.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import attrs
import pytest

HERE = pathlib.Path(__file__).parent
_ROWS_KEY = pytest.StashKey[list]()
_TEST_TALLIES_KEY = pytest.StashKey[list]()


@attrs.define
class Tally:
    scenario: str
    promise: str
    test: str
    iterations: int = 0
    failures: int = 0


def pytest_configure(config):
    config.addinivalue_line("markers", "scenario(name, promise): the reliability scenario a test"
                                       " belongs to, and what it promises")
    config.stash[_ROWS_KEY] = []


def _module_scenario(item) -> tuple[str, str]:
    mark = item.get_closest_marker("scenario")
    if mark is None:
        return item.originalname if hasattr(item, "originalname") else item.name, ""
    return mark.args[0], mark.args[1]


@pytest.fixture
def tally(request):
    """``tally(scenario=None, promise=None) -> Tally`` (default: the module's scenario);
    count ``iterations`` and ``failures`` on it."""
    made: list[Tally] = request.node.stash.setdefault(_TEST_TALLIES_KEY, [])

    def _tally(scenario: str | None = None, promise: str | None = None) -> Tally:
        default_scenario, default_promise = _module_scenario(request.node)
        t = Tally(scenario or default_scenario, promise if promise is not None else default_promise,
                  request.node.nodeid)
        made.append(t)
        return t

    return _tally


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or report.skipped or HERE not in item.path.parents:
        return
    tallies = item.stash.get(_TEST_TALLIES_KEY, None) or [Tally(*_module_scenario(item), item.nodeid, 1)]
    for t in tallies:
        if report.failed:
            t.failures = max(t.failures, 1)
        item.config.stash[_ROWS_KEY].append(t)


def summary(rows: list[Tally]) -> list[dict]:
    """One row per scenario, in the order first seen, with the counts summed."""
    out: dict[str, dict] = {}
    for t in rows:
        row = out.setdefault(t.scenario, {"scenario": t.scenario, "iterations": 0, "failures": 0,
                                          "promise": t.promise, "tests": []})
        row["iterations"] += t.iterations
        row["failures"] += t.failures
        row["promise"] = row["promise"] or t.promise
        if t.test not in row["tests"]:
            row["tests"].append(t.test)
    return list(out.values())


def markdown_table(rows: list[dict]) -> list[str]:
    lines = ["| scenario | iterations | failures | what is promised |", "|---|---:|---:|---|"]
    lines += [f"| {r['scenario']} | {r['iterations']} | {r['failures']} | {r['promise']} |" for r in rows]
    return lines


def pytest_terminal_summary(terminalreporter, config):
    rows = summary(config.stash.get(_ROWS_KEY, []))
    if not rows:
        return
    mode = "stress" if config.getoption("--stress") else "ci"
    terminalreporter.section(f"reliability iterations ({mode} mode)")
    for line in markdown_table(rows):
        terminalreporter.write_line(line)
    path = config.getoption("--reliability-report") or os.environ.get("CODEGRAPH_RELIABILITY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"mode": mode, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "scenarios": rows}, f, indent=1)
        terminalreporter.write_line(f"written to {path}")


def merged_table(paths: list[str]) -> list[str]:
    """The markdown table of several JSON reports; a scenario of a later report
    (a re-run after a fix) replaces the same scenario of an earlier one."""
    rows: dict[str, dict] = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        rows.update((r["scenario"], r) for r in report["scenarios"])
    return markdown_table(list(rows.values()))


if __name__ == "__main__":
    import sys
    print("\n".join(merged_table(sys.argv[1:])))

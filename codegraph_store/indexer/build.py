"""Index a source tree into a store: scan, parse in worker processes, write, resolve.

One writer (this process) and ``jobs`` parser processes. A fresh store takes
the bulk path (:meth:`Store.bulk_load`, references resolved in memory); a store
that already holds the tree is updated incrementally in one transaction:
unchanged files (same content hash) are skipped, changed files replaced,
deleted files removed, and every reference whose resolution could differ is
resolved again (see :mod:`.resolve`), so the result equals a full rebuild.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import hashlib
import multiprocessing
import os
import re
import stat
import time
from typing import Callable, Iterable, Iterator

import attrs

from ..errors import IndexingError, InvalidArgumentError
from ..store import Store
from . import parse, resolve

DEFAULT_EXCLUDE = ("__pycache__", "site-packages", "dist-packages", "node_modules", ".*")
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
# Below this many changed files, parsing inline beats starting worker processes.
INLINE_PARSE_LIMIT = 16

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@attrs.frozen
class IndexReport:
    """What an indexing run did; ``failed`` files are stored with their reason
    (a parse error, or a read that failed after the scan), ``skipped`` ones (seen
    by the scan as unstattable, too large, not a regular file, a symlink leaving
    the root, an unencodable path) are not stored."""

    root: str
    files_seen: int
    parsed: int
    unchanged: int
    added: int
    modified: int
    deleted: int
    failed: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]
    refs_resolved: int
    changed: tuple[str, ...]
    nodes: int
    edges: int
    seconds: float
    full_build: bool

    def as_dict(self) -> dict:
        d = attrs.asdict(self)
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        d["changed"] = len(self.changed)
        return d


@attrs.frozen
class _Source:
    path: str  # relative, '/'-separated
    size: int
    content_hash: str | None
    parsed: parse.ParsedFile | None
    skip_reason: str | None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def scan(root: str, exclude: Iterable[str] = DEFAULT_EXCLUDE,
         max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[list[str], list[tuple[str, str]]]:
    """Python files under ``root`` (relative paths, sorted) and the ones skipped, with why.

    Directories matching ``exclude`` (fnmatch on the name) are not entered, symlinked
    directories are not followed (there is no option to follow them), symlinked
    files are kept only when they resolve inside ``root``, and anything that is
    not a regular file (a FIFO, a socket, a device) is skipped.
    """
    patterns = [fnmatch.translate(p) for p in exclude]
    excluded = re.compile("|".join(patterns)).match if patterns else (lambda name: None)
    real_root = os.path.realpath(root)
    prefix_len = len(os.path.join(root, ""))
    found: list[str] = []
    skipped: list[tuple[str, str]] = []

    def onerror(err: OSError) -> None:
        rel = os.path.relpath(err.filename or root, root).replace(os.sep, "/")
        skipped.append((rel, f"unreadable directory: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if not excluded(d))
        for name in filenames:
            if not name.endswith(".py") or excluded(name):
                continue
            full = os.path.join(dirpath, name)
            rel = full[prefix_len:].replace(os.sep, "/")
            if not all(parse.module_name_for(rel).split(".")):
                skipped.append((rel, "file name gives no module name"))
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append((rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                "path is not valid UTF-8"))
                continue
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.commonpath([real_root, target]) != real_root:
                    skipped.append((rel, "symlink leaves the indexed root"))
                    continue
            try:
                st = os.stat(full)
            except OSError as e:
                skipped.append((rel, f"cannot stat: {e.strerror}"))
                continue
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
                skipped.append((rel, "not a regular file"))
                continue
            size = st.st_size
            if size > max_file_bytes:
                skipped.append((rel, f"larger than {max_file_bytes} bytes ({size})"))
                continue
            found.append(rel)
    found.sort()
    return found, skipped


def _read(root: str, rel: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why not. The tree may change after the scan, so what
    the scan checked is checked again: the file may be gone, unreadable, now a
    symlink leaving the root, a FIFO or device (opened non-blocking, so never a
    read that waits for a writer, and refused), or grown past the size limit
    (at most one byte past it is read)."""
    full = os.path.join(root, rel)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        return None, "symlink leaves the indexed root"
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "not a regular file"
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        return None, f"larger than {max_bytes} bytes (grew while indexing)"
    return data, None


def _parse_batch(root: str, paths: list[str], threshold: int | None,
                 max_bytes: int) -> list[_Source]:
    """Worker entry point: read, hash and parse a batch of files."""
    out = []
    for rel in paths:
        data, error = _read(root, rel, max_bytes)
        if data is None:
            out.append(_Source(rel, 0, None, None, error))
            continue
        out.append(_Source(rel, len(data), content_hash(data),
                           parse.parse_source(rel, data, threshold), None))
    return out


def _pin_worker(counter) -> None:
    """Pin each worker process to its own core (cpu_affinity_enabled)."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[index % len(cores)]})


def _parse_all(root: str, paths: list[str], store: Store, jobs: int,
               progress: Progress | None, max_bytes: int) -> Iterator[_Source]:
    """Parse ``paths``, yielding results as they complete (order not guaranteed)."""
    cpu = store.config.cpu_optimization
    io = store.config.io_optimization
    threshold = io.compression_threshold if io.enable_compression else None
    total = len(paths)
    done = 0
    if jobs <= 1 or total <= INLINE_PARSE_LIMIT:
        for rel in paths:
            yield from _parse_batch(root, [rel], threshold, max_bytes)
            done += 1
            if progress:
                progress("parse", done, total)
        return
    # Small batches keep both workers busy to the end; batch_size caps them.
    size = max(1, min(cpu.batch_size, total // (jobs * 8) or 1))
    batches = [paths[i:i + size] for i in range(0, total, size)]
    # forkserver: workers start from a clean process, never a fork of this one
    # with its SQLite connections and threads.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["codegraph_store.indexer.parse"])
    # The package imports numpy; one BLAS thread per parser keeps the workers
    # from competing for the cores they are already using.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    initializer, initargs = None, ()
    if cpu.cpu_affinity_enabled and hasattr(os, "sched_setaffinity"):
        initializer, initargs = _pin_worker, (ctx.Value("i", 0),)
    # concurrent.futures, not multiprocessing.Pool: a worker that dies (killed,
    # out of memory) breaks the executor and fails every pending batch, where
    # Pool would start a new worker and wait for the lost batch forever.
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=initializer,
                                                initargs=initargs) as pool:
        try:
            try:
                pending = [pool.submit(_parse_batch, root, batch, threshold, max_bytes) for batch in batches]
            except Exception as e:  # a worker died while the batches were handed out
                raise IndexingError(f"a parser process failed: {type(e).__name__}: {e}") from e
            for job in pending:
                try:
                    results = job.result()
                except Exception as e:  # a worker died: the run cannot be trusted
                    raise IndexingError(f"a parser process failed: {type(e).__name__}: {e}") from e
                yield from results
                done += len(results)
                if progress:
                    progress("parse", done, total)
        finally:
            pool.shutdown(cancel_futures=True)


class _Writer:
    """Writes parsed files through the store's open transaction, then resolves refs."""

    FILE_SQL = ("INSERT INTO files (path, language, module, content_hash, size, parse_error)"
                " VALUES (?, 'python', ?, ?, ?, ?) RETURNING id")

    def __init__(self, store: Store):
        self.store = store
        self.refs: list[tuple[int, int, str, int]] = []  # src, kind, target, ordinal
        self.aliases: list[tuple[int, str]] = []
        self.modules: set[str] = set()
        self.nodes_for_lookup: list[tuple] = []

    def write(self, src: _Source) -> None:
        parsed = src.parsed
        module = parsed.module if parsed else parse.module_name_for(src.path)
        error = src.skip_reason or (parsed.error if parsed else None)
        # The files row does not depend on staged nodes: leave them staged.
        (file_id,) = self.store._exec(self.FILE_SQL, (src.path, module, src.content_hash,
                                                      src.size, error), merge=False).fetchone()
        self.modules.add(module)
        if error or parsed is None:
            return
        buf = self.store._buffer
        buf.add_node_rows([(n[0], n[1], n[2], n[3], file_id) + tuple(n[4:]) for n in parsed.nodes])
        buf.add_edge_rows([(s, k, d, None) for s, k, d in parsed.edges])
        self.aliases.extend(parsed.aliases)
        # The position in the file keeps base classes in declaration order.
        self.refs.extend((s, k, t, i) for i, (s, k, t) in enumerate(parsed.refs))
        self.nodes_for_lookup.extend((n[3], n[4], n[0], n[1]) for n in parsed.nodes)

    def finish_full(self) -> int:
        """Full build: resolve every ref in memory; insert aliases, refs, hops and edges."""
        store = self.store
        store._execmany("INSERT INTO aliases (node_id, target) VALUES (?, ?)", sorted(self.aliases))
        lookup = resolve.MemoryLookup()
        alias = dict(self.aliases)
        for qualname, line, node_id, kind in self.nodes_for_lookup:
            lookup.add(qualname, line, node_id, kind, alias.get(node_id))
        lookup.finish()
        ref_rows, hop_rows, edge_rows = [], [], set()
        resolved = 0
        # Bases first: resolving a member through a class looks at its bases.
        inherits = sorted((r for r in self.refs if r[1] == resolve.INHERITS), key=lambda r: r[3])
        others = [r for r in self.refs if r[1] != resolve.INHERITS]
        qualname_of = {node_id: qualname for qualname, _l, node_id, _k in self.nodes_for_lookup}
        bases: dict[int, list] = {}
        for phase in (inherits, others):
            for src, kind, target, ordinal in phase:
                dst, hops = resolve.resolve(target, kind, lookup)
                ref_rows.append((src, kind, target, dst, ordinal))
                hop_rows.extend((src, kind, target, h) for h in hops)
                if dst is not None:
                    resolved += 1
                    edge_rows.add((src, kind, dst, None))
                if kind == resolve.INHERITS:
                    bases.setdefault(src, []).append((target, hops, qualname_of.get(dst)))
            for class_id, class_bases in bases.items():
                lookup.set_bases(class_id, class_bases)
        store._execmany("INSERT OR IGNORE INTO refs (src, kind, target, dst, ordinal)"
                        " VALUES (?, ?, ?, ?, ?)", sorted(ref_rows))
        store._execmany("INSERT OR IGNORE INTO ref_hops (src, kind, target, hop) VALUES (?, ?, ?, ?)",
                        sorted(hop_rows))
        store._buffer.add_edge_rows(sorted(edge_rows))
        return resolved

    def finish_incremental(self, changed_modules: set[str]) -> int:
        """Re-resolve the refs of new files and every ref into a changed module."""
        store = self.store
        store._execmany("INSERT INTO aliases (node_id, target) VALUES (?, ?)", self.aliases)
        store._execmany("INSERT OR IGNORE INTO refs (src, kind, target, dst, ordinal)"
                        " VALUES (?, ?, ?, NULL, ?)", self.refs)
        conn = store._writer
        affected = resolve.affected_refs(conn, changed_modules)
        affected.update((s, k, t) for s, k, t, _ in self.refs)
        resolved = 0
        # Bases first, and a fresh lookup after them: members resolve through bases.
        for phase in (sorted(r for r in affected if r[1] == resolve.INHERITS),
                      sorted(r for r in affected if r[1] != resolve.INHERITS)):
            lookup = resolve.SqlLookup(conn)
            for key in phase:
                resolved += self._re_resolve(conn, key, lookup)
        return resolved

    @staticmethod
    def _re_resolve(conn, key: tuple[int, int, str], lookup: resolve.Lookup) -> int:
        """Resolve one stored ref again and move its edge; 1 if it resolves."""
        src, kind, target = key
        row = conn.execute("SELECT dst FROM refs WHERE src = ? AND kind = ? AND target = ?",
                           key).fetchone()
        if row is None:
            return 0
        old = row[0]
        new, hops = resolve.resolve(target, kind, lookup)
        conn.execute("DELETE FROM ref_hops WHERE src = ? AND kind = ? AND target = ?", key)
        if hops:
            conn.executemany("INSERT OR IGNORE INTO ref_hops VALUES (?, ?, ?, ?)",
                             [key + (h,) for h in hops])
        if new != old:
            conn.execute("UPDATE refs SET dst = ? WHERE src = ? AND kind = ? AND target = ?",
                         (new,) + key)
            if old is not None:
                # The edge stays while another ref of the same node still supports it.
                conn.execute(
                    "DELETE FROM edges WHERE src = ? AND kind = ? AND dst = ? AND NOT EXISTS"
                    " (SELECT 1 FROM refs WHERE src = ? AND kind = ? AND dst = ?)",
                    (src, kind, old, src, kind, old))
        if new is None:
            return 0
        conn.execute("INSERT OR IGNORE INTO edges (src, kind, dst) VALUES (?, ?, ?)", (src, kind, new))
        return 1


def index_tree(store: Store, root: str, *, jobs: int | None = None,
               exclude: Iterable[str] = DEFAULT_EXCLUDE,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               progress: Progress | None = None) -> IndexReport:
    """Index (or re-index) every Python file under ``root`` into ``store``.

    ``jobs`` parser processes (default: ``thread_pool_size``, 0 = all cores).
    ``progress(phase, done, total)`` is called as files are scanned and parsed.
    Files that cannot be parsed are recorded with the reason; nothing aborts the
    run except the store itself failing, in which case nothing is written.
    """
    started = time.perf_counter()
    if not isinstance(root, (str, os.PathLike)):
        raise InvalidArgumentError(f"root must be a path, got {type(root).__name__}")
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise IndexingError(f"{root}: not a directory")
    if jobs is None:
        jobs = store.config.cpu_optimization.workers()
    if type(jobs) is not int or jobs < 1:
        raise InvalidArgumentError(f"jobs must be a positive int, got {jobs!r}")
    if type(max_file_bytes) is not int or max_file_bytes < 0:
        raise InvalidArgumentError(f"max_file_bytes must be an int >= 0, got {max_file_bytes!r}")

    paths, skipped = scan(root, exclude, max_file_bytes)
    if progress:
        progress("scan", len(paths), len(paths))
    conn, _ = store._read_conn()
    stored = dict(conn.execute("SELECT path, content_hash FROM files"))
    stored_modules = dict(conn.execute("SELECT path, module FROM files"))
    # The bulk path resolves among the nodes it parsed, so it is only right for
    # a store with no nodes at all (not even ones added through the API).
    full_build = conn.execute("SELECT 1 FROM nodes LIMIT 1").fetchone() is None and not stored

    if full_build:
        to_parse = paths
        unchanged = 0
        deleted: list[str] = []
    else:
        to_parse = []
        for rel in paths:
            old = stored.get(rel)
            if old is None:
                to_parse.append(rel)
                continue
            data, _ = _read(root, rel, max_file_bytes)
            if data is None or content_hash(data) != old:
                to_parse.append(rel)
        unchanged = len(paths) - len(to_parse)
        listed = set(paths)
        deleted = sorted(p for p in stored if p not in listed)

    added = sum(1 for p in to_parse if p not in stored)
    modified = len(to_parse) - added
    resolved = 0
    writer = _Writer(store)
    if full_build:
        with store.bulk_load():
            for src in _parse_all(root, to_parse, store, jobs, progress, max_file_bytes):
                writer.write(src)
            if progress:
                progress("resolve", 0, 1)
            resolved = writer.finish_full()
    elif to_parse or deleted:
        results = sorted(_parse_all(root, to_parse, store, jobs, progress, max_file_bytes), key=lambda s: s.path)
        with store.transaction():
            for rel in deleted + [s.path for s in results if s.path in stored]:
                store._exec("DELETE FROM files WHERE path = ?", (rel,))
            for src in results:
                writer.write(src)
            if progress:
                progress("resolve", 0, 1)
            changed = writer.modules | {stored_modules[p] for p in deleted if stored_modules.get(p)}
            resolved = writer.finish_incremental(changed)
    conn, _ = store._read_conn()
    nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    edges = conn.execute("SELECT count(*) FROM edges").fetchone()[0]
    return IndexReport(
        root=root, files_seen=len(paths), parsed=len(to_parse), unchanged=unchanged,
        added=added, modified=modified, deleted=len(deleted),
        failed=tuple(_all_failures(store)),
        skipped=tuple(sorted(skipped)), refs_resolved=resolved,
        changed=tuple(sorted(set(to_parse) | set(deleted))), nodes=nodes,
        edges=edges, seconds=time.perf_counter() - started, full_build=full_build)


def _all_failures(store: Store) -> list[tuple[str, str]]:
    conn, _ = store._read_conn()
    return [tuple(r) for r in conn.execute(
        "SELECT path, parse_error FROM files WHERE parse_error IS NOT NULL ORDER BY path")]

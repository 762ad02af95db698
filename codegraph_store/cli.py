"""The ``codegraph`` command line: index a tree, then ask the store questions.

Every command takes ``--db FILE`` (default ``$CODEGRAPH_DB`` or
``codegraph.cgdb``) and ``--json``. User errors print one line on stderr and
exit with status 2; damage found by ``check`` exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Callable, TextIO
from xml.sax.saxutils import escape, quoteattr

from . import __version__
from .config import Config
from .errors import CodegraphError, NotFoundError
from .kinds import EdgeKind, NodeKind
from .model import Node
from .store import Store

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


class UsageError(CodegraphError):
    """A command-line mistake: printed as one line, exit status 2."""


# ------------------------------------------------------------------ formatting


def node_dict(node: Node, with_metadata: bool = False) -> dict[str, Any]:
    d = {"id": node.id, "kind": node.kind.label, "name": node.name, "qualname": node.qualname,
         "file": node.file, "start_line": node.start_line, "start_col": node.start_col,
         "end_line": node.end_line, "end_col": node.end_col}
    if with_metadata:
        d["metadata"] = node.metadata
    return d


def node_line(node: Node, extra: str = "") -> str:
    where = f"{node.file}:{node.start_line}" if node.file else "-"
    return f"{where}\t{node.kind.label}\t{node.qualname}{extra}"


def emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    out: TextIO = sys.stdout
    if args.json:
        json.dump(data, out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        for line in lines:
            out.write(line + "\n")


# ------------------------------------------------------------- symbol lookup

_FILE_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+)$")


def resolve_symbol(store: Store, spec: str) -> Node:
    """A node from an id, ``file:line``, a qualname or an unambiguous name."""
    if spec.isdigit():
        node = store.get_node(int(spec))
        if node is None:
            raise NotFoundError(f"no node with id {spec}")
        return node
    match = _FILE_LINE.match(spec)
    if match:
        node = store.at(match["file"], int(match["line"]))
        if node is None:
            raise NotFoundError(f"no symbol covers {spec}")
        return node
    found = store.find(qualname=spec, limit=20) or store.find(spec, limit=20)
    if not found:
        raise NotFoundError(f"no symbol named {spec!r} (try `codegraph find {spec} --prefix`)")
    if len(found) > 1:
        shown = "; ".join(f"{n.qualname} ({n.kind.label}, id {n.id})" for n in found[:5])
        raise UsageError(f"{spec!r} is ambiguous ({len(found)} matches: {shown}); "
                         "give a qualname, file:line or id")
    return found[0]


# ------------------------------------------------------------------- commands


def cmd_index(args: argparse.Namespace) -> int:
    from .indexer import index_tree
    from .progress import ProgressReporter

    embedder = None
    if args.embed:
        from .embedders import get_embedder
        embedder = get_embedder(args.embed)  # fail before indexing, not after
    embedded = None
    with open_store(args) as store, ProgressReporter(enabled=not args.quiet) as progress:
        report = index_tree(store, args.path, jobs=args.jobs,
                            exclude=args.exclude or _default_exclude(),
                            max_file_bytes=args.max_file_bytes, progress=progress.update)
        if embedder is not None:
            from .indexer.embed import embed_index
            store._embeddings.progress = progress.update
            embedded = embed_index(store, embedder, report.changed, progress=progress.update)
    data = report.as_dict()
    if embedded is not None:
        data["embeddings"] = embedded.as_dict()
    lines = [
        f"indexed {report.root}",
        f"  files      {report.files_seen} seen, {report.parsed} parsed, {report.unchanged} unchanged,"
        f" {report.added} added, {report.modified} modified, {report.deleted} deleted",
        f"  nodes      {report.nodes}",
        f"  edges      {report.edges}  ({report.refs_resolved} references resolved this run)",
        f"  time       {report.seconds:.2f} s ({'full build' if report.full_build else 'incremental'})",
    ]
    if embedded is not None:
        lines.append(f"  embedded   {embedded.embedded} symbols into space {embedded.space}"
                     f" ({embedded.seconds:.2f} s)")
    if report.failed:
        lines.append(f"  failed to read or parse ({len(report.failed)}, stored without symbols):")
        lines += [f"    {p}: {r}" for p, r in report.failed]
    if report.skipped:
        lines.append(f"  skipped ({len(report.skipped)}, not stored):")
        lines += [f"    {p}: {r}" for p, r in report.skipped]
    emit(args, data, lines)
    return EXIT_OK


def _default_exclude() -> list[str]:
    from .indexer.build import DEFAULT_EXCLUDE
    return list(DEFAULT_EXCLUDE)


def cmd_stats(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        stats = store.stats()
    lines = [f"{stats['path']}: {stats['files']} files ({stats['files_with_errors']} failed to read or parse),"
             f" {stats['nodes']} nodes, {stats['edges']} edges, {stats['file_bytes']} bytes"]
    lines += [f"  {k:<10} {v}" for k, v in stats["nodes_by_kind"].items() if v]
    lines += [f"  {k:<10} {v} edges" for k, v in stats["edges_by_kind"].items() if v]
    emit(args, stats, lines)
    return EXIT_OK


def cmd_find(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        kwargs = {"kind": args.kind, "file": args.file, "prefix": args.prefix, "limit": args.limit}
        if args.qualname:
            nodes = store.find(qualname=args.name, **kwargs)
        else:
            nodes = store.find(args.name, **kwargs)
    emit(args, [node_dict(n) for n in nodes], [node_line(n) for n in nodes] or ["no match"])
    return EXIT_OK if nodes else EXIT_PROBLEMS


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        node = resolve_symbol(store, args.symbol)
        out_edges = store.edges_of(node.id, "out")
        in_edges = store.edges_of(node.id, "in")
        others = {n.id: n for n in store.get_nodes(
            sorted({e.dst for e in out_edges} | {e.src for e in in_edges})) if n is not None}
    data = node_dict(node, with_metadata=True)
    data["out"] = [{"kind": e.kind.label, "dst": e.dst, "qualname": others[e.dst].qualname}
                   for e in out_edges]
    data["in"] = [{"kind": e.kind.label, "src": e.src, "qualname": others[e.src].qualname}
                  for e in in_edges]
    lines = [node_line(node), f"  id {node.id}, lines {node.start_line}-{node.end_line}"]
    meta = node.metadata if isinstance(node.metadata, dict) else {}
    if meta.get("signature"):
        lines.append(f"  signature {meta['signature']}")
    if meta.get("docstring"):
        lines.append("  doc       " + meta["docstring"].splitlines()[0])
    for e in out_edges:
        lines.append(f"  -> {e.kind.label:<10} {others[e.dst].qualname}")
    for e in in_edges:
        lines.append(f"  <- {e.kind.label:<10} {others[e.src].qualname}")
    emit(args, data, lines)
    return EXIT_OK


def _relation(fetch: Callable[[Store, int], list[Node]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with open_store(args, readonly=True) as store:
            node = resolve_symbol(store, args.symbol)
            nodes = fetch(store, node.id)
        emit(args, {"symbol": node_dict(node), "results": [node_dict(n) for n in nodes]},
             [node_line(n) for n in nodes] or [f"none for {node.qualname}"])
        return EXIT_OK
    return run


cmd_callers = _relation(lambda store, i: store.callers(i))
cmd_callees = _relation(lambda store, i: store.callees(i))


def cmd_impact(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        node = resolve_symbol(store, args.symbol)
        hits = store.impact(node.id, depth=args.depth)
    emit(args, {"symbol": node_dict(node),
                "results": [dict(node_dict(n), depth=d) for n, d in hits]},
         [node_line(n, f"\t(depth {d})") for n, d in hits] or [f"nothing depends on {node.qualname}"])
    return EXIT_OK


def cmd_path(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        src = resolve_symbol(store, args.source)
        dst = resolve_symbol(store, args.target)
        nodes = store.path(src.id, dst.id, kinds=args.kind, direction=args.direction,
                           max_depth=args.max_depth)
    if nodes is None:
        emit(args, None, [f"no path from {src.qualname} to {dst.qualname}"])
        return EXIT_PROBLEMS
    emit(args, [node_dict(n) for n in nodes], [node_line(n) for n in nodes])
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        hits = store.search(args.query, k=args.k, space=args.space, kinds=args.kind,
                            files=args.file)
    emit(args, [dict(node_dict(h.node), score=h.score) for h in hits],
         [node_line(h.node, f"\t{h.score:.4f}") for h in hits] or ["no match"])
    return EXIT_OK if hits else EXIT_PROBLEMS


def cmd_context(args: argparse.Namespace) -> int:
    with open_store(args, readonly=True) as store:
        ctx = store.context(args.query, k=args.k, hops=args.hops, budget=args.budget,
                            space=args.space, kinds=args.kind, files=args.file)
    data = {"query": ctx.query, "budget": ctx.budget, "used": ctx.used,
            "items": [dict(node_dict(i.node), score=i.score, reason=i.reason, text=i.text)
                      for i in ctx.items]}
    emit(args, data, [ctx.as_text()] if ctx.items else ["no context found"])
    return EXIT_OK if ctx.items else EXIT_PROBLEMS


def cmd_sql(args: argparse.Namespace) -> int:
    import apsw
    with open_store(args, readonly=True) as store:
        conn, _ = store._read_conn()
        try:
            cursor = conn.execute(args.statement)
            try:
                columns = [d[0] for d in cursor.getdescription()]
            except apsw.ExecutionCompleteError:  # a statement without result columns
                columns = []
            rows = cursor.fetchall()
        except (apsw.ReadOnlyError, apsw.AuthError):
            raise UsageError("codegraph sql runs read-only statements") from None
        except apsw.SQLError as e:
            raise UsageError(f"SQL error: {e}") from None
    def cell(v: Any) -> Any:
        if isinstance(v, bytes):
            return {"blob_bytes": len(v)} if args.json else f"<{len(v)} bytes>"
        return v
    emit(args, [dict(zip(columns, map(cell, r))) for r in rows],
         (["\t".join(columns)] if columns else []) + ["\t".join(str(cell(v)) for v in r) for r in rows])
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    if args.repair:
        with open_store(args) as store:
            store.repair()
    with open_store(args, readonly=True) as store:
        report = store.check(full=not args.quick)
    lines = [f"ok: {c}" for c in report.checked if not any(p.startswith(c) for p in report.problems)]
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines.append("store is consistent" if report.ok else f"{len(report.problems)} problem(s) found")
    emit(args, report.as_dict(), lines)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_export(args: argparse.Namespace) -> int:
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        with open_store(args, readonly=True) as store:
            if args.format == "jsonl":
                export_jsonl(store, out)
            else:
                export_graphml(store, out)
    finally:
        if args.output:
            out.close()
    return EXIT_OK


def export_jsonl(store: Store, out: TextIO) -> None:
    """One JSON object per line: every node by id, then every edge by (src, kind, dst)."""
    for node in store.iter_nodes():
        out.write(json.dumps(dict(node_dict(node), type="node"), ensure_ascii=False) + "\n")
    for e in store.iter_edges():
        out.write(json.dumps({"type": "edge", "src": e.src, "kind": e.kind.label, "dst": e.dst},
                             ensure_ascii=False) + "\n")


def export_graphml(store: Store, out: TextIO) -> None:
    """GraphML that networkx, Gephi and yEd read; node ids are ``n<id>``."""
    keys = [("kind", "node", "string"), ("name", "node", "string"), ("qualname", "node", "string"),
            ("file", "node", "string"), ("start_line", "node", "int"), ("end_line", "node", "int"),
            ("edge_kind", "edge", "string")]
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n'
              '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n')
    for name, scope, typ in keys:
        out.write(f'  <key id="{name}" for="{scope}" attr.name="{name}" attr.type="{typ}"/>\n')
    out.write('  <graph id="codegraph" edgedefault="directed">\n')
    for n in store.iter_nodes():
        out.write(f'    <node id="n{n.id}">')
        for key, value in (("kind", n.kind.label), ("name", n.name), ("qualname", n.qualname),
                           ("file", n.file), ("start_line", n.start_line), ("end_line", n.end_line)):
            if value is not None:
                out.write(f'<data key="{key}">{escape(_xml_text(str(value)))}</data>')
        out.write("</node>\n")
    for e in store.iter_edges():
        out.write(f'    <edge source="n{e.src}" target="n{e.dst}">'
                  f'<data key="edge_kind">{e.kind.label}</data></edge>\n')
    out.write("  </graph>\n</graphml>\n")


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters, even escaped.
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", text)


# ------------------------------------------------------------------- plumbing


def open_store(args: argparse.Namespace, readonly: bool = False) -> Store:
    if readonly and not os.path.exists(args.db):
        raise UsageError(f"{args.db}: no such store (index a tree first: codegraph index PATH --db {args.db})")
    return Store.open(args.db, readonly=readonly, config=args.config)


def build_parser() -> argparse.ArgumentParser:
    from .indexer.build import DEFAULT_MAX_FILE_BYTES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=os.environ.get("CODEGRAPH_DB", "codegraph.cgdb"),
                        help="store file (default: $CODEGRAPH_DB or codegraph.cgdb)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--config", metavar="TOML", help="configuration overrides (TOML file)")

    parser = argparse.ArgumentParser(prog="codegraph", description="Index code into a .cgdb store and query it.")
    parser.add_argument("--version", action="version", version=f"codegraph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", parents=[common], help="index (or re-index) a source tree")
    p.add_argument("path", help="root directory of the code to index")
    p.add_argument("--jobs", type=int, default=None, help="parser processes (default: all cores)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="directory or file names to skip (repeatable; replaces the defaults)")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                   help=f"skip files larger than this (default {DEFAULT_MAX_FILE_BYTES // 2**20} MiB)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--embed", nargs="?", const="hashing", metavar="EMBEDDER",
                   help="also store an embedding per symbol (default embedder: hashing)")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("stats", parents=[common], help="counts of files, nodes and edges")
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("find", parents=[common], help="find symbols by name")
    p.add_argument("name", help="symbol name (or qualname with --qualname)")
    p.add_argument("--kind", action="append", choices=[k.label for k in NodeKind],
                   help="only these kinds (repeatable)")
    p.add_argument("--file", help="only in this file (path relative to the indexed root)")
    p.add_argument("--qualname", action="store_true", help="match the fully qualified name")
    p.add_argument("--prefix", action="store_true", help="match names starting with NAME")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=cmd_find)

    symbol_help = "an id, file:line, a qualified name or an unambiguous name"
    p = sub.add_parser("show", parents=[common], help="one symbol with its metadata and edges")
    p.add_argument("symbol", help=symbol_help)
    p.set_defaults(run=cmd_show)

    for name, fn, text in (("callers", cmd_callers, "symbols that call SYMBOL"),
                           ("callees", cmd_callees, "symbols that SYMBOL calls")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("symbol", help=symbol_help)
        p.set_defaults(run=fn)

    p = sub.add_parser("impact", parents=[common],
                       help="what may break if SYMBOL changes (transitive callers, subclasses, importers)")
    p.add_argument("symbol", help=symbol_help)
    p.add_argument("--depth", type=int, default=None, help="stop after this many hops")
    p.set_defaults(run=cmd_impact)

    p = sub.add_parser("path", parents=[common], help="a shortest path between two symbols")
    p.add_argument("source", help=symbol_help)
    p.add_argument("target", help=symbol_help)
    p.add_argument("--kind", action="append", choices=[k.label for k in EdgeKind],
                   help="only follow these edge kinds (repeatable)")
    p.add_argument("--direction", choices=["out", "in", "both"], default="out")
    p.add_argument("--max-depth", type=int, default=None)
    p.set_defaults(run=cmd_path)

    for name, fn, text in (("search", cmd_search, "symbols semantically close to a text"),
                           ("context", cmd_context, "retrieval context for a question: hits, "
                                                    "their callers, callees and containers, with source")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("query", help="the text to search for")
        p.add_argument("-k", type=int, default=10 if name == "search" else 5, help="number of hits")
        p.add_argument("--space", help="embedding space (needed when the store has several)")
        p.add_argument("--kind", action="append", choices=[k.label for k in NodeKind],
                       help="only these kinds (repeatable)")
        p.add_argument("--file", action="append",
                       help="only in this file, or under this directory if it ends in / (repeatable)")
        if name == "context":
            p.add_argument("--hops", type=int, default=1, help="graph hops around each hit")
            p.add_argument("--budget", type=int, default=12000, help="characters of context at most")
        p.set_defaults(run=fn)

    p = sub.add_parser("sql", parents=[common],
                       help="run a read-only SQL statement (sqlite-vec functions available)")
    p.add_argument("statement", help="one SQL statement")
    p.set_defaults(run=cmd_sql)

    p = sub.add_parser("check", parents=[common], help="integrity and consistency checks")
    p.add_argument("--quick", action="store_true", help="SQLite quick_check, skip decoding metadata")
    p.add_argument("--repair", action="store_true", help="rebuild what can be derived, then check")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("export", parents=[common], help="every node and edge, in a stable order")
    p.add_argument("--format", choices=["jsonl", "graphml"], default="jsonl")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("perf", help="measure every performance target; show recorded runs and trends")
    p.add_argument("action", choices=["validate", "report", "trends"],
                   help="validate: build or reuse a store at scale, measure, exit 1 on a missed "
                        "target; report: the last recorded run; trends: each metric over time")
    p.add_argument("--quick", action="store_true",
                   help="validate on a 60,000-node store (< 1 min); report/trends: the quick runs")
    p.add_argument("--out", metavar="DIR",
                   help="stores and run history (default: $CODEGRAPH_PERF_DIR or ~/.cache/codegraph-perf)")
    p.add_argument("--days", type=float, default=None, help="trends over the last N days only")
    p.add_argument("--json", action="store_true", help="print JSON instead of text (trends)")
    p.set_defaults(run=cmd_perf)
    return parser


def cmd_perf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import perfcheck
    from .monitor import trends
    out = Path(args.out) if args.out else perfcheck.default_out_dir()
    if args.action == "validate":
        return perfcheck.validate((["--quick"] if args.quick else []) + ["--out", str(out)],
                                  prog="codegraph perf validate")
    history = perfcheck.history_path(out)
    scale = "quick" if args.quick else "full"
    if args.action == "report":
        run = perfcheck.report(history, scale)
        if run is None:
            raise UsageError(f"{history}: no recorded {scale} run (run: codegraph perf validate)")
        print(json.dumps(run, indent=2, sort_keys=True))
        return EXIT_OK
    if args.days is not None and not args.days > 0:
        raise UsageError(f"--days must be > 0, got {args.days}")
    result = trends(perfcheck.runs_of(history, scale), Config.defaults().performance_targets, args.days)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    if not result:
        raise UsageError(f"{history}: no recorded {scale} run (run: codegraph perf validate)")
    print(f"{'metric':<40} {'runs':>5} {'median':>12} {'band':>10} {'latest':>12}  verdict")
    for name, t in result.items():
        med = "-" if t["median"] is None else f"{t['median']:.4g}"
        band = "-" if t["band"] is None else f"{t['band']:.3g}"
        verdict = {None: "too few runs", True: "REGRESSION", False: "ok"}[t["regression"]]
        print(f"{name:<40} {len(t['values']):>5} {med:>12} {band:>10} {t['latest']:>12.4g}  {verdict}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"codegraph: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CodegraphError as e:
        print(f"codegraph: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("codegraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `codegraph export | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except OSError as e:
        print(f"codegraph: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

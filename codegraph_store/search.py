"""Vector search and graph-expanded retrieval (RAG context) over a store.

Search scans the space's pool with the C kernel (over-fetching candidates when
the pool is quantized) and rescoring them exactly from the f32 rows in SQLite,
so every returned score is exact whatever the pool's dtype. Filters become an
allow-bitmap of slots before the scan: a filtered search returns k results
whenever k vectors match.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import apsw
import attrs
import numpy as np

from . import graph
from .embeddings import Embeddings, SlotRows, Space, check_vectors
from .errors import InvalidArgumentError, InvalidTypeError
from .kinds import EdgeKind, NodeKind
from .model import Node, check_node_id, check_path

# Candidates scanned per requested result, by pool dtype, before exact rescoring.
OVERFETCH = {"float32": 1, "float16": 2, "int8": 4}
MIN_EXTRA_CANDIDATES = 16
# Scans of one search before candidates that keep disagreeing with SQLite are skipped.
VERIFY_ATTEMPTS = 3


@attrs.frozen
class SearchHit:
    """A node and its exact score (cosine/dot: higher is closer; l2: lower)."""

    node: Node
    score: float


@attrs.frozen
class ContextItem:
    """One piece of retrieved context: why it was picked, its relevance (1/rank for
    matches, halved per graph hop) and the text it brings."""

    node: Node
    score: float
    reason: str
    text: str


@attrs.frozen
class Context:
    """What :meth:`Store.context` returns: items ranked by score, within ``budget`` chars."""

    query: str | None
    items: tuple[ContextItem, ...]
    budget: int
    used: int

    def as_text(self) -> str:
        parts = []
        for item in self.items:
            where = f"{item.node.file}:{item.node.start_line}" if item.node.file else item.node.qualname
            parts.append(f"# {item.node.qualname} ({item.node.kind.label}, {where}; {item.reason})\n{item.text}")
        return "\n\n".join(parts)


def check_k(k: Any) -> int:
    if type(k) is not int:
        raise InvalidTypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    return k


def filter_slots(conn: apsw.Connection, space: Space, kinds, files, ids) -> np.ndarray | None:
    """Pool slots of the vectors that pass the filters, or None for no filter.

    ``files`` entries ending in '/' match every file under that directory.
    """
    if kinds is None and files is None and ids is None:
        return None
    where, params = ["e.space_id = ?"], [space.id]
    codes = graph.parse_kinds(kinds, NodeKind)
    if codes is not None:
        where.append("n.kind IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(codes))
    if files is not None:
        if isinstance(files, str):
            files = [files]
        if isinstance(files, (bytes, dict)) or not isinstance(files, Iterable):
            raise InvalidTypeError(f"files must be a path or an iterable of paths, got {files!r}")
        files = list(files)
        if not files:
            return np.empty(0, dtype=np.int64)
        exact, prefixes = [], []
        for f in files:
            (prefixes if check_path(f).endswith("/") else exact).append(f)
        clauses = []
        if exact:
            clauses.append("f.path IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(exact))
        for prefix in prefixes:
            clauses.append("(f.path >= ? AND f.path < ?)")
            params += [prefix, prefix[:-1] + "0"]  # '0' sorts right after '/'
        where.append("(" + " OR ".join(clauses) + ")")
    if ids is not None:
        if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Iterable):
            raise InvalidTypeError("ids must be an iterable of node ids")
        where.append("e.node_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([check_node_id(i) for i in ids]))
    sql = ("SELECT e.slot FROM embeddings AS e JOIN nodes AS n ON n.id = e.node_id"
           " LEFT JOIN files AS f ON f.id = n.file_id WHERE " + " AND ".join(where))
    return np.fromiter((r[0] for r in conn.execute(sql, params)), dtype=np.int64)


def exact_scores(metric: str, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(q, m) exact scores in float64 from the f32 rows."""
    q = queries.astype(np.float64)
    v = vectors.astype(np.float64)
    if metric == "l2":
        return (q * q).sum(1)[:, None] - 2 * q @ v.T + (v * v).sum(1)[None, :]
    dots = q @ v.T
    if metric == "dot":
        return dots
    qn = np.linalg.norm(q, axis=1)[:, None]
    vn = np.linalg.norm(v, axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dots / (qn * vn)
    return np.where((qn * vn) > 0, out, 0.0)


def scan_candidates(pool, queries: np.ndarray, norms: np.ndarray, k: int,
                    slots: np.ndarray | None, threads: int, simd_threshold: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scan ``pool`` under its read lock: per query its candidate slots (-1 for
    none), the distinct candidate slots, and the pool's copies of them (node ids,
    decoded rows) for checking against SQLite."""
    fetch = min(k, pool.capacity) * OVERFETCH[pool.dtype]
    if pool.dtype != "float32":
        fetch = max(fetch, k + MIN_EXTRA_CANDIDATES)
    fetch = max(1, min(fetch, pool.capacity))  # k may exceed the vectors: return them all
    scan_q = queries
    if pool.normalized:
        scan_q = (queries.astype(np.float64) / norms[:, None]).astype(np.float32)
    with pool.reading():
        allows = None if slots is None else pool.slot_bitmaps(slots)
        cand, cand_ids, _approx = pool.scan_slots(np.ascontiguousarray(scan_q, np.float32), fetch,
                                                  allows, threads, simd_threshold)
        live = cand_ids != 0
        cand = np.where(live, cand, -1)
        unique = np.unique(cand[live])
        pool_ids, pool_rows = pool.read_slots(unique)
    return cand, unique, pool_ids, pool_rows


def _candidates(conn: apsw.Connection, embeddings: Embeddings, space: Space, queries: np.ndarray,
                norms: np.ndarray, k: int, slots: np.ndarray | None, threads: int,
                simd_threshold: int) -> tuple[np.ndarray, SlotRows | None, list[int]]:
    """Scan the pool: per query its candidate slots, the SQLite rows of all of
    them (None when there are none) and the slots whose pool copy disagrees
    with SQLite."""
    pool = embeddings.pool(conn, space)
    cand, unique, pool_ids, pool_rows = scan_candidates(pool, queries, norms, k, slots,
                                                        threads, simd_threshold)
    if pool.damaged:  # the live count disagreed with the ids: rebuild, scan again
        return cand, None, [-1]
    if not len(unique):
        return cand, None, []
    found, bad = embeddings.candidate_rows(conn, space, pool, unique, pool_ids, pool_rows)
    return cand, found, bad


def rescore(metric: str, queries: np.ndarray, k: int, cand: np.ndarray, found: SlotRows,
            skip: set) -> list[list[tuple[int, float]]]:
    """Per query, its best ``k`` candidates by exact score from their SQLite rows
    ``found``, ties by node id; slots in ``skip`` are left out."""
    keep = ~np.isin(found.slots, np.fromiter(skip, np.int64, len(skip)))
    found_slots, found_ids, vectors = found.slots[keep], found.ids[keep], found.vectors[keep]
    if not len(found_slots):
        return [[] for _ in range(queries.shape[0])]
    lower_is_better = metric == "l2"
    results = []
    for qi in range(queries.shape[0]):
        # Each query is rescored against its own candidates only; -1 marks none.
        picked = cand[qi][cand[qi] >= 0]
        at = np.minimum(np.searchsorted(found_slots, picked), len(found_slots) - 1)
        at = at[found_slots[at] == picked]
        if not len(at):
            results.append([])
            continue
        ids = found_ids[at]
        scores = exact_scores(metric, queries[qi:qi + 1], vectors[at])[0]
        order = np.lexsort((ids, scores if lower_is_better else -scores))[:k]
        results.append(list(zip(ids[order].tolist(), scores[order].tolist())))
    return results


def run_search(conn: apsw.Connection, embeddings: Embeddings, load_nodes, query: Any, k: int,
               space_name: str | None, kinds, files, ids, threads: int,
               simd_threshold: int) -> tuple[Space, list[list[tuple[int, float]]]]:
    """``(space, per query [(node id, exact score)]...)`` best first."""
    k = check_k(k)
    space = embeddings.space(conn, space_name)
    queries = check_vectors(query, space.dim, "query")
    norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    if space.metric == "cosine" and not np.all(norms > 0):
        raise InvalidArgumentError("a query vector is all zeros; cosine similarity is undefined")
    slots = filter_slots(conn, space, kinds, files, ids)
    if slots is not None and len(slots) == 0:
        return space, [[] for _ in range(queries.shape[0])]
    for attempt in range(VERIFY_ATTEMPTS):
        cand, found, bad = _candidates(conn, embeddings, space, queries, norms, k, slots,
                                       threads, simd_threshold)
        if not bad or attempt == VERIFY_ATTEMPTS - 1:
            break
        # Pool rows that disagree with SQLite: damage (rebuild, then scan again)
        # or a commit that landed between the scan and the read (scan again).
        if bad != [-1]:
            embeddings.confirm_damage(conn, space, bad)
    if found is None:
        return space, [[] for _ in range(queries.shape[0])]
    # Slots still in ``bad`` are left only when commits kept racing the scan: skipped.
    return space, rescore(space.metric, queries, k, cand, found, set(bad))


# Edges followed from each hit when building context, and how they are described.
CONTEXT_EDGES = (("out", int(EdgeKind.CALLS), "called by"), ("in", int(EdgeKind.CALLS), "calls"),
                 ("in", int(EdgeKind.CONTAINS), "contains"))
HOP_DECAY = 0.5
MAX_ITEM_CHARS = 4000


def node_text(node: Node, limit: int = MAX_ITEM_CHARS) -> str:
    """The text a node contributes to context: its source, else signature and docstring."""
    meta = node.metadata if isinstance(node.metadata, dict) else {}
    text = meta.get("source")
    if not text:
        head = f"{node.kind.label} {node.qualname}{meta.get('signature', '')}"
        doc = meta.get("docstring")
        text = head + (f"\n    \"\"\"{doc}\"\"\"" if doc else "")
    if len(text) > limit:
        text = text[:limit] + "\n# ... (truncated)"
    return text


def build_context(conn: apsw.Connection, load_nodes, hits: list[tuple[int, float]], hops: int,
                  budget: int, query: str | None) -> Context:
    """Hits expanded through callers, callees and containers, ranked, cut to ``budget`` chars.

    Ranking uses the hits' rank, not their raw scores (which mean different things
    per metric and may be negative): the i-th hit has relevance 1/(i+1), and a
    neighbour HOP_DECAY times the relevance of what led to it, per hop.
    """
    best: dict[int, tuple[float, str]] = {}
    frontier: list[tuple[int, float]] = []
    for rank, (node_id, _score) in enumerate(hits):
        relevance = 1.0 / (rank + 1)
        best[node_id] = (relevance, "match")
        frontier.append((node_id, relevance))
    for hop in range(1, hops + 1):
        nxt = []
        by_source = dict(frontier)
        for direction, kind, label in CONTEXT_EDGES:
            for frm, to in graph.expand_level(conn, list(by_source), direction, [kind]):
                relevance = by_source[frm] * HOP_DECAY
                if to not in best or best[to][0] < relevance:
                    best[to] = (relevance, f"{label} a match" if hop == 1 else f"{hop} hops from a match")
                    nxt.append((to, relevance))
        frontier = nxt
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
    nodes = {n.id: n for n in load_nodes([i for i, _ in ranked]) if n is not None}
    items, used = [], 0
    for node_id, (relevance, reason) in ranked:
        node = nodes.get(node_id)
        if node is None or node.kind == NodeKind.MODULE and reason != "match":
            continue  # a whole module is too coarse to be context for a neighbour
        text = node_text(node)
        if used + len(text) > budget:
            continue
        items.append(ContextItem(node, relevance, reason, text))
        used += len(text)
    return Context(query, tuple(items), budget, used)

"""Embedding an index: one vector per symbol, computed by an embedder, stored in a space.

Only symbols with meaning of their own are embedded (modules, classes,
functions, methods). Re-runs embed the symbols of the files that changed and
any symbol that has no vector yet, so an incremental index stays complete.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable

import attrs

from ..embedders import Embedder, node_text
from ..kinds import NodeKind
from ..store import Store

EMBEDDED_KINDS = (NodeKind.MODULE, NodeKind.CLASS, NodeKind.FUNCTION, NodeKind.METHOD)


@attrs.frozen
class EmbedReport:
    space: str
    embedded: int
    seconds: float

    def as_dict(self) -> dict:
        return attrs.asdict(self)


def embed_index(store: Store, embedder: Embedder, changed_files: Iterable[str] = (),
                progress: Callable[[str, int, int], None] | None = None,
                batch: int | None = None) -> EmbedReport:
    """Embed every symbol that needs it; an embedder failure propagates (no fallback)."""
    started = time.perf_counter()
    batch = batch or max(256, store.config.cpu_optimization.batch_size * 10)
    conn, _ = store._read_conn()
    kinds = json.dumps([int(k) for k in EMBEDDED_KINDS])
    space = conn.execute("SELECT id FROM spaces WHERE name = ?", (embedder.name,)).fetchone()
    space_id = space[0] if space else -1
    ids = [r[0] for r in conn.execute(
        "SELECT n.id FROM nodes AS n WHERE n.kind IN (SELECT value FROM json_each(?))"
        " AND NOT EXISTS (SELECT 1 FROM embeddings AS e WHERE e.space_id = ? AND e.node_id = n.id)"
        " ORDER BY n.id", (kinds, space_id))]
    changed = list(changed_files)
    if changed and space is not None:
        ids += [r[0] for r in conn.execute(
            "SELECT n.id FROM nodes AS n JOIN files AS f ON f.id = n.file_id"
            " WHERE f.path IN (SELECT value FROM json_each(?))"
            " AND n.kind IN (SELECT value FROM json_each(?))", (json.dumps(changed), kinds))]
        ids = sorted(set(ids))
    done = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        nodes = [n for n in store.get_nodes(chunk) if n is not None]
        texts = [node_text(n.kind.label, n.qualname, n.metadata) for n in nodes]
        vectors = embedder.embed(texts)
        with store.transaction():
            store.add_embeddings([n.id for n in nodes], vectors, space=embedder.name)
        done += len(nodes)
        if progress:
            progress("embed", done, len(ids))
    return EmbedReport(embedder.name, done, time.perf_counter() - started)

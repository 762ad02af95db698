"""Embedders: text -> vectors. A built-in hashing embedder for code, and an adapter.

An embedder has a ``name``, a ``dim`` and ``embed(texts) -> float32 (n, dim)``.
The space a store keeps vectors in is named after the embedder, so a text query
against a space made by a built-in embedder is embedded the same way.
If an embedder fails, the error propagates: nothing ever falls back to another
embedder or to random vectors.
"""

from __future__ import annotations

import keyword
import re
import zlib
from typing import Any, Protocol, Sequence

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError, NotFoundError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
# camelCase / PascalCase / ACRONYMWord boundaries inside one identifier.
_SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


# Words too common in code and prose to tell symbols apart.
STOPWORDS = frozenset(keyword.kwlist) | frozenset("""
a an and are as at be by for from has have in is it its of on or that the this to was
were will with self cls none true false return def class import if else not args kwargs
""".split())


def tokens(text: str) -> list[str]:
    """Identifier sub-tokens, lower-cased: ``parseJSONValue_fast`` -> parse, json, value, fast,
    plus each whole identifier (``parsejsonvalue_fast``) so exact names weigh more.
    Stop words and one-character tokens are dropped."""
    out = []
    for ident in _IDENTIFIER.findall(text):
        out.extend(_identifier_tokens(ident))
    return out


def _identifier_tokens(ident: str) -> list[str]:
    parts = [p.lower() for piece in ident.split("_") if piece for p in _SUBWORD.findall(piece)]
    out = [p for p in parts if len(p) > 1 and p not in STOPWORDS]
    if len(parts) > 1:
        out.append(ident.lower())
    return out


PROBES = 2
# Entries of an embedder's identifier memo; beyond this, new identifiers are
# computed each time (memory stays bounded on huge vocabularies).
MEMO_ENTRIES = 1_000_000


class HashingEmbedder:
    """Signed feature hashing of identifier sub-tokens, L2-normalised.

    Deterministic across processes and machines (CRC-32, not Python's salted
    hash), needs no download, and is fast enough to embed a whole index: the
    hashed columns of each distinct identifier are computed once and memoised,
    so embedding a text costs one regex pass and a list extend per identifier.
    """

    def __init__(self, dim: int = 384):
        if type(dim) is not int or not 8 <= dim <= 16384:
            raise InvalidArgumentError(f"hashing embedder dim must be an int in 8..16384, got {dim!r}")
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._memo: dict[str, tuple[int, ...]] = {}

    def _columns(self, ident: str) -> tuple[int, ...]:
        """The signed columns one identifier adds to: PROBES per token (with two, a
        collision between two tokens in one column no longer makes them look alike),
        each as ``col`` for +1 or ``dim + col`` for -1."""
        cols = []
        dim = self.dim
        for token in _identifier_tokens(ident):
            h = zlib.crc32(token.encode("utf-8", "surrogatepass"))
            for p in range(PROBES):
                hp = (h * (2 * p + 1) + p * 0x9E3779B9) & 0xFFFFFFFF
                cols.append(hp % dim + (0 if (hp >> 31) & 1 else dim))
        hit = tuple(cols)
        if len(self._memo) < MEMO_ENTRIES:
            self._memo[ident] = hit
        return hit

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidTypeError("embed takes a sequence of str")
        memo, columns, findall = self._memo, self._columns, _IDENTIFIER.findall
        cells: list[int] = []
        lengths: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"texts[{i}] is {type(text).__name__}, not str")
            before = len(cells)
            for ident in findall(text):
                hit = memo.get(ident)
                cells.extend(columns(ident) if hit is None else hit)
            lengths.append(len(cells) - before)
        n, dim = len(texts), self.dim
        # Counts of +1 and -1 per column, then their difference: the same integers
        # as summing signed weights, so vectors are identical to a per-token sum.
        rows = np.repeat(np.arange(n, dtype=np.int64) * (2 * dim), lengths)
        counts = np.bincount(rows + np.array(cells, dtype=np.int64), minlength=n * 2 * dim)
        counts = counts.reshape(n, 2, dim)
        out = (counts[:, 0, :] - counts[:, 1, :]).astype(np.float32)
        # Sub-linear term frequency keeps one repeated name from dominating.
        out = np.sign(out) * np.log1p(np.abs(out))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class SentenceTransformerEmbedder:
    """Adapter for a sentence-transformers-style model object (``encode``)."""

    def __init__(self, model: Any, name: str | None = None):
        if not hasattr(model, "encode"):
            raise InvalidTypeError("the model must have an encode(texts) method")
        self._model = model
        dim = getattr(model, "get_sentence_embedding_dimension", lambda: None)()
        if not isinstance(dim, int) or dim < 1:
            dim = int(np.asarray(model.encode(["dimension probe"])).shape[-1])
        self.dim = dim
        self.name = name or str(getattr(model, "model_name", None) or type(model).__name__)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidTypeError("embed takes a sequence of str")
        vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise InvalidArgumentError(
                f"model returned shape {vectors.shape}, expected {(len(texts), self.dim)}")
        return vectors


BUILT_IN = {"hashing": HashingEmbedder}


def get_embedder(spec: str) -> Embedder:
    """A built-in embedder by name: ``hashing`` or ``hashing-<dim>``."""
    if not isinstance(spec, str):
        raise InvalidTypeError(f"embedder name must be a str, got {type(spec).__name__}")
    name, _, dim = spec.partition("-")
    if name not in BUILT_IN:
        raise NotFoundError(f"unknown embedder {spec!r}; built in: {', '.join(BUILT_IN)}")
    if dim:
        if not dim.isdigit():
            raise InvalidArgumentError(f"embedder dimension must be a number: {spec!r}")
        return BUILT_IN[name](int(dim))
    return BUILT_IN[name]()


def embedder_for_space(space_name: str, dim: int) -> Embedder:
    """The built-in embedder that made ``space_name``; text queries need one."""
    name, _, _ = space_name.partition("-")
    if name not in BUILT_IN:
        raise InvalidArgumentError(
            f"space {space_name!r} was made by an external model: search it with a vector")
    embedder = get_embedder(space_name)
    if embedder.dim != dim:
        raise InvalidArgumentError(f"space {space_name!r} has dim {dim}, its embedder {embedder.dim}")
    return embedder


# How much of a symbol's docstring and code goes into its text: the names and
# the start of the code say what a symbol is; its whole body mostly adds noise.
DOC_CHARS, SOURCE_CHARS, NAME_WEIGHT = 400, 600, 3


def node_text(kind: str, qualname: str, metadata: Any) -> str:
    """What a symbol is embedded from: its names (weighted), signature, docstring, code."""
    meta = metadata if isinstance(metadata, dict) else {}
    names = " ".join(qualname.split(".")[-2:])
    parts = [kind, qualname.replace(".", " "), *([names] * NAME_WEIGHT),
             meta.get("signature", ""), meta.get("docstring", "")[:DOC_CHARS]]
    source = meta.get("source")
    if source:
        parts.append(source[:SOURCE_CHARS])
    return "\n".join(p for p in parts if p)

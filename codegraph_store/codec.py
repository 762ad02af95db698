"""Metadata codec: JSON-compatible values to compact bytes and back, never pickle.

A record is one tag byte followed by the payload:

``J`` + UTF-8 JSON
    values smaller than ``compression_threshold`` bytes of JSON.
``Z`` + zstd frame of UTF-8 JSON
    larger values; the frame always carries its content size.

Decoding is bounded: a frame that claims (or expands to) more than
:data:`MAX_RECORD_BYTES` is refused with :class:`CorruptStoreError` before any
memory is allocated for it, so a crafted file cannot be a zip bomb.

A zstd dictionary trained on a store's own small records was tried for the
records under the threshold; ``bench/codec.py`` measures it (see RESULTS.md).
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import zstandard

from .errors import CorruptStoreError, InvalidArgumentError, InvalidTypeError

TAG_JSON = 0x4A  # 'J'
TAG_ZSTD = 0x5A  # 'Z'
MAX_RECORD_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 100
ZSTD_LEVEL = 3

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                            check_circular=False)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # encode() never writes NaN or Infinity


_ascii_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"),
                                  check_circular=False)
_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per thread is cheap and reused.
    c = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def check_json_value(value: Any, what: str = "metadata", _depth: int = 0) -> None:
    """Raise unless ``value`` survives a JSON round trip unchanged.

    Only dict (str keys), list, str, int, finite float, bool and None pass;
    tuples, sets, bytes and non-str keys are refused rather than silently changed.
    """
    if _depth > MAX_DEPTH:
        raise InvalidArgumentError(f"{what} nests deeper than {MAX_DEPTH} levels")
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return
    if t is float:
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{what} contains a non-finite float ({value})")
        return
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidTypeError(f"{what} has a non-str dict key {k!r}")
            check_json_value(v, what, _depth + 1)
        return
    if t is list:
        for v in value:
            check_json_value(v, what, _depth + 1)
        return
    raise InvalidTypeError(f"{what} must be JSON-compatible; got {t.__name__}")


def encode(value: Any, compression_threshold: int | None = 1024) -> bytes | None:
    """Encode a JSON-compatible value; ``None`` encodes to ``None`` (SQL NULL).

    ``compression_threshold=None`` switches compression off (the rollback switch).
    """
    if value is None:
        return None
    check_json_value(value)
    try:
        raw = _encoder.encode(value).encode("utf-8", "strict")
    except UnicodeEncodeError:
        # A lone surrogate (Python source may hold one: "\udcff" in a docstring)
        # has no UTF-8 form; \u-escaped JSON keeps it exactly.
        raw = _ascii_encoder.encode(value).encode("ascii")
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidArgumentError(f"metadata is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}")
    if compression_threshold is not None and len(raw) >= compression_threshold:
        frame = _compressor().compress(raw)
        if len(frame) + 1 < len(raw):
            return b"Z" + frame
    return b"J" + raw


def encode_text_trusted(raw: bytes, compression_threshold: int | None = 1024) -> bytes:
    """Encode JSON bytes produced by this package (the indexer) without re-checking them."""
    if compression_threshold is not None and len(raw) >= compression_threshold:
        frame = _compressor().compress(raw)
        if len(frame) + 1 < len(raw):
            return b"Z" + frame
    return b"J" + raw


def decode(blob: bytes | None) -> Any:
    """Decode a record written by :func:`encode`; damaged or oversized input raises."""
    if blob is None:
        return None
    if not isinstance(blob, (bytes, memoryview, bytearray)) or len(blob) == 0:
        raise CorruptStoreError(f"metadata record has type {type(blob).__name__} or is empty")
    tag = blob[0]
    if tag == TAG_JSON:
        raw = bytes(blob[1:])
    elif tag == TAG_ZSTD:
        frame = bytes(blob[1:])
        try:
            size = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as e:
            raise CorruptStoreError(f"metadata record is not a zstd frame: {e}") from None
        if size < 0 or size > MAX_RECORD_BYTES:
            # -1 (unknown size) never comes from encode(); refusing it keeps the bound exact.
            raise CorruptStoreError(f"metadata frame declares {size} bytes (limit {MAX_RECORD_BYTES})")
        try:
            raw = _decompressor().decompress(frame, max_output_size=size)
        except zstandard.ZstdError as e:
            raise CorruptStoreError(f"metadata frame does not decompress: {e}") from None
        if len(raw) != size:
            raise CorruptStoreError("metadata frame size does not match its header")
    else:
        raise CorruptStoreError(f"metadata record has unknown tag byte 0x{tag:02x}")
    try:
        return _decoder.decode(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError) as e:
        raise CorruptStoreError(f"metadata record is not valid JSON: {e}") from None

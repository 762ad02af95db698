"""Fuzzing: the metadata codec, the pool header parser and the query API's
argument handling. Any input gives a correct result or a typed error from
codegraph_store.errors. The inputs that once found a bug, or sit on an edge,
are kept under corpus/ and re-run on every test run."""

from __future__ import annotations

import json
import math
import pathlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from codegraph_store import Edge, EdgeKind, Node, NodeKind, Store, codec, pool
from codegraph_store.errors import CodegraphError, CorruptStoreError

CORPUS = pathlib.Path(__file__).parent / "corpus"

pytestmark = pytest.mark.scenario(
    "fuzz corpus replay", "every saved input (past bugs, edges) gives a correct result or a typed error")


def fuzz_settings(stress: bool, examples: int = 150):
    return settings(max_examples=examples * 30 if stress else examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def corpus(kind: str) -> list[pathlib.Path]:
    files = sorted((CORPUS / kind).iterdir())
    assert files, f"corpus/{kind} is empty"
    return files


# ------------------------------------------------------------------ codec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)


def check_decode(blob: bytes) -> None:
    """decode() returns a JSON value that encodes back to a record decoding the same,
    or raises CorruptStoreError; nothing else."""
    try:
        value = codec.decode(blob)
    except CorruptStoreError:
        return
    codec.check_json_value(value)
    assert codec.decode(codec.encode(value)) == value if value is not None else True


def test_codec_round_trips(stress, tally):
    t = tally("fuzz: metadata codec", "encode/decode round-trips; any bytes decode to a valid value or CorruptStoreError")

    @fuzz_settings(stress)
    @given(json_values, st.sampled_from([None, 0, 1, 64, 1024]))
    def run(value, threshold):
        t.iterations += 1
        blob = codec.encode(value, threshold)
        assert codec.decode(blob) == value
    run()


def test_codec_decodes_arbitrary_bytes_or_says_corrupt(stress, tally):
    t = tally("fuzz: metadata codec", "encode/decode round-trips; any bytes decode to a valid value or CorruptStoreError")
    frame = b"Z" + zstandard_frame(b'{"a":[1,2,3],"b":"' + b"x" * 200 + b'"}')

    @fuzz_settings(stress, 300)
    @given(st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: b"J" + b),
        st.binary(max_size=300).map(lambda b: b"Z\x28\xb5\x2f\xfd" + b),
        # valid records with a few bytes changed
        st.tuples(st.just(frame), st.lists(st.tuples(st.integers(0, len(frame) - 1),
                                                     st.integers(0, 255)), max_size=4))
        .map(lambda t: _mutate(*t))))
    def run(blob):
        t.iterations += 1
        check_decode(blob)
    run()


def zstandard_frame(raw: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor(write_content_size=True).compress(raw)


def _mutate(blob: bytes, changes) -> bytes:
    out = bytearray(blob)
    for at, value in changes:
        out[at] = value
    return bytes(out)


def test_metadata_with_a_lone_surrogate_round_trips_and_nan_is_corrupt(tmp_path):
    """Found by the corpus: encode() raised a bare UnicodeEncodeError on a lone
    surrogate, and decode() accepted NaN, a value encode() refuses. Python source
    can hold lone surrogates ("\\udcff" in a docstring), so they are stored as
    JSON escapes and come back exactly, through the API and the codec alike."""
    with Store.open(tmp_path / "s.cgdb") as s:
        s.add_nodes([Node.new("function", "f", file="m.py", start_line=1,
                              metadata={"a": "\ud800", "b": "x\udcff" * 400})])
        (f,) = s.find("f")
        assert s.get_node(f.id).metadata == {"a": "\ud800", "b": "x\udcff" * 400}
    assert codec.encode("\ud800") == b'J"\\ud800"'
    assert codec.decode(b'J"\\ud800"') == "\ud800"
    for record in (b"J[NaN]", b'J{"a":-Infinity}'):
        with pytest.raises(CorruptStoreError):
            codec.decode(record)
    assert codec.decode(b'J"\\ud83d\\ude00"') == "\U0001f600"  # an escaped pair is fine


@pytest.mark.parametrize("path", corpus("codec"), ids=lambda p: p.name)
def test_codec_corpus(path):
    check_decode(bytes.fromhex(path.read_text().strip()))


# ------------------------------------------------------------ pool header

def valid_header(**fields) -> tuple[bytes, int]:
    values = dict(dtype="int8", dim=16, caps=[64, 128], count=10, applied_seq=5,
                  uuid=b"u" * 16, space_id=1)
    values.update(fields)
    stride = pool.stride_for(values["dim"], values["dtype"])
    h = pool.Header(values["dtype"], values["dim"], stride, 1, values["caps"], values["count"],
                    values["applied_seq"], values["uuid"], values["space_id"])
    size = pool.HEADER_SIZE + sum(pool.segment_bytes(c, stride) for c in values["caps"])
    return h.pack().ljust(pool.HEADER_SIZE, b"\0"), size


def check_header(raw: bytes, size: int) -> None:
    """parse() either refuses (PoolDamaged) or returns a header whose every size
    is consistent with the file: nothing read from it can go out of bounds."""
    try:
        h = pool.Header.parse(raw, size)
    except pool.PoolDamaged:
        return
    assert h.stride == pool.stride_for(h.dim, h.dtype) and 1 <= h.dim <= 16384
    assert 1 <= len(h.caps) <= pool.MAX_SEGMENTS and all(c > 0 for c in h.caps)
    assert pool.HEADER_SIZE + sum(pool.segment_bytes(c, h.stride) for c in h.caps) == size
    assert 0 <= h.count <= sum(h.caps)


def _fix_crc(raw: bytes) -> bytes:
    at = pool._CRC_AT
    return raw[:at] + struct.pack("<I", zlib.crc32(raw[:at])) + raw[at + 4:]


def test_pool_header_parser_refuses_every_lie(stress, tally):
    t = tally("fuzz: pool header parser", "a lying header is PoolDamaged; an accepted one is consistent with the file size")
    raw, size = valid_header()

    @fuzz_settings(stress, 300)
    @given(st.lists(st.tuples(st.integers(0, pool._CRC_AT - 1), st.integers(0, 255)), min_size=1,
                    max_size=6),
           st.booleans(), st.integers(-1, 1 << 41))
    def run(changes, fix_crc, size_delta):
        t.iterations += 1
        bad = _mutate(raw, changes)
        if fix_crc:
            bad = _fix_crc(bad)
        check_header(bad, size if size_delta < 0 else size_delta)
    run()

    @fuzz_settings(stress)
    @given(st.binary(min_size=0, max_size=pool.HEADER_SIZE), st.integers(0, 1 << 41))
    def run_random(raw_bytes, file_size):
        t.iterations += 1
        check_header(_fix_crc(raw_bytes.ljust(pool.HEADER_SIZE, b"\0")), file_size)
    run_random()


@pytest.mark.parametrize("path", corpus("pool_header"), ids=lambda p: p.name)
def test_pool_header_corpus(path):
    case = json.loads(path.read_text())
    raw, size = valid_header(**case.get("fields", {}))
    raw = _mutate(raw, case.get("changes", []))
    if case.get("fix_crc", True):
        raw = _fix_crc(raw)
    check_header(raw, case.get("file_size", size))
    if "expect" in case:
        with pytest.raises(pool.PoolDamaged, match=case["expect"]):
            pool.Header.parse(raw, case.get("file_size", size))


# -------------------------------------------------------------- query API

NODES = [Node.new("module", "m", "m", file="m.py", start_line=1, end_line=30),
         Node.new("class", "C", "m.C", file="m.py", start_line=2, end_line=10),
         Node.new("function", "f", "m.f", file="m.py", start_line=12, end_line=14),
         Node.new("function", "g", "m.g", file="m.py", start_line=16, end_line=18),
         Node.new("function", "h", "p.h", file="p/q.py", start_line=1, end_line=3)]
EDGES = [Edge(NODES[0].id, EdgeKind.CONTAINS, NODES[1].id), Edge(NODES[0].id, EdgeKind.CONTAINS, NODES[2].id),
         Edge(NODES[2].id, EdgeKind.CALLS, NODES[3].id), Edge(NODES[3].id, EdgeKind.CALLS, NODES[4].id)]
BY_ID = {n.id: n for n in NODES}
VECTORS = np.random.default_rng(3).standard_normal((len(NODES), 4)).astype(np.float32)


@pytest.fixture(scope="module")
def query_store(tmp_path_factory):
    s = Store.open(tmp_path_factory.mktemp("fuzz") / "q.cgdb")
    s.add_nodes(NODES)
    s.add_edges(EDGES)
    s.add_embeddings([n.id for n in NODES], VECTORS, space="s")
    yield s
    s.close()


scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([n.id for n in NODES])
           | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
           | st.sampled_from(["m", "f", "m.py", "p/", "calls", "function", "out", "in", "both", "s"])
           | st.sampled_from(list(EdgeKind) + list(NodeKind)))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                        | st.frozensets(st.integers(-3, 3), max_size=3), max_leaves=8)
def _array(shape, dtype, fill):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.full(shape, fill).astype(dtype)


arrays = st.builds(_array,
                   st.sampled_from([(4,), (2, 4), (3,), (0,), (1, 0), (2, 2, 4), (4, 1)]),
                   st.sampled_from(["f4", "f8", "i4", "u1", "f2", "bool", "c8", "O"]),
                   st.sampled_from([0.5, -1.0, 0.0, 1e39, float("nan")]))

CALLS = ["get_node", "get_nodes", "find", "neighbors", "traverse", "search"]


def call_api(store: Store, name: str, args: list, kwargs: dict) -> None:
    """Call ``name`` and check the answer against the known graph; a typed error is fine."""
    try:
        result = getattr(store, name)(*args, **kwargs)
    except CodegraphError:
        return
    if name == "get_node":
        assert result == BY_ID.get(args[0])
    elif name == "get_nodes":
        assert result == [BY_ID.get(i) for i in args[0]]
    elif name in ("find", "neighbors"):
        assert all(BY_ID[n.id] == n for n in result)
        assert result == sorted(result, key=lambda n: (n.qualname, n.id) if name == "find" else n.id)
        if name == "find" and set(kwargs) == {"name"}:
            assert result == sorted((n for n in NODES if n.name == kwargs["name"]),
                                    key=lambda n: (n.qualname, n.id))
        if name == "neighbors" and len(args) == 1 and not kwargs:
            assert [n.id for n in result] == sorted(e.dst for e in EDGES if e.src == args[0])
    elif name == "traverse":
        assert all(BY_ID[n.id] == n and type(d) is int and d >= 1 for n, d in result)
    else:  # search
        rows = result if result and isinstance(result[0], list) else [result]
        k = kwargs.get("k", 10)
        for hits in rows:
            assert len(hits) <= min(k, len(NODES))
            assert all(BY_ID[h.node.id] == h.node and math.isfinite(h.score) for h in hits)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)


@st.composite
def api_calls(draw):
    name = draw(st.sampled_from(CALLS))
    first = draw(arrays | anything) if name == "search" else draw(anything)
    keys = {"get_node": [], "get_nodes": [], "find": ["name", "qualname", "kind", "file", "prefix", "limit"],
            "neighbors": ["direction", "kinds"], "traverse": ["direction", "kinds", "depth"],
            "search": ["k", "space", "kinds", "files", "ids"]}[name]
    kwargs = draw(st.dictionaries(st.sampled_from(keys), anything, max_size=3)) if keys else {}
    if name == "find":
        return name, [], dict(kwargs, **({"name": first} if "name" not in kwargs else {}))
    return name, [first], kwargs


def test_query_api_gives_correct_answers_or_typed_errors(query_store, stress, tally):
    t = tally("fuzz: query API arguments", "the right answer for the known graph or a typed error")

    @fuzz_settings(stress, 300)
    @given(api_calls())
    def run(call):
        t.iterations += 1
        call_api(query_store, *call)
    run()


def _decode_value(v):
    """Corpus values are JSON; tagged objects stand for what JSON lacks."""
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    if isinstance(v, dict):
        if "$bytes" in v:
            return bytes.fromhex(v["$bytes"])
        if "$float" in v:
            return float(v["$float"])
        if "$tuple" in v:
            return tuple(_decode_value(x) for x in v["$tuple"])
        if "$array" in v:
            dtype, shape, fill = v["$array"]
            return np.full(shape, _decode_value(fill)).astype(dtype)
        if "$node" in v:
            return NODES[v["$node"]].id
        return {k: _decode_value(x) for k, x in v.items()}
    return v


@pytest.mark.parametrize("path", corpus("query"), ids=lambda p: p.name)
def test_query_corpus(query_store, path):
    case = json.loads(path.read_text())
    call_api(query_store, case["call"], _decode_value(case.get("args", [])),
             _decode_value(case.get("kwargs", {})))

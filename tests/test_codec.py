"""Metadata codec: exact round trips, refusal of non-JSON values, bounded decoding."""

import math

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from codegraph_store import codec
from codegraph_store.errors import CorruptStoreError, InvalidArgumentError, InvalidTypeError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@given(json_values, st.sampled_from([None, 0, 16, 1024]))
@settings(max_examples=300)
def test_round_trip_is_exact(value, threshold):
    blob = codec.encode(value, threshold)
    assert codec.decode(blob) == value
    if value is None:
        assert blob is None


def test_small_values_stay_plain_json():
    assert codec.encode({"a": 1}) == b'J{"a":1}'


def test_large_values_are_compressed_above_threshold():
    value = {"source": "x = 1\n" * 500}
    blob = codec.encode(value, 1024)
    assert blob[:1] == b"Z"
    assert len(blob) < 200
    assert codec.decode(blob) == value
    assert codec.encode(value, None)[:1] == b"J"  # compression switched off


@pytest.mark.parametrize("value, error", [
    ({1, 2}, InvalidTypeError),
    (b"bytes", InvalidTypeError),
    ((1, 2), InvalidTypeError),
    ({1: "int key"}, InvalidTypeError),
    ({"x": math.nan}, InvalidArgumentError),
    ([math.inf], InvalidArgumentError),
    (object(), InvalidTypeError),
])
def test_non_json_values_are_refused(value, error):
    with pytest.raises(error):
        codec.encode(value)


def test_deep_nesting_is_refused():
    value: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(InvalidArgumentError):
        codec.encode(value)


def test_zip_bomb_with_declared_size_is_refused_before_allocating():
    frame = zstandard.ZstdCompressor().compress(b" " * (codec.MAX_RECORD_BYTES + 1))
    with pytest.raises(CorruptStoreError, match="declares"):
        codec.decode(b"Z" + frame)


def test_frame_without_declared_size_is_refused():
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"[1]")
    with pytest.raises(CorruptStoreError):
        codec.decode(b"Z" + frame)


def test_frame_that_lies_about_its_size_is_refused():
    frame = bytearray(zstandard.ZstdCompressor().compress(b'"' + b"a" * 5000 + b'"'))
    # Frame header: magic (4), descriptor (1), content size follows; make it claim less.
    good = codec.decode(b"Z" + bytes(frame))
    assert good == "a" * 5000
    frame[5] = 0x10
    with pytest.raises(CorruptStoreError):
        codec.decode(b"Z" + bytes(frame))


@pytest.mark.parametrize("blob", [b"", b"X{}", b"J{not json", b"J\xff\xfe", b"Z", b"Znot a frame"])
def test_damaged_records_raise_corrupt_store_error(blob):
    with pytest.raises(CorruptStoreError):
        codec.decode(blob)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_corrupt_store_error(blob):
    try:
        codec.decode(blob)
    except CorruptStoreError:
        pass

"""Embedders: identifier tokens, the built-in hashing embedder (exact values,
determinism across processes), the sentence-transformers adapter with a fake model,
and get_embedder / embedder_for_space."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from codegraph_store import embedders
from codegraph_store.embedders import (HashingEmbedder, SentenceTransformerEmbedder, embedder_for_space,
                                       get_embedder, tokens)
from codegraph_store.errors import InvalidArgumentError, InvalidTypeError, NotFoundError

# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("text, expected", [
    # snake_case: the parts, then the whole identifier
    ("snake_case_name", ["snake", "case", "name", "snake_case_name"]),
    ("MAX_SIZE", ["max", "size", "max_size"]),
    ("__init__", ["init"]),
    ("_private", ["private"]),
    # camelCase / PascalCase
    ("camelCaseName", ["camel", "case", "name", "camelcasename"]),
    ("PascalCase", ["pascal", "case", "pascalcase"]),
    # ACRONYMWord and trailing acronyms
    ("HTTPServer", ["http", "server", "httpserver"]),
    ("ABCWord", ["abc", "word", "abcword"]),
    ("IOError", ["io", "error", "ioerror"]),
    ("getHTTP", ["get", "http", "gethttp"]),
    ("XMLHttpRequest", ["xml", "http", "request", "xmlhttprequest"]),
    ("parseJSONValue_fast", ["parse", "json", "value", "fast", "parsejsonvalue_fast"]),
    # digits
    ("sha256", ["sha", "256", "sha256"]),
    ("md5sum", ["md", "sum", "md5sum"]),  # one-character '5' is dropped
    ("utf8Decode", ["utf", "decode", "utf8decode"]),
    ("i18nSupport", ["18", "support", "i18nsupport"]),
    ("base64_encode", ["base", "64", "encode", "base64_encode"]),
    ("123abc", ["123", "abc"]),  # a number is its own token
    ("version 2024", ["version", "2024"]),
    # several identifiers, punctuation, stop words and one-character tokens
    ("foo.bar(baz)", ["foo", "bar", "baz"]),
    ("def is_valid(self, x):", ["valid", "is_valid"]),
    ("return the value of a", ["value"]),
    ("x = y + 1", []),
    ("", []),
    ("   \n\t", []),
    ("!!! ??? ...", []),
])
def test_tokens_split_identifiers(text, expected):
    assert tokens(text) == expected


def test_tokens_keep_repeats_in_order():
    assert tokens("load_file loadFile") == ["load", "file", "load_file", "load", "file", "loadfile"]


# --------------------------------------------------------------------------- hashing embedder


def expected_vector(text: str, dim: int) -> np.ndarray:
    """The documented scheme, restated: each token adds +-1 at two CRC-32 derived columns,
    counts are damped with sign * log1p(|c|), then the row is L2-normalised."""
    acc = np.zeros(dim, np.float64)
    for tok in tokens(text):
        h = zlib.crc32(tok.encode("utf-8"))
        for p in range(2):
            hp = (h * (2 * p + 1) + p * 0x9E3779B9) & 0xFFFFFFFF
            acc[hp % dim] += 1.0 if hp >> 31 else -1.0
    out = (np.sign(acc) * np.log1p(np.abs(acc))).astype(np.float32)
    norm = np.linalg.norm(out)
    return out / norm if norm > 0 else out


def test_hashing_embedder_golden_values():
    """Stored spaces named hashing-<dim> depend on these exact columns and signs."""
    e = HashingEmbedder(64)
    v = e.embed(["foo"])[0]
    assert np.nonzero(v)[0].tolist() == [28, 33]
    half = np.float32(1 / np.sqrt(np.float32(2)))
    assert v[28] == -half and v[33] == half
    texts = ["parse_json_value", "HTTPServer.handle_request", "sha256 checksum of a file",
             "def load(self): return json.load(f)"]
    for dim in (8, 64, 384):
        got = HashingEmbedder(dim).embed(texts)
        for row, text in zip(got, texts):
            np.testing.assert_allclose(row, expected_vector(text, dim), rtol=0, atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="abcXYZ_01 .(\u00e9", max_size=60), min_size=1, max_size=8))
def test_hashing_embedder_equals_the_scheme_cold_and_memoised(texts):
    """The memo of per-identifier columns and the batched counting change nothing."""
    e = HashingEmbedder(32)
    expected = np.array([expected_vector(t, 32) for t in texts])
    for _ in range(2):  # second pass: every identifier comes from the memo
        np.testing.assert_allclose(e.embed(texts), expected, rtol=0, atol=1e-7)


def test_hashing_embedder_shape_name_dtype():
    e = HashingEmbedder()
    assert (e.dim, e.name) == (384, "hashing-384")
    out = e.embed(["a b", "parse json", "render html"])
    assert out.shape == (3, 384) and out.dtype == np.float32
    small = HashingEmbedder(8)
    assert (small.dim, small.name) == (8, "hashing-8")
    assert small.embed(("tuple", "of", "texts")).shape == (3, 8)


def test_hashing_embedder_is_l2_normalised():
    e = HashingEmbedder(128)
    texts = ["parse_json_value", "x" * 5000, "loadFile " * 200, "a_b_c_d_e_f_g_h", "ab cd ef gh ij"]
    norms = np.linalg.norm(e.embed(texts).astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=0, atol=1e-6)


def test_hashing_embedder_similar_texts_score_higher():
    e = HashingEmbedder(384)
    a, b, c, d = e.embed(["parse_json_value", "parseJsonValue(text)", "render_html_page",
                          "json value parser"]).astype(np.float64)
    assert a @ b > 0.6
    assert a @ d > 0.2
    assert abs(a @ c) < 0.1
    assert a @ b > a @ d > a @ c


def test_hashing_embedder_repeats_are_damped_and_batches_equal_rows():
    e = HashingEmbedder(64)
    assert np.array_equal(e.embed(["foo"]), e.embed(["foo foo foo"]))  # one token: same direction
    texts = ["alpha_beta", "gamma", "", "alpha_beta gamma", "delta epsilon"]
    batch = e.embed(texts)
    for row, text in zip(batch, texts):
        assert np.array_equal(row, e.embed([text])[0])
    # A fresh instance (empty memo) gives the same numbers.
    assert np.array_equal(HashingEmbedder(64).embed(texts), batch)


@pytest.mark.parametrize("text", ["", "   ", "!!! ???", "a b c x y", "the is of and", "def self return"])
def test_hashing_embedder_text_without_tokens_is_a_zero_vector(text):
    out = HashingEmbedder(32).embed([text, "real_token"])
    assert out[0].tolist() == [0.0] * 32
    assert np.linalg.norm(out[1]) == pytest.approx(1.0, abs=1e-6)


def test_hashing_embedder_no_texts():
    out = HashingEmbedder(16).embed([])
    assert out.shape == (0, 16) and out.dtype == np.float32


@pytest.mark.parametrize("texts", ["a str", b"bytes", None, 5, [1], ["ok", None], [b"x"],
                                   {"a", "b"}, (t for t in ["a"]), [["nested"]]],
                         ids=["str", "bytes", "none", "int", "list-of-int", "none-item", "bytes-item",
                              "set", "generator", "nested-list"])
def test_hashing_embedder_bad_input_types(texts):
    with pytest.raises(InvalidTypeError):
        HashingEmbedder(16).embed(texts)


@pytest.mark.parametrize("dim", [0, 7, 16385, -1, "64", 64.0, True, None])
def test_hashing_embedder_bad_dim(dim):
    with pytest.raises(InvalidArgumentError):
        HashingEmbedder(dim)


CHILD = textwrap.dedent("""
    import json, sys
    from codegraph_store.embedders import HashingEmbedder
    texts = json.loads(sys.argv[1])
    print(json.dumps({str(d): HashingEmbedder(d).embed(texts).tobytes().hex() for d in (16, 384)}))
""")


def test_hashing_embedder_is_deterministic_across_processes():
    texts = ["parse_json_value", "HTTPServer", "sha256 checksum", "naïve_ünïcode ok", "",
             "def load(self): return json.load(f)"]
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(texts)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout)
    for d in (16, 384):
        assert child[str(d)] == HashingEmbedder(d).embed(texts).tobytes().hex()


# --------------------------------------------------------------------------- sentence-transformers adapter


class FakeModel:
    """A sentence-transformers look-alike: row i of encode() is (len(text_i), i, 0, 0, ...)."""

    def __init__(self, dim=6, name=None, report_dim=True, shape=None):
        self._dim = dim
        self.calls = []
        self._shape = shape
        if name is not None:
            self.model_name = name
        if report_dim:
            self.get_sentence_embedding_dimension = lambda: dim

    def encode(self, texts):
        self.calls.append(texts)
        out = np.zeros((len(texts), self._dim), np.float64)
        for i, t in enumerate(texts):
            out[i, 0] = len(t)
            out[i, 1] = i
        if self._shape is not None:
            return self._shape(out)
        return out


def test_adapter_embeds_with_the_model():
    model = FakeModel(dim=6, name="fake-mini")
    e = SentenceTransformerEmbedder(model)
    assert (e.dim, e.name) == (6, "fake-mini")
    assert model.calls == []  # the model reported its dimension: no probe
    out = e.embed(["ab", "cdef", ""])
    assert out.dtype == np.float32 and out.shape == (3, 6)
    assert out.tolist() == [[2, 0, 0, 0, 0, 0], [4, 1, 0, 0, 0, 0], [0, 2, 0, 0, 0, 0]]
    assert model.calls == [["ab", "cdef", ""]]
    assert isinstance(model.calls[0], list)
    # A tuple of texts is passed on as a list.
    e.embed(("x",))
    assert model.calls[-1] == ["x"]


def test_adapter_names_and_probing():
    assert SentenceTransformerEmbedder(FakeModel(name="m1"), name="explicit").name == "explicit"
    assert SentenceTransformerEmbedder(FakeModel()).name == "FakeModel"
    probed = FakeModel(dim=5, report_dim=False)
    e = SentenceTransformerEmbedder(probed)
    assert e.dim == 5
    assert probed.calls == [["dimension probe"]]
    none_dim = FakeModel(dim=3)
    none_dim.get_sentence_embedding_dimension = lambda: None
    assert SentenceTransformerEmbedder(none_dim).dim == 3


@pytest.mark.parametrize("shape", [
    lambda a: a[:-1], lambda a: np.vstack([a, a[:1]]), lambda a: a[:, :-1],
    lambda a: np.hstack([a, a[:, :1]]), lambda a: a.ravel(), lambda a: a[None],
    lambda a: a[0],
], ids=["row-missing", "row-extra", "dim-short", "dim-long", "flat", "3-d", "first-row-only"])
def test_adapter_refuses_a_model_returning_the_wrong_shape(shape):
    e = SentenceTransformerEmbedder(FakeModel(dim=4, shape=shape))
    with pytest.raises(InvalidArgumentError, match="shape"):
        e.embed(["one", "two"])


def test_adapter_needs_an_encode_method():
    with pytest.raises(InvalidTypeError):
        SentenceTransformerEmbedder(object())


def test_adapter_model_errors_propagate_unchanged():
    class Broken(FakeModel):
        def encode(self, texts):
            raise RuntimeError("model exploded")

    e = SentenceTransformerEmbedder(Broken(dim=4))
    with pytest.raises(RuntimeError, match="model exploded"):
        e.embed(["x"])


def test_adapter_refuses_a_single_string():
    e = SentenceTransformerEmbedder(FakeModel(dim=4))
    with pytest.raises(InvalidTypeError):
        e.embed("abc")


def test_adapter_vectors_go_into_a_store(store, make_node):
    e = SentenceTransformerEmbedder(FakeModel(dim=6, name="fake-mini"))
    nodes = [make_node(f"f{i}", start_line=i + 1) for i in range(3)]
    store.add_nodes(nodes)
    store.add_embeddings([n.id for n in nodes], e.embed(["a", "bbb", "cc"]), space=e.name)
    hits = store.search(e.embed(["dddd"])[0], k=3, space="fake-mini")
    assert [h.node.name for h in hits] == ["f0", "f1", "f2"]
    assert [h.score for h in hits] == pytest.approx([1.0, 3 / np.sqrt(10), 2 / np.sqrt(8)], abs=1e-12)
    with pytest.raises(InvalidArgumentError):
        store.search("a text", k=1)  # not a built-in embedder's space


# --------------------------------------------------------------------------- get_embedder


def test_get_embedder_builtins():
    e = get_embedder("hashing")
    assert isinstance(e, HashingEmbedder) and (e.dim, e.name) == (384, "hashing-384")
    e = get_embedder("hashing-128")
    assert isinstance(e, HashingEmbedder) and (e.dim, e.name) == (128, "hashing-128")
    assert np.array_equal(get_embedder("hashing-128").embed(["foo_bar"]),
                          HashingEmbedder(128).embed(["foo_bar"]))


@pytest.mark.parametrize("spec", ["bert", "", "HASHING", "hash", "hashing2", "sentence-transformers",
                                  "-128", "openai-1536"])
def test_get_embedder_unknown_names(spec):
    with pytest.raises(NotFoundError):
        get_embedder(spec)


@pytest.mark.parametrize("spec", ["hashing-abc", "hashing-4", "hashing-1.5", "hashing--8",
                                  "hashing-99999", "hashing- 64"])
def test_get_embedder_bad_dimensions(spec):
    with pytest.raises(InvalidArgumentError):
        get_embedder(spec)


@pytest.mark.parametrize("spec", [None, 384])
def test_get_embedder_refuses_non_strings(spec):
    with pytest.raises(InvalidTypeError):
        get_embedder(spec)


def test_embedder_for_space():
    e = embedder_for_space("hashing-64", 64)
    assert (e.name, e.dim) == ("hashing-64", 64)
    assert embedder_for_space("hashing", 384).name == "hashing-384"
    with pytest.raises(InvalidArgumentError, match="external model"):
        embedder_for_space("minilm-l6", 384)
    with pytest.raises(InvalidArgumentError):
        embedder_for_space("hashing-64", 32)  # the space's dim disagrees with its name
    with pytest.raises(InvalidArgumentError):
        embedder_for_space("hashing", 128)

"""Spec building and validation: typed errors on bad input, JSON round trips, GGUF reading."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doppler.tokenizer import SpecError, Tokenizer, TokenizerError, UnsupportedTokenizerError
from doppler.tokenizer.spec import from_gguf_metadata, from_tokenizer_json, gguf_fields
from doppler.tokenizer.validate import validate_spec

TINY_JSON: dict[str, Any] = {
    "added_tokens": [{"id": 0, "content": "<s>", "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel"},
    "model": {
        "type": "BPE",
        "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4},
        "merges": ["a b"],
    },
}


def write_gguf(path: Path) -> None:
    """A tensor-less GGUF holding every metadata value type."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "smollm")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b", "ab", "Ġ", "é"])
    writer.add_array("tokenizer.ggml.merges", ["a b"])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1, 1, 1])
    writer.add_array("tokenizer.ggml.scores", [0.5, -1.25, 0.0, 2.0, 1.0, 3.0])
    writer.add_uint32("tokenizer.ggml.bos_token_id", 0)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_int64("test.i64", -5)
    writer.add_float64("test.f64", 0.125)
    writer.add_uint8("test.u8", 7)
    writer.add_int16("test.i16", -300)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def reader_fields(path: Path) -> dict[str, Any]:
    """The same metadata through the gguf package's reader (slow on real vocabularies)."""
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def test_gguf_fields_equal_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    ours = gguf_fields(path)
    assert ours == reader_fields(path)
    assert ours["tokenizer.ggml.tokens"][-1] == "é"
    spec = from_gguf_metadata(ours)
    tok = Tokenizer.from_spec(spec)
    assert tok.encode("ab a") == [0, 3, 4, 1]


def test_gguf_fields_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecError, match="truncated"):
        gguf_fields(tmp_path / "cut.gguf")
    (tmp_path / "not.gguf").write_bytes(b"NOPE" + data[4:])
    with pytest.raises(SpecError, match="not a GGUF"):
        gguf_fields(tmp_path / "not.gguf")
    with pytest.raises(SpecError, match=r"missing\.gguf"):
        gguf_fields(tmp_path / "missing.gguf")


def test_from_gguf_metadata_errors() -> None:
    base = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": ["a b"],
    }
    from_gguf_metadata(base)
    cases = [
        ({"tokenizer.ggml.model": None}, SpecError, "model/tokens"),
        ({"tokenizer.ggml.model": "bert"}, UnsupportedTokenizerError, "bert"),
        ({"tokenizer.ggml.pre": "mystery"}, UnsupportedTokenizerError, "mystery"),
        ({"tokenizer.ggml.merges": ["ab"]}, SpecError, "bad merge"),
        ({"tokenizer.ggml.tokens": ["a", 3]}, SpecError, "strings"),
        ({"tokenizer.ggml.token_type": [1]}, SpecError, "token_type"),
        ({"tokenizer.ggml.bos_token_id": 9}, SpecError, "bos_token_id=9"),
        ({"tokenizer.ggml.add_bos_token": "yes"}, SpecError, "add_bos_token"),
        ({"tokenizer.ggml.model": "llama"}, SpecError, "scores"),
    ]
    for change, error, message in cases:
        fields = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(error, match=message):
            from_gguf_metadata(fields)


def test_from_tokenizer_json_errors() -> None:
    from_tokenizer_json(TINY_JSON)
    cases = [
        ({"model": {"type": "WordPiece", "vocab": {}}}, UnsupportedTokenizerError, "WordPiece"),
        ({"model": None}, SpecError, "model"),
        ({"normalizer": {"type": "Lowercase"}}, UnsupportedTokenizerError, "Lowercase"),
        ({"pre_tokenizer": {"type": "Whitespace"}}, UnsupportedTokenizerError, "Whitespace"),
        (
            {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}},
            UnsupportedTokenizerError,
            "prefix",
        ),
        ({"added_tokens": [{"id": 9}]}, SpecError, "content"),
        ({"normalizer": {"type": "Prepend"}}, SpecError, "prepend"),
        ({"normalizer": [1]}, SpecError, "normalizer"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            from_tokenizer_json({**TINY_JSON, **change})


def test_tokenizer_json_spec_round_trips_through_json() -> None:
    spec = from_tokenizer_json(TINY_JSON, {"bos_token": {"content": "<s>"}})
    assert json.loads(json.dumps(spec)) == spec
    assert spec["bos_id"] == 0
    tok = Tokenizer.from_spec(spec)
    assert tok.encode("<s>ab b") == [0, 3, 4, 2]
    assert tok.decode([0, 3, 4, 2], skip_special_tokens=True) == "ab b"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 2),
        ("model", "unigram"),
        ("vocab", []),
        ("vocab", ["a", 1]),
        ("bos_id", 99),
        ("bos_id", True),
        ("eos_ids", [99]),
        ("merges", [["a"]]),
        ("scores", ["x"]),
        ("add_bos", 1),
        ("added_tokens", [{"id": 0}]),
        ("normalizer", [{"type": "lowercase"}]),
        ("pre_tokenizer", {"patterns": []}),
        ("chat_template", 3),
        ("template_tokens", {"bos_token": 1}),
    ],
)
def test_validate_names_bad_field(field: str, value: object) -> None:
    spec = copy.deepcopy(from_tokenizer_json(TINY_JSON))
    spec[field] = value
    with pytest.raises(SpecError, match=field if field != "vocab" else "vocab"):
        validate_spec(spec)


def test_sentencepiece_scores_must_cover_vocab() -> None:
    fields = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "\u2581a"],
        "tokenizer.ggml.scores": np.zeros(2).tolist(),
    }
    spec = from_gguf_metadata(fields)
    spec["scores"] = [0.0]
    with pytest.raises(SpecError, match="scores"):
        Tokenizer.from_spec(spec)


def _mutations(node: Any) -> st.SearchStrategy[Any]:
    """Copies of ``node`` with one value somewhere replaced, deleted or retyped."""
    junk = st.one_of(st.none(), st.integers(-2, 10), st.text(max_size=3), st.just([]), st.just({}))
    if isinstance(node, dict) and node:
        return st.sampled_from(sorted(node)).flatmap(
            lambda k: st.one_of(
                st.just({key: v for key, v in node.items() if key != k}),
                junk.map(lambda v: {**node, k: v}),
                _mutations(node[k]).map(lambda v: {**node, k: v}),
            )
        )
    if isinstance(node, list) and node:
        return st.integers(0, len(node) - 1).flatmap(
            lambda i: st.one_of(junk, _mutations(node[i])).map(
                lambda v: [*node[:i], v, *node[i + 1 :]]
            )
        )
    return junk


@settings(max_examples=400, deadline=None)
@given(_mutations(TINY_JSON))
def test_mutated_tokenizer_json_gives_typed_errors(doc: Any) -> None:
    with contextlib.suppress(TokenizerError):
        Tokenizer.from_spec(from_tokenizer_json(doc)).encode("ab <s> b")

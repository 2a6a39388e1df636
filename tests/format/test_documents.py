"""Root manifest and index shard parsing: every class of bad input gets its typed error."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from doppler.format.errors import (
    FormatError,
    HashMismatchError,
    InvalidNameError,
    InvalidRangeError,
    SchemaError,
    SizeError,
)
from doppler.format.hashing import sha256_hex
from doppler.format.index import parse_index
from doppler.format.manifest import model_id, parse_manifest


def _dump(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_valid_documents_parse_and_resolve(tiny_docs: tuple[bytes, bytes]) -> None:
    manifest_bytes, index_bytes = tiny_docs
    manifest = parse_manifest(manifest_bytes, expected_id=model_id(manifest_bytes))
    ref = manifest.index_for_layer(0)
    index = parse_index(index_bytes, ref.name)
    expert = index.experts[(0, 3)]
    assert expert.tensors == tuple(
        f"layers.0.experts.3.ffn.{p}.weight" for p in ("gate", "up", "down")
    )
    # Mixtral's 94.5 MiB expert is bigger than a shard: it starts a shard and spans two.
    assert [s.offset for s in expert.spans] == [0, 0] and len(expert.spans) == 2
    blocks = index.blocks_for(expert.spans[1])
    assert blocks[0][1] == 0 and all(len(b[3]) == 64 for b in blocks)


def test_identity_and_name_hashes_are_checked(tiny_docs: tuple[bytes, bytes]) -> None:
    manifest_bytes, index_bytes = tiny_docs
    with pytest.raises(HashMismatchError):
        parse_manifest(manifest_bytes, expected_id="0" * 64)
    with pytest.raises(HashMismatchError):
        parse_index(index_bytes, "0" * 64)
    with pytest.raises(InvalidNameError):
        parse_index(index_bytes, "../" + sha256_hex(index_bytes)[3:])


def _first_tensor(doc: dict) -> dict:
    return next(iter(doc["tensors"].values()))


def _expert_tensor(doc: dict) -> dict:
    return doc["tensors"]["layers.0.experts.0.ffn.up.weight"]


INDEX_CASES: list[tuple[str, Callable[[dict], object], type[FormatError], str]] = [
    ("missing field", lambda d: d.pop("alignment"), SchemaError, "missing field 'alignment'"),
    ("extra field", lambda d: d.update(note=1), SchemaError, "unknown field 'note'"),
    ("mistyped", lambda d: d.update(globals=1), SchemaError, "expected true/false"),
    ("negative size", lambda d: d["shards"][0].update(size=-5), SizeError, "size"),
    ("absurd size", lambda d: d["shards"][0].update(size=1 << 40), SizeError, "size"),
    ("non-hex shard", lambda d: d["shards"][0].update(name="A" * 64), InvalidNameError, "64"),
    ("short shard", lambda d: d["shards"][0].update(name="a" * 63), InvalidNameError, "64"),
    (
        "path in shard",
        lambda d: d["shards"][0].update(name="../" + "a" * 61),
        InvalidNameError,
        "64",
    ),
    ("bad blocks", lambda d: d["shards"][0].update(blocks="ab"), SchemaError, "blocks"),
    (
        "misaligned",
        lambda d: _first_tensor(d)["spans"][0].__setitem__(1, 3),
        InvalidRangeError,
        "aligned",
    ),
    (
        "out of shard",
        lambda d: _first_tensor(d)["spans"][0].__setitem__(1, 1 << 26),
        InvalidRangeError,
        "exceeds",
    ),
    (
        "bad shard ref",
        lambda d: _first_tensor(d)["spans"][0].__setitem__(0, 999),
        SchemaError,
        "outside",
    ),
    ("wrong size", lambda d: _first_tensor(d)["spans"][0].__setitem__(2, 256), SizeError, "needs"),
    ("unknown layout", lambda d: _first_tensor(d).update(layout="q3_x"), SchemaError, "not one of"),
    (
        "overlap",
        lambda d: _expert_tensor(d)["spans"][0].__setitem__(1, 0),
        InvalidRangeError,
        "overlap",
    ),
    (
        "slash in name",
        lambda d: d["tensors"].update({"layers.0/x": d["tensors"].pop("output_norm.weight")}),
        InvalidNameError,
        "segments",
    ),
    (
        "dotdot in name",
        lambda d: d["tensors"].update({"layers..x": d["tensors"].pop("output_norm.weight")}),
        InvalidNameError,
        "segments",
    ),
    ("expert missing", lambda d: d["experts"].pop(0), SchemaError, "no entry"),
    (
        "expert range",
        lambda d: d["experts"][0]["spans"][0].__setitem__(2, 256),
        InvalidRangeError,
        "outside the expert",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "error", "message"), INDEX_CASES, ids=[c[0] for c in INDEX_CASES]
)
def test_bad_index(
    tiny_docs: tuple[bytes, bytes],
    case: str,
    mutate: Callable[[dict], object],
    error: type[FormatError],
    message: str,
) -> None:
    doc = json.loads(tiny_docs[1])
    mutate(doc)
    with pytest.raises(error, match=message):
        parse_index(_dump(doc))


def test_dense_and_expert_tensors_never_share_a_shard(tiny_docs: tuple[bytes, bytes]) -> None:
    doc = json.loads(tiny_docs[1])
    dense = doc["tensors"]["layers.0.attn.q.weight"]
    expert_span = _expert_tensor(doc)["spans"][0]
    dense["spans"] = [[expert_span[0], 0, dense["spans"][0][2]]]
    with pytest.raises(InvalidRangeError, match="mixes"):
        parse_index(_dump(doc))


MANIFEST_CASES: list[tuple[str, Callable[[dict], object], type[FormatError], str]] = [
    ("missing", lambda d: d.pop("total_size"), SchemaError, "missing field 'total_size'"),
    ("extra", lambda d: d.update(extra=True), SchemaError, "unknown field 'extra'"),
    ("version", lambda d: d.update(version=2), SchemaError, "version"),
    ("float count", lambda d: d.update(tensor_count=1.5), SchemaError, "expected an integer"),
    ("negative", lambda d: d.update(total_size=-1), SizeError, "total_size"),
    ("absurd", lambda d: d.update(param_count=1 << 60), SizeError, "param_count"),
    ("totals", lambda d: d.update(tensor_count=d["tensor_count"] + 1), SizeError, "tensor_count"),
    ("index name", lambda d: d["index"][0].update(name="x" * 64), InvalidNameError, "64"),
    ("name slash", lambda d: d.update(name="a/b"), InvalidNameError, "path separator"),
    ("name dotdot", lambda d: d.update(name=".."), InvalidNameError, "path separator"),
    ("mirror", lambda d: d.update(mirrors=["ftp://x/"]), InvalidNameError, "base URL"),
    (
        "mirror dotdot",
        lambda d: d.update(mirrors=["https://h/a/../"]),
        InvalidNameError,
        "base URL",
    ),
    ("coverage", lambda d: d["index"][0].update(layers=[0, 0]), SchemaError, "cover"),
    ("two globals", lambda d: d["index"].append(dict(d["index"][0])), SchemaError, "exactly one"),
    ("config", lambda d: d["config"].update(vocab_size="32000"), SchemaError, "vocab_size"),
    (
        "layout",
        lambda d: d["quantization"]["layouts"].update(q9_9={}),
        SchemaError,
        "unknown field 'q9_9'",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "error", "message"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES]
)
def test_bad_manifest(
    tiny_docs: tuple[bytes, bytes],
    case: str,
    mutate: Callable[[dict], object],
    error: type[FormatError],
    message: str,
) -> None:
    doc = json.loads(tiny_docs[0])
    mutate(doc)
    with pytest.raises(error, match=message):
        parse_manifest(_dump(doc))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b'{"a": NaN}', "non-finite"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"[" * 100000, "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),
        (b"[]", "expected an object"),
        (b" " * (2 << 20), "limit"),
    ],
    ids=["utf8", "nan", "duplicate", "deep", "huge-int", "array", "oversize"],
)
def test_bad_json(data: bytes, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_manifest(data)
    with pytest.raises(SchemaError):
        parse_index(data)

"""Property test: mutated manifests and index shards raise FormatError, never anything else.

Structural mutations (drop a key, add a key, retype a value, break a name or a number) must
always be rejected with a FormatError; random byte edits must be rejected or parse cleanly,
but never crash with another exception.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doppler.format.errors import FormatError
from doppler.format.index import parse_index
from doppler.format.manifest import parse_manifest

SETTINGS = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document (dict keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):  # a few elements of long lists suffice
            out += _paths(item, (*prefix, i))
    return out


def _kind(value: object) -> str:
    return {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        list: "list",
        dict: "dict",
        type(None): "null",
    }[type(value)]


# Replacements of a different JSON type than the original are never valid: the schema is
# strict (no int where a bool is expected, no string where a number is).
REPLACEMENTS = {"str": "x", "bool": True, "list": [1], "dict": {"k": 1}, "int": -7}


def _get(doc: object, path: tuple) -> object:
    for key in path:
        doc = doc[key]  # type: ignore[index]
    return doc


@st.composite
def structural(draw: st.DrawFn, docs: dict[str, dict]) -> tuple[str, bytes]:
    which = draw(st.sampled_from(sorted(docs)))
    doc = json.loads(json.dumps(docs[which]))
    path = draw(st.sampled_from(_paths(doc)))
    parent = _get(doc, path[:-1])
    original = parent[path[-1]]
    action = draw(st.sampled_from(["retype", "drop", "extra", "number", "name"]))
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "extra" and isinstance(original, dict) and path[-1:] != ("layouts",):
        original["zz_extra"] = 1
    elif action == "number" and _kind(original) == "int":
        parent[path[-1]] = draw(st.sampled_from([-1, 2**63, 1.5]))
    elif action == "name" and _kind(original) == "str" and len(original) == 64:
        parent[path[-1]] = draw(
            st.sampled_from(
                [
                    "../" + original[3:],
                    original.upper(),
                    original[:-1],
                    original + "0",
                    "a/b" * 21 + "c",
                ]
            )
        )
    else:
        choices = [
            k
            for k in REPLACEMENTS
            if k != _kind(original) and not (k == "int" and _kind(original) == "float")
        ]
        parent[path[-1]] = REPLACEMENTS[draw(st.sampled_from(choices))]
    return which, json.dumps(doc).encode()


def _parse(which: str, data: bytes, docs: tuple[bytes, bytes]) -> object:
    """Parse as the runtime does: the index against the (valid) manifest's config."""
    if which == "manifest":
        return parse_manifest(data)
    return parse_index(data, config=parse_manifest(docs[0]).config)


def _must_reject(which: str, data: bytes, docs: tuple[bytes, bytes]) -> None:
    try:
        _parse(which, data, docs)
    except FormatError:
        return
    raise AssertionError(f"{which}: mutated document was accepted: {data[:300]!r}")


def test_structural_mutations_always_rejected(tiny_docs: tuple[bytes, bytes]) -> None:
    docs = {"manifest": json.loads(tiny_docs[0]), "index": json.loads(tiny_docs[1])}

    @SETTINGS
    @given(structural(docs))
    def check(case: tuple[str, bytes]) -> None:
        which, data = case
        if data in tiny_docs or json.loads(data) == docs[which]:
            return  # a no-op mutation (e.g. dropping from a list) is not a mutation
        _must_reject(which, data, tiny_docs)

    check()


def test_byte_edits_never_crash(tiny_docs: tuple[bytes, bytes]) -> None:
    @SETTINGS
    @given(st.sampled_from(["manifest", "index"]), st.data())
    def check(which: str, data: st.DataObject) -> None:
        blob = bytearray(tiny_docs[0] if which == "manifest" else tiny_docs[1])
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(blob) - 1))
            op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                blob[at] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "cut":
                del blob[at:]
                if not blob:
                    blob += b"{"
            else:
                blob[at:at] = data.draw(st.sampled_from([b'"', b",", b"}", b"-", b"9e999"]))
        with contextlib.suppress(FormatError):
            _parse(which, bytes(blob), tiny_docs)

    check()

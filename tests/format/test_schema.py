"""docs/rdrr.schema.json accepts what the writer produces and rejects what the parser rejects.

jsonschema is not installed, so a tiny validator below covers exactly the keywords the schema
uses; the planted-mutation cases show it is not vacuous.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from doppler.convert.synth import synth
from doppler.format.manifest import parse_manifest

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "rdrr.schema.json").read_text())
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def errors(value: object, schema: dict, path: str = "$") -> list[str]:
    """Schema violations of ``value`` (empty when valid)."""
    if "$ref" in schema:
        return errors(value, SCHEMA["$defs"][schema["$ref"].split("/")[-1]], path)
    if "oneOf" in schema:
        passing = [s for s in schema["oneOf"] if not errors(value, s, path)]
        return [] if len(passing) == 1 else [f"{path}: matches {len(passing)} of oneOf"]
    out: list[str] = []
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in enum")
    kind = schema.get("type")
    if kind == "integer":
        ok = type(value) is int
    elif kind == "number":
        ok = type(value) in (int, float)
    else:
        ok = kind is None or (
            isinstance(value, TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool))
        )
    if not ok:
        return [*out, f"{path}: not {kind}"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            out.append(f"{path}: {value} out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: {value} too small")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: {value[:40]!r} fails pattern")
        if len(value) > schema.get("maxLength", len(value)):
            out.append(f"{path}: too long")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            out.append(f"{path}: bad length")
        for i, item in enumerate(value):
            out += errors(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict):
        out += [f"{path}: missing {k}" for k in schema.get("required", ()) if k not in value]
        if len(value) < schema.get("minProperties", 0):
            out.append(f"{path}: too few properties")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            out += errors(key, schema.get("propertyNames", {}), f"{path}.<{key}>")
            if key in props:
                out += errors(item, props[key], f"{path}.{key}")
            elif extra is False:
                out.append(f"{path}: unexpected {key}")
            elif isinstance(extra, dict):
                out += errors(item, extra, f"{path}.{key}")
    return out


@pytest.fixture(scope="module")
def documents(tiny_moe: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    deepseek = synth(
        "deepseek-v3", tmp_path_factory.mktemp("ds") / "m", plan_only=True, layers=4, progress=False
    )
    docs = []
    for model in (tiny_moe, deepseek):
        root = (model / "manifest.json").read_bytes()
        docs.append(json.loads(root))
        docs += [
            json.loads((model / f"{r.name}.bin").read_bytes()) for r in parse_manifest(root).index
        ]
    return docs


def test_generated_documents_match_the_schema(documents: list[dict]) -> None:
    assert len(documents) >= 4
    for doc in documents:
        assert errors(doc, SCHEMA) == []


@pytest.mark.parametrize("mutation", ["extra", "name", "type", "missing"])
def test_validator_rejects_planted_mistakes(documents: list[dict], mutation: str) -> None:
    for doc in (json.loads(json.dumps(documents[0])), json.loads(json.dumps(documents[1]))):
        if mutation == "extra":
            doc["surprise"] = 1
        elif mutation == "name":
            target = doc["index"][0] if "index" in doc else doc["shards"][0]
            target["name"] = "../" + target["name"][3:]
        elif mutation == "type":
            doc["alignment"] = True
        else:
            del doc["version"]
        assert errors(doc, SCHEMA), mutation

"""Strict, typed reading of untrusted JSON (manifests, index shards, configs).

The runtime parses bytes fetched from mirrors and peers, so every accessor checks type and
range and raises ``SchemaError`` naming the JSON path; nothing else may escape (no KeyError,
no TypeError), which the property tests assert.
"""

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from doppler.format.errors import SchemaError

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SAFE_INT = 2**53


def _reject_constant(name: str) -> object:
    raise SchemaError(f"non-finite number {name} is not allowed in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SchemaError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_json(data: bytes, what: str, max_size: int) -> object:
    """Decode UTF-8 JSON, rejecting oversize input, NaN/Infinity and duplicate keys."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise SchemaError(f"{what}: {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except SchemaError as exc:
        raise SchemaError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SchemaError(f"{what}: not valid JSON ({exc.__class__.__name__}: {exc})") from None


def dump_json(value: object) -> bytes:
    """Canonical JSON bytes: sorted keys, compact, UTF-8, so hashes are reproducible."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def obj(value: object, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """Check ``value`` is an object with exactly the required keys plus optional ones."""
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: expected an object, got {_kind(value)}")
    req = set(required)
    missing = sorted(req - value.keys())
    if missing:
        raise SchemaError(f"{path}: missing field {missing[0]!r}")
    extra = sorted(value.keys() - req - set(optional))
    if extra:
        raise SchemaError(f"{path}: unknown field {extra[0]!r}")
    return value


def integer(value: object, path: str, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    if type(value) is not int:
        raise SchemaError(f"{path}: expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise SchemaError(f"{path}: {value} is outside [{lo}, {hi}]")
    return value


def number(value: object, path: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(value) not in (int, float):
        raise SchemaError(f"{path}: expected a number, got {_kind(value)}")
    out = float(value)  # type: ignore[arg-type]
    if not math.isfinite(out) or not lo <= out <= hi:
        raise SchemaError(f"{path}: {value} is outside [{lo}, {hi}]")
    return out


def boolean(value: object, path: str) -> bool:
    if type(value) is not bool:
        raise SchemaError(f"{path}: expected true/false, got {_kind(value)}")
    return value


def string(value: object, path: str, max_len: int = 1024) -> str:
    if type(value) is not str:
        raise SchemaError(f"{path}: expected a string, got {_kind(value)}")
    if len(value) > max_len:
        raise SchemaError(f"{path}: string longer than {max_len} characters")
    return value


def choice(value: object, path: str, choices: Iterable[str]) -> str:
    allowed = tuple(choices)
    text = string(value, path)
    if text not in allowed:
        raise SchemaError(f"{path}: {text!r} is not one of {', '.join(allowed)}")
    return text


def array(value: object, path: str, min_len: int = 0, max_len: int = 1 << 24) -> list:
    if type(value) is not list:
        raise SchemaError(f"{path}: expected an array, got {_kind(value)}")
    if not min_len <= len(value) <= max_len:
        raise SchemaError(f"{path}: array length {len(value)} is outside [{min_len}, {max_len}]")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )


def limits(lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()) -> dict:
    """Field metadata read by ``read_dataclass``: numeric bounds or allowed strings."""
    return {"lo": lo, "hi": hi, "choices": choices}


def read_dataclass(cls: type, value: object, path: str):
    """Build dataclass ``cls`` from JSON: every field present (null for None), none extra.

    Field types may be int, float, bool, str, ``T | None``, ``tuple[T, ...]``,
    ``dict[str, T]`` or another dataclass; bounds come from ``limits`` metadata. After
    construction, a ``check()`` method, if defined, validates cross-field rules.
    """
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    data = obj(value, path, [f.name for f in fields])
    kwargs = {
        f.name: _read_typed(hints[f.name], data[f.name], f"{path}.{f.name}", f.metadata)
        for f in fields
    }
    out = cls(**kwargs)
    check = getattr(out, "check", None)
    if check is not None:
        check(path)
    return out


def _read_typed(tp: object, value: object, path: str, meta: typing.Mapping) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _read_typed(inner[0], value, path, meta)
    if origin is tuple:
        return tuple(
            _read_typed(args[0], v, f"{path}[{i}]", meta)
            for i, v in enumerate(array(value, path, 0, 1 << 16))
        )
    if origin is dict:
        mapping = obj(value, path, (), value.keys() if isinstance(value, dict) else ())
        return {
            string(k, path, 64): _read_typed(args[1], v, f"{path}.{k}", meta)
            for k, v in mapping.items()
        }
    if dataclasses.is_dataclass(tp):
        return read_dataclass(tp, value, path)  # type: ignore[arg-type]
    lo, hi = meta.get("lo"), meta.get("hi")
    if tp is bool:
        return boolean(value, path)
    if tp is int:
        return integer(
            value, path, 0 if lo is None else int(lo), MAX_SAFE_INT if hi is None else int(hi)
        )
    if tp is float:
        return number(value, path, -math.inf if lo is None else lo, math.inf if hi is None else hi)
    if tp is str:
        choices = meta.get("choices")
        return choice(value, path, choices) if choices else string(value, path)
    raise TypeError(f"read_dataclass: unsupported field type {tp!r} at {path}")

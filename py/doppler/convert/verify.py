"""``doppler verify DIR``: re-hash every shard and block and check every tensor range.

Beyond what ``parse_manifest``/``parse_index`` check per document, this checks the model as
a whole: index shards agree with the root, the tensor set matches the config, every expert
of every MoE layer is resolvable, weight shards are unique to one index, totals add up, and
every file's bytes hash to its name and block hashes.
"""

import hashlib
import json
from dataclasses import dataclass
from math import prod
from pathlib import Path

from doppler.format.canonical import expected_tensors
from doppler.format.errors import (
    HashMismatchError,
    MissingFileError,
    SchemaError,
    ShapeMismatchError,
    SizeError,
)
from doppler.format.index import Index, ShardInfo, parse_index
from doppler.format.manifest import Manifest, model_id, parse_manifest
from doppler.format.strict import load_json

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Report:
    model_id: str
    manifest: Manifest
    indexes: dict[str, Index]
    shards_checked: int
    bytes_checked: int


def load_model(directory: Path) -> tuple[str, Manifest, dict[str, Index]]:
    """Parse the root manifest and every index shard of a model directory."""
    directory = Path(directory)
    data = _read(directory / MANIFEST_NAME)
    manifest = parse_manifest(data)
    indexes: dict[str, Index] = {}
    for ref in manifest.index:
        blob = _read(directory / f"{ref.name}.bin")
        if len(blob) != ref.size:
            raise SizeError(f"index {ref.name}: {len(blob)} bytes, manifest says {ref.size}")
        index = parse_index(blob, ref.name, manifest.config)
        if (index.layers, index.globals) != (ref.layers, ref.globals):
            raise SchemaError(
                f"index {ref.name}: covers {index.layers}, manifest says {ref.layers}"
            )
        if (index.block_size, index.alignment) != (manifest.block_size, manifest.alignment):
            raise SchemaError(f"index {ref.name}: block size/alignment differ from manifest")
        indexes[ref.name] = index
    return model_id(data), manifest, indexes


def verify_model(directory: Path, *, weights: bool = True) -> Report:
    """Check a model directory; ``weights=False`` skips weight shards (plan-only output)."""
    directory = Path(directory)
    ident, manifest, indexes = load_model(directory)
    shards = _check_structure(manifest, indexes)
    checked = 0
    if manifest.tokenizer is not None:
        blob = _read(directory / f"{manifest.tokenizer.name}.bin")
        _check_whole(manifest.tokenizer.name, blob, manifest.tokenizer.size)
        load_json(blob, f"tokenizer {manifest.tokenizer.name}", manifest.max_shard_size)
    if weights:
        for info in shards.values():
            _check_shard(directory, info, manifest.block_size)
            checked += info.size
    return Report(ident, manifest, indexes, len(shards) if weights else 0, checked)


def _check_structure(manifest: Manifest, indexes: dict[str, Index]) -> dict[str, ShardInfo]:
    cfg = manifest.config
    expected = expected_tensors(cfg)
    shards: dict[str, ShardInfo] = {}
    seen: dict[str, str] = {}
    stats: dict[str, list[int]] = {}
    for index_name, index in indexes.items():
        for name, info in index.shards.items():
            if name in shards:
                raise SchemaError(f"shard {name} is listed by two index shards")
            shards[name] = info
        for name, entry in index.tensors.items():
            if name in seen:
                raise SchemaError(f"tensor {name} appears in two index shards")
            seen[name] = index_name
            if name not in expected:
                raise SchemaError(f"index {index_name}: tensor {name} is not in the config")
            if entry.shape != expected[name]:
                raise ShapeMismatchError(
                    f"tensor {name}: shape {list(entry.shape)}, config "
                    f"implies {list(expected[name])}"
                )
            stat = stats.setdefault(entry.layout, [0, 0, 0])
            stat[0] += 1
            stat[1] += prod(entry.shape)
            stat[2] += entry.nbytes
    missing = sorted(expected.keys() - seen.keys())
    if missing:
        raise SchemaError(f"tensor {missing[0]} required by the config is in no index shard")
    for layer in range(cfg.total_layers):
        if cfg.moe is None or not cfg.is_moe_layer(layer):
            continue
        index = indexes[manifest.index_for_layer(layer).name]
        for expert in range(cfg.moe.num_experts):
            if (layer, expert) not in index.experts:
                raise SchemaError(f"expert ({layer}, {expert}) has no entry in its index")
    table = {k: [v.tensors, v.params, v.bytes] for k, v in manifest.layouts.items()}
    if stats != table:
        raise SizeError("manifest.quantization.layouts disagrees with the index shards")
    fixed = sum(r.size for r in manifest.index) + (
        manifest.tokenizer.size if manifest.tokenizer else 0
    )
    if manifest.total_size != fixed + sum(s.size for s in shards.values()):
        raise SizeError("manifest.total_size disagrees with the shards")
    if manifest.shard_count != len(shards) + len(indexes) + (manifest.tokenizer is not None):
        raise SizeError("manifest.shard_count disagrees with the shards")
    return shards


def _check_shard(directory: Path, info: ShardInfo, block_size: int) -> None:
    path = directory / f"{info.name}.bin"
    if not path.is_file():
        raise MissingFileError(f"shard {info.name}.bin is missing from {directory}")
    if path.stat().st_size != info.size:
        raise SizeError(f"shard {info.name}: {path.stat().st_size} bytes, index says {info.size}")
    whole = hashlib.sha256()
    with path.open("rb") as fh:
        block = 0
        while chunk := fh.read(block_size):
            whole.update(chunk)
            if hashlib.sha256(chunk).hexdigest() != info.block_hash(block):
                raise HashMismatchError(
                    f"shard {info.name}: block {block} (bytes {block * block_size}..) hash mismatch"
                )
            block += 1
    if whole.hexdigest() != info.name:
        raise HashMismatchError(f"shard {info.name}: bytes hash to {whole.hexdigest()}")


def _check_whole(name: str, blob: bytes, size: int) -> None:
    if len(blob) != size:
        raise SizeError(f"file {name}.bin: {len(blob)} bytes, manifest says {size}")
    if hashlib.sha256(blob).hexdigest() != name:
        raise HashMismatchError(
            f"file {name}.bin: bytes hash to {hashlib.sha256(blob).hexdigest()}"
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing") from None
    except OSError as exc:
        raise MissingFileError(f"{path}: {exc.strerror}") from None


def read_tokenizer(directory: Path, manifest: Manifest) -> dict | None:
    """The tokenizer spec stored with the model (verified against its name)."""
    if manifest.tokenizer is None:
        return None
    blob = _read(Path(directory) / f"{manifest.tokenizer.name}.bin")
    _check_whole(manifest.tokenizer.name, blob, manifest.tokenizer.size)
    return json.loads(blob)

"""The root manifest: the small JSON document that names a model.

Its SHA-256 is the model's identity. It carries the architecture config, a pointer to the
tokenizer shard, a quantization summary, sizes, optional mirrors, and the names of the index
shards with the layer range each covers, so a client fetches the root, then exactly one index
shard for whatever layer or expert it needs. See docs/rdrr.md "Root manifest".
"""

from dataclasses import dataclass

from doppler.format import strict
from doppler.format.config import ArchConfig
from doppler.format.errors import HashMismatchError, SchemaError, SizeError
from doppler.format.hashing import sha256_hex
from doppler.format.index import MAX_SHARD_SIZE, check_geometry, parse_layer_range
from doppler.format.layouts import LAYOUTS
from doppler.format.names import check_display_name, check_mirror_url, check_shard_name

MANIFEST_FORMAT = "rdrr"
VERSION = 1
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_TOTAL = 1 << 50  # 1 PiB: anything larger is corruption, not a model


@dataclass(frozen=True)
class ShardRef:
    """A content-addressed file referenced by name from the root (tokenizer)."""

    name: str
    size: int


@dataclass(frozen=True)
class IndexRef:
    name: str
    size: int
    layers: tuple[int, int] | None
    globals: bool


@dataclass(frozen=True)
class LayoutStat:
    tensors: int
    params: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    name: str
    source: str
    config: ArchConfig
    tokenizer: ShardRef | None
    layouts: dict[str, LayoutStat]
    bits_per_weight: float
    param_count: int
    tensor_count: int
    total_size: int
    shard_count: int
    block_size: int
    alignment: int
    max_shard_size: int
    mirrors: tuple[str, ...]
    index: tuple[IndexRef, ...]

    def index_for_layer(self, layer: int) -> IndexRef:
        for ref in self.index:
            if ref.layers is not None and ref.layers[0] <= layer <= ref.layers[1]:
                return ref
        raise SchemaError(f"manifest: no index shard covers layer {layer}")

    def globals_index(self) -> IndexRef:
        return next(ref for ref in self.index if ref.globals)

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "version": VERSION,
            "name": self.name,
            "source": self.source,
            "config": self.config.to_json(),
            "tokenizer": None
            if self.tokenizer is None
            else {"name": self.tokenizer.name, "size": self.tokenizer.size},
            "quantization": {
                "bits_per_weight": self.bits_per_weight,
                "layouts": {
                    k: {"tensors": v.tensors, "params": v.params, "bytes": v.bytes}
                    for k, v in sorted(self.layouts.items())
                },
            },
            "param_count": self.param_count,
            "tensor_count": self.tensor_count,
            "total_size": self.total_size,
            "shard_count": self.shard_count,
            "block_size": self.block_size,
            "alignment": self.alignment,
            "max_shard_size": self.max_shard_size,
            "mirrors": list(self.mirrors),
            "index": [
                {
                    "name": r.name,
                    "size": r.size,
                    "layers": None if r.layers is None else list(r.layers),
                    "globals": r.globals,
                }
                for r in self.index
            ],
        }

    def to_bytes(self) -> bytes:
        return strict.dump_json(self.to_json())


_FIELDS = (
    "format",
    "version",
    "name",
    "source",
    "config",
    "tokenizer",
    "quantization",
    "param_count",
    "tensor_count",
    "total_size",
    "shard_count",
    "block_size",
    "alignment",
    "max_shard_size",
    "mirrors",
    "index",
)


def model_id(manifest_bytes: bytes) -> str:
    """A model's identity: the SHA-256 of its root manifest bytes."""
    return sha256_hex(manifest_bytes)


def parse_manifest(data: bytes, expected_id: str | None = None) -> Manifest:
    """Parse and validate root manifest bytes (optionally checking the model identity)."""
    if expected_id is not None and model_id(data) != expected_id:
        raise HashMismatchError(f"manifest: identity {model_id(data)} != {expected_id}")
    doc = strict.obj(strict.load_json(data, "manifest", MAX_MANIFEST_BYTES), "manifest", _FIELDS)
    if doc["format"] != MANIFEST_FORMAT:
        raise SchemaError(f"manifest.format: expected {MANIFEST_FORMAT!r}")
    strict.integer(doc["version"], "manifest.version", VERSION, VERSION)
    config = ArchConfig.from_json(doc["config"], "manifest.config")
    tokenizer = None
    if doc["tokenizer"] is not None:
        tok = strict.obj(doc["tokenizer"], "manifest.tokenizer", ("name", "size"))
        tokenizer = ShardRef(
            check_shard_name(tok["name"], "manifest.tokenizer.name"),
            _size(tok["size"], "manifest.tokenizer.size", MAX_SHARD_SIZE),
        )
    layouts, bits = _parse_quantization(doc["quantization"])
    block_size = _size(doc["block_size"], "manifest.block_size", MAX_SHARD_SIZE)
    alignment = _size(doc["alignment"], "manifest.alignment", MAX_SHARD_SIZE)
    check_geometry(block_size, alignment, "manifest")
    manifest = Manifest(
        name=check_display_name(doc["name"], "manifest.name"),
        source=check_display_name(doc["source"], "manifest.source", 1024),
        config=config,
        tokenizer=tokenizer,
        layouts=layouts,
        bits_per_weight=bits,
        param_count=_size(doc["param_count"], "manifest.param_count", MAX_TOTAL),
        tensor_count=_size(doc["tensor_count"], "manifest.tensor_count", 1 << 32),
        total_size=_size(doc["total_size"], "manifest.total_size", MAX_TOTAL),
        shard_count=_size(doc["shard_count"], "manifest.shard_count", 1 << 32),
        block_size=block_size,
        alignment=alignment,
        max_shard_size=_size(doc["max_shard_size"], "manifest.max_shard_size", MAX_SHARD_SIZE),
        mirrors=tuple(
            check_mirror_url(u, f"manifest.mirrors[{i}]")
            for i, u in enumerate(strict.array(doc["mirrors"], "manifest.mirrors", 0, 64))
        ),
        index=_parse_index_refs(doc["index"], config.total_layers),
    )
    _check_totals(manifest)
    return manifest


def _size(value: object, path: str, hi: int) -> int:
    if type(value) is int and not 0 < value <= hi:
        raise SizeError(f"{path}: {value} is outside [1, {hi}]")
    return strict.integer(value, path, 1, hi)


def _parse_quantization(value: object) -> tuple[dict[str, LayoutStat], float]:
    path = "manifest.quantization"
    doc = strict.obj(value, path, ("bits_per_weight", "layouts"))
    bits = strict.number(doc["bits_per_weight"], f"{path}.bits_per_weight", 0.0, 64.0)
    table = strict.obj(doc["layouts"], f"{path}.layouts", (), LAYOUTS)
    if not table:
        raise SchemaError(f"{path}.layouts: empty")
    layouts = {}
    for name, item in table.items():
        p = f"{path}.layouts.{name}"
        stat = strict.obj(item, p, ("tensors", "params", "bytes"))
        layouts[name] = LayoutStat(
            _size(stat["tensors"], f"{p}.tensors", 1 << 32),
            _size(stat["params"], f"{p}.params", MAX_TOTAL),
            _size(stat["bytes"], f"{p}.bytes", MAX_TOTAL),
        )
    return layouts, bits


def _parse_index_refs(value: object, total_layers: int) -> tuple[IndexRef, ...]:
    refs = []
    for i, item in enumerate(strict.array(value, "manifest.index", 1, 1 << 16)):
        p = f"manifest.index[{i}]"
        entry = strict.obj(item, p, ("name", "size", "layers", "globals"))
        refs.append(
            IndexRef(
                check_shard_name(entry["name"], f"{p}.name"),
                _size(entry["size"], f"{p}.size", MAX_SHARD_SIZE),
                parse_layer_range(entry["layers"], f"{p}.layers"),
                strict.boolean(entry["globals"], f"{p}.globals"),
            )
        )
    if sum(r.globals for r in refs) != 1:
        raise SchemaError("manifest.index: exactly one index shard must hold the globals")
    if len({r.name for r in refs}) != len(refs):
        raise SchemaError("manifest.index: an index shard is listed twice")
    covered = sorted(r.layers for r in refs if r.layers is not None)
    expect = 0
    for first, last in covered:
        if first != expect:
            raise SchemaError(f"manifest.index: layer {expect} is not covered exactly once")
        expect = last + 1
    if expect != total_layers:
        raise SchemaError(
            f"manifest.index: layers cover [0, {expect}) but the model has {total_layers}"
        )
    return tuple(refs)


def _check_totals(m: Manifest) -> None:
    stats = m.layouts.values()
    if sum(s.tensors for s in stats) != m.tensor_count:
        raise SizeError("manifest.tensor_count: disagrees with quantization.layouts")
    if sum(s.params for s in stats) != m.param_count:
        raise SizeError("manifest.param_count: disagrees with quantization.layouts")
    weight_bytes = sum(s.bytes for s in stats)
    if abs(m.bits_per_weight - 8 * weight_bytes / m.param_count) > 1e-3:
        raise SizeError("manifest.quantization.bits_per_weight: disagrees with layouts")
    fixed = sum(r.size for r in m.index) + (m.tokenizer.size if m.tokenizer else 0)
    if m.total_size < weight_bytes + fixed:
        raise SizeError("manifest.total_size: smaller than the weights and indexes it holds")
    if m.shard_count * m.max_shard_size < m.total_size:
        raise SizeError("manifest.shard_count: too few shards for total_size")

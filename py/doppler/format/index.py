"""Index shards: where every tensor and every (layer, expert) lives, plus block hashes.

An index shard covers a contiguous range of layers (and, for exactly one of them, the
global tensors). It is self-contained: it lists every weight shard its tensors use, with
that shard's size and per-block SHA-256, so resolving a tensor or an expert and verifying
its bytes needs this one document. ``parse_index`` validates everything a hostile mirror
could get wrong; see docs/rdrr.md section "Index shard" for the byte-level format.
"""

import itertools
from dataclasses import dataclass

from doppler.format import strict
from doppler.format.canonical import global_tensors, layer_tensors
from doppler.format.config import ArchConfig
from doppler.format.errors import HashMismatchError, InvalidRangeError, SchemaError, SizeError
from doppler.format.hashing import HASH_HEX, block_count, sha256_hex
from doppler.format.layouts import LAYOUTS, LayoutError
from doppler.format.names import check_shard_name, check_tensor_name, expert_of, layer_of

INDEX_FORMAT = "rdrr-index"
VERSION = 1
MAX_SHARD_SIZE = 64 * 1024 * 1024
MAX_DIMS = 4
MAX_DIM = 1 << 31
MAX_LAYER = 65535
MAX_EXPERT = 65535
MIN_BLOCK = 4096


@dataclass(frozen=True)
class Span:
    """``size`` bytes at ``offset`` in shard ``shard`` (a 64-hex name)."""

    shard: str
    offset: int
    size: int


@dataclass(frozen=True)
class ShardInfo:
    name: str
    size: int
    blocks: str  # concatenated 64-hex SHA-256 of each block_size block

    def block_hash(self, block: int) -> str:
        return self.blocks[block * HASH_HEX : (block + 1) * HASH_HEX]


@dataclass(frozen=True)
class TensorEntry:
    name: str
    layout: str
    shape: tuple[int, ...]
    spans: tuple[Span, ...]

    @property
    def nbytes(self) -> int:
        return sum(span.size for span in self.spans)


@dataclass(frozen=True)
class ExpertEntry:
    """One routed expert: contiguous byte ranges (one per shard) holding all its tensors,
    which are listed in storage order."""

    layer: int
    expert: int
    spans: tuple[Span, ...]
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class Index:
    block_size: int
    alignment: int
    layers: tuple[int, int] | None
    globals: bool
    shards: dict[str, ShardInfo]
    tensors: dict[str, TensorEntry]
    experts: dict[tuple[int, int], ExpertEntry]

    def covers(self, layer: int) -> bool:
        return self.layers is not None and self.layers[0] <= layer <= self.layers[1]

    def blocks_for(self, span: Span) -> list[tuple[int, int, int, str]]:
        """Blocks to fetch to verify ``span``: (block index, offset, size, sha256 hex)."""
        shard = self.shards[span.shard]
        first = span.offset // self.block_size
        last = (span.offset + span.size - 1) // self.block_size
        return [
            (
                b,
                b * self.block_size,
                min(self.block_size, shard.size - b * self.block_size),
                shard.block_hash(b),
            )
            for b in range(first, last + 1)
        ]


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def check_geometry(block_size: int, alignment: int, where: str) -> None:
    if not (is_power_of_two(block_size) and MIN_BLOCK <= block_size <= MAX_SHARD_SIZE):
        raise SchemaError(f"{where}.block_size: {block_size} is not a power of two in range")
    if not (is_power_of_two(alignment) and 256 <= alignment <= block_size):
        raise SchemaError(f"{where}.alignment: {alignment} is not a power of two in [256, block]")


def parse_index(data: bytes, name: str | None = None, config: ArchConfig | None = None) -> Index:
    """Parse and validate an index shard; if ``name`` is given, its bytes must hash to it.

    With the model's ``config`` (the runtime always has the root manifest first), the
    tensor set must be exactly the config's tensors for the layers covered, with their
    shapes, and every expert of every MoE layer covered must have an entry.
    """
    where = f"index {name}" if name else "index"
    if name is not None:
        check_shard_name(name, where)
        if sha256_hex(data) != name:
            raise HashMismatchError(f"{where}: bytes hash to {sha256_hex(data)}")
    doc = strict.obj(
        strict.load_json(data, where, MAX_SHARD_SIZE),
        where,
        (
            "format",
            "version",
            "block_size",
            "alignment",
            "layers",
            "globals",
            "shards",
            "tensors",
            "experts",
        ),
    )
    if doc["format"] != INDEX_FORMAT:
        raise SchemaError(f"{where}.format: expected {INDEX_FORMAT!r}")
    strict.integer(doc["version"], f"{where}.version", VERSION, VERSION)
    block_size = strict.integer(doc["block_size"], f"{where}.block_size", 1, MAX_SHARD_SIZE)
    alignment = strict.integer(doc["alignment"], f"{where}.alignment", 1, MAX_SHARD_SIZE)
    check_geometry(block_size, alignment, where)
    layers = parse_layer_range(doc["layers"], f"{where}.layers")
    globals_ = strict.boolean(doc["globals"], f"{where}.globals")
    if layers is None and not globals_:
        raise SchemaError(f"{where}: covers neither layers nor globals")
    shard_list = _parse_shards(doc["shards"], f"{where}.shards", block_size)
    tensors = _parse_tensors(doc["tensors"], f"{where}.tensors", shard_list, alignment)
    index = Index(
        block_size, alignment, layers, globals_, {s.name: s for s in shard_list}, tensors, {}
    )
    for entry in tensors.values():
        layer = layer_of(entry.name)
        if (layer is None and not globals_) or (layer is not None and not index.covers(layer)):
            raise SchemaError(f"{where}.tensors.{entry.name}: outside this index's layers")
    experts = _parse_experts(doc["experts"], f"{where}.experts", index, shard_list)
    _check_layout(index, shard_list, experts, where)
    if config is not None:
        _check_against_config(index, experts, config, where)
    return Index(block_size, alignment, layers, globals_, index.shards, tensors, experts)


def parse_layer_range(value: object, path: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = strict.array(value, path, 2, 2)
    first = strict.integer(pair[0], f"{path}[0]", 0, MAX_LAYER)
    last = strict.integer(pair[1], f"{path}[1]", first, MAX_LAYER)
    return first, last


def _parse_shards(value: object, path: str, block_size: int) -> list[ShardInfo]:
    out: list[ShardInfo] = []
    seen: set[str] = set()
    for i, item in enumerate(strict.array(value, path, 1, 1 << 20)):
        p = f"{path}[{i}]"
        entry = strict.obj(item, p, ("name", "size", "blocks"))
        shard = check_shard_name(entry["name"], f"{p}.name")
        if shard in seen:
            raise SchemaError(f"{p}.name: shard {shard} listed twice")
        seen.add(shard)
        size = entry["size"]
        if type(size) is int and not 0 < size <= MAX_SHARD_SIZE:
            raise SizeError(f"{p}.size: {size} is outside [1, {MAX_SHARD_SIZE}]")
        size = strict.integer(size, f"{p}.size", 1, MAX_SHARD_SIZE)
        blocks = strict.string(entry["blocks"], f"{p}.blocks", MAX_SHARD_SIZE)
        want = block_count(size, block_size) * HASH_HEX
        if len(blocks) != want or not all(
            strict.HEX64.fullmatch(blocks[j : j + HASH_HEX]) for j in range(0, want, HASH_HEX)
        ):
            raise SchemaError(f"{p}.blocks: expected {want} lowercase hex digits")
        out.append(ShardInfo(shard, size, blocks))
    return out


def _parse_spans(
    value: object, path: str, shards: list[ShardInfo], alignment: int
) -> tuple[Span, ...]:
    spans = strict.array(value, path, 1, 1 << 16)
    out = []
    for i, item in enumerate(spans):
        p = f"{path}[{i}]"
        triple = strict.array(item, p, 3, 3)
        idx = strict.integer(triple[0], f"{p}[0]", 0, len(shards) - 1)
        offset = strict.integer(triple[1], f"{p}[1]", 0, MAX_SHARD_SIZE)
        size = strict.integer(triple[2], f"{p}[2]", 1, MAX_SHARD_SIZE)
        shard = shards[idx]
        if offset % alignment:
            raise InvalidRangeError(f"{p}: offset {offset} is not {alignment}-aligned")
        if offset + size > shard.size:
            raise InvalidRangeError(
                f"{p}: [{offset}, {offset + size}) exceeds shard size {shard.size}"
            )
        if i < len(spans) - 1 and size % alignment:
            raise InvalidRangeError(f"{p}: a non-final span must be a multiple of {alignment}")
        out.append(Span(shard.name, offset, size))
    return tuple(out)


def _parse_tensors(
    value: object, path: str, shards: list[ShardInfo], alignment: int
) -> dict[str, TensorEntry]:
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: expected an object")
    out: dict[str, TensorEntry] = {}
    for name, item in value.items():
        p = f"{path}.{check_tensor_name(name, path)}"
        entry = strict.obj(item, p, ("layout", "shape", "spans"))
        layout = strict.choice(entry["layout"], f"{p}.layout", LAYOUTS)
        shape = tuple(
            strict.integer(d, f"{p}.shape[{i}]", 1, MAX_DIM)
            for i, d in enumerate(strict.array(entry["shape"], f"{p}.shape", 1, MAX_DIMS))
        )
        spans = _parse_spans(entry["spans"], f"{p}.spans", shards, alignment)
        try:
            want = LAYOUTS[layout].nbytes(shape)
        except LayoutError as exc:
            raise SchemaError(f"{p}.shape: {shape} not representable as {layout}: {exc}") from None
        got = sum(s.size for s in spans)
        if got != want:
            raise SizeError(f"{p}.spans: {got} bytes, but {layout} {list(shape)} needs {want}")
        out[name] = TensorEntry(name, layout, shape, spans)
    return out


def _parse_experts(
    value: object, path: str, index: Index, shards: list[ShardInfo]
) -> dict[tuple[int, int], ExpertEntry]:
    members: dict[tuple[int, int], list[str]] = {}
    for name in index.tensors:
        key = expert_of(name)
        if key is not None:
            members.setdefault(key, []).append(name)
    out: dict[tuple[int, int], ExpertEntry] = {}
    for i, item in enumerate(strict.array(value, path, 0, 1 << 22)):
        p = f"{path}[{i}]"
        entry = strict.obj(item, p, ("layer", "expert", "spans"))
        layer = strict.integer(entry["layer"], f"{p}.layer", 0, MAX_LAYER)
        expert = strict.integer(entry["expert"], f"{p}.expert", 0, MAX_EXPERT)
        if (layer, expert) in out:
            raise SchemaError(f"{p}: expert ({layer}, {expert}) listed twice")
        if not index.covers(layer):
            raise SchemaError(f"{p}.layer: {layer} is outside this index's layers")
        spans = _parse_spans(entry["spans"], f"{p}.spans", shards, index.alignment)
        names = members.pop((layer, expert), None)
        if not names:
            raise SchemaError(f"{p}: expert ({layer}, {expert}) has no tensors")
        for name in names:
            for span in index.tensors[name].spans:
                if not any(_contains(outer, span) for outer in spans):
                    raise InvalidRangeError(f"{p}: tensor {name} lies outside the expert's spans")
        order = {s.name: i for i, s in enumerate(shards)}
        names.sort(
            key=lambda n: (order[index.tensors[n].spans[0].shard], index.tensors[n].spans[0].offset)
        )
        out[(layer, expert)] = ExpertEntry(layer, expert, spans, tuple(names))
    if members:
        layer, expert = next(iter(members))
        raise SchemaError(f"{path}: expert ({layer}, {expert}) has tensors but no entry")
    return out


def _check_against_config(index: Index, experts: dict, cfg: ArchConfig, where: str) -> None:
    expected = global_tensors(cfg) if index.globals else {}
    layers = range(index.layers[0], index.layers[1] + 1) if index.layers else range(0)
    if layers.stop > cfg.total_layers:
        raise SchemaError(f"{where}.layers: the model has {cfg.total_layers} layers")
    for layer in layers:
        expected.update(layer_tensors(cfg, layer))
    for name, shape in expected.items():
        entry = index.tensors.get(name)
        if entry is None:
            raise SchemaError(f"{where}.tensors: missing {name}, which the config requires")
        if entry.shape != shape:
            raise SchemaError(
                f"{where}.tensors.{name}: shape {list(entry.shape)}, config implies {list(shape)}"
            )
    extra = sorted(index.tensors.keys() - expected.keys())
    if extra:
        raise SchemaError(f"{where}.tensors.{extra[0]}: not a tensor of this config")
    wanted = (
        sum(cfg.moe.num_experts for layer in layers if cfg.is_moe_layer(layer)) if (cfg.moe) else 0
    )
    if len(experts) != wanted:
        raise SchemaError(f"{where}.experts: {len(experts)} entries, the config needs {wanted}")


def _contains(outer: Span, inner: Span) -> bool:
    return (
        outer.shard == inner.shard
        and outer.offset <= inner.offset
        and inner.offset + inner.size <= outer.offset + outer.size
    )


def _check_layout(
    index: Index, shards: list[ShardInfo], experts: dict[tuple[int, int], ExpertEntry], where: str
) -> None:
    """No overlaps; dense and expert tensors never share a shard; one layer per expert shard;
    every listed shard is used."""
    ranges: dict[str, list[tuple[int, int, str]]] = {s.name: [] for s in shards}
    kinds: dict[str, object] = {}
    for entry in index.tensors.values():
        key = expert_of(entry.name)
        kind = "dense" if key is None else ("expert", key[0])
        for span in entry.spans:
            ranges[span.shard].append((span.offset, span.offset + span.size, entry.name))
            if kinds.setdefault(span.shard, kind) != kind:
                raise InvalidRangeError(
                    f"{where}: shard {span.shard} mixes {kinds[span.shard]} and {kind} tensors"
                )
    for shard, items in ranges.items():
        if not items:
            raise SchemaError(f"{where}.shards: shard {shard} holds no tensor of this index")
        _check_disjoint(sorted(items), f"{where}: shard {shard}")
    expert_ranges: dict[str, list[tuple[int, int, str]]] = {}
    for entry in experts.values():
        for span in entry.spans:
            if kinds.get(span.shard) != ("expert", entry.layer):
                raise InvalidRangeError(
                    f"{where}: expert ({entry.layer}, {entry.expert}) range in a shard that "
                    f"is not an expert shard of layer {entry.layer}"
                )
            expert_ranges.setdefault(span.shard, []).append(
                (span.offset, span.offset + span.size, f"expert {entry.layer}.{entry.expert}")
            )
    for shard, items in expert_ranges.items():
        _check_disjoint(sorted(items), f"{where}: shard {shard}")


def _check_disjoint(items: list[tuple[int, int, str]], where: str) -> None:
    for (_, end, first), (start, _, second) in itertools.pairwise(items):
        if start < end:
            raise InvalidRangeError(f"{where}: {first} and {second} overlap")


def index_document(
    *,
    block_size: int,
    alignment: int,
    layers: tuple[int, int] | None,
    globals_: bool,
    shards: list[ShardInfo],
    tensors: list[TensorEntry],
    experts: list[ExpertEntry],
) -> dict:
    """The JSON document of an index shard (the writer's side of ``parse_index``)."""
    position = {s.name: i for i, s in enumerate(shards)}

    def spans(items: tuple[Span, ...]) -> list[list[int]]:
        return [[position[s.shard], s.offset, s.size] for s in items]

    return {
        "format": INDEX_FORMAT,
        "version": VERSION,
        "block_size": block_size,
        "alignment": alignment,
        "layers": list(layers) if layers is not None else None,
        "globals": globals_,
        "shards": [{"name": s.name, "size": s.size, "blocks": s.blocks} for s in shards],
        "tensors": {
            t.name: {"layout": t.layout, "shape": list(t.shape), "spans": spans(t.spans)}
            for t in tensors
        },
        "experts": [
            {"layer": e.layer, "expert": e.expert, "spans": spans(e.spans)} for e in experts
        ],
    }

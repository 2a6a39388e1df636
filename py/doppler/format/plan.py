"""Shard packing plan: which bytes of which tensor go where, decided before any I/O.

Rules (docs/rdrr.md "Packing"):

* every tensor starts at an ``alignment``-aligned offset; shards are at most ``max_shard``;
* a tensor that fits in a shard never straddles one; a larger one fills shards in order
  (each non-final piece ends at the shard end, so pieces stay aligned);
* dense and expert tensors never share a shard; an expert shard holds experts of one layer;
* all tensors of one expert are contiguous and inside one shard, unless the expert alone is
  larger than a shard (then it starts a fresh shard and continues across the next ones);
* layers are grouped into index groups (one index shard each) by an estimate of the index
  size, and no weight shard crosses a group, so each index shard is self-contained.
"""

from dataclasses import dataclass, field

from doppler.format.hashing import HASH_HEX
from doppler.format.names import expert_of, layer_of

ALIGNMENT = 256
MAX_SHARD = 64 * 1024 * 1024
BLOCK_SIZE = 1024 * 1024
INDEX_BUDGET = 512 * 1024  # estimated bytes of index JSON per group before starting another

# Rough JSON bytes per index record, used only to decide where groups end.
_TENSOR_JSON = 130
_EXPERT_JSON = 60
_SHARD_JSON = 110


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Piece:
    """``size`` bytes of ``tensor`` starting at ``tensor_offset``, written at ``offset``."""

    tensor: str
    tensor_offset: int
    offset: int
    size: int


@dataclass
class ShardPlan:
    group: int
    kind: str  # "dense" or "expert"
    layer: int | None  # the layer of an expert shard
    pieces: list[Piece] = field(default_factory=list)
    size: int = 0


@dataclass
class GroupPlan:
    layers: tuple[int, int] | None
    globals: bool
    shards: list[int] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    experts: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Plan:
    alignment: int
    max_shard: int
    block_size: int
    specs: dict[str, TensorSpec]
    shards: list[ShardPlan]
    groups: list[GroupPlan]
    spans: dict[str, list[tuple[int, int, int]]]  # tensor -> (shard, offset, size)
    expert_spans: dict[tuple[int, int], list[tuple[int, int, int]]]


def align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def make_plan(
    specs: list[TensorSpec],
    total_layers: int,
    *,
    alignment: int = ALIGNMENT,
    max_shard: int = MAX_SHARD,
    block_size: int = BLOCK_SIZE,
    index_budget: int = INDEX_BUDGET,
) -> Plan:
    """Pack ``specs`` (any order) for a model with ``total_layers`` layers."""
    units = _units(specs)
    plan = Plan(alignment, max_shard, block_size, {s.name: s for s in specs}, [], [], {}, {})
    packer = _Packer(plan)
    for group in _groups(units, total_layers, block_size, max_shard, index_budget):
        plan.groups.append(group)
        keys = ([None] if group.globals else []) + (
            list(range(group.layers[0], group.layers[1] + 1)) if group.layers else []
        )
        for key in keys:
            dense, experts = units.get(key, ([], {}))
            for spec in dense:
                packer.dense(spec)
            for expert, members in sorted(experts.items()):
                packer.expert(key, expert, members)
        packer.current = None  # no weight shard crosses an index group
    return plan


def _units(
    specs: list[TensorSpec],
) -> dict[int | None, tuple[list[TensorSpec], dict[int, list[TensorSpec]]]]:
    """Tensors by layer (None = global): dense list, and experts' member lists in order."""
    units: dict[int | None, tuple[list[TensorSpec], dict[int, list[TensorSpec]]]] = {}
    for spec in specs:
        key = expert_of(spec.name)
        layer = key[0] if key else layer_of(spec.name)
        dense, experts = units.setdefault(layer, ([], {}))
        if key is None:
            dense.append(spec)
        else:
            experts.setdefault(key[1], []).append(spec)
    return units


def _groups(
    units: dict, total_layers: int, block_size: int, max_shard: int, budget: int
) -> list[GroupPlan]:
    def estimate(key: int | None) -> int:
        dense, experts = units.get(key, ([], {}))
        specs = dense + [s for members in experts.values() for s in members]
        nbytes = sum(s.nbytes for s in specs)
        shards = nbytes // max_shard + 2
        return (
            _TENSOR_JSON * len(specs)
            + _EXPERT_JSON * len(experts)
            + HASH_HEX * (nbytes // block_size + shards)
            + _SHARD_JSON * shards
        )

    groups = [GroupPlan(None, True)]
    used = estimate(None)
    for layer in range(total_layers):
        cost = estimate(layer)
        group = groups[-1]
        if group.layers is not None and used + cost > budget:
            group = GroupPlan(None, False)
            groups.append(group)
            used = 0
        group.layers = (layer, layer) if group.layers is None else (group.layers[0], layer)
        used += cost
    return groups


class _Packer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.current: ShardPlan | None = None

    def _open(self, kind: str, layer: int | None) -> ShardPlan:
        shard = ShardPlan(len(self.plan.groups) - 1, kind, layer)
        self.plan.shards.append(shard)
        self.plan.groups[-1].shards.append(len(self.plan.shards) - 1)
        self.current = shard
        return shard

    def _shard_for(self, kind: str, layer: int | None, nbytes: int) -> ShardPlan:
        """The open shard if it is of this kind and ``nbytes`` fits (or cannot fit anywhere)."""
        shard = self.current
        if shard is None or shard.kind != kind or shard.layer != layer:
            return self._open(kind, layer)
        start = align(shard.size, self.plan.alignment)
        fits = start + nbytes <= self.plan.max_shard
        if fits or (
            nbytes > self.plan.max_shard and kind == "dense" and start < self.plan.max_shard
        ):
            return shard
        return self._open(kind, layer)

    def _place(
        self, spec: TensorSpec, kind: str, layer: int | None, spans: list[tuple[int, int, int]]
    ) -> None:
        """Append ``spec`` at the next aligned offset, continuing into new shards if needed."""
        done = 0
        while done < spec.nbytes:
            shard = self.current
            assert shard is not None
            start = align(shard.size, self.plan.alignment)
            if start >= self.plan.max_shard:
                shard = self._open(kind, layer)
                start = 0
            size = min(spec.nbytes - done, self.plan.max_shard - start)
            shard.pieces.append(Piece(spec.name, done, start, size))
            shard.size = start + size
            index = len(self.plan.shards) - 1
            self.plan.spans.setdefault(spec.name, []).append((index, start, size))
            _merge(spans, index, start, size)
            done += size
        self.plan.groups[-1].tensors.append(spec.name)

    def dense(self, spec: TensorSpec) -> None:
        self._shard_for("dense", None, spec.nbytes)
        self._place(spec, "dense", None, [])

    def expert(self, layer: int, expert: int, members: list[TensorSpec]) -> None:
        total = 0
        for spec in members:
            total = align(total, self.plan.alignment) + spec.nbytes
        self._shard_for("expert", layer, total)
        spans: list[tuple[int, int, int]] = []
        for spec in members:
            self._place(spec, "expert", layer, spans)
        self.plan.expert_spans[(layer, expert)] = spans
        self.plan.groups[-1].experts.append((layer, expert))


def _merge(spans: list[tuple[int, int, int]], shard: int, offset: int, size: int) -> None:
    """Extend the last range if contiguous in the same shard (alignment gaps included)."""
    if spans and spans[-1][0] == shard:
        first = spans[-1][1]
        spans[-1] = (shard, first, offset + size - first)
    else:
        spans.append((shard, offset, size))

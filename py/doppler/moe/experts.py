"""The routed experts of a model as the pager sees them: where each one's bytes are, and the
slot geometry (where gate, up and down sit inside one expert's bytes).

The converter stores each expert's tensors contiguously (docs/rdrr.md "Packing"), so an
expert's span is copied verbatim into a GPU slot and the kernels address its projections by
their offsets within it; those offsets must be the same for every expert of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from doppler.format.config import ArchConfig
from doppler.format.errors import FormatError
from doppler.format.index import Index, Span, TensorEntry
from doppler.model.moe_ops import ExpertGeometry, Projection

Key = tuple[int, int]  # (layer, expert)
PROJECTIONS = ("gate", "up", "down")
SLOT_ALIGN = 256


@dataclass(frozen=True)
class ExpertSource:
    """An expert's bytes: its spans in order and the index shard holding their block hashes."""

    spans: tuple[Span, ...]
    index: Index

    @property
    def nbytes(self) -> int:
        return sum(span.size for span in self.spans)


@dataclass(frozen=True)
class ExpertCatalog:
    geometry: ExpertGeometry
    sources: dict[Key, ExpertSource]
    layers: tuple[int, ...]  # the MoE layers, in order
    num_experts: int
    top_k: int

    @property
    def total_bytes(self) -> int:
        """GPU bytes of every expert in its slot."""
        return len(self.sources) * self.geometry.slot_bytes


def catalog(cfg: ArchConfig, indexes: list[Index]) -> ExpertCatalog | None:
    """The experts of ``cfg``'s MoE layers, or None for a dense model."""
    moe = cfg.moe
    if moe is None:
        return None
    tensors: dict[str, TensorEntry] = {}
    entries: dict[Key, tuple[Span, ...]] = {}
    owner: dict[Key, Index] = {}
    for index in indexes:
        tensors.update(index.tensors)
        for key, entry in index.experts.items():
            entries[key], owner[key] = entry.spans, index
    layers = tuple(layer for layer in range(cfg.num_layers) if moe.is_moe_layer(layer))
    sources: dict[Key, ExpertSource] = {}
    geometry: ExpertGeometry | None = None
    for layer in layers:
        for expert in range(moe.num_experts):
            key = (layer, expert)
            if key not in entries:
                raise FormatError(f"expert {key}: missing from every index shard")
            sources[key] = ExpertSource(entries[key], owner[key])
            found = _geometry(key, entries[key], tensors)
            if geometry is None:
                geometry = found
            elif found != geometry:
                raise FormatError(
                    f"expert {key}: its tensors sit differently from expert {(layers[0], 0)}'s"
                    " (every expert must share one layout to share GPU slots)"
                )
    if geometry is None:
        return None
    return ExpertCatalog(geometry, sources, layers, moe.num_experts, moe.top_k)


def _geometry(key: Key, spans: tuple[Span, ...], tensors: dict[str, TensorEntry]) -> ExpertGeometry:
    layer, expert = key
    found = {}
    for proj in PROJECTIONS:
        name = f"layers.{layer}.experts.{expert}.ffn.{proj}.weight"
        entry = tensors.get(name)
        if entry is None:
            raise FormatError(f"{name}: missing from every index shard")
        start = _position(spans, entry.spans[0])
        if start is None or start % 4:
            raise FormatError(f"{name}: not inside its expert's bytes at a word boundary")
        rows, cols = entry.shape
        found[proj] = Projection(entry.layout, rows, cols, start // 4)
    if found["gate"].layout != found["up"].layout:
        raise FormatError(f"expert {key}: gate and up must share a layout")
    size = sum(span.size for span in spans)
    return ExpertGeometry(
        found["gate"], found["up"], found["down"], -(-size // SLOT_ALIGN) * SLOT_ALIGN
    )


def _position(spans: tuple[Span, ...], target: Span) -> int | None:
    """Byte position of ``target``'s start within the concatenation of ``spans``."""
    position = 0
    for span in spans:
        if span.shard == target.shard and span.offset <= target.offset < span.offset + span.size:
            return position + target.offset - span.offset
        position += span.size
    return None

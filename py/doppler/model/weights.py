"""Weights on the GPU: each tensor in one buffer, or in row-aligned parts when it exceeds the
device's binding limit (e.g. Gemma 3's 170 MiB embedding on a 128 MiB binding limit).

Kernels run per part: a part is whole rows ``[row0, row0 + rows)`` of the tensor, so any
row-wise kernel (matrix-vector, gather) works on a part as if it were the whole tensor.

Tensors that one decode dispatch reads together (a layer's q/k/v, a gated FFN's gate/up)
share one buffer where they can, back to back: each is still a weight of its own (bound at
its offset), and the group is one more weight over the whole buffer (see ``FUSED``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from doppler.format.index import Span, TensorEntry
from doppler.format.layouts import get_layout
from doppler.gpu.budget import GpuBudget
from doppler.jsffi import JsProxy, js


@dataclass
class WeightPart:
    buffer: JsProxy
    row0: int
    rows: int
    start: int  # byte offset of this part within the tensor's stored bytes
    nbytes: int
    offset: int = 0  # byte offset of this part within ``buffer`` (fused tensors)


@dataclass
class Weight:
    name: str
    layout: str
    shape: tuple[int, ...]
    parts: list[WeightPart]

    @property
    def rows(self) -> int:
        return rows_of(self.shape)

    @property
    def row_len(self) -> int:
        return self.shape[-1]


def row_parts(entry: TensorEntry, binding_limit: int) -> list[tuple[int, int, int, int]]:
    """Split a tensor into (row0, rows, start, nbytes) parts that each fit one binding."""
    layout = get_layout(entry.layout)
    rows = rows_of(entry.shape)
    row_bytes = layout.row_bytes(entry.shape[-1])
    per_part = max(1, binding_limit // row_bytes)
    return [
        (row0, min(per_part, rows - row0), row0 * row_bytes, min(per_part, rows - row0) * row_bytes)
        for row0 in range(0, rows, per_part)
    ]


def allocate(entry: TensorEntry, budget: GpuBudget, binding_limit: int) -> Weight:
    parts = [
        WeightPart(_buffer(budget, nbytes, entry.name), row0, rows, start, nbytes)
        for row0, rows, start, nbytes in row_parts(entry, binding_limit)
    ]
    return Weight(entry.name, entry.layout, entry.shape, parts)


# (fused weight, its members): the suffixes after a layer's (or a shared expert's) prefix
FUSED = (("attn.qkv", ("attn.q", "attn.k", "attn.v")), ("ffn.gate_up", ("ffn.gate", "ffn.up")))


def fused_groups(
    entries: dict[str, TensorEntry], binding_limit: int, offset_alignment: int
) -> dict[str, list[str]]:
    """Fused weight name -> member names, for the groups that can share one buffer: same
    layout and row length, one binding for all, every member at a bindable offset."""
    groups: dict[str, list[str]] = {}
    for name in entries:
        for fused, members in FUSED:
            suffix = f".{members[0]}.weight"
            if not name.endswith(suffix):
                continue
            prefix = name[: -len(suffix)]
            names = [f"{prefix}.{member}.weight" for member in members]
            if all(n in entries for n in names):
                group = [entries[n] for n in names]
                sizes = [_nbytes(e) for e in group]
                same = {(e.layout, e.shape[-1]) for e in group}
                aligned = all(size % offset_alignment == 0 for size in sizes[:-1])
                if len(same) == 1 and aligned and sum(sizes) <= binding_limit:
                    groups[f"{prefix}.{fused}.weight"] = names
    return groups


def allocate_fused(
    name: str, entries: list[TensorEntry], budget: GpuBudget
) -> tuple[Weight, list[Weight]]:
    """One buffer for ``entries`` back to back: the group as one weight (rows of all the
    members in order), and each member as a weight at its offset."""
    sizes = [_nbytes(e) for e in entries]
    buffer = _buffer(budget, sum(sizes), name)
    members, offset, row0 = [], 0, 0
    for entry, size in zip(entries, sizes, strict=True):
        rows = rows_of(entry.shape)
        part = WeightPart(buffer, 0, rows, 0, size, offset)
        members.append(Weight(entry.name, entry.layout, entry.shape, [part]))
        offset, row0 = offset + size, row0 + rows
    whole = WeightPart(buffer, 0, row0, 0, offset)
    first = entries[0]
    return Weight(name, first.layout, (row0, first.shape[-1]), [whole]), members


def rows_of(shape: tuple[int, ...]) -> int:
    """Rows of a tensor stored row by row (a vector is one row)."""
    return prod(shape[:-1]) if len(shape) > 1 else 1


def _nbytes(entry: TensorEntry) -> int:
    return rows_of(entry.shape) * get_layout(entry.layout).row_bytes(entry.shape[-1])


def _buffer(budget: GpuBudget, nbytes: int, label: str) -> JsProxy:
    usage = js.GPUBufferUsage.STORAGE | js.GPUBufferUsage.COPY_DST
    return budget.create_buffer(nbytes, usage, "weights", label)


@dataclass(frozen=True)
class Piece:
    """Copy ``size`` bytes at ``shard_offset`` of a shard to ``offset`` in ``buffer``."""

    shard_offset: int
    buffer: JsProxy
    offset: int
    size: int


def pieces(entry: TensorEntry, weight: Weight) -> dict[str, list[Piece]]:
    """Map a tensor's spans (its bytes across shards, in order) onto its GPU parts."""
    out: dict[str, list[Piece]] = {}
    position = 0
    for span in entry.spans:
        out.setdefault(span.shard, []).extend(_span_pieces(span, position, weight))
        position += span.size
    return out


def _span_pieces(span: Span, position: int, weight: Weight) -> list[Piece]:
    result = []
    for part in weight.parts:
        lo = max(position, part.start)
        hi = min(position + span.size, part.start + part.nbytes)
        if lo < hi:
            offset = part.offset + lo - part.start
            result.append(Piece(span.offset + lo - position, part.buffer, offset, hi - lo))
    return result

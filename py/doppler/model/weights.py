"""Weights on the GPU: each tensor in one buffer, or in row-aligned parts when it exceeds the
device's binding limit (e.g. Gemma 3's 170 MiB embedding on a 128 MiB binding limit).

Kernels run per part: a part is whole rows ``[row0, row0 + rows)`` of the tensor, so any
row-wise kernel (matrix-vector, gather) works on a part as if it were the whole tensor.
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


@dataclass
class Weight:
    name: str
    layout: str
    shape: tuple[int, ...]
    parts: list[WeightPart]

    @property
    def rows(self) -> int:
        return prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    @property
    def row_len(self) -> int:
        return self.shape[-1]


def row_parts(entry: TensorEntry, binding_limit: int) -> list[tuple[int, int, int, int]]:
    """Split a tensor into (row0, rows, start, nbytes) parts that each fit one binding."""
    layout = get_layout(entry.layout)
    rows = prod(entry.shape[:-1]) if len(entry.shape) > 1 else 1
    row_bytes = layout.row_bytes(entry.shape[-1])
    per_part = max(1, binding_limit // row_bytes)
    return [
        (row0, min(per_part, rows - row0), row0 * row_bytes, min(per_part, rows - row0) * row_bytes)
        for row0 in range(0, rows, per_part)
    ]


def allocate(entry: TensorEntry, budget: GpuBudget, binding_limit: int) -> Weight:
    usage = js.GPUBufferUsage.STORAGE | js.GPUBufferUsage.COPY_DST
    parts = [
        WeightPart(
            budget.create_buffer(nbytes, usage, "weights", entry.name), row0, rows, start, nbytes
        )
        for row0, rows, start, nbytes in row_parts(entry, binding_limit)
    ]
    return Weight(entry.name, entry.layout, entry.shape, parts)


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
            result.append(Piece(span.offset + lo - position, part.buffer, lo - part.start, hi - lo))
    return result

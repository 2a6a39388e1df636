"""On-GPU weight layouts: GGUF block bytes re-arranged so that every kernel read is aligned.

Pure Python (the runtime reads these tables in Pyodide). The byte-level spec, with decode
formulas for kernel authors, is ``docs/layouts.md``; this module is its executable form.

Every layout shares one outer structure so one matrix-vector kernel family serves them all:
a tensor of logical shape ``(..., row_len)`` is ``prod(shape[:-1])`` self-contained rows,
each ``row_bytes(row_len)`` long (a multiple of 16). A row is the concatenation of *planes*;
plane ``p`` holds one entry of ``p.block_bytes`` bytes per block of ``block_elems`` weights,
copied verbatim from a byte range (``p.src``) of the GGUF block. The planes partition the GGUF
block, so the stored bits are exactly GGUF's and dequantization is exact by construction.
Quant-bit planes come first and have 16-byte entries (one or more ``vec4<u32>`` loads);
scale planes follow, word aligned; a 2-byte entry is one f16 of a pair packed in a u32.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from math import prod
from operator import index

from doppler.errors import DopplerError

ROW_ALIGN = 16
"""Every row starts (and so every tensor ends) on a 16-byte boundary: ``vec4<u32>`` loads."""

WORD = 4
"""Every plane starts on a word boundary; WGSL storage buffers are arrays of u32."""


class LayoutError(DopplerError):
    """A layout name, GGUF type or tensor shape that no layout can represent."""

    code = "bad_layout"


class UnknownLayoutError(LayoutError):
    """The layout name or GGUF type name is not one of ``LAYOUTS`` (named in the message)."""


class LayoutShapeError(LayoutError):
    """The shape is empty, non-positive, or its rows do not split into whole blocks."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Plane:
    """One per-block field group of a row, stored contiguously for all blocks of the row."""

    name: str
    block_bytes: int
    """Bytes per block: 2 (half of a u32 word: block ``b`` is half ``b & 1`` of word
    ``b >> 1``), 4 (one u32), or a multiple of 16 (whole ``vec4<u32>`` loads)."""
    src: tuple[int, int]
    """Byte range ``[start, end)`` of the GGUF block (or float element) this entry copies."""
    description: str

    @property
    def align(self) -> int:
        """Alignment of the plane's start within a row: 16 for vec4 planes, else a word."""
        return ROW_ALIGN if self.block_bytes % ROW_ALIGN == 0 else WORD

    def span(self, blocks: int) -> int:
        """Bytes the plane occupies in one row of ``blocks`` blocks (padded to a word)."""
        return _round_up(blocks * self.block_bytes, WORD)


@dataclass(frozen=True)
class Layout:
    """How one tensor type sits in GPU memory; see ``docs/layouts.md`` for the byte spec."""

    name: str
    block_elems: int
    planes: tuple[Plane, ...]
    exact_from: tuple[str, ...]
    """GGUF type names whose tensors this layout stores bit-exactly."""
    description: str

    @property
    def block_bytes(self) -> int:
        """Stored bytes per block, summed over planes (equals the GGUF block size)."""
        return sum(p.block_bytes for p in self.planes)

    def blocks_per_row(self, row_len: int) -> int:
        row_len = _split(self.name, (row_len,))[1]
        if row_len % self.block_elems:
            raise LayoutShapeError(
                f"{self.name}: row length {row_len} is not a multiple of the block size "
                f"{self.block_elems}"
            )
        return row_len // self.block_elems

    def plane_offsets(self, shape: tuple[int, ...]) -> dict[str, int]:
        """Byte offset of each plane from the start of a row (the same for every row)."""
        blocks = self.blocks_per_row(_split(self.name, shape)[1])
        offsets: dict[str, int] = {}
        end = 0
        for plane in self.planes:
            offsets[plane.name] = _round_up(end, plane.align)
            end = offsets[plane.name] + plane.span(blocks)
        return offsets

    def row_bytes(self, row_len: int) -> int:
        """Stride between rows: the planes of one row, padded to ``ROW_ALIGN``."""
        blocks = self.blocks_per_row(row_len)
        last = self.planes[-1]
        end = self.plane_offsets((row_len,))[last.name] + last.span(blocks)
        return _round_up(end, ROW_ALIGN)

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Stored bytes of a row-major tensor of this logical shape (last dim is the row)."""
        rows, row_len = _split(self.name, shape)
        return rows * self.row_bytes(row_len)

    def byte_offset(self, shape: tuple[int, ...], row: int, block: int, plane: str) -> int:
        """Where block ``block`` of row ``row`` keeps its ``plane`` entry, from the tensor start.

        For a 2-byte plane the kernel loads the u32 word at ``offset & ~3`` and takes half
        ``block & 1``.
        """
        rows, row_len = _split(self.name, shape)
        blocks = self.blocks_per_row(row_len)
        if not (0 <= row < rows and 0 <= block < blocks):
            raise LayoutShapeError(
                f"{self.name}: (row {row}, block {block}) outside {rows} rows x {blocks} blocks"
            )
        offsets = self.plane_offsets(shape)
        if plane not in offsets:
            raise UnknownLayoutError(f"{self.name}: no plane {plane!r}; planes: {list(offsets)}")
        width = next(p.block_bytes for p in self.planes if p.name == plane)
        return row * self.row_bytes(row_len) + offsets[plane] + block * width


def _split(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row_len) of a logical row-major shape, rejecting anything that is not one."""
    dims: tuple[int, ...] = ()
    if isinstance(shape, (tuple, list)) and not any(isinstance(d, bool) for d in shape):
        with suppress(TypeError):  # index() takes numpy ints and refuses floats
            dims = tuple(index(d) for d in shape)
    if not dims or min(dims) < 1:
        raise LayoutShapeError(
            f"{name}: shape must be a non-empty tuple of positive ints: {shape!r}"
        )
    return prod(dims[:-1]), dims[-1]


def _float(name: str, size: int, gguf: str, decode: str) -> Layout:
    values = Plane("values", size, (0, size), decode)
    text = f"{name} elements, {WORD // size} per u32 word, rows padded to {ROW_ALIGN} bytes"
    return Layout(name, 1, (values,), (gguf,), text)


def _half(name: str, src: int) -> Plane:
    return Plane(name, 2, (src, src + 2), f"f16 {name}, two blocks per u32 (unpack2x16float)")


def _bits(name: str, size: int, src: int, what: str) -> Plane:
    return Plane(name, size, (src, src + size), what)


_NIBBLES = "byte j: low nibble = element j, high nibble = element j+16"
_KQUANT_HEAD = "d f16 @0, dmin f16 @2, 12 bytes of 6-bit sub-block scales/mins @4"

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        _float("f32", 4, "F32", "IEEE f32"),
        _float("f16", 2, "F16", "IEEE f16; element 2i+k is unpack2x16float(word i)[k]"),
        _float("bf16", 2, "BF16", "bf16; element 2i+k is bitcast<f32>((word i >> 16k) << 16)"),
        Layout(
            "q8_0",
            32,
            (_bits("qs", 32, 2, "32 x int8, element j in byte j"), _half("d", 0)),
            ("Q8_0",),
            "32-weight blocks: int8 plane (2 x vec4 per block), then f16 scales d; w = d*q",
        ),
        Layout(
            "q4_0",
            32,
            (_bits("qs", 16, 2, _NIBBLES), _half("d", 0)),
            ("Q4_0",),
            "32-weight blocks: nibble plane (1 vec4 per block), then f16 scales d; w = d*(q-8)",
        ),
        Layout(
            "q4_1",
            32,
            (
                _bits("qs", 16, 4, _NIBBLES),
                _bits("dm", 4, 0, "u32 per block: f16 d (low half), f16 m (high half)"),
            ),
            ("Q4_1",),
            "32-weight blocks: nibble plane, then (d, m) f16 pairs; w = d*q + m",
        ),
        Layout(
            "q5_0",
            32,
            (
                _bits("qs", 16, 6, _NIBBLES),
                _bits("qh", 4, 2, "u32 per block: bit j = 5th bit of element j"),
                _half("d", 0),
            ),
            ("Q5_0",),
            "32-weight blocks: nibble plane, high-bit words, f16 scales d; w = d*(q-16)",
        ),
        Layout(
            "q5_1",
            32,
            (
                _bits("qs", 16, 8, _NIBBLES),
                _bits("qh", 4, 4, "u32 per block: bit j = 5th bit of element j"),
                _bits("dm", 4, 0, "u32 per block: f16 d (low half), f16 m (high half)"),
            ),
            ("Q5_1",),
            "32-weight blocks: nibble plane, high-bit words, (d, m) f16 pairs; w = d*q + m",
        ),
        Layout(
            "q4_k",
            256,
            (_bits("block", 144, 0, f"GGUF block: {_KQUANT_HEAD}, qs[128] @16"),),
            ("Q4_K",),
            "256-weight super-blocks kept whole (144 B = 9 x vec4); w = d*sc*q - dmin*m",
        ),
        Layout(
            "q5_k",
            256,
            (_bits("block", 176, 0, f"GGUF block: {_KQUANT_HEAD}, qh[32] @16, qs[128] @48"),),
            ("Q5_K",),
            "256-weight super-blocks kept whole (176 B = 11 x vec4); w = d*sc*q - dmin*m",
        ),
        Layout(
            "q6_k",
            256,
            (
                _bits("body", 208, 0, "GGUF block minus d: ql[128] @0, qh[64] @128, int8 sc @192"),
                _half("d", 208),
            ),
            ("Q6_K",),
            "256-weight super-blocks: 208-byte body (13 x vec4), then f16 scales d; "
            "w = d*sc*(q-32)",
        ),
    )
}

GGUF_LAYOUTS: dict[str, str] = {
    gguf: layout.name for layout in LAYOUTS.values() for gguf in layout.exact_from
}
"""GGUF type name (``GGMLQuantizationType.name``) -> name of the layout storing it exactly."""


def get_layout(name: str) -> Layout:
    """The layout called ``name``, or a typed error listing the known ones."""
    if name not in LAYOUTS:
        raise UnknownLayoutError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def layout_for_gguf(type_name: str) -> Layout:
    """The layout that stores GGUF tensors of ``type_name`` (e.g. ``"Q4_K"``) exactly."""
    if type_name not in GGUF_LAYOUTS:
        raise UnknownLayoutError(
            f"GGUF type {type_name!r} has no layout; supported: {', '.join(GGUF_LAYOUTS)}"
        )
    return LAYOUTS[GGUF_LAYOUTS[type_name]]

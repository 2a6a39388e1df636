"""Pack GGUF tensors and float arrays into DOPPLER's on-GPU layouts, and decode them back.

CPython only (numpy, gguf). ``dequantize`` decodes the stored planes directly with the u32
word operations a WGSL kernel uses, so it is the reference those kernels are tested
against; the tests hold it bit-identical to ``gguf.quants.dequantize``.

Shapes are logical and row-major: ``(..., row_len)``. ``GGUFReader`` reports
``ReaderTensor.shape`` in GGML's ``ne`` order (innermost dimension first), i.e. reversed;
pass ``shape_from_ne(tensor.shape)``. Its ``ReaderTensor.data`` is already row-major and is
accepted as ``raw`` whatever its dtype (uint8 for quantized types, float16/float32 for floats).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gguf_quants

from doppler.errors import DopplerError
from doppler.format.layouts import Layout, get_layout, layout_for_gguf

FLOAT_DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "bf16": np.dtype("<u2"),  # numpy has no bfloat16: bf16 travels as its 16-bit pattern
}
QUANTIZABLE = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
"""Layouts ``quantize`` can produce: those whose GGUF type ``gguf.quants`` can quantize."""


class PackError(DopplerError):
    """Input that cannot be packed into or decoded from a layout."""

    code = "bad_tensor"


class DtypeMismatchError(PackError):
    """The array's dtype is not the one named (we never widen or narrow silently)."""


class RawSizeError(PackError):
    """The raw bytes do not match the logical shape (size, or a reversed ``ne`` shape)."""


class UnsupportedQuantError(PackError):
    """``quantize`` was asked for a layout it cannot produce, or for non-finite weights."""


def shape_from_ne(ne: Sequence[int]) -> tuple[int, ...]:
    """Logical row-major shape from GGML's ``ne`` order (as ``GGUFReader`` reports it)."""
    return tuple(int(d) for d in reversed(list(ne)))


def pack_gguf(
    ggml_type_name: str, raw: np.ndarray, shape: tuple[int, ...]
) -> tuple[str, np.ndarray]:
    """(layout name, packed uint8 bytes) for one GGUF tensor's data of logical ``shape``."""
    layout = layout_for_gguf(ggml_type_name)
    rows, row_len = _rows(layout, shape)
    elems, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type_name]]
    blocks = row_len // elems
    if raw.ndim == len(shape) > 1 and tuple(raw.shape[:-1]) != tuple(shape[:-1]):
        raise RawSizeError(
            f"{ggml_type_name}: raw data has shape {raw.shape} but the logical shape is "
            f"{tuple(shape)}; GGUFReader's tensor.shape is in ne order, pass shape_from_ne()"
        )
    data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if data.size != rows * blocks * type_size:
        raise RawSizeError(
            f"{ggml_type_name}: raw data is {data.size} bytes, shape {tuple(shape)} needs "
            f"{rows * blocks * type_size}"
        )
    return layout.name, _pack_blocks(layout, data.reshape(rows, blocks, type_size), row_len)


def pack_float(array: Any, dtype: str) -> tuple[str, np.ndarray]:
    """Pack f32/f16/bf16 weights without changing their dtype.

    bf16 comes as its bit patterns (numpy uint16/int16) or as a torch bfloat16 tensor.
    """
    if dtype not in FLOAT_DTYPES:
        raise DtypeMismatchError(f"pack_float: dtype {dtype!r} is not one of {list(FLOAT_DTYPES)}")
    arr = _bf16_bits(array) if dtype == "bf16" else _numpy(array)
    want = FLOAT_DTYPES[dtype]
    if arr.dtype.kind != want.kind or arr.dtype.itemsize != want.itemsize:
        raise DtypeMismatchError(f"pack_float: array dtype {arr.dtype} is not {dtype}")
    layout = get_layout(dtype)
    rows, row_len = _rows(layout, arr.shape)
    data = np.ascontiguousarray(arr, dtype=want).reshape(-1).view(np.uint8)
    return layout.name, _pack_blocks(layout, data.reshape(rows, row_len, want.itemsize), row_len)


def quantize(array_f32: np.ndarray, layout: str) -> tuple[str, np.ndarray]:
    """Quantize float weights into ``layout`` with ``gguf.quants`` (ggml's rounding), then pack.

    Takes float32 or float16 arrays (widen bf16 bits with ``bf16_to_f32`` first).
    """
    if layout not in QUANTIZABLE:
        raise UnsupportedQuantError(
            f"quantize: cannot produce layout {layout!r}; use {QUANTIZABLE}"
        )
    target = get_layout(layout)
    array_f32 = np.asarray(array_f32)
    if array_f32.dtype not in (np.float32, np.float16):
        raise DtypeMismatchError(f"quantize: array dtype {array_f32.dtype} is not float32/16")
    _rows(target, array_f32.shape)
    values = array_f32.astype(np.float32)
    if not np.isfinite(values).all():
        raise UnsupportedQuantError("quantize: array holds NaN or Inf")
    qtype = GGMLQuantizationType[target.exact_from[0]]
    with np.errstate(over="ignore"):  # f16 overflow is reported just below
        raw = gguf_quants.quantize(values, qtype)
    if qtype == GGMLQuantizationType.F16 and not np.isfinite(raw).all():
        raise UnsupportedQuantError("quantize: values overflow f16 (|x| > 65504)")
    return pack_gguf(qtype.name, raw, values.shape)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Exact float32 values of bf16 bit patterns (uint16/int16)."""
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def dequantize(layout: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values of a packed tensor, decoded plane by plane as a kernel would."""
    lay = get_layout(layout)
    rows, row_len = _rows(lay, shape)
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if data.size != lay.nbytes(tuple(shape)):
        raise RawSizeError(
            f"{layout}: packed data is {data.size} bytes, shape {tuple(shape)} needs "
            f"{lay.nbytes(tuple(shape))}"
        )
    blocks = lay.blocks_per_row(row_len)
    by_row = data.reshape(rows, lay.row_bytes(row_len))
    offsets = lay.plane_offsets(tuple(shape))
    words = {
        p.name: by_row[:, offsets[p.name] : offsets[p.name] + p.span(blocks)].copy().view("<u4")
        for p in lay.planes
    }
    return _DECODERS[lay.name](words, blocks).reshape(tuple(shape))


def _numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor; torch stays an optional import
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _bf16_bits(array: Any) -> np.ndarray:
    if hasattr(array, "detach") and str(array.dtype) == "torch.bfloat16":
        import torch

        array = array.view(torch.int16)
    arr = _numpy(array)
    return arr.view(np.uint16) if arr.dtype == np.int16 else arr


def _rows(layout: Layout, shape: Sequence[int]) -> tuple[int, int]:
    """(rows, row_len), validated by the layout (whole blocks, positive dims)."""
    dims = tuple(shape)
    layout.nbytes(dims)
    return int(np.prod(dims[:-1])), int(dims[-1])


def _pack_blocks(layout: Layout, blocks: np.ndarray, row_len: int) -> np.ndarray:
    """Scatter (rows, blocks, GGUF block bytes) into the layout's planes, row by row."""
    rows, count, _ = blocks.shape
    out = np.zeros((rows, layout.row_bytes(row_len)), np.uint8)
    offsets = layout.plane_offsets((row_len,))
    for plane in layout.planes:
        start, end = plane.src
        at = offsets[plane.name]
        out[:, at : at + count * plane.block_bytes] = blocks[:, :, start:end].reshape(rows, -1)
    return out.reshape(-1)


# ---- decoders: (plane name -> (rows, words) uint32, blocks per row) -> (rows, blocks, elems)

_LANES = np.arange(4, dtype=np.uint32) * 8  # bit offset of byte lane i in a little-endian u32


def _lanes(words: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Field ``(w >> (8*i + shift)) & mask`` of each byte lane i: one output per lane."""
    fields = (words[..., None] >> (_LANES + np.uint32(shift))) & np.uint32((1 << width) - 1)
    return fields.reshape(*words.shape[:-1], -1)


def _signed8(fields: np.ndarray) -> np.ndarray:
    return fields.astype(np.int32) - ((fields.astype(np.int32) & 0x80) << 1)


def _f16(words: np.ndarray, half: int) -> np.ndarray:
    """``unpack2x16float(w)[half]`` as float32."""
    bits = (words >> np.uint32(16 * half)) & np.uint32(0xFFFF)
    return bits.astype(np.uint16).view(np.float16).astype(np.float32)


def _pairs(words: np.ndarray, blocks: int) -> np.ndarray:
    """Per-block f16 from a plane of packed pairs: block b is half b & 1 of word b >> 1."""
    halves = np.stack([_f16(words, 0), _f16(words, 1)], axis=-1)
    return halves.reshape(words.shape[0], -1)[:, :blocks, None]


def _per_block(words: np.ndarray, blocks: int) -> np.ndarray:
    return words.reshape(words.shape[0], blocks, -1)


def _nibble_block(qs: np.ndarray) -> np.ndarray:
    """32 elements from 4 words: lanes' low nibbles are 0..15, high nibbles 16..31."""
    return np.concatenate([_lanes(qs, 0, 4), _lanes(qs, 4, 4)], axis=-1).astype(np.float32)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Bit j of one u32 per block, for j in 0..31, scaled to the 5th bit (16)."""
    bits = (qh >> np.arange(32, dtype=np.uint32)) & np.uint32(1)
    return (bits * np.uint32(16)).astype(np.float32)


def _floats(decode: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def run(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
        return decode(words["values"]).reshape(words["values"].shape[0], -1)[:, :blocks, None]

    return run


def _f32(w: np.ndarray) -> np.ndarray:
    return w.view(np.float32)


def _f16_values(w: np.ndarray) -> np.ndarray:
    return np.stack([_f16(w, 0), _f16(w, 1)], axis=-1)


def _bf16_values(w: np.ndarray) -> np.ndarray:
    return np.stack([w << np.uint32(16), w & np.uint32(0xFFFF0000)], axis=-1).view(np.float32)


def _q8_0(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    q = _signed8(_lanes(_per_block(words["qs"], blocks), 0, 8)).astype(np.float32)
    return _pairs(words["d"], blocks) * q


def _q4_0(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    q = _nibble_block(_per_block(words["qs"], blocks))
    return _pairs(words["d"], blocks) * (q - np.float32(8))


def _q4_1(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    q = _nibble_block(_per_block(words["qs"], blocks))
    dm = words["dm"][..., None]
    return _f16(dm, 0) * q + _f16(dm, 1)


def _q5_0(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    q = _nibble_block(_per_block(words["qs"], blocks)) + _high_bits(words["qh"][..., None])
    return _pairs(words["d"], blocks) * (q - np.float32(16))


def _q5_1(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    q = _nibble_block(_per_block(words["qs"], blocks)) + _high_bits(words["qh"][..., None])
    dm = words["dm"][..., None]
    return _f16(dm, 0) * q + _f16(dm, 1)


def _kquant_scales(head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d * sc_j, dmin * m_j) for the 8 sub-blocks, from the header vec4 (x, y, z, w)."""
    x, y, z, w = (head[..., i : i + 1] for i in range(4))
    low6, low4, top2 = np.uint32(0x3F3F3F3F), np.uint32(0x0F0F0F0F), np.uint32(0x30303030)
    two = np.uint32(2)
    sc = np.concatenate([y & low6, (w & low4) | ((y >> two) & top2)], axis=-1)
    mn = np.concatenate([z & low6, ((w >> np.uint32(4)) & low4) | ((z >> two) & top2)], axis=-1)
    d, dmin = _f16(x, 0), _f16(x, 1)
    return d * _lanes(sc, 0, 8).astype(np.float32), dmin * _lanes(mn, 0, 8).astype(np.float32)


def _kquant_low4(qs: np.ndarray) -> np.ndarray:
    """(rows, blocks, 8 sub-blocks, 32) from 32 words: 4 chunks of 32 bytes, lo then hi."""
    chunks = qs.reshape(*qs.shape[:-1], 4, 8)
    both = np.stack([_lanes(chunks, 0, 4), _lanes(chunks, 4, 4)], axis=-2)
    return both.reshape(*qs.shape[:-1], 8, 32)


def _q4_k(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    block = _per_block(words["block"], blocks)
    scale, offset = _kquant_scales(block[..., :4])
    q = _kquant_low4(block[..., 4:]).astype(np.float32)
    return (scale[..., None] * q - offset[..., None]).reshape(*block.shape[:-1], 256)


def _q5_k(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    block = _per_block(words["block"], blocks)
    scale, offset = _kquant_scales(block[..., :4])
    qh = _lanes(block[..., 4:12], 0, 8)[..., None, :]  # (rows, blocks, 1, 32) bytes
    high = (qh >> np.arange(8, dtype=np.uint32)[:, None]) & np.uint32(1)
    q = (_kquant_low4(block[..., 12:]) | (high << np.uint32(4))).astype(np.float32)
    return (scale[..., None] * q - offset[..., None]).reshape(*block.shape[:-1], 256)


def _q6_k(words: dict[str, np.ndarray], blocks: int) -> np.ndarray:
    body = _per_block(words["body"], blocks)
    lead = body.shape[:-1]
    ql = _lanes(body[..., :32], 0, 8).reshape(*lead, 2, 1, 2, 32)  # [half, -, j, l]
    low = np.concatenate([ql & np.uint32(15), ql >> np.uint32(4)], axis=-3)  # [half, nib, j, l]
    qh = _lanes(body[..., 32:48], 0, 8).reshape(*lead, 2, 1, 32)  # [half, -, l]
    high = (qh >> (np.arange(4, dtype=np.uint32) * np.uint32(2))[:, None]) & np.uint32(3)
    q = (low.reshape(*lead, 2, 4, 32) | (high << np.uint32(4))).astype(np.float32) - 32
    sc = _signed8(_lanes(body[..., 48:52], 0, 8)).astype(np.float32)  # 16 sub-blocks of 16
    scale = _pairs(words["d"], blocks) * sc
    return (scale[..., None] * q.reshape(*lead, 16, 16)).reshape(*lead, 256)


_DECODERS: dict[str, Callable[[dict[str, np.ndarray], int], np.ndarray]] = {
    "f32": _floats(_f32),
    "f16": _floats(_f16_values),
    "bf16": _floats(_bf16_values),
    "q8_0": _q8_0,
    "q4_0": _q4_0,
    "q4_1": _q4_1,
    "q5_0": _q5_0,
    "q5_1": _q5_1,
    "q4_k": _q4_k,
    "q5_k": _q5_k,
    "q6_k": _q6_k,
}

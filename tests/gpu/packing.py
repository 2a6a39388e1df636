"""Random packed weights in every on-GPU layout, and the kernel parameters that locate them.

Shared by the embedding and quantized matrix-vector tests: both read a packed tensor through
``shaders/dequant.wgsl`` and are compared with ``doppler.convert.pack.dequantize``.
"""

from __future__ import annotations

import numpy as np

from doppler.convert.pack import QUANTIZABLE, pack_float, pack_gguf, quantize
from doppler.format.layouts import get_layout

# Byte offsets of the f16 scale fields of the GGUF blocks we fill with random bits.
_KQUANT_F16 = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def flag(layout: str) -> str:
    """The dequant.wgsl flag that selects ``layout``."""
    return "LAYOUT_" + layout.upper()


def words(layout: str, row_len: int) -> tuple[int, int, int]:
    """(row_words, plane1, plane2): row stride and 2nd/3rd plane offsets, in u32 words."""
    lay = get_layout(layout)
    offsets = [*list(lay.plane_offsets((row_len,)).values())[1:], 0, 0]
    return lay.row_bytes(row_len) // 4, offsets[0] // 4, offsets[1] // 4


def product_fields(
    layout: str, rows: int, cols: int, grid_x: int, row0: int, n_tokens: int, y_rows: int
) -> tuple[int, ...]:
    """The leading Params fields of matvec_quant.wgsl and matmul_quant.wgsl."""
    return (rows, cols, grid_x, row0, *words(layout, cols), n_tokens, y_rows)


def random_packed(rng: np.random.Generator, layout: str, shape: tuple[int, int]) -> np.ndarray:
    """Packed uint8 bytes of a random tensor: quantized normals, or random k-quant blocks."""
    values = rng.standard_normal(shape).astype(np.float32)
    if layout == "bf16":
        return pack_float((values.view(np.uint32) >> 16).astype(np.uint16), "bf16")[1]
    if layout in ("f32", "f16"):
        return pack_float(values.astype(np.float16 if layout == "f16" else np.float32), layout)[1]
    if layout in QUANTIZABLE:
        return quantize(values, layout)[1]
    gguf_type = get_layout(layout).exact_from[0]
    block_bytes = get_layout(layout).block_bytes
    raw = rng.integers(0, 256, (shape[0], shape[1] // 256, block_bytes), dtype=np.uint8)
    for at in _KQUANT_F16[gguf_type]:
        scale = rng.uniform(0.002, 0.05, raw.shape[:2]).astype(np.float16)
        raw[..., at : at + 2] = scale[..., None].view(np.uint8)
    return pack_gguf(gguf_type, raw.reshape(shape[0], -1), shape)[1]

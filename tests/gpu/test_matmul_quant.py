"""The prefill product (matmul_quant.wgsl) against ``dequantize(...) @ x`` in float64.

Every layout on one medium shape; tile edges (rows past the row tile, tokens past or short of
the token tile, K past the last whole block) on q4_0 and f32; a split part; K split into
slices (summed here as rmsnorm and add sum them); and planted bugs in the kernel that the
tolerance must catch.
"""

from __future__ import annotations

import numpy as np
import pytest

from doppler.convert.pack import dequantize
from gpu.packing import flag, product_fields, random_packed
from harness.kernels import params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(29)
TILE_ROWS, TILE_TOKENS, TILE_K = 64, 32, 32  # BM, BN, BK of matmul_quant.wgsl
LAYOUTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k")
KQUANTS = ("q4_k", "q5_k", "q6_k")


def run(
    kernels,
    layout: str,
    packed: np.ndarray,
    shape: tuple[int, int],
    x: np.ndarray,
    *,
    row0: int = 0,
    y_rows: int | None = None,
    grid_x: int | None = None,
    k_blocks: int | None = None,
    source: str | None = None,
) -> np.ndarray:
    """One dispatch over the packed rows for the tokens of ``x`` (n_tokens, cols); y has
    y_rows rows per token (default: all rows) and starts as NaN. With ``k_blocks``, K is
    split into slices of that many blocks: the result is the slices' sum."""
    rows, cols = shape
    n_tokens = x.shape[0]
    y_rows = y_rows or rows
    tiles = -(-rows // TILE_ROWS)
    grid_x = grid_x or min(tiles, 65535)
    fields = product_fields(layout, rows, cols, grid_x, row0, n_tokens, y_rows)
    blocks = -(-cols // TILE_K)
    k_blocks = k_blocks or blocks
    slices = -(-blocks // k_blocks)
    stride = n_tokens * y_rows
    buffers = [
        read(0, packed),
        read(1, x.astype(np.float32)),
        write(2, slices * stride),
        params(3, "I" * 11, *fields, k_blocks, stride),
    ]
    grid = (grid_x, -(-tiles // grid_x), -(-n_tokens // TILE_TOKENS) * slices)
    (out,) = kernels.run(
        "matmul_quant", buffers, grid, entry="matmul", flags=(flag(layout),), source=source
    )
    return out.reshape(slices, n_tokens, y_rows).sum(axis=0)


def case(layout: str, rows: int, cols: int, n_tokens: int):
    packed = random_packed(RNG, layout, (rows, cols))
    weights = dequantize(layout, packed, (rows, cols)).astype(np.float64)
    x = RNG.standard_normal((n_tokens, cols)).astype(np.float32)
    return packed, weights, x


def excess(got: np.ndarray, weights: np.ndarray, x: np.ndarray) -> float:
    """Largest error over its bound (float32 accumulation error of the float64 product of
    the same weights); NaN (an output never written) counts as infinitely wrong."""
    want = x.astype(np.float64) @ weights.T
    bound = 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(weights).T) + 1e-30
    ratio = np.abs(got - want) / bound
    return float(np.inf if np.isnan(ratio).any() else ratio.max())


def check(got: np.ndarray, weights: np.ndarray, x: np.ndarray) -> None:
    ratio = excess(got, weights, x)
    assert ratio <= 1.0, f"max error/bound {ratio:.3g}"


def medium_shape(layout: str) -> tuple[int, int]:
    """Two row tiles, the second partial; K past the last whole block for float rows."""
    if layout in KQUANTS:
        return 70, 512
    return 70, 580 if layout in ("f32", "f16", "bf16") else 576


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matmul_matches_numpy(kernels, layout):
    shape = medium_shape(layout)
    packed, weights, x = case(layout, *shape, n_tokens=9)
    check(run(kernels, layout, packed, shape, x), weights, x)


@pytest.mark.parametrize(
    ("layout", "rows", "cols", "n_tokens"),
    [
        ("q4_0", 1, 32, 1),  # one row, one block, one token
        ("q4_0", 64, 96, 32),  # exactly one tile
        ("q4_0", 130, 160, 33),  # a third row tile of 2 rows, a second token tile of 1
        ("f32", 5, 36, 5),  # K: one whole block and 4 elements
        ("f32", 65, 100, 33),
        ("f16", 3, 100, 2),  # a row padded past its last unit
    ],
    ids=str,
)
def test_tile_edges(kernels, layout, rows, cols, n_tokens):
    packed, weights, x = case(layout, rows, cols, n_tokens)
    check(run(kernels, layout, packed, (rows, cols), x), weights, x)


def test_rows_beyond_one_grid_row(kernels):
    """Row tiles spill into the grid's y dimension (as vocab-sized outputs must past 65535)."""
    packed, weights, x = case("q8_0", 200, 64, 3)
    check(run(kernels, "q8_0", packed, (200, 64), x, grid_x=2), weights, x)


def test_weight_split_in_two_parts(kernels):
    """Each part is bound alone with its row0; together they write every row exactly once."""
    rows, cols, split, n_tokens = 90, 256, 67, 11
    packed, weights, x = case("q4_0", rows, cols, n_tokens)
    row_bytes = packed.size // rows
    merged = np.full((n_tokens, rows), np.nan)
    for row0, part in ((0, packed[: split * row_bytes]), (split, packed[split * row_bytes :])):
        part_rows = part.size // row_bytes
        y = run(kernels, "q4_0", part, (part_rows, cols), x, row0=row0, y_rows=rows)
        mine = slice(row0, row0 + part_rows)
        assert np.isnan(np.delete(y, np.arange(rows)[mine], axis=1)).all(), "wrote other rows"
        merged[:, mine] = y[:, mine]
    check(merged, weights, x)


@pytest.mark.parametrize(
    ("layout", "rows", "cols", "n_tokens", "k_blocks"),
    [
        ("q4_0", 70, 6912 // 8, 40, 5),  # 27 blocks: 6 slices, the last of 2 blocks
        ("q4_k", 65, 1024, 33, 8),  # 4 whole slices
        ("f32", 9, 100, 3, 1),  # a slice per block, the last one partial
    ],
    ids=str,
)
def test_split_k_slices_sum_to_the_product(kernels, layout, rows, cols, n_tokens, k_blocks):
    packed, weights, x = case(layout, rows, cols, n_tokens)
    got = run(kernels, layout, packed, (rows, cols), x, k_blocks=k_blocks)
    check(got, weights, x)


PLANTED_BUGS = {  # name: (layout, good, bad, k_blocks)
    "last partial K block dropped": (
        "f32",
        "min(first + params.k_blocks, (params.cols + BK - 1u) / BK)",
        "min(first + params.k_blocks, params.cols / BK)",
        None,
    ),
    "x token stride": (
        "q4_0",
        "(t0 + at.x) * (params.cols / 4u)",
        "(t0 + at.x) * (params.cols / 4u - 1u)",
        None,
    ),
    "second K half's sums dropped": (
        "q4_0",
        "for (var s = 1u; s < HALVES; s++)",
        "for (var s = 2u; s < HALVES; s++)",
        None,
    ),
    "K slices overlap": (
        "q4_0",
        "let first = k_slice * params.k_blocks;",
        "let first = k_slice * (params.k_blocks - 1u);",
        2,
    ),
    "K slices written over each other": (
        "q4_0",
        "k_slice * params.slice_stride",
        "0u",
        2,
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    layout, good, bad, k_blocks = PLANTED_BUGS[bug]
    source = shader_source("matmul_quant.wgsl")
    assert good in source, "update the control"
    shape = (70, 100) if layout == "f32" else (70, 256)
    packed, weights, x = case(layout, *shape, n_tokens=5)
    bad_source = source.replace(good, bad)
    got = run(kernels, layout, packed, shape, x, k_blocks=k_blocks, source=bad_source)
    assert excess(got, weights, x) > 1.0

"""Products with packed weights on the GPU against ``dequantize(...) @ x`` in float64.

Every layout is decoded by ``shaders/dequant.wgsl``; its planted-bug controls inline a mutated
copy of that include into the kernel source.
"""

from __future__ import annotations

import numpy as np
import pytest

from doppler.convert.pack import dequantize
from gpu.packing import flag, random_packed, words
from harness.kernels import params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(23)
TOKENS_PER_TILE = 4
LAYOUTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k")
KQUANTS = ("q4_k", "q5_k", "q6_k")


def run(
    kernels,
    layout,
    packed,
    shape,
    x,
    *,
    entry="matvec",
    n_tokens=1,
    row0=0,
    y_rows=None,
    grid_x=None,
    wg=64,
    rows_per_wg=8,
    source=None,
):
    """One dispatch over the packed rows; y has y_rows rows per token (default: all rows)."""
    rows, cols = shape
    y_rows = y_rows or rows
    groups = rows if entry == "matmat" else -(-rows // rows_per_wg)
    grid_x = grid_x or min(groups, 65535)
    row_words, plane1, plane2 = words(layout, cols)
    grid = (grid_x, -(-groups // grid_x))
    if entry == "matmat":
        grid += (-(-n_tokens // TOKENS_PER_TILE),)
    (y,) = kernels.run(
        "matvec_quant",
        [
            read(0, packed),
            read(1, x.astype(np.float32)),
            write(2, n_tokens * y_rows),
            params(
                3,
                "IIIIIIIII",
                rows,
                cols,
                grid_x,
                row0,
                row_words,
                plane1,
                plane2,
                n_tokens,
                y_rows,
            ),
        ],
        grid,
        entry=entry,
        flags=(flag(layout),),
        constants={"WG": wg} if entry == "matmat" else {"WG": wg, "ROWS_PER_WG": rows_per_wg},
        source=source,
    )
    return y.reshape(n_tokens, y_rows)


def case(layout, rows, cols, n_tokens=1):
    packed = random_packed(RNG, layout, (rows, cols))
    weights = dequantize(layout, packed, (rows, cols)).astype(np.float64)
    x = RNG.standard_normal((n_tokens, cols)).astype(np.float32)
    return packed, weights, x


def check(got, weights, x):
    """Within float32 accumulation error of the float64 product of the same weights."""
    want = x.astype(np.float64) @ weights.T
    bound = 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(weights).T) + 1e-30
    err = np.abs(got - want)
    assert (err <= bound).all(), f"max error/bound {np.nanmax(err / bound):.3g}"


def shapes(layout):
    if layout in KQUANTS:
        return [(1, 256), (37, 768), (130, 512)]
    if layout in ("f32", "f16", "bf16"):
        return [(1, 1), (9, 13), (70, 577), (33, 1000)]
    return [(1, 32), (33, 576), (70, 1536)]


@pytest.mark.parametrize(
    ("layout", "shape"), [(lay, s) for lay in LAYOUTS for s in shapes(lay)], ids=str
)
def test_matvec_matches_numpy(kernel_variants, layout, shape):
    packed, weights, x = case(layout, *shape)
    check(run(kernel_variants, layout, packed, shape, x[0]), weights, x)


@pytest.mark.parametrize(
    ("layout", "rows_per_wg", "wg"),
    [("q4_1", 1, 64), ("q6_k", 4, 32), ("f16", 64, 64), ("q5_0", 16, 128)],
)
def test_matvec_rows_per_workgroup(kernel_variants, layout, rows_per_wg, wg):
    """Any power-of-two split of the workgroup between rows gives the same product."""
    rows, cols = (37, 768) if layout in KQUANTS else (70, 577 if layout == "f16" else 576)
    packed, weights, x = case(layout, rows, cols)
    got = run(kernel_variants, layout, packed, (rows, cols), x[0], rows_per_wg=rows_per_wg, wg=wg)
    check(got, weights, x)


@pytest.mark.parametrize(
    ("layout", "n_tokens", "wg"),
    [
        ("q4_1", 1, 64),
        ("q4_k", 5, 64),
        ("q6_k", 9, 32),
        ("f16", 7, 128),
        ("q5_0", 4, 64),
        ("q8_0", 3, 64),
    ],
)
def test_matmat_matches_numpy(kernels, layout, n_tokens, wg):
    rows, cols = (19, 512) if layout in KQUANTS else (45, 576)
    packed, weights, x = case(layout, rows, cols, n_tokens)
    got = run(kernels, layout, packed, (rows, cols), x, entry="matmat", n_tokens=n_tokens, wg=wg)
    check(got, weights, x)


def test_rows_beyond_one_grid_row(kernel_variants):
    """Rows spill into the grid's y dimension (as vocab-sized outputs must past 65535)."""
    packed, weights, x = case("q8_0", 129, 64, 3)
    check(run(kernel_variants, "q8_0", packed, (129, 64), x[0], grid_x=5), weights, x[:1])
    got = run(kernel_variants, "q8_0", packed, (129, 64), x, entry="matmat", n_tokens=3, grid_x=50)
    check(got, weights, x)


@pytest.mark.parametrize(("layout", "entry"), [("q4_k", "matvec"), ("f16", "matmat")])
def test_weight_split_in_two_parts(kernel_variants, layout, entry):
    """Each part is bound alone with its row0; together they write every row exactly once."""
    rows, cols, split, n_tokens = 21, 256, 13, 3 if entry == "matmat" else 1
    packed, weights, x = case(layout, rows, cols, n_tokens)
    row_bytes = packed.size // rows
    parts = [(0, packed[: split * row_bytes]), (split, packed[split * row_bytes :])]
    merged = np.full((n_tokens, rows), np.nan)
    for row0, part in parts:
        part_rows = part.size // row_bytes
        y = run(
            kernel_variants,
            layout,
            part,
            (part_rows, cols),
            x if entry == "matmat" else x[0],
            entry=entry,
            n_tokens=n_tokens,
            row0=row0,
            y_rows=rows,
        )
        mine = slice(row0, row0 + part_rows)
        assert np.isnan(np.delete(y, np.arange(rows)[mine], axis=1)).all(), "wrote other rows"
        merged[:, mine] = y[:, mine]
    check(merged, weights, x)


def inline_dequant(source: str, dequant: str) -> str:
    return source.replace('#include "dequant.wgsl"', dequant)


PLANTED_BUGS = {  # name: (file, layout, good, bad)
    "q4_k sub-block scale bits": (
        "dequant.wgsl",
        "q4_k",
        "sc = byte_at(y, j) & 63u;",
        "sc = byte_at(y, j) & 31u;",
    ),
    "q4_k upper mins": (
        "dequant.wgsl",
        "q4_k",
        "mn = (byte_at(w, l) >> 4u)",
        "mn = (byte_at(w, l) & 15u)",
    ),
    "q6_k scale halves swapped": (
        "dequant.wgsl",
        "q6_k",
        "select(scale_hi, scale_lo, i < 4u)",
        "select(scale_lo, scale_hi, i < 4u)",
    ),
    "q5_0 high bit dropped": (
        "dequant.wgsl",
        "q5_0",
        "(((qh >> e) & 1u) << 4u)",
        "(((qh >> e) & 0u) << 4u)",
    ),
    "q4_1 min ignored": ("dequant.wgsl", "q4_1", "dm.x * out[e] + dm.y", "dm.x * out[e]"),
    "q8_0 unsigned bytes": (
        "dequant.wgsl",
        "q8_0",
        "f32(extractBits(bitcast<i32>(word)",
        "f32(extractBits(word",
    ),
    "row tail dropped": (
        "matvec_quant.wgsl",
        "f16",
        "let count = params.cols - k0;",
        "let count = params.cols - k0 - 1u;",
    ),
    "matmat token stride": (
        "matvec_quant.wgsl",
        "q4_1",
        "(t0 + i) * params.cols",
        "(t0 + i) * (params.cols - 1u)",
    ),
    "subgroup lanes skip chunks": (
        "matvec_quant.wgsl",
        "q8_0",
        "c += lanes) {",
        "c += lanes + 1u) {",
    ),
    "subgroup last row unclaimed": (
        "matvec_quant.wgsl",
        "q4_0",
        "if (i >= ROWS_PER_WG) { break; }",
        "if (i + 1u >= ROWS_PER_WG) { break; }",
    ),
    "fallback lanes split wrongly": (
        "matvec_quant.wgsl",
        "q8_0",
        "let lane = lid % lanes;",
        "let lane = lid % (lanes / 2u);",
    ),
}
FALLBACK_ONLY = {"fallback lanes split wrongly"}
MATVEC_ONLY = {
    "fallback lanes split wrongly",
    "subgroup lanes skip chunks",
    "subgroup last row unclaimed",
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, kernels_without_subgroups, bug):
    file, layout, good, bad = PLANTED_BUGS[bug]
    if bug in FALLBACK_ONLY:
        kernels = kernels_without_subgroups
    kernel, dequant = shader_source("matvec_quant.wgsl"), shader_source("dequant.wgsl")
    assert good in (dequant if file == "dequant.wgsl" else kernel), "update the control"
    if file == "dequant.wgsl":
        dequant = dequant.replace(good, bad)
    else:
        kernel = kernel.replace(good, bad)
    shape = (7, 512) if layout in KQUANTS else (7, 77 if layout == "f16" else 96)
    n_tokens = 1 if bug in MATVEC_ONLY else 3
    if bug in MATVEC_ONLY:
        shape = (13, 512)  # more chunks than lanes, more rows than one workgroup's
    packed, weights, x = case(layout, *shape, n_tokens=n_tokens)
    got = run(
        kernels,
        layout,
        packed,
        shape,
        x[0] if n_tokens == 1 else x,
        entry="matvec" if n_tokens == 1 else "matmat",
        n_tokens=n_tokens,
        source=inline_dequant(kernel, dequant),
    )
    with pytest.raises(AssertionError):
        check(got, weights, x)

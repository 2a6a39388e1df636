"""Products with packed weights on the GPU against ``dequantize(...) @ x`` in float64.

Every layout is decoded by ``shaders/dequant.wgsl``; its planted-bug controls inline a mutated
copy of that include into the kernel source.
"""

from __future__ import annotations

import numpy as np
import pytest

from doppler.convert.pack import dequantize
from doppler.model.rope import inv_freq
from gpu.packing import flag, product_fields, random_packed
from gpu.test_rope import rope_ref
from harness.kernels import Buffer, params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(23)
MATMAT_TOKENS = 4  # tokens per matmat workgroup
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
    mode=0,
    norm=None,
    gate=None,
    y_init=None,
    eps=0.0,
    offset=0.0,
    cache=(0, 0),
    rope=None,
    position=0,
    kv=None,
    pair=0,
):
    """One dispatch over the packed rows; y has y_rows rows per token (default: all rows).
    matvec's folds: ``mode`` bits with the ``norm`` weights, the ``gate`` input and y's
    initial value ``y_init`` (else y starts as NaN); MODE_KV's ``kv`` = (k_out initial,
    v_out initial, k_row0, v_row0) (then returns y, k_out, v_out), MODE_CACHE's ``cache`` =
    (head_dim, max_ctx) at ``position``, MODE_ROPE's ``rope`` = (inv_freq, rot_dim,
    interleaved); MODE_PAIR's first up row ``pair`` (``shape`` = the [gate; up] weight)."""
    rows, cols = shape
    rows = pair or rows
    y_rows = y_rows or rows
    groups = rows if entry == "matmat" else -(-rows // rows_per_wg)
    grid_x = grid_x or min(groups, 65535)
    grid = (grid_x, -(-groups // grid_x))
    if entry != "matvec":
        grid += (-(-n_tokens // MATMAT_TOKENS),)
    x = x.astype(np.float32)
    y = write(2, n_tokens * y_rows) if y_init is None else initial(2, y_init)
    buffers = [
        read(0, packed),
        read(1, x),
        y,
        params(
            3,
            "IIIIIIIIIIffIIIIIII",
            *product_fields(layout, rows, cols, grid_x, row0, n_tokens, y_rows),
            mode,
            eps,
            offset,
            *cache,
            *(rope[1:] if rope else (0, 0)),
            *(kv[2:] if kv else (0, 0)),
            pair,
        ),
    ]
    if entry == "matvec":
        buffers += [read(4, x if norm is None else norm)]
        if kv is None:
            buffers += [read(5, x if gate is None else gate)]
        else:
            buffers += [initial(5, kv[0]), initial(8, kv[1])]
        freqs = x if rope is None else rope[0]
        buffers += [read(6, np.array([position], np.uint32)), read(7, freqs)]
    out, *kv_out = kernels.run(
        "matvec_quant",
        buffers,
        grid,
        entry=entry,
        flags=(flag(layout),) + (("KV_OUT",) if kv is not None else ()),
        constants={"WG": wg} if entry == "matmat" else {"WG": wg, "ROWS_PER_WG": rows_per_wg},
        source=source,
    )
    if kv is not None:
        return out, *kv_out
    return out.reshape(n_tokens, y_rows)


def initial(binding, array):
    """A read-write buffer that starts as ``array``."""
    return Buffer(binding, "write", array=array.astype(np.float32), count=array.size)


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
        return [(1, 4), (9, 12), (70, 580), (33, 1000)]  # matvec: rows of whole vec4s
    return [(1, 32), (33, 576), (70, 1536)]


@pytest.mark.parametrize(
    ("layout", "shape"), [(lay, s) for lay in LAYOUTS for s in shapes(lay)], ids=str
)
def test_matvec_matches_numpy(kernel_variants, layout, shape):
    packed, weights, x = case(layout, *shape)
    check(run(kernel_variants, layout, packed, shape, x[0]), weights, x)


@pytest.mark.parametrize(
    ("layout", "rows_per_wg", "wg"),
    [("q4_1", 1, 64), ("q6_k", 4, 32), ("f16", 64, 64), ("q5_0", 16, 128), ("q4_0", 4, 256)],
)
def test_matvec_rows_per_workgroup(kernel_variants, layout, rows_per_wg, wg):
    """Any power-of-two split of the workgroup between rows gives the same product."""
    rows, cols = (37, 768) if layout in KQUANTS else (70, 580 if layout == "f16" else 576)
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


@pytest.mark.parametrize(
    ("layout", "shape"), [("f32", (1, 1)), ("f16", (9, 13)), ("bf16", (70, 577))]
)
def test_odd_rows_as_a_one_token_matmat(kernels, layout, shape):
    """Rows that are not whole vec4s take matmat with one token (as ops.matvec routes them)."""
    packed, weights, x = case(layout, *shape)
    check(run(kernels, layout, packed, shape, x, entry="matmat"), weights, x)


@pytest.mark.parametrize(
    ("rows", "cols", "grid_x"),
    [(7, 33, None), (576, 576, None), (1536, 576, None), (300, 1001, None), (129, 256, 5)],
)
def test_f32_matrices_match_numpy(kernel_variants, rows, cols, grid_x):
    """Plain f32 weights at model sizes, routed as ops.matvec routes them (odd rows: matmat)."""
    packed, weights, x = case("f32", rows, cols)
    entry = "matvec" if cols % 4 == 0 else "matmat"
    check(
        run(kernel_variants, "f32", packed, (rows, cols), x, entry=entry, grid_x=grid_x), weights, x
    )


def test_unwritten_outputs_read_as_nan(kernels):
    """Outputs start as NaN: rows a dispatch does not cover stay NaN, the others are written."""
    packed, weights, x = case("f32", 80, 16)
    y = run(kernels, "f32", packed, (32, 16), x[0], y_rows=80)[0]  # told of 32 rows only
    assert np.isnan(y[32:]).all()
    check(y[None, :32], weights[:32], x)


def rmsnorm64(x, norm, eps, offset):
    x64 = x.astype(np.float64)
    return x64 / np.sqrt((x64 * x64).mean() + eps) * (norm.astype(np.float64) + offset)


def act64(g, gelu):
    g = g.astype(np.float64)
    if gelu:
        return 0.5 * g * (1 + np.tanh(0.7978845608028654 * (g + 0.044715 * g**3)))
    return g / (1 + np.exp(-g))


def fold_case(layout, shape, mode):
    """Inputs of one fold test and the float64 result: (run keywords, x, want, bound)."""
    rows, cols = shape
    packed, weights, x = case(layout, rows, cols)
    norm = RNG.standard_normal(cols).astype(np.float32)
    gate = RNG.standard_normal(rows).astype(np.float32)
    y0 = RNG.standard_normal(rows).astype(np.float32)
    xs = rmsnorm64(x[0], norm, 1e-5, 1.0) if mode & MODE_NORM else x[0].astype(np.float64)
    want, bound = weights @ xs, 1e-5 * (np.abs(weights) @ np.abs(xs)) + 1e-30
    if mode & MODE_ACCUMULATE:
        want, bound = want + y0, bound + 1e-7 * np.abs(y0)
    if mode & MODE_GATED:
        a = act64(gate, mode & MODE_GELU)
        # the GPU's exp/tanh: ~1e-6 relative, and absolute in 1 + tanh(u) (GELU at g << 0)
        act_err = 1e-6 * (np.abs(a) + np.abs(gate))
        want, bound = want * a, bound * np.abs(a) + act_err * np.abs(want)
    keywords = {"mode": mode, "norm": norm, "gate": gate, "eps": 1e-5, "offset": 1.0}
    keywords["y_init"] = y0 if mode & MODE_ACCUMULATE else None
    return packed, keywords, x[0], want, bound


MODE_ACCUMULATE, MODE_GATED, MODE_GELU, MODE_NORM = 1, 2, 4, 8
MODE_KV, MODE_ROPE, MODE_CACHE, MODE_PAIR = 16, 32, 64, 128
FOLDS = {
    "norm": MODE_NORM,
    "accumulate": MODE_ACCUMULATE,
    "silu": MODE_GATED,
    "norm+gelu": MODE_NORM | MODE_GATED | MODE_GELU,
    "norm+accumulate": MODE_NORM | MODE_ACCUMULATE,
}


@pytest.mark.parametrize("fold", sorted(FOLDS))
@pytest.mark.parametrize(("layout", "shape"), [("q4_0", (37, 576)), ("f32", (9, 12))], ids=str)
def test_matvec_folds_match_numpy(kernel_variants, fold, layout, shape):
    """RMSNorm before, residual add or gated activation after the product, in one dispatch."""
    packed, keywords, x, want, bound = fold_case(layout, shape, FOLDS[fold])
    got = run(kernel_variants, layout, packed, shape, x, **keywords)[0]
    err = np.abs(got - want)
    assert (err <= bound).all(), f"max error/bound {np.nanmax(err / bound):.3g}"


CACHE_BUGS = {
    "rope pairs swapped": ("dims[j % 2u]", "dims[1u - j % 2u]"),
    "second pair's angle": ("inv_freq[p + 1u]", "inv_freq[p]"),
    "cache head stride": (
        "((i / params.head_dim) * params.max_ctx + pos)",
        "((i / params.head_dim) * (params.max_ctx - 1u) + pos)",
    ),
    "v rows as k": ("r >= params.v_row0;", "r > params.v_row0;"),
}


def plant(bugs, bug):
    if bug is None:
        return None
    good, bad = bugs[bug]
    source = shader_source("matvec_quant.wgsl")
    assert good in source, "update the control"
    return source.replace(good, bad)


@pytest.mark.parametrize(
    ("interleaved", "cache", "bug"),
    [(False, True, None), (True, True, None), (False, False, None)]
    + [(False, True, bug) for bug in sorted(CACHE_BUGS)],
)
def test_qkv_projection_routes_k_and_v(kernels, interleaved, cache, bug):
    """MODE_KV: one [q; k; v] projection, q rows to y and k/v rows to their own outputs;
    with MODE_CACHE + MODE_ROPE k is rotated and both land at their cache position. Planted
    bugs in the pairing, the angles, the cache layout and the routing fail the comparison."""
    q_heads, heads, head_dim, cols, max_ctx, position = 4, 3, 16, 128, 9, 6
    q_rows, kv_rows = q_heads * head_dim, heads * head_dim
    rows = q_rows + 2 * kv_rows
    packed, weights, x = case("q4_0", rows, cols)
    freqs = np.asarray(inv_freq(head_dim, 10000.0, None), np.float32)
    out_size = heads * max_ctx * head_dim if cache else kv_rows
    nan = np.full(out_size, np.nan, np.float32)
    mode = MODE_KV | (MODE_CACHE | MODE_ROPE if cache else 0)
    q, k, v = run(
        kernels,
        "q4_0",
        packed,
        (rows, cols),
        x[0],
        rows_per_wg=4,
        mode=mode,
        cache=(head_dim, max_ctx),
        rope=(freqs, head_dim, interleaved) if cache else None,
        position=position,
        kv=(nan, nan, q_rows, q_rows + kv_rows),
        y_rows=q_rows,
        source=plant(CACHE_BUGS, bug),
    )
    want = weights @ x[0].astype(np.float64)
    want_q, want_k, want_v = np.split(want, [q_rows, q_rows + kv_rows])
    if cache:
        want_k = rope_ref(
            want_k.reshape(1, heads, head_dim), np.array([position]), freqs, head_dim, interleaved
        )

    def compare():
        np.testing.assert_allclose(q, want_q, rtol=1e-4, atol=1e-4)
        for got, expected in ((k, want_k), (v, want_v)):
            if cache:
                got = got.reshape(heads, max_ctx, head_dim)
                np.testing.assert_allclose(
                    got[:, position], expected.reshape(heads, head_dim), rtol=1e-4, atol=1e-4
                )
                assert np.isnan(np.delete(got, position, axis=1)).all()
            else:
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    if bug is None:
        compare()
    else:
        with pytest.raises(AssertionError):
            compare()


PAIR_BUGS = {"up rows offset": ("params.pair_row0 + r0", "params.pair_row0 + r0 + 1u")}


@pytest.mark.parametrize(("gelu", "bug"), [(False, None), (True, None), (False, "up rows offset")])
def test_gate_up_pair_in_one_dispatch(kernels, gelu, bug):
    """MODE_PAIR: y = act(gate rows . rmsnorm(x)) * (up rows . rmsnorm(x)) from one [gate; up]
    weight, against numpy; a planted offset of the up rows fails."""
    ff, cols = 37, 576
    packed, weights, x = case("q4_0", 2 * ff, cols)
    norm = RNG.standard_normal(cols).astype(np.float32)
    mode = MODE_PAIR | MODE_NORM | (MODE_GELU if gelu else 0)
    got = run(
        kernels,
        "q4_0",
        packed,
        (2 * ff, cols),
        x[0],
        rows_per_wg=4,
        mode=mode,
        norm=norm,
        eps=1e-5,
        offset=1.0,
        pair=ff,
        source=plant(PAIR_BUGS, bug),
    )[0]
    xs = rmsnorm64(x[0], norm, 1e-5, 1.0)
    gate, up = weights[:ff] @ xs, weights[ff:] @ xs
    want = act64(gate, gelu) * up
    bound = 1e-5 * (np.abs(weights[:ff]) @ np.abs(xs)) * np.abs(up) + 1e-5 * np.abs(want) + 1e-6

    def compare():
        err = np.abs(got - want)
        assert (err <= bound).all(), f"max error/bound {np.nanmax(err / bound):.3g}"

    if bug is None:
        compare()
    else:
        with pytest.raises(AssertionError):
            compare()


def test_rows_beyond_one_grid_row(kernel_variants):
    """Rows spill into the grid's y dimension (as vocab-sized outputs must past 65535)."""
    packed, weights, x = case("q8_0", 129, 64, 3)
    check(run(kernel_variants, "q8_0", packed, (129, 64), x[0], grid_x=5), weights, x[:1])
    got = run(kernel_variants, "q8_0", packed, (129, 64), x, entry="matmat", n_tokens=3, grid_x=50)
    check(got, weights, x)


@pytest.mark.parametrize(("layout", "entry"), [("q4_k", "matvec"), ("f16", "matmat")])
def test_weight_split_in_two_parts(kernel_variants, layout, entry):
    """Each part is bound alone with its row0; together they write every row exactly once."""
    rows, cols, split, n_tokens = 21, 256, 13, 1 if entry == "matvec" else 11
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
            x[0] if entry == "matvec" else x,
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
    "lanes skip units": (
        "matvec_quant.wgsl",
        "q8_0",
        "u += lanes) {",
        "u += lanes + 1u) {",
    ),
    "group's last row dropped": (
        "matvec_quant.wgsl",
        "q4_1",
        "let n = min(GROUP, end - r0);",
        "let n = min(GROUP - 1u, end - r0);",
    ),
    "q4_0 unit high nibbles": (
        "dequant.wgsl",
        "q4_0",
        "(bytes >> vec4<u32>(4u)) & vec4<u32>(15u)",
        "(bytes >> vec4<u32>(3u)) & vec4<u32>(15u)",
    ),
    "nibble unit x order": (
        "dequant.wgsl",
        "q4_0",
        "8u * (u / 4u) + u % 4u + 4u * k",
        "8u * (u / 4u) + 2u * (u % 4u) + k",
    ),
    "q5_0 unit high bit": ("dequant.wgsl", "q5_0", "(at + 16u)", "(at + 15u)"),
    "q5_1 unit min": (
        "dequant.wgsl",
        "q5_1",
        "dm.x * (q[1] + h[1]) + dm.y",
        "dm.x * (q[1] + h[1])",
    ),
    "q8_0 unit byte order": (
        "dequant.wgsl",
        "q8_0",
        "vec4<u32>(24u, 16u, 8u, 0u)",
        "vec4<u32>(0u, 8u, 16u, 24u)",
    ),
    "norm scale ignores eps": (
        "matvec_quant.wgsl",
        "q4_0",
        "sum_squares / f32(params.cols) + params.eps",
        "sum_squares / f32(params.cols - 4u) + params.eps",
    ),
    "accumulate overwrites": ("matvec_quant.wgsl", "q4_0", "y[i] += value;", "y[i] = value;"),
    "workgroup partials half summed": (
        "matvec_quant.wgsl",
        "q4_0",
        "for (var i = index; i < WG; i += count)",
        "for (var i = index; i < WG / 2u; i += count)",
    ),
    "invocations numbered twice": (
        "matvec_quant.wgsl",
        "q4_k",
        "let index = base + subgroupExclusiveAdd(1u);",
        "let index = base + subgroupExclusiveAdd(1u) / 2u;",
    ),
    "fallback lanes split wrongly": (
        "matvec_quant.wgsl",
        "q8_0",
        "let lane = lid % lanes;",
        "let lane = lid % (lanes / 2u);",
    ),
}
FALLBACK_ONLY = {"fallback lanes split wrongly"}
MATMAT_ONLY = {"row tail dropped", "matmat token stride"}
FOLD_BUGS = {"norm scale ignores eps": MODE_NORM, "accumulate overwrites": MODE_ACCUMULATE}


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
    source = inline_dequant(kernel, dequant)
    if bug in FOLD_BUGS:
        packed, keywords, x, want, bound = fold_case(layout, (13, 512), FOLD_BUGS[bug])
        got = run(kernels, layout, packed, (13, 512), x, source=source, **keywords)[0]
        assert not (np.abs(got - want) <= bound).all()
        return
    # decode_chunk (k-quants in matvec too) and matmat bugs show in matmat; the others in matvec
    matmat = (file == "dequant.wgsl" and "unit" not in bug) or bug in MATMAT_ONLY
    shape = (7, 512) if layout in KQUANTS else (7, 77 if layout == "f16" else 96)
    n_tokens = 3 if matmat else 1
    if not matmat:
        shape = (13, 1024)  # more units than a workgroup, more rows than one workgroup's
    packed, weights, x = case(layout, *shape, n_tokens=n_tokens)
    got = run(
        kernels,
        layout,
        packed,
        shape,
        x if matmat else x[0],
        entry="matmat" if matmat else "matvec",
        n_tokens=n_tokens,
        source=source,
    )
    with pytest.raises(AssertionError):
        check(got, weights, x)

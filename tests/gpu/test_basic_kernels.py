"""RMSNorm on the GPU against numpy, plus negative controls.

The controls prove the harness reads real GPU output: a shader with a planted off-by-one
bound or a wrong stride must fail the same comparison that the real shader passes.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.kernels import Buffer, params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(7)


def rmsnorm_ref(x: np.ndarray, w: np.ndarray, eps: float, offset: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    scale = 1.0 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + eps)
    return (x64 * scale * (w.astype(np.float64) + offset)).astype(np.float32)


def run_rmsnorm(kernels, x, w, eps=1e-6, offset=0.0, source=None, wg=256, y_init=None):
    """``y_init`` given: the accumulating variant, y += rmsnorm(x). A 3-D x is a split-K
    product's slices, summed by the kernel."""
    *slices, rows, n = x.shape
    y = (
        write(2, rows * n)
        if y_init is None
        else Buffer(2, "write", array=y_init, count=y_init.size)
    )
    accumulate = y_init is not None
    knobs = params(3, "IIffIII", rows, n, eps, offset, accumulate, *(slices or [1]), rows * n)
    (out,) = kernels.run(
        "rmsnorm",
        [read(0, x), read(1, w), y, knobs],
        (rows,),
        constants={"WG": wg},
        source=source,
    )
    return out.reshape(rows, n)


@pytest.mark.parametrize(
    ("rows", "n", "wg", "offset"),
    [
        (1, 1, 256, 0.0),
        (3, 576, 256, 0.0),
        (2, 640, 64, 1.0),
        (5, 1000, 256, 0.0),
        (1, 4097, 128, 0.0),
    ],
)
def test_rmsnorm_matches_numpy(kernels, rows, n, wg, offset):
    x = RNG.standard_normal((rows, n)).astype(np.float32)
    w = RNG.standard_normal(n).astype(np.float32)
    got = run_rmsnorm(kernels, x, w, offset=offset, wg=wg)
    np.testing.assert_allclose(got, rmsnorm_ref(x, w, 1e-6, offset), rtol=2e-5, atol=2e-6)


def test_rmsnorm_accumulates_into_y(kernels):
    """The post-norm + residual variant: y += rmsnorm(x) (Gemma's sandwich norms)."""
    x = RNG.standard_normal((3, 640)).astype(np.float32)
    w = RNG.standard_normal(640).astype(np.float32)
    y0 = RNG.standard_normal((3, 640)).astype(np.float32)
    got = run_rmsnorm(kernels, x, w, offset=1.0, wg=64, y_init=y0)
    want = y0.astype(np.float64) + rmsnorm_ref(x, w, 1e-6, 1.0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=4e-6)


def test_rmsnorm_sums_k_slices(kernels):
    """A post-norm reading a split-K product: rmsnorm of the sum of the slices."""
    x = RNG.standard_normal((4, 3, 640)).astype(np.float32)
    w = RNG.standard_normal(640).astype(np.float32)
    y0 = RNG.standard_normal((3, 640)).astype(np.float32)
    got = run_rmsnorm(kernels, x, w, offset=1.0, wg=64, y_init=y0)
    want = y0.astype(np.float64) + rmsnorm_ref(x.sum(axis=0), w, 1e-6, 1.0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=4e-6)


PLANTED_BUGS = {
    "rmsnorm slices not strided": (
        "rmsnorm.wgsl",
        "x[s * params.slice_stride + i]",
        "x[i]",
    ),
    "rmsnorm off-by-one bound": (
        "rmsnorm.wgsl",
        "for (var i = lid; i < params.n; i += WG) {\n    let value",
        "for (var i = lid; i + 1u < params.n; i += WG) {\n    let value",
    ),
    "rmsnorm wrong stride": (
        "rmsnorm.wgsl",
        "let base = row * params.n;",
        "let base = row * (params.n - 1u);",
    ),
    "rmsnorm accumulate ignored": (
        "rmsnorm.wgsl",
        "if (params.accumulate != 0u) {",
        "if (params.accumulate == 2u) {",
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    file, good, bad = PLANTED_BUGS[bug]
    source = shader_source(file)
    assert good in source, "the planted bug no longer applies: update the control"
    broken = source.replace(good, bad)
    x = RNG.standard_normal((2, 3, 300)).astype(np.float32)
    w = RNG.standard_normal(300).astype(np.float32)
    y0 = RNG.standard_normal((3, 300)).astype(np.float32)
    got = run_rmsnorm(kernels, x, w, source=broken, y_init=y0)
    want = y0.astype(np.float64) + rmsnorm_ref(x.sum(axis=0), w, 1e-6, 0.0)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=4e-6)

"""RMSNorm and the f32 matrix-vector product on the GPU against numpy, plus negative controls.

The controls prove the harness reads real GPU output: a shader with a planted off-by-one
bound or a wrong stride must fail the same comparison that the real shader passes.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.kernels import params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(7)


def rmsnorm_ref(x: np.ndarray, w: np.ndarray, eps: float, offset: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    scale = 1.0 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + eps)
    return (x64 * scale * (w.astype(np.float64) + offset)).astype(np.float32)


def run_rmsnorm(kernels, x, w, eps=1e-6, offset=0.0, source=None, wg=256):
    rows, n = x.shape
    (y,) = kernels.run(
        "rmsnorm",
        [read(0, x), read(1, w), write(2, rows * n), params(3, "IIff", rows, n, eps, offset)],
        (rows,),
        constants={"WG": wg},
        source=source,
    )
    return y.reshape(rows, n)


def run_matvec(kernels, weight, x, source=None, wg=128, grid_x=None):
    rows, cols = weight.shape
    grid_x = grid_x or min(rows, 65535)
    grid_y = -(-rows // grid_x)
    (y,) = kernels.run(
        "matvec",
        [read(0, weight), read(1, x), write(2, rows), params(3, "IIII", rows, cols, grid_x, 0)],
        (grid_x, grid_y),
        constants={"WG": wg},
        source=source,
    )
    return y


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


@pytest.mark.parametrize(
    ("rows", "cols", "wg", "grid_x"),
    [
        (1, 1, 128, None),
        (7, 33, 128, None),
        (576, 576, 128, None),
        (1536, 576, 64, None),
        (300, 1001, 256, None),
        (129, 257, 128, 50),
    ],
)
def test_matvec_f32_matches_numpy(kernels, rows, cols, wg, grid_x):
    weight = RNG.standard_normal((rows, cols)).astype(np.float32)
    x = RNG.standard_normal(cols).astype(np.float32)
    got = run_matvec(kernels, weight, x, wg=wg, grid_x=grid_x)
    want = (weight.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(cols))


def test_unwritten_outputs_read_as_nan(kernels):
    """Outputs start as NaN: a kernel that skips rows leaves them NaN, not zero."""
    weight = RNG.standard_normal((10, 16)).astype(np.float32)
    x = RNG.standard_normal(16).astype(np.float32)
    got = run_matvec(kernels, weight, x, grid_x=4)  # 4 workgroups < 10 rows, grid_y = 3 ok
    assert not np.isnan(got).any()
    (partial,) = kernels.run(
        "matvec",
        [read(0, weight), read(1, x), write(2, 10), params(3, "IIII", 10, 16, 4, 0)],
        (4, 1),  # deliberately too few workgroups: rows 4..9 are never written
    )
    assert np.isnan(partial[4:]).all() and not np.isnan(partial[:4]).any()


PLANTED_BUGS = {
    "rmsnorm off-by-one bound": (
        "rmsnorm.wgsl",
        "for (var i = lid; i < params.n; i += WG) {\n    y[",
        "for (var i = lid; i + 1u < params.n; i += WG) {\n    y[",
    ),
    "rmsnorm wrong stride": (
        "rmsnorm.wgsl",
        "let base = row * params.n;",
        "let base = row * (params.n - 1u);",
    ),
    "matvec off-by-one bound": ("matvec.wgsl", "k < params.cols;", "k + 1u < params.cols;"),
    "matvec wrong stride": (
        "matvec.wgsl",
        "let base = row * params.cols;",
        "let base = row * (params.cols + 1u);",
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    file, good, bad = PLANTED_BUGS[bug]
    source = shader_source(file)
    assert good in source, "the planted bug no longer applies: update the control"
    broken = source.replace(good, bad)
    if file == "rmsnorm.wgsl":
        x = RNG.standard_normal((3, 300)).astype(np.float32)
        w = RNG.standard_normal(300).astype(np.float32)
        got, want = run_rmsnorm(kernels, x, w, source=broken), rmsnorm_ref(x, w, 1e-6, 0.0)
        tol = {"rtol": 2e-5, "atol": 2e-6}
    else:
        weight = RNG.standard_normal((40, 300)).astype(np.float32)
        x = RNG.standard_normal(300).astype(np.float32)
        got, want = run_matvec(kernels, weight, x, source=broken), weight @ x
        tol = {"rtol": 1e-4, "atol": 1e-4 * np.sqrt(300)}
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, want, **tol)

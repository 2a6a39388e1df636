"""Gated activations and adds on the GPU against float64 numpy (and torch's own GELU-tanh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.kernels import Buffer, params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(3)
SILU, GELU_TANH = 0, 1
MAX_X = 65535


def grid(n: int, wg: int) -> tuple[int, int]:
    groups = -(-n // wg)
    return min(groups, MAX_X), -(-groups // MAX_X)


def run_gated(kernels, gate, up, act, wg=256, grid_x=None, source=None):
    gx, gy = grid(gate.size, wg)
    if grid_x:  # force a narrow grid: rows of grid_x workgroups
        gx, gy = grid_x, -(-gx * gy // grid_x)
    (out,) = kernels.run(
        "activation",
        [
            read(0, gate),
            read(1, up),
            write(2, gate.size),
            params(3, "IIIIII", gate.size, 0, act, gx, 1, 0),
        ],
        (gx, gy),
        entry="gated",
        constants={"WG": wg},
        source=source,
    )
    return out


def run_add(kernels, x, y, source=None, slices=1):
    """y += x, x of ``slices`` K slices of y's size summed (else x's size is the period)."""
    gx, gy = grid(y.size, 256)
    period = x.size // slices
    (out,) = kernels.run(
        "activation",
        [
            read(0, x),
            Buffer(1, "write", array=y, count=y.size),
            params(2, "IIIIII", y.size, period, 0, gx, slices, y.size),
        ],
        (gx, gy),
        entry="add",
        source=source,
    )
    return out


def gated_ref(gate, up, act):
    g = gate.astype(np.float64)
    if act == SILU:
        a = g / (1 + np.exp(-g))
    else:
        a = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))
    return a * up.astype(np.float64)


def activations(n):
    """Normals plus the awkward values: zero, tiny, and large enough to saturate."""
    gate = (RNG.standard_normal(n) * 3).astype(np.float32)
    extremes = np.array([0.0, 1e-8, -1e-8, 20.0, -20.0, 88.0, -88.0, 200.0, -200.0], np.float32)
    gate[: min(n, extremes.size)] = extremes[: min(n, extremes.size)]
    return gate, RNG.standard_normal(n).astype(np.float32)


def check(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("act", [SILU, GELU_TANH])
@pytest.mark.parametrize(
    ("n", "wg", "grid_x"), [(1, 256, None), (1537, 256, None), (9 * 6913, 64, None), (3001, 64, 7)]
)
def test_gated_matches_numpy(kernels, act, n, wg, grid_x):
    gate, up = activations(n)
    check(run_gated(kernels, gate, up, act, wg, grid_x), gated_ref(gate, up, act))


def test_gelu_reference_is_torch_gelu_tanh():
    gate, up = activations(1000)
    torch_gelu = torch.nn.functional.gelu(
        torch.tensor(gate, dtype=torch.float64), approximate="tanh"
    )
    np.testing.assert_allclose(
        gated_ref(gate, up, GELU_TANH), torch_gelu.numpy() * up, rtol=1e-9, atol=1e-14
    )


@pytest.mark.parametrize(("tokens", "width"), [(1, 576), (7, 1000), (3, 1), (1, 70001)])
def test_residual_add(kernels, tokens, width):
    x = RNG.standard_normal(tokens * width).astype(np.float32)
    y = RNG.standard_normal(tokens * width).astype(np.float32)
    np.testing.assert_array_equal(run_add(kernels, x, y), x + y)


@pytest.mark.parametrize("slices", [2, 6])
def test_residual_add_sums_k_slices(kernels, slices):
    """The residual of a split-K product: y += the sum of its slices (in slice order)."""
    x = RNG.standard_normal((slices, 3 * 1152)).astype(np.float32)
    y = RNG.standard_normal(3 * 1152).astype(np.float32)
    total = x[0].copy()
    for part in x[1:]:
        total += part
    np.testing.assert_array_equal(run_add(kernels, x.ravel(), y, slices=slices), y + total)


@pytest.mark.parametrize(("tokens", "width"), [(5, 896), (2, 33)])
def test_bias_add_broadcasts_over_tokens(kernels, tokens, width):
    bias = RNG.standard_normal(width).astype(np.float32)
    y = RNG.standard_normal(tokens * width).astype(np.float32)
    got = run_add(kernels, bias, y).reshape(tokens, width)
    np.testing.assert_array_equal(got, y.reshape(tokens, width) + bias)


PLANTED_BUGS = {
    "silu sign": ("v / (1.0 + exp(-v))", "v / (1.0 + exp(v))"),
    "gelu cubic coefficient": ("0.044715 * v", "0.04715 * v"),
    "activation flag ignored": ("gated_params.act == ACT_GELU_TANH", "false"),
    "add bound off by one": ("if (i >= add_params.n)", "if (i + 1u >= add_params.n)"),
    "add slices not strided": ("x[s * add_params.slice_stride", "x[s"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad = PLANTED_BUGS[bug]
    source = shader_source("activation.wgsl")
    source = source.replace('#include "act.wgsl"', shader_source("act.wgsl"))
    assert good in source, "the planted bug no longer applies: update the control"
    source = source.replace(good, bad)
    with pytest.raises(AssertionError):
        if bug.startswith("add"):
            x = RNG.standard_normal((2, 300)).astype(np.float32)
            y = RNG.standard_normal(300).astype(np.float32)
            got = run_add(kernels, x.ravel(), y, source, slices=2)
            np.testing.assert_array_equal(got, y + (x[0] + x[1]))
        else:
            gate, up = activations(700)
            check(
                run_gated(kernels, gate, up, GELU_TANH, source=source),
                gated_ref(gate, up, GELU_TANH),
            )
            check(run_gated(kernels, gate, up, SILU, source=source), gated_ref(gate, up, SILU))

"""Token choice on the GPU: argmax exactly as numpy's, and sampling whose empirical
frequencies over many draws (one dispatch, RNG counters step..step+N-1) pass a chi-square
test against the distribution transformers' warpers define; planted bugs must fail it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from harness.kernels import params, read, shader_source, write

RNG = np.random.default_rng(29)
NAN_BITS = 0x7FC00000
PARAMS = "IIfffIIII"  # vocab, top_k, top_p, temperature, softcap, seed, step, n_draws, ring_len


def run(
    kernels,
    logits,
    *,
    entry="sample",
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    softcap=0.0,
    seed=1,
    step=0,
    n_draws=1,
    ring_len=None,
    source=None,
):
    """Returns (token id, ring)."""
    ring_len = ring_len or n_draws
    token, ring = kernels.run(
        "sample",
        [
            read(0, logits.astype(np.float32)),
            write(1, 1, np.uint32),
            write(2, ring_len, np.uint32),
            params(
                3,
                PARAMS,
                logits.size,
                top_k,
                top_p,
                temperature,
                softcap,
                seed,
                step,
                n_draws,
                ring_len,
            ),
        ],
        (1,),
        entry=entry,
        source=source,
    )
    return int(token[0]), ring


# ---- argmax ------------------------------------------------------------------------------

ARGMAX_CASES = {
    "random 1000": lambda: RNG.standard_normal(1000),
    "single": lambda: np.array([-3.0]),
    "all equal": lambda: np.full(777, 0.25),
    "tie far apart": lambda: np.r_[np.zeros(5000), 9.0, np.zeros(200_000), 9.0, np.ones(7)],
    "tie adjacent late": lambda: np.r_[-np.ones(300), 2.0, 2.0],
    "all negative": lambda: -np.abs(RNG.standard_normal(4097)) - 100,
    "gemma vocab": lambda: RNG.standard_normal(262_144) * 5,
}


@pytest.mark.browser
@pytest.mark.parametrize("entry", ["argmax", "sample"])
@pytest.mark.parametrize("case", sorted(ARGMAX_CASES))
def test_argmax_is_numpy_argmax(kernels, entry, case):
    logits = ARGMAX_CASES[case]().astype(np.float32)
    token, ring = run(kernels, logits, entry=entry, temperature=0.0, step=6, ring_len=4)
    assert token == np.argmax(logits)
    assert ring[2] == token and (ring[[0, 1, 3]] == NAN_BITS).all(), "ring slot = step % len"


@pytest.mark.browser
def test_argmax_applies_softcap_first(kernels):
    """Capped logits that saturate to the same f32 tie, as transformers' argmax sees them."""
    logits = np.array([0.0, 500.0, 900.0, 3.0], np.float32)
    capped = (30.0 * np.tanh(logits / np.float32(30.0))).astype(np.float32)
    assert capped[1] == capped[2]
    assert run(kernels, logits, entry="argmax", softcap=30.0)[0] == np.argmax(capped) == 1


# ---- the sampling distribution -----------------------------------------------------------


def expected_probs(logits, temperature, top_k=0, top_p=1.0, softcap=0.0):
    """Token probabilities after soft-capping and transformers' warpers, in HF's order."""
    scores = torch.tensor(logits, dtype=torch.float64)[None]
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Upper-tail p-value of Pearson's statistic, bins with expected < 5 pooled; the tail of
    chi-square(df) via the Wilson-Hilferty cube-root normal approximation."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = np.r_[counts[big], counts[~big].sum()]
    exp = np.r_[expected[big], expected[~big].sum()]
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = obs.size - 1
    if df == 0:  # one possible outcome: nothing to test beyond "no other token drawn"
        return 1.0
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def assert_matches_distribution(draws: np.ndarray, probs: np.ndarray) -> None:
    counts = np.bincount(draws.astype(np.int64), minlength=probs.size)
    assert counts.size == probs.size, "a draw outside the vocabulary"
    assert counts[probs == 0].sum() == 0, "a filtered-out token was drawn"
    p = chi_square_p(counts, probs)
    assert p > 1e-3, f"chi-square p = {p:.3g}"


def test_chi_square_p_value_against_known_quantiles():
    """Wilson-Hilferty against tabulated chi-square 0.001 critical values (df 10, 50, 200)."""
    for df, critical in ((10, 29.588), (50, 86.661), (200, 267.54)):
        counts = np.full(df + 1, 100.0)  # df + 1 bins
        delta = math.sqrt(critical * 100 / 2)  # statistic 2 delta^2 / 100 = critical
        counts[:2] += (delta, -delta)
        got = chi_square_p(counts, np.full(df + 1, 1.0 / (df + 1)))
        assert 0.0008 < got < 0.0012


def gap_top_p(logits, temperature, top_k=0, near=0.8):
    """A top_p midway between two cumulative masses near ``near``: float32 vs float64
    rounding cannot move a token across the boundary."""
    probs = np.sort(expected_probs(logits, temperature, top_k))[::-1]
    cumulative = np.cumsum(probs)
    i = int(np.searchsorted(cumulative, near))
    return float((cumulative[i - 1] + cumulative[i]) / 2)


LOGITS = RNG.standard_normal(300).astype(np.float32) * 2.0
SAMPLING_CASES = {  # temperature, top_k, top_p (None: a gap near 0.8), softcap
    "temperature 1": (1.0, 0, 1.0, 0.0),
    "temperature 0.6": (0.6, 0, 1.0, 0.0),
    "top-k 12 at 1.4": (1.4, 12, 1.0, 0.0),
    "top-p": (1.0, 0, None, 0.0),
    "top-k 40 then top-p": (0.8, 40, None, 0.0),
    "softcap": (1.0, 0, 1.0, 2.5),
    "top-k 1": (1.0, 1, 1.0, 0.0),
}
DRAWS = 20_000


@pytest.mark.browser
@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_sampling_matches_the_transformers_distribution(kernels, case):
    temperature, top_k, top_p, softcap = SAMPLING_CASES[case]
    top_p = gap_top_p(LOGITS, temperature, top_k) if top_p is None else top_p
    token, draws = run(
        kernels,
        LOGITS,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        softcap=softcap,
        seed=1234,
        n_draws=DRAWS,
    )
    assert token == draws[-1]
    assert_matches_distribution(draws, expected_probs(LOGITS, temperature, top_k, top_p, softcap))


@pytest.mark.browser
def test_top_p_keeps_the_top_token_at_zero(kernels):
    _, draws = run(kernels, LOGITS, top_p=0.0, n_draws=50)
    assert (draws == np.argmax(LOGITS)).all()


@pytest.mark.browser
def test_large_vocab_draws_stay_in_the_top_k(kernels):
    logits = (RNG.standard_normal(262_144) * 3).astype(np.float32)
    _, draws = run(kernels, logits, temperature=0.9, top_k=40, top_p=0.95, n_draws=64)
    assert np.isin(draws, np.argsort(logits)[-40:]).all()
    assert np.unique(draws).size > 3


@pytest.mark.browser
def test_seed_and_step_decide_the_draw(kernels):
    a = run(kernels, LOGITS, seed=7, step=100, n_draws=8, ring_len=16)[1]
    b = run(kernels, LOGITS, seed=7, step=100, n_draws=8, ring_len=16)[1]
    c = run(kernels, LOGITS, seed=8, step=100, n_draws=8, ring_len=16)[1]
    d = run(kernels, LOGITS, seed=7, step=104, n_draws=1, ring_len=16)[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert d[104 % 16] == a[104 % 16], "draw n uses counter step + n, whatever the batch"


PLANTED_BUGS = {  # name: (good, bad, case)
    "temperature ignored": ("capped(i) / params.temperature", "capped(i)", "temperature 0.6"),
    "top-k keeps one more": (
        "f32(params.top_k), z_max",
        "f32(params.top_k + 1u), z_max",
        "top-k 12 at 1.4",
    ),
    "top-p ignores top-k": (
        "params.top_p * above(lid, keep,",
        "params.top_p * above(lid, 0u,",
        "top-k 40 then top-p",
    ),
    "same random number each draw": (
        "uniform01(params.step + n)",
        "uniform01(params.step)",
        "temperature 1",
    ),
    "softcap ignored": ("if (params.softcap > 0.0) {", "if (params.softcap > 1e9) {", "softcap"),
}


@pytest.mark.browser
@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_chi_square(kernels, bug):
    good, bad, case = PLANTED_BUGS[bug]
    source = shader_source("sample.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    temperature, top_k, top_p, softcap = SAMPLING_CASES[case]
    top_p = gap_top_p(LOGITS, temperature, top_k) if top_p is None else top_p
    _, draws = run(
        kernels,
        LOGITS,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        softcap=softcap,
        seed=1234,
        n_draws=DRAWS,
        source=source.replace(good, bad),
    )
    with pytest.raises(AssertionError):
        assert_matches_distribution(
            draws, expected_probs(LOGITS, temperature, top_k, top_p, softcap)
        )

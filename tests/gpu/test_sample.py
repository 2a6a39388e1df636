"""Token choice on the GPU: argmax exactly as numpy's, and sampling whose empirical
frequencies over many draws (one dispatch, RNG counters step..step+N-1) pass a chi-square
test against the distribution transformers' warpers define; planted bugs must fail it.
The two-stage sampler (per-block candidates, then the same algorithm over them) must pass
the same oracles, and fall back to the full logits when ties overflow a block's slots.
"""

from __future__ import annotations

import math
import re

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
NONE = 0xFFFFFFFF
LOWEST = np.float32(-3.4028234e38)
CANDIDATES = ("CANDIDATES",)


def shader_constant(name: str) -> int:
    return int(re.search(rf"const {name}: u32 = (\d+)u;", shader_source("sample.wgsl"))[1])


K, BLOCK = shader_constant("K"), shader_constant("BLOCK")  # slots per block, logits per block


def run(
    kernels,
    logits,
    *,
    entry="sample",
    two_stage=False,
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
    """Returns (token id, ring); ``two_stage`` runs the candidates pass first and the
    CANDIDATES variant of ``entry`` over its output."""
    ring_len = ring_len or n_draws
    logits = logits.astype(np.float32)
    uniform = params(
        3, PARAMS, logits.size, top_k, top_p, temperature, softcap, seed, step, n_draws, ring_len
    )
    lists = []
    if two_stage:
        value, index, overflow = candidates(kernels, logits, uniform, source)
        lists = [read(4, value), read(5, index), read(6, overflow)]
    token, ring = kernels.run(
        "sample",
        [read(0, logits), write(1, 1, np.uint32), write(2, ring_len, np.uint32), uniform, *lists],
        (1,),
        entry=entry,
        flags=CANDIDATES if two_stage else (),
        source=source,
    )
    return int(token[0]), ring


def candidates(kernels, logits, uniform, source=None):
    """The candidates pass: (cand_value, cand_index, overflow)."""
    blocks = -(-logits.size // BLOCK)
    return kernels.run(
        "sample",
        [
            read(0, logits),
            uniform,
            write(4, blocks * K),
            write(5, blocks * K, np.uint32),
            write(6, blocks, np.uint32),
        ],
        (blocks,),
        entry="candidates",
        flags=CANDIDATES,
        source=source,
    )


def greedy_candidates(kernels, logits):
    return candidates(kernels, logits, params(3, PARAMS, logits.size, 0, 1.0, 0.0, 0.0, 1, 0, 1, 1))


# ---- argmax ------------------------------------------------------------------------------

ARGMAX_CASES = {
    "random 1000": lambda: RNG.standard_normal(1000),
    "single": lambda: np.array([-3.0]),
    "all equal": lambda: np.full(777, 0.25),
    "tie far apart": lambda: np.r_[np.zeros(5000), 9.0, np.zeros(200_000), 9.0, np.ones(7)],
    "tie adjacent late": lambda: np.r_[-np.ones(300), 2.0, 2.0],
    "all negative": lambda: -np.abs(RNG.standard_normal(4097)) - 100,
    "gemma vocab": lambda: RNG.standard_normal(262_144) * 5,
    "awkward vocab, ties in a block": lambda: awkward_vocab_with_ties(),
    "NaN and more max ties than slots": lambda: np.r_[np.nan, -1.0, np.full(K + 9, 7.0), np.nan],
}
PATHS = {"argmax": ("argmax", False), "sample": ("sample", False), "two-stage": ("sample", True)}


def awkward_vocab_with_ties() -> np.ndarray:
    """49157 logits (12 full blocks and 5 tokens): the maximum tied between two invocations
    of block 4, in block 7 and in the short last block."""
    logits = RNG.standard_normal(49_157)
    logits[[30_000, 4 * BLOCK + 3616, 4 * BLOCK + 3700, 49_156]] = 9.0
    return logits


def assert_argmax(kernels, logits, path="two-stage", source=None):
    entry, two_stage = PATHS[path]
    token, ring = run(
        kernels,
        logits,
        entry=entry,
        two_stage=two_stage,
        temperature=0.0,
        step=6,
        ring_len=4,
        source=source,
    )
    assert token == np.nanargmax(logits), "numpy's argmax, NaN never winning"
    assert ring[2] == token and (ring[[0, 1, 3]] == NAN_BITS).all(), "ring slot = step % len"


@pytest.mark.browser
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", sorted(ARGMAX_CASES))
def test_argmax_is_numpy_argmax(kernels, path, case):
    assert_argmax(kernels, ARGMAX_CASES[case]().astype(np.float32), path)


@pytest.mark.browser
@pytest.mark.parametrize("two_stage", [False, True])
def test_argmax_applies_softcap_first(kernels, two_stage):
    """Capped logits that saturate to the same f32 tie, as transformers' argmax sees them."""
    logits = np.array([0.0, 500.0, 900.0, 3.0], np.float32)
    capped = (30.0 * np.tanh(logits / np.float32(30.0))).astype(np.float32)
    assert capped[1] == capped[2]
    token = run(kernels, logits, two_stage=two_stage, temperature=0.0, softcap=30.0)[0]
    assert token == np.argmax(capped) == 1


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
@pytest.mark.parametrize("two_stage", [False, True])
def test_large_vocab_draws_stay_in_the_top_k(kernels, two_stage):
    """The chat UI's defaults on Gemma 3's vocabulary size."""
    logits = (RNG.standard_normal(262_144) * 3).astype(np.float32)
    _, draws = run(
        kernels, logits, two_stage=two_stage, temperature=0.7, top_k=40, top_p=0.95, n_draws=64
    )
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


def planted(good: str, bad: str) -> str:
    """sample.wgsl with ``good`` replaced by ``bad`` (a planted bug)."""
    source = shader_source("sample.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    return source.replace(good, bad)


@pytest.mark.browser
@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_chi_square(kernels, bug):
    good, bad, case = PLANTED_BUGS[bug]
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
        source=planted(good, bad),
    )
    with pytest.raises(AssertionError):
        assert_matches_distribution(
            draws, expected_probs(LOGITS, temperature, top_k, top_p, softcap)
        )


# ---- the two-stage sampler's candidates ------------------------------------------------


@pytest.mark.browser
def test_candidates_are_each_blocks_top_k_in_index_order(kernels):
    """Greedy ranks by the logit: each block's K largest (NaN never), in index order, then
    unused slots (the short last block's)."""
    logits = RNG.permutation(49_157).astype(np.float32)  # distinct: one top K per block
    logits[[BLOCK + 7, 9 * BLOCK + 40]] = (np.nan, -np.nan)
    value, index, overflow = greedy_candidates(kernels, logits)
    for b in range(overflow.size):
        block = logits[b * BLOCK : (b + 1) * BLOCK]
        finite = np.flatnonzero(~np.isnan(block))
        ids = b * BLOCK + np.sort(finite[np.argsort(-block[finite])[:K]])
        ids = np.r_[ids, np.full(K - ids.size, NONE)].astype(np.uint32)
        np.testing.assert_array_equal(index[b * K : (b + 1) * K], ids, f"block {b}")
        expected = np.where(ids == NONE, LOWEST, logits[np.minimum(ids, logits.size - 1)])
        np.testing.assert_array_equal(value[b * K : (b + 1) * K], expected, f"block {b}")
    assert (overflow == 0).all()


@pytest.mark.browser
def test_ties_past_the_slots_flag_their_block(kernels):
    logits = RNG.standard_normal(3 * BLOCK).astype(np.float32)
    logits[BLOCK + 7 : BLOCK + 8 + K] = 5.0  # K + 1 ties at the top of block 1
    logits[2 * BLOCK + 9 : 2 * BLOCK + 9 + K] = 5.0  # exactly K in block 2: they fit
    assert greedy_candidates(kernels, logits)[2].tolist() == [0, 1, 0]


def one_block_holds_the_top_k() -> np.ndarray:
    """The K largest logits all in block 5, near-equal and spread over its invocations:
    each must be a candidate, the K-th included."""
    logits = RNG.standard_normal(49_157)
    logits[5 * BLOCK + 100 : 5 * BLOCK + 100 + 3 * K : 3] = 8.0 + RNG.uniform(0, 0.5, K)
    return logits


def ties_overflow_a_block() -> np.ndarray:
    """100 tied maxima in block 3: top-k keeps them all, more than its K slots."""
    logits = RNG.standard_normal(49_157) * 2
    logits[3 * BLOCK + 50 : 3 * BLOCK + 150] = 9.0
    return logits


LARGE = (RNG.standard_normal(49_157) * 2).astype(np.float32)
TWO_STAGE_CASES = {  # logits, temperature, top_k, top_p (None: a gap near 0.8), softcap
    "top-k 40 at 0.8": (LARGE, 0.8, 40, 1.0, 0.0),
    "top-k 40 then top-p": (LARGE, 0.8, 40, None, 0.0),
    "top-k K in one block": (one_block_holds_the_top_k().astype(np.float32), 1.0, K, 1.0, 0.0),
    "ties overflow a block": (ties_overflow_a_block().astype(np.float32), 1.0, 40, 1.0, 0.0),
    "one short block, softcap": (LOGITS, 1.4, 12, 1.0, 2.5),
}


def assert_two_stage_sampling(kernels, case, source=None):
    logits, temperature, top_k, top_p, softcap = TWO_STAGE_CASES[case]
    top_p = gap_top_p(logits, temperature, top_k) if top_p is None else top_p
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "softcap": softcap}
    token, draws = run(
        kernels, logits, two_stage=True, seed=1234, n_draws=DRAWS, source=source, **options
    )
    assert token == draws[-1]
    assert_matches_distribution(draws, expected_probs(logits, **options))


@pytest.mark.browser
@pytest.mark.parametrize("case", sorted(TWO_STAGE_CASES))
def test_two_stage_sampling_matches_the_transformers_distribution(kernels, case):
    assert_two_stage_sampling(kernels, case)


CANDIDATE_BUGS = {  # name: (good, bad, oracle that must fail)
    "ids off by one": (
        "cand_index[base + slot] = first + j;",
        "cand_index[base + slot] = first + j + 1u;",
        lambda kernels, source: assert_argmax(kernels, awkward_vocab_with_ties(), source=source),
    ),
    "invocations out of index order": (
        "return vec2<u32>(inclusive - v, total);",
        "return vec2<u32>(total - inclusive, total);",
        lambda kernels, source: assert_argmax(kernels, awkward_vocab_with_ties(), source=source),
    ),
    "threshold one rank too high": (
        "let threshold = max(t, 1u);",
        "let threshold = t + 1u;",
        lambda kernels, source: assert_two_stage_sampling(kernels, "top-k K in one block", source),
    ),
    "overflow never flagged": (
        "select(0u, 1u, slots.y > K)",
        "0u",
        lambda kernels, source: assert_two_stage_sampling(kernels, "ties overflow a block", source),
    ),
}


@pytest.mark.browser
@pytest.mark.parametrize("bug", sorted(CANDIDATE_BUGS))
def test_planted_candidates_bugs_fail_the_oracles(kernels, bug):
    good, bad, oracle = CANDIDATE_BUGS[bug]
    with pytest.raises(AssertionError):
        oracle(kernels, planted(good, bad))

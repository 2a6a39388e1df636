"""Rotary inverse frequencies against transformers' own rope initialisation functions."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from doppler.errors import DopplerError
from doppler.model.rope import RopeError, inv_freq

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
CASES = {
    "default smollm2": (64, 100000.0, None),
    "default gemma3 local": (256, 10000.0, {"rope_type": "default"}),
    "default tiny": (2, 10000.0, None),
    "linear gemma3 global": (256, 1000000.0, {"rope_type": "linear", "factor": 8.0}),
    "linear legacy key": (48, 10000.0, {"type": "linear", "factor": 2.5}),
    "llama3 3.2-1b": (64, 500000.0, LLAMA3),
    "llama3 3.1-8b": (128, 500000.0, {**LLAMA3, "factor": 8.0}),
}


def hf_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """transformers' inverse frequencies (float32) for a Llama config with this rope."""
    rope = {**(scaling or {}), "rope_theta": theta}
    kind = rope.pop("type", None) or rope.get("rope_type", "default")
    rope["rope_type"] = kind
    config = LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=131072,
        rope_parameters=rope,
    )
    if kind == "default":
        freqs, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        freqs, _ = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
    return freqs.numpy()


def assert_matches(ours: list[float], theirs: np.ndarray) -> None:
    """Agreement to a few float32 ulps (transformers computes in float32, we in float64)."""
    np.testing.assert_allclose(np.asarray(ours), theirs.astype(np.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inv_freq_matches_transformers(case):
    head_dim, theta, scaling = CASES[case]
    ours = inv_freq(head_dim, theta, scaling)
    assert len(ours) == head_dim // 2
    assert_matches(ours, hf_inv_freq(head_dim, theta, scaling))


def test_llama3_exercises_all_three_bands():
    """The Llama 3 case covers scaled, kept and smoothed frequencies, so each is compared."""
    base = np.asarray(inv_freq(64, 500000.0))
    ratio = base / np.asarray(inv_freq(64, 500000.0, LLAMA3))
    assert np.isclose(ratio, 1.0).any() and np.isclose(ratio, 32.0).any()
    assert ((ratio > 1.01) & (ratio < 31.9)).any()


@pytest.mark.parametrize(
    ("mutant", "reference"),
    [
        ((64, 500000.0 * 1.0001, None), (64, 500000.0, None)),
        ((64, 500000.0, {"rope_type": "linear", "factor": 32.0}), (64, 500000.0, LLAMA3)),
        ((64, 500000.0, {**LLAMA3, "high_freq_factor": 4.1}), (64, 500000.0, LLAMA3)),
        ((256, 1000000.0, None), (256, 1000000.0, {"rope_type": "linear", "factor": 8.0})),
    ],
)
def test_planted_bugs_fail_the_comparison(mutant, reference):
    with pytest.raises(AssertionError):
        assert_matches(inv_freq(*mutant), hf_inv_freq(*reference))


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((63, 10000.0, None), "head_dim"),
        ((0, 10000.0, None), "head_dim"),
        ((True, 10000.0, None), "head_dim"),
        ((64, 0.0, None), "theta"),
        ((64, float("nan"), None), "theta"),
        ((64, 10000.0, {"rope_type": "yarn", "factor": 4.0}), "yarn"),
        ((64, 10000.0, {"rope_type": "linear"}), "factor"),
        ((64, 10000.0, {**LLAMA3, "low_freq_factor": "1"}), "low_freq_factor"),
        ((64, 10000.0, {**LLAMA3, "high_freq_factor": 0.5}), "high_freq_factor"),
    ],
)
def test_bad_input_raises_a_typed_error_naming_the_field(args, field):
    with pytest.raises(RopeError, match=field) as info:
        inv_freq(*args)
    assert isinstance(info.value, DopplerError) and info.value.code == "bad_rope"

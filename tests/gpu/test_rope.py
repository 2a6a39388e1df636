"""RoPE on the GPU against a float64 numpy reference, in both pairings, plus controls.

The reference takes the angle as transformers does (float32 ``position * inv_freq``) and
rotates in float64; a CPU-only test holds that reference to transformers' own
``apply_rotary_pos_emb`` for the rotate-half pairing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from doppler.model.rope import inv_freq
from harness.kernels import Buffer, params, read, shader_source

RNG = np.random.default_rng(5)


def inout(binding: int, array: np.ndarray) -> Buffer:
    """A read-write binding that starts with ``array`` and is read back (in-place kernels)."""
    return Buffer(binding, "write", array=array, dtype=array.dtype, count=array.size)


def rope_ref(x, positions, freqs, rot_dim, interleaved):
    """x: (tokens, heads, head_dim) float32 -> rotated float64."""
    angle = positions.astype(np.float32)[:, None] * freqs.astype(np.float32)[None, :]
    cos, sin = np.cos(angle.astype(np.float64))[:, None], np.sin(angle.astype(np.float64))[:, None]
    out = x.astype(np.float64)
    half = rot_dim // 2
    a = np.arange(half) * 2 if interleaved else np.arange(half)
    b = a + 1 if interleaved else a + half
    xa, xb = out[..., a].copy(), out[..., b].copy()
    out[..., a], out[..., b] = xa * cos - xb * sin, xb * cos + xa * sin
    return out


def run_rope(kernels, q, k, positions, freqs, rot_dim, interleaved, source=None):
    n_tokens, n_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    threads = (n_heads + n_kv_heads) * rot_dim // 2
    q_out, k_out = kernels.run(
        "rope",
        [
            read(0, positions.astype(np.uint32)),
            read(1, freqs.astype(np.float32)),
            inout(2, q.reshape(-1)),
            inout(3, k.reshape(-1)),
            params(
                4,
                "IIIIIIII",
                n_tokens,
                n_heads,
                n_kv_heads,
                head_dim,
                rot_dim,
                int(interleaved),
                0,
                0,
            ),
        ],
        (-(-threads // 64), n_tokens),
        source=source,
    )
    return q_out.reshape(q.shape), k_out.reshape(k.shape)


def case(n_tokens, n_heads, n_kv_heads, head_dim, rot_dim, theta=10000.0, scaling=None):
    q = RNG.standard_normal((n_tokens, n_heads, head_dim)).astype(np.float32)
    k = RNG.standard_normal((n_tokens, n_kv_heads, head_dim)).astype(np.float32)
    positions = RNG.integers(0, 120000, n_tokens)
    positions[:3] = [0, 1, 8191][: len(positions[:3])]
    return q, k, positions, np.asarray(inv_freq(rot_dim, theta, scaling), np.float32)


SHAPES = [  # (tokens, heads, kv heads, head dim, rotated dims, interleaved)
    (1, 9, 3, 64, 64, False),
    (5, 4, 1, 256, 256, False),
    (3, 5, 5, 32, 16, False),
    (3, 3, 3, 10, 6, True),
    (7, 2, 1, 6, 6, True),
    (4, 3, 1, 64, 64, True),
]


@pytest.mark.browser
@pytest.mark.parametrize(("tokens", "heads", "kv", "dim", "rot", "interleaved"), SHAPES)
def test_rope_matches_numpy(kernels, tokens, heads, kv, dim, rot, interleaved):
    q, k, positions, freqs = case(tokens, heads, kv, dim, rot)
    got_q, got_k = run_rope(kernels, q, k, positions, freqs, rot, interleaved)
    np.testing.assert_allclose(got_q, rope_ref(q, positions, freqs, rot, interleaved), atol=2e-5)
    np.testing.assert_allclose(got_k, rope_ref(k, positions, freqs, rot, interleaved), atol=2e-5)


@pytest.mark.browser
def test_rope_with_llama3_scaled_frequencies(kernels):
    scaling = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    q, k, positions, freqs = case(6, 4, 2, 64, 64, 500000.0, scaling)
    got_q, got_k = run_rope(kernels, q, k, positions, freqs, 64, False)
    np.testing.assert_allclose(got_q, rope_ref(q, positions, freqs, 64, False), atol=2e-5)
    np.testing.assert_allclose(got_k, rope_ref(k, positions, freqs, 64, False), atol=2e-5)


def test_reference_matches_transformers_rotate_half():
    """The numpy reference is transformers' rotate-half RoPE (before any GPU is involved)."""
    q, k, positions, freqs = case(5, 4, 2, 64, 64)
    angle = torch.tensor(positions, dtype=torch.float32)[:, None] * torch.tensor(freqs)[None]
    emb = torch.cat((angle, angle), dim=-1)

    def as_hf(x):  # (tokens, heads, dim) -> (1, heads, tokens, dim)
        return torch.tensor(x).transpose(0, 1)[None]

    hf_q, hf_k = apply_rotary_pos_emb(as_hf(q), as_hf(k), emb.cos()[None], emb.sin()[None])
    for hf, x in ((hf_q, q), (hf_k, k)):
        np.testing.assert_allclose(
            rope_ref(x, positions, freqs, 64, False), hf[0].transpose(0, 1).numpy(), atol=2e-5
        )


PLANTED_BUGS = {
    "pairing flag ignored": ("params.interleaved != 0u", "params.interleaved == 2u"),
    "sin sign flipped": ("x.y * cs.x + x.x * cs.y", "x.y * cs.x - x.x * cs.y"),
    "k strided by q heads": ("(t * params.n_kv_heads + head", "(t * params.n_heads + head"),
    "position off by one": ("f32(positions[t])", "f32(positions[t] + 1u)"),
}


@pytest.mark.browser
@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad = PLANTED_BUGS[bug]
    source = shader_source("rope.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    q, k, positions, freqs = case(3, 4, 2, 16, 16)
    got_q, got_k = run_rope(kernels, q, k, positions, freqs, 16, True, source.replace(good, bad))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got_q, rope_ref(q, positions, freqs, 16, True), atol=2e-5)
        np.testing.assert_allclose(got_k, rope_ref(k, positions, freqs, 16, True), atol=2e-5)

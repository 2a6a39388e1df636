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


def with_rotary(source: str) -> str:
    """The kernel with rotary.wgsl inlined, so planted bugs can reach the rotation too."""
    return source.replace('#include "rotary.wgsl"', shader_source("rotary.wgsl"))


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
    source = with_rotary(shader_source("rope.wgsl"))
    assert good in source, "the planted bug no longer applies: update the control"
    q, k, positions, freqs = case(3, 4, 2, 16, 16)
    got_q, got_k = run_rope(kernels, q, k, positions, freqs, 16, True, source.replace(good, bad))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got_q, rope_ref(q, positions, freqs, 16, True), atol=2e-5)
        np.testing.assert_allclose(got_k, rope_ref(k, positions, freqs, 16, True), atol=2e-5)


def head_norm64(x, w, eps, offset):
    """Per-head RMSNorm (Gemma 3's q/k norms) in float64: x (tokens, heads, dim)."""
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps)
    return x64 / rms * (w.astype(np.float64) + offset)


def run_rope_store(
    kernels, k, v, positions, freqs, rot_dim, interleaved, max_ctx, norm=None, source=None
):
    """rope_store as ops.rope_store dispatches it; returns (k_cache, v_cache), NaN wherever
    nothing was stored."""
    n_tokens, n_kv, head_dim = k.shape
    caches = [np.full(n_kv * max_ctx * head_dim, np.nan, np.float32) for _ in range(2)]
    shape = (n_tokens, n_kv, head_dim, rot_dim, int(interleaved), max_ctx, int(norm is not None))
    caches = kernels.run(
        "rope",
        [
            read(0, positions.astype(np.uint32)),
            read(1, freqs.astype(np.float32)),
            read(3, k.reshape(-1)),
            read(4, v.reshape(-1)),
            inout(5, caches[0]),
            inout(6, caches[1]),
            read(7, freqs.astype(np.float32) if norm is None else norm),
            params(8, "IIIIIIIff", *shape, 1e-6, 1.0),
        ],
        (n_kv, n_tokens),
        entry="rope_store",
        source=source,
    )
    return tuple(c.reshape(n_kv, max_ctx, head_dim) for c in caches)


def rope_store_case(tokens, kv, dim, normed):
    _, k, positions, freqs = case(tokens, 1, kv, dim, dim)
    positions = np.arange(tokens) * 3 + 2  # distinct cache rows
    positions[-1] = 10_000  # past max_ctx: not stored
    v = RNG.standard_normal(k.shape).astype(np.float32)
    norm = RNG.standard_normal(dim).astype(np.float32) if normed else None
    return k, v, positions, freqs, norm


def check_rope_store(got, k, v, positions, freqs, rot, interleaved, max_ctx, norm):
    k_cache, v_cache = got
    if norm is not None:
        k = head_norm64(k, norm, 1e-6, 1.0)
    want_k = rope_ref(k, positions, freqs, rot, interleaved)
    stored = positions < max_ctx
    for t in np.flatnonzero(stored):
        np.testing.assert_allclose(k_cache[:, positions[t]], want_k[t], atol=5e-5)
        np.testing.assert_array_equal(v_cache[:, positions[t]], v[t])
    others = np.setdiff1d(np.arange(max_ctx), positions[stored])
    assert np.isnan(k_cache[:, others]).all() and np.isnan(v_cache[:, others]).all()


STORE_SHAPES = [  # (tokens, kv heads, head dim, interleaved, per-head norm)
    (1, 3, 64, False, False),
    (3, 1, 256, False, True),
    (4, 3, 10, True, False),
    (2, 2, 12, True, True),
]


@pytest.mark.browser
@pytest.mark.parametrize(("tokens", "kv", "dim", "interleaved", "normed"), STORE_SHAPES)
def test_rope_store_matches_numpy(kernels, tokens, kv, dim, interleaved, normed):
    """k norm, RoPE and the KV cache write in one kernel: k rotated and v copied into it."""
    k, v, positions, freqs, norm = rope_store_case(tokens, kv, dim, normed)
    got = run_rope_store(kernels, k, v, positions, freqs, dim, interleaved, 40, norm)
    check_rope_store(got, k, v, positions, freqs, dim, interleaved, 40, norm)


STORE_BUGS = {
    "norm offset ignored": ("(norm[d] + store.norm_offset)", "norm[d]"),
    "rotation partner": ("value = select(r.y, r.x, d == a);", "value = select(r.x, r.y, d == a);"),
    "v shifted": (
        "v_cache[cached + d] = v_in[base + d];",
        "v_cache[cached + d] = v_in[base + d + 1u];",
    ),
    "cache bound ignored": ("if (pos < store.max_ctx) {", "if (pos < 1000000u) {"),
}


@pytest.mark.browser
@pytest.mark.parametrize("bug", sorted(STORE_BUGS))
def test_rope_store_planted_bugs_fail(kernels, bug):
    good, bad = STORE_BUGS[bug]
    source = with_rotary(shader_source("rope.wgsl"))
    assert good in source, "the planted bug no longer applies: update the control"
    k, v, positions, freqs, norm = rope_store_case(3, 2, 16, True)
    positions[-1] = 39 + 40 * (bug == "cache bound ignored")  # 79: kv head 1 of row 39
    got = run_rope_store(
        kernels, k, v, positions, freqs, 16, True, 40, norm, source.replace(good, bad)
    )
    with pytest.raises(AssertionError):
        check_rope_store(got, k, v, positions, freqs, 16, True, 40, norm)

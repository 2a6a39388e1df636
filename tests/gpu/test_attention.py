"""Attention over the KV cache and the cache write on the GPU, against float64 numpy.

Cache rows a query must not see (future positions, outside the sliding window, never
written) hold NaN, so reading one poisons the output instead of slipping under tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from doppler.model.rope import inv_freq
from gpu.test_rope import head_norm64, rope_ref
from harness.kernels import Buffer, params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(17)
# n_tokens, n_heads, n_kv_heads, head_dim, max_ctx, window, scale, softcap, split_len, n_splits,
# rope_dim, interleaved, q_normed, eps, norm_offset
PARAMS = "IIIIIIffIIIIIff"
NO_ROPE = (0, 0, 0, 0.0, 0.0)


def rope_inputs(rope):
    """Bindings 6 (inv_freq) and 7 (q norm) for main/split: ``rope`` = (inv_freq, q norm or
    None), or dummies with rope off."""
    freqs, q_norm = rope if rope is not None else (np.zeros(4, np.float32), None)
    return [read(6, freqs), read(7, freqs if q_norm is None else q_norm)]


def rope_params(rope, head_dim, interleaved):
    """The rope fields of PARAMS: RoPE over the whole head, the q norm with offset 1."""
    if rope is None:
        return NO_ROPE
    return (head_dim, int(interleaved), int(rope[1] is not None), 1e-6, 1.0)


def inout(binding: int, array: np.ndarray) -> Buffer:
    return Buffer(binding, "write", array=array, dtype=array.dtype, count=array.size)


def run_attention(
    kernels,
    q,
    k_cache,
    v_cache,
    positions,
    window=0,
    scale=None,
    softcap=0.0,
    wg=64,
    source=None,
    rope=None,
    interleaved=False,
    split_len=None,
):
    """split (partials per range of split_len keys; by default one range: the whole cache)
    then combine, as the runtime runs attention."""
    n_tokens, n_heads, head_dim = q.shape
    n_kv_heads, max_ctx, _ = k_cache.shape
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    split_len = split_len or max_ctx
    n_splits = -(-max_ctx // split_len)
    shape = (n_tokens, n_heads, n_kv_heads, head_dim, max_ctx, window, scale, softcap)
    packed = params(
        5, PARAMS, *shape, split_len, n_splits, *rope_params(rope, head_dim, interleaved)
    )
    (partials,) = kernels.run(
        "attention",
        [
            read(0, q),
            read(1, k_cache),
            read(2, v_cache),
            read(3, positions.astype(np.uint32)),
            write(4, n_tokens * n_heads * n_splits * (head_dim + 2)),
            packed,
            *rope_inputs(rope),
        ],
        (n_heads, n_tokens, n_splits),
        entry="split",
        constants={"WG": wg},
        source=source,
    )
    (out,) = kernels.run(
        "attention",
        [read(0, partials), write(1, q.size), packed],
        (n_heads, n_tokens),
        entry="combine",
        constants={"WG": wg},
        source=source,
    )
    return out.reshape(q.shape)


def attention_ref(q, k_cache, v_cache, positions, window=0, scale=None, softcap=0.0):
    _, n_heads, head_dim = q.shape
    group = n_heads // k_cache.shape[0]
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    out = np.zeros(q.shape)
    for t, pos in enumerate(positions):
        lo = max(0, pos + 1 - window) if window else 0
        for h in range(n_heads):
            keys = k_cache[h // group, lo : pos + 1].astype(np.float64)
            s = keys @ q[t, h].astype(np.float64) * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            p = np.exp(s - s.max())
            out[t, h] = p @ v_cache[h // group, lo : pos + 1] / p.sum()
    return out


def make_case(n_tokens, n_heads, n_kv_heads, head_dim, max_ctx, first_pos, window=0):
    """Queries at positions first_pos.., a cache filled for what they may see, NaN elsewhere."""
    positions = np.arange(first_pos, first_pos + n_tokens)
    q = RNG.standard_normal((n_tokens, n_heads, head_dim)).astype(np.float32)
    k = np.full((n_kv_heads, max_ctx, head_dim), np.nan, np.float32)
    v = np.full_like(k, np.nan)
    lo = max(0, first_pos + 1 - window) if window else 0
    seen = slice(lo, positions[-1] + 1)
    k[:, seen] = RNG.standard_normal(k[:, seen].shape) * 2
    v[:, seen] = RNG.standard_normal(v[:, seen].shape)
    return q, k, v, positions


def check(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


CASES = {  # tokens, heads, kv heads, head dim, max ctx, first position, window, softcap, wg
    "decode at 0": (1, 9, 3, 64, 20, 0, 0, 0.0, 64),
    "decode smollm2": (1, 9, 3, 64, 200, 137, 0, 0.0, 64),
    "decode many tiles": (1, 4, 1, 256, 400, 333, 0, 0.0, 32),
    "decode window": (1, 4, 2, 32, 300, 250, 37, 0.0, 64),
    "decode window longer than pos": (1, 4, 2, 32, 40, 10, 512, 0.0, 64),
    "decode softcap": (1, 6, 6, 16, 90, 70, 0, 5.0, 64),
    "prefill from 0": (13, 4, 2, 40, 16, 0, 0, 0.0, 64),
    "prefill continuing": (11, 6, 3, 24, 80, 45, 0, 0.0, 32),
    "prefill window softcap": (21, 2, 1, 8, 40, 0, 5, 2.0, 64),
    "prefill head_dim 512": (3, 2, 1, 512, 8, 2, 0, 0.0, 128),
    "prefill head_dim 12": (5, 4, 2, 12, 30, 7, 0, 0.0, 64),  # not whole unrolled steps
    "decode long context": (1, 4, 2, 32, 300, 280, 0, 0.0, 64),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attention_matches_numpy(kernels, name):
    n_tokens, n_heads, n_kv, head_dim, max_ctx, first, window, softcap, wg = CASES[name]
    q, k, v, positions = make_case(n_tokens, n_heads, n_kv, head_dim, max_ctx, first, window)
    got = run_attention(kernels, q, k, v, positions, window, softcap=softcap, wg=wg)
    check(got, attention_ref(q, k, v, positions, window, softcap=softcap))


def test_query_pre_attn_scalar(kernels):
    """Gemma scales by query_pre_attn_scalar ** -0.5 rather than head_dim ** -0.5."""
    q, k, v, positions = make_case(2, 4, 1, 32, 10, 3)
    got = run_attention(kernels, q, k, v, positions, scale=256**-0.5)
    check(got, attention_ref(q, k, v, positions, scale=256**-0.5))


@pytest.mark.parametrize(
    ("head_dim", "interleaved", "normed"), [(64, False, False), (32, True, True), (12, False, True)]
)
def test_queries_normed_and_rotated_inside(kernels, head_dim, interleaved, normed):
    """With rope_dim, attention RMS-norms (Gemma's q norm) and rotates the raw queries itself,
    as rope.wgsl would have before it."""
    q, k, v, positions = make_case(4, 4, 2, head_dim, 40, 21)
    freqs = np.asarray(inv_freq(head_dim, 10000.0, None), np.float32)
    norm = RNG.standard_normal(head_dim).astype(np.float32) if normed else None
    got = run_attention(kernels, q, k, v, positions, rope=(freqs, norm), interleaved=interleaved)
    q_in = head_norm64(q, norm, 1e-6, 1.0) if normed else q
    q_ref = rope_ref(q_in, positions, freqs, head_dim, interleaved)
    check(got, attention_ref(q_ref, k, v, positions))
    with pytest.raises(AssertionError):  # the same queries unrotated are far off
        check(got, attention_ref(q_in, k, v, positions))


def run_kv_write(kernels, k_new, v_new, positions, k_cache, v_cache, source=None):
    n_tokens, n_kv_heads, head_dim = k_new.shape
    max_ctx = k_cache.shape[1]
    k_out, v_out = kernels.run(
        "attention",
        [
            read(0, k_new),
            read(1, v_new),
            read(2, positions.astype(np.uint32)),
            inout(3, k_cache),
            inout(4, v_cache),
            params(
                5, PARAMS, n_tokens, 0, n_kv_heads, head_dim, max_ctx, 0, 0.0, 0.0, 0, 0, *NO_ROPE
            ),
        ],
        (-(-(n_kv_heads * head_dim) // 64), n_tokens),
        entry="kv_write",
        source=source,
    )
    return k_out.reshape(k_cache.shape), v_out.reshape(v_cache.shape)


def kv_write_ref(k_new, v_new, positions, k_cache, v_cache):
    k, v = k_cache.copy(), v_cache.copy()
    for t, pos in enumerate(positions):
        if pos < k.shape[1]:
            k[:, pos], v[:, pos] = k_new[t], v_new[t]
    return k, v


@pytest.mark.parametrize(
    ("n_tokens", "n_kv", "head_dim", "max_ctx", "positions"),
    [
        (1, 3, 64, 50, [17]),
        (5, 1, 256, 12, [2, 3, 4, 5, 6]),
        (4, 2, 33, 9, [8, 0, 9, 100]),  # the last two are past the cache and must be skipped
    ],
)
def test_kv_write(kernels, n_tokens, n_kv, head_dim, max_ctx, positions):
    k_new, v_new = (
        RNG.standard_normal((n_tokens, n_kv, head_dim)).astype(np.float32) for _ in range(2)
    )
    k_cache, v_cache = (
        RNG.standard_normal((n_kv, max_ctx, head_dim)).astype(np.float32) for _ in range(2)
    )
    positions = np.asarray(positions)
    got = run_kv_write(kernels, k_new, v_new, positions, k_cache, v_cache)
    want = kv_write_ref(k_new, v_new, positions, k_cache, v_cache)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_prefill_then_decode_through_the_cache(kernels):
    """kv_write of a prompt, attention over it, then one decode step: the forward's order."""
    n_heads, n_kv, head_dim, max_ctx = 4, 2, 16, 24
    k_cache = np.full((n_kv, max_ctx, head_dim), np.nan, np.float32)
    v_cache = k_cache.copy()
    for positions in (np.arange(9), np.array([9])):
        n = positions.size
        q = RNG.standard_normal((n, n_heads, head_dim)).astype(np.float32)
        k_new, v_new = (
            RNG.standard_normal((n, n_kv, head_dim)).astype(np.float32) for _ in range(2)
        )
        k_cache, v_cache = run_kv_write(kernels, k_new, v_new, positions, k_cache, v_cache)
        got = run_attention(kernels, q, k_cache, v_cache, positions)
        check(got, attention_ref(q, k_cache, v_cache, positions))


PLANTED_BUGS = {
    "causal mask off by one": (
        "min(begin + params.split_len, pos + 1u)",
        "min(begin + params.split_len, pos)",
    ),
    "window off by one": (
        "return pos + 1u - params.window; }",
        "return pos + 2u - params.window; }",
    ),
    "grouped heads interleaved": (
        "(head / (params.n_heads / params.n_kv_heads))",
        "(head % params.n_kv_heads)",
    ),
    "no rescale of old tiles": ("var o = acc[d] * rescale;", "var o = acc[d];"),
    "softcap ignored": ("if (params.softcap > 0.0) {", "if (params.softcap > 1e9) {"),
    "score tail dropped": (
        "for (; d < n4; d++) { dots +=",
        "for (; d + 1u < n4; d++) { dots +=",
    ),
    "score unrolled reads repeat": ("k_cache[k_base4 + d + u]", "k_cache[k_base4 + d]"),
    "value tail dropped": ("for (; i < keys; i++) {", "for (; i + 1u < keys; i++) {"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad = PLANTED_BUGS[bug]
    source = shader_source("attention.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    q, k, v, positions = make_case(5, 4, 2, 36, 120, 95, 60)  # 9 vec4s: unrolled + tail
    got = run_attention(
        kernels, q, k, v, positions, 60, softcap=3.0, wg=32, source=source.replace(good, bad)
    )
    with pytest.raises(AssertionError):
        check(got, attention_ref(q, k, v, positions, 60, softcap=3.0))


SPLIT_CASES = {  # case name, split_len
    "decode smollm2": 64,
    "decode many tiles": 7,
    "decode window": 16,
    "decode softcap": 100,
    "prefill continuing": 5,
    "prefill window softcap": 3,
    "decode long context": 3,  # 100 splits: more than one workgroup's worth to combine
}


@pytest.mark.parametrize("name", sorted(SPLIT_CASES))
def test_split_attention_matches_numpy(kernels, name):
    n_tokens, n_heads, n_kv, head_dim, max_ctx, first, window, softcap, _ = CASES[name]
    q, k, v, positions = make_case(n_tokens, n_heads, n_kv, head_dim, max_ctx, first, window)
    split_len = SPLIT_CASES[name]
    got = run_attention(kernels, q, k, v, positions, window, softcap=softcap, split_len=split_len)
    check(got, attention_ref(q, k, v, positions, window, softcap=softcap))


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("total += partials[at + 1u] * exp(partials[at] - m);", "total += partials[at + 1u];"),
        ("select(0.0, acc[d / 4u][d % 4u], c > 0u)", "select(0.0, acc[d / 4u][d % 4u], c > 999u)"),
        (
            "let begin = min(first_key(pos) + s * params.split_len",
            "let begin = min(s * params.split_len",
        ),
    ],
    ids=["combine without rescaling", "combine drops earlier splits", "splits ignore the window"],
)
def test_split_planted_bugs_fail(kernels, good, bad):
    source = shader_source("attention.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    q, k, v, positions = make_case(1, 4, 2, 32, 300, 250, 37)
    got = run_attention(
        kernels, q, k, v, positions, 37, source=source.replace(good, bad), split_len=3
    )
    with pytest.raises(AssertionError):
        check(got, attention_ref(q, k, v, positions, 37))

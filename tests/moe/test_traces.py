"""Routing traces: synthetic generators are deterministic and tunable; JSON round-trips."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from doppler.moe.traces import Trace, TraceError, load_trace, synthetic_trace


def test_deterministic_and_valid():
    a = synthetic_trace(4, 16, 3, 50, skew=1.0, locality=0.5, seed=5)
    assert a == synthetic_trace(4, 16, 3, 50, skew=1.0, locality=0.5, seed=5)
    assert a != synthetic_trace(4, 16, 3, 50, skew=1.0, locality=0.5, seed=6)
    assert len(a.tokens) == 50 and all(len(token) == 4 for token in a.tokens)


def _reuse(trace: Trace) -> float:
    """Fraction of (token, layer) experts also chosen by the previous token."""
    kept = sum(
        len(set(cur) & set(prev))
        for p, c in zip(trace.tokens, trace.tokens[1:], strict=False)
        for prev, cur in zip(p, c, strict=True)
    )
    return kept / ((len(trace.tokens) - 1) * trace.num_layers * trace.top_k)


def _top_share(trace: Trace) -> float:
    """Share of layer 0's picks taken by its most popular expert."""
    counts = Counter(e for token in trace.tokens for e in token[0])
    return max(counts.values()) / sum(counts.values())


def test_locality_and_skew_do_what_they_say():
    uniform = synthetic_trace(4, 32, 2, 400, seed=1)
    local = synthetic_trace(4, 32, 2, 400, locality=0.8, seed=1)
    skewed = synthetic_trace(4, 32, 2, 400, skew=1.2, seed=1)
    # Uniform reuse is about top_k / num_experts = 6%; locality 0.8 keeps >= 80%.
    assert _reuse(uniform) < 0.15 < 0.8 <= _reuse(local)
    # Uniform: ~1/32 of picks each; Zipf 1.2 over 32: the top expert takes ~25%.
    assert _top_share(uniform) < 0.08 < 0.15 < _top_share(skewed)


def test_json_round_trip_and_errors(tmp_path):
    trace = synthetic_trace(3, 8, 2, 5, seed=2)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace.to_json()))
    assert load_trace(path) == trace
    bad = trace.to_json()
    bad["tokens"][1][2] = [0, 0]
    path.write_text(json.dumps(bad))
    with pytest.raises(TraceError, match=r"trace.json: tokens\[1\]\[2\] must be 2 distinct"):
        load_trace(path)
    cases = [
        ({"num_layers": 1, "num_experts": 2, "top_k": 1}, "missing tokens"),
        ({"num_layers": 1, "num_experts": 2, "top_k": 3, "tokens": []}, "top_k=3 exceeds"),
        ({"num_layers": 0, "num_experts": 2, "top_k": 1, "tokens": []}, "num_layers must"),
        ({"num_layers": 1, "num_experts": 2, "top_k": 1, "tokens": [[[2]]]}, "out of range"),
        ({"num_layers": 2, "num_experts": 2, "top_k": 1, "tokens": [[[1]]]}, "has 1 layers"),
        ({"num_layers": 1, "num_experts": 2, "top_k": 1, "tokens": [[1]]}, r"lists \(layers\)"),
    ]
    for obj, message in cases:
        with pytest.raises(TraceError, match=message):
            Trace.from_json(obj)
    path.write_text("{")
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(path)
    with pytest.raises(TraceError, match="locality"):
        synthetic_trace(1, 2, 1, 1, locality=1.5)

"""The simulator's loop: counts add up, prefetch is accounted, the report is well formed."""

from __future__ import annotations

import pytest
from tools import paging_report

from doppler.moe.policy import LRU, CycleLFU, LFUDecay
from doppler.moe.simulator import ModelShape, NoisyRouter, policy_factories, simulate
from doppler.moe.traces import synthetic_trace

SHAPE = ModelShape("tiny", 6, 16, 2, 10, shared_per_layer=1, shared_bytes=12)
TRACE = synthetic_trace(6, 16, 2, 120, skew=0.8, locality=0.5, seed=4)


@pytest.mark.parametrize("name", list(policy_factories(4.0)))
def test_counts_add_up(name):
    sizes = SHAPE.sizes()
    policy = policy_factories(4.0)[name](SHAPE.total_bytes // 4, sizes, TRACE)
    stats = simulate(TRACE, policy, sizes, pinned=SHAPE.shared_keys(), warmup_tokens=20)
    assert stats.tokens == 100
    assert stats.requests == 100 * 6 * 2 == stats.hits + stats.misses
    assert stats.demand_bytes == 10 * stats.misses
    assert set(SHAPE.shared_keys()) <= policy.resident


@pytest.mark.parametrize("policy_class", [LRU, LFUDecay, CycleLFU])
def test_prefetch_accounting(policy_class):
    sizes = SHAPE.sizes()
    capacity = SHAPE.total_bytes // 4

    def run(accuracy):
        kwargs = {} if policy_class is LRU else {"half_life": 12.0}
        if policy_class is CycleLFU:
            kwargs["num_layers"] = 6
        policy = policy_class(capacity, sizes, **kwargs)
        router = None if accuracy is None else NoisyRouter(accuracy, 16, seed=1)
        return simulate(TRACE, policy, sizes, pinned=SHAPE.shared_keys(), router=router)

    none, perfect, noisy = run(None), run(1.0), run(0.5)
    assert none.prefetch_bytes == 0
    # A perfect router wastes nothing and every prefetch is used...
    assert perfect.prefetch_wasted_bytes == 0
    assert perfect.prefetch_used_bytes == perfect.prefetch_bytes > 0
    # ...and turns all misses but layer 0's (no prefetch across tokens) into hits.
    assert perfect.misses <= 120 * 2
    assert perfect.misses < none.misses
    # A noisy one wastes bytes; every prefetched byte is either used or wasted.
    assert noisy.prefetch_wasted_bytes > 0
    for stats in (perfect, noisy):
        assert stats.prefetch_used_bytes + stats.prefetch_wasted_bytes == stats.prefetch_bytes


def test_report_cell_and_summary(monkeypatch):
    monkeypatch.setitem(paging_report.TOKENS, "tiny", 12)
    rows = paging_report.run_cell(SHAPE, "both", quick=False, half_life=8.0)
    summary = paging_report.summarize(rows, 8.0)
    at_25 = summary["hit_rate_at_25pct"]["tiny"]["both"]
    assert set(at_25) == set(policy_factories(8.0))
    assert all(at_25["belady"] >= rate for rate in at_25.values())
    prefetch = summary["prefetch_at_25pct"]["tiny"]["both"]["lru"]
    assert set(prefetch) == {"none", "p=0.6", "p=0.8", "p=1"}

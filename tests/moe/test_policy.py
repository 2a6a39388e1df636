"""Cache policies: Belady is an upper bound, LRU is LRU, budgets and pins hold."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from doppler.moe.policy import (
    LRU,
    LRU2,
    Belady,
    CachePolicy,
    CacheTooSmall,
    CycleLFU,
    Key,
    LFUDecay,
    ProtocolError,
)
from doppler.moe.simulator import PagingStats, simulate
from doppler.moe.traces import Trace, synthetic_trace


@st.composite
def small_cases(draw, max_tokens=10):
    """A small random trace, uniform expert sizes and a cache holding at least one step."""
    num_layers = draw(st.integers(1, 3))
    num_experts = draw(st.integers(2, 5))
    top_k = draw(st.integers(1, min(3, num_experts)))
    layer = st.lists(
        st.integers(0, num_experts - 1), min_size=top_k, max_size=top_k, unique=True
    ).map(tuple)
    tokens = draw(st.lists(st.tuples(*[layer] * num_layers), min_size=1, max_size=max_tokens))
    slots = draw(st.integers(top_k, num_layers * num_experts))
    return Trace(num_layers, num_experts, top_k, tuple(tokens)), slots


def _sizes(trace: Trace, size: int = 1) -> dict[Key, int]:
    layers, experts = range(trace.num_layers), range(trace.num_experts)
    return {(layer, e): size for layer in layers for e in experts}


def _online(trace: Trace, capacity: int, sizes) -> list[CachePolicy]:
    layers = trace.num_layers
    return [
        LRU(capacity, sizes),
        LRU2(capacity, sizes),
        LFUDecay(capacity, sizes, half_life=layers),
        LFUDecay(capacity, sizes, half_life=8 * layers),
        CycleLFU(capacity, sizes, half_life=2 * layers, num_layers=layers),
    ]


def _hits(trace: Trace, policy: CachePolicy, sizes) -> int:
    return simulate(trace, policy, sizes).hits


def _belady_dominates(case, belady_class) -> bool:
    trace, slots = case
    sizes = _sizes(trace)
    best = _hits(trace, belady_class(slots, sizes, trace.requests()), sizes)
    return all(best >= _hits(trace, p, sizes) for p in _online(trace, slots, sizes))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_cases())
def test_belady_beats_every_policy(case):
    assert _belady_dominates(case, Belady)


class _PastBelady(Belady):
    """Planted bug: ranks by the previous use instead of the next one."""

    def _next_use(self, key: Key, step: int) -> int:
        uses = [s for s in self._uses.get(key, ()) if s < step]
        return len(self._future) - (uses[-1] if uses else -1)


def test_past_looking_belady_fails_the_bound():
    # The property test must be able to catch a reference that does not look ahead.
    found = find(
        small_cases(),
        lambda case: not _belady_dominates(case, _PastBelady),
        settings=settings(max_examples=2000, database=None, derandomize=True),
    )
    assert found is not None


def _optimal_hits(requests: list[list[Key]], slots: int) -> int:
    """Exhaustive search over every lazy eviction choice (tiny traces only)."""
    from itertools import combinations

    @cache
    def best(step: int, cached: frozenset) -> int:
        if step == len(requests):
            return 0
        keys = set(requests[step])
        hits = len(keys & cached)
        missing = keys - cached
        overflow = len(cached) + len(missing) - slots
        if overflow <= 0:
            return hits + best(step + 1, cached | missing)
        evictable = sorted(cached - keys)
        return hits + max(
            best(step + 1, (cached - set(out)) | missing)
            for out in combinations(evictable, overflow)
        )

    return best(0, frozenset())


@settings(max_examples=100, deadline=None)
@given(small_cases(max_tokens=5))
def test_belady_is_optimal_for_equal_sizes(case):
    trace, slots = case
    sizes = _sizes(trace)
    assert _hits(trace, Belady(slots, sizes, trace.requests()), sizes) == _optimal_hits(
        trace.requests(), slots
    )


def _reference_lru(requests: list[list[Key]], sizes, capacity: int) -> list[tuple]:
    """A list-based LRU: hits move to the back in request order, misses evict from the front
    (skipping this step's keys) and join the back."""
    order: list[Key] = []
    log = []
    for keys in requests:
        hits = [k for k in keys if k in order]
        misses = [k for k in keys if k not in order]
        for k in hits:
            order.remove(k)
            order.append(k)
        need = sum(sizes[k] for k in misses)
        victims = []
        while capacity - sum(sizes[k] for k in order) < need:
            victim = next(k for k in order if k not in keys)
            order.remove(victim)
            victims.append(victim)
        order.extend(misses)
        log.append((hits, misses, victims))
    return log


@settings(max_examples=100, deadline=None)
@given(small_cases(), st.lists(st.integers(1, 3), min_size=15, max_size=15))
def test_lru_matches_reference(case, size_pool):
    trace, _ = case
    sizes = {k: size_pool[(k[0] * 5 + k[1]) % 15] for k in _sizes(trace)}
    capacity = max(sum(sorted(sizes.values())[-trace.top_k :]), sum(sizes.values()) // 2)
    policy = LRU(capacity, sizes)
    log = []
    for keys in trace.requests():
        hits, misses = policy.request(keys)
        victims = policy.choose_victims(sum(sizes[k] for k in misses)) if misses else []
        for k in misses:
            policy.admit(k)
        log.append((hits, misses, victims))
    assert log == _reference_lru(trace.requests(), sizes, capacity)


class _MostRecentLRU(LRU):
    """Planted bug: evicts the most recently used expert instead of the least."""

    def _pop_victim(self) -> Key:
        for key in reversed(self._order):
            if key not in self._in_use:
                del self._order[key]
                return key
        raise CacheTooSmall("no evictable expert")


def test_mru_loses_to_lru_on_a_local_trace():
    trace = synthetic_trace(8, 16, 2, 200, locality=0.9, seed=3)
    sizes = _sizes(trace)
    capacity = len(sizes) // 4
    lru = _hits(trace, LRU(capacity, sizes), sizes)
    mru = _hits(trace, _MostRecentLRU(capacity, sizes), sizes)
    assert mru < 0.8 * lru


def _policies_with_pins(trace: Trace, capacity: int, sizes) -> list[CachePolicy]:
    return [*_online(trace, capacity, sizes), Belady(capacity, sizes, trace.requests())]


@settings(max_examples=100, deadline=None)
@given(small_cases(), st.integers(0, 2**32 - 1))
def test_budget_pins_and_counts_hold(case, seed):
    """Capacity is never exceeded, pinned experts stay, hits + misses = requests."""
    trace, slots = case
    sizes = _sizes(trace, size=2)
    shared = [(layer, trace.num_experts) for layer in range(trace.num_layers)]
    sizes.update({k: 3 for k in shared})
    capacity = 2 * slots + 3 * len(shared) + 1
    for policy in _policies_with_pins(trace, capacity, sizes):
        for key in shared:
            policy.pin(key)
        stats = PagingStats()
        for keys in trace.requests():
            hits, misses = policy.request(keys)
            stats.requests += len(keys)
            stats.hits += len(hits)
            stats.misses += len(misses)
            if misses:
                victims = policy.choose_victims(sum(sizes[k] for k in misses))
                assert not set(victims) & (set(shared) | set(keys))
                for k in misses:
                    policy.admit(k)
            assert policy.used_bytes <= capacity
            assert sum(sizes[k] for k in policy.resident) == policy.used_bytes
            assert set(shared) <= policy.resident
        assert stats.hits + stats.misses == stats.requests == sum(map(len, trace.requests()))


def test_pin_check_catches_a_policy_that_ignores_pins():
    # Control for the pin assertion above: "pinning" by a plain admit gets the expert evicted.
    class IgnoresPins(LRU):
        def pin(self, key: Key) -> None:
            self.admit(key)

    sizes = {(0, e): 1 for e in range(4)}
    policy = IgnoresPins(2, sizes)
    policy.pin((0, 3))
    for key in [(0, 0), (0, 1)]:
        _, misses = policy.request([key])
        policy.choose_victims(len(misses))
        policy.admit(key)
    assert (0, 3) not in policy.resident
    honest = LRU(2, sizes)
    honest.pin((0, 3))
    for key in [(0, 0), (0, 1)]:
        honest.request([key])
        honest.choose_victims(1)
        honest.admit(key)
    assert (0, 3) in honest.resident


def test_too_small_and_protocol_errors():
    sizes = {(0, 0): 4, (0, 1): 4, (0, 2): 4}
    with pytest.raises(CacheTooSmall, match="pinning"):
        LRU(3, sizes).pin((0, 0))
    policy = LRU(8, sizes)
    _, misses = policy.request([(0, 0), (0, 1)])
    for key in misses:
        policy.admit(key)
    with pytest.raises(CacheTooSmall, match="not pinned or in use"):
        policy.choose_victims(4)
    with pytest.raises(ProtocolError, match="already resident"):
        policy.admit((0, 0))
    with pytest.raises(ProtocolError, match="unknown expert"):
        policy.request([(5, 5)])
    with pytest.raises(ProtocolError, match="twice"):
        policy.request([(0, 2), (0, 2)])
    policy.request([(0, 2)])
    with pytest.raises(ProtocolError, match="choose_victims first"):
        policy.admit((0, 2))
    belady = Belady(8, sizes, [[(0, 0)]])
    with pytest.raises(ProtocolError, match="does not follow"):
        belady.request([(0, 1)])

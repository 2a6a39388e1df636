"""Replay routing traces through the runtime's own cache policies and count what paging costs.

:func:`simulate` is a thin loop over the :mod:`doppler.moe.policy` protocol, exactly as the
pager calls it, so a policy's hit rate here is the hit rate it gets in the browser for the
same routing. Prefetch is modelled with an oracle router (:class:`NoisyRouter`) whose guess
for the next layer is right with a chosen probability, since real predictions need a model.
CPython only by intent (it drives the report), though it imports nothing beyond the stdlib.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from doppler.moe.policy import LRU, LRU2, Belady, CachePolicy, CycleLFU, Key, LFUDecay
from doppler.moe.traces import Trace


@dataclass(frozen=True)
class ModelShape:
    """The MoE geometry that matters to paging; shared experts are pinned, never routed."""

    name: str
    num_layers: int
    num_experts: int
    top_k: int
    expert_bytes: int
    shared_per_layer: int = 0
    shared_bytes: int = 0

    def sizes(self) -> dict[Key, int]:
        """Bytes per key; shared experts take ids ``num_experts ..`` of each layer."""
        sizes = {
            (layer, e): self.expert_bytes
            for layer in range(self.num_layers)
            for e in range(self.num_experts)
        }
        for layer in range(self.num_layers):
            for j in range(self.shared_per_layer):
                sizes[(layer, self.num_experts + j)] = self.shared_bytes
        return sizes

    def shared_keys(self) -> list[Key]:
        return [
            (layer, self.num_experts + j)
            for layer in range(self.num_layers)
            for j in range(self.shared_per_layer)
        ]

    @property
    def total_bytes(self) -> int:
        per_layer = self.num_experts * self.expert_bytes
        return self.num_layers * (per_layer + self.shared_per_layer * self.shared_bytes)


@dataclass
class PagingStats:
    """Counts over the measured (post-warm-up) tokens; bytes are what moved into the cache."""

    tokens: int = 0
    requests: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    demand_bytes: int = 0
    prefetch_bytes: int = 0
    prefetch_used_bytes: int = 0
    prefetch_wasted_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def per_token(self, count: int) -> float:
        return count / self.tokens if self.tokens else 0.0

    def summary(self) -> dict[str, float]:
        """The report's view: rates and per-token figures next to the raw counts."""
        return {
            **asdict(self),
            "hit_rate": round(self.hit_rate, 4),
            "misses_per_token": round(self.per_token(self.misses), 3),
            "bytes_per_token": round(self.per_token(self.demand_bytes + self.prefetch_bytes)),
            "wasted_prefetch_bytes_per_token": round(self.per_token(self.prefetch_wasted_bytes)),
        }


@dataclass
class NoisyRouter:
    """Predicts a layer's experts: each true expert with probability ``accuracy``, else a
    uniformly random one (possibly a duplicate or another true one)."""

    accuracy: float
    num_experts: int
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def predict(self, layer: int, experts: Sequence[int]) -> list[Key]:
        rng = self._rng
        return [
            (layer, e if rng.random() < self.accuracy else rng.randrange(self.num_experts))
            for e in experts
        ]


class _Counter:
    """Tracks loads and evictions for :func:`simulate`, including which prefetches paid off."""

    def __init__(self, stats: PagingStats, sizes: Mapping[Key, int]) -> None:
        self.stats = stats
        self.sizes = sizes
        self.unused_prefetch: dict[Key, int] = {}

    def evicted(self, victims: Sequence[Key]) -> None:
        self.stats.evictions += len(victims)
        for key in victims:
            self.stats.prefetch_wasted_bytes += self.unused_prefetch.pop(key, 0)

    def hit(self, key: Key) -> None:
        self.stats.prefetch_used_bytes += self.unused_prefetch.pop(key, 0)


def simulate(
    trace: Trace,
    policy: CachePolicy,
    sizes: Mapping[Key, int],
    *,
    pinned: Sequence[Key] = (),
    router: NoisyRouter | None = None,
    warmup_tokens: int = 0,
) -> PagingStats:
    """Run ``trace`` through ``policy`` as the pager would; count from ``warmup_tokens`` on.

    Prefetch (when ``router`` is given) loads the predicted experts of the next layer of the
    same token after the current layer's misses; it never crosses a token boundary because
    the next token's hidden state does not exist yet. Prefetched bytes still unused at the
    end of the trace count as wasted.
    """
    for key in pinned:
        policy.pin(key)
    measured = PagingStats()
    scratch = PagingStats()  # absorbs the warm-up
    counter = _Counter(scratch, sizes)
    for t, layer, experts in trace.steps():
        if t == warmup_tokens and layer == 0:
            counter.stats = measured
        stats = counter.stats
        hits, misses = policy.request([(layer, e) for e in experts])
        stats.requests += len(experts)
        stats.hits += len(hits)
        stats.misses += len(misses)
        for key in hits:
            counter.hit(key)
        if misses:
            counter.evicted(policy.choose_victims(sum(sizes[key] for key in misses)))
            for key in misses:
                policy.admit(key)
                stats.demand_bytes += sizes[key]
        if router is not None and layer + 1 < trace.num_layers:
            predicted = router.predict(layer + 1, trace.tokens[t][layer + 1])
            for key in policy.prefetch_hint(predicted):
                size = sizes[key]
                if not policy.can_make_room(size):
                    break
                counter.evicted(policy.choose_victims(size))
                policy.admit(key)
                stats.prefetch_bytes += size
                counter.unused_prefetch[key] = size
        if layer == trace.num_layers - 1 and t >= warmup_tokens:
            measured.tokens += 1
    measured.prefetch_wasted_bytes += sum(counter.unused_prefetch.values())
    return measured


PolicyFactory = Callable[[int, Mapping[Key, int], Trace], CachePolicy]


def policy_factories(half_life_tokens: float) -> dict[str, PolicyFactory]:
    """Name -> constructor for every policy the report compares (Belady gets the future)."""
    return {
        LRU.name: lambda cap, sizes, trace: LRU(cap, sizes),
        LRU2.name: lambda cap, sizes, trace: LRU2(cap, sizes),
        LFUDecay.name: lambda cap, sizes, trace: LFUDecay(
            cap, sizes, half_life=half_life_tokens * trace.num_layers
        ),
        CycleLFU.name: lambda cap, sizes, trace: CycleLFU(
            cap, sizes, half_life=half_life_tokens * trace.num_layers, num_layers=trace.num_layers
        ),
        Belady.name: lambda cap, sizes, trace: Belady(cap, sizes, trace.requests()),
    }

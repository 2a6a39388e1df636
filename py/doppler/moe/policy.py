"""Expert-cache replacement policies, shared by the browser pager and the CPython simulator.

The pager keeps expert weights in a byte-budgeted cache keyed by ``(layer, expert)``. A
policy only *decides*; the caller moves bytes. Both callers follow one protocol per
token-layer step, which is why the simulator's numbers transfer to the runtime:

1. ``hits, misses = policy.request(keys)`` — the router's top-k for this layer. Records the
   use and marks ``keys`` in use: nothing in use is evicted until the next ``request``.
2. If ``misses``: ``victims = policy.choose_victims(sum of miss sizes)``; the caller frees the
   victims (the policy has already forgotten them), loads each miss and calls ``admit(key)``.
3. Optionally, prefetch the next layer's predicted experts: for each key of
   ``policy.prefetch_hint(predicted)``, stop unless ``policy.can_make_room(size)``, else
   ``choose_victims(size)`` then load and ``admit(key)``. Admitted keys stay protected until
   the next ``request``, so one prefetch never evicts another or the layer being computed.

Shared experts are ``pin``-ned once at load time: they use budget and are never victims.
Policies are pure Python (no numpy) because the same objects run in Pyodide.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

from doppler.errors import DopplerError

Key = tuple[int, int]
"""An expert's identity: ``(layer, expert)``."""


class PagingError(DopplerError):
    """Base of every expert-paging failure."""

    code = "paging"


class CacheTooSmall(PagingError):
    """The budget cannot hold the pinned experts plus one step's experts."""

    code = "cache_too_small"


class ProtocolError(PagingError):
    """The caller broke the request/choose_victims/admit protocol (a pager bug)."""

    code = "paging_protocol"


class CachePolicy:
    """Byte-budgeted expert cache bookkeeping; subclasses supply the eviction order.

    Subclasses implement ``_record(keys)`` (a request's use, called before the clock
    advances), ``_on_admit(key)``, and ``_pop_victim()``, which removes and returns one
    evictable key from the subclass's own structures (never pinned, never in use).
    """

    name: ClassVar[str] = ""

    def __init__(self, capacity_bytes: int, sizes: Mapping[Key, int]) -> None:
        if capacity_bytes < 0:
            raise CacheTooSmall(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._sizes = sizes
        self._resident: set[Key] = set()
        self._pinned: set[Key] = set()
        self._in_use: set[Key] = set()
        self.used_bytes = 0
        self._locked_bytes = 0  # resident bytes that cannot be evicted: pinned + in use
        self._tick = 0  # number of requests so far: the policies' clock

    def size(self, key: Key) -> int:
        """Bytes of ``key``; an unknown key is a pager bug, reported by name."""
        try:
            return self._sizes[key]
        except KeyError:
            raise ProtocolError(f"unknown expert key {key!r} (not in sizes)") from None

    def __contains__(self, key: object) -> bool:
        return key in self._resident

    @property
    def resident(self) -> frozenset[Key]:
        return frozenset(self._resident)

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    def can_make_room(self, nbytes: int) -> bool:
        """Whether evicting unlocked experts could free ``nbytes`` right now."""
        return nbytes <= self.capacity_bytes - self._locked_bytes

    def pin(self, key: Key) -> None:
        """Make ``key`` resident forever (shared experts); it must fit in free space."""
        if key in self._pinned:
            return
        size = self.size(key)
        if key in self._resident:
            self._forget(key)
            if key not in self._in_use:
                self._locked_bytes += size
        else:
            if size > self.free_bytes:
                raise CacheTooSmall(
                    f"pinning {key!r} needs {size} bytes, only {self.free_bytes} free"
                )
            self._resident.add(key)
            self.used_bytes += size
            self._locked_bytes += size
        self._pinned.add(key)

    def request(self, keys: Sequence[Key]) -> tuple[list[Key], list[Key]]:
        """Record one token-layer step's experts; return ``(hits, misses)`` in input order."""
        sizes = [self.size(key) for key in keys]  # validate before changing any state
        if len(set(keys)) != len(keys):
            raise ProtocolError(f"request {list(keys)!r} names an expert twice")
        for key in self._in_use:
            if key in self._resident and key not in self._pinned:
                self._locked_bytes -= self._sizes[key]
        self._in_use = set(keys)
        hits: list[Key] = []
        misses: list[Key] = []
        for key, size in zip(keys, sizes, strict=True):
            if key in self._resident:
                hits.append(key)
                if key not in self._pinned:
                    self._locked_bytes += size
            else:
                misses.append(key)
        self._record(keys)
        self._tick += 1
        return hits, misses

    def choose_victims(self, bytes_needed: int) -> list[Key]:
        """Evict until ``bytes_needed`` are free; return the victims (caller frees them)."""
        if not self.can_make_room(bytes_needed):
            raise CacheTooSmall(
                f"need {bytes_needed} bytes but only {self.capacity_bytes - self._locked_bytes}"
                f" of capacity_bytes={self.capacity_bytes} are not pinned or in use"
            )
        victims: list[Key] = []
        while self.free_bytes < bytes_needed:
            key = self._pop_victim()
            self._resident.discard(key)
            self.used_bytes -= self._sizes[key]
            victims.append(key)
        return victims

    def admit(self, key: Key) -> None:
        """Record that the caller loaded ``key``; it is in use until the next ``request``."""
        size = self.size(key)
        if key in self._resident:
            raise ProtocolError(f"admit({key!r}): already resident")
        if size > self.free_bytes:
            raise ProtocolError(
                f"admit({key!r}) needs {size} bytes, {self.free_bytes} free:"
                " call choose_victims first"
            )
        self._resident.add(key)
        self.used_bytes += size
        self._locked_bytes += size
        self._in_use.add(key)
        self._on_admit(key)

    def prefetch_hint(self, keys: Iterable[Key]) -> list[Key]:
        """Return the predicted keys to load now (not resident, deduplicated, in order).

        Predicted keys already resident become protected until the next ``request``, so
        loading the others cannot evict them (the simulator showed it does otherwise).
        """
        wanted = {key: self.size(key) for key in keys}
        for key, size in wanted.items():
            if key in self._resident and key not in self._in_use:
                self._in_use.add(key)
                if key not in self._pinned:
                    self._locked_bytes += size
        return [key for key in wanted if key not in self._resident]

    def _forget(self, key: Key) -> None:
        """Drop ``key`` from the eviction order (it became pinned); lazy heaps need nothing."""

    def _record(self, keys: Sequence[Key]) -> None:
        raise NotImplementedError

    def _on_admit(self, key: Key) -> None:
        raise NotImplementedError

    def _pop_victim(self) -> Key:
        raise NotImplementedError


class LRU(CachePolicy):
    """Evict the least recently requested expert: the issue's baseline."""

    name = "lru"

    def __init__(self, capacity_bytes: int, sizes: Mapping[Key, int]) -> None:
        super().__init__(capacity_bytes, sizes)
        self._order: OrderedDict[Key, None] = OrderedDict()  # resident, unpinned; oldest first

    def _forget(self, key: Key) -> None:
        self._order.pop(key, None)

    def _record(self, keys: Sequence[Key]) -> None:
        for key in keys:
            if key in self._order:
                self._order.move_to_end(key)

    def _on_admit(self, key: Key) -> None:
        self._order[key] = None

    def _pop_victim(self) -> Key:
        # In-use keys were just moved to the end, so this scan stops early.
        for key in self._order:
            if key not in self._in_use:
                del self._order[key]
                return key
        raise CacheTooSmall("no evictable expert")  # unreachable after can_make_room


_Entry = tuple[tuple[float, ...], Key]


class _HeapPolicy(CachePolicy):
    """A policy ranking experts by a per-key priority, lowest evicted first.

    Heaps are lazy: an entry is live only while its key is resident and its priority equals
    ``_priority[key]``, so an update is one push and an eviction needs no removal. Keys may be
    spread over several heaps (``_heap_index``) when the ranking is only comparable within one.
    """

    _UNSEEN: ClassVar[tuple[float, ...]] = (-math.inf, -math.inf)
    """Priority of a key admitted without ever being requested (a prefetch): evicted first
    unless a request confirms it."""

    def __init__(self, capacity_bytes: int, sizes: Mapping[Key, int]) -> None:
        super().__init__(capacity_bytes, sizes)
        self._priority: dict[Key, tuple[float, ...]] = {}
        self._heaps: list[list[_Entry]] = [[]]

    def _heap_index(self, key: Key) -> int:
        return 0

    def _push(self, key: Key, priority: tuple[float, ...]) -> None:
        heapq.heappush(self._heaps[self._heap_index(key)], (priority, key))

    def _set_priority(self, key: Key, priority: tuple[float, ...]) -> None:
        self._priority[key] = priority
        if key in self._resident and key not in self._pinned:
            self._push(key, priority)

    def _on_admit(self, key: Key) -> None:
        self._push(key, self._priority_on_admit(key))

    def _priority_on_admit(self, key: Key) -> tuple[float, ...]:
        return self._priority.setdefault(key, self._UNSEEN)

    def _best(self, heap: list[_Entry]) -> _Entry | None:
        """The lowest live evictable entry of ``heap``, left in place (eviction makes it stale)."""
        in_use: list[_Entry] = []
        best = None
        while heap:
            priority, key = heap[0]
            live = key in self._resident and self._priority.get(key) == priority
            if not live or key in self._pinned:
                heapq.heappop(heap)  # stale, or pinned after it was pushed
            elif key in self._in_use:
                in_use.append(heapq.heappop(heap))
            else:
                best = heap[0]
                break
        for entry in in_use:
            heapq.heappush(heap, entry)
        return best

    def _pop_victim(self) -> Key:
        best = self._best(self._heaps[0])
        if best is None:
            raise CacheTooSmall("no evictable expert")  # unreachable after can_make_room
        return best[1]


def _bump_log_count(old: tuple[float, ...] | None, now: float) -> float:
    """Add one use to a decayed count stored as ``log2(count) + now``; ``now`` is in
    half-lives. Comparing stored values compares counts decayed to any common time."""
    decayed = 0.0 if old is None else 2.0 ** (old[0] - now)
    return now + math.log2(decayed + 1.0)


class LFUDecay(_HeapPolicy):
    """Evict the expert with the smallest exponentially decayed request count.

    Why: routers have per-layer favourite experts (popularity skew) that LRU forgets as
    soon as a token passes them by; a decayed count keeps them while still following drift
    in topic. The count halves every ``half_life`` requests (token-layer steps) and is kept
    for evicted experts too, so a popular expert returns with its history. Ties go to the
    least recently used.
    """

    name = "lfu-decay"

    def __init__(self, capacity_bytes: int, sizes: Mapping[Key, int], half_life: float) -> None:
        if half_life <= 0:
            raise PagingError(f"half_life must be > 0 requests, got {half_life}")
        super().__init__(capacity_bytes, sizes)
        self.half_life = half_life

    def _record(self, keys: Sequence[Key]) -> None:
        now = self._tick / self.half_life
        for key in keys:
            self._set_priority(key, (_bump_log_count(self._priority.get(key), now), self._tick))


class CycleLFU(LFUDecay):
    """Decayed counts plus the one thing a pager knows for sure: layers run in a cycle.

    Why: every token visits layers 0..L-1 in order, so an expert of the layer just computed
    cannot be needed for L-1 steps while one of the next layer may be needed at once. LRU
    gets this exactly backwards (it keeps the layer just used and evicts the next one, so it
    collapses when the cache holds less than a token's experts). This policy estimates each
    expert's next use as ``steps until its layer runs + L * (1/p - 1)``, where ``p`` is its
    per-visit use rate from the decayed count, and evicts the latest (Belady with estimates).
    Only each layer's least-used expert can be the latest, so a victim costs O(layers).
    """

    name = "cycle-lfu"

    def __init__(
        self, capacity_bytes: int, sizes: Mapping[Key, int], half_life: float, num_layers: int
    ) -> None:
        super().__init__(capacity_bytes, sizes, half_life)
        self._heaps = [[] for _ in range(num_layers)]
        self.num_layers = num_layers
        # A count that gains 1 per visit tends to 1 / (1 - 2**(-L / half_life)).
        self._rate_scale = 1.0 - 2.0 ** (-num_layers / half_life)
        self._layer = -1  # layer of the last request
        self._candidates: list[tuple[float, Key] | None] | None = None

    def _heap_index(self, key: Key) -> int:
        if not 0 <= key[0] < self.num_layers:
            raise ProtocolError(f"{key!r}: layer outside num_layers={self.num_layers}")
        return key[0]

    def _forget(self, key: Key) -> None:
        self._candidates = None  # a pinned expert may have been a candidate

    def _record(self, keys: Sequence[Key]) -> None:
        super()._record(keys)
        if keys:
            self._layer = keys[0][0]
        self._candidates = None  # estimates are fixed within a step: computed once, lazily

    def _candidate(self, layer: int) -> tuple[float, Key] | None:
        """``(estimated next use, key)`` of the layer's least-used evictable expert."""
        best = self._best(self._heaps[layer])
        if best is None:
            return None
        rate = min(1.0, 2.0 ** (best[0][0] - self._tick / self.half_life) * self._rate_scale)
        until_layer = (layer - self._layer - 1) % self.num_layers + 1
        return (until_layer + self.num_layers * (1.0 / rate - 1.0) if rate else math.inf, best[1])

    def _pop_victim(self) -> Key:
        if self._candidates is None:
            self._candidates = [self._candidate(layer) for layer in range(self.num_layers)]
        while True:
            live = [c for c in self._candidates if c is not None]
            if not live:
                raise CacheTooSmall("no evictable expert")  # unreachable after can_make_room
            key = max(live)[1]
            if key not in self._in_use:
                break
            # A prefetch hint protected it after the estimates were made.
            self._candidates[key[0]] = self._candidate(key[0])
        self._resident.discard(key)  # early, so the layer's refreshed candidate is another key
        self._candidates[key[0]] = self._candidate(key[0])
        return key


class LRU2(_HeapPolicy):
    """LRU-K with K=2: evict the expert whose second-to-last request is oldest.

    Why: a parameter-free frequency-aware variant; one lucky request does not make an
    expert look hot (it ranks below every expert requested twice), and history survives
    eviction. Ties (experts seen once) go to the least recently used.
    """

    name = "lru2"

    def _record(self, keys: Sequence[Key]) -> None:
        for key in keys:
            old = self._priority.get(key)
            last = -1.0 if old is None else old[1]
            self._set_priority(key, (last, float(self._tick)))


class Belady(_HeapPolicy):
    """Belady's offline optimum: evict the expert requested furthest in the future.

    A reference, not a runtime policy: it is given the whole request sequence up front and
    checks that requests follow it. With equal expert sizes and whole-step requests it is
    optimal (exchange argument; tests compare it with exhaustive search); with mixed sizes it
    is the furthest-next-use heuristic.
    """

    name = "belady"

    def __init__(
        self, capacity_bytes: int, sizes: Mapping[Key, int], future: Sequence[Sequence[Key]]
    ) -> None:
        super().__init__(capacity_bytes, sizes)
        self._future = future
        self._uses: dict[Key, list[int]] = {}
        for step, keys in enumerate(future):
            for key in keys:
                self._uses.setdefault(key, []).append(step)

    def _next_use(self, key: Key, step: int) -> int:
        """Step of ``key``'s first request after ``step`` (``len(future)`` if none)."""
        uses = self._uses.get(key, ())
        index = bisect_right(uses, step)
        return uses[index] if index < len(uses) else len(self._future)

    def _record(self, keys: Sequence[Key]) -> None:
        if self._tick >= len(self._future) or list(keys) != list(self._future[self._tick]):
            raise ProtocolError(f"request {self._tick} does not follow Belady's future trace")
        for key in keys:
            self._set_priority(key, (-self._next_use(key, self._tick),))

    def _priority_on_admit(self, key: Key) -> tuple[float, ...]:
        # A prefetched key may never have been requested; its next use is still known.
        priority = (-self._next_use(key, self._tick - 1),)
        self._priority[key] = priority
        return priority

"""Load progress: bytes, shards, source, rate and ETA, emitted as ``progress`` events.

Shards arrive in parallel, each reporting how many of its bytes are in hand (which can go
back when a bad block is dropped), so the tracker keeps the latest count per shard and sums.
The rate is measured over a sliding window so the ETA follows a slowing or recovering source.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]
EMIT_EVERY_S = 0.1
WINDOW_S = 3.0


class LoadProgress:
    """Aggregates per-shard byte counts into throttled progress events."""

    def __init__(
        self,
        emit: Emit,
        sizes: dict[str, int],
        *,
        caching: bool,
        note: str | None = None,
        heap: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._sizes = dict(sizes)
        self._got: dict[str, int] = {}
        self._from: dict[str, int] = {"cache": 0, "network": 0}
        self._done = 0
        self._source = "cache"
        self._caching = caching
        self._note = note
        self._heap = heap
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])
        self._emitted_at = float("-inf")

    @property
    def loaded(self) -> int:
        return sum(self._got.values())

    def received(self, shard: str, count: int) -> None:
        """``count`` bytes of ``shard`` are in hand (network)."""
        self._got[shard] = min(count, self._sizes[shard])
        self._source = "network"
        self._maybe_emit(force=False)

    def finished(self, shard: str, source: str) -> None:
        """``shard`` is verified and on the GPU; ``source`` is ``cache`` or ``network``."""
        self._got[shard] = self._sizes[shard]
        self._from[source] += self._sizes[shard]
        self._done += 1
        self._source = source
        self._maybe_emit(force=True)

    def _rate(self, now: float, loaded: int) -> float:
        self._samples.append((now, loaded))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()
        then, before = self._samples[0]
        return (loaded - before) / (now - then) if now > then else 0.0

    def _maybe_emit(self, force: bool) -> None:
        now = self._clock()
        if not force and now - self._emitted_at < EMIT_EVERY_S:
            return
        self._emitted_at = now
        self._emit(self.event(now))

    def event(self, now: float | None = None) -> dict[str, Any]:
        now = self._clock() if now is None else now
        loaded = self.loaded
        total = sum(self._sizes.values())
        rate = self._rate(now, loaded)
        return {
            "type": "progress",
            "loadedBytes": loaded,
            "totalBytes": total,
            "shards": self._done,
            "totalShards": len(self._sizes),
            "source": self._source,
            "bytesPerSecond": rate,
            "etaSeconds": (total - loaded) / rate if rate > 0 else None,
            "cachedBytes": self._from["cache"],
            "networkBytes": self._from["network"],
            "caching": self._caching,
            "cachingNote": self._note,
            "heapBytes": self._heap(),
        }

"""The pair-merging loop shared by BPE (merge ranks) and SentencePiece (piece scores).

Both repeatedly join the adjacent pair with the best priority, leftmost first on ties, as
llama.cpp and HF tokenizers do; only the priority of a pair differs. A heap keeps long
inputs (SentencePiece sees whole runs of text, not words) at O(n log n).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

PairPriority = Callable[[str, str], "float | None"]


def merge_pairs(symbols: list[str], priority: PairPriority) -> list[str]:
    """Merge ``symbols`` until no adjacent pair has a priority (lower merges first)."""
    n = len(symbols)
    if n < 2:
        return symbols
    syms = list(symbols)
    nxt = [*range(1, n), -1]
    prv = list(range(-1, n - 1))
    heap: list[tuple[float, int, str, str]] = []
    for i in range(n - 1):
        p = priority(syms[i], syms[i + 1])
        if p is not None:
            heap.append((p, i, syms[i], syms[i + 1]))
    heapq.heapify(heap)
    while heap:
        _, left, a, b = heapq.heappop(heap)
        right = nxt[left]
        # Symbols only grow, so unchanged text on both sides means the pair is still current.
        if right < 0 or syms[left] != a or syms[right] != b:
            continue
        merged = a + b
        syms[left] = merged
        syms[right] = ""
        nxt[left] = after = nxt[right]
        if after >= 0:
            prv[after] = left
            p = priority(merged, syms[after])
            if p is not None:
                heapq.heappush(heap, (p, left, merged, syms[after]))
        before = prv[left]
        if before >= 0:
            p = priority(syms[before], merged)
            if p is not None:
                heapq.heappush(heap, (p, before, syms[before], merged))
    out = []
    i = 0
    while i >= 0:
        out.append(syms[i])
        i = nxt[i]
    return out

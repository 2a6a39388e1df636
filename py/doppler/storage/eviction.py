"""Which cached models to delete to make room: least recently used first, never in use.

Models share shards (content addressing), so deleting a model frees only the shards that no
remaining model uses. A model is in use when any tab or worker holds its Web Lock (or it is
the model being loaded); its shards are never freed.
"""

from __future__ import annotations

from collections.abc import Iterable

from doppler.storage.records import ModelRecord


def orphaned_shards(
    victims: Iterable[ModelRecord], keep: Iterable[ModelRecord], stored: dict[str, int]
) -> dict[str, int]:
    """Stored shards of ``victims`` that no model in ``keep`` uses: name -> size."""
    kept = {name for record in keep for name in record.shards}
    return {
        name: stored[name]
        for record in victims
        for name in record.shards
        if name in stored and name not in kept
    }


def freed_bytes(
    victims: list[ModelRecord], records: list[ModelRecord], stored: dict[str, int]
) -> int:
    """Bytes that deleting ``victims`` frees from a cache holding ``records``."""
    keep = [r for r in records if r not in victims]
    return sum(orphaned_shards(victims, keep, stored).values())


def choose_victims(
    records: list[ModelRecord], in_use: set[str], needed: int, stored: dict[str, int]
) -> list[ModelRecord]:
    """The least recently used models (not in ``in_use``) whose deletion frees ``needed``
    bytes; all evictable models when even that is not enough (the caller re-checks)."""
    victims: list[ModelRecord] = []
    for record in sorted(records, key=lambda r: r.last_used):
        if freed_bytes(victims, records, stored) >= needed:
            break
        if record.model_id not in in_use:
            victims.append(record)
    return victims

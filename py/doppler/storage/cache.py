"""The OPFS cache as a whole: model records, stored shards, quota, eviction and deletion.

Runs in Pyodide over ``app/storage/`` (``doppler_js.storage``); decisions come from the
pure modules (``eviction``, ``space``). Used by the loader (reserve space, mark use) and by
the ``cache.*`` requests behind ``doppler.cache.list() / usage() / delete()``.
"""

from __future__ import annotations

import re
from typing import Any

from doppler_js import storage  # type: ignore[import-not-found]

from doppler.jsffi import JsProxy, is_nullish, js_object, to_py
from doppler.storage.errors import InUse, NotCached, StorageError
from doppler.storage.eviction import choose_victims, orphaned_shards
from doppler.storage.records import ModelRecord
from doppler.storage.space import check_fits, missing_bytes

SHARD_NAME = re.compile(r"^[0-9a-f]{64}$")


class Cache:
    """One worker's view of the origin's OPFS cache (other tabs share the same files)."""

    def __init__(self, store: JsProxy) -> None:
        self.store = store

    @staticmethod
    async def open() -> tuple[Cache | None, str | None]:
        """The cache, or ``(None, reason)`` when this browser context has no usable OPFS."""
        opened = await storage.openStore()
        if is_nullish(opened.store):
            return None, str(opened.reason)
        return Cache(opened.store), None

    async def records(self) -> list[ModelRecord]:
        docs = to_py(await self.store.listModels()) or []
        return [r for r in map(ModelRecord.from_json, docs) if r is not None]

    async def stored(self) -> dict[str, int]:
        return to_py(await self.store.listShards()) or {}

    async def partial(self) -> dict[str, int]:
        return to_py(await self.store.partialBytes()) or {}

    async def save(self, record: ModelRecord) -> None:
        await self.store.writeModel(js_object(record.to_json()))

    async def _delete(self, victims: list[ModelRecord], records: list[ModelRecord]) -> int:
        """Delete ``victims``' records and the shards no other model uses; bytes freed."""
        keep = [r for r in records if r not in victims]
        shards = orphaned_shards(victims, keep, await self.stored())
        for name in shards:
            await self.store.deleteShard(name)
        for record in victims:
            for name in record.shards:
                if all(name not in r.shards for r in keep):
                    await self.store.removePartial(name)
            await self.store.deleteModel(record.model_id)
        return sum(shards.values())

    async def reserve(self, record: ModelRecord, total_size: int) -> None:
        """Record the model, then make sure its missing bytes fit, evicting least recently
        used models not in use; on failure forget the model again and raise QuotaExceeded.

        Called before any file is fetched, when only the manifest is known: the files not
        yet named (weight shards) count as missing unless an earlier load recorded them.
        """
        records = await self.records()
        earlier = next((r for r in records if r.model_id == record.model_id), None)
        known = {**(earlier.shards if earlier else {}), **record.shards}
        await self.save(
            ModelRecord(record.model_id, record.name, record.url, known, record.last_used)
        )
        stored = await self.stored()
        present = sum(known.values()) - missing_bytes(known, stored, await self.partial())
        needed = max(0, total_size - present)
        quota, usage = await estimate()
        freed = 0
        if needed > quota - usage:
            in_use = set(to_py(await storage.modelsInUse())) | {record.model_id}
            victims = choose_victims(records, in_use, needed - (quota - usage), stored)
            freed = await self._delete(victims, records)
            quota, usage = await estimate()
        try:
            check_fits(record.name, needed, quota, usage, freed)
        except StorageError:
            await self.forget(record.model_id, known)
            raise

    async def forget(self, model_id: str, files: dict[str, int]) -> None:
        """Delete a model's record and its ``files`` that no other model uses, including
        partial downloads and a record a failed write left unreadable."""
        records = [r for r in await self.records() if r.model_id != model_id]
        gone = ModelRecord(model_id, "", "", files, 0.0)
        await self._delete([gone], [*records, gone])

    async def listing(self) -> list[dict[str, Any]]:
        stored = await self.stored()
        in_use = set(to_py(await storage.modelsInUse()))
        out = []
        for r in sorted(await self.records(), key=lambda r: -r.last_used):
            have = sum(size for name, size in r.shards.items() if stored.get(name) == size)
            out.append(
                {
                    **r.to_json(),
                    "shards": len(r.shards),
                    "storedBytes": have,
                    "complete": have == r.total_bytes,
                    "inUse": r.model_id in in_use,
                }
            )
        return out

    async def delete(self, target: str) -> dict[str, Any]:
        """Delete a cached model (by id) or one shard (by name), unless something uses it."""
        records = await self.records()
        model = next((r for r in records if r.model_id == target), None)
        storage.releaseIfHeld(target)
        in_use = set(to_py(await storage.modelsInUse()))
        if model is not None:
            if model.model_id in in_use:
                raise InUse(f"model {model.name} ({target}) is in use by a tab; not deleted")
            freed = await self._delete([model], records)
            return {"deleted": target, "kind": "model", "freedBytes": freed}
        stored = await self.stored()
        if not SHARD_NAME.match(target) or target not in stored:
            raise NotCached(f"the cache holds no model or shard named {target!r}")
        users = [r for r in records if target in r.shards and r.model_id in in_use]
        if users:
            raise InUse(f"shard {target} is used by {users[0].name}, which is in use; not deleted")
        await self.store.deleteShard(target)
        return {"deleted": target, "kind": "shard", "freedBytes": stored[target]}


async def estimate() -> tuple[int, int]:
    """``navigator.storage.estimate()``: (quota, usage) in bytes."""
    figures = await storage.estimate()
    return int(figures.quota), int(figures.usage)


async def usage() -> dict[str, Any]:
    """Quota and what the cache holds, or why there is no cache."""
    figures = to_py(await storage.estimate())
    cache, reason = await Cache.open()
    if cache is None:
        return {**figures, "available": False, "reason": reason}
    stored = await cache.stored()
    return {
        **figures,
        "available": True,
        "reason": None,
        "cachedBytes": sum(stored.values()),
        "partialBytes": sum((await cache.partial()).values()),
        "shards": len(stored),
        "models": len(await cache.records()),
    }

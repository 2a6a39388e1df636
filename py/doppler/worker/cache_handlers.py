"""Request handlers behind ``doppler.cache``: ``cache.list``, ``cache.usage``, ``cache.delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doppler.errors import BadRequest
from doppler.storage import cache
from doppler.storage.errors import CacheUnavailable
from doppler.worker.protocol import Emit

if TYPE_CHECKING:
    from doppler.worker.main import Worker


async def _open() -> cache.Cache:
    store, reason = await cache.Cache.open()
    if store is None:
        raise CacheUnavailable(f"caching is off: this browser gives no usable storage ({reason})")
    return store


def handlers(_worker: Worker) -> dict[str, Any]:
    async def list_models(_payload: Any, _emit: Emit) -> dict[str, Any]:
        return {"models": await (await _open()).listing()}

    async def usage(_payload: Any, _emit: Emit) -> dict[str, Any]:
        return await cache.usage()

    async def delete(payload: Any, _emit: Emit) -> dict[str, Any]:
        target = payload.get("target") if isinstance(payload, dict) else None
        if not isinstance(target, str) or not target:
            raise BadRequest("cache.delete needs {target}: a model id or a shard name")
        return await (await _open()).delete(target)

    return {"cache.list": list_models, "cache.usage": usage, "cache.delete": delete}

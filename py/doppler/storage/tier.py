"""One load's source of verified files: the OPFS cache when there is one, then the
network sources in order (``app/storage/fetch.js`` does the streaming and verifying).

A tier also marks its model in use (a Web Lock, so no tab evicts it) and owns the
AbortController that stops every fetch of the load when the load is cancelled or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from doppler_js import storage  # type: ignore[import-not-found]
from pyodide.ffi import create_proxy  # type: ignore[import-not-found]

from doppler.errors import BadRequest
from doppler.format.hashing import HASH_HEX
from doppler.jsffi import JsProxy, js, js_object
from doppler.storage.cache import Cache
from doppler.storage.errors import from_code
from doppler.storage.records import ModelRecord


@dataclass
class Fetched:
    data: JsProxy  # Uint8Array of the whole verified file
    source: str  # "cache" or "network"
    cached: bool  # the file is now in OPFS


@dataclass
class RangeFetched:
    data: JsProxy  # Uint8Array of exactly the requested bytes, verified by block
    source: str  # "cache" (no request made) or "network" (some blocks were fetched)
    fetched_bytes: int  # response body bytes read for this range (0 from cache)


class ShardTier:
    def __init__(self, bases: list[str], cache: Cache | None, reason: str | None) -> None:
        self.bases = bases
        self.cache = cache
        self.reason = reason
        self.controller = js.AbortController.new()

    @staticmethod
    async def open(bases: list[str], model_id: str) -> ShardTier:
        cache, reason = await Cache.open()
        await storage.holdModel(model_id)
        note = None if cache else f"caching is off: this browser gives no usable storage ({reason})"
        return ShardTier(bases, cache, note)

    @property
    def caching(self) -> bool:
        return self.cache is not None

    async def reserve(self, record: ModelRecord, total_size: int) -> None:
        """Make room for a model of ``total_size`` bytes (no-op without a cache)."""
        if self.cache is not None:
            await self.cache.reserve(record, total_size)

    async def remember(self, record: ModelRecord) -> None:
        """Record every file of the model once the index shards have named them."""
        if self.cache is not None:
            await self.cache.save(record)

    async def forget(self, model_id: str, files: dict[str, int]) -> None:
        """Remove what this model left in the cache (after a write ran out of space)."""
        if self.cache is not None:
            await self.cache.forget(model_id, files)

    async def get(
        self,
        name: str,
        size: int,
        *,
        block_size: int | None = None,
        blocks: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        """The verified bytes of ``<name>.bin``; ``blocks`` (the index's block hashes)
        lets a download be verified, persisted and resumed block by block."""
        progress = create_proxy(lambda count: on_bytes(int(count))) if on_bytes else None
        spec = {
            "name": name,
            "size": size,
            "blockSize": block_size,
            "blocks": blocks,
            "sources": self.bases,
            "signal": self.controller.signal,
            "onBytes": progress,
            "useCache": self.cache is not None,
        }
        try:
            result = await storage.getShard(js_object(spec))
        finally:
            if progress is not None:
                progress.destroy()
        if not result.ok:
            raise from_code(str(result.code), str(result.message))
        return Fetched(result.data, str(result.source), bool(result.cached))

    async def get_range(
        self, name: str, size: int, *, block_size: int, blocks: str, offset: int, length: int
    ) -> RangeFetched:
        """``length`` verified bytes at ``offset`` of shard ``<name>.bin`` (``size`` bytes)
        without fetching the rest of it: one MoE expert, for a pager.

        Only the block-aligned cover of the range is read (OPFS) or fetched (one HTTP Range
        request per attempt, for the missing blocks); each block is checked against
        ``blocks`` (the index's hashes for ``block_size`` blocks) and cached in OPFS by block.
        Raises what :meth:`get` raises (``IntegrityError`` when every source served bad
        bytes, ``FetchError``, ``StorageFull``, ``Aborted``) and ``BadRequest`` for a range
        outside the shard or hashes that do not fit its size.
        """
        if offset < 0 or length <= 0 or offset + length > size:
            raise BadRequest(f"bytes {offset}+{length} are not a range of shard {name} ({size} B)")
        if len(blocks) != -(-size // block_size) * HASH_HEX:
            raise BadRequest(f"shard {name}: {len(blocks)} hex of block hashes for {size} bytes")
        spec = {
            "name": name,
            "size": size,
            "blockSize": block_size,
            "blocks": blocks,
            "offset": offset,
            "length": length,
            "sources": self.bases,
            "signal": self.controller.signal,
            "useCache": self.cache is not None,
        }
        result = await storage.getRange(js_object(spec))
        if not result.ok:
            if str(result.code) == "bad_request":
                raise BadRequest(str(result.message))
            raise from_code(str(result.code), str(result.message))
        return RangeFetched(result.data, str(result.source), int(result.fetchedBytes))

    @staticmethod
    def heap_bytes() -> int:
        """Size of Pyodide's wasm memory: loading must not grow it by the model's size."""
        import pyodide_js  # type: ignore[import-not-found]

        return int(pyodide_js._module.HEAPU8.byteLength)

    def abort(self) -> None:
        """Stop every fetch of this load and stop marking the model in use."""
        self.controller.abort()
        storage.releaseModel()

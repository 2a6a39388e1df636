"""Load an RDRR model into GPU memory: manifest → index shards → verified shards → buffers.

Files come from the storage tier (OPFS cache first, then the manifest's folder and mirrors),
verified before use. Weight shards are fetched a few at a time; each is copied into every
GPU buffer that holds part of it as soon as it arrives and then dropped, so JS memory holds
about ``PARALLEL_SHARDS`` shards at a time whatever the model's size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from doppler.format.index import Index, TensorEntry, parse_index
from doppler.format.manifest import Manifest, model_id, parse_manifest
from doppler.format.names import expert_of
from doppler.gpu.budget import GpuBudget
from doppler.gpu.device import Gpu
from doppler.jsffi import js
from doppler.model.weights import Piece, Weight, allocate, allocate_fused, fused_groups, pieces
from doppler.moe.experts import ExpertCatalog, catalog
from doppler.storage.cache import estimate
from doppler.storage.errors import QuotaExceeded, StorageFull
from doppler.storage.http import fetch_bytes
from doppler.storage.progress import LoadProgress
from doppler.storage.records import ModelRecord
from doppler.storage.space import out_of_space
from doppler.storage.tier import ShardTier

Progress = Callable[[dict[str, Any]], None]
PARALLEL_SHARDS = 3


@dataclass
class LoadedModel:
    """A model's dense weights on the GPU; its routed experts are only catalogued (the
    model builder decides, from what the budget leaves, whether they all load or page)."""

    model_id: str
    url: str
    manifest: Manifest
    weights: dict[str, Weight]
    tokenizer_spec: dict[str, Any] | None
    experts: ExpertCatalog | None
    tier: ShardTier
    shard_index: dict[str, Index]  # weight shard name -> the index shard describing it

    async def upload(self, gpu: Gpu, by_shard: dict[str, list[Piece]], progress: Progress) -> None:
        """Fetch each shard of ``by_shard`` (verified, cached) and copy its pieces to the GPU."""
        sizes = {shard: self.shard_index[shard].shards[shard].size for shard in by_shard}
        tracker = LoadProgress(
            progress,
            sizes,
            caching=self.tier.caching,
            note=self.tier.reason,
            heap=self.tier.heap_bytes,
        )
        queue = gpu.device.queue

        def job_for(shard: str, items: list[Piece]) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                index = self.shard_index[shard]
                fetched = await self.tier.get(
                    shard,
                    sizes[shard],
                    block_size=index.block_size,
                    blocks=index.shards[shard].blocks,
                    on_bytes=lambda count: tracker.received(shard, count),
                )
                for piece in items:
                    queue.writeBuffer(
                        piece.buffer, piece.offset, fetched.data, piece.shard_offset, piece.size
                    )
                tracker.finished(shard, fetched.source)

            return job

        await run_bounded([job_for(s, items) for s, items in by_shard.items()], PARALLEL_SHARDS)
        await queue.onSubmittedWorkDone()


def source_bases(manifest_url: str, manifest: Manifest) -> list[str]:
    """Where shards live: the manifest's own folder first, then its mirrors in order."""
    own = manifest_url.split("?", 1)[0].rsplit("/", 1)[0] + "/"
    return [own, *(m if m.endswith("/") else m + "/" for m in manifest.mirrors)]


async def run_bounded(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``jobs`` with at most ``limit`` at once; the first failure cancels the rest."""
    gate = asyncio.Semaphore(limit)

    async def guarded(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    tasks = [asyncio.ensure_future(guarded(job)) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def load_model(
    manifest_url: str, gpu: Gpu, budget: GpuBudget, progress: Progress
) -> LoadedModel:
    manifest_bytes = await fetch_bytes(manifest_url)
    manifest = parse_manifest(manifest_bytes)
    identity = model_id(manifest_bytes)
    tier = await ShardTier.open(source_bases(manifest_url, manifest), identity)
    files = {ref.name: ref.size for ref in manifest.index}  # every file, as they get known
    if manifest.tokenizer is not None:
        files[manifest.tokenizer.name] = manifest.tokenizer.size
    try:
        return await _load(tier, identity, manifest_url, manifest, files, gpu, budget, progress)
    except QuotaExceeded as err:
        tier.abort()
        await tier.forget(identity, files)  # nothing half-written stays behind
        if not isinstance(err, StorageFull):
            raise
        quota, usage = await estimate()
        raise out_of_space(manifest.name, manifest.total_size, quota, usage, str(err)) from err
    except BaseException:
        tier.abort()
        raise


async def _load(
    tier: ShardTier,
    identity: str,
    manifest_url: str,
    manifest: Manifest,
    files: dict[str, int],
    gpu: Gpu,
    budget: GpuBudget,
    progress: Progress,
) -> LoadedModel:
    def record() -> ModelRecord:
        return ModelRecord(identity, manifest.name, manifest_url, files, js.Date.now())

    await tier.reserve(record(), manifest.total_size)
    indexes: list[Index] = []
    for ref in manifest.index:
        fetched = await tier.get(ref.name, ref.size)
        indexes.append(parse_index(fetched.data.to_bytes(), ref.name))
    tokenizer = None
    if manifest.tokenizer is not None:
        ref = manifest.tokenizer
        tokenizer = json.loads((await tier.get(ref.name, ref.size)).data.to_bytes())

    limit = gpu.limits["maxStorageBufferBindingSize"]
    shard_index: dict[str, Index] = {}
    entries: dict[str, TensorEntry] = {}
    for index in indexes:
        shard_index.update({name: index for name in index.shards})
        # experts go to the pager's slots, not to buffers of their own
        entries.update({n: e for n, e in index.tensors.items() if expert_of(n) is None})
    weights: dict[str, Weight] = {}
    alignment = gpu.limits["minStorageBufferOffsetAlignment"]
    for fused, members in fused_groups(entries, limit, alignment).items():
        weights[fused], parts = allocate_fused(fused, [entries[m] for m in members], budget)
        weights.update({part.name: part for part in parts})
    by_shard: dict[str, list[Piece]] = {}
    for name, entry in entries.items():
        if name not in weights:
            weights[name] = allocate(entry, budget, limit)
        for shard, items in pieces(entry, weights[name]).items():
            by_shard.setdefault(shard, []).extend(items)
    files.update({shard: index.shards[shard].size for shard, index in shard_index.items()})
    await tier.remember(record())
    loaded = LoadedModel(
        identity,
        manifest_url,
        manifest,
        weights,
        tokenizer,
        catalog(manifest.config, indexes),
        tier,
        shard_index,
    )
    await loaded.upload(gpu, by_shard, progress)
    return loaded

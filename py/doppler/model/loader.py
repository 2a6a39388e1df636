"""Load an RDRR model into GPU memory: manifest → index shards → verified shards → buffers.

Each shard is fetched once, verified, copied into every GPU buffer that holds part of it,
and dropped, so JS memory holds about one shard at a time whatever the model's size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from doppler.format.index import Index, parse_index
from doppler.format.manifest import Manifest, model_id, parse_manifest
from doppler.gpu.budget import GpuBudget
from doppler.gpu.device import Gpu
from doppler.jsffi import js
from doppler.model.weights import Piece, Weight, allocate, pieces
from doppler.storage.http import fetch_buffer, fetch_verified

Progress = Callable[[dict[str, Any]], None]


@dataclass
class LoadedModel:
    model_id: str
    url: str
    manifest: Manifest
    weights: dict[str, Weight]
    tokenizer_spec: dict[str, Any] | None


def _bytes(buffer: Any) -> bytes:
    return bytes(js.Uint8Array.new(buffer).to_py())


def source_bases(manifest_url: str, manifest: Manifest) -> list[str]:
    """Where shards live: the manifest's own folder first, then its mirrors in order."""
    own = manifest_url.split("?", 1)[0].rsplit("/", 1)[0] + "/"
    return [own, *(m if m.endswith("/") else m + "/" for m in manifest.mirrors)]


async def load_model(
    manifest_url: str, gpu: Gpu, budget: GpuBudget, progress: Progress
) -> LoadedModel:
    started = time.monotonic()
    manifest_bytes = _bytes(await fetch_buffer(manifest_url))
    manifest = parse_manifest(manifest_bytes)
    bases = source_bases(manifest_url, manifest)
    indexes: list[Index] = []
    for ref in manifest.index:
        indexes.append(
            parse_index(_bytes(await fetch_verified(bases, ref.name, ref.size)), ref.name)
        )
    tokenizer = None
    if manifest.tokenizer is not None:
        raw = await fetch_verified(bases, manifest.tokenizer.name, manifest.tokenizer.size)
        tokenizer = json.loads(_bytes(raw))

    limit = gpu.limits["maxStorageBufferBindingSize"]
    weights: dict[str, Weight] = {}
    by_shard: dict[str, list[Piece]] = {}
    shard_sizes: dict[str, int] = {}
    for index in indexes:
        shard_sizes.update({name: info.size for name, info in index.shards.items()})
        for name, entry in index.tensors.items():
            weights[name] = allocate(entry, budget, limit)
            for shard, items in pieces(entry, weights[name]).items():
                by_shard.setdefault(shard, []).extend(items)

    total = sum(shard_sizes[name] for name in by_shard)
    done = 0
    queue = gpu.device.queue
    for number, (shard, items) in enumerate(by_shard.items(), 1):
        buffer = await fetch_verified(bases, shard, shard_sizes[shard])
        for piece in items:
            queue.writeBuffer(piece.buffer, piece.offset, buffer, piece.shard_offset, piece.size)
        done += shard_sizes[shard]
        elapsed = time.monotonic() - started
        progress(
            {
                "type": "progress",
                "loadedBytes": done,
                "totalBytes": total,
                "shards": number,
                "totalShards": len(by_shard),
                "source": "network",
                "bytesPerSecond": done / elapsed if elapsed > 0 else 0,
            }
        )
    await queue.onSubmittedWorkDone()
    return LoadedModel(model_id(manifest_bytes), manifest_url, manifest, weights, tokenizer)

"""Request handlers for tests and diagnostics (``debug.*`` kinds).

They exercise the protocol (streaming, cancellation, errors) and run single kernels for the
GPU test harness, through the same worker and dispatcher that the product uses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from doppler.errors import BadRequest, DopplerError
from doppler.gpu.oneshot import run_kernel
from doppler.jsffi import to_py
from doppler.worker.protocol import Emit

if TYPE_CHECKING:
    from doppler.worker.main import Worker


def handlers(worker: Worker) -> dict[str, Any]:
    async def ticks(payload: dict[str, Any], emit: Emit) -> dict[str, int]:
        """Emit ``count`` tick events ``delayMs`` apart; optionally fail at ``failAt``."""
        count = int(payload.get("count", 3))
        for index in range(count):
            if payload.get("failAt") == index:
                raise DopplerError("failing as asked", str(payload.get("code", "test_failure")))
            await asyncio.sleep(float(payload.get("delayMs", 0)) / 1000)
            emit({"type": "tick", "index": index})
        return {"count": count}

    async def run(payload: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        if not isinstance(payload, dict) or "shader" not in payload:
            raise BadRequest("debug.runKernel needs {shader, bindings, workgroups}")
        gpu, pipelines = worker.require_gpu()
        return await run_kernel(gpu, pipelines, payload)

    return {
        "debug.ticks": ticks,
        "debug.runKernel": run,
        "debug.range": fetch_range,
        "debug.gpuMeter": gpu_meter,
    }


async def gpu_meter(payload: dict[str, Any], _emit: Emit) -> dict[str, Any]:
    """Count GPU buffer bytes from outside the budget's books (``app/gpu_meter.js``):
    ``{install: true}`` starts counting, ``{resetPeak: true}`` starts a new peak."""
    from doppler_js import gpuMeter  # type: ignore[import-not-found]

    payload = payload or {}
    if payload.get("install"):
        gpuMeter.install()
    return to_py(gpuMeter.reading(bool(payload.get("resetPeak"))))


async def fetch_range(payload: dict[str, Any], _emit: Emit) -> dict[str, Any]:
    """``ShardTier.get_range`` for the storage tests: ``length`` bytes at ``offset`` of weight
    shard ``shard`` of the model at ``manifest`` (``useCache`` false: no OPFS at all).
    Returns the range's SHA-256 rather than its bytes, so tests compare it with the file."""
    from doppler_js import storage  # type: ignore[import-not-found]

    from doppler.format.index import parse_index
    from doppler.format.manifest import model_id, parse_manifest
    from doppler.model.loader import source_bases
    from doppler.storage.http import fetch_bytes
    from doppler.storage.tier import ShardTier

    try:
        url, shard = str(payload["manifest"]), str(payload["shard"])
        offset, length = int(payload["offset"]), int(payload["length"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadRequest("debug.range needs {manifest, shard, offset, length}") from err
    raw = await fetch_bytes(url)
    manifest = parse_manifest(raw)
    bases = source_bases(url, manifest)
    if payload.get("useCache", True):
        tier = await ShardTier.open(bases, model_id(raw))
    else:
        tier = ShardTier(bases, None, "caching is off for this request")
    for ref in manifest.index:
        index = parse_index((await tier.get(ref.name, ref.size)).data.to_bytes(), ref.name)
        if shard in index.shards:
            info = index.shards[shard]
            got = await tier.get_range(
                shard,
                info.size,
                block_size=index.block_size,
                blocks=info.blocks,
                offset=offset,
                length=length,
            )
            return {
                "source": got.source,
                "fetchedBytes": got.fetched_bytes,
                "length": int(got.data.length),
                "sha256": str(await storage.sha256Hex(got.data)),
            }
    raise BadRequest(f"debug.range: no index of {url} lists shard {shard}")

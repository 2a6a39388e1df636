"""Request handlers for tests and diagnostics (``debug.*`` kinds).

They exercise the protocol (streaming, cancellation, errors) and run single kernels for the
GPU test harness, through the same worker and dispatcher that the product uses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from doppler.errors import BadRequest, DopplerError
from doppler.gpu.oneshot import run_kernel
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

    return {"debug.ticks": ticks, "debug.runKernel": run}

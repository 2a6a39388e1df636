"""Worker boot: acquire the GPU, load the shader library, and start the protocol dispatcher.

Called once from ``app/worker.js`` after Pyodide and our wheel are installed. Boot never
fails because of the GPU: a missing or broken WebGPU is reported in the status (``gpu:
null`` plus ``gpuError``) so the page can explain it instead of hanging.
"""

from __future__ import annotations

import sys
from typing import Any

import pyodide  # type: ignore[import-not-found]

from doppler import __version__
from doppler.errors import DopplerError, GpuUnavailable
from doppler.gpu.device import Gpu, Overrides, acquire
from doppler.gpu.shaders import PipelineCache, ShaderLibrary
from doppler.jsffi import js, js_object, to_py
from doppler.worker import cache_handlers, debug_handlers, model_handlers
from doppler.worker.protocol import Dispatcher, Emit


class Worker:
    """Everything the worker holds between requests."""

    def __init__(self, base_url: str, gpu: Gpu | None, gpu_error: DopplerError | None) -> None:
        self.base_url = base_url
        self.gpu = gpu
        self.gpu_error = gpu_error
        self.pipelines: PipelineCache | None = None
        self.dispatcher = Dispatcher(self._post, self._handlers())

    def status(self) -> dict[str, Any]:
        return {
            "doppler": __version__,
            "python": sys.version.split()[0],
            "pyodide": pyodide.__version__,
            "gpu": self.gpu.info if self.gpu else None,
            "gpuError": self.gpu_error.to_dict() if self.gpu_error else None,
        }

    def require_gpu(self) -> tuple[Gpu, PipelineCache]:
        if self.gpu is None or self.pipelines is None:
            raise GpuUnavailable(
                self.gpu_error.message if self.gpu_error else "no GPU", "gpu_unavailable"
            )
        return self.gpu, self.pipelines

    def on_message(self, message: Any) -> None:
        self.dispatcher.on_message(to_py(message))

    def _post(self, message: dict[str, Any]) -> None:
        js.postMessage(js_object(message))

    def _handlers(self) -> dict[str, Any]:
        async def status(_payload: Any, _emit: Emit) -> dict[str, Any]:
            return self.status()

        return {
            "status": status,
            **model_handlers.handlers(self),
            **debug_handlers.handlers(self),
            **cache_handlers.handlers(self),
        }


async def boot(options: Any, base_url: str) -> Worker:
    """Acquire the GPU (or record why not) and return the ready worker."""
    opts = to_py(options) or {}
    gpu: Gpu | None = None
    gpu_error: DopplerError | None = None
    try:
        gpu = await acquire(Overrides.from_options(opts))
    except GpuUnavailable as err:
        gpu_error = err
    worker = Worker(base_url, gpu, gpu_error)
    if gpu is not None:
        worker.pipelines = PipelineCache(gpu, await ShaderLibrary.fetch(base_url))
    return worker

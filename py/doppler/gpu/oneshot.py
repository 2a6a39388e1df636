"""Run one compute kernel on caller-supplied buffers and read the writable ones back.

This is the GPU kernel test harness's worker half (``debug.runKernel``): tests hand in
inputs, run a shader exactly as the engine compiles it, and compare against numpy.
Writable buffers start filled with NaN bits so an element the kernel never wrote cannot
pass a comparison by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doppler.errors import BadRequest, GpuValidationError
from doppler.gpu.device import Gpu
from doppler.gpu.shaders import PipelineCache, PipelineKey
from doppler.jsffi import JsProxy, is_nullish, js, js_object

NAN_BITS = 0x7FC00000
_USAGE = {"read": "STORAGE", "write": "STORAGE", "uniform": "UNIFORM"}


@dataclass(frozen=True)
class BindingSpec:
    """One buffer of the kernel: its binding number, role and initial bytes or size."""

    binding: int
    kind: str
    data: Any  # bytes-like, or None for an output of ``size`` bytes
    size: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> BindingSpec:
        kind = raw.get("kind")
        if kind not in _USAGE:
            raise BadRequest(f"binding kind must be one of {sorted(_USAGE)}, got {kind!r}")
        data = raw.get("data")
        size = len(data) if data is not None else int(raw.get("size") or 0)
        if size <= 0 or size % 4:
            raise BadRequest(f"binding {raw.get('binding')}: size must be a positive multiple of 4")
        return cls(int(raw["binding"]), kind, data, size)


def _initial_bytes(spec: BindingSpec) -> JsProxy:
    if spec.data is not None:
        return js.Uint8Array.new(js_object(spec.data))
    words = js.Uint32Array.new(spec.size // 4)
    words.fill(NAN_BITS)
    return js.Uint8Array.new(words.buffer)


async def run_kernel(gpu: Gpu, pipelines: PipelineCache, payload: dict[str, Any]) -> dict:
    """Dispatch one kernel; return the bytes of every ``write`` binding, in binding order."""
    key = PipelineKey(
        shader=payload["shader"],
        entry=payload.get("entry", "main"),
        flags=frozenset(payload.get("flags") or ()),
        constants=tuple(sorted((payload.get("constants") or {}).items())),
    )
    specs = [BindingSpec.parse(raw) for raw in payload["bindings"]]
    workgroups = [int(n) for n in payload["workgroups"]] + [1, 1]
    pipeline = await pipelines.get(key, payload.get("source"))
    device = gpu.device
    usage = js.GPUBufferUsage
    buffers = []
    device.pushErrorScope("validation")
    for spec in specs:
        flags = getattr(usage, _USAGE[spec.kind]) | usage.COPY_DST | usage.COPY_SRC
        buffer = device.createBuffer(js_object({"size": spec.size, "usage": flags}))
        device.queue.writeBuffer(buffer, 0, _initial_bytes(spec))
        buffers.append(buffer)
    entries = [
        {"binding": spec.binding, "resource": {"buffer": buffer}}
        for spec, buffer in zip(specs, buffers, strict=True)
    ]
    bind_group = device.createBindGroup(
        js_object({"layout": pipeline.getBindGroupLayout(0), "entries": entries})
    )
    outputs = [
        (spec, buf) for spec, buf in zip(specs, buffers, strict=True) if spec.kind == "write"
    ]
    readbacks = []
    encoder = device.createCommandEncoder()
    compute_pass = encoder.beginComputePass()
    compute_pass.setPipeline(pipeline)
    compute_pass.setBindGroup(0, bind_group)
    compute_pass.dispatchWorkgroups(*workgroups[:3])
    compute_pass.end()
    for spec, buffer in outputs:
        readback = device.createBuffer(
            js_object({"size": spec.size, "usage": usage.MAP_READ | usage.COPY_DST})
        )
        encoder.copyBufferToBuffer(buffer, 0, readback, 0, spec.size)
        readbacks.append(readback)
    device.queue.submit(js_object([encoder.finish()]))
    error = await device.popErrorScope()
    if not is_nullish(error):
        raise GpuValidationError(f"kernel {key.label}: {error.message}")
    results = []
    for readback in readbacks:
        await readback.mapAsync(js.GPUMapMode.READ)
        results.append(js.Uint8Array.new(readback.getMappedRange()).slice().buffer)
        readback.unmap()
        readback.destroy()
    for buffer in buffers:
        buffer.destroy()
    return {"outputs": results}

"""A forward pass prepared once: pipelines, bind groups, uniforms and dispatch sizes.

Builders append :class:`Dispatch` records; :meth:`Plan.finish` creates every bind group and
uniform once and hands the list to the JS ``PlanRunner``, so running the plan is one FFI call
that encodes one compute pass. Values that change per step (positions, lengths) are not in
uniforms written per dispatch: a dispatch's params may be a function of the step state,
and :meth:`Plan.encode` rewrites the whole uniform arena with one ``writeBuffer`` per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from doppler.gpu.budget import GpuBudget
from doppler.gpu.shaders import PipelineCache, PipelineKey
from doppler.jsffi import JsProxy, js, js_object

UNIFORM_SLOT = 256  # minUniformBufferOffsetAlignment on every WebGPU implementation
Params = bytes | Callable[[Any], bytes] | None


@dataclass
class Binding:
    """A buffer (or a byte range of one) bound at ``binding``."""

    binding: int
    buffer: JsProxy
    offset: int = 0
    size: int | None = None


@dataclass
class Dispatch:
    key: PipelineKey
    bindings: list[Binding]
    params: Params  # uniform bytes, or a function of the step state; at ``params_binding``
    params_binding: int
    workgroups: tuple[int, int, int]


@dataclass
class Plan:
    """An ordered list of dispatches; ``finish`` compiles and binds them."""

    label: str
    features: frozenset[str] = frozenset()  # the device's optional features (kernel choices)
    dispatches: list[Dispatch] = field(default_factory=list)
    marks: list[tuple[int, Any]] = field(default_factory=list)  # (dispatch index, tag)
    runner: Any = None
    _uniforms: JsProxy | None = None
    _arena: bytearray = field(default_factory=bytearray)
    _dynamic: list[tuple[int, Callable[[Any], bytes]]] = field(default_factory=list)

    def add(
        self,
        key: PipelineKey,
        bindings: list[Binding],
        params: Params,
        workgroups: tuple[int, ...],
        params_binding: int | None = None,
    ) -> None:
        grid = (*workgroups, 1, 1)[:3]
        if min(grid) <= 0:
            return  # nothing to do (e.g. an empty part)
        slot = params_binding if params_binding is not None else len(bindings)
        self.dispatches.append(Dispatch(key, bindings, params, slot, grid))

    def mark(self, tag: Any) -> None:
        """Note a point where the caller may stop, read results back and go on (expert
        paging); ``encode`` can record the dispatches between two marks."""
        self.marks.append((len(self.dispatches), tag))

    async def finish(
        self, pipelines: PipelineCache, budget: GpuBudget, initial_state: Any = None
    ) -> None:
        """Compile, bind and upload everything; ``initial_state`` sizes dynamic params."""
        from doppler_js import PlanRunner  # type: ignore[import-not-found]

        device = budget.device
        count = sum(d.params is not None for d in self.dispatches)
        usage = js.GPUBufferUsage.UNIFORM | js.GPUBufferUsage.COPY_DST
        self._uniforms = budget.create_buffer(
            max(1, count) * UNIFORM_SLOT, usage, "scratch", f"{self.label} uniforms"
        )
        self._arena = bytearray(max(1, count) * UNIFORM_SLOT)
        records = []
        slot = 0
        for dispatch in self.dispatches:
            pipeline = await pipelines.get(dispatch.key)
            entries = [_entry(b) for b in dispatch.bindings]
            if dispatch.params is not None:
                if callable(dispatch.params):
                    self._dynamic.append((slot, dispatch.params))
                    size = len(dispatch.params(initial_state))
                else:
                    size = len(dispatch.params)
                    self._put(slot, dispatch.params)
                uniform = Binding(
                    dispatch.params_binding,
                    self._uniforms,
                    slot * UNIFORM_SLOT,
                    max(16, -(-size // 16) * 16),
                )
                entries.append(_entry(uniform))
                slot += 1
            bind_group = device.createBindGroup(
                js_object(
                    {
                        "layout": pipeline.getBindGroupLayout(0),
                        "entries": entries,
                        "label": dispatch.key.label,
                    }
                )
            )
            x, y, z = dispatch.workgroups
            records.append(
                {
                    "pipeline": pipeline,
                    "bindGroup": bind_group,
                    "x": x,
                    "y": y,
                    "z": z,
                    "label": dispatch.key.label,
                }
            )
        self.runner = PlanRunner.new(js_object(records))
        self._upload(device)

    def _put(self, slot: int, data: bytes) -> None:
        self._arena[slot * UNIFORM_SLOT : slot * UNIFORM_SLOT + len(data)] = data

    def _upload(self, device: JsProxy) -> None:
        device.queue.writeBuffer(
            self._uniforms, 0, js.Uint8Array.new(js_object(bytes(self._arena)))
        )

    async def profile(self, device: JsProxy, repeats: int) -> dict[str, float]:
        """GPU ms per run of the plan by kernel (shader:entry), from timestamp queries."""
        by_kernel: dict[str, float] = {}
        for item in (await self.runner.profile(device, repeats)).to_py():
            kernel = ":".join(item["label"].split(":")[:2])
            by_kernel[kernel] = by_kernel.get(kernel, 0.0) + item["ms"]
        return dict(sorted(by_kernel.items(), key=lambda kv: -kv[1]))

    async def pass_ms(self, device: JsProxy, repeats: int, end: int | None = None) -> float:
        """GPU ms of dispatches [0, end) (default all) run as one compute pass (timestamp
        queries)."""
        return float(await self.runner.passMs(device, repeats, end or len(self.dispatches)))

    def encode(
        self,
        encoder: JsProxy,
        device: JsProxy,
        state: Any = None,
        start: int = 0,
        end: int | None = None,
        timestamps: JsProxy | None = None,
    ) -> None:
        """Record dispatches ``[start, end)`` (default all) in one compute pass, with the
        pass's ``timestamps`` writes if given; a run starting at 0 first computes the
        dynamic params from ``state``."""
        if self._dynamic and start == 0:
            for slot, make in self._dynamic:
                self._put(slot, make(state))
            self._upload(device)
        end = len(self.dispatches) if end is None else end
        self.runner.encode(encoder, start, end, timestamps)


def _entry(binding: Binding) -> dict[str, Any]:
    resource: dict[str, Any] = {"buffer": binding.buffer, "offset": binding.offset}
    if binding.size is not None:
        resource["size"] = binding.size
    return {"binding": binding.binding, "resource": resource}

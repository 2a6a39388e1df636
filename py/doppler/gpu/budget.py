"""One account of GPU memory: weights, KV cache and scratch are all allocated through it.

Browsers give no reliable view of free GPU memory, so DOPPLER keeps its own books against a
budget (from the device limits or the caller's ``gpuBudgetBytes``); later tiers and the
expert pager allocate and evict through the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from doppler.errors import DopplerError
from doppler.jsffi import JsProxy, js_object


class OutOfGpuBudget(DopplerError):
    code = "gpu_budget_exceeded"


@dataclass
class GpuBudget:
    device: JsProxy
    limit: int
    used: dict[str, int] = field(default_factory=dict)
    # Keyed by id() of the proxy create_buffer returned (callers pass that same object back).
    _buffers: dict[int, tuple[str, int, JsProxy]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.used.values())

    def create_buffer(self, size: int, usage: int, kind: str, label: str) -> JsProxy:
        """Allocate a GPU buffer of ``size`` bytes (rounded up to 4) charged to ``kind``."""
        size = max(4, -(-size // 4) * 4)
        if self.total + size > self.limit:
            raise OutOfGpuBudget(
                f"{label} needs {size / 2**20:.1f} MiB of GPU memory but only "
                f"{(self.limit - self.total) / 2**20:.1f} MiB of the "
                f"{self.limit / 2**20:.0f} MiB budget is left "
                f"({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in self.used.items())})"
            )
        buffer = self.device.createBuffer(js_object({"size": size, "usage": usage, "label": label}))
        self.used[kind] = self.used.get(kind, 0) + size
        self._buffers[id(buffer)] = (kind, size, buffer)
        return buffer

    def destroy(self, buffer: JsProxy) -> None:
        kind, size, _ = self._buffers.pop(id(buffer))
        self.used[kind] -= size
        buffer.destroy()

    def destroy_remaining(self) -> None:
        """Free every buffer still charged to this budget (unloading a model)."""
        for _, _, buffer in list(self._buffers.values()):
            self.destroy(buffer)

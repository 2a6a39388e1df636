"""The GPU kernel test harness: run a WGSL kernel in the real browser worker on given inputs.

Tests build numpy inputs, call :meth:`KernelHarness.run`, and compare the outputs with a
numpy reference computed here in CPython. Outputs come back from buffers pre-filled with
NaN, so any element a kernel failed to write fails the comparison.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.browser import run_async

_RUN = """
const [spec] = args;
const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
const encode = (buffer) => {
  const bytes = new Uint8Array(buffer);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
};
spec.bindings = spec.bindings.map((b) => (b.data ? {...b, data: decode(b.data)} : b));
const result = await (window[args[1]] ?? doppler).runKernel(spec);
return result.outputs.map(encode);
"""


@dataclass(frozen=True)
class Buffer:
    """One binding: inputs carry an array, outputs a dtype and element count."""

    binding: int
    kind: str  # "read", "write" or "uniform"
    array: np.ndarray | None = None
    dtype: Any = np.float32
    count: int = 0

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"binding": self.binding, "kind": self.kind}
        if self.array is not None:
            spec["data"] = base64.b64encode(np.ascontiguousarray(self.array).tobytes()).decode()
        else:
            spec["size"] = self.count * np.dtype(self.dtype).itemsize
        return spec


def read(binding: int, array: np.ndarray) -> Buffer:
    return Buffer(binding, "read", array=array)


def write(binding: int, count: int, dtype: Any = np.float32) -> Buffer:
    return Buffer(binding, "write", dtype=dtype, count=count)


def params(binding: int, fmt: str, *values: Any) -> Buffer:
    """A uniform buffer packed with ``struct`` format ``fmt`` (little-endian), padded to 16."""
    packed = struct.pack("<" + fmt, *values)
    packed += b"\0" * (-len(packed) % 16)
    return Buffer(binding, "uniform", array=np.frombuffer(packed, np.uint8))


class KernelHarness:
    """Runs kernels through ``window.doppler.runKernel`` of a booted app page."""

    def __init__(self, driver: Any, instance: str = "doppler") -> None:
        """``instance`` names the ``window`` property holding the Doppler to run on."""
        self.driver = driver
        self.instance = instance

    def run(
        self,
        shader: str,
        buffers: list[Buffer],
        workgroups: tuple[int, ...],
        *,
        entry: str = "main",
        constants: dict[str, float] | None = None,
        flags: tuple[str, ...] = (),
        source: str | None = None,
    ) -> list[np.ndarray]:
        """Dispatch ``shader`` once; returns the ``write`` buffers as numpy arrays, in order."""
        spec = {
            "shader": shader,
            "entry": entry,
            "constants": constants or {},
            "flags": list(flags),
            "source": source,
            "bindings": [buffer.to_spec() for buffer in buffers],
            "workgroups": list(workgroups),
        }
        encoded = run_async(self.driver, _RUN, spec, self.instance)
        outputs = [b for b in buffers if b.kind == "write"]
        return [
            np.frombuffer(base64.b64decode(data), dtype=buffer.dtype)
            for data, buffer in zip(encoded, outputs, strict=True)
        ]


def shader_source(name: str) -> str:
    """The WGSL file as committed, for tests that plant bugs in a copy of it."""
    return (Path(__file__).resolve().parents[2] / "shaders" / name).read_text()

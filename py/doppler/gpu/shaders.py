"""WGSL sources of the site and a pipeline cache keyed by (shader, entry, flags, constants).

``build.py`` bundles every file of ``shaders/`` into ``shaders/bundle.json``; the worker
fetches it once. Pipelines compile on first use only, for the variants a model really uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from doppler.errors import DopplerError, GpuValidationError
from doppler.gpu.device import Gpu
from doppler.gpu.wgsl import WgslPreprocessError, preprocess
from doppler.jsffi import JsProxy, is_nullish, js, js_object


@dataclass(frozen=True)
class PipelineKey:
    """Identifies one compiled variant; ``label`` names it in GPU error messages and profiles."""

    shader: str
    entry: str = "main"
    flags: frozenset[str] = frozenset()
    constants: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        parts = [self.shader, self.entry, *sorted(self.flags)]
        parts += [f"{name}={value:g}" for name, value in self.constants]
        return ":".join(parts)


@dataclass
class ShaderLibrary:
    """Holds the bundled WGSL sources (file name → text)."""

    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def fetch(cls, base_url: str) -> ShaderLibrary:
        response = await js.fetch(base_url + "shaders/bundle.json")
        if not response.ok:
            raise DopplerError(
                f"could not load shaders/bundle.json (HTTP {response.status})", "site_incomplete"
            )
        return cls(json.loads(await response.text()))

    def expand(self, name: str, flags: frozenset[str], source: str | None = None) -> str:
        """Return preprocessed WGSL for ``name`` (or for ``source`` standing in for it)."""
        if source is None:
            source = self._file(name)
        try:
            return preprocess(source, flags, self._file, name)
        except WgslPreprocessError as err:
            raise DopplerError(str(err), "shader_source") from err

    def _file(self, name: str) -> str:
        key = name if name.endswith(".wgsl") else f"{name}.wgsl"
        if key not in self.sources:
            raise DopplerError(f"unknown shader {key!r}", "shader_source")
        return self.sources[key]


class PipelineCache:
    """Compiles compute pipelines on first use and reports WGSL errors with their variant."""

    def __init__(self, gpu: Gpu, library: ShaderLibrary) -> None:
        self._gpu = gpu
        self._library = library
        self._pipelines: dict[PipelineKey, JsProxy] = {}

    async def get(self, key: PipelineKey, source: str | None = None) -> JsProxy:
        """Return the pipeline for ``key``; ``source`` overrides the file (tests plant bugs)."""
        if source is None and key in self._pipelines:
            return self._pipelines[key]
        flags = key.flags | {f"HAS_{f.upper().replace('-', '_')}" for f in self._gpu.features}
        code = self._library.expand(key.shader, frozenset(flags), source)
        device = self._gpu.device
        device.pushErrorScope("validation")
        module = device.createShaderModule(js_object({"code": code, "label": key.label}))
        compute: dict[str, object] = {"module": module, "entryPoint": key.entry}
        if key.constants:
            compute["constants"] = dict(key.constants)
        pipeline = device.createComputePipeline(
            js_object({"layout": "auto", "compute": compute, "label": key.label})
        )
        error = await device.popErrorScope()
        if not is_nullish(error):
            info = await module.getCompilationInfo()
            details = "; ".join(
                f"line {m.lineNum}: {m.message}" for m in info.messages if m.type == "error"
            )
            raise GpuValidationError(f"pipeline {key.label} failed: {error.message} {details}")
        if source is None:
            self._pipelines[key] = pipeline
        return pipeline

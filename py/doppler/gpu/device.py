"""Acquire a WebGPU device with the adapter's maximum buffer limits and optional features.

Without explicit ``requiredLimits`` a device keeps the 128 MiB default binding size, far too
small for model weights, so we ask for the adapter's maxima. Tests lower limits and drop
features through ``overrides`` to exercise fallbacks that real hardware would need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from doppler.errors import GpuUnavailable
from doppler.jsffi import JsProxy, is_nullish, js, js_object

OPTIONAL_FEATURES = ("subgroups", "shader-f16", "timestamp-query")
# Limits raised to the adapter's maximum, because weights and KV caches need them.
RAISED_LIMITS = (
    "maxStorageBufferBindingSize",
    "maxBufferSize",
    "maxComputeWorkgroupStorageSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
)
REPORTED_LIMITS = (
    *RAISED_LIMITS,
    "maxComputeWorkgroupsPerDimension",
    "maxUniformBufferBindingSize",
    "maxBindGroups",
    "minStorageBufferOffsetAlignment",
    "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupSizeZ",
)


@dataclass
class Overrides:
    """Test-only knobs: lower limits than the adapter has, hide features it has."""

    limits: dict[str, int] = field(default_factory=dict)
    disable_features: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Overrides:
        limits = {
            name: int(options[name]) for name in RAISED_LIMITS if options.get(name) is not None
        }
        return cls(limits, frozenset(options.get("disableFeatures") or ()))


@dataclass
class Gpu:
    """The device and what we learned about it; ``info`` is what ``status()`` reports."""

    device: JsProxy
    features: frozenset[str]
    limits: dict[str, int]
    info: dict[str, Any]

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def default_budget(self) -> int:
        """GPU bytes DOPPLER may use when the caller sets no budget: the largest buffer
        size times four, a conservative stand-in for memory the browser does not report."""
        return 4 * self.limits["maxBufferSize"]


async def acquire(overrides: Overrides) -> Gpu:
    """Request an adapter and a device; :class:`GpuUnavailable` says which step failed."""
    gpu_api = getattr(js.navigator, "gpu", None)
    if is_nullish(gpu_api):
        if not js.isSecureContext:
            raise GpuUnavailable(
                "WebGPU needs a secure context: serve this page over HTTPS or from localhost.",
                "no_webgpu",
            )
        raise GpuUnavailable(
            "This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge "
            "or another browser with WebGPU enabled.",
            "no_webgpu",
        )
    try:
        adapter = await gpu_api.requestAdapter(js_object({"powerPreference": "high-performance"}))
    except Exception as err:
        raise GpuUnavailable(f"WebGPU adapter request failed: {err}", "adapter_failed") from err
    if is_nullish(adapter):
        raise GpuUnavailable(
            "WebGPU is present but no GPU adapter is available (blocklisted driver, disabled "
            "hardware acceleration, or no GPU).",
            "adapter_failed",
        )
    features = frozenset(
        name
        for name in OPTIONAL_FEATURES
        if adapter.features.has(name) and name not in overrides.disable_features
    )
    required = {name: getattr(adapter.limits, name) for name in RAISED_LIMITS}
    for name, value in overrides.limits.items():
        required[name] = min(required[name], value)
    try:
        device = await adapter.requestDevice(
            js_object({"requiredFeatures": sorted(features), "requiredLimits": required})
        )
    except Exception as err:
        raise GpuUnavailable(f"WebGPU device request failed: {err}", "device_failed") from err
    # A device never has less than the spec's default limits, so an override below the
    # default caps what DOPPLER plans with (binding splits) rather than the device itself.
    limits = {name: int(getattr(device.limits, name)) for name in REPORTED_LIMITS}
    for name, value in overrides.limits.items():
        limits[name] = min(limits[name], value)
    info = adapter.info
    return Gpu(
        device=device,
        features=features,
        limits=limits,
        info={
            "vendor": str(info.vendor),
            "architecture": str(info.architecture),
            "device": str(info.device),
            "description": str(info.description),
            "isFallbackAdapter": bool(getattr(info, "isFallbackAdapter", False)),
            "features": sorted(features),
            "limits": limits,
        },
    )

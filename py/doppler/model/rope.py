"""Rotary-embedding inverse frequencies, computed once per model (and per rope base) here.

``shaders/rope.wgsl`` reads them from an f32 buffer, so every scaling scheme (linear,
Llama 3.1's band-wise one, Gemma 3's separate local base) costs nothing per step and needs no
shader variant. The formulas are those of transformers' ``ROPE_INIT_FUNCTIONS`` (and the
models' ``compute_default_rope_parameters``), evaluated in double precision; transformers
evaluates them in float32, so results agree to a few float32 ulps.
"""

from __future__ import annotations

import math
from typing import Any

from doppler.errors import DopplerError


class RopeError(DopplerError):
    """A rotary dimension, base or scaling dict that ``inv_freq`` cannot use (field named)."""

    code = "bad_rope"


def inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> list[float]:
    """``head_dim // 2`` inverse frequencies for rotating ``head_dim`` dims with base ``theta``.

    ``head_dim`` is the rotated width (``int(head_dim * partial_rotary_factor)`` in HF terms).
    ``scaling`` is an HF ``rope_scaling``/``rope_parameters`` dict: the kind under
    ``rope_type`` (or legacy ``type``): ``default`` (or ``None``), ``linear`` (``factor``) or
    ``llama3`` (``factor``, ``low_freq_factor``, ``high_freq_factor``,
    ``original_max_position_embeddings``).
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise RopeError(f"rope head_dim must be a positive even int, got {head_dim!r}")
    if not _positive(theta):
        raise RopeError(f"rope theta must be a positive number, got {theta!r}")
    base = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    scaling = scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return base
    if kind == "linear":
        factor = _param(scaling, "factor")
        return [f / factor for f in base]
    if kind == "llama3":
        return _llama3(base, scaling)
    raise RopeError(f"rope scaling type {kind!r} is not supported (default, linear, llama3)")


def _llama3(base: list[float], scaling: dict[str, Any]) -> list[float]:
    """Llama 3.1: long wavelengths divided by ``factor``, short kept, a smooth band between."""
    factor = _param(scaling, "factor")
    low = _param(scaling, "low_freq_factor")
    high = _param(scaling, "high_freq_factor")
    old_context = _param(scaling, "original_max_position_embeddings")
    if high <= low:
        raise RopeError(f"rope scaling high_freq_factor {high} must exceed low_freq_factor {low}")
    low_wavelen, high_wavelen = old_context / low, old_context / high
    out = []
    for freq in base:
        wavelen = 2 * math.pi / freq
        if wavelen > low_wavelen:
            out.append(freq / factor)
        elif wavelen < high_wavelen:
            out.append(freq)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return out


def _param(scaling: dict[str, Any], name: str) -> float:
    value = scaling.get(name)
    if not _positive(value):
        raise RopeError(f"rope scaling field {name!r} must be a positive number, got {value!r}")
    return float(value)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )

